//! Prints the records of one partition from the earliest offset until it
//! reaches the end.
//!
//! `cargo run --example consume -- TOPIC [PARTITION]` (broker:
//! `$KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`).

use rskafka::client::{
    consumer::{ConsumerConfig, StartOffset},
    ClientBuilder,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().ok_or("usage: consume TOPIC [PARTITION]")?;
    let partition: i32 = args.next().map_or(Ok(0), |p| p.parse())?;
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let client = ClientBuilder::new(vec![bootstrap]).build().await?;
    let end = client
        .partition_client(&topic, partition)
        .await?
        .get_offset(rskafka::client::partition::OffsetAt::Latest)
        .await?;

    let config = ConsumerConfig::default().assign(&topic, partition, StartOffset::Earliest);
    let mut consumer = client.consumer(config)?;
    let mut position = consumer.position(&topic, partition).unwrap_or(0);
    while position < end {
        for r in consumer.next_batch().await? {
            let value = r.record.value.as_deref().unwrap_or_default();
            println!("{}: {}", r.offset, String::from_utf8_lossy(value));
            position = r.offset + 1;
        }
    }
    Ok(())
}
