//! InitProducerId: a fresh producer id for idempotent producers; for
//! transactional ids, see `txn.rs`.

use rskafka::protocol::{
    messages::{InitProducerIdRequest, InitProducerIdResponse},
    ErrorCode,
};

use crate::server::Ctx;

pub(crate) async fn handle(ctx: Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |code: ErrorCode| InitProducerIdResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    if let Some(code) = ctx.injected_error() {
        return fail(code);
    }
    let mut state = ctx.state();
    let ids = match &req.transactional_id {
        // Kafka hands an idempotent producer a new id every time, also
        // when it asks to bump its epoch (KIP-360).
        None => Ok((state.allocate_producer_id(), 0)),
        Some(id) => state.init_transactional_producer(
            id,
            req.transaction_timeout_ms,
            (req.producer_id, req.producer_epoch),
        ),
    };
    match ids {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
            throttle_time_ms: ctx.throttle_ms,
            error_code: 0,
            producer_id,
            producer_epoch,
            ..Default::default()
        },
        // Clients before v4 know no PRODUCER_FENCED.
        Err(ErrorCode::PRODUCER_FENCED) if ctx.version < 4 => {
            fail(ErrorCode::INVALID_PRODUCER_EPOCH)
        }
        Err(code) => fail(code),
    }
}
