//! The consumer's fetch planner: every decision of the background task,
//! without I/O (in the way of `producer/accumulator.rs` and of
//! quinn-proto's `handle_*`/`poll_*`).
//!
//! It owns the assigned partitions' state and what was fetched for the
//! application. [`FetchPlanner::plan`] says what to send now: metadata
//! lookups, connections, ListOffsets for start offsets, OffsetForLeaderEpoch
//! to validate positions after a leader change (KIP-320), and one fetch per
//! broker inside its fetch session (KIP-227), sized to the prefetch budget.
//! A `handle_*` method takes each result back; [`FetchPlanner::poll_timeout`]
//! says when to plan again if nothing else happens (a backoff expiring, a
//! stall to report), and [`FetchPlanner::take_cluster_updates`] what the
//! cluster's metadata cache must learn. The clock is passed in.
//!
//! Per broker there is at most one fetch in flight, as fetch sessions
//! require; the next one is planned as soon as the previous one is answered
//! and the prefetch budget allows.
//!
//! This file holds the state, the application's side and `plan`;
//! `results.rs` the `handle_*` methods; `tests.rs` drives the whole
//! planner through leader moves, truncation, offset resets and sessions.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::{
    buffer::{Prefetched, Ready, ReadyChunk},
    part::{Leader, OffsetSpec, Part, Phase},
    requests::{
        self, AnswerKeys, Ctx, Item, PartList, SessionKey, FETCH_LEADER_EPOCH_FROM,
        FETCH_SESSIONS_FROM, FETCH_TOPIC_IDS_FROM,
    },
    session::{FetchPlan, FetchSession, PartitionParams},
    settings::Settings,
    sizing::{self, FetchBudget},
    ConsumedRecord, StartOffset,
};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::{Error, ErrorKind},
    protocol::{messages::FetchRequest, ApiKey, ErrorCode, Uuid},
};

/// The assigned partitions by topic and index.
type Parts = BTreeMap<Arc<str>, BTreeMap<i32, Part>>;

/// The fetchable partitions of one broker, with their request values.
type Fetchable = Vec<(SessionKey, PartitionParams, Ctx)>;

/// What the cluster's metadata cache must learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClusterUpdate {
    /// The topic's leaders are to be looked up again.
    Invalidate(Arc<str>),
    /// KIP-951: a fetch response named the partition's new leader.
    LeaderHint {
        topic: Arc<str>,
        partition: i32,
        leader: i32,
        epoch: i32,
        endpoint: Option<(String, i32)>,
    },
}

/// A fetch connection to a broker, as far as planning needs it.
#[derive(Debug, Clone)]
pub(super) struct Connected {
    /// For error messages.
    pub(super) addr: String,
    /// The best Fetch version both sides support.
    pub(super) fetch_version: Option<i16>,
}

/// The work [`FetchPlanner::plan`] decided on.
#[derive(Default)]
pub(super) struct Plan {
    /// Topics whose leaders to look up.
    pub(super) metadata: Option<Vec<String>>,
    /// Brokers to open a fetch connection to.
    pub(super) connect: Vec<i32>,
    /// Start offsets to look up, per leader.
    pub(super) list_offsets: Vec<(i32, Vec<Item>)>,
    /// Positions to validate, per leader.
    pub(super) validate: Vec<(i32, Vec<Item>)>,
    /// Fetches to send.
    pub(super) fetch: Vec<FetchCall>,
}

/// One broker's fetch.
pub(super) struct FetchCall {
    pub(super) broker: i32,
    pub(super) request: FetchRequest,
    /// For decoding the response (the version to send is `keys.version`).
    pub(super) keys: AnswerKeys,
    /// Goes back to [`FetchPlanner::handle_fetched`] with the result.
    pub(super) sent: SentFetch,
}

/// What the planner needs back with a fetch's result.
pub(super) struct SentFetch {
    broker: i32,
    plan: FetchPlan<SessionKey>,
    reserved: usize,
    /// Every partition the fetch covered (an incremental answer omits those
    /// without news).
    covered: Vec<(Arc<str>, i32, Ctx)>,
}

/// A piece of planned work, to undo if it never reports back (its
/// sub-task panicked).
pub(super) enum Job {
    Connect(i32),
    Metadata,
    Parts(PartList),
    Fetch { broker: i32, reserved: usize },
}

impl Job {
    /// The job of a ListOffsets or OffsetForLeaderEpoch request.
    pub(super) fn items(items: &[Item]) -> Self {
        Job::Parts(
            items
                .iter()
                .map(|i| (Arc::clone(&i.topic), i.partition))
                .collect(),
        )
    }

