//! Consumer throughput against a real broker (`KAFKA_BOOTSTRAP`).
//!
//! For 100 B and 1 KiB records, uncompressed and lz4, and 10 KiB records
//! uncompressed with and without CRC checks: a topic of four partitions is
//! filled once, then each iteration reads all of it from the start with a
//! fresh [`Consumer`] through `next_batch`, touching every value.
//! Throughput is reported in records and bytes (of values) per second.
//!
//! ```text
//! scripts/kafka up
//! KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench --bench consumer
//! ```
//!
//! Without `KAFKA_BOOTSTRAP` it prints a notice and measures nothing.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rskafka::{
    client::{
        consumer::{Consumer, ConsumerConfig, StartOffset},
        partition::Compression,
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
    /// [`ConsumerConfig::check_crcs`].
    check_crcs: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "100B/none",
        value_size: 100,
        records: 400_000,
        compression: Compression::None,
        check_crcs: true,
    },
    Case {
        name: "100B/lz4",
        value_size: 100,
        records: 400_000,
        compression: Compression::Lz4,
        check_crcs: true,
    },
    Case {
        name: "1KiB/none",
        value_size: 1024,
        records: 100_000,
        compression: Compression::None,
        check_crcs: true,
    },
    Case {
        name: "1KiB/lz4",
        value_size: 1024,
        records: 100_000,
        compression: Compression::Lz4,
        check_crcs: true,
    },
    // Large records, where the CRC is a visible share of the work.
    Case {
        name: "10KiB/none",
        value_size: 10 * 1024,
        records: 20_000,
        compression: Compression::None,
        check_crcs: true,
    },
    Case {
        name: "10KiB/none/no-crc",
        value_size: 10 * 1024,
        records: 20_000,
        compression: Compression::None,
        check_crcs: false,
    },
];

/// A value of `size` bytes that compresses about as well as typical
/// payloads (text with some variety), not as well as zeros.
fn value(i: usize, size: usize) -> Vec<u8> {
    let text = format!("record {i:>10} of the consumer benchmark; payload follows: ");
    text.bytes()
        .chain((0..).map(|j: usize| b'a' + ((i * 7 + j * 13) % 26) as u8))
        .take(size)
        .collect()
}

/// Creates a topic holding `case.records` records spread over the
/// partitions, in batches of about 512 KiB.
async fn fill(client: &Client, case: &Case) -> String {
    let topic = format!(
        "bench-consumer-{}-{}",
        case.name.replace('/', "-"),
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    client
        .controller_client()
        .expect("controller client")
        .create_topic(&topic, PARTITIONS, 1, 30_000)
        .await
        .expect("create topic");
    let per_batch = (512 * 1024 / case.value_size).max(1);
    let per_partition = case.records / PARTITIONS as usize;
    let mut tasks = Vec::new();
    for p in 0..PARTITIONS {
        let client = client.clone();
        let topic = topic.clone();
        let (size, compression) = (case.value_size, case.compression);
        tasks.push(tokio::spawn(async move {
            let pc = client.partition_client(&topic, p).await.expect("partition");
            let mut i = 0;
            while i < per_partition {
                let n = per_batch.min(per_partition - i);
                let records = (i..i + n)
                    .map(|k| Record {
                        key: None,
                        value: Some(value(k, size).into()),
                        headers: Vec::new(),
                        timestamp: OffsetDateTime::now_utc(),
                    })
                    .collect();
                pc.produce(records, compression).await.expect("produce");
                i += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer task");
    }
    topic
}

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat` (Linux; `None` elsewhere).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Reads `expected` records of `topic` from the start; returns the bytes of
/// values seen.
async fn consume_all(client: &Client, topic: &str, expected: usize, check_crcs: bool) -> usize {
    let mut config = ConsumerConfig::default().check_crcs(check_crcs);
    for p in 0..PARTITIONS {
        config = config.assign(topic, p, StartOffset::Earliest);
    }
    let mut consumer: Consumer = client.consumer(config).expect("consumer");
    let (mut count, mut bytes) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, consumer.next_batch())
            .await
            .expect("consuming took over 120 s")
            .expect("consume");
        count += batch.len();
        bytes += batch
            .iter()
            .map(|r| r.record.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>();
    }
    bytes
}

/// The benchmark name filter among the arguments: the first one that is
/// neither a flag nor the value of one of criterion's options.
fn name_filter() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--profile-time",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--measurement-time",
        "--warm-up-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--color",
        "--format",
        "--output-format",
        "--plotting-backend",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            return Some(a.clone());
        }
        i += 1;
    }
    None
}

fn main() {
    let Some(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|s| !s.trim().is_empty())
    else {
        eprintln!("skipping: KAFKA_BOOTSTRAP not set");
        return;
    };
    let runtime = Runtime::new().expect("tokio runtime");
    let client = runtime.block_on(async {
        ClientBuilder::new(vec![bootstrap.clone()])
            .client_id("rskafka-bench-consumer")
            .build()
            .await
            .expect("connect to KAFKA_BOOTSTRAP")
    });
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    // Criterion skips filtered-out benchmarks, but filling their topics
    // would still cost minutes: apply the filter (a substring) here too.
    let filter = name_filter();
    let mut group = criterion.benchmark_group("consume");
    for case in CASES {
        let id = format!("consume/{}", case.name);
        if filter.as_ref().is_some_and(|f| !id.contains(f.as_str())) {
            continue;
        }
        let topic = runtime.block_on(fill(&client, case));
        let records = case.records / PARTITIONS as usize * PARTITIONS as usize;
        group.throughput(Throughput::Elements(records as u64));
        // CPU per record of the whole client side (fetching, decoding,
        // handing out), measured over a few full reads.
        let rounds = 3;
        let before = (process_cpu(), Instant::now());
        for _ in 0..rounds {
            runtime.block_on(consume_all(&client, &topic, records, case.check_crcs));
        }
        if let (Some(cpu0), Some(cpu1)) = (before.0, process_cpu()) {
            let n = (records * rounds) as f64;
            eprintln!(
                "consume/{}: {:.0} records/s, {:.3} CPU µs per record ({:.2} CPU s per million)",
                case.name,
                n / before.1.elapsed().as_secs_f64(),
                (cpu1 - cpu0).as_secs_f64() * 1e6 / n,
                (cpu1 - cpu0).as_secs_f64() * 1e6 / n,
            );
        }
        group.bench_with_input(
            BenchmarkId::from_parameter(case.name),
            &topic,
            |b, topic| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let bytes =
                            runtime.block_on(consume_all(&client, topic, records, case.check_crcs));
                        assert!(bytes >= records * case.value_size);
                    }
                    start.elapsed()
                });
            },
        );
    }
    group.finish();
    criterion.final_summary();
}
