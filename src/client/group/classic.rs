//! The classic group membership protocol as a sans-IO state machine.
//!
//! [`ClassicMember`] performs no I/O and reads no clock; the driver runs it
//! through the [`Member`] trait, as it runs the KIP-848 member. Its
//! settings are the [`GroupConfig`]'s.
//!
//! The protocol, as the Java client runs it:
//!
//! 1. FindCoordinator for the group.
//! 2. Before joining, give up partitions: all of them (eager protocol), or
//!    none (cooperative); the application gets a [`MembershipEvent::Revoke`]
//!    and must answer with [`revocation_done`](Member::revocation_done)
//!    after committing, so no processed-but-uncommitted work changes hands.
//!    After losing the membership (an unknown member id, an illegal
//!    generation), partitions are [`Lost`](MembershipEvent::Lost) instead:
//!    committing them is no longer possible.
//! 3. JoinGroup with one subscription per assignor. A first join without a
//!    member id is answered with MEMBER_ID_REQUIRED and the id to use
//!    (KIP-394); the member joins again with it.
//! 4. The leader gets every member's subscription, fetches the topics'
//!    metadata ([`GroupRequest::Metadata`]), runs the chosen assignor and
//!    sends the assignments in SyncGroup; the others send an empty SyncGroup.
//! 5. The SyncGroup answer is the member's assignment. Under the cooperative
//!    protocol, owned partitions missing from it are revoked and the member
//!    rejoins at once, so that the follow-up rebalance can give them to
//!    their new owner.
//! 6. Heartbeats every `heartbeat_interval` keep the membership; the answer
//!    REBALANCE_IN_PROGRESS starts the next rebalance (back to step 2).
//!    The leader also looks at the subscribed topics' partitions every
//!    metadata period and rebalances when their counts changed, so that new
//!    partitions get consumed.
//!
//! NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE (and broken connections to
//! the coordinator) send it back to step 1 keeping the membership;
//! FENCED_INSTANCE_ID (another process took this static member's instance
//! id) and authorization or configuration errors are fatal.

