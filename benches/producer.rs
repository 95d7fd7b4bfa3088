//! Producer throughput against a real broker (`KAFKA_BOOTSTRAP`).
//!
//! For 100 B and 1 KiB values, uncompressed and lz4: each iteration sends a
//! fixed number of unkeyed records through one [`Producer`] (default
//! settings: idempotent, acks=all, linger 5 ms) to a topic of four
//! partitions and waits until every record is acknowledged. Throughput is
//! reported in records and value bytes per second; after each case the
//! client's CPU time per record (user + system, from `/proc/self/stat`) is
//! printed, since CPU per record is what this crate is compared on.
//!
//! ```text
//! scripts/kafka up
//! KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench --bench producer
//! ```
//!
//! Without `KAFKA_BOOTSTRAP` it prints a notice and measures nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use rskafka::{
    client::{
        producer::{Compression, DeliveryFuture, ProducerConfig},
        Client, ClientBuilder,
    },
    record::Record,
};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

const PARTITIONS: i32 = 4;

struct Case {
    name: &'static str,
    value_size: usize,
    records: usize,
    compression: Compression,
}

const CASES: &[Case] = &[
    Case {
        name: "100B/none",
        value_size: 100,
        records: 200_000,
        compression: Compression::None,
    },
    Case {
        name: "100B/lz4",
        value_size: 100,
        records: 200_000,
        compression: Compression::Lz4,
    },
    Case {
        name: "1KiB/none",
        value_size: 1024,
        records: 50_000,
        compression: Compression::None,
    },
    Case {
        name: "1KiB/lz4",
        value_size: 1024,
        records: 50_000,
        compression: Compression::Lz4,
    },
];

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat`; `None` where that file does not exist.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may
    // contain spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on every Linux configuration in use.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Values that are neither all equal nor random, so lz4 has some work.
fn value(size: usize, i: usize) -> Bytes {
    let text = format!("record {i} of the producer benchmark; ");
    Bytes::from(text.bytes().cycle().take(size).collect::<Vec<u8>>())
}

/// Distinct values each case cycles through (cloning a `Bytes` is a
/// reference count, so building records costs next to nothing).
const DISTINCT_VALUES: usize = 1_000;

async fn run_once(client: &Client, topic: &str, case: &Case, values: &[Bytes]) -> Duration {
    let producer = client
        .producer(ProducerConfig::default().compression(case.compression))
        .expect("producer");
    let timestamp = OffsetDateTime::now_utc();
    let started = Instant::now();
    let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(case.records);
    for v in values.iter().cycle().take(case.records) {
        let record = Record {
            key: None,
            value: Some(v.clone()),
            headers: Vec::new(),
            timestamp,
        };
        deliveries.push(producer.send_to(topic, None, record).await.expect("send"));
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
    let elapsed = started.elapsed();
    producer.close().await;
    elapsed
}

fn bench(c: &mut Criterion) {
    let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP") else {
        eprintln!("skipping: KAFKA_BOOTSTRAP not set");
        return;
    };
    let rt = Runtime::new().expect("runtime");
    let client = rt.block_on(async {
        ClientBuilder::new(vec![bootstrap])
            .build()
            .await
            .expect("client")
    });
    let topic = format!("rskafka-bench-producer-{}", std::process::id());
    rt.block_on(async {
        client
            .controller_client()
            .expect("controller")
            .create_topic(&topic, PARTITIONS, 1, 30_000)
            .await
            .expect("create topic");
        // One warm-up run: connections, producer id, partition leaders.
        let values: Vec<Bytes> = (0..DISTINCT_VALUES).map(|i| value(100, i)).collect();
        run_once(&client, &topic, &CASES[0], &values).await;
    });

    let mut group = c.benchmark_group("producer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for case in CASES {
        group.throughput(Throughput::Elements(case.records as u64));
        let values: Vec<Bytes> = (0..DISTINCT_VALUES)
            .map(|i| value(case.value_size, i))
            .collect();
        let mut cpu = Duration::ZERO;
        let mut records = 0u64;
        group.bench_function(BenchmarkId::new("send", case.name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let before = cpu_time();
                    total += rt.block_on(run_once(&client, &topic, case, &values));
                    if let (Some(a), Some(b)) = (before, cpu_time()) {
                        cpu += b.saturating_sub(a);
                        records += case.records as u64;
                    }
                }
                total
            })
        });
        if records > 0 {
            eprintln!(
                "producer/{}: {:.2} µs CPU per record ({} records, {} B values)",
                case.name,
                cpu.as_secs_f64() * 1e6 / records as f64,
                records,
                case.value_size
            );
        }
    }
    group.finish();
    rt.block_on(async {
        let _ = client
            .controller_client()
            .expect("controller")
            .delete_topic(&topic, 30_000)
            .await;
    });
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
