//! Classic consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups) and their committed offsets
//! (OffsetCommit, OffsetFetch; transactional offsets pend until EndTxn).
//!
//! Rebalances follow Kafka's classic coordinator: a join (or a member
//! leaving or expiring) starts one; it completes when every member has
//! rejoined, or at the rebalance deadline without the stragglers. Session
//! timeouts are checked on every request for the group, so a member that
//! stops heartbeating is dropped when the others next heartbeat.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use rskafka::protocol::{
    messages::{
        delete_groups_response::DeletableGroupResult,
        describe_groups_response::{DescribedGroup, DescribedGroupMember},
        join_group_response::JoinGroupResponseMember,
        leave_group_request::MemberIdentity,
        leave_group_response::MemberResponse,
        list_groups_response::ListedGroup,
        offset_commit_request::OffsetCommitRequestTopic,
        offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
        offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic},
        offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
            OffsetFetchResponseTopic, OffsetFetchResponseTopics,
        },
        *,
    },
    ErrorCode, Message, Reader,
};
use tokio::time::Instant;

use super::consumer_group::{self, ConsumerGroup, OffsetsAccess};
use crate::{
    server::Ctx,
    state::{random_uuid, Shared, State},
};

/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 6_000..=1_800_000;
/// Kafka's `offset.metadata.max.bytes`.
const MAX_OFFSET_METADATA: usize = 4096;

/// Consumer groups by id.
pub(crate) type Groups = HashMap<String, Group>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

impl Member {
    /// Its metadata for `protocol` (empty if it does not support it).
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    /// Orders members by first join (the leader is the oldest).
    joined_seq: u64,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Requests of this member waiting on the group (JoinGroup,
    /// SyncGroup): its session does not run out meanwhile.
    waiting: u32,
    /// Whether it has rejoined the rebalance in progress.
    joined: bool,
    assignment: Bytes,
}

/// A committed offset.
#[derive(Debug, Clone)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One group: members and rebalance state (classic protocol), offsets.
#[derive(Debug, Default)]
pub(crate) struct Group {
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet.
    pending_ids: HashSet<String>,
    rebalance_deadline: Option<Instant>,
    next_seq: u64,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// The KIP-848 side, once a consumer-protocol member joined (and until
    /// a classic member joins the group emptied).
    pub consumer: Option<ConsumerGroup>,
    /// Offsets committed in open transactions, by producer id.
    pub pending_txn_offsets: HashMap<i64, BTreeMap<(String, i32), CommittedOffset>>,
}

impl Group {
    pub(crate) fn has_classic_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Whether consumer-protocol members are in the group.
    fn has_consumer_members(&self) -> bool {
        self.consumer.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// Drops members whose session ran out; true if any was.
    fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.waiting == 0 && now >= m.last_seen + m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, now);
        }
        !expired.is_empty()
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.phase == Phase::PreparingRebalance {
            return;
        }
        self.phase = Phase::PreparingRebalance;
        for m in self.members.values_mut() {
            m.joined = false;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = Some(now + timeout);
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        if self.members.remove(id).is_none() {
            return;
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.become_empty();
        } else {
            self.start_rebalance(now);
        }
    }

    fn become_empty(&mut self) {
        self.phase = Phase::Empty;
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
        self.rebalance_deadline = None;
    }

