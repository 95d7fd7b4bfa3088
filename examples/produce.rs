//! Produces lines from stdin to a topic, one record per line, and waits
//! until every record is acknowledged.
//!
//! `cargo run --example produce -- TOPIC < lines.txt` (broker:
//! `$KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`).

use rskafka::{
    client::{
        producer::{ProducerConfig, ProducerRecord},
        ClientBuilder,
    },
    record::Record,
};
use std::io::BufRead;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).ok_or("usage: produce TOPIC")?;
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let client = ClientBuilder::new(vec![bootstrap]).build().await?;
    // Idempotent by default: a retried batch is never written twice.
    let producer = client.producer(ProducerConfig::default())?;

    let mut deliveries = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let record = Record {
            key: None,
            value: Some(line?.into_bytes().into()),
            headers: vec![],
            timestamp: time::OffsetDateTime::now_utc(),
        };
        // Returns once the record is in a batch; the future resolves when
        // the broker acknowledges it.
        deliveries.push(producer.send(ProducerRecord::new(&topic, record)).await?);
    }
    let count = deliveries.len();
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await;
    eprintln!("{count} records acknowledged");
    Ok(())
}
