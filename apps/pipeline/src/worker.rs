//! `process start`: a consumer-group member of the events and `.retry`
//! topics.
//!
//! The main loop takes batches (one partition's records each) from the
//! group consumer and hands each to its partition's lane, a task that
//! handles the records in order and sends the results to the producer
//! (waiting first for a `.retry` record's `x-retry-at`, which delays only
//! that lane). Once every record of a batch is acknowledged the batch is
//! finished; offsets are committed per partition up to the first
//! unfinished batch ([`Watermarks`]), every 100 ms. Records taken but not
//! finished are bounded by `consumer.max_in_flight`.
//!
//! With `consumer.exactly_once`, `process start` runs `exactly_once.rs`
//! instead; it shares the record handling and the accounting here.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use rskafka::{
    client::{
        consumer::{ConsumedRecord, ConsumerConfig, OffsetReset},
        group::{
            assignor::CooperativeStickyAssignor, GroupConfig, GroupConsumer, RebalanceListener,
            TopicPartition,
        },
        producer::{DeliveryFuture, Producer, ProducerRecord},
    },
    record::Record,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::{
    config::Settings,
    metrics::Metrics,
    route::{route, Input, Kind, RetryPolicy, RetryState, Topics, Watermarks},
};

/// Batches of one partition, in offset order.
struct Batch {
    tp: TopicPartition,
    epoch: u64,
    end: i64,
    records: Vec<ConsumedRecord>,
}

/// A batch is over: acknowledged (`ok`), or abandoned at shutdown.
struct Done {
    tp: TopicPartition,
    epoch: u64,
    end: i64,
    len: usize,
    ok: bool,
}

/// Collects revoked and lost partitions for the main loop.
#[derive(Default)]
pub(crate) struct Revocations(Mutex<Vec<TopicPartition>>);

