//! Consumer groups: members that share the partitions of their topics and
//! commit their progress.
//!
//! - [`GroupConsumer`] ([`Client::group_consumer`](crate::client::Client::group_consumer)):
//!   joins a group with the classic protocol ([`GroupProtocol::Classic`],
//!   assignors run by the group leader, see [`assignor`]) or the KIP-848
//!   protocol ([`GroupProtocol::Consumer`], assignment by the broker), and
//!   streams the records of the partitions it is assigned, with commits.
//! - [`GroupAdmin`] ([`Client::group_admin`](crate::client::Client::group_admin)):
//!   list, describe and delete groups; fetch, commit, delete and reset
//!   committed offsets; lag per partition.
//! - The membership state machines, without I/O: `classic::ClassicMember`
//!   and `next_gen::NextGenMember`, both run through the `member::Member`
//!   trait by one driver task (public with the `unstable` feature).
//! - The embedded consumer protocol of classic groups: [`protocol`].

mod admin;
mod assignment;
pub mod assignor;
unstable_mod!(classic);
mod committer;
mod config;
mod consumer;
pub(crate) mod coordinator;
mod driver;
unstable_mod!(member);
unstable_mod!(next_gen);
mod offset_retry;
pub mod protocol;
mod shared;
mod subscription;

pub use self::admin::{
    GroupAdmin, GroupDescription, GroupListing, MemberDescription, OffsetSpec, PartitionLag,
};
pub use self::config::{GroupConfig, GroupProtocol, RebalanceListener, TopicMatcher};
pub use self::consumer::GroupConsumer;
pub use self::coordinator::CommittedOffset;

use std::{fmt, sync::Arc};

/// A partition of a topic.
///
/// The topic name is shared (`Arc<str>`, as in
/// [`ConsumedRecord::topic`](crate::client::consumer::ConsumedRecord::topic)):
/// the many partitions of one topic in an assignment hold one copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// Who consumed the offsets a transaction commits: the group and the
/// member's generation, so that the coordinator refuses the commit of a
/// member that lost its partitions (KIP-447). From
/// [`GroupConsumer::group_metadata`]; see
/// [`Producer::send_offsets_to_transaction`](crate::client::producer::Producer::send_offsets_to_transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    group_id: String,
    generation_id: i32,
    member_id: String,
    group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// The metadata of an application that commits for `group_id` without
    /// being its member (no generation check, as in the Java client).
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }

    pub(crate) fn member(
        group_id: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
    ) -> Self {
        Self {
            group_id,
            generation_id,
            member_id,
            group_instance_id,
        }
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The member's generation (classic) or member epoch (KIP-848); `-1`
    /// for none.
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// The member id; empty for none.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The static member's instance id, if it has one.
    pub fn group_instance_id(&self) -> Option<&str> {
        self.group_instance_id.as_deref()
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
