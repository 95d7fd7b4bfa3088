//! The public client API: a [`Client`] built from bootstrap brokers, a
//! [`ControllerClient`] for topic administration, an
//! [`AdminClient`](admin::AdminClient) for the rest of the cluster's
//! administration and a [`PartitionClient`] per partition to produce and
//! fetch.
//!
//! ```no_run
//! # async fn example() -> rskafka::error::Result<()> {
//! use rskafka::client::ClientBuilder;
//! use std::time::Duration;
//!
//! let client = ClientBuilder::new(vec!["127.0.0.1:9092".to_owned()])
//!     .client_id("my-app")
//!     .request_timeout(Duration::from_secs(10))
//!     .build()
//!     .await?;
//! for topic in client.list_topics().await? {
//!     println!("{} has {} partitions", topic.name, topic.partitions.len());
//! }
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod consumer;
pub mod controller;
pub mod group;
pub mod partition;
pub mod producer;
pub mod properties;
mod retry;

/// How the client reaches brokers and authenticates to them: the transports
/// for [`ClientBuilder::transport`] and the SASL mechanisms for
/// [`ClientBuilder::sasl`].
pub mod security {
    #[cfg(feature = "transport-socks5")]
    pub use crate::connection::Socks5Config;
    pub use crate::connection::{
        sasl::{
            BoxError, Credentials, OAuthToken, OAuthTokenCallback, OAuthTokenProvider, SaslConfig,
            SaslError, ScramHash,
        },
        Transport,
    };
    #[cfg(feature = "transport-tls")]
    pub use crate::connection::{TlsConfig, TlsConfigBuilder, TlsError, TlsFailure};
}

use std::{collections::BTreeSet, sync::Arc, time::Duration};

pub use crate::cluster::{BackoffConfig, BrokerInfo, Metadata, PartitionInfo, TopicInfo};
pub use crate::connection::BrokerStats;
pub use crate::protocol::Uuid;
use crate::{
    cluster::{Cluster, ClusterConfig},
    connection::ConnectionConfig,
    error::{Error, Result},
    protocol::ApiKey,
};

pub use self::controller::ControllerClient;
pub use self::partition::PartitionClient;

/// Checks a bootstrap address and completes it as [`ClientBuilder::build`]
/// will: `host:port`, `[v6]:port`, or either without the port (then 9092,
/// as kcat and librdkafka assume); a bare IPv6 literal is taken as a host.
/// For telling a user about a bad address before connecting.
///
/// ```
/// use rskafka::client::normalize_broker_address;
///
/// assert_eq!(normalize_broker_address("kafka-1").unwrap(), "kafka-1:9092");
/// assert!(normalize_broker_address("kafka-1:port").is_err());
/// ```
pub fn normalize_broker_address(addr: &str) -> Result<String> {
    crate::cluster::normalize_address(addr).map_err(|e| Error::invalid_input(e.to_string()))
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    brokers: Vec<String>,
    connection: ConnectionConfig,
    backoff: BackoffConfig,
    operation_timeout: Option<Duration>,
    bootstrap_timeout: Option<Duration>,
    metadata_max_age: Option<Duration>,
}

impl ClientBuilder {
    /// A builder for a client that bootstraps from `brokers` (`host:port`,
    /// IPv6 literals as `[::1]:9092`; without a port, 9092).
    pub fn new(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            connection: ConnectionConfig::default(),
            backoff: BackoffConfig::default(),
            operation_timeout: None,
            bootstrap_timeout: None,
            metadata_max_age: None,
        }
    }

    /// The client id sent with every request; brokers use it in logs and
    /// quotas.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.connection.client_id = client_id.into();
        self
    }

    /// How long one request may wait for its response (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.connection.request_timeout = timeout;
        self
    }

    /// Bound on connecting to one broker, version negotiation included
    /// (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Largest response accepted from a broker, in bytes (default 100 MiB);
    /// a larger announced response closes the connection unread.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.connection.max_frame_size = bytes;
        self
    }

    /// How connections reach the brokers: plaintext TCP (the default), TLS,
    /// or through a SOCKS5 proxy.
    pub fn transport(mut self, transport: security::Transport) -> Self {
        self.connection.transport = transport;
        self
    }

    /// Authenticates every connection with SASL (and re-authenticates it
    /// when the broker limits the session lifetime).
    pub fn sasl(mut self, sasl: security::SaslConfig) -> Self {
        self.connection.sasl = Some(sasl);
        self
    }

    /// How old cached metadata may get before it is refreshed (the Java
    /// client's `metadata.max.age.ms`; default 5 minutes). Group members
    /// with [`GroupConfig::subscribe_matching`] look for new topics this
    /// often (within every 1 to 30 s).
    ///
    /// [`GroupConfig::subscribe_matching`]: crate::client::group::GroupConfig::subscribe_matching
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = Some(age);
        self
    }

    /// Uses `api` at no version above `max` with any broker, as when a
    /// broker mishandles a newer version or a behaviour that comes with one
    /// is not wanted (capping [`ApiKey::END_TXN`] at 4, for one, keeps
    /// transactions on the protocol from before KIP-890).
    ///
    /// [`ApiKey::END_TXN`]: crate::protocol::ApiKey::END_TXN
    pub fn max_api_version(mut self, api: crate::protocol::ApiKey, max: i16) -> Self {
        self.connection.max_versions.insert(api, max);
        self
    }

    /// The backoff between retries of a failed operation.
    pub fn backoff_config(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Bound on one operation with all its retries (default: the request
    /// timeout). Retriable failures (a leader moved, a broker restarted) are
    /// retried until then.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Bound on [`build`](Self::build): reaching a bootstrap broker, refused
    /// connections retried, and loading the metadata (default 5 s, or the
    /// operation timeout if that is shorter). Malformed addresses and host
    /// names that do not resolve fail at once; an address without a port
    /// means port 9092.
    pub fn bootstrap_timeout(mut self, timeout: Duration) -> Self {
        self.bootstrap_timeout = Some(timeout);
        self
    }

    /// Connects to the first reachable bootstrap broker and loads the
    /// cluster's metadata, within the [bootstrap
    /// timeout](Self::bootstrap_timeout).
    pub async fn build(self) -> Result<Client> {
        if self.brokers.is_empty() {
            return Err(Error::invalid_input("no bootstrap brokers given"));
        }
        let operation_timeout = self
            .operation_timeout
            .unwrap_or(self.connection.request_timeout);
        let bootstrap_timeout = self
            .bootstrap_timeout
            .unwrap_or_else(|| crate::cluster::DEFAULT_BOOTSTRAP_TIMEOUT.min(operation_timeout));
        let mut config = ClusterConfig {
            bootstrap: self.brokers,
            connection: self.connection,
            backoff: self.backoff.clone(),
            connect_deadline: operation_timeout,
            bootstrap_timeout,
            ..ClusterConfig::default()
        };
        if let Some(age) = self.metadata_max_age {
            config.metadata_max_age = age;
        }
        let cluster = Cluster::connect(config).await?;
        Ok(Client {
            cluster,
            settings: Arc::new(Settings {
                operation_timeout,
                backoff: self.backoff,
            }),
        })
    }
}

/// Settings every sub-client shares.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) operation_timeout: Duration,
    pub(crate) backoff: BackoffConfig,
}