    /// Completes the rebalance in progress if every member rejoined, or
    /// (`force`) without those that did not.
    fn try_complete(&mut self, now: Instant, force: bool) -> bool {
        if self.phase != Phase::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        if !all_joined && !force && self.rebalance_deadline.is_some_and(|d| now < d) {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.become_empty();
            return true;
        }
        self.generation += 1;
        self.protocol = self.common_protocols().into_iter().next();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.joined_seq)
                .map(|(id, _)| id.clone());
        }
        for m in self.members.values_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
        }
        self.phase = Phase::CompletingRebalance;
        self.rebalance_deadline = None;
        true
    }

    /// Protocols every member supports, in the oldest member's preference.
    fn common_protocols(&self) -> Vec<String> {
        let Some(oldest) = self.members.values().min_by_key(|m| m.joined_seq) else {
            return Vec::new();
        };
        oldest
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    /// The member addressed by id (and instance id, if static).
    fn member_mut(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&mut Member, ErrorCode> {
        if let Some(instance) = instance_id {
            let owner = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance));
            if owner.is_some_and(|(id, _)| id != member_id) {
                return Err(ErrorCode::FENCED_INSTANCE_ID);
            }
        }
        self.members
            .get_mut(member_id)
            .ok_or(ErrorCode::UNKNOWN_MEMBER_ID)
    }

    /// Why a transactional commit (TxnOffsetCommit) is refused: like a
    /// member's commit, but without the rebalance check.
    pub(crate) fn check_txn_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if generation < 0 && member_id.is_empty() {
            return Ok(());
        }
        if let Some(consumer) = self.consumer.as_ref().filter(|c| !c.is_empty()) {
            // A consumer group's "generation" is the member epoch; Kafka
            // reports a stale one as ILLEGAL_GENERATION to TxnOffsetCommit.
            return consumer_group::check_member(
                consumer,
                OffsetsAccess::Commit,
                Some(member_id),
                generation,
            )
            .map_err(|code| {
                if code == ErrorCode::STALE_MEMBER_EPOCH {
                    ErrorCode::ILLEGAL_GENERATION
                } else {
                    code
                }
            });
        }
        self.member_mut(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ErrorCode::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    fn has_pending_txn_offset(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_owned(), partition);
        self.pending_txn_offsets
            .values()
            .any(|p| p.contains_key(&key))
    }
}

/// Decrements a member's `waiting` count when its request stops waiting
/// (also when the connection is dropped mid-wait).
struct Waiting {
    shared: Arc<Shared>,
    group: String,
    member: String,
}

