//! DeleteRecords: moves a partition's log start forward.

use rskafka::protocol::{
    messages::{
        delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
        DeleteRecordsRequest, DeleteRecordsResponse,
    },
    ErrorCode,
};

use crate::server::Ctx;

/// "Up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub(crate) async fn delete_records(ctx: Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = {
        let mut state = ctx.state();
        req.topics
            .iter()
            .map(|t| DeleteRecordsTopicResult {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let result =
                            |code: ErrorCode, low_watermark| DeleteRecordsPartitionResult {
                                partition_index: p.partition_index,
                                low_watermark,
                                error_code: code.0,
                                ..Default::default()
                            };
                        if let Some(code) = ctx.injected_partition_error(&t.name, p.partition_index)
                        {
                            return result(code, -1);
                        }
                        let part = match state.led_partition(
                            ctx.broker_id,
                            &t.name,
                            p.partition_index,
                            -1,
                        ) {
                            Ok(part) => part,
                            Err(code) => return result(code, -1),
                        };
                        let hw = part.log.high_watermark();
                        let offset = if p.offset == HIGH_WATERMARK {
                            hw
                        } else {
                            p.offset
                        };
                        if offset < 0 || offset > hw {
                            return result(ErrorCode::OFFSET_OUT_OF_RANGE, -1);
                        }
                        part.log.delete_before(offset);
                        result(ErrorCode::NONE, part.log.log_start_offset())
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    };
    ctx.shared.notify_changed();
    DeleteRecordsResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        ..Default::default()
    }
}
