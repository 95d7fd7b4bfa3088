//! Consumer groups: `consume --group` and the `group` commands (list,
//! describe, lag, seek, delete).

use std::{collections::BTreeMap, io::Write, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use rskafka::{
    client::{
        consumer::{ConsumedRecord, IsolationLevel, OffsetReset},
        group::{GroupConfig, GroupConsumer, OffsetSpec, TopicPartition},
    },
    ApiKey,
};

use crate::{
    bounded, connect,
    format::{format_piece, Layout},
    output::{Ends, Output, Written},
    signals::Signals,
    CliError, CliResult, GlobalArgs,
};

/// `group` subcommands.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Print every group: id, state and type, tab-separated, one a line.
    List,
    /// Show a group's state, protocol, members and their assignments (an
    /// error if the group does not exist).
    Describe {
        /// The group.
        group: String,
    },
    /// Print the lag of every partition the group has committed offsets
    /// for or consumes: committed offset against the end of the log (an
    /// error if the group does not exist).
    Lag(LagArgs),
    /// Move the group's committed offsets of a topic (only while the group
    /// has no members).
    Seek(SeekArgs),
    /// Delete a group and its committed offsets (it must have no members).
    Delete {
        /// The group.
        group: String,
    },
}

/// Arguments of `group lag`.
#[derive(Args, Debug)]
pub struct LagArgs {
    /// The group.
    group: String,
    /// `text`: topic, partition, committed, end, lag (tab-separated, `-`
    /// where nothing is committed); `json`: one object per line with
    /// `group`, `topic`, `partition`, `committed`, `end`, `lag`.
    #[arg(long, value_enum, default_value = "text")]
    format: LagFormat,
}

/// `group lag --format` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagFormat {
    /// Tab-separated columns.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `group seek`.
#[derive(Args, Debug)]
pub struct SeekArgs {
    /// The group.
    group: String,
    /// The topic whose offsets move (all its partitions).
    topic: String,
    /// Where to: `earliest`, `latest`, an offset, or `@TIMESTAMP_MS` (the
    /// first record at or after that time).
    #[arg(long, value_parser = parse_seek)]
    to: OffsetSpec,
}

fn parse_seek(s: &str) -> Result<OffsetSpec, String> {
    match s {
        "earliest" | "beginning" => Ok(OffsetSpec::Earliest),
        "latest" | "end" => Ok(OffsetSpec::Latest),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                return ts
                    .parse::<i64>()
                    .ok()
                    .filter(|t| *t >= 0)
                    .map(OffsetSpec::Timestamp)
                    .ok_or_else(|| format!("expected @TIMESTAMP_MS, got {s:?}"));
            }
            s.parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(OffsetSpec::Offset)
                .ok_or_else(|| {
                    format!("expected earliest, latest, an offset or @TIMESTAMP_MS, got {s:?}")
                })
        }
    }
}

