//! Consumer groups against a real broker (`KAFKA_BOOTSTRAP`): rebalances
//! with exactly-once processing when the application commits after
//! processing, a SIGKILLed member, a coordinator restart, groups shared with
//! librdkafka members (`tests/group_interop.py`, PyPI confluent-kafka), and
//! KIP-848 membership.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use rskafka::{
    client::{
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

/// Every assignment change of every member, in the order they happened.
#[derive(Default)]
struct Ownership {
    log: Mutex<Vec<(String, &'static str, Vec<TopicPartition>)>>,
}

impl Ownership {
    /// Replays the log: no partition may be assigned to a member while
    /// another member holds it.
    fn check_never_owned_twice(&self) {
        let log = self.log.lock().unwrap();
        let mut owner: HashMap<TopicPartition, String> = HashMap::new();
        for (member, what, parts) in log.iter() {
            for tp in parts {
                match *what {
                    "assigned" => {
                        if let Some(other) = owner.get(tp) {
                            assert_eq!(
                                other, member,
                                "{tp} assigned to {member} while {other} owns it; log: {log:?}"
                            );
                        }
                        owner.insert(tp.clone(), member.clone());
                    }
                    _ => {
                        if owner.get(tp) == Some(member) {
                            owner.remove(tp);
                        }
                    }
                }
            }
        }
    }

    fn count(&self, what: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1 == what)
            .count()
    }
}

struct Listener {
    name: String,
    ownership: Arc<Ownership>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&self, partitions: &[TopicPartition]) {
        self.ownership.log.lock().unwrap().push((
            self.name.clone(),
            "assigned",
            partitions.to_vec(),
        ));
    }
    fn on_revoked(&self, partitions: &[TopicPartition]) {
        self.ownership.log.lock().unwrap().push((
            self.name.clone(),
            "revoked",
            partitions.to_vec(),
        ));
    }
    fn on_lost(&self, partitions: &[TopicPartition]) {
        self.ownership
            .log
            .lock()
            .unwrap()
            .push((self.name.clone(), "lost", partitions.to_vec()));
    }
}

/// (partition, offset) → how many times it was processed, and by whom.
type Processed = Arc<Mutex<BTreeMap<(i32, i64), Vec<String>>>>;

/// Runs a member that processes each record (records it) and commits it
/// before taking the next, until `stop` turns true.
fn spawn_member(
    client: Client,
    config: GroupConfig,
    name: &str,
    ownership: Arc<Ownership>,
    processed: Processed,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_owned();
    let config = config.auto_commit(None).listener(Arc::new(Listener {
        name: name.clone(),
        ownership,
    }));
    tokio::spawn(async move {
        let mut consumer = client.group_consumer(config).expect("group consumer");
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                item = consumer.next() => match item {
                    Some(Ok(r)) => {
                        processed.lock().unwrap().entry((r.partition, r.offset)).or_default().push(name.clone());
                        let tp = TopicPartition::new(r.topic.to_string(), r.partition);
                        if let Err(e) = consumer.commit([(tp, r.offset + 1)]).await {
                            eprintln!("{name}: commit failed: {e}");
                        }
                    }
                    Some(Err(e)) => eprintln!("{name}: {e}"),
                    None => break,
                },
            }
        }
        consumer.close().await.expect("close");
    })
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unique(processed: &Processed) -> usize {
    processed.lock().unwrap().len()
}

fn duplicates(processed: &Processed) -> Vec<((i32, i64), Vec<String>)> {
    processed
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (*k, v.clone()))
        .collect()
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
        .offset_reset(rskafka::client::consumer::OffsetReset::Earliest)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(20))
}

/// Two members, the second joining half-way: every record processed once.
async fn two_members_exactly_once(
    protocol: GroupProtocol,
    assignors: Vec<Arc<dyn Assignor>>,
    label: &str,
) {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic(&format!("group-two-{label}"));
    let group = format!("{topic}-g");
    let (partitions, per) = (6, 400);
    create_topic(&client, &topic, partitions).await;
    produce_range(&client, &topic, partitions, 0, per / 2).await;
    let total = partitions as usize * per;

    let ownership = Arc::new(Ownership::default());
    let processed: Processed = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = group_config(&group, &topic, protocol, assignors);
    let a = spawn_member(
        client.clone(),
        cfg.clone(),
        "a",
        ownership.clone(),
        processed.clone(),
        stop_rx.clone(),
    );
    wait_for(
        "member a to process the first half",
        Duration::from_secs(60),
        || unique(&processed) >= total / 2,
    )
    .await;
    let b = spawn_member(
        client.clone(),
        cfg,
        "b",
        ownership.clone(),
        processed.clone(),
        stop_rx,
    );
    wait_for(
        "member b to get partitions",
        Duration::from_secs(60),
        || {
            ownership
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|(m, what, _)| m == "b" && *what == "assigned")
        },
    )
    .await;
    produce_range(&client, &topic, partitions, per / 2, per).await;
    wait_for("all records", Duration::from_secs(120), || {
        unique(&processed) >= total
    })
    .await;
    // Both members took part.
    let by_b = processed
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.contains(&"b".to_owned()))
        .count();
    stop_tx.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(unique(&processed), total);
    assert!(
        duplicates(&processed).is_empty(),
        "processed twice: {:?}",
        duplicates(&processed)
    );
    assert!(by_b > 0, "member b never got partitions");
    ownership.check_never_owned_twice();
    eprintln!(
        "{label}: {total} records processed exactly once by 2 members ({by_b} by the second); {} assignments, {} revocations",
        ownership.count("assigned"),
        ownership.count("revoked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_eager_range_two_members_exactly_once() {
    two_members_exactly_once(
        GroupProtocol::Classic,
        vec![Arc::new(RangeAssignor)],
        "range",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_eager_roundrobin_and_sticky_two_members_exactly_once() {
    two_members_exactly_once(
        GroupProtocol::Classic,
        vec![Arc::new(RoundRobinAssignor)],
        "roundrobin",
    )
    .await;
    two_members_exactly_once(
        GroupProtocol::Classic,
        vec![Arc::new(StickyAssignor)],
        "sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_cooperative_sticky_two_members_exactly_once() {
    two_members_exactly_once(
        GroupProtocol::Classic,
        vec![Arc::new(CooperativeStickyAssignor)],
        "cooperative-sticky",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_two_members_exactly_once() {
    two_members_exactly_once(GroupProtocol::Consumer, vec![], "kip848").await;
}
