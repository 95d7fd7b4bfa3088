//! A member of `CONSUMER_GROUP` reading `KAFKA_TOPIC` from the earliest
//! offset: logs each message with its latency, commits after processing
//! each batch, and logs a summary per interval. Several receivers share
//! the partitions. SIGINT/SIGTERM: commits, leaves the group, exits 0.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rskafka::client::{
    consumer::OffsetReset,
    group::{GroupConfig, TopicPartition},
};
use services::{shutdown_signal, Latencies, Message, Settings};
use time::OffsetDateTime;

/// Records handled per batch at most.
const BATCH: usize = 500;

#[tokio::main]
async fn main() {
    services::main(run).await
}

async fn run(settings: Settings) -> Result<(), String> {
    let client = settings.client("rust-receiver").await?;
    let config = GroupConfig::new(settings.group.clone(), [settings.topic.clone()])
        .offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_secs(2));
    let mut consumer = client
        .group_consumer(config)
        .map_err(|e| format!("cannot join group {}: {e}", settings.group))?;
    tracing::info!(
        topic = %settings.topic,
        group = %settings.group,
        "receiver started"
    );

    let mut total = 0u64;
    let mut invalid = 0u64;
    let mut latencies = Latencies::default();
    let mut summary = tokio::time::interval(settings.summary_interval);
    summary.tick().await;
    let mut summary_from = (Instant::now(), 0u64);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let batch = tokio::select! {
            _ = &mut shutdown => break,
            _ = summary.tick() => {
                let (at, before) = summary_from;
                let secs = at.elapsed().as_secs_f64().max(1e-3);
                let (p50, p99) = latencies.take_percentiles().unwrap_or((0, 0));
                tracing::info!(
                    "Summary: received {} ({:.1}/s), latency p50={p50}ms p99={p99}ms, total_received={total}, invalid={invalid}",
                    total - before,
                    (total - before) as f64 / secs,
                );
                summary_from = (Instant::now(), total);
                continue;
            }
            batch = consumer.next_batch(BATCH) => batch,
        };
        let batch = match batch {
            None => break,
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                tracing::warn!("consuming failed: {e}");
                continue;
            }
        };
        let now = OffsetDateTime::now_utc();
        let mut next_offsets: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &batch {
            next_offsets.insert(
                TopicPartition::new(r.topic.clone(), r.partition),
                r.offset + 1,
            );
            let parsed = r
                .record
                .value
                .as_deref()
                .map(serde_json::from_slice::<Message>);
            match parsed {
                Some(Ok(m)) => {
                    total += 1;
                    let latency = m.latency_ms(now).unwrap_or(0);
                    latencies.record(latency);
                    tracing::info!(
                        "Received message #{}: id={}, content='{}', latency={latency}ms, total_received={total}, partition={}, offset={}, producer={}",
                        m.counter,
                        m.id,
                        m.content,
                        r.partition,
                        r.offset,
                        m.producer_id.as_deref().unwrap_or("-"),
                    );
                }
                _ => {
                    invalid += 1;
                    tracing::warn!(
                        partition = r.partition,
                        offset = r.offset,
                        "skipping a record that is not a sender message"
                    );
                }
            }
        }
        // Processed: commit, in order with any earlier commit; a partition
        // lost meanwhile is refused by the consumer rather than committed.
        let commit = consumer.commit_async(next_offsets);
        tokio::spawn(async move {
            if let Ok(Err(e)) = commit.await {
                tracing::warn!("commit failed: {e}");
            }
        });
    }
    let result = consumer.close().await;
    tracing::info!("Receiver stopped: total_received={total}, invalid={invalid}");
    result.map_err(|e| format!("leaving the group failed: {e}"))
}
