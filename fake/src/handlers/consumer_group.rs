//! Consumer groups of the KIP-848 protocol (ConsumerGroupHeartbeat,
//! ConsumerGroupDescribe), kept in the same [`Group`] as classic groups so
//! that committed offsets are shared by both.
//!
//! As Kafka's coordinator: every change of membership, subscriptions or the
//! subscribed topics' partitions bumps the group epoch, and the server-side
//! assignor (`uniform` or `range`) computes a target assignment at that
//! epoch. Each member moves towards its target when it heartbeats: first it
//! is told to revoke what it must give up (keeping its epoch), and only once
//! a heartbeat no longer lists those partitions does it reach the target
//! epoch and get new partitions, each only once no other member holds it.
//! A member that does not heartbeat within the session timeout, or does not
//! revoke within its rebalance timeout, is removed; its next heartbeat gets
//! UNKNOWN_MEMBER_ID.
//!
//! A group has members of one protocol at a time: a heartbeat for a group
//! with classic members gets GROUP_ID_NOT_FOUND, a JoinGroup for one with
//! consumer-protocol members INCONSISTENT_GROUP_PROTOCOL (Kafka's behaviour
//! with `group.consumer.migration.policy=disabled`).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use rskafka::protocol::{
    messages::{
        consumer_group_describe_response::{
            Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
            TopicPartitions as DescribedTopicPartitions,
        },
        consumer_group_heartbeat_response::{Assignment, TopicPartitions},
        ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
        ConsumerGroupHeartbeatResponse,
    },
    ErrorCode,
};
use tokio::time::Instant;

use super::group::Group;
use crate::{
    server::Ctx,
    state::{Config, Topic},
};

/// The member epochs of leaving: for good, and (static members) for now.
const LEAVE_EPOCH: i32 = -1;
const LEAVE_STATIC_EPOCH: i32 = -2;
/// The assignors served; the first is the default, as in Kafka.
const ASSIGNORS: [&str; 2] = ["uniform", "range"];

type TopicPartition = (String, i32);

/// One member of the consumer protocol.
#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    epoch: i32,
    /// The epoch before the last bump: a heartbeat still carrying it is
    /// accepted while its owned partitions are a subset of the assignment
    /// (the bump's response may have been lost).
    previous_epoch: i32,
    subscribed: Vec<String>,
    assignor: Option<String>,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// A static member that left with epoch -2: its partitions stay
    /// reserved for its instance id until its session runs out.
    left_static: bool,
    /// The partitions it may use.
    assigned: BTreeSet<TopicPartition>,
    /// Partitions it was told to give up and has not released yet.
    revoking: BTreeSet<TopicPartition>,
    revoke_deadline: Option<Instant>,
    /// The assignment in the last response that carried one.
    sent: Option<BTreeSet<TopicPartition>>,
}

/// The KIP-848 side of a group.
#[derive(Debug, Default)]
pub(crate) struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// Each member's target assignment, computed at `assignment_epoch`.
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// Partition counts of the subscribed topics the target was computed
    /// for: a change (a topic created, grown or deleted) bumps the epoch.
    subscribed_partitions: BTreeMap<String, i32>,
}

impl ConsumerGroup {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The topics any member subscribes to.
    pub(crate) fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Kafka's consumer group states.
    pub(crate) fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch != self.assignment_epoch {
            "Assigning"
        } else if self.members.iter().any(|(id, m)| {
            m.epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || self
                    .target
                    .get(id)
                    .map_or(!m.assigned.is_empty(), |t| *t != m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Removes members whose session or revocation time ran out.
    fn expire(&mut self, now: Instant, session_timeout: Duration) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now >= m.last_seen + session_timeout || m.revoke_deadline.is_some_and(|d| now >= d)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::debug!(member = %id, "consumer group member expired");
            self.remove(&id);
        }
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.group_epoch += 1;
        }
    }

