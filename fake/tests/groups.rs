//! Consumer groups on the fake cluster, driven by rskafka's GroupConsumer:
//! members share partitions and rebalance, commits survive a member's
//! restart, and the group survives coordinator moves and injected
//! coordinator errors.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
mod common;

use rskafka::{
    client::{
        consumer::OffsetReset,
        group::{GroupConfig, TopicPartition},
        producer::{ProducerConfig, ProducerRecord},
        Client,
    },
    protocol::{ApiKey, ErrorCode},
    record::Record,
};
use rskafka_fake::Fault;
use time::OffsetDateTime;
use tokio::{sync::watch, task::JoinHandle};

const PARTITIONS: i32 = 4;

/// Writes `count` records to every partition.
async fn produce(client: &Client, topic: &str, count: usize) {
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut deliveries = Vec::new();
    for p in 0..PARTITIONS {
        for _ in 0..count {
            let record = Record {
                key: None,
                value: Some(b"v".to_vec().into()),
                headers: vec![],
                timestamp: OffsetDateTime::now_utc(),
            };
            let r = ProducerRecord::new(topic, record).with_partition(p);
            deliveries.push(producer.send(r).await.expect("send"));
        }
    }
    producer.flush().await;
    for d in deliveries {
        d.await.expect("delivered");
    }
}

/// What the members saw: records by (partition, offset), assignments by member.
#[derive(Default)]
struct Seen {
    records: Mutex<BTreeMap<(i32, i64), Vec<String>>>,
    assignment: Mutex<BTreeMap<String, Vec<i32>>>,
}

impl Seen {
    fn assigned(&self, member: &str) -> Vec<i32> {
        self.assignment
            .lock()
            .unwrap()
            .get(member)
            .cloned()
            .unwrap_or_default()
    }

    fn distinct(&self) -> usize {
        self.records.lock().unwrap().len()
    }
}

/// A member consuming and committing each record, until stopped.
struct Member {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Member {
    fn spawn(client: &Client, group: &str, topic: &str, name: &str, seen: Arc<Seen>) -> Self {
        let config = GroupConfig::new(group, [topic])
            .offset_reset(OffsetReset::Earliest)
            .auto_commit(None)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(300))
            .rebalance_timeout(Duration::from_secs(10));
        let mut consumer = client.group_consumer(config).expect("group consumer");
        let (stop, mut stopped) = watch::channel(false);
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = stopped.changed() => break,
                    item = tokio::time::timeout(Duration::from_millis(200), consumer.next()) => item,
                };
                let mut parts: Vec<i32> = consumer
                    .assignment()
                    .iter()
                    .map(|tp| tp.partition)
                    .collect();
                parts.sort();
                seen.assignment.lock().unwrap().insert(name.clone(), parts);
                if let Ok(Some(Ok(r))) = item {
                    seen.records
                        .lock()
                        .unwrap()
                        .entry((r.partition, r.offset))
                        .or_default()
                        .push(name.clone());
                    let tp = TopicPartition::new(r.topic.to_string(), r.partition);
                    // A commit refused in a rebalance is redelivered later.
                    let _ = consumer.commit([(tp, r.offset + 1)]).await;
                }
            }
            consumer.close().await.expect("close");
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("member stops in time")
            .expect("member task");
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_share_the_partitions_and_rebalance_when_one_leaves() {
    let topic = "shared";
    let (cluster, client) = common::start(3, topic, PARTITIONS).await;
    produce(&client, topic, 5).await;
    let seen = Arc::new(Seen::default());
    let a = Member::spawn(&client, "g", topic, "a", seen.clone());
    wait_for("a to own every partition", || {
        seen.assigned("a").len() == PARTITIONS as usize
    })
    .await;
    let b = Member::spawn(&client, "g", topic, "b", seen.clone());
    wait_for("a and b to share", || {
        let (pa, pb) = (seen.assigned("a"), seen.assigned("b"));
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize
    })
    .await;
    produce(&client, topic, 5).await;
    wait_for("every record", || {
        seen.distinct() == 10 * PARTITIONS as usize
    })
    .await;
    b.stop().await;
    wait_for("a to own every partition again", || {
        seen.assigned("a").len() == PARTITIONS as usize
    })
    .await;
    produce(&client, topic, 5).await;
    wait_for("the later records", || {
        seen.distinct() == 15 * PARTITIONS as usize
    })
    .await;
    a.stop().await;
    assert!(cluster.request_count(ApiKey::JOIN_GROUP) >= 3);
}

/// The coordinator moves, and the coordinator answers with retriable
/// errors for a while: the member goes on, nothing is lost, and a new
/// member resumes where the commits left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_survive_coordinator_moves_errors_and_a_restart() {
    let topic = "moved";
    let group = "g-moved";
    let (cluster, client) = common::start(3, topic, PARTITIONS).await;
    produce(&client, topic, 5).await;
    let seen = Arc::new(Seen::default());
    let a = Member::spawn(&client, group, topic, "a", seen.clone());
    wait_for("the first records", || {
        seen.distinct() == 5 * PARTITIONS as usize
    })
    .await;

    let old = cluster.coordinator(group);
    let new = cluster
        .broker_ids()
        .into_iter()
        .find(|&id| id != old)
        .expect("another broker");
    cluster.move_coordinator(group, new).expect("move");
    assert_eq!(cluster.coordinator(group), new);
    cluster
        .inject(Fault::error(ApiKey::OFFSET_COMMIT, ErrorCode::COORDINATOR_NOT_AVAILABLE).times(2));
    cluster.inject(Fault::error(ApiKey::HEARTBEAT, ErrorCode::NOT_COORDINATOR).times(1));
    cluster.inject(Fault::error(ApiKey::HEARTBEAT, ErrorCode::REBALANCE_IN_PROGRESS).times(1));
    produce(&client, topic, 5).await;
    wait_for("the records after the move", || {
        seen.distinct() == 10 * PARTITIONS as usize
    })
    .await;
    a.stop().await;

    // A new member starts from the committed offsets: it sees only new records.
    let before = seen.distinct();
    let b = Member::spawn(&client, group, topic, "b", seen.clone());
    produce(&client, topic, 2).await;
    wait_for("b's records", || {
        seen.distinct() == before + 2 * PARTITIONS as usize
    })
    .await;
    b.stop().await;
    let records = seen.records.lock().unwrap();
    let by_b: Vec<_> = records
        .iter()
        .filter(|(_, who)| who.contains(&"b".to_owned()))
        .map(|((_, offset), _)| *offset)
        .collect();
    assert_eq!(
        by_b.len(),
        2 * PARTITIONS as usize,
        "b resumed at the commits"
    );
    assert!(
        by_b.iter().all(|&o| o >= 10),
        "b re-read committed records: {by_b:?}"
    );
    assert!(cluster.request_count(ApiKey::FIND_COORDINATOR) >= 2);
}
