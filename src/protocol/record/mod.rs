//! Record batches: the payload of Produce requests and Fetch responses.
//!
//! - [`decode_batches`] turns a Fetch partition's `records` bytes into
//!   [`RecordBatch`]es: magic v2 batches, and legacy v0/v1 message sets
//!   presented as the same type. A batch cut short at the end (the broker
//!   stops at the fetch size limit) is reported, not treated as an error.
//! - [`RecordBatchWriter`] builds v2 batches for the producer, record by
//!   record, compressing once at the end; [`encode_batch`] re-encodes a
//!   decoded batch.
//! - [`Compression`] names the codecs; each one is behind its cargo feature.
//!
//! Nothing received is trusted: CRCs are checked before decompressing,
//! decompressed output is capped by [`DecodeLimits`], and counts and lengths
//! are checked against the bytes actually present before anything is
//! allocated. Keys, values and header values are zero-copy [`Bytes`] slices.

mod batch;
mod compression;
mod crc32c;
mod legacy;
mod parse;
#[cfg(test)]
mod tests;

/// Deterministic test data: a 32-bit xorshift sequence from `seed` (not 0).
#[cfg(test)]
fn xorshift(seed: u32) -> impl FnMut() -> u32 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    }
}
mod view;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};
use super::primitives::Reader;

pub use batch::{
    encode_batch, record_size_upper_bound, set_leader_fields, set_producer_state, BatchHeader, RecordBatchWriter,
    RECORD_BATCH_OVERHEAD,
};
pub use view::{BatchView, DecodedBatchViews, HeaderRefs, RecordRef, RecordRefs, RecordsView};

/// Bytes before a batch's magic byte: base offset, length, leader epoch (v2)
/// or offset, size, CRC (v0/v1). The same for every magic, which is how
/// [`decode_batches`] tells them apart.
const MAGIC_OFFSET: usize = 16;
/// Offset and length fields that precede every batch or legacy message.
const LOG_OVERHEAD: usize = 12;

/// A compression codec, as stored in the low three bits of batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
    /// gzip (feature `compression-gzip`).
    Gzip,
    /// Snappy (feature `compression-snappy`); written with the xerial framing
    /// of the Java client, read framed or raw.
    Snappy,
    /// LZ4 frame format (feature `compression-lz4`).
    Lz4,
    /// Zstandard (feature `compression-zstd`); needs brokers of Kafka 2.1+.
    Zstd,
}

impl Compression {
    /// All codecs, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec id Kafka stores in the attributes (0–4).
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with `id`, or `None` for ids Kafka does not define.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id)).copied()
    }

    /// The name Kafka's `compression.type` setting uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Whether this build can compress and decompress with the codec (its
    /// cargo feature is on).
    pub fn is_enabled(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "compression-gzip"),
            Compression::Snappy => cfg!(feature = "compression-snappy"),
            Compression::Lz4 => cfg!(feature = "compression-lz4"),
            Compression::Zstd => cfg!(feature = "compression-zstd"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown codec name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression type {0:?} (expected none, gzip, snappy, lz4 or zstd)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// Parses the names of Kafka's `compression.type` setting, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCompression(s.to_owned()))
    }
}

/// Which clock a batch's timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer. Also used for magic v0 messages, which carry no
    /// timestamp (their timestamps read as `-1`).
    #[default]
    CreateTime,
    /// Set by the broker when it appended the batch; every record's timestamp
    /// is then the batch's `max_timestamp`.
    LogAppendTime,
}

/// A record header: an application-defined key and optional value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeader {
    /// The header key (UTF-8, never null on the wire).
    pub key: String,
    /// The header value; `None` is distinct from empty.
    pub value: Option<Bytes>,
}

/// One record of a batch. Offsets and timestamps are deltas against the
/// batch; [`RecordBatch::record_offset`] and
/// [`RecordBatch::record_timestamp`] give the absolute values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchRecord {
    /// Record attributes (unused by Kafka in v2; kept for round trips). For
    /// legacy messages, the message's attribute byte.
    pub attributes: i8,
    /// Milliseconds after the batch's `base_timestamp`.
    pub timestamp_delta: i64,
    /// Offset after the batch's `base_offset`.
    pub offset_delta: i32,
    /// The key; `None` (null) is distinct from empty.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone on compacted topics.
    pub value: Option<Bytes>,
    /// Headers, in wire order (keys may repeat).
    pub headers: Vec<RecordHeader>,
}

