//! Magic v2 record batches: decoding, encoding and the producer's writer.
//!
//! Layout (big-endian): base offset i64, batch length i32 (bytes after this
//! field), partition leader epoch i32, magic i8, CRC-32C u32 (over the rest),
//! attributes i16, last offset delta i32, base timestamp i64, max timestamp
//! i64, producer id i64, producer epoch i16, base sequence i32, record count
//! i32, then the records (compressed as one block when a codec is set).

use bytes::{BufMut, Bytes, BytesMut};

use super::compression;
use super::crc32c;
use super::parse::{decode_record, trailing_bytes, RecordError};
use super::view::RecordsView;
use super::{
    read_crc, BatchRecord, Budget, Compression, DecodeLimits, RecordBatch, RecordHeader,
    TimestampType,
};
use crate::protocol::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::protocol::primitives::{unsigned_varlong_len, Reader};

/// Size of a v2 batch header, i.e. of a batch with no records.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// Smallest valid value of the batch length field.
const MIN_BATCH_LENGTH: i32 = (RECORD_BATCH_OVERHEAD - 12) as i32;
/// Smallest encoded record: length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;

// Byte offsets of header fields, for patching an encoded batch.
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

/// Decodes one v2 batch; `r` covers exactly the batch. With `lazy`, the
/// records are left in place as a [`RecordsView`] that decodes (and
/// checks) them as it is iterated; the batch's `records` stay empty.
pub(super) fn decode_batch(
    r: &mut Reader,
    limits: &DecodeLimits,
    budget: &mut Budget,
    lazy: bool,
) -> Result<(RecordBatch, Option<RecordsView>), DecodeError> {
    decode_batch_inner(r, limits, budget, lazy).map_err(|e| e.context("RecordBatch"))
}

fn decode_batch_inner(
    r: &mut Reader,
    limits: &DecodeLimits,
    budget: &mut Budget,
    lazy: bool,
) -> Result<(RecordBatch, Option<RecordsView>), DecodeError> {
    let base_offset = r.i64()?;
    let length = r.i32()?;
    if length < MIN_BATCH_LENGTH {
        return Err(r.error(DecodeErrorKind::InvalidValue(format!(
            "batch length {length} below the minimum of {MIN_BATCH_LENGTH}"
        ))));
    }
    let partition_leader_epoch = r.i32()?;
    let magic = r.i8()?;
    if magic != 2 {
        return Err(r.error(DecodeErrorKind::InvalidValue(format!(
            "magic {magic} where 2 was expected"
        ))));
    }
    read_crc(r, limits.verify_crc, crc32c::checksum)?;
    let attributes_pos = r.position();
    let attributes = r.i16()?;
    let codec_id = (attributes & COMPRESSION_MASK) as u8;
    let compression = Compression::from_id(codec_id).ok_or_else(|| {
        DecodeError::new(
            DecodeErrorKind::InvalidValue(format!("unknown compression codec id {codec_id}")),
            attributes_pos,
        )
    })?;
    let timestamp_type = if attributes & TIMESTAMP_TYPE_BIT != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    let last_offset_delta = r.i32()?;
    let base_timestamp = r.i64()?;
    let max_timestamp = r.i64()?;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let base_sequence = r.i32()?;
    let count = r.i32()?;
    if count < 0 {
        return Err(r.error(DecodeErrorKind::NegativeLength(count.into())));
    }
    let count = count as usize;
    let (records, view) = if compression == Compression::None {
        let base = r.position();
        decode_records(r.take_rest(), base, count, lazy, false)?
    } else {
        let section_pos = r.position();
        let section = r.take_rest();
        let cap = budget.cap();
        let plain = compression::decompress(compression, &section, cap, magic)
            .map_err(|kind| DecodeError::new(kind, section_pos).context("records"))?;
        budget.spend(plain.len());
        // Offsets in errors are within the decompressed records.
        decode_records(plain, 0, count, lazy, true)
            .map_err(|e| e.context("decompressed records"))?
    };
    let batch = RecordBatch {
        base_offset,
        partition_leader_epoch,
        magic,
        compression,
        timestamp_type,
        is_transactional: attributes & TRANSACTIONAL_BIT != 0,
        is_control: attributes & CONTROL_BIT != 0,
        has_delete_horizon: attributes & DELETE_HORIZON_BIT != 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
    };
    Ok((batch, view))
}

/// Records the owned decoder prepares slots for at a time.
pub(super) const DECODE_CHUNK: usize = 1024;

