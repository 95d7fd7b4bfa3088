//! `fake-cluster`: serves an in-process fake Kafka cluster (rskafka-fake)
//! to other processes until SIGINT or SIGTERM.

use std::io::Write;

use clap::Args;

use crate::{signals::Signals, CliError, CliResult, GlobalArgs};

/// `--brokers N`: the global flag, which names bootstrap brokers for every
/// other command, counts the brokers to start here.
fn broker_count(g: &GlobalArgs) -> CliResult<u16> {
    if !g.brokers_on_command_line {
        return Ok(1);
    }
    let value = g.brokers.as_deref().unwrap_or_default();
    value
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=MAX_BROKERS).contains(n))
        .ok_or_else(|| {
            CliError::usage(format!(
                "invalid value '{value}' for '--brokers <N>': fake-cluster takes a broker count from 1 to {MAX_BROKERS}"
            ))
        })
}

/// The most brokers one fake cluster runs.
const MAX_BROKERS: u16 = 64;

/// Arguments of `fake-cluster`; the number of brokers is the global
/// `--brokers` (read here as a count, 1 if not given on the command line).
#[derive(Args, Debug)]
pub struct FakeClusterArgs {
    /// Port of the first broker; the others listen on the ports after it.
    /// Without it, each broker takes any free port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Partitions of auto-created topics (Kafka's num.partitions).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    default_partitions: i32,
    /// Don't create unknown topics on Metadata requests (Kafka's
    /// auto.create.topics.enable=false).
    #[arg(long)]
    no_auto_create_topics: bool,
}

/// Starts the cluster, prints its bootstrap line on stdout, and serves
/// until a signal asks to stop (exit 0).
pub async fn run(g: &GlobalArgs, args: FakeClusterArgs) -> CliResult {
    let brokers = broker_count(g)?;
    if let Some(port) = args.port {
        if u32::from(port) + u32::from(brokers) - 1 > u32::from(u16::MAX) {
            return Err(CliError::usage(format!(
                "--port {port} with --brokers {brokers} runs past port 65535"
            )));
        }
    }
    // Caught before the line is printed: a caller that signals as soon as
    // it reads the line must not kill the process uncleanly.
    let mut signals = Signals::new()?;
    let cluster = rskafka_fake::FakeCluster::builder()
        .brokers(usize::from(brokers))
        .base_port(args.port)
        .default_partitions(args.default_partitions)
        .auto_create_topics(!args.no_auto_create_topics)
        .start()
        .await
        .map_err(|e| CliError::msg(format!("cannot start the fake cluster: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", cluster.bootstrap())?;
    out.flush()?;
    drop(out);
    signals.recv().await;
    drop(cluster);
    Ok(())
}
