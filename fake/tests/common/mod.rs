//! Helpers shared by the coordinator tests.

use std::time::Duration;

use rskafka::client::{Client, ClientBuilder};
use rskafka_fake::FakeCluster;

/// A fake cluster of `brokers` with `topic` (`partitions`), and a client.
pub async fn start(brokers: usize, topic: &str, partitions: i32) -> (FakeCluster, Client) {
    let cluster = FakeCluster::builder()
        .brokers(brokers)
        .start()
        .await
        .expect("fake cluster starts");
    cluster.create_topic(topic, partitions).expect("topic");
    let client = client(&cluster).await;
    (cluster, client)
}

/// A client of `cluster`.
pub async fn client(cluster: &FakeCluster) -> Client {
    ClientBuilder::new(cluster.bootstrap().split(',').map(str::to_owned).collect())
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("client connects")
}
