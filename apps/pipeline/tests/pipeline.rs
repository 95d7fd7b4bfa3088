//! The `ingest` and `process` binaries against the broker of
//! `KAFKA_BOOTSTRAP` (skipped with a notice without one): every event ends
//! in `.processed`, poison events end in the DLQ while their partition keeps
//! flowing, a worker killed with SIGKILL and restarted loses nothing (and,
//! with `consumer.exactly_once`, duplicates nothing under read_committed),
//! a restart of the broker (a private one) mid-run loses nothing, and a bad
//! setting is one line and exit 2.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use rskafka::{
    client::{
        partition::{IsolationLevel, OffsetAt},
        producer::{ProducerConfig, ProducerRecord},
        Client, ClientBuilder,
    },
    record::Record,
};

use testkit::{bootstrap, unique, Process};

const INGEST: &str = env!("CARGO_BIN_EXE_ingest");
const PROCESS: &str = env!("CARGO_BIN_EXE_process");

/// The settings of one test's pipeline, as `KAFKA_…` variables.
#[derive(Clone)]
struct Pipe {
    bootstrap: String,
    topic: String,
    group: String,
    extra: Vec<(String, String)>,
    config_dir: PathBuf,
}

impl Pipe {
    fn new(bootstrap: &str, name: &str, partitions: i32) -> Self {
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

    fn env(&self) -> Vec<(String, String)> {
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

    fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .envs(self.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Runs `ingest ARGS` to its end; its final line.
    fn ingest(&self, args: &[&str]) -> String {
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

    fn start(&self, name: &str) -> Service {
        Service::start(self.command(PROCESS, &["start"]), name)
    }

    async fn client(&self) -> Client {
        ClientBuilder::new(vec![self.bootstrap.clone()])
            .build()
            .await
            .expect("client")
    }
}

/// A running `ingest` or `process`.
type Service = Process;

/// The metrics address from a process's start line (waits up to 30 s).
fn metrics_addr(p: &Process) -> String {
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
async fn wait_ready(p: &Process) {
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
async fn wait_for<F: std::future::Future<Output = bool>>(
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
async fn read_all(client: &Client, topic: &str) -> Vec<Record> {
    read_all_at(client, topic, IsolationLevel::ReadUncommitted).await
}

/// [`read_all`] at `isolation`: under read_committed, up to the last stable
/// offset and without the records of aborted transactions.
async fn read_all_at(client: &Client, topic: &str, isolation: IsolationLevel) -> Vec<Record> {
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

fn json(r: &Record) -> Option<serde_json::Value> {
    serde_json::from_slice(r.value.as_deref()?).ok()
}

fn event_id(r: &Record) -> Option<String> {
    json(r)?.get("event_id")?.as_str().map(str::to_owned)
}

/// How often each event id appears in `records`.
fn id_counts(records: &[Record]) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in records.iter().filter_map(event_id) {
        *seen.entry(id).or_default() += 1;
    }
    seen
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
}

/// Waits (at most `secs`) until `.processed` holds every event id of the
/// events topic; returns how often each id appears there.
async fn wait_all_processed(pipe: &Pipe, expected: usize, secs: u64) -> HashMap<String, usize> {
    wait_all_processed_at(pipe, expected, secs, IsolationLevel::ReadUncommitted).await
}

/// [`wait_all_processed`], reading `.processed` at `isolation`.
async fn wait_all_processed_at(
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

/// The total lag `process lag` prints.
fn total_lag(pipe: &Pipe) -> i64 {
    let out = pipe
        .command(PROCESS, &["lag"])
        .output()
        .expect("process lag");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.split(": ").nth(1).filter(|_| l.starts_with("total lag")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in {text}"))
}

async fn wait_lag_zero(pipe: &Pipe) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = total_lag(pipe);
        if lag == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "lag stays at {lag}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_to_processed_with_metrics_lag_and_seek() {
    let Some(bootstrap) = bootstrap() else { return };
    let pipe = Pipe::new(&bootstrap, "pipe-e2e", 3);
    pipe.ingest(&["users", "--count", "300"]);
    let mut workers = vec![pipe.start("process-a"), pipe.start("process-b")];
    for w in &workers {
        wait_ready(w).await;
    }
    pipe.ingest(&["orders", "--count", "300"]);
    let line = pipe.ingest(&[
        "custom",
        "--event-type",
        "custom",
        "--payload",
        r#"{"k":[1,2,3]}"#,
        "--count",
        "100",
        "--tenant-id",
        "acme",
    ]);
    assert!(line.contains("acked=100"), "{line}");
    let seen = wait_all_processed(&pipe, 700, 60).await;
    let dup: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(dup, 0, "no worker died: no duplicates expected");

    // The enrichment, and one tenant's events in order on one partition.
    let client = pipe.client().await;
    let processed = read_all(&client, &format!("{}.processed", pipe.topic)).await;
    let acme: Vec<&Record> = processed
        .iter()
        .filter(|r| r.key.as_deref() == Some(&b"acme"[..]))
        .collect();
    assert_eq!(acme.len(), 100);
    for r in &processed {
        let v = json(r).expect("JSON");
        assert!(v["processed_at"].is_string(), "{v}");
        assert!(v["payload"].is_object() || v["payload"].is_array(), "{v}");
    }

    // Metrics and health of a worker.
    let addr = metrics_addr(&workers[0]);
    let (code, body) = pipeline::metrics::http_get(&addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    for name in [
        "kafka_producer_messages_produced_total",
        "kafka_consumer_messages_consumed_total",
        "kafka_producer_duration_seconds_bucket",
        "kafka_consumer_processing_duration_seconds_count",
        "kafka_end_to_end_latency_seconds_count",
        "kafka_events_retried_total",
        "kafka_events_dead_lettered_total",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert_eq!(
        pipeline::metrics::http_get(&addr, "/healthz")
            .await
            .unwrap()
            .0,
        200
    );
    let mut metrics_cmd = pipe.command(PROCESS, &["metrics"]);
    metrics_cmd.env("KAFKA_OBSERVABILITY__METRICS_ADDR", &addr);
    let out = metrics_cmd.output().expect("process metrics");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kafka_consumer_messages_consumed_total"));

    wait_lag_zero(&pipe).await;

    // Seek is refused while the group has members.
    let seek = [
        "seek",
        "--topic",
        pipe.topic.as_str(),
        "--partition",
        "0",
        "--offset",
        "0",
    ];
    let out = pipe.command(PROCESS, &seek).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));

    for w in &mut workers {
        assert!(w.stop().success(), "{}", w.output());
        assert!(w.output().contains("process stopped:"), "{}", w.output());
    }
    // With the group empty it is allowed: partition 0 is read again.
    let out = pipe.command(PROCESS, &seek).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(total_lag(&pipe) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_end_in_the_dlq_while_the_partition_flows() {
    poison_events(false).await;
}

/// The same with `consumer.exactly_once`, read under read_committed: the
/// retries not yet due are set aside instead of waited for, and every
/// output is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_end_in_the_dlq_exactly_once() {
    poison_events(true).await;
}

async fn poison_events(exactly_once: bool) {
    let Some(bootstrap) = bootstrap() else { return };
    // One partition: the poison and the good events share it.
    let mut pipe = Pipe::new(&bootstrap, "pipe-poison", 1);
    let isolation = if exactly_once {
        pipe.extra.extend([
            ("KAFKA_CONSUMER__EXACTLY_ONCE".into(), "true".into()),
            (
                "KAFKA_CONSUMER__TRANSACTIONAL_ID".into(),
                format!("{}-w1", pipe.group),
            ),
        ]);
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    pipe.ingest(&["users", "--count", "50", "--tenant-id", "t"]);
    let client = pipe.client().await;
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let raw = |v: &[u8]| Record {
        key: Some(Bytes::from_static(b"t")),
        value: Some(Bytes::copy_from_slice(v)),
        headers: Vec::new(),
        timestamp: time::OffsetDateTime::now_utc(),
    };
    producer
        .send(ProducerRecord::new(pipe.topic.clone(), raw(b"{not json")))
        .await
        .unwrap()
        .await
        .unwrap();
    drop(producer);
    pipe.ingest(&[
        "custom",
        "--event-type",
        "test.fail",
        "--payload",
        "{}",
        "--count",
        "2",
        "--tenant-id",
        "t",
    ]);
    pipe.ingest(&[
        "custom",
        "--event-type",
        "test.flaky",
        "--payload",
        "{}",
        "--count",
        "3",
        "--tenant-id",
        "t",
    ]);
    pipe.ingest(&["orders", "--count", "50", "--tenant-id", "t"]);

    let mut worker = pipe.start("process-poison");
    // Every valid event but the two test.fail ones is processed (flaky ones
    // on their second attempt).
    let deadline = Instant::now() + Duration::from_secs(60);
    let processed_topic = format!("{}.processed", pipe.topic);
    let dlq_topic = format!("{}.dlq", pipe.topic);
    let (processed, dlq) = loop {
        let processed = read_all_at(&client, &processed_topic, isolation).await;
        let dlq = read_all_at(&client, &dlq_topic, isolation).await;
        if processed.len() >= 103 && dlq.len() >= 3 {
            break (processed, dlq);
        }
        assert!(
            Instant::now() < deadline,
            "processed {} dlq {}:\n{}",
            processed.len(),
            dlq.len(),
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let types: HashMap<String, usize> = processed.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(json(r).unwrap()["event_type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        m
    });
    assert_eq!(types.get("user.created"), Some(&50), "{types:?}");
    assert_eq!(types.get("order.created"), Some(&50), "{types:?}");
    assert_eq!(types.get("test.flaky"), Some(&3), "{types:?}");
    assert!(!types.contains_key("test.fail"));

    // The DLQ: the bad JSON after one attempt, test.fail after three.
    let bad: Vec<&Record> = dlq
        .iter()
        .filter(|r| r.value.as_deref() == Some(&b"{not json"[..]))
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(header(bad[0], "x-attempt"), Some("1"));
    assert!(header(bad[0], "x-error")
        .unwrap()
        .contains("invalid event JSON"));
    assert_eq!(header(bad[0], "x-original-offset"), Some("50"));
    let failed: Vec<&Record> = dlq
        .iter()
        .filter(|r| json(r).is_some_and(|v| v["event_type"] == "test.fail"))
        .collect();
    assert_eq!(failed.len(), 2);
    for r in &failed {
        assert_eq!(header(r, "x-attempt"), Some("3"));
        assert_eq!(header(r, "x-original-topic"), Some(pipe.topic.as_str()));
        assert!(header(r, "x-error").unwrap().contains("always fails"));
    }
    // The retry topic saw test.fail twice each and test.flaky once each.
    let retry = read_all_at(&client, &format!("{}.retry", pipe.topic), isolation).await;
    assert_eq!(retry.len(), 2 * 2 + 3);
    assert!(retry.iter().all(|r| header(r, "x-retry-at").is_some()));

    wait_lag_zero(&pipe).await;
    assert!(worker.stop().success(), "{}", worker.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_loses_no_event() {
    let Some(bootstrap) = bootstrap() else { return };
    let pipe = Pipe::new(&bootstrap, "pipe-kill", 6);
    // Create the topics before the workers join.
    pipe.ingest(&["users", "--count", "1"]);
    let mut a = pipe.start("process-a");
    let mut b = pipe.start("process-b");
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut load = Service::start(
        pipe.command(INGEST, &["load-test", "--rate", "2000", "--duration", "12"]),
        "ingest-load",
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a2 = pipe.start("process-a2");
    let status = load.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", load.output());
    assert!(load.output().contains("failed=0"), "{}", load.output());
    let seen = wait_all_processed(&pipe, 24_001, 90).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 of one of two workers: {} events, all in .processed, {duplicates} duplicates",
        seen.len()
    );
    let mut a2 = a2;
    assert!(a2.stop().success(), "{}", a2.output());
    assert!(b.stop().success(), "{}", b.output());
}

/// A worker's `kafka_events_processed_total`.
async fn processed_by(p: &Process) -> u64 {
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
async fn wait_processed(p: &Process, n: u64) {
    let what = format!("processed {n} events");
    wait_for(p, &what, || async { processed_by(p).await >= n }).await;
}

/// `(records, distinct event ids)` of `topic` read by librdkafka under
/// read_committed; `None` (with a notice) without python3 and
/// confluent_kafka.
fn librdkafka_read_committed(bootstrap: &str, topic: &str) -> Option<(usize, usize)> {
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

/// The issue's check: 200,000 events through two exactly-once workers, one
/// of them SIGKILLed three times (each time after it committed work of its
/// own, while events keep coming) and started again with the same
/// transactional id. Under read_committed `.processed` holds every event
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_workers_killed_three_times_write_every_event_once() {
    let Some(bootstrap) = bootstrap() else { return };
    let started = Instant::now();
    let mut pipe = Pipe::new(&bootstrap, "pipe-eos", 6);
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
    for round in 1..=3 {
        // Killed while busy: after its first commits, with events pending.
        wait_processed(&a, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.kill9();
        a = worker(&format!("process-a{round}"), "a");
        wait_ready(&a).await;
    }
    let status = load.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", load.output());
    assert!(load.output().contains("failed=0"), "{}", load.output());
    wait_all_processed_at(&pipe, 200_000, 240, IsolationLevel::ReadCommitted).await;
    // Stopped, so that nothing more is written while counting.
    assert!(a.stop().success(), "{}", a.output());
    assert!(b.stop().success(), "{}", b.output());

    let client = pipe.client().await;
    let processed = format!("{}.processed", pipe.topic);
    let committed = read_all_at(&client, &processed, IsolationLevel::ReadCommitted).await;
    let seen = id_counts(&committed);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let aborted = read_all(&client, &processed).await.len() - committed.len();
    eprintln!(
        "exactly once, one of two workers SIGKILLed 3 times: {} distinct events in .processed \
         under read_committed, {duplicates} duplicates, {aborted} records of aborted \
         transactions; {:.0?} in all",
        seen.len(),
        started.elapsed()
    );
    assert_eq!(duplicates, 0);
    assert_eq!(seen.len(), 200_000);
    // An independent reader agrees.
    if let Some(counts) = librdkafka_read_committed(&bootstrap, &processed) {
        eprintln!("librdkafka under read_committed: {counts:?} (records, distinct)");
        assert_eq!(counts, (200_000, 200_000), "librdkafka");
    }
}

/// A worker started with the transactional id of one still running fences
/// it: the older one's next transaction fails, and it leaves the group and
/// exits 1; the newer one goes on, and no event is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_exactly_once_worker_exits_1_and_its_successor_goes_on() {
    let Some(bootstrap) = bootstrap() else { return };
    let mut pipe = Pipe::new(&bootstrap, "pipe-fenced", 2);
    pipe.extra.extend([
        ("KAFKA_CONSUMER__EXACTLY_ONCE".into(), "true".into()),
        (
            "KAFKA_CONSUMER__TRANSACTIONAL_ID".into(),
            format!("{}-w1", pipe.group),
        ),
    ]);
    pipe.ingest(&["users", "--count", "500"]);
    let mut old = pipe.start("process-old");
    wait_ready(&old).await;
    wait_processed(&old, 500).await;
    let mut new = pipe.start("process-new");
    // The new one's initialization fences the old one, which notices at
    // its next transaction.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pipe.ingest(&["orders", "--count", "500"]);
    let status = old.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", old.output());
    assert!(
        old.output()
            .contains("another worker with this id took over"),
        "{}",
        old.output()
    );
    let seen = wait_all_processed_at(&pipe, 1000, 90, IsolationLevel::ReadCommitted).await;
    assert_eq!(seen.values().map(|n| n - 1).sum::<usize>(), 0);
    assert!(new.stop().success(), "{}", new.output());
}

#[test]
fn a_bad_setting_is_one_line_and_exit_2() {
    for (bin, args) in [
        (INGEST, &["users", "--count", "1"][..]),
        (PROCESS, &["start"][..]),
    ] {
        for (var, value, key) in [
            ("KAFKA_CONSUMER__BATCH_SIZE", "lots", "consumer.batch_size"),
            (
                "KAFKA_KAFKA__SECURITY_PROTOCOL",
                "TLS",
                "kafka.security_protocol",
            ),
            (
                "KAFKA_OBSERVABILITY__METRICS_ADDR",
                "here",
                "observability.metrics_addr",
            ),
        ] {
            let out = Command::new(bin)
                .args(args)
                .env("PIPELINE_CONFIG_DIR", "/nonexistent")
                .env(var, value)
                .output()
                .expect("run");
            assert_eq!(out.status.code(), Some(2), "{bin} {var}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with(&format!("error: {key}:")), "{err}");
        }
    }
    // An exactly-once worker needs its own transactional id.
    let out = Command::new(PROCESS)
        .arg("start")
        .env("PIPELINE_CONFIG_DIR", "/nonexistent")
        .env("KAFKA_CONSUMER__EXACTLY_ONCE", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: consumer.transactional_id:"),
        "{err}"
    );
}

/// A broker of this test's own (the shared one must never restart under
/// other tests), started through the repository's `scripts/kafka` on free
/// ports, with its data under `target/`; stopped and removed on drop.
struct PrivateBroker {
    port: u16,
    dir: PathBuf,
    /// Holds the range's last port, so no other test takes the range.
    _hold: std::net::TcpListener,
}

impl PrivateBroker {
    fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (port, hold) = (0..50u16)
            .map(|i| 29_900 + i * 10)
            .find_map(|base| {
                let free =
                    (base..base + 4).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
                let hold = std::net::TcpListener::bind(("127.0.0.1", base + 4)).ok()?;
                free.then_some((base, hold))
            })
            .expect("a free port range");
        let broker = Self {
            port,
            dir: root.join(format!("target/kafka-private-{port}")),
            _hold: hold,
        };
        broker.script(&["up", "--fresh"]);
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka");
        let out = Command::new(script)
            .args(args)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .env("KAFKA_DIR", &self.dir)
            .env("KAFKA_SECURITY", "0")
            .env("KAFKA_SASL_PLAINTEXT_PORT", (self.port + 2).to_string())
            .env("KAFKA_SSL_PORT", (self.port + 3).to_string())
            .env("KAFKA_SASL_SSL_PORT", (self.port + 5).to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"))
            .args(["down", "--clean"])
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .env("KAFKA_DIR", &self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_no_event() {
    // The broker under test is a private one; KAFKA_BOOTSTRAP only says
    // that brokers may be started here.
    let Some(_) = bootstrap() else { return };
    let broker = PrivateBroker::start();
    let pipe = Pipe::new(&broker.bootstrap(), "pipe-restart", 3);
    pipe.ingest(&["users", "--count", "1"]);
    let mut a = pipe.start("process-a");
    let mut b = pipe.start("process-b");
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut load = Service::start(
        pipe.command(INGEST, &["load-test", "--rate", "1000", "--duration", "15"]),
        "ingest-load",
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Stops the broker cleanly and starts it again on the same data.
    broker.script(&["restart"]);
    let status = load.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", load.output());
    assert!(load.output().contains("failed=0"), "{}", load.output());
    let seen = wait_all_processed(&pipe, 15_001, 120).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "broker restarted mid-run: {} events, all in .processed, {duplicates} duplicates",
        seen.len()
    );
    assert!(a.stop().success(), "{}", a.output());
    assert!(b.stop().success(), "{}", b.output());
}
