//! A batching, idempotent producer for many topics and partitions.
//!
//! [`Producer::send`] encodes a record straight into its partition's open
//! batch and hands back a [`DeliveryFuture`]; a background task sends ready
//! batches (full, lingered, or flushed) with one ProduceRequest per broker
//! carrying all of that broker's partitions, retries what can be retried in
//! the original order, and resolves every record's future with its offset or
//! a typed error.
//!
//! Idempotence is on by default, as in the Java client: the producer gets a
//! producer id (InitProducerId) and numbers its batches per partition, so a
//! batch re-sent after a timeout or a broken connection is written once. A
//! situation where records may have been lost or their fate is unknown is
//! reported as [`ErrorKind::DataLoss`] on the affected records, never
//! passed over silently.
//!
//! With a [`transactional_id`](ProducerConfig::transactional_id) the
//! producer writes transactions: records sent between
//! [`Producer::begin_transaction`] and [`Producer::commit_transaction`]
//! become visible to `read_committed` readers together, or not at all, and
//! consumed offsets can be committed in the same transaction
//! ([`Producer::send_offsets_to_transaction`]) for exactly-once
//! consume-transform-produce. Errors are sorted as in the Java client: a
//! fatal one ([`Error::is_fatal`]: fenced by a newer producer with the same
//! id, not authorised) ends the producer; after any other, abort the
//! transaction and go on.
//!
//! ```no_run
//! # async fn example() -> rskafka::error::Result<()> {
//! use rskafka::client::{ClientBuilder, producer::{ProducerConfig, ProducerRecord}};
//! use rskafka::record::Record;
//! use time::OffsetDateTime;
//!
//! let client = ClientBuilder::new(vec!["127.0.0.1:9092".to_owned()]).build().await?;
//! let producer = client.producer(ProducerConfig::default().transactional_id("orders-1"))?;
//! producer.init_transactions().await?;
//! producer.begin_transaction()?;
//! for i in 0..10 {
//!     let record = Record {
//!         key: None,
//!         value: Some(format!("order {i}").into()),
//!         headers: vec![],
//!         timestamp: OffsetDateTime::now_utc(),
//!     };
//!     producer.send(ProducerRecord::new("orders", record)).await?;
//! }
//! match producer.commit_transaction().await {
//!     Ok(()) => {}
//!     Err(e) if e.is_fatal() => return Err(e),
//!     Err(_) => producer.abort_transaction().await?,
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! # async fn example() -> rskafka::error::Result<()> {
//! use rskafka::client::{ClientBuilder, producer::{ProducerConfig, ProducerRecord}};
//! use rskafka::record::Record;
//! use time::OffsetDateTime;
//!
//! let client = ClientBuilder::new(vec!["127.0.0.1:9092".to_owned()]).build().await?;
//! let producer = client.producer(ProducerConfig::default())?;
//! let mut deliveries = Vec::new();
//! for i in 0..1_000 {
//!     let record = Record {
//!         key: Some(format!("key-{i}").into()),
//!         value: Some("hello".into()),
//!         headers: vec![],
//!         timestamp: OffsetDateTime::now_utc(),
//!     };
//!     // Waits only if the buffer is full; the delivery is awaited later.
//!     deliveries.push(producer.send(ProducerRecord::new("my_topic", record)).await?);
//! }
//! for d in deliveries {
//!     let meta = d.await?;
//!     println!("partition {} offset {:?}", meta.partition, meta.offset);
//! }
//! producer.close().await;
//! # Ok(())
//! # }
//! ```

mod accumulator;
mod alarm;
mod batch;
mod partitioner;
mod sender;
mod txn;

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use time::OffsetDateTime;
use tokio::{
    sync::{futures::Notified, Notify},
    time::Instant,
};

pub use self::batch::{DeliveryFuture, RecordMetadata};
pub use self::partitioner::{key_partition, murmur2, PartitionFn, Partitioner};
pub use crate::client::partition::Acks;
pub use crate::protocol::record::{Compression, UnknownCompression};

use self::accumulator::{Accumulator, AccumulatorConfig, AppendError, Appended};
use crate::{
    client::{
        group::{ConsumerGroupMetadata, TopicPartition},
        Client,
    },
    cluster::{Backoff, BackoffConfig, Cluster},
    error::{Error, ErrorKind, Result},
    protocol::{
        record::{record_size_upper_bound, RecordHeader, RECORD_BATCH_OVERHEAD},
        ErrorCode,
    },
    record::Record,
};

