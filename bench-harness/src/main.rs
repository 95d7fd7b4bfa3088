//! Side-by-side benchmark of rskafka against librdkafka (through `rdkafka`),
//! upstream rskafka 0.6 and the Java client, against one local broker.
//!
//! `bench-harness [--quick] [--clients a,b] [--workloads a,b]` is the
//! orchestrator: it creates a topic per run and re-executes itself as
//! `bench-harness child CLIENT OP ...` (the Java client as a JVM child), so
//! that CPU time and peak RSS come from `wait4` on that one child and belong
//! to one client and one workload only. The child prints one `RESULT` line
//! that the parent parses. See `docs/benchmarks.md` and `scripts/bench`.

mod clients;
mod java;

use std::{
    collections::BTreeMap,
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Outcome of one client run, as measured inside the child (throughput,
/// latency) and by the parent (CPU, RSS).
#[derive(Debug, Clone, Default)]
struct Outcome {
    records: u64,
    bytes: u64,
    secs: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// Transactions committed (transactional runs only).
    commits: u64,
    cpu_secs: f64,
    max_rss_kib: i64,
}

/// What a child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Produce,
    Consume,
    /// Produce at a fixed rate and measure send-to-ack latency.
    Latency,
    /// Produce flat out in transactions, committing each after a number of
    /// records or a time (see [`CommitEvery`]).
    ProduceTxn,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Produce => "produce",
            Op::Consume => "consume",
            Op::Latency => "latency",
            Op::ProduceTxn => "produce-txn",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "produce" => Some(Op::Produce),
            "consume" => Some(Op::Consume),
            "latency" => Some(Op::Latency),
            "produce-txn" => Some(Op::ProduceTxn),
            _ => None,
        }
    }
}

/// When a transactional run commits its open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitEvery {
    /// After this many records.
    Records(u64),
    /// This many milliseconds after the transaction began.
    Millis(u64),
}

