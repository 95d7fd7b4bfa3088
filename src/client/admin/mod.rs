//! Cluster administration: the cluster's brokers, broker and topic configs,
//! ACLs, partition reassignments and leader elections, client quotas, SCRAM
//! users, log directories, producers and transactions, and offsets looked
//! up in one request per leader.
//!
//! Every request goes where Kafka serves it: broker configs and log
//! directories to the broker they describe, producer states to each
//! partition's leader, a transaction to its coordinator, transaction
//! listings to every broker, the rest to the controller or any broker.
//! Each uses the highest version both sides support.
//!
//! ```no_run
//! # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
//! use rskafka::client::admin::{ConfigOp, ConfigResource, ConfigSource};
//!
//! let admin = client.admin();
//! let cluster = admin.describe_cluster().await?;
//! println!("cluster {} with {} brokers", cluster.cluster_id, cluster.brokers.len());
//!
//! let broker = ConfigResource::Broker(cluster.brokers[0].id);
//! admin
//!     .alter_configs(&broker, &[("log.cleaner.threads".into(), ConfigOp::Set("2".into()))])
//!     .await?;
//! let configs = admin.describe_configs(&broker).await?;
//! assert_eq!(configs["log.cleaner.threads"].source, ConfigSource::DynamicBroker);
//! # Ok(())
//! # }
//! ```

mod acl;
mod config;
mod offsets;
mod partitions;
mod per_leader;
mod quota;
mod scram;
mod txn;

use std::future::Future;

use tokio::time::Instant;

pub use self::acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
pub use self::config::{ConfigEntry, ConfigOp, ConfigResource, ConfigSource};
pub use self::offsets::ProducerInfo;
pub use self::partitions::{ElectionResult, ElectionType, Reassignment};
pub use self::quota::{QuotaEntity, QuotaEntityType, QuotaFilter, QuotaMatch};
pub use self::scram::ScramCredentialInfo;
pub use self::txn::{LogDir, ReplicaInfo, TransactionDescription, TransactionListing};

use super::{
    retry::{never_final, retry},
    BrokerInfo, Client,
};
use crate::{
    cluster::Backoff,
    connection::BrokerConnection,
    error::{Error, Result},
    protocol::{messages::DescribeClusterRequest, ApiKey, ErrorCode},
};

/// Administers a cluster. Obtained from [`Client::admin`]; cheap to clone.
/// See the [module documentation](self) for an example.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: Client,
}

/// The cluster as [`AdminClient::describe_cluster`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The broker id of the controller, `None` if there is none right now.
    pub controller_id: Option<i32>,
    /// The brokers, ordered by id.
    pub brokers: Vec<BrokerInfo>,
}

impl Client {
    /// Cluster administration: see [`AdminClient`].
    pub fn admin(&self) -> AdminClient {
        AdminClient {
            client: self.clone(),
        }
    }
}