/// Settings of a [`Producer`]; start from [`ProducerConfig::default`] and
/// change what you need.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    linger: Duration,
    batch_size: usize,
    max_request_size: usize,
    buffer_memory: usize,
    block_on_full: bool,
    max_in_flight_per_broker: usize,
    acks: Acks,
    compression: Compression,
    partitioner: Partitioner,
    idempotence: Option<bool>,
    delivery_timeout: Duration,
    request_timeout: Option<Duration>,
    retry_backoff: BackoffConfig,
    retries: u32,
    transactional_id: Option<String>,
    transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    /// linger 5 ms, batches up to 1 MB, requests up to 8 MiB, 32 MiB of
    /// buffer, 5 requests in flight per broker, acks=all, no compression,
    /// the default partitioner, idempotence on, delivery timeout 120 s.
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            // As librdkafka and franz-go: one batch per partition and request
            // is all Produce v3+ allows, so small batches cap throughput.
            batch_size: 1_000_000,
            max_request_size: 8 * 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            block_on_full: true,
            max_in_flight_per_broker: 5,
            acks: Acks::All,
            compression: Compression::None,
            partitioner: Partitioner::Default,
            idempotence: None,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: None,
            retry_backoff: BackoffConfig::default(),
            retries: u32::MAX,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    /// How long a batch may wait for more records before it is sent
    /// (default 5 ms). `Duration::ZERO` sends as soon as the sender is free.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Largest batch, in uncompressed bytes, before it is closed and sent
    /// (default 1,000,000). A single larger record gets a batch of its own.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes.max(1);
        self
    }

    /// Largest ProduceRequest, in batch bytes (default 8 MiB); also the
    /// largest record accepted. The broker's own limits
    /// (`message.max.bytes`, `socket.request.max.bytes`) still apply.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes.max(1);
        self
    }

    /// Bytes of records buffered until acknowledged (default 32 MiB); when
    /// it is full, [`Producer::send`] waits (or fails, see
    /// [`block_on_full`](Self::block_on_full)).
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes.max(1);
        self
    }

    /// Whether `send` waits for room in a full buffer (default `true`; at
    /// most the delivery timeout) or fails at once with
    /// [`ErrorKind::BufferFull`].
    pub fn block_on_full(mut self, block: bool) -> Self {
        self.block_on_full = block;
        self
    }

    /// Requests in flight to one broker at a time (default 5, at least 1).
    pub fn max_in_flight_per_broker(mut self, n: usize) -> Self {
        self.max_in_flight_per_broker = n.max(1);
        self
    }

    /// How many replicas must have a batch before it counts as written
    /// (default [`Acks::All`]). Anything but `All` turns the default
    /// idempotence off.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// The codec for every batch (default none).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How records without an explicit partition are placed (default:
    /// murmur2 of the key as the Java client, sticky for records without a
    /// key).
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// Idempotence (default: on with [`Acks::All`], off otherwise).
    /// Explicitly on requires `Acks::All`. Without it, retries may write a
    /// batch twice, and only one batch per partition is in flight so that
    /// retries cannot reorder records.
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = Some(on);
        self
    }

    /// Bound on the time from a batch's creation to its acknowledgement,
    /// retries included (default 120 s); its records then fail with
    /// [`ErrorKind::Timeout`]. Must be at least linger + request timeout.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Bound on one ProduceRequest, and the time the broker may wait for
    /// replicas (default: the client's request timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How often a batch is sent again after a retriable failure, at most
    /// (default: no limit but the delivery timeout, as the Java client's
    /// `retries`). When they are used up, its records fail with the last
    /// attempt's error. With idempotence the sequence numbers stay correct
    /// either way; `0` fails a batch at its first retriable error.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Pacing of retries of a failed batch (default: 100 ms doubling to 1 s).
    pub fn retry_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Makes the producer transactional under `id` (the Java client's
    /// `transactional.id`): records are sent only within a transaction (see
    /// [`Producer::begin_transaction`]) and become visible to
    /// `read_committed` readers only when it commits. One id, one live
    /// producer: a new producer with the same id fences the old one.
    /// Implies idempotence (and so requires [`Acks::All`]).
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// How long the transaction coordinator lets a transaction stay open
    /// before it aborts it on its own (default 60 s; the broker caps it at
    /// `transaction.max.timeout.ms`, 15 minutes by default).
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    fn is_idempotent(&self) -> Result<bool> {
        if self.transactional_id.is_some() {
            return match (self.idempotence, self.acks) {
                (Some(false), _) => Err(Error::invalid_input(
                    "a transactional producer is idempotent; idempotence cannot be off",
                )),
                (_, Acks::All) => Ok(true),
                _ => Err(Error::invalid_input(
                    "a transactional producer requires acks=all (Acks::All)",
                )),
            };
        }
        match (self.idempotence, self.acks) {
            (None, acks) => Ok(acks == Acks::All),
            (Some(true), Acks::All) => Ok(true),
            (Some(true), _) => Err(Error::invalid_input(
                "idempotence requires acks=all (Acks::All)",
            )),
            (Some(false), _) => Ok(false),
        }
    }
}