use std::{
    collections::{BTreeSet, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    assignor::{GroupMember, GroupTopics, MemberAssignmentState, RebalanceProtocol},
    config::GroupConfig,
    member::{CoordinatorState, GroupRequest, GroupResponse, Member, MembershipEvent},
    protocol::{Assignment, Subscription, CONSUMER_PROTOCOL_VERSION, PROTOCOL_TYPE},
    TopicPartition,
};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::{Error, ErrorKind},
    protocol::{
        messages::{
            join_group_request::JoinGroupRequestProtocol,
            sync_group_request::SyncGroupRequestAssignment, HeartbeatRequest, HeartbeatResponse,
            JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
        },
        ErrorCode,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in a generation: will (prepare to) join.
    Unjoined,
    /// Waiting for the application to finish revoking before joining.
    PreparingJoin,
    /// JoinGroup in flight.
    Joining,
    /// Leader: waiting for topic metadata to assign.
    AwaitingMetadata,
    /// SyncGroup in flight.
    Syncing,
    /// In a generation.
    Stable,
    /// LeaveGroup to send or in flight.
    Leaving,
    /// Done: left or failed.
    Done,
}

/// What the leader keeps between JoinGroup and the metadata answer.
#[derive(Debug, Clone)]
struct LeaderJob {
    protocol: String,
    members: Vec<GroupMember>,
    skip_assignment: bool,
}

/// A classic-protocol group member; see the [module docs](self).
#[derive(Debug)]
pub struct ClassicMember {
    config: Arc<GroupConfig>,
    /// The topics subscribed to: the configured ones, or those a matching
    /// subscription covers now.
    topics: Vec<String>,
    protocol: RebalanceProtocol,
    state: State,
    coordinator: CoordinatorState,
    member_id: String,
    generation_id: i32,
    protocol_name: Option<String>,
    owned: Vec<TopicPartition>,
    last_assignment: Option<Vec<TopicPartition>>,
    /// A revocation the application has not confirmed yet.
    revoking: Option<Vec<TopicPartition>>,
    /// Rejoin once the pending revocation is confirmed (cooperative).
    rejoin_after_revoke: bool,
    leader_job: Option<LeaderJob>,
    metadata_requested: bool,
    /// The SyncGroup to send next (`None` once sent).
    pending_sync: Option<SyncGroupRequest>,
    /// Partition counts the leader assigned with, to notice new partitions.
    assigned_snapshot: Option<Vec<(String, usize)>>,
    /// How often the leader looks at the partition counts again.
    metadata_period: Duration,
    next_partition_check: Option<Instant>,
    checking_partitions: bool,
    heartbeat_in_flight: Option<i32>,
    next_heartbeat: Option<Instant>,
    last_heartbeat_ok: Option<Instant>,
    leave_sent: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    events: VecDeque<MembershipEvent>,
    /// Why the next JoinGroup happens (KIP-800 reason).
    rejoin_reason: String,
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_COORDINATOR || code == ErrorCode::COORDINATOR_NOT_AVAILABLE
}

impl ClassicMember {
    /// A member that will find its coordinator and join at once, pacing
    /// retries with `backoff`; as leader, it looks at the partitions of the
    /// subscribed topics every `metadata_period`.
    pub fn new(
        config: Arc<GroupConfig>,
        backoff: &BackoffConfig,
        metadata_period: Duration,
    ) -> Self {
        let protocol = if !config.assignors.is_empty()
            && config.assignors.iter().all(|a| {
                a.supported_protocols()
                    .contains(&RebalanceProtocol::Cooperative)
            }) {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        };
        Self {
            backoff: Backoff::new(backoff, None),
            topics: config.topics.clone(),
            config,
            protocol,
            state: State::Unjoined,
            coordinator: CoordinatorState::default(),
            member_id: String::new(),
            generation_id: -1,
            protocol_name: None,
            owned: Vec::new(),
            last_assignment: None,
            revoking: None,
            rejoin_after_revoke: false,
            leader_job: None,
            metadata_requested: false,
            pending_sync: None,
            assigned_snapshot: None,
            metadata_period,
            next_partition_check: None,
            checking_partitions: false,
            heartbeat_in_flight: None,
            next_heartbeat: None,
            last_heartbeat_ok: None,
            leave_sent: false,
            retry_at: None,
            events: VecDeque::new(),
            rejoin_reason: "joining the group".into(),
        }
    }

    /// The rebalance protocol: cooperative if every assignor supports it.
    pub fn rebalance_protocol(&self) -> RebalanceProtocol {
        self.protocol
    }

    /// The static instance id.
    pub fn instance_id(&self) -> Option<&str> {
        self.config.instance_id.as_deref()
    }

    /// The partitions the member owns.
    pub fn owned(&self) -> &[TopicPartition] {
        &self.owned
    }

    /// Whether the member is in a generation with an assignment.
    pub fn is_stable(&self) -> bool {
        self.state == State::Stable && self.revoking.is_none()
    }

    /// Whether the group elected this member leader in the current
    /// generation.
    pub fn is_leader(&self) -> bool {
        self.assigned_snapshot.is_some()
    }

    fn fail(&mut self, e: Error) {
        tracing::warn!(group = %self.config.group_id, error = %e, "group membership failed");
        self.state = State::Done;
        self.events.push_back(MembershipEvent::Fatal(e));
    }

    fn retry_later(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff.next_delay());
    }

    fn coordinator_lost(&mut self, now: Instant) {
        if self.coordinator.forget() {
            tracing::info!(group = %self.config.group_id, "group coordinator lost; looking it up again");
        }
        self.heartbeat_in_flight = None;
        self.retry_later(now);
    }

    /// Forget the membership (member id and generation): the partitions
    /// owned are lost at the next join.
    fn reset_generation(&mut self) {
        self.member_id.clear();
        self.generation_id = -1;
        self.protocol_name = None;
        self.assigned_snapshot = None;
    }

    fn rejoin(&mut self, reason: impl Into<String>) {
        if matches!(self.state, State::Leaving | State::Done) {
            return;
        }
        self.rejoin_reason = reason.into();
        self.state = State::Unjoined;
        // A heartbeat answer still on its way concerns the old state.
        self.heartbeat_in_flight = None;
        self.leader_job = None;
        self.metadata_requested = false;
        self.pending_sync = None;
    }

    /// Java's `onJoinPrepare`: decide what to give up before joining.
    fn prepare_join(&mut self) {
        if self.revoking.is_some() {
            self.state = State::PreparingJoin;
            return;
        }
        if self.generation_id < 0 || self.member_id.is_empty() {
            if !self.owned.is_empty() {
                let lost = std::mem::take(&mut self.owned);
                self.events.push_back(MembershipEvent::Lost(lost));
            }
            return;
        }
        if self.protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            self.revoking = Some(self.owned.clone());
            self.state = State::PreparingJoin;
            self.events
                .push_back(MembershipEvent::Revoke(self.owned.clone()));
        }
    }

    fn heartbeat(&mut self, now: Instant) -> Option<GroupRequest> {
        if self.generation_id < 0 || self.member_id.is_empty() {
            return None;
        }
        if self.heartbeat_in_flight.is_some() || self.next_heartbeat.is_some_and(|t| now < t) {
            return None;
        }
        self.heartbeat_in_flight = Some(self.generation_id);
        self.next_heartbeat = Some(now + self.config.heartbeat_interval);
        Some(GroupRequest::Heartbeat(HeartbeatRequest {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            ..Default::default()
        }))
    }

    fn join_request(&mut self) -> GroupRequest {
        self.state = State::Joining;
        let state = MemberAssignmentState {
            generation: self.generation_id,
            last_assignment: self.last_assignment.as_deref(),
        };
        let protocols = self
            .config
            .assignors
            .iter()
            .filter_map(|a| {
                let subscription = Subscription {
                    topics: self.topics.clone(),
                    user_data: a.subscription_user_data(&state),
                    owned_partitions: self.owned.clone(),
                    generation_id: (self.generation_id >= 0).then_some(self.generation_id),
                    rack_id: self.config.rack_id.clone(),
                    group_instance_id: None,
                };
                // Encoding a subscription cannot fail for valid names; an
                // assignor whose subscription does not encode is left out.
                let metadata = subscription.encode(CONSUMER_PROTOCOL_VERSION).ok()?;
                Some(JoinGroupRequestProtocol {
                    name: a.name().to_owned(),
                    metadata,
                    ..Default::default()
                })
            })
            .collect();
        GroupRequest::JoinGroup(JoinGroupRequest {
            group_id: self.config.group_id.clone(),
            session_timeout_ms: duration_ms(self.config.session_timeout),
            rebalance_timeout_ms: duration_ms(self.config.rebalance_timeout),
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            protocol_type: PROTOCOL_TYPE.to_owned(),
            protocols,
            reason: Some(self.rejoin_reason.clone()),
            ..Default::default()
        })
    }

    fn leave_request(&mut self) -> Option<GroupRequest> {
        if self.leave_sent {
            return None;
        }
        if self.coordinator.id().is_none() || self.member_id.is_empty() {
            self.finish_leave();
            return None;
        }
        self.leave_sent = true;
        Some(GroupRequest::LeaveGroup {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            reason: "the consumer is closing".into(),
        })
    }

    fn finish_leave(&mut self) {
        self.state = State::Done;
        self.reset_generation();
        self.events.push_back(MembershipEvent::Left);
    }

    /// The FindCoordinator outcome: the coordinator's broker id.
    pub fn handle_coordinator(&mut self, result: Result<i32, Error>, now: Instant) {
        match self.coordinator.handle_lookup(result) {
            Ok(_) => {
                self.backoff.reset();
                if self.generation_id >= 0 {
                    // The new coordinator gets a heartbeat at once, so that
                    // a lost membership is noticed quickly.
                    self.next_heartbeat = Some(now);
                    self.last_heartbeat_ok = Some(now);
                }
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(group = %self.config.group_id, error = %e, "FindCoordinator failed; retrying");
                self.retry_later(now);
            }
            Err(e) => self.fail(e),
        }
    }

    /// The JoinGroup outcome.
    pub fn handle_join_group(&mut self, result: Result<JoinGroupResponse, Error>, now: Instant) {
        if self.state != State::Joining {
            return;
        }
        let resp = match result {
            Ok(r) => r,
            Err(e) => return self.request_failed(e, now),
        };
        let code = ErrorCode(resp.error_code);
        match code {
            ErrorCode::NONE => {}
            ErrorCode::MEMBER_ID_REQUIRED => {
                // KIP-394: join again with the id the coordinator assigned.
                self.member_id = resp.member_id;
                self.state = State::Unjoined;
                return;
            }
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => {
                self.reset_generation();
                self.state = State::Unjoined;
                self.retry_later(now);
                return;
            }
            c if is_coordinator_error(c) => {
                self.state = State::Unjoined;
                return self.coordinator_lost(now);
            }
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS | ErrorCode::REBALANCE_IN_PROGRESS => {
                self.state = State::Unjoined;
                return self.retry_later(now);
            }
            c => {
                return self.fail(
                    Error::kafka(c, None)
                        .with_message(format!("joining group {}", self.config.group_id)),
                )
            }
        }
        self.backoff.reset();
        self.member_id = resp.member_id;
        self.generation_id = resp.generation_id;
        self.protocol_name = resp.protocol_name.clone();
        self.last_heartbeat_ok = Some(now);
        self.next_heartbeat = Some(now + self.config.heartbeat_interval);
        self.heartbeat_in_flight = None;
        self.assigned_snapshot = None;
        let Some(protocol) = resp
            .protocol_name
            .filter(|p| self.config.assignors.iter().any(|a| a.name() == p))
        else {
            return self.fail(
                Error::kafka(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, None)
                    .with_message("the coordinator chose an assignor this member does not have"),
            );
        };
        if resp.leader == self.member_id {
            let members = resp
                .members
                .into_iter()
                .map(|m| {
                    let mut subscription = Subscription::decode(m.metadata).unwrap_or_else(|e| {
                        // The Java leader would fail the rebalance; giving
                        // the member nothing keeps the rest of the group
                        // working.
                        tracing::warn!(member = %m.member_id, error = %e, "undecodable subscription");
                        Subscription::default()
                    });
                    subscription.group_instance_id = m.group_instance_id;
                    GroupMember {
                        member_id: m.member_id,
                        subscription,
                    }
                })
                .collect();
            self.leader_job = Some(LeaderJob {
                protocol,
                members,
                skip_assignment: resp.skip_assignment,
            });
            if resp.skip_assignment {
                // KIP-814: a returning static leader keeps the assignment
                // the coordinator has; it sends no assignments.
                self.send_sync(Vec::new());
            } else {
                self.state = State::AwaitingMetadata;
                self.metadata_requested = false;
            }
        } else {
            self.send_sync(Vec::new());
        }
    }

    fn send_sync(&mut self, assignments: Vec<SyncGroupRequestAssignment>) {
        self.state = State::Syncing;
        self.pending_sync = Some(SyncGroupRequest {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            protocol_type: Some(PROTOCOL_TYPE.to_owned()),
            protocol_name: self.protocol_name.clone(),
            assignments,
            ..Default::default()
        });
    }

    /// The topic metadata the leader asked for (only subscribed topics that
    /// exist need to be present).
    pub fn handle_metadata(&mut self, result: Result<GroupTopics, Error>, now: Instant) {
        if self.state != State::AwaitingMetadata {
            return;
        }
        let topics = match result {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "metadata for the assignment failed; retrying");
                self.metadata_requested = false;
                return self.retry_later(now);
            }
        };
        let Some(job) = self.leader_job.take() else {
            return self.rejoin("leader state missing");
        };
        let Some(assignor) = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == job.protocol)
            .cloned()
        else {
            return self.fail(Error::invalid_input(
                "the chosen assignor is not configured",
            ));
        };
        let assignment = match assignor.assign(&topics, &job.members) {
            Ok(a) => a,
            Err(e) => {
                return self.fail(
                    Error::new(ErrorKind::Protocol)
                        .with_message(format!("assignor {}: {e}", job.protocol)),
                )
            }
        };
        let mut seen = HashSet::new();
        let mut assignments = Vec::new();
        for m in &job.members {
            let mut partitions = assignment.get(&m.member_id).cloned().unwrap_or_default();
            // A custom assignor must not hand a partition out twice.
            partitions.retain(|tp| seen.insert(tp.clone()));
            let bytes = match (Assignment {
                partitions,
                user_data: None,
            })
            .encode(CONSUMER_PROTOCOL_VERSION)
            {
                Ok(b) => b,
                Err(e) => return self.fail(Error::new(ErrorKind::Protocol).with_source(e)),
            };
            assignments.push(SyncGroupRequestAssignment {
                member_id: m.member_id.clone(),
                assignment: bytes,
                ..Default::default()
            });
        }
        self.assigned_snapshot = Some(snapshot(&topics));
        self.next_partition_check = Some(now + self.metadata_period);
        tracing::info!(
            group = %self.config.group_id,
            generation = self.generation_id,
            assignor = %job.protocol,
            members = job.members.len(),
            skip = job.skip_assignment,
            "computed the group assignment as leader"
        );
        self.send_sync(assignments);
    }

    /// The SyncGroup outcome: the member's assignment.
    pub fn handle_sync_group(&mut self, result: Result<SyncGroupResponse, Error>, now: Instant) {
        if self.state != State::Syncing {
            return;
        }
        let resp = match result {
            Ok(r) => r,
            Err(e) => return self.request_failed(e, now),
        };
        match ErrorCode(resp.error_code) {
            ErrorCode::NONE => {}
            ErrorCode::REBALANCE_IN_PROGRESS => {
                return self.rejoin("the group started another rebalance during SyncGroup")
            }
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => {
                self.reset_generation();
                self.rejoin("the coordinator no longer knows this member");
                return self.retry_later(now);
            }
            c if is_coordinator_error(c) => {
                self.rejoin("the group coordinator moved");
                return self.coordinator_lost(now);
            }
            c => {
                return self.fail(
                    Error::kafka(c, None)
                        .with_message(format!("syncing group {}", self.config.group_id)),
                )
            }
        }
        let mismatch = resp
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != PROTOCOL_TYPE)
            || resp
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if mismatch {
            return self.fail(
                Error::kafka(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, None)
                    .with_message("SyncGroup answered with another protocol"),
            );
        }
        let assignment = match Assignment::decode(resp.assignment) {
            Ok(a) => a,
            Err(e) => {
                return self.fail(
                    Error::new(ErrorKind::Protocol)
                        .with_message("undecodable assignment from the leader")
                        .with_source(e),
                )
            }
        };
        self.backoff.reset();
        self.last_heartbeat_ok = Some(now);
        let mut assigned: Vec<TopicPartition> = Vec::new();
        for tp in assignment.partitions {
            if !assigned.contains(&tp) {
                assigned.push(tp);
            }
        }
        assigned.sort();
        let revoked: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|tp| !assigned.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.owned.contains(tp))
            .cloned()
            .collect();
        self.state = State::Stable;
        if !revoked.is_empty() {
            // Cooperative: give these up, then rejoin so that the follow-up
            // rebalance hands them to their new owner.
            self.revoking = Some(revoked.clone());
            self.rejoin_after_revoke = true;
            self.events.push_back(MembershipEvent::Revoke(revoked));
        }
        self.owned = assigned.clone();
        self.last_assignment = Some(assigned.clone());
        self.events.push_back(MembershipEvent::Assigned {
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            added,
            assignment: assigned,
        });
    }

    /// The Heartbeat outcome.
    pub fn handle_heartbeat(&mut self, result: Result<HeartbeatResponse, Error>, now: Instant) {
        let Some(sent_generation) = self.heartbeat_in_flight.take() else {
            return;
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if e.is_retriable() {
                    self.next_heartbeat = Some(now + self.backoff.next_delay());
                    if e.kind() == ErrorKind::Connection {
                        self.coordinator_lost(now);
                    }
                } else {
                    self.fail(e);
                }
                return;
            }
        };
        let current = sent_generation == self.generation_id;
        match ErrorCode(resp.error_code) {
            ErrorCode::NONE => {
                self.last_heartbeat_ok = Some(now);
            }
            ErrorCode::REBALANCE_IN_PROGRESS => {
                self.last_heartbeat_ok = Some(now);
                // During SyncGroup the rebalance is the one under way.
                if self.state == State::Stable && current {
                    self.rejoin("the group is rebalancing");
                }
            }
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION if current => {
                tracing::info!(group = %self.config.group_id, "the coordinator no longer knows this member; rejoining");
                self.reset_generation();
                self.rejoin("the member was removed from the group");
            }
            ErrorCode::FENCED_INSTANCE_ID if current => {
                self.fail(
                    Error::kafka(ErrorCode::FENCED_INSTANCE_ID, None).with_message(
                        "another consumer with the same group instance id joined the group",
                    ),
                );
            }
            c if is_coordinator_error(c) => self.coordinator_lost(now),
            ErrorCode::UNKNOWN_MEMBER_ID
            | ErrorCode::ILLEGAL_GENERATION
            | ErrorCode::FENCED_INSTANCE_ID => {}
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                self.next_heartbeat = Some(now + self.backoff.next_delay());
            }
            c => self.fail(Error::kafka(c, None).with_message("heartbeat")),
        }
    }

    /// The LeaveGroup outcome (the member is gone either way).
    pub fn handle_leave_group(&mut self, result: Result<(), Error>, _now: Instant) {
        if let Err(e) = result {
            tracing::debug!(group = %self.config.group_id, error = %e, "LeaveGroup failed; the session will expire instead");
        }
        if self.state == State::Leaving {
            self.finish_leave();
        }
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The topics the leader assigns: every member's subscription.
    fn assignment_topics(&self) -> Vec<String> {
        let topics: BTreeSet<String> = self
            .leader_job
            .iter()
            .flat_map(|j| j.members.iter())
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect();
        topics.into_iter().collect()
    }

    /// Whether a look at the partition counts is to come: the leader's,
    /// while stable.
    fn partition_check_pending(&self) -> bool {
        self.is_stable() && self.is_leader() && !self.checking_partitions
    }

    /// The leader's periodic metadata request, if due (answered through
    /// [`handle_metadata_update`](Self::handle_metadata_update)).
    fn partition_check(&mut self, now: Instant) -> Option<GroupRequest> {
        if !self.partition_check_pending() || self.next_partition_check.is_some_and(|t| now < t) {
            return None;
        }
        self.checking_partitions = true;
        self.next_partition_check = Some(now + self.metadata_period);
        Some(GroupRequest::Metadata {
            topics: self.topics.clone(),
        })
    }

    /// Rejoins if the partition counts of the subscribed topics changed
    /// since this member, as leader, computed the assignment (Java's leader
    /// does the same, so that new partitions get consumed).
    pub fn handle_metadata_update(&mut self, topics: &GroupTopics) {
        if self.state != State::Stable || self.revoking.is_some() {
            return;
        }
        if let Some(snap) = &self.assigned_snapshot {
            let now: Vec<(String, usize)> = snapshot(topics)
                .into_iter()
                .filter(|(t, _)| snap.iter().any(|(s, _)| s == t) || self.topics.contains(t))
                .collect();
            if &now != snap {
                tracing::info!(group = %self.config.group_id, "subscribed topics changed; rebalancing");
                self.rejoin("the partitions of subscribed topics changed");
            }
        }
    }

    fn request_failed(&mut self, e: Error, now: Instant) {
        if e.is_retriable() {
            tracing::debug!(group = %self.config.group_id, error = %e, "group request failed; retrying");
            self.rejoin(self.rejoin_reason.clone());
            self.coordinator_lost(now);
        } else {
            self.fail(e);
        }
    }
}

