//! Administration of consumer groups: list, describe, delete; committed
//! offsets (fetch, commit, delete, reset) and lag.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    coordinator::{
        at_coordinator, check, commit_offsets, fetch_offsets, CommitIdentity, CommittedOffset,
        Coordinator,
    },
    protocol::{Assignment, Subscription},
    TopicPartition,
};
use crate::{
    client::{
        partition::{IsolationLevel, OffsetAt},
        Client,
    },
    error::{Error, Result},
    protocol::{
        messages::{
            offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic},
            ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest,
            DescribeGroupsRequest, DescribeGroupsResponse, ListGroupsRequest, ListGroupsResponse,
            OffsetDeleteRequest,
        },
        ApiKey, ErrorCode,
    },
};

/// A group as [`GroupAdmin::list_groups`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `consumer` for consumer groups (empty for groups that only commit
    /// offsets).
    pub protocol_type: String,
    /// The state (`Stable`, `Empty`, ...), if the broker reports it (v4+).
    pub state: Option<String>,
    /// `classic` or `consumer` (KIP-848), if the broker reports it (v5+).
    pub group_type: Option<String>,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// The static instance id.
    pub instance_id: Option<String>,
    /// The client id the member's client sends.
    pub client_id: String,
    /// The host the member connects from.
    pub client_host: String,
    /// The topics it subscribes to.
    pub subscribed_topics: Vec<String>,
    /// The partitions assigned to it.
    pub assignment: Vec<TopicPartition>,
}

/// A group as [`GroupAdmin::describe_group`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state: `Empty`, `Stable`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Dead` (classic); `Empty`, `Assigning`,
    /// `Reconciling`, `Stable`, `Dead` (KIP-848).
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: String,
    /// The protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The assignor in use (the classic protocol name, or the KIP-848
    /// server-side assignor).
    pub assignor: String,
    /// The coordinator's broker id.
    pub coordinator: i32,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// A partition's lag as [`GroupAdmin::lag`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset, `None` if the group committed none.
    pub committed: Option<i64>,
    /// The end of the log (high watermark).
    pub end: i64,
    /// `end - committed`, `None` without a committed offset.
    pub lag: Option<i64>,
}

/// Where [`GroupAdmin::reset_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset in the log.
    Earliest,
    /// The end of the log.
    Latest,
    /// The first record at or after this time (milliseconds since the
    /// epoch); the end of the log if there is none.
    Timestamp(i64),
    /// This offset on every partition (clamped to the log).
    Offset(i64),
}

/// Administration of consumer groups; from [`Client::group_admin`].
#[derive(Debug, Clone)]
pub struct GroupAdmin {
    client: Client,
}

impl Client {
    /// Group administration: list, describe, delete groups; fetch, commit,
    /// delete and reset their offsets; lag.
    pub fn group_admin(&self) -> GroupAdmin {
        GroupAdmin {
            client: self.clone(),
        }
    }
}

/// The description in a ConsumerGroupDescribe answer; `None` if the group
/// is not a KIP-848 one (a classic group, or none): DescribeGroups tells.
fn consumer_group_description(
    resp: ConsumerGroupDescribeResponse,
    group: &str,
    coordinator: i32,
) -> Result<Option<GroupDescription>> {
    let g = resp
        .groups
        .into_iter()
        .find(|g| g.group_id == group)
        .ok_or_else(|| Error::protocol("ConsumerGroupDescribe answered without the group"))?;
    match ErrorCode(g.error_code) {
        ErrorCode::NONE => Ok(Some(GroupDescription {
            group_id: g.group_id,
            state: g.group_state,
            group_type: "consumer".into(),
            protocol_type: "consumer".into(),
            assignor: g.assignor_name,
            coordinator,
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscribed_topics: m.subscribed_topic_names,
                    assignment: m
                        .assignment
                        .topic_partitions
                        .into_iter()
                        .flat_map(|t| {
                            let name = t.topic_name;
                            t.partitions
                                .into_iter()
                                .map(move |p| TopicPartition::new(name.clone(), p))
                        })
                        .collect(),
                })
                .collect(),
        })),
        ErrorCode::GROUP_ID_NOT_FOUND => Ok(None),
        c => Err(Error::kafka(c, g.error_message).with_api(ApiKey::CONSUMER_GROUP_DESCRIBE)),
    }
}