    /// The job of a fetch.
    pub(super) fn fetch(sent: &SentFetch) -> Self {
        Job::Fetch {
            broker: sent.broker,
            reserved: sent.reserved,
        }
    }
}

/// Per-broker fetch state.
struct BrokerFetch {
    /// `None` while there is no open fetch connection.
    connection: Option<Connected>,
    connecting: bool,
    fetching: bool,
    session: FetchSession<SessionKey>,
    /// The Fetch version the session was built with.
    session_version: Option<i16>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl BrokerFetch {
    fn new(backoff: &BackoffConfig) -> Self {
        Self {
            connection: None,
            connecting: false,
            fetching: false,
            session: FetchSession::new(),
            session_version: None,
            retry_at: None,
            backoff: Backoff::new(backoff, None),
        }
    }

    fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff.next_delay());
    }
}

/// See the module docs.
pub(super) struct FetchPlanner {
    settings: Arc<Settings>,
    parts: Parts,
    next_generation: u64,
    brokers: HashMap<i32, BrokerFetch>,
    metadata_busy: bool,
    prefetched: Prefetched,
    cluster_updates: Vec<ClusterUpdate>,
    /// When to plan again if nothing happens, as of the last plan.
    wake_at: Option<Instant>,
}

impl FetchPlanner {
    pub(super) fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            parts: BTreeMap::new(),
            next_generation: 1,
            brokers: HashMap::new(),
            metadata_busy: false,
            prefetched: Prefetched::default(),
            cluster_updates: Vec::new(),
            wake_at: None,
        }
    }

    // The application's side.

    /// Adds the partition, or moves it to `start` if already assigned.
    pub(super) fn assign(&mut self, topic: &str, partition: i32, start: StartOffset, now: Instant) {
        self.prefetched.clear(topic, partition);
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
        if let Some(part) = find_part(&mut self.parts, topic, partition) {
            part.generation = generation;
            part.phase = phase;
            part.position = position;
            part.fetch_offset = position.unwrap_or(-1);
            part.fetch_epoch = -1;
            part.position_epoch = -1;
            part.recovered(now);
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
            backoff: Backoff::new(&self.settings.backoff, None),
            busy: false,
            unknown_since: None,
            last_ok: now,
            last_error: None,
            stall_reported: false,
            fetch_bytes: 0,
        };
        self.parts.entry(topic).or_default().insert(partition, part);
    }

    /// Removes the partition; whether it was assigned.
    pub(super) fn unassign(&mut self, topic: &str, partition: i32) -> bool {
        self.prefetched.clear(topic, partition);
        let Some(parts) = self.parts.get_mut(topic) else {
            return false;
        };
        let was = parts.remove(&partition).is_some();
        if parts.is_empty() {
            self.parts.remove(topic);
        }
        was
    }

    pub(super) fn part(&self, topic: &str, partition: i32) -> Option<&Part> {
        self.parts.get(topic)?.get(&partition)
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

    /// The next item for the application.
    pub(super) fn pop_ready(&mut self) -> Option<Ready> {
        self.prefetched.ready.pop_front()
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.prefetched.ready.is_empty()
    }

    /// Hands a chunk to the application: its records if the partition is
    /// still at that generation (the position then moves past the chunk),
    /// `None` if it is stale.
    pub(super) fn take_chunk(&mut self, chunk: ReadyChunk) -> Option<Vec<ConsumedRecord>> {
        let part = find_part(&mut self.parts, &chunk.topic, chunk.partition)?;
        if part.generation != chunk.generation {
            return None;
        }
        part.position = Some(chunk.next_offset);
        if let Some(epoch) = chunk.last_epoch {
            part.position_epoch = epoch;
        }
        Some(chunk.records)
    }

    /// Returns bytes to the prefetch budget.
    pub(super) fn release(&mut self, bytes: usize) {
        self.prefetched.release(bytes);
    }

    /// Fetched bytes not yet released by the application.
    pub(super) fn buffered(&self) -> usize {
        self.prefetched.buffered
    }

    /// The largest [`Self::buffered`] seen.
    pub(super) fn peak(&self) -> usize {
        self.prefetched.peak
    }

    // The background task's side.

    /// When to plan again if no result comes in first, as of the last
    /// [`Self::plan`].
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// What the cluster's metadata cache must learn since the last call.
    pub(super) fn take_cluster_updates(&mut self) -> Vec<ClusterUpdate> {
        std::mem::take(&mut self.cluster_updates)
    }

    /// The requests that close every broker's fetch session (epoch -1), so
    /// brokers free them now rather than when they expire, as (broker,
    /// version, request).
    pub(super) fn close_sessions(&mut self) -> Vec<(i32, i16, FetchRequest)> {
        let settings = &self.settings;
        self.brokers
            .iter_mut()
            .filter_map(|(id, b)| {
                b.connection.as_ref()?;
                let version = b.session_version.filter(|v| *v >= FETCH_SESSIONS_FROM)?;
                let plan = b.session.close()?;
                Some((
                    *id,
                    version,
                    requests::fetch_request(&plan, version, settings, 0),
                ))
            })
            .collect()
    }

    /// Decides what to send now; see the module docs.
    pub(super) fn plan(&mut self, now: Instant) -> Plan {
        let settings = Arc::clone(&self.settings);
        let mut wake: Option<Instant> = None;
        let mut later = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        let mut plan = Plan::default();

        let mut need_metadata: BTreeSet<String> = BTreeSet::new();
        let mut offsets: BTreeMap<i32, Vec<Item>> = BTreeMap::new();
        let mut validate: BTreeMap<i32, Vec<Item>> = BTreeMap::new();
        let mut fetch: BTreeMap<i32, Fetchable> = BTreeMap::new();
        let max_part = usize::try_from(settings.max_partition_bytes).unwrap_or(0);
        let stall_after = settings.stall_after;
        let mut available = self.prefetched.available(settings.max_buffered);
        // Everything waits for the application to consume: not a stall.
        let budget_blocked = available < max_part.max(1);
        for part in parts_mut(&mut self.parts) {
            if part.phase == Phase::Halted {
                continue;
            }
            if budget_blocked && part.phase == Phase::Fetch {
                part.alive(now);
            }
            if !part.stall_reported {
                let due = part.last_ok + stall_after;
                if due <= now {
                    part.stall_reported = true;
                    if part.unknown_since.is_some() {
                        // Stalled because metadata does not know the
                        // topic or partition: that is the error.
                        part.phase = Phase::Halted;
                        self.prefetched.push_error(part_error(
                            part,
                            Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                            ApiKey::METADATA,
                        ));
                        continue;
                    }
                    self.prefetched.push_error(stall_error(part, stall_after));
                } else {
                    later(due);
                }
            }
            if part.busy {
                continue;
            }
            if let Some(t) = backing_off(part.retry_at, now) {
                later(t);
                continue;
            }
            let Some(leader) = part.leader else {
                need_metadata.insert(part.topic.to_string());
                continue;
            };
            match part.phase {
                Phase::Resolve(spec) => {
                    part.busy = true;
                    let item = lookup(part, leader, spec.wire());
                    offsets.entry(leader.id).or_default().push(item);
                }
                Phase::Validate => {
                    part.busy = true;
                    let item = lookup(part, leader, i64::from(part.fetch_epoch));
                    validate.entry(leader.id).or_default().push(item);
                }
                Phase::Fetch => {
                    fetch.entry(leader.id).or_default().push((
                        (Arc::clone(&part.topic), part.topic_id, part.partition),
                        PartitionParams {
                            fetch_offset: part.fetch_offset,
                            current_leader_epoch: leader.epoch,
                            last_fetched_epoch: -1,
                            // Capped per request in `fetch_call`.
                            max_bytes: sizing::planned_fetch_bytes(part.fetch_bytes, max_part),
                        },
                        Ctx {
                            generation: part.generation,
                            fetch_offset: part.fetch_offset,
                        },
                    ));
                }
                Phase::Halted => {}
            }
        }

        if !need_metadata.is_empty() && !self.metadata_busy {
            self.metadata_busy = true;
            plan.metadata = Some(need_metadata.into_iter().collect());
        }
        plan.list_offsets = offsets.into_iter().collect();
        plan.validate = validate.into_iter().collect();

        for (broker, parts) in fetch {
            let b = self
                .brokers
                .entry(broker)
                .or_insert_with(|| BrokerFetch::new(&settings.backoff));
            if b.fetching {
                continue;
            }
            if let Some(t) = backing_off(b.retry_at, now) {
                later(t);
                continue;
            }
            let Some(connection) = &b.connection else {
                if !b.connecting {
                    b.connecting = true;
                    plan.connect.push(broker);
                }
                continue;
            };
            let asks: Vec<i32> = parts.iter().map(|(_, p, _)| p.max_bytes).collect();
            let Some(budget) = sizing::size_fetch(
                available,
                settings.max_bytes,
                settings.max_partition_bytes,
                &asks,
            ) else {
                continue;
            };
            let ids_known = parts.iter().all(|((_, id, _), _, _)| *id != Uuid::ZERO);
            let version = match requests::fetch_version(
                connection.fetch_version,
                &connection.addr,
                ids_known,
            ) {
                Ok(v) => v,
                Err(error) => {
                    // No retry can fix that.
                    self.fail_parts(&parts, &error);
                    continue;
                }
            };
            let call = fetch_call(broker, b, version, parts, budget, &settings);
            available -= budget.reserved;
            self.prefetched.reserved += budget.reserved;
            plan.fetch.push(call);
        }
        self.wake_at = wake;
        plan
    }

    /// A new generation for a partition whose position the fetch flow
    /// itself resets (offset reset, truncation): in-flight results and
    /// buffered chunks of the old one are dropped.
    fn restart(&mut self, topic: &str, partition: i32) {
        self.prefetched.clear(topic, partition);
        let generation = self.generation();
        if let Some(part) = find_part(&mut self.parts, topic, partition) {
            part.generation = generation;
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Stops partitions for good with `error`.
    fn fail_parts(&mut self, parts: &Fetchable, error: &Error) {
        for ((topic, _, partition), _, _) in parts {
            if let Some(part) = find_part(&mut self.parts, topic, *partition) {
                part.phase = Phase::Halted;
                let e = part_error(part, clone_error(error), ApiKey::FETCH);
                self.prefetched.push_error(e);
            }
        }
    }
}

/// Builds one broker's fetch at `version` within `budget`.
fn fetch_call(
    broker: i32,
    b: &mut BrokerFetch,
    version: i16,
    parts: Fetchable,
    budget: FetchBudget,
    settings: &Settings,
) -> FetchCall {
    if b.session_version != Some(version) {
        b.session.on_failure();
        b.session_version = Some(version);
    }
    let mut ctx: HashMap<(Arc<str>, i32), Ctx> = HashMap::with_capacity(parts.len());
    let mut ids: HashMap<Uuid, Arc<str>> = HashMap::new();
    let wanted: Vec<(SessionKey, PartitionParams)> = parts
        .into_iter()
        .map(|(key, mut params, c)| {
            ctx.insert((Arc::clone(&key.0), key.2), c);
            if version >= FETCH_TOPIC_IDS_FROM {
                ids.insert(key.1, Arc::clone(&key.0));
            }
            params.max_bytes = sizing::capped_partition_bytes(params.max_bytes, &budget);
            if version < FETCH_LEADER_EPOCH_FROM {
                params.current_leader_epoch = -1;
            }
            (key, params)
        })
        .collect();
    let covered: Vec<(Arc<str>, i32, Ctx)> = ctx
        .iter()
        .map(|((t, p), c)| (Arc::clone(t), *p, *c))
        .collect();
    let plan = b.session.plan(wanted, version >= FETCH_SESSIONS_FROM);
    let request = requests::fetch_request(&plan, version, settings, budget.reserved);
    b.fetching = true;
    FetchCall {
        broker,
        request,
        keys: AnswerKeys {
            version,
            ctx,
            ids,
            decode_budget: budget.decode_budget,
        },
        sent: SentFetch {
            broker,
            plan,
            reserved: budget.reserved,
            covered,
        },
    }
}

/// The partition in a ListOffsets or OffsetForLeaderEpoch request to
/// `leader`, asking `query`.
fn lookup(part: &Part, leader: Leader, query: i64) -> Item {
    Item {
        topic: Arc::clone(&part.topic),
        partition: part.partition,
        generation: part.generation,
        current_leader_epoch: leader.epoch,
        query,
    }
}

/// When a backoff ending at `retry_at` ends, if it still runs at `now`.
fn backing_off(retry_at: Option<Instant>, now: Instant) -> Option<Instant> {
    retry_at.filter(|t| *t > now)
}

fn find_part<'a>(parts: &'a mut Parts, topic: &str, partition: i32) -> Option<&'a mut Part> {
    parts.get_mut(topic)?.get_mut(&partition)
}

fn parts_mut(parts: &mut Parts) -> impl Iterator<Item = &mut Part> {
    parts.values_mut().flat_map(|ps| ps.values_mut())
}

/// The retriable error item for a partition that made no progress.
fn stall_error(part: &Part, after: Duration) -> Error {
    let why = part
        .last_error
        .as_deref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    part_error(
        part,
        Error::new(ErrorKind::Timeout).with_message(format!(
            "no progress for {} ms; still retrying{why}",
            after.as_millis()
        )),
        ApiKey::FETCH,
    )
}

fn part_error(part: &Part, error: Error, api: ApiKey) -> Error {
    error
        .with_api(api)
        .with_topic(&part.topic)
        .with_partition(part.partition)
}

/// `Error` is not `Clone` (it may hold a source); keep what matters.
fn clone_error(e: &Error) -> Error {
    let mut c = Error::new(e.kind()).with_message(e.to_string());
    if let Some(api) = e.api() {
        c = c.with_api(api);
    }
    c
}

mod results;
#[cfg(test)]
mod tests;
