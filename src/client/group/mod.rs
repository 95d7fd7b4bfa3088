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

use std::fmt;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
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
