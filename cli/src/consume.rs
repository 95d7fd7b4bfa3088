//! `consume`: print the records of one or all partitions.
//!
//! Runs on the library's [`Consumer`]: one stream over all the partitions,
//! fetched from every leader at once and prefetched while this prints.

use std::{collections::BTreeMap, time::Duration};

use clap::{Args, ValueEnum};
use rskafka::client::{
    consumer::{Consumer, ConsumerConfig, OffsetReset, StartOffset},
    partition::{IsolationLevel, OffsetAt},
    Client,
};

use crate::{
    bounded, connect,
    format::{format_piece, Layout, Template},
    output::{Output, Written},
    signals::Signals,
    CliError, CliResult, GlobalArgs,
};

/// Arguments of `consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic; with --group, one or more topics.
    #[arg(required = true, num_args = 1.., value_name = "TOPIC")]
    topics: Vec<String>,
    /// Read only this partition (default: all partitions).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Where to start: earliest, latest; an offset N: on each partition the
    /// first offset >= N it has (its log start if that is later; its end,
    /// with a warning, if it has no record at or after N yet); -N: N records
    /// before each partition's end (its start if it has fewer);
    /// @TIMESTAMP_MS: each partition's first record at or after that time
    /// (its end if none).
    #[arg(long, default_value = "earliest", value_parser = parse_start, allow_hyphen_values = true)]
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
    /// Output format string as kcat's `-f`: `%t` topic, `%p` partition,
    /// `%o` offset, `%k` key, `%K` key length, `%s` value, `%S` value
    /// length, `%R` value length as a big-endian 32-bit integer, `%T`
    /// timestamp (ms), `%h` headers (`n=v,...`), `%%`; escapes `\n \r \t
    /// \\ \0 \xHH`. A null key or value prints as nothing, its length as -1.
    #[arg(short = 'f', long, value_name = "FMT", value_parser = Template::parse, conflicts_with = "format")]
    format_string: Option<Template>,
    /// With `--format value`: print the key and this delimiter before each
    /// value (kcat's `-K`).
    #[arg(long, value_name = "D")]
    key_delimiter: Option<String>,
    /// Consume as a member of this group: it assigns the partitions, and
    /// what is printed is committed as it goes and before exiting (`--from`
    /// then only says where partitions without a committed offset start).
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
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
    /// This many records before the end.
    Tail(i64),
    /// The first record at or after this time.
    Timestamp(time::OffsetDateTime),
}

fn parse_start(s: &str) -> Result<Start, String> {
    let expected =
        || format!("expected earliest, latest, an offset, -N or @TIMESTAMP_MS, got {s:?}");
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => {
            if let Some(ms) = s.strip_prefix('@') {
                let ms: i64 = ms.parse().map_err(|_| expected())?;
                return time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map(Start::Timestamp)
                    .map_err(|_| expected());
            }
            if let Some(n) = s.strip_prefix('-') {
                return match n.parse::<i64>() {
                    Ok(n) if n > 0 => Ok(Start::Tail(n)),
                    _ => Err(expected()),
                };
            }
            match s.parse::<i64>() {
                Ok(o) if o >= 0 => Ok(Start::Offset(o)),
                _ => Err(expected()),
            }
        }
    }
}