impl Member for ClassicMember {
    fn poll_transmit(&mut self, now: Instant) -> Option<GroupRequest> {
        if self.state == State::Done {
            return None;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        self.retry_at = None;
        if self.state == State::Leaving {
            return self.leave_request();
        }
        if self.coordinator.id().is_none() {
            return self.coordinator.poll_lookup();
        }
        match self.state {
            State::Unjoined => {
                self.prepare_join();
                if self.state == State::Unjoined {
                    return Some(self.join_request());
                }
                self.heartbeat(now)
            }
            State::PreparingJoin => self.heartbeat(now),
            State::AwaitingMetadata if !self.metadata_requested => {
                self.metadata_requested = true;
                Some(GroupRequest::Metadata {
                    topics: self.assignment_topics(),
                })
            }
            State::Syncing => match self.pending_sync.take() {
                Some(req) => Some(GroupRequest::SyncGroup(req)),
                None => self.heartbeat(now),
            },
            State::Stable => self.partition_check(now).or_else(|| self.heartbeat(now)),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Done {
            return None;
        }
        let mut t = self.retry_at;
        let heartbeating = matches!(
            self.state,
            State::Stable | State::Syncing | State::PreparingJoin | State::Unjoined
        ) && self.generation_id >= 0
            && self.heartbeat_in_flight.is_none();
        if heartbeating {
            t = min_opt(t, self.next_heartbeat);
        }
        if self.partition_check_pending() {
            t = min_opt(t, self.next_partition_check);
        }
        if let Some(ok) = self.last_heartbeat_ok {
            if self.generation_id >= 0 && self.coordinator.id().is_some() {
                t = min_opt(t, Some(ok + self.config.session_timeout));
            }
        }
        t
    }

    /// Time passed: notices a session that expired without a successful
    /// heartbeat (the coordinator is then looked up again, as the Java
    /// client does).
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ok) = self.last_heartbeat_ok {
            if self.generation_id >= 0
                && self.coordinator.id().is_some()
                && now >= ok + self.config.session_timeout
            {
                tracing::warn!(group = %self.config.group_id, "no successful heartbeat within the session timeout");
                self.last_heartbeat_ok = Some(now);
                self.coordinator_lost(now);
            }
        }
    }