    /// The assignor the group uses: the one most members ask for.
    fn assignor(&self) -> &'static str {
        let votes = |name: &str| {
            self.members
                .values()
                .filter(|m| m.assignor.as_deref() == Some(name))
                .count()
        };
        let mut best = ASSIGNORS[0];
        for name in ASSIGNORS {
            if votes(name) > votes(best) {
                best = name;
            }
        }
        best
    }

    /// Bumps the group epoch if the subscribed topics' partitions changed,
    /// and computes the target assignment if the epoch moved.
    fn refresh(&mut self, topics: &BTreeMap<String, Topic>) {
        let partitions: BTreeMap<String, i32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| Some((t.clone(), topics.get(&t)?.partitions.len() as i32)))
            .collect();
        if partitions != self.subscribed_partitions {
            self.subscribed_partitions = partitions;
            self.group_epoch += 1;
        }
        if self.group_epoch == self.assignment_epoch {
            return;
        }
        self.target = match self.assignor() {
            "range" => self.range_assignment(),
            _ => self.uniform_assignment(),
        };
        self.assignment_epoch = self.group_epoch;
    }

    /// The members subscribed to each topic, in member id order.
    fn subscribers(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, m) in &self.members {
            for t in &m.subscribed {
                if self.subscribed_partitions.contains_key(t) {
                    by_topic.entry(t).or_default().push(id);
                }
            }
        }
        by_topic
    }

    /// Each topic's partitions split into contiguous ranges over its
    /// subscribers, the first ones getting one more.
    fn range_assignment(&self) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
        for (topic, members) in self.subscribers() {
            let count = self.subscribed_partitions[topic];
            let (per, extra) = (count / members.len() as i32, count % members.len() as i32);
            let mut next = 0;
            for (i, m) in members.iter().enumerate() {
                let n = per + i32::from((i as i32) < extra);
                let parts = target.entry((*m).to_owned()).or_default();
                parts.extend((next..next + n).map(|p| (topic.to_owned(), p)));
                next += n;
            }
        }
        target
    }

    /// Balanced over all partitions, and sticky: members keep up to their
    /// fair share of their previous target, the rest goes to the least
    /// loaded subscriber.
    fn uniform_assignment(&self) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let subscribers = self.subscribers();
        let all: Vec<TopicPartition> = subscribers
            .keys()
            .flat_map(|t| (0..self.subscribed_partitions[*t]).map(move |p| ((*t).to_owned(), p)))
            .collect();
        let assigning = subscribers
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .len();
        // At least one each, so that with more members than partitions the
        // owners keep theirs too.
        let fair = (all.len() / assigning.max(1)).max(1);
        let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
        let mut rest = Vec::new();
        for tp in all {
            let previous = self
                .target
                .iter()
                .find(|(_, parts)| parts.contains(&tp))
                .map(|(id, _)| id.as_str())
                .filter(|id| subscribers[tp.0.as_str()].contains(id));
            match previous {
                Some(id) if target.get(id).map_or(0, BTreeSet::len) < fair => {
                    target.entry(id.to_owned()).or_default().insert(tp);
                }
                _ => rest.push(tp),
            }
        }
        for tp in rest {
            let least = subscribers[tp.0.as_str()]
                .iter()
                .min_by_key(|id| target.get(**id).map_or(0, BTreeSet::len))
                .expect("a subscribed topic has subscribers");
            target.entry((*least).to_owned()).or_default().insert(tp);
        }
        target
    }

    /// Whether a member other than `id` holds `tp` (assigned or not yet
    /// released).
    fn held_by_other(&self, id: &str, tp: &TopicPartition) -> bool {
        self.members
            .iter()
            .any(|(other, m)| other != id && (m.assigned.contains(tp) || m.revoking.contains(tp)))
    }

    /// Moves member `id` towards its target, given the partitions its
    /// heartbeat reports owned (`None`: unchanged).
    fn reconcile(&mut self, id: &str, reported: Option<&BTreeSet<TopicPartition>>, now: Instant) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let (assignment_epoch, free): (i32, Vec<TopicPartition>) = {
            let free = target
                .iter()
                .filter(|tp| !self.held_by_other(id, tp))
                .cloned()
                .collect();
            (self.assignment_epoch, free)
        };
        let m = self.members.get_mut(id).expect("reconciled members exist");
        if !m.revoking.is_empty() {
            if !reported.is_some_and(|r| r.is_disjoint(&m.revoking)) {
                return;
            }
            m.revoking.clear();
            m.revoke_deadline = None;
        }
        let revoke: BTreeSet<TopicPartition> = m.assigned.difference(&target).cloned().collect();
        if !revoke.is_empty() {
            m.assigned.retain(|tp| !revoke.contains(tp));
            m.revoking = revoke;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
            return;
        }
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        m.assigned.extend(free);
    }
}

