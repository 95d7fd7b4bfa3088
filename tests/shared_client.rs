//! One `Client` shared by consumers, producers and admin calls against a
//! real broker (`KAFKA_BOOTSTRAP`): none of them waits behind another's
//! requests. A broker answers one connection's requests in order and holds
//! a fetch for its `max_wait`, so before connections were split by role a
//! ListOffsets or a produce on a client whose consumers were idle took up
//! to `max_wait`.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rskafka::{
    client::{
        consumer::{ConsumerConfig, OffsetReset, StartOffset},
        group::GroupConfig,
        partition::{Compression, OffsetAt},
        ClientBuilder,
    },
    record::Record,
};

/// Long enough that waiting behind one held fetch cannot pass for a prompt
/// answer.
const MAX_WAIT: Duration = Duration::from_secs(8);
/// Far above a prompt answer on a loaded machine, far below `MAX_WAIT`.
const PROMPT: Duration = Duration::from_secs(2);

fn record(value: &str) -> Record {
    Record {
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: time::OffsetDateTime::now_utc(),
    }
}

#[tokio::test]
async fn idle_consumers_do_not_delay_produce_offsets_or_lag() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = ClientBuilder::new(vec![bootstrap])
        .build()
        .await
        .expect("connect");
    let topic = common::unique_topic("shared-client");
    let group = common::unique_topic("shared-client-group");
    client
        .controller_client()
        .unwrap()
        .create_topic(&topic, 2, 1, 10_000)
        .await
        .unwrap();
    let fetch = ConsumerConfig::default().max_wait(MAX_WAIT);

    // Two idle group members and a plain consumer, all long-polling; they
    // are polled (and so take their assignments) until told to stop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let config = GroupConfig::new(group.clone(), [topic.clone()])
            .offset_reset(OffsetReset::Latest)
            .fetch(fetch.clone());
        let mut member = client.group_consumer(config).unwrap();
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = member.next() => {
                        item.expect("the member's stream ended").expect("member error");
                    }
                    _ = stopped.changed() => break,
                }
            }
            member.close().await.unwrap();
        }));
    }
    let mut plain = client
        .consumer(fetch.clone().assign(&topic, 0, StartOffset::Latest))
        .unwrap();
    let mut plain_stopped = stopped.clone();
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            item = plain.next() => panic!("nothing was produced to partition 0: {item:?}"),
            _ = plain_stopped.changed() => {}
        }
    }));
    let measure = async {
        // Let the members join and their fetches reach the broker.
        let admin = client.group_admin();
        let joined = Instant::now() + Duration::from_secs(60);
        loop {
            let d = admin.describe_group(&group).await.unwrap();
            let assigned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
            if d.members.len() == 2 && assigned == 2 {
                break;
            }
            assert!(Instant::now() < joined, "members did not join: {d:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let pc = client.partition_client(&topic, 1).await.unwrap();
        let mut timings = Vec::new();
        for i in 0..5 {
            let t = Instant::now();
            pc.get_offset(OffsetAt::Latest).await.unwrap();
            timings.push(("list_offsets", t.elapsed()));
            let t = Instant::now();
            pc.produce(vec![record(&format!("r{i}"))], Compression::None)
                .await
                .unwrap();
            timings.push(("produce", t.elapsed()));
            let t = Instant::now();
            admin.lag(&group).await.unwrap();
            timings.push(("lag", t.elapsed()));
        }
        timings
    };
    let timings = measure.await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{timings:?}");
    for (what, took) in timings {
        assert!(
            took < PROMPT,
            "{what} took {took:?} with consumers long-polling for {MAX_WAIT:?}"
        );
    }
}
