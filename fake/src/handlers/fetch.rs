//! Fetch: incremental fetch sessions (KIP-227), byte limits (KIP-74),
//! long polls woken by appends, isolation levels, leader epoch checks and
//! divergence (KIP-320).

use std::{collections::HashMap, time::Duration};

use bytes::{Bytes, BytesMut};
use rskafka::protocol::{
    messages::{
        fetch_response::{
            AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch,
            NodeEndpoint, PartitionData,
        },
        FetchRequest, FetchResponse,
    },
    ErrorCode, Uuid,
};
use tokio::time::Instant;

use crate::{
    server::Ctx,
    state::{leader_epoch_error, State},
    FetchSessionStats,
};

/// Kafka's `max.incremental.fetch.session.cache.slots`; the least recently
/// used session is evicted beyond it.
const MAX_SESSIONS: usize = 1000;
/// Bound on a long poll, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
const READ_COMMITTED: i8 = 1;

/// Session epoch meaning "close the session" (or "no session").
const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

/// A partition as a fetch session remembers it.
#[derive(Debug, Clone)]
struct SessionPartition {
    topic_id: Uuid,
    fetch_offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// (high watermark, LSO, log start) last sent; `None` until sent once
    /// (or after an error, so the partition is sent again).
    last_sent: Option<(i64, i64, i64)>,
}

#[derive(Debug)]
struct Session {
    broker: i32,
    next_epoch: i32,
    /// In the order responses list them: as Kafka does, partitions that
    /// returned data in an incremental response move to the end, so that
    /// the response size limits do not always favour the same partitions.
    partitions: Vec<((String, i32), SessionPartition)>,
    last_used: Instant,
}

/// The fetch session cache, shared by the brokers (sessions are per broker).
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    sessions: HashMap<i32, Session>,
    last_id: i32,
    stats: FetchSessionStats,
}

impl FetchSessions {
    pub fn stats(&self) -> FetchSessionStats {
        self.stats
    }

    fn new_session(&mut self, broker: i32) -> i32 {
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(&id, _)| id)
            {
                self.sessions.remove(&oldest);
            }
        }
        loop {
            self.last_id = self.last_id.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&self.last_id) {
                break;
            }
        }
        self.sessions.insert(
            self.last_id,
            Session {
                broker,
                next_epoch: 1,
                partitions: Vec::new(),
                last_used: Instant::now(),
            },
        );
        self.stats.created += 1;
        self.last_id
    }
}

/// What one fetch reads: partitions in response order.
struct Plan {
    /// The session id to answer with (0: none).
    session_id: i32,
    /// Whether unchanged partitions are left out of the response.
    incremental: bool,
    partitions: Vec<((String, i32), SessionPartition)>,
    /// Partitions named by an unknown topic id.
    unknown_ids: Vec<(Uuid, i32)>,
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// Session bookkeeping and the partitions to read, or a top-level error.
fn plan(
    state: &mut State,
    broker: i32,
    version: i16,
    req: &FetchRequest,
) -> Result<Plan, ErrorCode> {
    let mut requested = Vec::new();
    let mut unknown_ids = Vec::new();
    for t in &req.topics {
        let name = if version >= 13 {
            match state.topic_name_by_id(t.topic_id) {
                Some(n) => n.to_owned(),
                None => {
                    unknown_ids.extend(t.partitions.iter().map(|p| (t.topic_id, p.partition)));
                    continue;
                }
            }
        } else {
            t.topic.clone()
        };
        let topic_id = state.topics.get(&name).map_or(Uuid::ZERO, |t| t.id);
        for p in &t.partitions {
            requested.push((
                (name.clone(), p.partition),
                SessionPartition {
                    topic_id,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: if version >= 12 {
                        p.last_fetched_epoch
                    } else {
                        -1
                    },
                    last_sent: None,
                },
            ));
        }
    }
    let sessions = &mut state.fetch_sessions;
    let sessionless = |requested, unknown_ids| Plan {
        session_id: 0,
        incremental: false,
        partitions: requested,
        unknown_ids,
    };
    if version < 7 || (req.session_id == 0 && req.session_epoch == FINAL_EPOCH) {
        return Ok(sessionless(requested, unknown_ids));
    }
    if req.session_epoch == FINAL_EPOCH {
        sessions.sessions.remove(&req.session_id);
        return Ok(sessionless(requested, unknown_ids));
    }
    if req.session_epoch == INITIAL_EPOCH {
        if req.session_id != 0 {
            sessions.sessions.remove(&req.session_id);
        }
        let id = sessions.new_session(broker);
        let session = sessions.sessions.get_mut(&id).expect("just created");
        session.partitions = requested.clone();
        return Ok(Plan {
            session_id: id,
            incremental: false,
            partitions: requested,
            unknown_ids,
        });
    }
    let session = sessions
        .sessions
        .get_mut(&req.session_id)
        .filter(|s| s.broker == broker)
        .ok_or(ErrorCode::FETCH_SESSION_ID_NOT_FOUND)?;
    if session.next_epoch != req.session_epoch {
        return Err(ErrorCode::INVALID_FETCH_SESSION_EPOCH);
    }
    session.next_epoch = next_epoch(session.next_epoch);
    session.last_used = Instant::now();
    for (key, mut p) in requested {
        match session.partitions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => {
                p.last_sent = old.last_sent;
                *old = p;
            }
            None => session.partitions.push((key, p)),
        }
    }
    for f in &req.forgotten_topics_data {
        let name = if version >= 13 {
            match state.topics.iter().find(|(_, t)| t.id == f.topic_id) {
                Some((n, _)) => n.clone(),
                None => continue,
            }
        } else {
            f.topic.clone()
        };
        session
            .partitions
            .retain(|((t, p), _)| !(*t == name && f.partitions.contains(p)));
    }
    sessions.stats.incremental_fetches += 1;
    let partitions = session.partitions.clone();
    Ok(Plan {
        session_id: req.session_id,
        incremental: true,
        partitions,
        unknown_ids,
    })
}

