//! Errors of the cluster layer.

use crate::{connection::ConnectionError, protocol::ErrorCode};

/// Why a cluster-level operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A request on a broker connection failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// None of the known brokers or bootstrap addresses accepted a connection.
    #[error("no broker reachable (tried {tried:?}){}", .last.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoBrokerReachable {
        /// The addresses tried, in order.
        tried: Vec<String>,
        /// The last failure.
        last: Option<ConnectionError>,
    },
    /// A bootstrap address is malformed (bad port, empty host).
    #[error("invalid broker address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Metadata for a topic came back with an error.
    #[error("metadata for topic {topic}: {code}")]
    Metadata {
        /// The topic.
        topic: String,
        /// The topic-level error code.
        code: ErrorCode,
    },
    /// The topic does not exist (or is not visible to this client).
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The topic exists but has no such partition.
    #[error("unknown partition {0}-{1}")]
    UnknownPartition(String, i32),
    /// No broker with this id is in the cluster metadata.
    #[error("unknown broker id {0}")]
    UnknownBroker(i32),
    /// The partition has no leader right now (election in progress).
    #[error("no leader for {topic}-{partition}{}", .code.map(|c| format!(": {c}")).unwrap_or_default())]
    LeaderNotAvailable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The partition error, if the broker gave one.
        code: Option<ErrorCode>,
    },
    /// The metadata names no controller.
    #[error("the cluster metadata names no controller")]
    NoController,
    /// Retrying ran out of time.
    #[error("{what}: deadline exceeded{}", .last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    DeadlineExceeded {
        /// What was being retried.
        what: &'static str,
        /// The last failure before the deadline.
        last: Option<Box<ClusterError>>,
    },
}

impl ClusterError {
    /// Whether retrying (usually after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connection(e) => e.is_retriable(),
            Self::Metadata { code, .. } => code.is_retriable(),
            // A broker that refused for good (authentication, TLS) will
            // refuse again: fail at once instead of retrying to the deadline.
            Self::NoBrokerReachable { last, .. } => {
                last.as_ref().is_none_or(ConnectionError::is_retriable)
            }
            // Topics, partitions and brokers appear as the cluster changes.
            Self::UnknownTopic(_)
            | Self::UnknownPartition(..)
            | Self::UnknownBroker(_)
            | Self::LeaderNotAvailable { .. }
            | Self::NoController => true,
            Self::DeadlineExceeded { .. } | Self::BadAddress { .. } => false,
        }
    }

    /// Whether a request may have reached a broker although it failed; see
    /// [`ConnectionError::is_ambiguous`].
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Connection(e) if e.is_ambiguous())
    }
}