impl CommitEvery {
    /// `1000rec` or `100ms`, as on the child's command line.
    fn label(self) -> String {
        match self {
            CommitEvery::Records(n) => format!("{n}rec"),
            CommitEvery::Millis(ms) => format!("{ms}ms"),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if let Some(n) = s.strip_suffix("rec") {
            n.parse().ok().filter(|&n| n > 0).map(CommitEvery::Records)
        } else {
            s.strip_suffix("ms")?.parse().ok().map(CommitEvery::Millis)
        }
    }

    /// Whether a transaction begun at `began`, with `records` sent in it,
    /// is due to be committed.
    pub fn due(self, records: u64, began: Instant) -> bool {
        match self {
            CommitEvery::Records(n) => records >= n,
            CommitEvery::Millis(ms) => began.elapsed() >= Duration::from_millis(ms),
        }
    }
}

/// Parameters a child needs; passed on its command line.
#[derive(Debug, Clone)]
pub struct Job {
    /// Broker address.
    pub bootstrap: String,
    /// Topic: one partition (partition 0), or `partitions` for the
    /// transactional runs, which send to them in turn.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Transactional runs: when to commit.
    pub commit: Option<CommitEvery>,
    /// Records to produce or consume.
    pub count: u64,
    /// Value size in bytes (no key).
    pub size: usize,
    /// `none` or `lz4`.
    pub compression: String,
    /// Records per second for the latency run; 0 = as fast as possible.
    pub rate: u64,
}

const CLIENTS: [&str; 4] = ["rskafka", "rdkafka", "upstream", "java"];
/// Clients run only when named with `--clients`: librdkafka with
/// `check.crcs=true`, which does the CRC work our consumer does by default
/// (librdkafka's default is off), for a like-for-like consume comparison;
/// and, for the transactional workloads only, librdkafka committing through
/// the rdkafka crate's `Producer::commit_transaction` (which waits 100 ms
/// or more in its own flush) rather than `rd_kafka_commit_transaction`; and
/// rskafka's transactions on the protocol from before KIP-890 (EndTxn
/// capped at v4), as librdkafka speaks it.
const EXTRA_CLIENTS: [&str; 3] = ["rdkafka-crc", "rdkafka-crate", "rskafka-txn-v1"];
/// The clients with a transactional producer (upstream rskafka has none;
/// the Java client's ProducerPerformance cannot commit every N records).
const TXN_CLIENTS: [&str; 5] = [
    "rskafka",
    "rskafka-txn-v1",
    "rdkafka",
    "rdkafka-crc",
    "rdkafka-crate",
];

/// Whether `client` runs workloads of `op`.
fn supports(client: &str, op: Op) -> bool {
    match op {
        Op::ProduceTxn => TXN_CLIENTS.contains(&client),
        _ => client != "rdkafka-crate" && client != "rskafka-txn-v1",
    }
}

struct Workload {
    name: String,
    op: Op,
    count: u64,
    size: usize,
    compression: &'static str,
    rate: u64,
    /// For consume workloads: the produce workload whose topic is read.
    source: Option<String>,
    /// Partitions of the topic a produce workload creates.
    partitions: i32,
    /// Transactional workloads: when to commit.
    commit: Option<CommitEvery>,
}

impl Workload {
    /// Whether `--workloads` entry `filter` selects this workload. The
    /// transactional ones run only when asked for by name (`produce-txn`,
    /// not just `produce`, nor by default), so that existing invocations
    /// run what they ran before.
    fn selected_by(&self, filter: &str) -> bool {
        self.name.starts_with(filter)
            && (self.op != Op::ProduceTxn || filter.len() >= self.op.name().len())
    }
}

fn workloads(quick: bool) -> Vec<Workload> {
    let (small, large, lat_secs) = if quick {
        (100_000, 10_000, 2)
    } else {
        (1_000_000, 100_000, 10)
    };
    let mut w = Vec::new();
    for (count, size) in [(small, 100usize), (large, 10 * 1024)] {
        for comp in ["none", "lz4"] {
            let label = if size >= 1024 {
                format!("{}KiB", size / 1024)
            } else {
                format!("{size}B")
            };
            let name = format!("{}x{label}-{comp}", human(count));
            w.push(Workload {
                name: format!("produce {name}"),
                op: Op::Produce,
                count,
                size,
                compression: comp,
                rate: 0,
                source: None,
                partitions: 1,
                commit: None,
            });
            w.push(Workload {
                name: format!("consume {name}"),
                op: Op::Consume,
                count,
                size,
                compression: comp,
                rate: 0,
                source: Some(format!("produce {name}")),
                partitions: 1,
                commit: None,
            });
        }
    }
    w.push(Workload {
        name: format!("latency 10k/s x100B {lat_secs}s"),
        op: Op::Latency,
        count: 10_000 * lat_secs,
        size: 100,
        compression: "none",
        rate: 10_000,
        source: None,
        partitions: 1,
        commit: None,
    });
    // Transactional produce (opt-in, see `Workload::selected_by`): 100 B
    // records to the partitions of one topic in turn, committed every 1000
    // records, or every 100 ms while sending flat out. The 100 ms one gets
    // more records, so that a run (2-6 s) spans some 15-30 commits.
    let (txn_small, txn_large) = if quick {
        (50_000, 500_000)
    } else {
        (200_000, 4_000_000)
    };
    for (count, commit) in [
        (txn_small, CommitEvery::Records(1000)),
        (txn_large, CommitEvery::Millis(100)),
    ] {
        w.push(Workload {
            name: format!("produce-txn {}x100B {}/txn", human(count), commit.label()),
            op: Op::ProduceTxn,
            count,
            size: 100,
            compression: "none",
            rate: 0,
            source: None,
            partitions: TXN_PARTITIONS,
            commit: Some(commit),
        });
    }
    w
}

/// Partitions of the transactional workloads' topic.
const TXN_PARTITIONS: i32 = 4;

fn human(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        std::process::exit(child_main(&args[2..]));
    }
    std::process::exit(parent_main(&args[1..]));
}