/// One partition's answer and how many record bytes it carries.
struct Read {
    data: PartitionData,
    bytes: usize,
}

fn partition_error(index: i32, error: ErrorCode) -> PartitionData {
    PartitionData {
        partition_index: index,
        error_code: error.0,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted_transactions: None,
        records: Some(Bytes::new()),
        ..Default::default()
    }
}

struct ReadLimits {
    version: i16,
    read_committed: bool,
    /// Bytes still allowed in the response.
    remaining: usize,
    /// No partition returned data yet: the first batch goes out even if
    /// larger than the limits (KIP-74), so that consumers make progress.
    first: bool,
}

fn read_partition(
    state: &State,
    broker: i32,
    (topic, index): &(String, i32),
    sp: &SessionPartition,
    injected: Option<ErrorCode>,
    limits: &mut ReadLimits,
) -> Read {
    let index = *index;
    let error = |code| Read {
        data: partition_error(index, code),
        bytes: 0,
    };
    if let Some(code) = injected {
        return error(code);
    }
    let Some(p) = state.partition(topic, index) else {
        return error(if limits.version >= 13 {
            ErrorCode::UNKNOWN_TOPIC_ID
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        });
    };
    let leader_error = leader_epoch_error(p.leader_epoch, sp.current_leader_epoch)
        .or((p.leader != broker).then_some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
    if let Some(code) = leader_error {
        let mut r = error(code);
        if limits.version >= 12 {
            r.data.current_leader = LeaderIdAndEpoch {
                leader_id: p.leader,
                leader_epoch: p.leader_epoch,
                ..Default::default()
            };
        }
        return r;
    }
    let log = &p.log;
    let hw = log.high_watermark();
    let lso = log.last_stable_offset();
    let mut data = PartitionData {
        partition_index: index,
        error_code: 0,
        high_watermark: hw,
        last_stable_offset: lso,
        log_start_offset: log.log_start_offset(),
        aborted_transactions: None,
        records: Some(Bytes::new()),
        ..Default::default()
    };
    if sp.last_fetched_epoch >= 0 {
        let (epoch, end_offset) = log.end_offset_for_epoch(sp.last_fetched_epoch);
        if epoch < sp.last_fetched_epoch || end_offset < sp.fetch_offset {
            data.diverging_epoch = EpochEndOffset {
                epoch,
                end_offset,
                ..Default::default()
            };
            return Read { data, bytes: 0 };
        }
    }
    if sp.fetch_offset < log.log_start_offset() || sp.fetch_offset > hw {
        return error(ErrorCode::OFFSET_OUT_OF_RANGE);
    }
    let upper = if limits.read_committed { lso } else { hw };
    let mut partition_left = usize::try_from(sp.max_bytes).unwrap_or(0);
    let mut out = BytesMut::new();
    let mut end = sp.fetch_offset;
    for b in log.batches_from(sp.fetch_offset) {
        if b.base_offset >= upper {
            break;
        }
        let size = b.bytes.len();
        let fits = size <= partition_left && size <= limits.remaining;
        let progress_needed = limits.first && out.is_empty();
        if !(fits || progress_needed) {
            break;
        }
        out.extend_from_slice(&b.bytes);
        partition_left = partition_left.saturating_sub(size);
        limits.remaining = limits.remaining.saturating_sub(size);
        end = b.last_offset + 1;
    }
    if !out.is_empty() {
        limits.first = false;
    }
    if limits.read_committed {
        data.aborted_transactions = Some(
            log.aborted_between(sp.fetch_offset, end)
                .into_iter()
                .map(|a| AbortedTransaction {
                    producer_id: a.producer_id,
                    first_offset: a.first_offset,
                    ..Default::default()
                })
                .collect(),
        );
    }
    let bytes = out.len();
    data.records = Some(out.freeze());
    Read { data, bytes }
}

/// Whether an incremental response must carry the partition.
fn changed(sp: &SessionPartition, d: &PartitionData) -> bool {
    d.error_code != 0
        || d.records.as_ref().is_some_and(|r| !r.is_empty())
        || d.diverging_epoch != EpochEndOffset::default()
        || sp.last_sent != Some((d.high_watermark, d.last_stable_offset, d.log_start_offset))
}

pub(crate) async fn handle(ctx: Ctx, req: FetchRequest) -> FetchResponse {
    let version = ctx.version;
    let broker = ctx.broker_id;
    let top_error = |code: ErrorCode| FetchResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        ..Default::default()
    };
    if let Some(code) = ctx.injected_error() {
        return top_error(code);
    }
    let plan = {
        let mut state = ctx.state();
        plan(&mut state, broker, version, &req)
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(code) => return top_error(code),
    };
    // Taken once, not per wake-up of the long poll.
    let injected: Vec<Option<ErrorCode>> = plan
        .partitions
        .iter()
        .map(|((t, p), _)| ctx.injected_partition_error(t, *p))
        .collect();
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    let read_committed = req.isolation_level == READ_COMMITTED;
    let reads = ctx
        .wait_until(deadline, |last| {
            let state = ctx.state();
            let mut limits = ReadLimits {
                version,
                read_committed,
                remaining: max_bytes,
                first: true,
            };
            let reads: Vec<Read> = plan
                .partitions
                .iter()
                .zip(&injected)
                .map(|((key, sp), inj)| read_partition(&state, broker, key, sp, *inj, &mut limits))
                .collect();
            let bytes: usize = reads.iter().map(|r| r.bytes).sum();
            let urgent = reads.iter().any(|r| {
                r.data.error_code != 0 || r.data.diverging_epoch != EpochEndOffset::default()
            }) || !plan.unknown_ids.is_empty();
            (last || urgent || bytes >= min_bytes).then_some(reads)
        })
        .await;

    let mut state = ctx.state();
    // Group by topic in plan order, leaving out what an incremental
    // session need not repeat, and remember what was sent.
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut leaders = Vec::new();
    let session = state.fetch_sessions.sessions.get_mut(&plan.session_id);
    let mut session = session.filter(|_| plan.session_id != 0);
    let mut with_data = Vec::new();
    for (((name, index), sp), read) in plan.partitions.iter().zip(reads) {
        if plan.incremental && !changed(sp, &read.data) {
            continue;
        }
        if read.bytes > 0 {
            with_data.push((name.clone(), *index));
        }
        if let Some(s) = session.as_deref_mut() {
            if let Some((_, cached)) = s
                .partitions
                .iter_mut()
                .find(|((t, p), _)| t == name && p == index)
            {
                cached.last_sent = (read.data.error_code == 0).then_some((
                    read.data.high_watermark,
                    read.data.last_stable_offset,
                    read.data.log_start_offset,
                ));
            }
        }
        if read.data.current_leader.leader_id >= 0 {
            leaders.push(read.data.current_leader.leader_id);
        }
        let same_topic = topics.last().is_some_and(|t| {
            if version >= 13 {
                t.topic_id == sp.topic_id
            } else {
                &t.topic == name
            }
        });
        if !same_topic {
            topics.push(FetchableTopicResponse {
                topic: if version >= 13 {
                    String::new()
                } else {
                    name.clone()
                },
                topic_id: if version >= 13 {
                    sp.topic_id
                } else {
                    Uuid::ZERO
                },
                ..Default::default()
            });
        }
        topics
            .last_mut()
            .expect("pushed above")
            .partitions
            .push(read.data);
    }
    if let Some(s) = session.filter(|_| plan.incremental) {
        // Stable partition: those without data keep their order.
        let (rest, moved): (Vec<_>, Vec<_>) = std::mem::take(&mut s.partitions)
            .into_iter()
            .partition(|(k, _)| !with_data.contains(k));
        s.partitions = rest.into_iter().chain(moved).collect();
    }
    for (topic_id, index) in &plan.unknown_ids {
        topics.push(FetchableTopicResponse {
            topic_id: *topic_id,
            partitions: vec![partition_error(*index, ErrorCode::UNKNOWN_TOPIC_ID)],
            ..Default::default()
        });
    }
    let node_endpoints = if version >= 16 {
        state
            .brokers
            .iter()
            .filter(|b| leaders.contains(&b.id))
            .map(|b| NodeEndpoint {
                node_id: b.id,
                host: b.host.clone(),
                port: i32::from(b.port),
                rack: None,
                ..Default::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    FetchResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: 0,
        session_id: plan.session_id,
        responses: topics,
        node_endpoints,
        ..Default::default()
    }
}
