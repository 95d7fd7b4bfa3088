//! What the fake broker needs of a produced v2 batch. The log keeps
//! batches as the producer sent them; decoding, the CRC check and the
//! in-place stamping of what a leader assigns are the protocol layer's
//! (`decode_batch_views`, `set_leader_fields`).

use bytes::Bytes;
use rskafka::protocol::{
    record::{decode_batch_views, DecodeLimits, DecodeStop, RecordBatch},
    ErrorCode,
};

/// What the broker needs to know of a batch, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
}

impl BatchInfo {
    /// The header fields of `batch` (its records are not looked at).
    pub fn of(batch: &RecordBatch) -> Self {
        Self {
            last_offset_delta: batch.last_offset_delta,
            max_timestamp: batch.max_timestamp,
            producer_id: batch.producer_id,
            producer_epoch: batch.producer_epoch,
            base_sequence: batch.base_sequence,
            is_transactional: batch.is_transactional,
            is_control: batch.is_control,
        }
    }

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

/// The one batch of a produce request's partition (v3+ requests carry
/// exactly one v2 batch, as Kafka requires), checked the way a broker
/// checks it before appending: framing, magic, CRC, every record, counts.
pub(crate) fn validate_produced(records: &Bytes) -> Result<BatchInfo, ErrorCode> {
    let decoded = decode_batch_views(records.clone(), &DecodeLimits::default())
        .map_err(|_| ErrorCode::CORRUPT_MESSAGE)?;
    let view = match (&decoded.batches[..], decoded.stop) {
        ([one], DecodeStop::Complete) => one,
        // Cut short before the end of the first batch.
        ([], _) => return Err(ErrorCode::CORRUPT_MESSAGE),
        // More than one batch, or (part of) another after the first.
        _ => return Err(ErrorCode::INVALID_RECORD),
    };
    let batch = &view.batch;
    if batch.magic != 2 {
        return Err(ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT);
    }
    let info = BatchInfo::of(batch);
    if info.is_control {
        // Only the transaction coordinator writes markers.
        return Err(ErrorCode::INVALID_RECORD);
    }
    let count = view.records.len();
    if count == 0 || i64::from(info.last_offset_delta) != count as i64 - 1 {
        return Err(ErrorCode::INVALID_RECORD);
    }
    if info.has_producer_id() && (info.producer_epoch < 0 || info.base_sequence < 0) {
        return Err(ErrorCode::INVALID_RECORD);
    }
    Ok(info)
}

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
    fn a_produced_batch_is_read() {
        let info = validate_produced(&batch(3)).expect("valid");
        assert_eq!((info.last_offset_delta, info.max_timestamp), (2, 1002));
        assert!(!info.has_producer_id());
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