/// Decodes `count` records filling all of `section`, which starts at
/// offset `base` of the input (of the decompressed records if
/// `decompressed`): as owned records, or with `lazy` as a view.
fn decode_records(
    section: Bytes,
    base: usize,
    count: usize,
    lazy: bool,
    decompressed: bool,
) -> Result<(Vec<BatchRecord>, Option<RecordsView>), DecodeError> {
    // The count comes from the wire: bound it by the bytes present before
    // it sizes an allocation.
    if count > section.len() / MIN_RECORD_SIZE {
        return Err(DecodeError::new(
            DecodeErrorKind::LengthExceedsRemaining {
                length: count as u64,
                remaining: section.len(),
            },
            base,
        ));
    }
    if lazy {
        let view = RecordsView::new(section, count, base, decompressed);
        return Ok((Vec::new(), Some(view)));
    }
    let fail = |e: RecordError| e.into_error(base).context("Record");
    let mut pos = 0;
    // Slots are filled with defaults and then written in place (see
    // `decode_record`), a chunk at a time: the count is only bounded by the
    // bytes present, so the pages touched follow the records that decode.
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        let from = records.len();
        records.resize_with(count.min(from + DECODE_CHUNK), BatchRecord::default);
        for slot in records.get_mut(from..).unwrap_or_default() {
            pos = decode_record(&section, pos, slot).map_err(fail)?;
        }
    }
    match section.len() - pos {
        0 => Ok((records, None)),
        n => Err(trailing_bytes(n, base + pos)),
    }
}

// ---------------------------------------------------------------- encoding

/// Bytes `v` takes as a zig-zag varint.
fn varint_len(v: i32) -> usize {
    unsigned_varlong_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// Bytes `v` takes as a zig-zag varlong.
fn varlong_len(v: i64) -> usize {
    unsigned_varlong_len(((v << 1) ^ (v >> 63)) as u64)
}

/// A varint of at most 8 bytes, packed little-endian into a `u64`, and its
/// length; `None` for longer ones.
#[inline]
fn pack_uvarint(v: u64) -> Option<(u64, usize)> {
    if v < 0x80 {
        Some((v, 1))
    } else if v < 0x4000 {
        Some(((v & 0x7f) | 0x80 | ((v >> 7) << 8), 2))
    } else {
        pack_uvarint_slow(v)
    }
}

#[inline(never)]
fn pack_uvarint_slow(mut v: u64) -> Option<(u64, usize)> {
    if v >= 1 << 56 {
        return None;
    }
    let mut out = 0;
    let mut i = 0;
    while v >= 0x80 {
        out |= ((v & 0x7f) | 0x80) << (8 * i);
        v >>= 7;
        i += 1;
    }
    Some((out | (v << (8 * i)), i + 1))
}

/// Spare capacity [`put_uvarint`] needs beyond the varint itself.
const VARINT_SLACK: usize = 8;

/// Writes an unsigned varint. `BytesMut::put_u8` costs a call per byte
/// (bytes' `put_slice` is not inlined across crates), and a varint gathered
/// in a stack array and copied out stalls on store forwarding; instead the
/// varint is packed in a register, stored as one 8-byte word and the unused
/// tail cut off again (the record's `reserve` left room for that).
#[inline]
fn put_uvarint(buf: &mut BytesMut, v: u64) {
    match pack_uvarint(v) {
        Some((packed, n)) => put_packed(buf, packed, n),
        None => put_uvarint_long(buf, v),
    }
}

/// Writes the `n` low bytes of `packed` (little-endian) with one 8-byte
/// store, cutting the rest off again; needs [`VARINT_SLACK`] spare bytes.
#[inline(always)]
fn put_packed(buf: &mut BytesMut, packed: u64, n: usize) {
    let keep = buf.len() + n;
    buf.extend_from_slice(&packed.to_le_bytes());
    buf.truncate(keep);
}

/// Varints of 9 or 10 bytes (only huge timestamp deltas).
#[inline(never)]
fn put_uvarint_long(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    buf.extend_from_slice(&[v as u8]);
}

fn checked_len(what: &'static str, len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::TooLong {
        what,
        len,
        max: i32::MAX as usize,
    })
}

/// Encoded size of a nullable varint-length byte string.
#[inline]
fn bytes_len(v: Option<usize>) -> Result<usize, EncodeError> {
    Ok(match v {
        None => 1,
        Some(n) => varint_len(checked_len("record field", n)?) + n,
    })
}

#[inline]
fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, zigzag32(v));
}

#[inline]
fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarint(buf, zigzag64(v));
}