impl Waiting {
    fn new(state: &mut State, shared: &Arc<Shared>, group: &str, member: &str) -> Option<Self> {
        let m = state
            .coordination
            .groups
            .get_mut(group)?
            .members
            .get_mut(member)?;
        m.waiting += 1;
        Some(Self {
            shared: shared.clone(),
            group: group.to_owned(),
            member: member.to_owned(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        if let Some(m) = state
            .coordination
            .groups
            .get_mut(&self.group)
            .and_then(|g| g.members.get_mut(&self.member))
        {
            m.waiting = m.waiting.saturating_sub(1);
            m.last_seen = Instant::now();
        }
    }
}

fn join_error(ctx: &Ctx, code: ErrorCode, member_id: String) -> JoinGroupResponse {
    JoinGroupResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        generation_id: -1,
        protocol_type: None,
        // Null only from v7 on.
        protocol_name: (ctx.version < 7).then(String::new),
        leader: String::new(),
        member_id,
        ..Default::default()
    }
}

/// A join's protocols: name and metadata.
fn protocols_of(req: &JoinGroupRequest) -> Vec<(String, Bytes)> {
    req.protocols
        .iter()
        .map(|p| (p.name.clone(), p.metadata.clone()))
        .collect()
}

/// A successful JoinGroup answer: the leader gets the members' metadata.
fn join_response(
    ctx: &Ctx,
    group: &Group,
    member_id: &str,
    skip_assignment: bool,
) -> JoinGroupResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let leader = group.leader.clone().unwrap_or_default();
    let members = if leader == member_id {
        group
            .members
            .iter()
            .map(|(id, m)| JoinGroupResponseMember {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
                ..Default::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinGroupResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: 0,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: Some(protocol),
        leader,
        skip_assignment,
        member_id: member_id.to_owned(),
        members,
        ..Default::default()
    }
}

pub(crate) async fn join_group(ctx: Ctx, req: JoinGroupRequest) -> JoinGroupResponse {
    if let Some(code) = ctx.coordinator_error(&req.group_id) {
        return join_error(&ctx, code, req.member_id);
    }
    if req.group_id.is_empty() {
        return join_error(&ctx, ErrorCode::INVALID_GROUP_ID, req.member_id);
    }
    if !SESSION_TIMEOUT_MS.contains(&req.session_timeout_ms) {
        return join_error(&ctx, ErrorCode::INVALID_SESSION_TIMEOUT, req.member_id);
    }
    if req.protocol_type.is_empty() || req.protocols.is_empty() {
        return join_error(&ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, req.member_id);
    }
    // v0 has no rebalance timeout: the session timeout serves.
    let rebalance_ms = if req.rebalance_timeout_ms > 0 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let now = Instant::now();
    let (member_id, start_generation, deadline, _waiting) = {
        let mut guard = ctx.state();
        let state = &mut *guard;
        let group = state
            .coordination
            .groups
            .entry(req.group_id.clone())
            .or_default();
        group.expire(now);
        group.expire_consumer_members(&state.config, now);
        if group.has_consumer_members() {
            return join_error(&ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, req.member_id);
        }
        group.consumer = None;
        if !group.members.is_empty() {
            let supported = req.protocols.iter().any(|p| {
                group
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| *n == p.name))
            });
            if group.protocol_type.as_deref() != Some(&req.protocol_type) || !supported {
                return join_error(&ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, req.member_id);
            }
        }
        let client = ctx.client_id.clone().unwrap_or_default();
        let member_id = match (&req.group_instance_id, req.member_id.is_empty()) {
            (Some(instance), true) => {
                // A static member restarting takes its old place.
                let old = group
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone());
                if let Some(old) = old {
                    let mut m = group.members.remove(&old).expect("found above");
                    let id = format!("{instance}-{}", random_uuid());
                    let was_leader = group.leader.as_ref() == Some(&old);
                    if was_leader {
                        group.leader = Some(id.clone());
                    }
                    m.protocols = protocols_of(&req);
                    m.last_seen = now;
                    group.members.insert(id.clone(), m);
                    // As Kafka: no rebalance unless the protocol chosen changes.
                    let same_protocols =
                        group.common_protocols().first() == group.protocol.as_ref();
                    // KIP-345: a static member coming back unchanged keeps
                    // its assignment without a rebalance; a returning
                    // leader is told to skip assigning (KIP-814, v9+).
                    if group.phase == Phase::Stable
                        && same_protocols
                        && (!was_leader || ctx.version >= 9)
                    {
                        return join_response(&ctx, group, &id, was_leader);
                    }
                    id
                } else {
                    format!("{instance}-{}", random_uuid())
                }
            }
            (Some(instance), false) => {
                if let Err(code) = group.member_mut(&req.member_id, Some(instance)) {
                    return join_error(&ctx, code, req.member_id);
                }
                req.member_id.clone()
            }
            (None, true) => {
                let id = format!("{client}-{}", random_uuid());
                if ctx.version >= 4 {
                    group.pending_ids.insert(id.clone());
                    return join_error(&ctx, ErrorCode::MEMBER_ID_REQUIRED, id);
                }
                id
            }
            (None, false) => {
                if !group.members.contains_key(&req.member_id)
                    && !group.pending_ids.remove(&req.member_id)
                {
                    return join_error(&ctx, ErrorCode::UNKNOWN_MEMBER_ID, req.member_id);
                }
                req.member_id.clone()
            }
        };
        group.protocol_type = Some(req.protocol_type.clone());
        group.start_rebalance(now);
        if group
            .rebalance_deadline
            .is_none_or(|d| d < now + Duration::from_millis(rebalance_ms as u64))
        {
            // A newcomer with a longer rebalance timeout extends the wait.
            group.rebalance_deadline = Some(now + Duration::from_millis(rebalance_ms as u64));
        }
        let seq = group.next_seq;
        group.next_seq += 1;
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.group_instance_id.clone(),
                client_id: client,
                joined_seq: seq,
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                last_seen: now,
                waiting: 0,
                joined: false,
                assignment: Bytes::new(),
            });
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(rebalance_ms as u64);
        member.protocols = protocols_of(&req);
        member.last_seen = now;
        member.joined = true;
        let start_generation = group.generation;
        let deadline = group.rebalance_deadline.unwrap_or(now);
        group.try_complete(now, false);
        let waiting = Waiting::new(state, &ctx.shared, &req.group_id, &member_id);
        (member_id, start_generation, deadline, waiting)
    };
    ctx.shared.notify_changed();
    ctx.wait_until(deadline, |last| {
        let mut state = ctx.state();
        let group = state.coordination.groups.get_mut(&req.group_id)?;
        if group.try_complete(Instant::now(), last) {
            ctx.shared.notify_changed();
        }
        if group.generation == start_generation {
            return last
                .then(|| join_error(&ctx, ErrorCode::REBALANCE_IN_PROGRESS, member_id.clone()));
        }
        if !group.members.contains_key(&member_id) {
            return Some(join_error(
                &ctx,
                ErrorCode::UNKNOWN_MEMBER_ID,
                member_id.clone(),
            ));
        }
        if group.phase == Phase::PreparingRebalance {
            // Another rebalance began already: the client joins again.
            return Some(join_error(
                &ctx,
                ErrorCode::REBALANCE_IN_PROGRESS,
                member_id.clone(),
            ));
        }
        Some(join_response(&ctx, group, &member_id, false))
    })
    .await
}

