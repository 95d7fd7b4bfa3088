//! Producing to and fetching from one partition.
//!
//! Every operation goes to the partition's current leader and is retried on
//! retriable errors (a leader moved, a broker restarted, a leader election
//! in progress) with the client's backoff, until the operation timeout. The
//! leader is looked up again after each such error, using the new leader the
//! broker names where it does (KIP-951). What each response means is
//! decided in `outcome.rs`, without I/O.

pub(crate) mod outcome;

use std::ops::Range;

use tokio::time::Instant;

use bytes::Bytes;
use time::OffsetDateTime;

pub use crate::protocol::record::Compression;
use crate::{
    cluster::Role,
    connection::BrokerConnection,
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{
            delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic},
            list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
            produce_request::{PartitionProduceData, TopicProduceData},
            DeleteRecordsRequest, ListOffsetsRequest, ProduceRequest,
        },
        record::{BatchHeader, RecordBatch, RecordBatchWriter, RecordHeader, TimestampType},
        ApiKey, ErrorCode, Uuid,
    },
    record::{Record, RecordAndOffset},
};

use self::outcome::Failure;
use super::{
    consumer::aborted::{AbortedFilter, BatchMeta},
    retry::{never_final, retry},
    Client,
};

/// Which offset [`PartitionClient::get_offset`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    /// The first offset still in the log (the log start offset).
    Earliest,
    /// The offset the next produced record will get (the high watermark; the
    /// last stable offset under [`IsolationLevel::ReadCommitted`]).
    Latest,
    /// The first offset whose record timestamp is at or after this time, or
    /// `-1` if there is none.
    Timestamp(OffsetDateTime),
}

impl OffsetAt {
    /// [`OffsetAt::Timestamp`] of a Kafka timestamp, `ms` milliseconds since
    /// the epoch (a time beyond what a date-time holds is taken as the
    /// nearest one it holds: no record is stamped that far out either).
    ///
    /// ```
    /// use rskafka::client::partition::OffsetAt;
    ///
    /// let at = OffsetAt::timestamp_millis(1_700_000_000_123);
    /// assert!(matches!(at, OffsetAt::Timestamp(t) if t.millisecond() == 123));
    /// ```
    pub fn timestamp_millis(ms: i64) -> Self {
        Self::Timestamp(crate::record::time_from_millis(ms))
    }

    /// The ListOffsets `Timestamp` value.
    pub(crate) fn wire(self) -> Result<i64> {
        match self {
            OffsetAt::Earliest => Ok(EARLIEST_TIMESTAMP),
            OffsetAt::Latest => Ok(LATEST_TIMESTAMP),
            OffsetAt::Timestamp(t) => {
                let ms = t.unix_timestamp_nanos() / 1_000_000;
                match i64::try_from(ms) {
                    Ok(ms) if ms >= 0 => Ok(ms),
                    _ => Err(Error::invalid_input(
                        "timestamps before 1970 cannot be looked up",
                    )),
                }
            }
        }
    }
}

/// How many replicas must have a produced batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Kafka's acks=0: the broker sends no response at all, so a send is
    /// done once written to the socket; offsets and broker-side errors (the
    /// broker closes the connection on one) are never known, and a record
    /// can be lost without anyone noticing.
    None,
    /// The leader has written the batch.
    Leader,
    /// Every in-sync replica has the batch (Kafka's `acks=all`).
    #[default]
    All,
}

impl Acks {
    /// The value of a request's `acks` field.
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Which records fetches and [`OffsetAt::Latest`] see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record up to the high watermark, including those of open or
    /// aborted transactions.
    #[default]
    ReadUncommitted,
    /// Only records up to the last stable offset, without those of aborted
    /// transactions.
    ReadCommitted,
}

impl IsolationLevel {
    /// The value of a request's `isolation_level` field.
    pub(crate) fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// The result of [`PartitionClient::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// Records at or after the requested offset, in offset order; control
    /// records (transaction markers) and, under read_committed, records of
    /// aborted transactions are left out.
    pub records: Vec<RecordAndOffset>,
    /// The partition's high watermark: the offset after the last record
    /// replicated to every in-sync replica.
    pub high_watermark: i64,
    /// The last stable offset (`-1` if the broker did not say).
    pub last_stable_offset: i64,
    /// The first offset still in the log (`-1` if the broker did not say).
    pub log_start_offset: i64,
    /// Where the next fetch should start: after the last batch returned,
    /// even when that batch held no visible record (a transaction marker),
    /// so a consumer never gets stuck on it.
    pub next_offset: i64,
}