fn error(ctx: &Ctx, code: ErrorCode, message: &str) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        error_message: Some(message.to_owned()),
        ..Default::default()
    }
}

/// Kafka's checks of a heartbeat's fields, before the group is looked at.
fn check_request(version: i16, req: &ConsumerGroupHeartbeatRequest) -> Result<(), &'static str> {
    if req.group_id.is_empty() {
        return Err("GroupId can't be empty.");
    }
    if req.instance_id.as_deref() == Some("") {
        return Err("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return Err("RackId can't be empty.");
    }
    // From v1 the client chooses its member id (KIP-1082).
    if version >= 1 && req.member_id.is_empty() {
        return Err("MemberId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return Err("RebalanceTimeoutMs must be provided in first request.");
            }
            if !req.topic_partitions.as_ref().is_some_and(Vec::is_empty) {
                return Err("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return Err(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        LEAVE_STATIC_EPOCH if req.instance_id.is_none() => {
            return Err("InstanceId can't be null when leaving as a static member.");
        }
        e if e < LEAVE_STATIC_EPOCH => return Err("MemberEpoch is invalid."),
        _ if req.member_id.is_empty() => return Err("MemberId can't be empty."),
        _ => {}
    }
    // An empty regex is no regex (librdkafka sends one with topic names).
    if req
        .subscribed_topic_regex
        .as_deref()
        .is_some_and(|r| !r.is_empty())
    {
        return Err("the fake cluster serves no regex subscriptions");
    }
    Ok(())
}

/// The group's consumer-protocol side, if the group can take one.
fn consumer_side(group: &mut Group) -> Result<&mut ConsumerGroup, ErrorCode> {
    if group.has_classic_members() {
        return Err(ErrorCode::GROUP_ID_NOT_FOUND);
    }
    Ok(group.consumer.get_or_insert_with(Default::default))
}

pub(crate) async fn heartbeat(
    ctx: Ctx,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    if let Some(code) = ctx.coordinator_error(&req.group_id) {
        return error(&ctx, code, code.description());
    }
    if let Err(why) = check_request(ctx.version, &req) {
        return error(&ctx, ErrorCode::INVALID_REQUEST, why);
    }
    if req
        .server_assignor
        .as_deref()
        .is_some_and(|a| !ASSIGNORS.contains(&a))
    {
        return error(
            &ctx,
            ErrorCode::UNSUPPORTED_ASSIGNOR,
            "the fake cluster's assignors are uniform and range",
        );
    }
    let now = Instant::now();
    let mut guard = ctx.state();
    let state = &mut *guard;
    let config: &Config = &state.config;
    let group = state
        .coordination
        .groups
        .entry(req.group_id.clone())
        .or_default();
    let group = match consumer_side(group) {
        Ok(g) => g,
        Err(code) => {
            return error(
                &ctx,
                code,
                &format!("Group {} is not a consumer group.", req.group_id),
            )
        }
    };
    group.expire(now, config.consumer_session_timeout);
    let member_id = match req.member_epoch {
        LEAVE_EPOCH | LEAVE_STATIC_EPOCH => {
            return leave(&ctx, group, &req, now);
        }
        0 => match join(&ctx, group, &req, now) {
            Ok(id) => id,
            Err((code, why)) => return error(&ctx, code, why),
        },
        epoch => {
            let Some(m) = group.members.get(&req.member_id) else {
                return error(
                    &ctx,
                    ErrorCode::UNKNOWN_MEMBER_ID,
                    "The member is not in the group.",
                );
            };
            let owned_subset = || {
                req.topic_partitions.as_ref().is_some_and(|tps| {
                    tps.iter().all(|t| {
                        let name = state.topics.iter().find(|(_, x)| x.id == t.topic_id);
                        t.partitions.iter().all(|p| {
                            name.is_some_and(|(n, _)| m.assigned.contains(&(n.clone(), *p)))
                        })
                    })
                })
            };
            // An older epoch is accepted only as the one before the last
            // bump, from a member that owns nothing it must not.
            if epoch > m.epoch
                || (epoch < m.epoch && !(epoch == m.previous_epoch && owned_subset()))
            {
                return error(
                    &ctx,
                    ErrorCode::FENCED_MEMBER_EPOCH,
                    "The member epoch is fenced by the coordinator.",
                );
            }
            req.member_id.clone()
        }
    };
    let m = group.members.get_mut(&member_id).expect("joined above");
    m.last_seen = now;
    m.left_static = false;
    if let Some(rack) = &req.rack_id {
        m.rack_id = Some(rack.clone());
    }
    if req.rebalance_timeout_ms >= 0 {
        m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
    }
    let mut changed = false;
    if let Some(topics) = &req.subscribed_topic_names {
        let mut topics = topics.clone();
        topics.sort();
        topics.dedup();
        changed |= m.subscribed != topics;
        m.subscribed = topics;
    }
    if let Some(assignor) = &req.server_assignor {
        changed |= m.assignor.as_ref() != Some(assignor);
        m.assignor = Some(assignor.clone());
    }
    if changed {
        group.group_epoch += 1;
    }
    group.refresh(&state.topics);
    let reported: Option<BTreeSet<TopicPartition>> = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|t| {
                let name = state.topics.iter().find(|(_, x)| x.id == t.topic_id)?.0;
                Some(t.partitions.iter().map(move |p| (name.clone(), *p)))
            })
            .flatten()
            .collect()
    });
    group.reconcile(&member_id, reported.as_ref(), now);
    let m = group.members.get_mut(&member_id).expect("reconciled");
    // The assignment goes out when it changed, and to every (re)join.
    let assignment = (req.member_epoch == 0 || m.sent.as_ref() != Some(&m.assigned)).then(|| {
        m.sent = Some(m.assigned.clone());
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &m.assigned {
            by_topic.entry(t).or_default().push(*p);
        }
        Assignment {
            topic_partitions: by_topic
                .into_iter()
                .filter_map(|(t, partitions)| {
                    Some(TopicPartitions {
                        topic_id: state.topics.get(t)?.id,
                        partitions,
                        ..Default::default()
                    })
                })
                .collect(),
            ..Default::default()
        }
    });
    ConsumerGroupHeartbeatResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: 0,
        error_message: None,
        member_id: Some(member_id),
        member_epoch: m.epoch,
        heartbeat_interval_ms: i32::try_from(config.consumer_heartbeat_interval.as_millis())
            .unwrap_or(i32::MAX),
        assignment,
        ..Default::default()
    }
}

