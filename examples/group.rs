//! A consumer-group member with manual commits: it commits the offsets of
//! what it processed after each batch, and leaves the group on Ctrl-C.
//!
//! `cargo run --example group -- GROUP TOPIC...` (broker:
//! `$KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`).

use rskafka::client::{
    consumer::OffsetReset,
    group::{GroupConfig, GroupProtocol},
    ClientBuilder,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let group = args.next().ok_or("usage: group GROUP TOPIC...")?;
    let topics: Vec<String> = args.collect();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let client = ClientBuilder::new(vec![bootstrap]).build().await?;

    let config = GroupConfig::new(group, topics)
        // KIP-848; GroupProtocol::Classic joins groups of older clients.
        .protocol(GroupProtocol::Consumer)
        .offset_reset(OffsetReset::Earliest)
        // Commit by hand, after processing.
        .auto_commit(None);
    let mut member = client.group_consumer(config)?;
    loop {
        let batch = tokio::select! {
            batch = member.next_batch(500) => batch,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(batch) = batch else { break };
        for r in batch? {
            println!("{}/{}@{}", r.topic, r.partition, r.offset);
        }
        // The offsets after the records handed out so far; refused if the
        // member lost the partitions meanwhile.
        member.commit_consumed().await?;
    }
    // Commits nothing more (auto-commit is off) and leaves the group, so
    // its partitions move to the other members at once.
    member.close().await?;
    Ok(())
}
