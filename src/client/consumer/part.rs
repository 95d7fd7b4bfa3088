//! One assigned partition's fetch state, and the few rules that concern
//! that partition alone. The clock is passed in: nothing here reads it.

use std::sync::Arc;

use tokio::time::Instant;

use crate::{cluster::Backoff, protocol::Uuid};

/// How a start offset is looked up with ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OffsetSpec {
    Earliest,
    Latest,
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The ListOffsets `Timestamp` value: -2 earliest, -1 latest.
    pub(super) fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// What a partition needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Its fetch offset must be looked up.
    Resolve(OffsetSpec),
    /// After a leader change: check with OffsetForLeaderEpoch that the log
    /// was not truncated below the fetch offset.
    Validate,
    /// Fetching from `fetch_offset`.
    Fetch,
    /// Stopped after an error that needs the application (a seek).
    Halted,
}

/// A partition's leader as the consumer uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Leader {
    pub(super) id: i32,
    /// -1 when unknown.
    pub(super) epoch: i32,
}

/// One assigned partition.
pub(super) struct Part {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// Changes whenever the position is set from outside the fetch flow
    /// (assign, seek, reset); results of requests sent before are ignored.
    pub(super) generation: u64,
    pub(super) phase: Phase,
    /// Next offset to fetch (ahead of `position` by what is buffered).
    pub(super) fetch_offset: i64,
    /// Leader epoch of the last batch fetched (-1 if unknown).
    pub(super) fetch_epoch: i32,
    /// Next offset the application gets.
    pub(super) position: Option<i64>,
    /// Leader epoch of the last batch handed to the application.
    pub(super) position_epoch: i32,
    /// `None` until looked up, and again after leader errors.
    pub(super) leader: Option<Leader>,
    /// The leader epoch of the last known leader, to tell a leader change.
    pub(super) last_leader_epoch: i32,
    pub(super) topic_id: Uuid,
    pub(super) high_watermark: Option<i64>,
    pub(super) last_stable_offset: Option<i64>,
    pub(super) log_start_offset: Option<i64>,
    /// Not before this instant (after an error).
    pub(super) retry_at: Option<Instant>,
    pub(super) backoff: Backoff,
    /// Part of an in-flight ListOffsets or OffsetForLeaderEpoch request.
    pub(super) busy: bool,
    /// Since when metadata does not know the topic or partition.
    pub(super) unknown_since: Option<Instant>,
    /// When the partition last made progress (a successful fetch answer or
    /// offset lookup), or was last waiting only for the application.
    pub(super) last_ok: Instant,
    /// The last failure, for the stall report.
    pub(super) last_error: Option<String>,
    /// Whether the current stall was reported to the application.
    pub(super) stall_reported: bool,
    /// Bytes to ask for in this partition's next fetch; 0 for the
    /// configured partition limit. Smaller for data that inflates when
    /// decompressed (see `sizing.rs`).
    pub(super) fetch_bytes: i32,
}

impl Part {
    /// Schedules the next attempt after a failure.
    pub(super) fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff.next_delay());
    }

    /// After a success.
    pub(super) fn recovered(&mut self, now: Instant) {
        self.retry_at = None;
        self.backoff.reset();
        self.alive(now);
    }

    /// The partition is not stalled on the network (it made progress, or
    /// waits only for the application).
    pub(super) fn alive(&mut self, now: Instant) {
        self.last_ok = now;
        self.last_error = None;
        self.stall_reported = false;
    }

    /// Remembers why the partition could not make progress.
    pub(super) fn failed(&mut self, why: impl std::fmt::Display) {
        self.last_error = Some(why.to_string());
    }

    /// Applies a newly learnt leader. A newer leader epoch than the one the
    /// fetched data came from triggers a position validation (KIP-320).
    pub(super) fn set_leader(&mut self, leader: Leader) {
        let epoch_moved = self.last_leader_epoch >= 0 && leader.epoch > self.last_leader_epoch;
        if epoch_moved && self.phase == Phase::Fetch && self.fetch_epoch >= 0 {
            self.phase = Phase::Validate;
        }
        if leader.epoch >= 0 {
            self.last_leader_epoch = leader.epoch;
        }
        self.leader = Some(leader);
    }

    /// Forgets the leader so that metadata is looked up again.
    pub(super) fn lose_leader(&mut self) {
        self.leader = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_specs_on_the_wire() {
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(OffsetSpec::Timestamp(1234).wire(), 1234);
    }
}
