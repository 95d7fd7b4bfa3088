//! The fixed 61-byte header of a v2 record batch, read and patched in place:
//! the log keeps batches as the producer sent them, so only the fields a
//! broker assigns are rewritten (base offset, leader epoch, and for
//! `LogAppendTime` topics the timestamp type and max timestamp).

use bytes::{Bytes, BytesMut};
use rskafka::protocol::ErrorCode;

/// Bytes before the first record.
pub(crate) const HEADER_LEN: usize = 61;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes on.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// What the broker needs to know of a batch, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
    pub is_transactional: bool,
    pub is_control: bool,
}

impl BatchInfo {
    /// Idempotent or transactional: sequence numbers are checked.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// The sequence of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + delta`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub(crate) fn add_sequence(seq: i32, delta: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(delta);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header of a stored (already validated) batch.
pub(crate) fn info(b: &[u8]) -> BatchInfo {
    let attributes = i16_at(b, ATTRIBUTES_AT);
    BatchInfo {
        last_offset_delta: i32_at(b, LAST_OFFSET_DELTA_AT),
        base_timestamp: i64_at(b, BASE_TIMESTAMP_AT),
        max_timestamp: i64_at(b, MAX_TIMESTAMP_AT),
        producer_id: i64_at(b, PRODUCER_ID_AT),
        producer_epoch: i16_at(b, PRODUCER_EPOCH_AT),
        base_sequence: i32_at(b, BASE_SEQUENCE_AT),
        record_count: i32_at(b, RECORD_COUNT_AT),
        is_transactional: attributes & TRANSACTIONAL_BIT != 0,
        is_control: attributes & CONTROL_BIT != 0,
    }
}

/// The one batch of a produce request's partition (v3+ requests carry
/// exactly one v2 batch, as Kafka requires), checked the way a broker
/// checks it before appending: framing, magic, CRC, counts.
pub(crate) fn validate_produced(records: &Bytes) -> Result<BatchInfo, ErrorCode> {
    if records.len() < HEADER_LEN {
        return Err(ErrorCode::CORRUPT_MESSAGE);
    }
    let length = i32_at(records, LENGTH_AT);
    if length < 0 || length as usize + 12 != records.len() {
        // Either cut short or more than one batch.
        return Err(if (length as usize).saturating_add(12) < records.len() {
            ErrorCode::INVALID_RECORD
        } else {
            ErrorCode::CORRUPT_MESSAGE
        });
    }
    if records[MAGIC_AT] != 2 {
        return Err(ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT);
    }
    let stored_crc = i32_at(records, CRC_AT) as u32;
    if crc32c::crc32c(&records[ATTRIBUTES_AT..]) != stored_crc {
        return Err(ErrorCode::CORRUPT_MESSAGE);
    }
    let info = info(records);
    if info.is_control {
        // Only the transaction coordinator writes markers.
        return Err(ErrorCode::INVALID_RECORD);
    }
    if info.record_count <= 0 || info.last_offset_delta != info.record_count - 1 {
        return Err(ErrorCode::INVALID_RECORD);
    }
    if info.has_producer_id() && (info.producer_epoch < 0 || info.base_sequence < 0) {
        return Err(ErrorCode::INVALID_RECORD);
    }
    Ok(info)
}

/// Stamps what the leader assigns. With `log_append_time`, the batch
/// declares that timestamp type and carries the time as its max timestamp,
/// which changes CRC-covered bytes, so the CRC is recomputed.
pub(crate) fn stamp(
    b: &mut BytesMut,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
    b[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time {
        let attributes = i16_at(b, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Offset of the base-timestamp field, for tests that build batches.
#[cfg(test)]
pub(crate) const BASE_TIMESTAMP_FIELD: usize = BASE_TIMESTAMP_AT;

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::protocol::record::{BatchHeader, RecordBatchWriter};

    fn batch(records: usize) -> Bytes {
        let mut w = RecordBatchWriter::new(BatchHeader::default());
        for i in 0..records {
            w.append(1000 + i as i64, None, Some(b"v"), &[])
                .expect("append");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn validates_and_stamps() {
        let b = batch(3);
        let info = validate_produced(&b).expect("valid");
        assert_eq!((info.record_count, info.last_offset_delta), (3, 2));
        let mut m = BytesMut::from(&b[..]);
        stamp(&mut m, 42, 7, Some(5000));
        let stamped = m.freeze();
        let again = validate_produced(&stamped).expect("CRC recomputed");
        assert_eq!(again.max_timestamp, 5000);
        assert_eq!(i64_at(&stamped, 0), 42);
        assert_eq!(i32_at(&stamped, LEADER_EPOCH_AT), 7);
        assert_eq!(i64_at(&stamped, BASE_TIMESTAMP_FIELD), 1000);
    }

    #[test]
    fn rejects_corruption_and_two_batches() {
        let b = batch(1);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            validate_produced(&Bytes::from(bad)),
            Err(ErrorCode::CORRUPT_MESSAGE)
        );
        let two = [b.clone(), b.clone()].concat();
        assert_eq!(
            validate_produced(&Bytes::from(two)),
            Err(ErrorCode::INVALID_RECORD)
        );
        assert_eq!(
            validate_produced(&b.slice(..30)),
            Err(ErrorCode::CORRUPT_MESSAGE)
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(5, 2), 7);
    }
}