/// A join (epoch 0): a new member, a static member taking its place back,
/// or a member that lost its state starting over. The member's id, or why
/// it is refused.
fn join(
    ctx: &Ctx,
    group: &mut ConsumerGroup,
    req: &ConsumerGroupHeartbeatRequest,
    now: Instant,
) -> Result<String, (ErrorCode, &'static str)> {
    // Before v1 the coordinator names the member.
    let member_id = if req.member_id.is_empty() {
        crate::state::random_uuid().to_string()
    } else {
        req.member_id.clone()
    };
    let previous_static = req.instance_id.as_ref().and_then(|instance| {
        group
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
            .map(|(id, m)| (id.clone(), m.left_static))
    });
    let member = match previous_static {
        Some((old, left)) if old != member_id && !left => {
            return Err((
                ErrorCode::UNRELEASED_INSTANCE_ID,
                "Another member holds this static instance id.",
            ));
        }
        // KIP-345: a static member coming back keeps its partitions and
        // epoch, without a rebalance.
        Some((old, _)) => {
            let m = group.members.remove(&old).expect("found above");
            if let Some(target) = group.target.remove(&old) {
                group.target.insert(member_id.clone(), target);
            }
            Member { sent: None, ..m }
        }
        None => {
            // A member that lost its state starts over: its partitions are
            // released first.
            group.remove(&member_id);
            group.group_epoch += 1;
            Member {
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: ctx.client_id.clone().unwrap_or_default(),
                epoch: 0,
                previous_epoch: 0,
                subscribed: Vec::new(),
                assignor: None,
                rebalance_timeout: Duration::ZERO,
                last_seen: now,
                left_static: false,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                revoke_deadline: None,
                sent: None,
            }
        }
    };
    group.members.insert(member_id.clone(), member);
    Ok(member_id)
}

