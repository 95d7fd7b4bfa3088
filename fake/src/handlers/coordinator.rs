//! The group and transaction coordinators: which broker coordinates a key
//! (FindCoordinator), the coordinator-move fault, and the state of the
//! consumer groups (kept in `group.rs`).
//!
//! With one shared state any broker could answer for any key; a broker
//! that is not the key's coordinator answers NOT_COORDINATOR all the same,
//! so that clients' coordinator lookups and moves are exercised.

use std::collections::HashMap;

use rskafka::protocol::{
    messages::{
        find_coordinator_response::Coordinator, FindCoordinatorRequest, FindCoordinatorResponse,
    },
    ErrorCode,
};

use crate::{server::Ctx, state::State, Error, FakeCluster};

/// FindCoordinator's key types.
pub(crate) const KEY_TYPE_GROUP: i8 = 0;
pub(crate) const KEY_TYPE_TRANSACTION: i8 = 1;

/// Coordinator state: moved keys and the consumer groups.
#[derive(Debug, Default)]
pub(crate) struct Coordination {
    /// Keys whose coordinator a test moved away from the hashed one.
    moved: HashMap<String, i32>,
    pub groups: super::group::Groups,
}

/// FNV-1a: stable across runs and platforms, unlike std's hasher.
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl State {
    /// The broker id coordinating a group or transactional id.
    pub(crate) fn coordinator_for(&self, key: &str) -> i32 {
        if let Some(&moved) = self.coordination.moved.get(key) {
            return moved;
        }
        let n = self.brokers.len() as u64;
        self.brokers[(stable_hash(key) % n) as usize].id
    }
}

impl Ctx {
    /// The error a group or transaction request for `key` gets before it
    /// is looked at: an injected one, else NOT_COORDINATOR on a broker
    /// that does not coordinate `key`.
    pub(crate) fn coordinator_error(&self, key: &str) -> Option<ErrorCode> {
        self.injected_error().or_else(|| {
            (self.state().coordinator_for(key) != self.broker_id)
                .then_some(ErrorCode::NOT_COORDINATOR)
        })
    }
}

impl FakeCluster {
    /// Moves the coordinator of a consumer group or transactional id to
    /// `broker_id`: the old coordinator answers NOT_COORDINATOR from now
    /// on, and FindCoordinator names the new one. Group state (members,
    /// offsets) and transactions carry over, as after a coordinator
    /// failover that loaded them from the internal topics.
    pub fn move_coordinator(&self, key: &str, broker_id: i32) -> Result<(), Error> {
        self.broker_index(broker_id)?;
        self.shared
            .state()
            .coordination
            .moved
            .insert(key.to_owned(), broker_id);
        self.shared.notify_changed();
        Ok(())
    }

    /// The broker id that coordinates a consumer group or transactional id.
    pub fn coordinator(&self, key: &str) -> i32 {
        self.shared.state().coordinator_for(key)
    }
}

pub(crate) async fn find_coordinator(
    ctx: Ctx,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys = if ctx.version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let state = ctx.state();
    let answer = |key: String| {
        let code = ctx.injected_error().or_else(|| {
            (![KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION].contains(&req.key_type))
                .then_some(ErrorCode::INVALID_REQUEST)
        });
        match code {
            Some(code) => Coordinator {
                key,
                node_id: -1,
                host: String::new(),
                port: -1,
                error_code: code.0,
                error_message: Some(code.description().to_owned()),
                ..Default::default()
            },
            None => {
                let id = state.coordinator_for(&key);
                let broker = state
                    .brokers
                    .iter()
                    .find(|b| b.id == id)
                    .expect("coordinators are brokers");
                Coordinator {
                    key,
                    node_id: id,
                    host: broker.host.clone(),
                    port: i32::from(broker.port),
                    error_code: 0,
                    error_message: None,
                    ..Default::default()
                }
            }
        }
    };
    let mut coordinators: Vec<Coordinator> = keys.into_iter().map(answer).collect();
    if ctx.version >= 4 {
        return FindCoordinatorResponse {
            throttle_time_ms: ctx.throttle_ms,
            coordinators,
            ..Default::default()
        };
    }
    let c = coordinators.pop().expect("one key before v4");
    FindCoordinatorResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: c.error_code,
        error_message: c.error_message,
        node_id: c.node_id,
        host: c.host,
        port: c.port,
        ..Default::default()
    }
}