impl AdminClient {
    /// The cluster id, the controller and the brokers (DescribeCluster;
    /// from metadata on brokers older than Kafka 2.8).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let api = ApiKey::DESCRIBE_CLUSTER;
        self.at_any_broker(api, |conn| async move {
            if conn.version_for(api).is_none() {
                let md = self.client.cluster.refresh_metadata(Some(&[])).await?;
                return Ok(ClusterDescription {
                    cluster_id: md.cluster_id.clone().unwrap_or_default(),
                    controller_id: md.controller_id,
                    brokers: md.brokers.values().cloned().collect(),
                });
            }
            let resp = conn.request(&DescribeClusterRequest::default()).await?;
            check(resp.error_code, resp.error_message)?;
            let mut brokers: Vec<BrokerInfo> = resp
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            Ok(ClusterDescription {
                cluster_id: resp.cluster_id,
                controller_id: (resp.controller_id >= 0).then_some(resp.controller_id),
                brokers,
            })
        })
        .await
    }

    /// Runs `attempt` on some broker, retrying retriable errors until the
    /// operation timeout.
    async fn at_any_broker<T, F, Fut>(&self, api: ApiKey, attempt: F) -> Result<T>
    where
        F: Fn(BrokerConnection) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempt = &attempt;
        retry(&self.client.settings, never_final, |_| async move {
            attempt(self.client.cluster.any_broker().await?).await
        })
        .await
        .map_err(|e| e.with_api(api))
    }

    /// Runs `attempt` on broker `id`, retrying retriable errors until the
    /// operation timeout.
    async fn at_broker<T, F, Fut>(&self, id: i32, api: ApiKey, attempt: F) -> Result<T>
    where
        F: Fn(BrokerConnection) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempt = &attempt;
        retry(&self.client.settings, never_final, |_| async move {
            attempt(self.client.cluster.broker(id).await?).await
        })
        .await
        .map_err(|e| e.with_api(api).with_message(format!("broker {id}")))
    }

    /// Runs `attempt` against the controller, retrying retriable errors
    /// (e.g. NOT_CONTROLLER after a controller change) until the deadline.
    pub(crate) async fn at_controller<T, F, Fut>(&self, api: ApiKey, attempt: F) -> Result<T>
    where
        F: Fn(BrokerConnection) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempt = &attempt;
        retry(&self.client.settings, never_final, |_| async move {
            let result = match self.client.cluster.controller().await {
                Ok(conn) => attempt(conn).await,
                Err(e) => Err(e.into()),
            };
            if result.as_ref().is_err_and(controller_moved) {
                let _ = self.client.cluster.refresh_metadata(Some(&[])).await;
            }
            result
        })
        .await
        .map_err(|e| e.with_api(api))
    }

    /// The broker-side timeout of requests that wait (Kafka's `timeout_ms`).
    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.settings.operation_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// After a change the broker accepted, polls `visible` until it holds:
    /// brokers apply the controller's records asynchronously, so a describe
    /// right after the change would otherwise miss it. Gives up quietly at
    /// the operation timeout: the change was accepted either way.
    async fn wait_until_visible<Fut>(&self, visible: impl Fn() -> Fut)
    where
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + self.client.settings.operation_timeout;
        let mut backoff = Backoff::new(&self.client.settings.backoff, Some(deadline));
        while !visible().await {
            if backoff.wait().await.is_err() {
                return;
            }
        }
    }
}

/// Whether `e` says the cached controller id is stale, so metadata must be
/// refreshed before the next attempt.
fn controller_moved(e: &Error) -> bool {
    e.error_code() == Some(ErrorCode::NOT_CONTROLLER)
}

/// An error for a non-zero error code in a response.
pub(crate) fn check(code: i16, message: Option<String>) -> Result<()> {
    let code = ErrorCode(code);
    if code.is_ok() {
        return Ok(());
    }
    let e = Error::kafka(code, message);
    // Retriable in general (metadata may lag), but for an admin request
    // naming a topic explicitly it is the answer: don't spin until the deadline.
    if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
        return Err(e.with_retriable(false));
    }
    Err(e)
}

/// Declares an enum of Kafka wire values with their names (as Kafka's
/// tools print them), conversions both ways and parsing that ignores case
/// and accepts `-` for `_`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, $text:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// The value on the wire.
            pub(crate) fn wire(self) -> i8 {
                match self {
                    $( Self::$variant => $wire, )*
                }
            }

            /// The variant of a wire value; `Unknown` for values this
            /// client does not know.
            // Not every such enum comes back in responses.
            #[allow(dead_code)]
            pub(crate) fn from_wire(v: i8) -> Self {
                match v {
                    $( $wire => Self::$variant, )*
                    _ => Self::Unknown,
                }
            }

            /// Kafka's name, e.g. `TRANSACTIONAL_ID`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            /// Kafka's name, in any case, with `-` or `_` between words.
            // The types' own UNKNOWN arm is shadowed on purpose.
            #[allow(unreachable_patterns)]
            fn from_str(s: &str) -> Result<Self> {
                let wanted = s.replace('-', "_").to_ascii_uppercase();
                match wanted.as_str() {
                    // Kafka's placeholder for values it does not know is
                    // nothing to ask for.
                    "UNKNOWN" => Err(Error::invalid_input(format!(
                        "unknown {}: {s:?}",
                        stringify!($name)
                    ))),
                    $( $text => Ok(Self::$variant), )*
                    _ => Err(Error::invalid_input(format!(
                        "unknown {}: {s:?}",
                        stringify!($name)
                    ))),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_controller_refreshes_the_controller() {
        assert!(controller_moved(&Error::kafka(
            ErrorCode::NOT_CONTROLLER,
            None
        )));
        assert!(!controller_moved(&Error::kafka(
            ErrorCode::REQUEST_TIMED_OUT,
            None
        )));
        assert!(!controller_moved(&Error::new(
            crate::error::ErrorKind::Connection
        )));
    }
}
