//! What the pipeline's test binaries share (`mod common;`): a pipeline's
//! settings and its `ingest` and `process` runs, reading its topics, and
//! the exactly-once check that the single-broker and the cluster tests run.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rskafka::{
    client::{
        partition::{IsolationLevel, OffsetAt},
        Client, ClientBuilder,
    },
    record::Record,
};

use testkit::{unique, Process};

pub const INGEST: &str = env!("CARGO_BIN_EXE_ingest");
pub const PROCESS: &str = env!("CARGO_BIN_EXE_process");

/// The settings of one test's pipeline, as `KAFKA_…` variables.
#[derive(Clone)]
pub struct Pipe {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub extra: Vec<(String, String)>,
    pub config_dir: PathBuf,
}

impl Pipe {
    pub fn new(bootstrap: &str, name: &str, partitions: i32) -> Self {
        // An empty config dir: the repository's config/ files stay out.
        let config_dir = std::env::temp_dir().join(unique("pipeline-config"));
        std::fs::create_dir_all(&config_dir).expect("config dir");
        Self {
            bootstrap: bootstrap.to_owned(),
            topic: unique(name),
            group: unique(&format!("{name}-group")),
            extra: vec![
                ("KAFKA_PRODUCER__PARTITIONS".into(), partitions.to_string()),
                ("KAFKA_CONSUMER__RETRY_BACKOFF_MS".into(), "100".into()),
                ("KAFKA_CONSUMER__SESSION_TIMEOUT_MS".into(), "6000".into()),
                (
                    "KAFKA_OBSERVABILITY__METRICS_ADDR".into(),
                    "127.0.0.1:0".into(),
                ),
            ],
            config_dir,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "KAFKA_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                self.bootstrap.clone(),
            ),
            ("KAFKA_PRODUCER__EVENTS_TOPIC".into(), self.topic.clone()),
            ("KAFKA_CONSUMER__GROUP_ID".into(), self.group.clone()),
            (
                "PIPELINE_CONFIG_DIR".into(),
                self.config_dir.display().to_string(),
            ),
        ];
        v.extend(self.extra.iter().cloned());
        v
    }

    pub fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .envs(self.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Runs `ingest ARGS` to its end; its final line.
    pub fn ingest(&self, args: &[&str]) -> String {
        let out = self.command(INGEST, args).output().expect("run ingest");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ingest {args:?} failed:\n{text}");
        let line = text
            .lines()
            .find(|l| l.contains("ingest finished:"))
            .unwrap_or_else(|| panic!("no final line:\n{text}"))
            .to_owned();
        assert!(line.contains(" failed=0 "), "{line}");
        line
    }

    pub fn start(&self, name: &str) -> Service {
        Service::start(self.command(PROCESS, &["start"]), name)
    }

    pub async fn client(&self) -> Client {
        ClientBuilder::new(self.bootstrap.split(',').map(str::to_owned).collect())
            .build()
            .await
            .expect("client")
    }
}

/// A running `ingest` or `process`.
pub type Service = Process;

/// The metrics address from a process's start line (waits up to 30 s).
pub fn metrics_addr(p: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = p.output();
        if let Some(addr) = out
            .lines()
            .find_map(|l| l.split("metrics on http://").nth(1))
            .and_then(|r| r.split('/').next())
        {
            return addr.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{} printed no metrics address:\n{out}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a process's `/readyz` answers 200 (at most 60 s).
pub async fn wait_ready(p: &Process) {
    let addr = metrics_addr(p);
    wait_for(p, "became ready", || async {
        matches!(
            pipeline::metrics::http_get(&addr, "/readyz").await,
            Ok((200, _))
        )
    })
    .await;
}

/// Waits until `done` (checked every 100 ms) for at most 60 s; fails the
/// test with `p`'s output otherwise.
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    p: &Process,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{} never {what}:\n{}",
            p.name,
            p.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of `topic`, all partitions, from the start to the end
/// as of now.
pub async fn read_all(client: &Client, topic: &str) -> Vec<Record> {
    read_all_at(client, topic, IsolationLevel::ReadUncommitted).await
}

/// [`read_all`] at `isolation`: under read_committed, up to the last stable
/// offset and without the records of aborted transactions.
pub async fn read_all_at(client: &Client, topic: &str, isolation: IsolationLevel) -> Vec<Record> {
    let partitions = client
        .list_topics()
        .await
        .expect("topics")
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions)
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in partitions {
        let pc = client
            .partition_client(topic, p)
            .await
            .expect("partition")
            .with_isolation_level(isolation);
        let end = pc.get_offset(OffsetAt::Latest).await.expect("end");
        let mut offset = pc.get_offset(OffsetAt::Earliest).await.expect("start");
        while offset < end {
            // The next offset passes markers and aborted records too.
            let fetched = pc.fetch(offset, 1..8_000_000, 500).await.expect("fetch");
            assert!(
                fetched.next_offset > offset,
                "{topic}/{p}: stuck at {offset}"
            );
            offset = fetched.next_offset;
            out.extend(
                fetched
                    .records
                    .into_iter()
                    .filter(|r| r.offset < end)
                    .map(|r| r.record),
            );
        }
    }
    out
}

pub fn json(r: &Record) -> Option<serde_json::Value> {
    serde_json::from_slice(r.value.as_deref()?).ok()
}

pub fn event_id(r: &Record) -> Option<String> {
    json(r)?.get("event_id")?.as_str().map(str::to_owned)
}

/// How often each event id appears in `records`.
pub fn id_counts(records: &[Record]) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in records.iter().filter_map(event_id) {
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Waits (at most `secs`) until `.processed` holds every event id of the
/// events topic; returns how often each id appears there.
pub async fn wait_all_processed(pipe: &Pipe, expected: usize, secs: u64) -> HashMap<String, usize> {
    wait_all_processed_at(pipe, expected, secs, IsolationLevel::ReadUncommitted).await
}

/// [`wait_all_processed`], reading `.processed` at `isolation`.
pub async fn wait_all_processed_at(
    pipe: &Pipe,
    expected: usize,
    secs: u64,
    isolation: IsolationLevel,
) -> HashMap<String, usize> {
    let client = pipe.client().await;
    let events: HashSet<String> = read_all(&client, &pipe.topic)
        .await
        .iter()
        .filter_map(event_id)
        .collect();
    assert_eq!(events.len(), expected, "events written");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let topic = format!("{}.processed", pipe.topic);
        let seen = id_counts(&read_all_at(&client, &topic, isolation).await);
        let missing = events.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events never reached .processed",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A worker's `kafka_events_processed_total`.
pub async fn processed_by(p: &Process) -> u64 {
    let addr = metrics_addr(p);
    let (code, body) = pipeline::metrics::http_get(&addr, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("{}: /metrics: {e}\n{}", p.name, p.output()));
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("kafka_events_processed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no processed count in\n{body}"))
}

/// Waits until a worker processed `n` events (at most 60 s).
pub async fn wait_processed(p: &Process, n: u64) {
    let what = format!("processed {n} events");
    wait_for(p, &what, || async { processed_by(p).await >= n }).await;
}

/// `(records, distinct event ids)` of `topic` read by librdkafka under
/// read_committed; `None` (with a notice) without python3 and
/// confluent_kafka.
pub fn librdkafka_read_committed(bootstrap: &str, topic: &str) -> Option<(usize, usize)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/read_committed.py");
    let out = Command::new("python3")
        .arg(script)
        .args([bootstrap, topic])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) {
        eprintln!("no librdkafka cross-check: python3 with confluent_kafka is not available");
        return None;
    }
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = text.split_whitespace().map(|v| v.parse().expect("a count"));
    Some((n.next()?, n.next()?))
}