/// `child CLIENT OP BOOTSTRAP TOPIC COUNT SIZE COMPRESSION RATE PARTITIONS
/// COMMIT`, COMMIT being `1000rec`, `100ms` or `-` (not transactional).
fn child_main(args: &[String]) -> i32 {
    let [client, op, bootstrap, topic, count, size, compression, rate, partitions, commit] = args
    else {
        eprintln!(
            "usage: bench-harness child CLIENT OP BOOTSTRAP TOPIC COUNT SIZE COMPRESSION RATE PARTITIONS COMMIT"
        );
        return 2;
    };
    let commit = match commit.as_str() {
        "-" => Ok(None),
        c => CommitEvery::parse(c).map(Some).ok_or(()),
    };
    let (Some(op), Ok(count), Ok(size), Ok(rate), Ok(partitions), Ok(commit)) = (
        Op::parse(op),
        count.parse::<u64>(),
        size.parse::<usize>(),
        rate.parse::<u64>(),
        partitions.parse::<i32>(),
        commit,
    ) else {
        eprintln!("bad child arguments: {args:?}");
        return 2;
    };
    let job = Job {
        bootstrap: bootstrap.clone(),
        topic: topic.clone(),
        partitions: partitions.max(1),
        commit,
        count,
        size,
        compression: compression.clone(),
        rate,
    };
    let res = match (client.as_str(), op) {
        ("rskafka", Op::Produce | Op::Latency) => clients::ours::produce(&job),
        ("rskafka", Op::Consume) => clients::ours::consume(&job),
        ("rskafka", Op::ProduceTxn) => clients::ours::produce_txn(&job, false),
        ("rskafka-txn-v1", Op::ProduceTxn) => clients::ours::produce_txn(&job, true),
        ("rdkafka" | "rdkafka-crc", Op::Produce | Op::Latency) => clients::rdk::produce(&job),
        ("rdkafka", Op::Consume) => clients::rdk::consume(&job, false),
        ("rdkafka-crc", Op::Consume) => clients::rdk::consume(&job, true),
        ("rdkafka" | "rdkafka-crc", Op::ProduceTxn) => clients::rdk::produce_txn(&job, false),
        ("rdkafka-crate", Op::ProduceTxn) => clients::rdk::produce_txn(&job, true),
        ("upstream", Op::Produce | Op::Latency) => clients::upstream::produce(&job),
        ("upstream", Op::Consume) => clients::upstream::consume(&job),
        _ => Err(format!("client {client} cannot run {}", op.name())),
    };
    match res {
        Ok(r) => {
            println!(
                "RESULT records={} bytes={} secs={} p50_us={} p99_us={} commits={}",
                r.records,
                r.bytes,
                r.secs,
                r.p50_us.unwrap_or(-1.0),
                r.p99_us.unwrap_or(-1.0),
                r.commits
            );
            0
        }
        Err(e) => {
            eprintln!("{client} {}: {e}", op.name());
            1
        }
    }
}

/// Throughput and latency measured by a child.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Records produced and acknowledged, or consumed.
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Wall time from the first send (or fetch) to the last ack (or record).
    pub secs: f64,
    /// Median send-to-ack latency (latency runs), or median time a
    /// commit took (transactional runs).
    pub p50_us: Option<f64>,
    /// 99th percentile of the same.
    pub p99_us: Option<f64>,
    /// Transactions committed (transactional runs only).
    pub commits: u64,
}

/// p50 and p99 of latencies in microseconds.
pub fn percentiles(lat: &mut [u64]) -> (Option<f64>, Option<f64>) {
    if lat.is_empty() {
        return (None, None);
    }
    lat.sort_unstable();
    let at = |q: f64| {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat.get(i.min(lat.len() - 1)).map(|&v| v as f64)
    };
    (at(0.50), at(0.99))
}

