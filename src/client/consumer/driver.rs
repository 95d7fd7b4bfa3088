//! The consumer's background task: looks up leaders and start offsets,
//! fetches from every leader at once, validates positions after leader
//! changes, and queues what it fetched for the application.
//!
//! It is a single task that plans work from the shared state and runs the
//! network requests as sub-tasks (so that responses from several brokers
//! are decoded in parallel on a multi-threaded runtime). Per broker there
//! is at most one fetch in flight, as fetch sessions require; the next one
//! is sent as soon as the previous one is answered and the prefetch budget
//! allows, while the application consumes what was fetched.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    task::{Id, JoinSet},
    time::Instant,
};

use super::{
    chunk::{decode_chunk, Chunk},
    session::{FetchPlan, FetchSession, PartitionParams, SessionOutcome},
    state::{Leader, OffsetSpec, Part, Phase, ReadyChunk, Shared, State},
    ConsumerConfig, IsolationLevel, OffsetReset,
};
use crate::{
    client::Settings as ClientSettings,
    cluster::{Backoff, BackoffConfig, Cluster, ClusterError, Lane, Metadata, Role},
    connection::{BrokerConnection, ConnectionError},
    error::{Error, ErrorKind},
    protocol::{
        messages::{
            fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
            list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
            offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
            FetchRequest, FetchResponse, ListOffsetsRequest, OffsetForLeaderEpochRequest,
        },
        record::DecodeLimits,
        ApiKey, DecodeError, DecodeErrorKind, ErrorCode, Uuid,
    },
};

/// Fetch v4 added the isolation level; Kafka 4 brokers accept nothing older.
const MIN_FETCH_VERSION: i16 = 4;
/// Fetch v7 added sessions.
const FETCH_SESSIONS_FROM: i16 = 7;
/// Fetch v9 added `CurrentLeaderEpoch`.
const FETCH_LEADER_EPOCH_FROM: i16 = 9;
/// Fetch v13 names topics by id.
const FETCH_TOPIC_IDS_FROM: i16 = 13;
/// OffsetForLeaderEpoch v2 added `CurrentLeaderEpoch`; older versions
/// cannot fence, so validation is skipped with them.
const MIN_VALIDATE_VERSION: i16 = 2;
/// ListOffsets v4 added `CurrentLeaderEpoch`.
const LIST_OFFSETS_LEADER_EPOCH_FROM: i16 = 4;
/// The replica id consumers send.
const CONSUMER_REPLICA_ID: i32 = -1;
/// A partition's fetched data is decompressed up to this many bytes per
/// fetch, or its fetch size if larger (less when the buffer has less room):
/// highly compressed data would otherwise inflate one fetch to many times
/// the prefetch budget. Batches beyond it are fetched again later. Also
/// the memory a partition's fetch is sized to decode to (see
/// [`next_fetch_bytes`]).
const DECODE_AHEAD_BYTES: usize = 4 << 20;
/// Floor of a partition's fetch size when its data inflates a lot, so that
/// a fetch still carries a useful amount.
const MIN_FETCH_BYTES: usize = 64 << 10;
/// A partition's fetch size until it is known how much its data inflates
/// when decoded (or its limit, if lower): large enough for plain records,
/// small enough that compressed data fetched before that is known is not
/// mostly dropped at the decompression budget. Later fetches exceed it
/// only if fewer than [`RECORDS_AHEAD`] records would fill them.
const FIRST_FETCH_BYTES: usize = 1 << 20;
/// Records a fetch larger than [`FIRST_FETCH_BYTES`] may carry: handing a
/// chunk out walks every record's struct, and that many stay in cache (2
/// MiB fetches of 100 B records took 9% more CPU than 1 MiB ones).
const RECORDS_AHEAD: usize = 10_000;

