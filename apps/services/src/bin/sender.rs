//! Sends one JSON message every `SEND_INTERVAL_MS` to `KAFKA_TOPIC`
//! (acks=all, idempotent, retried until `MESSAGE_TIMEOUT_MS`), logging each
//! delivery and a summary per interval. SIGINT/SIGTERM: stops sending,
//! waits for what is in flight, logs the totals and exits 0.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rskafka::{
    client::producer::{Acks, ProducerConfig, ProducerRecord},
    record::Record,
};
use services::{shutdown_signal, Message, Settings};
use time::OffsetDateTime;
use tokio::time::MissedTickBehavior;

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
}

#[tokio::main]
async fn main() {
    services::main(run).await
}

async fn run(settings: Settings) -> Result<(), String> {
    let client = settings.client("rust-sender").await?;
    // The message timeout bounds the whole delivery; a request may take
    // what is left of it after the linger.
    let linger = Duration::from_millis(5);
    let request_timeout = settings
        .message_timeout
        .saturating_sub(linger)
        .max(Duration::from_millis(1));
    let producer = client
        .producer(
            ProducerConfig::default()
                .acks(Acks::All)
                .linger(linger)
                .request_timeout(request_timeout)
                .delivery_timeout(settings.message_timeout),
        )
        .map_err(|e| format!("cannot create the producer: {e}"))?;
    tracing::info!(
        topic = %settings.topic,
        brokers = %settings.brokers.join(","),
        interval_ms = settings.send_interval.as_millis() as u64,
        "sender started"
    );

    let counts = Arc::new(Counts::default());
    let mut tick = tokio::time::interval(settings.send_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut summary = tokio::time::interval(settings.summary_interval);
    summary.tick().await;
    let mut last_summary = (Instant::now(), 0u64, 0u64);
    let mut deliveries = tokio::task::JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut counter = 0u64;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                counter += 1;
                let message = Message::new(counter, settings.producer_id.clone(), OffsetDateTime::now_utc());
                let value = serde_json::to_vec(&message).expect("a message serializes");
                let record = Record {
                    key: None,
                    value: Some(Bytes::from(value)),
                    headers: Vec::new(),
                    timestamp: OffsetDateTime::now_utc(),
                };
                let delivery = producer.send(ProducerRecord::new(settings.topic.clone(), record)).await;
                let counts = counts.clone();
                deliveries.spawn(async move {
                    let outcome = match delivery {
                        Ok(delivery) => delivery.await,
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(meta) => {
                            counts.sent.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                "Sent message #{}: id={}, partition={}, offset={}",
                                message.counter,
                                message.id,
                                meta.partition,
                                meta.offset.unwrap_or(-1)
                            );
                        }
                        Err(e) => {
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("Failed to send message #{}: {e}", message.counter);
                        }
                    }
                });
            }
            _ = summary.tick() => {
                let (at, sent_before, failed_before) = last_summary;
                let sent = counts.sent.load(Ordering::Relaxed);
                let failed = counts.failed.load(Ordering::Relaxed);
                let secs = at.elapsed().as_secs_f64().max(1e-3);
                tracing::info!(
                    "Summary: sent {} ({:.1}/s), failed {}, total sent {}",
                    sent - sent_before,
                    (sent - sent_before) as f64 / secs,
                    failed - failed_before,
                    sent
                );
                last_summary = (Instant::now(), sent, failed);
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
    }
    producer.flush().await;
    while deliveries.join_next().await.is_some() {}
    producer.close().await;
    tracing::info!(
        "Sender stopped: created {counter}, sent {}, failed {}",
        counts.sent.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    Ok(())
}
