//! The consumer group protocol of KIP-848 (Kafka 4.0+) as a sans-IO state
//! machine, run by the driver through the [`Member`] trait as the classic
//! member is. Its settings are the [`GroupConfig`]'s.
//!
//! There is one request, ConsumerGroupHeartbeat: the member sends its
//! subscription and the partitions it owns, and the coordinator answers with
//! the member's epoch and, when it changed, the member's assignment (topic
//! ids and partitions). The coordinator computes assignments itself (the
//! `uniform` or `range` server-side assignor) and only ever assigns a
//! partition once its previous owner reported it released, so the member
//! just reconciles: it revokes what is no longer assigned (after the
//! application committed), starts what is new, and acknowledges by
//! reporting its owned partitions in the next heartbeat.
//!
//! Errors: FENCED_MEMBER_EPOCH and UNKNOWN_MEMBER_ID mean the coordinator
//! dropped the member, whose partitions are then lost; it rejoins with epoch
//! 0. NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE send it to find the
//! coordinator again. Leaving is a heartbeat with epoch -1 (-2 for a static
//! member, whose partitions the coordinator then keeps for its return).

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    config::GroupConfig,
    member::{CoordinatorState, GroupRequest, GroupResponse, Member, MembershipEvent},
    TopicPartition,
};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{
            consumer_group_heartbeat_request::TopicPartitions, ConsumerGroupHeartbeatRequest,
            ConsumerGroupHeartbeatResponse,
        },
        ApiKey, ErrorCode, Uuid,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Joining or in the group.
    Member,
    /// The leave heartbeat is to be sent or in flight.
    Leaving,
    Done,
}

/// A KIP-848 group member; see the [module docs](self).
#[derive(Debug)]
pub struct NextGenMember {
    config: Arc<GroupConfig>,
    /// The topics subscribed to: the configured ones, or those a matching
    /// subscription covers now.
    topics: Vec<String>,
    state: State,
    coordinator: CoordinatorState,
    member_id: String,
    epoch: i32,
    interval: Duration,
    next_heartbeat: Option<Instant>,
    /// The epoch the heartbeat in flight was sent with.
    in_flight: Option<i32>,
    /// Partitions owned (by topic id).
    owned: BTreeSet<(Uuid, i32)>,
    /// The latest assignment the coordinator sent.
    target: Option<BTreeSet<(Uuid, i32)>>,
    names: HashMap<Uuid, String>,
    ids: HashMap<String, Uuid>,
    metadata_in_flight: bool,
    /// When to look for missing topic ids again.
    names_retry_at: Option<Instant>,
    revoking: Option<BTreeSet<(Uuid, i32)>>,
    /// The owned partitions changed since the last heartbeat was sent.
    report_owned: bool,
    /// The subscription changed since the last heartbeat was sent.
    resubscribed: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    events: VecDeque<MembershipEvent>,
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_COORDINATOR || code == ErrorCode::COORDINATOR_NOT_AVAILABLE
}

impl NextGenMember {
    /// A member that joins at once, pacing retries with `backoff`.
    /// `member_id` is the id the member chose (KIP-1082: clients generate
    /// it, see [`random_member_id`]; pass an empty string for brokers that
    /// assign it, ConsumerGroupHeartbeat v0).
    pub fn new(config: Arc<GroupConfig>, member_id: String, backoff: &BackoffConfig) -> Self {
        Self {
            backoff: Backoff::new(backoff, None),
            topics: config.topics.clone(),
            config,
            state: State::Member,
            coordinator: CoordinatorState::default(),
            member_id,
            epoch: 0,
            interval: Duration::from_secs(5),
            next_heartbeat: None,
            in_flight: None,
            owned: BTreeSet::new(),
            target: None,
            names: HashMap::new(),
            ids: HashMap::new(),
            metadata_in_flight: false,
            names_retry_at: None,
            revoking: None,
            report_owned: true,
            resubscribed: false,
            retry_at: None,
            events: VecDeque::new(),
        }
    }