/// A payload like the Java ProducerPerformance one: random upper-case
/// letters (so lz4 has something, but not everything, to compress).
pub fn payload(size: usize) -> Vec<u8> {
    // xorshift: deterministic, no extra dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

fn parent_main(args: &[String]) -> i32 {
    let mut quick = false;
    let mut runs: usize = 1;
    let mut clients: Vec<String> = CLIENTS.iter().map(|s| s.to_string()).collect();
    let mut only: Option<Vec<String>> = None;
    let mut bootstrap =
        std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--clients" => {
                clients = it
                    .next()
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default()
            }
            "--workloads" => only = it.next().map(|s| s.split(',').map(str::to_owned).collect()),
            "--bootstrap" => {
                if let Some(b) = it.next() {
                    bootstrap = b.clone();
                }
            }
            "--runs" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) if n >= 1 => runs = n,
                _ => {
                    eprintln!("--runs needs a count of at least 1");
                    return 2;
                }
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench-harness [--quick] [--runs N] [--clients {} (default), also {}] [--workloads produce,consume,latency (default), also produce-txn] [--bootstrap HOST:PORT]",
                    CLIENTS.join(","),
                    EXTRA_CLIENTS.join(",")
                );
                println!(
                    "  --workloads takes name prefixes; produce-txn (transactional produce, {}) runs only when named",
                    TXN_CLIENTS.join(",")
                );
                return 0;
            }
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    if clients.is_empty() {
        eprintln!("--clients needs at least one client");
        return 2;
    }
    if let Some(c) = clients
        .iter()
        .find(|c| !CLIENTS.contains(&c.as_str()) && !EXTRA_CLIENTS.contains(&c.as_str()))
    {
        eprintln!(
            "unknown client {c:?}; known: {}",
            CLIENTS
                .iter()
                .chain(&EXTRA_CLIENTS)
                .copied()
                .collect::<Vec<_>>()
                .join(",")
        );
        return 2;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find own executable: {e}");
            return 1;
        }
    };
    let java_cp = if clients.iter().any(|c| c == "java") {
        match java::classpath() {
            Ok(cp) => Some(cp),
            Err(e) => {
                eprintln!("java client disabled: {e}");
                clients.retain(|c| c != "java");
                None
            }
        }
    } else {
        None
    };
    let run_id = std::process::id();
    let mut samples: BTreeMap<(usize, String), Vec<Outcome>> = BTreeMap::new();
    let mut topics_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut created: Vec<String> = Vec::new();
    let wls = workloads(quick);
    for (wi, w) in wls.iter().enumerate() {
        if let Some(only) = &only {
            if !only.iter().any(|o| w.selected_by(o)) {
                continue;
            }
        } else if w.op == Op::ProduceTxn {
            continue;
        }
        let skipped: Vec<&str> = clients
            .iter()
            .map(String::as_str)
            .filter(|c| !supports(c, w.op))
            .collect();
        if !skipped.is_empty() {
            eprintln!("{}: {} cannot run it, skipped", w.name, skipped.join(","));
        }
        // Repetitions alternate between the clients, so that a slow phase
        // of the machine or the broker does not fall on one client only.
        for (rep, client) in (0..runs).flat_map(|r| clients.iter().map(move |c| (r, c))) {
            if !supports(client, w.op) {
                continue;
            }
            // A repeated produce run writes a topic of its own; the first
            // run's is what the consumers read.
            let topic = match w.op {
                Op::Produce | Op::Latency | Op::ProduceTxn => {
                    let t = format!(
                        "bench-{run_id}-{wi}-{rep}-{client}-{}",
                        w.name.replace([' ', '/'], "_")
                    );
                    if let Err(e) = clients::ours::create_topic(&bootstrap, &t, w.partitions) {
                        eprintln!("create topic {t}: {e}");
                        continue;
                    }
                    // Deleted at the end: the broker removes a deleted
                    // topic's files a minute later, which would land in
                    // some later client's run.
                    created.push(t.clone());
                    t
                }
                Op::Consume => {
                    // Every client reads the same data: what rskafka wrote
                    // (or, without it, the first client that produced).
                    let src = w.source.clone().unwrap_or_default();
                    let Some(by_client) = topics_of.get(&src) else {
                        eprintln!("{}: no produced topic to read", w.name);
                        continue;
                    };
                    match by_client
                        .get("rskafka")
                        .or_else(|| by_client.values().next())
                    {
                        Some(t) => t.clone(),
                        None => continue,
                    }
                }
            };
            let job = Job {
                bootstrap: bootstrap.clone(),
                topic: topic.clone(),
                partitions: w.partitions,
                commit: w.commit,
                count: w.count,
                size: w.size,
                compression: w.compression.to_owned(),
                rate: w.rate,
            };
            eprintln!(
                "[{}] {} {} (run {}) ...",
                now_hms(),
                w.name,
                client,
                rep + 1
            );
            let timeout = Duration::from_secs(if quick { 120 } else { 600 });
            let out = if client == "java" {
                let Some(cp) = java_cp.as_deref() else {
                    continue;
                };
                let mut cmd = java::command(cp, w.op, &job, &format!("bench-{run_id}-{wi}-{rep}"));
                run_child(&mut cmd, timeout).and_then(|(stdout, cpu, rss)| {
                    java::parse(w.op, &job, &stdout).map(|m| (m, cpu, rss))
                })
            } else {
                let mut cmd = Command::new(&exe);
                cmd.arg("child").arg(client).arg(w.op.name()).args([
                    job.bootstrap.clone(),
                    job.topic.clone(),
                    job.count.to_string(),
                    job.size.to_string(),
                    job.compression.clone(),
                    job.rate.to_string(),
                    job.partitions.to_string(),
                    job.commit.map_or("-".to_owned(), CommitEvery::label),
                ]);
                run_child(&mut cmd, timeout)
                    .and_then(|(stdout, cpu, rss)| parse_result(&stdout).map(|m| (m, cpu, rss)))
            };
            match out {
                Ok((m, cpu, rss)) => {
                    if m.records < w.count {
                        eprintln!("  short run: {} of {} records", m.records, w.count);
                    }
                    let o = Outcome {
                        records: m.records,
                        bytes: m.bytes,
                        secs: m.secs,
                        p50_us: m.p50_us,
                        p99_us: m.p99_us,
                        commits: m.commits,
                        cpu_secs: cpu,
                        max_rss_kib: rss,
                    };
                    eprintln!(
                        "  {:.0} rec/s, {:.1} MB/s, {:.2} CPU s/Mrec, {} MiB RSS{}{}",
                        rate(&o),
                        o.bytes as f64 / o.secs / 1e6,
                        cpu_per_m(&o),
                        o.max_rss_kib / 1024,
                        if o.commits > 0 {
                            format!(", {:.1} commits/s", commits_per_sec(&o))
                        } else {
                            String::new()
                        },
                        match (o.p50_us, o.p99_us) {
                            (Some(a), Some(b)) => format!(
                                ", {}p50 {:.2} ms, p99 {:.2} ms",
                                if o.commits > 0 { "commit " } else { "" },
                                a / 1e3,
                                b / 1e3
                            ),
                            _ => String::new(),
                        }
                    );
                    if w.op == Op::Produce && rep == 0 {
                        topics_of
                            .entry(w.name.clone())
                            .or_default()
                            .insert(client.clone(), topic.clone());
                    }
                    samples.entry((wi, client.clone())).or_default().push(o);
                }
                Err(e) => eprintln!("  FAILED: {e}"),
            }
        }
    }
    if runs > 1 {
        println!();
        println!("Each figure is the median of {runs} runs per client, the clients alternating.");
        for ((wi, client), v) in &samples {
            if v.len() < runs {
                println!(
                    "- {} {client}: only {} of {runs} runs succeeded",
                    wls[*wi].name,
                    v.len()
                );
            }
        }
    }
    let results: BTreeMap<(usize, String), Outcome> = samples
        .into_iter()
        .map(|(k, v)| (k, median_outcome(&v)))
        .collect();
    print_tables(&wls, &clients, &results, quick);
    for t in created {
        if let Err(e) = clients::ours::delete_topic(&bootstrap, &t) {
            eprintln!("delete topic {t}: {e}");
        }
    }
    0
}

