//! The consumer settings its fetch planner and request builders use,
//! derived once from [`ConsumerConfig`] and the client's settings.

use std::time::Duration;

use super::{ConsumerConfig, IsolationLevel, OffsetReset};
use crate::{
    client::Settings as ClientSettings, cluster::BackoffConfig, protocol::record::DecodeLimits,
};

/// See the module docs.
pub(super) struct Settings {
    pub(super) isolation: IsolationLevel,
    pub(super) max_wait_ms: i32,
    pub(super) min_bytes: i32,
    pub(super) max_bytes: i32,
    pub(super) max_partition_bytes: i32,
    pub(super) max_buffered: usize,
    pub(super) offset_reset: OffsetReset,
    pub(super) limits: DecodeLimits,
    pub(super) backoff: BackoffConfig,
    /// How long a topic or partition may stay unknown before the
    /// application is told and the partition stops.
    pub(super) unknown_topic_timeout: Duration,
    /// How long a partition may go without progress (leader unreachable,
    /// metadata failing) before the application gets a retriable error
    /// item about it, so that a dead cluster is not silent.
    pub(super) stall_after: Duration,
}

impl Settings {
    pub(super) fn new(config: &ConsumerConfig, client: &ClientSettings) -> Self {
        Self {
            isolation: config.isolation,
            max_wait_ms: i32::try_from(config.max_wait.as_millis()).unwrap_or(i32::MAX),
            min_bytes: config.min_bytes,
            max_bytes: config.max_bytes,
            // A partition limit above the whole buffer could never be met.
            max_partition_bytes: config
                .max_partition_bytes
                .min(i32::try_from(config.max_buffered_bytes).unwrap_or(i32::MAX)),
            max_buffered: config.max_buffered_bytes,
            offset_reset: config.offset_reset,
            limits: config.decode_limits,
            backoff: client.backoff.clone(),
            unknown_topic_timeout: client.operation_timeout,
            stall_after: client.operation_timeout + config.max_wait,
        }
    }
}
