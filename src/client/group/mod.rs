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
//! - The membership state machines, without I/O: [`classic::ClassicMember`]
//!   and [`next_gen::NextGenMember`].
//! - The embedded consumer protocol of classic groups: [`protocol`].

mod admin;
pub mod assignor;
pub mod classic;
mod committer;
mod consumer;
mod coordinator;
mod driver;
pub mod next_gen;
pub mod protocol;

pub use self::admin::{
    GroupAdmin, GroupDescription, GroupListing, MemberDescription, OffsetSpec, PartitionLag,
};
pub use self::consumer::{GroupConfig, GroupConsumer, GroupProtocol, RebalanceListener};
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

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
