//! Testing your own Kafka code against the fake cluster: the code under
//! test (`publish_orders`, `read_orders`) gets the fake's bootstrap address
//! as it would a real cluster's, and the test makes the cluster misbehave.
//!
//! `cargo run -p rskafka-fake --example test_your_code` (in a real project
//! this would be a `#[tokio::test]`).

use rskafka::{
    client::{
        consumer::{ConsumerConfig, StartOffset},
        producer::{ProducerConfig, ProducerRecord},
        ClientBuilder,
    },
    protocol::{ApiKey, ErrorCode},
    record::Record,
};
use rskafka_fake::{FakeCluster, Fault};

/// The code under test: publishes orders, waiting for every acknowledgement.
async fn publish_orders(
    bootstrap: &str,
    orders: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    let brokers = bootstrap.split(',').map(str::to_owned).collect();
    let client = ClientBuilder::new(brokers).build().await?;
    let producer = client.producer(ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for order in orders {
        let record = Record {
            key: None,
            value: Some(order.as_bytes().to_vec().into()),
            headers: vec![],
            timestamp: time::OffsetDateTime::now_utc(),
        };
        deliveries.push(producer.send(ProducerRecord::new("orders", record)).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await;
    Ok(())
}

/// The code under test: reads `n` orders from the start.
async fn read_orders(bootstrap: &str, n: usize) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let brokers = bootstrap.split(',').map(str::to_owned).collect();
    let client = ClientBuilder::new(brokers).build().await?;
    let mut consumer =
        client.consumer(ConsumerConfig::default().assign("orders", 0, StartOffset::Earliest))?;
    let mut out = Vec::new();
    while out.len() < n {
        for r in consumer.next_batch().await? {
            out.push(
                String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned(),
            );
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = FakeCluster::builder().brokers(2).start().await?;
    cluster.create_topic("orders", 1)?;

    // The leader "moves" twice while the orders are published, and one
    // response is lost: the producer must retry without duplicating.
    cluster.inject(Fault::error(ApiKey::PRODUCE, ErrorCode::NOT_LEADER_OR_FOLLOWER).times(2));
    cluster.move_leader("orders", 0, 2)?;
    publish_orders(&cluster.bootstrap(), &["apple", "pear", "plum"]).await?;

    let read = read_orders(&cluster.bootstrap(), 3).await?;
    assert_eq!(read, ["apple", "pear", "plum"]);
    println!("read back {read:?}: nothing lost, nothing duplicated");
    Ok(())
}