fn sync_error(ctx: &Ctx, code: ErrorCode) -> SyncGroupResponse {
    SyncGroupResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        ..Default::default()
    }
}

pub(crate) async fn sync_group(ctx: Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    if let Some(code) = ctx.coordinator_error(&req.group_id) {
        return sync_error(&ctx, code);
    }
    let now = Instant::now();
    let (deadline, _waiting) = {
        let mut state = ctx.state();
        let Some(group) = state.coordination.groups.get_mut(&req.group_id) else {
            return sync_error(&ctx, ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if group.expire(now) {
            ctx.shared.notify_changed();
        }
        let session = match group.member_mut(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(m) => {
                m.last_seen = now;
                m.session_timeout
            }
            Err(code) => return sync_error(&ctx, code),
        };
        if req.generation_id != group.generation {
            return sync_error(&ctx, ErrorCode::ILLEGAL_GENERATION);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return sync_error(&ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        match group.phase {
            Phase::PreparingRebalance | Phase::Empty => {
                return sync_error(&ctx, ErrorCode::REBALANCE_IN_PROGRESS)
            }
            Phase::CompletingRebalance if group.leader.as_ref() == Some(&req.member_id) => {
                let mut assignments: HashMap<String, Bytes> = req
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id, a.assignment))
                    .collect();
                for (id, m) in group.members.iter_mut() {
                    m.assignment = assignments.remove(id).unwrap_or_default();
                }
                group.phase = Phase::Stable;
                ctx.shared.notify_changed();
            }
            _ => {}
        }
        let waiting = Waiting::new(&mut state, &ctx.shared, &req.group_id, &req.member_id);
        (now + session, waiting)
    };
    let generation = req.generation_id;
    ctx.wait_until(deadline, |last| {
        let mut state = ctx.state();
        let Some(group) = state.coordination.groups.get_mut(&req.group_id) else {
            return Some(sync_error(&ctx, ErrorCode::UNKNOWN_MEMBER_ID));
        };
        if last && group.expire(Instant::now()) {
            ctx.shared.notify_changed();
        }
        let Some(member) = group.members.get(&req.member_id) else {
            return Some(sync_error(&ctx, ErrorCode::UNKNOWN_MEMBER_ID));
        };
        if group.generation != generation || group.phase == Phase::PreparingRebalance {
            return Some(sync_error(&ctx, ErrorCode::REBALANCE_IN_PROGRESS));
        }
        if group.phase == Phase::Stable {
            return Some(SyncGroupResponse {
                throttle_time_ms: ctx.throttle_ms,
                error_code: 0,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol.clone(),
                assignment: member.assignment.clone(),
                ..Default::default()
            });
        }
        // The leader has not sent the assignment within our session.
        last.then(|| sync_error(&ctx, ErrorCode::REBALANCE_IN_PROGRESS))
    })
    .await
}

pub(crate) async fn heartbeat(ctx: Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = ctx.coordinator_error(&req.group_id).or_else(|| {
        let now = Instant::now();
        let mut state = ctx.state();
        let Some(group) = state.coordination.groups.get_mut(&req.group_id) else {
            return Some(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if group.expire(now) {
            ctx.shared.notify_changed();
        }
        match group.member_mut(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(m) => m.last_seen = now,
            Err(code) => return Some(code),
        }
        if req.generation_id != group.generation {
            Some(ErrorCode::ILLEGAL_GENERATION)
        } else if group.phase == Phase::PreparingRebalance {
            Some(ErrorCode::REBALANCE_IN_PROGRESS)
        } else {
            None
        }
    });
    HeartbeatResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.map_or(0, |c| c.0),
        ..Default::default()
    }
}

pub(crate) async fn leave_group(ctx: Ctx, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let leaving = if ctx.version >= 3 {
        req.members
    } else {
        vec![MemberIdentity {
            member_id: req.member_id,
            ..Default::default()
        }]
    };
    let fail = |code: ErrorCode| LeaveGroupResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        ..Default::default()
    };
    if let Some(code) = ctx.coordinator_error(&req.group_id) {
        return fail(code);
    }
    let now = Instant::now();
    let mut results = Vec::new();
    {
        let mut state = ctx.state();
        let Some(group) = state.coordination.groups.get_mut(&req.group_id) else {
            return fail(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        for who in leaving {
            let id = if who.member_id.is_empty() {
                // A static member may leave by instance id alone.
                group
                    .members
                    .iter()
                    .find(|(_, m)| {
                        m.instance_id.is_some() && m.instance_id == who.group_instance_id
                    })
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default()
            } else {
                who.member_id.clone()
            };
            let code = match group.member_mut(&id, who.group_instance_id.as_deref()) {
                Ok(_) => {
                    group.remove_member(&id, now);
                    0
                }
                Err(code) => code.0,
            };
            results.push(MemberResponse {
                member_id: who.member_id,
                group_instance_id: who.group_instance_id,
                error_code: code,
                ..Default::default()
            });
        }
    }
    ctx.shared.notify_changed();
    if ctx.version < 3 {
        return fail(ErrorCode(results[0].error_code));
    }
    LeaveGroupResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: 0,
        members: results,
        ..Default::default()
    }
}

pub(crate) async fn list_groups(ctx: Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    if let Some(code) = ctx.injected_error() {
        return ListGroupsResponse {
            throttle_time_ms: ctx.throttle_ms,
            error_code: code.0,
            ..Default::default()
        };
    }
    let mut guard = ctx.state();
    let state = &mut *guard;
    let now = Instant::now();
    for g in state.coordination.groups.values_mut() {
        g.expire_consumer_members(&state.config, now);
    }
    let state = &*state;
    let groups = state
        .coordination
        .groups
        .iter()
        // Each broker lists the groups it coordinates; clients ask them all.
        .filter(|(id, _)| state.coordinator_for(id) == ctx.broker_id)
        .map(|(id, g)| {
            let (group_type, protocol_type, group_state) = match &g.consumer {
                Some(c) => ("Consumer", "consumer".to_owned(), c.state_name()),
                None => (
                    "Classic",
                    g.protocol_type.clone().unwrap_or_default(),
                    g.phase.name(),
                ),
            };
            ListedGroup {
                group_id: id.clone(),
                protocol_type,
                group_state: group_state.into(),
                group_type: group_type.into(),
                ..Default::default()
            }
        })
        .filter(|g| {
            (req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&g.group_type)))
                && (req.states_filter.is_empty()
                    || req
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&g.group_state)))
        })
        .collect();
    ListGroupsResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: 0,
        groups,
        ..Default::default()
    }
}

