//! A consumer: a stream of records from a set of partitions.
//!
//! [`Consumer`] reads every partition assigned to it, each from its own
//! start position, and hands the records out as a [`futures::Stream`] of
//! [`ConsumedRecord`]s, or many at a time with [`Consumer::next_batch`].
//!
//! Behind it, one background task fetches from all leaders at once: one
//! Fetch request per broker covering all of that broker's partitions, in an
//! incremental fetch session (KIP-227) so that steady-state requests only
//! name the partitions whose position moved. Fetching runs ahead of the
//! application (prefetch) until [`ConsumerConfig::max_buffered_bytes`] of
//! fetched data wait to be consumed. Leader changes are followed (with
//! KIP-951 leader hints and KIP-320 leader epochs, validating positions
//! with OffsetForLeaderEpoch to detect log truncation), out-of-range offsets
//! are reset by [`OffsetReset`], and under
//! [`IsolationLevel::ReadCommitted`] records of aborted transactions are
//! dropped.
//!
//! ```no_run
//! # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
//! use futures::StreamExt;
//! use rskafka::client::consumer::{ConsumerConfig, StartOffset};
//!
//! let mut consumer = client.consumer(
//!     ConsumerConfig::default()
//!         .assign("events", 0, StartOffset::Earliest)
//!         .assign("events", 1, StartOffset::Earliest),
//! )?;
//! while let Some(record) = consumer.next().await {
//!     let record = record?;
//!     println!("{}/{} @{}: {:?}", record.topic, record.partition, record.offset, record.record.value);
//! }
//! # Ok(())
//! # }
//! ```

pub(crate) mod aborted;
mod buffer;
mod chunk;
mod driver;
mod part;
mod planner;
mod requests;
mod session;
mod settings;
mod sizing;
mod state;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use time::OffsetDateTime;
use tokio::time::Instant;

pub use super::partition::IsolationLevel;
pub use crate::protocol::record::{DecodeLimits, TimestampType};
use crate::{
    error::{Error, Result},
    record::Record,
};

use self::{buffer::Ready, planner::FetchPlanner, settings::Settings, state::Shared};
use super::Client;

/// Where a partition's consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still in the log.
    Earliest,
    /// The end of the log: only records produced from now on (the last
    /// stable offset under read_committed).
    Latest,
    /// This offset. An offset outside the log is handled by
    /// [`ConsumerConfig::offset_reset`].
    At(i64),
    /// The first record whose timestamp is at or after this time; the end
    /// of the log if there is none.
    Timestamp(OffsetDateTime),
}

/// What to do when the position is not in the log (OFFSET_OUT_OF_RANGE:
/// records were deleted by retention, or an offset past the end was asked
/// for).
///
/// It also governs log truncation, which the consumer detects after a
/// leader change (KIP-320: the new leader's log ends the last fetched epoch
/// below the position). With `Earliest` or `Latest` consumption continues
/// at the offset where the logs diverge, as the Java consumer does, so the
/// new leader's records from there on are delivered (possibly at offsets
/// already delivered with the old content); with `Error` the partition
/// yields an error item and stops until a seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Continue from the first offset in the log.
    Earliest,
    /// Continue from the end of the log (the Java client's default).
    #[default]
    Latest,
    /// Yield an error item for the partition and stop fetching it until
    /// [`Consumer::seek`] (or a new [`Consumer::assign`]) gives it a position.
    Error,
}

/// Settings of a [`Consumer`].
///
/// Built with chained calls from the defaults:
///
/// ```
/// use std::time::Duration;
/// use rskafka::client::consumer::{ConsumerConfig, IsolationLevel, OffsetReset, StartOffset};
///
/// let config = ConsumerConfig::default()
///     .assign("orders", 0, StartOffset::At(42))
///     .isolation(IsolationLevel::ReadCommitted)
///     .offset_reset(OffsetReset::Error)
///     .max_wait(Duration::from_millis(100))
///     .max_buffered_bytes(16 << 20);
/// assert_eq!(config.assignments().len(), 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    pub(crate) assignments: Vec<(String, i32, StartOffset)>,
    pub(crate) isolation: IsolationLevel,
    pub(crate) max_wait: Duration,
    pub(crate) min_bytes: i32,
    pub(crate) max_bytes: i32,
    pub(crate) max_partition_bytes: i32,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) offset_reset: OffsetReset,
    pub(crate) decode_limits: DecodeLimits,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            assignments: Vec::new(),
            isolation: IsolationLevel::ReadUncommitted,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 << 20,
            max_partition_bytes: 4 << 20,
            max_buffered_bytes: 64 << 20,
            offset_reset: OffsetReset::Latest,
            decode_limits: DecodeLimits::default(),
        }
    }
}

