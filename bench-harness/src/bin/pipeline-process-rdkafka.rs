//! `process start` of apps/pipeline built on librdkafka (`rdkafka`): the
//! same settings, envelope, handlers and routing (`pipeline::route`), a
//! `StreamConsumer` of the events and `.retry` topics and a
//! `FutureProducer`. Offsets are stored once a record's output is
//! acknowledged and auto-committed every 100 ms. For the side-by-side
//! benchmark (scripts/bench-pipeline); SIGTERM/SIGINT stop it.
//!
//! Simplification against the rskafka worker: a `.retry` record that is not
//! due yet is waited for inline (it delays the whole worker, not only its
//! partition). The benchmark sends no failing events.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

#[path = "../pipeline_rdkafka.rs"]
mod common;

use pipeline::{
    metrics::Percentiles,
    route::{route, Input, Kind, RetryPolicy, RetryState, Topics},
};
use rdkafka::{
    config::ClientConfig,
    consumer::{Consumer, StreamConsumer},
    message::{Header, Headers, Message, OwnedHeaders},
    producer::FutureRecord,
};
use time::OffsetDateTime;

#[tokio::main]
async fn main() {
    let settings = pipeline::settings_or_exit();
    pipeline::exit_with(run(settings).await)
}

async fn run(settings: pipeline::config::Settings) -> Result<(), String> {
    let topics = Topics::new(&settings.producer.events_topic);
    let c = &settings.consumer;
    let brokers = settings.brokers().join(",");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &c.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", c.session_timeout_ms.to_string())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    consumer
        .subscribe(&[topics.events.as_str(), topics.retry.as_str()])
        .map_err(|e| format!("subscribe: {e}"))?;
    let producer = common::producer(&settings)?;
    let consumer = Arc::new(consumer);
    let policy = RetryPolicy {
        max_attempts: c.max_attempts,
        backoff: Duration::from_millis(c.retry_backoff_ms),
    };
    let e2e = Arc::new(Mutex::new(Percentiles::default()));
    let processed = Arc::new(AtomicU64::new(0));
    type Item = (
        rdkafka::producer::DeliveryFuture,
        String,
        i32,
        i64,
        Kind,
        Option<OffsetDateTime>,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(c.max_in_flight);
    let acker = {
        let (consumer, e2e, processed) = (consumer.clone(), e2e.clone(), processed.clone());
        tokio::spawn(async move {
            while let Some((delivery, topic, partition, offset, kind, event_time)) = rx.recv().await
            {
                match delivery.await {
                    Ok(Ok(_)) => {
                        if kind == Kind::Processed {
                            processed.fetch_add(1, Ordering::Relaxed);
                            if let Some(t) = event_time {
                                let ms = (OffsetDateTime::now_utc() - t).whole_milliseconds();
                                e2e.lock().unwrap().record(ms.max(0) as u64);
                            }
                        }
                        let _ = consumer.store_offset(&topic, partition, offset);
                    }
                    Ok(Err((e, _))) => tracing::warn!("delivery failed: {e}"),
                    Err(_) => tracing::warn!("delivery cancelled"),
                }
            }
        })
    };
    tracing::info!(group = %c.group_id, "process (rdkafka) started");
    let mut consumed = 0u64;
    let shutdown = pipeline::metrics::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let m = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("consuming failed: {e}");
                continue;
            }
        };
        consumed += 1;
        let state = match m.headers() {
            Some(h) if m.topic() == topics.retry => {
                RetryState::from_headers(h.iter().map(|h| (h.key, h.value)))
            }
            _ => RetryState::default(),
        };
        if let Some(at) = state.retry_at_ms {
            let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            if at > now {
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
        }
        let out = route(
            &topics,
            policy,
            Input {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                value: m.payload(),
            },
            &state,
            OffsetDateTime::now_utc(),
        );
        let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record = FutureRecord::to(&out.topic)
            .payload(&out.value[..])
            .headers(headers);
        if let Some(k) = &out.key {
            record = record.key(&k[..]);
        }
        let delivery = loop {
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((e, r)) => {
                    tracing::debug!("queue full: {e}");
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let item = (
            delivery,
            m.topic().to_owned(),
            m.partition(),
            m.offset(),
            out.kind,
            out.event_time,
        );
        if tx.send(item).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = acker.await;
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10))
        .map_err(|e| format!("flush: {e}"))?;
    drop(consumer);
    tracing::info!(
        "process stopped: consumed={consumed} processed={} e2e {}",
        processed.load(Ordering::Relaxed),
        e2e.lock().unwrap().summary()
    );
    Ok(())
}
