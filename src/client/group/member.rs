//! What the two membership state machines share: the [`Member`] trait one
//! driver runs both through, the requests they ask it to send
//! ([`GroupRequest`]), the answers it hands back ([`GroupResponse`]) and
//! the [`MembershipEvent`]s they report.
//!
//! A member performs no I/O and reads no clock: the driver asks it for the
//! next request ([`poll_transmit`](Member::poll_transmit)), sends it, and
//! hands the outcome back ([`handle_response`](Member::handle_response));
//! it sleeps until [`poll_timeout`](Member::poll_timeout) and then calls
//! [`handle_timeout`](Member::handle_timeout); it passes the
//! [`MembershipEvent`]s from [`poll_event`](Member::poll_event) on to the
//! application and the application's answers back
//! ([`revocation_done`](Member::revocation_done), [`leave`](Member::leave)).

use std::{collections::HashMap, time::Instant};

use super::{assignor::GroupTopics, TopicPartition};
use crate::{
    error::{Error, Result},
    protocol::{
        messages::{
            ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, HeartbeatRequest,
            HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest,
            SyncGroupResponse,
        },
        ErrorCode, Uuid,
    },
};

/// A group membership state machine: the classic protocol's
/// [`ClassicMember`](super::classic::ClassicMember) or KIP-848's
/// [`NextGenMember`](super::next_gen::NextGenMember).
pub trait Member: Send {
    /// The next request to send, if one is due; answer it with
    /// [`handle_response`](Self::handle_response).
    fn poll_transmit(&mut self, now: Instant) -> Option<GroupRequest>;

    /// The outcome of a request from [`poll_transmit`](Self::poll_transmit).
    fn handle_response(&mut self, response: GroupResponse, now: Instant);

    /// When to call [`handle_timeout`](Self::handle_timeout) and poll for
    /// requests again, if nothing else happens first.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Time passed.
    fn handle_timeout(&mut self, _now: Instant) {}

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<MembershipEvent>;

    /// The application finished the revocation asked for by
    /// [`MembershipEvent::Revoke`] (offsets committed, consumption stopped).
    fn revocation_done(&mut self, now: Instant);

    /// Starts leaving the group (the application committed and revoked its
    /// partitions first).
    fn leave(&mut self, now: Instant);

    /// Subscribes to `topics` instead (a matching subscription found new
    /// topics or lost some). Returns whether the member took them up; if
    /// not (in the middle of a join that already sent the old ones), call
    /// again later.
    fn set_topics(&mut self, topics: &[String]) -> bool;

    /// The coordinator's broker id, if known.
    fn coordinator(&self) -> Option<i32>;

    /// The member id (empty before the coordinator knows the member).
    fn member_id(&self) -> &str;

    /// The generation (classic) or member epoch (KIP-848): `-1` or `0`
    /// outside one.
    fn generation(&self) -> i32;

    /// Whether the member has left or failed.
    fn is_done(&self) -> bool;
}

/// A request a [`Member`] asks the driver to send.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupRequest {
    /// Look up the group's coordinator (to any broker); answer with
    /// [`GroupResponse::Coordinator`].
    FindCoordinator,
    /// The partitions and ids of these topics; answer with
    /// [`GroupResponse::Metadata`].
    Metadata {
        /// The topics.
        topics: Vec<String>,
    },
    /// Every topic of the cluster (for a matching subscription); answer
    /// with [`GroupResponse::Topics`].
    ListTopics,
    /// To the coordinator; answer with [`GroupResponse::JoinGroup`].
    JoinGroup(JoinGroupRequest),
    /// To the coordinator; answer with [`GroupResponse::SyncGroup`].
    SyncGroup(SyncGroupRequest),
    /// To the coordinator; answer with [`GroupResponse::Heartbeat`].
    Heartbeat(HeartbeatRequest),
    /// To the coordinator (LeaveGroup: `member_id` for v0–2, a one-member
    /// list for v3+); answer with [`GroupResponse::LeaveGroup`].
    LeaveGroup {
        /// The group id.
        group_id: String,
        /// This member's id.
        member_id: String,
        /// This member's static instance id.
        group_instance_id: Option<String>,
        /// Why it leaves (v5+).
        reason: String,
    },
    /// To the coordinator; answer with
    /// [`GroupResponse::ConsumerGroupHeartbeat`].
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
}