impl Revocations {
    /// The partitions revoked or lost since the last call.
    pub(crate) fn take(&self) -> Vec<TopicPartition> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl RebalanceListener for Revocations {
    fn on_revoked(&self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().extend_from_slice(partitions);
    }
    fn on_lost(&self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().extend_from_slice(partitions);
    }
}

/// What the lanes share.
struct Shared {
    producer: Producer,
    topics: Topics,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    done: mpsc::UnboundedSender<Done>,
    stop: watch::Receiver<bool>,
}

/// The group membership of a worker: the events and `.retry` topics,
/// classic protocol, cooperative-sticky, offset reset earliest, no
/// auto-commit, fetching ahead at most `consumer.max_buffered_bytes`;
/// revoked and lost partitions go to `revocations`.
pub(crate) fn group_config(
    settings: &Settings,
    topics: &Topics,
    revocations: Arc<Revocations>,
) -> GroupConfig {
    let c = &settings.consumer;
    GroupConfig::new(
        c.group_id.clone(),
        [topics.events.clone(), topics.retry.clone()],
    )
    // First: `fetch` replaces what offset_reset and isolation set.
    .fetch(ConsumerConfig::default().max_buffered_bytes(c.max_buffered_bytes))
    .offset_reset(OffsetReset::Earliest)
    .auto_commit(None)
    .assignors(vec![Arc::new(CooperativeStickyAssignor)])
    .session_timeout(Duration::from_millis(c.session_timeout_ms))
    .heartbeat_interval(Duration::from_millis(c.session_timeout_ms / 4))
    .listener(revocations)
}

/// Runs a worker until SIGTERM/SIGINT (or `stop`), then finishes what is in
/// flight, commits, leaves the group.
pub async fn run(
    settings: Settings,
    metrics: Arc<Metrics>,
    stop_signal: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let client = settings.client("process").await?;
    let (producer, topics) = crate::producer_with_topics(&settings, &client).await?;
    metrics.producer_ok.store(true, Ordering::Relaxed);

    let revocations = Arc::new(Revocations::default());
    let c = &settings.consumer;
    let config = group_config(&settings, &topics, revocations.clone());
    let mut consumer = client
        .group_consumer(config)
        .map_err(|e| format!("cannot join group {}: {e}", c.group_id))?;
    tracing::info!(group = %c.group_id, events = %topics.events, retry = %topics.retry, "process worker started");

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        producer: producer.clone(),
        topics: topics.clone(),
        policy: RetryPolicy {
            max_attempts: c.max_attempts,
            backoff: Duration::from_millis(c.retry_backoff_ms),
        },
        metrics: metrics.clone(),
        done: done_tx,
        stop: stop_rx,
    });
    let mut lanes: HashMap<TopicPartition, mpsc::UnboundedSender<Batch>> = HashMap::new();
    let mut marks: Watermarks<TopicPartition> = Watermarks::default();
    let mut to_commit: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut in_flight = 0usize;
    let mut commit_tick = tokio::time::interval(Duration::from_millis(100));
    let mut taken = 0u64;
    let stop_signal = stop_signal;
    tokio::pin!(stop_signal);
    let max_in_flight = c.max_in_flight;
    let batch_size = c.batch_size;
    let mut consumer_error = None;

    loop {
        tokio::select! {
            _ = &mut stop_signal => break,
            Some(d) = done_rx.recv() => {
                in_flight -= d.len;
                finish(&mut marks, &mut to_commit, d);
            }
            _ = commit_tick.tick() => {
                if !to_commit.is_empty() {
                    let commit = consumer.commit_async(std::mem::take(&mut to_commit));
                    let m = metrics.clone();
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = commit.await {
                            m.commit_errors.inc();
                            tracing::warn!("commit failed: {e}");
                        }
                    });
                }
                metrics.in_flight.set(in_flight as i64);
                note_assignment(&metrics, &consumer);
            }
            batch = consumer.next_batch(batch_size), if in_flight < max_in_flight => {
                forget_revoked(&revocations, &mut marks, &mut to_commit);
                let records = match batch {
                    None => break,
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        tracing::warn!("consuming failed: {e}");
                        consumer_error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                consumer_error = None;
                let Some(last) = records.last() else { continue };
                let tp = TopicPartition::new(last.topic.clone(), last.partition);
                let end = last.offset + 1;
                let epoch = marks.start(&tp, end);
                in_flight += records.len();
                taken += records.len() as u64;
                metrics.consumed.inc_by(records.len() as u64);
                let lane = lanes.entry(tp.clone()).or_insert_with(|| spawn_lane(shared.clone()));
                if let Err(mpsc::error::SendError(b)) = lane.send(Batch { tp: tp.clone(), epoch, end, records }) {
                    // The lane ended (it cannot while the worker runs).
                    in_flight -= b.records.len();
                }
            }
        }
    }
    if let Some(e) = consumer_error {
        tracing::warn!("last consumer error: {e}");
    }

    // Shutdown: no more batches; lanes stop waiting for retries and finish
    // what they sent; then the final commit and leaving the group.
    tracing::info!(in_flight, "finishing in-flight events");
    let _ = stop_tx.send(true);
    drop(lanes);
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_flight > 0 {
        match tokio::time::timeout_at(deadline.into(), done_rx.recv()).await {
            Ok(Some(d)) => {
                in_flight -= d.len;
                finish(&mut marks, &mut to_commit, d);
            }
            _ => {
                tracing::warn!(in_flight, "in-flight events not finished in time");
                break;
            }
        }
    }
    forget_revoked(&revocations, &mut marks, &mut to_commit);
    if !to_commit.is_empty() {
        if let Err(e) = consumer.commit(std::mem::take(&mut to_commit)).await {
            metrics.commit_errors.inc();
            tracing::warn!("final commit failed: {e}");
        }
    }
    let closed = consumer.close().await;
    producer.flush().await;
    producer.close().await;
    log_stopped(&metrics, taken);
    closed.map_err(|e| format!("leaving the group failed: {e}"))
}