/// A connection to a Kafka cluster. Cheap to clone: clones share the
/// connections and the metadata cache.
///
/// Each broker gets a connection for short requests (metadata, admin,
/// offset lookups) and one for produce requests, shared by all clones;
/// every consumer fetches on connections of its own and every group member
/// talks to its coordinator on one of its own. So one client can serve
/// producers, consumers and admin calls at once without any of them
/// waiting behind another's requests.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) cluster: Cluster,
    pub(crate) settings: Arc<Settings>,
}

/// A topic and its partitions, as [`Client::list_topics`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The topic name.
    pub name: String,
    /// The partition ids.
    pub partitions: BTreeSet<i32>,
    /// Whether Kafka uses the topic internally (e.g. `__consumer_offsets`).
    pub is_internal: bool,
}

/// One API a broker supports, as [`Client::api_versions`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    /// The API.
    pub api_key: ApiKey,
    /// The lowest version the broker accepts.
    pub broker_min: i16,
    /// The highest version the broker accepts.
    pub broker_max: i16,
    /// The version this client uses with the broker, `None` if it can use none.
    pub client_version: Option<i16>,
}

impl Client {
    /// A client for topic administration (create, delete, partitions, configs).
    pub fn controller_client(&self) -> Result<ControllerClient> {
        Ok(ControllerClient::new(self.clone()))
    }

    /// A client for one partition of a topic.
    ///
    /// Fails with `ErrorKind::Kafka(UNKNOWN_TOPIC_OR_PARTITION)` if fresh
    /// metadata does not know the topic or partition. A partition that is
    /// still electing its leader (right after topic creation) is waited for,
    /// within the operation timeout.
    pub async fn partition_client(
        &self,
        topic: impl Into<String>,
        partition: i32,
    ) -> Result<PartitionClient> {
        let topic = topic.into();
        let pc = PartitionClient::new(self.clone(), topic, partition);
        pc.check_exists().await?;
        Ok(pc)
    }

    /// Every topic of the cluster with its partitions.
    pub async fn list_topics(&self) -> Result<Vec<Topic>> {
        let md = self.cluster.refresh_metadata(None).await?;
        Ok(md
            .topics
            .values()
            .filter(|t| t.error.is_ok())
            .map(|t| Topic {
                name: t.name.clone(),
                partitions: t.partitions.keys().copied().collect(),
                is_internal: t.is_internal,
            })
            .collect())
    }

    /// Fresh metadata of the whole cluster: brokers, the controller, topics
    /// with their partitions, leaders, replicas and in-sync replicas.
    pub async fn metadata(&self) -> Result<Arc<Metadata>> {
        Ok(self.cluster.refresh_metadata(None).await?)
    }

    /// What this client exchanged with each broker since it was built, over
    /// all its connections (producers', consumers' and admin traffic alike),
    /// ordered by node id; node -1 counts connections to bootstrap addresses
    /// made before the broker list was known. Counters only grow, except the
    /// open connections and requests in flight, which are current figures.
    ///
    /// ```no_run
    /// # async fn example(client: rskafka::client::Client) {
    /// for broker in client.broker_stats() {
    ///     println!(
    ///         "{} {}: {} requests, {} in flight, {} timed out",
    ///         broker.node_id,
    ///         broker.addr,
    ///         broker.requests_sent,
    ///         broker.requests_in_flight,
    ///         broker.request_timeouts,
    ///     );
    /// }
    /// # }
    /// ```
    pub fn broker_stats(&self) -> Vec<BrokerStats> {
        self.cluster.broker_stats()
    }

    /// The APIs a broker of the cluster supports, sorted by key, with the
    /// version this client uses for each.
    pub async fn api_versions(&self) -> Result<Vec<ApiVersion>> {
        let conn = self.cluster.any_broker().await?;
        // The connection answers per key; API keys are small non-negative
        // numbers, so scanning the whole i16 range is cheap and complete.
        Ok((0..=i16::MAX)
            .map(ApiKey)
            .filter_map(|key| {
                conn.broker_versions(key).map(|(min, max)| ApiVersion {
                    api_key: key,
                    broker_min: min,
                    broker_max: max,
                    client_version: conn.version_for(key),
                })
            })
            .collect())
    }
}