/// Each figure the median of the runs' (taken separately, so a row need not
/// be any one run); the upper median for an even count.
fn median_outcome(runs: &[Outcome]) -> Outcome {
    fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
        let some: Vec<f64> = v.into_iter().flatten().collect();
        (!some.is_empty()).then(|| median(some))
    }
    Outcome {
        records: median(runs.iter().map(|o| o.records).collect()),
        bytes: median(runs.iter().map(|o| o.bytes).collect()),
        secs: median(runs.iter().map(|o| o.secs).collect()),
        p50_us: median_opt(runs.iter().map(|o| o.p50_us).collect()),
        p99_us: median_opt(runs.iter().map(|o| o.p99_us).collect()),
        commits: median(runs.iter().map(|o| o.commits).collect()),
        cpu_secs: median(runs.iter().map(|o| o.cpu_secs).collect()),
        max_rss_kib: median(runs.iter().map(|o| o.max_rss_kib).collect()),
    }
}

fn now_hms() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn rate(o: &Outcome) -> f64 {
    o.records as f64 / o.secs.max(1e-9)
}

fn cpu_per_m(o: &Outcome) -> f64 {
    o.cpu_secs / (o.records.max(1) as f64 / 1e6)
}

fn commits_per_sec(o: &Outcome) -> f64 {
    o.commits as f64 / o.secs.max(1e-9)
}

