//! Transactional producer state, the part the transaction APIs build on:
//! producer id and epoch per transactional id (InitProducerId), the check
//! a transactional Produce must pass, and transaction markers.
//!
//! Owned by the transaction work from the skeleton on: the partition-level
//! pieces (the open-transaction index behind the LSO, the aborted index,
//! writing a marker) are in `log.rs`.

use std::collections::{BTreeSet, HashMap};

use rskafka::protocol::ErrorCode;
use tokio::time::{Duration, Instant};

use crate::state::{now_ms, State};

/// Kafka's default `transaction.max.timeout.ms`.
pub(crate) const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// What the coordinator keeps per transactional id.
#[derive(Debug, Clone)]
pub(crate) struct TransactionalProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump: a producer whose transaction the
    /// coordinator aborted (and so bumped) still holds it, and may recover
    /// with it under KIP-360 as Kafka's `lastProducerEpoch` allows.
    pub previous_epoch: Option<i16>,
    pub timeout_ms: i32,
    /// The transaction in progress.
    pub ongoing: Option<OngoingTxn>,
    /// How the last transaction ended (true: committed), so that a retried
    /// EndTxn succeeds.
    pub last_ended: Option<bool>,
}

/// An open transaction: what it touched, and when it times out.
#[derive(Debug, Clone)]
pub(crate) struct OngoingTxn {
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub deadline: Instant,
}

/// Transactional ids → their producer.
pub(crate) type TransactionalIds = HashMap<String, TransactionalProducer>;

