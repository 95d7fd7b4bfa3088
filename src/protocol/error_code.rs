//! Kafka error codes as an open type: an unknown code survives decoding and
//! is reported by number.
//!
//! The table covers every code of Apache Kafka 4.3 (-1 to 133). Names and
//! retriable flags follow the Java client's `Errors` enum (retriable = its
//! exception is a `RetriableException`), so logs and retry decisions match
//! what Kafka users already know.

use std::fmt;

/// A Kafka error code as carried in responses. `0` is no error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ErrorCode(pub i16);

struct Info {
    code: i16,
    name: &'static str,
    retriable: bool,
    /// The partition's leader may be elsewhere: look it up again.
    leader_moved: bool,
    description: &'static str,
}

/// Rows are `NAME = code, retriable, description;`; codes after which a
/// partition's leader must be looked up again add `+ leader_moved` after
/// the retriable flag.
macro_rules! error_codes {
    (@flag) => { false };
    (@flag leader_moved) => { true };
    ($( $konst:ident = $code:literal, $retriable:literal $(+ $flag:ident)?, $desc:literal; )*) => {
        impl ErrorCode {
            $(
                #[doc = $desc]
                pub const $konst: ErrorCode = ErrorCode($code);
            )*
        }
        /// Sorted by code, so lookups can binary-search.
        const TABLE: &[Info] = &[
            $( Info {
                code: $code,
                name: stringify!($konst),
                retriable: $retriable,
                leader_moved: error_codes!(@flag $($flag)?),
                description: $desc,
            }, )*
        ];
    };
}