/// The description in a DescribeGroups answer (a group that does not exist
/// is `Dead` with no members). Members' subscriptions and assignments are
/// decoded only for the consumer protocol; other protocols' are opaque.
fn classic_group_description(
    resp: DescribeGroupsResponse,
    group: &str,
    coordinator: i32,
) -> Result<GroupDescription> {
    let g = resp
        .groups
        .into_iter()
        .find(|g| g.group_id == group)
        .ok_or_else(|| Error::protocol("DescribeGroups answered without the group"))?;
    check(g.error_code, None, ApiKey::DESCRIBE_GROUPS)?;
    let consumer = g.protocol_type == super::protocol::PROTOCOL_TYPE;
    Ok(GroupDescription {
        group_id: g.group_id,
        state: g.group_state,
        group_type: "classic".into(),
        protocol_type: g.protocol_type,
        assignor: g.protocol_data,
        coordinator,
        members: g
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topics: if consumer {
                    Subscription::decode(m.member_metadata)
                        .map(|s| s.topics)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
                assignment: if consumer {
                    Assignment::decode(m.member_assignment)
                        .map(|a| a.partitions)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect(),
    })
}

/// Offsets found by timestamp, with `-1` (no record that recent) replaced
/// by the end of the log from `ends`.
fn at_end_where_none(
    mut found: BTreeMap<TopicPartition, i64>,
    ends: &BTreeMap<TopicPartition, i64>,
) -> BTreeMap<TopicPartition, i64> {
    for (tp, o) in found.iter_mut() {
        if *o == -1 {
            if let Some(end) = ends.get(tp) {
                *o = *end;
            }
        }
    }
    found
}

/// `offset` moved into each partition's log, from its start in `starts`
/// to its end in `ends`.
fn clamped_to_logs(
    offset: i64,
    starts: BTreeMap<TopicPartition, i64>,
    ends: &BTreeMap<TopicPartition, i64>,
) -> BTreeMap<TopicPartition, i64> {
    starts
        .into_iter()
        .map(|(tp, start)| {
            let end = ends.get(&tp).copied().unwrap_or(start).max(start);
            (tp, offset.clamp(start, end))
        })
        .collect()
}

impl GroupAdmin {
    /// Runs `attempt` against the group's coordinator, looking it up again
    /// and retrying while it moves, loads, or fails retriably.
    async fn with_coordinator<T, F, Fut>(&self, group: &str, attempt: F) -> Result<T>
    where
        F: FnMut(i32, crate::connection::BrokerConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let coordinator = Coordinator::new(self.client.cluster.clone(), group.to_owned(), None);
        at_coordinator(&self.client.settings, &coordinator, attempt).await
    }

    /// Every group of the cluster (each broker coordinates some).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let md = self.client.cluster.refresh_metadata(Some(&[])).await?;
        let mut out = BTreeMap::new();
        for id in md.brokers.keys() {
            let conn = self.client.cluster.broker(*id).await?;
            let resp = conn.request(&ListGroupsRequest::default()).await?;
            let version = conn.version_for(ApiKey::LIST_GROUPS).unwrap_or(0);
            for g in group_listings(resp, version)? {
                out.insert(g.group_id.clone(), g);
            }
        }
        Ok(out.into_values().collect())
    }

    /// A group's state, members and their assignments. KIP-848 groups are
    /// described with ConsumerGroupDescribe, classic ones with
    /// DescribeGroups. A group that does not exist is reported `Dead` with
    /// no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.with_coordinator(group, |coordinator, conn| async move {
            if conn.version_for(ApiKey::CONSUMER_GROUP_DESCRIBE).is_some() {
                let resp = conn
                    .request(&ConsumerGroupDescribeRequest {
                        group_ids: vec![group.to_owned()],
                        ..Default::default()
                    })
                    .await?;
                if let Some(d) = consumer_group_description(resp, group, coordinator)? {
                    return Ok(d);
                }
            }
            let resp = conn
                .request(&DescribeGroupsRequest {
                    groups: vec![group.to_owned()],
                    ..Default::default()
                })
                .await?;
            classic_group_description(resp, group, coordinator)
        })
        .await
    }

    /// Deletes a group and its offsets; it must have no members.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.with_coordinator(group, |_, conn| async move {
            let resp = conn
                .request(&DeleteGroupsRequest {
                    groups_names: vec![group.to_owned()],
                    ..Default::default()
                })
                .await?;
            let r = resp
                .results
                .into_iter()
                .find(|r| r.group_id == group)
                .ok_or_else(|| Error::protocol("DeleteGroups answered without the group"))?;
            check(r.error_code, None, ApiKey::DELETE_GROUPS)
        })
        .await
    }

    /// The group's committed offsets of `partitions` (`None`: all it has).
    ///
    /// Offsets committed by a transaction whose markers are still being
    /// written are pending at the coordinator: asked for by partition, they
    /// are waited for (the broker answers UNSTABLE_OFFSET_COMMIT, which is
    /// retried); with `None` the coordinator leaves them out of the answer.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Option<CommittedOffset>>> {
        self.with_coordinator(group, |_, conn| async move {
            fetch_offsets(&conn, group, partitions, true, None).await
        })
        .await
    }

    /// Commits offsets for the group from outside it. The coordinator only
    /// accepts this while the group has no members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let offsets: BTreeMap<TopicPartition, (i64, Option<i32>)> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), (*o, None)))
            .collect();
        let identity = CommitIdentity::admin();
        self.with_coordinator(group, |_, conn| {
            let offsets = &offsets;
            let identity = &identity;
            async move { commit_offsets(&conn, group, identity, offsets).await }
        })
        .await
    }

    /// Deletes the group's committed offsets of `partitions` (OffsetDelete);
    /// fails with GROUP_SUBSCRIBED_TO_TOPIC while members consume them.
    pub async fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let mut topics: Vec<OffsetDeleteRequestTopic> = Vec::new();
        for tp in partitions {
            let p = OffsetDeleteRequestPartition {
                partition_index: tp.partition,
            };
            match topics.iter_mut().find(|t| *t.name == *tp.topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(OffsetDeleteRequestTopic {
                    name: tp.topic.to_string(),
                    partitions: vec![p],
                }),
            }
        }
        self.with_coordinator(group, |_, conn| {
            let topics = topics.clone();
            async move {
                let resp = conn
                    .request(&OffsetDeleteRequest {
                        group_id: group.to_owned(),
                        topics,
                    })
                    .await?;
                check(resp.error_code, None, ApiKey::OFFSET_DELETE)?;
                for t in resp.topics {
                    for p in t.partitions {
                        check(p.error_code, None, ApiKey::OFFSET_DELETE)
                            .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// The lag of every partition the group has an offset for or a member
    /// consumes: committed offset against the end of the log.
    pub async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let committed = self.fetch_offsets(group, None).await?;
        let mut partitions: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
        if let Ok(d) = self.describe_group(group).await {
            for m in d.members {
                partitions.extend(m.assignment);
            }
        }
        let queries = partitions
            .iter()
            .map(|tp| (tp.clone(), OffsetAt::Latest))
            .collect();
        let ends = self
            .client
            .admin()
            .list_offsets(&queries, IsolationLevel::ReadUncommitted)
            .await?;
        Ok(ends
            .into_iter()
            .map(|(tp, end)| {
                let committed = committed.get(&tp).cloned().flatten().map(|c| c.offset);
                PartitionLag {
                    lag: committed.map(|c| (end - c).max(0)),
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    committed,
                    end,
                }
            })
            .collect())
    }

    /// Moves the group's committed offsets of every partition of `topic` to
    /// `to`, and returns them. Refused while the group has members (they
    /// would overwrite the new offsets with their own).
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let d = self.describe_group(group).await?;
        if !d.members.is_empty() {
            return Err(Error::invalid_input(format!(
                "group {group} has {} active member(s); stop them before resetting offsets",
                d.members.len()
            )));
        }
        let md = self
            .client
            .cluster
            .refresh_metadata(Some(&[topic.to_owned()]))
            .await?;
        let t = md
            .topics
            .get(topic)
            .filter(|t| t.error.is_ok())
            .ok_or_else(|| {
                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None).with_topic(topic)
            })?;
        let admin = self.client.admin();
        let list = |at| {
            admin.list_topic_offsets(
                topic,
                t.partitions.keys().copied(),
                at,
                IsolationLevel::ReadUncommitted,
            )
        };
        let offsets = match to {
            OffsetSpec::Earliest => list(OffsetAt::Earliest).await?,
            OffsetSpec::Latest => list(OffsetAt::Latest).await?,
            OffsetSpec::Timestamp(ms) => {
                let found = list(OffsetAt::timestamp_millis(ms)).await?;
                if found.values().any(|o| *o == -1) {
                    at_end_where_none(found, &list(OffsetAt::Latest).await?)
                } else {
                    found
                }
            }
            OffsetSpec::Offset(o) => {
                let (starts, ends) =
                    futures::future::try_join(list(OffsetAt::Earliest), list(OffsetAt::Latest))
                        .await?;
                clamped_to_logs(o, starts, &ends)
            }
        };
        self.commit_offsets(group, &offsets).await?;
        Ok(offsets)
    }
}

/// The groups of one broker's ListGroups response at `version`, with the
/// fields that version has.
fn group_listings(resp: ListGroupsResponse, version: i16) -> Result<Vec<GroupListing>> {
    check(resp.error_code, None, ApiKey::LIST_GROUPS)?;
    Ok(resp
        .groups
        .into_iter()
        .map(|g| GroupListing {
            group_id: g.group_id,
            protocol_type: g.protocol_type,
            state: (version >= 4).then_some(g.group_state),
            group_type: (version >= 5).then_some(g.group_type),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::messages::{
        consumer_group_describe_response as cgd, describe_groups_response as dg,
        list_groups_response,
    };

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn kip848(error_code: ErrorCode) -> ConsumerGroupDescribeResponse {
        ConsumerGroupDescribeResponse {
            groups: vec![cgd::DescribedGroup {
                error_code: error_code.0,
                group_id: "g".into(),
                group_state: "Stable".into(),
                assignor_name: "uniform".into(),
                members: vec![cgd::Member {
                    member_id: "m1".into(),
                    client_id: "c1".into(),
                    subscribed_topic_names: vec!["t".into()],
                    assignment: cgd::Assignment {
                        topic_partitions: vec![cgd::TopicPartitions {
                            topic_name: "t".into(),
                            partitions: vec![0, 2],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_kip848_group_or_a_fallback_to_describe_groups() {
        let d = consumer_group_description(kip848(ErrorCode::NONE), "g", 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.group_type.as_str(), d.assignor.as_str(), d.coordinator),
            ("consumer", "uniform", 3)
        );
        assert_eq!(d.members[0].assignment, vec![tp("t", 0), tp("t", 2)]);
        assert_eq!(d.members[0].subscribed_topics, vec!["t".to_owned()]);
        // A classic group or none: DescribeGroups is asked.
        assert!(
            consumer_group_description(kip848(ErrorCode::GROUP_ID_NOT_FOUND), "g", 3)
                .unwrap()
                .is_none()
        );
        let e = consumer_group_description(kip848(ErrorCode::GROUP_AUTHORIZATION_FAILED), "g", 3)
            .unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::GROUP_AUTHORIZATION_FAILED));
        let e = consumer_group_description(kip848(ErrorCode::NONE), "other", 3).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Protocol);
    }

    #[test]
    fn a_classic_group_decodes_consumer_members_only() {
        let subscription = Subscription {
            topics: vec!["t".into()],
            ..Default::default()
        }
        .encode(3)
        .unwrap();
        let assignment = Assignment {
            partitions: vec![tp("t", 1)],
            user_data: None,
        }
        .encode(3)
        .unwrap();
        let resp = |protocol_type: &str| DescribeGroupsResponse {
            groups: vec![dg::DescribedGroup {
                group_id: "g".into(),
                group_state: "Stable".into(),
                protocol_type: protocol_type.into(),
                protocol_data: "range".into(),
                members: vec![dg::DescribedGroupMember {
                    member_id: "m1".into(),
                    member_metadata: subscription.clone(),
                    member_assignment: assignment.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = classic_group_description(resp("consumer"), "g", 1).unwrap();
        assert_eq!(
            (d.group_type.as_str(), d.assignor.as_str()),
            ("classic", "range")
        );
        assert_eq!(d.members[0].subscribed_topics, vec!["t".to_owned()]);
        assert_eq!(d.members[0].assignment, vec![tp("t", 1)]);
        // Another protocol's member data is opaque.
        let d = classic_group_description(resp("connect"), "g", 1).unwrap();
        assert!(d.members[0].subscribed_topics.is_empty() && d.members[0].assignment.is_empty());
        // Undecodable consumer data leaves the member's lists empty.
        let mut garbled = resp("consumer");
        garbled.groups[0].members[0].member_metadata = Bytes::from_static(&[0xff]);
        let d = classic_group_description(garbled, "g", 1).unwrap();
        assert!(d.members[0].subscribed_topics.is_empty());

        let mut failed = resp("consumer");
        failed.groups[0].error_code = ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0;
        let e = classic_group_description(failed, "g", 1).unwrap_err();
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
        );
        assert!(e.is_retriable());
    }

    #[test]
    fn reset_targets_inside_the_log() {
        let ends = BTreeMap::from([(tp("t", 0), 50), (tp("t", 1), 70)]);
        // No record that recent: the end of the log.
        assert_eq!(
            at_end_where_none(BTreeMap::from([(tp("t", 0), 12), (tp("t", 1), -1)]), &ends),
            BTreeMap::from([(tp("t", 0), 12), (tp("t", 1), 70)])
        );
        let starts = BTreeMap::from([(tp("t", 0), 10), (tp("t", 1), 60), (tp("t", 2), 5)]);
        assert_eq!(
            clamped_to_logs(65, starts, &ends),
            // Past the end, inside, and with no end known: the start.
            BTreeMap::from([(tp("t", 0), 50), (tp("t", 1), 65), (tp("t", 2), 5)])
        );
    }

    #[test]
    fn group_listings_have_the_fields_of_the_version() {
        let resp = ListGroupsResponse {
            groups: vec![list_groups_response::ListedGroup {
                group_id: "g".into(),
                protocol_type: "consumer".into(),
                group_state: "Stable".into(),
                group_type: "classic".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let fields = |version| {
            let g = group_listings(resp.clone(), version).unwrap().remove(0);
            (g.state, g.group_type)
        };
        assert_eq!(fields(3), (None, None));
        assert_eq!(fields(4), (Some("Stable".to_owned()), None));
        assert_eq!(
            fields(5),
            (Some("Stable".to_owned()), Some("classic".to_owned()))
        );
        let failed = ListGroupsResponse {
            error_code: ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.0,
            ..Default::default()
        };
        let e = group_listings(failed, 5).unwrap_err();
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
        );
    }
}
