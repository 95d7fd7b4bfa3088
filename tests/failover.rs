//! Failover against the three-broker cluster of `scripts/kafka up --brokers
//! 3` (`KAFKA_CLUSTER_BOOTSTRAP`; replication factor 3, min.insync.replicas
//! 2): a partition leader SIGKILLed and restarted under the idempotent
//! producer, and a group coordinator SIGKILLed and restarted under two
//! group members. Until these, leader and coordinator moves were tested
//! only against scripted fakes.
//!
//! The tests take turns on the cluster (`TestCluster::acquire`), restart
//! what they killed even when they fail, and start by waiting until every
//! partition is fully replicated again.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use rskafka::{
    client::{
        consumer::{ConsumerConfig, OffsetReset, StartOffset},
        group::{GroupConfig, GroupProtocol, RebalanceListener, TopicPartition},
        partition::OffsetAt,
        producer::{ProducerConfig, ProducerRecord},
        Client,
    },
    record::Record,
};
use time::OffsetDateTime;
use tokio::{sync::watch, task::JoinHandle};

use common::cluster::{assert_none, TestCluster};

/// Bound on waiting for the cluster to be whole again: a restarted node
/// catches up, then gets its leaderships back at the next rebalance check.
const WHOLE: Duration = Duration::from_secs(120);

/// A record whose value starts with its id (8 bytes, big endian).
fn record(id: u64, size: usize) -> Record {
    let mut value = id.to_be_bytes().to_vec();
    value.resize(size.max(8), b'x');
    Record {
        key: None,
        value: Some(Bytes::from(value)),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

fn id_of(r: &Record) -> u64 {
    let v = r.value.as_deref().expect("a value");
    u64::from_be_bytes(v[..8].try_into().expect("8 bytes of id"))
}

/// The end offset of every partition.
async fn end_offsets(client: &Client, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p)
            .await
            .expect("partition client");
        ends.insert(
            p,
            pc.get_offset(OffsetAt::Latest).await.expect("end offset"),
        );
    }
    ends
}

