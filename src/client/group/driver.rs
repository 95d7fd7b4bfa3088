//! The tokio task that runs a membership state machine against the
//! coordinator and reports to the [`GroupConsumer`](super::GroupConsumer).

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::{
    sync::{mpsc, Notify},
    time::{sleep_until, Instant},
};

use super::{
    assignor::{GroupTopics, PartitionMetadata},
    classic::{ClassicMember, ClassicRequest, MembershipEvent},
    consumer::TopicMatcher,
    coordinator::{check, CommitIdentity, Coordinator},
    TopicPartition,
};
use crate::{
    cluster::Cluster,
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{leave_group_request::MemberIdentity, LeaveGroupRequest},
        ApiKey, Request,
    },
};

/// What the driver tells the application side.
#[derive(Debug)]
pub(crate) enum AppEvent {
    /// Commit and stop consuming these, then send [`Command::RevocationDone`].
    Revoke(Vec<TopicPartition>),
    /// Start consuming `added` from their committed offsets.
    Assigned {
        added: Vec<TopicPartition>,
        assignment: Vec<TopicPartition>,
        /// The membership incarnation the assignment belongs to.
        incarnation: u64,
    },
    /// Stop consuming these without committing.
    Lost(Vec<TopicPartition>),
    /// The membership failed for good.
    Fatal(Error),
}

/// What the application side tells the driver.
#[derive(Debug)]
pub(crate) enum Command {
    RevocationDone,
    /// Leave the group and stop.
    Leave,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the driver and the application side.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) coordinator: Coordinator,
    identity: Mutex<CommitIdentity>,
    /// Counts memberships lost (fenced, expired): commits begun in an
    /// earlier one must not go through.
    incarnation: std::sync::atomic::AtomicU64,
    /// Signalled when the identity changes (a commit that met a rebalance
    /// waits for it).
    pub(crate) identity_changed: Notify,
    /// The normal bound on one request.
    pub(crate) request_timeout: Duration,
    /// KIP-848 members name themselves in OffsetFetch (v9), classic ones
    /// do not (as the Java client).
    pub(crate) fetch_as_member: bool,
    /// The partitions the member may commit.
    pub(crate) owned: super::committer::Owned,
}

impl Shared {
    pub(crate) fn new(
        coordinator: Coordinator,
        instance_id: Option<String>,
        request_timeout: Duration,
        fetch_as_member: bool,
    ) -> Self {
        Self {
            fetch_as_member,
            coordinator,
            identity: Mutex::new(CommitIdentity {
                generation_or_epoch: -1,
                member_id: String::new(),
                instance_id,
            }),
            identity_changed: Notify::new(),
            incarnation: std::sync::atomic::AtomicU64::new(0),
            request_timeout,
            owned: super::committer::Owned::default(),
        }
    }