/// Produces to and fetches from one partition. Cheap to clone.
///
/// ```no_run
/// # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
/// use rskafka::client::partition::{Compression, OffsetAt};
/// use rskafka::record::Record;
///
/// let pc = client.partition_client("events", 0).await?;
/// let record = Record {
///     key: Some("id-1".into()),
///     value: Some("payload".into()),
///     headers: vec![],
///     timestamp: time::OffsetDateTime::now_utc(),
/// };
/// let offsets = pc.produce(vec![record], Compression::Zstd).await?;
/// let start = pc.get_offset(OffsetAt::Earliest).await?;
/// let (records, high_watermark) = pc.fetch_records(start, 1..1_000_000, 500).await?;
/// assert!(records.iter().any(|r| r.offset == offsets[0]) || start > offsets[0]);
/// # let _ = high_watermark;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PartitionClient {
    client: Client,
    topic: String,
    partition: i32,
    isolation: IsolationLevel,
}

/// Kafka's special ListOffsets timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

impl PartitionClient {
    pub(crate) fn new(client: Client, topic: String, partition: i32) -> Self {
        Self {
            client,
            topic,
            partition,
            isolation: IsolationLevel::default(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// This client with another isolation level for fetches and
    /// [`OffsetAt::Latest`] (default: read_uncommitted).
    #[must_use]
    pub fn with_isolation_level(mut self, isolation: IsolationLevel) -> Self {
        self.isolation = isolation;
        self
    }

    fn ctx(&self, e: Error, api: ApiKey) -> Error {
        e.with_api(api)
            .with_topic(&self.topic)
            .with_partition(self.partition)
    }

    /// Fails unless fresh metadata knows the topic and partition; waits for
    /// a leader within the operation timeout.
    pub(crate) async fn check_exists(&self) -> Result<()> {
        // An unknown topic right after a lookup of fresh metadata is an
        // answer, not a transient state; a missing leader is transient.
        let unknown = |e: &Error| e.error_code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        retry(&self.client.settings, unknown, |_| {
            self.leader(Role::General)
        })
        .await
        .map(drop)
        .map_err(|e| self.ctx(e, ApiKey::METADATA))
    }

    /// The leader's connection of `role`.
    async fn leader(&self, role: Role) -> Result<BrokerConnection> {
        let (_, conn) = self
            .client
            .cluster
            .leader_for(&self.topic, self.partition, role)
            .await?;
        Ok(conn)
    }

    /// Acts on a failed attempt's leader update (forgets the cached
    /// leader, takes the KIP-951 hint) and returns its error, for the
    /// retry loop to judge.
    fn settle<T>(&self, outcome: Result<T, Failure>) -> Result<T> {
        outcome.map_err(|f| {
            if f.forget_leader {
                self.client.cluster.invalidate_topic(&self.topic);
            }
            if let Some(h) = f.hint {
                self.client.cluster.apply_leader_hint(
                    &self.topic,
                    self.partition,
                    h.leader_id,
                    h.leader_epoch,
                    h.endpoint,
                );
            }
            f.error
        })
    }

    /// Produces `records` as one batch with `acks=all`; returns their offsets.
    pub async fn produce(
        &self,
        records: Vec<Record>,
        compression: Compression,
    ) -> Result<Vec<i64>> {
        self.produce_with(records, compression, Acks::All).await
    }

    /// Produces `records` as one batch, waiting for `acks`; returns their
    /// offsets, in order. With [`Acks::None`] the broker does not answer:
    /// every offset is `-1` (unknown), and success means only that the batch
    /// was written to the leader's socket.
    ///
    /// Retriable errors are retried until the operation timeout, except a
    /// connection that broke after the request was sent: the batch may have
    /// been written, and sending it again could duplicate it, so that error
    /// is returned.
    pub async fn produce_with(
        &self,
        records: Vec<Record>,
        compression: Compression,
        acks: Acks,
    ) -> Result<Vec<i64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let count = records.len();
        let batch =
            encode_batch(&records, compression).map_err(|e| self.ctx(e, ApiKey::PRODUCE))?;
        drop(records);
        // A batch that may have been written is not sent again: that could
        // duplicate it.
        let base = retry(&self.client.settings, Error::is_ambiguous, |deadline| {
            self.produce_once(batch.clone(), acks, deadline)
        })
        .await
        .map_err(|e| self.ctx(e, ApiKey::PRODUCE))?;
        Ok(match base {
            Some(base) => (0..count)
                .map(|i| base + i64::try_from(i).unwrap_or(i64::MAX))
                .collect(),
            None => vec![-1; count],
        })
    }

    /// One produce attempt; the base offset, or `None` for acks=0.
    async fn produce_once(
        &self,
        batch: Bytes,
        acks: Acks,
        deadline: Instant,
    ) -> Result<Option<i64>> {
        let conn = self.leader(Role::Produce).await?;
        let timeout_ms = remaining_ms(deadline);
        let req = ProduceRequest {
            transactional_id: None,
            acks: acks.wire(),
            timeout_ms,
            topic_data: vec![TopicProduceData {
                name: self.topic.clone(),
                partition_data: vec![PartitionProduceData {
                    index: self.partition,
                    records: Some(batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        if acks == Acks::None {
            // No response will come: written is all there is to know.
            let Some(version) = conn.version_for(ApiKey::PRODUCE) else {
                return Err(conn.unsupported::<ProduceRequest>(None).into());
            };
            conn.send_no_response(&req, version).await?;
            return Ok(None);
        }
        let resp = conn.request(&req).await?;
        self.settle(outcome::produce(&resp, &self.topic, self.partition))
            .map(Some)
    }

    /// Fetches records from `offset` on, asking for between `bytes.start` and
    /// `bytes.end` bytes and letting the broker wait up to `max_wait_ms` for
    /// `bytes.start` to accumulate; returns the records and the high
    /// watermark.
    ///
    /// Records before `offset` in the first batch (a fetch starting inside a
    /// batch) are dropped. An offset outside the log fails with
    /// `ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE)`, without retries.
    pub async fn fetch_records(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<(Vec<RecordAndOffset>, i64)> {
        let r = self.fetch(offset, bytes, max_wait_ms).await?;
        Ok((r.records, r.high_watermark))
    }

    /// Like [`fetch_records`](Self::fetch_records), with the partition's
    /// offsets and the offset to fetch next.
    pub async fn fetch(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<FetchResult> {
        if offset < 0 {
            return Err(self.ctx(
                Error::invalid_input(format!("negative fetch offset {offset}")),
                ApiKey::FETCH,
            ));
        }
        if bytes.start < 0 || bytes.end < 1 || bytes.start > bytes.end || max_wait_ms < 0 {
            return Err(self.ctx(
                Error::invalid_input(format!(
                    "invalid fetch bounds: bytes {bytes:?}, max_wait_ms {max_wait_ms}"
                )),
                ApiKey::FETCH,
            ));
        }
        let request_timeout = self.client.cluster.config().connection.request_timeout;
        if u128::from(max_wait_ms.unsigned_abs()) >= request_timeout.as_millis() {
            // The broker may hold the fetch that long; the request would then
            // time out on the client side and be retried in a loop.
            return Err(self.ctx(
                Error::invalid_input(format!(
                    "max_wait_ms {max_wait_ms} must be below the request timeout ({} ms)",
                    request_timeout.as_millis()
                )),
                ApiKey::FETCH,
            ));
        }
        retry(&self.client.settings, never_final, |_| {
            self.fetch_once(offset, bytes.clone(), max_wait_ms)
        })
        .await
        .map_err(|e| self.ctx(e, ApiKey::FETCH))
    }

    async fn fetch_once(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<FetchResult> {
        let conn = self.leader(Role::Fetch).await?;
        let highest = conn
            .version_for(ApiKey::FETCH)
            .ok_or_else(|| unsupported(&conn, ApiKey::FETCH))?;
        let topic_id = self.topic_id().await?;
        let asked = outcome::FetchAsked {
            version: outcome::fetch_version(highest, topic_id),
            topic: &self.topic,
            topic_id,
            partition: self.partition,
            offset,
            isolation: self.isolation,
        };
        let req = outcome::fetch_request(&asked, max_wait_ms, bytes);
        let resp = conn.request_version(&req, asked.version).await?;
        self.settle(outcome::fetch(&resp, asked))
    }

    /// The topic id from metadata (nil when the broker has none).
    async fn topic_id(&self) -> Result<Uuid> {
        let md = self
            .client
            .cluster
            .metadata(Some(std::slice::from_ref(&self.topic)))
            .await?;
        Ok(md.topics.get(&self.topic).map(|t| t.id).unwrap_or_default())
    }

    /// Asks the leader for an offset: the earliest, the latest, or the first
    /// at or after a timestamp (`-1` if no record is that recent).
    pub async fn get_offset(&self, at: OffsetAt) -> Result<i64> {
        let timestamp = at.wire().map_err(|e| self.ctx(e, ApiKey::LIST_OFFSETS))?;
        retry(&self.client.settings, never_final, |deadline| {
            self.list_offset_once(timestamp, deadline)
        })
        .await
        .map_err(|e| self.ctx(e, ApiKey::LIST_OFFSETS))
    }

    async fn list_offset_once(&self, timestamp: i64, deadline: Instant) -> Result<i64> {
        let conn = self.leader(Role::General).await?;
        let version = conn
            .version_for(ApiKey::LIST_OFFSETS)
            .ok_or_else(|| unsupported(&conn, ApiKey::LIST_OFFSETS))?;
        let req = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: self.isolation.wire(),
            topics: vec![ListOffsetsTopic {
                name: self.topic.clone(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: self.partition,
                    timestamp,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            timeout_ms: remaining_ms(deadline),
            ..Default::default()
        };
        let resp = conn.request_version(&req, version).await?;
        self.settle(outcome::list_offset(
            &resp,
            version,
            &self.topic,
            self.partition,
        ))
    }

    /// Deletes every record before `offset` (the log start offset moves
    /// there); `timeout_ms` bounds the broker's wait for replicas. Returns
    /// the new log start offset.
    pub async fn delete_records(&self, offset: i64, timeout_ms: i32) -> Result<i64> {
        retry(&self.client.settings, never_final, |_| {
            self.delete_records_once(offset, timeout_ms)
        })
        .await
        .map_err(|e| self.ctx(e, ApiKey::DELETE_RECORDS))
    }

    async fn delete_records_once(&self, offset: i64, timeout_ms: i32) -> Result<i64> {
        let conn = self.leader(Role::General).await?;
        let req = DeleteRecordsRequest {
            topics: vec![DeleteRecordsTopic {
                name: self.topic.clone(),
                partitions: vec![DeleteRecordsPartition {
                    partition_index: self.partition,
                    offset,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            timeout_ms,
            ..Default::default()
        };
        let resp = conn.request(&req).await?;
        self.settle(outcome::delete_records(&resp, &self.topic, self.partition))
    }
}

/// Milliseconds until `deadline`, as Kafka's `timeout_ms` fields want them
/// (at least 1, so the broker never gets 0 = "don't wait").
fn remaining_ms(deadline: Instant) -> i32 {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    i32::try_from(ms).unwrap_or(i32::MAX).max(1)
}

fn unsupported(conn: &BrokerConnection, api: ApiKey) -> Error {
    Error::new(ErrorKind::Unsupported)
        .with_message(format!(
            "broker {} supports no version of {} this client can use (broker: {:?})",
            conn.addr(),
            api.name(),
            conn.broker_versions(api)
        ))
        .with_api(api)
}

/// Encodes `records` as one v2 batch (CreateTime timestamps).
fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes> {
    if !compression.is_enabled() {
        return Err(Error::invalid_input(format!(
            "compression {compression} is not enabled in this build (cargo feature compression-{compression})"
        )));
    }
    let capacity: usize = records.iter().map(Record::approximate_size).sum();
    let mut writer = RecordBatchWriter::with_capacity(
        BatchHeader {
            compression,
            ..BatchHeader::default()
        },
        capacity,
    );
    let mut headers = Vec::new();
    for r in records {
        headers.clear();
        headers.extend(r.headers.iter().map(|(k, v)| RecordHeader {
            key: k.clone(),
            value: v.clone(),
        }));
        writer
            .append(
                crate::record::millis_from_time(r.timestamp),
                r.key.as_deref(),
                r.value.as_deref(),
                &headers,
            )
            .map_err(|e| Error::invalid_input("cannot encode the records").with_source(e))?;
    }
    writer
        .finish()
        .map_err(|e| Error::invalid_input("cannot encode the records").with_source(e))
}

/// The records a consumer sees: at or after `from`, without control
/// batches and, given the aborted transactions `(producer_id, first_offset)`
/// of a read_committed fetch, without records of aborted transactions.
fn visible_records(
    batches: Vec<RecordBatch>,
    from: i64,
    aborted: Vec<(i64, i64)>,
) -> Vec<RecordAndOffset> {
    let mut filter = AbortedFilter::new(aborted);
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.records.len()).sum());
    for batch in batches {
        if !filter.keep(&BatchMeta::of(&batch)) {
            continue;
        }
        let log_append = batch.timestamp_type == TimestampType::LogAppendTime;
        for r in &batch.records {
            let offset = batch.record_offset(r);
            if offset < from {
                continue;
            }
            let ts = if log_append {
                batch.max_timestamp
            } else {
                batch.record_timestamp(r)
            };
            out.push(RecordAndOffset {
                record: Record {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| (h.key.clone(), h.value.clone()))
                        .collect(),
                    timestamp: crate::record::time_from_millis(ts),
                },
                offset,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::BatchRecord;

    fn batch(base: i64, n: i32, pid: i64, transactional: bool) -> RecordBatch {
        RecordBatch {
            base_offset: base,
            last_offset_delta: n - 1,
            producer_id: pid,
            is_transactional: transactional,
            base_timestamp: 1_000,
            records: (0..n)
                .map(|i| BatchRecord {
                    offset_delta: i,
                    timestamp_delta: i64::from(i),
                    value: Some(Bytes::from(format!("v{}", base + i64::from(i)))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn marker(offset: i64, pid: i64, abort: bool) -> RecordBatch {
        // Control key: version 0, type 0 (abort) / 1 (commit); value: version, epoch.
        let key = Bytes::from(vec![0, 0, 0, u8::from(!abort)]);
        let value = Bytes::from(vec![0, 0, 0, 0, 0, 5]);
        RecordBatch {
            base_offset: offset,
            last_offset_delta: 0,
            producer_id: pid,
            is_transactional: true,
            is_control: true,
            records: vec![BatchRecord {
                key: Some(key),
                value: Some(value),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn offsets(r: &[RecordAndOffset]) -> Vec<i64> {
        r.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_before_the_fetch_offset_are_dropped() {
        let got = visible_records(
            vec![batch(10, 5, -1, false), batch(15, 2, -1, false)],
            12,
            vec![],
        );
        assert_eq!(offsets(&got), vec![12, 13, 14, 15, 16]);
        assert_eq!(got[0].record.value.as_deref(), Some(&b"v12"[..]));
        assert_eq!(
            got[0].record.timestamp.unix_timestamp_nanos(),
            1_002_000_000
        );
    }

    #[test]
    fn control_batches_and_aborted_transactions_are_skipped() {
        let batches = vec![
            batch(0, 2, 7, true), // aborted below
            batch(2, 2, 8, true), // committed
            marker(4, 7, true),   // abort of pid 7
            marker(5, 8, false),  // commit of pid 8
            batch(6, 1, 7, true), // pid 7's next transaction: not aborted
        ];
        let committed = visible_records(batches.clone(), 0, vec![(7, 0)]);
        assert_eq!(offsets(&committed), vec![2, 3, 6]);
        let uncommitted = visible_records(batches, 0, vec![]);
        assert_eq!(offsets(&uncommitted), vec![0, 1, 2, 3, 6]);
    }

    #[test]
    fn remaining_is_never_zero() {
        assert_eq!(remaining_ms(Instant::now()), 1);
    }
}
