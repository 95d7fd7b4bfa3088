//! Requests that go to partition leaders, one per broker: ListOffsets and
//! DescribeProducers.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::{
    per_leader::{PartitionAnswer, PerLeader, Round},
    AdminClient,
};
use crate::{
    client::{
        group::TopicPartition,
        partition::{IsolationLevel, OffsetAt},
    },
    cluster::Backoff,
    connection::BrokerConnection,
    error::{Error, Result},
    protocol::{
        messages::{
            describe_producers_request::TopicRequest,
            list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
            DescribeProducersRequest, ListOffsetsRequest,
        },
        ApiKey, ErrorCode,
    },
};

/// A partition's state of one producer, as
/// [`AdminClient::describe_producers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i32,
    /// The sequence number of the last record batch written.
    pub last_sequence: i32,
    /// The timestamp of the last batch written (milliseconds since the epoch).
    pub last_timestamp_ms: i64,
    /// The epoch of the transaction coordinator that wrote the last
    /// transaction marker, `None` without one.
    pub coordinator_epoch: Option<i32>,
    /// The first offset of the producer's open transaction, `None` if it
    /// has none.
    pub current_txn_start_offset: Option<i64>,
}

/// The error of a non-zero code in a partition's answer. Unlike
/// [`super::check`], UNKNOWN_TOPIC_OR_PARTITION stays retriable here: from a
/// partition's leader it means the leadership moved on.
fn partition_error(code: i16, message: Option<String>) -> Result<()> {
    let code = ErrorCode(code);
    if code.is_ok() {
        Ok(())
    } else {
        Err(Error::kafka(code, message))
    }
}

