//! Consumer groups against a real broker (`KAFKA_BOOTSTRAP`): rebalances
//! with exactly-once processing when the application commits after
//! processing, a SIGKILLed member, a coordinator restart, groups shared with
//! librdkafka members (`tests/group_interop.py`, PyPI confluent-kafka),
//! offsets committed by one client honoured by the other, and KIP-848
//! membership.
//!
//! Every member, in-process or a child process, reports the records it
//! processed and its assignment changes (with wall-clock timestamps) into
//! one [`World`], which the tests check: each record processed exactly once
//! (or, after a SIGKILL, at most the one record the killed member processed
//! but had not committed), and no partition ever owned by two members at
//! once.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use rskafka::{
    client::{
        consumer::OffsetReset,
        group::{
            assignor::{
                Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor,
                StickyAssignor,
            },
            GroupConfig, GroupProtocol, RebalanceListener, TopicPartition,
        },
        partition::Compression,
        Client, ClientBuilder,
    },
    record::Record,
};
use tokio::sync::watch;

const SESSION: Duration = Duration::from_secs(6);

async fn client(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_owned()])
        .operation_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("connect")
}

/// Creates `topic` with `partitions` partitions.
async fn create_topic(client: &Client, topic: &str, partitions: i32) {
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 10_000)
        .await
        .expect("create topic");
}

/// Produces records `from..to` to each partition; values are
/// `"{partition}-{i}"`.
async fn produce_range(client: &Client, topic: &str, partitions: i32, from: usize, to: usize) {
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p)
            .await
            .expect("partition client");
        for chunk in (from..to).collect::<Vec<_>>().chunks(500) {
            let records = chunk
                .iter()
                .map(|i| Record {
                    key: None,
                    value: Some(format!("{p}-{i}").into_bytes().into()),
                    headers: vec![],
                    timestamp: time::OffsetDateTime::now_utc(),
                })
                .collect();
            pc.produce(records, Compression::None)
                .await
                .expect("produce");
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One assignment change: when, whose, what, which partitions.
type Change = (u128, String, &'static str, Vec<TopicPartition>);

/// What all members of a test did.
#[derive(Default)]
struct World {
    changes: Mutex<Vec<Change>>,
    /// (partition, offset) → the members that processed it.
    processed: Mutex<BTreeMap<(i32, i64), Vec<String>>>,
    /// Every processed record in order: (member, partition, offset).
    order: Mutex<Vec<(String, i32, i64)>>,
    /// Error items and failed commits: (member, message).
    errors: Mutex<Vec<(String, String)>>,
    /// Records processed whose commit the broker refused (a rebalance
    /// ended their member's generation): the next owner may process them
    /// again, as Kafka's at-least-once delivery allows.
    uncommitted: Mutex<BTreeSet<(i32, i64)>>,
}

impl World {
    fn change(&self, t: u128, member: &str, what: &'static str, parts: Vec<TopicPartition>) {
        self.changes
            .lock()
            .unwrap()
            .push((t, member.to_owned(), what, parts));
    }

    fn record(&self, member: &str, partition: i32, offset: i64) {
        self.processed
            .lock()
            .unwrap()
            .entry((partition, offset))
            .or_default()
            .push(member.to_owned());
        self.order
            .lock()
            .unwrap()
            .push((member.to_owned(), partition, offset));
    }

    fn error(&self, member: &str, e: impl std::fmt::Display) {
        eprintln!("{member}: {e}");
        self.errors
            .lock()
            .unwrap()
            .push((member.to_owned(), e.to_string()));
    }

    fn errors_of(&self, member: &str) -> Vec<String> {
        self.errors
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == member)
            .map(|e| e.1.clone())
            .collect()
    }

    fn changes_of(&self, member: &str, what: &str) -> Vec<Vec<TopicPartition>> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == member && c.2 == what && !c.3.is_empty())
            .map(|c| c.3.clone())
            .collect()
    }

    fn unique(&self) -> usize {
        self.processed.lock().unwrap().len()
    }

    fn processed_by(&self, member: &str) -> usize {
        self.processed
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.iter().any(|m| m == member))
            .count()
    }

    /// Records processed more than once, except a second time after the
    /// first member's commit of them was refused.
    fn duplicates(&self) -> Vec<((i32, i64), Vec<String>)> {
        let uncommitted = self.uncommitted.lock().unwrap();
        self.processed
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, v)| v.len() > 2 || (v.len() == 2 && !uncommitted.contains(k)))
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    fn has(&self, member: &str, what: &str) -> bool {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.1 == member && c.2 == what && !c.3.is_empty())
    }

    fn count(&self, what: &str) -> usize {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.2 == what && !c.3.is_empty())
            .count()
    }

    /// Replays the changes in time order: a partition may only be assigned
    /// to a member while no other member holds it.
    fn check_never_owned_twice(&self) {
        let mut log = self.changes.lock().unwrap().clone();
        log.sort_by_key(|c| c.0);
        let mut owner: HashMap<TopicPartition, String> = HashMap::new();
        for (_, member, what, parts) in &log {
            for tp in parts {
                if *what == "assigned" {
                    if let Some(other) = owner.get(tp) {
                        assert_eq!(
                            other, member,
                            "{tp} assigned to {member} while {other} owns it; changes: {log:?}"
                        );
                    }
                    owner.insert(tp.clone(), member.clone());
                } else if owner.get(tp) == Some(member) {
                    owner.remove(tp);
                }
            }
        }
    }

    /// Parses a line of a child member (`tests/group_interop.py`'s format,
    /// which the Rust child prints too).
    fn child_line(&self, member: &str, line: &str) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["rec", p, o] => {
                if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                    self.record(member, p, o);
                }
            }
            [what @ ("assigned" | "revoked" | "lost"), t, parts] => {
                let what = match *what {
                    "assigned" => "assigned",
                    "revoked" => "revoked",
                    _ => "lost",
                };
                let parts = parts
                    .split(',')
                    .filter(|s| *s != "-" && !s.is_empty())
                    .filter_map(|s| {
                        let (t, p) = s.rsplit_once(':')?;
                        Some(TopicPartition::new(t, p.parse().ok()?))
                    })
                    .collect();
                self.change(t.parse().unwrap_or(0), member, what, parts);
            }
            ["uncommitted", p, o] => {
                eprintln!("{member}: {line}");
                if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                    self.uncommitted.lock().unwrap().insert((p, o));
                }
            }
            ["error", ..] => eprintln!("{member}: {line}"),
            _ => {}
        }
    }
}

