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
            CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
        },
        ApiKey,
    },
};

pub use super::admin::{ConfigEntry, ConfigOp, ConfigSource};
use super::{
    admin::{check, ConfigResource},
    Client,
};

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
        self.client
            .admin()
            .at_controller(api, attempt)
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

    /// Every config of a topic, by name; see
    /// [`AdminClient::describe_configs`](super::admin::AdminClient::describe_configs).
    pub async fn describe_topic_configs(
        &self,
        name: impl Into<String>,
    ) -> Result<BTreeMap<String, ConfigEntry>> {
        let resource = ConfigResource::Topic(name.into());
        self.client.admin().describe_configs(&resource).await
    }

    /// Changes topic configs (IncrementalAlterConfigs): other configs keep
    /// their values; see
    /// [`AdminClient::alter_configs`](super::admin::AdminClient::alter_configs).
    pub async fn alter_topic_configs(
        &self,
        name: impl Into<String>,
        changes: Vec<(String, ConfigOp)>,
    ) -> Result<()> {
        let resource = ConfigResource::Topic(name.into());
        self.client.admin().alter_configs(&resource, &changes).await
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
