//! OffsetForLeaderEpoch: where a leader epoch ended in the partition's log,
//! for clients validating their position after a leader change (KIP-320).

use rskafka::protocol::{
    messages::{
        offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    },
    ErrorCode,
};

use crate::server::Ctx;

pub(crate) async fn handle(
    ctx: Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut state = ctx.state();
    let topics = req
        .topics
        .iter()
        .map(|t| OffsetForLeaderTopicResult {
            topic: t.topic.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let fail = |code: ErrorCode| EpochEndOffset {
                        error_code: code.0,
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1,
                        ..Default::default()
                    };
                    if let Some(code) = ctx.injected_partition_error(&t.topic, p.partition) {
                        return fail(code);
                    }
                    match state.led_partition(
                        ctx.broker_id,
                        &t.topic,
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(part) => {
                            let (leader_epoch, end_offset) =
                                part.log.end_offset_for_epoch(p.leader_epoch);
                            EpochEndOffset {
                                error_code: 0,
                                partition: p.partition,
                                leader_epoch,
                                end_offset,
                                ..Default::default()
                            }
                        }
                        Err(code) => fail(code),
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    OffsetForLeaderEpochResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        ..Default::default()
    }
}