/// How `args` asks records to be printed.
fn layout_of(args: &ConsumeArgs) -> CliResult<Layout> {
    let key_delimiter = args.key_delimiter.as_ref().map(|d| d.as_bytes().to_vec());
    match (&args.format_string, args.format, key_delimiter) {
        (Some(t), _, None) => Ok(Layout::Template(t.clone())),
        (None, FormatArg::Value, d) => Ok(Layout::Value(d)),
        (None, FormatArg::Json, None) => Ok(Layout::Json),
        (_, _, Some(_)) => Err(CliError::usage(
            "--key-delimiter applies to --format value (use %k in --format-string)",
        )),
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

/// The end offset of each partition as seen now: the high watermark, or
/// the last stable offset under read_committed.
async fn end_offsets(
    client: &Client,
    g: &GlobalArgs,
    topic: &str,
    partitions: &[i32],
    isolation: IsolationLevel,
) -> CliResult<BTreeMap<i32, i64>> {
    let mut ends = BTreeMap::new();
    for &p in partitions {
        let end = bounded(g.timeout(), "end offset lookup", async {
            let pc = client
                .partition_client(topic, p)
                .await?
                .with_isolation_level(isolation);
            Ok(pc.get_offset(OffsetAt::Latest).await?)
        })
        .await?;
        ends.insert(p, end);
    }
    Ok(ends)
}

/// Where each partition starts for `--from` N, -N or @TIMESTAMP_MS.
///
/// For N: the first offset >= N the partition has. That is its log start if
/// the log starts after N, and its end (the high watermark: any isolation
/// may fetch from there) if it has no record at or after N yet, which a
/// warning line names (kcat too resets such a partition rather than
/// failing). So a short partition neither fails the run nor makes
/// `--exit-at-end` and a plain run disagree. For -N: N before the end, or
/// the start if the partition holds fewer. For @T: the first offset whose
/// timestamp is at or after T, or the end if there is none.
async fn offset_starts(
    client: &Client,
    g: &GlobalArgs,
    topic: &str,
    partitions: &[i32],
    from: Start,
) -> CliResult<BTreeMap<i32, i64>> {
    let bounds = bounded(g.timeout() * 2, "offset lookup", async {
        let lookups = partitions.iter().map(|&p| async move {
            let pc = client.partition_client(topic, p).await?;
            let start = pc.get_offset(OffsetAt::Earliest).await?;
            let end = pc.get_offset(OffsetAt::Latest).await?;
            let at_time = match from {
                Start::Timestamp(t) => Some(pc.get_offset(OffsetAt::Timestamp(t)).await?),
                _ => None,
            };
            Ok::<_, rskafka::error::Error>((p, start, end, at_time))
        });
        Ok(futures::future::try_join_all(lookups).await?)
    })
    .await?;
    let mut starts = BTreeMap::new();
    for (p, start, end, at_time) in bounds {
        let at = match from {
            Start::Offset(n) if end <= n => {
                eprintln!(
                    "warning: partition {p} of {topic:?} has no record at or after offset {n} \
                     yet (it ends at {end}): starting at its end"
                );
                end
            }
            Start::Offset(n) => n.max(start),
            Start::Tail(n) => end.saturating_sub(n).max(start),
            // -1: no record at or after the time.
            _ => at_time.filter(|&o| o >= 0).unwrap_or(end),
        };
        starts.insert(p, at);
    }
    Ok(starts)
}

/// The isolation level: `-X isolation.level` (checked before) overrides
/// `--isolation`. The end offsets of `--exit-at-end` must be those of the
/// level the consumer reads with: under read_committed a consumer never
/// passes an open transaction, so a high watermark beyond it is never
/// reached.
fn isolation(g: &GlobalArgs, arg: IsolationArg) -> CliResult<IsolationLevel> {
    Ok(match (g.properties()?.get("isolation.level"), arg) {
        (Some("read_committed"), _) | (None, IsolationArg::ReadCommitted) => {
            IsolationLevel::ReadCommitted
        }
        _ => IsolationLevel::ReadUncommitted,
    })
}

/// Whether every partition's position reached its end offset.
fn at_end(consumer: &Consumer, topic: &str, ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter()
        .all(|(p, end)| consumer.position(topic, *p).is_some_and(|pos| pos >= *end))
}

/// Runs `consume`.
pub async fn run(g: &GlobalArgs, args: ConsumeArgs) -> CliResult {
    let layout = layout_of(&args)?;
    if let Some(group) = args.group {
        let reset = match args.from {
            Start::Earliest => OffsetReset::Earliest,
            Start::Latest => OffsetReset::Latest,
            Start::Offset(_) | Start::Tail(_) | Start::Timestamp(_) => {
                return Err(CliError::usage(
                    "--from with an offset, -N or @TIMESTAMP_MS does not apply with --group",
                ))
            }
        };
        let isolation = isolation(g, args.isolation)?;
        let opts = crate::group::GroupConsume {
            topics: args.topics,
            exit_at_end: args.exit_at_end,
            group,
            count: args.count,
            layout,
            isolation,
            reset,
        };
        return crate::group::consume(g, opts).await;
    }
    let [topic] = args.topics.as_slice() else {
        return Err(CliError::usage("several topics need --group"));
    };
    let topic = topic.clone();
    let client = connect(g).await?;
    let all = crate::topic_partitions(&client, g, &topic).await?;
    let partitions = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(CliError::msg(format!(
                "topic {:?} has no partition {p} (UNKNOWN_TOPIC_OR_PARTITION)",
                topic
            )))
        }
        None => all,
    };
    let isolation = isolation(g, args.isolation)?;
    let ends = if args.exit_at_end {
        Some(end_offsets(&client, g, &topic, &partitions, isolation).await?)
    } else {
        None
    };
    let starts: BTreeMap<i32, StartOffset> = match args.from {
        Start::Offset(_) | Start::Tail(_) | Start::Timestamp(_) => {
            offset_starts(&client, g, &topic, &partitions, args.from)
                .await?
                .into_iter()
                .map(|(p, o)| (p, StartOffset::At(o)))
                .collect()
        }
        Start::Earliest => partitions
            .iter()
            .map(|&p| (p, StartOffset::Earliest))
            .collect(),
        Start::Latest => partitions
            .iter()
            .map(|&p| (p, StartOffset::Latest))
            .collect(),
    };
    // Long polls keep idle consumers cheap, but stay well inside the
    // request timeout so a held fetch never looks like a dead broker.
    let max_wait = Duration::from_millis((g.timeout_ms / 2).min(500));
    // Starts are inside the log; should it move past a position later
    // (retention), that is an error rather than a silent skip.
    let mut config = ConsumerConfig::default()
        .isolation(isolation)
        .offset_reset(OffsetReset::Error)
        .max_wait(max_wait);
    for (&p, &start) in &starts {
        config = config.assign(&topic, p, start);
    }
    let config = g
        .properties()?
        .apply_to_consumer(config)
        .map_err(|e| CliError::usage(format!("-X: {e}")))?;
    let mut consumer = client.consumer(config)?;
    let result = print_records(&mut consumer, &topic, &args, &layout, ends.as_ref()).await;
    if result.is_ok() {
        // Frees the broker's fetch session now rather than at its expiry.
        consumer
            .close(g.timeout().min(Duration::from_secs(1)))
            .await;
    }
    result
}

