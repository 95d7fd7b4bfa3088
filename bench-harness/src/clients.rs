//! The workloads, once per client. Each function runs inside a child
//! process and returns what it measured.

use std::time::{Duration, Instant};

use crate::{payload, percentiles, CommitEvery, Job, Measured};

/// The Rust clients all get the same runtime: two worker threads, as many
/// as the machine has cores.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// How long any one run may take before it is abandoned.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// When the `i`-th record of a fixed-rate run is due.
fn due(start: Instant, i: u64, rate: u64) -> Instant {
    start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate.max(1))
}

/// Blocks the thread until `at`: precise to tens of microseconds, unlike
/// tokio's timer, which ticks in whole milliseconds.
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Yields once for each of `count` records as it falls due, for upstream
/// rskafka's fixed-rate runs (its produce futures must be polled by the
/// sending task, so it cannot send from a sleeping thread as the others
/// do). Paced by a thread with `std::thread::sleep`: tokio's timer ticks in
/// whole milliseconds and would release the records in bursts of ten,
/// which shifts the latency distribution (the first burst of every batch
/// waits out the whole linger). The hand-over costs a wake-up per record,
/// which its CPU figure for the fixed-rate run includes.
fn pacer(start: Instant, count: u64, rate: u64) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for i in 0..count {
            sleep_until(due(start, i, rate));
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// A transactional producer as [`transactions`] drives it.
trait Transactional {
    fn begin(&self) -> Result<(), String>;
    /// Sends one record to `partition`; it need not be delivered yet.
    async fn send(&self, partition: i32) -> Result<(), String>;
    /// Delivers the open transaction's records and commits it.
    async fn commit(&self) -> Result<(), String>;
}

/// Sends `job.count` records flat out in transactions, to the topic's
/// partitions in turn, committing each transaction as `job.commit` says
/// (and the last one, however short). The sending stops while a commit
/// runs, as in an application that commits from its sending loop. Records
/// count once their transaction committed; the time runs from the first
/// `begin` to the last commit's end. p50/p99 are of the commits' times.
async fn transactions(p: &impl Transactional, job: &Job) -> Result<Measured, String> {
    let every = job.commit.unwrap_or(CommitEvery::Records(job.count.max(1)));
    let mut commit_us = Vec::new();
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < job.count {
        if start.elapsed() > RUN_TIMEOUT {
            return Err(format!("timed out after {sent} records"));
        }
        p.begin()?;
        let began = Instant::now();
        let mut in_txn = 0u64;
        while sent < job.count && !(in_txn > 0 && every.due(in_txn, began)) {
            p.send((sent % job.partitions.max(1) as u64) as i32).await?;
            sent += 1;
            in_txn += 1;
        }
        let t = Instant::now();
        p.commit().await?;
        commit_us.push(t.elapsed().as_micros() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let commits = commit_us.len() as u64;
    let (p50, p99) = percentiles(&mut commit_us);
    Ok(Measured {
        records: sent,
        bytes: sent * job.size as u64,
        secs,
        p50_us: p50,
        p99_us: p99,
        commits,
    })
}

/// A transactional id no earlier run used: fencing or recovering another
/// run's producer is not what is measured.
fn transactional_id(job: &Job) -> String {
    format!("{}-txn", job.topic)
}

/// This crate: [`rskafka::client::producer::Producer`] and
/// [`rskafka::client::consumer::Consumer`].
pub mod ours {
    use super::*;
    use bytes::Bytes;
    use rskafka::{
        client::{
            consumer::{ConsumerConfig, StartOffset},
            producer::{Acks, Compression, Producer, ProducerConfig},
            ClientBuilder,
        },
        record::Record,
    };
    use time::OffsetDateTime;

    /// Runs `f` with a client of `bootstrap`, on a runtime of its own.
    fn with_client<T>(
        bootstrap: &str,
        f: impl AsyncFnOnce(rskafka::client::Client) -> Result<T, String>,
    ) -> Result<T, String> {
        with_builder(ClientBuilder::new(vec![bootstrap.to_owned()]), f)
    }

    fn with_builder<T>(
        builder: ClientBuilder,
        f: impl AsyncFnOnce(rskafka::client::Client) -> Result<T, String>,
    ) -> Result<T, String> {
        runtime()?.block_on(async {
            let c = builder.build().await.map_err(|e| e.to_string())?;
            f(c).await
        })
    }

    /// Creates a topic (the harness's setup, not measured).
    pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
        with_client(bootstrap, async |c| {
            c.controller_client()
                .map_err(|e| e.to_string())?
                .create_topic(topic, partitions, 1, 30_000)
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// Deletes a topic the harness made.
    pub fn delete_topic(bootstrap: &str, topic: &str) -> Result<(), String> {
        with_client(bootstrap, async |c| {
            c.controller_client()
                .map_err(|e| e.to_string())?
                .delete_topic(topic, 30_000)
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// Produces `job.count` records; at `job.rate` per second if non-zero,
    /// timing each from `send` to its ack.
    pub fn produce(job: &Job) -> Result<Measured, String> {
        with_client(&job.bootstrap, async |c| {
            let compression = match job.compression.as_str() {
                "lz4" => Compression::Lz4,
                _ => Compression::None,
            };
            let producer = c
                .producer(
                    ProducerConfig::default()
                        .linger(Duration::from_millis(5))
                        .acks(Acks::All)
                        .compression(compression),
                )
                .map_err(|e| e.to_string())?;
            let value = Bytes::from(payload(job.size));
            let record = || Record {
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
                timestamp: OffsetDateTime::now_utc(),
            };
            let (acked, errors, mut lat, start, end) = if job.rate > 0 {
                produce_timed(&producer, job, record).await?
            } else {
                produce_flat_out(&producer, job, record).await?
            };
            producer.close().await;
            if errors > 0 {
                return Err(format!("{errors} deliveries failed"));
            }
            let (p50, p99) = percentiles(&mut lat);
            Ok(Measured {
                records: acked,
                bytes: acked * job.size as u64,
                secs: (end - start).as_secs_f64(),
                p50_us: p50,
                p99_us: p99,
                commits: 0,
            })
        })
    }

    /// Acknowledged and failed deliveries, latencies in microseconds, and
    /// the start and end of the run.
    type Deliveries = (u64, u64, Vec<u64>, Instant, Instant);

    /// Sends as fast as the producer takes records. The delivery futures
    /// wait in a window in the sending task and are awaited oldest first
    /// once it is full (by then they are mostly resolved), as an
    /// application bounding its in-flight records would do it: no second
    /// task and no channel per record.
    async fn produce_flat_out(
        producer: &Producer,
        job: &Job,
        record: impl Fn() -> Record,
    ) -> Result<Deliveries, String> {
        const WINDOW: usize = 65_536;
        let mut window = std::collections::VecDeque::with_capacity(WINDOW);
        let (mut acked, mut errors) = (0u64, 0u64);
        let mut settle = |r: Result<_, _>| match r {
            Ok(_) => acked += 1,
            Err(_) => errors += 1,
        };
        let start = Instant::now();
        tokio::time::timeout(RUN_TIMEOUT, async {
            for _ in 0..job.count {
                if window.len() == WINDOW {
                    if let Some(oldest) = window.pop_front() {
                        settle(oldest.await);
                    }
                }
                let fut = producer
                    .send_to(&job.topic, Some(0), record())
                    .await
                    .map_err(|e| e.to_string())?;
                window.push_back(fut);
            }
            for fut in window {
                settle(fut.await);
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|_| "timed out waiting for acks".to_owned())??;
        Ok((acked, errors, Vec::new(), start, Instant::now()))
    }

    /// Sends at `job.rate` records per second; a second task awaits each
    /// delivery as it resolves, so its latency is taken when the ack comes.
    /// The sends are made from a thread of their own that sleeps until
    /// each is due, as the librdkafka run makes them: tokio's timer ticks
    /// in whole milliseconds and would release the records in bursts of
    /// ten, and handing each record from a pacing thread to a task would
    /// add a wake-up per record to the CPU figure.
    async fn produce_timed(
        producer: &Producer,
        job: &Job,
        record: impl Fn() -> Record + Sync,
    ) -> Result<Deliveries, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            Instant,
            rskafka::client::producer::DeliveryFuture,
        )>();
        let count = job.count;
        let waiter = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count as usize);
            let (mut acked, mut errors) = (0u64, 0u64);
            while let Some((sent, fut)) = rx.recv().await {
                match fut.await {
                    Ok(_) => acked += 1,
                    Err(_) => errors += 1,
                }
                lat.push(sent.elapsed().as_micros() as u64);
            }
            (acked, errors, lat, Instant::now())
        });
        let handle = tokio::runtime::Handle::current();
        let start = Instant::now();
        // The runtime's workers run its tasks; the thread blocked here only
        // waits for the sending thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..job.count {
                    super::sleep_until(due(start, i, job.rate));
                    let rec = record();
                    let sent = Instant::now();
                    let fut = handle
                        .block_on(producer.send_to(&job.topic, Some(0), rec))
                        .map_err(|e| e.to_string())?;
                    tx.send((sent, fut)).map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
            .join()
            .map_err(|_| "the sending thread panicked".to_owned())?
        })?;
        drop(tx);
        let (acked, errors, lat, end) = tokio::time::timeout(RUN_TIMEOUT, waiter)
            .await
            .map_err(|_| "timed out waiting for acks".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok((acked, errors, lat, start, end))
    }

    /// A transactional [`Producer`] with the produce runs' settings.
    struct Txn<'a> {
        producer: Producer,
        job: &'a Job,
        value: Bytes,
    }

    impl super::Transactional for Txn<'_> {
        fn begin(&self) -> Result<(), String> {
            self.producer.begin_transaction().map_err(|e| e.to_string())
        }

        /// The delivery future is dropped: the commit reports a failed
        /// record, as a transactional application relies on it to.
        async fn send(&self, partition: i32) -> Result<(), String> {
            let rec = Record {
                key: None,
                value: Some(self.value.clone()),
                headers: Vec::new(),
                timestamp: OffsetDateTime::now_utc(),
            };
            self.producer
                .send_to(&self.job.topic, Some(partition), rec)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }

        async fn commit(&self) -> Result<(), String> {
            self.producer
                .commit_transaction()
                .await
                .map_err(|e| e.to_string())
        }
    }

    /// Produces `job.count` records in transactions (see
    /// [`super::transactions`]).
    pub fn produce_txn(job: &Job, before_kip890: bool) -> Result<Measured, String> {
        let mut builder = ClientBuilder::new(vec![job.bootstrap.clone()]);
        if before_kip890 {
            builder = builder.max_api_version(rskafka::ApiKey::END_TXN, 4);
        }
        with_builder(builder, async |c| {
            let producer = c
                .producer(
                    ProducerConfig::default()
                        .linger(Duration::from_millis(5))
                        .acks(Acks::All)
                        .transactional_id(super::transactional_id(job)),
                )
                .map_err(|e| e.to_string())?;
            producer
                .init_transactions()
                .await
                .map_err(|e| format!("init_transactions: {e}"))?;
            let txn = Txn {
                producer,
                job,
                value: Bytes::from(payload(job.size)),
            };
            let m = super::transactions(&txn, job).await?;
            txn.producer.close().await;
            Ok(m)
        })
    }

    /// Reads `job.count` records from the start of partition 0.
    pub fn consume(job: &Job) -> Result<Measured, String> {
        with_client(&job.bootstrap, async |c| {
            let mut consumer = c
                .consumer(ConsumerConfig::default().assign(
                    job.topic.clone(),
                    0,
                    StartOffset::Earliest,
                ))
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            let deadline = start + RUN_TIMEOUT;
            let (mut records, mut bytes) = (0u64, 0u64);
            while records < job.count {
                let batch = tokio::time::timeout_at(deadline.into(), consumer.next_batch())
                    .await
                    .map_err(|_| format!("timed out after {records} records"))?
                    .map_err(|e| e.to_string())?;
                for r in &batch {
                    records += 1;
                    bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
                }
            }
            Ok(Measured {
                records,
                bytes,
                secs: start.elapsed().as_secs_f64(),
                p50_us: None,
                p99_us: None,
                commits: 0,
            })
        })
    }
}

/// librdkafka through `rdkafka`: a `ThreadedProducer` with a delivery
/// callback (its fastest producing path) and a `BaseConsumer`.
pub mod rdk {
    use super::*;
    use rdkafka::{
        bindings,
        config::ClientConfig,
        consumer::{BaseConsumer, Consumer},
        error::{KafkaError, RDKafkaErrorCode},
        message::Message,
        producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
        ClientContext, Offset, TopicPartitionList,
    };
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    };

    /// Counts acks; in latency runs the opaque is the send time in
    /// nanoseconds since `base`, so no allocation per record.
    struct Ctx {
        base: Instant,
        acked: AtomicU64,
        errors: AtomicU64,
        latency: bool,
        lat: Mutex<Vec<u64>>,
        last_ack: Mutex<Option<Instant>>,
    }

    impl ClientContext for Ctx {}

    impl ProducerContext for Ctx {
        type DeliveryOpaque = usize;
        fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
            if result.is_ok() {
                self.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            if self.latency {
                let us = (now - self.base).as_nanos() as u64 / 1000 - sent_ns as u64 / 1000;
                if let Ok(mut l) = self.lat.lock() {
                    l.push(us);
                }
            }
            if let Ok(mut l) = self.last_ack.lock() {
                *l = Some(now);
            }
        }
    }

    impl Ctx {
        fn new(latency: bool, count: u64) -> Self {
            Ctx {
                base: Instant::now(),
                acked: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                latency,
                lat: Mutex::new(Vec::with_capacity(if latency { count as usize } else { 0 })),
                last_ack: Mutex::new(None),
            }
        }
    }

    /// The produce runs' settings: acks=all, linger 5 ms, `job`'s
    /// compression.
    fn producer_config(job: &Job) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &job.bootstrap)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", &job.compression);
        c
    }

    /// Sends `rec`, waiting while the local queue is full (until
    /// [`RUN_TIMEOUT`] after `start`).
    fn send_waiting(
        producer: &ThreadedProducer<Ctx>,
        mut rec: BaseRecord<'_, (), [u8], usize>,
        start: Instant,
    ) -> Result<(), String> {
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: let deliveries drain it.
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                    if start.elapsed() > RUN_TIMEOUT {
                        return Err("queue stayed full".into());
                    }
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }

    /// Produces `job.count` records (see [`super::ours::produce`]).
    pub fn produce(job: &Job) -> Result<Measured, String> {
        let latency = job.rate > 0;
        let ctx = Ctx::new(latency, job.count);
        let base = ctx.base;
        let producer: ThreadedProducer<Ctx> = producer_config(job)
            .create_with_context(ctx)
            .map_err(|e| e.to_string())?;
        let value = payload(job.size);
        let start = Instant::now();
        for i in 0..job.count {
            if latency {
                super::sleep_until(due(start, i, job.rate));
            }
            let sent_ns = (Instant::now() - base).as_nanos() as usize;
            let rec = BaseRecord::<(), [u8], usize>::with_opaque_to(&job.topic, sent_ns)
                .payload(&value[..])
                .partition(0);
            send_waiting(&producer, rec, start)?;
        }
        producer
            .flush(RUN_TIMEOUT)
            .map_err(|e| format!("flush: {e}"))?;
        let ctx = producer.context();
        let acked = ctx.acked.load(Ordering::Relaxed);
        let errors = ctx.errors.load(Ordering::Relaxed);
        if errors > 0 {
            return Err(format!("{errors} deliveries failed"));
        }
        let end = ctx
            .last_ack
            .lock()
            .ok()
            .and_then(|l| *l)
            .unwrap_or_else(Instant::now);
        let mut lat = ctx.lat.lock().map(|l| l.clone()).unwrap_or_default();
        let (p50, p99) = percentiles(&mut lat);
        Ok(Measured {
            records: acked,
            bytes: acked * job.size as u64,
            secs: (end - start).as_secs_f64(),
            p50_us: if latency { p50 } else { None },
            p99_us: if latency { p99 } else { None },
            commits: 0,
        })
    }

    /// A transactional `ThreadedProducer` with the produce runs' settings.
    struct Txn<'a> {
        producer: ThreadedProducer<Ctx>,
        job: &'a Job,
        value: Vec<u8>,
        start: Instant,
        /// Commit through the crate's `Producer::commit_transaction`.
        crate_commit: bool,
    }

    impl super::Transactional for Txn<'_> {
        fn begin(&self) -> Result<(), String> {
            self.producer.begin_transaction().map_err(|e| e.to_string())
        }

        async fn send(&self, partition: i32) -> Result<(), String> {
            let rec = BaseRecord::<(), [u8], usize>::with_opaque_to(&self.job.topic, 0)
                .payload(&self.value[..])
                .partition(partition);
            send_waiting(&self.producer, rec, self.start)
        }

        /// Blocks the thread. librdkafka's `rd_kafka_commit_transaction`
        /// flushes (waiting until the polling thread has served the
        /// delivery reports), then ends the transaction. The crate's
        /// `commit_transaction` first flushes on its own, polling for
        /// 100 ms at a time (`BaseProducer::poll` returns at its deadline
        /// only), so that each commit takes 100 ms at least.
        async fn commit(&self) -> Result<(), String> {
            if self.crate_commit {
                return self
                    .producer
                    .commit_transaction(RUN_TIMEOUT)
                    .map_err(|e| e.to_string());
            }
            let rk = self.producer.client().native_ptr();
            // SAFETY: a live producer handle; the returned error, if any,
            // is ours to read and destroy.
            unsafe {
                let err = bindings::rd_kafka_commit_transaction(rk, RUN_TIMEOUT.as_millis() as i32);
                if err.is_null() {
                    return Ok(());
                }
                let msg = std::ffi::CStr::from_ptr(bindings::rd_kafka_error_string(err))
                    .to_string_lossy()
                    .into_owned();
                bindings::rd_kafka_error_destroy(err);
                Err(msg)
            }
        }
    }

    /// Produces `job.count` records in transactions (see
    /// [`super::transactions`]), driven on this thread: every call blocks
    /// or returns at once, so the future needs no runtime. `crate_commit`:
    /// commit with the crate's `commit_transaction` rather than
    /// librdkafka's own (see [`Txn::commit`]).
    pub fn produce_txn(job: &Job, crate_commit: bool) -> Result<Measured, String> {
        let producer: ThreadedProducer<Ctx> = producer_config(job)
            .set("transactional.id", super::transactional_id(job))
            .create_with_context(Ctx::new(false, 0))
            .map_err(|e| e.to_string())?;
        producer
            .init_transactions(Duration::from_secs(60))
            .map_err(|e| format!("init_transactions: {e}"))?;
        let txn = Txn {
            producer,
            job,
            value: payload(job.size),
            start: Instant::now(),
            crate_commit,
        };
        let m = futures::executor::block_on(super::transactions(&txn, job))?;
        let errors = txn.producer.context().errors.load(Ordering::Relaxed);
        if errors > 0 {
            return Err(format!("{errors} deliveries failed"));
        }
        Ok(m)
    }

    /// Reads `job.count` records from the start of partition 0, checking
    /// batch CRCs if `check_crcs` (librdkafka's default is not to).
    pub fn consume(job: &Job, check_crcs: bool) -> Result<Measured, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &job.bootstrap)
            .set("group.id", "bench-harness")
            .set("check.crcs", if check_crcs { "true" } else { "false" })
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&job.topic, 0, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        while records < job.count {
            if start.elapsed() > RUN_TIMEOUT {
                return Err(format!("timed out after {records} records"));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    records += 1;
                    bytes += m.payload().map_or(0, |p| p.len() as u64);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => {}
            }
        }
        Ok(Measured {
            records,
            bytes,
            secs: start.elapsed().as_secs_f64(),
            p50_us: None,
            p99_us: None,
            commits: 0,
        })
    }
}

