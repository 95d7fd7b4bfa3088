//! Metadata (with topic auto-creation) and DescribeCluster.

use std::collections::BTreeMap;

use rskafka::protocol::{
    messages::{
        describe_cluster_response::DescribeClusterBroker,
        metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        },
        DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    },
    ErrorCode, Uuid,
};

use crate::{
    server::Ctx,
    state::{State, Topic},
};

/// Kafka's "not requested" value of the authorized-operations fields.
const NO_AUTHORIZED_OPERATIONS: i32 = i32::MIN;

fn describe_topic(ctx: &Ctx, name: &str, topic: &Topic) -> MetadataResponseTopic {
    let error = ctx.injected_error().unwrap_or(ErrorCode::NONE);
    MetadataResponseTopic {
        error_code: error.0,
        name: Some(name.to_owned()),
        topic_id: topic.id,
        is_internal: false,
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| MetadataResponsePartition {
                error_code: ctx
                    .injected_partition_error(name, i as i32)
                    .unwrap_or(ErrorCode::NONE)
                    .0,
                partition_index: i as i32,
                leader_id: p.leader,
                leader_epoch: p.leader_epoch,
                replica_nodes: p.replicas.clone(),
                isr_nodes: p.replicas.clone(),
                offline_replicas: Vec::new(),
                ..Default::default()
            })
            .collect(),
        topic_authorized_operations: NO_AUTHORIZED_OPERATIONS,
        ..Default::default()
    }
}

fn topic_error(name: Option<String>, topic_id: Uuid, error: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: error.0,
        name,
        topic_id,
        ..Default::default()
    }
}

/// The topic, created with the defaults if auto-creation is allowed.
fn find_or_create<'a>(
    state: &'a mut State,
    name: &str,
    allow_create: bool,
) -> Result<&'a Topic, ErrorCode> {
    if !state.topics.contains_key(name) {
        if !(allow_create && state.config.auto_create_topics) {
            return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        }
        state
            .create_topic(name, -1, -1, BTreeMap::new())
            .map_err(|(code, _)| code)?;
    }
    Ok(&state.topics[name])
}

pub(crate) async fn handle(ctx: Ctx, req: MetadataRequest) -> MetadataResponse {
    let v = ctx.version;
    let mut state = ctx.state();
    // Before v4 there is no flag: Kafka auto-creates when configured to.
    let allow_create = v < 4 || req.allow_auto_topic_creation;
    let topics = match req.topics {
        Some(list) if !(v == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => match find_or_create(&mut state, &name, allow_create) {
                    Ok(topic) => describe_topic(&ctx, &name, topic),
                    Err(code) => topic_error(Some(name), Uuid::ZERO, code),
                },
                None => match state.topic_name_by_id(t.topic_id).map(str::to_owned) {
                    Some(name) => describe_topic(&ctx, &name, &state.topics[&name]),
                    None => topic_error(None, t.topic_id, ErrorCode::UNKNOWN_TOPIC_ID),
                },
            })
            .collect(),
        _ => state
            .topics
            .iter()
            .map(|(name, topic)| describe_topic(&ctx, name, topic))
            .collect(),
    };
    MetadataResponse {
        throttle_time_ms: ctx.throttle_ms,
        brokers: state
            .brokers
            .iter()
            .map(|b| MetadataResponseBroker {
                node_id: b.id,
                host: b.host.clone(),
                port: i32::from(b.port),
                rack: None,
                ..Default::default()
            })
            .collect(),
        cluster_id: (v >= 2).then(|| state.config.cluster_id.clone()),
        controller_id: state.brokers[0].id,
        topics,
        cluster_authorized_operations: NO_AUTHORIZED_OPERATIONS,
        ..Default::default()
    }
}

pub(crate) async fn describe_cluster(
    ctx: Ctx,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let state = ctx.state();
    let error = ctx.injected_error().unwrap_or(ErrorCode::NONE);
    // Endpoint type 1 is brokers; 2 (controllers) is not served.
    if req.endpoint_type != 1 {
        return DescribeClusterResponse {
            throttle_time_ms: ctx.throttle_ms,
            error_code: ErrorCode::UNSUPPORTED_ENDPOINT_TYPE.0,
            endpoint_type: req.endpoint_type,
            ..Default::default()
        };
    }
    DescribeClusterResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: error.0,
        endpoint_type: req.endpoint_type,
        cluster_id: state.config.cluster_id.clone(),
        controller_id: state.brokers[0].id,
        brokers: state
            .brokers
            .iter()
            .map(|b| DescribeClusterBroker {
                broker_id: b.id,
                host: b.host.clone(),
                port: i32::from(b.port),
                rack: None,
                ..Default::default()
            })
            .collect(),
        cluster_authorized_operations: NO_AUTHORIZED_OPERATIONS,
        ..Default::default()
    }
}
