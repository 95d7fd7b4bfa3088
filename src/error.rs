//! The error type of the public client API.
//!
//! [`Error`] is opaque: it is queried through accessors ([`Error::kind`],
//! [`Error::error_code`], [`Error::topic`], ...), so new context can be added
//! without breaking callers. Its `Display` is a single line that carries all
//! the context known: the API, topic and partition, the Kafka error code with
//! its name, and the broker's own message.

use std::fmt;

use crate::{
    cluster::ClusterError,
    connection::ConnectionError,
    protocol::{ApiKey, ErrorCode},
};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A broker could not be reached or the connection broke.
    Connection,
    /// A deadline passed: connecting, a request, or the retries of an
    /// operation.
    Timeout,
    /// The broker answered with a Kafka error code (see
    /// [`Error::error_code`]). Typed cases such as
    /// `Kafka(ErrorCode::OFFSET_OUT_OF_RANGE)` or
    /// `Kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)` can be matched directly.
    Kafka(ErrorCode),
    /// The peer sent bytes that are not a valid Kafka response, or a
    /// response that contradicts the request (e.g. a missing partition).
    Protocol,
    /// The request could not be encoded, or the broker supports no version
    /// of the API that this client can speak.
    Unsupported,
    /// The caller passed an invalid argument.
    InvalidInput,
    /// Records may have been lost, or whether they were written can no
    /// longer be known (the idempotent producer had to reset its sequence
    /// state); never used for records that surely were not written.
    DataLoss,
    /// The producer's buffer is full and `send` was told not to wait.
    BufferFull,
    /// Authentication failed on this side: the broker failed the SASL
    /// mechanism's checks (e.g. a wrong SCRAM server signature), the
    /// mechanism could not run, or the listener wants authentication this
    /// client is not configured for. Failures the broker reports carry its
    /// code instead (`Kafka(SASL_AUTHENTICATION_FAILED)`).
    Authentication,
    /// The record's transaction was aborted before the record was
    /// delivered: it is not visible to `read_committed` readers.
    TransactionAborted,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connection => f.write_str("connection error"),
            Self::Timeout => f.write_str("timed out"),
            Self::Kafka(code) => write!(f, "{}", code.name()),
            Self::Protocol => f.write_str("protocol error"),
            Self::Unsupported => f.write_str("unsupported"),
            Self::InvalidInput => f.write_str("invalid input"),
            Self::DataLoss => f.write_str("possible data loss"),
            Self::BufferFull => f.write_str("buffer full"),
            Self::Authentication => f.write_str("authentication failed"),
            Self::TransactionAborted => f.write_str("transaction aborted"),
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the client API.
///
/// ```
/// use rskafka::error::{Error, ErrorKind};
/// use rskafka::ErrorCode;
///
/// fn describe(e: &Error) -> &'static str {
///     match e.kind() {
///         ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE) => "reset the offset",
///         _ if e.is_retriable() => "try again later",
///         _ => "give up",
///     }
/// }
/// # let _ = describe;
/// ```
pub struct Error {
    // Boxed so `Result<T, Error>` stays one pointer wide on the happy path.
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    retriable: Option<bool>,
    /// The request may have been processed although it failed.
    ambiguous: bool,
    message: Option<String>,
    topic: Option<String>,
    partition: Option<i32>,
    api: Option<ApiKey>,
    broker_message: Option<String>,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind`; context is added with the `with_*` methods.
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                retriable: None,
                ambiguous: false,
                message: None,
                topic: None,
                partition: None,
                api: None,
                broker_message: None,
                source: None,
            }),
        }
    }

    /// An error for a Kafka error code returned by the broker.
    pub(crate) fn kafka(code: ErrorCode, broker_message: Option<String>) -> Self {
        let mut e = Self::new(ErrorKind::Kafka(code));
        // Brokers send an empty string where they have nothing to add.
        e.inner.broker_message = broker_message.filter(|m| !m.is_empty());
        e
    }

    /// An invalid argument.
    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput).with_message(message)
    }

    /// A response that does not fit the request.
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol).with_message(message)
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = Some(message.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// A copy for another caller of the same failed operation; the source
    /// survives as its text.
    pub(crate) fn duplicate(&self) -> Self {
        let i = &self.inner;
        Self {
            inner: Box::new(Inner {
                kind: i.kind,
                retriable: i.retriable,
                ambiguous: i.ambiguous,
                message: i.message.clone(),
                topic: i.topic.clone(),
                partition: i.partition,
                api: i.api,
                broker_message: i.broker_message.clone(),
                source: i.source.as_ref().map(|s| Source::from(s.to_string())),
            }),
        }
    }

    pub(crate) fn with_retriable(mut self, retriable: bool) -> Self {
        self.inner.retriable = Some(retriable);
        self
    }

    pub(crate) fn with_ambiguous(mut self, ambiguous: bool) -> Self {
        self.inner.ambiguous = ambiguous;
        self
    }

    /// Whether the failed request may still have been processed by the
    /// broker (the connection broke or timed out after sending it), so
    /// repeating it could apply it twice.
    pub(crate) fn is_ambiguous(&self) -> bool {
        self.inner.ambiguous
    }

    /// Sets the topic unless one is already known (the innermost is the most precise).
    pub(crate) fn with_topic(mut self, topic: &str) -> Self {
        if self.inner.topic.is_none() {
            self.inner.topic = Some(topic.to_owned());
        }
        self
    }

    /// Sets the partition unless one is already known.
    pub(crate) fn with_partition(mut self, partition: i32) -> Self {
        if self.inner.partition.is_none() {
            self.inner.partition = Some(partition);
        }
        self
    }

    /// Sets the API unless one is already known.
    pub(crate) fn with_api(mut self, api: ApiKey) -> Self {
        if self.inner.api.is_none() {
            self.inner.api = Some(api);
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The Kafka error code, if the broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.inner.kind {
            ErrorKind::Kafka(code) => Some(code),
            _ => None,
        }
    }

    /// The topic the failed operation was about, if any.
    pub fn topic(&self) -> Option<&str> {
        self.inner.topic.as_deref()
    }

    /// The partition the failed operation was about, if any.
    pub fn partition(&self) -> Option<i32> {
        self.inner.partition
    }

    /// The Kafka API of the failed request, if a request was involved.
    pub fn api(&self) -> Option<ApiKey> {
        self.inner.api
    }

    /// The error message the broker sent with the error code, if any.
    pub fn broker_message(&self) -> Option<&str> {
        self.inner.broker_message.as_deref()
    }

    /// Whether a transactional producer that returned this error can do
    /// nothing more and must be dropped: it was fenced by a newer producer
    /// with the same transactional id, or is not authorised for it (as the
    /// Java client's fatal errors). Any other error of a transaction is
    /// handled by aborting it and going on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.error_code(),
            Some(
                ErrorCode::PRODUCER_FENCED
                    | ErrorCode::INVALID_PRODUCER_EPOCH
                    | ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    | ErrorCode::CLUSTER_AUTHORIZATION_FAILED
                    | ErrorCode::INVALID_TXN_STATE
                    | ErrorCode::INVALID_PRODUCER_ID_MAPPING
                    | ErrorCode::TRANSACTIONAL_ID_NOT_FOUND
                    | ErrorCode::UNSUPPORTED_VERSION
                    | ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT
            )
        )
    }

    /// Whether repeating the operation later may succeed: retriable Kafka
    /// codes (as in the Java client), timeouts and broken connections.
    pub fn is_retriable(&self) -> bool {
        if let Some(r) = self.inner.retriable {
            return r;
        }
        match self.inner.kind {
            ErrorKind::Kafka(code) => code.is_retriable(),
            ErrorKind::Connection | ErrorKind::Timeout => true,
            ErrorKind::Protocol
            | ErrorKind::Unsupported
            | ErrorKind::InvalidInput
            | ErrorKind::DataLoss
            | ErrorKind::Authentication
            | ErrorKind::TransactionAborted => false,
            ErrorKind::BufferFull => true,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(m) = &self.inner.message {
            d.field("message", m);
        }
        if let Some(t) = &self.inner.topic {
            d.field("topic", t);
        }
        if let Some(p) = &self.inner.partition {
            d.field("partition", p);
        }
        if let Some(a) = &self.inner.api {
            d.field("api", a);
        }
        if let Some(m) = &self.inner.broker_message {
            d.field("broker_message", m);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Context first ("Produce my_topic/0: "), then what happened.
        let mut context = String::new();
        if let Some(api) = self.inner.api {
            context.push_str(api.name());
        }
        if let Some(topic) = &self.inner.topic {
            if !context.is_empty() {
                context.push(' ');
            }
            context.push_str(topic);
            if let Some(p) = self.inner.partition {
                context.push_str(&format!("/{p}"));
            }
        }
        if !context.is_empty() {
            write!(f, "{context}: ")?;
        }
        match self.inner.kind {
            // The broker's own message is more specific than the generic
            // description of the code, so it replaces it when present.
            ErrorKind::Kafka(code) => match &self.inner.broker_message {
                Some(m) => write!(f, "{} ({}): {m}", code.name(), code.0)?,
                None => write!(f, "{} ({}): {}", code.name(), code.0, code.description())?,
            },
            kind => write!(f, "{kind}")?,
        }
        if let Some(m) = &self.inner.message {
            write!(f, " ({m})")?;
        }
        if let Some(s) = &self.inner.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<ConnectionError> for Error {
    fn from(e: ConnectionError) -> Self {
        let (kind, api) = match &e {
            ConnectionError::Connect { .. }
            | ConnectionError::Resolve { .. }
            | ConnectionError::ClosedBeforeFirstAnswer { .. }
            | ConnectionError::Disconnected { .. }
            | ConnectionError::Closed
            | ConnectionError::Io(_) => (ErrorKind::Connection, None),
            ConnectionError::Timeout { api, .. } => (ErrorKind::Timeout, Some(*api)),
            ConnectionError::Decode { api, .. } => (ErrorKind::Protocol, Some(*api)),
            ConnectionError::Encode { api, .. } => (ErrorKind::Unsupported, Some(*api)),
            ConnectionError::UnsupportedVersion { api, .. } => (ErrorKind::Unsupported, Some(*api)),
            ConnectionError::Broker { api, code } => (ErrorKind::Kafka(*code), Some(*api)),
            #[cfg(feature = "transport-tls")]
            ConnectionError::Tls { .. } => (ErrorKind::Connection, None),
            // The broker's code when it reported the failure; a rejection
            // by this client is not the broker's SASL_AUTHENTICATION_FAILED.
            ConnectionError::Authentication {
                code: Some(code), ..
            } => (ErrorKind::Kafka(*code), Some(ApiKey::SASL_AUTHENTICATE)),
            ConnectionError::Authentication { code: None, .. } => {
                (ErrorKind::Authentication, Some(ApiKey::SASL_AUTHENTICATE))
            }
            ConnectionError::AuthenticationRequired { .. } => (ErrorKind::Authentication, None),
            // Framing violations, TLS/HTTP peers, unknown correlation ids:
            // whatever answered does not speak Kafka correctly.
            _ => (ErrorKind::Protocol, None),
        };
        let mut err = Error::new(kind)
            .with_retriable(e.is_retriable())
            .with_ambiguous(e.is_ambiguous());
        if let Some(api) = api {
            err = err.with_api(api);
        }
        err.with_source(e)
    }
}

impl From<ClusterError> for Error {
    fn from(e: ClusterError) -> Self {
        let retriable = e.is_retriable();
        let ambiguous = e.is_ambiguous();
        let err = match e {
            ClusterError::Connection(c) => return c.into(),
            // The typed cause (e.g. an authentication failure) says more
            // than "no broker reachable".
            ClusterError::NoBrokerReachable {
                last: Some(last), ..
            } if !last.is_retriable() => return last.into(),
            ClusterError::Metadata { topic, code } => Error::kafka(code, None)
                .with_message("in metadata")
                .with_topic(&topic),
            ClusterError::UnknownTopic(topic) => {
                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None)
                    .with_message("the topic does not exist")
                    .with_topic(&topic)
            }
            ClusterError::UnknownPartition(topic, partition) => {
                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None)
                    .with_message("the topic has no such partition")
                    .with_topic(&topic)
                    .with_partition(partition)
            }
            ClusterError::LeaderNotAvailable {
                topic,
                partition,
                code,
            } => Error::kafka(code.unwrap_or(ErrorCode::LEADER_NOT_AVAILABLE), None)
                .with_topic(&topic)
                .with_partition(partition),
            ClusterError::BadAddress { addr, reason } => {
                Error::invalid_input(format!("invalid broker address {addr:?}: {reason}"))
            }
            ClusterError::NoController => Error::kafka(ErrorCode::NOT_CONTROLLER, None)
                .with_message("the cluster metadata names no controller"),
            ClusterError::DeadlineExceeded { what, last } => {
                // Keep the typed cause (e.g. the Kafka code that kept
                // failing) and say that retrying it ran out of time.
                let message = format!("{what}: gave up at the deadline");
                return match last {
                    Some(last) => {
                        let last = Error::from(*last);
                        let kind = match last.kind() {
                            k @ ErrorKind::Kafka(_) => k,
                            _ => ErrorKind::Timeout,
                        };
                        let mut inner = last.inner;
                        inner.kind = kind;
                        inner.retriable = Some(false);
                        inner.message = Some(match inner.message.take() {
                            Some(m) => format!("{message}; last error: {m}"),
                            None => message,
                        });
                        Error { inner }
                    }
                    None => Error::new(ErrorKind::Timeout)
                        .with_message(message)
                        .with_retriable(false),
                };
            }
            other => Error::new(ErrorKind::Connection).with_source(other),
        };
        err.with_retriable(retriable).with_ambiguous(ambiguous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_context() {
        let e = Error::kafka(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            Some("offset 99 is past the end".into()),
        )
        .with_api(ApiKey(1))
        .with_topic("t")
        .with_partition(3);
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.contains("t/3"), "{s}");
        assert!(s.contains("OFFSET_OUT_OF_RANGE (1)"), "{s}");
        assert!(s.contains("offset 99 is past the end"), "{s}");
        assert_eq!(e.error_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
        assert_eq!(e.topic(), Some("t"));
        assert_eq!(e.partition(), Some(3));
        assert_eq!(e.api(), Some(ApiKey(1)));
        assert!(!e.is_retriable());
    }

    #[test]
    fn innermost_context_wins_and_empty_broker_message_is_dropped() {
        let e = Error::kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER, Some(String::new()))
            .with_topic("inner")
            .with_topic("outer")
            .with_partition(1)
            .with_partition(2);
        assert_eq!(e.topic(), Some("inner"));
        assert_eq!(e.partition(), Some(1));
        assert_eq!(e.broker_message(), None);
        assert!(e.is_retriable());
        assert!(matches!(
            e.kind(),
            ErrorKind::Kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER)
        ));
    }

    #[test]
    fn retriable_by_kind() {
        assert!(Error::new(ErrorKind::Timeout).is_retriable());
        assert!(!Error::invalid_input("x").is_retriable());
        assert!(!Error::new(ErrorKind::Connection)
            .with_retriable(false)
            .is_retriable());
    }
}