/// A batch of records as decoded from the wire (magic v2), or a legacy v0/v1
/// message or compressed message set presented in the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Offset of the first record (of the batch's offset range, for batches
    /// whose records were removed by compaction).
    pub base_offset: i64,
    /// Leader epoch the broker stamped on the batch (`-1` if none, and for legacy messages).
    pub partition_leader_epoch: i32,
    /// Message format: 2, or 0/1 for legacy messages.
    pub magic: i8,
    /// Codec the batch was (or will be) stored with.
    pub compression: Compression,
    /// Which clock the timestamps come from.
    pub timestamp_type: TimestampType,
    /// Part of a transaction.
    pub is_transactional: bool,
    /// A control batch (transaction marker); see [`RecordBatch::control_record`].
    pub is_control: bool,
    /// `base_timestamp` holds the delete horizon set by log compaction.
    pub has_delete_horizon: bool,
    /// Offset delta of the last offset of the batch's range.
    pub last_offset_delta: i32,
    /// Timestamp the record deltas are relative to (`-1` if none).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (the append time for `LogAppendTime`).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id (`-1` if none).
    pub producer_id: i64,
    /// Producer epoch (`-1` if none).
    pub producer_epoch: i16,
    /// Sequence number of the first record (`-1` if none).
    pub base_sequence: i32,
    /// The records.
    pub records: Vec<BatchRecord>,
}

impl Default for RecordBatch {
    /// An empty v2 batch with every "none" marker Kafka uses.
    fn default() -> Self {
        Self {
            base_offset: 0,
            partition_leader_epoch: -1,
            magic: 2,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            is_transactional: false,
            is_control: false,
            has_delete_horizon: false,
            last_offset_delta: -1,
            base_timestamp: -1,
            max_timestamp: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
        }
    }
}

impl RecordBatch {
    /// The last offset of the batch's range (it may exceed the last
    /// record's offset when compaction removed records).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset to fetch next after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The absolute offset of `record`, one of this batch's records.
    pub fn record_offset(&self, record: &BatchRecord) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(record.offset_delta))
    }

    /// The absolute timestamp of `record`: the broker's append time for
    /// `LogAppendTime` batches, else the producer's timestamp. Not meaningful
    /// while `has_delete_horizon` is set (the base is then the horizon).
    pub fn record_timestamp(&self, record: &BatchRecord) -> i64 {
        match self.timestamp_type {
            TimestampType::LogAppendTime => self.max_timestamp,
            TimestampType::CreateTime => self.base_timestamp.wrapping_add(record.timestamp_delta),
        }
    }

    /// For a control batch, its marker (control batches hold exactly one
    /// record); `None` for data batches or an empty control batch.
    pub fn control_record(&self) -> Option<Result<ControlRecord, DecodeError>> {
        if !self.is_control {
            return None;
        }
        self.records.first().map(ControlRecord::decode)
    }
}

/// What a control record marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRecordKind {
    /// The producer's transaction was aborted: skip its records (with
    /// `read_committed`).
    Abort,
    /// The producer's transaction was committed.
    Commit,
    /// Another control type (KRaft uses several internally); consumers skip it.
    Other(i16),
}

/// The transaction marker carried by a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    /// Abort, commit, or another control type.
    pub kind: ControlRecordKind,
    /// Version of the control record key.
    pub version: i16,
    /// Epoch of the transaction coordinator that wrote the marker; `-1` when
    /// the record carries no marker value (types other than abort/commit).
    pub coordinator_epoch: i32,
}

impl ControlRecord {
    /// Decodes the key (version, type) and, for abort/commit, the value
    /// (version, coordinator epoch) of a control batch's record. Bytes after
    /// the known fields are ignored, so newer versions still decode.
    pub fn decode(record: &BatchRecord) -> Result<Self, DecodeError> {
        let key = record.key.clone().ok_or_else(|| {
            DecodeError::new(DecodeErrorKind::UnexpectedNull, 0).context("ControlRecord.key")
        })?;
        let mut r = Reader::new(key);
        let version = r.i16().map_err(|e| e.context("ControlRecord.key"))?;
        let kind = match r.i16().map_err(|e| e.context("ControlRecord.key"))? {
            0 => ControlRecordKind::Abort,
            1 => ControlRecordKind::Commit,
            other => ControlRecordKind::Other(other),
        };
        let coordinator_epoch = match kind {
            ControlRecordKind::Abort | ControlRecordKind::Commit => {
                let value = record.value.clone().ok_or_else(|| {
                    DecodeError::new(DecodeErrorKind::UnexpectedNull, 0)
                        .context("ControlRecord.value")
                })?;
                let mut r = Reader::new(value);
                r.i16()
                    .and_then(|_version| r.i32())
                    .map_err(|e| e.context("ControlRecord.value"))?
            }
            ControlRecordKind::Other(_) => -1,
        };
        Ok(Self {
            kind,
            version,
            coordinator_epoch,
        })
    }
}

