//! `consume`: print the records of one or all partitions.
//!
//! One task per partition fetches with `PartitionClient::fetch` and hands
//! record batches to a single printer, so output stays line-atomic. Kept
//! self-contained so it can later move onto the library's consumer.

use std::{io::Write, time::Duration};

use clap::{Args, ValueEnum};
use rskafka::{
    client::{
        partition::{IsolationLevel, OffsetAt},
        Client,
    },
    record::RecordAndOffset,
};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{bounded, connect, format, CliError, CliResult, GlobalArgs};

/// Arguments of `consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Read only this partition (default: all partitions).
    #[arg(long)]
    partition: Option<i32>,
    /// Where to start: earliest, latest, or an offset.
    #[arg(long, default_value = "earliest", value_parser = parse_start)]
    from: Start,
    /// Stop after printing this many records in total.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop once every partition reached the end offset seen at start (the
    /// high watermark; the last stable offset under read_committed).
    #[arg(long)]
    exit_at_end: bool,
    /// Whether records of aborted or open transactions are read.
    #[arg(long, value_enum, default_value = "read_uncommitted")]
    isolation: IsolationArg,
    /// Output format: one JSON object per record, or the value alone.
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
}

/// `--from` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The log start offset.
    Earliest,
    /// The end of the partition: only records produced from now on.
    Latest,
    /// An explicit offset.
    Offset(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => match s.parse::<i64>() {
            Ok(o) if o >= 0 => Ok(Start::Offset(o)),
            _ => Err(format!(
                "expected earliest, latest or a non-negative offset, got {s:?}"
            )),
        },
    }
}

/// `--isolation` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum IsolationArg {
    /// Only committed transactional records, up to the last stable offset.
    #[value(name = "read_committed")]
    ReadCommitted,
    /// Every record up to the high watermark.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

/// `--format` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// `{"topic","partition","offset","timestamp","key","value","headers"}` per line.
    Json,
    /// The value alone per line.
    Value,
}

/// Bytes asked for per fetch; the broker still returns a first batch that is
/// larger, so progress is guaranteed.
const FETCH_MAX_BYTES: i32 = 1024 * 1024;

type Batch = (i32, Vec<RecordAndOffset>);

struct PartitionJob {
    client: Client,
    topic: String,
    partition: i32,
    start: Start,
    exit_at_end: bool,
    isolation: IsolationLevel,
    timeout: Duration,
    max_wait_ms: i32,
}

impl PartitionJob {
    async fn run(self, tx: mpsc::Sender<Batch>) -> CliResult {
        let t = self.timeout;
        let pc = bounded(t, "partition lookup", async {
            Ok(self
                .client
                .partition_client(&self.topic, self.partition)
                .await?)
        })
        .await?
        .with_isolation_level(self.isolation);
        let mut offset = match self.start {
            Start::Earliest => pc.get_offset(OffsetAt::Earliest).await?,
            Start::Latest => pc.get_offset(OffsetAt::Latest).await?,
            Start::Offset(o) => o,
        };
        let end = if self.exit_at_end {
            Some(pc.get_offset(OffsetAt::Latest).await?)
        } else {
            None
        };
        // The library bounds each request; this bounds a whole fetch with
        // its retries, plus the time the broker may hold it.
        let fetch_bound = t + Duration::from_millis(u64::try_from(self.max_wait_ms).unwrap_or(0));
        loop {
            if end.is_some_and(|end| offset >= end) {
                return Ok(());
            }
            let res = bounded(fetch_bound, "fetch", async {
                Ok(pc
                    .fetch(offset, 1..FETCH_MAX_BYTES, self.max_wait_ms)
                    .await?)
            })
            .await?;
            let mut records = res.records;
            if let Some(end) = end {
                records.retain(|r| r.offset < end);
            }
            offset = offset.max(res.next_offset);
            if !records.is_empty() && tx.send((self.partition, records)).await.is_err() {
                // The printer has finished (e.g. --count reached).
                return Ok(());
            }
        }
    }
}

/// Writes formatted records to stdout; `Ok(false)` when stdout was closed.
fn write_batch(
    out: &mut Vec<u8>,
    fmt: FormatArg,
    topic: &str,
    p: i32,
    recs: &[RecordAndOffset],
) -> CliResult<bool> {
    out.clear();
    for r in recs {
        match fmt {
            FormatArg::Json => format::json_line(out, topic, p, r),
            FormatArg::Value => format::value_line(out, r),
        }
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs `consume`.
pub async fn run(g: &GlobalArgs, args: ConsumeArgs) -> CliResult {
    let client = connect(g).await?;
    let all = crate::topic_partitions(&client, g, &args.topic).await?;
    let partitions = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(CliError::msg(format!(
                "topic {:?} has no partition {p} (UNKNOWN_TOPIC_OR_PARTITION)",
                args.topic
            )))
        }
        None => all,
    };
    let isolation = match args.isolation {
        IsolationArg::ReadCommitted => IsolationLevel::ReadCommitted,
        IsolationArg::ReadUncommitted => IsolationLevel::ReadUncommitted,
    };
    // Long polls keep idle consumers cheap, but stay well inside the
    // request timeout so a held fetch never looks like a dead broker.
    let max_wait_ms = i32::try_from((g.timeout_ms / 2).min(500)).unwrap_or(500);
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let mut tasks = JoinSet::new();
    for p in partitions {
        let job = PartitionJob {
            client: client.clone(),
            topic: args.topic.clone(),
            partition: p,
            start: args.from,
            exit_at_end: args.exit_at_end,
            isolation,
            timeout: g.timeout(),
            max_wait_ms,
        };
        tasks.spawn(job.run(tx.clone()));
    }
    drop(tx);

    let mut remaining = args.count;
    let mut out = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((p, mut recs)) = msg else { break };
                if let Some(n) = remaining {
                    let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
                    recs.truncate(n_usize);
                    remaining = Some(n - recs.len() as u64);
                }
                if !write_batch(&mut out, args.format, &args.topic, p, &recs)? {
                    return Ok(());
                }
                if remaining == Some(0) {
                    return Ok(());
                }
            }
            Some(res) = tasks.join_next() => {
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(CliError::msg(format!("partition task failed: {e}"))),
                }
            }
            _ = &mut ctrl_c => return Ok(()),
        }
    }
    // Every task has dropped its sender; collect any error not seen yet.
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(CliError::msg(format!("partition task failed: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("17"), Ok(Start::Offset(17)));
        assert!(parse_start("-1").is_err());
        assert!(parse_start("soon").is_err());
    }
}