/// Logs an in-process member's assignment changes into the [`World`].
struct Listener {
    name: String,
    world: Arc<World>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&self, partitions: &[TopicPartition]) {
        self.world
            .change(now_ns(), &self.name, "assigned", partitions.to_vec());
    }
    fn on_revoked(&self, partitions: &[TopicPartition]) {
        self.world
            .change(now_ns(), &self.name, "revoked", partitions.to_vec());
    }
    fn on_lost(&self, partitions: &[TopicPartition]) {
        self.world
            .change(now_ns(), &self.name, "lost", partitions.to_vec());
    }
}

/// A member that processes each record (records it) and commits it before
/// taking the next, until told to stop; then it closes (leaves the group).
struct RustMember {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RustMember {
    fn spawn(client: &Client, config: GroupConfig, name: &str, world: Arc<World>) -> Self {
        Self::spawn_slow(client, config, name, world, None)
    }

    /// Like [`Self::spawn`]; with `slow = Some((n, d))` the `n`th record
    /// takes `d` to process (the stream is not polled meanwhile).
    fn spawn_slow(
        client: &Client,
        config: GroupConfig,
        name: &str,
        world: Arc<World>,
        slow: Option<(usize, Duration)>,
    ) -> Self {
        let name = name.to_owned();
        let config = config.auto_commit(None).listener(Arc::new(Listener {
            name: name.clone(),
            world: world.clone(),
        }));
        let (stop, mut stopped) = watch::channel(false);
        let client = client.clone();
        let task = tokio::spawn(async move {
            let mut consumer = client.group_consumer(config).expect("group consumer");
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    item = consumer.next() => match item {
                        Some(Ok(r)) => {
                            n += 1;
                            if let Some((at, d)) = slow.filter(|(at, _)| *at == n) {
                                let _ = at;
                                tokio::time::sleep(d).await;
                            }
                            world.record(&name, r.partition, r.offset);
                            let tp = TopicPartition::new(r.topic.to_string(), r.partition);
                            if let Err(e) = consumer.commit([(tp, r.offset + 1)]).await {
                                world.error(&name, format!("commit failed: {e}"));
                            }
                        }
                        Some(Err(e)) => world.error(&name, e),
                        None => break,
                    },
                }
            }
            consumer.close().await.expect("close");
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("member stops in time")
            .expect("member task");
    }
}

/// A member in a child process: a librdkafka member
/// (`tests/group_interop.py`) or this test binary's `child_member`.
struct ChildMember {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildMember {
    fn spawn(mut cmd: Command, name: &str, world: Arc<World>) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child member");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let member = name.to_owned();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                world.child_line(&member, &line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stdin,
            reader: Some(reader),
        }
    }

    fn python(args: &[&str], name: &str, world: Arc<World>) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/group_interop.py"
        ))
        .args(args);
        Self::spawn(cmd, name, world)
    }

    fn java(args: &[String], name: &str, world: Arc<World>) -> Self {
        let Some(classpath) = java_member_classpath() else {
            panic!("the Java member is not available");
        };
        let mut cmd = Command::new("java");
        cmd.arg("-cp").arg(classpath).arg("GroupMember").args(args);
        Self::spawn(cmd, name, world)
    }

    fn rust(bootstrap: &str, group: &str, topic: &str, name: &str, world: Arc<World>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["child_member", "--exact", "--ignored", "--nocapture"])
            .env("GROUP_CHILD_BOOTSTRAP", bootstrap)
            .env("GROUP_CHILD_GROUP", group)
            .env("GROUP_CHILD_TOPIC", topic);
        Self::spawn(cmd, name, world)
    }

    /// Asks the member to stop (it leaves the group) and waits.
    fn stop(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!("{} did not stop", self.name);
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGKILL: no commit, no LeaveGroup.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The classpath to run `tests/group_java/GroupMember.java` (the Kafka jars
/// from `scripts/kafka classpath` and the compiled class), compiling it the
/// first time; `None` (with a notice) without java, javac or the jars.
fn java_member_classpath() -> Option<String> {
    static CLASSPATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CLASSPATH
        .get_or_init(|| {
            let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let jars = testkit::kafka_jars()?;
            let out = repo.join("target/group-java-member");
            std::fs::create_dir_all(&out).ok()?;
            let compiled = Command::new("javac")
                .arg("-cp")
                .arg(&jars)
                .arg("-d")
                .arg(&out)
                .arg(repo.join("tests/group_java/GroupMember.java"))
                .status()
                .ok()?;
            compiled
                .success()
                .then(|| format!("{jars}:{}", out.display()))
        })
        .clone()
        .or_else(|| {
            testkit::skip("no java/javac or Kafka jars for the Java member");
            None
        })
}

async fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, cond).await,
        "timed out waiting for {what}"
    );
}

/// Whether `cond` came true within `timeout`.
async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn group_config(
    group: &str,
    topic: &str,
    protocol: GroupProtocol,
    assignors: Vec<Arc<dyn Assignor>>,
) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .protocol(protocol)
        .assignors(assignors)
        .offset_reset(OffsetReset::Earliest)
        .session_timeout(SESSION)
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(20))
}

/// How a member of a shared-group test is run.
enum Kind<'a> {
    Rust(Box<GroupConfig>),
    /// `tests/group_interop.py` with these arguments.
    Python(Vec<&'a str>),
    /// `tests/group_java/GroupMember.java` with these arguments.
    Java(Vec<String>),
}

/// A running member of any kind.
enum Running {
    Rust(RustMember),
    Child(ChildMember),
}

