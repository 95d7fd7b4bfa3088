//! Topic administration: create and delete topics, add partitions, read and
//! change topic configs.
//!
//! Requests go to the controller named in metadata (in KRaft clusters any
//! broker forwards them to the active controller). Creating or deleting a
//! topic returns once the broker's metadata shows the result, so a
//! [`Client::partition_client`] right after `create_topic` works.

use std::collections::BTreeMap;

use crate::{
    connection::BrokerConnection,
    error::{Error, Result},
    protocol::{
        messages::{
            create_partitions_request::CreatePartitionsTopic,
            create_topics_request::{CreatableTopic, CreatableTopicConfig},
            delete_topics_request::DeleteTopicState,
            describe_configs_request::DescribeConfigsResource,
            incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
            CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
            DescribeConfigsRequest, IncrementalAlterConfigsRequest,
        },
        ApiKey, ErrorCode,
    },
};

use super::{
    retry::{never_final, retry},
    Client,
};

/// Kafka's resource type for topics in config requests.
const RESOURCE_TOPIC: i8 = 2;

/// Where a config value comes from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Set on this topic.
    Topic,
    /// A dynamic config of this broker.
    DynamicBroker,
    /// A dynamic default for all brokers.
    DynamicDefaultBroker,
    /// The broker's static configuration file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// A source this client does not know (the raw value).
    Other(i8),
}

impl ConfigSource {
    fn from_wire(v: i8) -> Self {
        match v {
            1 => Self::Topic,
            2 => Self::DynamicBroker,
            3 => Self::DynamicDefaultBroker,
            4 => Self::StaticBroker,
            5 => Self::Default,
            other => Self::Other(other),
        }
    }
}

/// One config entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config name, e.g. `retention.ms`.
    pub name: String,
    /// The value; `None` when unset or sensitive.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether the value cannot be changed.
    pub read_only: bool,
    /// Whether the value is the default (nothing overrides it).
    pub is_default: bool,
    /// Whether the value is secret (then it is not returned).
    pub is_sensitive: bool,
}

/// A change to one topic config, for [`ControllerClient::alter_topic_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the value.
    Set(String),
    /// Remove the override: the config falls back to its default.
    Delete,
    /// Add a value to a list config.
    Append(String),
    /// Remove a value from a list config.
    Subtract(String),
}

impl ConfigOp {
    fn wire(&self) -> (i8, Option<String>) {
        match self {
            ConfigOp::Set(v) => (0, Some(v.clone())),
            ConfigOp::Delete => (1, None),
            ConfigOp::Append(v) => (2, Some(v.clone())),
            ConfigOp::Subtract(v) => (3, Some(v.clone())),
        }
    }
}

/// Administers topics. Obtained from [`Client::controller_client`].
///
/// ```no_run
/// # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
/// use std::collections::BTreeMap;
/// use rskafka::client::controller::ConfigOp;
///
/// let controller = client.controller_client()?;
/// let configs = BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]);
/// controller.create_topic_with_configs("users", 3, 1, configs, 5_000).await?;
/// controller
///     .alter_topic_configs("users", vec![("retention.ms".to_owned(), ConfigOp::Set("60000".into()))])
///     .await?;
/// let configs = controller.describe_topic_configs("users").await?;
/// assert_eq!(configs["retention.ms"].value.as_deref(), Some("60000"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ControllerClient {
    client: Client,
}

impl ControllerClient {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// Runs `attempt` against the controller, retrying retriable errors
    /// (e.g. NOT_CONTROLLER after a controller change) until the deadline.
    async fn with_retries<T, F, Fut>(&self, api: ApiKey, topic: &str, attempt: F) -> Result<T>
    where
        F: Fn(BrokerConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let attempt = &attempt;
        retry(&self.client.settings, never_final, |_| async move {
            let result = match self.client.cluster.controller().await {
                Ok(conn) => attempt(conn).await,
                Err(e) => Err(e.into()),
            };
            if result
                .as_ref()
                .is_err_and(|e| e.error_code() == Some(ErrorCode::NOT_CONTROLLER))
            {
                // The cached controller id is stale.
                let _ = self.client.cluster.refresh_metadata(Some(&[])).await;
            }
            result
        })
        .await
        .map_err(|e| e.with_api(api).with_topic(topic))
    }