/// The consumer settings the background task needs.
pub(super) struct Settings {
    isolation: IsolationLevel,
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
    max_partition_bytes: i32,
    max_buffered: usize,
    offset_reset: OffsetReset,
    limits: DecodeLimits,
    backoff: BackoffConfig,
    /// How long a topic or partition may stay unknown before the
    /// application is told and the partition stops.
    unknown_topic_timeout: Duration,
    /// How long a partition may go without progress (leader unreachable,
    /// metadata failing) before the application gets a retriable error
    /// item about it, so that a dead cluster is not silent.
    stall_after: Duration,
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

/// Identifies a partition in a broker's fetch session: the broker knows
/// partitions by topic id from Fetch v13 on, by name before.
type SessionKey = (Arc<str>, Uuid, i32);

/// Per-broker fetch state.
struct BrokerState {
    conn: Option<BrokerConnection>,
    connecting: bool,
    fetching: bool,
    session: FetchSession<SessionKey>,
    /// The Fetch version the session was built with.
    session_version: Option<i16>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl BrokerState {
    fn new(backoff: &BackoffConfig) -> Self {
        Self {
            conn: None,
            connecting: false,
            fetching: false,
            session: FetchSession::new(),
            session_version: None,
            retry_at: None,
            backoff: Backoff::new(backoff, None),
        }
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }
}

/// The partition state a request was built from; results only apply while
/// the partition is still there.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    generation: u64,
    fetch_offset: i64,
}

/// A partition named in a ListOffsets or OffsetForLeaderEpoch request.
#[derive(Debug, Clone)]
struct Item {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    current_leader_epoch: i32,
    /// ListOffsets: the timestamp query; OffsetForLeaderEpoch: the epoch
    /// whose end offset is asked for.
    query: i64,
}

/// A per-partition answer of ListOffsets or OffsetForLeaderEpoch.
#[derive(Debug, Clone, Copy)]
struct ItemResult {
    error: ErrorCode,
    offset: i64,
    leader_epoch: i32,
}

impl ItemResult {
    /// For a partition the broker left out of its answer: try again.
    const MISSING: ItemResult = ItemResult {
        error: ErrorCode::UNKNOWN_SERVER_ERROR,
        offset: -1,
        leader_epoch: -1,
    };
}

/// What a sub-task reports back.
enum Event {
    Connected {
        broker: i32,
        result: Result<BrokerConnection, ClusterError>,
    },
    Metadata {
        topics: Vec<String>,
        result: Result<Arc<Metadata>, ClusterError>,
    },
    Offsets {
        broker: i32,
        items: Vec<Item>,
        result: Result<Vec<ItemResult>, Error>,
    },
    Validated {
        broker: i32,
        items: Vec<Item>,
        /// `None`: the broker cannot validate; skip it.
        result: Result<Option<Vec<ItemResult>>, Error>,
    },
    Fetched(Box<FetchDone>),
}

/// What a sub-task was about, to clean up if it panicked.
enum JobKind {
    Connect(i32),
    Metadata,
    Parts(PartList),
    Fetch { broker: i32, reserved: usize },
}

/// A completed fetch.
struct FetchDone {
    broker: i32,
    plan: FetchPlan<SessionKey>,
    reserved: usize,
    /// Every partition the fetch covered (an incremental answer omits those
    /// without news).
    covered: Vec<(Arc<str>, i32, Ctx)>,
    result: Result<FetchAnswer, ConnectionError>,
}

/// The useful part of a fetch response, decoded off the driver.
struct FetchAnswer {
    error_code: i16,
    session_id: i32,
    partitions: Vec<PartAnswer>,
}

/// A KIP-951 hint: leader id, leader epoch, and the leader's endpoint.
type LeaderHint = (i32, i32, Option<(String, i32)>);

/// Partitions by topic and index.
type PartList = Vec<(Arc<str>, i32)>;

/// Values grouped by (topic, topic id), in request order.
type Grouped<T> = Vec<((Arc<str>, Uuid), Vec<(i32, T)>)>;

/// One partition of a fetch response.
struct PartAnswer {
    topic: Arc<str>,
    partition: i32,
    ctx: Ctx,
    error: ErrorCode,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// KIP-951: the new leader and its epoch, with its endpoint if given.
    leader_hint: Option<LeaderHint>,
    chunk: Option<Result<Chunk, DecodeError>>,
    /// Size of the `records` field.
    wire_bytes: usize,
}

/// Runs until the consumer drops (which aborts it).
pub(super) async fn run(shared: Arc<Shared>, cluster: Cluster, settings: Arc<Settings>) {
    let _gone = GoneGuard(Arc::clone(&shared));
    let mut driver = Driver {
        shared,
        // Fetches are long-polled: a lane of this consumer's own keeps them
        // from delaying anyone else's requests, and theirs from delaying
        // these.
        fetch_lane: cluster.private_lane(Role::Fetch),
        cluster,
        settings,
        brokers: HashMap::new(),
        jobs: JoinSet::new(),
        job_kinds: HashMap::new(),
        metadata_busy: false,
    };
    loop {
        if driver.shared.lock().closing {
            driver.close_sessions().await;
            return;
        }
        let wake_at = driver.plan();
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = driver.jobs.join_next_with_id(), if !driver.jobs.is_empty() => {
                match joined {
                    Ok((id, event)) => {
                        driver.job_kinds.remove(&id);
                        driver.handle(event);
                    }
                    Err(e) => driver.job_failed(e.id()),
                }
            }
            _ = driver.shared.wake_driver.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Tells the application if the task ends (it only does on a bug or when
/// the consumer is dropped).
struct GoneGuard(Arc<Shared>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.driver_gone = true;
        st.wake_app();
    }
}

struct Driver {
    shared: Arc<Shared>,
    /// This consumer's own fetch connections.
    fetch_lane: Lane,
    cluster: Cluster,
    settings: Arc<Settings>,
    brokers: HashMap<i32, BrokerState>,
    jobs: JoinSet<Event>,
    job_kinds: HashMap<Id, JobKind>,
    metadata_busy: bool,
}

/// The fetchable partitions of one broker, with their request values.
type Fetchable = Vec<(SessionKey, PartitionParams, Ctx)>;

impl Driver {
    fn spawn(
        &mut self,
        kind: JobKind,
        job: impl std::future::Future<Output = Event> + Send + 'static,
    ) {
        let id = self.jobs.spawn(job).id();
        self.job_kinds.insert(id, kind);
    }

    /// Closes every broker's fetch session (epoch -1), so brokers free them
    /// now rather than when they expire. Best effort: failures are ignored.
    async fn close_sessions(&mut self) {
        let settings = Arc::clone(&self.settings);
        let closing: Vec<_> = self
            .brokers
            .values_mut()
            .filter_map(|b| {
                let conn = b.conn.clone().filter(|c| !c.is_closed())?;
                let version = b.session_version.filter(|v| *v >= FETCH_SESSIONS_FROM)?;
                let plan = b.session.close()?;
                let request = fetch_request(&plan, version, &settings, 0);
                Some(async move {
                    if let Err(e) = conn.request_version(&request, version).await {
                        tracing::debug!(broker = conn.addr(), error = %e, "closing the fetch session failed");
                    }
                })
            })
            .collect();
        futures::future::join_all(closing).await;
    }

    /// Starts whatever work the state allows; returns when to look again
    /// if nothing else happens (a backoff expiring).
    fn plan(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut later = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));

        let mut need_metadata: BTreeSet<String> = BTreeSet::new();
        let mut offsets: BTreeMap<i32, Vec<Item>> = BTreeMap::new();
        let mut validate: BTreeMap<i32, Vec<Item>> = BTreeMap::new();
        let mut fetch: BTreeMap<i32, Fetchable> = BTreeMap::new();
        let max_part = usize::try_from(self.settings.max_partition_bytes).unwrap_or(0);
        let stall_after = self.settings.stall_after;
        let available = {
            let mut st = self.shared.lock();
            let used = st.buffered.saturating_add(st.reserved);
            let available = self.settings.max_buffered.saturating_sub(used);
            // Everything waits for the application to consume: not a stall.
            let budget_blocked = available < max_part.max(1);
            let mut stalls = Vec::new();
            for part in st.parts_mut() {
                if part.phase == Phase::Halted {
                    continue;
                }
                if budget_blocked && part.phase == Phase::Fetch {
                    part.alive();
                }
                if !part.stall_reported {
                    let due = part.last_ok + stall_after;
                    if due <= now {
                        part.stall_reported = true;
                        if part.unknown_since.is_some() {
                            // Stalled because metadata does not know the
                            // topic or partition: that is the error.
                            part.phase = Phase::Halted;
                            stalls.push(part_error(
                                part,
                                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                                ApiKey::METADATA,
                            ));
                            continue;
                        }
                        stalls.push(stall_error(part, stall_after));
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
                                // Capped per request below.
                                max_bytes: planned_fetch_bytes(part.fetch_bytes, max_part),
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
            if !stalls.is_empty() {
                for e in stalls {
                    st.push_error(e);
                }
                st.wake_app();
            }
            available
        };

        if !need_metadata.is_empty() && !self.metadata_busy {
            self.metadata_busy = true;
            let topics: Vec<String> = need_metadata.into_iter().collect();
            let cluster = self.cluster.clone();
            self.spawn(JobKind::Metadata, async move {
                let result = cluster.metadata(Some(&topics)).await;
                Event::Metadata { topics, result }
            });
        }
        for (broker, items) in offsets {
            self.spawn_list_offsets(broker, items);
        }
        for (broker, items) in validate {
            self.spawn_validate(broker, items);
        }

        let mut available = available;
        for (broker, parts) in fetch {
            let backoff = &self.settings.backoff;
            let b = self
                .brokers
                .entry(broker)
                .or_insert_with(|| BrokerState::new(backoff));
            if b.fetching {
                continue;
            }
            if let Some(t) = b.retry_at {
                if t > now {
                    later(t);
                    continue;
                }
            }
            let conn = match &b.conn {
                Some(c) if !c.is_closed() => c.clone(),
                _ => {
                    b.conn = None;
                    if !b.connecting {
                        b.connecting = true;
                        let lane = self.fetch_lane.clone();
                        self.spawn(JobKind::Connect(broker), async move {
                            let result = lane.broker(broker).await;
                            Event::Connected { broker, result }
                        });
                    }
                    continue;
                }
            };
            let asks = parts
                .iter()
                .map(|(_, params, _)| usize::try_from(params.max_bytes).unwrap_or(0));
            let (planned, largest) = asks.fold((0usize, 1usize), |(sum, largest), ask| {
                (sum.saturating_add(ask), largest.max(ask))
            });
            // Wait for the application to make room: at least the largest
            // partition's fetch, so that answers fit what was reserved.
            if available < largest {
                continue;
            }
            let reserved = available
                .min(usize::try_from(self.settings.max_bytes).unwrap_or(0))
                .min(planned);
            // Half the room, as decoded records take about as much memory
            // again as their bytes; never below the largest fetch.
            let decode_budget = (available / 2 / parts.len().max(1))
                .min(DECODE_AHEAD_BYTES)
                .max(largest);
            match self.spawn_fetch(broker, conn, parts, reserved, decode_budget) {
                Ok(()) => available -= reserved,
                Err((parts, error)) => self.fail_parts(&parts, error),
            }
        }
        wake
    }

    /// Builds and sends one broker's fetch. On an error that no retry can
    /// fix (no usable Fetch version), returns the partitions to fail.
    fn spawn_fetch(
        &mut self,
        broker: i32,
        conn: BrokerConnection,
        parts: Fetchable,
        reserved: usize,
        decode_budget: usize,
    ) -> Result<(), (PartList, Error)> {
        let settings = Arc::clone(&self.settings);
        let Some(b) = self.brokers.get_mut(&broker) else {
            return Ok(());
        };
        let mut version = match conn.version_for(ApiKey::FETCH) {
            Some(v) if v >= MIN_FETCH_VERSION => v,
            other => {
                let error = Error::new(ErrorKind::Unsupported)
                    .with_message(format!(
                        "broker {} supports no Fetch version >= {MIN_FETCH_VERSION} (best: {other:?})",
                        conn.addr()
                    ))
                    .with_api(ApiKey::FETCH);
                let parts = parts.into_iter().map(|((t, _, p), _, _)| (t, p)).collect();
                return Err((parts, error));
            }
        };
        if version >= FETCH_TOPIC_IDS_FROM
            && parts.iter().any(|((_, id, _), _, _)| *id == Uuid::ZERO)
        {
            // A topic without a known id can only be named: stay on v12.
            version = FETCH_TOPIC_IDS_FROM - 1;
        }
        if b.session_version != Some(version) {
            b.session.on_failure();
            b.session_version = Some(version);
        }
        let part_max = i32::try_from(reserved)
            .unwrap_or(i32::MAX)
            .min(settings.max_partition_bytes);
        let mut ctx: HashMap<(Arc<str>, i32), Ctx> = HashMap::with_capacity(parts.len());
        let mut ids: HashMap<Uuid, Arc<str>> = HashMap::new();
        let wanted: Vec<(SessionKey, PartitionParams)> = parts
            .into_iter()
            .map(|(key, mut params, c)| {
                ctx.insert((Arc::clone(&key.0), key.2), c);
                if version >= FETCH_TOPIC_IDS_FROM {
                    ids.insert(key.1, Arc::clone(&key.0));
                }
                params.max_bytes = match params.max_bytes {
                    n if n > 0 => n.min(part_max),
                    _ => part_max,
                };
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
        let request = fetch_request(&plan, version, &settings, reserved);
        b.fetching = true;
        self.shared.lock().reserved += reserved;
        self.spawn(JobKind::Fetch { broker, reserved }, async move {
            let result = conn
                .request_version(&request, version)
                .await
                .map(|resp| answer(resp, version, &ctx, &ids, &settings, decode_budget));
            Event::Fetched(Box::new(FetchDone {
                broker,
                plan,
                reserved,
                covered,
                result,
            }))
        });
        Ok(())
    }

    fn spawn_list_offsets(&mut self, broker: i32, items: Vec<Item>) {
        let kind = JobKind::Parts(
            items
                .iter()
                .map(|i| (Arc::clone(&i.topic), i.partition))
                .collect(),
        );
        let cluster = self.cluster.clone();
        let isolation = self.settings.isolation.wire();
        self.spawn(kind, async move {
            let result = list_offsets(&cluster, broker, &items, isolation).await;
            Event::Offsets {
                broker,
                items,
                result,
            }
        });
    }

    fn spawn_validate(&mut self, broker: i32, items: Vec<Item>) {
        let kind = JobKind::Parts(
            items
                .iter()
                .map(|i| (Arc::clone(&i.topic), i.partition))
                .collect(),
        );
        let cluster = self.cluster.clone();
        self.spawn(kind, async move {
            let result = offsets_for_leader_epoch(&cluster, broker, &items).await;
            Event::Validated {
                broker,
                items,
                result,
            }
        });
    }

    /// A sub-task panicked (a bug): undo what it had marked busy.
    fn job_failed(&mut self, id: Id) {
        tracing::error!("a consumer sub-task failed unexpectedly");
        match self.job_kinds.remove(&id) {
            Some(JobKind::Connect(broker)) => {
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.connecting = false;
                    b.back_off();
                }
            }
            Some(JobKind::Metadata) => self.metadata_busy = false,
            Some(JobKind::Parts(parts)) => {
                let mut st = self.shared.lock();
                for (topic, partition) in parts {
                    if let Some(p) = st.part_mut(&topic, partition) {
                        p.busy = false;
                        p.back_off();
                    }
                }
            }
            Some(JobKind::Fetch { broker, reserved }) => {
                let mut st = self.shared.lock();
                st.reserved = st.reserved.saturating_sub(reserved);
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.fetching = false;
                    b.session.on_failure();
                    b.back_off();
                }
            }
            None => {}
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connected { broker, result } => self.on_connected(broker, result),
            Event::Metadata { topics, result } => self.on_metadata(&topics, result),
            Event::Offsets {
                broker,
                items,
                result,
            } => self.on_offsets(broker, items, result),
            Event::Validated {
                broker,
                items,
                result,
            } => self.on_validated(broker, items, result),
            Event::Fetched(done) => self.on_fetched(*done),
        }
    }

    fn on_connected(&mut self, broker: i32, result: Result<BrokerConnection, ClusterError>) {
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.connecting = false;
        match result {
            Ok(conn) => {
                b.conn = Some(conn);
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "consumer cannot reach broker");
                b.back_off();
                // The broker may be gone for good: look the leaders up again.
                self.lose_leaders_on(broker, &e);
            }
        }
    }

    /// Forgets the leader of every partition led by `broker`, which
    /// failed with `why`.
    fn lose_leaders_on(&self, broker: i32, why: &dyn std::fmt::Display) {
        let mut st = self.shared.lock();
        for part in st.parts_mut() {
            if part.leader.is_some_and(|l| l.id == broker) {
                self.cluster.invalidate_topic(&part.topic);
                part.lose_leader();
                part.failed(format_args!("broker {broker}: {why}"));
            }
        }
    }

    fn on_metadata(&mut self, topics: &[String], result: Result<Arc<Metadata>, ClusterError>) {
        self.metadata_busy = false;
        let mut st = self.shared.lock();
        let mut errors = Vec::new();
        let timeout = self.settings.unknown_topic_timeout;
        for part in st.parts_mut() {
            if part.leader.is_some() || !topics.iter().any(|t| **t == *part.topic) {
                continue;
            }
            let md = match &result {
                Ok(md) => md,
                Err(e) => {
                    tracing::debug!(topic = %part.topic, error = %e, "consumer metadata lookup failed");
                    part.failed(e);
                    part.back_off();
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
                        errors.push(part_error(part, Error::kafka(code, None), ApiKey::METADATA));
                        part.phase = Phase::Halted;
                    }
                    _ => {
                        // Unknown topic or partition: it may be being created.
                        let since = *part.unknown_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= timeout {
                            errors.push(part_error(
                                part,
                                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                                ApiKey::METADATA,
                            ));
                            part.phase = Phase::Halted;
                        } else {
                            self.cluster.invalidate_topic(&part.topic);
                            part.failed("the topic or partition is unknown");
                            part.back_off();
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
                    self.cluster.invalidate_topic(&part.topic);
                    part.failed(format_args!("no leader ({})", info.error));
                    part.back_off();
                }
            }
        }
        for e in errors {
            st.push_error(e);
        }
        st.wake_app();
    }

    fn on_offsets(
        &mut self,
        broker: i32,
        items: Vec<Item>,
        result: Result<Vec<ItemResult>, Error>,
    ) {
        let mut st = self.shared.lock();
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker, error = %e, "ListOffsets failed");
                self.retry_items(&mut st, &items, &e);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut st, item) else {
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
                part.recovered();
            } else {
                let e = self.partition_failed(part, r.error, ApiKey::LIST_OFFSETS);
                if let Some(e) = e {
                    st.push_error(e);
                }
            }
        }
        st.wake_app();
    }

    fn on_validated(
        &mut self,
        broker: i32,
        items: Vec<Item>,
        result: Result<Option<Vec<ItemResult>>, Error>,
    ) {
        let mut st = self.shared.lock();
        let results = match result {
            Ok(Some(r)) => r,
            Ok(None) => {
                // The broker cannot validate: trust the position.
                for item in &items {
                    if let Some(part) = live_part(&mut st, item) {
                        if part.phase == Phase::Validate {
                            part.phase = Phase::Fetch;
                        }
                    }
                }
                return;
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "OffsetForLeaderEpoch failed");
                self.retry_items(&mut st, &items, &e);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut st, item) else {
                continue;
            };
            if part.phase != Phase::Validate {
                continue;
            }
            if !r.error.is_ok() {
                if let Some(e) =
                    self.partition_failed(part, r.error, ApiKey::OFFSET_FOR_LEADER_EPOCH)
                {
                    st.push_error(e);
                }
                continue;
            }
            part.recovered();
            if r.offset < 0 || r.leader_epoch < 0 {
                // The broker knows nothing of that epoch: like an offset
                // out of range.
                let (topic, partition) = (Arc::clone(&part.topic), part.partition);
                if let Some(e) = self.reset_offset(
                    &mut st,
                    &topic,
                    partition,
                    "the fetched epoch is unknown to the leader",
                ) {
                    st.push_error(e);
                }
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
            st.restart(&topic, partition);
            let Some(part) = st.part_mut(&topic, partition) else {
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
                st.push_error(e);
                continue;
            }
            let resume = position.min(r.offset);
            part.fetch_offset = resume;
            part.position = Some(resume);
            part.fetch_epoch = r.leader_epoch;
            part.phase = Phase::Fetch;
        }
        st.wake_app();
    }

    /// A whole ListOffsets/OffsetForLeaderEpoch request failed.
    fn retry_items(&self, st: &mut State, items: &[Item], error: &Error) {
        for item in items {
            let Some(part) = st.part_mut(&item.topic, item.partition) else {
                continue;
            };
            part.busy = false;
            part.failed(error);
            if error.kind() == ErrorKind::Connection || error.kind() == ErrorKind::Timeout {
                self.cluster.invalidate_topic(&part.topic);
                part.lose_leader();
            }
            part.back_off();
        }
    }

    /// Reacts to a partition-level error code; returns an error for the
    /// application when the partition stops.
    fn partition_failed(&self, part: &mut Part, code: ErrorCode, api: ApiKey) -> Option<Error> {
        part.failed(format_args!("{} answered {code}", api.name()));
        if code.is_leader_moved() {
            self.cluster.invalidate_topic(&part.topic);
            part.lose_leader();
            part.back_off();
            None
        } else if code.is_retriable() {
            part.back_off();
            None
        } else {
            part.phase = Phase::Halted;
            Some(part_error(part, Error::kafka(code, None), api))
        }
    }

    /// Applies the reset policy to a partition whose position is not valid.
    fn reset_offset(
        &self,
        st: &mut State,
        topic: &str,
        partition: i32,
        why: &str,
    ) -> Option<Error> {
        let policy = self.settings.offset_reset;
        let spec = match policy {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                let part = st.part_mut(topic, partition)?;
                part.phase = Phase::Halted;
                let offset = part.fetch_offset;
                return Some(part_error(
                    part,
                    Error::kafka(ErrorCode::OFFSET_OUT_OF_RANGE, None)
                        .with_message(format!("fetch offset {offset}: {why}")),
                    ApiKey::FETCH,
                ));
            }
        };
        st.restart(topic, partition);
        let part = st.part_mut(topic, partition)?;
        tracing::info!(
            topic,
            partition,
            offset = part.fetch_offset,
            ?policy,
            "resetting the offset: {why}"
        );
        part.phase = Phase::Resolve(spec);
        part.position = None;
        None
    }