/// A record and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition, or `None` to let the [`Partitioner`] choose.
    pub partition: Option<i32>,
    /// The record.
    pub record: Record,
}

impl ProducerRecord {
    /// A record for `topic`, placed by the partitioner.
    pub fn new(topic: impl Into<String>, record: Record) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            record,
        }
    }

    /// Sends the record to `partition` instead of asking the partitioner.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Counters of a producer, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerMetrics {
    /// ProduceRequests sent.
    pub requests: u64,
    /// Batches sent, first attempts and retries.
    pub batches_sent: u64,
    /// Records in those batches (a retried batch's records count again).
    pub records_sent: u64,
    /// Bytes of those batches as sent (compressed, with batch headers):
    /// divided by `batches_sent`, the average batch size.
    pub batch_bytes_sent: u64,
    /// Batch attempts that were retried.
    pub retries: u64,
    /// Responses in which the broker reported throttling (quotas).
    pub throttled_responses: u64,
    /// Sum of the throttle times the broker reported, in milliseconds.
    pub throttle_time_ms: u64,
    /// InitProducerId requests sent (including failed attempts).
    pub producer_id_requests: u64,
    /// Epoch bumps (KIP-360) after the sequence state was lost or unknown.
    pub epoch_bumps: u64,
    /// Bytes of records buffered now (sent or not, not yet acknowledged).
    pub buffered_bytes: u64,
}

#[derive(Debug, Default)]
struct Metrics {
    requests: AtomicU64,
    batches_sent: AtomicU64,
    records_sent: AtomicU64,
    batch_bytes_sent: AtomicU64,
    retries: AtomicU64,
    throttled_responses: AtomicU64,
    throttle_time_ms: AtomicU64,
    producer_id_requests: AtomicU64,
    epoch_bumps: AtomicU64,
}

/// Everything the sender task and the handles share.
struct Shared {
    state: Mutex<sender::State>,
    /// Wakes the sender: a batch was opened or closed, a request finished,
    /// a flush or close began.
    wake: Notify,
    /// Signalled when the sender task ends.
    finished: Notify,
    /// Signalled when buffered bytes are released (see `send`).
    room: Arc<Notify>,
    cluster: Cluster,
    cfg: ProducerConfig,
    acks: Acks,
    request_timeout: Duration,
    metrics: Metrics,
    /// A transactional producer's coordinator side.
    txn: Option<txn::TxnContext>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, sender::State> {
        // The state stays consistent between statements; a panic while
        // holding the lock is a bug, and continuing beats poisoning every
        // later send.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the producer when the last handle is dropped: buffered records
/// are still delivered in the background.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.lock().acc.close();
        self.0.wake.notify_one();
    }
}

/// A batching producer; see the [module docs](self). Cheap to clone: clones
/// share buffers, batches and the sender task.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _guard: Arc<HandleGuard>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A producer using this client's connections and metadata; see
    /// [`Producer`]. Must be called within a tokio runtime, which runs its
    /// background task.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::new(self, config)
    }
}