/// A group whose members join one after the other, each once the previous
/// ones processed records: every record processed exactly once, no
/// partition owned twice, every member processed some.
async fn shared_group(label: &str, kinds: Vec<Kind<'_>>, topic: &str, client: &Client) {
    let (partitions, per) = (6, 400);
    create_topic(client, topic, partitions).await;
    let total = partitions as usize * per;
    let steps = kinds.len() + 1;
    let world = Arc::new(World::default());
    let mut running = Vec::new();
    let mut produced = 0;
    for (i, kind) in kinds.into_iter().enumerate() {
        let name = ((b'a' + i as u8) as char).to_string();
        let upto = per * (i + 1) / steps;
        produce_range(client, topic, partitions, produced, upto).await;
        produced = upto;
        running.push(match kind {
            Kind::Rust(cfg) => Running::Rust(RustMember::spawn(client, *cfg, &name, world.clone())),
            Kind::Python(args) => Running::Child(ChildMember::python(&args, &name, world.clone())),
            Kind::Java(args) => Running::Child(ChildMember::java(&args, &name, world.clone())),
        });
        wait_for(
            &format!("member {name} to get partitions"),
            Duration::from_secs(60),
            || world.has(&name, "assigned"),
        )
        .await;
        let target = partitions as usize * upto;
        wait_for("the records so far", Duration::from_secs(90), || {
            world.unique() >= target
        })
        .await;
    }
    produce_range(client, topic, partitions, produced, per).await;
    wait_for("all records", Duration::from_secs(120), || {
        world.unique() >= total
    })
    .await;
    let members = running.len();
    let by: Vec<usize> = (0..members)
        .map(|i| world.processed_by(&((b'a' + i as u8) as char).to_string()))
        .collect();
    for m in running {
        match m {
            Running::Rust(m) => m.stop().await,
            Running::Child(m) => m.stop(),
        }
    }
    assert_eq!(world.unique(), total);
    assert!(
        world.duplicates().is_empty(),
        "processed twice: {:?}",
        world.duplicates()
    );
    assert!(
        by.iter().all(|n| *n > 0),
        "a member processed nothing: {by:?}"
    );
    world.check_never_owned_twice();
    eprintln!(
        "{label}: {total} records processed exactly once by {members} members ({by:?}), \
         {} with a refused commit (may be redelivered); {} assignments, {} revocations",
        world.uncommitted.lock().unwrap().len(),
        world.count("assigned"),
        world.count("revoked")
    );
}