impl State {
    /// InitProducerId for a transactional id: a new producer id at epoch 0
    /// the first time, else the epoch bumped (a new id when the epoch is
    /// exhausted). `expected` is the client's current (id, epoch) (KIP-360,
    /// `(-1, -1)` if none); a mismatch means another instance took over.
    pub(crate) fn init_transactional_producer(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: (i64, i16),
    ) -> Result<(i64, i16), ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
            return Err(ErrorCode::INVALID_TRANSACTION_TIMEOUT);
        }
        self.expire_transaction(transactional_id);
        let current = self.transactional_ids.get(transactional_id).cloned();
        let next = match current {
            None => TransactionalProducer {
                producer_id: self.allocate_producer_id(),
                producer_epoch: 0,
                previous_epoch: None,
                timeout_ms,
                ongoing: None,
                last_ended: None,
            },
            Some(cur) => {
                let known_epoch =
                    expected.1 == cur.producer_epoch || Some(expected.1) == cur.previous_epoch;
                if expected.0 >= 0 && (expected.0 != cur.producer_id || !known_epoch) {
                    return Err(ErrorCode::PRODUCER_FENCED);
                }
                // An open transaction is aborted first (Kafka answers
                // CONCURRENT_TRANSACTIONS meanwhile; here it completes
                // under the lock, before the answer).
                let cur = match cur.ongoing {
                    Some(_) => self.end_transaction(transactional_id, false, true),
                    None => cur,
                };
                if cur.producer_epoch >= i16::MAX - 1 {
                    TransactionalProducer {
                        producer_id: self.allocate_producer_id(),
                        producer_epoch: 0,
                        previous_epoch: None,
                        timeout_ms,
                        ongoing: None,
                        last_ended: None,
                    }
                } else {
                    TransactionalProducer {
                        producer_epoch: cur.producer_epoch + 1,
                        previous_epoch: Some(cur.producer_epoch),
                        timeout_ms,
                        ongoing: None,
                        ..cur
                    }
                }
            }
        };
        let ids = (next.producer_id, next.producer_epoch);
        self.transactional_ids
            .insert(transactional_id.to_owned(), next);
        Ok(ids)
    }

    /// Whether a transactional batch of `producer_id`/`producer_epoch` may
    /// be appended to the partition: the partition must have been added to
    /// the producer's open transaction, and the epoch be current. With
    /// `add_implicitly` (Produce v12, transaction version 2) the produce
    /// itself adds the partition, opening the transaction if need be; the
    /// transactional id and deadline of a transaction opened so are
    /// returned, for its timeout.
    pub(crate) fn verify_transactional_produce(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        (topic, partition): (&str, i32),
        add_implicitly: bool,
    ) -> Result<Option<(String, Instant)>, ErrorCode> {
        let Some((transactional_id, producer)) = self
            .transactional_ids
            .iter_mut()
            .find(|(_, p)| p.producer_id == producer_id)
        else {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        };
        if producer_epoch < producer.producer_epoch {
            return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        let key = (topic.to_owned(), partition);
        if producer
            .ongoing
            .as_ref()
            .is_some_and(|t| t.partitions.contains(&key))
        {
            return Ok(None);
        }
        if !add_implicitly || producer_epoch != producer.producer_epoch {
            return Err(ErrorCode::INVALID_TXN_STATE);
        }
        let opened = producer.ongoing.is_none();
        let txn = State::ongoing_transaction(producer);
        txn.partitions.insert(key);
        Ok(opened.then(|| (transactional_id.clone(), txn.deadline)))
    }

    /// The producer of `transactional_id` if `producer_id`/`epoch` are
    /// its current ones, else why not; aborts its transaction first if
    /// that timed out.
    pub(crate) fn current_producer(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&mut TransactionalProducer, ErrorCode> {
        self.expire_transaction(transactional_id);
        let producer = self
            .transactional_ids
            .get_mut(transactional_id)
            .ok_or(ErrorCode::INVALID_PRODUCER_ID_MAPPING)?;
        if producer.producer_id != producer_id {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        }
        if producer_epoch != producer.producer_epoch {
            return Err(ErrorCode::PRODUCER_FENCED);
        }
        Ok(producer)
    }

    /// Opens a transaction if none is, returning it.
    pub(crate) fn ongoing_transaction(producer: &mut TransactionalProducer) -> &mut OngoingTxn {
        let timeout = Duration::from_millis(producer.timeout_ms.max(0) as u64);
        producer.ongoing.get_or_insert_with(|| OngoingTxn {
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            deadline: Instant::now() + timeout,
        })
    }

    /// Aborts the transaction of `transactional_id` if it outlived its
    /// timeout, bumping the epoch so the producer is fenced, as Kafka does.
    pub(crate) fn expire_transaction(&mut self, transactional_id: &str) {
        let expired = self
            .transactional_ids
            .get(transactional_id)
            .and_then(|p| p.ongoing.as_ref())
            .is_some_and(|t| Instant::now() >= t.deadline);
        if expired {
            self.end_transaction(transactional_id, false, true);
        }
    }

    /// Ends the open transaction of `transactional_id`: markers in every
    /// partition, the group offsets committed or dropped. `bump` raises
    /// the epoch first (an abort by the coordinator fences the producer).
    /// Returns the producer as it is afterwards.
    pub(crate) fn end_transaction(
        &mut self,
        transactional_id: &str,
        commit: bool,
        bump: bool,
    ) -> TransactionalProducer {
        let producer = self
            .transactional_ids
            .get_mut(transactional_id)
            .expect("ended transactions have a producer");
        if bump && producer.producer_epoch < i16::MAX - 1 {
            producer.previous_epoch = Some(producer.producer_epoch);
            producer.producer_epoch += 1;
        }
        let txn = producer.ongoing.take();
        producer.last_ended = Some(commit);
        let producer = producer.clone();
        let Some(txn) = txn else {
            return producer;
        };
        for (topic, partition) in &txn.partitions {
            self.write_txn_marker(
                topic,
                *partition,
                producer.producer_id,
                producer.producer_epoch,
                commit,
                0,
            );
        }
        for group in &txn.groups {
            let Some(g) = self.coordination.groups.get_mut(group) else {
                continue;
            };
            if let Some(pending) = g.pending_txn_offsets.remove(&producer.producer_id) {
                if commit {
                    g.offsets.extend(pending);
                }
            }
        }
        producer
    }

    /// Writes a commit or abort marker for the producer's transaction in a
    /// partition, stamped with the partition's leader epoch; returns its
    /// offset. The caller wakes waiting fetches afterwards
    /// (`Shared::notify_changed`) since the LSO moved.
    pub(crate) fn write_txn_marker(
        &mut self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Option<i64> {
        let p = self.partition_mut(topic, partition)?;
        let leader_epoch = p.leader_epoch;
        Some(p.log.write_txn_marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            leader_epoch,
            now_ms(),
        ))
    }
}
