//! Consumer groups on the fake cluster, driven by rskafka's GroupConsumer:
//! members share partitions and rebalance, commits survive a member's
//! restart, and the group survives coordinator moves and injected
//! coordinator errors. KIP-848 groups: the coordinator's protocol driven
//! by hand (revocation before reassignment, epochs, fencing of silent
//! members, commits checked against member epochs), and GroupConsumers
//! with `GroupProtocol::Consumer` sharing partitions.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
mod common;

use rskafka::{
    client::{
        consumer::OffsetReset,
        group::{GroupConfig, GroupProtocol, TopicPartition},
        producer::{ProducerConfig, ProducerRecord},
        Client,
    },
    connection::{BrokerConnection, ConnectionConfig},
    protocol::{
        messages::{
            consumer_group_heartbeat_request::TopicPartitions, offset_commit_request,
            ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
            ConsumerGroupHeartbeatResponse, OffsetCommitRequest,
        },
        ApiKey, ErrorCode, Uuid,
    },
    record::Record,
};
use rskafka_fake::{FakeCluster, Fault};
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
        Self::spawn_with(client, group, topic, GroupProtocol::Classic, name, seen)
    }

    fn spawn_with(
        client: &Client,
        group: &str,
        topic: &str,
        protocol: GroupProtocol,
        name: &str,
        seen: Arc<Seen>,
    ) -> Self {
        let config = GroupConfig::new(group, [topic])
            .protocol(protocol)
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

// KIP-848 groups

/// The topic of the KIP-848 tests.
const TOPIC: &str = "events";

/// A cluster with `TOPIC`, KIP-848 members heartbeating every 200 ms.
async fn kip848_cluster(session_timeout: Duration) -> (FakeCluster, Client) {
    let cluster = FakeCluster::builder()
        .consumer_session_timeout(session_timeout)
        .consumer_heartbeat_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("fake cluster starts");
    cluster.create_topic(TOPIC, PARTITIONS).expect("topic");
    let client = common::client(&cluster).await;
    (cluster, client)
}

/// A group member speaking ConsumerGroupHeartbeat itself.
struct RawMember {
    conn: BrokerConnection,
    group: String,
    id: String,
    epoch: i32,
    /// The assignment last received.
    assigned: BTreeSet<(Uuid, i32)>,
}

impl RawMember {
    async fn new(cluster: &FakeCluster, group: &str, id: &str) -> Self {
        let addr = cluster.broker_addrs()[0].to_string();
        let conn = BrokerConnection::connect(&addr, Arc::new(ConnectionConfig::default()))
            .await
            .expect("connect");
        Self {
            conn,
            group: group.to_owned(),
            id: id.to_owned(),
            epoch: 0,
            assigned: BTreeSet::new(),
        }
    }

    /// One heartbeat at `epoch` reporting `owned`; updates the epoch and
    /// assignment from a successful answer.
    async fn heartbeat_at(
        &mut self,
        epoch: i32,
        owned: &BTreeSet<(Uuid, i32)>,
    ) -> ConsumerGroupHeartbeatResponse {
        let mut topics: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for (t, p) in owned {
            topics.entry(*t).or_default().push(*p);
        }
        let resp = self
            .conn
            .request(&ConsumerGroupHeartbeatRequest {
                group_id: self.group.clone(),
                member_id: self.id.clone(),
                member_epoch: epoch,
                rebalance_timeout_ms: 30_000,
                subscribed_topic_names: Some(vec![TOPIC.to_owned()]),
                topic_partitions: Some(
                    topics
                        .into_iter()
                        .map(|(topic_id, partitions)| TopicPartitions {
                            topic_id,
                            partitions,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            })
            .await
            .expect("heartbeat answered");
        if resp.error_code == 0 {
            self.epoch = resp.member_epoch;
            if let Some(a) = &resp.assignment {
                self.assigned = a
                    .topic_partitions
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                    .collect();
            }
        }
        resp
    }

    /// A heartbeat acknowledging the assignment last received.
    async fn heartbeat(&mut self) -> ConsumerGroupHeartbeatResponse {
        let owned = self.assigned.clone();
        self.heartbeat_at(self.epoch, &owned).await
    }

    fn partitions(&self) -> Vec<i32> {
        self.assigned.iter().map(|(_, p)| *p).collect()
    }

    async fn commit(&self, partition: i32, epoch: i32) -> ErrorCode {
        let resp = self
            .conn
            .request(&OffsetCommitRequest {
                group_id: self.group.clone(),
                generation_id_or_member_epoch: epoch,
                member_id: self.id.clone(),
                topics: vec![offset_commit_request::OffsetCommitRequestTopic {
                    name: TOPIC.to_owned(),
                    partitions: vec![offset_commit_request::OffsetCommitRequestPartition {
                        partition_index: partition,
                        committed_offset: 1,
                        committed_leader_epoch: -1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("commit answered");
        ErrorCode(resp.topics[0].partitions[0].error_code)
    }
}

#[tokio::test]
async fn partitions_move_only_after_the_previous_owner_released_them() {
    let (cluster, _client) = kip848_cluster(Duration::from_secs(30)).await;
    let mut a = RawMember::new(&cluster, "g", "member-a").await;
    let joined = a.heartbeat_at(0, &BTreeSet::new()).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.member_id.as_deref(), Some("member-a"));
    assert_eq!(joined.heartbeat_interval_ms, 200);
    assert_eq!(a.partitions(), vec![0, 1, 2, 3]);
    let epoch_alone = a.epoch;
    assert!(epoch_alone > 0);
    // Acknowledged: nothing changed, so no assignment is sent again.
    assert_eq!(a.heartbeat().await.assignment, None);

    // B joins: the target splits the partitions, but A holds them all.
    let mut b = RawMember::new(&cluster, "g", "member-b").await;
    assert_eq!(b.heartbeat_at(0, &BTreeSet::new()).await.error_code, 0);
    assert!(b.epoch > epoch_alone);
    assert!(b.partitions().is_empty(), "{:?}", b.partitions());

    // A is told to give two up, keeping its epoch until it has.
    let owned_before = a.assigned.clone();
    let resp = a.heartbeat_at(a.epoch, &owned_before).await;
    assert_eq!(resp.member_epoch, epoch_alone);
    assert_eq!(a.partitions().len(), 2);
    assert!(b.heartbeat().await.assignment.is_none() && b.partitions().is_empty());
    // Still reporting the revoked partitions: nothing moves.
    a.heartbeat_at(a.epoch, &owned_before).await;
    assert!(b.heartbeat().await.assignment.is_none());

    // Released: A reaches the new epoch, and B gets the two partitions.
    let resp = a.heartbeat().await;
    assert_eq!(resp.member_epoch, b.epoch);
    b.heartbeat().await;
    assert_eq!(b.partitions().len(), 2);
    let all: BTreeSet<i32> = a.partitions().into_iter().chain(b.partitions()).collect();
    assert_eq!(all, (0..PARTITIONS).collect());

    let describe = a
        .conn
        .request(&ConsumerGroupDescribeRequest {
            group_ids: vec!["g".into()],
            ..Default::default()
        })
        .await
        .expect("describe");
    let g = &describe.groups[0];
    assert_eq!(
        (
            g.error_code,
            g.group_state.as_str(),
            g.assignor_name.as_str()
        ),
        (0, "Stable", "uniform")
    );
    assert_eq!(g.members.len(), 2);

    // A leaves: B gets everything at once (nothing to wait for).
    let left = a.heartbeat_at(-1, &BTreeSet::new()).await;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    b.heartbeat().await;
    assert_eq!(b.partitions(), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn silent_members_are_fenced_and_lose_their_commits() {
    let (cluster, _client) = kip848_cluster(Duration::from_secs(1)).await;
    let mut a = RawMember::new(&cluster, "g", "member-a").await;
    a.heartbeat_at(0, &BTreeSet::new()).await;
    let epoch = a.epoch;
    assert_eq!(a.commit(0, epoch).await, ErrorCode::NONE);
    assert_eq!(a.commit(0, epoch - 1).await, ErrorCode::STALE_MEMBER_EPOCH);
    let owned = a.assigned.clone();
    assert_eq!(
        ErrorCode(a.heartbeat_at(epoch + 1, &owned).await.error_code),
        ErrorCode::FENCED_MEMBER_EPOCH
    );
    // Without the group's members, only members commit.
    let stranger = RawMember::new(&cluster, "g", "").await;
    assert_eq!(stranger.commit(0, -1).await, ErrorCode::UNKNOWN_MEMBER_ID);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut b = RawMember::new(&cluster, "g", "member-b").await;
    b.heartbeat_at(0, &BTreeSet::new()).await;
    assert_eq!(
        b.partitions(),
        vec![0, 1, 2, 3],
        "the silent member's partitions move at once"
    );
    assert_eq!(a.commit(0, epoch).await, ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(
        ErrorCode(a.heartbeat().await.error_code),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(b.commit(1, b.epoch).await, ErrorCode::NONE);
    // Once the group is empty, simple commits are allowed again.
    b.heartbeat_at(-1, &BTreeSet::new()).await;
    assert_eq!(stranger.commit(0, -1).await, ErrorCode::NONE);
}

#[tokio::test]
async fn joins_are_checked() {
    let (cluster, _client) = kip848_cluster(Duration::from_secs(30)).await;
    let mut m = RawMember::new(&cluster, "g", "").await;
    // From v1 the member names itself.
    assert_eq!(
        ErrorCode(m.heartbeat_at(0, &BTreeSet::new()).await.error_code),
        ErrorCode::INVALID_REQUEST
    );
    let resp = m
        .conn
        .request(&ConsumerGroupHeartbeatRequest {
            group_id: "g".into(),
            member_id: "m".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec![TOPIC.into()]),
            server_assignor: Some("sticky".into()),
            topic_partitions: Some(vec![]),
            ..Default::default()
        })
        .await
        .expect("answered");
    assert_eq!(ErrorCode(resp.error_code), ErrorCode::UNSUPPORTED_ASSIGNOR);
    let mut stranger = RawMember::new(&cluster, "g", "never-joined").await;
    stranger.epoch = 3;
    assert_eq!(
        ErrorCode(stranger.heartbeat().await.error_code),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rskafka_consumers_share_partitions_and_take_over_on_leave() {
    let (_cluster, client) = kip848_cluster(Duration::from_secs(10)).await;
    let seen = Arc::new(Seen::default());
    produce(&client, TOPIC, 5).await;
    let a = Member::spawn_with(
        &client,
        "shared",
        TOPIC,
        GroupProtocol::Consumer,
        "a",
        seen.clone(),
    );
    wait_for("a to own every partition", || {
        seen.assigned("a") == vec![0, 1, 2, 3]
    })
    .await;
    let b = Member::spawn_with(
        &client,
        "shared",
        TOPIC,
        GroupProtocol::Consumer,
        "b",
        seen.clone(),
    );
    wait_for("a and b to split the partitions", || {
        let (pa, pb) = (seen.assigned("a"), seen.assigned("b"));
        pa.len() == 2 && pb.len() == 2 && pa.iter().all(|p| !pb.contains(p))
    })
    .await;
    produce(&client, TOPIC, 5).await;
    wait_for("every record", || {
        seen.distinct() == 10 * PARTITIONS as usize
    })
    .await;

    let d = client
        .group_admin()
        .describe_group("shared")
        .await
        .expect("describe");
    assert_eq!((d.group_type.as_str(), d.members.len()), ("consumer", 2));

    a.stop().await;
    wait_for("b to own every partition", || {
        seen.assigned("b") == vec![0, 1, 2, 3]
    })
    .await;
    produce(&client, TOPIC, 5).await;
    wait_for("the records after a left", || {
        seen.distinct() == 15 * PARTITIONS as usize
    })
    .await;
    b.stop().await;
    let records = seen.records.lock().unwrap();
    let late: Vec<_> = records
        .iter()
        .filter(|((_, offset), _)| *offset >= 10)
        .filter(|(_, by)| by.iter().any(|m| m != "b"))
        .collect();
    assert!(late.is_empty(), "only b consumed after a left: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_members_partitions_go_to_an_rskafka_consumer() {
    let (cluster, client) = kip848_cluster(Duration::from_secs(2)).await;
    produce(&client, TOPIC, 5).await;
    let mut silent = RawMember::new(&cluster, "takeover", "silent").await;
    silent.heartbeat_at(0, &BTreeSet::new()).await;
    assert_eq!(silent.partitions(), vec![0, 1, 2, 3]);
    let epoch = silent.epoch;
    assert_eq!(silent.commit(0, epoch).await, ErrorCode::NONE);

    let seen = Arc::new(Seen::default());
    let b = Member::spawn_with(
        &client,
        "takeover",
        TOPIC,
        GroupProtocol::Consumer,
        "b",
        seen.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        seen.assigned("b").is_empty(),
        "partitions held by a member in its session stay there"
    );
    wait_for("b to get the silent member's partitions", || {
        seen.assigned("b") == vec![0, 1, 2, 3]
    })
    .await;
    wait_for("b to consume what was not committed", || {
        seen.distinct() == 5 * PARTITIONS as usize - 1
    })
    .await;
    assert_eq!(silent.commit(0, epoch).await, ErrorCode::UNKNOWN_MEMBER_ID);
    b.stop().await;
    // The silent member's commit (offset 1 of partition 0) was honoured.
    assert!(!seen.records.lock().unwrap().contains_key(&(0, 0)));
}