fn print_tables(
    wls: &[Workload],
    clients: &[String],
    results: &BTreeMap<(usize, String), Outcome>,
    quick: bool,
) {
    println!();
    println!(
        "## Results{} (load before: {})",
        if quick { " (--quick)" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let is_txn = |wi: usize| wls[wi].op == Op::ProduceTxn;
    let any_txn = results.keys().any(|(wi, _)| is_txn(*wi));
    if !any_txn || results.keys().any(|(wi, _)| !is_txn(*wi)) {
        print_main_table(wls, clients, results);
    }
    if any_txn {
        print_txn_table(wls, clients, results);
    }
}

/// The rows of one table, workload by workload, client by client: the
/// transactional workloads or the others; with each the rskafka outcome to
/// compare with (none on rskafka's own row).
fn rows<'a>(
    wls: &'a [Workload],
    clients: &'a [String],
    results: &'a BTreeMap<(usize, String), Outcome>,
    txn: bool,
) -> impl Iterator<Item = (&'a Workload, &'a str, &'a Outcome, Option<&'a Outcome>)> {
    wls.iter()
        .enumerate()
        .filter(move |(_, w)| (w.op == Op::ProduceTxn) == txn)
        .flat_map(move |(wi, w)| {
            let ours = results.get(&(wi, "rskafka".to_owned()));
            clients.iter().filter_map(move |c| {
                let o = results.get(&(wi, c.clone()))?;
                Some((w, c.as_str(), o, ours.filter(|_| c != "rskafka")))
            })
        })
}

/// `{:.2}` of milliseconds given in microseconds, or `-`.
fn ms(us: Option<f64>) -> String {
    us.map_or("-".to_owned(), |v| format!("{:.2}", v / 1e3))
}

/// `{:.2}` of `a / b`, or `-` without a positive `b`.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

fn print_main_table(
    wls: &[Workload],
    clients: &[String],
    results: &BTreeMap<(usize, String), Outcome>,
) {
    println!();
    println!("Ratios are other client / rskafka (for records/s higher is better for the other client; for CPU and RSS lower is).");
    println!();
    println!("| workload | client | records/s | MB/s | CPU s per M records | peak RSS MiB | p50 ms | p99 ms | records/s ratio | CPU ratio | RSS ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, c, o, base) in rows(wls, clients, results, false) {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {} |",
            w.name,
            c,
            rate(o),
            o.bytes as f64 / o.secs.max(1e-9) / 1e6,
            cpu_per_m(o),
            o.max_rss_kib / 1024,
            ms(o.p50_us),
            ms(o.p99_us),
            ratio(rate(o), base.map(rate)),
            ratio(cpu_per_m(o), base.map(cpu_per_m)),
            ratio(o.max_rss_kib as f64, base.map(|b| b.max_rss_kib as f64)),
        );
    }
}

/// The transactional workloads: commits per second and the time a commit
/// took besides the main table's figures; ratios the other way round from
/// the main table's, rskafka over the row's client.
fn print_txn_table(
    wls: &[Workload],
    clients: &[String],
    results: &BTreeMap<(usize, String), Outcome>,
) {
    println!();
    println!("Transactional produce. Ratios are rskafka / the row's client (records/s and commits/s: above 1 is rskafka faster; CPU and RSS: below 1 is rskafka using less). Commit p50/p99: the time `commit_transaction` took.");
    println!();
    println!("| workload | client | records/s | MB/s | CPU s per M records | peak RSS MiB | commits/s | commit p50 ms | commit p99 ms | records/s rskafka/this | CPU rskafka/this | RSS rskafka/this | commits/s rskafka/this |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, c, o, ours) in rows(wls, clients, results, true) {
        // rskafka's figure over this row's: `ratio(ours, this)`.
        let vs = |f: fn(&Outcome) -> f64| ours.map_or("-".to_owned(), |b| ratio(f(b), Some(f(o))));
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            w.name,
            c,
            rate(o),
            o.bytes as f64 / o.secs.max(1e-9) / 1e6,
            cpu_per_m(o),
            o.max_rss_kib / 1024,
            commits_per_sec(o),
            ms(o.p50_us),
            ms(o.p99_us),
            vs(rate),
            vs(cpu_per_m),
            vs(|o| o.max_rss_kib as f64),
            vs(commits_per_sec),
        );
    }
}

fn parse_result(stdout: &str) -> Result<Measured, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| format!("no RESULT line in child output: {stdout:?}"))?;
    let mut m = Measured::default();
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=').ok_or("bad RESULT field")?;
        let f: f64 = v.parse().map_err(|_| format!("bad number {v}"))?;
        match k {
            "records" => m.records = f as u64,
            "bytes" => m.bytes = f as u64,
            "secs" => m.secs = f,
            "p50_us" if f >= 0.0 => m.p50_us = Some(f),
            "p99_us" if f >= 0.0 => m.p99_us = Some(f),
            "commits" => m.commits = f as u64,
            _ => {}
        }
    }
    Ok(m)
}

/// Runs a child to completion (killed after `timeout`), returning its
/// stdout, its CPU seconds (user + system) and its peak RSS in KiB, both
/// from `wait4`, so they cover that child alone.
fn run_child(cmd: &mut Command, timeout: Duration) -> Result<(String, f64, i64), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let (status, ru) = loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall on our own child with valid out-pointers.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru);
        }
        if r < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() > deadline {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("child failed (status {status}); stdout: {out}"));
    }
    Ok((out, cpu, ru.ru_maxrss))
}
