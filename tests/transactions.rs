//! The transactional producer against a real broker (`KAFKA_BOOTSTRAP`;
//! skipped with a notice when unset):
//!
//! - ours read under read_committed by librdkafka (`tests/txn_peer.py`, PyPI
//!   confluent-kafka), the Java client (`tests/txn_java/TxnPeer.java`) and
//!   our own consumer, with offsets sent to the transactions;
//! - theirs (the same peers as producers) read by our consumer;
//! - fencing by a second producer with the same transactional id;
//! - a producer SIGKILLed in the middle of a transaction, completed by a new
//!   instance or by the coordinator's transaction timeout;
//! - offsets refused for group metadata a rebalance made stale (KIP-447);
//! - a partition leader killed in the three-broker cluster
//!   (`KAFKA_CLUSTER_BOOTSTRAP`);
//! - commits and aborts through a proxy that keeps cutting connections.
//!
//! Every record's value names its transaction: `TAG:i:k:j` is record `j`
//! of transaction `i` (from 0) of the producer tagged `TAG`, `k` the
//! transaction's intended end (`c` commit, `a` abort, `o` left open), sent
//! to partition `j % partitions`. A plan such as `c5,a3,c2` lists a
//! producer's transactions: committed of 5 records, aborted of 3, committed
//! of 2. The peers write the same values from the same plans.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Range,
    path::PathBuf,
    process::Stdio,
    sync::{atomic::Ordering, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{future::join_all, StreamExt};
use rskafka::{
    client::{
        consumer::{ConsumerConfig, IsolationLevel, OffsetReset, StartOffset},
        group::{ConsumerGroupMetadata, GroupConfig, GroupConsumer, GroupProtocol, TopicPartition},
        partition::OffsetAt,
        producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord},
        Client, ClientBuilder,
    },
    cluster::{Cluster, ClusterConfig},
    error::{Error, ErrorKind},
    protocol::{messages::FindCoordinatorRequest, ApiKey, ErrorCode},
    record::Record,
};
use time::OffsetDateTime;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

use common::{cluster::TestCluster, unique_topic};

/// A record as read: partition, offset, value.
type Read = (i32, i64, String);

async fn connect(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_owned()])
        .operation_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("client")
}

async fn create_topic(client: &Client, topic: &str, partitions: i32) {
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 30_000)
        .await
        .expect("create topic");
}

// ---------------------------------------------------------------------------
// Plans and values
// ---------------------------------------------------------------------------

fn value(tag: &str, i: usize, kind: char, j: usize) -> String {
    format!("{tag}:{i}:{kind}:{j}")
}

/// (tag, i, j) of a value.
fn parse_value(v: &str) -> Option<(&str, usize, usize)> {
    let mut it = v.rsplitn(4, ':');
    let j = it.next()?.parse().ok()?;
    let _kind = it.next()?;
    let i = it.next()?.parse().ok()?;
    Some((it.next()?, i, j))
}

/// A plan's transactions: (kind letter, record count).
fn parse_plan(plan: &str) -> Vec<(char, usize)> {
    plan.split(',')
        .map(|step| {
            let (kind, count) = step.split_at(1);
            let kind = kind.chars().next().expect("a kind letter");
            assert!("cao".contains(kind), "bad plan step {step}");
            (kind, count.parse().expect("a record count"))
        })
        .collect()
}

/// The values of a plan's committed transactions, and of the others.
fn plan_values(tag: &str, plan: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut committed, mut rest) = (BTreeSet::new(), BTreeSet::new());
    for (i, (kind, count)) in parse_plan(plan).into_iter().enumerate() {
        let set = if kind == 'c' {
            &mut committed
        } else {
            &mut rest
        };
        set.extend((0..count).map(|j| value(tag, i, kind, j)));
    }
    (committed, rest)
}

/// What is wrong with `read` for a reader that must see exactly `expected`:
/// values missing, not expected, read twice, in the wrong partition, or out
/// of order within their partition. Empty when the read is right.
fn mismatches(read: &[Read], expected: &BTreeSet<String>, partitions: i32) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, (i32, i64)> = HashMap::new();
    // Per partition and producer tag, the last (transaction, index) read.
    let mut last: HashMap<(i32, &str), (i64, usize, usize)> = HashMap::new();
    let mut sorted: Vec<&Read> = read.iter().collect();
    sorted.sort_by_key(|(p, o, _)| (*p, *o));
    for (p, o, v) in sorted {
        if let Some(first) = seen.insert(v, (*p, *o)) {
            out.push(format!("{v} read twice: at {first:?} and at {:?}", (p, o)));
        }
        if !expected.contains(v) {
            out.push(format!("{v} (partition {p}, offset {o}) is not expected"));
        }
        match parse_value(v) {
            Some((tag, i, j)) => {
                if j as i64 % i64::from(partitions) != i64::from(*p) {
                    out.push(format!("{v} in partition {p}"));
                }
                if let Some(&(lo, li, lj)) = last.get(&(*p, tag)) {
                    if (li, lj) >= (i, j) {
                        out.push(format!(
                            "{v} at {p}/{o} after {tag}:{li}:?:{lj} at {p}/{lo} (out of order)"
                        ));
                    }
                }
                last.insert((*p, tag), (*o, i, j));
            }
            None => out.push(format!("{v:?} at {p}/{o} is not a test value")),
        }
    }
    for v in expected.iter().filter(|v| !seen.contains_key(v.as_str())) {
        out.push(format!("{v} is missing"));
    }
    out
}

/// Fails unless `read` is exactly `expected` (see [`mismatches`]).
#[track_caller]
fn assert_exact(who: &str, read: &[Read], expected: &BTreeSet<String>, partitions: i32) {
    let wrong = mismatches(read, expected, partitions);
    eprintln!(
        "{who}: {} records read, {} expected, {} mismatches",
        read.len(),
        expected.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{who}: {} mismatches, the first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(12)]
    );
}

/// The checker itself: a right read passes, each kind of wrong read is
/// caught (the broker tests rely on it to fail).
#[test]
fn mismatches_are_found() {
    let (committed, aborted) = plan_values("t", "c3,a2");
    let read = |vals: &[(i32, i64, &str)]| -> Vec<Read> {
        vals.iter()
            .map(|(p, o, v)| (*p, *o, (*v).to_owned()))
            .collect()
    };
    let right = read(&[(0, 0, "t:0:c:0"), (0, 1, "t:0:c:2"), (1, 0, "t:0:c:1")]);
    assert_eq!(mismatches(&right, &committed, 2), Vec::<String>::new());
    assert_eq!(aborted.len(), 2);
    // Missing, aborted, twice, wrong partition, out of order.
    for wrong in [
        read(&[(0, 0, "t:0:c:0"), (1, 0, "t:0:c:1")]),
        read(&[
            (0, 0, "t:0:c:0"),
            (0, 1, "t:0:c:2"),
            (1, 0, "t:0:c:1"),
            (1, 1, "t:1:a:1"),
        ]),
        read(&[
            (0, 0, "t:0:c:0"),
            (0, 1, "t:0:c:2"),
            (0, 2, "t:0:c:2"),
            (1, 0, "t:0:c:1"),
        ]),
        read(&[(0, 0, "t:0:c:0"), (0, 1, "t:0:c:2"), (0, 2, "t:0:c:1")]),
        read(&[(0, 0, "t:0:c:2"), (0, 1, "t:0:c:0"), (1, 0, "t:0:c:1")]),
    ] {
        assert!(!mismatches(&wrong, &committed, 2).is_empty(), "{wrong:?}");
    }
}

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

