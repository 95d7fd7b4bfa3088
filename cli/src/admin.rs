//! Commands that inspect or change the cluster: `api-versions`, `metadata`,
//! `topic ...`, `offsets`.

use std::{collections::BTreeMap, io::Write};

use clap::Args;
use rskafka::client::partition::{IsolationLevel, OffsetAt};

use crate::{bounded, connect, CliError, CliResult, GlobalArgs};

/// Arguments of `topic create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The topic name.
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
    replication_factor: i16,
    /// A topic config `KEY=VALUE`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    configs: Vec<(String, String)>,
}

/// Splits a `--config` value at its first `=`; the key must not be empty.
pub fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

/// Writes `text` to stdout; a closed pipe (e.g. `| head`) is not an error.
pub fn print_out(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The timeout for broker-side operations, as Kafka's `timeout_ms` fields want it.
fn timeout_ms_i32(g: &GlobalArgs) -> i32 {
    i32::try_from(g.timeout_ms).unwrap_or(i32::MAX)
}

/// `api-versions`: name, key, broker min-max, client version (or `-`).
pub async fn api_versions(g: &GlobalArgs) -> CliResult {
    let client = connect(g).await?;
    let versions = bounded(g.timeout(), "api-versions", async {
        Ok(client.api_versions().await?)
    })
    .await?;
    let mut text = String::new();
    for v in versions {
        let used = v
            .client_version
            .map_or_else(|| "-".to_owned(), |x| x.to_string());
        text.push_str(&format!(
            "{}\t{}\t{}-{}\t{}\n",
            v.api_key.name(),
            v.api_key.0,
            v.broker_min,
            v.broker_max,
            used
        ));
    }
    print_out(&text)
}

/// `metadata`: brokers, controller, topics with partitions, leaders, replicas, ISR.
/// Arguments of `metadata`.
#[derive(Args, Debug)]
pub struct MetadataArgs {
    /// Only this topic (kcat's `-L -t`).
    #[arg(long)]
    topic: Option<String>,
    /// `text`, or `json` in the shape of kcat's `-L -J`.
    #[arg(long, value_enum, default_value = "text")]
    format: MetadataFormat,
}

/// `metadata --format` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataFormat {
    /// Lines for people.
    Text,
    /// One JSON object: kcat's `-L -J` fields, plus `cluster_id`.
    Json,
}