pub(crate) async fn describe_groups(
    ctx: Ctx,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for group_id in req.groups {
        if let Some(code) = ctx.coordinator_error(&group_id) {
            groups.push(DescribedGroup {
                error_code: code.0,
                group_id,
                authorized_operations: i32::MIN,
                ..Default::default()
            });
            continue;
        }
        let state = ctx.state();
        let described = match state.coordination.groups.get(&group_id) {
            // Kafka describes consumer-protocol groups only with
            // ConsumerGroupDescribe.
            Some(g) if g.consumer.is_some() => DescribedGroup {
                error_code: ErrorCode::GROUP_ID_NOT_FOUND.0,
                group_id,
                authorized_operations: i32::MIN,
                ..Default::default()
            },
            // Kafka describes an unknown group as Dead, without an error.
            None => DescribedGroup {
                group_id,
                group_state: "Dead".into(),
                authorized_operations: i32::MIN,
                ..Default::default()
            },
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                DescribedGroup {
                    error_code: 0,
                    group_id,
                    group_state: g.phase.name().into(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol_data: protocol.clone(),
                    members: g
                        .members
                        .iter()
                        .map(|(id, m)| DescribedGroupMember {
                            member_id: id.clone(),
                            group_instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: "/127.0.0.1".into(),
                            member_metadata: m.metadata_for(&protocol),
                            member_assignment: m.assignment.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    authorized_operations: i32::MIN,
                    ..Default::default()
                }
            }
        };
        groups.push(described);
    }
    DescribeGroupsResponse {
        throttle_time_ms: ctx.throttle_ms,
        groups,
        ..Default::default()
    }
}

pub(crate) async fn delete_groups(ctx: Ctx, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in req.groups_names {
        let code = ctx.coordinator_error(&group_id).or_else(|| {
            let mut guard = ctx.state();
            let state = &mut *guard;
            let groups = &mut state.coordination.groups;
            match groups.get_mut(&group_id) {
                None => Some(ErrorCode::GROUP_ID_NOT_FOUND),
                Some(g) => {
                    g.expire(Instant::now());
                    g.expire_consumer_members(&state.config, Instant::now());
                    if g.members.is_empty() && !g.has_consumer_members() {
                        groups.remove(&group_id);
                        None
                    } else {
                        Some(ErrorCode::NON_EMPTY_GROUP)
                    }
                }
            }
        });
        results.push(DeletableGroupResult {
            group_id,
            error_code: code.map_or(0, |c| c.0),
            ..Default::default()
        });
    }
    DeleteGroupsResponse {
        throttle_time_ms: ctx.throttle_ms,
        results,
        ..Default::default()
    }
}

/// Why a group member's (or simple) commit is refused, Kafka's
/// `validateOffsetCommit` for classic groups.
fn check_commit(
    ctx: &Ctx,
    group: &mut Group,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    now: Instant,
) -> Result<(), ErrorCode> {
    if let Some(consumer) = group.consumer.as_ref().filter(|c| !c.is_empty()) {
        // Consumer-protocol members commit with their epoch, from v9.
        let member = (!member_id.is_empty()).then_some(member_id);
        if member.is_some() && ctx.version < 9 {
            return Err(ErrorCode::UNSUPPORTED_VERSION);
        }
        return consumer_group::check_member(consumer, OffsetsAccess::Commit, member, generation);
    }
    if generation < 0 && member_id.is_empty() && instance_id.is_none() {
        // A simple (admin or manual-assignment) commit: only for a group
        // without members.
        return if group.members.is_empty() {
            Ok(())
        } else {
            Err(ErrorCode::UNKNOWN_MEMBER_ID)
        };
    }
    let member = group.member_mut(member_id, instance_id)?;
    member.last_seen = now;
    if generation != group.generation {
        return Err(ErrorCode::ILLEGAL_GENERATION);
    }
    if group.phase == Phase::CompletingRebalance {
        return Err(ErrorCode::REBALANCE_IN_PROGRESS);
    }
    Ok(())
}

/// Why one partition's offset (of a plain or transactional commit) is
/// refused: the group's error, else the partition's.
pub(crate) fn offset_error(
    ctx: &Ctx,
    state: &State,
    group_error: Option<ErrorCode>,
    (topic, partition): (&str, i32),
    metadata: Option<&str>,
) -> Option<ErrorCode> {
    group_error
        .or_else(|| {
            state
                .partition(topic, partition)
                .is_none()
                .then_some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
        })
        .or_else(|| {
            metadata
                .is_some_and(|m| m.len() > MAX_OFFSET_METADATA)
                .then_some(ErrorCode::OFFSET_METADATA_TOO_LARGE)
        })
        .or_else(|| ctx.injected_partition_error(topic, partition))
}

/// The offsets to commit, checked per partition: the code for each, and
/// what to store for the accepted ones.
type CheckedOffsets = Vec<(String, Vec<(i32, ErrorCode, Option<CommittedOffset>)>)>;

fn check_offsets(
    ctx: &Ctx,
    state: &State,
    topics: Vec<OffsetCommitRequestTopic>,
    group_error: Option<ErrorCode>,
) -> CheckedOffsets {
    topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = offset_error(
                        ctx,
                        state,
                        group_error,
                        (&t.name, p.partition_index),
                        p.committed_metadata.as_deref(),
                    );
                    let offset = CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata,
                    };
                    match code {
                        Some(code) => (p.partition_index, code, None),
                        None => (p.partition_index, ErrorCode(0), Some(offset)),
                    }
                })
                .collect();
            (t.name, parts)
        })
        .collect()
}

