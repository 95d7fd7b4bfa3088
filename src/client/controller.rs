//! Topic administration: create and delete topics, add partitions, read and
//! change topic configs.
//!
//! Requests go to the controller named in metadata (in KRaft clusters any
//! broker forwards them to the active controller). Creating or deleting a
//! topic returns once the broker's metadata shows the result, so a
//! [`Client::partition_client`] right after `create_topic` works.

use std::collections::BTreeMap;

use crate::{
    cluster::TopicInfo,
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
                let entries = resp.topics.iter();
                topic_outcome(
                    entries.map(|t| (Some(t.name.as_str()), t.error_code, &t.error_message)),
                    name,
                )
            }
        })
        .await?;
        let change = TopicChange::Led {
            partitions: num_partitions,
        };
        self.wait_for_metadata(&name, timeout_ms, ApiKey::CREATE_TOPICS, change)
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
                let req = delete_topics_request(version, name, timeout_ms);
                let resp = conn.request(&req).await?;
                let entries = resp.responses.iter();
                topic_outcome(
                    entries.map(|t| (t.name.as_deref(), t.error_code, &t.error_message)),
                    name,
                )
            }
        })
        .await?;
        self.wait_for_metadata(
            &name,
            timeout_ms,
            ApiKey::DELETE_TOPICS,
            TopicChange::Deleted,
        )
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
                let entries = resp.results.iter();
                topic_outcome(
                    entries.map(|t| (Some(t.name.as_str()), t.error_code, &t.error_message)),
                    name,
                )
            }
        })
        .await?;
        let change = TopicChange::Led { partitions: total };
        self.wait_for_metadata(&name, timeout_ms, ApiKey::CREATE_PARTITIONS, change)
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

    /// Polls fresh metadata until it shows `change`, up to `timeout_ms`.
    async fn wait_for_metadata(
        &self,
        name: &str,
        timeout_ms: i32,
        api: ApiKey,
        change: TopicChange,
    ) -> Result<()> {
        let timeout = std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff =
            crate::cluster::Backoff::new(&self.client.settings.backoff, Some(deadline));
        let topics = [name.to_owned()];
        loop {
            let last = match self.client.cluster.refresh_metadata(Some(&topics)).await {
                Ok(md) => {
                    if change.shown_in(md.topics.get(name)) {
                        return Ok(());
                    }
                    None
                }
                Err(e) => Some(Error::from(e)),
            };
            if backoff.wait().await.is_err() {
                return Err(not_shown(last, timeout_ms).with_api(api).with_topic(name));
            }
        }
    }
}

/// The outcome a CreateTopics, DeleteTopics or CreatePartitions response
/// reports for topic `name`, from its `(name, error code, error message)`
/// entries.
fn topic_outcome<'a>(
    entries: impl IntoIterator<Item = (Option<&'a str>, i16, &'a Option<String>)>,
    name: &str,
) -> Result<()> {
    let (_, code, message) = entries
        .into_iter()
        .find(|(n, _, _)| *n == Some(name))
        .ok_or_else(|| Error::protocol("the response lacks the topic"))?;
    check(code, message.clone())
}

