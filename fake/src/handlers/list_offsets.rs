//! ListOffsets: earliest, latest, max timestamp, and by timestamp.

use rskafka::protocol::{
    messages::{
        list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
        ListOffsetsRequest, ListOffsetsResponse,
    },
    record::{decode_batches, DecodeLimits},
    ErrorCode,
};

use crate::{
    server::Ctx,
    state::{Partition, State},
};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Tiered storage's "earliest local" (-4) and "latest tiered" (-5): without
/// tiered storage, the earliest and the log start.
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
const READ_COMMITTED: i8 = 1;

/// (timestamp, offset, leader epoch) of the answer.
fn lookup(p: &Partition, target: i64, read_committed: bool) -> Result<(i64, i64, i32), ErrorCode> {
    let log = &p.log;
    let end = if read_committed {
        log.last_stable_offset()
    } else {
        log.high_watermark()
    };
    match target {
        LATEST => Ok((-1, end, p.leader_epoch)),
        EARLIEST | EARLIEST_LOCAL | LATEST_TIERED => {
            let start = log.log_start_offset();
            Ok((-1, start, log.epoch_of(start)))
        }
        MAX_TIMESTAMP => {
            let best = log
                .batches()
                .filter(|b| !b.info.is_control && b.base_offset < end)
                .max_by_key(|b| (b.max_timestamp, std::cmp::Reverse(b.base_offset)));
            let Some(b) = best else {
                return Ok((-1, -1, -1));
            };
            let offset = first_record_at_or_after(b, b.max_timestamp).unwrap_or(b.base_offset);
            Ok((b.max_timestamp, offset, log.epoch_of(offset)))
        }
        t if t >= 0 => {
            for b in log.batches() {
                if b.info.is_control || b.max_timestamp < t || b.base_offset >= end {
                    continue;
                }
                if let Some(offset) = first_record_at_or_after(b, t) {
                    if offset >= log.log_start_offset() {
                        let ts = record_timestamp(b, offset).unwrap_or(b.max_timestamp);
                        return Ok((ts, offset, log.epoch_of(offset)));
                    }
                }
            }
            Ok((-1, -1, -1))
        }
        _ => Err(ErrorCode::INVALID_REQUEST),
    }
}

/// The offset of the batch's first record stamped `target` or later.
fn first_record_at_or_after(b: &crate::log::StoredBatch, target: i64) -> Option<i64> {
    let decoded = decode_batches(b.bytes.clone(), &DecodeLimits::default()).ok()?;
    let batch = decoded.batches.into_iter().next()?;
    batch
        .records
        .iter()
        .find(|r| batch.record_timestamp(r) >= target)
        .map(|r| batch.record_offset(r))
}

fn record_timestamp(b: &crate::log::StoredBatch, offset: i64) -> Option<i64> {
    let decoded = decode_batches(b.bytes.clone(), &DecodeLimits::default()).ok()?;
    let batch = decoded.batches.into_iter().next()?;
    batch
        .records
        .iter()
        .find(|r| batch.record_offset(r) == offset)
        .map(|r| batch.record_timestamp(r))
}

fn answer(
    ctx: &Ctx,
    state: &mut State,
    topic: &str,
    index: i32,
    epoch: i32,
    target: i64,
    read_committed: bool,
) -> ListOffsetsPartitionResponse {
    let fail = |code: ErrorCode| ListOffsetsPartitionResponse {
        partition_index: index,
        error_code: code.0,
        timestamp: -1,
        offset: -1,
        leader_epoch: -1,
        ..Default::default()
    };
    if let Some(code) = ctx.injected_partition_error(topic, index) {
        return fail(code);
    }
    let p = match state.led_partition(ctx.broker_id, topic, index, epoch) {
        Ok(p) => p,
        Err(code) => return fail(code),
    };
    match lookup(p, target, read_committed) {
        Ok((timestamp, offset, leader_epoch)) => ListOffsetsPartitionResponse {
            partition_index: index,
            error_code: 0,
            timestamp,
            offset,
            leader_epoch: if ctx.version >= 4 { leader_epoch } else { -1 },
            ..Default::default()
        },
        Err(code) => fail(code),
    }
}

pub(crate) async fn handle(ctx: Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == READ_COMMITTED;
    let mut state = ctx.state();
    let topics = req
        .topics
        .iter()
        .map(|t| ListOffsetsTopicResponse {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    answer(
                        &ctx,
                        &mut state,
                        &t.name,
                        p.partition_index,
                        if ctx.version >= 4 {
                            p.current_leader_epoch
                        } else {
                            -1
                        },
                        p.timestamp,
                        read_committed,
                    )
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ListOffsetsResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        ..Default::default()
    }
}