pub(crate) async fn offset_commit(ctx: Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_error = ctx.coordinator_error(&req.group_id).or_else(|| {
        req.group_id
            .is_empty()
            .then_some(ErrorCode::INVALID_GROUP_ID)
    });
    let checked = {
        let mut state = ctx.state();
        let group_error = group_error.or_else(|| {
            let state = &mut *state;
            let group = state
                .coordination
                .groups
                .entry(req.group_id.clone())
                .or_default();
            group.expire_consumer_members(&state.config, Instant::now());
            check_commit(
                &ctx,
                group,
                req.generation_id_or_member_epoch,
                &req.member_id,
                req.group_instance_id.as_deref(),
                Instant::now(),
            )
            .err()
        });
        let checked = check_offsets(&ctx, &state, req.topics, group_error);
        if let Some(group) = state.coordination.groups.get_mut(&req.group_id) {
            for (topic, parts) in &checked {
                for (p, _, offset) in parts {
                    if let Some(offset) = offset {
                        group.offsets.insert((topic.clone(), *p), offset.clone());
                    }
                }
            }
        }
        checked
    };
    OffsetCommitResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics: checked
            .into_iter()
            .map(|(name, parts)| OffsetCommitResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(partition_index, code, _)| OffsetCommitResponsePartition {
                        partition_index,
                        error_code: code.0,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// One group's committed offsets for OffsetFetch: `None` topics = all.
fn fetch_offsets(
    state: &State,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<OffsetFetchResponsePartitions>)> {
    let group = state.coordination.groups.get(group_id);
    let topics = topics.unwrap_or_else(|| {
        let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in group.iter().flat_map(|g| g.offsets.keys()) {
            all.entry(t.clone()).or_default().push(*p);
        }
        all.into_iter().collect()
    });
    topics
        .into_iter()
        .map(|(name, partitions)| {
            let parts = partitions
                .into_iter()
                .map(|p| {
                    let unstable =
                        require_stable && group.is_some_and(|g| g.has_pending_txn_offset(&name, p));
                    let committed = group
                        .and_then(|g| g.offsets.get(&(name.clone(), p)))
                        .filter(|_| !unstable);
                    OffsetFetchResponsePartitions {
                        partition_index: p,
                        committed_offset: committed.map_or(-1, |c| c.offset),
                        committed_leader_epoch: committed.map_or(-1, |c| c.leader_epoch),
                        metadata: Some(
                            committed
                                .and_then(|c| c.metadata.clone())
                                .unwrap_or_default(),
                        ),
                        error_code: if unstable {
                            ErrorCode::UNSTABLE_OFFSET_COMMIT.0
                        } else {
                            0
                        },
                        ..Default::default()
                    }
                })
                .collect();
            (name, parts)
        })
        .collect()
}

/// Why an OffsetFetch (v9+) naming a consumer group's member is refused.
fn check_fetching_member(
    state: &mut State,
    request: &offset_fetch_request::OffsetFetchRequestGroup,
) -> Result<(), ErrorCode> {
    let State {
        config,
        coordination,
        ..
    } = state;
    let Some(group) = coordination.groups.get_mut(&request.group_id) else {
        return Ok(());
    };
    group.expire_consumer_members(config, Instant::now());
    match group.consumer.as_ref().filter(|c| !c.is_empty()) {
        Some(consumer) => consumer_group::check_member(
            consumer,
            OffsetsAccess::Fetch,
            request.member_id.as_deref(),
            request.member_epoch,
        ),
        None => Ok(()),
    }
}

pub(crate) async fn offset_fetch(ctx: Ctx, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                if let Some(code) = ctx.coordinator_error(&g.group_id) {
                    return OffsetFetchResponseGroup {
                        group_id: g.group_id,
                        error_code: code.0,
                        ..Default::default()
                    };
                }
                let mut state = ctx.state();
                if let Err(code) = check_fetching_member(&mut state, &g) {
                    return OffsetFetchResponseGroup {
                        group_id: g.group_id,
                        error_code: code.0,
                        ..Default::default()
                    };
                }
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = fetch_offsets(&state, &g.group_id, topics, req.require_stable)
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchResponseTopics {
                        name,
                        partitions,
                        ..Default::default()
                    })
                    .collect();
                OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    topics,
                    error_code: 0,
                    ..Default::default()
                }
            })
            .collect();
        return OffsetFetchResponse {
            throttle_time_ms: ctx.throttle_ms,
            groups,
            ..Default::default()
        };
    }
    let requested: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let group_error = ctx.coordinator_error(&req.group_id);
    let topics = match group_error {
        // Before v2 there is no top-level error: every partition carries it.
        Some(code) => requested
            .unwrap_or_default()
            .into_iter()
            .map(|(name, parts)| OffsetFetchResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|p| OffsetFetchResponsePartition {
                        partition_index: p,
                        committed_offset: -1,
                        committed_leader_epoch: -1,
                        metadata: Some(String::new()),
                        error_code: code.0,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        None => {
            let state = ctx.state();
            fetch_offsets(&state, &req.group_id, requested, req.require_stable)
                .into_iter()
                .map(|(name, parts)| OffsetFetchResponseTopic {
                    name,
                    partitions: parts
                        .into_iter()
                        .map(|p| OffsetFetchResponsePartition {
                            partition_index: p.partition_index,
                            committed_offset: p.committed_offset,
                            committed_leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata,
                            error_code: p.error_code,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect()
        }
    };
    OffsetFetchResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        error_code: group_error.map_or(0, |c| c.0),
        ..Default::default()
    }
}

/// The topics a consumer-protocol member subscribes to (empty if its
/// metadata is not the consumer protocol's).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let mut r = Reader::new(metadata.clone());
    let Ok(version) = r.i16() else {
        return Vec::new();
    };
    // Newer versions only add fields at the end.
    let version = version.clamp(0, ConsumerProtocolSubscription::MAX_VERSION);
    ConsumerProtocolSubscription::decode(&mut r, version).map_or_else(|_| Vec::new(), |s| s.topics)
}

pub(crate) async fn offset_delete(ctx: Ctx, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let fail = |code: ErrorCode| OffsetDeleteResponse {
        error_code: code.0,
        throttle_time_ms: ctx.throttle_ms,
        ..Default::default()
    };
    if let Some(code) = ctx.coordinator_error(&req.group_id) {
        return fail(code);
    }
    let mut state = ctx.state();
    let Some(group) = state.coordination.groups.get_mut(&req.group_id) else {
        return fail(ErrorCode::GROUP_ID_NOT_FOUND);
    };
    let subscribed: HashSet<String> = if let Some(consumer) = &group.consumer {
        consumer.subscribed_topics().into_iter().collect()
    } else if group.protocol_type.as_deref() == Some("consumer") {
        group
            .members
            .values()
            .flat_map(|m| {
                m.protocols
                    .iter()
                    .filter(|(n, _)| Some(n) == group.protocol.as_ref())
                    .flat_map(|(_, md)| subscribed_topics(md))
            })
            .collect()
    } else {
        HashSet::new()
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = if subscribed.contains(&t.name) {
                        ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC.0
                    } else {
                        group.offsets.remove(&(t.name.clone(), p.partition_index));
                        0
                    };
                    OffsetDeleteResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code,
                    }
                })
                .collect();
            OffsetDeleteResponseTopic {
                name: t.name,
                partitions,
            }
        })
        .collect();
    OffsetDeleteResponse {
        error_code: 0,
        throttle_time_ms: ctx.throttle_ms,
        topics,
    }
}