    fn revocation_done(&mut self, _now: Instant) {
        let Some(revoked) = self.revoking.take() else {
            return;
        };
        self.owned.retain(|tp| !revoked.contains(tp));
        if self.state == State::PreparingJoin {
            self.state = State::Unjoined;
        }
        if std::mem::take(&mut self.rejoin_after_revoke) && self.state == State::Stable {
            self.rejoin("revoked partitions for their new owners");
        }
    }

    /// Starts leaving the group: a dynamic member sends LeaveGroup so that
    /// its partitions move at once; a static member does not (it is
    /// expected back within the session timeout, as with the Java client).
    /// The application should have committed and revoked its partitions
    /// first.
    fn leave(&mut self, _now: Instant) {
        if self.state == State::Done {
            return;
        }
        self.owned.clear();
        self.revoking = None;
        if self.config.instance_id.is_some() || self.member_id.is_empty() {
            self.finish_leave();
        } else {
            self.state = State::Leaving;
            self.retry_at = None;
        }
    }

    /// Subscribes to `topics` instead (a matching subscription found new
    /// topics or lost some): at once between generations, by rejoining when
    /// stable. Returns whether it was taken up; in the middle of a join it
    /// is not (call again later), as that join already sent the old
    /// subscription.
    fn set_topics(&mut self, topics: &[String]) -> bool {
        if self.topics == topics {
            return true;
        }
        match self.state {
            State::Unjoined | State::PreparingJoin => {}
            State::Stable if self.revoking.is_none() => {
                tracing::info!(group = %self.config.group_id, ?topics, "subscription changed; rebalancing");
                self.rejoin("the subscription changed");
            }
            State::Leaving | State::Done => return true,
            _ => return false,
        }
        self.topics = topics.to_vec();
        true
    }