/// Every record of the topic up to `ends`, read with a [`Consumer`]: per
/// partition, (offset, id) in log order.
///
/// [`Consumer`]: rskafka::client::consumer::Consumer
async fn read_back(
    client: &Client,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, Vec<(i64, u64)>> {
    let mut config = ConsumerConfig::default().offset_reset(OffsetReset::Error);
    for &p in ends.keys() {
        config = config.assign(topic, p, StartOffset::Earliest);
    }
    let mut consumer = client.consumer(config).expect("consumer");
    let mut read: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_end = |c: &rskafka::client::consumer::Consumer| {
        ends.iter()
            .all(|(p, end)| c.position(topic, *p).is_some_and(|pos| pos >= *end))
    };
    while !at_end(&consumer) {
        assert!(
            Instant::now() < deadline,
            "reading back did not reach the end offsets {ends:?}"
        );
        // Bounded so that the positions are checked again: a partition
        // may reach its end without handing out more records.
        let Ok(batch) = tokio::time::timeout(Duration::from_secs(1), consumer.next_batch()).await
        else {
            continue;
        };
        for r in batch.expect("fetch") {
            if r.offset < ends[&r.partition] {
                read.entry(r.partition)
                    .or_default()
                    .push((r.offset, id_of(&r.record)));
            }
        }
    }
    consumer.close(Duration::from_secs(1)).await;
    read
}

/// Issue: the leader of a partition is SIGKILLed while an idempotent
/// producer (the defaults: acks=all, idempotence on) sends 200k records,
/// and restarted while it still sends. Every acknowledged record is in the
/// log exactly once, at the offset its acknowledgement named, in send order
/// per partition; no record is written twice at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_across_a_leader_kill() {
    let Some(cluster) = TestCluster::acquire() else {
        return;
    };
    cluster.wait_whole(WHOLE).await;
    let client = cluster.client().await;
    let topic = common::unique_topic("failover-produce");
    const PARTITIONS: i32 = 4;
    const N: u64 = 200_000;
    cluster.create_topic(&client, &topic, PARTITIONS).await;
    let victim = cluster.leader(&client, &topic, 0).await;

    // A small buffer keeps the sends close to the acknowledgements, so that
    // the kill and the restart fall in the middle of the stream.
    let producer = client
        .producer(ProducerConfig::default().buffer_memory(2 << 20))
        .expect("producer");
    // Deliveries are awaited in send order by a task of their own that
    // counts the acknowledged ones: the kill and the restart are placed by
    // that count, whatever the machine's speed.
    let acked = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let awaiter = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut results = Vec::with_capacity(N as usize);
            while let Some((id, partition, delivery)) = rx.recv().await {
                let result: rskafka::error::Result<_> = delivery.await;
                if result.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                results.push((id, partition, result));
            }
            results
        })
    };

    let started = Instant::now();
    let mut killed = None;
    let mut restart: Option<JoinHandle<()>> = None;
    let mut acked_at_kill = 0;
    for id in 0..N {
        let partition = (id % PARTITIONS as u64) as i32;
        let delivery = producer
            .send(ProducerRecord::new(topic.clone(), record(id, 100)).with_partition(partition))
            .await
            .expect("send");
        tx.send((id, partition, delivery)).expect("awaiter runs");
        if id % 1_000 != 999 {
            continue;
        }
        let now_acked = acked.load(Ordering::Relaxed);
        if killed.is_none() && restart.is_none() && now_acked >= N / 5 {
            killed = Some(cluster.kill(victim));
            acked_at_kill = now_acked;
            eprintln!("killed the leader of {topic}/0 after {now_acked} acknowledgements");
        }
        // Restarted once the producer got well past the failover, in the
        // background: records keep flowing while the node comes back and
        // then takes its leaderships back.
        if killed.is_some() && now_acked >= acked_at_kill + N / 5 {
            let downed = killed.take().expect("killed");
            eprintln!("restarting node {victim} after {now_acked} acknowledgements");
            restart = Some(tokio::task::spawn_blocking(move || downed.start()));
        }
        // About 25 s for the whole stream, so that there is time to fail
        // over, restart and move the leadership back while records flow.
        let due = Duration::from_micros(125 * (id + 1));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    drop(tx);
    let results = tokio::time::timeout(Duration::from_secs(240), awaiter)
        .await
        .expect("every delivery resolves (delivery timeout 120 s)")
        .expect("awaiter task");
    let sent_in = started.elapsed();
    let restarted_while_sending = restart.is_some();
    // Still down when the sends ended: restarted now (the guard's drop).
    drop(killed);
    if let Some(restart) = restart {
        restart.await.expect("restart");
    }
    let metrics = producer.metrics();
    producer.close().await;

    let ends = end_offsets(&client, &topic, PARTITIONS).await;
    let read = read_back(&client, &topic, &ends).await;

    // Where each id landed, and every id more than once.
    let mut at: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut duplicated = Vec::new();
    let mut out_of_order = Vec::new();
    let mut misplaced = Vec::new();
    for (&p, records) in &read {
        let mut last = None;
        for &(offset, id) in records {
            if let Some(first) = at.insert(id, (p, offset)) {
                duplicated.push((id, first, (p, offset)));
            }
            if id % PARTITIONS as u64 != p as u64 {
                misplaced.push((id, p, offset));
            }
            if last.is_some_and(|l| id <= l) {
                out_of_order.push((p, offset, id));
            }
            last = Some(id);
        }
    }
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut wrong_offset = Vec::new();
    let mut unacked_present = 0;
    for (id, partition, result) in &results {
        match result {
            Ok(meta) => match at.get(id) {
                None => lost.push(*id),
                Some(&(p, o)) => {
                    if p != *partition
                        || meta.partition != *partition
                        || meta.offset.is_some_and(|m| m != o)
                    {
                        wrong_offset.push((*id, meta.partition, meta.offset, p, o));
                    }
                }
            },
            Err(e) => {
                *failed.entry(e.kind().to_string()).or_default() += 1;
                unacked_present += usize::from(at.contains_key(id));
            }
        }
    }
    let in_log: usize = read.values().map(Vec::len).sum();
    eprintln!(
        "leader kill under the producer: node {victim} killed; {N} sent in {sent_in:?}, \
         {} acknowledged, failed {failed:?} ({unacked_present} of them in the log anyway); \
         {in_log} in the log; lost {}, duplicated {}, out of order {}, misplaced {}, \
         offsets not as acknowledged {}; {metrics:?}",
        results.len() - failed.values().sum::<usize>(),
        lost.len(),
        duplicated.len(),
        out_of_order.len(),
        misplaced.len(),
        wrong_offset.len()
    );
    assert!(
        acked_at_kill > 0 && restarted_while_sending,
        "the leader was killed and restarted while records were sent"
    );
    assert_eq!(results.len(), N as usize);
    assert_none("acknowledged but not in the log", &lost);
    assert_none(
        "written twice (id, first (partition, offset), again)",
        &duplicated,
    );
    assert_none("not in send order (partition, offset, id)", &out_of_order);
    assert_none("in the wrong partition (id, partition, offset)", &misplaced);
    assert_none(
        "not where acknowledged (id, acked partition and offset, partition, offset)",
        &wrong_offset,
    );
    // The outage lasts seconds, the delivery timeout 120 s: nothing should
    // have failed at all.
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");

    cluster.delete_topic(&client, &topic).await;
    cluster.wait_whole(WHOLE).await;
}