error_codes! {
    UNKNOWN_SERVER_ERROR = -1, false, "The broker hit an unexpected internal error while handling the request.";
    NONE = 0, false, "No error.";
    OFFSET_OUT_OF_RANGE = 1, false, "The requested offset is outside the range kept by the broker.";
    CORRUPT_MESSAGE = 2, true, "A message failed its CRC check or is otherwise corrupt.";
    UNKNOWN_TOPIC_OR_PARTITION = 3, true + leader_moved, "This broker does not host this topic-partition.";
    INVALID_FETCH_SIZE = 4, false, "The fetch asked for an invalid number of bytes.";
    LEADER_NOT_AVAILABLE = 5, true + leader_moved, "No leader is available for this partition right now.";
    NOT_LEADER_OR_FOLLOWER = 6, true + leader_moved, "This broker is not the leader or a follower for the partition.";
    REQUEST_TIMED_OUT = 7, true, "The request timed out on the broker.";
    BROKER_NOT_AVAILABLE = 8, false, "The addressed broker is not available.";
    REPLICA_NOT_AVAILABLE = 9, true + leader_moved, "A replica the request needs is not available.";
    MESSAGE_TOO_LARGE = 10, false, "A record or batch is larger than the broker or topic accepts.";
    STALE_CONTROLLER_EPOCH = 11, false, "The request came from a controller whose epoch is outdated.";
    OFFSET_METADATA_TOO_LARGE = 12, false, "The metadata string committed with an offset is too long.";
    NETWORK_EXCEPTION = 13, true, "The connection broke before a response arrived.";
    COORDINATOR_LOAD_IN_PROGRESS = 14, true, "The coordinator is still loading its state; try again shortly.";
    COORDINATOR_NOT_AVAILABLE = 15, true, "No coordinator is available for this group or transaction right now.";
    NOT_COORDINATOR = 16, true, "This broker is not the coordinator for the group or transaction; look it up again.";
    INVALID_TOPIC_EXCEPTION = 17, false, "The topic name is not valid or the operation is not allowed on this topic.";
    RECORD_LIST_TOO_LARGE = 18, false, "The batch in a produce request exceeds the segment size.";
    NOT_ENOUGH_REPLICAS = 19, true + leader_moved, "Fewer in-sync replicas than min.insync.replicas; the write was refused.";
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20, true, "The write reached the leader but the in-sync replica set shrank below the minimum.";
    INVALID_REQUIRED_ACKS = 21, false, "The acks setting of the produce request is not valid.";
    ILLEGAL_GENERATION = 22, false, "The group generation in the request is not the current one.";
    INCONSISTENT_GROUP_PROTOCOL = 23, false, "The member's protocol type or protocols do not match the group's.";
    INVALID_GROUP_ID = 24, false, "The group id is empty or otherwise not valid.";
    UNKNOWN_MEMBER_ID = 25, false, "The group coordinator does not know this member id.";
    INVALID_SESSION_TIMEOUT = 26, false, "The session timeout is outside the range the broker allows.";
    REBALANCE_IN_PROGRESS = 27, false, "The group is rebalancing; the member must rejoin.";
    INVALID_COMMIT_OFFSET_SIZE = 28, false, "The offset commit is too large to store.";
    TOPIC_AUTHORIZATION_FAILED = 29, false, "The client is not authorized for this topic.";
    GROUP_AUTHORIZATION_FAILED = 30, false, "The client is not authorized for this group.";
    CLUSTER_AUTHORIZATION_FAILED = 31, false, "The client is not authorized for this cluster operation.";
    INVALID_TIMESTAMP = 32, false, "A record timestamp is outside the range the topic accepts.";
    UNSUPPORTED_SASL_MECHANISM = 33, false, "The broker does not enable the requested SASL mechanism.";
    ILLEGAL_SASL_STATE = 34, false, "The request is not valid at this point of the SASL exchange.";
    UNSUPPORTED_VERSION = 35, false, "The broker does not support this version of the request.";
    TOPIC_ALREADY_EXISTS = 36, false, "A topic with this name already exists.";
    INVALID_PARTITIONS = 37, false, "The partition count is not valid.";
    INVALID_REPLICATION_FACTOR = 38, false, "The replication factor is not valid.";
    INVALID_REPLICA_ASSIGNMENT = 39, false, "The replica assignment is not valid.";
    INVALID_CONFIG = 40, false, "A configuration value is not valid.";
    NOT_CONTROLLER = 41, true, "This broker is not the active controller.";
    INVALID_REQUEST = 42, false, "The request is malformed or inconsistent; see the broker log for details.";
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43, false, "The topic's message format version does not support this request.";
    POLICY_VIOLATION = 44, false, "The request breaks a policy configured on the broker.";
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45, false, "The broker saw a producer sequence number out of order.";
    DUPLICATE_SEQUENCE_NUMBER = 46, false, "The broker already has a batch with this producer sequence number.";
    INVALID_PRODUCER_EPOCH = 47, false, "The producer epoch is older than the one the broker knows.";
    INVALID_TXN_STATE = 48, false, "The operation is not allowed in the transaction's current state.";
    INVALID_PRODUCER_ID_MAPPING = 49, false, "The producer id does not match the one mapped to this transactional id.";
    INVALID_TRANSACTION_TIMEOUT = 50, false, "The transaction timeout exceeds the broker's maximum.";
    CONCURRENT_TRANSACTIONS = 51, true, "Another operation on this transactional id is still in progress.";
    TRANSACTION_COORDINATOR_FENCED = 52, false, "The transaction coordinator was replaced by a newer one.";
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53, false, "The client is not authorized for this transactional id.";
    SECURITY_DISABLED = 54, false, "Security features are disabled on the broker.";
    OPERATION_NOT_ATTEMPTED = 55, false, "The broker skipped this operation because another part of the request failed.";
    KAFKA_STORAGE_ERROR = 56, true + leader_moved, "The broker's disk for this partition failed or is offline.";
    LOG_DIR_NOT_FOUND = 57, false, "The named log directory does not exist on the broker.";
    SASL_AUTHENTICATION_FAILED = 58, false, "SASL authentication failed.";
    UNKNOWN_PRODUCER_ID = 59, false, "The broker no longer has state for this producer id, e.g. after its records expired.";
    REASSIGNMENT_IN_PROGRESS = 60, false, "A partition reassignment is under way.";
    DELEGATION_TOKEN_AUTH_DISABLED = 61, false, "Delegation tokens are not enabled on the broker.";
    DELEGATION_TOKEN_NOT_FOUND = 62, false, "The broker has no such delegation token.";
    DELEGATION_TOKEN_OWNER_MISMATCH = 63, false, "The principal is neither owner nor renewer of the token.";
    DELEGATION_TOKEN_REQUEST_NOT_ALLOWED = 64, false, "Delegation token requests are refused on this kind of connection.";
    DELEGATION_TOKEN_AUTHORIZATION_FAILED = 65, false, "The client is not authorized for this delegation token.";
    DELEGATION_TOKEN_EXPIRED = 66, false, "The delegation token has expired.";
    INVALID_PRINCIPAL_TYPE = 67, false, "The principal type is not supported.";
    NON_EMPTY_GROUP = 68, false, "The group still has members.";
    GROUP_ID_NOT_FOUND = 69, false, "No group with this id exists.";
    FETCH_SESSION_ID_NOT_FOUND = 70, true, "The broker does not know this fetch session; start a new one.";
    INVALID_FETCH_SESSION_EPOCH = 71, true, "The fetch session epoch is not the expected one.";
    LISTENER_NOT_FOUND = 72, true, "The partition leader has no listener matching the one this request used.";
    TOPIC_DELETION_DISABLED = 73, false, "Deleting topics is disabled on the broker.";
    FENCED_LEADER_EPOCH = 74, true + leader_moved, "The leader epoch in the request is older than the broker's.";
    UNKNOWN_LEADER_EPOCH = 75, true + leader_moved, "The leader epoch in the request is newer than the broker's.";
    UNSUPPORTED_COMPRESSION_TYPE = 76, false, "The client cannot handle the compression codec of this partition.";
    STALE_BROKER_EPOCH = 77, false, "The broker epoch in the request is outdated.";
    OFFSET_NOT_AVAILABLE = 78, true + leader_moved, "The new leader's high watermark has not caught up yet, so offsets cannot be served.";
    MEMBER_ID_REQUIRED = 79, false, "The member must rejoin with the member id the coordinator assigned.";
    PREFERRED_LEADER_NOT_AVAILABLE = 80, true, "The preferred replica cannot become leader right now.";
    GROUP_MAX_SIZE_REACHED = 81, false, "The group already has its maximum number of members.";
    FENCED_INSTANCE_ID = 82, false, "Another member with the same static instance id replaced this one.";
    ELIGIBLE_LEADERS_NOT_AVAILABLE = 83, true, "No replica that could become leader is available.";
    ELECTION_NOT_NEEDED = 84, true, "The partition already has the desired leader.";
    NO_REASSIGNMENT_IN_PROGRESS = 85, false, "There is no partition reassignment to cancel.";
    GROUP_SUBSCRIBED_TO_TOPIC = 86, false, "Offsets of a topic cannot be deleted while the group consumes it.";
    INVALID_RECORD = 87, false, "The broker rejected a record that failed its validation.";
    UNSTABLE_OFFSET_COMMIT = 88, true, "Pending transactional offsets must settle before offsets can be read.";
    THROTTLING_QUOTA_EXCEEDED = 89, true, "The request exceeded a throttling quota.";
    PRODUCER_FENCED = 90, false, "A newer producer with the same transactional id fenced this one.";
    RESOURCE_NOT_FOUND = 91, false, "The request named a resource that does not exist.";
    DUPLICATE_RESOURCE = 92, false, "The request named the same resource more than once.";
    UNACCEPTABLE_CREDENTIAL = 93, false, "The credential does not meet the broker's requirements.";
    INCONSISTENT_VOTER_SET = 94, false, "The sender or receiver of a quorum request is not an expected voter.";
    INVALID_UPDATE_VERSION = 95, false, "The update version is not valid.";
    FEATURE_UPDATE_FAILED = 96, false, "Finalized features could not be updated because of a broker error.";
    PRINCIPAL_DESERIALIZATION_FAILURE = 97, false, "A forwarded request's principal could not be decoded (a cluster security setup problem).";
    SNAPSHOT_NOT_FOUND = 98, false, "The requested metadata snapshot does not exist.";
    POSITION_OUT_OF_RANGE = 99, false, "The requested snapshot position is negative or past its end.";
    UNKNOWN_TOPIC_ID = 100, true + leader_moved, "This broker does not host a topic with this id.";
    DUPLICATE_BROKER_REGISTRATION = 101, false, "Another broker already registered with this id.";
    BROKER_ID_NOT_REGISTERED = 102, false, "No broker with this id is registered.";
    INCONSISTENT_TOPIC_ID = 103, true + leader_moved, "The topic id in the request differs from the one in the broker's log.";
    INCONSISTENT_CLUSTER_ID = 104, false, "The cluster id in the request differs from the broker's.";
    TRANSACTIONAL_ID_NOT_FOUND = 105, false, "No transaction with this transactional id exists.";
    FETCH_SESSION_TOPIC_ID_ERROR = 106, true, "The fetch session mixed topic ids inconsistently.";
    INELIGIBLE_REPLICA = 107, false, "The proposed in-sync replica set contains a replica that may not join it.";
    NEW_LEADER_ELECTED = 108, false, "The partition state was updated, but a new leader has since been elected.";
    OFFSET_MOVED_TO_TIERED_STORAGE = 109, false, "The requested offset now lives in tiered storage.";
    FENCED_MEMBER_EPOCH = 110, false, "The coordinator fenced this member's epoch; it must give up its partitions and rejoin.";
    UNRELEASED_INSTANCE_ID = 111, false, "Another member still holds this static instance id and must leave first.";
    UNSUPPORTED_ASSIGNOR = 112, false, "The group does not support the requested assignor or assignor version.";
    STALE_MEMBER_EPOCH = 113, false, "The member epoch is outdated; retry after the next heartbeat gives the current one.";
    MISMATCHED_ENDPOINT_TYPE = 114, false, "The request reached an endpoint of the wrong kind (broker versus controller).";
    UNSUPPORTED_ENDPOINT_TYPE = 115, false, "This kind of endpoint is not supported yet.";
    UNKNOWN_CONTROLLER_ID = 116, false, "No controller with this id is known.";
    UNKNOWN_SUBSCRIPTION_ID = 117, false, "The telemetry subscription id is unknown or outdated.";
    TELEMETRY_TOO_LARGE = 118, false, "The pushed telemetry exceeds the size the broker accepts.";
    INVALID_REGISTRATION = 119, false, "The controller judged the broker registration to be invalid.";
    TRANSACTION_ABORTABLE = 120, false, "The transaction hit an error; abort it to keep using the transactional id.";
    INVALID_RECORD_STATE = 121, false, "The record is not in a state that allows this acknowledgement.";
    SHARE_SESSION_NOT_FOUND = 122, true, "The broker does not know this share session.";
    INVALID_SHARE_SESSION_EPOCH = 123, true, "The share session epoch is not the expected one.";
    FENCED_STATE_EPOCH = 124, false, "The share-group state epoch does not match the coordinator's.";
    INVALID_VOTER_KEY = 125, false, "The voter key does not match the receiving replica's.";
    DUPLICATE_VOTER = 126, false, "The voter is already in the voter set.";
    VOTER_NOT_FOUND = 127, false, "The voter is not in the voter set.";
    INVALID_REGULAR_EXPRESSION = 128, false, "The subscription regular expression is not valid.";
    REBOOTSTRAP_REQUIRED = 129, false, "The client's metadata is stale; it must bootstrap again.";
    STREAMS_INVALID_TOPOLOGY = 130, false, "The Streams topology is not valid.";
    STREAMS_INVALID_TOPOLOGY_EPOCH = 131, false, "The Streams topology epoch is not valid.";
    STREAMS_TOPOLOGY_FENCED = 132, false, "The Streams topology epoch is outdated.";
    SHARE_SESSION_LIMIT_REACHED = 133, true, "The broker has no room for another share session.";
}