/// Runs a `group` subcommand.
pub async fn run(g: &GlobalArgs, cmd: GroupCommand) -> CliResult {
    let client = connect(g).await?;
    let admin = client.group_admin();
    let mut stdout = std::io::stdout().lock();
    match cmd {
        GroupCommand::List => {
            let groups = bounded(g.timeout(), "listing groups", async {
                Ok(admin.list_groups().await?)
            })
            .await?;
            for gr in groups {
                writeln!(
                    stdout,
                    "{}\t{}\t{}",
                    gr.group_id,
                    gr.state.as_deref().unwrap_or("-"),
                    gr.group_type.as_deref().unwrap_or("-")
                )?;
            }
        }
        GroupCommand::Describe { group } => {
            let d = bounded(
                g.timeout(),
                "describing the group",
                existing_group(&admin, &group),
            )
            .await?;
            writeln!(stdout, "group: {}", d.group_id)?;
            writeln!(stdout, "state: {}", d.state)?;
            writeln!(stdout, "type: {}", d.group_type)?;
            writeln!(stdout, "protocol: {} {}", d.protocol_type, d.assignor)?;
            writeln!(stdout, "coordinator: {}", d.coordinator)?;
            writeln!(stdout, "members: {}", d.members.len())?;
            for m in d.members {
                writeln!(
                    stdout,
                    "member {} instance={} client={} host={} topics={}",
                    m.member_id,
                    m.instance_id.as_deref().unwrap_or("-"),
                    m.client_id,
                    m.client_host,
                    m.subscribed_topics.join(",")
                )?;
                let parts: Vec<String> = m.assignment.iter().map(ToString::to_string).collect();
                writeln!(
                    stdout,
                    "  assigned: {}",
                    if parts.is_empty() {
                        "-".to_owned()
                    } else {
                        parts.join(" ")
                    }
                )?;
            }
        }
        GroupCommand::Lag(args) => {
            let lags = bounded(g.timeout(), "computing lag", async {
                let lags = admin
                    .lag(&args.group)
                    .await
                    .map_err(|e| unknown_group_or(e, &args.group))?;
                if lags.is_empty() {
                    // No offsets and no assignments: an idle group, or none.
                    existing_group(&admin, &args.group).await?;
                }
                Ok(lags)
            })
            .await?;
            for l in lags {
                match args.format {
                    LagFormat::Json => {
                        // Keys in the documented order; serde_json escapes.
                        let s = |v: &str| serde_json::Value::from(v).to_string();
                        let n = |v: Option<i64>| v.map_or("null".to_owned(), |v| v.to_string());
                        writeln!(
                            stdout,
                            "{{\"group\":{},\"topic\":{},\"partition\":{},\"committed\":{},\"end\":{},\"lag\":{}}}",
                            s(&args.group),
                            s(&l.topic),
                            l.partition,
                            n(l.committed),
                            l.end,
                            n(l.lag)
                        )?;
                    }
                    LagFormat::Text => {
                        let dash = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
                        writeln!(
                            stdout,
                            "{}\t{}\t{}\t{}\t{}",
                            l.topic,
                            l.partition,
                            dash(l.committed),
                            l.end,
                            dash(l.lag)
                        )?;
                    }
                }
            }
        }
        GroupCommand::Seek(args) => {
            let offsets = bounded(g.timeout(), "moving offsets", async {
                Ok(admin
                    .reset_offsets(&args.group, &args.topic, args.to)
                    .await?)
            })
            .await?;
            for (tp, o) in offsets {
                writeln!(stdout, "{}\t{}\t{o}", tp.topic, tp.partition)?;
            }
        }
        GroupCommand::Delete { group } => {
            bounded(g.timeout(), "deleting the group", async {
                Ok(admin.delete_group(&group).await?)
            })
            .await?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Describes `group`, failing if it does not exist. The coordinator reports
/// a group it does not know as `Dead` with no members (newer brokers:
/// GROUP_ID_NOT_FOUND), as Kafka's kafka-consumer-groups tool takes it;
/// `Dead` is also the brief state of a group being removed or moved, so a
/// group still holding committed offsets counts as existing.
async fn existing_group(
    admin: &rskafka::client::group::GroupAdmin,
    group: &str,
) -> CliResult<rskafka::client::group::GroupDescription> {
    let d = admin
        .describe_group(group)
        .await
        .map_err(|e| unknown_group_or(e, group))?;
    if d.state == "Dead" && d.members.is_empty() {
        let offsets = admin
            .fetch_offsets(group, None)
            .await
            .map_err(|e| unknown_group_or(e, group))?;
        if offsets.values().all(Option::is_none) {
            return Err(unknown_group(group));
        }
    }
    Ok(d)
}

fn unknown_group(group: &str) -> CliError {
    CliError::msg(format!("group {group:?} does not exist"))
}

/// GROUP_ID_NOT_FOUND as "does not exist"; other errors as they are.
fn unknown_group_or(e: rskafka::error::Error, group: &str) -> CliError {
    if e.error_code() == Some(rskafka::ErrorCode::GROUP_ID_NOT_FOUND) {
        unknown_group(group)
    } else {
        e.into()
    }
}

/// What `consume --group` needs from the `consume` arguments.
#[derive(Debug)]
pub struct GroupConsume {
    /// The topics.
    pub topics: Vec<String>,
    /// Stop once every assigned partition reached the end it had when
    /// assigned (kcat's `-G ... -e`).
    pub exit_at_end: bool,
    /// The group.
    pub group: String,
    /// Stop after this many records in all.
    pub count: Option<u64>,
    /// How records are printed.
    pub layout: Layout,
    /// Which records are visible.
    pub isolation: IsolationLevel,
    /// Where partitions without a committed offset start.
    pub reset: OffsetReset,
}

/// `consume TOPIC --group G`: joins G, prints the records of the partitions
/// the group assigns, commits what it printed as it goes and before it
/// exits; SIGINT/SIGTERM commit, leave the group and exit 0.
pub async fn consume(g: &GlobalArgs, opts: GroupConsume) -> CliResult {
    let subscription = Subscription::parse(&opts.topics)?;
    let client = connect(g).await?;
    // A clear error for a topic that does not exist.
    subscription.check(&client, g, opts.exit_at_end).await?;
    // Auto-commit counts a batch as processed once the next one is asked
    // for, which is after it was printed whole; assignment changes happen
    // only then too. So what is committed before a revocation and when
    // leaving is exactly what was printed (a batch cut short by a signal or
    // a closed stdout is rewound to its first record not printed whole).
    let config = subscription
        .config(opts.group.clone())
        .auto_commit(Some(AUTO_COMMIT))
        .offset_reset(opts.reset)
        .isolation(opts.isolation)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_secs(1));
    let config = g
        .properties()?
        .apply_to_group(config)
        .map_err(|e| CliError::usage(format!("-X: {e}")))?;
    let mut consumer = client.group_consumer(config)?;
    let mut output = Output::stdout()?;
    let mut signals = Signals::new()?;
    let mut ends = Ends::default();
    let mut remaining = opts.count;
    let mut out = Vec::new();
    let mut result = Ok(());
    let mut meter = crate::meter::Meter::for_consume();
    let mut printed = 0u64;
    // With --exit-at-end: the end offset of each assigned partition, looked
    // up when it was assigned.
    let mut end_of: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    loop {
        if opts.exit_at_end
            && all_at_end(&client, g, &consumer, &mut end_of, opts.isolation).await?
        {
            break;
        }
        let max = remaining.map_or(BATCH, |n| usize::try_from(n).unwrap_or(BATCH).min(BATCH));
        let batch = tokio::select! {
            batch = consumer.next_batch(max) => batch,
            _ = signals.recv() => break,
            // Positions move without records too (an empty partition,
            // transaction markers): look again now and then.
            _ = tokio::time::sleep(EXIT_AT_END_TICK), if opts.exit_at_end => continue,
        };
        let batch = match batch {
            None => break,
            Some(Ok(batch)) => batch,
            // A failed commit is the next commit's to make good (or the
            // next member's to print again): not a reason to stop.
            Some(Err(e)) if e.is_retriable() || e.api() == Some(ApiKey::OFFSET_COMMIT) => {
                eprintln!("warning: {e}");
                continue;
            }
            Some(Err(e)) => {
                result = Err(CliError::from(e));
                break;
            }
        };
        if let Some(n) = remaining.as_mut() {
            *n = n.saturating_sub(batch.len() as u64);
        }
        // A batch holds records of one partition, so of one topic.
        let topic = batch.first().map_or_else(|| "".into(), |r| r.topic.clone());
        let mut records = batch.into_iter();
        let mut stopped = false;
        while records.len() > 0 && !stopped {
            out.clear();
            ends.clear();
            let before = records.len();
            format_piece(
                &mut out,
                Some(&mut ends),
                &opts.layout,
                &topic,
                &mut records,
            );
            printed += (before - records.len()) as u64;
            let written = tokio::select! {
                w = output.write(std::mem::take(&mut out)) => w,
                _ = signals.recv() => Written::Closed(output.stop().await),
            };
            match written {
                Written::All(buf) => out = buf,
                Written::Closed(n) => {
                    rewind(&mut consumer, &topic, &ends, n, records.as_slice());
                    stopped = true;
                }
                Written::Failed(n, e) => {
                    rewind(&mut consumer, &topic, &ends, n, records.as_slice());
                    result = Err(e.into());
                    stopped = true;
                }
            }
        }
        if stopped {
            break;
        }
        meter.update(printed);
        // Printed whole: commit it now, so that a member killed without
        // warning leaves little to print twice (commits are queued in order
        // and merged while one is in flight).
        drop(consumer.commit_async(consumer.consumed_offsets()));
        if remaining == Some(0) {
            break;
        }
    }
    // Commits what was printed and leaves the group; a second signal stops
    // waiting for that.
    let closed = tokio::select! {
        closed = bounded(g.timeout().saturating_mul(2), "leaving the group", async {
            Ok(consumer.close().await?)
        }) => closed,
        _ = signals.recv() => Err(CliError::msg("interrupted while leaving the group")),
    };
    result.and(closed)
}

/// What to subscribe to: topic names, and `^REGEX` patterns (as kcat's
/// and librdkafka's: the pattern as given, anchored only where it says).
struct Subscription {
    names: Vec<String>,
    patterns: Vec<regex::Regex>,
}

impl Subscription {
    fn parse(given: &[String]) -> CliResult<Self> {
        let mut sub = Self {
            names: Vec::new(),
            patterns: Vec::new(),
        };
        for t in given {
            if t.starts_with('^') {
                sub.patterns.push(
                    regex::Regex::new(t)
                        .map_err(|e| CliError::usage(format!("topic pattern {t:?}: {e}")))?,
                );
            } else {
                sub.names.push(t.clone());
            }
        }
        sub.names.sort();
        sub.names.dedup();
        Ok(sub)
    }

    fn matches(&self, topic: &str) -> bool {
        self.patterns.iter().any(|re| re.is_match(topic))
    }

    /// The group settings: the names, and the patterns matched as topics
    /// come and go.
    fn config(self, group: String) -> GroupConfig {
        let config = GroupConfig::new(group, self.names.clone());
        if self.patterns.is_empty() {
            return config;
        }
        config.subscribe_matching(move |topic: &str| self.matches(topic))
    }

    /// Fails unless every name is a topic, and with `require_match` unless
    /// every pattern matches one now (`--exit-at-end` would otherwise wait
    /// for partitions that may never come).
    async fn check(
        &self,
        client: &rskafka::client::Client,
        g: &GlobalArgs,
        require_match: bool,
    ) -> CliResult {
        for topic in &self.names {
            crate::topic_partitions(client, g, topic).await?;
        }
        if !require_match || self.patterns.is_empty() {
            return Ok(());
        }
        let listed = bounded(g.timeout(), "topic list", async {
            Ok(client.list_topics().await?)
        })
        .await?;
        for re in &self.patterns {
            if !listed
                .iter()
                .any(|t| !t.is_internal && re.is_match(&t.name))
            {
                return Err(CliError::msg(format!(
                    "no topic matches {:?} (--exit-at-end)",
                    re.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// How often `--exit-at-end` looks at the positions while no records come.
const EXIT_AT_END_TICK: Duration = Duration::from_millis(100);

/// Whether the member has partitions and each reached the end offset it had
/// when assigned; looks up the ends of newly assigned partitions.
async fn all_at_end(
    client: &rskafka::client::Client,
    g: &GlobalArgs,
    consumer: &GroupConsumer,
    end_of: &mut BTreeMap<TopicPartition, i64>,
    isolation: IsolationLevel,
) -> CliResult<bool> {
    let assigned = consumer.assignment();
    end_of.retain(|tp, _| assigned.contains(tp));
    for tp in &assigned {
        if !end_of.contains_key(tp) {
            let end = bounded(g.timeout(), "end offset lookup", async {
                let pc = client
                    .partition_client(tp.topic.to_string(), tp.partition)
                    .await?
                    .with_isolation_level(isolation);
                Ok(pc
                    .get_offset(rskafka::client::partition::OffsetAt::Latest)
                    .await?)
            })
            .await?;
            end_of.insert(tp.clone(), end);
        }
    }
    Ok(!assigned.is_empty()
        && assigned
            .iter()
            .all(|tp| consumer.position(tp).is_some_and(|p| p >= end_of[tp])))
}

/// How often auto-commit runs; the member also commits after each batch it
/// printed, so this is a backstop (auto-commit is on for the commits before
/// a revocation and when leaving).
const AUTO_COMMIT: Duration = Duration::from_secs(5);
/// Records per write at most.
const BATCH: usize = 4096;

/// Moves each partition of a partly written batch back to its first record
/// not printed whole (in the piece being written, or among the `rest` not
/// formatted yet), so that leaving commits only what was printed.
fn rewind(
    consumer: &mut GroupConsumer,
    topic: &str,
    ends: &Ends,
    written: usize,
    rest: &[ConsumedRecord],
) {
    let mut resume = ends.first_unprinted(written);
    for r in rest {
        if !resume.iter().any(|(p, _)| *p == r.partition) {
            resume.push((r.partition, r.offset));
        }
    }
    for (partition, offset) in resume {
        // Owned: the batch came after the last assignment change.
        let _ = consumer.seek(&TopicPartition::new(topic.to_owned(), partition), offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_targets_parse() {
        assert_eq!(parse_seek("earliest"), Ok(OffsetSpec::Earliest));
        assert_eq!(parse_seek("latest"), Ok(OffsetSpec::Latest));
        assert_eq!(parse_seek("42"), Ok(OffsetSpec::Offset(42)));
        assert_eq!(
            parse_seek("@1700000000000"),
            Ok(OffsetSpec::Timestamp(1_700_000_000_000))
        );
        assert!(parse_seek("-1").is_err());
        assert!(parse_seek("@x").is_err());
        assert!(parse_seek("soon").is_err());
    }
}