/// Sets the assignment gauges (partitions may be assigned before any
/// record arrives).
pub(crate) fn note_assignment(metrics: &Metrics, consumer: &GroupConsumer) {
    let assigned = consumer.assignment().len();
    metrics.assigned_partitions.set(assigned as i64);
    metrics.assigned.store(assigned > 0, Ordering::Relaxed);
}

/// The final log line.
pub(crate) fn log_stopped(metrics: &Metrics, taken: u64) {
    let e2e = metrics.e2e_ms.lock().unwrap().summary();
    tracing::info!(
        "process stopped: consumed={taken} processed={} retried={} dead_lettered={} produce_errors={} e2e {e2e}",
        metrics.processed.get(),
        metrics.retried.get(),
        metrics.dead_lettered.get(),
        metrics.produce_errors.get(),
    );
}

fn finish(
    marks: &mut Watermarks<TopicPartition>,
    to_commit: &mut BTreeMap<TopicPartition, i64>,
    d: Done,
) {
    if !d.ok {
        return;
    }
    if let Some(offset) = marks.finish(&d.tp, d.epoch, d.end) {
        to_commit.insert(d.tp, offset);
    }
}

fn forget_revoked(
    revocations: &Revocations,
    marks: &mut Watermarks<TopicPartition>,
    to_commit: &mut BTreeMap<TopicPartition, i64>,
) {
    for tp in revocations.take() {
        marks.forget(&tp);
        to_commit.remove(&tp);
    }
}

/// One partition's lane: handles its batches in order.
fn spawn_lane(shared: Arc<Shared>) -> mpsc::UnboundedSender<Batch> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
    tokio::spawn(async move {
        let mut stop = shared.stop.clone();
        let mut stopping = false;
        while let Some(batch) = rx.recv().await {
            let (tp, epoch, end, len) = (
                batch.tp.clone(),
                batch.epoch,
                batch.end,
                batch.records.len(),
            );
            let sent = if stopping || *stop.borrow() {
                None
            } else {
                send_batch(&shared, batch, &mut stop).await
            };
            match sent {
                Some(sent) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let ok = await_batch(&shared, sent).await;
                        let _ = shared.done.send(Done {
                            tp,
                            epoch,
                            end,
                            len,
                            ok,
                        });
                    });
                }
                None => {
                    stopping = true;
                    let _ = shared.done.send(Done {
                        tp,
                        epoch,
                        end,
                        len,
                        ok: false,
                    });
                }
            }
        }
    });
    tx
}

/// A record sent, and what to do once it is acknowledged.
struct Sent {
    out: Handled,
    delivery: DeliveryFuture,
    sent_at: Instant,
}

/// A record handled: its output record and where it went.
pub(crate) struct Handled {
    pub(crate) record: ProducerRecord,
    pub(crate) kind: Kind,
    /// The event's own timestamp, for the end-to-end latency.
    pub(crate) event_time: Option<OffsetDateTime>,
}

/// The retry state of a record: from its headers on `.retry`, none on the
/// events topic.
pub(crate) fn retry_state(is_retry: bool, r: &ConsumedRecord) -> RetryState {
    if !is_retry {
        return RetryState::default();
    }
    RetryState::from_headers(
        r.record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref())),
    )
}

/// How long until a record's retry is due; `None` if it is due.
pub(crate) fn due_in(state: &RetryState) -> Option<Duration> {
    let at_ms = state.retry_at_ms?;
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    (at_ms > now_ms).then(|| Duration::from_millis((at_ms - now_ms) as u64))
}

