//! Produce: acks 0/1/-1 (acks are local, so 1 and -1 are the same), one v2
//! batch per partition, checked and appended as sent.

use rskafka::protocol::{
    messages::{
        produce_response::{
            LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
        },
        ProduceRequest, ProduceResponse,
    },
    ErrorCode,
};

use super::transactions::abort_at_timeout;
use crate::{
    batch,
    server::Ctx,
    state::{now_ms, State},
};

/// Kafka's default `max.message.bytes` (topic) / `message.max.bytes` (broker).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1_048_588;

fn failed(index: i32, error: ErrorCode) -> PartitionProduceResponse {
    PartitionProduceResponse {
        index,
        error_code: error.0,
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
        ..Default::default()
    }
}

fn produce_partition(
    ctx: &Ctx,
    state: &mut State,
    req: &ProduceRequest,
    topic: &str,
    index: i32,
    records: Option<&bytes::Bytes>,
    leaders: &mut Vec<i32>,
) -> PartitionProduceResponse {
    if let Some(code) = ctx.injected_partition_error(topic, index) {
        return failed(index, code);
    }
    if !(-1..=1).contains(&req.acks) {
        return failed(index, ErrorCode::INVALID_REQUIRED_ACKS);
    }
    let Some(records) = records else {
        return failed(index, ErrorCode::INVALID_RECORD);
    };
    let info = match batch::validate_produced(records) {
        Ok(info) => info,
        Err(code) => return failed(index, code),
    };
    let max_bytes = state
        .topics
        .get(topic)
        .and_then(|t| t.configs.get("max.message.bytes"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_MESSAGE_BYTES);
    if records.len() > max_bytes {
        return failed(index, ErrorCode::MESSAGE_TOO_LARGE);
    }
    if info.is_transactional {
        if req.transactional_id.is_none() {
            return failed(index, ErrorCode::INVALID_RECORD);
        }
        // Transaction version 2: the produce adds the partition itself.
        let add_implicitly = ctx.version >= 12 && state.config.transaction_version >= 2;
        match state.verify_transactional_produce(
            info.producer_id,
            info.producer_epoch,
            (topic, index),
            add_implicitly,
        ) {
            Ok(None) => {}
            Ok(Some((transactional_id, deadline))) => {
                abort_at_timeout(ctx, &transactional_id, deadline)
            }
            Err(code) => return failed(index, code),
        }
    }
    let log_append_time = state
        .topics
        .get(topic)
        .is_some_and(|t| t.log_append_time())
        .then(now_ms);
    let broker = ctx.broker_id;
    let p = match state.led_partition(broker, topic, index, -1) {
        Ok(p) => p,
        Err(code) => {
            let mut r = failed(index, code);
            if let Some(p) = state.partition(topic, index) {
                if ctx.version >= 10 {
                    r.current_leader = LeaderIdAndEpoch {
                        leader_id: p.leader,
                        leader_epoch: p.leader_epoch,
                        ..Default::default()
                    };
                    leaders.push(p.leader);
                }
            }
            return r;
        }
    };
    let leader_epoch = p.leader_epoch;
    match p
        .log
        .append_produced(records, info, leader_epoch, log_append_time)
    {
        Ok(appended) => PartitionProduceResponse {
            index,
            error_code: 0,
            base_offset: appended.base_offset,
            log_append_time_ms: appended.log_append_time,
            log_start_offset: p.log.log_start_offset(),
            ..Default::default()
        },
        Err(code) => {
            let mut r = failed(index, code);
            r.log_start_offset = p.log.log_start_offset();
            r
        }
    }
}

pub(crate) async fn handle(ctx: Ctx, req: ProduceRequest) -> Option<ProduceResponse> {
    let mut leaders = Vec::new();
    let (responses, node_endpoints) = {
        let mut state = ctx.state();
        let responses: Vec<TopicProduceResponse> = req
            .topic_data
            .iter()
            .map(|t| TopicProduceResponse {
                name: t.name.clone(),
                partition_responses: t
                    .partition_data
                    .iter()
                    .map(|p| {
                        produce_partition(
                            &ctx,
                            &mut state,
                            &req,
                            &t.name,
                            p.index,
                            p.records.as_ref(),
                            &mut leaders,
                        )
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        let endpoints: Vec<NodeEndpoint> = state
            .brokers
            .iter()
            .filter(|b| leaders.contains(&b.id))
            .map(|b| NodeEndpoint {
                node_id: b.id,
                host: b.host.clone(),
                port: i32::from(b.port),
                rack: None,
                ..Default::default()
            })
            .collect();
        (responses, endpoints)
    };
    ctx.shared.notify_changed();
    if req.acks == 0 {
        return None;
    }
    Some(ProduceResponse {
        responses,
        throttle_time_ms: ctx.throttle_ms,
        node_endpoints,
        ..Default::default()
    })
}