    fn handle_response(&mut self, response: GroupResponse, now: Instant) {
        match response {
            GroupResponse::Coordinator(r) => self.handle_coordinator(r, now),
            GroupResponse::Metadata { topics, result } => {
                let for_assignment = self.state == State::AwaitingMetadata
                    && self.metadata_requested
                    && topics == self.assignment_topics();
                if for_assignment {
                    self.handle_metadata(result.map(|t| t.partitions), now);
                } else if std::mem::take(&mut self.checking_partitions) {
                    match result {
                        Ok(t) => self.handle_metadata_update(&t.partitions),
                        Err(e) => {
                            tracing::debug!(error = %e, "metadata for the partition check failed")
                        }
                    }
                }
            }
            GroupResponse::JoinGroup(r) => self.handle_join_group(r, now),
            GroupResponse::SyncGroup(r) => self.handle_sync_group(r, now),
            GroupResponse::Heartbeat(r) => self.handle_heartbeat(r, now),
            GroupResponse::LeaveGroup(r) => self.handle_leave_group(r, now),
            GroupResponse::Topics(_) | GroupResponse::ConsumerGroupHeartbeat(_) => {}
        }
    }

    fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    fn coordinator(&self) -> Option<i32> {
        self.coordinator.id()
    }

    fn member_id(&self) -> &str {
        &self.member_id
    }

