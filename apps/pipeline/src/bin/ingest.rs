//! `ingest`: writes events to the events topic, keyed by tenant.
//!
//! ```text
//! ingest users --count N
//! ingest orders --count N
//! ingest custom --event-type T --payload JSON --count N
//! ingest load-test --rate R --duration S [--tenant-id ID]
//! ```
//! Ends with one `ingest finished:` line: sent, acknowledged, failed, the
//! achieved rate and the delivery latency p50/p99.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use pipeline::{
    config::Settings,
    event::{order_payload, user_payload, Event},
    metrics::Percentiles,
};
use rand::Rng;
use rskafka::{
    client::producer::{DeliveryFuture, Producer, ProducerRecord},
    record::Record,
};
use serde_json::value::RawValue;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "ingest",
    about = "Writes events to the pipeline's events topic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `user.created` events.
    Users(Count),
    /// `order.created` events.
    Orders(Count),
    /// Events of any type with a given payload.
    Custom {
        /// The event type.
        #[arg(long)]
        event_type: String,
        /// The payload, as JSON.
        #[arg(long)]
        payload: String,
        #[command(flatten)]
        count: Count,
    },
    /// Paced `order.created`/`user.created` events for a while.
    LoadTest {
        /// Events per second.
        #[arg(long)]
        rate: u64,
        /// Seconds.
        #[arg(long)]
        duration: u64,
        /// One tenant for all events (one partition); else 16 tenants.
        #[arg(long)]
        tenant_id: Option<String>,
    },
}

#[derive(clap::Args)]
struct Count {
    /// How many events.
    #[arg(long)]
    count: u64,
    /// One tenant for all events; else 16 tenants.
    #[arg(long)]
    tenant_id: Option<String>,
}

fn main() {
    pipeline::keep_large_buffers_out_of_the_heap();
    run_main();
}

#[tokio::main]
async fn run_main() {
    let cli = Cli::parse();
    let settings = pipeline::settings_or_exit();
    pipeline::exit_with(run(settings, cli.command).await)
}

async fn run(settings: Settings, command: Command) -> Result<(), String> {
    let client = settings.client("ingest").await?;
    let (producer, topics) = pipeline::producer_with_topics(&settings, &client).await?;
    let topic = topics.events;
    let mut out = Out::new(producer, topic);
    let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).expect("JSON");
    match command {
        Command::Users(c) => generate(&mut out, &c, "user.created", user_payload).await,
        Command::Orders(c) => generate(&mut out, &c, "order.created", order_payload).await,
        Command::Custom {
            event_type,
            payload,
            count,
        } => {
            let payload: Box<RawValue> = serde_json::from_str(&payload).unwrap_or_else(|e| {
                eprintln!("error: --payload: not JSON ({e})");
                std::process::exit(pipeline::EXIT_USAGE)
            });
            for _ in 0..count.count {
                let tenant = tenant(&count.tenant_id);
                out.send(Event::with_raw(&event_type, tenant, payload.clone()))
                    .await;
            }
        }
        Command::LoadTest {
            rate,
            duration,
            tenant_id,
        } => {
            if rate == 0 || duration == 0 {
                eprintln!("error: --rate and --duration must be at least 1");
                std::process::exit(pipeline::EXIT_USAGE);
            }
            let payloads = [
                ("order.created", raw(order_payload(42))),
                ("user.created", raw(user_payload(42))),
            ];
            let total = rate * duration;
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while n < total {
                tick.tick().await;
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                while n < due {
                    let (t, p) = &payloads[(n % 2) as usize];
                    out.send(Event::with_raw(*t, tenant(&tenant_id), p.clone()))
                        .await;
                    n += 1;
                }
                out.flush_tick();
            }
        }
    }
    out.finish().await
}

/// `count.count` events of `event_type` with sample payloads.
async fn generate(
    out: &mut Out,
    count: &Count,
    event_type: &str,
    payload: fn(u64) -> serde_json::Value,
) {
    for n in 0..count.count {
        let raw = serde_json::value::to_raw_value(&payload(n)).expect("JSON");
        out.send(Event::with_raw(event_type, tenant(&count.tenant_id), raw))
            .await;
    }
}

fn tenant(fixed: &Option<String>) -> String {
    match fixed {
        Some(t) => t.clone(),
        None => format!("tenant-{}", rand::rng().random_range(0..16)),
    }
}

/// Sends events and tracks their acknowledgements.
struct Out {
    producer: Producer,
    topic: String,
    start: Instant,
    sent: u64,
    pending: Vec<(Instant, DeliveryFuture)>,
    waiters: Vec<tokio::task::JoinHandle<()>>,
    latency: Arc<Mutex<Percentiles>>,
    failed: Arc<AtomicU64>,
}

impl Out {
    fn new(producer: Producer, topic: String) -> Self {
        Self {
            producer,
            topic,
            start: Instant::now(),
            sent: 0,
            pending: Vec::new(),
            waiters: Vec::new(),
            latency: Arc::new(Mutex::new(Percentiles::default())),
            failed: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn send(&mut self, event: Event) {
        let record = Record {
            key: Some(Bytes::from(event.tenant_id.clone())),
            value: Some(Bytes::from(event.to_json())),
            headers: Vec::new(),
            timestamp: OffsetDateTime::now_utc(),
        };
        let at = Instant::now();
        match self
            .producer
            .send(ProducerRecord::new(self.topic.clone(), record))
            .await
        {
            Ok(d) => self.pending.push((at, d)),
            Err(e) => tracing::warn!("send failed: {e}"),
        }
        self.sent += 1;
        if self.pending.len() >= 1000 {
            self.flush_tick();
        }
    }

    /// Hands the deliveries so far to a task that awaits them.
    fn flush_tick(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let latency = self.latency.clone();
        let failed = self.failed.clone();
        self.waiters.push(tokio::spawn(async move {
            let mut ms = Vec::with_capacity(pending.len());
            for (at, d) in pending {
                match d.await {
                    Ok(_) => ms.push(at.elapsed().as_millis() as u64),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("delivery failed: {e}");
                    }
                }
            }
            let mut l = latency.lock().unwrap();
            for m in ms {
                l.record(m);
            }
        }));
        // Keep the list short: reap the finished ones.
        if self.waiters.len() > 256 {
            self.waiters.retain(|w| !w.is_finished());
        }
    }

    async fn finish(mut self) -> Result<(), String> {
        self.flush_tick();
        let send_secs = self.start.elapsed().as_secs_f64().max(1e-3);
        self.producer.flush().await;
        for w in self.waiters {
            w.await.map_err(|e| e.to_string())?;
        }
        let (acked, latency) = {
            let l = self.latency.lock().unwrap();
            (l.count(), l.summary())
        };
        let failed = self.sent - acked;
        tracing::info!(
            "ingest finished: topic={} sent={} acked={acked} failed={failed} elapsed={:.2}s rate={:.0}/s delivery {}",
            self.topic,
            self.sent,
            send_secs,
            self.sent as f64 / send_secs,
            latency,
        );
        self.producer.close().await;
        if failed > 0 {
            return Err(format!("{failed} events were not acknowledged"));
        }
        Ok(())
    }
}
