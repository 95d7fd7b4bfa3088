//! Log directories of each broker, and transactions: listed by every
//! broker, described by their coordinator.

use std::collections::BTreeMap;

use super::{check, AdminClient};
use crate::{
    client::group::{
        coordinator::{at_coordinator, Coordinator},
        TopicPartition,
    },
    error::{Error, Result},
    protocol::{
        messages::{DescribeLogDirsRequest, DescribeTransactionsRequest, ListTransactionsRequest},
        ApiKey, ErrorCode,
    },
};

/// One log directory of a broker, as [`AdminClient::describe_log_dirs`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    /// The broker.
    pub broker: i32,
    /// The directory's path on the broker.
    pub path: String,
    /// Why the directory cannot be used (e.g. KAFKA_STORAGE_ERROR), `None`
    /// if it is fine.
    pub error: Option<ErrorCode>,
    /// The volume's size in bytes, if the broker tells (Kafka 3.3+).
    pub total_bytes: Option<i64>,
    /// The volume's free bytes, if the broker tells (Kafka 3.3+).
    pub usable_bytes: Option<i64>,
    /// The partition replicas stored in it.
    pub replicas: BTreeMap<TopicPartition, ReplicaInfo>,
}

/// A partition replica in a log directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// Its size in bytes.
    pub size: i64,
    /// How far it is behind the leader's log end (or, for a future replica,
    /// behind the current one).
    pub offset_lag: i64,
    /// Whether it is a future replica (being moved to this directory).
    pub is_future: bool,
}

/// A transaction as [`AdminClient::list_transactions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id.
    pub producer_id: i64,
    /// The state: `Empty`, `Ongoing`, `PrepareCommit`, `PrepareAbort`,
    /// `CompleteCommit`, `CompleteAbort`, `Dead`, `PrepareEpochFence`.
    pub state: String,
    /// The coordinator's broker id.
    pub coordinator: i32,
}

/// A transaction as [`AdminClient::describe_transaction`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    /// The transactional id.
    pub transactional_id: String,
    /// The state, as in [`TransactionListing::state`].
    pub state: String,
    /// The transaction timeout.
    pub timeout_ms: i32,
    /// When the open transaction started (milliseconds since the epoch),
    /// `None` without one.
    pub start_time_ms: Option<i64>,
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The coordinator's broker id.
    pub coordinator: i32,
    /// The partitions in the open transaction.
    pub partitions: Vec<TopicPartition>,
}

impl AdminClient {
    /// The log directories of `brokers` (`None`: of every broker), with the
    /// replicas each holds and their sizes; each broker is asked itself.
    pub async fn describe_log_dirs(&self, brokers: Option<&[i32]>) -> Result<Vec<LogDir>> {
        let ids: Vec<i32> = match brokers {
            Some(ids) => ids.to_vec(),
            None => self
                .describe_cluster()
                .await?
                .brokers
                .iter()
                .map(|b| b.id)
                .collect(),
        };
        let answers = futures::future::join_all(ids.into_iter().map(|id| {
            self.at_broker(id, ApiKey::DESCRIBE_LOG_DIRS, move |conn| async move {
                // `None` asks for every replica (the default, empty, for none).
                let req = DescribeLogDirsRequest {
                    topics: None,
                    ..Default::default()
                };
                let resp = conn.request(&req).await?;
                check(resp.error_code, None)?;
                Ok(resp
                    .results
                    .into_iter()
                    .map(|r| LogDir {
                        broker: id,
                        path: r.log_dir,
                        error: Some(ErrorCode(r.error_code)).filter(|c| !c.is_ok()),
                        total_bytes: (r.total_bytes >= 0).then_some(r.total_bytes),
                        usable_bytes: (r.usable_bytes >= 0).then_some(r.usable_bytes),
                        replicas: r
                            .topics
                            .iter()
                            .flat_map(|t| {
                                t.partitions.iter().map(|p| {
                                    (
                                        TopicPartition::new(t.name.as_str(), p.partition_index),
                                        ReplicaInfo {
                                            size: p.partition_size,
                                            offset_lag: p.offset_lag,
                                            is_future: p.is_future_key,
                                        },
                                    )
                                })
                            })
                            .collect(),
                    })
                    .collect::<Vec<_>>())
            })
        }))
        .await;
        let mut out = Vec::new();
        for answer in answers {
            out.extend(answer?);
        }
        Ok(out)
    }

    /// Every transaction the brokers coordinate (each broker is asked for
    /// its own), ordered by transactional id.
    pub async fn list_transactions(&self) -> Result<Vec<TransactionListing>> {
        let ids: Vec<i32> = self
            .describe_cluster()
            .await?
            .brokers
            .iter()
            .map(|b| b.id)
            .collect();
        let answers = futures::future::join_all(ids.into_iter().map(|id| {
            self.at_broker(id, ApiKey::LIST_TRANSACTIONS, move |conn| async move {
                let resp = conn.request(&ListTransactionsRequest::default()).await?;
                check(resp.error_code, None)?;
                Ok(resp
                    .transaction_states
                    .into_iter()
                    .map(|t| TransactionListing {
                        transactional_id: t.transactional_id,
                        producer_id: t.producer_id,
                        state: t.transaction_state,
                        coordinator: id,
                    })
                    .collect::<Vec<_>>())
            })
        }))
        .await;
        let mut out = Vec::new();
        for answer in answers {
            out.extend(answer?);
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// A transaction's state, producer and partitions, from its coordinator
    /// (found with FindCoordinator). An id the coordinator does not know
    /// fails with TRANSACTIONAL_ID_NOT_FOUND, naming it.
    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let coordinator =
            Coordinator::for_transaction(self.client.cluster.clone(), transactional_id.to_owned());
        at_coordinator(&self.client.settings, &coordinator, |id, conn| async move {
            let resp = conn
                .request(&DescribeTransactionsRequest {
                    transactional_ids: vec![transactional_id.to_owned()],
                    ..Default::default()
                })
                .await?;
            let t = resp
                .transaction_states
                .into_iter()
                .find(|t| t.transactional_id == transactional_id)
                .ok_or_else(|| Error::protocol("the response lacks the transaction"))?;
            check(t.error_code, None)?;
            Ok(TransactionDescription {
                transactional_id: t.transactional_id,
                state: t.transaction_state,
                timeout_ms: t.transaction_timeout_ms,
                start_time_ms: (t.transaction_start_time_ms >= 0)
                    .then_some(t.transaction_start_time_ms),
                producer_id: t.producer_id,
                producer_epoch: t.producer_epoch,
                coordinator: id,
                partitions: t
                    .topics
                    .iter()
                    .flat_map(|d| {
                        d.partitions
                            .iter()
                            .map(|p| TopicPartition::new(d.topic.as_str(), *p))
                    })
                    .collect(),
            })
        })
        .await
        .map_err(|e| {
            e.with_api(ApiKey::DESCRIBE_TRANSACTIONS)
                .with_message(format!("transactional id {transactional_id}"))
        })
    }
}
