//! One partition's log: batches as the producers sent them, offsets, leader
//! epochs, idempotent-producer state and the transaction index.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use rskafka::protocol::{
    record::{
        encode_batch, set_leader_fields, BatchRecord, Compression, RecordBatch, TimestampType,
    },
    ErrorCode,
};

use crate::batch::{add_sequence, BatchInfo};

/// How many batches per producer Kafka remembers for duplicate detection
/// (the producer's maximum in-flight requests with idempotence).
const DUPLICATE_WINDOW: usize = 5;

/// A batch in the log, with the header fields reads need.
#[derive(Debug, Clone)]
pub(crate) struct StoredBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub info: BatchInfo,
    /// The encoded batch, base offset and leader epoch stamped.
    pub bytes: Bytes,
}

/// A batch an idempotent producer wrote, remembered to answer retries.
#[derive(Debug, Clone, Copy)]
struct WrittenBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    log_append_time: i64,
}

/// What a partition knows of one producer id.
#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<WrittenBatch>,
}

/// A transaction's span in this partition, once aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer that aborted.
    pub producer_id: i64,
    /// Its first offset in this partition.
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
}

/// The outcome of appending a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub base_offset: i64,
    /// `-1` unless the topic uses `LogAppendTime`.
    pub log_append_time: i64,
}

/// A partition's log and the state derived from it.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    batches: VecDeque<StoredBatch>,
    log_start: i64,
    log_end: i64,
    /// Leader epoch history: (epoch, first offset written in it), ascending.
    epochs: Vec<(i32, i64)>,
    producers: HashMap<i64, ProducerEntry>,
    /// Producer id → first offset of its open transaction here.
    ongoing_txns: BTreeMap<i64, i64>,
    aborted: Vec<AbortedTxn>,
}

impl PartitionLog {
    pub(crate) fn new(leader_epoch: i32) -> Self {
        Self {
            batches: VecDeque::new(),
            log_start: 0,
            log_end: 0,
            epochs: vec![(leader_epoch, 0)],
            producers: HashMap::new(),
            ongoing_txns: BTreeMap::new(),
            aborted: Vec::new(),
        }
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start
    }

    /// The high watermark: acks are local, so it is the log end.
    pub fn high_watermark(&self) -> i64 {
        self.log_end
    }

