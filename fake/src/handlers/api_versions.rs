//! ApiVersions: exactly what the dispatch table serves, and the finalized
//! features clients choose protocols by: `transaction.version` (2 unless
//! the cluster was built with 1, which also hides the API versions that
//! carry version 2) and `group.version` 1 (KIP-848 groups).

use bytes::BytesMut;
use rskafka::protocol::{
    messages::{
        api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey},
        ApiVersionsRequest, ApiVersionsResponse,
    },
    ApiKey, ErrorCode, Message,
};

use crate::{server::Ctx, state::Shared};

/// The first versions of these APIs that belong to transaction version 2.
const TRANSACTION_VERSION_2_APIS: [(ApiKey, i16); 3] = [
    (ApiKey::PRODUCE, 12),
    (ApiKey::TXN_OFFSET_COMMIT, 5),
    (ApiKey::END_TXN, 5),
];

/// (name, highest supported level, finalized level) of the features.
fn features(transaction_version: i16) -> [(&'static str, i16, i16); 2] {
    [
        ("transaction.version", 2, transaction_version),
        ("group.version", 1, 1),
    ]
}

/// The APIs advertised, `(key, min, max)`: the dispatch table's, without
/// transaction version 2's versions where it is not finalized.
pub(crate) fn advertised(shared: &Shared) -> Vec<(i16, i16, i16)> {
    let transaction_version = shared.state().config.transaction_version;
    let mut apis = shared.routes.advertised();
    if transaction_version < 2 {
        for (key, _, max) in &mut apis {
            if let Some((_, first_v2)) =
                TRANSACTION_VERSION_2_APIS.iter().find(|(k, _)| k.0 == *key)
            {
                *max = (*max).min(first_v2 - 1);
            }
        }
    }
    apis
}

fn response(shared: &Shared, error: ErrorCode, throttle_ms: i32) -> ApiVersionsResponse {
    let features = features(shared.state().config.transaction_version);
    ApiVersionsResponse {
        error_code: error.0,
        api_keys: advertised(shared)
            .into_iter()
            .map(|(api_key, min_version, max_version)| ApiVersion {
                api_key,
                min_version,
                max_version,
                ..Default::default()
            })
            .collect(),
        throttle_time_ms: throttle_ms,
        supported_features: features
            .iter()
            .map(|(name, max, _)| SupportedFeatureKey {
                name: (*name).into(),
                min_version: 0,
                max_version: *max,
                ..Default::default()
            })
            .collect(),
        // The features never change while the cluster runs.
        finalized_features_epoch: 1,
        finalized_features: features
            .iter()
            .map(|(name, _, level)| FinalizedFeatureKey {
                name: (*name).into(),
                max_version_level: *level,
                min_version_level: *level,
                ..Default::default()
            })
            .collect(),
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
