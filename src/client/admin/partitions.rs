//! Partition reassignments and leader elections.

use std::collections::BTreeMap;

use super::{check, wire_enum, AdminClient};
use crate::{
    client::group::TopicPartition,
    error::{Error, Result},
    protocol::{
        messages::{
            alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic},
            elect_leaders_request::TopicPartitions,
            list_partition_reassignments_request::ListPartitionReassignmentsTopics,
            AlterPartitionReassignmentsRequest, ElectLeadersRequest, ElectLeadersResponse,
            ListPartitionReassignmentsRequest,
        },
        ApiKey, ErrorCode,
    },
};

/// A partition reassignment in progress, as
/// [`AdminClient::list_partition_reassignments`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// The replicas now, those being added included.
    pub replicas: Vec<i32>,
    /// The replicas being added.
    pub adding_replicas: Vec<i32>,
    /// The replicas being removed.
    pub removing_replicas: Vec<i32>,
}

wire_enum! {
    /// Which leader an election picks.
    pub enum ElectionType {
        /// A value this client does not know.
        Unknown = -1, "UNKNOWN";
        /// The preferred replica (the first in the replica list), if it is
        /// in sync.
        Preferred = 0, "PREFERRED";
        /// Any live replica, even one out of sync (may lose records), for
        /// partitions without a leader.
        Unclean = 1, "UNCLEAN";
    }
}

/// One partition's outcome of [`AdminClient::elect_leaders`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ElectionResult {
    /// A new leader was elected.
    Elected,
    /// The partition already had the leader asked for
    /// (ELECTION_NOT_NEEDED).
    NotNeeded,
    /// The election failed; the error names the partition.
    Failed(Error),
}

/// Each partition's outcome in an ElectLeaders response: an election that
/// was not needed is no failure.
fn election_results(
    resp: ElectLeadersResponse,
) -> Result<BTreeMap<TopicPartition, ElectionResult>> {
    check(resp.error_code, None)?;
    let mut out = BTreeMap::new();
    for t in resp.replica_election_results {
        for p in t.partition_result {
            let result = match ErrorCode(p.error_code) {
                ErrorCode::NONE => ElectionResult::Elected,
                ErrorCode::ELECTION_NOT_NEEDED => ElectionResult::NotNeeded,
                code => ElectionResult::Failed(
                    Error::kafka(code, p.error_message)
                        .with_api(ApiKey::ELECT_LEADERS)
                        .with_topic(&t.topic)
                        .with_partition(p.partition_id),
                ),
            };
            out.insert(
                TopicPartition::new(t.topic.as_str(), p.partition_id),
                result,
            );
        }
    }
    Ok(out)
}

/// Groups partitions by topic, in order.
pub(super) fn by_topic<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> BTreeMap<&'a str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        out.entry(&tp.topic).or_default().push(tp.partition);
    }
    out
}