/// The outcome of a [`GroupRequest`], for [`Member::handle_response`].
#[derive(Debug)]
pub enum GroupResponse {
    /// FindCoordinator: the coordinator's broker id.
    Coordinator(Result<i32>),
    /// Metadata of the topics asked for.
    Metadata {
        /// The topics asked for (a member may have two lookups in flight).
        topics: Vec<String>,
        /// What the cluster knows of them.
        result: Result<TopicsMetadata>,
    },
    /// The cluster's topics.
    Topics(Result<Vec<ClusterTopic>>),
    /// JoinGroup.
    JoinGroup(Result<JoinGroupResponse>),
    /// SyncGroup.
    SyncGroup(Result<SyncGroupResponse>),
    /// Heartbeat.
    Heartbeat(Result<HeartbeatResponse>),
    /// LeaveGroup.
    LeaveGroup(Result<()>),
    /// ConsumerGroupHeartbeat.
    ConsumerGroupHeartbeat(Result<ConsumerGroupHeartbeatResponse>),
}

/// The topics of a [`GroupRequest::Metadata`] that exist: their partitions
/// as assignors see them and their ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicsMetadata {
    /// Partitions (sorted by id, with the racks of their replicas) of the
    /// topics that have some.
    pub partitions: GroupTopics,
    /// Topic ids by name.
    pub ids: HashMap<String, Uuid>,
}

/// A topic of the cluster, as a [`GroupRequest::ListTopics`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTopic {
    /// The name.
    pub name: String,
    /// Whether it is an internal topic such as `__consumer_offsets`.
    pub is_internal: bool,
    /// The topic-level error the broker answered with.
    pub error: ErrorCode,
}

/// What happened to the membership; the application acts on these.
#[derive(Debug)]
pub enum MembershipEvent {
    /// Stop consuming these partitions and commit what was processed of
    /// them, then call [`Member::revocation_done`]: the rebalance waits for
    /// it.
    Revoke(Vec<TopicPartition>),
    /// The member has a new assignment: `added` are the partitions it did
    /// not own before (start consuming them at their committed offsets).
    Assigned {
        /// The generation (member epoch) of the assignment.
        generation_id: i32,
        /// The member id.
        member_id: String,
        /// The partitions newly owned.
        added: Vec<TopicPartition>,
        /// The whole assignment.
        assignment: Vec<TopicPartition>,
    },
    /// The member lost these partitions without a chance to commit: its
    /// membership ended (fenced or timed out). Stop consuming them.
    Lost(Vec<TopicPartition>),
    /// The member cannot continue.
    Fatal(Error),
    /// The member left the group.
    Left,
}

/// The coordinator as a member knows it, and the one lookup at a time that
/// finds it.
#[derive(Debug, Default)]
pub(crate) struct CoordinatorState {
    id: Option<i32>,
    finding: bool,
}

impl CoordinatorState {
    /// The coordinator's broker id, if known.
    pub(crate) fn id(&self) -> Option<i32> {
        self.id
    }

    /// A FindCoordinator to send, if the coordinator is unknown and no
    /// lookup is in flight.
    pub(crate) fn poll_lookup(&mut self) -> Option<GroupRequest> {
        if self.id.is_some() || self.finding {
            return None;
        }
        self.finding = true;
        Some(GroupRequest::FindCoordinator)
    }

    /// Takes a lookup's outcome (and passes it on).
    pub(crate) fn handle_lookup(&mut self, result: Result<i32>) -> Result<i32> {
        self.finding = false;
        if let Ok(id) = result {
            self.id = Some(id);
        }
        result
    }

    /// Forgets the coordinator (it moved, or its connection broke);
    /// whether it was known.
    pub(crate) fn forget(&mut self) -> bool {
        self.id.take().is_some()
    }
}