    /// The last stable offset: the first offset of the oldest open
    /// transaction, else the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.ongoing_txns
            .values()
            .copied()
            .min()
            .unwrap_or(self.log_end)
            .min(self.log_end)
    }

    /// Aborted transactions whose span overlaps `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Producer ids with an open transaction here, with its first offset.
    #[allow(dead_code)] // for the transaction coordinator
    pub fn ongoing_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing_txns.iter().map(|(&p, &o)| (p, o))
    }

    pub(crate) fn batches(&self) -> impl Iterator<Item = &StoredBatch> {
        self.batches.iter()
    }

    /// Batches holding offsets `from..` (the first may start before `from`).
    pub(crate) fn batches_from(&self, from: i64) -> impl Iterator<Item = &StoredBatch> {
        let first = self.batches.partition_point(|b| b.last_offset < from);
        self.batches.range(first..)
    }

    /// The latest leader epoch in the history.
    pub(crate) fn latest_epoch(&self) -> i32 {
        self.epochs.last().map_or(-1, |e| e.0)
    }

    /// Starts leader epoch `epoch` at the current log end.
    pub(crate) fn begin_epoch(&mut self, epoch: i32) {
        self.epochs.retain(|&(e, _)| e < epoch);
        self.epochs.push((epoch, self.log_end));
    }

    /// The epoch of the batch holding `offset` (the history's view).
    pub(crate) fn epoch_of(&self, offset: i64) -> i32 {
        self.epochs
            .iter()
            .rev()
            .find(|&&(_, start)| start <= offset)
            .map_or(-1, |e| e.0)
    }

    /// OffsetForLeaderEpoch: the largest epoch ≤ `requested` and the offset
    /// where it ended, as Kafka's leader epoch cache computes it; `(-1, -1)`
    /// when unknown.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        if requested < 0 {
            return (-1, -1);
        }
        if self.latest_epoch() == requested {
            return (requested, self.log_end);
        }
        let Some(&(_, higher_start)) = self.epochs.iter().find(|&&(e, _)| e > requested) else {
            return (-1, -1);
        };
        match self.epochs.iter().rev().find(|&&(e, _)| e <= requested) {
            Some(&(floor, _)) => (floor, higher_start),
            None => (requested, higher_start),
        }
    }

    /// Checks an idempotent batch against what this partition knows of its
    /// producer. `Ok(Some(_))` is a retry of a recent batch, answered with
    /// the original offsets and not written again.
    fn check_producer(&self, info: &BatchInfo) -> Result<Option<Appended>, ErrorCode> {
        let Some(entry) = self.producers.get(&info.producer_id) else {
            // Kafka accepts any sequence from a producer it has no state
            // for (its batches may have been deleted).
            return Ok(None);
        };
        if info.producer_epoch < entry.epoch {
            return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        if info.producer_epoch == entry.epoch {
            if let Some(dup) = entry.recent.iter().find(|b| {
                b.first_sequence == info.base_sequence && b.last_sequence == info.last_sequence()
            }) {
                return Ok(Some(Appended {
                    base_offset: dup.base_offset,
                    log_append_time: dup.log_append_time,
                }));
            }
            let last = entry.recent.back().map(|b| b.last_sequence);
            if let Some(last) = last {
                if add_sequence(last, 1) != info.base_sequence {
                    return Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
                }
            }
        } else if info.base_sequence != 0 {
            // A new epoch starts its sequences from 0.
            return Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        Ok(None)
    }

    fn remember_producer(&mut self, info: &BatchInfo, appended: Appended) {
        let entry = self.producers.entry(info.producer_id).or_default();
        if entry.epoch != info.producer_epoch {
            entry.epoch = info.producer_epoch;
            entry.recent.clear();
        }
        if info.base_sequence < 0 {
            return;
        }
        entry.recent.push_back(WrittenBatch {
            first_sequence: info.base_sequence,
            last_sequence: info.last_sequence(),
            base_offset: appended.base_offset,
            log_append_time: appended.log_append_time,
        });
        while entry.recent.len() > DUPLICATE_WINDOW {
            entry.recent.pop_front();
        }
    }

    /// Appends a produced batch (validated by [`crate::batch::validate_produced`]):
    /// sequence checks for idempotent producers, offsets assigned, the
    /// batch stamped with `leader_epoch` and, if `log_append_time` is set,
    /// that time.
    pub(crate) fn append_produced(
        &mut self,
        records: &Bytes,
        info: BatchInfo,
        leader_epoch: i32,
        log_append_time: Option<i64>,
    ) -> Result<Appended, ErrorCode> {
        if info.has_producer_id() {
            if let Some(dup) = self.check_producer(&info)? {
                return Ok(dup);
            }
        }
        let base_offset = self.log_end;
        let mut bytes = BytesMut::from(&records[..]);
        set_leader_fields(&mut bytes, base_offset, leader_epoch, log_append_time)
            .map_err(|_| ErrorCode::CORRUPT_MESSAGE)?;
        let appended = Appended {
            base_offset,
            log_append_time: log_append_time.unwrap_or(-1),
        };
        self.push(bytes.freeze(), info, base_offset, log_append_time);
        if info.has_producer_id() {
            self.remember_producer(&info, appended);
        }
        if info.is_transactional {
            self.ongoing_txns
                .entry(info.producer_id)
                .or_insert(base_offset);
        }
        Ok(appended)
    }

    fn push(
        &mut self,
        bytes: Bytes,
        info: BatchInfo,
        base_offset: i64,
        log_append_time: Option<i64>,
    ) {
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        self.batches.push_back(StoredBatch {
            base_offset,
            last_offset,
            max_timestamp: log_append_time.unwrap_or(info.max_timestamp),
            info,
            bytes,
        });
        self.log_end = last_offset + 1;
    }

    /// Writes a transaction marker (a control batch) for `producer_id`,
    /// ends its open transaction here and, for an abort, records the span
    /// in the aborted index. Returns the marker's offset.
    pub fn write_txn_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> i64 {
        let offset = self.log_end;
        let mut key = Vec::with_capacity(4);
        key.extend_from_slice(&0i16.to_be_bytes());
        key.extend_from_slice(&i16::from(commit).to_be_bytes());
        let mut value = Vec::with_capacity(6);
        value.extend_from_slice(&0i16.to_be_bytes());
        value.extend_from_slice(&coordinator_epoch.to_be_bytes());
        let marker = RecordBatch {
            base_offset: offset,
            partition_leader_epoch: leader_epoch,
            magic: 2,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            is_transactional: true,
            is_control: true,
            has_delete_horizon: false,
            last_offset_delta: 0,
            base_timestamp: now_ms,
            max_timestamp: now_ms,
            producer_id,
            producer_epoch,
            base_sequence: -1,
            records: vec![BatchRecord {
                key: Some(Bytes::from(key)),
                value: Some(Bytes::from(value)),
                ..Default::default()
            }],
        };
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, &marker).expect("a control batch always encodes");
        let bytes = buf.freeze();
        let info = BatchInfo::of(&marker);
        self.push(bytes, info, offset, None);
        if let Some(first_offset) = self.ongoing_txns.remove(&producer_id) {
            if !commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset: offset,
                });
            }
        }
        let entry = self.producers.entry(producer_id).or_default();
        if producer_epoch > entry.epoch {
            // A marker of transaction version 2 carries the next epoch:
            // the sequences of the old one are no duplicates of the new.
            entry.epoch = producer_epoch;
            entry.recent.clear();
        }
        offset
    }

    /// DeleteRecords: moves the log start to `offset` (≤ the high
    /// watermark) and drops batches wholly before it.
    pub(crate) fn delete_before(&mut self, offset: i64) {
        if offset <= self.log_start {
            return;
        }
        self.log_start = offset;
        while self.batches.front().is_some_and(|b| b.last_offset < offset) {
            self.batches.pop_front();
        }
        self.aborted.retain(|a| a.last_offset >= offset);
    }

    /// Drops every batch holding an offset ≥ `offset` (whole batches: the
    /// new end is the start of the first batch dropped), as an unclean
    /// leader election would, and rebuilds the producer state from what is
    /// left. Returns the new log end.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> i64 {
        while self.batches.back().is_some_and(|b| b.last_offset >= offset) {
            self.batches.pop_back();
        }
        self.log_end = self
            .batches
            .back()
            .map_or(self.log_start, |b| b.last_offset + 1)
            .max(self.log_start);
        let end = self.log_end;
        self.epochs.retain(|&(_, start)| start < end);
        if self.epochs.is_empty() {
            self.epochs.push((0, self.log_start));
        }
        self.ongoing_txns.retain(|_, first| *first < end);
        self.aborted.retain(|a| a.last_offset < end);
        self.producers.clear();
        let kept: Vec<StoredBatch> = self.batches.iter().cloned().collect();
        for b in kept {
            if b.info.has_producer_id() && !b.info.is_control {
                self.remember_producer(
                    &b.info,
                    Appended {
                        base_offset: b.base_offset,
                        log_append_time: -1,
                    },
                );
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;
    use rskafka::protocol::record::{BatchHeader, RecordBatchWriter};

    fn produced(pid: i64, epoch: i16, seq: i32, n: usize) -> (Bytes, BatchInfo) {
        let mut w = RecordBatchWriter::new(BatchHeader {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            ..Default::default()
        });
        for _ in 0..n {
            w.append(1, None, Some(b"x"), &[]).expect("append");
        }
        let b = w.finish().expect("finish");
        let info = batch::validate_produced(&b).expect("valid");
        (b, info)
    }

    fn append(
        log: &mut PartitionLog,
        pid: i64,
        epoch: i16,
        seq: i32,
        n: usize,
    ) -> Result<i64, ErrorCode> {
        let (b, info) = produced(pid, epoch, seq, n);
        log.append_produced(&b, info, 0, None)
            .map(|a| a.base_offset)
    }

    #[test]
    fn idempotent_sequences() {
        let mut log = PartitionLog::new(0);
        assert_eq!(append(&mut log, 7, 0, 0, 2), Ok(0));
        assert_eq!(append(&mut log, 7, 0, 2, 3), Ok(2));
        // A retry of the first batch: the original offset, nothing written.
        assert_eq!(append(&mut log, 7, 0, 0, 2), Ok(0));
        assert_eq!(log.high_watermark(), 5);
        assert_eq!(
            append(&mut log, 7, 0, 9, 1),
            Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        // A bumped epoch restarts at 0; the old epoch is fenced.
        assert_eq!(
            append(&mut log, 7, 1, 3, 1),
            Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(append(&mut log, 7, 1, 0, 1), Ok(5));
        assert_eq!(
            append(&mut log, 7, 0, 5, 1),
            Err(ErrorCode::INVALID_PRODUCER_EPOCH)
        );
        // An unknown producer may start anywhere.
        assert_eq!(append(&mut log, 8, 0, 40, 1), Ok(6));
    }

    #[test]
    fn transactions_hold_back_the_lso_and_aborts_are_indexed() {
        let mut log = PartitionLog::new(0);
        let (mut b, mut info) = produced(3, 0, 0, 2);
        info.is_transactional = true;
        b = b.clone();
        log.append_produced(&b, info, 0, None).expect("append");
        assert_eq!((log.last_stable_offset(), log.high_watermark()), (0, 2));
        let marker = log.write_txn_marker(3, 0, false, 0, 0, 1);
        assert_eq!(marker, 2);
        assert_eq!(log.last_stable_offset(), 3);
        assert_eq!(
            log.aborted_between(0, 3),
            vec![AbortedTxn {
                producer_id: 3,
                first_offset: 0,
                last_offset: 2
            }]
        );
        assert!(log.aborted_between(3, 10).is_empty());
    }

    #[test]
    fn epochs_and_truncation() {
        let mut log = PartitionLog::new(0);
        append(&mut log, -1, -1, -1, 3).expect("append");
        log.begin_epoch(1);
        append(&mut log, -1, -1, -1, 2).expect("append");
        assert_eq!(log.end_offset_for_epoch(0), (0, 3));
        assert_eq!(log.end_offset_for_epoch(1), (1, 5));
        assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
        assert_eq!(log.truncate_to(4), 3);
        log.begin_epoch(2);
        assert_eq!(log.end_offset_for_epoch(1), (0, 3));
        assert_eq!(log.end_offset_for_epoch(2), (2, 3));
    }
}
