//! Finding a group's (or a transactional id's) coordinator and the offset
//! requests it serves (OffsetCommit, OffsetFetch), shared by group members,
//! the admin API and transactional producers.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use super::TopicPartition;
use crate::{
    cluster::{BrokerInfo, Cluster},
    connection::{BrokerConnection, ConnectionConfig},
    error::{Error, Result},
    protocol::{
        messages::{
            offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
            offset_fetch_request::{
                OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
            },
            FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest,
            OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
        },
        ApiKey, ErrorCode,
    },
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No critical section here can panic half-way; keep going after one.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Kafka error code from a response, `Ok` for NONE.
pub(crate) fn check(code: i16, message: Option<String>, api: ApiKey) -> Result<()> {
    let code = ErrorCode(code);
    if code.is_ok() {
        Ok(())
    } else {
        Err(Error::kafka(code, message).with_api(api))
    }
}

/// FindCoordinator's key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CoordinatorKind {
    Group = 0,
    Transaction = 1,
}

/// The coordinator of one group (or transactional id): looked up with
/// FindCoordinator, cached until [`invalidate`](Self::invalidate)d.
#[derive(Debug)]
pub(crate) struct Coordinator {
    cluster: Cluster,
    kind: CoordinatorKind,
    /// The group id, or the transactional id.
    group_id: String,
    /// A dedicated connection with this request timeout (group members,
    /// whose JoinGroup may wait for a whole rebalance), or `None` to use the
    /// cluster's shared connection (admin requests).
    dedicated: Option<Arc<ConnectionConfig>>,
    current: Mutex<Option<(i32, BrokerConnection)>>,
}

impl Coordinator {
    pub(crate) fn new(
        cluster: Cluster,
        group_id: String,
        dedicated_timeout: Option<Duration>,
    ) -> Self {
        let dedicated = dedicated_timeout.map(|t| {
            let mut c = cluster.config().connection.clone();
            c.request_timeout = c.request_timeout.max(t);
            Arc::new(c)
        });
        Self {
            cluster,
            kind: CoordinatorKind::Group,
            group_id,
            dedicated,
            current: Mutex::new(None),
        }
    }

    /// The transaction coordinator of `transactional_id`, on the cluster's
    /// shared connections (its requests are short).
    pub(crate) fn for_transaction(cluster: Cluster, transactional_id: String) -> Self {
        Self {
            kind: CoordinatorKind::Transaction,
            ..Self::new(cluster, transactional_id, None)
        }
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The coordinator's id and a connection to it, looking it up if it is
    /// not known or its connection broke.
    pub(crate) async fn get(&self) -> Result<(i32, BrokerConnection)> {
        let cached = lock(&self.current)
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .cloned();
        match cached {
            Some(c) => Ok(c),
            None => self.lookup().await,
        }
    }

    /// The connection to broker `id` if it is the cached coordinator.
    pub(crate) fn cached(&self, id: i32) -> Option<BrokerConnection> {
        lock(&self.current)
            .as_ref()
            .filter(|(i, c)| *i == id && !c.is_closed())
            .map(|(_, c)| c.clone())
    }

    /// Forgets the coordinator (after NOT_COORDINATOR and the like).
    pub(crate) fn invalidate(&self) {
        if let Some((_, c)) = lock(&self.current).take() {
            if self.dedicated.is_some() {
                c.close();
            }
        }
    }

    /// FindCoordinator, then a connection to the broker it names.
    pub(crate) async fn lookup(&self) -> Result<(i32, BrokerConnection)> {
        let broker = find_coordinator(&self.cluster, &self.group_id, self.kind).await?;
        let conn = match &self.dedicated {
            Some(config) => {
                self.cluster
                    .connect_dedicated(broker.id, &broker.addr(), config.clone())
                    .await?
            }
            None => self.cluster.broker(broker.id).await?,
        };
        let previous = lock(&self.current).replace((broker.id, conn.clone()));
        if let Some((_, old)) = previous {
            if self.dedicated.is_some() && !old.is_closed() {
                old.close();
            }
        }
        Ok((broker.id, conn))
    }
}

/// Runs `attempt` against `coordinator`, looking it up again and retrying
/// while it moves, loads, or fails retriably, until the operation timeout
/// (admin requests to a group or transaction coordinator).
pub(crate) async fn at_coordinator<T, F, Fut>(
    settings: &crate::client::Settings,
    coordinator: &Coordinator,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(i32, BrokerConnection) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + settings.operation_timeout;
    let mut backoff = crate::cluster::Backoff::new(&settings.backoff, Some(deadline));
    loop {
        let result = match tokio::time::timeout_at(deadline, async {
            let (id, conn) = coordinator.get().await?;
            attempt(id, conn).await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::new(crate::error::ErrorKind::Timeout)
                .with_message(format!("coordinator of {}", coordinator.group_id()))),
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) => {
                if !retries_at_coordinator(&e) {
                    return Err(e);
                }
                coordinator.invalidate();
                if backoff.wait().await.is_err() {
                    return Err(e);
                }
            }
        }
    }
}

