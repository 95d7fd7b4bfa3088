//! Errors of the connection layer.

use std::{io, sync::Arc, time::Duration};

use crate::protocol::{ApiKey, DecodeError, EncodeError, ErrorCode};

/// Why a request on a broker connection failed.
///
/// Cloneable because one broken connection fails every request in flight on
/// it with the same cause.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Resolving or connecting to the broker failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as given (`host:port`).
        addr: String,
        /// What went wrong (resolution, refusal, timeout).
        reason: String,
    },
    /// The broker's host name did not resolve.
    #[error("cannot resolve {addr}: {reason}")]
    Resolve {
        /// The address as given (`host:port`).
        addr: String,
        /// The resolver's answer.
        reason: String,
    },
    /// No response within the request timeout. The connection stays usable:
    /// the late response is read and discarded.
    #[error("{api} v{version} request to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The broker address.
        addr: String,
        /// The request's API.
        api: ApiKey,
        /// The request's version.
        version: i16,
        /// The timeout that elapsed.
        timeout: Duration,
        /// Whether the request may have reached the broker.
        ambiguous: bool,
    },
    /// The connection broke (or was closed) before the response arrived.
    #[error("connection to {addr} lost{}{}", if *.ambiguous { " (the request may have been processed)" } else { "" }, .cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Disconnected {
        /// The broker address.
        addr: String,
        /// Whether the request was fully written before the connection broke,
        /// so the broker may have processed it.
        ambiguous: bool,
        /// What broke the connection, if known.
        #[source]
        cause: Option<Arc<ConnectionError>>,
    },
    /// The peer announced a frame larger than `max_frame_size`.
    #[error("peer announced a frame of {size} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// The announced size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The peer announced a negative frame length.
    #[error("peer announced a negative frame length {0}")]
    NegativeFrameLength(i32),
    /// The peer speaks TLS while this connection is plaintext.
    #[error("peer answered with TLS bytes: is this a TLS listener?")]
    PeerIsTls,
    /// The peer speaks HTTP, not Kafka.
    #[error("peer answered with HTTP: is this a Kafka listener?")]
    PeerIsHttp,
    /// A response carried a correlation id no request is waiting for.
    #[error("response with unknown correlation id {0}")]
    UnknownCorrelationId(i32),
    /// A frame too short to hold its response header.
    #[error("malformed response header: {0}")]
    BadResponseHeader(DecodeError),
    /// A response body could not be decoded.
    #[error("cannot decode {api} v{version} response: {source}")]
    Decode {
        /// The request's API.
        api: ApiKey,
        /// The request's version.
        version: i16,
        /// The decoding failure.
        source: DecodeError,
    },
    /// A request could not be encoded.
    #[error("cannot encode {api} v{version} request: {source}")]
    Encode {
        /// The request's API.
        api: ApiKey,
        /// The requested version.
        version: i16,
        /// The encoding failure.
        source: EncodeError,
    },
    /// The broker and this client share no usable version of an API, or the
    /// requested version is outside what either side supports.
    #[error(
        "{api}: no usable version (requested {requested:?}, broker {broker:?}, client {client:?})"
    )]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for, if one was.
        requested: Option<i16>,
        /// What the broker advertised, if it lists the API.
        broker: Option<(i16, i16)>,
        /// What this client can use.
        client: Option<(i16, i16)>,
    },
    /// The broker answered a request that the connection layer itself sends
    /// (ApiVersions) with an error code.
    #[error("{api} failed on the broker: {code}")]
    Broker {
        /// The API.
        api: ApiKey,
        /// The error code returned.
        code: ErrorCode,
    },
    /// SASL authentication failed: wrong credentials, a mechanism the
    /// broker does not enable, or a server that failed the mechanism's
    /// checks. Retrying with the same settings fails the same way.
    #[error("SASL {mechanism} authentication with {addr} failed: {message}")]
    Authentication {
        /// The broker address.
        addr: String,
        /// The SASL mechanism.
        mechanism: String,
        /// The broker's error code, if the broker reported the failure
        /// (e.g. SASL_AUTHENTICATION_FAILED); `None` if the client did.
        code: Option<ErrorCode>,
        /// The broker's or the client's explanation.
        message: String,
    },
    /// The TLS handshake failed, or the broker ended TLS over the client
    /// certificate; see [`TlsFailure`](super::TlsFailure) for the cases.
    #[cfg(feature = "transport-tls")]
    #[error("TLS with {addr} failed: {failure}")]
    Tls {
        /// The broker address.
        addr: String,
        /// What went wrong.
        failure: super::TlsFailure,
    },
    /// The broker closed the connection right after answering ApiVersions,
    /// before answering the next request: what a listener does that
    /// expects SASL authentication the client did not start.
    #[error("{addr} closed the connection after version negotiation, before answering a request")]
    ClosedBeforeFirstAnswer {
        /// The broker address.
        addr: String,
    },
    /// The broker closed connections right after version negotiation, again
    /// and again ([`Self::ClosedBeforeFirstAnswer`]): the listener probably
    /// requires SASL authentication (or TLS), which the client is not
    /// configured for.
    #[error("{addr} closed the connection after version negotiation {closes} times in a row: the listener probably requires SASL authentication (or TLS), which this client is not configured for")]
    AuthenticationRequired {
        /// The broker address.
        addr: String,
        /// The closes seen.
        closes: u32,
    },
    /// The connection was closed by this client.
    #[error("connection closed by the client")]
    Closed,
    /// An I/O error on the socket.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

impl ConnectionError {
    /// Whether retrying (on this or a fresh connection) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            // A name may resolve again (a broker's record is being
            // replaced); bootstrapping gives up on names that never did.
            Self::Connect { .. }
            | Self::Resolve { .. }
            // Once may be a broker going down; the cluster gives up after
            // a few (AuthenticationRequired).
            | Self::ClosedBeforeFirstAnswer { .. }
            | Self::Timeout { .. }
            | Self::Closed
            | Self::Io(_) => true,
            Self::Disconnected { cause, .. } => match cause {
                None => true,
                Some(c) => c.is_retriable(),
            },
            Self::Broker { code, .. } => code.is_retriable(),
            Self::FrameTooLarge { .. }
            | Self::NegativeFrameLength(_)
            | Self::PeerIsTls
            | Self::PeerIsHttp
            | Self::UnknownCorrelationId(_)
            | Self::BadResponseHeader(_)
            | Self::Decode { .. }
            | Self::Encode { .. }
            | Self::UnsupportedVersion { .. }
            | Self::AuthenticationRequired { .. }
            | Self::Authentication { .. } => false,
            #[cfg(feature = "transport-tls")]
            Self::Tls { .. } => false,
        }
    }

    /// The broker that closed a connection before answering its first
    /// request after version negotiation, if that is what happened.
    pub(crate) fn closed_before_first_answer(&self) -> Option<&str> {
        match self {
            Self::ClosedBeforeFirstAnswer { addr } => Some(addr),
            Self::Disconnected { cause: Some(c), .. } => c.closed_before_first_answer(),
            _ => None,
        }
    }

    /// Whether the request may have reached the broker and been processed
    /// although no response was seen. An idempotent or transactional
    /// producer must treat such a failure as "maybe written".
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Timeout { ambiguous, .. } | Self::Disconnected { ambiguous, .. } => *ambiguous,
            // The broker processed the request: its answer just failed to decode.
            Self::Decode { .. } => true,
            _ => false,
        }
    }
}