    pub(crate) fn identity(&self) -> CommitIdentity {
        lock(&self.identity).clone()
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the member's generation (epoch) and id. Dropping out of a
    /// generation (to -1, or to epoch 0) means the membership was lost.
    pub(crate) fn set_identity(&self, generation_or_epoch: i32, member_id: &str) {
        let mut id = lock(&self.identity);
        if id.generation_or_epoch > 0 && generation_or_epoch <= 0 {
            self.incarnation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        if id.generation_or_epoch != generation_or_epoch || id.member_id != member_id {
            id.generation_or_epoch = generation_or_epoch;
            id.member_id = member_id.to_owned();
            drop(id);
            self.identity_changed.notify_waiters();
        }
    }
}

/// Passes a membership event on to the application side.
pub(crate) fn forward(
    ev: MembershipEvent,
    shared: &Shared,
    events: &mpsc::UnboundedSender<AppEvent>,
) {
    let ev = match ev {
        MembershipEvent::Revoke(p) => AppEvent::Revoke(p),
        MembershipEvent::Assigned {
            added, assignment, ..
        } => AppEvent::Assigned {
            added,
            assignment,
            incarnation: shared.incarnation(),
        },
        MembershipEvent::Lost(p) => AppEvent::Lost(p),
        MembershipEvent::Fatal(e) => AppEvent::Fatal(e),
        MembershipEvent::Left => return,
    };
    // The application side may be gone (dropped); the driver keeps leaving.
    let _ = events.send(ev);
}

/// The partitions of `topics` as assignors see them: sorted by id, with the
/// racks of their replicas. Unknown topics are left out.
pub(crate) async fn group_topics(cluster: &Cluster, topics: &[String]) -> Result<GroupTopics> {
    let md = cluster.refresh_metadata(Some(topics)).await?;
    let mut out = GroupTopics::new();
    for name in topics {
        let Some(t) = md.topics.get(name).filter(|t| t.error.is_ok()) else {
            continue;
        };
        let partitions: Vec<PartitionMetadata> = t
            .partitions
            .values()
            .map(|p| PartitionMetadata {
                partition: p.id,
                replica_racks: p
                    .replicas
                    .iter()
                    .filter_map(|b| md.brokers.get(b).and_then(|b| b.rack.clone()))
                    .collect(),
            })
            .collect();
        if !partitions.is_empty() {
            out.insert(name.clone(), partitions);
        }
    }
    Ok(out)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request's outcome, to feed back into the state machine.
enum Outcome {
    Coordinator(Result<i32>),
    Metadata(Result<GroupTopics>),
    MetadataUpdate(Result<GroupTopics>),
    Join(Result<crate::protocol::messages::JoinGroupResponse>),
    Sync(Result<crate::protocol::messages::SyncGroupResponse>),
    Heartbeat(Result<crate::protocol::messages::HeartbeatResponse>),
    Leave(Result<()>),
    /// The topics a matching subscription covers now.
    Subscription(Result<Vec<String>>),
}

/// Sends `req` to the cached coordinator connection, bounded by `timeout`
/// (JoinGroup and SyncGroup rely on the connection's longer bound).
async fn to_coordinator<R: Request>(
    shared: &Shared,
    coordinator: Option<i32>,
    req: R,
    timeout: Option<Duration>,
) -> Result<R::Response> {
    let conn = coordinator
        .and_then(|id| shared.coordinator.cached(id))
        .ok_or_else(|| {
            Error::new(ErrorKind::Connection)
                .with_message("no connection to the group coordinator")
                .with_retriable(true)
        })?;
    let fut = conn.request(&req);
    match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::new(ErrorKind::Timeout)
                .with_api(R::API_KEY)
                .with_message("the group coordinator did not answer in time")),
        },
        None => Ok(fut.await?),
    }
}