#[inline(always)]
fn put_nullable(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(buf, -1),
        Some(b) => {
            // Lengths were checked by the size computation.
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// [`write_record`] for a record without headers whose framing before the
/// first byte string fits in 16 bytes (all but huge timestamp deltas):
/// every length comes from packing its varint, so nothing is computed
/// twice, and the framing is gathered in a register and stored at once
/// (a store per varint, each through `BytesMut`'s length and capacity
/// checks, cost more than the varints). `None`, with nothing written, for
/// the other records.
#[inline(always)]
fn write_record_without_headers(
    buf: &mut BytesMut,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Option<usize> {
    let key_len = key.map_or(Some(-1), |k| i32::try_from(k.len()).ok())?;
    let value_len = value.map_or(Some(-1), |v| i32::try_from(v.len()).ok())?;
    let (timestamp, timestamp_n) = pack_uvarint(zigzag64(timestamp_delta))?;
    let (offset, offset_n) = pack_uvarint(zigzag32(offset_delta))?;
    let (key_prefix, key_n) = pack_uvarint(zigzag32(key_len))?;
    let (value_prefix, value_n) = pack_uvarint(zigzag32(value_len))?;
    // attributes, the varints, the strings and a header count of 0
    let body = (1 + timestamp_n + offset_n + key_n + value_n + 1)
        .checked_add(key.map_or(0, <[u8]>::len))?
        .checked_add(value.map_or(0, <[u8]>::len))?;
    let (length, length_n) = pack_uvarint(zigzag32(i32::try_from(body).ok()?))?;
    // Up to the key, and on to the value if there is no key.
    let mut head_n = length_n + 1 + timestamp_n + offset_n + key_n;
    let with_value_prefix = key.is_none() && head_n + value_n <= 16;
    if with_value_prefix {
        head_n += value_n;
    } else if head_n > 16 {
        return None;
    }
    let mut head = u128::from(length);
    let mut at = 8 * length_n;
    for (bytes, n) in [
        (u64::from(attributes as u8), 1),
        (timestamp, timestamp_n),
        (offset, offset_n),
        (key_prefix, key_n),
    ] {
        head |= u128::from(bytes) << at;
        at += 8 * n;
    }
    if with_value_prefix {
        head |= u128::from(value_prefix) << at;
    }
    let total = length_n + body;
    // The 16-byte store overshoots by up to 15 bytes, cut off again.
    buf.reserve(total + 16);
    let end = buf.len() + head_n;
    buf.extend_from_slice(&head.to_le_bytes());
    buf.truncate(end);
    if let Some(k) = key {
        buf.extend_from_slice(k);
    }
    if !with_value_prefix {
        put_packed(buf, value_prefix, value_n);
    }
    if let Some(v) = value {
        buf.extend_from_slice(v);
    }
    buf.extend_from_slice(&[0]);
    Some(total)
}

/// Appends one record (length prefix included); returns its encoded size.
/// Records without headers, the common case, take the inlined fast path.
/// Inlined whole into the writer's `append`, the general path made it too
/// large for `BytesMut`'s own methods to be inlined into it, which cost
/// more than the call; so did passing the fields as one struct.
#[inline(always)]
fn write_record(
    buf: &mut BytesMut,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[RecordHeader],
) -> Result<usize, EncodeError> {
    if headers.is_empty() {
        if let Some(size) =
            write_record_without_headers(buf, attributes, timestamp_delta, offset_delta, key, value)
        {
            return Ok(size);
        }
    }
    write_any_record(
        buf,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
    )
}

/// [`write_record`] for every record.
#[inline(never)]
fn write_any_record(
    buf: &mut BytesMut,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[RecordHeader],
) -> Result<usize, EncodeError> {
    let mut body = 1
        + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + bytes_len(key.map(<[u8]>::len))?
        + bytes_len(value.map(<[u8]>::len))?
        + varint_len(checked_len("record headers", headers.len())?);
    for h in headers {
        body += bytes_len(Some(h.key.len()))? + bytes_len(h.value.as_ref().map(Bytes::len))?;
    }
    let body_i32 = checked_len("record", body)?;
    let total = varint_len(body_i32) + body;
    // Room for the record plus the overshoot of the last varint stores, so
    // nothing below reallocates.
    buf.reserve(total + VARINT_SLACK);
    put_varint(buf, body_i32);
    buf.extend_from_slice(&[attributes as u8]);
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    put_nullable(buf, key);
    put_nullable(buf, value);
    put_varint(buf, headers.len() as i32);
    for h in headers {
        put_nullable(buf, Some(h.key.as_bytes()));
        put_nullable(buf, h.value.as_deref());
    }
    Ok(total)
}

/// An upper bound of the encoded size of one record, for the producer's
/// batch sizing before the record is written (deltas are assumed to take
/// their largest varint size). `None` lengths are null key/value.
pub fn record_size_upper_bound(
    key_len: Option<usize>,
    value_len: Option<usize>,
    headers: &[RecordHeader],
) -> usize {
    // length prefix 5, attributes 1, timestamp delta 10, offset delta 5,
    // header count 5; each nullable byte string 5 + its bytes.
    let field = |n: Option<usize>| 5 + n.unwrap_or(0);
    let mut size = 5 + 1 + 10 + 5 + field(key_len) + field(value_len) + 5;
    for h in headers {
        size += field(Some(h.key.len())) + field(h.value.as_ref().map(Bytes::len));
    }
    size
}

/// The batch-level fields the producer chooses; records are added with
/// [`RecordBatchWriter::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Base offset; `0` in produce requests (the broker assigns offsets).
    pub base_offset: i64,
    /// Leader epoch; `-1` from producers.
    pub partition_leader_epoch: i32,
    /// Idempotent/transactional producer id, or `-1`.
    pub producer_id: i64,
    /// Producer epoch, or `-1`.
    pub producer_epoch: i16,
    /// Sequence of the first record, or `-1`.
    pub base_sequence: i32,
    /// Whether the batch belongs to a transaction.
    pub is_transactional: bool,
    /// Codec for the records.
    pub compression: Compression,
    /// Timestamp type to declare (producers send `CreateTime`).
    pub timestamp_type: TimestampType,
}

impl Default for BatchHeader {
    /// A plain (non-idempotent, uncompressed) producer batch.
    fn default() -> Self {
        Self {
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            is_transactional: false,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

/// Header fields that are only known once all records are in.
struct Totals {
    count: i32,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    is_control: bool,
    has_delete_horizon: bool,
}

fn attributes(h: &BatchHeader, t: &Totals) -> i16 {
    let mut a = i16::from(h.compression.id());
    if h.timestamp_type == TimestampType::LogAppendTime {
        a |= TIMESTAMP_TYPE_BIT;
    }
    if h.is_transactional {
        a |= TRANSACTIONAL_BIT;
    }
    if t.is_control {
        a |= CONTROL_BIT;
    }
    if t.has_delete_horizon {
        a |= DELETE_HORIZON_BIT;
    }
    a
}

/// Writes the 61 header bytes, with length and CRC left zero for [`seal`].
fn put_header(out: &mut impl BufMut, h: &BatchHeader, t: &Totals) {
    out.put_i64(h.base_offset);
    out.put_i32(0);
    out.put_i32(h.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(attributes(h, t));
    out.put_i32(t.last_offset_delta);
    out.put_i64(t.base_timestamp);
    out.put_i64(t.max_timestamp);
    out.put_i64(h.producer_id);
    out.put_i16(h.producer_epoch);
    out.put_i32(h.base_sequence);
    out.put_i32(t.count);
}

/// Fills in length and CRC of the batch that starts at `batch[0]`; the CRC is
/// computed once, over the final bytes.
fn seal(batch: &mut [u8]) -> Result<(), EncodeError> {
    seal_with(batch, None)
}

/// Record bytes the writer lets accumulate before adding them to its
/// running CRC: few enough to be still in cache.
const CRC_CHUNK: usize = 16 * 1024;

/// As [`seal`], given the CRC-32C of the records (the bytes after the
/// header) if it is known already: then only the header is read again.
fn seal_with(batch: &mut [u8], records_crc: Option<u32>) -> Result<(), EncodeError> {
    let length = checked_len("record batch", batch.len().saturating_sub(12))?;
    if let Some(dst) = batch.get_mut(LENGTH_AT..LENGTH_AT + 4) {
        dst.copy_from_slice(&length.to_be_bytes());
    }
    let crc = match (records_crc, batch.get(ATTRIBUTES_AT..RECORD_BATCH_OVERHEAD)) {
        (Some(records), Some(head)) => crc32c::combine(
            crc32c::checksum(head),
            records,
            batch.len() - RECORD_BATCH_OVERHEAD,
        ),
        _ => crc32c::checksum(batch.get(ATTRIBUTES_AT..).unwrap_or_default()),
    };
    if let Some(dst) = batch.get_mut(CRC_AT..CRC_AT + 4) {
        dst.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

/// Writes a complete batch: the header, then what `body` appends, then
/// length and CRC. On failure `out` is left as it was.
fn write_batch_with(
    out: &mut BytesMut,
    h: &BatchHeader,
    t: &Totals,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    put_header(out, h, t);
    let result = body(out).and_then(|()| out.get_mut(start..).map_or(Ok(()), seal));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Writes a complete batch from its header and the uncompressed records.
fn write_batch(
    out: &mut BytesMut,
    h: &BatchHeader,
    t: &Totals,
    records: &[u8],
) -> Result<(), EncodeError> {
    let uncompressed = h.compression == Compression::None;
    out.reserve(RECORD_BATCH_OVERHEAD + if uncompressed { records.len() } else { 64 });
    write_batch_with(out, h, t, |out| {
        compression::compress(h.compression, records, out)
    })
}

/// Encodes `batch` as a complete v2 batch (length, CRC and compression
/// included), keeping its deltas and header fields as they are.
pub fn encode_batch(buf: &mut BytesMut, batch: &RecordBatch) -> Result<(), EncodeError> {
    if batch.magic != 2 {
        return Err(EncodeError::UnsupportedVersion {
            what: "RecordBatch",
            version: batch.magic.into(),
        });
    }
    let header = BatchHeader {
        base_offset: batch.base_offset,
        partition_leader_epoch: batch.partition_leader_epoch,
        producer_id: batch.producer_id,
        producer_epoch: batch.producer_epoch,
        base_sequence: batch.base_sequence,
        is_transactional: batch.is_transactional,
        compression: batch.compression,
        timestamp_type: batch.timestamp_type,
    };
    let totals = Totals {
        count: checked_len("record batch records", batch.records.len())?,
        last_offset_delta: batch.last_offset_delta,
        base_timestamp: batch.base_timestamp,
        max_timestamp: batch.max_timestamp,
        is_control: batch.is_control,
        has_delete_horizon: batch.has_delete_horizon,
    };
    let write = |dst: &mut BytesMut| -> Result<(), EncodeError> {
        for r in &batch.records {
            write_record(
                dst,
                r.attributes,
                r.timestamp_delta,
                r.offset_delta,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            )?;
        }
        Ok(())
    };
    if batch.compression == Compression::None {
        // Records go straight into the output behind the header.
        write_batch_with(buf, &header, &totals, write)
    } else {
        let mut scratch = BytesMut::new();
        write(&mut scratch)?;
        write_batch(buf, &header, &totals, &scratch)
    }
}

/// Rewrites producer id, epoch and base sequence of an encoded v2 batch in
/// place and recomputes its CRC: the producer assigns them when a batch is
/// sent (or re-sent after an epoch bump), after the records were written.
///
/// Fails with [`EncodeError::UnsupportedVersion`] if `batch` is not a v2
/// batch (the version is the magic found, or `-1` if it is too short).
pub fn set_producer_state(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), EncodeError> {
    check_v2(batch)?;
    let mut fields = [0u8; 14];
    fields[..8].copy_from_slice(&producer_id.to_be_bytes());
    fields[8..10].copy_from_slice(&producer_epoch.to_be_bytes());
    fields[10..].copy_from_slice(&base_sequence.to_be_bytes());
    if let Some(dst) = batch.get_mut(PRODUCER_ID_AT..PRODUCER_ID_AT + 14) {
        dst.copy_from_slice(&fields);
    }
    seal(batch)
}

/// Rewrites what a partition leader assigns in an encoded v2 batch, in
/// place: the base offset and leader epoch and, for a topic with
/// `LogAppendTime`, that timestamp type with `log_append_time` as the max
/// timestamp. Only the last changes bytes the CRC covers, so only then is
/// the CRC recomputed.
///
/// Fails as [`set_producer_state`] does on anything but a v2 batch.
pub fn set_leader_fields(
    batch: &mut [u8],
    base_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Result<(), EncodeError> {
    check_v2(batch)?;
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
    if let Some(time) = log_append_time {
        let attributes =
            i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]) | TIMESTAMP_TYPE_BIT;
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&time.to_be_bytes());
        seal(batch)?;
    }
    Ok(())
}

/// Whether `batch` is long enough for a v2 header and declares magic 2;
/// the error names the magic found (`-1` if too short).
fn check_v2(batch: &[u8]) -> Result<(), EncodeError> {
    let magic = match batch.get(MAGIC_AT) {
        Some(&m) if batch.len() >= RECORD_BATCH_OVERHEAD => m as i8,
        _ => -1,
    };
    if magic == 2 {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedVersion {
            what: "RecordBatch",
            version: magic.into(),
        })
    }
}

/// Builds one v2 batch for the producer, record by record.
///
/// Records are encoded as they are appended. Uncompressed, they go straight
/// into the buffer that is handed over, behind room for the header, and
/// their CRC is brought up to date while they are still in cache. LZ4 and
/// snappy compress independent blocks: each block is compressed as soon as
/// it is full, on the appending thread while its records are in cache, so
/// [`finish`](Self::finish) has only the last one left. Gzip and zstd
/// compress the records once, in `finish`. Offset deltas count up from 0;
/// timestamp deltas are relative to the first record's timestamp.
#[derive(Debug)]
pub struct RecordBatchWriter {
    header: BatchHeader,
    /// The codec of the open batch, fixed by its first record.
    codec: Compression,
    /// Input bytes per block if `codec` compresses in blocks.
    block: Option<usize>,
    /// The batch behind [`RECORD_BATCH_OVERHEAD`] bytes reserved for its
    /// header: the records themselves if uncompressed (sealed in place,
    /// without a copy), the blocks compressed so far for a block codec, the
    /// uncompressed records for gzip and zstd. Empty (no allocation) after
    /// [`finish`](Self::finish) handed it over; the next
    /// [`append`](Self::append) allocates it.
    buf: BytesMut,
    /// Records not compressed yet, with a block codec.
    pending: BytesMut,
    /// Encoded size of the records appended to the open batch.
    records_len: usize,
    /// Bytes to allocate for when `buf` is next allocated: the size of the
    /// last batch handed over, as the next one is likely as large.
    next_capacity: usize,
    /// CRC-32C of `buf` from the end of the header to `crc_upto`, while
    /// `buf` holds the batch's final bytes (`None` for gzip and zstd):
    /// brought up to date every [`CRC_CHUNK`] bytes, while they are still in
    /// cache, so sealing reads little of the batch again.
    records_crc: Option<u32>,
    crc_upto: usize,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl RecordBatchWriter {
    /// A writer for batches with `header`.
    pub fn new(header: BatchHeader) -> Self {
        Self::with_capacity(header, 0)
    }

    /// A writer whose buffer starts with room for `bytes` of records.
    pub fn with_capacity(header: BatchHeader, bytes: usize) -> Self {
        Self::with_buffer(header, BytesMut::new(), bytes)
    }

    /// A writer that writes into `buf` (cleared first) with room for
    /// `bytes` of records: a buffer of an earlier batch handed back for
    /// reuse, whose pages are already mapped, unlike a fresh allocation's.
    pub fn with_buffer(header: BatchHeader, mut buf: BytesMut, bytes: usize) -> Self {
        buf.clear();
        Self {
            header,
            codec: header.compression,
            block: None,
            buf,
            pending: BytesMut::new(),
            records_len: 0,
            next_capacity: bytes,
            records_crc: None,
            crc_upto: RECORD_BATCH_OVERHEAD,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
        }
    }

    /// The writer's buffer, for [`with_buffer`](Self::with_buffer): the
    /// records appended since the last finish, if any, or after a gzip or
    /// zstd batch its uncompressed records. Empty once
    /// [`finish`](Self::finish) handed it over.
    pub fn into_buffer(self) -> BytesMut {
        self.buf
    }

    /// The header batches are written with (an open batch keeps the codec
    /// of its first record; see [`header_mut`](Self::header_mut)).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Changes header fields (e.g. the producer state) before finishing.
    /// The codec of a batch is fixed by its first record: a change of
    /// `compression` applies from the next batch.
    pub fn header_mut(&mut self) -> &mut BatchHeader {
        &mut self.header
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if written uncompressed: exact for
    /// [`Compression::None`], and the input size of the codec otherwise
    /// (compressed batches are usually much smaller).
    pub fn uncompressed_size(&self) -> usize {
        RECORD_BATCH_OVERHEAD + self.records_len
    }

    /// Appends a record with an absolute `timestamp` (milliseconds); returns
    /// its encoded size. Nothing is written if it fails (a length beyond
    /// `i32::MAX`, more than `i32::MAX` records, or a compression failure).
    #[inline]
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) -> Result<usize, EncodeError> {
        // Every record but a batch's first, or one that completes a block
        // of a block codec, is appended by code kept small, so that the
        // record's stores are inlined into it.
        if self.count > 0 && self.count < i32::MAX {
            match self.block {
                None => return self.append_next(false, timestamp, key, value, headers),
                Some(size) if self.pending.len() < size => {
                    return self.append_next(true, timestamp, key, value, headers)
                }
                Some(_) => {}
            }
        }
        self.append_any(timestamp, key, value, headers)
    }

    /// Appends a record that is not the batch's first, to `buf` or (block
    /// codecs, the block not full yet) to `pending`.
    #[inline(always)]
    fn append_next(
        &mut self,
        to_pending: bool,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) -> Result<usize, EncodeError> {
        let dst = if to_pending {
            &mut self.pending
        } else {
            &mut self.buf
        };
        let size = write_record(
            dst,
            0,
            timestamp.wrapping_sub(self.base_timestamp),
            self.count,
            key,
            value,
            headers,
        )?;
        self.records_len += size;
        self.update_crc();
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        Ok(size)
    }

    /// [`append`](Self::append) for every record.
    #[inline(never)]
    fn append_any(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) -> Result<usize, EncodeError> {
        if self.count == i32::MAX {
            return Err(EncodeError::TooLong {
                what: "record batch records",
                len: self.len().saturating_add(1),
                max: i32::MAX as usize,
            });
        }
        if self.count == 0 {
            self.open();
        }
        let base = if self.count == 0 {
            timestamp
        } else {
            self.base_timestamp
        };
        let dst = match self.block {
            Some(size) => {
                // Before the record, so that a failure leaves none of it written.
                if self.pending.len() >= size {
                    self.compress_pending(size, false)?;
                }
                &mut self.pending
            }
            None => &mut self.buf,
        };
        let size = write_record(
            dst,
            0,
            timestamp.wrapping_sub(base),
            self.count,
            key,
            value,
            headers,
        )?;
        self.records_len += size;
        self.update_crc();
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        self.count += 1;
        Ok(size)
    }

    /// Starts a batch, at its first record: the header's room, and what the
    /// codec writes before its blocks.
    fn open(&mut self) {
        self.codec = self.header.compression;
        self.block = compression::block_size(self.codec);
        self.buf.clear();
        let capacity = std::mem::take(&mut self.next_capacity);
        // Allocated here rather than in `finish`, so that a writer dropped
        // after its only batch (the producer's case) never allocates a
        // buffer it does not use.
        self.buf.reserve(RECORD_BATCH_OVERHEAD + capacity);
        self.buf.put_bytes(0, RECORD_BATCH_OVERHEAD);
        self.crc_upto = RECORD_BATCH_OVERHEAD;
        self.records_crc = (self.codec == Compression::None || self.block.is_some()).then_some(0);
        if let Some(size) = self.block {
            compression::begin_blocks(self.codec, &mut self.buf);
            self.pending.clear();
            // A block and the record that completes it, or a small batch.
            self.pending.reserve((size + size / 2).min(capacity));
        }
    }

    /// Compresses the pending records onto `buf`: every full block, and with
    /// `all` the last, partial one too. Blocks compressed before a failure
    /// stay compressed; the rest stays pending.
    fn compress_pending(&mut self, size: usize, all: bool) -> Result<(), EncodeError> {
        let mut done = 0;
        let mut result = Ok(());
        while self.pending.len() - done >= size.max(1) || (all && done < self.pending.len()) {
            let end = (done + size).min(self.pending.len());
            let block = self.pending.get(done..end).unwrap_or_default();
            if let Err(e) = compression::compress_block(self.codec, block, &mut self.buf) {
                result = Err(e);
                break;
            }
            done = end;
        }
        if done > 0 {
            // What is left is less than a block (or the tail of the last
            // record): moved to the front rather than left to grow.
            self.pending.copy_within(done.., 0);
            self.pending.truncate(self.pending.len() - done);
            self.update_crc();
        }
        result
    }

    /// Adds what was written to `buf` since the last time to `records_crc`,
    /// once there is a [`CRC_CHUNK`] of it: a call per small record costs
    /// more than it saves.
    #[inline(always)]
    fn update_crc(&mut self) {
        if self.buf.len().saturating_sub(self.crc_upto) >= CRC_CHUNK {
            self.add_unread_to_crc();
        }
    }

    #[inline(never)]
    fn add_unread_to_crc(&mut self) {
        if let Some(crc) = self.records_crc {
            let unread = self.buf.get(self.crc_upto..).unwrap_or_default();
            self.records_crc = Some(crc32c::append(crc, unread));
        }
        self.crc_upto = self.buf.len();
    }

    /// The header of the open batch: the codec is the one it started with.
    fn batch_header(&self) -> BatchHeader {
        BatchHeader {
            compression: self.codec,
            ..self.header
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            count: self.count,
            last_offset_delta: self.count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            is_control: false,
            has_delete_horizon: false,
        }
    }

    fn reset(&mut self) {
        // `append` writes the header placeholder at the next first record.
        self.buf.clear();
        self.pending.clear();
        self.records_len = 0;
        self.records_crc = None;
        self.crc_upto = RECORD_BATCH_OVERHEAD;
        self.count = 0;
        self.base_timestamp = -1;
        self.max_timestamp = -1;
    }

    /// Appends the finished batch to `out` and resets the writer for the next
    /// batch (keeping its buffer). Writes nothing if no record was appended,
    /// as Kafka has no use for empty producer batches. On error nothing is
    /// written and the writer keeps its records.
    pub fn finish_into(&mut self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.count == 0 {
            return Ok(());
        }
        if self.block.is_some() {
            let batch = self.finish()?;
            out.extend_from_slice(&batch);
            if let Ok(buf) = batch.try_into_mut() {
                self.buf = buf;
                self.buf.clear();
            }
            return Ok(());
        }
        let totals = self.totals();
        let records = self.buf.get(RECORD_BATCH_OVERHEAD..).unwrap_or_default();
        write_batch(out, &self.batch_header(), &totals, records)?;
        self.reset();
        Ok(())
    }

    /// Returns the finished batch and resets the writer; empty if no record
    /// was appended. Uncompressed and LZ4 or snappy batches are handed over
    /// without a copy (the writer allocates a fresh buffer the size of this
    /// batch when the next record is appended, none if it is dropped). On
    /// error the writer keeps its records.
    pub fn finish(&mut self) -> Result<Bytes, EncodeError> {
        if self.count == 0 {
            return Ok(Bytes::new());
        }
        match self.block {
            Some(size) => {
                self.compress_pending(size, true)?;
                let end_at = self.buf.len();
                compression::end_blocks(self.codec, &mut self.buf);
                // The only way sealing can fail; checked before the buffer
                // is handed over.
                if let Err(e) = checked_len("record batch", self.buf.len() - 12) {
                    self.buf.truncate(end_at);
                    return Err(e);
                }
            }
            None if self.codec == Compression::None => {
                checked_len("record batch", self.buf.len() - 12)?;
            }
            None => {
                let mut out = BytesMut::new();
                self.finish_into(&mut out)?;
                return Ok(out.freeze());
            }
        }
        let totals = self.totals();
        let mut head = [0; RECORD_BATCH_OVERHEAD];
        put_header(&mut &mut head[..], &self.batch_header(), &totals);
        // The whole buffer, spare capacity included, goes with the batch, so
        // the writer keeps no share of its allocation.
        let records_crc = self
            .records_crc
            .zip(self.buf.get(self.crc_upto..))
            .map(|(crc, rest)| crc32c::append(crc, rest));
        let mut batch = std::mem::take(&mut self.buf);
        if let Some(dst) = batch.get_mut(..RECORD_BATCH_OVERHEAD) {
            dst.copy_from_slice(&head);
        }
        let sealed = seal_with(&mut batch, records_crc);
        // The next batch is likely as large: allocate once (at the next
        // append) instead of growing by doubling (and copying) from empty.
        self.next_capacity = batch.len().saturating_sub(RECORD_BATCH_OVERHEAD);
        self.reset();
        sealed.map(|()| batch.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path takes ordinary records (else the writer would keep
    /// working, only slower, and no round trip would notice), writes what
    /// the general path writes, and when it declines leaves the buffer as
    /// it was.
    #[test]
    fn the_fast_path_takes_ordinary_records_and_declines_cleanly() {
        let big = vec![b'v'; 1 << 20];
        let strings: [Option<&[u8]>; 5] =
            [None, Some(b""), Some(b"k"), Some(&big[..64]), Some(&big)];
        let timestamps = [0, -1, 1 << 20, (1 << 55) - 1, 1 << 55, i64::MIN, i64::MAX];
        let offsets = [0, -1, 1 << 20, i32::MIN, i32::MAX];
        let mut taken = 0;
        for timestamp in timestamps {
            for offset in offsets {
                for attributes in [0, -1, 5] {
                    for key in strings {
                        for value in strings {
                            let mut general = BytesMut::from(&b"before"[..]);
                            let mut fast = general.clone();
                            let size = write_any_record(
                                &mut general,
                                attributes,
                                timestamp,
                                offset,
                                key,
                                value,
                                &[],
                            )
                            .unwrap();
                            let ordinary = timestamp.unsigned_abs() <= 1 << 20
                                && offset.unsigned_abs() <= 1 << 20
                                && key.is_none_or(|k| k.len() <= 64);
                            match write_record_without_headers(
                                &mut fast, attributes, timestamp, offset, key, value,
                            ) {
                                Some(fast_size) => {
                                    assert_eq!(fast_size, size);
                                    assert_eq!(fast, general);
                                    taken += 1;
                                }
                                None => {
                                    assert!(!ordinary, "{timestamp} {offset} {key:?}");
                                    assert_eq!(&fast[..], b"before");
                                }
                            }
                        }
                    }
                }
            }
        }
        // The ordinary records, and some more.
        assert!(taken > 3 * 3 * 3 * 4 * 5, "{taken}");
    }
}