impl ErrorCode {
    fn info(self) -> Option<&'static Info> {
        TABLE
            .binary_search_by_key(&self.0, |i| i.code)
            .ok()
            .and_then(|idx| TABLE.get(idx))
    }

    /// Whether this is the "no error" code.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether this crate knows the code (an unknown one may come from a newer broker).
    pub fn is_known(self) -> bool {
        self.info().is_some()
    }

    /// The Java client's name for the code, or `UNKNOWN` for codes this crate does not know.
    pub fn name(self) -> &'static str {
        self.info().map_or("UNKNOWN", |i| i.name)
    }

    /// Whether retrying the same request may succeed (as in the Java client;
    /// unknown codes are not retriable).
    pub fn is_retriable(self) -> bool {
        self.info().is_some_and(|i| i.retriable)
    }

    /// Whether the code says the partition's leader may have moved (or its
    /// metadata is stale), so the leader must be looked up again before
    /// retrying: NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
    /// UNKNOWN_TOPIC_OR_PARTITION and the like.
    pub fn is_leader_moved(self) -> bool {
        self.info().is_some_and(|i| i.leader_moved)
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        self.info()
            .map_or("An error code this client does not know.", |i| {
                i.description
            })
    }
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.0, self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_moves_are_recognised() {
        for code in [
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            ErrorCode::FENCED_LEADER_EPOCH,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::UNKNOWN_TOPIC_ID,
        ] {
            assert!(code.is_leader_moved(), "{code}");
            assert!(code.is_retriable(), "{code}");
        }
        for code in [
            ErrorCode::NONE,
            ErrorCode::OFFSET_OUT_OF_RANGE,
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode(-32_000),
        ] {
            assert!(!code.is_leader_moved(), "{code}");
        }
        // Every code that sends a client to the leader again is retriable.
        assert!(TABLE.iter().filter(|i| i.leader_moved).all(|i| i.retriable));
    }

    #[test]
    fn table_is_sorted_contiguous_and_unique() {
        // Sorted order is what `info` relies on; contiguity catches a typo'd code.
        for (i, w) in TABLE.windows(2).enumerate() {
            assert_eq!(w[0].code + 1, w[1].code, "gap or disorder after entry {i}");
        }
        assert_eq!(TABLE.first().map(|i| i.code), Some(-1));
        assert_eq!(TABLE.last().map(|i| i.code), Some(133));
        let mut names: Vec<&str> = TABLE.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
    }

    #[test]
    fn known_codes_resolve() {
        assert_eq!(ErrorCode(6).name(), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(ErrorCode::NOT_LEADER_OR_FOLLOWER, ErrorCode(6));
        assert!(ErrorCode::NOT_LEADER_OR_FOLLOWER.is_retriable());
        assert!(!ErrorCode::TOPIC_AUTHORIZATION_FAILED.is_retriable());
        assert!(ErrorCode::UNKNOWN_TOPIC_ID.is_retriable());
        assert!(!ErrorCode::REBALANCE_IN_PROGRESS.is_retriable());
        assert_eq!(ErrorCode(-1).name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(ErrorCode(133).name(), "SHARE_SESSION_LIMIT_REACHED");
        assert!(ErrorCode::NONE.is_ok());
        assert!(!ErrorCode::CORRUPT_MESSAGE.is_ok());
        assert_eq!(
            format!("{:?}", ErrorCode::OFFSET_OUT_OF_RANGE),
            "OFFSET_OUT_OF_RANGE(1)"
        );
    }

    #[test]
    fn unknown_codes_survive() {
        for raw in [9999i16, 134, -2, i16::MIN, i16::MAX] {
            let code = ErrorCode::from(raw);
            assert_eq!(code.name(), "UNKNOWN");
            assert!(!code.is_known());
            assert!(!code.is_retriable());
            assert!(!code.is_ok());
            assert_eq!(i16::from(code), raw, "the number must be kept");
            assert!(code.to_string().contains(&raw.to_string()));
        }
    }
}
