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
        self, AnswerKeys, Ctx, FetchAnswer, Item, ItemResult, PartAnswer, PartList, SessionKey,
        FETCH_LEADER_EPOCH_FROM, FETCH_SESSIONS_FROM, FETCH_TOPIC_IDS_FROM,
    },
    session::{FetchPlan, FetchSession, PartitionParams, SessionOutcome},
    settings::Settings,
    sizing::{self, FetchBudget},
    ConsumedRecord, OffsetReset, StartOffset,
};
use crate::{
    cluster::{Backoff, BackoffConfig, Metadata},
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
            if let Some(t) = part.retry_at {
                if t > now {
                    later(t);
                    continue;
                }
            }
            let Some(leader) = part.leader else {
                need_metadata.insert(part.topic.to_string());
                continue;
            };
            match part.phase {
                Phase::Resolve(spec) => {
                    part.busy = true;
                    offsets.entry(leader.id).or_default().push(Item {
                        topic: Arc::clone(&part.topic),
                        partition: part.partition,
                        generation: part.generation,
                        current_leader_epoch: leader.epoch,
                        query: spec.wire(),
                    });
                }
                Phase::Validate => {
                    part.busy = true;
                    validate.entry(leader.id).or_default().push(Item {
                        topic: Arc::clone(&part.topic),
                        partition: part.partition,
                        generation: part.generation,
                        current_leader_epoch: leader.epoch,
                        query: i64::from(part.fetch_epoch),
                    });
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
            if let Some(t) = b.retry_at {
                if t > now {
                    later(t);
                    continue;
                }
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

    /// A fetch connection to `broker` opened, or could not be opened.
    pub(super) fn handle_connected(
        &mut self,
        broker: i32,
        result: Result<Connected, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.connecting = false;
        match result {
            Ok(connected) => b.connection = Some(connected),
            Err(e) => {
                tracing::debug!(broker, error = %e, "consumer cannot reach broker");
                b.back_off(now);
                // The broker may be gone for good: look the leaders up again.
                self.lose_leaders_on(broker, e);
            }
        }
    }

    /// The fetch connection to `broker` closed.
    pub(super) fn handle_connection_lost(&mut self, broker: i32) {
        if let Some(b) = self.brokers.get_mut(&broker) {
            b.connection = None;
        }
    }

    /// Forgets the leader of every partition led by `broker`, which
    /// failed with `why`.
    fn lose_leaders_on(&mut self, broker: i32, why: &dyn std::fmt::Display) {
        for part in parts_mut(&mut self.parts) {
            if part.leader.is_some_and(|l| l.id == broker) {
                self.cluster_updates
                    .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                part.lose_leader();
                part.failed(format_args!("broker {broker}: {why}"));
            }
        }
    }

    /// A metadata lookup of `topics` finished.
    pub(super) fn handle_metadata(
        &mut self,
        topics: &[String],
        result: Result<&Metadata, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        self.metadata_busy = false;
        let timeout = self.settings.unknown_topic_timeout;
        for part in parts_mut(&mut self.parts) {
            if part.leader.is_some() || !topics.iter().any(|t| **t == *part.topic) {
                continue;
            }
            let md = match &result {
                Ok(md) => md,
                Err(e) => {
                    tracing::debug!(topic = %part.topic, error = %e, "consumer metadata lookup failed");
                    part.failed(e);
                    part.back_off(now);
                    continue;
                }
            };
            let topic = md.topics.get(&*part.topic);
            let info = topic
                .filter(|t| t.error.is_ok())
                .and_then(|t| t.partitions.get(&part.partition));
            let Some(info) = info else {
                match topic.map(|t| t.error) {
                    Some(code)
                        if !code.is_ok()
                            && code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                            && !code.is_retriable() =>
                    {
                        self.prefetched.push_error(part_error(
                            part,
                            Error::kafka(code, None),
                            ApiKey::METADATA,
                        ));
                        part.phase = Phase::Halted;
                    }
                    _ => {
                        // Unknown topic or partition: it may be being created.
                        let since = *part.unknown_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= timeout {
                            self.prefetched.push_error(part_error(
                                part,
                                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                                ApiKey::METADATA,
                            ));
                            part.phase = Phase::Halted;
                        } else {
                            self.cluster_updates
                                .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                            part.failed("the topic or partition is unknown");
                            part.back_off(now);
                        }
                    }
                }
                continue;
            };
            part.unknown_since = None;
            match info.leader {
                Some(id)
                    if info.error.is_ok() || info.error == ErrorCode::REPLICA_NOT_AVAILABLE =>
                {
                    if let Some(t) = topic {
                        part.topic_id = t.id;
                    }
                    part.set_leader(Leader {
                        id,
                        epoch: info.leader_epoch,
                    });
                }
                _ => {
                    // An election is in progress.
                    self.cluster_updates
                        .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                    part.failed(format_args!("no leader ({})", info.error));
                    part.back_off(now);
                }
            }
        }
    }

    /// A ListOffsets request to `broker` for `items` finished.
    pub(super) fn handle_offsets(
        &mut self,
        broker: i32,
        items: &[Item],
        result: Result<Vec<ItemResult>, Error>,
        now: Instant,
    ) {
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker, error = %e, "ListOffsets failed");
                self.retry_items(items, &e, now);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut self.parts, item) else {
                continue;
            };
            if !matches!(part.phase, Phase::Resolve(_)) {
                continue;
            }
            if r.error.is_ok() {
                part.fetch_offset = r.offset;
                part.position = Some(r.offset);
                part.fetch_epoch = r.leader_epoch;
                part.position_epoch = r.leader_epoch;
                part.phase = Phase::Fetch;
                part.recovered(now);
            } else if let Some(e) = partition_failed(
                part,
                r.error,
                ApiKey::LIST_OFFSETS,
                &mut self.cluster_updates,
                now,
            ) {
                self.prefetched.push_error(e);
            }
        }
    }

    /// An OffsetForLeaderEpoch request to `broker` for `items` finished;
    /// `Ok(None)`: the broker cannot validate.
    pub(super) fn handle_validated(
        &mut self,
        broker: i32,
        items: &[Item],
        result: Result<Option<Vec<ItemResult>>, Error>,
        now: Instant,
    ) {
        let results = match result {
            Ok(Some(r)) => r,
            Ok(None) => {
                // The broker cannot validate: trust the position.
                for item in items {
                    if let Some(part) = live_part(&mut self.parts, item) {
                        if part.phase == Phase::Validate {
                            part.phase = Phase::Fetch;
                        }
                    }
                }
                return;
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "OffsetForLeaderEpoch failed");
                self.retry_items(items, &e, now);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut self.parts, item) else {
                continue;
            };
            if part.phase != Phase::Validate {
                continue;
            }
            if !r.error.is_ok() {
                if let Some(e) = partition_failed(
                    part,
                    r.error,
                    ApiKey::OFFSET_FOR_LEADER_EPOCH,
                    &mut self.cluster_updates,
                    now,
                ) {
                    self.prefetched.push_error(e);
                }
                continue;
            }
            part.recovered(now);
            if r.offset < 0 || r.leader_epoch < 0 {
                // The broker knows nothing of that epoch: like an offset
                // out of range.
                let (topic, partition) = (Arc::clone(&part.topic), part.partition);
                self.reset_offset(
                    &topic,
                    partition,
                    "the fetched epoch is unknown to the leader",
                );
                continue;
            }
            if r.offset >= part.fetch_offset {
                part.phase = Phase::Fetch;
                continue;
            }
            // Truncation: the log diverges from what was fetched at
            // `r.offset`. Buffered data past it is wrong; drop all of it and
            // fetch again from the position, or from the divergence point if
            // the application already saw diverging records.
            let (topic, partition) = (Arc::clone(&part.topic), part.partition);
            let position = part.position.unwrap_or(part.fetch_offset);
            let truncated_below_position = r.offset < position;
            let policy = self.settings.offset_reset;
            tracing::warn!(
                topic = %topic, partition, divergence = r.offset, fetch_offset = part.fetch_offset, position,
                "log truncation detected after a leader change"
            );
            self.restart(&topic, partition);
            let Some(part) = find_part(&mut self.parts, &topic, partition) else {
                continue;
            };
            if truncated_below_position && policy == OffsetReset::Error {
                part.phase = Phase::Halted;
                let e = part_error(
                    part,
                    Error::new(ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE)).with_message(format!(
                        "log truncated at offset {} below the position {position} after a leader change",
                        r.offset
                    )),
                    ApiKey::OFFSET_FOR_LEADER_EPOCH,
                );
                self.prefetched.push_error(e);
                continue;
            }
            let resume = position.min(r.offset);
            part.fetch_offset = resume;
            part.position = Some(resume);
            part.fetch_epoch = r.leader_epoch;
            part.phase = Phase::Fetch;
        }
    }

    /// A whole ListOffsets/OffsetForLeaderEpoch request failed.
    fn retry_items(&mut self, items: &[Item], error: &Error, now: Instant) {
        for item in items {
            let Some(part) = find_part(&mut self.parts, &item.topic, item.partition) else {
                continue;
            };
            part.busy = false;
            part.failed(error);
            if error.kind() == ErrorKind::Connection || error.kind() == ErrorKind::Timeout {
                self.cluster_updates
                    .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                part.lose_leader();
            }
            part.back_off(now);
        }
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

    /// Applies the reset policy to a partition whose position is not valid.
    fn reset_offset(&mut self, topic: &str, partition: i32, why: &str) {
        let policy = self.settings.offset_reset;
        let spec = match policy {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                let Some(part) = find_part(&mut self.parts, topic, partition) else {
                    return;
                };
                part.phase = Phase::Halted;
                let offset = part.fetch_offset;
                let e = part_error(
                    part,
                    Error::kafka(ErrorCode::OFFSET_OUT_OF_RANGE, None)
                        .with_message(format!("fetch offset {offset}: {why}")),
                    ApiKey::FETCH,
                );
                self.prefetched.push_error(e);
                return;
            }
        };
        self.restart(topic, partition);
        let Some(part) = find_part(&mut self.parts, topic, partition) else {
            return;
        };
        tracing::info!(
            topic,
            partition,
            offset = part.fetch_offset,
            ?policy,
            "resetting the offset: {why}"
        );
        part.phase = Phase::Resolve(spec);
        part.position = None;
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

    /// A fetch finished.
    pub(super) fn handle_fetched(
        &mut self,
        sent: SentFetch,
        result: Result<FetchAnswer, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        let SentFetch {
            broker,
            plan,
            reserved,
            covered,
        } = sent;
        self.prefetched.reserved = self.prefetched.reserved.saturating_sub(reserved);
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.fetching = false;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(broker, error = %e, "fetch failed");
                b.session.on_failure();
                b.back_off(now);
                // Leadership may have moved with the broker's troubles.
                self.lose_leaders_on(broker, e);
                return;
            }
        };
        let outcome = b
            .session
            .on_response(&plan, answer.error_code, answer.session_id);
        let top = ErrorCode(answer.error_code);
        if !top.is_ok() {
            tracing::debug!(broker, error = %top, "fetch failed at the top level");
            if top != ErrorCode::FETCH_SESSION_ID_NOT_FOUND
                && top != ErrorCode::INVALID_FETCH_SESSION_EPOCH
            {
                b.back_off(now);
            }
        } else {
            b.retry_at = None;
            b.backoff.reset();
        }
        if outcome == SessionOutcome::Reset {
            return;
        }
        if top.is_ok() {
            // The broker answered for every partition of the fetch, also
            // those it left out for having nothing new: none is stalled.
            for (topic, partition, ctx) in &covered {
                if let Some(part) = find_part(&mut self.parts, topic, *partition) {
                    if part.generation == ctx.generation {
                        part.alive(now);
                    }
                }
            }
        }
        for p in answer.partitions {
            self.apply_partition(broker, p, now);
        }
    }

    /// Applies one partition of a fetch response.
    fn apply_partition(&mut self, broker: i32, p: PartAnswer, now: Instant) {
        let max_buffered = self.settings.max_buffered;
        let max_partition_bytes = self.settings.max_partition_bytes;
        let buffered = self.prefetched.buffered;
        let Some(part) = find_part(&mut self.parts, &p.topic, p.partition) else {
            return;
        };
        let current = part.generation == p.ctx.generation
            && part.phase == Phase::Fetch
            && part.fetch_offset == p.ctx.fetch_offset
            && part.leader.is_some_and(|l| l.id == broker);
        if !current {
            return;
        }
        if p.high_watermark >= 0 {
            part.high_watermark = Some(p.high_watermark);
        }
        if p.last_stable_offset >= 0 {
            part.last_stable_offset = Some(p.last_stable_offset);
        }
        if p.error.is_ok() {
            part.alive(now);
        }
        if p.log_start_offset >= 0 {
            part.log_start_offset = Some(p.log_start_offset);
        }
        if p.error == ErrorCode::OFFSET_OUT_OF_RANGE {
            let (topic, partition) = (Arc::clone(&part.topic), part.partition);
            self.reset_offset(&topic, partition, "out of range");
            return;
        }
        if p.error.is_leader_moved() {
            tracing::debug!(topic = %part.topic, partition = part.partition, error = %p.error, "leader changed");
            part.failed(format_args!("Fetch answered {}", p.error));
            match p.leader_hint {
                Some((id, epoch, endpoint)) if id >= 0 && epoch >= 0 && id != broker => {
                    // KIP-951: move to the named leader without a metadata
                    // round trip.
                    self.cluster_updates.push(ClusterUpdate::LeaderHint {
                        topic: Arc::clone(&part.topic),
                        partition: part.partition,
                        leader: id,
                        epoch,
                        endpoint,
                    });
                    part.set_leader(Leader { id, epoch });
                }
                _ => {
                    self.cluster_updates
                        .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                    part.lose_leader();
                    part.back_off(now);
                }
            }
            return;
        }
        if !p.error.is_ok() {
            if let Some(e) =
                partition_failed(part, p.error, ApiKey::FETCH, &mut self.cluster_updates, now)
            {
                self.prefetched.push_error(e);
            }
            return;
        }
        let chunk = match p.chunk {
            None => return,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                // Corrupt data: tell the application and try again later
                // from the same offset (as the Java consumer does).
                let offset = part.fetch_offset;
                part.back_off(now);
                let e = part_error(
                    part,
                    Error::protocol(format!(
                        "cannot decode the records fetched at offset {offset}"
                    ))
                    .with_source(e),
                    ApiKey::FETCH,
                );
                self.prefetched.push_error(e);
                return;
            }
        };
        if chunk.stuck {
            part.phase = Phase::Halted;
            let offset = part.fetch_offset;
            let e = part_error(
                part,
                Error::new(ErrorKind::Kafka(ErrorCode::MESSAGE_TOO_LARGE)).with_message(format!(
                    "the batch at offset {offset} is larger than the fetch size limit"
                )),
                ApiKey::FETCH,
            );
            self.prefetched.push_error(e);
            return;
        }
        if chunk.next_offset <= part.fetch_offset {
            return;
        }
        if buffered > 0 && buffered.saturating_add(p.wire_bytes) > max_buffered {
            // Over budget (a batch larger than the partition limit came
            // along): leave it for a later fetch from the same offset.
            return;
        }
        part.fetch_offset = chunk.next_offset;
        part.fetch_bytes = sizing::next_fetch_bytes(
            max_partition_bytes,
            chunk.wire_used,
            chunk.mem_bytes,
            chunk.records.len(),
        );
        if let Some(epoch) = chunk.last_epoch {
            part.fetch_epoch = epoch;
        }
        part.recovered(now);
        let ready = ReadyChunk {
            topic: Arc::clone(&part.topic),
            partition: part.partition,
            generation: part.generation,
            records: chunk.records,
            next_offset: chunk.next_offset,
            last_epoch: chunk.last_epoch,
            bytes: chunk.mem_bytes,
        };
        self.prefetched.push_chunk(ready);
    }

    /// Planned work never reported back (its sub-task panicked, a bug):
    /// undo what it had marked busy.
    pub(super) fn handle_lost_job(&mut self, job: Job, now: Instant) {
        match job {
            Job::Connect(broker) => {
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.connecting = false;
                    b.back_off(now);
                }
            }
            Job::Metadata => self.metadata_busy = false,
            Job::Parts(parts) => {
                for (topic, partition) in parts {
                    if let Some(p) = find_part(&mut self.parts, &topic, partition) {
                        p.busy = false;
                        p.back_off(now);
                    }
                }
            }
            Job::Fetch { broker, reserved } => {
                self.prefetched.reserved = self.prefetched.reserved.saturating_sub(reserved);
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.fetching = false;
                    b.session.on_failure();
                    b.back_off(now);
                }
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

fn find_part<'a>(parts: &'a mut Parts, topic: &str, partition: i32) -> Option<&'a mut Part> {
    parts.get_mut(topic)?.get_mut(&partition)
}

