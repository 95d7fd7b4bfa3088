//! Partition assignors of the classic protocol: the group leader runs one to
//! split the subscribed topics' partitions among the members.
//!
//! The built-in assignors give the same assignments as the Java client's
//! namesakes for the same input, so a group may mix members of this crate,
//! of the Java client and of librdkafka, whichever of them is leader:
//!
//! - [`RangeAssignor`] (`range`): per topic, consecutive ranges of
//!   partitions to the members in order (rack-aware when racks are known).
//! - [`RoundRobinAssignor`] (`roundrobin`): all partitions dealt out in turn.
//! - [`StickyAssignor`] (`sticky`): balanced, and moves as few partitions
//!   as possible across rebalances (eager protocol).
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`): the same
//!   assignment, minus partitions that change owner, which follow in a
//!   second rebalance once their old owner has released them (incremental
//!   cooperative protocol, KIP-429).
//!
//! Members are handed to an assignor in the order the JoinGroup response
//! lists them, which the Java client's results depend on in a few tie cases.

mod java;
mod range;
mod roundrobin;
mod sticky;

use std::{collections::BTreeMap, fmt};

use bytes::Bytes;

pub use self::range::RangeAssignor;
pub use self::roundrobin::RoundRobinAssignor;
pub use self::sticky::{CooperativeStickyAssignor, StickyAssignor};
use super::{protocol::Subscription, TopicPartition};

/// How members hand partitions over in a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RebalanceProtocol {
    /// Every member gives up all its partitions before rejoining.
    Eager,
    /// Members keep their partitions through the rebalance and give up only
    /// those assigned elsewhere, which are then assigned in a follow-up
    /// rebalance (KIP-429).
    Cooperative,
}

/// A partition as an assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionMetadata {
    /// The partition id.
    pub partition: i32,
    /// The racks of the brokers holding a replica (brokers without a rack
    /// left out), for rack-aware assignment.
    pub replica_racks: Vec<String>,
}

/// The subscribed topics the cluster knows, each with its partitions sorted
/// by id. Topics without metadata are absent, and never assigned.
pub type GroupTopics = BTreeMap<String, Vec<PartitionMetadata>>;

/// A member of the group, as the leader learns it from JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its decoded subscription (with its static instance id, if any).
    pub subscription: Subscription,
}

/// What a member knows about its own assignment when it (re)joins; some
/// assignors put it into their subscription user data.
#[derive(Debug, Clone, Copy)]
pub struct MemberAssignmentState<'a> {
    /// The generation of the member's latest assignment (`-1` if none).
    pub generation: i32,
    /// The latest assignment the member received, `None` before its first.
    pub last_assignment: Option<&'a [TopicPartition]>,
}

/// An assignment: member id to its partitions.
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// An assignor failed (its internal consistency checks did not hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignError(pub String);

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "assignment failed: {}", self.0)
    }
}

impl std::error::Error for AssignError {}

/// A partition assignor of the classic protocol.
///
/// A custom assignor implements this; its [`name`](Self::name) must be the
/// same in every member that uses it, whichever client they run.
pub trait Assignor: Send + Sync + fmt::Debug {
    /// The protocol name members announce in JoinGroup.
    fn name(&self) -> &str;

    /// The rebalance protocols this assignor supports. A member uses the
    /// cooperative protocol only if all its assignors support it.
    fn supported_protocols(&self) -> &[RebalanceProtocol] {
        &[RebalanceProtocol::Eager]
    }

    /// The user data to put into this member's subscription.
    fn subscription_user_data(&self, _state: &MemberAssignmentState<'_>) -> Option<Bytes> {
        None
    }

    /// Assigns the partitions of `topics` to `members` (in JoinGroup order).
    /// Every member must get an entry, possibly empty; no partition may be
    /// given to two members.
    fn assign(
        &self,
        topics: &GroupTopics,
        members: &[GroupMember],
    ) -> Result<GroupAssignment, AssignError>;
}

/// Java's `MemberInfo` order: members with a static instance id first, by
/// instance id; then the others by member id.
fn member_order(a: &GroupMember, b: &GroupMember) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (
        &a.subscription.group_instance_id,
        &b.subscription.group_instance_id,
    ) {
        (Some(x), Some(y)) => java::java_cmp(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => java::java_cmp(&a.member_id, &b.member_id),
    }
}

/// The members sorted by [`member_order`], ties (equal static instance ids,
/// which a coordinator does not allow) left in the order the Java client
/// would see them: its `HashMap` order of member ids.
fn sorted_members(members: &[GroupMember]) -> Vec<&GroupMember> {
    let mut by_id: java::JHashMap<String, &GroupMember> = java::JHashMap::new();
    for m in members {
        by_id.insert(m.member_id.clone(), m);
    }
    let mut sorted: Vec<&GroupMember> = by_id.iter().map(|(_, m)| *m).collect();
    sorted.sort_by(|a, b| member_order(a, b));
    sorted
}

/// The rack of a member, ignoring empty strings as the Java client does.
fn member_rack(m: &GroupMember) -> Option<&str> {
    m.subscription.rack_id.as_deref().filter(|r| !r.is_empty())
}

/// Java's `useRackAwareAssignment`: only if some member rack holds replicas,
/// and not every partition has replicas on the same set of racks.
fn use_rack_aware<'a>(
    consumer_racks: &std::collections::BTreeSet<&'a str>,
    partition_racks: &std::collections::BTreeSet<&'a str>,
    racks_per_partition: impl Iterator<Item = &'a std::collections::BTreeSet<&'a str>>,
) -> bool {
    if consumer_racks.is_empty() || consumer_racks.is_disjoint(partition_racks) {
        return false;
    }
    !racks_per_partition
        .into_iter()
        .all(|r| r == partition_racks)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn topics(spec: &[(&str, i32)]) -> GroupTopics {
        spec.iter()
            .map(|(t, n)| {
                (
                    (*t).to_owned(),
                    (0..*n)
                        .map(|p| PartitionMetadata {
                            partition: p,
                            replica_racks: Vec::new(),
                        })
                        .collect(),
                )
            })
            .collect()
    }

    pub(crate) fn member(id: &str, topics: &[&str]) -> GroupMember {
        GroupMember {
            member_id: id.to_owned(),
            subscription: Subscription {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            },
        }
    }

    pub(crate) fn tps(spec: &[(&str, i32)]) -> Vec<TopicPartition> {
        spec.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }
}