impl Producer {
    /// A producer on `client`'s connections; see [`Client::producer`].
    pub fn new(client: &Client, config: ProducerConfig) -> Result<Self> {
        let idempotent = config.is_idempotent()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_input("a producer must be created within a tokio runtime")
        })?;
        let cluster = client.cluster.clone();
        let request_timeout = config
            .request_timeout
            .unwrap_or(cluster.config().connection.request_timeout);
        if config.delivery_timeout < config.linger + request_timeout {
            return Err(Error::invalid_input(format!(
                "delivery timeout ({:?}) must be at least linger + request timeout ({:?})",
                config.delivery_timeout,
                config.linger + request_timeout
            )));
        }
        if !config.compression.is_enabled() {
            return Err(Error::invalid_input(format!(
                "compression {} is not enabled in this build (cargo feature compression-{})",
                config.compression, config.compression
            )));
        }
        let room = Arc::new(Notify::new());
        let acc = Accumulator::new(
            AccumulatorConfig {
                batch_size: config.batch_size,
                linger: config.linger,
                delivery_timeout: config.delivery_timeout,
                compression: config.compression,
                idempotent,
                // Kafka keeps the last 5 batches per producer and partition
                // for duplicate detection, so 5 is the most that can be in
                // flight with idempotence; without it, one keeps retries in
                // order.
                max_in_flight_per_partition: if idempotent {
                    config.max_in_flight_per_broker.min(5)
                } else {
                    1
                },
                max_request_size: config.max_request_size,
                retry_backoff: config.retry_backoff.clone(),
                retries: config.retries,
                buffer_memory: config.buffer_memory,
                transactional: config.transactional_id.is_some(),
            },
            room.clone(),
        );
        let txn = config
            .transactional_id
            .clone()
            .map(|id| txn::TxnContext::new(cluster.clone(), id));
        let txn_state = txn.as_ref().map(|_| txn::TxnState::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(sender::State::new(acc, txn_state)),
            wake: Notify::new(),
            finished: Notify::new(),
            room,
            cluster,
            acks: config.acks,
            request_timeout,
            cfg: config,
            metrics: Metrics::default(),
            txn,
        });
        runtime.spawn(sender::run(shared.clone()));
        Ok(Self {
            _guard: Arc::new(HandleGuard(shared.clone())),
            shared,
        })
    }

    /// Buffers `record` for sending and returns the future of its delivery.
    ///
    /// The returned future of this method completes once the record is in
    /// a batch: at once, unless the buffer is full (then it waits, see
    /// [`ProducerConfig::block_on_full`]) or the topic's partitions are not
    /// known yet (a metadata request). Errors here concern the record
    /// itself: unknown topic or partition, a record larger than
    /// [`ProducerConfig::max_request_size`], a closed producer, a full
    /// buffer. Errors of the delivery come from the [`DeliveryFuture`].
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        self.send_to(&record.topic, record.partition, record.record)
            .await
    }

    /// As [`send`](Self::send), with the topic borrowed.
    pub async fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: Record,
    ) -> Result<DeliveryFuture> {
        let ctx = |e: Error| e.with_topic(topic);
        let Record {
            key,
            value,
            headers,
            timestamp,
        } = record;
        // Moves the header strings; allocates only for records with headers.
        let headers: Vec<RecordHeader> = if headers.is_empty() {
            Vec::new()
        } else {
            headers
                .into_iter()
                .map(|(key, value)| RecordHeader { key, value })
                .collect()
        };
        let size = record_size_upper_bound(
            key.as_ref().map(|k| k.len()),
            value.as_ref().map(|v| v.len()),
            &headers,
        );
        if let Some(e) = record_too_large(size, &self.shared.cfg) {
            let e = ctx(e);
            self.fail_transaction(&e);
            return Err(e);
        }
        let record = Record {
            key,
            value,
            headers: Vec::new(),
            timestamp,
        };
        // The common case has no await: this function's future is built
        // and moved for every record, so it must stay small; the rare waits
        // (metadata, room in the buffer) live in a boxed future of their own.
        let appended = self.append(topic, partition, &record, &headers, size, None);
        if let Ok(a) = appended {
            return Ok(self.appended(a, timestamp));
        }
        Box::pin(self.send_slowly(topic, partition, record, headers, size, appended)).await
    }

    /// Appends a record under the producer's lock. With `room`, a full
    /// buffer registers it for the next release, under the lock that
    /// releases take, so a release cannot slip in before the caller waits.
    fn append(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
        headers: &[RecordHeader],
        size: usize,
        room: Option<Pin<&mut Notified<'_>>>,
    ) -> std::result::Result<Appended, AppendError> {
        let mut st = self.shared.lock();
        if let Some(t) = &st.txn {
            t.check_send().map_err(AppendError::Transaction)?;
        }
        let appended = st.acc.append(
            topic,
            partition,
            &self.shared.cfg.partitioner,
            record,
            headers,
            size,
            &Instant::now,
        );
        if let (Err(AppendError::Full), Some(room)) = (&appended, room) {
            room.enable();
            st.acc.waiting_for_room(true);
        }
        appended
    }

    /// The delivery future of an appended record.
    fn appended(&self, a: Appended, timestamp: OffsetDateTime) -> DeliveryFuture {
        if a.wake_sender {
            self.shared.wake.notify_one();
        }
        DeliveryFuture::new(a.shared, a.offset_delta, timestamp)
    }

    /// [`send_to`](Self::send_to) after a first append failed with
    /// `appended`: loads metadata or waits for room, and appends again.
    async fn send_slowly(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: Record,
        headers: Vec<RecordHeader>,
        size: usize,
        mut appended: std::result::Result<Appended, AppendError>,
    ) -> Result<DeliveryFuture> {
        let ctx = |e: Error| e.with_topic(topic);
        let cfg = &self.shared.cfg;
        // See `next_append_step`.
        let mut loaded_metadata = false;
        // Set once the buffer was found full: room must come by then.
        let mut room_deadline: Option<Instant> = None;
        loop {
            let failed = match appended {
                Ok(a) => return Ok(self.appended(a, record.timestamp)),
                Err(e) => e,
            };
            let err = match next_append_step(&failed, loaded_metadata, cfg.block_on_full) {
                AppendStep::LoadMetadata { refresh } => {
                    loaded_metadata = true;
                    match self.load_topic(topic, refresh).await {
                        Ok(()) => {
                            appended = self.append(topic, partition, &record, &headers, size, None);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                AppendStep::WaitForRoom => {
                    // Appended again with a waiter registered: room may have
                    // come since the first attempt, which registered none.
                    let room = self.shared.room.notified();
                    tokio::pin!(room);
                    appended = self.append(
                        topic,
                        partition,
                        &record,
                        &headers,
                        size,
                        Some(room.as_mut()),
                    );
                    if !matches!(appended, Err(AppendError::Full)) {
                        continue;
                    }
                    // Room frees up as batches complete, which the delivery
                    // timeout bounds; waiting longer means something is stuck.
                    let deadline =
                        *room_deadline.get_or_insert_with(|| Instant::now() + cfg.delivery_timeout);
                    let woken = tokio::time::timeout_at(deadline, room).await.is_ok();
                    self.shared.lock().acc.waiting_for_room(false);
                    if woken {
                        appended = self.append(topic, partition, &record, &headers, size, None);
                        continue;
                    }
                    no_room_in_time(cfg)
                }
                AppendStep::Fail => match append_failure(failed, cfg) {
                    SendFailure::Record(e) => e,
                    // Not a failure of the transaction: there is none to fail.
                    SendFailure::NoTransaction(e) => return Err(ctx(e)),
                },
            };
            let err = ctx(err);
            self.fail_transaction(&err);
            return Err(err);
        }
    }

    /// A record of the open transaction could not be sent: the transaction
    /// must not commit without it (as in the Java client).
    fn fail_transaction(&self, e: &Error) {
        if let Some(t) = self.shared.lock().txn.as_mut() {
            t.fail_send(e);
        }
    }

    /// Loads the partition count of `topic` (from fresh metadata if
    /// `refresh`), waiting up to the request timeout for a topic that is
    /// being created.
    async fn load_topic(&self, topic: &str, mut refresh: bool) -> Result<()> {
        let cluster = &self.shared.cluster;
        let names = [topic.to_string()];
        let deadline = Instant::now() + self.shared.request_timeout;
        let mut backoff = Backoff::new(&self.shared.cfg.retry_backoff, Some(deadline));
        loop {
            let md = if refresh {
                cluster.refresh_metadata(Some(&names)).await
            } else {
                cluster.metadata(Some(&names)).await
            };
            refresh = true;
            let err = match md
                .map_err(Error::from)
                .and_then(|md| topic_layout(md.topics.get(topic)))
            {
                Ok(layout) => {
                    let mut st = self.shared.lock();
                    st.acc.set_partition_count(topic, layout.partition_count);
                    // The sticky partitioner avoids partitions without a leader.
                    st.acc
                        .set_topic_leaders(topic, layout.with_leader.into_iter());
                    return Ok(());
                }
                Err(e) => e,
            };
            if !err.is_retriable() || backoff.wait().await.is_err() {
                return Err(err);
            }
        }
    }

    /// Sends every buffered record now, ignoring linger, and waits until
    /// each record sent before this call is acknowledged or failed. Bounded
    /// by the delivery timeout.
    pub async fn flush(&self) {
        /// Ends the flush even if the caller drops the future half-way, or
        /// linger would be ignored for good.
        struct Flushing<'a>(&'a Shared);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.lock().acc.end_flush();
            }
        }
        let waits = self.shared.lock().acc.begin_flush();
        let _flushing = Flushing(&self.shared);
        self.shared.wake.notify_one();
        for w in waits {
            w.wait().await;
        }
    }

    /// Stops accepting records, delivers what is buffered, and waits for
    /// the background task to end (bounded by the delivery timeout). Other
    /// clones of this producer are closed too.
    pub async fn close(&self) {
        let finished = self.shared.finished.notified();
        tokio::pin!(finished);
        // Registered before checking, so the end cannot slip in between.
        finished.as_mut().enable();
        let done = {
            let mut st = self.shared.lock();
            st.acc.close();
            st.finished
        };
        self.shared.wake.notify_one();
        if !done {
            finished.await;
        }
    }

    /// Counters since the producer was created.
    pub fn metrics(&self) -> ProducerMetrics {
        let m = &self.shared.metrics;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProducerMetrics {
            requests: get(&m.requests),
            batches_sent: get(&m.batches_sent),
            records_sent: get(&m.records_sent),
            batch_bytes_sent: get(&m.batch_bytes_sent),
            retries: get(&m.retries),
            throttled_responses: get(&m.throttled_responses),
            throttle_time_ms: get(&m.throttle_time_ms),
            producer_id_requests: get(&m.producer_id_requests),
            epoch_bumps: get(&m.epoch_bumps),
            buffered_bytes: self.shared.lock().acc.buffered() as u64,
        }
    }

    /// Registers the producer's transactional id with its transaction
    /// coordinator and obtains its producer id and epoch, fencing any
    /// earlier producer with the same id and completing (aborting) a
    /// transaction it left open. Call once, before the first transaction.
    /// Fails with [`ErrorKind::InvalidInput`] on a producer without a
    /// [`transactional_id`](ProducerConfig::transactional_id).
    pub async fn init_transactions(&self) -> Result<()> {
        txn::init(&self.shared).await
    }

    /// Opens a transaction: records sent from now on belong to it until
    /// [`commit_transaction`](Self::commit_transaction) or
    /// [`abort_transaction`](Self::abort_transaction). Nothing is sent to
    /// the broker until the first record. A `send` still waiting for room
    /// or metadata when a transaction ends joins the one open when it
    /// appends its record (or fails if none is).
    pub fn begin_transaction(&self) -> Result<()> {
        txn::begin(&self.shared)
    }

    /// Adds consumed offsets to the open transaction: they are committed
    /// for `group` if and only if the transaction commits (the
    /// consume-transform-produce loop of exactly-once processing). Each
    /// offset is the next one to consume (last processed + 1). With the
    /// metadata of a [`GroupConsumer`](crate::client::group::GroupConsumer),
    /// the coordinator refuses the commit of a member that lost the
    /// partitions to a rebalance; the transaction must then be aborted.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let offsets: Vec<(TopicPartition, i64)> = offsets.into_iter().collect();
        txn::send_offsets(&self.shared, offsets, group).await
    }

    /// Delivers every record of the open transaction and commits it: its
    /// records become visible to `read_committed` readers, its offsets are
    /// committed. If a record of it failed, nothing is committed and the
    /// error is returned: abort the transaction then. On an error that
    /// [`is_fatal`](Error::is_fatal) (the producer was fenced by a newer one
    /// with the same id, or is not authorised), the producer can do nothing
    /// more. A [`ErrorKind::Timeout`] leaves the outcome open: call commit
    /// again.
    pub async fn commit_transaction(&self) -> Result<()> {
        txn::commit(&self.shared, self).await
    }

    /// Aborts the open transaction: its records still buffered fail with
    /// [`ErrorKind::TransactionAborted`], those already written
    /// stay invisible to `read_committed` readers, its offsets are not
    /// committed. The producer can begin a new transaction afterwards.
    pub async fn abort_transaction(&self) -> Result<()> {
        txn::abort(&self.shared).await
    }

    /// The producer id and epoch in use, with idempotence (for diagnostics).
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.shared.lock().acc.producer_id()
    }
}

