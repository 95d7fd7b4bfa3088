//! State shared between the application side of a consumer and its
//! background fetch task.
//!
//! One mutex guards it; both sides hold it only for bookkeeping (never
//! across an await or while decoding), and the application takes it once
//! per chunk of records, not per record.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    task::Waker,
};

use tokio::{sync::Notify, time::Instant};

use super::{ConsumedRecord, StartOffset};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::Error,
    protocol::Uuid,
};

/// The shared half of a consumer.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the background task: the application released buffer space or
    /// changed the assignment.
    pub(super) wake_driver: Notify,
}

impl Shared {
    pub(super) fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            wake_driver: Notify::new(),
        }
    }
}

/// Something for the application, in arrival order.
pub(super) enum Ready {
    /// Records of one partition.
    Chunk(ReadyChunk),
    /// A failure concerning one partition (or the whole consumer).
    Error(Error),
}

/// Fetched records of one partition waiting for the application.
pub(super) struct ReadyChunk {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// The partition's generation when fetched; stale chunks are dropped.
    pub(super) generation: u64,
    pub(super) records: Vec<ConsumedRecord>,
    /// The partition's position once this chunk is handed out.
    pub(super) next_offset: i64,
    /// Leader epoch of the chunk's last batch.
    pub(super) last_epoch: Option<i32>,
    /// Bytes accounted to the prefetch buffer.
    pub(super) bytes: usize,
}

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
    /// decompressed, so a fetch brings about what one decode may unpack
    /// instead of much of it being dropped and fetched again.
    pub(super) fetch_bytes: i32,
}

impl Part {
    /// Schedules the next attempt after a failure.
    pub(super) fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// After a success.
    pub(super) fn recovered(&mut self) {
        self.retry_at = None;
        self.backoff.reset();
        self.alive();
    }