/// Whether a failed attempt at the coordinator is worth another after
/// looking the coordinator up again: it moved, is loading, or the error is
/// retriable (but not the operation's own timeout, which ends the loop).
fn retries_at_coordinator(e: &Error) -> bool {
    is_coordinator_error(e)
        || e.error_code() == Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
        || (e.is_retriable() && e.kind() != crate::error::ErrorKind::Timeout)
}

/// The version of `api` negotiated with `conn`; an error if it has none.
fn negotiated(conn: &BrokerConnection, api: ApiKey) -> Result<i16> {
    conn.version_for(api)
        .ok_or_else(|| Error::new(crate::error::ErrorKind::Unsupported).with_api(api))
}

/// FindCoordinator for a consumer group or transactional id, at the
/// broker's version (a batch of one key from v4 on).
pub(crate) async fn find_coordinator(
    cluster: &Cluster,
    group_id: &str,
    kind: CoordinatorKind,
) -> Result<BrokerInfo> {
    let conn = cluster.any_broker().await?;
    let version = negotiated(&conn, ApiKey::FIND_COORDINATOR)?;
    let request = find_coordinator_request(version, group_id, kind)?;
    let resp = conn.request_version(&request, version).await?;
    found_coordinator(resp, version, group_id)
}

/// The FindCoordinator request for `group_id` at `version`; an error if
/// that version cannot look up `kind`.
fn find_coordinator_request(
    version: i16,
    group_id: &str,
    kind: CoordinatorKind,
) -> Result<FindCoordinatorRequest> {
    let api = ApiKey::FIND_COORDINATOR;
    if kind != CoordinatorKind::Group && version < 1 {
        return Err(Error::new(crate::error::ErrorKind::Unsupported)
            .with_api(api)
            .with_message("the broker cannot look up transaction coordinators"));
    }
    let key_type = kind as i8;
    Ok(if version >= 4 {
        FindCoordinatorRequest {
            key_type,
            coordinator_keys: vec![group_id.to_owned()],
            ..Default::default()
        }
    } else {
        FindCoordinatorRequest {
            key_type,
            key: group_id.to_owned(),
            ..Default::default()
        }
    })
}

/// The coordinator a FindCoordinator response at `version` names for
/// `group_id`, or its error.
fn found_coordinator(
    resp: FindCoordinatorResponse,
    version: i16,
    group_id: &str,
) -> Result<BrokerInfo> {
    let api = ApiKey::FIND_COORDINATOR;
    let (code, message, id, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .into_iter()
            .find(|c| c.key == group_id)
            .ok_or_else(|| {
                Error::protocol("FindCoordinator answered without the group").with_api(api)
            })?;
        (c.error_code, c.error_message, c.node_id, c.host, c.port)
    } else {
        (
            resp.error_code,
            resp.error_message,
            resp.node_id,
            resp.host,
            resp.port,
        )
    };
    check(code, message, api)?;
    Ok(BrokerInfo {
        id,
        host,
        port,
        rack: None,
    })
}