/// Bounds on what decoding may allocate for data that was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest decompressed size of one batch; a batch that inflates beyond
    /// it fails to decode (for a consumer: a protocol error).
    pub max_decompressed_bytes: usize,
    /// Largest decompressed size of all batches of one fetched partition,
    /// so many small "bombs" in one response cannot add up. When it runs
    /// out after some batches were decoded, decoding stops early and the
    /// rest is fetched again from the next offset.
    pub max_total_decompressed_bytes: usize,
    /// Check each batch's CRC (like the Java consumer's `check.crcs`).
    pub verify_crc: bool,
}

impl DecodeLimits {
    /// 64 MiB: far above Kafka's default 1 MiB `message.max.bytes` even at
    /// high compression ratios, yet small enough to survive a bomb.
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
    /// 256 MiB per decoded fetch partition.
    pub const DEFAULT_MAX_TOTAL_DECOMPRESSED_BYTES: usize = 256 << 20;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: Self::DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_total_decompressed_bytes: Self::DEFAULT_MAX_TOTAL_DECOMPRESSED_BYTES,
            verify_crc: true,
        }
    }
}

/// Why [`decode_batches`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeStop {
    /// Every byte was decoded.
    #[default]
    Complete,
    /// The last batch was cut short, as brokers do at the fetch size limit.
    /// Not an error: its records come with the next fetch.
    Truncated,
    /// [`DecodeLimits::max_total_decompressed_bytes`] ran out; the rest
    /// comes with the next fetch.
    DecompressionBudget,
}

/// The result of [`decode_batches`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedBatches {
    /// The complete batches, in order.
    pub batches: Vec<RecordBatch>,
    /// Why decoding stopped.
    pub stop: DecodeStop,
    /// Bytes after the last decoded batch that were not decoded (0 when
    /// complete).
    pub unread_bytes: usize,
}

impl DecodedBatches {
    /// Whether the last batch was cut short.
    pub fn truncated(&self) -> bool {
        self.stop == DecodeStop::Truncated
    }

    /// The offset to fetch next, if any batch was decoded.
    pub fn next_offset(&self) -> Option<i64> {
        self.batches.last().map(RecordBatch::next_offset)
    }

    /// Total number of records in all batches.
    pub fn record_count(&self) -> usize {
        self.batches.iter().map(|b| b.records.len()).sum()
    }
}

/// Decompression budget shared by the batches of one decode call.
pub(crate) struct Budget {
    per_batch: usize,
    total_left: usize,
}

impl Budget {
    fn new(limits: &DecodeLimits) -> Self {
        Self {
            per_batch: limits.max_decompressed_bytes,
            total_left: limits.max_total_decompressed_bytes,
        }
    }

    /// The cap for the next decompression.
    pub(crate) fn cap(&self) -> usize {
        self.per_batch.min(self.total_left)
    }

    /// Whether a failure at [`Budget::cap`] is due to the call's total
    /// budget rather than the per-batch limit.
    fn total_is_binding(&self) -> bool {
        self.total_left < self.per_batch
    }

    pub(crate) fn spend(&mut self, n: usize) {
        self.total_left = self.total_left.saturating_sub(n);
    }
}

/// Reads a stored CRC and, if `verify`, checks it against `crc` of all bytes
/// after it (v2 batches and legacy messages both end at their CRC's range).
fn read_crc(r: &mut Reader, verify: bool, crc: fn(&[u8]) -> u32) -> Result<(), DecodeError> {
    let pos = r.position();
    let expected = r.u32()?;
    if verify {
        let actual = crc(&r.clone().take_rest());
        if actual != expected {
            return Err(DecodeError::new(
                DecodeErrorKind::CrcMismatch { expected, actual },
                pos,
            ));
        }
    }
    Ok(())
}

/// Decodes a whole `records` field (e.g. a Fetch response partition's):
/// concatenated v2 batches and/or legacy v0/v1 messages.
///
/// A final batch cut short is reported in [`DecodedBatches::stop`], not as
/// an error; anything malformed (bad CRC, impossible lengths, garbage magic,
/// a decompression failure or bomb) is an error.
pub fn decode_batches(bytes: Bytes, limits: &DecodeLimits) -> Result<DecodedBatches, DecodeError> {
    let mut batches = Vec::new();
    let (stop, unread_bytes) = decode_all(bytes, limits, false, |b, _| batches.push(b))?;
    Ok(DecodedBatches {
        batches,
        stop,
        unread_bytes,
    })
}