impl ConsumerConfig {
    /// The partitions to read at start, with where to start each.
    pub fn assignments(&self) -> &[(String, i32, StartOffset)] {
        &self.assignments
    }

    /// Adds a partition to read, starting at `start`.
    pub fn assign(mut self, topic: impl Into<String>, partition: i32, start: StartOffset) -> Self {
        self.assignments.push((topic.into(), partition, start));
        self
    }

    /// Which records are visible (default read_uncommitted).
    pub fn isolation(mut self, isolation: IsolationLevel) -> Self {
        self.isolation = isolation;
        self
    }

    /// How long a broker may hold a fetch while it has less than
    /// `min_bytes` (default 500 ms).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Bytes a broker waits for before answering a fetch (default 1).
    pub fn min_bytes(mut self, min_bytes: i32) -> Self {
        self.min_bytes = min_bytes;
        self
    }

    /// Bytes per fetch request (default 50 MiB; the broker may exceed it
    /// by one batch so that an oversized batch still makes progress).
    pub fn max_bytes(mut self, max_bytes: i32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bytes per partition in one fetch (default 4 MiB; the Java client's
    /// is 1 MiB). A partition's first fetch asks for at most 1 MiB; later
    /// ones are sized from how the data just fetched decoded: to about 4
    /// MiB of decoded memory (less on the wire for compressed data), up to
    /// this limit, and past 1 MiB only if fewer than ten thousand records
    /// fill it (small records come about 1 MiB at a time).
    pub fn max_partition_bytes(mut self, max_partition_bytes: i32) -> Self {
        self.max_partition_bytes = max_partition_bytes;
        self
    }

    /// Bound on the memory held by fetched records not yet handed to the
    /// application, plus those of the batch it was last handed until it
    /// asks for more (default 64 MiB): their bytes as decompressed (or as
    /// received, if larger) plus the records' own structs, so that highly
    /// compressed data cannot fill memory many times over. Fetching pauses
    /// at it; one fetch may overshoot it by a few times
    /// [`max_partition_bytes`](Self::max_partition_bytes) per partition it
    /// covers.
    pub fn max_buffered_bytes(mut self, max_buffered_bytes: usize) -> Self {
        self.max_buffered_bytes = max_buffered_bytes;
        self
    }

    /// What to do on OFFSET_OUT_OF_RANGE and detected log truncation.
    pub fn offset_reset(mut self, offset_reset: OffsetReset) -> Self {
        self.offset_reset = offset_reset;
        self
    }

    /// Whether to check each fetched batch's CRC-32C (default `true`, as the
    /// Java consumer does; librdkafka's `check.crcs` defaults to off). The
    /// check catches corruption on the way from the broker's disk. It reads
    /// each byte once, faster than copying it on CPUs with carry-less
    /// multiply (PCLMULQDQ, AVX-512 VPCLMULQDQ, ARMv8 PMULL), so skipping it
    /// saves little. Sets [`DecodeLimits::verify_crc`] in
    /// [`Self::decode_limits`].
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.decode_limits.verify_crc = check;
        self
    }

    /// Bounds on decompression while decoding fetched batches.
    pub fn decode_limits(mut self, decode_limits: DecodeLimits) -> Self {
        self.decode_limits = decode_limits;
        self
    }

    fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(Error::invalid_input(format!(
                    "consumer {name} must be positive, got {v}"
                )))
            }
        };
        positive("max_bytes", i64::from(self.max_bytes))?;
        positive("max_partition_bytes", i64::from(self.max_partition_bytes))?;
        positive(
            "max_buffered_bytes",
            i64::try_from(self.max_buffered_bytes).unwrap_or(i64::MAX),
        )?;
        if self.min_bytes < 0 {
            return Err(Error::invalid_input(format!(
                "consumer min_bytes must not be negative, got {}",
                self.min_bytes
            )));
        }
        if i32::try_from(self.max_wait.as_millis()).is_err() {
            return Err(Error::invalid_input("consumer max_wait is too long"));
        }
        for (topic, partition, start) in &self.assignments {
            check_assignment(topic, *partition, *start)?;
        }
        Ok(())
    }
}

fn check_assignment(topic: &str, partition: i32, start: StartOffset) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::invalid_input("empty topic name"));
    }
    if partition < 0 {
        return Err(
            Error::invalid_input(format!("negative partition {partition}")).with_topic(topic),
        );
    }
    if let StartOffset::At(offset) = start {
        if offset < 0 {
            return Err(
                Error::invalid_input(format!("negative start offset {offset}"))
                    .with_topic(topic)
                    .with_partition(partition),
            );
        }
    }
    if let StartOffset::Timestamp(t) = start {
        if t < OffsetDateTime::UNIX_EPOCH {
            return Err(
                Error::invalid_input("start timestamps before 1970 cannot be looked up")
                    .with_topic(topic)
                    .with_partition(partition),
            );
        }
    }
    Ok(())
}