/// Upstream rskafka 0.6: `BatchProducer` (its lingering aggregator over
/// `PartitionClient::produce`) and `PartitionClient::fetch_records`.
pub mod upstream {
    use super::*;
    use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
    use rskafka_upstream::{
        client::{
            partition::{Compression, UnknownTopicHandling},
            producer::{aggregator::RecordAggregator, BatchProducerBuilder},
            ClientBuilder,
        },
        record::Record,
    };
    use std::{collections::BTreeMap, sync::Arc};

    /// Records in flight at once: bounds memory like the others' buffers.
    const WINDOW: usize = 100_000;

    /// Produces `job.count` records (see [`super::ours::produce`]).
    pub fn produce(job: &Job) -> Result<Measured, String> {
        let rt = runtime()?;
        rt.block_on(async {
            let c = ClientBuilder::new(vec![job.bootstrap.clone()])
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let pc = c
                .partition_client(job.topic.clone(), 0, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| e.to_string())?;
            let compression = match job.compression.as_str() {
                "lz4" => Compression::Lz4,
                _ => Compression::NoCompression,
            };
            let producer = BatchProducerBuilder::new(Arc::new(pc))
                .with_linger(Duration::from_millis(5))
                .with_compression(compression)
                .build(RecordAggregator::new(900_000));
            let value = payload(job.size);
            let latency = job.rate > 0;
            let mut lat = Vec::new();
            let mut inflight = FuturesUnordered::new();
            let (mut acked, mut errors) = (0u64, 0u64);
            let start = Instant::now();
            let deadline = start + RUN_TIMEOUT;
            let mut i = 0u64;
            // Records released by the pacer so far.
            let mut released = 0u64;
            let mut ticks = pacer(start, if latency { job.count } else { 0 }, job.rate);
            let mut first_error = None;
            let mut handle = |r: (Instant, Result<_, _>), lat: &mut Vec<u64>| {
                match r.1 {
                    Ok(_) => acked += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e}"));
                    }
                }
                if latency {
                    lat.push(r.0.elapsed().as_micros() as u64);
                }
            };
            loop {
                if Instant::now() > deadline {
                    return Err("timed out".into());
                }
                let can_send = i < job.count && inflight.len() < WINDOW;
                if can_send && (!latency || i < released) {
                    let rec = Record {
                        key: None,
                        value: Some(value.clone()),
                        headers: BTreeMap::new(),
                        timestamp: chrono::Utc::now(),
                    };
                    let sent = Instant::now();
                    let p = &producer;
                    inflight.push(async move { (sent, p.produce(rec).await) });
                    i += 1;
                    // Its futures only make progress when polled: poll them
                    // every so often, as a busy application would.
                    if i.is_multiple_of(1024) {
                        while let Some(Some(r)) = inflight.next().now_or_never() {
                            handle(r, &mut lat);
                        }
                    }
                    continue;
                }
                if i >= job.count && inflight.is_empty() {
                    break;
                }
                tokio::select! {
                    Some(r) = inflight.next(), if !inflight.is_empty() => handle(r, &mut lat),
                    Some(_) = ticks.recv(), if latency && released < job.count => released += 1,
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            let end = Instant::now();
            if errors > 0 {
                return Err(format!(
                    "{errors} deliveries failed, the first with: {}",
                    first_error.unwrap_or_default()
                ));
            }
            let (p50, p99) = percentiles(&mut lat);
            Ok(Measured {
                records: acked,
                bytes: acked * job.size as u64,
                secs: (end - start).as_secs_f64(),
                p50_us: if latency { p50 } else { None },
                p99_us: if latency { p99 } else { None },
                commits: 0,
            })
        })
    }

    /// Reads `job.count` records from the start of partition 0, 1 MiB per
    /// fetch (the others' per-partition default).
    pub fn consume(job: &Job) -> Result<Measured, String> {
        let rt = runtime()?;
        rt.block_on(async {
            let c = ClientBuilder::new(vec![job.bootstrap.clone()])
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let pc = c
                .partition_client(job.topic.clone(), 0, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            let (mut records, mut bytes, mut offset) = (0u64, 0u64, 0i64);
            while records < job.count {
                if start.elapsed() > RUN_TIMEOUT {
                    return Err(format!("timed out after {records} records"));
                }
                let (recs, _hw) = tokio::time::timeout(
                    Duration::from_secs(30),
                    pc.fetch_records(offset, 1..1_048_576, 500),
                )
                .await
                .map_err(|_| "fetch timed out".to_owned())?
                .map_err(|e| e.to_string())?;
                for r in &recs {
                    records += 1;
                    bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
                    offset = r.offset + 1;
                }
            }
            Ok(Measured {
                records,
                bytes,
                secs: start.elapsed().as_secs_f64(),
                p50_us: None,
                p99_us: None,
                commits: 0,
            })
        })
    }
}