/// The error of a record of up to `size` bytes that can never be sent: it
/// does not fit a request or the buffer.
fn record_too_large(size: usize, cfg: &ProducerConfig) -> Option<Error> {
    (size + RECORD_BATCH_OVERHEAD > cfg.max_request_size || size > cfg.buffer_memory).then(|| {
        Error::kafka(ErrorCode::MESSAGE_TOO_LARGE, None).with_message(format!(
            "a record of up to {size} bytes does not fit the maximum request size \
                 ({}) or buffer memory ({})",
            cfg.max_request_size, cfg.buffer_memory
        ))
    })
}

/// What [`Producer::send_slowly`] does about a record that could not be
/// appended.
#[derive(Debug, PartialEq, Eq)]
enum AppendStep {
    /// Load the topic's metadata (fresh if `refresh`) and append again.
    LoadMetadata { refresh: bool },
    /// Wait for room in the buffer and append again.
    WaitForRoom,
    /// Report the error ([`append_failure`]).
    Fail,
}

/// The next step after `failed`. Metadata is loaded at most once per record:
/// for a topic not seen yet, or a partition beyond the count known
/// (partitions added, so the cached count is refreshed).
fn next_append_step(
    failed: &AppendError,
    loaded_metadata: bool,
    block_on_full: bool,
) -> AppendStep {
    match failed {
        AppendError::UnknownTopic if !loaded_metadata => {
            AppendStep::LoadMetadata { refresh: false }
        }
        AppendError::InvalidPartition { .. } if !loaded_metadata => {
            AppendStep::LoadMetadata { refresh: true }
        }
        AppendError::Full if block_on_full => AppendStep::WaitForRoom,
        _ => AppendStep::Fail,
    }
}