impl AdminClient {
    /// Moves partitions to new replica sets (`Some(replicas)`, the first is
    /// the preferred leader), or cancels their reassignment in progress
    /// (`None`). Returns once the controller accepted them; the data moves
    /// in the background ([`list_partition_reassignments`](Self::list_partition_reassignments)
    /// shows what is still moving). Fails on the first partition refused,
    /// naming it (cancelling where nothing moves: NO_REASSIGNMENT_IN_PROGRESS).
    pub async fn alter_partition_reassignments(
        &self,
        reassignments: &BTreeMap<TopicPartition, Option<Vec<i32>>>,
    ) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (tp, replicas) in reassignments {
            topics
                .entry(&tp.topic)
                .or_default()
                .push(ReassignablePartition {
                    partition_index: tp.partition,
                    replicas: replicas.clone(),
                    ..Default::default()
                });
        }
        let req = AlterPartitionReassignmentsRequest {
            timeout_ms: self.timeout_ms(),
            topics: topics
                .into_iter()
                .map(|(name, partitions)| ReassignableTopic {
                    name: name.to_owned(),
                    partitions,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let req = &req;
        self.at_controller(ApiKey::ALTER_PARTITION_REASSIGNMENTS, |conn| async move {
            let resp = conn.request(req).await?;
            check(resp.error_code, resp.error_message)?;
            for t in resp.responses {
                for p in t.partitions {
                    check(p.error_code, p.error_message)
                        .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The reassignments in progress, of `partitions` (`None`: all).
    pub async fn list_partition_reassignments(
        &self,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Reassignment>> {
        let req = ListPartitionReassignmentsRequest {
            timeout_ms: self.timeout_ms(),
            topics: partitions.map(|ps| {
                by_topic(ps)
                    .into_iter()
                    .map(
                        |(name, partition_indexes)| ListPartitionReassignmentsTopics {
                            name: name.to_owned(),
                            partition_indexes,
                            ..Default::default()
                        },
                    )
                    .collect()
            }),
            ..Default::default()
        };
        let req = &req;
        self.at_controller(ApiKey::LIST_PARTITION_REASSIGNMENTS, |conn| async move {
            let resp = conn.request(req).await?;
            check(resp.error_code, resp.error_message)?;
            let mut out = BTreeMap::new();
            for t in resp.topics {
                for p in t.partitions {
                    out.insert(
                        TopicPartition::new(t.name.as_str(), p.partition_index),
                        Reassignment {
                            replicas: p.replicas,
                            adding_replicas: p.adding_replicas,
                            removing_replicas: p.removing_replicas,
                        },
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    /// Elects leaders of `partitions` (`None`: every partition whose
    /// preferred or an eligible leader is not the leader). A partition that
    /// already has the leader asked for is [`ElectionResult::NotNeeded`],
    /// not an error.
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, ElectionResult>> {
        if election == ElectionType::Unknown {
            return Err(Error::invalid_input("election type UNKNOWN"));
        }
        let req = ElectLeadersRequest {
            election_type: election.wire(),
            topic_partitions: partitions.map(|ps| {
                by_topic(ps)
                    .into_iter()
                    .map(|(topic, partitions)| TopicPartitions {
                        topic: topic.to_owned(),
                        partitions,
                        ..Default::default()
                    })
                    .collect()
            }),
            timeout_ms: self.timeout_ms(),
            ..Default::default()
        };
        let req = &req;
        self.at_controller(ApiKey::ELECT_LEADERS, |conn| async move {
            election_results(conn.request(req).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };

    #[test]
    fn election_outcomes_per_partition() {
        let partition = |partition_id, code: ErrorCode, message: Option<&str>| PartitionResult {
            partition_id,
            error_code: code.0,
            error_message: message.map(str::to_owned),
            ..Default::default()
        };
        let resp = ElectLeadersResponse {
            replica_election_results: vec![ReplicaElectionResult {
                topic: "t".into(),
                partition_result: vec![
                    partition(0, ErrorCode::NONE, None),
                    partition(1, ErrorCode::ELECTION_NOT_NEEDED, None),
                    partition(
                        2,
                        ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
                        Some("replica 3 is offline"),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = election_results(resp).unwrap();
        assert!(matches!(
            out[&TopicPartition::new("t", 0)],
            ElectionResult::Elected
        ));
        assert!(matches!(
            out[&TopicPartition::new("t", 1)],
            ElectionResult::NotNeeded
        ));
        let ElectionResult::Failed(e) = &out[&TopicPartition::new("t", 2)] else {
            panic!("expected a failure: {out:?}");
        };
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE)
        );
        assert!(e.to_string().contains("replica 3 is offline"), "{e}");

        let refused = ElectLeadersResponse {
            error_code: ErrorCode::CLUSTER_AUTHORIZATION_FAILED.0,
            ..Default::default()
        };
        assert_eq!(
            election_results(refused).unwrap_err().error_code(),
            Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
        );
    }
}
