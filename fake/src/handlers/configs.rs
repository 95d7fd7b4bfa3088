//! DescribeConfigs for topics and brokers, with Kafka's defaults;
//! IncrementalAlterConfigs for topics; the topic configs CreateTopics
//! accepts.

use std::collections::BTreeMap;

use rskafka::protocol::{
    messages::{
        describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult},
        incremental_alter_configs_request::AlterableConfig,
        incremental_alter_configs_response::AlterConfigsResourceResponse,
        DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    },
    ErrorCode,
};

use crate::{server::Ctx, state::State};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources (Kafka's `ConfigSource`).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Config types (Kafka's `ConfigType`).
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const SHORT: i8 = 4;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;
const LIST: i8 = 7;

/// Kafka 4's topic configs: name, default, type.
pub(crate) const TOPIC_DEFAULTS: &[(&str, &str, i8)] = &[
    ("cleanup.policy", "delete", LIST),
    ("compression.gzip.level", "-1", INT),
    ("compression.lz4.level", "9", INT),
    ("compression.type", "producer", STRING),
    ("compression.zstd.level", "3", INT),
    ("delete.retention.ms", "86400000", LONG),
    ("file.delete.delay.ms", "60000", LONG),
    ("flush.messages", "9223372036854775807", LONG),
    ("flush.ms", "9223372036854775807", LONG),
    ("index.interval.bytes", "4096", INT),
    ("local.retention.bytes", "-2", LONG),
    ("local.retention.ms", "-2", LONG),
    ("max.compaction.lag.ms", "9223372036854775807", LONG),
    ("max.message.bytes", "1048588", INT),
    ("message.timestamp.after.max.ms", "3600000", LONG),
    (
        "message.timestamp.before.max.ms",
        "9223372036854775807",
        LONG,
    ),
    ("message.timestamp.type", "CreateTime", STRING),
    ("min.cleanable.dirty.ratio", "0.5", DOUBLE),
    ("min.compaction.lag.ms", "0", LONG),
    ("min.insync.replicas", "1", INT),
    ("preallocate", "false", BOOLEAN),
    ("remote.storage.enable", "false", BOOLEAN),
    ("retention.bytes", "-1", LONG),
    ("retention.ms", "604800000", LONG),
    ("segment.bytes", "1073741824", INT),
    ("segment.index.bytes", "10485760", INT),
    ("segment.jitter.ms", "0", LONG),
    ("segment.ms", "604800000", LONG),
    ("unclean.leader.election.enable", "false", BOOLEAN),
];

/// Whether CreateTopics accepts the config name.
pub(crate) fn is_topic_config(name: &str) -> bool {
    TOPIC_DEFAULTS.iter().any(|(n, _, _)| *n == name)
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult {
        name: name.to_owned(),
        value: Some(value),
        read_only,
        is_default: false,
        config_source: source,
        is_sensitive: false,
        config_type,
        documentation: None,
        ..Default::default()
    }
}

/// A topic's configs as DescribeConfigs (and CreateTopics v5+) show them.
pub(crate) fn topic_configs(set: &BTreeMap<String, String>) -> Vec<(String, String, i8, i8)> {
    TOPIC_DEFAULTS
        .iter()
        .map(|&(name, default, ty)| match set.get(name) {
            Some(v) => (name.to_owned(), v.clone(), SOURCE_TOPIC, ty),
            None => (name.to_owned(), default.to_owned(), SOURCE_DEFAULT, ty),
        })
        .collect()
}

fn broker_configs(state: &State, broker_id: i32) -> Vec<(String, String, i8, i8)> {
    let c = &state.config;
    // What a broker's server.properties would set, then Kafka's defaults.
    let set = [
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            BOOLEAN,
        ),
        ("broker.id", broker_id.to_string(), INT),
        ("node.id", broker_id.to_string(), INT),
        (
            "default.replication.factor",
            c.default_replication_factor.to_string(),
            INT,
        ),
        ("num.partitions", c.default_partitions.to_string(), INT),
        ("offsets.topic.replication.factor", "1".into(), SHORT),
        ("group.initial.rebalance.delay.ms", "0".into(), INT),
    ];
    let defaults = [
        ("message.max.bytes", "1048588".into(), INT),
        ("log.retention.hours", "168".into(), INT),
        ("min.insync.replicas", "1".into(), INT),
        (
            "transaction.max.timeout.ms",
            crate::txn::MAX_TRANSACTION_TIMEOUT_MS.to_string(),
            INT,
        ),
        (
            "socket.request.max.bytes",
            crate::server::MAX_FRAME_BYTES.to_string(),
            INT,
        ),
        ("log.cleaner.backoff.ms", "15000".into(), LONG),
        ("log.cleaner.threads", "1".into(), INT),
    ];
    let with = |source| move |(n, v, t): (&str, String, i8)| (n.to_owned(), v, source, t);
    set.into_iter()
        .map(with(SOURCE_STATIC_BROKER))
        .chain(defaults.into_iter().map(with(SOURCE_DEFAULT)))
        .collect()
}