async fn two_rust_members(protocol: GroupProtocol, assignors: Vec<Arc<dyn Assignor>>, label: &str) {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic(&format!("group-two-{label}"));
    let cfg = group_config(&format!("{topic}-g"), &topic, protocol, assignors);
    shared_group(
        label,
        vec![Kind::Rust(Box::new(cfg.clone())), Kind::Rust(Box::new(cfg))],
        &topic,
        &client,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_eager_range_two_members_exactly_once() {
    two_rust_members(
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
        "range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_eager_roundrobin_and_sticky_two_members_exactly_once() {
    two_rust_members(
        GroupProtocol::Classic,
        vec![Arc::new(RoundRobinAssignor)],
        "roundrobin",
    )
    .await;
    two_rust_members(
        GroupProtocol::Classic,
        vec![Arc::new(StickyAssignor)],
        "sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_cooperative_sticky_two_members_exactly_once() {
    two_rust_members(
        GroupProtocol::Classic,
        vec![Arc::new(CooperativeStickyAssignor)],
        "cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_two_members_exactly_once() {
    two_rust_members(GroupProtocol::Consumer, vec![], "kip848").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_server_assignors_uniform_and_range() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    for assignor in ["uniform", "range"] {
        let topic = common::unique_topic(&format!("group-kip848-{assignor}"));
        let cfg = group_config(
            &format!("{topic}-g"),
            &topic,
            GroupProtocol::Consumer,
            vec![],
        )
        .server_assignor(assignor);
        shared_group(
            &format!("KIP-848 server assignor {assignor}"),
            vec![Kind::Rust(Box::new(cfg.clone())), Kind::Rust(Box::new(cfg))],
            &topic,
            &client,
        )
        .await;
        // The chosen assignor shows while a member asks for it.
        let world = Arc::new(World::default());
        let m = RustMember::spawn(
            &client,
            group_config(
                &format!("{topic}-g2"),
                &topic,
                GroupProtocol::Consumer,
                vec![],
            )
            .server_assignor(assignor),
            "m",
            world.clone(),
        );
        wait_for("the member's assignment", Duration::from_secs(60), || {
            world.has("m", "assigned")
        })
        .await;
        let d = client
            .group_admin()
            .describe_group(&format!("{topic}-g2"))
            .await
            .expect("describe");
        m.stop().await;
        assert_eq!(d.group_type, "consumer");
        assert_eq!(d.assignor, assignor);
    }
}

/// A group shared with a librdkafka member, each side leader once.
async fn with_librdkafka(
    protocol: GroupProtocol,
    strategy: &str,
    assignor: Arc<dyn Assignor>,
    name: &str,
) {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    if !common::python_available() {
        return;
    }
    let client = client(&bootstrap).await;
    let py_protocol = match protocol {
        GroupProtocol::Classic => "classic",
        GroupProtocol::Consumer => "consumer",
    };
    for python_first in [false, true] {
        let label = format!(
            "{name} with librdkafka, {} leads",
            if python_first {
                "librdkafka"
            } else {
                "rskafka"
            }
        );
        let topic = common::unique_topic("group-interop");
        let group = format!("{topic}-g");
        let cfg = group_config(&group, &topic, protocol, vec![assignor.clone()]);
        let args = vec![
            "--bootstrap",
            &bootstrap,
            "--group",
            &group,
            "--topic",
            &topic,
            "--protocol",
            py_protocol,
            "--strategy",
            strategy,
        ];
        let kinds = if python_first {
            vec![Kind::Python(args), Kind::Rust(Box::new(cfg))]
        } else {
            vec![Kind::Rust(Box::new(cfg)), Kind::Python(args)]
        };
        shared_group(&label, kinds, &topic, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_librdkafka_range() {
    with_librdkafka(
        GroupProtocol::Classic,
        "range",
        Arc::new(RangeAssignor),
        "range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_librdkafka_roundrobin() {
    with_librdkafka(
        GroupProtocol::Classic,
        "roundrobin",
        Arc::new(RoundRobinAssignor),
        "roundrobin",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_librdkafka_cooperative_sticky() {
    with_librdkafka(
        GroupProtocol::Classic,
        "cooperative-sticky",
        Arc::new(CooperativeStickyAssignor),
        "cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_librdkafka_kip848() {
    with_librdkafka(
        GroupProtocol::Consumer,
        "range",
        Arc::new(RangeAssignor),
        "KIP-848 (group.protocol=consumer)",
    )
    .await;
}

/// Offsets committed by rskafka are where librdkafka continues, and the
/// other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_are_honoured_across_clients() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    if !common::python_available() {
        return;
    }
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-offsets");
    let group = format!("{topic}-g");
    let partitions = 3;
    create_topic(&client, &topic, partitions).await;
    produce_range(&client, &topic, partitions, 0, 40).await;
    let world = Arc::new(World::default());

    // rskafka processes 60 records, committing each.
    let rust = RustMember::spawn(
        &client,
        group_config(
            &group,
            &topic,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        ),
        "rust-1",
        world.clone(),
    );
    wait_for("rskafka to process 60", Duration::from_secs(60), || {
        world.unique() >= 60
    })
    .await;
    rust.stop().await;
    let after_rust = last_offsets(&world, "rust-1");

    // librdkafka continues from there: 100 more (commits each).
    let py = ChildMember::python(
        &[
            "--bootstrap",
            &bootstrap,
            "--group",
            &group,
            "--topic",
            &topic,
            "--strategy",
            "range",
            "--max-records",
            "100",
        ],
        "py",
        world.clone(),
    );
    produce_range(&client, &topic, partitions, 40, 80).await;
    wait_for("librdkafka to process 100", Duration::from_secs(60), || {
        world.processed_by("py") >= 100
    })
    .await;
    py.stop();
    let first_py = first_offsets(&world, "py");
    for (p, first) in &first_py {
        let expected = after_rust.get(p).map_or(0, |o| o + 1);
        assert_eq!(
            *first, expected,
            "librdkafka started partition {p} elsewhere than rskafka's commit"
        );
    }
    let after_py = last_offsets(&world, "py");

    // And rskafka again continues where librdkafka committed.
    let rust = RustMember::spawn(
        &client,
        group_config(
            &group,
            &topic,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        ),
        "rust-2",
        world.clone(),
    );
    let done = wait_until(Duration::from_secs(60), || world.unique() >= 240).await;
    assert!(
        done,
        "not all records: {} in all, rskafka {}, librdkafka {}, rskafka again {}",
        world.unique(),
        world.processed_by("rust-1"),
        world.processed_by("py"),
        world.processed_by("rust-2")
    );
    rust.stop().await;
    for (p, first) in first_offsets(&world, "rust-2") {
        let expected = after_py.get(&p).or(after_rust.get(&p)).map_or(0, |o| o + 1);
        assert_eq!(
            first, expected,
            "rskafka started partition {p} elsewhere than librdkafka's commit"
        );
    }
    assert!(world.duplicates().is_empty(), "{:?}", world.duplicates());
    eprintln!(
        "offsets: rskafka→librdkafka on {} partitions, librdkafka→rskafka on {} partitions honoured",
        first_py.len(),
        first_offsets(&world, "rust-2").len()
    );
}

fn first_offsets(world: &World, member: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for (m, p, o) in world.order.lock().unwrap().iter() {
        if m == member {
            out.entry(*p).or_insert(*o);
        }
    }
    out
}

fn last_offsets(world: &World, member: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for (m, p, o) in world.order.lock().unwrap().iter() {
        if m == member {
            out.insert(*p, *o);
        }
    }
    out
}

/// The member a child process runs for [`member_killed_by_sigkill`]:
/// prints the tests/group_interop.py line format, commits each record.
/// Only runs when started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by member_killed_by_sigkill"]
async fn child_member() {
    let (Ok(bootstrap), Ok(group), Ok(topic)) = (
        std::env::var("GROUP_CHILD_BOOTSTRAP"),
        std::env::var("GROUP_CHILD_GROUP"),
        std::env::var("GROUP_CHILD_TOPIC"),
    ) else {
        panic!("child_member needs GROUP_CHILD_BOOTSTRAP, _GROUP and _TOPIC");
    };
    struct Print;
    impl RebalanceListener for Print {
        fn on_assigned(&self, p: &[TopicPartition]) {
            println!("assigned {} {}", now_ns(), fmt_parts(p));
        }
        fn on_revoked(&self, p: &[TopicPartition]) {
            println!("revoked {} {}", now_ns(), fmt_parts(p));
        }
        fn on_lost(&self, p: &[TopicPartition]) {
            println!("lost {} {}", now_ns(), fmt_parts(p));
        }
    }
    let client = client(&bootstrap).await;
    let config = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
    )
    .auto_commit(None)
    .listener(Arc::new(Print));
    let mut consumer = client.group_consumer(config).expect("group consumer");
    println!("ready");
    while let Some(item) = consumer.next().await {
        match item {
            Ok(r) => {
                println!("rec {} {}", r.partition, r.offset);
                let tp = TopicPartition::new(r.topic.to_string(), r.partition);
                if let Err(e) = consumer.commit([(tp, r.offset + 1)]).await {
                    println!("error commit: {e}");
                }
            }
            Err(e) => println!("error {e}"),
        }
    }
}

fn fmt_parts(p: &[TopicPartition]) -> String {
    if p.is_empty() {
        return "-".into();
    }
    p.iter()
        .map(|tp| format!("{}:{}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(",")
}

/// A member killed with SIGKILL: its partitions move to the survivor after
/// the session timeout, and processing resumes from the committed offsets
/// (at most the record it processed but had not committed is processed
/// again, per partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_killed_by_sigkill() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-sigkill");
    let group = format!("{topic}-g");
    let (partitions, per) = (4, 300);
    create_topic(&client, &topic, partitions).await;
    produce_range(&client, &topic, partitions, 0, per / 2).await;
    let total = partitions as usize * per;
    let world = Arc::new(World::default());

    let victim = ChildMember::rust(&bootstrap, &group, &topic, "victim", world.clone());
    wait_for(
        "the child to process records",
        Duration::from_secs(60),
        || world.processed_by("victim") >= 100,
    )
    .await;
    let survivor = RustMember::spawn(
        &client,
        group_config(
            &group,
            &topic,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        ),
        "survivor",
        world.clone(),
    );
    wait_for(
        "the survivor to get partitions",
        Duration::from_secs(60),
        || world.has("survivor", "assigned"),
    )
    .await;
    // Let the child work on its share for a moment, then kill it.
    let before = world.processed_by("victim");
    produce_range(&client, &topic, partitions, per / 2, per * 3 / 4).await;
    wait_for(
        "the child to process its share",
        Duration::from_secs(60),
        || world.processed_by("victim") >= before + 20,
    )
    .await;
    victim.kill();
    let killed_at = now_ns();
    let victim_last = last_offsets(&world, "victim");
    let victim_parts: Vec<i32> = {
        let changes = world.changes.lock().unwrap();
        let mut owned: Vec<i32> = Vec::new();
        for (_, m, what, parts) in changes.iter().filter(|c| c.1 == "victim") {
            let _ = m;
            for tp in parts {
                if *what == "assigned" {
                    owned.push(tp.partition);
                } else {
                    owned.retain(|p| *p != tp.partition);
                }
            }
        }
        owned
    };
    assert!(
        !victim_parts.is_empty(),
        "the child owned nothing when killed"
    );
    produce_range(&client, &topic, partitions, per * 3 / 4, per).await;
    wait_for("all records", Duration::from_secs(120), || {
        world.unique() >= total
    })
    .await;

    // Taken over after the session timeout, not before.
    let takeover = world
        .changes
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.1 == "survivor" && c.2 == "assigned" && c.0 > killed_at)
        .filter(|c| c.3.iter().any(|tp| victim_parts.contains(&tp.partition)))
        .map(|c| c.0)
        .min()
        .expect("the survivor took the child's partitions over");
    let delay = Duration::from_nanos((takeover - killed_at) as u64);
    survivor.stop().await;
    assert!(
        delay >= SESSION - Duration::from_millis(1500)
            && delay <= SESSION + Duration::from_secs(20),
        "takeover after {delay:?}, session timeout {SESSION:?}"
    );
    // Resumed at the committed offsets: the only records processed twice
    // are the child's last one on each of its partitions.
    let dups = world.duplicates();
    for ((p, o), who) in &dups {
        assert_eq!(victim_last.get(p), Some(o), "{p}/{o} processed by {who:?}");
    }
    let first = {
        let mut out = BTreeMap::new();
        for (m, p, o) in world.order.lock().unwrap().iter() {
            if m == "survivor" && victim_parts.contains(p) {
                out.entry(*p).or_insert(*o);
            }
        }
        out
    };
    assert_eq!(world.unique(), total);
    eprintln!(
        "sigkill: child owned partitions {victim_parts:?}; the survivor took over after {delay:?} (session {SESSION:?}) at {first:?} (child's last processed {victim_last:?}); {} records processed twice",
        dups.len()
    );
}

/// The coordinator (a private single-node broker) restarts under a member:
/// it keeps consuming and committing, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_restart() {
    let Some(_shared) = testkit::real_bootstrap("consumer groups") else {
        return;
    };
    let Some(port) = common::free_port_base(19300) else {
        panic!("no free port range for a private broker");
    };
    let broker = common::PrivateBroker::start(port).expect("private broker");
    let bootstrap = broker.bootstrap();
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-restart");
    let group = format!("{topic}-g");
    let partitions = 3;
    create_topic(&client, &topic, partitions).await;
    produce_range(&client, &topic, partitions, 0, 200).await;
    let world = Arc::new(World::default());
    let member = RustMember::spawn(
        &client,
        group_config(
            &group,
            &topic,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        )
        .session_timeout(Duration::from_secs(30)),
        "m",
        world.clone(),
    );
    wait_for(
        "records before the restart",
        Duration::from_secs(60),
        || world.unique() >= 600,
    )
    .await;
    let started = Instant::now();
    broker.restart().expect("restart");
    eprintln!("coordinator restart took {:?}", started.elapsed());
    produce_range(&client, &topic, partitions, 200, 400).await;
    wait_for(
        "records after the restart",
        Duration::from_secs(120),
        || world.unique() >= 1200,
    )
    .await;
    member.stop().await;
    let dups = world.duplicates();
    assert!(
        dups.len() <= partitions as usize,
        "more than one record per partition processed twice: {dups:?}"
    );
    // The committed offsets survived the restart and point past the end.
    let committed = {
        let admin = client.group_admin();
        admin
            .fetch_offsets(&group, None)
            .await
            .expect("committed offsets")
    };
    for p in 0..partitions {
        let c = committed
            .get(&TopicPartition::new(topic.clone(), p))
            .cloned()
            .flatten()
            .map(|c| c.offset);
        assert_eq!(c, Some(400), "partition {p}");
    }
    eprintln!(
        "coordinator restart: 1200 records processed, {} twice; commits at 400 on all {partitions} partitions",
        dups.len()
    );
}

/// A static member (KIP-345) that restarts within the session timeout gets
/// its partitions back without a rebalance: the other member is untouched.
/// A second process with the same instance id fences the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_membership_restart_and_fencing() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-static");
    let group = format!("{topic}-g");
    create_topic(&client, &topic, 4).await;
    produce_range(&client, &topic, 4, 0, 50).await;
    let world = Arc::new(World::default());
    let cfg = |instance: &str| {
        group_config(
            &group,
            &topic,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        )
        .instance_id(instance)
    };
    let a = RustMember::spawn(&client, cfg("static-a"), "a", world.clone());
    wait_for("a to join", Duration::from_secs(60), || {
        world.has("a", "assigned")
    })
    .await;
    let b = RustMember::spawn(&client, cfg("static-b"), "b", world.clone());
    wait_for("b to join", Duration::from_secs(60), || {
        world.has("b", "assigned")
    })
    .await;
    // b's assignment can be recorded before a's from the same rebalance.
    let latest_len = |member: &str| {
        world
            .changes_of(member, "assigned")
            .last()
            .map_or(0, Vec::len)
    };
    wait_for(
        "a and b to share the partitions",
        Duration::from_secs(60),
        || latest_len("a") + latest_len("b") == 4,
    )
    .await;
    wait_for("all records", Duration::from_secs(60), || {
        world.unique() >= 200
    })
    .await;
    let a_parts = world
        .changes_of("a", "assigned")
        .last()
        .cloned()
        .expect("a's assignment");
    // a stops without leaving (static) and comes back as a2.
    a.stop().await;
    let a2 = RustMember::spawn(&client, cfg("static-a"), "a2", world.clone());
    wait_for("a2 to get a's partitions", Duration::from_secs(30), || {
        world.has("a2", "assigned")
    })
    .await;
    let mut got = world.changes_of("a2", "assigned").concat();
    got.sort();
    let mut want = a_parts.clone();
    want.sort();
    assert_eq!(
        got, want,
        "the restarted static member got other partitions"
    );
    produce_range(&client, &topic, 4, 50, 100).await;
    wait_for("all records", Duration::from_secs(60), || {
        world.unique() >= 400
    })
    .await;
    assert!(
        world.changes_of("b", "revoked").is_empty() && world.changes_of("b", "assigned").len() == 1,
        "b was disturbed by a's restart: {:?}",
        world.changes.lock().unwrap()
    );
    assert!(world.duplicates().is_empty(), "{:?}", world.duplicates());

    // A second process with a2's instance id fences a2.
    let a3 = RustMember::spawn(&client, cfg("static-a"), "a3", world.clone());
    wait_for("a2 to be fenced", Duration::from_secs(30), || {
        world
            .errors_of("a2")
            .iter()
            .any(|e| e.contains("FENCED_INSTANCE_ID"))
    })
    .await;
    wait_for("a3 to take over", Duration::from_secs(30), || {
        world.has("a3", "assigned")
    })
    .await;
    a2.stop().await;
    a3.stop().await;
    b.stop().await;
    eprintln!("static membership: restart without rebalance, fencing by a duplicate instance id");
}

/// A member that takes longer than the rebalance timeout to process a
/// record is dropped from the group: its partitions go to the other member,
/// its late commit fails (it must not move the offsets), the listener hears
/// "lost", and it rejoins as a new member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_stalled_past_the_rebalance_timeout_loses_its_partitions() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-stall");
    let group = format!("{topic}-g");
    create_topic(&client, &topic, 2).await;
    produce_range(&client, &topic, 2, 0, 100).await;
    let world = Arc::new(World::default());
    let cfg = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
    )
    .rebalance_timeout(Duration::from_secs(4));
    let a = RustMember::spawn_slow(
        &client,
        cfg.clone(),
        "a",
        world.clone(),
        Some((20, Duration::from_secs(12))),
    );
    wait_for("a to start processing", Duration::from_secs(60), || {
        world.has("a", "assigned")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = RustMember::spawn(&client, cfg, "b", world.clone());
    wait_for("all records", Duration::from_secs(90), || {
        world.unique() >= 200
    })
    .await;
    wait_for("a's late commit to fail", Duration::from_secs(30), || {
        world
            .errors_of("a")
            .iter()
            .any(|e| e.contains("commit failed"))
    })
    .await;
    wait_for("a to rejoin", Duration::from_secs(60), || {
        world.changes_of("a", "assigned").len() >= 2
    })
    .await;
    a.stop().await;
    b.stop().await;
    assert!(
        world.has("a", "lost"),
        "{:?}",
        world.changes.lock().unwrap()
    );
    // Only the stalled record was processed twice.
    let dups = world.duplicates();
    assert_eq!(dups.len(), 1, "{dups:?}");
    let committed = client
        .group_admin()
        .fetch_offsets(&group, None)
        .await
        .expect("offsets");
    for p in 0..2 {
        let c = committed
            .get(&TopicPartition::new(topic.clone(), p))
            .cloned()
            .flatten()
            .map(|c| c.offset);
        assert_eq!(c, Some(100), "partition {p}");
    }
    eprintln!("stalled member: lost its partitions, late commit refused, 1 record processed twice");
}

/// Auto-commit commits what was delivered once the application comes back
/// for more, and on close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_commit_commits_delivered_records() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-autocommit");
    let group = format!("{topic}-g");
    create_topic(&client, &topic, 2).await;
    produce_range(&client, &topic, 2, 0, 50).await;
    let cfg = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
    )
    .auto_commit(Some(Duration::from_millis(200)));
    let mut consumer = client.group_consumer(cfg).expect("consumer");
    let mut seen = 0;
    while seen < 60 {
        let r = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a record in time")
            .expect("stream open")
            .expect("record");
        let _ = r;
        seen += 1;
    }
    // Coming back for more: the interval passes while the stream waits
    // (the last records arrive, then nothing).
    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
        while let Some(r) = consumer.next().await {
            r.expect("record");
            seen += 1;
        }
    })
    .await;
    assert_eq!(seen, 100);
    let admin = client.group_admin();
    let committed: i64 = admin
        .fetch_offsets(&group, None)
        .await
        .expect("offsets")
        .values()
        .map(|c| c.as_ref().map_or(0, |c| c.offset))
        .sum();
    assert_eq!(committed, seen as i64, "auto-committed while polling");
    consumer.close().await.expect("close");
    let committed: i64 = admin
        .fetch_offsets(&group, None)
        .await
        .expect("offsets")
        .values()
        .map(|c| c.as_ref().map_or(0, |c| c.offset))
        .sum();
    assert_eq!(committed, 100);
}

/// `commit_async` after every record: all handles succeed and the last
/// commit wins (when each ran on its own task, older commits landed after
/// newer ones and left the offset at 66 to 158 of 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_async_bursts_land_in_order() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-commit-order");
    let group = format!("{topic}-g");
    create_topic(&client, &topic, 1).await;
    produce_range(&client, &topic, 1, 0, 200).await;
    let cfg = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
    );
    let admin = client.group_admin();
    for round in 0..3 {
        let mut consumer = client.group_consumer(cfg.clone()).expect("consumer");
        let mut handles = Vec::new();
        let mut last = None;
        for _ in 0..200 {
            let r = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .expect("a record in time")
                .expect("stream open")
                .expect("record");
            let tp = TopicPartition::new(topic.clone(), r.partition);
            // Round 1 commits ever lower offsets, which must win just the
            // same: the latest call counts, not the highest offset.
            let offset = if round == 1 {
                200 - r.offset
            } else {
                r.offset + 1
            };
            handles.push(consumer.commit_async([(tp, offset)]));
            last = Some(offset);
        }
        for h in handles {
            h.await.expect("join").expect("commit");
        }
        let committed = admin
            .fetch_offsets(&group, None)
            .await
            .expect("offsets")
            .into_values()
            .map(|c| c.map(|c| c.offset))
            .collect::<Vec<_>>();
        assert_eq!(committed, vec![last], "round {round}");
        consumer.close().await.expect("close");
        // Start the next round from the beginning again.
        let start = BTreeMap::from([(TopicPartition::new(topic.clone(), 0), 0)]);
        admin
            .commit_offsets(&group, &start)
            .await
            .expect("reset offsets");
    }
}

/// A member refuses to commit partitions it does not own (never had, or
/// gave up in a rebalance), and commits the others of the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_of_partitions_not_owned_are_refused() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-commit-owned");
    let group = format!("{topic}-g");
    create_topic(&client, &topic, 2).await;
    produce_range(&client, &topic, 2, 0, 10).await;
    let cfg = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
    );
    let mut a = client.group_consumer(cfg.clone()).expect("consumer a");
    for _ in 0..20 {
        tokio::time::timeout(Duration::from_secs(30), a.next())
            .await
            .expect("a record in time")
            .expect("stream open")
            .expect("record");
    }
    let tp = |p| TopicPartition::new(topic.clone(), p);
    let stranger = TopicPartition::new(format!("{topic}-other"), 0);
    let e = a
        .commit([(tp(0), 10), (stranger.clone(), 3)])
        .await
        .expect_err("a partition never owned");
    assert_eq!(e.kind(), rskafka::error::ErrorKind::InvalidInput, "{e}");
    let admin = client.group_admin();
    let offsets = admin.fetch_offsets(&group, None).await.expect("offsets");
    assert_eq!(
        offsets.get(&tp(0)).cloned().flatten().map(|c| c.offset),
        Some(10)
    );
    assert!(!offsets.contains_key(&stranger), "{offsets:?}");

    // B joins; A gives one partition up in the rebalance (A is polled by
    // its commit loop below, which is where revocations happen).
    let mut b = client.group_consumer(cfg).expect("consumer b");
    let b_task = tokio::spawn(async move {
        while b.assignment().is_empty() {
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(100), b.next()).await {
                r.expect("record");
            }
        }
        b
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.assignment().len() != 1 {
        assert!(Instant::now() < deadline, "A kept {:?}", a.assignment());
        let _ = tokio::time::timeout(Duration::from_millis(100), a.next()).await;
    }
    let b = b_task.await.expect("b");
    let given_up = if a.assignment() == vec![tp(0)] {
        tp(1)
    } else {
        tp(0)
    };
    let before = admin.fetch_offsets(&group, None).await.expect("offsets");
    let e = a
        .commit([(given_up.clone(), 1)])
        .await
        .expect_err("a partition given up");
    assert_eq!(e.kind(), rskafka::error::ErrorKind::InvalidInput, "{e}");
    let after = admin.fetch_offsets(&group, None).await.expect("offsets");
    assert_eq!(before.get(&given_up), after.get(&given_up));
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

/// GroupAdmin against live groups: list, describe (classic and KIP-848),
/// lag, offsets commit/delete (refused while consumed), delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_admin() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let admin = client.group_admin();
    let consumed = common::unique_topic("group-admin-a");
    let other = common::unique_topic("group-admin-b");
    let group = format!("{consumed}-g");
    create_topic(&client, &consumed, 2).await;
    create_topic(&client, &other, 1).await;
    produce_range(&client, &consumed, 2, 0, 10).await;
    produce_range(&client, &other, 1, 0, 10).await;

    // Offsets for a topic nobody consumes, committed from outside.
    let tp_other = TopicPartition::new(other.clone(), 0);
    admin
        .commit_offsets(&group, &[(tp_other.clone(), 7)].into_iter().collect())
        .await
        .expect("admin commit");
    let world = Arc::new(World::default());
    let m = RustMember::spawn(
        &client,
        group_config(
            &group,
            &consumed,
            GroupProtocol::Classic,
            vec![Arc::new(RangeAssignor)],
        ),
        "m",
        world.clone(),
    );
    wait_for("all records", Duration::from_secs(60), || {
        world.unique() >= 20
    })
    .await;

    let d = admin.describe_group(&group).await.expect("describe");
    assert_eq!(
        (d.state.as_str(), d.group_type.as_str()),
        ("Stable", "classic")
    );
    assert_eq!(d.assignor, "range");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].subscribed_topics, vec![consumed.clone()]);
    assert_eq!(d.members[0].assignment.len(), 2);
    let listed = admin.list_groups().await.expect("list");
    let l = listed.iter().find(|g| g.group_id == group).expect("listed");
    assert_eq!(l.protocol_type, "consumer");
    assert_eq!(l.state.as_deref(), Some("Stable"));

    let lag = admin.lag(&group).await.expect("lag");
    assert_eq!(lag.len(), 3);
    for l in &lag {
        if l.topic == consumed {
            assert_eq!((l.committed, l.end, l.lag), (Some(10), 10, Some(0)));
        } else {
            assert_eq!((l.committed, l.end, l.lag), (Some(7), 10, Some(3)));
        }
    }
    // Offsets of a consumed topic cannot be deleted; of the other they can.
    let err = admin
        .delete_offsets(&group, &[TopicPartition::new(consumed.clone(), 0)])
        .await
        .expect_err("consumed topic");
    assert_eq!(
        err.error_code(),
        Some(rskafka::protocol::ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC),
        "{err}"
    );
    admin
        .delete_offsets(&group, std::slice::from_ref(&tp_other))
        .await
        .expect("delete offsets");
    let offsets = admin.fetch_offsets(&group, None).await.expect("offsets");
    assert!(offsets.get(&tp_other).cloned().flatten().is_none());
    // Deleting a group with members is refused; without, it works.
    assert!(admin.delete_group(&group).await.is_err());
    m.stop().await;
    admin.delete_group(&group).await.expect("delete group");
    assert!(!admin
        .list_groups()
        .await
        .expect("list")
        .iter()
        .any(|g| g.group_id == group));

    // A KIP-848 group is described by ConsumerGroupDescribe.
    let group = format!("{other}-848");
    let m = RustMember::spawn(
        &client,
        group_config(&group, &other, GroupProtocol::Consumer, vec![]),
        "k",
        world.clone(),
    );
    wait_for(
        "the KIP-848 member's assignment",
        Duration::from_secs(60),
        || world.has("k", "assigned"),
    )
    .await;
    let d = admin.describe_group(&group).await.expect("describe");
    assert_eq!(d.group_type, "consumer");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].assignment, vec![tp_other.clone()]);
    m.stop().await;
}

