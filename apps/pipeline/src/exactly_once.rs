//! `process start` with `consumer.exactly_once`: each batch's outputs
//! (`.processed`, `.retry`, `.dlq`) and the offsets after it are written in
//! one transaction, so that under read_committed every event has its output
//! exactly once, whatever crashes or rebalances happen.
//!
//! One transaction at a time: take a batch (the records the consumer has
//! ready, up to `consumer.batch_size`, of one or more partitions), handle
//! its records in order, send their outputs, add the offsets after the
//! batch with the member's group metadata, commit. The metadata is taken
//! when the batch's first records arrive: should the group rebalance while
//! the batch is handled, the coordinator refuses the offsets (KIP-447)
//! instead of committing partitions another member may own by then.
//!
//! A transaction that fails is aborted and the partitions of its batch go
//! back to the group's committed offsets, so its records are handled again.
//! An error the producer cannot recover from (fenced by a newer worker with
//! the same transactional id) ends the worker: it leaves the group and
//! exits 1, for its supervisor to start it again.
//!
//! A `.retry` record that is not due yet is not waited for inside a
//! transaction (that would hold up every partition of the worker): its
//! partition's part of the batch ends before it, the partition is set back
//! to it, and the partition's records are skipped until it is due.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::FutureExt;
use rskafka::{
    client::{
        consumer::ConsumedRecord,
        group::{ConsumerGroupMetadata, GroupConsumer, TopicPartition},
        partition::IsolationLevel,
        producer::Producer,
    },
    error::{Error, ErrorKind},
};

use crate::{
    config::Settings,
    metrics::Metrics,
    route::{RetryPolicy, Topics},
    worker::{
        count_delivered, due_in, group_config, handle, log_stopped, note_assignment, record_e2e,
        retry_state, Handled, Revocations,
    },
};

/// The longest pause when every record taken belongs to a `.retry`
/// partition that is not due.
const IDLE: Duration = Duration::from_millis(100);

/// Commit attempts that time out (the outcome is then open, and asking
/// again settles it) before the transaction counts as failed.
const COMMIT_ATTEMPTS: u32 = 3;

/// The records of one transaction.
#[derive(Default)]
struct Batch {
    records: Vec<ConsumedRecord>,
    /// Per partition, the offset after its last record in the batch.
    offsets: BTreeMap<TopicPartition, i64>,
    /// Per partition, its first record's offset in the batch.
    starts: BTreeMap<TopicPartition, i64>,
}

/// A worker's state between transactions.
struct Worker {
    producer: Producer,
    topics: Topics,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    /// `.retry` partitions set back to a record not due before this time.
    not_before: HashMap<TopicPartition, Instant>,
    /// Records taken and handled (again after an abort).
    taken: u64,
}

