//! Transactional producer state, the part the transaction APIs build on:
//! producer id and epoch per transactional id (InitProducerId), the check
//! a transactional Produce must pass, and transaction markers.
//!
//! Owned by the transaction work from the skeleton on: the partition-level
//! pieces (the open-transaction index behind the LSO, the aborted index,
//! writing a marker) are in `log.rs`.

use std::collections::HashMap;

use rskafka::protocol::ErrorCode;

use crate::state::{now_ms, State};

/// Kafka's default `transaction.max.timeout.ms`.
pub(crate) const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// What the coordinator keeps per transactional id.
#[derive(Debug, Clone)]
pub(crate) struct TransactionalProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    #[allow(dead_code)] // for the transaction coordinator's expiry
    pub timeout_ms: i32,
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
        let current = self.transactional_ids.get(transactional_id).cloned();
        let next = match current {
            None => TransactionalProducer {
                producer_id: self.allocate_producer_id(),
                producer_epoch: 0,
                timeout_ms,
            },
            Some(cur) => {
                if expected.0 >= 0
                    && (expected.0 != cur.producer_id || expected.1 != cur.producer_epoch)
                {
                    return Err(ErrorCode::PRODUCER_FENCED);
                }
                if cur.producer_epoch >= i16::MAX - 1 {
                    TransactionalProducer {
                        producer_id: self.allocate_producer_id(),
                        producer_epoch: 0,
                        timeout_ms,
                    }
                } else {
                    TransactionalProducer {
                        producer_epoch: cur.producer_epoch + 1,
                        timeout_ms,
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
    /// be appended to the partition. Accepts everything until the
    /// transaction coordinator tracks partitions added to transactions.
    pub(crate) fn verify_transactional_produce(
        &self,
        _producer_id: i64,
        _producer_epoch: i16,
        _topic: &str,
        _partition: i32,
    ) -> Result<(), ErrorCode> {
        Ok(())
    }

    /// Writes a commit or abort marker for the producer's transaction in a
    /// partition, stamped with the partition's leader epoch; returns its
    /// offset. The caller wakes waiting fetches afterwards
    /// (`Shared::notify_changed`) since the LSO moved.
    #[allow(dead_code)] // used by EndTxn
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