    /// Creates a topic with `num_partitions` partitions of
    /// `replication_factor` replicas; `timeout_ms` bounds the broker's work
    /// and the wait for the new partitions' leaders.
    pub async fn create_topic(
        &self,
        name: impl Into<String>,
        num_partitions: i32,
        replication_factor: i16,
        timeout_ms: i32,
    ) -> Result<()> {
        self.create_topic_with_configs(
            name,
            num_partitions,
            replication_factor,
            BTreeMap::new(),
            timeout_ms,
        )
        .await
    }

    /// Like [`create_topic`](Self::create_topic), with topic configs such as
    /// `cleanup.policy=compact`.
    pub async fn create_topic_with_configs(
        &self,
        name: impl Into<String>,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        timeout_ms: i32,
    ) -> Result<()> {
        let name = name.into();
        let req = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.clone(),
                num_partitions,
                replication_factor,
                configs: configs
                    .into_iter()
                    .map(|(name, value)| CreatableTopicConfig {
                        name,
                        value: Some(value),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            timeout_ms,
            validate_only: false,
            ..Default::default()
        };
        self.with_retries(ApiKey::CREATE_TOPICS, &name, |conn| {
            let req = &req;
            let name = &name;
            async move {
                let resp = conn.request(req).await?;
                let t = resp
                    .topics
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
                check(t.error_code, t.error_message.clone())
            }
        })
        .await?;
        let expected = usize::try_from(num_partitions).unwrap_or(0);
        self.wait_for_metadata(&name, timeout_ms, ApiKey::CREATE_TOPICS, |t| {
            t.is_some_and(|t| {
                t.partitions.len() >= expected && t.partitions.values().all(|p| p.leader.is_some())
            })
        })
        .await
    }

    /// Deletes a topic and waits (up to `timeout_ms`) until metadata no
    /// longer shows it.
    pub async fn delete_topic(&self, name: impl Into<String>, timeout_ms: i32) -> Result<()> {
        let name = name.into();
        self.with_retries(ApiKey::DELETE_TOPICS, &name, |conn| {
            let name = &name;
            async move {
                let version = conn.version_for(ApiKey::DELETE_TOPICS).unwrap_or(0);
                let req = DeleteTopicsRequest {
                    // v6 moved from a list of names to (name, id) pairs.
                    topics: if version >= 6 {
                        vec![DeleteTopicState {
                            name: Some(name.clone()),
                            ..Default::default()
                        }]
                    } else {
                        Vec::new()
                    },
                    topic_names: if version >= 6 {
                        Vec::new()
                    } else {
                        vec![name.clone()]
                    },
                    timeout_ms,
                    ..Default::default()
                };
                let resp = conn.request(&req).await?;
                let t = resp
                    .responses
                    .iter()
                    .find(|t| t.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
                check(t.error_code, t.error_message.clone())
            }
        })
        .await?;
        self.wait_for_metadata(&name, timeout_ms, ApiKey::DELETE_TOPICS, |t| t.is_none())
            .await
    }

    /// Grows a topic to `total` partitions and waits (up to `timeout_ms`)
    /// until the new ones have leaders.
    pub async fn create_partitions(
        &self,
        name: impl Into<String>,
        total: i32,
        timeout_ms: i32,
    ) -> Result<()> {
        let name = name.into();
        let req = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.clone(),
                count: total,
                assignments: None,
                ..Default::default()
            }],
            timeout_ms,
            validate_only: false,
            ..Default::default()
        };
        self.with_retries(ApiKey::CREATE_PARTITIONS, &name, |conn| {
            let req = &req;
            let name = &name;
            async move {
                let resp = conn.request(req).await?;
                let t = resp
                    .results
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
                check(t.error_code, t.error_message.clone())
            }
        })
        .await?;
        let expected = usize::try_from(total).unwrap_or(0);
        self.wait_for_metadata(&name, timeout_ms, ApiKey::CREATE_PARTITIONS, |t| {
            t.is_some_and(|t| {
                t.partitions.len() >= expected && t.partitions.values().all(|p| p.leader.is_some())
            })
        })
        .await
    }

    /// Every config of a topic, by name.
    pub async fn describe_topic_configs(
        &self,
        name: impl Into<String>,
    ) -> Result<BTreeMap<String, ConfigEntry>> {
        let name = name.into();
        let req = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: RESOURCE_TOPIC,
                resource_name: name.clone(),
                configuration_keys: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        // Topic configs are served by any broker, not only the controller.
        let req = &req;
        let name_ref = name.as_str();
        retry(&self.client.settings, never_final, |_| async move {
            let conn = self.client.cluster.any_broker().await?;
            let version = conn.version_for(ApiKey::DESCRIBE_CONFIGS).unwrap_or(0);
            let resp = conn.request(req).await?;
            let r = resp
                .results
                .iter()
                .find(|r| r.resource_name == name_ref)
                .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
            check(r.error_code, r.error_message.clone())?;
            Ok::<_, Error>(
                r.configs
                    .iter()
                    .map(|c| {
                        let source = if version >= 1 {
                            ConfigSource::from_wire(c.config_source)
                        } else if c.is_default {
                            ConfigSource::Default
                        } else {
                            ConfigSource::Other(-1)
                        };
                        let entry = ConfigEntry {
                            name: c.name.clone(),
                            value: c.value.clone(),
                            source,
                            read_only: c.read_only,
                            is_default: if version >= 1 {
                                source == ConfigSource::Default
                            } else {
                                c.is_default
                            },
                            is_sensitive: c.is_sensitive,
                        };
                        (c.name.clone(), entry)
                    })
                    .collect(),
            )
        })
        .await
        .map_err(|e| e.with_api(ApiKey::DESCRIBE_CONFIGS).with_topic(&name))
    }

    /// Changes topic configs (IncrementalAlterConfigs): other configs keep
    /// their values.
    pub async fn alter_topic_configs(
        &self,
        name: impl Into<String>,
        changes: Vec<(String, ConfigOp)>,
    ) -> Result<()> {
        let name = name.into();
        let req = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: RESOURCE_TOPIC,
                resource_name: name.clone(),
                configs: changes
                    .iter()
                    .map(|(k, op)| {
                        let (config_operation, value) = op.wire();
                        AlterableConfig {
                            name: k.clone(),
                            config_operation,
                            value,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            validate_only: false,
            ..Default::default()
        };
        self.with_retries(ApiKey::INCREMENTAL_ALTER_CONFIGS, &name, |conn| {
            let req = &req;
            let name = &name;
            async move {
                let resp = conn.request(req).await?;
                let r = resp
                    .responses
                    .iter()
                    .find(|r| &r.resource_name == name)
                    .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
                check(r.error_code, r.error_message.clone())
            }
        })
        .await?;
        self.wait_for_configs(&name, &changes).await;
        Ok(())
    }

    /// After an accepted change, waits until DescribeConfigs shows the set
    /// and deleted values (brokers apply the controller's change
    /// asynchronously), so a describe right after an alter sees it. Gives up
    /// quietly at the operation timeout: the change was accepted either way.
    async fn wait_for_configs(&self, name: &str, changes: &[(String, ConfigOp)]) {
        let deadline = tokio::time::Instant::now() + self.client.settings.operation_timeout;
        let mut backoff =
            crate::cluster::Backoff::new(&self.client.settings.backoff, Some(deadline));
        loop {
            if let Ok(current) = self.describe_topic_configs(name).await {
                let visible = changes.iter().all(|(key, op)| {
                    let entry = current.get(key);
                    match op {
                        ConfigOp::Set(v) => entry.is_some_and(|e| e.value.as_deref() == Some(v)),
                        ConfigOp::Delete => entry.is_none_or(|e| e.source != ConfigSource::Topic),
                        // Lists are not compared element by element.
                        ConfigOp::Append(_) | ConfigOp::Subtract(_) => true,
                    }
                });
                if visible {
                    return;
                }
            }
            if backoff.wait().await.is_err() {
                return;
            }
        }
    }

    /// Polls fresh metadata until `done(topic)` holds, up to `timeout_ms`.
    async fn wait_for_metadata(
        &self,
        name: &str,
        timeout_ms: i32,
        api: ApiKey,
        done: impl Fn(Option<&crate::cluster::TopicInfo>) -> bool,
    ) -> Result<()> {
        let timeout = std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff =
            crate::cluster::Backoff::new(&self.client.settings.backoff, Some(deadline));
        let topics = [name.to_owned()];
        loop {
            let last = match self.client.cluster.refresh_metadata(Some(&topics)).await {
                Ok(md) => {
                    let t = md.topics.get(name).filter(|t| t.error.is_ok());
                    if done(t) {
                        return Ok(());
                    }
                    None
                }
                Err(e) => Some(Error::from(e)),
            };
            if backoff.wait().await.is_err() {
                let e = last.unwrap_or_else(|| {
                    Error::new(crate::error::ErrorKind::Timeout).with_message(format!(
                        "the broker accepted the change, but its metadata did not show it within {timeout_ms} ms"
                    ))
                });
                return Err(e.with_api(api).with_topic(name));
            }
        }
    }
}

/// An error for a non-zero error code in a response.
fn check(code: i16, message: Option<String>) -> Result<()> {
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
