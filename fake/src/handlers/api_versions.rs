//! ApiVersions: exactly what the dispatch table serves. No finalized
//! features are advertised, so clients use the classic protocols (e.g.
//! transaction version 1).

use bytes::BytesMut;
use rskafka::protocol::{
    messages::{api_versions_response::ApiVersion, ApiVersionsRequest, ApiVersionsResponse},
    ErrorCode, Message,
};

use crate::{server::Ctx, state::Shared};

fn response(shared: &Shared, error: ErrorCode, throttle_ms: i32) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: error.0,
        api_keys: shared
            .routes
            .advertised()
            .into_iter()
            .map(|(api_key, min_version, max_version)| ApiVersion {
                api_key,
                min_version,
                max_version,
                ..Default::default()
            })
            .collect(),
        throttle_time_ms: throttle_ms,
        finalized_features_epoch: -1,
        ..Default::default()
    }
}

pub(crate) async fn handle(ctx: Ctx, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    let error = ctx.injected_error().unwrap_or(ErrorCode::NONE);
    response(&ctx.shared, error, ctx.throttle_ms)
}

/// The v0 body Kafka answers a too-new ApiVersions request with.
pub(crate) fn unsupported_version_body(shared: &Shared) -> BytesMut {
    let mut body = BytesMut::new();
    response(shared, ErrorCode::UNSUPPORTED_VERSION, 0)
        .encode(&mut body, 0)
        .expect("ApiVersions v0 always encodes");
    body
}