/// What the members of a group test processed.
#[derive(Default)]
struct Processed {
    /// (partition, offset) → how many times it was processed.
    times: Mutex<HashMap<(i32, i64), u32>>,
    /// Error items of the members' streams.
    errors: Mutex<Vec<String>>,
}

impl Processed {
    fn unique(&self) -> usize {
        self.times.lock().unwrap().len()
    }
}

/// Counts the partitions a member was assigned.
#[derive(Default)]
struct Assigned(AtomicU64, AtomicBool);

impl RebalanceListener for Assigned {
    fn on_assigned(&self, partitions: &[TopicPartition]) {
        self.0.fetch_add(partitions.len() as u64, Ordering::Relaxed);
        self.1.store(true, Ordering::Relaxed);
    }
}

/// A member that processes (records) every record it gets, auto-committing,
/// until told to stop; then it closes, which commits the rest and leaves.
struct Member {
    stop: watch::Sender<bool>,
    task: JoinHandle<rskafka::error::Result<()>>,
}

impl Member {
    fn spawn(client: &Client, config: GroupConfig, name: &str, seen: Arc<Processed>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let mut consumer = client.group_consumer(config).expect("group consumer");
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    item = consumer.next() => match item {
                        Some(Ok(r)) => {
                            *seen.times.lock().unwrap().entry((r.partition, r.offset)).or_default() += 1;
                        }
                        Some(Err(e)) => {
                            eprintln!("member {name}: {e}");
                            seen.errors.lock().unwrap().push(format!("{name}: {e}"));
                        }
                        None => break,
                    },
                }
            }
            consumer.close().await
        });
        Self { stop, task }
    }

    async fn close(self) -> rskafka::error::Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .expect("member closes in time")
            .expect("member task")
    }
}