/// The exactly-once check on `pipe` (fresh, 6 partitions): 200,000
/// events through two exactly-once workers, one of them SIGKILLed three
/// times (each time after it committed work of its own, while events keep
/// coming) and started again with the same transactional id, while
/// `disruption` (e.g. a broker kill) runs alongside those kills. Under
/// read_committed `.processed` must hold every event exactly once; `what`
/// names the run in the printed counts.
pub async fn exactly_once_through_worker_kills(
    mut pipe: Pipe,
    what: &str,
    disruption: impl Future<Output = ()>,
) {
    const EVENTS: usize = 200_000;
    let started = Instant::now();
    pipe.extra.extend([
        ("KAFKA_CONSUMER__EXACTLY_ONCE".into(), "true".into()),
        ("KAFKA_CONSUMER__BATCH_SIZE".into(), "1000".into()),
    ]);
    let worker = |name: &str, slot: &str| {
        let mut cmd = pipe.command(PROCESS, &["start"]);
        cmd.env(
            "KAFKA_CONSUMER__TRANSACTIONAL_ID",
            format!("{}-{slot}", pipe.group),
        );
        Service::start(cmd, name)
    };
    // A backlog, then as many events again while the workers run.
    pipe.ingest(&["users", "--count", "100000"]);
    let mut a = worker("process-a", "a");
    let mut b = worker("process-b", "b");
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut load = Service::start(
        pipe.command(INGEST, &["load-test", "--rate", "4000", "--duration", "25"]),
        "ingest-load",
    );
    let worker_kills = async {
        for round in 1..=3 {
            // Killed while busy: after its first commits, with events pending.
            wait_processed(&a, 1).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.kill9();
            a = worker(&format!("process-a{round}"), "a");
            wait_ready(&a).await;
        }
    };
    tokio::join!(worker_kills, disruption);
    let status = load.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", load.output());
    assert!(load.output().contains("failed=0"), "{}", load.output());
    wait_all_processed_at(&pipe, EVENTS, 240, IsolationLevel::ReadCommitted).await;
    // Stopped, so that nothing more is written while counting.
    assert!(a.stop().success(), "{}", a.output());
    assert!(b.stop().success(), "{}", b.output());

    let client = pipe.client().await;
    let events_in = read_all(&client, &pipe.topic).await.len();
    let processed = format!("{}.processed", pipe.topic);
    let committed = read_all_at(&client, &processed, IsolationLevel::ReadCommitted).await;
    let seen = id_counts(&committed);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let aborted = read_all(&client, &processed).await.len() - committed.len();
    eprintln!(
        "exactly once, {what}: {events_in} events in, {} distinct events in .processed under \
         read_committed, {duplicates} duplicates, {aborted} records of aborted transactions; \
         {:.0?} in all",
        seen.len(),
        started.elapsed()
    );
    assert_eq!(duplicates, 0);
    assert_eq!(seen.len(), EVENTS);
    // An independent reader agrees.
    if let Some(counts) = librdkafka_read_committed(&pipe.bootstrap, &processed) {
        eprintln!("librdkafka under read_committed: {counts:?} (records, distinct)");
        assert_eq!(counts, (EVENTS, EVENTS), "librdkafka");
    }
}