/// Prints records until the end offsets, the count, a closed stdout or
/// Ctrl-C.
async fn print_records(
    consumer: &mut Consumer,
    topic: &str,
    args: &ConsumeArgs,
    layout: &Layout,
    ends: Option<&BTreeMap<i32, i64>>,
) -> CliResult {
    let mut remaining = args.count;
    let mut out = Vec::new();
    let mut output = Output::stdout()?;
    let mut signals = Signals::new()?;
    let mut meter = crate::meter::Meter::for_consume();
    let mut printed = 0u64;
    // With --exit-at-end, positions are checked at least this often: a
    // partition may reach its end without yielding records (e.g. it is
    // empty, or ends with transaction markers).
    let tick = Duration::from_millis(100);
    loop {
        if let Some(ends) = ends {
            if at_end(consumer, topic, ends) {
                return Ok(());
            }
        }
        let mut batch = tokio::select! {
            batch = consumer.next_batch() => batch?,
            _ = tokio::time::sleep(tick), if ends.is_some() => continue,
            _ = signals.recv() => return Ok(()),
        };
        if let Some(ends) = ends {
            batch.retain(|r| ends.get(&r.partition).is_some_and(|end| r.offset < *end));
        }
        if let Some(n) = remaining {
            batch.truncate(usize::try_from(n).unwrap_or(usize::MAX));
            remaining = Some(n - batch.len() as u64);
        }
        let mut records = batch.into_iter();
        while records.len() > 0 {
            out.clear();
            let before = records.len();
            format_piece(&mut out, None, layout, topic, &mut records);
            printed += (before - records.len()) as u64;
            let written = tokio::select! {
                w = output.write(std::mem::take(&mut out)) => w,
                _ = signals.recv() => {
                    output.stop().await;
                    return Ok(());
                }
            };
            match written {
                Written::All(buf) => out = buf,
                Written::Closed(_) => return Ok(()),
                Written::Failed(_, e) => return Err(e.into()),
            }
        }
        meter.update(printed);
        if remaining == Some(0) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("17"), Ok(Start::Offset(17)));
        assert_eq!(parse_start("-3"), Ok(Start::Tail(3)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(Start::Timestamp(
                time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
            ))
        );
        for bad in ["-0", "--1", "@", "@x", "@99999999999999999", "soon"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }
}