    fn generation(&self) -> i32 {
        self.generation_id
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

fn snapshot(topics: &GroupTopics) -> Vec<(String, usize)> {
    topics.iter().map(|(t, p)| (t.clone(), p.len())).collect()
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        client::group::assignor::{
            Assignor, CooperativeStickyAssignor, PartitionMetadata, RangeAssignor,
        },
        client::group::member::TopicsMetadata,
        protocol::messages::join_group_response::JoinGroupResponseMember,
    };

    const HB: Duration = Duration::from_secs(3);
    const METADATA_PERIOD: Duration = Duration::from_secs(30);

    fn config(assignor: Arc<dyn Assignor>, instance: Option<&str>) -> GroupConfig {
        let mut config = GroupConfig::new("g", ["t"])
            .session_timeout(Duration::from_secs(10))
            .rebalance_timeout(Duration::from_secs(30))
            .heartbeat_interval(HB)
            .assignors(vec![assignor]);
        config.instance_id = instance.map(str::to_owned);
        config
    }

    fn new_member(config: GroupConfig) -> ClassicMember {
        let backoff = BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        ClassicMember::new(Arc::new(config), &backoff, METADATA_PERIOD)
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn topics(n: i32) -> GroupTopics {
        [(
            "t".to_owned(),
            (0..n)
                .map(|p| PartitionMetadata {
                    partition: p,
                    replica_racks: Vec::new(),
                })
                .collect(),
        )]
        .into_iter()
        .collect()
    }

    fn join_ok(
        generation: i32,
        me: &str,
        leader: &str,
        protocol: &str,
        members: &[(&str, Bytes)],
    ) -> JoinGroupResponse {
        JoinGroupResponse {
            generation_id: generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some(protocol.into()),
            leader: leader.into(),
            member_id: me.into(),
            members: members
                .iter()
                .map(|(id, meta)| JoinGroupResponseMember {
                    member_id: (*id).into(),
                    metadata: meta.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn sync_ok(partitions: &[TopicPartition]) -> SyncGroupResponse {
        SyncGroupResponse {
            protocol_type: Some("consumer".into()),
            assignment: Assignment {
                partitions: partitions.to_vec(),
                user_data: None,
            }
            .encode(3)
            .unwrap(),
            ..Default::default()
        }
    }

    fn hb(code: ErrorCode) -> HeartbeatResponse {
        HeartbeatResponse {
            error_code: code.0,
            ..Default::default()
        }
    }

    fn expect_join(m: &mut ClassicMember, now: Instant) -> JoinGroupRequest {
        match m.poll_transmit(now) {
            Some(GroupRequest::JoinGroup(j)) => j,
            other => panic!("expected JoinGroup, got {other:?}"),
        }
    }

    fn events(m: &mut ClassicMember) -> Vec<MembershipEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    /// A member that joined as follower of generation 1 with `owned`.
    fn follower(
        assignor: Arc<dyn Assignor>,
        owned: &[TopicPartition],
        t0: Instant,
    ) -> ClassicMember {
        let mut m = new_member(config(assignor, None));
        assert!(matches!(
            m.poll_transmit(t0),
            Some(GroupRequest::FindCoordinator)
        ));
        m.handle_coordinator(Ok(7), t0);
        expect_join(&mut m, t0);
        let proto = m.config.assignors[0].name().to_owned();
        m.handle_join_group(Ok(join_ok(1, "me", "other", &proto, &[])), t0);
        assert!(matches!(
            m.poll_transmit(t0),
            Some(GroupRequest::SyncGroup(_))
        ));
        m.handle_sync_group(Ok(sync_ok(owned)), t0);
        events(&mut m);
        assert!(m.is_stable());
        m
    }

    #[test]
    fn leader_joins_with_kip394_retry_assigns_and_heartbeats() {
        let t0 = Instant::now();
        let mut m = new_member(config(Arc::new(RangeAssignor), None));
        assert_eq!(m.poll_transmit(t0), Some(GroupRequest::FindCoordinator));
        assert_eq!(m.poll_transmit(t0), None, "one lookup at a time");
        m.handle_coordinator(Ok(3), t0);
        let join = expect_join(&mut m, t0);
        assert_eq!(join.member_id, "");
        assert_eq!(join.protocol_type, "consumer");
        assert_eq!(join.protocols.len(), 1);
        assert_eq!(join.protocols[0].name, "range");
        let sub = Subscription::decode(join.protocols[0].metadata.clone()).unwrap();
        assert_eq!(sub.topics, vec!["t".to_owned()]);
        assert_eq!(sub.generation_id, None);

        m.handle_join_group(
            Ok(JoinGroupResponse {
                error_code: ErrorCode::MEMBER_ID_REQUIRED.0,
                member_id: "m1".into(),
                ..Default::default()
            }),
            t0,
        );
        let join = expect_join(&mut m, t0);
        assert_eq!(join.member_id, "m1");

        let meta = join.protocols[0].metadata.clone();
        m.handle_join_group(
            Ok(join_ok(
                1,
                "m1",
                "m1",
                "range",
                &[("m1", meta.clone()), ("m2", meta)],
            )),
            t0,
        );
        assert_eq!(
            m.poll_transmit(t0),
            Some(GroupRequest::Metadata {
                topics: vec!["t".into()]
            })
        );
        m.handle_metadata(Ok(topics(4)), t0);
        let sync = match m.poll_transmit(t0) {
            Some(GroupRequest::SyncGroup(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(sync.generation_id, 1);
        assert_eq!(sync.protocol_name.as_deref(), Some("range"));
        let mine = sync
            .assignments
            .iter()
            .find(|a| a.member_id == "m1")
            .unwrap();
        let theirs = sync
            .assignments
            .iter()
            .find(|a| a.member_id == "m2")
            .unwrap();
        assert_eq!(
            Assignment::decode(mine.assignment.clone())
                .unwrap()
                .partitions,
            vec![tp(0), tp(1)]
        );
        assert_eq!(
            Assignment::decode(theirs.assignment.clone())
                .unwrap()
                .partitions,
            vec![tp(2), tp(3)]
        );
        m.handle_sync_group(Ok(sync_ok(&[tp(0), tp(1)])), t0);
        match events(&mut m).as_slice() {
            [MembershipEvent::Assigned {
                generation_id: 1,
                added,
                ..
            }] => assert_eq!(added, &[tp(0), tp(1)]),
            other => panic!("{other:?}"),
        }
        assert!(m.is_leader());

        // Heartbeats every interval, one at a time.
        assert_eq!(m.poll_transmit(t0), None);
        assert_eq!(m.poll_timeout(), Some(t0 + HB));
        let t1 = t0 + HB;
        match m.poll_transmit(t1) {
            Some(GroupRequest::Heartbeat(h)) => {
                assert_eq!((h.generation_id, h.member_id.as_str()), (1, "m1"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.poll_transmit(t1 + HB), None, "heartbeat in flight");
        m.handle_heartbeat(Ok(hb(ErrorCode::NONE)), t1);
        assert!(matches!(
            m.poll_transmit(t1 + HB),
            Some(GroupRequest::Heartbeat(_))
        ));

        // Every metadata period the leader looks at the partition counts;
        // new partitions make it rebalance.
        m.handle_heartbeat(Ok(hb(ErrorCode::NONE)), t1 + HB);
        assert!(m.poll_timeout().unwrap() <= t0 + METADATA_PERIOD);
        let t2 = t0 + METADATA_PERIOD;
        let check = |m: &mut ClassicMember, now| loop {
            match m.poll_transmit(now) {
                Some(GroupRequest::Metadata { topics }) => break topics,
                Some(GroupRequest::Heartbeat(_)) => {
                    m.handle_heartbeat(Ok(hb(ErrorCode::NONE)), now)
                }
                other => panic!("{other:?}"),
            }
        };
        let asked = check(&mut m, t2);
        assert_eq!(asked, vec!["t".to_owned()]);
        assert!(
            !matches!(m.poll_transmit(t2), Some(GroupRequest::Metadata { .. })),
            "one check at a time"
        );
        let answer = |n| GroupResponse::Metadata {
            topics: vec!["t".into()],
            result: Ok(TopicsMetadata {
                partitions: topics(n),
                ..Default::default()
            }),
        };
        m.handle_response(answer(4), t2);
        assert!(m.is_stable());
        let t3 = t2 + METADATA_PERIOD;
        check(&mut m, t3);
        m.handle_response(answer(6), t3);
        assert!(!m.is_stable());
    }

    #[test]
    fn eager_rebalance_revokes_everything_before_joining() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0), tp(1)], t0);
        let t1 = t0 + HB;
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::REBALANCE_IN_PROGRESS)), t1);
        // Not joining before the application confirms the revocation.
        assert_eq!(m.poll_transmit(t1), None);
        match events(&mut m).as_slice() {
            [MembershipEvent::Revoke(r)] => assert_eq!(r, &[tp(0), tp(1)]),
            other => panic!("{other:?}"),
        }
        // Heartbeats keep the session while the application commits.
        assert!(matches!(
            m.poll_transmit(t1 + HB),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::REBALANCE_IN_PROGRESS)), t1 + HB);
        m.revocation_done(t1 + HB);
        let join = expect_join(&mut m, t1 + HB);
        assert_eq!(join.member_id, "me");
        let sub = Subscription::decode(join.protocols[0].metadata.clone()).unwrap();
        assert!(sub.owned_partitions.is_empty());
        assert_eq!(sub.generation_id, Some(1));
        assert!(m.owned().is_empty());
    }

    #[test]
    fn cooperative_revokes_only_moved_partitions_then_rejoins() {
        let t0 = Instant::now();
        let coop: Arc<dyn Assignor> = Arc::new(CooperativeStickyAssignor);
        let mut m = follower(coop, &[tp(0), tp(1), tp(2)], t0);
        assert_eq!(m.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let t1 = t0 + HB;
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::REBALANCE_IN_PROGRESS)), t1);
        // Cooperative: join at once, keeping the partitions.
        let join = expect_join(&mut m, t1);
        assert!(events(&mut m).is_empty());
        let sub = Subscription::decode(join.protocols[0].metadata.clone()).unwrap();
        assert_eq!(sub.owned_partitions, vec![tp(0), tp(1), tp(2)]);
        assert_eq!(sub.generation_id, Some(1));
        m.handle_join_group(Ok(join_ok(2, "me", "other", "cooperative-sticky", &[])), t1);
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::SyncGroup(_))
        ));
        m.handle_sync_group(Ok(sync_ok(&[tp(0), tp(1)])), t1);
        match events(&mut m).as_slice() {
            [MembershipEvent::Revoke(r), MembershipEvent::Assigned { added, .. }] => {
                assert_eq!(r, &[tp(2)]);
                assert!(added.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // The follow-up rebalance waits for the revocation.
        assert!(!matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::JoinGroup(_))
        ));
        m.revocation_done(t1);
        let join = expect_join(&mut m, t1);
        let sub = Subscription::decode(join.protocols[0].metadata.clone()).unwrap();
        assert_eq!(sub.owned_partitions, vec![tp(0), tp(1)]);
        assert_eq!(sub.generation_id, Some(2));
    }