/// Runs an exactly-once worker until SIGTERM/SIGINT (or `stop_signal`): the
/// transaction under way completes, then the member leaves the group.
pub async fn run(
    settings: Settings,
    metrics: Arc<Metrics>,
    stop_signal: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let c = &settings.consumer;
    // Validated: exactly_once comes with an id.
    let id = c.transactional_id.clone().unwrap_or_default();
    let client = settings.client("process").await?;
    let topics = crate::pipeline_topics(&settings, &client).await?;
    let producer = client
        .producer(
            crate::producer_config(&settings)
                .transactional_id(id.clone())
                .transaction_timeout(Duration::from_millis(c.transaction_timeout_ms)),
        )
        .map_err(|e| format!("producer: {e}"))?;
    // Fences an earlier run of this worker and aborts the transaction it
    // left open, before this one reads what that transaction held.
    producer
        .init_transactions()
        .await
        .map_err(|e| format!("initializing transactions as {id}: {e}"))?;
    metrics.producer_ok.store(true, Ordering::Relaxed);

    let revocations = Arc::new(Revocations::default());
    let config = group_config(&settings, &topics, revocations.clone())
        .isolation(IsolationLevel::ReadCommitted);
    let mut consumer = client
        .group_consumer(config)
        .map_err(|e| format!("cannot join group {}: {e}", c.group_id))?;
    tracing::info!(group = %c.group_id, transactional_id = %id, events = %topics.events, retry = %topics.retry, "process worker started (exactly once)");

    let mut worker = Worker {
        producer: producer.clone(),
        topics,
        policy: RetryPolicy {
            max_attempts: c.max_attempts,
            backoff: Duration::from_millis(c.retry_backoff_ms),
        },
        metrics: metrics.clone(),
        not_before: HashMap::new(),
        taken: 0,
    };
    let batch_size = c.batch_size;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(stop_signal);
    let mut fatal = None;
    loop {
        let first = tokio::select! {
            _ = &mut stop_signal => break,
            _ = tick.tick() => {
                note_assignment(&metrics, &consumer);
                for tp in revocations.take() {
                    worker.not_before.remove(&tp);
                }
                continue;
            }
            first = consumer.next_batch(batch_size) => first,
        };
        let first = match first {
            None => break,
            Some(Ok(records)) => records,
            Some(Err(e)) => {
                tracing::warn!("consuming failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let group = consumer.group_metadata();
        let batch = worker.take(&mut consumer, first, batch_size);
        if batch.records.is_empty() {
            // Only .retry records not due yet.
            let pause = worker.pause();
            tokio::select! {
                _ = &mut stop_signal => break,
                _ = tokio::time::sleep(pause) => continue,
            }
        }
        metrics.in_flight.set(batch.records.len() as i64);
        let done = worker.transact(&batch, &group).await;
        metrics.in_flight.set(0);
        match done {
            Ok(()) => {}
            Err(e) if e.is_fatal() => {
                fatal = Some(e);
                break;
            }
            Err(e) => {
                metrics.commit_errors.inc();
                metrics.producer_ok.store(false, Ordering::Relaxed);
                tracing::warn!(
                    records = batch.records.len(),
                    "transaction failed, aborting it; its records are handled again: {e}"
                );
                if let Err(e) = worker.producer.abort_transaction().await {
                    // The transaction's state is unknown: a new run's
                    // initialization settles it.
                    fatal = Some(e);
                    break;
                }
                worker.rewind(&mut consumer, &batch).await;
            }
        }
    }

    // No transaction is open here: each one was committed or aborted.
    let closed = consumer.close().await;
    producer.close().await;
    log_stopped(&metrics, worker.taken);
    if let Some(e) = fatal {
        return Err(format!(
            "transactional id {id}: {e}; stopping (another worker with this id took over, \
             or this one may not use it)"
        ));
    }
    closed.map_err(|e| format!("leaving the group failed: {e}"))
}

impl Worker {
    /// `first` and the records the consumer has ready besides, up to `max`
    /// in all, less those of `.retry` partitions that are not due.
    fn take(
        &mut self,
        consumer: &mut GroupConsumer,
        first: Vec<ConsumedRecord>,
        max: usize,
    ) -> Batch {
        let mut batch = Batch::default();
        let mut taken = 0;
        let mut chunk = first;
        loop {
            taken += chunk.len();
            self.add(consumer, chunk, &mut batch);
            if taken >= max {
                break;
            }
            chunk = match consumer.next_batch(max - taken).now_or_never() {
                Some(Some(Ok(chunk))) => chunk,
                Some(Some(Err(e))) => {
                    tracing::warn!("consuming failed: {e}");
                    break;
                }
                // Nothing more ready, or the member stopped (the main loop
                // sees that next).
                Some(None) | None => break,
            };
        }
        let n = batch.records.len() as u64;
        self.taken += n;
        self.metrics.consumed.inc_by(n);
        batch
    }

    /// Adds a chunk of one partition's records to `batch`, up to the first
    /// `.retry` record that is not due; the partition is set back to that
    /// record.
    fn add(&mut self, consumer: &mut GroupConsumer, chunk: Vec<ConsumedRecord>, batch: &mut Batch) {
        let Some(head) = chunk.first() else { return };
        let tp = TopicPartition::new(head.topic.clone(), head.partition);
        let first = head.offset;
        let mut keep = chunk.len();
        let mut resume = None;
        if *head.topic == *self.topics.retry {
            let now = Instant::now();
            match self.not_before.get(&tp) {
                Some(&until) if now < until => {
                    keep = 0;
                    resume = Some((first, until));
                }
                _ => {
                    self.not_before.remove(&tp);
                    if let Some((i, wait)) = chunk
                        .iter()
                        .enumerate()
                        .find_map(|(i, r)| due_in(&retry_state(true, r)).map(|w| (i, w)))
                    {
                        keep = i;
                        resume = Some((chunk[i].offset, now + wait));
                    }
                }
            }
        }
        if let Some((offset, until)) = resume {
            // Fails only for a partition revoked meanwhile: its new owner
            // starts from the committed offset anyway.
            if consumer.seek(&tp, offset).is_ok() {
                tracing::debug!(%tp, offset, "retry not due yet: partition set back to it");
                self.not_before.insert(tp.clone(), until);
            }
        }
        let mut chunk = chunk;
        chunk.truncate(keep);
        if let Some(last) = chunk.last() {
            // Past the markers and aborted records that follow the last
            // record, if the consumer skipped them: a drained partition
            // then has no lag.
            let next = consumer.position(&tp).unwrap_or(0).max(last.offset + 1);
            batch.offsets.insert(tp.clone(), next);
            batch.starts.entry(tp).or_insert(first);
            batch.records.extend(chunk);
        }
    }

    /// How long to pause when nothing but records not due was taken.
    fn pause(&self) -> Duration {
        let now = Instant::now();
        self.not_before
            .values()
            .map(|until| until.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE)
            .min(IDLE)
    }

    /// Handles the batch's records in order, sends their outputs, adds the
    /// offsets after them and commits, all in one transaction.
    async fn transact(&self, batch: &Batch, group: &ConsumerGroupMetadata) -> Result<(), Error> {
        self.producer.begin_transaction()?;
        let mut sent = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            let state = retry_state(*r.topic == *self.topics.retry, r);
            let Handled {
                record,
                kind,
                event_time,
            } = handle(&self.topics, self.policy, &self.metrics, r, &state);
            // The commit waits for the deliveries.
            self.producer.send(record).await?;
            sent.push((kind, event_time, Instant::now()));
        }
        self.producer
            .send_offsets_to_transaction(batch.offsets.clone(), group)
            .await?;
        let mut attempt = 1;
        loop {
            match self.producer.commit_transaction().await {
                Err(e) if e.kind() == ErrorKind::Timeout && attempt < COMMIT_ATTEMPTS => {
                    attempt += 1;
                }
                committed => break committed?,
            }
        }
        let e2e = sent
            .into_iter()
            .filter_map(|(kind, event_time, sent_at)| {
                count_delivered(&self.metrics, kind, event_time, sent_at)
            })
            .collect();
        record_e2e(&self.metrics, e2e);
        Ok(())
    }

    /// After an abort: sets the batch's partitions back to the group's
    /// committed offsets (the batch's first offsets where the group has
    /// none, or they cannot be fetched: each batch starts where the
    /// previous commit left its partitions).
    async fn rewind(&mut self, consumer: &mut GroupConsumer, batch: &Batch) {
        let owned: Vec<TopicPartition> = consumer
            .assignment()
            .into_iter()
            .filter(|tp| batch.starts.contains_key(tp))
            .collect();
        if owned.is_empty() {
            return;
        }
        let committed = consumer.committed(&owned).await.unwrap_or_else(|e| {
            tracing::warn!("fetching committed offsets failed, using the batch's: {e}");
            BTreeMap::new()
        });
        for tp in owned {
            let offset = match committed.get(&tp) {
                Some(Some(c)) => c.offset,
                _ => batch.starts[&tp],
            };
            self.not_before.remove(&tp);
            if let Err(e) = consumer.seek(&tp, offset) {
                tracing::warn!(%tp, offset, "seek after an abort failed: {e}");
            }
        }
    }
}