fn parts_mut(parts: &mut Parts) -> impl Iterator<Item = &mut Part> {
    parts.values_mut().flat_map(|ps| ps.values_mut())
}

/// The partition, if it is still at the item's generation; clears its busy
/// flag either way.
fn live_part<'a>(parts: &'a mut Parts, item: &Item) -> Option<&'a mut Part> {
    let part = find_part(parts, &item.topic, item.partition)?;
    part.busy = false;
    (part.generation == item.generation).then_some(part)
}

/// Reacts to a partition-level error code; returns an error for the
/// application when the partition stops.
fn partition_failed(
    part: &mut Part,
    code: ErrorCode,
    api: ApiKey,
    updates: &mut Vec<ClusterUpdate>,
    now: Instant,
) -> Option<Error> {
    part.failed(format_args!("{} answered {code}", api.name()));
    if code.is_leader_moved() {
        updates.push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
        part.lose_leader();
        part.back_off(now);
        None
    } else if code.is_retriable() {
        part.back_off(now);
        None
    } else {
        part.phase = Phase::Halted;
        Some(part_error(part, Error::kafka(code, None), api))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        client::{
            consumer::{chunk::Chunk, ConsumerConfig},
            Settings as ClientSettings,
        },
        cluster::{PartitionInfo, TopicInfo},
    };

    const TOPIC_ID: Uuid = Uuid([7; 16]);

    fn settings(reset: OffsetReset) -> Arc<Settings> {
        settings_of(ConsumerConfig::default().offset_reset(reset))
    }

    fn settings_of(config: ConsumerConfig) -> Arc<Settings> {
        Arc::new(Settings::new(
            &config,
            &ClientSettings {
                operation_timeout: Duration::from_secs(30),
                backoff: BackoffConfig::default(),
            },
        ))
    }

    /// Topic "t" with partitions 0 and 1, led by `leader` in `epoch`.
    fn metadata(leader: i32, epoch: i32) -> Metadata {
        let partitions = [0, 1]
            .map(|id| {
                let info = PartitionInfo {
                    id,
                    error: ErrorCode::NONE,
                    leader: Some(leader),
                    leader_epoch: epoch,
                    replicas: vec![leader],
                    isr: vec![leader],
                    offline: Vec::new(),
                };
                (id, info)
            })
            .into();
        let topic = TopicInfo {
            name: "t".to_owned(),
            id: TOPIC_ID,
            error: ErrorCode::NONE,
            is_internal: false,
            partitions,
        };
        Metadata {
            cluster_id: None,
            controller_id: None,
            brokers: BTreeMap::new(),
            topics: [("t".to_owned(), topic)].into(),
        }
    }

    fn connected() -> Connected {
        Connected {
            addr: "broker:9092".to_owned(),
            fetch_version: Some(16),
        }
    }

    fn topics() -> Vec<String> {
        vec!["t".to_owned()]
    }

    /// Partition `partition`'s answer in `call`, with `error` and no data.
    fn answered(call: &FetchCall, partition: i32, error: ErrorCode) -> PartAnswer {
        PartAnswer {
            topic: Arc::from("t"),
            partition,
            ctx: call.keys.ctx[&(Arc::from("t"), partition)],
            error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            leader_hint: None,
            chunk: None,
            wire_bytes: 0,
        }
    }

    /// Partition `partition`'s records in `call` up to `next_offset`,
    /// written in leader epoch `epoch`.
    fn records(call: &FetchCall, partition: i32, next_offset: i64, epoch: i32) -> PartAnswer {
        PartAnswer {
            high_watermark: next_offset,
            chunk: Some(Ok(Chunk {
                records: Vec::new(),
                next_offset,
                last_epoch: Some(epoch),
                stuck: false,
                mem_bytes: 1000,
                wire_used: 1000,
            })),
            wire_bytes: 1000,
            ..answered(call, partition, ErrorCode::NONE)
        }
    }

    fn response(session_id: i32, partitions: Vec<PartAnswer>) -> FetchAnswer {
        FetchAnswer {
            error_code: 0,
            session_id,
            partitions,
        }
    }

    fn ok(offset: i64, leader_epoch: i32) -> ItemResult {
        ItemResult {
            error: ErrorCode::NONE,
            offset,
            leader_epoch,
        }
    }

    /// (partition, fetch offset) of each partition a fetch names.
    fn offsets_of(call: &FetchCall) -> Vec<(i32, i64)> {
        call.request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition, p.fetch_offset))
            .collect()
    }

    fn only_fetch(plan: Plan) -> FetchCall {
        let mut fetch = plan.fetch;
        assert_eq!(fetch.len(), 1, "one fetch planned");
        fetch.remove(0)
    }

    /// Assigns "t" `partitions` at `offset` and takes them to their first
    /// fetch from broker 1 (leader epoch 3): leaders, connection, fetch.
    fn first_fetch(
        planner: &mut FetchPlanner,
        partitions: &[i32],
        offset: i64,
        now: Instant,
    ) -> FetchCall {
        for p in partitions {
            planner.assign("t", *p, StartOffset::At(offset), now);
        }
        let plan = planner.plan(now);
        assert_eq!(plan.metadata, Some(topics()));
        assert!(plan.fetch.is_empty() && plan.connect.is_empty());
        planner.handle_metadata(&topics(), Ok(&metadata(1, 3)), now);
        let plan = planner.plan(now);
        assert_eq!(plan.connect, vec![1]);
        assert!(plan.fetch.is_empty());
        assert!(
            planner.plan(now).connect.is_empty(),
            "one connection attempt at a time"
        );
        planner.handle_connected(1, Ok(connected()), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(call.broker, 1);
        call
    }

    /// Hands every queued chunk to the application.
    fn consume_all(planner: &mut FetchPlanner) {
        while let Some(ready) = planner.pop_ready() {
            let Ready::Chunk(chunk) = ready else {
                panic!("expected only chunks");
            };
            planner.release(chunk.bytes);
            assert!(planner.take_chunk(chunk).is_some());
        }
    }

    /// Partition 0 of "t" was fetched from broker 1 up to 20 in epoch 3,
    /// the application took records up to 10, and the fetch from 20 was
    /// answered: the leader moved to broker 2 in epoch 4. Returns the
    /// validation the planner asks of broker 2.
    fn moved_after_fetching_to_20(planner: &mut FetchPlanner, now: Instant) -> Vec<Item> {
        let call = first_fetch(planner, &[0], 0, now);
        let answer = response(0, vec![records(&call, 0, 10, 3)]);
        planner.handle_fetched(call.sent, Ok(answer), now);
        consume_all(planner);
        let call = only_fetch(planner.plan(now));
        let answer = response(0, vec![records(&call, 0, 20, 3)]);
        planner.handle_fetched(call.sent, Ok(answer), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(offsets_of(&call), vec![(0, 20)]);
        let moved = PartAnswer {
            leader_hint: Some((2, 4, Some(("broker2".to_owned(), 9092)))),
            ..answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER)
        };
        planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
        let part = planner.part("t", 0).unwrap();
        assert_eq!((part.position, part.fetch_offset), (Some(10), 20));
        assert_eq!(planner.buffered(), 1000, "the chunk 10..20 waits");
        let mut plan = planner.plan(now);
        assert!(plan.fetch.is_empty() && plan.metadata.is_none());
        assert_eq!(plan.validate.len(), 1);
        let (broker, items) = plan.validate.remove(0);
        assert_eq!(broker, 2);
        items
    }

    #[test]
    fn a_leader_move_follows_the_hint_validates_and_fetches_from_the_new_leader() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        let call = first_fetch(&mut planner, &[0], 0, now);
        assert_eq!(offsets_of(&call), vec![(0, 0)]);
        assert_eq!(call.request.topics[0].topic_id, TOPIC_ID);
        assert_eq!(call.request.topics[0].partitions[0].current_leader_epoch, 3);
        assert!(
            planner.plan(now).fetch.is_empty(),
            "one fetch in flight per broker"
        );
        let answer = response(0, vec![records(&call, 0, 10, 3)]);
        planner.handle_fetched(call.sent, Ok(answer), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(offsets_of(&call), vec![(0, 10)]);

        // KIP-951: the answer names broker 2 as leader in epoch 4.
        let moved = PartAnswer {
            leader_hint: Some((2, 4, Some(("broker2".to_owned(), 9092)))),
            ..answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER)
        };
        planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
        assert_eq!(
            planner.take_cluster_updates(),
            vec![ClusterUpdate::LeaderHint {
                topic: Arc::from("t"),
                partition: 0,
                leader: 2,
                epoch: 4,
                endpoint: Some(("broker2".to_owned(), 9092)),
            }]
        );
        // A newer epoch: the position is validated with the new leader
        // (KIP-320) for the epoch the fetched data came from, before any
        // fetch and without a metadata round trip.
        let plan = planner.plan(now);
        assert!(plan.fetch.is_empty() && plan.metadata.is_none());
        let (broker, items) = &plan.validate[0];
        assert_eq!(*broker, 2);
        assert_eq!((items[0].query, items[0].current_leader_epoch), (3, 4));
        assert!(
            planner.plan(now).validate.is_empty(),
            "validation in flight"
        );
        // The new leader's log has epoch 3 up to past the fetch offset.
        planner.handle_validated(2, items, Ok(Some(vec![ok(12, 3)])), now);
        assert_eq!(planner.plan(now).connect, vec![2]);
        planner.handle_connected(2, Ok(connected()), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(call.broker, 2);
        assert_eq!(offsets_of(&call), vec![(0, 10)]);
        assert_eq!(call.request.topics[0].partitions[0].current_leader_epoch, 4);

        // Without a hint: the leader is looked up again after a backoff.
        let moved = answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER);
        planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
        assert_eq!(
            planner.take_cluster_updates(),
            vec![ClusterUpdate::Invalidate(Arc::from("t"))]
        );
        let plan = planner.plan(now);
        assert!(plan.metadata.is_none() && plan.fetch.is_empty());
        let retry = planner.poll_timeout().expect("a retry is scheduled");
        assert!(retry > now);
        assert_eq!(planner.plan(retry).metadata, Some(topics()));
        // Same leader epoch as before: nothing to validate.
        planner.handle_metadata(&topics(), Ok(&metadata(2, 4)), retry);
        let call = only_fetch(planner.plan(retry));
        assert_eq!((call.broker, offsets_of(&call)), (2, vec![(0, 10)]));
    }

    #[test]
    fn a_broker_that_cannot_be_reached_loses_its_partitions_leaders() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        let call = first_fetch(&mut planner, &[0, 1], 0, now);
        planner.handle_fetched(call.sent, Err(&"connection reset"), now);
        assert_eq!(planner.take_cluster_updates().len(), 2);
        assert!(planner.part("t", 0).unwrap().leader.is_none());
        assert_eq!(planner.plan(now).metadata, Some(topics()));
        // The broker itself is retried only after a backoff.
        planner.handle_metadata(&topics(), Ok(&metadata(1, 3)), now);
        assert!(planner.plan(now).fetch.is_empty());
        let later = planner.poll_timeout().unwrap();
        assert_eq!(
            offsets_of(&only_fetch(planner.plan(later))),
            vec![(0, 0), (1, 0)]
        );
    }

    #[test]
    fn truncation_above_the_position_refetches_from_the_position() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
        let items = moved_after_fetching_to_20(&mut planner, now);
        // Epoch 3 ends at 15 on the new leader: 15..20 are gone. Nothing
        // the application saw diverged, so no error, whatever the policy.
        planner.handle_validated(2, &items, Ok(Some(vec![ok(15, 3)])), now);
        assert!(
            planner.pop_ready().is_none(),
            "the buffered chunk is dropped"
        );
        assert_eq!(planner.buffered(), 0);
        let part = planner.part("t", 0).unwrap();
        assert_eq!(
            (part.position, part.fetch_offset, part.phase),
            (Some(10), 10, Phase::Fetch)
        );
        assert_eq!(planner.plan(now).connect, vec![2]);
        planner.handle_connected(2, Ok(connected()), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!((call.broker, offsets_of(&call)), (2, vec![(0, 10)]));
    }

    #[test]
    fn truncation_below_the_position_resumes_at_the_divergence_or_halts() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        let items = moved_after_fetching_to_20(&mut planner, now);
        // Epoch 3 ends at 7: records 7..10 the application saw are not in
        // the new leader's log. They are delivered again as it has them.
        planner.handle_validated(2, &items, Ok(Some(vec![ok(7, 3)])), now);
        assert!(planner.pop_ready().is_none());
        let part = planner.part("t", 0).unwrap();
        assert_eq!((part.position, part.fetch_offset), (Some(7), 7));
        assert_eq!(planner.plan(now).connect, vec![2]);
        planner.handle_connected(2, Ok(connected()), now);
        assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 7)]);

        // With OffsetReset::Error the application is told, and the
        // partition waits for a seek.
        let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
        let items = moved_after_fetching_to_20(&mut planner, now);
        planner.handle_validated(2, &items, Ok(Some(vec![ok(7, 3)])), now);
        let Some(Ready::Error(e)) = planner.pop_ready() else {
            panic!("expected an error item");
        };
        assert_eq!(e.kind(), ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE));
        assert_eq!((e.topic(), e.partition()), (Some("t"), Some(0)));
        assert_eq!(planner.part("t", 0).unwrap().phase, Phase::Halted);
        let plan = planner.plan(now);
        assert!(plan.connect.is_empty() && plan.fetch.is_empty() && plan.validate.is_empty());
        planner.assign("t", 0, StartOffset::At(7), now);
        planner.handle_connected(2, Ok(connected()), now);
        assert_eq!(planner.plan(now).connect, vec![2]);
    }

    #[test]
    fn an_epoch_unknown_to_the_new_leader_resets_the_offset() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        let items = moved_after_fetching_to_20(&mut planner, now);
        planner.handle_validated(2, &items, Ok(Some(vec![ok(-1, -1)])), now);
        assert_eq!(planner.buffered(), 0);
        let plan = planner.plan(now);
        assert_eq!(plan.list_offsets.len(), 1);
        assert_eq!(plan.list_offsets[0].1[0].query, OffsetSpec::Latest.wire());
    }

    #[test]
    fn out_of_range_looks_the_offset_up_again_by_policy() {
        for (policy, query) in [(OffsetReset::Latest, -1), (OffsetReset::Earliest, -2)] {
            let now = Instant::now();
            let mut planner = FetchPlanner::new(settings(policy));
            let call = first_fetch(&mut planner, &[0], 100, now);
            let generation = planner.part("t", 0).unwrap().generation;
            let out = answered(&call, 0, ErrorCode::OFFSET_OUT_OF_RANGE);
            planner.handle_fetched(call.sent, Ok(response(0, vec![out])), now);
            assert!(planner.pop_ready().is_none(), "{policy:?}: no error item");
            let part = planner.part("t", 0).unwrap();
            assert_eq!(part.position, None);
            assert!(part.generation > generation, "in-flight results are stale");
            let plan = planner.plan(now);
            assert!(plan.fetch.is_empty());
            let (broker, items) = &plan.list_offsets[0];
            assert_eq!(
                (*broker, items[0].query, items[0].current_leader_epoch),
                (1, query, 3)
            );
            // An answer for the previous generation changes nothing.
            let stale = Item {
                generation,
                ..items[0].clone()
            };
            planner.handle_offsets(1, &[stale], Ok(vec![ok(5, 3)]), now);
            assert_eq!(planner.part("t", 0).unwrap().position, None);
            planner.handle_offsets(1, items, Ok(vec![ok(50, 3)]), now);
            assert_eq!(planner.part("t", 0).unwrap().position, Some(50));
            assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 50)]);
        }

        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
        let call = first_fetch(&mut planner, &[0], 100, now);
        let out = answered(&call, 0, ErrorCode::OFFSET_OUT_OF_RANGE);
        planner.handle_fetched(call.sent, Ok(response(0, vec![out])), now);
        let Some(Ready::Error(e)) = planner.pop_ready() else {
            panic!("expected an error item");
        };
        assert_eq!(e.kind(), ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE));
        assert_eq!(e.partition(), Some(0));
        let plan = planner.plan(now);
        assert!(plan.fetch.is_empty() && plan.list_offsets.is_empty());
        // A seek resumes it.
        planner.assign("t", 0, StartOffset::At(0), now);
        assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 0)]);
    }

    #[test]
    fn fetches_are_incremental_within_a_session_and_full_after_it_is_lost() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        let call = first_fetch(&mut planner, &[0, 1], 0, now);
        assert_eq!(
            (call.request.session_id, call.request.session_epoch),
            (0, 0)
        );
        assert_eq!(offsets_of(&call), vec![(0, 0), (1, 0)]);
        // The broker opens session 9; only partition 0 had records.
        let answer = response(9, vec![records(&call, 0, 10, 3)]);
        planner.handle_fetched(call.sent, Ok(answer), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(
            (call.request.session_id, call.request.session_epoch),
            (9, 1)
        );
        assert_eq!(offsets_of(&call), vec![(0, 10)], "only what changed");
        planner.handle_fetched(call.sent, Ok(response(9, Vec::new())), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(
            (call.request.session_id, call.request.session_epoch),
            (9, 2)
        );
        assert!(offsets_of(&call).is_empty(), "nothing changed");
        // The broker lost the session: start a new one at once, listing
        // every partition.
        let lost = FetchAnswer {
            error_code: ErrorCode::FETCH_SESSION_ID_NOT_FOUND.0,
            ..response(0, Vec::new())
        };
        planner.handle_fetched(call.sent, Ok(lost), now);
        let call = only_fetch(planner.plan(now));
        assert_eq!(call.request.session_epoch, 0);
        assert_eq!(offsets_of(&call), vec![(0, 10), (1, 0)]);
        // Closing names the session with the final epoch.
        planner.handle_fetched(call.sent, Ok(response(11, Vec::new())), now);
        let closing = planner.close_sessions();
        assert_eq!(closing.len(), 1);
        let (broker, version, request) = &closing[0];
        assert_eq!((*broker, *version), (1, 16));
        assert_eq!((request.session_id, request.session_epoch), (11, -1));
    }

    #[test]
    fn the_budget_holds_fetches_until_the_application_consumes() {
        let now = Instant::now();
        let settings = settings_of(
            ConsumerConfig::default()
                .max_buffered_bytes(1 << 20)
                .max_partition_bytes(1 << 20),
        );
        let mut planner = FetchPlanner::new(settings);
        let call = first_fetch(&mut planner, &[0], 0, now);
        assert_eq!(call.request.max_bytes, 1 << 20);
        assert_eq!(planner.prefetched.reserved, 1 << 20);
        let answer = response(0, vec![records(&call, 0, 10, 3)]);
        planner.handle_fetched(call.sent, Ok(answer), now);
        assert_eq!(planner.prefetched.reserved, 0);
        assert!(planner.plan(now).fetch.is_empty(), "1000 bytes wait");
        consume_all(&mut planner);
        assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 10)]);
    }

    #[test]
    fn a_partition_without_progress_is_reported_once() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        planner.assign("t", 0, StartOffset::At(0), now);
        planner.plan(now);
        planner.handle_metadata(&topics(), Err(&"no broker answers"), now);
        planner.plan(now);
        let due = planner.poll_timeout().unwrap();
        let stall = now + Duration::from_millis(30_500);
        assert!(due < stall, "the retry comes first");
        planner.plan(stall);
        let Some(Ready::Error(e)) = planner.pop_ready() else {
            panic!("expected a stall report");
        };
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.to_string().contains("no broker answers"), "{e}");
        planner.plan(stall + Duration::from_secs(60));
        assert!(planner.pop_ready().is_none(), "reported once");
    }

    #[test]
    fn chunks_move_the_position_and_account_bytes() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        planner.assign("t", 0, StartOffset::At(10), now);
        assert_eq!(planner.part("t", 0).unwrap().position, Some(10));
        let c = chunk(&planner, "t", 0, 15, 100);
        planner.prefetched.push_chunk(c);
        let c = chunk(&planner, "t", 0, 20, 50);
        planner.prefetched.push_chunk(c);
        assert_eq!((planner.buffered(), planner.peak()), (150, 150));
        let Some(Ready::Chunk(c)) = planner.pop_ready() else {
            panic!("expected a chunk")
        };
        planner.release(c.bytes);
        assert!(planner.take_chunk(c).is_some());
        assert_eq!(planner.part("t", 0).unwrap().position, Some(15));
        assert_eq!(planner.part("t", 0).unwrap().position_epoch, 4);
        assert_eq!((planner.buffered(), planner.peak()), (50, 150));
    }

    fn chunk(
        planner: &FetchPlanner,
        topic: &str,
        partition: i32,
        next: i64,
        bytes: usize,
    ) -> ReadyChunk {
        let part = planner.part(topic, partition).unwrap();
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
    fn reassigning_drops_buffered_chunks_and_stale_ones_are_refused() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        planner.assign("t", 0, StartOffset::At(0), now);
        planner.assign("t", 1, StartOffset::At(0), now);
        let stale = chunk(&planner, "t", 0, 5, 10);
        let c = chunk(&planner, "t", 0, 5, 10);
        planner.prefetched.push_chunk(c);
        let other = chunk(&planner, "t", 1, 7, 20);
        planner.prefetched.push_chunk(other);
        planner.assign("t", 0, StartOffset::Earliest, now);
        assert_eq!(planner.buffered(), 20, "only partition 1's chunk is left");
        assert_eq!(planner.prefetched.ready.len(), 1);
        assert!(planner.take_chunk(stale).is_none());
        assert_eq!(planner.part("t", 0).unwrap().position, None);
        assert_eq!(
            planner.part("t", 0).unwrap().phase,
            Phase::Resolve(OffsetSpec::Earliest)
        );
        assert!(planner.unassign("t", 1));
        assert!(!planner.unassign("t", 1));
        assert_eq!(planner.buffered(), 0);
        assert_eq!(planner.assignment(), vec![("t".to_owned(), 0)]);
    }

    #[test]
    fn a_newer_leader_epoch_triggers_validation() {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
        planner.assign("t", 0, StartOffset::At(0), now);
        let part = find_part(&mut planner.parts, "t", 0).unwrap();
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
}