    /// The partition is not stalled on the network (it made progress, or
    /// waits only for the application).
    pub(super) fn alive(&mut self) {
        self.last_ok = Instant::now();
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

/// Everything shared; see the module docs.
pub(super) struct State {
    parts: BTreeMap<Arc<str>, BTreeMap<i32, Part>>,
    pub(super) ready: VecDeque<Ready>,
    /// Bytes of chunks fetched and not yet released by the application.
    pub(super) buffered: usize,
    /// Bytes promised to in-flight fetches.
    pub(super) reserved: usize,
    /// Largest `buffered` seen.
    pub(super) peak: usize,
    app_waker: Option<Waker>,
    /// Set if the background task ended (on [`super::Consumer::close`], or
    /// a bug).
    pub(super) driver_gone: bool,
    /// Asks the background task to close its fetch sessions and end.
    pub(super) closing: bool,
    next_generation: u64,
    backoff: BackoffConfig,
}

impl State {
    pub(super) fn new(backoff: BackoffConfig) -> Self {
        Self {
            parts: BTreeMap::new(),
            ready: VecDeque::new(),
            buffered: 0,
            reserved: 0,
            peak: 0,
            app_waker: None,
            driver_gone: false,
            closing: false,
            next_generation: 1,
            backoff,
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Adds the partition, or moves it to `start` if already assigned.
    pub(super) fn assign(&mut self, topic: &str, partition: i32, start: StartOffset) {
        self.clear_buffered(topic, partition);
        let generation = self.generation();
        let (phase, position) = match start {
            StartOffset::Earliest => (Phase::Resolve(OffsetSpec::Earliest), None),
            StartOffset::Latest => (Phase::Resolve(OffsetSpec::Latest), None),
            StartOffset::Timestamp(t) => {
                let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
                (Phase::Resolve(OffsetSpec::Timestamp(ms)), None)
            }
            StartOffset::At(offset) => (Phase::Fetch, Some(offset)),
        };
        if let Some(part) = self.part_mut(topic, partition) {
            part.generation = generation;
            part.phase = phase;
            part.position = position;
            part.fetch_offset = position.unwrap_or(-1);
            part.fetch_epoch = -1;
            part.position_epoch = -1;
            part.recovered();
            return;
        }
        let topic: Arc<str> = match self.parts.get_key_value(topic) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(topic),
        };
        let part = Part {
            topic: Arc::clone(&topic),
            partition,
            generation,
            phase,
            fetch_offset: position.unwrap_or(-1),
            fetch_epoch: -1,
            position,
            position_epoch: -1,
            leader: None,
            last_leader_epoch: -1,
            topic_id: Uuid::ZERO,
            high_watermark: None,
            last_stable_offset: None,
            log_start_offset: None,
            retry_at: None,
            backoff: Backoff::new(&self.backoff, None),
            busy: false,
            unknown_since: None,
            last_ok: Instant::now(),
            last_error: None,
            stall_reported: false,
            fetch_bytes: 0,
        };
        self.parts.entry(topic).or_default().insert(partition, part);
    }

    /// Removes the partition; whether it was assigned.
    pub(super) fn unassign(&mut self, topic: &str, partition: i32) -> bool {
        self.clear_buffered(topic, partition);
        let Some(parts) = self.parts.get_mut(topic) else {
            return false;
        };
        let was = parts.remove(&partition).is_some();
        if parts.is_empty() {
            self.parts.remove(topic);
        }
        was
    }

    /// Drops the partition's chunks waiting for the application.
    pub(super) fn clear_buffered(&mut self, topic: &str, partition: i32) {
        let mut freed = 0;
        self.ready.retain(|r| match r {
            Ready::Chunk(c) if &*c.topic == topic && c.partition == partition => {
                freed += c.bytes;
                false
            }
            _ => true,
        });
        self.release(freed);
    }

    /// A new generation for a partition whose position the fetch flow
    /// itself resets (offset reset, truncation): in-flight results and
    /// buffered chunks of the old one are dropped.
    pub(super) fn restart(&mut self, topic: &str, partition: i32) -> Option<u64> {
        self.clear_buffered(topic, partition);
        let generation = self.generation();
        let part = self.part_mut(topic, partition)?;
        part.generation = generation;
        Some(generation)
    }

    pub(super) fn part(&self, topic: &str, partition: i32) -> Option<&Part> {
        self.parts.get(topic)?.get(&partition)
    }

    pub(super) fn part_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Part> {
        self.parts.get_mut(topic)?.get_mut(&partition)
    }

    pub(super) fn parts_mut(&mut self) -> impl Iterator<Item = &mut Part> {
        self.parts.values_mut().flat_map(|ps| ps.values_mut())
    }

    pub(super) fn assignment(&self) -> Vec<(String, i32)> {
        self.parts
            .iter()
            .flat_map(|(t, ps)| ps.keys().map(move |p| (t.to_string(), *p)))
            .collect()
    }

    pub(super) fn partition_count(&self) -> usize {
        self.parts.values().map(BTreeMap::len).sum()
    }

    /// Returns bytes to the prefetch budget.
    pub(super) fn release(&mut self, bytes: usize) {
        self.buffered = self.buffered.saturating_sub(bytes);
    }

    /// Queues a chunk for the application.
    pub(super) fn push_chunk(&mut self, chunk: ReadyChunk) {
        self.buffered += chunk.bytes;
        self.peak = self.peak.max(self.buffered);
        self.ready.push_back(Ready::Chunk(chunk));
    }

    /// Queues an error for the application.
    pub(super) fn push_error(&mut self, error: Error) {
        self.ready.push_back(Ready::Error(error));
    }

    /// Hands a chunk to the application: its records if the partition is
    /// still at that generation (the position then moves past the chunk),
    /// `None` if it is stale.
    pub(super) fn take_chunk(&mut self, chunk: ReadyChunk) -> Option<Vec<ConsumedRecord>> {
        let part = self.part_mut(&chunk.topic, chunk.partition)?;
        if part.generation != chunk.generation {
            return None;
        }
        part.position = Some(chunk.next_offset);
        if let Some(epoch) = chunk.last_epoch {
            part.position_epoch = epoch;
        }
        Some(chunk.records)
    }

    pub(super) fn register_app_waker(&mut self, waker: &Waker) {
        match &self.app_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.app_waker = Some(waker.clone()),
        }
    }

    /// Wakes the application if it waits for items.
    pub(super) fn wake_app(&mut self) {
        if !self.ready.is_empty() || self.driver_gone {
            if let Some(w) = self.app_waker.take() {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(st: &State, topic: &str, partition: i32, next: i64, bytes: usize) -> ReadyChunk {
        let part = st.part(topic, partition).unwrap();
        ReadyChunk {
            topic: Arc::clone(&part.topic),
            partition,
            generation: part.generation,
            records: Vec::new(),
            next_offset: next,
            last_epoch: Some(4),
            bytes,
        }
    }

    #[test]
    fn chunks_move_the_position_and_account_bytes() {
        let mut st = State::new(BackoffConfig::default());
        st.assign("t", 0, StartOffset::At(10));
        assert_eq!(st.part("t", 0).unwrap().position, Some(10));
        let c = chunk(&st, "t", 0, 15, 100);
        st.push_chunk(c);
        let c = chunk(&st, "t", 0, 20, 50);
        st.push_chunk(c);
        assert_eq!((st.buffered, st.peak), (150, 150));
        let Some(Ready::Chunk(c)) = st.ready.pop_front() else {
            panic!("expected a chunk")
        };
        st.release(c.bytes);
        assert!(st.take_chunk(c).is_some());
        assert_eq!(st.part("t", 0).unwrap().position, Some(15));
        assert_eq!(st.part("t", 0).unwrap().position_epoch, 4);
        assert_eq!((st.buffered, st.peak), (50, 150));
    }

    #[test]
    fn reassigning_drops_buffered_chunks_and_stale_ones_are_refused() {
        let mut st = State::new(BackoffConfig::default());
        st.assign("t", 0, StartOffset::At(0));
        st.assign("t", 1, StartOffset::At(0));
        let stale = chunk(&st, "t", 0, 5, 10);
        let c = chunk(&st, "t", 0, 5, 10);
        st.push_chunk(c);
        let other = chunk(&st, "t", 1, 7, 20);
        st.push_chunk(other);
        st.assign("t", 0, StartOffset::Earliest);
        assert_eq!(st.buffered, 20, "only partition 1's chunk is left");
        assert_eq!(st.ready.len(), 1);
        assert!(st.take_chunk(stale).is_none());
        assert_eq!(st.part("t", 0).unwrap().position, None);
        assert_eq!(
            st.part("t", 0).unwrap().phase,
            Phase::Resolve(OffsetSpec::Earliest)
        );
        assert!(st.unassign("t", 1));
        assert!(!st.unassign("t", 1));
        assert_eq!(st.buffered, 0);
        assert_eq!(st.assignment(), vec![("t".to_owned(), 0)]);
    }

    #[test]
    fn a_newer_leader_epoch_triggers_validation() {
        let mut st = State::new(BackoffConfig::default());
        st.assign("t", 0, StartOffset::At(0));
        let part = st.part_mut("t", 0).unwrap();
        part.set_leader(Leader { id: 1, epoch: 3 });
        assert_eq!(
            part.phase,
            Phase::Fetch,
            "first leader: nothing to validate"
        );
        part.fetch_epoch = 3;
        part.lose_leader();
        part.set_leader(Leader { id: 1, epoch: 3 });
        assert_eq!(part.phase, Phase::Fetch, "same epoch");
        part.lose_leader();
        part.set_leader(Leader { id: 2, epoch: 4 });
        assert_eq!(part.phase, Phase::Validate);
        assert_eq!(part.last_leader_epoch, 4);
    }

    #[test]
    fn offset_specs_on_the_wire() {
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(OffsetSpec::Timestamp(1234).wire(), 1234);
    }
}