    /// Stops partitions for good with `error`.
    fn fail_parts(&self, parts: &[(Arc<str>, i32)], error: Error) {
        let mut st = self.shared.lock();
        for (topic, partition) in parts {
            if let Some(part) = st.part_mut(topic, *partition) {
                part.phase = Phase::Halted;
                let e = part_error(part, clone_error(&error), ApiKey::FETCH);
                st.push_error(e);
            }
        }
        st.wake_app();
    }

    fn on_fetched(&mut self, done: FetchDone) {
        let FetchDone {
            broker,
            plan,
            reserved,
            covered,
            result,
        } = done;
        {
            let mut st = self.shared.lock();
            st.reserved = st.reserved.saturating_sub(reserved);
        }
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.fetching = false;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(broker, error = %e, "fetch failed");
                b.session.on_failure();
                b.back_off();
                if b.conn.as_ref().is_some_and(BrokerConnection::is_closed) {
                    b.conn = None;
                }
                // Leadership may have moved with the broker's troubles.
                self.lose_leaders_on(broker, &e);
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
                b.back_off();
            }
        } else {
            b.retry_at = None;
            b.backoff.reset();
        }
        if outcome == SessionOutcome::Reset {
            return;
        }
        let mut st = self.shared.lock();
        if top.is_ok() {
            // The broker answered for every partition of the fetch, also
            // those it left out for having nothing new: none is stalled.
            for (topic, partition, ctx) in &covered {
                if let Some(part) = st.part_mut(topic, *partition) {
                    if part.generation == ctx.generation {
                        part.alive();
                    }
                }
            }
        }
        for p in answer.partitions {
            self.apply_partition(&mut st, broker, p);
        }
        st.wake_app();
    }

    /// Applies one partition of a fetch response.
    fn apply_partition(&self, st: &mut State, broker: i32, p: PartAnswer) {
        let max_buffered = self.settings.max_buffered;
        let buffered = st.buffered;
        let Some(part) = st.part_mut(&p.topic, p.partition) else {
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
            part.alive();
        }
        if p.log_start_offset >= 0 {
            part.log_start_offset = Some(p.log_start_offset);
        }
        if p.error == ErrorCode::OFFSET_OUT_OF_RANGE {
            let (topic, partition) = (Arc::clone(&part.topic), part.partition);
            if let Some(e) = self.reset_offset(st, &topic, partition, "out of range") {
                st.push_error(e);
            }
            return;
        }
        if p.error.is_leader_moved() {
            tracing::debug!(topic = %part.topic, partition = part.partition, error = %p.error, "leader changed");
            part.failed(format_args!("Fetch answered {}", p.error));
            match p.leader_hint {
                Some((id, epoch, endpoint)) if id >= 0 && epoch >= 0 && id != broker => {
                    // KIP-951: move to the named leader without a metadata
                    // round trip.
                    self.cluster.apply_leader_hint(
                        &part.topic,
                        part.partition,
                        id,
                        epoch,
                        endpoint,
                    );
                    part.set_leader(Leader { id, epoch });
                }
                _ => {
                    self.cluster.invalidate_topic(&part.topic);
                    part.lose_leader();
                    part.back_off();
                }
            }
            return;
        }
        if !p.error.is_ok() {
            if let Some(e) = self.partition_failed(part, p.error, ApiKey::FETCH) {
                st.push_error(e);
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
                part.back_off();
                let e = part_error(
                    part,
                    Error::protocol(format!(
                        "cannot decode the records fetched at offset {offset}"
                    ))
                    .with_source(e),
                    ApiKey::FETCH,
                );
                st.push_error(e);
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
            st.push_error(e);
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
        part.fetch_bytes = next_fetch_bytes(
            &self.settings,
            chunk.wire_used,
            chunk.mem_bytes,
            chunk.records.len(),
        );
        if let Some(epoch) = chunk.last_epoch {
            part.fetch_epoch = epoch;
        }
        part.recovered();
        let ready = ReadyChunk {
            topic: Arc::clone(&part.topic),
            partition: part.partition,
            generation: part.generation,
            records: chunk.records,
            next_offset: chunk.next_offset,
            last_epoch: chunk.last_epoch,
            bytes: chunk.mem_bytes,
        };
        st.push_chunk(ready);
    }
}

/// What a partition's next fetch asks for: `fetch_bytes` (from
/// [`next_fetch_bytes`]; 0 before anything was learnt, then the first
/// fetch's size) within the limit `max_part`.
fn planned_fetch_bytes(fetch_bytes: i32, max_part: usize) -> i32 {
    let max_part = i32::try_from(max_part).unwrap_or(i32::MAX);
    match fetch_bytes {
        n if n > 0 => n.min(max_part),
        _ => max_part.min(FIRST_FETCH_BYTES as i32),
    }
}

/// The fetch size for a partition whose last data took `wire_used` bytes,
/// decoded to `mem_bytes` of memory and held `records` records: what
/// decodes to about [`DECODE_AHEAD_BYTES`] at the ratio just seen, past
/// [`FIRST_FETCH_BYTES`] only for large records (see [`RECORDS_AHEAD`]),
/// within the configured limit; 0 (the first fetch's size) if nothing was
/// learnt. Large plain records are fetched in large pieces (fewer round
/// trips and wakeups per record: 4 MiB instead of 1 MiB took 13% less CPU
/// consuming 10 KiB records); small or compressed ones in smaller pieces,
/// so a chunk's records stay few enough to be handed out while still in
/// cache and compressed data is not fetched only to be dropped at the
/// decompression budget.
fn next_fetch_bytes(
    settings: &Settings,
    wire_used: usize,
    mem_bytes: usize,
    records: usize,
) -> i32 {
    if wire_used == 0 || mem_bytes == 0 {
        return 0;
    }
    // In u128: the products cannot overflow.
    let wire = wire_used as u128;
    let by_memory = DECODE_AHEAD_BYTES as u128 * wire / mem_bytes as u128;
    let by_records =
        (RECORDS_AHEAD as u128 * wire / records.max(1) as u128).max(FIRST_FETCH_BYTES as u128);
    let bytes = by_memory.min(by_records).max(MIN_FETCH_BYTES as u128);
    i32::try_from(bytes)
        .unwrap_or(i32::MAX)
        .min(settings.max_partition_bytes)
}

/// The partition, if it is still at the item's generation; clears its busy
/// flag either way.
fn live_part<'a>(st: &'a mut State, item: &Item) -> Option<&'a mut Part> {
    let part = st.part_mut(&item.topic, item.partition)?;
    part.busy = false;
    (part.generation == item.generation).then_some(part)
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