/// Per partition, where a reader at `isolation` ends: the last stable
/// offset under read_committed, the high watermark otherwise.
async fn ends(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p)
            .await
            .expect("partition client")
            .with_isolation_level(isolation);
        out.insert(
            p,
            pc.get_offset(OffsetAt::Latest).await.expect("end offset"),
        );
    }
    out
}

/// Waits until no transaction is open on any partition of `topic` (the last
/// stable offset is the high watermark); false if that takes longer than
/// `within`.
async fn wait_stable(client: &Client, topic: &str, partitions: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let lso = ends(client, topic, partitions, IsolationLevel::ReadCommitted).await;
        let hw = ends(client, topic, partitions, IsolationLevel::ReadUncommitted).await;
        if lso == hw {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("{topic} not stable: last stable offsets {lso:?}, high watermarks {hw:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every record of `topic` our consumer hands out at `isolation`, from the
/// start to where that isolation ends now.
async fn read_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
) -> Vec<Read> {
    let ends = ends(client, topic, partitions, isolation).await;
    let mut config = ConsumerConfig::default()
        .isolation(isolation)
        .offset_reset(OffsetReset::Error)
        .max_wait(Duration::from_millis(200));
    for p in 0..partitions {
        config = config.assign(topic, p, StartOffset::Earliest);
    }
    let mut consumer = client.consumer(config).expect("consumer");
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_end = |c: &rskafka::client::consumer::Consumer| {
        ends.iter()
            .all(|(p, end)| c.position(topic, *p).is_some_and(|pos| pos >= *end))
    };
    while !at_end(&consumer) {
        assert!(
            Instant::now() < deadline,
            "{isolation:?} read of {topic} did not reach {ends:?}"
        );
        // Bounded: a partition can reach its end on markers alone, which
        // moves the position without handing out records.
        let Ok(batch) =
            tokio::time::timeout(Duration::from_millis(500), consumer.next_batch()).await
        else {
            continue;
        };
        for r in batch.expect("fetch") {
            if r.offset < ends[&r.partition] {
                let v = r.record.value.as_deref().unwrap_or_default();
                read.push((
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
        }
    }
    consumer.close(Duration::from_secs(1)).await;
    read
}

/// The offsets `group` has committed for partitions `0..partitions` of
/// `topic` (nothing for a group that does not exist). Asked for by
/// partition, as stable offsets: offsets of a transaction whose markers are
/// still being written are waited for (UNSTABLE_OFFSET_COMMIT is retried),
/// where asking for all of the group's offsets would leave them out.
async fn committed(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<(String, i32), i64> {
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    match client.group_admin().fetch_offsets(group, Some(&tps)).await {
        Ok(offsets) => offsets
            .into_iter()
            .filter_map(|(tp, c)| Some(((tp.topic.to_string(), tp.partition), c?.offset)))
            .collect(),
        Err(e) if e.error_code() == Some(ErrorCode::GROUP_ID_NOT_FOUND) => BTreeMap::new(),
        Err(e) => panic!("committed offsets of {group}: {e}"),
    }
}

/// Waits until no transaction is open on `topic`, then checks what readers
/// see: under read_committed exactly `committed`; under read_uncommitted
/// nothing twice, and with `hidden` (the records of aborted transactions,
/// all written) exactly `committed` and `hidden`.
async fn assert_settled(
    client: &Client,
    topic: &str,
    partitions: i32,
    who: &str,
    committed: &BTreeSet<String>,
    hidden: Option<&BTreeSet<String>>,
) {
    assert!(
        wait_stable(client, topic, partitions, Duration::from_secs(60)).await,
        "{who}: a transaction is still open"
    );
    let read = read_topic(client, topic, partitions, IsolationLevel::ReadCommitted).await;
    assert_exact(
        &format!("{who}, read_committed"),
        &read,
        committed,
        partitions,
    );
    let all = read_topic(client, topic, partitions, IsolationLevel::ReadUncommitted).await;
    match hidden {
        Some(hidden) => {
            let everything = committed.union(hidden).cloned().collect();
            assert_exact(
                &format!("{who}, read_uncommitted"),
                &all,
                &everything,
                partitions,
            );
        }
        None => assert_no_duplicates(&format!("{who}, read_uncommitted"), &all),
    }
}

/// The broker's address, a client, and a new topic of `partitions`
/// partitions named after `prefix`; `None` when there is no broker.
async fn setup(prefix: &str, partitions: i32) -> Option<(String, Client, String)> {
    let bootstrap = testkit::bootstrap()?;
    let client = connect(&bootstrap).await;
    let topic = unique_topic(prefix);
    create_topic(&client, &topic, partitions).await;
    Some((bootstrap, client, topic))
}

// ---------------------------------------------------------------------------
// The peers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// librdkafka: `tests/txn_peer.py`.
    Python,
    /// The Java client: `tests/txn_java/TxnPeer.java`.
    Java,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The classpath to run `TxnPeer` (the Kafka jars of `scripts/kafka
/// classpath` and the compiled class), compiling it the first time; `None`
/// without java, javac or the jars.
fn java_classpath() -> Option<String> {
    static CLASSPATH: OnceLock<Option<String>> = OnceLock::new();
    CLASSPATH
        .get_or_init(|| {
            let jars = testkit::kafka_jars()?;
            let out = repo().join("target/txn-java-peer");
            std::fs::create_dir_all(&out).ok()?;
            let compiled = std::process::Command::new("javac")
                .arg("-cp")
                .arg(&jars)
                .arg("-d")
                .arg(&out)
                .arg(repo().join("tests/txn_java/TxnPeer.java"))
                .status()
                .ok()?;
            compiled
                .success()
                .then(|| format!("{jars}:{}", out.display()))
        })
        .clone()
}

/// The peers that can run here; prints why the others are skipped.
fn available_peers() -> Vec<Peer> {
    let mut peers = Vec::new();
    if common::python_available() {
        peers.push(Peer::Python);
    }
    if java_classpath().is_some() {
        peers.push(Peer::Java);
    } else {
        testkit::skip("the Java peer: no java/javac or Kafka jars");
    }
    peers
}

fn peer_command(peer: Peer, args: &[&str]) -> Command {
    let mut cmd = match peer {
        Peer::Python => {
            let mut cmd = Command::new("python3");
            cmd.arg(repo().join("tests/txn_peer.py"));
            cmd
        }
        Peer::Java => {
            let classpath = java_classpath().expect("the Java peer is available");
            let mut cmd = Command::new("java");
            cmd.arg("-cp").arg(classpath).arg("TxnPeer");
            cmd
        }
    };
    cmd.args(args).kill_on_drop(true);
    cmd
}

/// Runs a peer to its end; its stdout. Fails the test if it fails.
async fn run_peer(peer: Peer, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        peer_command(peer, args).stdin(Stdio::null()).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{peer:?} peer {args:?} did not finish in time"))
    .unwrap_or_else(|e| panic!("cannot run the {peer:?} peer: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{peer:?} peer {args:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The peer's transactional producer runs `plan`.
async fn peer_produce(peer: Peer, bootstrap: &str, topic: &str, txn_id: &str, plan: &str) {
    let out = run_peer(peer, &["produce", bootstrap, topic, txn_id, plan]).await;
    assert!(
        out.lines().any(|l| l == "done"),
        "{peer:?} did not finish its plan: {out}"
    );
}

/// Everything the peer reads under read_committed.
async fn peer_consume(peer: Peer, bootstrap: &str, topic: &str) -> Vec<Read> {
    let out = run_peer(peer, &["consume", bootstrap, topic]).await;
    let mut read = Vec::new();
    let mut end = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("rec ") {
            let mut f = rest.splitn(3, ' ');
            let (Some(p), Some(o), Some(v)) = (f.next(), f.next(), f.next()) else {
                panic!("{peer:?}: bad line {line:?}");
            };
            read.push((
                p.parse().expect("partition"),
                o.parse().expect("offset"),
                v.to_owned(),
            ));
        } else if let Some(n) = line.strip_prefix("end ") {
            end = Some(n.parse::<usize>().expect("count"));
        }
    }
    assert_eq!(end, Some(read.len()), "{peer:?}'s terminator: {out}");
    read
}

/// A peer whose last transaction is left open (plan ending in `o<n>`),
/// running until killed.
struct OpenPeer {
    child: Child,
    /// When it reported the transaction open (its records written).
    opened: Instant,
}

impl OpenPeer {
    async fn start(peer: Peer, args: &[&str]) -> Self {
        let mut child = peer_command(peer, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the {peer:?} peer: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let opened = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.expect("peer output") {
                if line.starts_with("open ") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(opened, Ok(true)),
            "the {peer:?} peer did not open its transaction: {opened:?}"
        );
        Self {
            child,
            opened: Instant::now(),
        }
    }

    /// SIGKILL: no abort, no clean shutdown.
    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the peer");
    }
}

// ---------------------------------------------------------------------------
// Our producer
// ---------------------------------------------------------------------------

fn txn_config(id: &str) -> ProducerConfig {
    ProducerConfig::default()
        .transactional_id(id)
        .linger(Duration::from_millis(5))
}

fn record(value: String) -> Record {
    Record {
        key: None,
        value: Some(Bytes::from(value)),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

/// Sends records `j` in `records` of transaction `i`; their delivery
/// futures.
async fn send_records(
    producer: &Producer,
    topic: &str,
    tag: &str,
    i: usize,
    kind: char,
    records: Range<usize>,
    partitions: i32,
) -> rskafka::error::Result<Vec<DeliveryFuture>> {
    let mut deliveries = Vec::with_capacity(records.len());
    for j in records {
        let r = ProducerRecord::new(topic, record(value(tag, i, kind, j)))
            .with_partition(j as i32 % partitions);
        deliveries.push(producer.send(r).await?);
    }
    Ok(deliveries)
}

/// Awaits deliveries, bounded by the delivery timeout and then some.
async fn settle(deliveries: Vec<DeliveryFuture>) -> Vec<rskafka::error::Result<()>> {
    tokio::time::timeout(Duration::from_secs(150), join_all(deliveries))
        .await
        .expect("deliveries resolve in time")
        .into_iter()
        .map(|r| r.map(|_| ()))
        .collect()
}

/// Fails unless every record of the committed transaction `i` was
/// delivered.
async fn assert_delivered(i: usize, deliveries: Vec<DeliveryFuture>) {
    let failed: Vec<Error> = settle(deliveries)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failed.is_empty(),
        "transaction {i} committed, yet deliveries failed: {failed:?}"
    );
}

/// Runs `plan` (no `o`) with our producer: committed transactions must
/// commit with every record delivered; aborted ones are written (their
/// deliveries awaited) and then aborted.
async fn run_plan(producer: &Producer, topic: &str, tag: &str, plan: &str, partitions: i32) {
    for (i, (kind, count)) in parse_plan(plan).into_iter().enumerate() {
        producer.begin_transaction().expect("begin_transaction");
        let deliveries = send_records(producer, topic, tag, i, kind, 0..count, partitions)
            .await
            .expect("send");
        match kind {
            'c' => {
                producer.commit_transaction().await.expect("commit");
                assert_delivered(i, deliveries).await;
            }
            'a' => {
                for r in settle(deliveries).await {
                    r.expect("a record of a transaction to abort is written");
                }
                producer.abort_transaction().await.expect("abort");
            }
            other => panic!("our plans have no {other}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Interoperability
// ---------------------------------------------------------------------------

/// Issue: our transactional producer writes committed and aborted
/// transactions over three partitions, with offsets for a group in a
/// committed and in an aborted transaction; librdkafka, the Java client and
/// our consumer under read_committed read exactly the committed records, a
/// read_uncommitted reader every record written; the group's committed
/// offsets are those of the committed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_read_exactly_committed_by_librdkafka_java_and_ours() {
    const PARTITIONS: i32 = 3;
    let Some((bootstrap, client, topic)) = setup("txn-ours", PARTITIONS).await else {
        return;
    };
    let source = format!("{topic}-src");
    create_topic(&client, &source, 2).await;
    let src = |p: i32| TopicPartition::new(source.clone(), p);
    // Offsets in the committed transaction 0 and in the aborted 1; those of
    // `group_aborted` only in the aborted one.
    let group = format!("{topic}-g");
    let group_aborted = format!("{topic}-ga");
    let offsets = [
        (0, &group, vec![(0, 5), (1, 7)]),
        (1, &group, vec![(0, 50), (1, 70)]),
        (1, &group_aborted, vec![(0, 9)]),
    ];
    let tag = format!("{topic}-rs");

    let producer = client
        .producer(txn_config(&format!("{topic}-txn")))
        .expect("producer");
    producer
        .init_transactions()
        .await
        .expect("init_transactions");
    // The last transaction is aborted without waiting for its records.
    let plan = "c6,a4,c5,a3,c7,a5";
    let steps = parse_plan(plan);
    let mut quick_abort = Vec::new();
    for (i, &(kind, count)) in steps.iter().enumerate() {
        producer.begin_transaction().expect("begin_transaction");
        let deliveries = send_records(&producer, &topic, &tag, i, kind, 0..count, PARTITIONS)
            .await
            .expect("send");
        for (_, g, offsets) in offsets.iter().filter(|(t, ..)| *t == i) {
            producer
                .send_offsets_to_transaction(
                    offsets.iter().map(|&(p, o)| (src(p), o)),
                    &ConsumerGroupMetadata::new(g.as_str()),
                )
                .await
                .unwrap_or_else(|e| panic!("offsets for {g} in transaction {i}: {e}"));
        }
        if kind == 'c' {
            producer.commit_transaction().await.expect("commit");
            assert_delivered(i, deliveries).await;
        } else if i + 1 < steps.len() {
            for r in settle(deliveries).await {
                r.expect("a record of a transaction to abort is written");
            }
            producer.abort_transaction().await.expect("abort");
        } else {
            producer.abort_transaction().await.expect("quick abort");
            quick_abort = settle(deliveries).await;
        }
    }
    producer.close().await;

    let (committed_values, aborted_values) = plan_values(&tag, plan);
    let last = steps.len() - 1;
    let quick_values: BTreeSet<String> = (0..steps[last].1)
        .map(|j| value(&tag, last, 'a', j))
        .collect();
    let written_aborted: BTreeSet<String> =
        aborted_values.difference(&quick_values).cloned().collect();
    // The records of the quick abort may have been written or not; one
    // acknowledged is in the log, and a failed one must say why.
    for r in &quick_abort {
        if let Err(e) = r {
            eprintln!("a record of the quick abort: {e}");
        }
    }

    assert!(
        wait_stable(&client, &topic, PARTITIONS, Duration::from_secs(30)).await,
        "transactions still open after the producer closed"
    );
    let ours = read_topic(&client, &topic, PARTITIONS, IsolationLevel::ReadCommitted).await;
    assert_exact("ours, read_committed", &ours, &committed_values, PARTITIONS);
    for peer in available_peers() {
        let theirs = peer_consume(peer, &bootstrap, &topic).await;
        assert_exact(
            &format!("{peer:?}, read_committed"),
            &theirs,
            &committed_values,
            PARTITIONS,
        );
    }
    // Everything written is there for read_uncommitted readers: the aborted
    // records were in the log, and were filtered above.
    let all = read_topic(&client, &topic, PARTITIONS, IsolationLevel::ReadUncommitted).await;
    let acked_quick: BTreeSet<String> = quick_abort
        .iter()
        .zip(&quick_values)
        .filter(|(r, _)| r.is_ok())
        .map(|(_, v)| v.clone())
        .collect();
    let read_quick: BTreeSet<String> = all
        .iter()
        .map(|(_, _, v)| v.clone())
        .filter(|v| quick_values.contains(v))
        .collect();
    assert!(
        acked_quick.is_subset(&read_quick),
        "records of the quick abort acknowledged but not in the log: {:?}",
        acked_quick.difference(&read_quick).collect::<Vec<_>>()
    );
    let expected_all: BTreeSet<String> = committed_values
        .iter()
        .chain(&written_aborted)
        .chain(&read_quick)
        .cloned()
        .collect();
    assert_exact("ours, read_uncommitted", &all, &expected_all, PARTITIONS);
    eprintln!(
        "{} committed, {} aborted and written, {} of {} of the quick abort in the log",
        committed_values.len(),
        written_aborted.len(),
        read_quick.len(),
        quick_values.len()
    );

    assert_eq!(
        committed(&client, &group, &source, 2).await,
        BTreeMap::from([((source.clone(), 0), 5), ((source.clone(), 1), 7)]),
        "the group's offsets are those of the committed transaction"
    );
    assert_eq!(
        committed(&client, &group_aborted, &source, 2).await,
        BTreeMap::new(),
        "offsets sent only in an aborted transaction are not committed"
    );
}

/// Issue (KIP-890): where the broker offers transaction version 2 (Kafka
/// 4's default), our producer uses it: the brokers add the partitions and
/// offsets, and every EndTxn moves the epoch on, so that a late write of an
/// ended transaction is refused. With EndTxn capped at version 4 the same
/// transactions run the protocol from before, the epoch unchanged. Either
/// way read_committed readers see exactly the committed records, and the
/// offsets of the last committed transaction are the group's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transaction_protocols_commit_and_abort_exactly() {
    const PARTITIONS: i32 = 2;
    let plan = "c3,a2,c2,a1";
    for version in [2, 1] {
        let Some((bootstrap, client, topic)) = setup(&format!("txn-v{version}"), PARTITIONS).await
        else {
            return;
        };
        if version == 2 && !offers_transaction_version_2(&bootstrap).await {
            testkit::skip(
                "transaction version 2: the broker has not finalized it (Kafka 4.0+ has)",
            );
            continue;
        }
        let source = format!("{topic}-src");
        create_topic(&client, &source, 1).await;
        let group = format!("{topic}-g");
        let mut builder =
            ClientBuilder::new(vec![bootstrap.clone()]).operation_timeout(Duration::from_secs(60));
        if version == 1 {
            builder = builder.max_api_version(ApiKey::END_TXN, 4);
        }
        let producer_client = builder.build().await.expect("client");
        let tag = format!("{topic}-rs");
        let producer = producer_client
            .producer(txn_config(&format!("{topic}-txn")))
            .expect("producer");
        producer.init_transactions().await.expect("init");
        let (id, first_epoch) = producer.producer_id().expect("a producer id");
        for (i, (kind, count)) in parse_plan(plan).into_iter().enumerate() {
            producer.begin_transaction().expect("begin");
            let deliveries = send_records(&producer, &topic, &tag, i, kind, 0..count, PARTITIONS)
                .await
                .expect("send");
            producer
                .send_offsets_to_transaction(
                    [(TopicPartition::new(source.clone(), 0), i as i64 + 1)],
                    &ConsumerGroupMetadata::new(group.as_str()),
                )
                .await
                .expect("offsets");
            if kind == 'c' {
                producer.commit_transaction().await.expect("commit");
                assert_delivered(i, deliveries).await;
            } else {
                for r in settle(deliveries).await {
                    r.expect("a record of a transaction to abort is written");
                }
                producer.abort_transaction().await.expect("abort");
            }
            let expected_epoch = if version == 2 {
                first_epoch + i as i16 + 1
            } else {
                first_epoch
            };
            assert_eq!(
                producer.producer_id(),
                Some((id, expected_epoch)),
                "transaction version {version}: the producer id and epoch after transaction {i} \
                 (version 2 needs a broker that finalized transaction.version 2)"
            );
        }
        producer.close().await;
        let (committed_values, aborted_values) = plan_values(&tag, plan);
        assert_settled(
            &client,
            &topic,
            PARTITIONS,
            &format!("transaction version {version}"),
            &committed_values,
            Some(&aborted_values),
        )
        .await;
        assert_eq!(
            committed(&client, &group, &source, 1).await,
            BTreeMap::from([((source.clone(), 0), 3)]),
            "transaction version {version}: the group's offset is the last committed one's"
        );
    }
}

/// Issue: our read_committed consumer reads exactly the committed
/// transactions of librdkafka's and the Java client's transactional
/// producers (and a read_uncommitted one sees their aborted records too);
/// each peer also reads the other's, which checks the harness itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theirs_read_exactly_committed_by_ours() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let peers = available_peers();
    if peers.is_empty() {
        return;
    }
    let client = connect(&bootstrap).await;
    const PARTITIONS: i32 = 3;
    let plan = "c5,a4,c3,a6,c2,c1,a2";
    let mut topics = Vec::new();
    for &peer in &peers {
        let topic = unique_topic(&format!("txn-{peer:?}").to_lowercase());
        create_topic(&client, &topic, PARTITIONS).await;
        let txn_id = format!("{topic}-txn");
        peer_produce(peer, &bootstrap, &topic, &txn_id, plan).await;
        let (committed_values, aborted_values) = plan_values(&txn_id, plan);
        assert_settled(
            &client,
            &topic,
            PARTITIONS,
            &format!("ours of {peer:?}"),
            &committed_values,
            Some(&aborted_values),
        )
        .await;
        topics.push((peer, topic, committed_values));
    }
    for (producer, topic, committed_values) in &topics {
        for &reader in peers.iter().filter(|r| r != &producer) {
            let read = peer_consume(reader, &bootstrap, topic).await;
            assert_exact(
                &format!("{reader:?} of {producer:?}"),
                &read,
                committed_values,
                PARTITIONS,
            );
        }
    }
}
/// Issue: a record the broker refuses (larger than the topic's
/// `max.message.bytes`) fails the commit with an error that is not fatal;
/// the transaction aborts, nothing of it is visible, and the producer's next
/// transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_fails_the_commit_and_the_producer_goes_on() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = connect(&bootstrap).await;
    const PARTITIONS: i32 = 2;
    let topic = unique_topic("txn-refused");
    client
        .controller_client()
        .expect("controller")
        .create_topic_with_configs(
            &topic,
            PARTITIONS,
            1,
            BTreeMap::from([("max.message.bytes".to_owned(), "2000".to_owned())]),
            30_000,
        )
        .await
        .expect("create topic");
    let tag = format!("{topic}-rs");
    let producer = client
        .producer(txn_config(&format!("{topic}-txn")))
        .expect("producer");
    producer.init_transactions().await.expect("init");

    producer.begin_transaction().expect("begin");
    let small = send_records(&producer, &topic, &tag, 0, 'a', 0..4, PARTITIONS)
        .await
        .expect("send");
    let big = producer
        .send(
            ProducerRecord::new(&topic, record(format!("{tag}:0:a:big{}", "x".repeat(4000))))
                .with_partition(1),
        )
        .await
        .expect("send the big record");
    let e = producer
        .commit_transaction()
        .await
        .expect_err("a commit with a refused record");
    eprintln!("the commit with a refused record: {e}");
    assert!(!e.is_fatal(), "a refused record is not fatal: {e}");
    let refused = big.await.expect_err("the big record is refused");
    eprintln!("the big record: {refused}");
    producer
        .abort_transaction()
        .await
        .expect("abort after the refused record");
    drop(settle(small).await);

    run_plan(&producer, &topic, &tag, "c4,a2,c3", PARTITIONS).await;
    producer.close().await;
    // Transaction 0 of the plan and of the refused transaction share
    // their index: the plan's values are "c" ones, the refused ones "a".
    let (committed_values, _) = plan_values(&tag, "c4,a2,c3");
    assert_settled(
        &client,
        &topic,
        PARTITIONS,
        "after the refused record",
        &committed_values,
        None,
    )
    .await;
}

// ---------------------------------------------------------------------------
// Fencing and crashes
// ---------------------------------------------------------------------------

/// Issue: a second producer with the same transactional id fences the
/// first: the first's next send or commit fails with a fatal error, and so
/// does anything it tries afterwards; its open transaction never becomes
/// visible; the second commits normally. Once with a send as the fenced
/// producer's next step, once with a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_fences_the_first() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = connect(&bootstrap).await;
    const PARTITIONS: i32 = 2;
    for send_first in [true, false] {
        let topic = unique_topic("txn-fencing");
        create_topic(&client, &topic, PARTITIONS).await;
        let id = format!("{topic}-txn");
        let (old_tag, new_tag) = (format!("{topic}-old"), format!("{topic}-new"));

        let old = client.producer(txn_config(&id)).expect("producer");
        old.init_transactions().await.expect("init the first");
        // A committed transaction first: the fenced producer worked.
        run_plan(&old, &topic, &old_tag, "c4", PARTITIONS).await;
        old.begin_transaction().expect("begin");
        let open = send_records(&old, &topic, &old_tag, 1, 'o', 0..6, PARTITIONS)
            .await
            .expect("send");
        for r in settle(open).await {
            r.expect("the open transaction's records are written");
        }

        let new = client.producer(txn_config(&id)).expect("producer");
        new.init_transactions().await.expect("init the second");
        eprintln!(
            "producer ids: first {:?}, second {:?}",
            old.producer_id(),
            new.producer_id()
        );

        if send_first {
            match send_records(&old, &topic, &old_tag, 2, 'o', 0..1, PARTITIONS).await {
                Ok(d) => {
                    let r = settle(d).await.remove(0);
                    eprintln!("the fenced producer's delivery: {r:?}");
                    assert!(r.is_err(), "a fenced producer's record was delivered");
                }
                Err(e) => {
                    eprintln!("the fenced producer's send: {e}");
                    assert!(e.is_fatal(), "the fenced producer's send failed: {e}");
                }
            }
        }
        let e = old
            .commit_transaction()
            .await
            .expect_err("the fenced producer commits");
        eprintln!("the fenced producer's commit: {e}");
        assert!(e.is_fatal(), "not fatal: {e} ({:?})", e.kind());
        // Fatal means the producer can do nothing more.
        assert!(
            old.abort_transaction().await.is_err(),
            "the fenced producer aborts"
        );
        assert!(
            old.begin_transaction().is_err(),
            "the fenced producer begins a transaction"
        );

        run_plan(&new, &topic, &new_tag, "c5,a2,c3", PARTITIONS).await;
        new.close().await;
        old.close().await;

        let (old_committed, _) = plan_values(&old_tag, "c4");
        let (new_committed, mut hidden) = plan_values(&new_tag, "c5,a2,c3");
        // The fenced transaction is in the log, never visible.
        hidden.extend((0..6).map(|j| value(&old_tag, 1, 'o', j)));
        let expected = old_committed.union(&new_committed).cloned().collect();
        assert_settled(
            &client,
            &topic,
            PARTITIONS,
            "after fencing",
            &expected,
            Some(&hidden),
        )
        .await;
    }
}

/// How the transaction of a killed producer is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// A new instance with the same transactional id (ours) calls
    /// `init_transactions`.
    NextInstance,
    /// No new instance: the coordinator aborts it after the transaction
    /// timeout (5 s).
    Timeout,
}

/// Issue: a librdkafka producer is SIGKILLed in the middle of a transaction
/// (its records written), which holds back the last stable offset. Once
/// the transaction is completed (see [`Completion`]) nothing of it is
/// visible under read_committed, the last stable offset moves past it, and
/// what our producer committed after it is readable. With the timeout,
/// those commits stay held back until the coordinator aborts.
async fn a_killed_transaction_is_aborted(by: Completion) {
    const PARTITIONS: i32 = 2;
    if !common::python_available() {
        return;
    }
    let Some((bootstrap, client, topic)) = setup("txn-killed", PARTITIONS).await else {
        return;
    };
    let id = format!("{topic}-txn");
    let plan = "c3,o5";
    let mut args = vec!["produce", &bootstrap, &topic, &id, plan];
    if by == Completion::Timeout {
        args.extend(["--transaction-timeout-ms", "5000"]);
    }
    let peer = OpenPeer::start(Peer::Python, &args).await;
    let opened = peer.opened;
    let lso = ends(&client, &topic, PARTITIONS, IsolationLevel::ReadCommitted).await;
    let hw = ends(&client, &topic, PARTITIONS, IsolationLevel::ReadUncommitted).await;
    assert!(
        lso.iter().all(|(p, o)| *o < hw[p]),
        "the open transaction holds back every partition's last stable offset: {lso:?} {hw:?}"
    );
    peer.kill().await;

    let ours_id = match by {
        Completion::NextInstance => id.clone(),
        Completion::Timeout => format!("{topic}-other"),
    };
    let started = Instant::now();
    let producer = client.producer(txn_config(&ours_id)).expect("producer");
    producer.init_transactions().await.expect("init");
    eprintln!("{by:?}: init_transactions took {:?}", started.elapsed());
    if by == Completion::NextInstance {
        assert!(
            wait_stable(&client, &topic, PARTITIONS, Duration::from_secs(30)).await,
            "the killed transaction is still open after the new instance's init"
        );
    }
    let tag = format!("{topic}-rs");
    run_plan(&producer, &topic, &tag, "c4,a2,c2", PARTITIONS).await;
    producer.close().await;
    let (py_committed, mut hidden) = plan_values(&id, plan);
    let (rs_committed, rs_aborted) = plan_values(&tag, "c4,a2,c2");
    hidden.extend(rs_aborted);

    if by == Completion::Timeout {
        if opened.elapsed() < Duration::from_secs(4) {
            // Surely before the timeout: our commits are held back.
            let early =
                read_topic(&client, &topic, PARTITIONS, IsolationLevel::ReadCommitted).await;
            assert_exact(
                "read_committed before the timeout",
                &early,
                &py_committed,
                PARTITIONS,
            );
        } else {
            eprintln!(
                "not checking the held-back records: {:?} passed since the transaction opened",
                opened.elapsed()
            );
        }
        // The coordinator looks for expired transactions every 10 s (the
        // broker's default), so the abort comes 5 to 15 s after the open.
        assert!(
            wait_stable(&client, &topic, PARTITIONS, Duration::from_secs(60)).await,
            "the coordinator did not abort the killed transaction"
        );
        eprintln!(
            "the killed transaction ended {:?} after it opened",
            opened.elapsed()
        );
    }
    let lso_after = ends(&client, &topic, PARTITIONS, IsolationLevel::ReadCommitted).await;
    assert!(
        lso_after.iter().all(|(p, o)| *o > hw[p]),
        "the last stable offsets moved past the killed transaction: {lso_after:?} {hw:?}"
    );
    let expected = py_committed.union(&rs_committed).cloned().collect();
    assert_settled(
        &client,
        &topic,
        PARTITIONS,
        &format!("{by:?}"),
        &expected,
        Some(&hidden),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_producer_is_aborted_by_its_next_instance() {
    a_killed_transaction_is_aborted(Completion::NextInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_producer_is_aborted_after_its_timeout() {
    a_killed_transaction_is_aborted(Completion::Timeout).await;
}

// ---------------------------------------------------------------------------
// Group metadata (KIP-447)
// ---------------------------------------------------------------------------

/// Polls a member once, briefly, so that it takes part in rebalances.
async fn poll_briefly(member: &mut GroupConsumer, name: &str) {
    if let Ok(Some(Err(e))) = tokio::time::timeout(Duration::from_millis(100), member.next()).await
    {
        eprintln!("member {name}: {e}");
    }
}

/// Issue: a member's group metadata taken before a rebalance (another
/// member joins, the generation moves on) is stale: offsets sent with it
/// are refused, at the latest by the commit, with an error that is not
/// fatal; the transaction aborts, nothing of it is committed. The same
/// member's current metadata works.
async fn stale_group_metadata_is_refused(protocol: GroupProtocol, label: &str) {
    let Some((_, client, topic)) = setup(&format!("txn-stale-{label}"), 1).await else {
        return;
    };
    let source = format!("{topic}-src");
    create_topic(&client, &source, 2).await;
    let group = format!("{topic}-g");
    let config = GroupConfig::new(group.clone(), [source.clone()])
        .protocol(protocol)
        .offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(20));

    let mut first = client.group_consumer(config.clone()).expect("member");
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.assignment().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the first member got no partitions"
        );
        poll_briefly(&mut first, "first").await;
    }
    let stale = first.group_metadata();
    let mut second = client.group_consumer(config).expect("member");
    while second.assignment().is_empty()
        || first.assignment().len() != 1
        || first.generation() == stale.generation_id()
    {
        assert!(
            Instant::now() < deadline,
            "no rebalance: first {:?} (generation {}), second {:?}",
            first.assignment(),
            first.generation(),
            second.assignment()
        );
        poll_briefly(&mut first, "first").await;
        poll_briefly(&mut second, "second").await;
    }
    let current = first.group_metadata();
    eprintln!("{label}: stale {stale:?}, current {current:?}");
    // Both keep polling while the transactions run.
    let (stop, mut stopped) = watch::channel(false);
    let members = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                r = first.next() => if let Some(Err(e)) = r { eprintln!("member first: {e}") },
                r = second.next() => if let Some(Err(e)) = r { eprintln!("member second: {e}") },
            }
        }
        (first, second)
    });

    let tag = format!("{topic}-rs");
    let producer = client
        .producer(txn_config(&format!("{topic}-txn")))
        .expect("producer");
    producer.init_transactions().await.expect("init");
    let src = |p: i32| TopicPartition::new(source.clone(), p);

    producer.begin_transaction().expect("begin");
    let d = send_records(&producer, &topic, &tag, 0, 'a', 0..3, 1)
        .await
        .expect("send");
    let refused: Error = match producer
        .send_offsets_to_transaction([(src(0), 1), (src(1), 1)], &stale)
        .await
    {
        Err(e) => {
            eprintln!("{label}: offsets with stale metadata refused: {e}");
            e
        }
        Ok(()) => {
            let e = producer
                .commit_transaction()
                .await
                .expect_err("the commit of offsets with stale group metadata");
            eprintln!("{label}: the commit with stale metadata failed: {e}");
            e
        }
    };
    assert!(
        !refused.is_fatal(),
        "stale group metadata is not fatal: {refused}"
    );
    producer
        .abort_transaction()
        .await
        .expect("abort after the refusal");
    drop(settle(d).await);
    assert_eq!(
        committed(&client, &group, &source, 2).await,
        BTreeMap::new(),
        "nothing committed with the stale metadata"
    );

    producer.begin_transaction().expect("begin");
    let d = send_records(&producer, &topic, &tag, 1, 'c', 0..3, 1)
        .await
        .expect("send");
    producer
        .send_offsets_to_transaction([(src(0), 2), (src(1), 3)], &current)
        .await
        .expect("offsets with the current metadata");
    producer
        .commit_transaction()
        .await
        .expect("commit with the current metadata");
    for r in settle(d).await {
        r.expect("delivered");
    }
    producer.close().await;
    assert_eq!(
        committed(&client, &group, &source, 2).await,
        BTreeMap::from([((source.clone(), 0), 2), ((source.clone(), 1), 3)]),
        "the offsets of the current member's transaction"
    );
    let expected = (0..3).map(|j| value(&tag, 1, 'c', j)).collect();
    assert_settled(&client, &topic, 1, label, &expected, None).await;

    let _ = stop.send(true);
    let (first, second) = members.await.expect("members");
    first.close().await.expect("close");
    second.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_classic_group_metadata_is_refused() {
    stale_group_metadata_is_refused(GroupProtocol::Classic, "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_kip848_group_metadata_is_refused() {
    stale_group_metadata_is_refused(GroupProtocol::Consumer, "kip848").await;
}

// ---------------------------------------------------------------------------
// Faults: a leader killed, connections cut
// ---------------------------------------------------------------------------

/// How a transaction under faults ended.
#[derive(Debug)]
enum Outcome {
    Committed,
    /// Aborted, as planned or after an error (the error).
    Aborted(Option<String>),
}

/// The transactions of a fault test: `count` records each, over
/// `partitions` partitions of `topic`.
struct FaultTxns<'a> {
    producer: &'a Producer,
    topic: &'a str,
    tag: &'a str,
    count: usize,
    partitions: i32,
}

impl<'a> FaultTxns<'a> {
    fn new(
        producer: &'a Producer,
        topic: &'a str,
        tag: &'a str,
        count: usize,
        partitions: i32,
    ) -> Self {
        Self {
            producer,
            topic,
            tag,
            count,
            partitions,
        }
    }

    async fn send(
        &self,
        i: usize,
        kind: char,
        records: Range<usize>,
    ) -> rskafka::error::Result<Vec<DeliveryFuture>> {
        send_records(
            self.producer,
            self.topic,
            self.tag,
            i,
            kind,
            records,
            self.partitions,
        )
        .await
    }

    /// Transaction `i`, committed if `commit` (the commit is repeated after
    /// a timeout, whose outcome is open) and aborted after any other error
    /// or if not `commit`. With `midway`, half of the records are delivered,
    /// then `midway` runs (a fault), then the rest is sent. A fatal error
    /// fails the test: nothing fences this producer. A committed
    /// transaction's records must all have been delivered.
    async fn run(&self, i: usize, commit: bool, midway: Option<&mut dyn FnMut()>) -> Outcome {
        let producer = self.producer;
        producer.begin_transaction().expect("begin");
        let kind = if commit { 'c' } else { 'a' };
        let half = if midway.is_some() {
            self.count / 2
        } else {
            self.count
        };
        let mut sent = self.send(i, kind, 0..half).await;
        let mut early = Vec::new();
        if let Some(midway) = midway {
            if let Ok(d) = &mut sent {
                early = settle(std::mem::take(d)).await;
            }
            midway();
            if sent.is_ok() {
                let more = self.send(i, kind, half..self.count).await;
                sent = match (sent, more) {
                    (Ok(mut d), Ok(more)) => {
                        d.extend(more);
                        Ok(d)
                    }
                    (_, Err(e)) | (Err(e), _) => Err(e),
                };
            }
        }
        let (deliveries, mut error) = match sent {
            Ok(d) => (d, None),
            Err(e) => {
                assert!(!e.is_fatal(), "transaction {i}: send: {e}");
                (Vec::new(), Some(format!("send: {e}")))
            }
        };
        if commit && error.is_none() {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match producer.commit_transaction().await {
                    Ok(()) => {
                        let failed: Vec<&Error> =
                            early.iter().filter_map(|r| r.as_ref().err()).collect();
                        assert!(
                            failed.is_empty(),
                            "transaction {i} committed, yet deliveries failed: {failed:?}"
                        );
                        assert_delivered(i, deliveries).await;
                        return Outcome::Committed;
                    }
                    Err(e) if e.is_fatal() => panic!("transaction {i}: fatal commit error: {e}"),
                    Err(e) if e.kind() == ErrorKind::Timeout && attempts < 5 => {
                        eprintln!("transaction {i}: commit timed out, again: {e}");
                    }
                    Err(e) => {
                        eprintln!("transaction {i}: commit failed, aborting: {e}");
                        error = Some(format!("commit: {e}"));
                        break;
                    }
                }
            }
        } else if !commit {
            // Written first, so that aborted records are in the log.
            for r in settle(deliveries).await {
                if let Err(e) = r {
                    eprintln!("transaction {i}: a record to abort failed: {e}");
                }
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match producer.abort_transaction().await {
                Ok(()) => return Outcome::Aborted(error),
                Err(e) if e.is_fatal() => panic!("transaction {i}: fatal abort error: {e}"),
                Err(e) => {
                    eprintln!("transaction {i}: abort failed (attempt {attempts}): {e}");
                    assert!(attempts < 10, "transaction {i}: abort keeps failing: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// The values of the committed transactions among `outcomes` (transaction
/// `i` has `count` records).
fn committed_values(tag: &str, outcomes: &[Outcome], count: usize) -> BTreeSet<String> {
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Outcome::Committed))
        .flat_map(|(i, _)| (0..count).map(move |j| value(tag, i, 'c', j)))
        .collect()
}

/// Fails if a value was written twice (read_uncommitted sees every write).
#[track_caller]
fn assert_no_duplicates(who: &str, read: &[Read]) {
    let mut seen: HashMap<&str, (i32, i64)> = HashMap::new();
    let twice: Vec<String> = read
        .iter()
        .filter_map(|(p, o, v)| {
            seen.insert(v, (*p, *o))
                .map(|first| format!("{v} at {first:?} and at {:?}", (p, o)))
        })
        .collect();
    common::cluster::assert_none(&format!("{who}: written twice"), &twice);
}

/// Issue (three-broker cluster, replication factor 3): transactions go on
/// while the leader of a partition is SIGKILLed in the middle of one, and
/// restarted in the middle of another, until the leadership is back on the
/// restarted node; under read_committed exactly the committed ones are
/// there, whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_across_a_leader_kill() {
    transactions_across_a_kill(Victim::PartitionLeader).await;
}

/// As [`transactions_across_a_leader_kill`], with the producer's
/// transaction coordinator killed instead: the transaction being committed
/// or aborted then has to find the new coordinator, which takes over the
/// transaction's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_across_a_transaction_coordinator_kill() {
    transactions_across_a_kill(Victim::TransactionCoordinator).await;
}

/// The node a fault test kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The leader of the topic's partition 0.
    PartitionLeader,
    /// The producer's transaction coordinator.
    TransactionCoordinator,
}

impl Victim {
    /// The node in that role now.
    async fn node(self, cluster: &TestCluster, client: &Client, topic: &str, txn_id: &str) -> i32 {
        match self {
            Self::PartitionLeader => cluster.leader(client, topic, 0).await,
            Self::TransactionCoordinator => {
                transaction_coordinator(cluster.bootstrap(), txn_id).await
            }
        }
    }
}

/// Whether the broker at `bootstrap` has finalized `transaction.version` 2.
async fn offers_transaction_version_2(bootstrap: &str) -> bool {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
        .await
        .expect("cluster");
    let conn = cluster.any_broker().await.expect("a broker");
    conn.versions()
        .and_then(|v| v.finalized_feature("transaction.version"))
        .is_some_and(|level| level >= 2)
}

/// The node coordinating transactional id `txn_id`, asked with
/// FindCoordinator as clients ask.
async fn transaction_coordinator(bootstrap: &[String], txn_id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // While a node restarts, any step may fail for a moment.
        let found = async {
            let cluster = Cluster::connect(ClusterConfig::new(bootstrap.iter().cloned()))
                .await
                .map_err(|e| e.to_string())?;
            let conn = cluster.any_broker().await.map_err(|e| e.to_string())?;
            let resp = conn
                .request(&FindCoordinatorRequest {
                    key_type: 1,
                    coordinator_keys: vec![txn_id.to_owned()],
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            match resp.coordinators.first() {
                Some(c) if c.error_code == 0 => Ok(c.node_id),
                Some(c) => Err(ErrorCode(c.error_code).to_string()),
                None => Err("no coordinator in the answer".to_owned()),
            }
        }
        .await;
        match found {
            Ok(node) => return node,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no coordinator for {txn_id}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn transactions_across_a_kill(victim_role: Victim) {
    let Some(cluster) = TestCluster::acquire() else {
        return;
    };
    // Bound on the cluster becoming whole again (see tests/failover.rs).
    const WHOLE: Duration = Duration::from_secs(120);
    cluster.wait_whole(WHOLE).await;
    let client = cluster.client().await;
    const PARTITIONS: i32 = 3;
    const TXNS: usize = 30;
    const PER_TXN: usize = 300;
    let topic = unique_topic("txn-failover");
    cluster.create_topic(&client, &topic, PARTITIONS).await;
    let tag = format!("{topic}-rs");
    let txn_id = format!("{topic}-txn");
    let producer = client.producer(txn_config(&txn_id)).expect("producer");
    producer.init_transactions().await.expect("init");
    let victim = victim_role.node(&cluster, &client, &topic, &txn_id).await;
    eprintln!("the victim: node {victim}, {victim_role:?}");

    let txns = FaultTxns::new(&producer, &topic, &tag, PER_TXN, PARTITIONS);
    const KILL_AT: usize = 8;
    const RESTART_AT: usize = 14;
    let mut outcomes = Vec::new();
    let mut downed = None;
    let mut restart = None;
    // The first transaction after the leadership came back.
    let mut back_at = None;
    let started = Instant::now();
    loop {
        let i = outcomes.len();
        if i >= TXNS && back_at.is_some_and(|b| i >= b + 3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the {victim_role:?} role did not come back to node {victim}"
        );
        let mut fault = || {
            if i == KILL_AT {
                downed = Some(cluster.kill(victim));
            } else {
                let node = downed.take().expect("the node is down");
                restart = Some(tokio::task::spawn_blocking(move || node.start()));
            }
        };
        let midway: Option<&mut dyn FnMut()> = if i == KILL_AT || i == RESTART_AT {
            Some(&mut fault)
        } else {
            None
        };
        // Every fourth transaction is aborted on purpose.
        let outcome = txns.run(i, i % 4 != 3, midway).await;
        eprintln!("transaction {i}: {outcome:?} at {:?}", started.elapsed());
        outcomes.push(outcome);
        if back_at.is_none()
            && restart.as_ref().is_some_and(|r| r.is_finished())
            && victim_role.node(&cluster, &client, &topic, &txn_id).await == victim
        {
            eprintln!("the {victim_role:?} role is back on node {victim} after transaction {i}");
            back_at = Some(i + 1);
        }
    }
    restart
        .expect("the node was restarted")
        .await
        .expect("restart");
    producer.close().await;

    let expected = committed_values(&tag, &outcomes, PER_TXN);
    let committed_count = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Committed))
        .count();
    let planned = (0..outcomes.len()).filter(|i| i % 4 != 3).count();
    eprintln!(
        "node {victim} ({victim_role:?}) killed and restarted: {committed_count} of {} \
         transactions committed ({planned} planned) in {:?}",
        outcomes.len(),
        started.elapsed()
    );
    assert_settled(
        &client,
        &topic,
        PARTITIONS,
        "across the kill",
        &expected,
        None,
    )
    .await;
    // The outage may cost a transaction or two, not most of them.
    assert!(
        committed_count + 3 >= planned,
        "only {committed_count} of {planned} transactions committed: {outcomes:?}"
    );

    cluster.delete_topic(&client, &topic).await;
    cluster.wait_whole(WHOLE).await;
}

/// Issue: 50 transactions, two of every three to be committed, through a
/// proxy that cuts every connection after 0.3 to 1 s (a private broker
/// advertises the proxy, so every connection goes through it): afterwards
/// read_committed shows exactly the committed transactions, whole and
/// once, and nothing was written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_abort_under_connection_chaos() {
    if testkit::real_bootstrap("transactions").is_none() {
        return;
    }
    // A port range of its own (other tests' private brokers use 19300 and
    // 29192 to 29692).
    let (proxy, _broker) = proxy::proxied_private_broker(
        29_792,
        Some((Duration::from_millis(300), Duration::from_millis(1000))),
    )
    .await;
    let bootstrap = proxy.local_addr().to_string();
    let proxied_client = || {
        ClientBuilder::new(vec![bootstrap.clone()])
            .request_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(60))
            .build()
    };
    let client = proxied_client().await.expect("client through the proxy");
    const PARTITIONS: i32 = 3;
    const TXNS: usize = 50;
    const PER_TXN: usize = 30;
    let topic = unique_topic("txn-chaos");
    create_topic(&client, &topic, PARTITIONS).await;
    let tag = format!("{topic}-rs");
    // A client of its own, so that its connections are cut apart from the
    // reader's.
    let producer_client = proxied_client().await.expect("client through the proxy");
    let producer = producer_client
        .producer(txn_config(&format!("{topic}-txn")))
        .expect("producer");
    producer.init_transactions().await.expect("init");
    let txns = FaultTxns::new(&producer, &topic, &tag, PER_TXN, PARTITIONS);

    proxy.set_cutting(true);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    // Past the 50 until a cut has made a batch retry (bounded): a run in
    // which no cut hit a request in flight tests little.
    while outcomes.len() < TXNS || (producer.metrics().retries == 0 && outcomes.len() < 3 * TXNS) {
        let i = outcomes.len();
        let outcome = txns.run(i, i % 3 != 2, None).await;
        outcomes.push(outcome);
        // Spread over many connection lifetimes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set_cutting(false);
    let cuts = proxy.stats().cut.load(Ordering::Relaxed);
    let metrics = producer.metrics();
    producer.close().await;

    let committed_count = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Committed))
        .count();
    let failed: Vec<(usize, &String)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Aborted(Some(e)) => Some((i, e)),
            _ => None,
        })
        .collect();
    eprintln!(
        "{} transactions in {:?}: {committed_count} committed, {} aborted ({} after an \
         error: {failed:?}); proxy {}; {metrics:?}",
        outcomes.len(),
        started.elapsed(),
        outcomes.len() - committed_count,
        failed.len(),
        proxy.stats().summary()
    );
    assert!(cuts >= 10, "the proxy cut only {cuts} connections");
    assert!(metrics.retries > 0, "no cut hit a produce request");
    assert!(committed_count > 0, "nothing committed");
    assert!(committed_count < outcomes.len(), "nothing aborted");

    let expected = committed_values(&tag, &outcomes, PER_TXN);
    assert_settled(
        &client,
        &topic,
        PARTITIONS,
        "after the chaos",
        &expected,
        None,
    )
    .await;
}
