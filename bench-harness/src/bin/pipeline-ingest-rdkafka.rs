//! `ingest load-test` of apps/pipeline built on librdkafka (`rdkafka`'s
//! `FutureProducer`): the same settings, envelope, pacing and final line.
//!
//! Usage: pipeline-ingest-rdkafka load-test --rate R --duration S [--tenant-id ID]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[path = "../pipeline_rdkafka.rs"]
mod common;

use pipeline::{
    event::{order_payload, user_payload, Event},
    metrics::Percentiles,
};
use rdkafka::producer::{FutureRecord, Producer};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str| -> u64 {
        arg(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("error: {name} N is needed (load-test --rate R --duration S)");
            std::process::exit(pipeline::EXIT_USAGE)
        })
    };
    if args.first().map(String::as_str) != Some("load-test") {
        eprintln!("error: only `load-test --rate R --duration S [--tenant-id ID]` is supported");
        std::process::exit(pipeline::EXIT_USAGE);
    }
    let (rate, duration, tenant) = (num("--rate"), num("--duration"), arg("--tenant-id"));
    let settings = pipeline::settings_or_exit();
    pipeline::exit_with(run(settings, rate, duration, tenant).await)
}

async fn run(
    settings: pipeline::config::Settings,
    rate: u64,
    duration: u64,
    tenant: Option<String>,
) -> Result<(), String> {
    let topic = settings.producer.events_topic.clone();
    let producer = common::producer(&settings)?;
    let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).expect("JSON");
    let payloads = [
        ("order.created", raw(order_payload(42))),
        ("user.created", raw(user_payload(42))),
    ];
    let latency = Arc::new(Mutex::new(Percentiles::default()));
    let total = rate * duration;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut n, mut waiters) = (0u64, Vec::new());
    while n < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let mut pending = Vec::new();
        while n < due {
            let (t, p) = &payloads[(n % 2) as usize];
            let tenant = tenant
                .clone()
                .unwrap_or_else(|| format!("tenant-{}", rand_tenant(n)));
            let value = Event::with_raw(*t, tenant.clone(), p.clone()).to_json();
            let mut record = FutureRecord::to(&topic).payload(&value).key(&tenant);
            let at = Instant::now();
            let d = loop {
                match producer.send_result(record) {
                    Ok(d) => break d,
                    Err((_, r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            pending.push((at, d));
            n += 1;
        }
        let latency = latency.clone();
        waiters.push(tokio::spawn(async move {
            let mut ms = Vec::with_capacity(pending.len());
            for (at, d) in pending {
                if let Ok(Ok(_)) = d.await {
                    ms.push(at.elapsed().as_millis() as u64);
                }
            }
            let mut l = latency.lock().unwrap();
            for m in ms {
                l.record(m);
            }
        }));
    }
    let secs = start.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("flush: {e}"))?;
    for w in waiters {
        let _ = w.await;
    }
    let l = latency.lock().unwrap();
    let failed = n - l.count();
    tracing::info!(
        "ingest finished: topic={topic} sent={n} acked={} failed={failed} elapsed={secs:.2}s rate={:.0}/s delivery {}",
        l.count(),
        n as f64 / secs,
        l.summary()
    );
    if failed > 0 {
        return Err(format!("{failed} events were not acknowledged"));
    }
    Ok(())
}

/// 16 tenants, spread without a random generator.
fn rand_tenant(n: u64) -> u64 {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) & 15
}