/// A DeleteTopics request for topic `name` at `version`.
fn delete_topics_request(version: i16, name: &str, timeout_ms: i32) -> DeleteTopicsRequest {
    // v6 moved from a list of names to (name, id) pairs.
    let (topics, topic_names) = if version >= 6 {
        let state = DeleteTopicState {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        (vec![state], Vec::new())
    } else {
        (Vec::new(), vec![name.to_owned()])
    };
    DeleteTopicsRequest {
        topics,
        topic_names,
        timeout_ms,
        ..Default::default()
    }
}

/// A change to a topic that metadata shows once brokers applied it.
#[derive(Debug, Clone, Copy)]
enum TopicChange {
    /// The topic has at least `partitions` partitions, each with a leader.
    Led { partitions: i32 },
    /// The topic is gone.
    Deleted,
}

impl TopicChange {
    /// Whether `topic`, as metadata lists it, shows the change; a topic
    /// listed with an error counts as absent.
    fn shown_in(self, topic: Option<&TopicInfo>) -> bool {
        let topic = topic.filter(|t| t.error.is_ok());
        match self {
            Self::Led { partitions } => topic.is_some_and(|t| {
                t.partitions.len() >= usize::try_from(partitions).unwrap_or(0)
                    && t.partitions.values().all(|p| p.leader.is_some())
            }),
            Self::Deleted => topic.is_none(),
        }
    }
}

/// The error of a change metadata did not show within `timeout_ms`: the
/// `last` metadata error, if the last poll failed.
fn not_shown(last: Option<Error>, timeout_ms: i32) -> Error {
    last.unwrap_or_else(|| {
        Error::new(crate::error::ErrorKind::Timeout).with_message(format!(
            "the broker accepted the change, but its metadata did not show it within {timeout_ms} ms"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        cluster::PartitionInfo,
        error::ErrorKind,
        protocol::{ErrorCode, Uuid},
    };

    fn topic(error: ErrorCode, leaders: &[Option<i32>]) -> TopicInfo {
        let partition = |(id, leader): (usize, &Option<i32>)| {
            let id = i32::try_from(id).unwrap();
            let info = PartitionInfo {
                id,
                error: ErrorCode::NONE,
                leader: *leader,
                leader_epoch: 0,
                replicas: Vec::new(),
                isr: Vec::new(),
                offline: Vec::new(),
            };
            (id, info)
        };
        TopicInfo {
            name: "t".into(),
            id: Uuid::default(),
            error,
            is_internal: false,
            partitions: BTreeMap::from_iter(leaders.iter().enumerate().map(partition)),
        }
    }

    #[test]
    fn a_created_topic_shows_once_every_partition_has_a_leader() {
        let led = TopicChange::Led { partitions: 2 };
        assert!(led.shown_in(Some(&topic(ErrorCode::NONE, &[Some(1), Some(2)]))));
        assert!(!led.shown_in(Some(&topic(ErrorCode::NONE, &[Some(1), None]))));
        assert!(!led.shown_in(Some(&topic(ErrorCode::NONE, &[Some(1)]))));
        assert!(!led.shown_in(None));
        let errored = topic(ErrorCode::LEADER_NOT_AVAILABLE, &[Some(1), Some(2)]);
        assert!(!led.shown_in(Some(&errored)));
    }

    #[test]
    fn a_deleted_topic_shows_once_metadata_lists_it_absent_or_with_an_error() {
        let deleted = TopicChange::Deleted;
        assert!(deleted.shown_in(None));
        let gone = topic(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, &[]);
        assert!(deleted.shown_in(Some(&gone)));
        assert!(!deleted.shown_in(Some(&topic(ErrorCode::NONE, &[None]))));
    }

    #[test]
    fn the_outcome_is_the_named_topics_error() {
        let denied = Some("denied".to_owned());
        let entries = [
            (Some("other"), ErrorCode::NONE.0, &None),
            (Some("t"), ErrorCode::TOPIC_AUTHORIZATION_FAILED.0, &denied),
        ];
        let e = topic_outcome(entries, "t").unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
        assert!(e.to_string().contains("denied"), "{e}");
        assert!(topic_outcome(entries, "other").is_ok());
        let e = topic_outcome(entries, "missing").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn delete_names_the_topic_in_the_field_of_the_version() {
        let old = delete_topics_request(5, "t", 100);
        assert_eq!(
            (old.topic_names, old.topics.len()),
            (vec!["t".to_owned()], 0)
        );
        let new = delete_topics_request(6, "t", 100);
        assert!(new.topic_names.is_empty());
        assert_eq!(new.topics[0].name.as_deref(), Some("t"));
        assert_eq!(new.timeout_ms, 100);
    }

    #[test]
    fn a_change_not_shown_reports_the_last_metadata_error_or_a_timeout() {
        let e = not_shown(None, 250);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.to_string().contains("within 250 ms"), "{e}");
        let last = Error::new(ErrorKind::Connection);
        assert_eq!(not_shown(Some(last), 250).kind(), ErrorKind::Connection);
    }
}