/// A record read by a [`Consumer`], with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The topic (shared by all records of the topic: no copy per record).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
    /// The record. Key, value and header values share the fetched bytes.
    pub record: Record,
    /// Whether [`Record::timestamp`] is the producer's creation time or the
    /// broker's append time (the batch's, for every record of the batch).
    pub timestamp_type: TimestampType,
    /// The leader epoch the batch was written in, when the broker stamped one.
    pub leader_epoch: Option<i32>,
}

/// Reads records from assigned partitions; see the [module docs](self).
///
/// Dropping it stops the background fetching. It must be created inside a
/// tokio runtime, which runs the fetching.
pub struct Consumer {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
    /// Records of the chunk the [`Stream`] implementation is handing out.
    current: std::vec::IntoIter<ConsumedRecord>,
    /// Buffered bytes of the chunk being handed out or last handed out,
    /// released when the application asks for records past it: the records
    /// it holds until then count against the prefetch budget, so that
    /// prefetching does not refill the budget while a slow application
    /// still holds a chunk.
    current_bytes: usize,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Consumer")
            .field("partitions", &st.planner.partition_count())
            .field("buffered_bytes", &st.planner.buffered())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A consumer reading the partitions of `config.assignments`.
    ///
    /// Fails on invalid settings, or outside a tokio runtime. Unknown topics
    /// and offsets are reported as error items of the stream.
    pub fn consumer(&self, config: ConsumerConfig) -> Result<Consumer> {
        Consumer::new(self, config)
    }
}