    /// The partitions owned.
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.owned
            .iter()
            .filter_map(|(id, p)| Some(TopicPartition::new(self.names.get(id)?.clone(), *p)))
            .collect()
    }

    fn fail(&mut self, e: Error) {
        tracing::warn!(group = %self.config.group_id, error = %e, "group membership failed");
        self.state = State::Done;
        self.events.push_back(MembershipEvent::Fatal(e));
    }

    fn names_of(&self, parts: &BTreeSet<(Uuid, i32)>) -> Vec<TopicPartition> {
        parts
            .iter()
            .filter_map(|(id, p)| Some(TopicPartition::new(self.names.get(id)?.clone(), *p)))
            .collect()
    }

    fn needs_names(&self) -> bool {
        self.target
            .iter()
            .flatten()
            .any(|(id, _)| !self.names.contains_key(id))
            || self.topics.iter().any(|t| !self.ids.contains_key(t))
    }

    fn heartbeat(&mut self, now: Instant) -> GroupRequest {
        let leaving = self.state == State::Leaving;
        let epoch = if leaving {
            // -2: a static member leaves for now and keeps its partitions.
            if self.config.instance_id.is_some() {
                -2
            } else {
                -1
            }
        } else {
            self.epoch
        };
        self.in_flight = Some(self.epoch);
        self.next_heartbeat = Some(now + self.interval);
        let mut owned: Vec<TopicPartitions> = Vec::new();
        for (id, p) in &self.owned {
            match owned.iter_mut().find(|t| t.topic_id == *id) {
                Some(t) => t.partitions.push(*p),
                None => owned.push(TopicPartitions {
                    topic_id: *id,
                    partitions: vec![*p],
                    ..Default::default()
                }),
            }
        }
        self.report_owned = false;
        self.resubscribed = false;
        GroupRequest::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            instance_id: self.config.instance_id.clone(),
            rack_id: self.config.rack_id.clone(),
            rebalance_timeout_ms: i32::try_from(self.config.rebalance_timeout.as_millis())
                .unwrap_or(i32::MAX),
            subscribed_topic_names: Some(self.topics.clone()),
            server_assignor: self.config.server_assignor.clone(),
            topic_partitions: Some(owned),
            ..Default::default()
        })
    }

    /// The FindCoordinator outcome.
    pub fn handle_coordinator(&mut self, result: Result<i32>, now: Instant) {
        match self.coordinator.handle_lookup(result) {
            Ok(_) => {
                self.next_heartbeat = Some(now);
                self.backoff.reset();
            }
            Err(e) if e.is_retriable() => self.retry_at = Some(now + self.backoff.next_delay()),
            Err(e) => self.fail(e),
        }
    }

    /// Topic ids of the subscribed topics (name → id), from metadata.
    pub fn handle_topic_ids(&mut self, result: Result<HashMap<String, Uuid>>, now: Instant) {
        self.metadata_in_flight = false;
        match result {
            Ok(ids) => {
                for (name, id) in ids {
                    if id != Uuid::ZERO {
                        self.names.insert(id, name.clone());
                        self.ids.insert(name, id);
                    }
                }
                self.reconcile();
                // A topic that does not exist (yet): look again later.
                self.names_retry_at = Some(now + self.interval);
            }
            Err(e) => {
                tracing::debug!(error = %e, "metadata for topic ids failed");
                self.names_retry_at = Some(now + self.backoff.next_delay());
            }
        }
    }

    /// The ConsumerGroupHeartbeat outcome.
    pub fn handle_heartbeat(
        &mut self,
        result: Result<ConsumerGroupHeartbeatResponse>,
        now: Instant,
    ) {
        let Some(_sent_epoch) = self.in_flight.take() else {
            return;
        };
        if self.state == State::Leaving {
            if let Err(e) = &result {
                tracing::debug!(error = %e, "leave heartbeat failed; the session will expire instead");
            }
            self.finish_leave();
            return;
        }
        let resp = match result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, "heartbeat failed; retrying");
                if e.kind() == ErrorKind::Connection {
                    self.coordinator.forget();
                }
                self.report_owned = true;
                self.retry_at = Some(now + self.backoff.next_delay());
                return;
            }
            Err(e) => return self.fail(e),
        };
        match ErrorCode(resp.error_code) {
            ErrorCode::NONE => {}
            ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::UNKNOWN_MEMBER_ID => {
                tracing::info!(group = %self.config.group_id, "fenced by the coordinator; rejoining");
                self.fenced();
                return;
            }
            c if is_coordinator_error(c) => {
                self.coordinator.forget();
                self.report_owned = true;
                self.retry_at = Some(now + self.backoff.next_delay());
                return;
            }
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                self.report_owned = true;
                self.retry_at = Some(now + self.backoff.next_delay());
                return;
            }
            c => {
                return self.fail(
                    Error::kafka(c, resp.error_message).with_api(ApiKey::CONSUMER_GROUP_HEARTBEAT),
                );
            }
        }
        self.backoff.reset();
        if let Some(id) = resp.member_id.filter(|id| !id.is_empty()) {
            self.member_id = id;
        }
        self.epoch = resp.member_epoch;
        if resp.heartbeat_interval_ms > 0 {
            self.interval = Duration::from_millis(resp.heartbeat_interval_ms as u64);
            self.next_heartbeat = Some(now + self.interval);
        }
        if let Some(a) = resp.assignment {
            let target: BTreeSet<(Uuid, i32)> = a
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                .collect();
            if target.iter().any(|(id, _)| !self.names.contains_key(id)) {
                // An assigned topic this member cannot name yet: ask now.
                self.names_retry_at = None;
            }
            self.target = Some(target);
            self.reconcile();
        }
    }

    /// Moves owned partitions towards the target: revoke first (the
    /// application commits), then add what is new and known by name.
    fn reconcile(&mut self) {
        if self.revoking.is_some() || self.state != State::Member {
            return;
        }
        let Some(target) = &self.target else { return };
        let revoke: BTreeSet<(Uuid, i32)> = self.owned.difference(target).copied().collect();
        if !revoke.is_empty() {
            let names = self.names_of(&revoke);
            self.revoking = Some(revoke);
            self.events.push_back(MembershipEvent::Revoke(names));
            return;
        }
        let add: BTreeSet<(Uuid, i32)> = target
            .difference(&self.owned)
            .filter(|(id, _)| self.names.contains_key(id))
            .copied()
            .collect();
        if add.is_empty() {
            return;
        }
        self.owned.extend(add.iter().copied());
        self.report_owned = true;
        let added = self.names_of(&add);
        self.events.push_back(MembershipEvent::Assigned {
            generation_id: self.epoch,
            member_id: self.member_id.clone(),
            added,
            assignment: self.owned(),
        });
    }

    fn fenced(&mut self) {
        // Partitions being revoked are reported by that revocation (as
        // lost, since the membership ended meanwhile).
        let keep: BTreeSet<(Uuid, i32)> = self
            .owned
            .iter()
            .filter(|tp| !self.revoking.as_ref().is_some_and(|r| r.contains(tp)))
            .copied()
            .collect();
        let lost = self.names_of(&keep);
        self.owned.clear();
        self.target = None;
        self.revoking = None;
        self.epoch = 0;
        self.report_owned = true;
        if !lost.is_empty() {
            self.events.push_back(MembershipEvent::Lost(lost));
        }
    }

    fn finish_leave(&mut self) {
        self.state = State::Done;
        self.events.push_back(MembershipEvent::Left);
    }
}