/// Validates and handles `r` (timed in the metrics): its output record.
pub(crate) fn handle(
    topics: &Topics,
    policy: RetryPolicy,
    metrics: &Metrics,
    r: &ConsumedRecord,
    state: &RetryState,
) -> Handled {
    let started = Instant::now();
    let out = route(
        topics,
        policy,
        Input {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.record.key.as_deref(),
            value: r.record.value.as_deref(),
        },
        state,
        OffsetDateTime::now_utc(),
    );
    metrics
        .processing_duration
        .observe(started.elapsed().as_secs_f64());
    if let Some(e) = &out.error {
        tracing::debug!(partition = r.partition, offset = r.offset, kind = ?out.kind, "event failed: {e}");
    }
    let record = ProducerRecord::new(
        out.topic,
        Record {
            key: out.key,
            value: Some(out.value),
            headers: out.headers,
            timestamp: OffsetDateTime::now_utc(),
        },
    );
    Handled {
        record,
        kind: out.kind,
        event_time: out.event_time,
    }
}

/// Counts a record of `kind` acknowledged (in exactly-once mode:
/// committed) now, sent at `sent_at`; its end-to-end latency in
/// milliseconds if it went to `.processed`.
pub(crate) fn count_delivered(
    m: &Metrics,
    kind: Kind,
    event_time: Option<OffsetDateTime>,
    sent_at: Instant,
) -> Option<u64> {
    m.producer_ok.store(true, Ordering::Relaxed);
    m.produced.inc();
    m.producer_duration.observe(sent_at.elapsed().as_secs_f64());
    match kind {
        Kind::Processed => {
            m.processed.inc();
            let t = event_time?;
            let ms = (OffsetDateTime::now_utc() - t).whole_milliseconds().max(0) as u64;
            m.end_to_end.observe(ms as f64 / 1000.0);
            Some(ms)
        }
        Kind::Retry => {
            m.retried.inc();
            None
        }
        Kind::DeadLetter => {
            m.dead_lettered.inc();
            None
        }
    }
}

/// Adds end-to-end latencies to the exact percentiles of the summary.
pub(crate) fn record_e2e(m: &Metrics, e2e: Vec<u64>) {
    if !e2e.is_empty() {
        let mut p = m.e2e_ms.lock().unwrap();
        for ms in e2e {
            p.record(ms);
        }
    }
}

/// Handles and sends a batch's records; `None` if shutdown came while
/// waiting for a retry to be due (the batch is abandoned, not committed).
async fn send_batch(
    shared: &Shared,
    batch: Batch,
    stop: &mut watch::Receiver<bool>,
) -> Option<Vec<Sent>> {
    let is_retry = *batch.tp.topic == *shared.topics.retry;
    let mut sent = Vec::with_capacity(batch.records.len());
    for r in batch.records {
        let state = retry_state(is_retry, &r);
        if let Some(wait) = due_in(&state) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
        let out = handle(&shared.topics, shared.policy, &shared.metrics, &r, &state);
        let delivery = loop {
            match shared.producer.send(out.record.clone()).await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::warn!("send failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        sent.push(Sent {
            out,
            delivery,
            sent_at: Instant::now(),
        });
    }
    Some(sent)
}

/// Waits for every record of a batch to be acknowledged, re-sending failed
/// ones (duplicates are allowed, losses are not) until shutdown; true when
/// all were acknowledged.
async fn await_batch(shared: &Shared, sent: Vec<Sent>) -> bool {
    let m = &shared.metrics;
    let mut e2e = Vec::with_capacity(sent.len());
    for s in sent {
        let mut delivery = s.delivery;
        loop {
            match delivery.await {
                Ok(_) => break,
                Err(e) => {
                    m.produce_errors.inc();
                    m.producer_ok.store(false, Ordering::Relaxed);
                    if *shared.stop.borrow() {
                        tracing::warn!("delivery failed at shutdown: {e}");
                        return false;
                    }
                    tracing::warn!(topic = %s.out.record.topic, "delivery failed: {e}; sending again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    delivery = match shared.producer.send(s.out.record.clone()).await {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!("send failed: {e}");
                            return false;
                        }
                    };
                }
            }
        }
        e2e.extend(count_delivered(m, s.out.kind, s.out.event_time, s.sent_at));
    }
    record_e2e(m, e2e);
    true
}