impl Consumer {
    /// Same as [`Client::consumer`].
    pub fn new(client: &Client, config: ConsumerConfig) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_input("a consumer must be created inside a tokio runtime")
        })?;
        let settings = Arc::new(Settings::new(&config, &client.settings));
        let mut planner = FetchPlanner::new(Arc::clone(&settings));
        let now = Instant::now();
        for (topic, partition, start) in &config.assignments {
            planner.assign(topic, *partition, *start, now);
        }
        let shared = Arc::new(Shared::new(planner));
        let driver = runtime.spawn(driver::run(
            Arc::clone(&shared),
            client.cluster.clone(),
            settings,
        ));
        Ok(Self {
            shared,
            driver,
            current: Vec::new().into_iter(),
            current_bytes: 0,
        })
    }

    /// The next records, many at once: all records of one partition's
    /// fetched chunk, in offset order. Waits until some are there.
    ///
    /// The result can be empty when the fetched data held only transaction
    /// markers or records of aborted transactions; positions still moved,
    /// which matters to callers that stop at an end offset (see
    /// [`Self::position`]). Errors concern one partition (see
    /// [`Error::topic`], [`Error::partition`]); the consumer keeps going.
    pub async fn next_batch(&mut self) -> Result<Vec<ConsumedRecord>> {
        if self.current.len() > 0 {
            // Left over from the stream: hand out the rest of that chunk,
            // still accounted until the next call.
            let records: Vec<ConsumedRecord> = std::mem::take(&mut self.current).collect();
            return Ok(records);
        }
        // The previous batch counts until now: asking for more is the sign
        // that the application is done with it (see `current_bytes`).
        self.release_current();
        let (records, bytes) = std::future::poll_fn(|cx| self.poll_chunk(cx)).await?;
        self.current_bytes = bytes;
        Ok(records)
    }

    /// Pops the next ready item; `Pending` registers the waker. Returns the
    /// chunk's records and its buffered bytes, which stay accounted until
    /// the caller releases them.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Vec<ConsumedRecord>, usize)>> {
        let mut st = self.shared.lock();
        loop {
            match st.planner.pop_ready() {
                Some(Ready::Error(e)) => return Poll::Ready(Err(e)),
                Some(Ready::Chunk(c)) => {
                    let bytes = c.bytes;
                    match st.planner.take_chunk(c) {
                        Some(records) => return Poll::Ready(Ok((records, bytes))),
                        None => {
                            // Stale (the partition moved or left): drop it.
                            st.planner.release(bytes);
                            self.shared.wake_driver.notify_one();
                        }
                    }
                }
                None => {
                    if st.driver_gone {
                        return Poll::Ready(Err(Error::protocol(
                            "the consumer's background task has stopped",
                        )));
                    }
                    st.register_app_waker(cx.waker());
                    return Poll::Pending;
                }
            }
        }
    }

    /// Up to `max` more records of the chunk the stream is handing out,
    /// without starting another.
    pub(crate) fn rest_of_chunk(&mut self, max: usize) -> Vec<ConsumedRecord> {
        self.current.by_ref().take(max).collect()
    }

    fn release_current(&mut self) {
        let bytes = std::mem::take(&mut self.current_bytes);
        self.release(bytes);
    }

    /// Gives buffered bytes back to the prefetch budget; the background task
    /// may then fetch more.
    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.lock().planner.release(bytes);
            self.shared.wake_driver.notify_one();
        }
    }

    /// Starts reading `topic`/`partition` from `start`, or moves it there if
    /// it is already assigned (dropping what was prefetched for it).
    pub fn assign(&mut self, topic: &str, partition: i32, start: StartOffset) -> Result<()> {
        check_assignment(topic, partition, start)?;
        self.drop_current_of(topic, partition);
        self.shared
            .lock()
            .planner
            .assign(topic, partition, start, Instant::now());
        self.shared.wake_driver.notify_one();
        Ok(())
    }

    /// Stops reading `topic`/`partition`, dropping what was prefetched for
    /// it. Returns whether it was assigned.
    pub fn unassign(&mut self, topic: &str, partition: i32) -> bool {
        self.drop_current_of(topic, partition);
        let was = self.shared.lock().planner.unassign(topic, partition);
        self.shared.wake_driver.notify_one();
        was
    }

    /// Continues `topic`/`partition` at `offset`, dropping what was
    /// prefetched for it. Also resumes a partition stopped by
    /// [`OffsetReset::Error`].
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        check_assignment(topic, partition, StartOffset::At(offset))?;
        if !self.is_assigned(topic, partition) {
            return Err(
                Error::invalid_input("seek on a partition that is not assigned")
                    .with_topic(topic)
                    .with_partition(partition),
            );
        }
        self.assign(topic, partition, StartOffset::At(offset))
    }

    fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.shared.lock().planner.part(topic, partition).is_some()
    }

    /// Drops the not yet handed out records of the stream's current chunk
    /// if they belong to this partition.
    fn drop_current_of(&mut self, topic: &str, partition: i32) {
        let belongs = self
            .current
            .as_slice()
            .first()
            .is_some_and(|r| &*r.topic == topic && r.partition == partition);
        if belongs {
            self.current = Vec::new().into_iter();
            self.release_current();
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.shared.lock().planner.assignment()
    }

    /// The offset of the next record this consumer hands out for the
    /// partition: after the last record handed out, or after the
    /// markers/aborted records that followed it. `None` while the start
    /// offset is being looked up, or if the partition is not assigned.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        if let Some(r) = self.current.as_slice().first() {
            if &*r.topic == topic && r.partition == partition {
                return Some(r.offset);
            }
        }
        self.shared
            .lock()
            .planner
            .part(topic, partition)
            .and_then(|p| p.position)
    }

    /// The partition's high watermark from the latest fetch response.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.shared
            .lock()
            .planner
            .part(topic, partition)
            .and_then(|p| p.high_watermark)
    }

    /// The partition's last stable offset from the latest fetch response:
    /// under read_committed, where consumption currently ends.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.shared
            .lock()
            .planner
            .part(topic, partition)
            .and_then(|p| p.last_stable_offset)
    }

    /// The partition's log start offset from the latest fetch response.
    pub fn log_start_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.shared
            .lock()
            .planner
            .part(topic, partition)
            .and_then(|p| p.log_start_offset)
    }

    /// Fetched record bytes not yet handed to the application, and those of
    /// the chunk last handed out until the application asks for records
    /// past it.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().planner.buffered()
    }

    /// The largest [`Self::buffered_bytes`] seen so far. It stays within
    /// [`ConsumerConfig::max_buffered_bytes`] unless a single batch is larger
    /// than that (it is accepted when nothing else is buffered, so that
    /// consumption cannot stall).
    pub fn peak_buffered_bytes(&self) -> usize {
        self.shared.lock().planner.peak()
    }
}

impl Consumer {
    /// Stops fetching and closes the fetch sessions on the brokers (they
    /// would otherwise expire after a while), waiting at most `timeout`.
    /// Dropping the consumer stops it too, without closing the sessions.
    pub async fn close(mut self, timeout: Duration) {
        self.shared.lock().closing = true;
        self.shared.wake_driver.notify_one();
        if tokio::time::timeout(timeout, &mut self.driver)
            .await
            .is_err()
        {
            tracing::debug!("closing the consumer timed out");
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumedRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(record) = this.current.next() {
                return Poll::Ready(Some(Ok(record)));
            }
            // Asked past the last record of the chunk.
            this.release_current();
            match this.poll_chunk(cx) {
                Poll::Ready(Ok((records, bytes))) => {
                    this.current = records.into_iter();
                    this.current_bytes = bytes;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
