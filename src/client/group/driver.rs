//! The tokio task that runs a membership state machine ([`Member`]: the
//! classic or the KIP-848 one) against the cluster and reports to the
//! [`GroupConsumer`](super::GroupConsumer). It decides nothing: it sends
//! what the member asks for, hands the outcomes back, sleeps until the
//! member's timeout, and passes events and commands between the member and
//! the application side.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::{
    sync::mpsc,
    time::{sleep_until, Instant},
};

use super::{
    assignor::PartitionMetadata,
    coordinator::check,
    member::{ClusterTopic, GroupRequest, GroupResponse, Member, MembershipEvent, TopicsMetadata},
    shared::Shared,
    TopicPartition,
};
use crate::{
    cluster::{Cluster, Metadata},
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{leave_group_request::MemberIdentity, LeaveGroupRequest, LeaveGroupResponse},
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

/// Passes a membership event on to the application side.
fn forward(ev: MembershipEvent, shared: &Shared, events: &mpsc::UnboundedSender<AppEvent>) {
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

/// Runs `member` until it leaves or fails.
pub(crate) async fn run<M: Member>(
    mut member: M,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<AppEvent>,
) {
    let mut in_flight: FuturesUnordered<BoxFuture<GroupResponse>> = FuturesUnordered::new();
    let mut commands_open = true;
    loop {
        let now = Instant::now();
        while let Some(req) = member.poll_transmit(now.into_std()) {
            in_flight.push(perform(shared.clone(), member.coordinator(), req));
        }
        shared.set_identity(member.generation(), member.member_id());
        while let Some(ev) = member.poll_event() {
            forward(ev, &shared, &events);
        }
        if member.is_done() {
            break;
        }
        let wake = member.poll_timeout().map(Instant::from_std);
        tokio::select! {
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                member.handle_response(response, Instant::now().into_std());
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
        }
    }
    shared.set_identity(-1, "");
    shared.coordinator.invalidate();
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Sends `req` (to `coordinator` if it is a coordinator request) and
/// brings back its outcome.
fn perform(
    shared: Arc<Shared>,
    coordinator: Option<i32>,
    req: GroupRequest,
) -> BoxFuture<GroupResponse> {
    // JoinGroup and SyncGroup may wait for a whole rebalance: they rely on
    // the coordinator connection's longer bound.
    let bounded = Some(shared.request_timeout);
    Box::pin(async move {
        let cluster = shared.coordinator.cluster();
        match req {
            GroupRequest::FindCoordinator => {
                let r = tokio::time::timeout(
                    shared.request_timeout.saturating_mul(2),
                    shared.coordinator.lookup(),
                )
                .await;
                GroupResponse::Coordinator(match r {
                    Ok(r) => r.map(|(id, _)| id),
                    Err(_) => {
                        Err(Error::new(ErrorKind::Timeout).with_api(ApiKey::FIND_COORDINATOR))
                    }
                })
            }
            GroupRequest::Metadata { topics } => {
                let result = topics_metadata(cluster, &topics).await;
                GroupResponse::Metadata { topics, result }
            }
            GroupRequest::ListTopics => GroupResponse::Topics(list_topics(cluster).await),
            GroupRequest::JoinGroup(r) => {
                GroupResponse::JoinGroup(to_coordinator(&shared, coordinator, r, None).await)
            }
            GroupRequest::SyncGroup(r) => {
                GroupResponse::SyncGroup(to_coordinator(&shared, coordinator, r, None).await)
            }
            GroupRequest::Heartbeat(r) => {
                GroupResponse::Heartbeat(to_coordinator(&shared, coordinator, r, bounded).await)
            }
            GroupRequest::ConsumerGroupHeartbeat(r) => GroupResponse::ConsumerGroupHeartbeat(
                to_coordinator(&shared, coordinator, r, bounded).await,
            ),
            GroupRequest::LeaveGroup {
                group_id,
                member_id,
                group_instance_id,
                reason,
            } => GroupResponse::LeaveGroup(
                leave_group(
                    &shared,
                    coordinator,
                    group_id,
                    member_id,
                    group_instance_id,
                    reason,
                )
                .await,
            ),
        }
    })
}

/// Sends `req` to the cached coordinator connection, bounded by `timeout`
/// (or by the connection's own bound).
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

/// LeaveGroup in the version the coordinator speaks.
async fn leave_group(
    shared: &Shared,
    coordinator: Option<i32>,
    group_id: String,
    member_id: String,
    group_instance_id: Option<String>,
    reason: String,
) -> Result<()> {
    let conn = coordinator
        .and_then(|id| shared.coordinator.cached(id))
        .ok_or_else(|| Error::new(ErrorKind::Connection))?;
    let version = conn
        .version_for(ApiKey::LEAVE_GROUP)
        .ok_or_else(|| Error::new(ErrorKind::Unsupported).with_api(ApiKey::LEAVE_GROUP))?;
    let req = leave_group_request(version, group_id, member_id, group_instance_id, reason);
    let resp = tokio::time::timeout(shared.request_timeout, conn.request_version(&req, version))
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout).with_api(ApiKey::LEAVE_GROUP))??;
    left_group(&resp)
}

/// The LeaveGroup request at `version`: v0-2 name one member, v3+ take a
/// list (KIP-345) that can carry the static instance id and the reason.
fn leave_group_request(
    version: i16,
    group_id: String,
    member_id: String,
    group_instance_id: Option<String>,
    reason: String,
) -> LeaveGroupRequest {
    if version >= 3 {
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
    }
}

/// A LeaveGroup response's outcome: the group's error, else the first
/// member's.
fn left_group(resp: &LeaveGroupResponse) -> Result<()> {
    check(resp.error_code, None, ApiKey::LEAVE_GROUP)?;
    for m in &resp.members {
        check(m.error_code, None, ApiKey::LEAVE_GROUP)?;
    }
    Ok(())
}

/// The partitions of `topics` as assignors see them, from fresh metadata.
async fn topics_metadata(cluster: &Cluster, topics: &[String]) -> Result<TopicsMetadata> {
    let md = cluster.refresh_metadata(Some(topics)).await?;
    Ok(assignor_view(&md, topics))
}

/// The partitions of `topics` in `md` as assignors see them (sorted by id,
/// with the racks of their replicas) and their ids. Unknown topics, and
/// topics without partitions, are left out of the partitions.
fn assignor_view(md: &Metadata, topics: &[String]) -> TopicsMetadata {
    let mut out = TopicsMetadata::default();
    for name in topics {
        let Some(t) = md.topics.get(name).filter(|t| t.error.is_ok()) else {
            continue;
        };
        out.ids.insert(name.clone(), t.id);
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
            out.partitions.insert(name.clone(), partitions);
        }
    }
    out
}