/// A leave: for good (-1), or a static member's for now (-2).
fn leave(
    ctx: &Ctx,
    group: &mut ConsumerGroup,
    req: &ConsumerGroupHeartbeatRequest,
    now: Instant,
) -> ConsumerGroupHeartbeatResponse {
    let Some(m) = group.members.get_mut(&req.member_id) else {
        return error(
            ctx,
            ErrorCode::UNKNOWN_MEMBER_ID,
            "The member is not in the group.",
        );
    };
    if req.member_epoch == LEAVE_STATIC_EPOCH {
        m.left_static = true;
        m.last_seen = now;
    } else {
        group.remove(&req.member_id);
    }
    ConsumerGroupHeartbeatResponse {
        throttle_time_ms: ctx.throttle_ms,
        member_id: Some(req.member_id.clone()),
        member_epoch: req.member_epoch,
        ..Default::default()
    }
}

/// What a request to a consumer group's offsets comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetsAccess {
    /// OffsetCommit or TxnOffsetCommit: without a member only to an empty
    /// group.
    Commit,
    /// OffsetFetch: without a member (admin clients) always.
    Fetch,
}

/// Why a request to a consumer group's offsets is refused, as Kafka's
/// consumer group checks it: a member must exist and send its current
/// epoch.
pub(crate) fn check_member(
    group: &ConsumerGroup,
    access: OffsetsAccess,
    member_id: Option<&str>,
    epoch: i32,
) -> Result<(), ErrorCode> {
    let anonymous = epoch < 0 && member_id.is_none_or(str::is_empty);
    if anonymous && (access == OffsetsAccess::Fetch || group.members.is_empty()) {
        return Ok(());
    }
    let m = group
        .members
        .get(member_id.unwrap_or_default())
        .ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
    if m.epoch != epoch {
        return Err(ErrorCode::STALE_MEMBER_EPOCH);
    }
    Ok(())
}

impl Group {
    /// Expires consumer-protocol members whose time ran out.
    pub(crate) fn expire_consumer_members(&mut self, config: &Config, now: Instant) {
        if let Some(g) = &mut self.consumer {
            g.expire(now, config.consumer_session_timeout);
        }
    }
}