    #[test]
    fn fenced_member_loses_partitions_and_rejoins_fresh() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        let t1 = t0 + HB;
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::UNKNOWN_MEMBER_ID)), t1);
        let join = expect_join(&mut m, t1);
        assert_eq!(join.member_id, "");
        match events(&mut m).as_slice() {
            [MembershipEvent::Lost(l)] => assert_eq!(l, &[tp(0)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.generation(), -1);
    }

    #[test]
    fn stale_heartbeat_errors_are_ignored() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        let t1 = t0 + HB;
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::Heartbeat(_))
        ));
        // A new generation started while the heartbeat was in flight.
        m.generation_id = 2;
        m.handle_heartbeat(Ok(hb(ErrorCode::ILLEGAL_GENERATION)), t1);
        assert!(m.is_stable());
        assert!(events(&mut m).is_empty());
    }

    #[test]
    fn coordinator_moves_keep_the_membership() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        let t1 = t0 + HB;
        assert!(matches!(
            m.poll_transmit(t1),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::NOT_COORDINATOR)), t1);
        assert_eq!(m.coordinator(), None);
        // Rediscovery after a backoff.
        assert_eq!(m.poll_transmit(t1), None);
        let t2 = m.poll_timeout().unwrap();
        assert!(t2 > t1 && t2 <= t1 + Duration::from_secs(1));
        assert!(matches!(
            m.poll_transmit(t2),
            Some(GroupRequest::FindCoordinator)
        ));
        m.handle_coordinator(Ok(9), t2);
        assert_eq!(m.coordinator(), Some(9));
        // A heartbeat at once to the new coordinator, same generation.
        match m.poll_transmit(t2) {
            Some(GroupRequest::Heartbeat(h)) => assert_eq!(h.generation_id, 1),
            other => panic!("{other:?}"),
        }
        assert!(events(&mut m).is_empty());
        assert_eq!(m.owned(), &[tp(0)]);

        // A broken connection during SyncGroup also rediscovers and rejoins.
        m.handle_heartbeat(Ok(hb(ErrorCode::REBALANCE_IN_PROGRESS)), t2);
        assert_eq!(m.poll_transmit(t2), None);
        assert!(matches!(
            events(&mut m).as_slice(),
            [MembershipEvent::Revoke(_)]
        ));
        m.revocation_done(t2);
        expect_join(&mut m, t2);
        m.handle_join_group(
            Err(Error::new(ErrorKind::Connection).with_retriable(true)),
            t2,
        );
        assert_eq!(m.coordinator(), None);
    }

    #[test]
    fn session_expiry_without_heartbeat_answers_rediscovers() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        let expiry = t0 + Duration::from_secs(10);
        assert!(m.poll_timeout().unwrap() <= expiry);
        assert!(matches!(
            m.poll_transmit(t0 + HB),
            Some(GroupRequest::Heartbeat(_))
        ));
        // The heartbeat never returns.
        assert_eq!(m.poll_timeout(), Some(expiry));
        m.handle_timeout(expiry);
        assert_eq!(m.coordinator(), None);
    }

    #[test]
    fn fenced_static_member_is_fatal_and_static_members_leave_silently() {
        let t0 = Instant::now();
        let mut m = new_member(config(Arc::new(RangeAssignor), Some("i1")));
        m.poll_transmit(t0);
        m.handle_coordinator(Ok(1), t0);
        let join = expect_join(&mut m, t0);
        assert_eq!(join.group_instance_id.as_deref(), Some("i1"));
        m.handle_join_group(Ok(join_ok(1, "me", "x", "range", &[])), t0);
        match m.poll_transmit(t0) {
            Some(GroupRequest::SyncGroup(s)) => {
                assert_eq!(s.group_instance_id.as_deref(), Some("i1"))
            }
            other => panic!("{other:?}"),
        }
        m.handle_sync_group(Ok(sync_ok(&[tp(0)])), t0);
        events(&mut m);
        m.leave(t0);
        assert_eq!(m.poll_transmit(t0), None);
        assert!(matches!(events(&mut m).as_slice(), [MembershipEvent::Left]));

        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        Arc::make_mut(&mut m.config).instance_id = Some("i1".into());
        assert!(matches!(
            m.poll_transmit(t0 + HB),
            Some(GroupRequest::Heartbeat(_))
        ));
        m.handle_heartbeat(Ok(hb(ErrorCode::FENCED_INSTANCE_ID)), t0 + HB);
        assert!(m.is_done());
        match events(&mut m).as_slice() {
            [MembershipEvent::Fatal(e)] => {
                assert_eq!(e.error_code(), Some(ErrorCode::FENCED_INSTANCE_ID))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dynamic_members_send_leave_group() {
        let t0 = Instant::now();
        let mut m = follower(Arc::new(RangeAssignor), &[tp(0)], t0);
        m.leave(t0);
        match m.poll_transmit(t0) {
            Some(GroupRequest::LeaveGroup { member_id, .. }) => assert_eq!(member_id, "me"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.poll_transmit(t0), None);
        m.handle_leave_group(Ok(()), t0);
        assert!(m.is_done());
        assert!(matches!(events(&mut m).as_slice(), [MembershipEvent::Left]));
    }

    #[test]
    fn fatal_join_errors_and_unknown_protocols() {
        let t0 = Instant::now();
        let mut m = new_member(config(Arc::new(RangeAssignor), None));
        m.poll_transmit(t0);
        m.handle_coordinator(Ok(1), t0);
        expect_join(&mut m, t0);
        m.handle_join_group(
            Ok(JoinGroupResponse {
                error_code: ErrorCode::GROUP_AUTHORIZATION_FAILED.0,
                ..Default::default()
            }),
            t0,
        );
        assert!(m.is_done());

        let mut m = new_member(config(Arc::new(RangeAssignor), None));
        m.poll_transmit(t0);
        m.handle_coordinator(Ok(1), t0);
        expect_join(&mut m, t0);
        m.handle_join_group(Ok(join_ok(1, "me", "x", "roundrobin", &[])), t0);
        assert!(m.is_done());
    }

    #[test]
    fn cooperative_only_when_every_assignor_supports_it() {
        let mut c = config(Arc::new(CooperativeStickyAssignor), None);
        assert_eq!(
            new_member(c.clone()).rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        // The Java client's default list: range first, cooperative-sticky
        // second, so eager until range is dropped.
        c.assignors = vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)];
        let mut m = new_member(c);
        assert_eq!(m.rebalance_protocol(), RebalanceProtocol::Eager);
        let t0 = Instant::now();
        m.poll_transmit(t0);
        m.handle_coordinator(Ok(1), t0);
        let join = expect_join(&mut m, t0);
        let names: Vec<&str> = join.protocols.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["range", "cooperative-sticky"]);
        // cooperative-sticky carries its generation as user data too.
        let sub = Subscription::decode(join.protocols[1].metadata.clone()).unwrap();
        assert_eq!(sub.user_data.as_deref(), Some(&[255u8, 255, 255, 255][..]));
    }
}