fn send_classic(
    shared: Arc<Shared>,
    coordinator: Option<i32>,
    req: ClassicRequest,
) -> BoxFuture<Outcome> {
    let t = Some(shared.request_timeout);
    Box::pin(async move {
        match req {
            ClassicRequest::FindCoordinator { .. } => {
                let r = tokio::time::timeout(
                    shared.request_timeout.saturating_mul(2),
                    shared.coordinator.lookup(),
                )
                .await;
                Outcome::Coordinator(match r {
                    Ok(r) => r.map(|(id, _)| id),
                    Err(_) => {
                        Err(Error::new(ErrorKind::Timeout).with_api(ApiKey::FIND_COORDINATOR))
                    }
                })
            }
            ClassicRequest::Metadata { topics } => {
                Outcome::Metadata(group_topics(shared.coordinator.cluster(), &topics).await)
            }
            ClassicRequest::JoinGroup(r) => {
                Outcome::Join(to_coordinator(&shared, coordinator, r, None).await)
            }
            ClassicRequest::SyncGroup(r) => {
                Outcome::Sync(to_coordinator(&shared, coordinator, r, None).await)
            }
            ClassicRequest::Heartbeat(r) => {
                Outcome::Heartbeat(to_coordinator(&shared, coordinator, r, t).await)
            }
            ClassicRequest::LeaveGroup {
                group_id,
                member_id,
                group_instance_id,
                reason,
            } => {
                let result = async {
                    let conn = coordinator
                        .and_then(|id| shared.coordinator.cached(id))
                        .ok_or_else(|| Error::new(ErrorKind::Connection))?;
                    let version = conn.version_for(ApiKey::LEAVE_GROUP).ok_or_else(|| {
                        Error::new(ErrorKind::Unsupported).with_api(ApiKey::LEAVE_GROUP)
                    })?;
                    // v0-2 name one member; v3+ take a list (KIP-345).
                    let req = if version >= 3 {
                        LeaveGroupRequest {
                            group_id,
                            members: vec![MemberIdentity {
                                member_id,
                                group_instance_id,
                                reason: Some(reason),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }
                    } else {
                        LeaveGroupRequest {
                            group_id,
                            member_id,
                            ..Default::default()
                        }
                    };
                    let resp = tokio::time::timeout(
                        shared.request_timeout,
                        conn.request_version(&req, version),
                    )
                    .await
                    .map_err(|_| Error::new(ErrorKind::Timeout).with_api(ApiKey::LEAVE_GROUP))??;
                    check(resp.error_code, None, ApiKey::LEAVE_GROUP)?;
                    for m in resp.members {
                        check(m.error_code, None, ApiKey::LEAVE_GROUP)?;
                    }
                    Ok(())
                }
                .await;
                Outcome::Leave(result)
            }
        }
    })
}

/// A member's topics: those named, and with a matcher those whose names it
/// accepts now.
#[derive(Debug, Clone)]
pub(crate) struct TopicSubscription {
    named: Vec<String>,
    matcher: Option<TopicMatcher>,
}

impl TopicSubscription {
    pub(crate) fn new(named: Vec<String>, matcher: Option<TopicMatcher>) -> Self {
        Self { named, matcher }
    }

    /// Whether the topics may change while the member runs.
    pub(crate) fn is_dynamic(&self) -> bool {
        self.matcher.is_some()
    }

    /// The topics to subscribe to now, sorted; with a matcher, from the
    /// cluster's current topics (internal ones excepted).
    pub(crate) async fn resolve(&self, cluster: &Cluster) -> Result<Vec<String>> {
        let mut topics: BTreeSet<String> = self.named.iter().cloned().collect();
        if let Some(matcher) = &self.matcher {
            let md = cluster.refresh_metadata(None).await?;
            topics.extend(
                md.topics
                    .values()
                    // A topic with a passing error (no leader yet) is still there.
                    .filter(|t| {
                        (t.error.is_ok() || t.error.is_retriable())
                            && !t.is_internal
                            && matcher.matches(&t.name)
                    })
                    .map(|t| t.name.clone()),
            );
        }
        Ok(topics.into_iter().collect())
    }
}

/// How often a member looks for new partitions (the leader of a classic
/// group) and new matching topics: the client's metadata max age, within 1
/// to 30 s (the Java client waits for its next metadata refresh, 5 minutes
/// by default).
pub(crate) fn metadata_period(shared: &Shared) -> Duration {
    shared
        .coordinator
        .cluster()
        .config()
        .metadata_max_age
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Runs a classic member until it leaves or fails.
pub(crate) async fn run_classic(
    mut member: ClassicMember,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<AppEvent>,
    subscription: TopicSubscription,
) {
    let mut in_flight: FuturesUnordered<BoxFuture<Outcome>> = FuturesUnordered::new();
    let metadata_period = metadata_period(&shared);
    let mut next_metadata = Instant::now() + metadata_period;
    let mut commands_open = true;
    // Matched topics not taken up by the member yet (it takes them between
    // generations).
    let mut resubscribe: Option<Vec<String>> = None;
    if subscription.is_dynamic() {
        // Joining with the topics matched now rather than with none.
        match subscription.resolve(shared.coordinator.cluster()).await {
            Ok(topics) => resubscribe = Some(topics),
            Err(e) => tracing::debug!(error = %e, "matching topics failed; trying again later"),
        }
    }
    loop {
        if resubscribe.as_ref().is_some_and(|t| member.set_topics(t)) {
            resubscribe = None;
        }
        let now = Instant::now();
        while let Some(req) = member.poll_transmit(now.into_std()) {
            in_flight.push(send_classic(shared.clone(), member.coordinator(), req));
        }
        shared.set_identity(member.generation_id(), member.member_id());
        while let Some(ev) = member.poll_event() {
            forward(ev, &shared, &events);
        }
        if member.is_done() {
            break;
        }
        let wake = member.poll_timeout().map(Instant::from_std);
        tokio::select! {
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                let now = Instant::now().into_std();
                match outcome {
                    Outcome::Coordinator(r) => member.handle_coordinator(r, now),
                    Outcome::Metadata(r) => member.handle_metadata(r, now),
                    Outcome::MetadataUpdate(r) => {
                        if let Ok(t) = r {
                            member.handle_metadata_update(&t);
                        }
                    }
                    Outcome::Join(r) => member.handle_join_group(r, now),
                    Outcome::Sync(r) => member.handle_sync_group(r, now),
                    Outcome::Heartbeat(r) => member.handle_heartbeat(r, now),
                    Outcome::Leave(r) => member.handle_leave_group(r, now),
                    Outcome::Subscription(r) => match r {
                        Ok(topics) => resubscribe = Some(topics),
                        Err(e) => tracing::debug!(error = %e, "matching topics failed"),
                    },
                }
            }
            cmd = commands.recv(), if commands_open => {
                let now = Instant::now().into_std();
                match cmd {
                    Some(Command::RevocationDone) => member.revocation_done(now),
                    Some(Command::Leave) => member.leave(now),
                    None => {
                        // The consumer was dropped without close(): leave.
                        commands_open = false;
                        member.leave(now);
                    }
                }
            }
            _ = sleep_until(wake.unwrap_or(now + Duration::from_secs(3600))), if wake.is_some() => {
                member.handle_timeout(Instant::now().into_std());
            }
            _ = sleep_until(next_metadata) => {
                next_metadata = Instant::now() + metadata_period;
                if member.is_leader() {
                    let shared = shared.clone();
                    let topics = member.topics().to_vec();
                    in_flight.push(Box::pin(async move {
                        Outcome::MetadataUpdate(group_topics(shared.coordinator.cluster(), &topics).await)
                    }));
                }
                if subscription.is_dynamic() {
                    let shared = shared.clone();
                    let subscription = subscription.clone();
                    in_flight.push(Box::pin(async move {
                        Outcome::Subscription(subscription.resolve(shared.coordinator.cluster()).await)
                    }));
                }
            }
        }
    }
    shared.set_identity(-1, "");
    shared.coordinator.invalidate();
}

/// The committed offsets of `partitions`, retried like commits (and on UNSTABLE_OFFSET_COMMIT: a transaction is
/// about to commit offsets).
pub(crate) async fn fetch_with_retry(
    shared: &Shared,
    partitions: &[TopicPartition],
    deadline: Instant,
    backoff: &crate::cluster::BackoffConfig,
) -> Result<BTreeMap<TopicPartition, Option<super::CommittedOffset>>> {
    let mut backoff = crate::cluster::Backoff::new(backoff, Some(deadline));
    loop {
        let identity = shared.identity();
        let attempt = async {
            let (_, conn) = shared.coordinator.get().await?;
            let member = (shared.fetch_as_member && !identity.member_id.is_empty())
                .then_some((identity.member_id.as_str(), identity.generation_or_epoch));
            super::coordinator::fetch_offsets(
                &conn,
                shared.coordinator.group_id(),
                Some(partitions),
                true,
                member,
            )
            .await
        };
        let e = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_api(ApiKey::OFFSET_FETCH)
                    .with_message("fetching committed offsets"))
            }
        };
        if super::coordinator::is_coordinator_error(&e) {
            shared.coordinator.invalidate();
        } else if !e.is_retriable()
            && e.error_code() != Some(crate::protocol::ErrorCode::STALE_MEMBER_EPOCH)
        {
            return Err(e);
        }
        tracing::debug!(error = %e, "offset fetch failed; retrying");
        if backoff.wait().await.is_err() {
            return Err(e);
        }
    }
}
