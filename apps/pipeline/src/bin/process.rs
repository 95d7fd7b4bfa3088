//! `process`: the pipeline's workers and their operations.
//!
//! ```text
//! process start                         a consumer-group worker (until SIGTERM/SIGINT)
//! process lag [--group-id G]            committed offset, end and lag per partition
//! process seek --topic T --partition P --offset O [--group-id G]
//! process metrics                       the running worker's /metrics
//! process counts                        records in the pipeline's topics
//! ```

use std::{collections::BTreeMap, sync::Arc};

use clap::{Parser, Subcommand};
use pipeline::{config::Settings, metrics::Metrics};
use rskafka::client::{group::TopicPartition, partition::OffsetAt};

#[derive(Parser)]
#[command(name = "process", about = "The pipeline's processing workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a worker of the consumer group until SIGTERM/SIGINT.
    Start,
    /// The group's lag per partition.
    Lag {
        /// The group (default: consumer.group_id).
        #[arg(long)]
        group_id: Option<String>,
    },
    /// Sets the group's committed offset of one partition; refused while
    /// the group has members.
    Seek {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The next offset the group reads.
        #[arg(long)]
        offset: i64,
        /// The group (default: consumer.group_id).
        #[arg(long)]
        group_id: Option<String>,
    },
    /// Prints the running worker's metrics (from observability.metrics_addr).
    Metrics,
    /// Records in the events, `.processed`, `.retry` and `.dlq` topics.
    Counts,
}

fn main() {
    pipeline::keep_large_buffers_out_of_the_heap();
    run_main();
}

#[tokio::main]
async fn run_main() {
    let cli = Cli::parse();
    let settings = pipeline::settings_or_exit();
    let result = match cli.command {
        Command::Start => start(settings).await,
        Command::Lag { group_id } => lag(&settings, group_id).await,
        Command::Seek {
            topic,
            partition,
            offset,
            group_id,
        } => seek(&settings, topic, partition, offset, group_id).await,
        Command::Metrics => metrics(&settings).await,
        Command::Counts => counts(&settings).await,
    };
    pipeline::exit_with(result)
}

async fn start(settings: Settings) -> Result<(), String> {
    if let Err(e) = settings.check_worker() {
        eprintln!("error: {e}");
        std::process::exit(pipeline::EXIT_USAGE);
    }
    let metrics = Arc::new(Metrics::default());
    let addr =
        pipeline::metrics::serve(settings.observability.metrics_addr, metrics.clone()).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    let stop = pipeline::metrics::shutdown_signal();
    if settings.consumer.exactly_once {
        pipeline::exactly_once::run(settings, metrics, stop).await
    } else {
        pipeline::worker::run(settings, metrics, stop).await
    }
}

async fn lag(settings: &Settings, group: Option<String>) -> Result<(), String> {
    let group = group.unwrap_or_else(|| settings.consumer.group_id.clone());
    let client = settings.client("admin").await?;
    let lags = client
        .group_admin()
        .lag(&group)
        .await
        .map_err(|e| format!("lag of group {group}: {e}"))?;
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    let mut total = 0;
    for l in &lags {
        let lag = l.lag.unwrap_or(l.end);
        total += lag;
        let committed = l.committed.map_or("-".to_owned(), |c| c.to_string());
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}",
            l.topic, l.partition, committed, l.end, lag
        );
    }
    println!("total lag of group {group}: {total}");
    Ok(())
}

async fn seek(
    settings: &Settings,
    topic: String,
    partition: i32,
    offset: i64,
    group: Option<String>,
) -> Result<(), String> {
    if offset < 0 || partition < 0 {
        eprintln!("error: --partition and --offset must not be negative");
        std::process::exit(pipeline::EXIT_USAGE);
    }
    let group = group.unwrap_or_else(|| settings.consumer.group_id.clone());
    let client = settings.client("admin").await?;
    let admin = client.group_admin();
    let members = admin
        .describe_group(&group)
        .await
        .map_err(|e| format!("describing group {group}: {e}"))?
        .members
        .len();
    if members > 0 {
        return Err(format!(
            "refused: group {group} has {members} active member(s); stop the workers first"
        ));
    }
    let end = client
        .partition_client(topic.clone(), partition)
        .await
        .map_err(|e| format!("{topic}/{partition}: {e}"))?
        .get_offset(OffsetAt::Latest)
        .await
        .map_err(|e| format!("{topic}/{partition}: {e}"))?;
    if offset > end {
        return Err(format!(
            "offset {offset} is past the end of {topic}/{partition} ({end})"
        ));
    }
    let offsets = BTreeMap::from([(TopicPartition::new(topic.clone(), partition), offset)]);
    admin
        .commit_offsets(&group, &offsets)
        .await
        .map_err(|e| format!("committing for group {group}: {e}"))?;
    println!("group {group}: {topic}/{partition} now at offset {offset}");
    Ok(())
}

async fn metrics(settings: &Settings) -> Result<(), String> {
    let addr = settings.observability.metrics_addr.to_string();
    let (code, body) = pipeline::metrics::http_get(&addr, "/metrics").await?;
    if code != 200 {
        return Err(format!("http://{addr}/metrics answered {code}"));
    }
    print!("{body}");
    Ok(())
}

async fn counts(settings: &Settings) -> Result<(), String> {
    let client = settings.client("admin").await?;
    let topics = client
        .list_topics()
        .await
        .map_err(|e| format!("listing topics: {e}"))?;
    let events = &settings.producer.events_topic;
    for name in [
        events.clone(),
        settings.processed_topic(),
        settings.retry_topic(),
        settings.dlq_topic(),
    ] {
        let Some(t) = topics.iter().find(|t| t.name == name) else {
            println!("{name:<40} (missing)");
            continue;
        };
        let mut records = 0;
        for p in &t.partitions {
            let pc = client
                .partition_client(name.clone(), *p)
                .await
                .map_err(|e| format!("{name}/{p}: {e}"))?;
            let err = |e: rskafka::error::Error| format!("{name}/{p}: {e}");
            let end = pc.get_offset(OffsetAt::Latest).await.map_err(err)?;
            let start = pc.get_offset(OffsetAt::Earliest).await.map_err(err)?;
            records += end - start;
        }
        println!("{name:<40} {records:>12} records");
    }
    Ok(())
}