/// Groups `(topic, id, partition)` keys by topic, preserving order.
fn group<T>(keys: impl IntoIterator<Item = (SessionKey, T)>) -> Grouped<T> {
    let mut out: Grouped<T> = Vec::new();
    for ((topic, id, partition), value) in keys {
        match out.last_mut() {
            Some(((t, i), ps)) if *t == topic && *i == id => ps.push((partition, value)),
            _ => out.push(((topic, id), vec![(partition, value)])),
        }
    }
    out
}

fn fetch_request(
    plan: &FetchPlan<SessionKey>,
    version: i16,
    settings: &Settings,
    max_bytes: usize,
) -> FetchRequest {
    let by_id = version >= FETCH_TOPIC_IDS_FROM;
    let topics = group(plan.send.iter().map(|(k, p)| (k.clone(), *p)))
        .into_iter()
        .map(|((topic, id), parts)| FetchTopic {
            topic: if by_id {
                String::new()
            } else {
                topic.to_string()
            },
            topic_id: if by_id { id } else { Uuid::ZERO },
            partitions: parts
                .into_iter()
                .map(|(partition, p)| FetchPartition {
                    partition,
                    current_leader_epoch: p.current_leader_epoch,
                    fetch_offset: p.fetch_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                    log_start_offset: -1,
                    partition_max_bytes: p.max_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let forgotten_topics_data = group(plan.forget.iter().map(|k| (k.clone(), ())))
        .into_iter()
        .map(|((topic, id), parts)| ForgottenTopic {
            topic: if by_id {
                String::new()
            } else {
                topic.to_string()
            },
            topic_id: if by_id { id } else { Uuid::ZERO },
            partitions: parts.into_iter().map(|(p, ())| p).collect(),
            ..Default::default()
        })
        .collect();
    FetchRequest {
        replica_id: CONSUMER_REPLICA_ID,
        max_wait_ms: settings.max_wait_ms,
        min_bytes: settings.min_bytes,
        max_bytes: i32::try_from(max_bytes).unwrap_or(i32::MAX),
        isolation_level: settings.isolation.wire(),
        session_id: plan.session_id,
        session_epoch: plan.session_epoch,
        topics,
        forgotten_topics_data,
        ..Default::default()
    }
}

/// Extracts and decodes a fetch response (runs in the fetch sub-task).
fn answer(
    resp: FetchResponse,
    version: i16,
    ctx: &HashMap<(Arc<str>, i32), Ctx>,
    ids: &HashMap<Uuid, Arc<str>>,
    settings: &Settings,
    decode_budget: usize,
) -> FetchAnswer {
    let FetchResponse {
        error_code,
        session_id,
        responses,
        node_endpoints,
        ..
    } = resp;
    let mut partitions = Vec::new();
    for t in responses {
        let topic = if version >= FETCH_TOPIC_IDS_FROM {
            ids.get(&t.topic_id).cloned()
        } else {
            ctx.keys()
                .find(|(name, _)| **name == *t.topic)
                .map(|(name, _)| Arc::clone(name))
        };
        let Some(topic) = topic else {
            continue;
        };
        for p in t.partitions {
            let Some(c) = ctx.get(&(Arc::clone(&topic), p.partition_index)).copied() else {
                continue;
            };
            let error = ErrorCode(p.error_code);
            let leader_hint = (p.current_leader.leader_id >= 0).then(|| {
                let endpoint = node_endpoints
                    .iter()
                    .find(|n| n.node_id == p.current_leader.leader_id)
                    .map(|n| (n.host.clone(), n.port));
                (
                    p.current_leader.leader_id,
                    p.current_leader.leader_epoch,
                    endpoint,
                )
            });
            let records = p.records.unwrap_or_default();
            let wire_bytes = records.len();
            let chunk = (error.is_ok() && !records.is_empty()).then(|| {
                let aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .unwrap_or_default()
                    .iter()
                    .map(|a| (a.producer_id, a.first_offset))
                    .collect();
                decode(
                    &topic,
                    p.partition_index,
                    c.fetch_offset,
                    records,
                    &aborted,
                    settings,
                    decode_budget,
                )
            });
            partitions.push(PartAnswer {
                topic: Arc::clone(&topic),
                partition: p.partition_index,
                ctx: c,
                error,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                log_start_offset: p.log_start_offset,
                leader_hint,
                chunk,
                wire_bytes,
            });
        }
    }
    FetchAnswer {
        error_code,
        session_id,
        partitions,
    }
}

/// Decodes one partition's records, decompressing at most about
/// `decode_budget` bytes (see [`DECODE_AHEAD_BYTES`]).
fn decode(
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    records: Bytes,
    aborted: &[(i64, i64)],
    settings: &Settings,
    decode_budget: usize,
) -> Result<Chunk, DecodeError> {
    let limits = &settings.limits;
    let soft = DecodeLimits {
        max_total_decompressed_bytes: limits.max_total_decompressed_bytes.min(decode_budget),
        ..*limits
    };
    let run = |limits: &DecodeLimits| {
        decode_chunk(
            topic,
            partition,
            fetch_offset,
            records.clone(),
            aborted,
            settings.isolation,
            limits,
        )
    };
    match run(&soft) {
        // The first batch alone inflates past the budget: decode it within
        // the configured limits, or the partition could never move on.
        Err(e)
            if soft != *limits
                && matches!(e.kind(), DecodeErrorKind::DecompressedTooLarge { .. }) =>
        {
            run(&DecodeLimits {
                max_total_decompressed_bytes: limits
                    .max_total_decompressed_bytes
                    .min(limits.max_decompressed_bytes),
                ..*limits
            })
        }
        other => other,
    }
}

/// Looks up offsets for `items`, all led by `broker`. A timestamp query
/// that finds no record (offset -1) falls back to the end of the log.
async fn list_offsets(
    cluster: &Cluster,
    broker: i32,
    items: &[Item],
    isolation: i8,
) -> Result<Vec<ItemResult>, Error> {
    let conn = cluster.broker(broker).await?;
    let version = match conn.version_for(ApiKey::LIST_OFFSETS) {
        Some(v) if v >= 1 => v,
        _ => {
            return Err(Error::new(ErrorKind::Unsupported)
                .with_message(format!(
                    "broker {} supports no ListOffsets version >= 1",
                    conn.addr()
                ))
                .with_api(ApiKey::LIST_OFFSETS))
        }
    };
    let timeout_ms =
        i32::try_from(cluster.config().connection.request_timeout.as_millis()).unwrap_or(i32::MAX);
    let ask = |queries: &[(&Item, i64)]| {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (item, timestamp) in queries {
            let partition = ListOffsetsPartition {
                partition_index: item.partition,
                current_leader_epoch: if version >= LIST_OFFSETS_LEADER_EPOCH_FROM {
                    item.current_leader_epoch
                } else {
                    -1
                },
                timestamp: *timestamp,
                ..Default::default()
            };
            match topics.last_mut() {
                Some(t) if *t.name == *item.topic => t.partitions.push(partition),
                _ => topics.push(ListOffsetsTopic {
                    name: item.topic.to_string(),
                    partitions: vec![partition],
                    ..Default::default()
                }),
            }
        }
        ListOffsetsRequest {
            replica_id: CONSUMER_REPLICA_ID,
            isolation_level: isolation,
            topics,
            timeout_ms,
            ..Default::default()
        }
    };
    let queries: Vec<(&Item, i64)> = items.iter().map(|i| (i, i.query)).collect();
    let resp = conn.request_version(&ask(&queries), version).await?;
    let find = |resp: &crate::protocol::messages::ListOffsetsResponse, item: &Item| {
        resp.topics
            .iter()
            .filter(|t| *t.name == *item.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == item.partition)
            .map(|p| ItemResult {
                error: ErrorCode(p.error_code),
                offset: p.offset,
                leader_epoch: p.leader_epoch,
            })
            .unwrap_or(ItemResult::MISSING)
    };
    let mut results: Vec<ItemResult> = items.iter().map(|i| find(&resp, i)).collect();
    let past_end: Vec<(&Item, i64)> = items
        .iter()
        .zip(&results)
        .filter(|(i, r)| r.error.is_ok() && r.offset < 0 && i.query >= 0)
        .map(|(i, _)| (i, OffsetSpec::Latest.wire()))
        .collect();
    if !past_end.is_empty() {
        let resp = conn.request_version(&ask(&past_end), version).await?;
        for (item, r) in items.iter().zip(results.iter_mut()) {
            if r.error.is_ok() && r.offset < 0 && item.query >= 0 {
                *r = find(&resp, item);
            }
        }
    }
    for r in &mut results {
        if r.error.is_ok() && r.offset < 0 {
            // No offset although no error: retry rather than fetch from -1.
            r.error = ErrorCode::OFFSET_NOT_AVAILABLE;
        }
    }
    Ok(results)
}

/// Asks `broker` for the end offset of each item's fetched epoch.
async fn offsets_for_leader_epoch(
    cluster: &Cluster,
    broker: i32,
    items: &[Item],
) -> Result<Option<Vec<ItemResult>>, Error> {
    let conn = cluster.broker(broker).await?;
    let version = match conn.version_for(ApiKey::OFFSET_FOR_LEADER_EPOCH) {
        Some(v) if v >= MIN_VALIDATE_VERSION => v,
        _ => return Ok(None),
    };
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for item in items {
        let partition = OffsetForLeaderPartition {
            partition: item.partition,
            current_leader_epoch: item.current_leader_epoch,
            leader_epoch: i32::try_from(item.query).unwrap_or(-1),
            ..Default::default()
        };
        match topics.last_mut() {
            Some(t) if *t.topic == *item.topic => t.partitions.push(partition),
            _ => topics.push(OffsetForLeaderTopic {
                topic: item.topic.to_string(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    let request = OffsetForLeaderEpochRequest {
        replica_id: CONSUMER_REPLICA_ID,
        topics,
        ..Default::default()
    };
    let resp = conn.request_version(&request, version).await?;
    Ok(Some(
        items
            .iter()
            .map(|item| {
                resp.topics
                    .iter()
                    .filter(|t| *t.topic == *item.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition == item.partition)
                    .map(|p| ItemResult {
                        error: ErrorCode(p.error_code),
                        offset: p.end_offset,
                        leader_epoch: p.leader_epoch,
                    })
                    .unwrap_or(ItemResult::MISSING)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(
            &ConsumerConfig::default(),
            &ClientSettings {
                operation_timeout: Duration::from_secs(1),
                backoff: BackoffConfig::default(),
            },
        )
    }

    fn key(topic: &str, partition: i32) -> SessionKey {
        (Arc::from(topic), Uuid([7; 16]), partition)
    }

    fn params(offset: i64) -> PartitionParams {
        PartitionParams {
            fetch_offset: offset,
            current_leader_epoch: 2,
            last_fetched_epoch: -1,
            max_bytes: 1000,
        }
    }

    #[test]
    fn fetch_requests_group_partitions_by_topic_and_name_topics_by_version() {
        let mut session = FetchSession::new();
        let plan = session.plan(
            [
                (key("a", 0), params(5)),
                (key("a", 1), params(6)),
                (key("b", 0), params(7)),
            ],
            true,
        );
        let req = fetch_request(&plan, 12, &settings(), 3000);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].topic, "a");
        assert_eq!(req.topics[0].topic_id, Uuid::ZERO);
        assert_eq!(req.topics[0].partitions.len(), 2);
        assert_eq!(req.topics[0].partitions[1].fetch_offset, 6);
        assert_eq!(req.topics[0].partitions[1].partition_max_bytes, 1000);
        assert_eq!(req.topics[0].partitions[1].current_leader_epoch, 2);
        assert_eq!((req.session_id, req.session_epoch), (0, 0));
        assert_eq!(req.max_bytes, 3000);
        assert_eq!(req.replica_id, -1);

        let req = fetch_request(&plan, 13, &settings(), 3000);
        assert_eq!(req.topics[1].topic, "");
        assert_eq!(req.topics[1].topic_id, Uuid([7; 16]));

        session.on_response(&plan, 0, 9);
        let plan = session.plan([(key("a", 0), params(8)), (key("b", 0), params(7))], true);
        let req = fetch_request(&plan, 12, &settings(), 3000);
        assert_eq!((req.session_id, req.session_epoch), (9, 1));
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].partitions[0].fetch_offset, 8);
        assert_eq!(req.forgotten_topics_data.len(), 1);
        assert_eq!(req.forgotten_topics_data[0].topic, "a");
        assert_eq!(req.forgotten_topics_data[0].partitions, vec![1]);
    }

    #[test]
    fn fetch_requests_encode_at_every_supported_version() {
        let mut session = FetchSession::new();
        let plan = session.plan([(key("a", 0), params(5))], true);
        for version in MIN_FETCH_VERSION..=<FetchRequest as crate::protocol::Message>::MAX_VERSION {
            let req = fetch_request(&plan, version, &settings(), 3000);
            let mut buf = bytes::BytesMut::new();
            crate::protocol::Message::encode(&req, &mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }

    /// Three lz4 batches of ten records each, every batch 100 kB
    /// decompressed but only a few hundred bytes on the wire.
    #[cfg(feature = "compression-lz4")]
    fn inflating_batches() -> Bytes {
        use crate::protocol::record::{BatchHeader, Compression, RecordBatchWriter};
        let mut buf = bytes::BytesMut::new();
        let value = vec![b'z'; 10_000];
        for base in [0, 10, 20] {
            let mut w = RecordBatchWriter::new(BatchHeader {
                base_offset: base,
                compression: Compression::Lz4,
                ..BatchHeader::default()
            });
            for i in 0..10 {
                w.append(i, None, Some(&value), &[]).unwrap();
            }
            w.finish_into(&mut buf).unwrap();
        }
        buf.freeze()
    }

    #[cfg(feature = "compression-lz4")]
    #[test]
    fn decoding_stops_at_the_budget_but_always_takes_one_batch() {
        let data = inflating_batches();
        assert!(data.len() < 10_000);
        let topic: Arc<str> = Arc::from("t");
        let s = settings();
        // Room for one batch and a half: the second waits for a later fetch.
        let chunk = decode(&topic, 0, 0, data.clone(), &[], &s, 150_000).unwrap();
        assert_eq!(chunk.records.len(), 10);
        assert_eq!(chunk.next_offset, 10);
        assert!(chunk.mem_bytes >= 100_000);
        // Less room than the first batch needs: it is decoded anyway.
        let chunk = decode(&topic, 0, 0, data.clone(), &[], &s, 1_000).unwrap();
        assert!(!chunk.records.is_empty());
        assert_eq!(chunk.records[0].offset, 0);
        // Plenty of room: everything.
        let chunk = decode(&topic, 0, 5, data, &[], &s, 1 << 20).unwrap();
        assert_eq!(chunk.records.len(), 25);
        assert_eq!(chunk.next_offset, 30);
    }

    #[test]
    fn inflating_data_is_fetched_in_smaller_pieces() {
        let s = settings();
        let max_part = usize::try_from(s.max_partition_bytes).unwrap();
        let fetch = |wire, mem, records| next_fetch_bytes(&s, wire, mem, records) as usize;
        // Large plain records: the target, within the configured limit.
        let n = fetch(100_000, 101_000, 10);
        assert_eq!(n, DECODE_AHEAD_BYTES * 100 / 101);
        assert!(n <= max_part);
        let tight = Settings {
            max_partition_bytes: 1 << 20,
            ..settings()
        };
        assert_eq!(next_fetch_bytes(&tight, 100_000, 101_000, 10), 1 << 20);
        // Small plain records: no more than the first fetch's size, or
        // RECORDS_AHEAD of them if those take more.
        assert_eq!(fetch(100_000, 200_000, 1_000), FIRST_FETCH_BYTES);
        assert_eq!(
            fetch(300_000, 400_000, 1_000),
            RECORDS_AHEAD * 300 // 300 B each: 3 MB, under the memory target
        );
        // Nothing learnt: 0, the first fetch's size.
        assert_eq!(fetch(0, 0, 0), 0);
        assert_eq!(planned_fetch_bytes(0, max_part), FIRST_FETCH_BYTES as i32);
        assert_eq!(planned_fetch_bytes(0, 512 << 10), 512 << 10);
        assert_eq!(planned_fetch_bytes(3 << 20, max_part), 3 << 20);
        assert_eq!(planned_fetch_bytes(8 << 20, 2 << 20), 2 << 20);
        // Every record filtered out (control records, aborted ones): the
        // memory target alone.
        assert_eq!(fetch(100_000, 101_000, 0), n);
        // Ten times inflation: a tenth of the target.
        assert_eq!(fetch(100_000, 1_000_000, 10), DECODE_AHEAD_BYTES / 10);
        // Never below the floor.
        assert_eq!(fetch(1, 1 << 40, 1), MIN_FETCH_BYTES);
    }
}