/// Like [`decode_batches`] (same checks, CRCs and limits), but the records
/// of v2 batches are left in the received (or decompressed) bytes and
/// decoded as they are iterated, without a per-record allocation or
/// reference count: see [`RecordsView`]. Every record is checked here, so
/// iterating cannot fail.
pub fn decode_batch_views(
    bytes: Bytes,
    limits: &DecodeLimits,
) -> Result<DecodedBatchViews, DecodeError> {
    let mut batches = Vec::new();
    let (stop, unread_bytes) = decode_all(bytes, limits, true, |mut batch, view| {
        let records = match view {
            Some(v) => v,
            // Legacy messages are decoded owned; the view wraps them.
            None => RecordsView::from_records(std::mem::take(&mut batch.records)),
        };
        batches.push(BatchView { batch, records });
    })?;
    Ok(DecodedBatchViews {
        batches,
        stop,
        unread_bytes,
    })
}

/// The loop of [`decode_batches`] and [`decode_batch_views`]: hands every
/// complete batch to `push`; returns why it stopped and the bytes left.
fn decode_all(
    bytes: Bytes,
    limits: &DecodeLimits,
    lazy: bool,
    mut push: impl FnMut(RecordBatch, Option<RecordsView>),
) -> Result<(DecodeStop, usize), DecodeError> {
    let mut r = Reader::new(bytes);
    let mut budget = Budget::new(limits);
    let mut pushed = 0usize;
    let mut push = |b: RecordBatch, v: Option<RecordsView>| {
        pushed += 1;
        push(b, v);
    };
    let mut legacy_out = Vec::new();
    while r.remaining() > 0 {
        let Some(batch_len) = next_batch_len(&r)? else {
            return Ok((DecodeStop::Truncated, r.remaining()));
        };
        let start_remaining = r.remaining();
        let mut batch_reader = r.sub_reader(batch_len)?;
        let magic = peek_magic(&batch_reader);
        let result = match magic {
            2 => batch::decode_batch(&mut batch_reader, limits, &mut budget, lazy)
                .map(|(b, v)| push(b, v)),
            _ => legacy::decode_entry(&mut batch_reader, limits, &mut budget, &mut legacy_out)
                .map(|()| legacy_out.drain(..).for_each(|b| push(b, None))),
        };
        // Whatever a failed legacy entry left behind is not handed out.
        legacy_out.clear();
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(e.kind(), DecodeErrorKind::DecompressedTooLarge { .. })
                    && budget.total_is_binding()
                    && pushed > 0 =>
            {
                return Ok((DecodeStop::DecompressionBudget, start_remaining));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((DecodeStop::Complete, 0))
}

/// The total size of the batch or legacy message at the reader's position,
/// or `None` if the input ends before it does. Fails on a size or magic
/// byte no valid batch can have, even when cut short, so garbage is not
/// mistaken for truncation.
fn next_batch_len(r: &Reader) -> Result<Option<usize>, DecodeError> {
    let mut peek = r.clone();
    if peek.remaining() < LOG_OVERHEAD {
        return Ok(None);
    }
    peek.i64()?;
    let size_pos = peek.position();
    let size = peek.i32()?;
    if peek.remaining() >= MAGIC_OFFSET + 1 - LOG_OVERHEAD {
        let magic = peek_magic(r);
        if !(0..=2).contains(&magic) {
            return Err(DecodeError::new(
                DecodeErrorKind::InvalidValue(format!("unknown record batch magic {magic}")),
                r.position() + MAGIC_OFFSET,
            )
            .context("RecordBatch.magic"));
        }
    }
    let min = legacy::MIN_MESSAGE_SIZE;
    if size < min as i32 {
        return Err(DecodeError::new(
            DecodeErrorKind::InvalidValue(format!(
                "record batch size {size} below the minimum of {min}"
            )),
            size_pos,
        )
        .context("RecordBatch.length"));
    }
    let total = LOG_OVERHEAD + size as usize;
    Ok((total <= r.remaining()).then_some(total))
}

/// The magic byte of the batch at the reader's position; `-1` if absent.
fn peek_magic(r: &Reader) -> i8 {
    let mut peek = r.clone();
    match peek.take(MAGIC_OFFSET) {
        Ok(_) => peek.i8().unwrap_or(-1),
        Err(_) => -1,
    }
}