/// A group shared with a Java-client member (kafka-clients from
/// `scripts/kafka classpath`), each side leader once.
async fn with_java(
    protocol: &str,
    assignor_class: &str,
    ours: Vec<Arc<dyn Assignor>>,
    label: &str,
) {
    let group_protocol = if protocol == "consumer" {
        GroupProtocol::Consumer
    } else {
        GroupProtocol::Classic
    };
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    if java_member_classpath().is_none() {
        return;
    }
    let client = client(&bootstrap).await;
    for java_first in [false, true] {
        let label = format!(
            "{label} with the Java client, {} leads",
            if java_first { "Java" } else { "rskafka" }
        );
        let topic = common::unique_topic("group-java");
        let group = format!("{topic}-g");
        let cfg = group_config(&group, &topic, group_protocol, ours.clone());
        let args = vec![
            bootstrap.clone(),
            group.clone(),
            topic.clone(),
            protocol.to_owned(),
            assignor_class.to_owned(),
        ];
        let kinds = if java_first {
            vec![Kind::Java(args), Kind::Rust(Box::new(cfg))]
        } else {
            vec![Kind::Rust(Box::new(cfg)), Kind::Java(args)]
        };
        shared_group(&label, kinds, &topic, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_java_range_and_roundrobin() {
    with_java(
        "classic",
        "org.apache.kafka.clients.consumer.RangeAssignor",
        vec![Arc::new(RangeAssignor)],
        "range",
    )
    .await;
    with_java(
        "classic",
        "org.apache.kafka.clients.consumer.RoundRobinAssignor",
        vec![Arc::new(RoundRobinAssignor)],
        "roundrobin",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_java_sticky() {
    with_java(
        "classic",
        "org.apache.kafka.clients.consumer.StickyAssignor",
        vec![Arc::new(StickyAssignor)],
        "sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_java_cooperative_sticky() {
    with_java(
        "classic",
        "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
        vec![Arc::new(CooperativeStickyAssignor)],
        "cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_with_java_kip848() {
    with_java("consumer", "-", vec![], "KIP-848").await;
}

/// rskafka, librdkafka and the Java client in one cooperative group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_one_cooperative_group() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    if !common::python_available() || java_member_classpath().is_none() {
        return;
    }
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("group-three");
    let group = format!("{topic}-g");
    let cfg = group_config(
        &group,
        &topic,
        GroupProtocol::Classic,
        vec![Arc::new(CooperativeStickyAssignor)],
    );
    let kinds = vec![
        Kind::Rust(Box::new(cfg)),
        Kind::Python(vec![
            "--bootstrap",
            &bootstrap,
            "--group",
            &group,
            "--topic",
            &topic,
            "--strategy",
            "cooperative-sticky",
        ]),
        Kind::Java(vec![
            bootstrap.clone(),
            group.clone(),
            topic.clone(),
            "classic".into(),
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor".into(),
        ]),
    ];
    shared_group(
        "cooperative-sticky with librdkafka and the Java client",
        kinds,
        &topic,
        &client,
    )
    .await;
}

/// Partitions added to a subscribed topic get consumed: the classic leader
/// notices them and rebalances; a KIP-848 coordinator assigns them itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn added_partitions_are_consumed() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
        let topic = common::unique_topic("group-grow");
        create_topic(&client, &topic, 2).await;
        produce_range(&client, &topic, 2, 0, 10).await;
        let world = Arc::new(World::default());
        let m = RustMember::spawn(
            &client,
            group_config(
                &format!("{topic}-g"),
                &topic,
                protocol,
                vec![Arc::new(RangeAssignor)],
            ),
            "m",
            world.clone(),
        );
        wait_for("the first records", Duration::from_secs(60), || {
            world.unique() >= 20
        })
        .await;
        client
            .controller_client()
            .expect("controller")
            .create_partitions(&topic, 4, 10_000)
            .await
            .expect("add partitions");
        for p in 2..4 {
            let pc = client
                .partition_client(topic.clone(), p)
                .await
                .expect("partition client");
            let records = (0..10)
                .map(|i| Record {
                    key: None,
                    value: Some(format!("{p}-{i}").into_bytes().into()),
                    headers: vec![],
                    timestamp: time::OffsetDateTime::now_utc(),
                })
                .collect();
            pc.produce(records, Compression::None)
                .await
                .expect("produce");
        }
        let started = Instant::now();
        wait_for(
            "the new partitions' records",
            Duration::from_secs(90),
            || world.unique() >= 40,
        )
        .await;
        eprintln!(
            "{protocol:?}: records of added partitions consumed {:?} after they were produced",
            started.elapsed()
        );
        m.stop().await;
        assert!(world.duplicates().is_empty(), "{:?}", world.duplicates());
    }
}

/// Issue #21: a matching subscription (Java's `subscribe(Pattern)`) takes
/// up topics created while the member runs, besides a named topic, with
/// either protocol: every record of the named topic, of the topic that
/// matched at the start and of the one created later arrives, and none of
/// a topic the matcher refuses.
async fn matching_subscription_takes_up_new_topics(protocol: GroupProtocol, label: &str) {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let admin = client(&bootstrap).await;
    let prefix = common::unique_topic(&format!("match-{label}"));
    let (named, first, later, other) = (
        format!("{prefix}-named"),
        format!("{prefix}-m1"),
        format!("{prefix}-m2"),
        format!("{prefix}-x"),
    );
    for t in [&named, &first, &other] {
        create_topic(&admin, t, 2).await;
        produce_range(&admin, t, 2, 0, 10).await;
    }
    // New topics show within a second, not within the default 5 minutes.
    let member_client = ClientBuilder::new(vec![bootstrap.clone()])
        .operation_timeout(Duration::from_secs(60))
        .metadata_max_age(Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let matched = format!("{prefix}-m");
    let config = GroupConfig::new(format!("{prefix}-g"), [named.clone()])
        .subscribe_matching(move |t: &str| t.starts_with(&matched))
        .protocol(protocol)
        .offset_reset(OffsetReset::Earliest)
        .session_timeout(SESSION)
        .heartbeat_interval(Duration::from_millis(500));
    let mut member = member_client.group_consumer(config).expect("member");
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut created_later = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    let complete = |seen: &BTreeMap<String, BTreeSet<String>>| {
        [&named, &first, &later]
            .iter()
            .all(|t| seen.get(t.as_str()).is_some_and(|v| v.len() == 20))
    };
    while !complete(&seen) {
        assert!(
            Instant::now() < deadline,
            "{label}: records seen per topic: {:?}",
            seen.iter().map(|(t, v)| (t, v.len())).collect::<Vec<_>>()
        );
        let batch = tokio::time::timeout(Duration::from_secs(1), member.next_batch(500)).await;
        if let Ok(Some(batch)) = batch {
            for r in batch.expect("records") {
                let value = String::from_utf8(r.record.value.unwrap_or_default().to_vec()).unwrap();
                seen.entry(r.topic.to_string()).or_default().insert(value);
            }
        }
        if !created_later
            && [&named, &first]
                .iter()
                .all(|t| seen.contains_key(t.as_str()))
        {
            // The member consumes: now a topic appears that it must take up.
            create_topic(&admin, &later, 2).await;
            produce_range(&admin, &later, 2, 0, 10).await;
            created_later = true;
        }
    }
    assert!(
        !seen.contains_key(&other),
        "{label}: records of {other}, which does not match"
    );
    member.close().await.expect("leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_matching_subscription_takes_up_new_topics() {
    matching_subscription_takes_up_new_topics(GroupProtocol::Classic, "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_matching_subscription_takes_up_new_topics() {
    matching_subscription_takes_up_new_topics(GroupProtocol::Consumer, "kip848").await;
}