/// The error `send` reports for a record it gives up appending.
#[derive(Debug)]
enum SendFailure {
    /// The record failed: an open transaction must not commit without it.
    Record(Error),
    /// No transaction is open to send in.
    NoTransaction(Error),
}

/// The error of a record that could not be appended and will not be
/// retried.
fn append_failure(failed: AppendError, cfg: &ProducerConfig) -> SendFailure {
    SendFailure::Record(match failed {
        AppendError::UnknownTopic => Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
        AppendError::InvalidPartition { partition, count } => {
            Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None)
                .with_message(format!(
                    "partition {partition} does not exist; the topic has {count}"
                ))
                .with_partition(partition)
        }
        AppendError::Full => Error::new(ErrorKind::BufferFull).with_message(format!(
            "the producer's buffer ({} bytes) is full",
            cfg.buffer_memory
        )),
        AppendError::Closed => Error::invalid_input("the producer is closed"),
        AppendError::Transaction(e) => return SendFailure::NoTransaction(e),
        AppendError::Encode(e) => Error::new(ErrorKind::InvalidInput).with_source(e),
    })
}

/// The error of a record that waited for room in the buffer in vain.
fn no_room_in_time(cfg: &ProducerConfig) -> Error {
    Error::new(ErrorKind::BufferFull).with_message(format!(
        "no room in the buffer within the delivery timeout ({:?})",
        cfg.delivery_timeout
    ))
}

