//! The exactly-once pipeline against the three-broker cluster of
//! `scripts/kafka up --brokers 3` (`KAFKA_CLUSTER_BOOTSTRAP`; skipped with a
//! notice without it) while a partition leader is SIGKILLed and restarted.

#[path = "../../../tests/common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::TestCluster;
use common::{exactly_once_through_worker_kills, Pipe};

/// How long the cluster may take to be whole again after a kill.
const WHOLE: Duration = Duration::from_secs(180);

/// Issue #20's exactly-once check on the cluster: 200,000 events through
/// two exactly-once workers, one of them SIGKILLed three times and
/// restarted with the same transactional id, and, while those kills go on,
/// the leader of the events topic's partition 0 SIGKILLed and started again
/// 10 s later. Under read_committed `.processed` holds every event exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_worker_kills_and_a_leader_kill() {
    let Some(cluster) = TestCluster::acquire() else {
        return;
    };
    cluster.wait_whole(WHOLE).await;
    let client = cluster.client().await;
    let pipe = Pipe::new(&cluster.bootstrap().join(","), "pipe-eos-failover", 6);
    let events = pipe.topic.clone();
    let processed = format!("{events}.processed");
    let leader_kill = async {
        // Into the run: the workers are busy with the backlog and the load,
        // and the first worker kill is under way.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let md = client.metadata().await.expect("metadata");
        for topic in [&events, &processed] {
            let t = md.topics.get(topic.as_str()).expect("the pipeline's topic");
            // One replica fewer must lose nothing committed.
            assert!(
                t.partitions.values().all(|p| p.replicas.len() == 3),
                "{topic} is not replicated to 3 nodes: {:?}",
                t.partitions
            );
        }
        let victim = cluster.leader(&client, &events, 0).await;
        let downed = cluster.kill(victim);
        eprintln!("node {victim}, leader of {events}/0, killed mid-run");
        // Down longer than the 4 s broker session: its leaderships and
        // coordinators move to the others, and the workers go on there.
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::spawn_blocking(move || downed.start())
            .await
            .expect("restart the node");
    };
    exactly_once_through_worker_kills(
        pipe,
        "one of two workers SIGKILLed 3 times, a partition leader SIGKILLed once (3 brokers)",
        leader_kill,
    )
    .await;
    cluster.wait_whole(WHOLE).await;
    // Their replicas would slow down the next tests' catch-ups.
    for suffix in ["", ".processed", ".retry", ".dlq"] {
        cluster
            .delete_topic(&client, &format!("{events}{suffix}"))
            .await;
    }
}
