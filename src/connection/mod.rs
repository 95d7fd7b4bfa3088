//! Connections to single brokers.
//!
//! Three layers, each usable alone:
//! - [`ConnectionCore`]: the sans-IO state machine (framing, correlation ids,
//!   the in-flight table, peer-protocol sniffing). No runtime.
//! - a tokio driver task per connection that owns the socket and feeds the
//!   core; requests reach it over a channel and are pipelined.
//! - [`BrokerConnection`]: the cloneable handle callers use. It negotiates
//!   API versions on connect and enforces the per-request timeout.

mod broker;
mod core;
mod error;
mod establish;
pub mod sasl;
#[cfg(feature = "transport-socks5")]
mod socks5;
mod stats;
mod tcp;
#[cfg(feature = "transport-tls")]
mod tls;
mod transport;
mod versions;

use std::{collections::BTreeMap, time::Duration};

pub use self::broker::BrokerConnection;
pub use self::core::{ConnectionCore, EncodedRequest, Failed, FrameWriter, Response};
pub use self::error::ConnectionError;
#[cfg(feature = "transport-socks5")]
pub use self::socks5::Socks5Config;
pub use self::stats::BrokerStats;
pub(crate) use self::stats::Counters;
#[cfg(feature = "transport-tls")]
pub use self::tls::{TlsConfig, TlsConfigBuilder, TlsError, TlsFailure};
pub use self::versions::{client_range, VersionTable, CLIENT_SOFTWARE_NAME};
use crate::protocol::ApiKey;

/// How bytes reach the broker. TLS, SOCKS5 and SASL authentication are added
/// as further variants or steps; `Tcp` is plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Plaintext TCP with `TCP_NODELAY`.
    #[default]
    Tcp,
    /// TLS over TCP, verified against each broker's host name.
    #[cfg(feature = "transport-tls")]
    Tls(TlsConfig),
    /// Plaintext through a SOCKS5 proxy.
    #[cfg(feature = "transport-socks5")]
    Socks5(Socks5Config),
    /// TLS through a SOCKS5 proxy (end to end with the broker).
    #[cfg(all(feature = "transport-tls", feature = "transport-socks5"))]
    Socks5Tls(Socks5Config, TlsConfig),
}

/// Settings shared by every connection of a client.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header; brokers use it for logs and quotas.
    pub client_id: String,
    /// How long a request may wait for its response, queueing and throttling
    /// included.
    pub request_timeout: Duration,
    /// Bound on resolving, connecting and the initial version negotiation.
    pub connect_timeout: Duration,
    /// Largest response frame accepted; larger announced sizes close the
    /// connection before anything is allocated for them.
    pub max_frame_size: usize,
    /// How to reach the broker.
    pub transport: Transport,
    /// SASL authentication right after version negotiation, `None` for
    /// none.
    pub sasl: Option<sasl::SaslConfig>,
    /// Per-API caps on the version used, below the built-in table (e.g. to
    /// stay on Fetch v12, which names topics instead of using topic ids).
    pub max_versions: BTreeMap<ApiKey, i16>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: CLIENT_SOFTWARE_NAME.to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frame_size: 100 * 1024 * 1024,
            transport: Transport::Tcp,
            sasl: None,
            max_versions: BTreeMap::new(),
        }
    }
}
