//! CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::BTreeMap;

use rskafka::protocol::{
    messages::{
        create_partitions_response::CreatePartitionsTopicResult,
        create_topics_response::{CreatableTopicConfigs, CreatableTopicResult},
        delete_topics_response::DeletableTopicResult,
        CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
        CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    },
    ErrorCode, Uuid,
};

use super::configs::{is_topic_config, topic_configs};
use crate::{
    server::Ctx,
    state::{check_topic_name, State},
};

fn create_one(
    ctx: &Ctx,
    state: &mut State,
    t: &rskafka::protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> CreatableTopicResult {
    let fail = |code: ErrorCode, msg: String| CreatableTopicResult {
        name: t.name.clone(),
        error_code: code.0,
        error_message: Some(msg),
        num_partitions: -1,
        replication_factor: -1,
        configs: None,
        ..Default::default()
    };
    if let Some(code) = ctx.injected_error() {
        return fail(code, "injected by the fake cluster".into());
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        if !is_topic_config(&c.name) {
            return fail(
                ErrorCode::INVALID_CONFIG,
                format!("Unknown topic config name: {}", c.name),
            );
        }
        if let Some(v) = &c.value {
            configs.insert(c.name.clone(), v.clone());
        }
    }
    let (mut partitions, mut rf) = (t.num_partitions, t.replication_factor);
    if !t.assignments.is_empty() {
        if partitions != -1 || rf != -1 {
            return fail(
                ErrorCode::INVALID_REQUEST,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            );
        }
        if let Some(bad) = t
            .assignments
            .iter()
            .flat_map(|a| &a.broker_ids)
            .find(|&&id| !state.has_broker(id))
        {
            return fail(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!("Unknown broker {bad} in the replica assignment"),
            );
        }
        partitions = t.assignments.len() as i32;
        rf = t.assignments[0].broker_ids.len() as i16;
    }
    let checked = if validate_only {
        state.check_new_topic(&t.name, partitions, rf)
    } else {
        state
            .create_topic(&t.name, partitions, rf, configs.clone())
            .map(|topic| (topic.partitions.len() as i32, topic.replication_factor))
    };
    let (partitions, rf) = match checked {
        Ok(ok) => ok,
        Err((code, msg)) => return fail(code, msg),
    };
    // A manual assignment decides leaders and replicas.
    let mut topic_id = Uuid::ZERO;
    if !validate_only {
        if let Some(topic) = state.topics.get_mut(&t.name) {
            topic_id = topic.id;
            for a in &t.assignments {
                if let (Some(p), Some(&leader)) = (
                    topic.partitions.get_mut(a.partition_index as usize),
                    a.broker_ids.first(),
                ) {
                    p.leader = leader;
                    p.replicas = a.broker_ids.clone();
                }
            }
        }
    }
    CreatableTopicResult {
        name: t.name.clone(),
        topic_id,
        error_code: 0,
        error_message: None,
        topic_config_error_code: 0,
        num_partitions: partitions,
        replication_factor: rf,
        configs: Some(
            topic_configs(&configs)
                .into_iter()
                .map(|(name, value, source, _)| CreatableTopicConfigs {
                    name,
                    value: Some(value),
                    read_only: false,
                    config_source: source,
                    is_sensitive: false,
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

pub(crate) async fn create_topics(ctx: Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = {
        let mut state = ctx.state();
        let mut seen = std::collections::HashSet::new();
        req.topics
            .iter()
            .map(|t| {
                if !seen.insert(t.name.clone()) {
                    return CreatableTopicResult {
                        name: t.name.clone(),
                        error_code: ErrorCode::INVALID_REQUEST.0,
                        error_message: Some("Duplicate topic name.".into()),
                        configs: None,
                        ..Default::default()
                    };
                }
                create_one(&ctx, &mut state, t, req.validate_only)
            })
            .collect()
    };
    CreateTopicsResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        ..Default::default()
    }
}

pub(crate) async fn delete_topics(ctx: Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // Up to v5 topics come by name only; v6 by name or id.
    let wanted: Vec<(Option<String>, Uuid)> = if ctx.version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.clone(), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.clone()), Uuid::ZERO))
            .collect()
    };
    let responses = {
        let mut state = ctx.state();
        wanted
            .into_iter()
            .map(|(name, id)| {
                let result =
                    |name: Option<String>, topic_id, code: ErrorCode| DeletableTopicResult {
                        name,
                        topic_id,
                        error_code: code.0,
                        error_message: None,
                        ..Default::default()
                    };
                if let Some(code) = ctx.injected_error() {
                    return result(name, id, code);
                }
                let resolved = match &name {
                    Some(n) => state.topics.contains_key(n).then(|| n.clone()),
                    None => state.topic_name_by_id(id).map(str::to_owned),
                };
                match resolved {
                    Some(n) => {
                        let topic = state.topics.remove(&n).expect("resolved above");
                        result(Some(n), topic.id, ErrorCode::NONE)
                    }
                    None if name.is_none() => result(None, id, ErrorCode::UNKNOWN_TOPIC_ID),
                    None => {
                        let code = match check_topic_name(name.as_deref().unwrap_or_default()) {
                            Err((code, _)) => code,
                            Ok(()) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        };
                        result(name, id, code)
                    }
                }
            })
            .collect()
    };
    ctx.shared.notify_changed();
    DeleteTopicsResponse {
        throttle_time_ms: ctx.throttle_ms,
        responses,
        ..Default::default()
    }
}

pub(crate) async fn create_partitions(
    ctx: Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = {
        let mut state = ctx.state();
        req.topics
            .iter()
            .map(|t| {
                let outcome = match ctx.injected_error() {
                    Some(code) => Err((code, "injected by the fake cluster".to_owned())),
                    None => state.add_partitions(&t.name, t.count, req.validate_only),
                };
                let (code, msg) = match outcome {
                    Ok(()) => (ErrorCode::NONE, None),
                    Err((code, msg)) => (code, Some(msg)),
                };
                CreatePartitionsTopicResult {
                    name: t.name.clone(),
                    error_code: code.0,
                    error_message: msg,
                    ..Default::default()
                }
            })
            .collect()
    };
    CreatePartitionsResponse {
        throttle_time_ms: ctx.throttle_ms,
        results,
        ..Default::default()
    }
}