pub(crate) async fn describe_configs(
    ctx: Ctx,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let state = ctx.state();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let mut result = DescribeConfigsResult {
                error_code: 0,
                error_message: None,
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                configs: Vec::new(),
                ..Default::default()
            };
            if let Some(code) = ctx.injected_error() {
                result.error_code = code.0;
                return result;
            }
            let all = match r.resource_type {
                RESOURCE_TOPIC => match state.topics.get(&r.resource_name) {
                    Some(t) => topic_configs(&t.configs),
                    None => {
                        result.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0;
                        result.error_message =
                            Some(format!("The topic '{}' does not exist.", r.resource_name));
                        return result;
                    }
                },
                RESOURCE_BROKER => {
                    let id = if r.resource_name.is_empty() {
                        Some(ctx.broker_id)
                    } else {
                        r.resource_name
                            .parse::<i32>()
                            .ok()
                            .filter(|&id| state.has_broker(id))
                    };
                    match id {
                        Some(id) => broker_configs(&state, id),
                        None => {
                            result.error_code = ErrorCode::INVALID_REQUEST.0;
                            result.error_message =
                                Some(format!("Unexpected broker id {}", r.resource_name));
                            return result;
                        }
                    }
                }
                _ => {
                    result.error_code = ErrorCode::INVALID_REQUEST.0;
                    result.error_message = Some(format!(
                        "Resource type {} is not served by the fake cluster",
                        r.resource_type
                    ));
                    return result;
                }
            };
            let read_only = r.resource_type == RESOURCE_BROKER;
            result.configs = all
                .into_iter()
                .filter(|(name, ..)| {
                    r.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.is_empty() || keys.contains(name))
                })
                .map(|(name, value, source, ty)| {
                    entry(
                        &name,
                        value,
                        source,
                        if ctx.version >= 3 { ty } else { 0 },
                        read_only,
                    )
                })
                .collect();
            result
        })
        .collect();
    DescribeConfigsResponse {
        throttle_time_ms: ctx.throttle_ms,
        results,
        ..Default::default()
    }
}

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Applies one resource's changes to a topic's configs (a copy, so that a
/// bad change leaves the topic as it was).
fn alter_topic(
    set: &BTreeMap<String, String>,
    changes: &[AlterableConfig],
) -> Result<BTreeMap<String, String>, (ErrorCode, String)> {
    let mut next = set.clone();
    for c in changes {
        let Some(&(_, default, ty)) = TOPIC_DEFAULTS.iter().find(|(n, ..)| *n == c.name) else {
            return Err((
                ErrorCode::INVALID_CONFIG,
                format!("Unknown topic config name: {}", c.name),
            ));
        };
        match c.config_operation {
            OP_SET => {
                let value = c.value.clone().unwrap_or_default();
                next.insert(c.name.clone(), value);
            }
            OP_DELETE => {
                next.remove(&c.name);
            }
            OP_APPEND | OP_SUBTRACT if ty == LIST => {
                let current = next.get(&c.name).map_or(default, String::as_str);
                let mut items: Vec<String> = current
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for v in c
                    .value
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                {
                    if c.config_operation == OP_APPEND {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_owned());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                next.insert(c.name.clone(), items.join(","));
            }
            OP_APPEND | OP_SUBTRACT => {
                return Err((
                    ErrorCode::INVALID_CONFIG,
                    format!(
                        "Config value append is not allowed for config key: {}",
                        c.name
                    ),
                ))
            }
            op => {
                return Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("Unknown config operation {op}"),
                ))
            }
        }
    }
    Ok(next)
}

pub(crate) async fn incremental_alter_configs(
    ctx: Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut state = ctx.state();
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let outcome = match (ctx.injected_error(), r.resource_type) {
                (Some(code), _) => Err((code, "injected by the fake cluster".to_owned())),
                (None, RESOURCE_TOPIC) => match state.topics.get_mut(&r.resource_name) {
                    Some(topic) => alter_topic(&topic.configs, &r.configs).map(|next| {
                        if !req.validate_only {
                            topic.configs = next;
                        }
                    }),
                    None => Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("The topic '{}' does not exist.", r.resource_name),
                    )),
                },
                (None, _) => Err((
                    ErrorCode::INVALID_CONFIG,
                    "only topic configs can be changed on the fake cluster".to_owned(),
                )),
            };
            let (code, message) = match outcome {
                Ok(()) => (ErrorCode::NONE, None),
                Err((code, m)) => (code, Some(m)),
            };
            AlterConfigsResourceResponse {
                error_code: code.0,
                error_message: message,
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                ..Default::default()
            }
        })
        .collect();
    IncrementalAlterConfigsResponse {
        throttle_time_ms: ctx.throttle_ms,
        responses,
        ..Default::default()
    }
}