/// `metadata`: brokers, controller, topics and partitions.
pub async fn metadata(g: &GlobalArgs, args: MetadataArgs) -> CliResult {
    let client = connect(g).await?;
    let md = bounded(g.timeout(), "metadata", async {
        Ok(client.metadata().await?)
    })
    .await?;
    let topics: Vec<&rskafka::client::TopicInfo> = match &args.topic {
        None => md.topics.values().collect(),
        Some(name) => match md.topics.get(name) {
            Some(t) => vec![t],
            None => {
                return Err(CliError::msg(format!(
                    "unknown topic {name:?} (UNKNOWN_TOPIC_OR_PARTITION)"
                )))
            }
        },
    };
    if args.format == MetadataFormat::Json {
        let ids = |ids: &[i32]| -> Vec<serde_json::Value> {
            ids.iter()
                .map(|id| serde_json::json!({ "id": id }))
                .collect()
        };
        let json = serde_json::json!({
            "cluster_id": md.cluster_id,
            "query": { "topic": args.topic.as_deref().unwrap_or("*") },
            "controllerid": md.controller_id.unwrap_or(-1),
            "brokers": md.brokers.values().map(|b| serde_json::json!({
                "id": b.id,
                "name": format!("{}:{}", b.host, b.port),
                "rack": b.rack,
            })).collect::<Vec<_>>(),
            "topics": topics.iter().map(|t| {
                let mut topic = serde_json::json!({
                    "topic": t.name,
                    "partitions": t.partitions.values().map(|p| {
                        let mut part = serde_json::json!({
                            "partition": p.id,
                            "leader": p.leader.unwrap_or(-1),
                            "replicas": ids(&p.replicas),
                            "isrs": ids(&p.isr),
                        });
                        if !p.error.is_ok() {
                            part["error"] = p.error.name().into();
                        }
                        part
                    }).collect::<Vec<_>>(),
                });
                if t.is_internal {
                    topic["internal"] = true.into();
                }
                if !t.error.is_ok() {
                    topic["error"] = t.error.name().into();
                }
                topic
            }).collect::<Vec<_>>(),
        });
        return print_out(&format!("{json}\n"));
    }
    let mut t = String::new();
    if args.topic.is_none() {
        t.push_str(&format!(
            "cluster id: {}\n",
            md.cluster_id.as_deref().unwrap_or("-")
        ));
        t.push_str(&format!(
            "controller: {}\n",
            md.controller_id
                .map_or_else(|| "-".to_owned(), |c| c.to_string())
        ));
        t.push_str(&format!("brokers: {}\n", md.brokers.len()));
        for b in md.brokers.values() {
            let rack = b
                .rack
                .as_deref()
                .map(|r| format!(" rack {r}"))
                .unwrap_or_default();
            let ctl = if md.controller_id == Some(b.id) {
                " (controller)"
            } else {
                ""
            };
            t.push_str(&format!(
                "  broker {} at {}:{}{rack}{ctl}\n",
                b.id, b.host, b.port
            ));
        }
        t.push_str(&format!("topics: {}\n", topics.len()));
    }
    for topic in topics {
        let internal = if topic.is_internal { " (internal)" } else { "" };
        let err = if topic.error.is_ok() {
            String::new()
        } else {
            format!(" error {}", topic.error.name())
        };
        t.push_str(&format!(
            "  topic \"{}\" with {} partitions{internal}{err}\n",
            topic.name,
            topic.partitions.len()
        ));
        for p in topic.partitions.values() {
            let leader = p.leader.map_or_else(|| "-".to_owned(), |l| l.to_string());
            let err = if p.error.is_ok() {
                String::new()
            } else {
                format!(" error {}", p.error.name())
            };
            t.push_str(&format!(
                "    partition {}, leader {leader}, replicas: {}, isrs: {}{err}\n",
                p.id,
                join_ids(&p.replicas),
                join_ids(&p.isr)
            ));
        }
    }
    print_out(&t)
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `topic list`: one topic name per line, sorted.
pub async fn topic_list(g: &GlobalArgs) -> CliResult {
    let client = connect(g).await?;
    let topics = bounded(g.timeout(), "topic list", async {
        Ok(client.list_topics().await?)
    })
    .await?;
    let mut names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
    names.sort();
    let mut text = String::new();
    for n in names {
        text.push_str(&n);
        text.push('\n');
    }
    print_out(&text)
}

/// `topic create NAME --partitions N --replication-factor R [--config K=V]...`.
pub async fn topic_create(g: &GlobalArgs, args: CreateArgs) -> CliResult {
    let configs: BTreeMap<String, String> = args.configs.into_iter().collect();
    let client = connect(g).await?;
    let controller = client.controller_client()?;
    // The library bounds the wait by the timeout it is given; the outer bound
    // adds a little slack for the metadata wait that follows creation.
    bounded(g.timeout() * 2, "topic create", async {
        controller
            .create_topic_with_configs(
                &args.name,
                args.partitions,
                args.replication_factor,
                configs,
                timeout_ms_i32(g),
            )
            .await?;
        Ok(())
    })
    .await?;
    print_out(&format!("Created topic {}.\n", args.name))
}

/// `topic delete NAME`.
pub async fn topic_delete(g: &GlobalArgs, name: &str) -> CliResult {
    let client = connect(g).await?;
    let controller = client.controller_client()?;
    bounded(g.timeout() * 2, "topic delete", async {
        controller.delete_topic(name, timeout_ms_i32(g)).await?;
        Ok(())
    })
    .await?;
    print_out(&format!("Deleted topic {name}.\n"))
}

/// `offsets TOPIC`: partition, earliest, latest — one line per partition;
/// with `--at`, partition and the first offset at or after that time.
pub async fn offsets(g: &GlobalArgs, topic: &str, at: Option<i64>) -> CliResult {
    let client = connect(g).await?;
    let partitions = crate::topic_partitions(&client, g, topic).await?;
    let admin = client.admin();
    // One ListOffsets request per leader for all its partitions (two with
    // earliest and latest), not one per partition.
    let list = |at| {
        admin.list_topic_offsets(
            topic,
            partitions.iter().copied(),
            at,
            IsolationLevel::ReadUncommitted,
        )
    };
    let text = bounded(g.timeout() * 2, "offsets", async {
        let mut text = String::new();
        if let Some(ms) = at {
            for (tp, offset) in list(OffsetAt::timestamp_millis(ms)).await? {
                text.push_str(&format!("{}\t{offset}\n", tp.partition));
            }
            return Ok(text);
        }
        let (earliest, latest) =
            futures::future::try_join(list(OffsetAt::Earliest), list(OffsetAt::Latest)).await?;
        for (tp, start) in earliest {
            let end = latest.get(&tp).copied().unwrap_or(-1);
            text.push_str(&format!("{}\t{start}\t{end}\n", tp.partition));
        }
        Ok(text)
    })
    .await?;
    print_out(&text)
}