/// Waits until `cond` holds, failing the test with `what` after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The group's coordinator once `wanted` holds for it: the brokers' views of
/// a leadership change settle within moments of each other.
async fn coordinator_once(client: &Client, group: &str, wanted: impl Fn(i32) -> bool) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client.group_admin().describe_group(group).await;
        let coordinator = d.expect("describe the group").coordinator;
        if wanted(coordinator) || Instant::now() >= deadline {
            return coordinator;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of the group's committed offsets.
async fn committed_sum(client: &Client, group: &str) -> i64 {
    match client.group_admin().fetch_offsets(group, None).await {
        Ok(c) => c.values().flatten().map(|c| c.offset).sum(),
        Err(e) => {
            eprintln!("fetching committed offsets: {e}");
            0
        }
    }
}

/// Waits until the group committed at least `target` in all.
async fn wait_committed(client: &Client, group: &str, target: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = committed_sum(client, group).await;
        if c >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for commits {what}: {c} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue: the group's coordinator is SIGKILLed while two members consume
/// (records produced before and during), then restarted. The members go on
/// committing through both coordinator moves (to another node and back);
/// nothing is missed; after both close, the committed offsets are the log
/// end offsets and a fresh member of the group reads nothing.
async fn group_across_a_coordinator_kill(protocol: GroupProtocol, label: &str) {
    let Some(cluster) = TestCluster::acquire() else {
        return;
    };
    cluster.wait_whole(WHOLE).await;
    let started = Instant::now();
    let client = cluster.client().await;
    let topic = common::unique_topic(&format!("failover-group-{label}"));
    let group = format!("{topic}-g");
    const PARTITIONS: i32 = 6;
    cluster.create_topic(&client, &topic, PARTITIONS).await;

    // Records before the members start, and during the whole test.
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut next_id = 0u64;
    let mut deliveries = Vec::new();
    for _ in 0..12_000 {
        let p = (next_id % PARTITIONS as u64) as i32;
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic.clone(), record(next_id, 100)).with_partition(p))
                .await
                .expect("send"),
        );
        next_id += 1;
    }
    for d in deliveries {
        d.await.expect("produced before");
    }
    let (stop_producing, mut producing_stopped) = watch::channel(false);
    let background = {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut id = next_id;
            while !*producing_stopped.borrow_and_update() {
                let mut round = Vec::new();
                for _ in 0..300 {
                    let p = (id % PARTITIONS as u64) as i32;
                    round.push(
                        producer
                            .send(
                                ProducerRecord::new(topic.clone(), record(id, 100))
                                    .with_partition(p),
                            )
                            .await
                            .expect("send"),
                    );
                    id += 1;
                }
                for d in round {
                    d.await.expect("produced during");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            id
        })
    };

    let config = GroupConfig::new(group.clone(), [topic.clone()])
        .protocol(protocol)
        .offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(30))
        .auto_commit(Some(Duration::from_millis(500)));
    let seen = Arc::new(Processed::default());
    let a = Member::spawn(&client, config.clone(), "a", seen.clone());
    let b = Member::spawn(&client, config.clone(), "b", seen.clone());
    let admin = client.group_admin();
    // Both members own partitions before the kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let coordinator = loop {
        if let Ok(d) = admin.describe_group(&group).await {
            if d.members.len() == 2 && d.members.iter().all(|m| !m.assignment.is_empty()) {
                break d.coordinator;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the two members did not share the partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_for(
        "records processed before the kill",
        Duration::from_secs(60),
        || seen.unique() >= 6_000,
    )
    .await;

    let downed = cluster.kill(coordinator);
    let before_kill: i64 = end_offsets(&client, &topic, PARTITIONS)
        .await
        .values()
        .sum();
    eprintln!(
        "killed coordinator {coordinator} with {} records processed",
        seen.unique()
    );
    // Commits reach the new coordinator: everything produced before the
    // kill gets committed while the old one is down.
    wait_committed(&client, &group, before_kill, "after the kill").await;
    let moved_to = coordinator_once(&client, &group, |c| c != coordinator).await;
    assert_ne!(moved_to, coordinator, "the coordinator moved");
    tokio::task::spawn_blocking(move || downed.start())
        .await
        .expect("restart");
    // The restarted node gets its leaderships back, the group's offsets
    // partition among them: the coordinator moves again.
    cluster.wait_whole(WHOLE).await;
    let back_to = coordinator_once(&client, &group, |c| c == coordinator).await;
    assert_eq!(back_to, coordinator, "the coordinator moved back");
    let before_stop: i64 = end_offsets(&client, &topic, PARTITIONS)
        .await
        .values()
        .sum();
    wait_committed(&client, &group, before_stop, "after the restart").await;

    let _ = stop_producing.send(true);
    let produced = tokio::time::timeout(Duration::from_secs(120), background)
        .await
        .expect("the producer stops in time")
        .expect("producer task");
    producer.close().await;
    let ends = end_offsets(&client, &topic, PARTITIONS).await;
    let total: i64 = ends.values().sum();
    assert_eq!(
        total, produced as i64,
        "every produced record is in the log once"
    );
    wait_for("every record processed", Duration::from_secs(120), || {
        seen.unique() as i64 >= total
    })
    .await;
    let closed_a = a.close().await;
    let closed_b = b.close().await;

    let times = seen.times.lock().unwrap().clone();
    let missed: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(&p, &end)| (0..end).map(move |o| (p, o)))
        .filter(|k| !times.contains_key(k))
        .collect();
    let twice: BTreeMap<(i32, i64), u32> = times
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();
    let errors = seen.errors.lock().unwrap().clone();
    eprintln!(
        "{label}: coordinator {coordinator} killed, moved to {moved_to}, back to {back_to} \
         ({:?}); {total} records, {} processed more than once (at-least-once across the kill): \
         {:?}; {} stream errors: {errors:?}",
        started.elapsed(),
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>(),
        errors.len()
    );
    assert_none("never processed (partition, offset)", &missed);
    closed_a.expect("member a closes cleanly");
    closed_b.expect("member b closes cleanly");

    // Clean exits committed everything.
    let committed = admin
        .fetch_offsets(&group, None)
        .await
        .expect("committed offsets");
    for (&p, &end) in &ends {
        let c = committed
            .get(&TopicPartition::new(topic.clone(), p))
            .cloned()
            .flatten()
            .map(|c| c.offset);
        assert_eq!(c, Some(end), "committed offset of partition {p}");
    }

    // A fresh member starts at the committed offsets: nothing to read. It
    // would read everything again without them (offset reset: earliest).
    let assigned = Arc::new(Assigned::default());
    let mut fresh = client
        .group_consumer(config.listener(assigned.clone()))
        .expect("fresh member");
    let mut reread = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_until = None;
    loop {
        if quiet_until.is_none() && assigned.1.load(Ordering::Relaxed) {
            quiet_until = Some(Instant::now() + Duration::from_secs(3));
        }
        if quiet_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fresh member got no partitions"
        );
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), fresh.next()).await {
            match item.expect("stream open") {
                Ok(r) => reread.push((r.partition, r.offset)),
                Err(e) => eprintln!("fresh member: {e}"),
            }
        }
    }
    assert_eq!(
        assigned.0.load(Ordering::Relaxed),
        PARTITIONS as u64,
        "the fresh member owns every partition"
    );
    fresh.close().await.expect("fresh member closes");
    assert_none(
        "read again by the fresh member (partition, offset)",
        &reread,
    );

    cluster.delete_topic(&client, &topic).await;
    cluster.wait_whole(WHOLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_group_across_a_coordinator_kill() {
    group_across_a_coordinator_kill(GroupProtocol::Classic, "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_group_across_a_coordinator_kill() {
    group_across_a_coordinator_kill(GroupProtocol::Consumer, "kip848").await;
}