impl AdminClient {
    /// Asks each partition's leader about its partitions, one request per
    /// leader (all leaders at once). Partitions whose answer is a retriable
    /// error (the leader moved, an election is under way) are asked again,
    /// after fresh metadata, until the operation timeout; any other error
    /// fails the call, naming the partition.
    async fn per_leader<T, F, Fut>(
        &self,
        api: ApiKey,
        partitions: impl IntoIterator<Item = TopicPartition>,
        ask: F,
    ) -> Result<BTreeMap<TopicPartition, T>>
    where
        F: Fn(BrokerConnection, Vec<TopicPartition>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<PartitionAnswer<T>>>>,
    {
        let cluster = &self.client.cluster;
        let deadline = Instant::now() + self.client.settings.operation_timeout;
        let mut backoff = Backoff::new(&self.client.settings.backoff, Some(deadline));
        let mut rounds = PerLeader::new(api, partitions);
        let ask = &ask;
        while !rounds.is_done() {
            let md = cluster.metadata(Some(&rounds.topics())).await?;
            let by_broker = match rounds.plan(&md)? {
                Round::Refresh(topics) => {
                    for t in topics {
                        cluster.invalidate_topic(&t);
                    }
                    continue;
                }
                Round::Ask {
                    invalidate,
                    by_broker,
                } => {
                    for t in invalidate {
                        cluster.invalidate_topic(&t);
                    }
                    by_broker
                }
            };
            let answers =
                futures::future::join_all(by_broker.into_iter().map(|(id, tps)| async move {
                    let asked = tps.clone();
                    let answer = match cluster.broker(id).await {
                        Ok(conn) => ask(conn, tps).await,
                        Err(e) => Err(e.into()),
                    };
                    (asked, answer)
                }))
                .await;
            for (asked, answer) in answers {
                for t in rounds.on_answer(&asked, answer)? {
                    cluster.invalidate_topic(&t);
                }
            }
            if rounds.is_done() {
                break;
            }
            if backoff.wait().await.is_err() {
                return Err(rounds.give_up());
            }
        }
        Ok(rounds.finish())
    }

    /// [`list_offsets`](Self::list_offsets) with the same `at` for each of
    /// `partitions` of `topic`.
    pub async fn list_topic_offsets(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
        at: OffsetAt,
        isolation: IsolationLevel,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let queries = partitions
            .into_iter()
            .map(|p| (TopicPartition::new(topic, p), at))
            .collect();
        self.list_offsets(&queries, isolation).await
    }

    /// Looks up an offset of each partition ([`OffsetAt`]: the earliest, the
    /// latest, or the first at or after a time, `-1` if no record is that
    /// recent) with one ListOffsets request per leader, not per partition.
    /// `isolation` decides what [`OffsetAt::Latest`] is (high watermark or
    /// last stable offset).
    ///
    /// ```no_run
    /// # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
    /// use std::collections::BTreeMap;
    /// use rskafka::client::{group::TopicPartition, partition::{IsolationLevel, OffsetAt}};
    ///
    /// let queries: BTreeMap<_, _> = (0..3)
    ///     .map(|p| (TopicPartition::new("events", p), OffsetAt::Latest))
    ///     .collect();
    /// let ends = client.admin().list_offsets(&queries, IsolationLevel::ReadUncommitted).await?;
    /// # let _ = ends;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_offsets(
        &self,
        queries: &BTreeMap<TopicPartition, OffsetAt>,
        isolation: IsolationLevel,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut timestamps = BTreeMap::new();
        for (tp, at) in queries {
            let ts = at.wire().map_err(|e| {
                e.with_api(ApiKey::LIST_OFFSETS)
                    .with_topic(&tp.topic)
                    .with_partition(tp.partition)
            })?;
            timestamps.insert(tp.clone(), ts);
        }
        let timestamps = &timestamps;
        let timeout_ms = self.timeout_ms();
        self.per_leader(
            ApiKey::LIST_OFFSETS,
            queries.keys().cloned(),
            |conn, tps| async move {
                let req = ListOffsetsRequest {
                    replica_id: -1,
                    isolation_level: isolation.wire(),
                    topics: super::partitions::by_topic(&tps)
                        .into_iter()
                        .map(|(name, partitions)| ListOffsetsTopic {
                            name: name.to_owned(),
                            partitions: partitions
                                .into_iter()
                                .map(|p| ListOffsetsPartition {
                                    partition_index: p,
                                    timestamp: timestamps[&TopicPartition::new(name, p)],
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    timeout_ms,
                    ..Default::default()
                };
                let version = conn.version_for(ApiKey::LIST_OFFSETS).unwrap_or(0);
                let resp = conn.request(&req).await?;
                let mut out = Vec::new();
                for t in resp.topics {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                        let offset = partition_error(p.error_code, None).map(|()| {
                            if version == 0 {
                                // v0 answers with a list of offsets; we asked for one.
                                p.old_style_offsets.first().copied().unwrap_or(-1)
                            } else {
                                p.offset
                            }
                        });
                        out.push((tp, offset));
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    /// The producers with state on each partition (DescribeProducers, sent
    /// to the partitions' leaders, one request per leader): idempotent and
    /// transactional producers that wrote to it recently.
    pub async fn describe_producers(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Vec<ProducerInfo>>> {
        self.per_leader(
            ApiKey::DESCRIBE_PRODUCERS,
            partitions.iter().cloned(),
            |conn, tps| async move {
                let req = DescribeProducersRequest {
                    topics: super::partitions::by_topic(&tps)
                        .into_iter()
                        .map(|(name, partition_indexes)| TopicRequest {
                            name: name.to_owned(),
                            partition_indexes,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                let resp = conn.request(&req).await?;
                let mut out = Vec::new();
                for t in resp.topics {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                        let producers = partition_error(p.error_code, p.error_message).map(|()| {
                            p.active_producers
                                .iter()
                                .map(|s| ProducerInfo {
                                    producer_id: s.producer_id,
                                    producer_epoch: s.producer_epoch,
                                    last_sequence: s.last_sequence,
                                    last_timestamp_ms: s.last_timestamp,
                                    coordinator_epoch: (s.coordinator_epoch >= 0)
                                        .then_some(s.coordinator_epoch),
                                    current_txn_start_offset: (s.current_txn_start_offset >= 0)
                                        .then_some(s.current_txn_start_offset),
                                })
                                .collect()
                        });
                        out.push((tp, producers));
                    }
                }
                Ok(out)
            },
        )
        .await
    }
}