/// Who commits: a member's generation (classic) or epoch (KIP-848) and id,
/// or `-1` and `""` for a commit from outside the group (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitIdentity {
    pub(crate) generation_or_epoch: i32,
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
}

impl CommitIdentity {
    pub(crate) fn admin() -> Self {
        Self {
            generation_or_epoch: -1,
            member_id: String::new(),
            instance_id: None,
        }
    }
}

/// A committed offset of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The offset of the next record to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, if the committer sent it.
    pub leader_epoch: Option<i32>,
    /// The committer's metadata string.
    pub metadata: Option<String>,
}

/// One OffsetCommit to `conn`; the first partition error fails the call.
pub(crate) async fn commit_offsets(
    conn: &BrokerConnection,
    group_id: &str,
    identity: &CommitIdentity,
    offsets: &BTreeMap<TopicPartition, (i64, Option<i32>)>,
) -> Result<()> {
    let version = negotiated(conn, ApiKey::OFFSET_COMMIT)?;
    let request = commit_request(version, group_id, identity, offsets);
    let resp = conn.request_version(&request, version).await?;
    commit_result(resp)
}

/// The OffsetCommit request at `version` for `offsets` (partition to
/// offset and leader epoch).
fn commit_request(
    version: i16,
    group_id: &str,
    identity: &CommitIdentity,
    offsets: &BTreeMap<TopicPartition, (i64, Option<i32>)>,
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (tp, (offset, epoch)) in offsets {
        let partition = OffsetCommitRequestPartition {
            partition_index: tp.partition,
            committed_offset: *offset,
            committed_leader_epoch: epoch.unwrap_or(-1),
            committed_metadata: Some(String::new()),
            ..Default::default()
        };
        match topics.iter_mut().find(|t| *t.name == *tp.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(OffsetCommitRequestTopic {
                name: tp.topic.to_string(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    OffsetCommitRequest {
        group_id: group_id.to_owned(),
        generation_id_or_member_epoch: identity.generation_or_epoch,
        member_id: identity.member_id.clone(),
        // Static membership in commits needs v7+.
        group_instance_id: identity.instance_id.clone().filter(|_| version >= 7),
        topics,
        ..Default::default()
    }
}

/// An OffsetCommit response's outcome: the first partition error, if any.
fn commit_result(resp: OffsetCommitResponse) -> Result<()> {
    let api = ApiKey::OFFSET_COMMIT;
    for t in resp.topics {
        for p in t.partitions {
            check(p.error_code, None, api)
                .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
        }
    }
    Ok(())
}

/// One OffsetFetch to `conn` for `partitions` (`None`: every partition the
/// group has offsets for). Partitions without a committed offset map to
/// `None`.
pub(crate) async fn fetch_offsets(
    conn: &BrokerConnection,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
    member: Option<(&str, i32)>,
) -> Result<BTreeMap<TopicPartition, Option<CommittedOffset>>> {
    let version = negotiated(conn, ApiKey::OFFSET_FETCH)?;
    let request = fetch_request(version, group_id, partitions, require_stable, member);
    let resp = conn.request_version(&request, version).await?;
    fetched_offsets(resp, version, group_id, partitions)
}

/// The OffsetFetch request at `version` (v8+ batch groups, v9+ name the
/// member); see [`fetch_offsets`].
fn fetch_request(
    version: i16,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
    member: Option<(&str, i32)>,
) -> OffsetFetchRequest {
    let mut grouped: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions.unwrap_or(&[]) {
        grouped.entry(&*tp.topic).or_default().push(tp.partition);
    }
    if version >= 8 {
        OffsetFetchRequest {
            groups: vec![OffsetFetchRequestGroup {
                group_id: group_id.to_owned(),
                member_id: member.map(|(id, _)| id.to_owned()).filter(|_| version >= 9),
                member_epoch: member.filter(|_| version >= 9).map_or(-1, |(_, e)| e),
                topics: partitions.map(|_| {
                    grouped
                        .iter()
                        .map(|(t, ps)| OffsetFetchRequestTopics {
                            name: (*t).to_owned(),
                            partition_indexes: ps.clone(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }],
            require_stable,
            ..Default::default()
        }
    } else {
        OffsetFetchRequest {
            group_id: group_id.to_owned(),
            topics: partitions.map(|_| {
                grouped
                    .iter()
                    .map(|(t, ps)| OffsetFetchRequestTopic {
                        name: (*t).to_owned(),
                        partition_indexes: ps.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            require_stable: require_stable && version >= 7,
            ..Default::default()
        }
    }
}

/// The committed offsets an OffsetFetch response at `version` reports for
/// `group_id`; asked-for `partitions` it leaves out map to `None`.
fn fetched_offsets(
    resp: OffsetFetchResponse,
    version: i16,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<CommittedOffset>>> {
    let api = ApiKey::OFFSET_FETCH;
    let mut out = BTreeMap::new();
    let mut add = |topic: &str,
                   partition: i32,
                   code: i16,
                   offset: i64,
                   epoch: i32,
                   metadata: Option<String>|
     -> Result<()> {
        check(code, None, api).map_err(|e| e.with_topic(topic).with_partition(partition))?;
        let value = (offset >= 0).then(|| CommittedOffset {
            offset,
            leader_epoch: (epoch >= 0).then_some(epoch),
            metadata,
        });
        out.insert(TopicPartition::new(topic, partition), value);
        Ok(())
    };
    // v8+ nest the answer in a per-group list; both layouts flatten to
    // (topic, [(partition, error, offset, epoch, metadata)]).
    type Row = (i32, i16, i64, i32, Option<String>);
    macro_rules! rows {
        ($topics:expr) => {
            $topics
                .into_iter()
                .map(|t| {
                    let rows: Vec<Row> = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            (
                                p.partition_index,
                                p.error_code,
                                p.committed_offset,
                                p.committed_leader_epoch,
                                p.metadata,
                            )
                        })
                        .collect();
                    (t.name, rows)
                })
                .collect::<Vec<(String, Vec<Row>)>>()
        };
    }
    let topics = if version >= 8 {
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id == group_id)
            .ok_or_else(|| {
                Error::protocol("OffsetFetch answered without the group").with_api(api)
            })?;
        check(g.error_code, None, api)?;
        rows!(g.topics)
    } else {
        check(resp.error_code, None, api)?;
        rows!(resp.topics)
    };
    for (topic, rows) in topics {
        for (partition, code, offset, epoch, metadata) in rows {
            add(&topic, partition, code, offset, epoch, metadata)?;
        }
    }
    // Asked-for partitions the broker left out have no offset either.
    for tp in partitions.unwrap_or(&[]) {
        out.entry(tp.clone()).or_insert(None);
    }
    Ok(out)
}

/// Whether an error means the coordinator moved or is not ready, so the
/// request should be retried after looking it up again.
pub(crate) fn is_coordinator_error(e: &Error) -> bool {
    matches!(
        e.error_code(),
        Some(ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE)
    ) || matches!(e.kind(), crate::error::ErrorKind::Connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        error::ErrorKind,
        protocol::messages::{
            find_coordinator_response::Coordinator as FoundCoordinator,
            offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
            offset_fetch_response::{
                OffsetFetchResponseGroup, OffsetFetchResponsePartition,
                OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
            },
        },
    };

    #[test]
    fn coordinator_moves_and_retriable_errors_retry_but_timeouts_do_not() {
        assert!(retries_at_coordinator(&Error::kafka(
            ErrorCode::NOT_COORDINATOR,
            None
        )));
        assert!(retries_at_coordinator(&Error::kafka(
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
            None
        )));
        assert!(retries_at_coordinator(&Error::new(ErrorKind::Connection)));
        assert!(!retries_at_coordinator(&Error::kafka(
            ErrorCode::GROUP_AUTHORIZATION_FAILED,
            None
        )));
        let timeout = Error::new(ErrorKind::Timeout);
        assert!(timeout.is_retriable(), "the test needs a retriable timeout");
        assert!(!retries_at_coordinator(&timeout));
    }

    #[test]
    fn find_coordinator_batches_from_v4_and_needs_v1_for_transactions() {
        let old = find_coordinator_request(3, "g", CoordinatorKind::Group).unwrap();
        assert_eq!((old.key.as_str(), old.coordinator_keys.len()), ("g", 0));
        let new = find_coordinator_request(4, "g", CoordinatorKind::Transaction).unwrap();
        assert_eq!(
            (new.key_type, new.coordinator_keys),
            (1, vec!["g".to_owned()])
        );
        let e = find_coordinator_request(0, "t", CoordinatorKind::Transaction).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn found_coordinator_reads_the_layout_of_its_version() {
        let resp = FindCoordinatorResponse {
            node_id: 9,
            host: "old".into(),
            coordinators: vec![
                FoundCoordinator {
                    key: "other".into(),
                    node_id: 1,
                    ..Default::default()
                },
                FoundCoordinator {
                    key: "g".into(),
                    node_id: 2,
                    host: "h".into(),
                    port: 9092,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let b = found_coordinator(resp.clone(), 4, "g").unwrap();
        assert_eq!((b.id, b.host.as_str(), b.port), (2, "h", 9092));
        assert_eq!(found_coordinator(resp.clone(), 3, "g").unwrap().id, 9);
        assert!(found_coordinator(resp, 4, "missing").is_err());
        let failed = FindCoordinatorResponse {
            error_code: ErrorCode::COORDINATOR_NOT_AVAILABLE.0,
            ..Default::default()
        };
        let e = found_coordinator(failed, 3, "g").unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::COORDINATOR_NOT_AVAILABLE));
    }

    #[test]
    fn commit_groups_partitions_by_topic_and_sends_the_instance_id_from_v7() {
        let offsets = BTreeMap::from([
            (TopicPartition::new("a", 0), (5, Some(2))),
            (TopicPartition::new("a", 1), (6, None)),
            (TopicPartition::new("b", 0), (7, None)),
        ]);
        let identity = CommitIdentity {
            generation_or_epoch: 3,
            member_id: "m".into(),
            instance_id: Some("i".into()),
        };
        let req = commit_request(7, "g", &identity, &offsets);
        assert_eq!(req.group_instance_id.as_deref(), Some("i"));
        // (topic, [(partition, offset, leader epoch)])
        type Layout<'a> = Vec<(&'a str, Vec<(i32, i64, i32)>)>;
        let layout: Layout = req
            .topics
            .iter()
            .map(|t| {
                let ps = t.partitions.iter();
                let ps = ps.map(|p| {
                    (
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                    )
                });
                (t.name.as_str(), ps.collect())
            })
            .collect();
        assert_eq!(
            layout,
            vec![("a", vec![(0, 5, 2), (1, 6, -1)]), ("b", vec![(0, 7, -1)])]
        );
        assert_eq!(
            commit_request(6, "g", &identity, &offsets).group_instance_id,
            None
        );
    }

    #[test]
    fn commit_result_fails_with_the_first_partition_error() {
        let partition = |partition_index, code: ErrorCode| OffsetCommitResponsePartition {
            partition_index,
            error_code: code.0,
            ..Default::default()
        };
        let mut resp = OffsetCommitResponse {
            topics: vec![OffsetCommitResponseTopic {
                name: "t".into(),
                partitions: vec![partition(0, ErrorCode::NONE), partition(1, ErrorCode::NONE)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(commit_result(resp.clone()).is_ok());
        resp.topics[0].partitions[1] = partition(1, ErrorCode::ILLEGAL_GENERATION);
        let e = commit_result(resp).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::ILLEGAL_GENERATION));
        assert_eq!(e.partition(), Some(1));
    }

    #[test]
    fn fetch_request_layout_follows_the_version() {
        let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 2)];
        let old = fetch_request(6, "g", Some(&tps), true, Some(("m", 4)));
        assert!(!old.require_stable, "require_stable needs v7");
        assert_eq!(old.topics.unwrap()[0].partition_indexes, vec![0, 2]);
        let v8 = fetch_request(8, "g", None, true, Some(("m", 4)));
        assert!(v8.require_stable);
        assert_eq!(
            (v8.groups[0].member_id.clone(), v8.groups[0].member_epoch),
            (None, -1)
        );
        assert!(
            v8.groups[0].topics.is_none(),
            "None asks for every partition"
        );
        let v9 = fetch_request(9, "g", Some(&tps), false, Some(("m", 4)));
        let g = &v9.groups[0];
        assert_eq!((g.member_id.as_deref(), g.member_epoch), (Some("m"), 4));
    }

    #[test]
    fn fetched_offsets_reads_both_layouts_and_fills_in_missing_partitions() {
        let asked = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
        let old = OffsetFetchResponse {
            topics: vec![OffsetFetchResponseTopic {
                name: "t".into(),
                partitions: vec![OffsetFetchResponsePartition {
                    partition_index: 0,
                    committed_offset: 10,
                    committed_leader_epoch: -1,
                    metadata: Some("x".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let got = fetched_offsets(old, 7, "g", Some(&asked)).unwrap();
        let committed = CommittedOffset {
            offset: 10,
            leader_epoch: None,
            metadata: Some("x".into()),
        };
        assert_eq!(got[&asked[0]], Some(committed));
        assert_eq!(got[&asked[1]], None);

        let new = OffsetFetchResponse {
            groups: vec![OffsetFetchResponseGroup {
                group_id: "g".into(),
                topics: vec![OffsetFetchResponseTopics {
                    name: "t".into(),
                    partitions: vec![
                        OffsetFetchResponsePartitions {
                            partition_index: 0,
                            committed_offset: 3,
                            committed_leader_epoch: 5,
                            ..Default::default()
                        },
                        OffsetFetchResponsePartitions {
                            partition_index: 1,
                            committed_offset: -1,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let got = fetched_offsets(new.clone(), 8, "g", None).unwrap();
        assert_eq!(
            got[&asked[0]].as_ref().map(|c| (c.offset, c.leader_epoch)),
            Some((3, Some(5)))
        );
        assert_eq!(got[&asked[1]], None, "a negative offset is no offset");
        assert!(fetched_offsets(new, 8, "other", None).is_err());
    }

    #[test]
    fn fetched_offsets_fails_on_group_or_partition_errors() {
        let group_error = OffsetFetchResponse {
            error_code: ErrorCode::GROUP_AUTHORIZATION_FAILED.0,
            ..Default::default()
        };
        let e = fetched_offsets(group_error, 7, "g", None).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::GROUP_AUTHORIZATION_FAILED));
        let partition_error = OffsetFetchResponse {
            topics: vec![OffsetFetchResponseTopic {
                name: "t".into(),
                partitions: vec![OffsetFetchResponsePartition {
                    partition_index: 3,
                    error_code: ErrorCode::UNSTABLE_OFFSET_COMMIT.0,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = fetched_offsets(partition_error, 7, "g", None).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::UNSTABLE_OFFSET_COMMIT));
        assert_eq!(e.partition(), Some(3));
    }
}