/// What the producer needs of a topic's metadata.
#[derive(Debug, PartialEq, Eq)]
struct TopicLayout {
    /// One more than the highest partition index.
    partition_count: i32,
    /// The partitions that have a leader.
    with_leader: Vec<i32>,
}

/// The layout of `topic` from metadata, or the error to retry on (while the
/// topic is being created) or report; `None` is a topic metadata left out.
fn topic_layout(topic: Option<&crate::cluster::TopicInfo>) -> Result<TopicLayout> {
    match topic {
        Some(t) if t.error.is_ok() && !t.partitions.is_empty() => Ok(TopicLayout {
            partition_count: t
                .partitions
                .keys()
                .next_back()
                .map_or(0, |p| p.saturating_add(1)),
            with_leader: t
                .partitions
                .iter()
                .filter(|(_, p)| p.leader.is_some())
                .map(|(&i, _)| i)
                .collect(),
        }),
        Some(t) if !t.error.is_ok() => Err(Error::kafka(t.error, None)),
        _ => Err(Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::{PartitionInfo, TopicInfo};

    #[test]
    fn metadata_is_loaded_once_per_record_and_only_a_blocking_producer_waits_for_room() {
        let unknown = AppendError::UnknownTopic;
        let invalid = AppendError::InvalidPartition {
            partition: 3,
            count: 2,
        };
        assert_eq!(
            next_append_step(&unknown, false, false),
            AppendStep::LoadMetadata { refresh: false }
        );
        assert_eq!(
            next_append_step(&invalid, false, false),
            AppendStep::LoadMetadata { refresh: true }
        );
        assert_eq!(next_append_step(&unknown, true, true), AppendStep::Fail);
        assert_eq!(next_append_step(&invalid, true, true), AppendStep::Fail);
        assert_eq!(
            next_append_step(&AppendError::Full, true, true),
            AppendStep::WaitForRoom
        );
        assert_eq!(
            next_append_step(&AppendError::Full, false, false),
            AppendStep::Fail
        );
        assert_eq!(
            next_append_step(&AppendError::Closed, false, true),
            AppendStep::Fail
        );
    }

    #[test]
    fn a_record_must_fit_a_request_with_its_batch_header_and_the_buffer() {
        let cfg = ProducerConfig::default()
            .max_request_size(1000 + RECORD_BATCH_OVERHEAD)
            .buffer_memory(2000);
        assert!(record_too_large(1000, &cfg).is_none());
        let e = record_too_large(1001, &cfg).unwrap();
        assert_eq!(e.error_code(), Some(ErrorCode::MESSAGE_TOO_LARGE));
        let small_buffer = cfg.buffer_memory(500);
        assert!(record_too_large(501, &small_buffer).is_some());
        assert!(record_too_large(500, &small_buffer).is_none());
    }

    #[test]
    fn append_failures_become_the_errors_send_reports() {
        let cfg = ProducerConfig::default().buffer_memory(1000);
        let SendFailure::Record(e) = append_failure(
            AppendError::InvalidPartition {
                partition: 3,
                count: 2,
            },
            &cfg,
        ) else {
            panic!("an invalid partition fails the record");
        };
        assert_eq!(e.error_code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
        assert_eq!(e.partition(), Some(3));
        assert!(
            e.to_string()
                .contains("partition 3 does not exist; the topic has 2"),
            "{e}"
        );
        let SendFailure::Record(e) = append_failure(AppendError::Full, &cfg) else {
            panic!("a full buffer fails the record");
        };
        assert_eq!(e.kind(), ErrorKind::BufferFull);
        assert!(e.to_string().contains("(1000 bytes) is full"), "{e}");
        let no_txn = Error::invalid_input("no transaction");
        assert!(matches!(
            append_failure(AppendError::Transaction(no_txn), &cfg),
            SendFailure::NoTransaction(e) if e.kind() == ErrorKind::InvalidInput
        ));
    }

    fn partition(id: i32, leader: Option<i32>) -> (i32, PartitionInfo) {
        let info = PartitionInfo {
            id,
            error: ErrorCode::NONE,
            leader,
            leader_epoch: 0,
            replicas: Vec::new(),
            isr: Vec::new(),
            offline: Vec::new(),
        };
        (id, info)
    }

    fn topic(error: ErrorCode, partitions: Vec<(i32, PartitionInfo)>) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            id: Default::default(),
            error,
            is_internal: false,
            partitions: BTreeMap::from_iter(partitions),
        }
    }

    #[test]
    fn topic_layout_counts_to_the_highest_partition_and_lists_those_with_leaders() {
        let t = topic(
            ErrorCode::NONE,
            vec![
                partition(0, Some(1)),
                partition(1, None),
                partition(3, Some(2)),
            ],
        );
        assert_eq!(
            topic_layout(Some(&t)).unwrap(),
            TopicLayout {
                partition_count: 4,
                with_leader: vec![0, 3]
            }
        );
    }

    #[test]
    fn topic_layout_errors_say_whether_to_wait_for_the_topic() {
        let creating = topic(ErrorCode::NONE, Vec::new());
        let e = topic_layout(Some(&creating)).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
        assert!(e.is_retriable());
        assert_eq!(
            topic_layout(None).unwrap_err().error_code(),
            Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
        );
        let denied = topic(ErrorCode::TOPIC_AUTHORIZATION_FAILED, Vec::new());
        let e = topic_layout(Some(&denied)).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
        assert!(!e.is_retriable());
    }
}
