//! Legacy message sets (magic v0 and v1), decode only.
//!
//! Entry: offset i64, message size i32, then the message: CRC-32 (IEEE) u32
//! over the rest, magic i8, attributes i8, timestamp i64 (v1 only), key and
//! value as i32-length byte strings. A compressed "wrapper" message's value
//! is a whole inner message set; for v1 wrappers the inner offsets are
//! relative and the wrapper carries the absolute offset of the last one.
//!
//! Each plain message becomes a one-record [`RecordBatch`]; each wrapper
//! becomes one batch holding all of its inner messages.

use bytes::Bytes;

use super::compression;
use super::{read_crc, BatchRecord, Budget, Compression, DecodeLimits, RecordBatch, TimestampType};
use crate::protocol::error::{DecodeError, DecodeErrorKind};
use crate::protocol::primitives::Reader;

/// Smallest message (v0 with null key and value): CRC, magic, attributes and
/// two length fields.
pub(super) const MIN_MESSAGE_SIZE: usize = 4 + 1 + 1 + 4 + 4;

const COMPRESSION_MASK: i8 = 0x07;
const TIMESTAMP_TYPE_BIT: i8 = 0x08;

struct Message {
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

impl Message {
    fn compression(&self, pos: usize) -> Result<Compression, DecodeError> {
        let id = (self.attributes & COMPRESSION_MASK) as u8;
        match Compression::from_id(id) {
            // Zstandard arrived with magic v2 only.
            Some(c) if c != Compression::Zstd => Ok(c),
            _ => Err(DecodeError::new(
                DecodeErrorKind::InvalidValue(format!(
                    "compression codec id {id} in a magic v{} message",
                    self.magic
                )),
                pos,
            )),
        }
    }

    fn timestamp_type(&self) -> TimestampType {
        if self.magic >= 1 && self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Decodes one entry (offset, size, message); `r` covers exactly the entry.
/// Pushes one batch onto `out`.
pub(super) fn decode_entry(
    r: &mut Reader,
    limits: &DecodeLimits,
    budget: &mut Budget,
    out: &mut Vec<RecordBatch>,
) -> Result<(), DecodeError> {
    decode_entry_inner(r, limits, budget, out).map_err(|e| e.context("LegacyMessage"))
}

fn decode_entry_inner(
    r: &mut Reader,
    limits: &DecodeLimits,
    budget: &mut Budget,
    out: &mut Vec<RecordBatch>,
) -> Result<(), DecodeError> {
    let offset = r.i64()?;
    r.i32()?; // size: the caller sized `r` by it
    let pos = r.position();
    let msg = decode_message(r, limits)?;
    let compression = msg.compression(pos)?;
    let timestamp_type = msg.timestamp_type();
    let mut batch = RecordBatch {
        base_offset: offset,
        magic: msg.magic,
        compression,
        timestamp_type,
        last_offset_delta: 0,
        base_timestamp: msg.timestamp,
        max_timestamp: msg.timestamp,
        ..RecordBatch::default()
    };
    if compression == Compression::None {
        batch.records.push(BatchRecord {
            attributes: msg.attributes,
            key: msg.key,
            value: msg.value,
            ..BatchRecord::default()
        });
        out.push(batch);
        return Ok(());
    }

    let value = msg.value.ok_or_else(|| {
        DecodeError::new(DecodeErrorKind::UnexpectedNull, pos).context("wrapper value")
    })?;
    let plain = compression::decompress(compression, &value, budget.cap(), msg.magic)
        .map_err(|kind| DecodeError::new(kind, pos).context("wrapper value"))?;
    budget.spend(plain.len());
    let inner = decode_inner(Reader::new(plain), limits)
        .map_err(|e| e.context("decompressed message set"))?;
    let (Some(first), Some(last)) = (inner.first(), inner.last()) else {
        return Err(DecodeError::new(
            DecodeErrorKind::InvalidValue("compressed message set is empty".into()),
            pos,
        ));
    };
    // v1 wrappers carry the absolute offset of their last inner message,
    // whose own offsets count from 0; v0 inner offsets are absolute.
    let shift = if msg.magic >= 1 {
        offset.wrapping_sub(last.0)
    } else {
        0
    };
    let base_offset = first.0.wrapping_add(shift);
    let base_timestamp = match timestamp_type {
        TimestampType::LogAppendTime => msg.timestamp,
        TimestampType::CreateTime => first.1.timestamp,
    };
    let delta = |abs: i64| {
        i32::try_from(abs.wrapping_sub(base_offset)).map_err(|_| {
            DecodeError::new(
                DecodeErrorKind::InvalidValue(format!(
                    "inner offset {abs} too far from the set's first offset {base_offset}"
                )),
                pos,
            )
        })
    };
    batch.base_offset = base_offset;
    batch.last_offset_delta = delta(last.0.wrapping_add(shift))?;
    batch.base_timestamp = base_timestamp;
    batch.max_timestamp = if msg.magic >= 1 { msg.timestamp } else { -1 };
    batch.records.reserve_exact(inner.len());
    for (inner_offset, m) in inner {
        let timestamp_delta = match timestamp_type {
            TimestampType::LogAppendTime => 0,
            TimestampType::CreateTime => m.timestamp.wrapping_sub(base_timestamp),
        };
        batch.records.push(BatchRecord {
            attributes: m.attributes,
            timestamp_delta,
            offset_delta: delta(inner_offset.wrapping_add(shift))?,
            key: m.key,
            value: m.value,
            headers: Vec::new(),
        });
    }
    out.push(batch);
    Ok(())
}

/// Decodes a decompressed inner message set. Unlike the outer set, it must
/// be complete, and its messages must not be compressed again.
fn decode_inner(mut r: Reader, limits: &DecodeLimits) -> Result<Vec<(i64, Message)>, DecodeError> {
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let offset = r.i64()?;
        let size = r.i32()?;
        if size < MIN_MESSAGE_SIZE as i32 {
            return Err(r.error(DecodeErrorKind::InvalidValue(format!(
                "message size {size} below the minimum of {MIN_MESSAGE_SIZE}"
            ))));
        }
        let size = r.check_len(size as u64)?;
        let mut mr = r.sub_reader(size)?;
        let pos = mr.position();
        let msg = decode_message(&mut mr, limits)?;
        if msg.compression(pos)? != Compression::None {
            return Err(DecodeError::new(
                DecodeErrorKind::InvalidValue("nested compressed message".into()),
                pos,
            ));
        }
        out.push((offset, msg));
    }
    Ok(out)
}

/// Decodes a message from its CRC to its end; `r` covers exactly the message.
fn decode_message(r: &mut Reader, limits: &DecodeLimits) -> Result<Message, DecodeError> {
    read_crc(r, limits.verify_crc, crc32fast::hash)?;
    let magic = r.i8()?;
    if !(0..=1).contains(&magic) {
        return Err(r.error(DecodeErrorKind::InvalidValue(format!(
            "legacy message magic {magic}"
        ))));
    }
    let attributes = r.i8()?;
    let timestamp = if magic == 1 { r.i64()? } else { -1 };
    let key = r.nullable_bytes()?;
    let value = r.nullable_bytes()?;
    r.expect_end()?;
    Ok(Message {
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}