pub(crate) async fn describe(
    ctx: Ctx,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let now = Instant::now();
    let groups = req
        .group_ids
        .into_iter()
        .map(|group_id| {
            let fail = |code: ErrorCode, message: String, group_id: String| DescribedGroup {
                error_code: code.0,
                error_message: Some(message),
                group_id,
                ..Default::default()
            };
            if let Some(code) = ctx.coordinator_error(&group_id) {
                return fail(code, code.description().to_owned(), group_id);
            }
            let mut guard = ctx.state();
            let state = &mut *guard;
            let Some(group) = state
                .coordination
                .groups
                .get_mut(&group_id)
                .filter(|g| !g.has_classic_members())
                .and_then(|g| {
                    g.expire_consumer_members(&state.config, now);
                    g.consumer.as_mut()
                })
            else {
                let message = format!("Group {group_id} not found.");
                return fail(ErrorCode::GROUP_ID_NOT_FOUND, message, group_id);
            };
            group.refresh(&state.topics);
            let described = |parts: &BTreeSet<TopicPartition>| {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(*p);
                }
                DescribedAssignment {
                    topic_partitions: by_topic
                        .into_iter()
                        .map(|(t, partitions)| DescribedTopicPartitions {
                            topic_id: state.topics.get(t).map(|x| x.id).unwrap_or_default(),
                            topic_name: t.to_owned(),
                            partitions,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            };
            DescribedGroup {
                error_code: 0,
                error_message: None,
                group_id,
                group_state: group.state_name().into(),
                group_epoch: group.group_epoch,
                assignment_epoch: group.assignment_epoch,
                assignor_name: group.assignor().into(),
                members: group
                    .members
                    .iter()
                    .map(|(id, m)| DescribedMember {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        rack_id: m.rack_id.clone(),
                        member_epoch: m.epoch,
                        client_id: m.client_id.clone(),
                        client_host: "/127.0.0.1".into(),
                        subscribed_topic_names: m.subscribed.clone(),
                        subscribed_topic_regex: None,
                        assignment: described(&m.assigned),
                        target_assignment: described(
                            &group.target.get(id).cloned().unwrap_or_default(),
                        ),
                        ..Default::default()
                    })
                    .collect(),
                authorized_operations: i32::MIN,
                ..Default::default()
            }
        })
        .collect();
    ConsumerGroupDescribeResponse {
        throttle_time_ms: ctx.throttle_ms,
        groups,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: &[(&str, &[&str])], partitions: &[(&str, i32)]) -> ConsumerGroup {
        let mut g = ConsumerGroup::default();
        for (id, topics) in members {
            g.members.insert(
                (*id).to_owned(),
                Member {
                    instance_id: None,
                    rack_id: None,
                    client_id: String::new(),
                    epoch: 0,
                    previous_epoch: 0,
                    subscribed: topics.iter().map(|t| (*t).to_owned()).collect(),
                    assignor: None,
                    rebalance_timeout: Duration::from_secs(30),
                    last_seen: Instant::now(),
                    left_static: false,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    revoke_deadline: None,
                    sent: None,
                },
            );
        }
        g.subscribed_partitions = partitions
            .iter()
            .map(|(t, n)| ((*t).to_owned(), *n))
            .collect();
        g
    }

    fn partitions_of(target: &BTreeMap<String, BTreeSet<TopicPartition>>, id: &str) -> Vec<i32> {
        target[id].iter().map(|(_, p)| *p).collect()
    }

    #[test]
    fn range_splits_each_topic_contiguously() {
        let g = group(&[("a", &["t"]), ("b", &["t"])], &[("t", 5)]);
        let target = g.range_assignment();
        assert_eq!(partitions_of(&target, "a"), vec![0, 1, 2]);
        assert_eq!(partitions_of(&target, "b"), vec![3, 4]);
    }

    #[test]
    fn uniform_balances_and_keeps_what_it_can() {
        let mut g = group(&[("a", &["t"]), ("b", &["t"])], &[("t", 6)]);
        g.target = g.uniform_assignment();
        let (a, b) = (partitions_of(&g.target, "a"), partitions_of(&g.target, "b"));
        assert_eq!((a.len(), b.len()), (3, 3));
        // A third member takes one from each; nothing else moves.
        g.members.insert("c".into(), g.members["a"].clone());
        let next = g.uniform_assignment();
        assert_eq!(
            next.values().map(BTreeSet::len).collect::<Vec<_>>(),
            [2, 2, 2]
        );
        assert!(next["a"].is_subset(&g.target["a"]) && next["b"].is_subset(&g.target["b"]));
        // A member subscribed to nothing served gets nothing.
        let g = group(&[("a", &["t"]), ("x", &["other"])], &[("t", 2)]);
        let target = g.uniform_assignment();
        assert_eq!(partitions_of(&target, "a"), vec![0, 1]);
        assert!(!target.contains_key("x"));
    }
}
