//! Describes the cluster, creates a topic, reads its configs and deletes it.
//!
//! `cargo run --example admin -- TOPIC` (broker: `$KAFKA_BOOTSTRAP`,
//! default `127.0.0.1:9092`).

use rskafka::client::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).ok_or("usage: admin TOPIC")?;
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let client = ClientBuilder::new(vec![bootstrap]).build().await?;

    let admin = client.admin();
    let cluster = admin.describe_cluster().await?;
    println!(
        "cluster {} with {} broker(s), controller {:?}",
        cluster.cluster_id,
        cluster.brokers.len(),
        cluster.controller_id
    );

    let controller = client.controller_client()?;
    controller.create_topic(&topic, 3, 1, 10_000).await?;
    for (name, entry) in controller.describe_topic_configs(&topic).await? {
        println!("{name} = {:?} ({:?})", entry.value, entry.source);
    }
    controller.delete_topic(&topic, 10_000).await?;
    Ok(())
}