/// Every topic the cluster has.
async fn list_topics(cluster: &Cluster) -> Result<Vec<ClusterTopic>> {
    let md = cluster.refresh_metadata(None).await?;
    Ok(md
        .topics
        .values()
        .map(|t| ClusterTopic {
            name: t.name.clone(),
            is_internal: t.is_internal,
            error: t.error,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{messages::leave_group_response::MemberResponse, ErrorCode};

    fn request(version: i16) -> LeaveGroupRequest {
        leave_group_request(
            version,
            "g".into(),
            "m".into(),
            Some("i".into()),
            "closing".into(),
        )
    }

    #[test]
    fn assignors_see_known_topics_with_their_replicas_racks() {
        use crate::cluster::{BrokerInfo, PartitionInfo, TopicInfo};
        let mut md = Metadata::default();
        for (id, rack) in [(1, Some("r1")), (2, None)] {
            md.brokers.insert(
                id,
                BrokerInfo {
                    id,
                    host: "h".into(),
                    port: 9092,
                    rack: rack.map(str::to_owned),
                },
            );
        }
        let topic = |name: &str, error: ErrorCode, partitions: &[i32]| TopicInfo {
            name: name.into(),
            id: crate::protocol::Uuid([name.len() as u8; 16]),
            error,
            is_internal: false,
            partitions: partitions
                .iter()
                .map(|&id| {
                    let info = PartitionInfo {
                        id,
                        error: ErrorCode::NONE,
                        leader: Some(1),
                        leader_epoch: 0,
                        replicas: vec![1, 2],
                        isr: vec![],
                        offline: vec![],
                    };
                    (id, info)
                })
                .collect(),
        };
        md.topics
            .insert("a".into(), topic("a", ErrorCode::NONE, &[1, 0]));
        md.topics
            .insert("empty".into(), topic("empty", ErrorCode::NONE, &[]));
        md.topics.insert(
            "bad".into(),
            topic("bad", ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, &[0]),
        );
        let names = ["a", "empty", "bad", "missing"].map(String::from);
        let view = assignor_view(&md, &names);
        let a = &view.partitions["a"];
        assert_eq!(a.iter().map(|p| p.partition).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(a[0].replica_racks, ["r1".to_owned()]);
        assert_eq!(view.partitions.len(), 1, "only topics with partitions");
        let mut ids: Vec<_> = view.ids.keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["a", "empty"], "known topics without an error");
    }

    #[test]
    fn leave_group_names_one_member_before_v3_and_a_list_from_v3() {
        let old = request(2);
        assert_eq!((old.member_id.as_str(), old.members.len()), ("m", 0));
        let new = request(3);
        assert!(new.member_id.is_empty());
        let m = &new.members[0];
        assert_eq!(
            (
                m.member_id.as_str(),
                m.group_instance_id.as_deref(),
                m.reason.as_deref()
            ),
            ("m", Some("i"), Some("closing"))
        );
    }

    #[test]
    fn leaving_fails_on_the_group_or_a_members_error() {
        let member = |code: ErrorCode| MemberResponse {
            member_id: "m".into(),
            group_instance_id: None,
            error_code: code.0,
            ..Default::default()
        };
        let mut resp = LeaveGroupResponse {
            members: vec![member(ErrorCode::NONE)],
            ..Default::default()
        };
        assert!(left_group(&resp).is_ok());
        resp.members.push(member(ErrorCode::UNKNOWN_MEMBER_ID));
        let e = left_group(&resp).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::UNKNOWN_MEMBER_ID));
        resp.error_code = ErrorCode::GROUP_AUTHORIZATION_FAILED.0;
        let e = left_group(&resp).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::GROUP_AUTHORIZATION_FAILED));
    }
}
