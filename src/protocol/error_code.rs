//! Kafka error codes as an open type: an unknown code survives decoding and
//! is reported by number.

use std::fmt;

/// A Kafka error code as carried in responses. `0` is no error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ErrorCode(pub i16);

struct Info {
    code: i16,
    name: &'static str,
    retriable: bool,
    description: &'static str,
}

macro_rules! error_codes {
    ($( $konst:ident = $code:literal, $name:literal, $retriable:literal, $desc:literal; )*) => {
        impl ErrorCode {
            $(
                #[doc = $desc]
                pub const $konst: ErrorCode = ErrorCode($code);
            )*
        }
        const TABLE: &[Info] = &[
            $( Info { code: $code, name: $name, retriable: $retriable, description: $desc }, )*
        ];
    };
}

// The full table is filled in by the protocol work; these are the codes the
// rest of the crate relies on by name.
error_codes! {
    UNKNOWN_SERVER_ERROR = -1, "UNKNOWN_SERVER_ERROR", false, "The server experienced an unexpected error.";
    NONE = 0, "NONE", false, "No error.";
    OFFSET_OUT_OF_RANGE = 1, "OFFSET_OUT_OF_RANGE", false, "The requested offset is outside the range kept by the broker.";
    CORRUPT_MESSAGE = 2, "CORRUPT_MESSAGE", true, "A message failed its CRC check or is otherwise corrupt.";
    UNKNOWN_TOPIC_OR_PARTITION = 3, "UNKNOWN_TOPIC_OR_PARTITION", true, "This broker does not host this topic-partition.";
    LEADER_NOT_AVAILABLE = 5, "LEADER_NOT_AVAILABLE", true, "No leader is available for this partition right now.";
    NOT_LEADER_OR_FOLLOWER = 6, "NOT_LEADER_OR_FOLLOWER", true, "This broker is not the leader or a follower for the partition.";
    REQUEST_TIMED_OUT = 7, "REQUEST_TIMED_OUT", true, "The request timed out on the broker.";
    UNSUPPORTED_VERSION = 35, "UNSUPPORTED_VERSION", false, "The broker does not support this version of the request.";
}

impl ErrorCode {
    fn info(self) -> Option<&'static Info> {
        TABLE.iter().find(|i| i.code == self.0)
    }

    /// Whether this is the "no error" code.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// The Java client's name for the code, or `UNKNOWN` for codes this crate does not know.
    pub fn name(self) -> &'static str {
        self.info().map_or("UNKNOWN", |i| i.name)
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retriable(self) -> bool {
        self.info().is_some_and(|i| i.retriable)
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        self.info()
            .map_or("An error code this client does not know.", |i| i.description)
    }
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> Self {
        ErrorCode(code)
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