impl Member for NextGenMember {
    fn set_topics(&mut self, topics: &[String]) -> bool {
        if self.topics == topics || matches!(self.state, State::Leaving | State::Done) {
            return true;
        }
        tracing::info!(group = %self.config.group_id, ?topics, "subscription changed");
        self.topics = topics.to_vec();
        self.resubscribed = true;
        true
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<GroupRequest> {
        if self.state == State::Done || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        self.retry_at = None;
        if self.coordinator.id().is_none() {
            if self.state == State::Leaving {
                // Nobody to tell: the session expires on its own.
                self.finish_leave();
                return None;
            }
            return self.coordinator.poll_lookup();
        }
        if !self.metadata_in_flight && self.needs_names() && self.names_retry_at.is_none_or_due(now)
        {
            self.metadata_in_flight = true;
            return Some(GroupRequest::Metadata {
                topics: self.topics.clone(),
            });
        }
        if self.in_flight.is_some() {
            return None;
        }
        let due = self.resubscribed
            || self.report_owned && self.revoking.is_none()
            || self.state == State::Leaving
            || self.next_heartbeat.is_none_or_due(now);
        if !due {
            return None;
        }
        Some(self.heartbeat(now))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Done {
            return None;
        }
        match (
            self.retry_at,
            self.next_heartbeat.filter(|_| self.in_flight.is_none()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn revocation_done(&mut self, _now: Instant) {
        let Some(revoked) = self.revoking.take() else {
            return;
        };
        for tp in &revoked {
            self.owned.remove(tp);
        }
        self.report_owned = true;
        self.reconcile();
    }

    fn leave(&mut self, _now: Instant) {
        if self.state == State::Done {
            return;
        }
        self.owned.clear();
        self.revoking = None;
        self.state = State::Leaving;
        self.retry_at = None;
        if self.epoch <= 0 && self.in_flight.is_none() {
            // Never joined: nothing to tell the coordinator.
            self.finish_leave();
        }
    }

    fn handle_response(&mut self, response: GroupResponse, now: Instant) {
        match response {
            GroupResponse::Coordinator(r) => self.handle_coordinator(r, now),
            GroupResponse::Metadata { result, .. } => {
                self.handle_topic_ids(result.map(|t| t.ids), now)
            }
            GroupResponse::ConsumerGroupHeartbeat(r) => self.handle_heartbeat(r, now),
            GroupResponse::Topics(_)
            | GroupResponse::JoinGroup(_)
            | GroupResponse::SyncGroup(_)
            | GroupResponse::Heartbeat(_)
            | GroupResponse::LeaveGroup(_) => {}
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
        self.epoch
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

trait DueExt {
    fn is_none_or_due(&self, now: Instant) -> bool;
}

impl DueExt for Option<Instant> {
    fn is_none_or_due(&self, now: Instant) -> bool {
        self.is_none_or(|t| now >= t)
    }
}

/// A member id as the Java client makes one (KIP-1082): a random UUID in
/// Kafka's base64 form.
pub fn random_member_id() -> String {
    Uuid(rand::random::<[u8; 16]>()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::group::GroupProtocol;
    use crate::protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions as RespTopic,
    };

    fn member() -> NextGenMember {
        member_with(GroupConfig::new("g", ["t"]))
    }

    fn member_with(config: GroupConfig) -> NextGenMember {
        let config = config
            .protocol(GroupProtocol::Consumer)
            .rebalance_timeout(Duration::from_secs(30))
            .server_assignor("uniform");
        NextGenMember::new(Arc::new(config), "m".into(), &BackoffConfig::default())
    }

    const T: Uuid = Uuid([7; 16]);

    fn response(epoch: i32, parts: Option<&[i32]>) -> ConsumerGroupHeartbeatResponse {
        ConsumerGroupHeartbeatResponse {
            member_id: Some("m".into()),
            member_epoch: epoch,
            heartbeat_interval_ms: 1000,
            assignment: parts.map(|p| Assignment {
                topic_partitions: vec![RespTopic {
                    topic_id: T,
                    partitions: p.to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn expect_heartbeat(m: &mut NextGenMember, now: Instant) -> ConsumerGroupHeartbeatRequest {
        match m.poll_transmit(now) {
            Some(GroupRequest::ConsumerGroupHeartbeat(h)) => h,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    fn owned_in(h: &ConsumerGroupHeartbeatRequest) -> Vec<i32> {
        h.topic_partitions
            .iter()
            .flatten()
            .flat_map(|t| t.partitions.clone())
            .collect()
    }

    fn joined(now: Instant) -> NextGenMember {
        let mut m = member();
        assert_eq!(m.poll_transmit(now), Some(GroupRequest::FindCoordinator));
        m.handle_coordinator(Ok(1), now);
        assert!(matches!(
            m.poll_transmit(now),
            Some(GroupRequest::Metadata { .. })
        ));
        m.handle_topic_ids(Ok([("t".to_owned(), T)].into_iter().collect()), now);
        let h = expect_heartbeat(&mut m, now);
        assert_eq!(h.member_epoch, 0);
        assert_eq!(h.member_id, "m");
        assert_eq!(h.subscribed_topic_names, Some(vec!["t".to_owned()]));
        assert_eq!(h.server_assignor.as_deref(), Some("uniform"));
        m
    }

    #[test]
    fn join_reconcile_and_acknowledge() {
        let t0 = Instant::now();
        let mut m = joined(t0);
        m.handle_heartbeat(Ok(response(3, Some(&[0, 1]))), t0);
        match m.poll_event() {
            Some(MembershipEvent::Assigned { added, .. }) => {
                assert_eq!(
                    added,
                    vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
                )
            }
            other => panic!("{other:?}"),
        }
        // The acknowledgement goes out at once, with the owned partitions.
        let h = expect_heartbeat(&mut m, t0);
        assert_eq!(h.member_epoch, 3);
        assert_eq!(owned_in(&h), vec![0, 1]);
        m.handle_heartbeat(Ok(response(3, None)), t0);
        assert_eq!(m.poll_transmit(t0), None);
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(1)));

        // Partition 1 moves away: revoke, wait for the application, report.
        let t1 = t0 + Duration::from_secs(1);
        expect_heartbeat(&mut m, t1);
        m.handle_heartbeat(Ok(response(4, Some(&[0]))), t1);
        match m.poll_event() {
            Some(MembershipEvent::Revoke(r)) => assert_eq!(r, vec![TopicPartition::new("t", 1)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.poll_transmit(t1), None, "no ack before the revocation");
        m.revocation_done(t1);
        let h = expect_heartbeat(&mut m, t1);
        assert_eq!(owned_in(&h), vec![0]);
    }

    #[test]
    fn fenced_members_lose_partitions_and_rejoin_at_epoch_zero() {
        let t0 = Instant::now();
        let mut m = joined(t0);
        m.handle_heartbeat(Ok(response(3, Some(&[0]))), t0);
        m.poll_event();
        expect_heartbeat(&mut m, t0);
        m.handle_heartbeat(
            Ok(ConsumerGroupHeartbeatResponse {
                error_code: ErrorCode::FENCED_MEMBER_EPOCH.0,
                ..Default::default()
            }),
            t0,
        );
        assert!(matches!(m.poll_event(), Some(MembershipEvent::Lost(l)) if l.len() == 1));
        let h = expect_heartbeat(&mut m, t0);
        assert_eq!(h.member_epoch, 0);
        assert!(owned_in(&h).is_empty());
    }

    #[test]
    fn leaving_sends_epoch_minus_one_and_errors_are_fatal() {
        let t0 = Instant::now();
        let mut m = joined(t0);
        m.handle_heartbeat(Ok(response(3, Some(&[0]))), t0);
        m.poll_event();
        expect_heartbeat(&mut m, t0);
        m.handle_heartbeat(Ok(response(3, None)), t0);
        m.leave(t0);
        let h = expect_heartbeat(&mut m, t0);
        assert_eq!(h.member_epoch, -1);
        m.handle_heartbeat(Ok(response(-1, None)), t0);
        assert!(m.is_done());
        assert!(matches!(m.poll_event(), Some(MembershipEvent::Left)));

        let mut m = joined(t0);
        m.handle_heartbeat(
            Ok(ConsumerGroupHeartbeatResponse {
                error_code: ErrorCode::UNSUPPORTED_ASSIGNOR.0,
                ..Default::default()
            }),
            t0,
        );
        assert!(m.is_done());
        assert!(matches!(m.poll_event(), Some(MembershipEvent::Fatal(_))));
    }

    #[test]
    fn unknown_topic_ids_wait_for_metadata() {
        let t0 = Instant::now();
        let mut m = joined(t0);
        let other = Uuid([9; 16]);
        m.handle_heartbeat(
            Ok(ConsumerGroupHeartbeatResponse {
                member_epoch: 2,
                heartbeat_interval_ms: 1000,
                assignment: Some(Assignment {
                    topic_partitions: vec![RespTopic {
                        topic_id: other,
                        partitions: vec![5],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            t0,
        );
        assert!(m.poll_event().is_none());
        assert!(matches!(
            m.poll_transmit(t0),
            Some(GroupRequest::Metadata { .. })
        ));
        m.handle_topic_ids(
            Ok([("t".to_owned(), T), ("u".to_owned(), other)]
                .into_iter()
                .collect()),
            t0,
        );
        assert!(matches!(
            m.poll_event(),
            Some(MembershipEvent::Assigned { added, .. }) if added == vec![TopicPartition::new("u", 5)]
        ));
    }

    #[test]
    fn static_members_leave_with_epoch_minus_two() {
        let t0 = Instant::now();
        let mut m = member_with(GroupConfig::new("g", ["t"]).instance_id("i"));
        m.poll_transmit(t0);
        m.handle_coordinator(Ok(1), t0);
        m.poll_transmit(t0);
        m.handle_topic_ids(Ok([("t".to_owned(), T)].into_iter().collect()), t0);
        let h = expect_heartbeat(&mut m, t0);
        assert_eq!(h.instance_id.as_deref(), Some("i"));
        m.handle_heartbeat(Ok(response(1, Some(&[0]))), t0);
        m.poll_event();
        expect_heartbeat(&mut m, t0);
        m.handle_heartbeat(Ok(response(1, None)), t0);
        m.leave(t0);
        assert_eq!(expect_heartbeat(&mut m, t0).member_epoch, -2);
    }
}
