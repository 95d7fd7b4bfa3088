//! Broker and topic configs: describe, and change incrementally.

use std::collections::BTreeMap;

use super::{check, AdminClient};
use crate::{
    connection::BrokerConnection,
    error::{Error, Result},
    protocol::{
        messages::{
            describe_configs_request::DescribeConfigsResource,
            incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
            DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
        },
        ApiKey,
    },
};

/// What a config belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigResource {
    /// A topic.
    Topic(String),
    /// One broker, by id: its requests go to that broker.
    Broker(i32),
    /// The dynamic defaults of all brokers.
    BrokerDefault,
}

impl ConfigResource {
    /// Kafka's resource type and name.
    fn wire(&self) -> (i8, String) {
        match self {
            Self::Topic(name) => (2, name.clone()),
            Self::Broker(id) => (4, id.to_string()),
            Self::BrokerDefault => (4, String::new()),
        }
    }

    /// The source of a value set on this very resource.
    fn own_source(&self) -> ConfigSource {
        match self {
            Self::Topic(_) => ConfigSource::Topic,
            Self::Broker(_) => ConfigSource::DynamicBroker,
            Self::BrokerDefault => ConfigSource::DynamicDefaultBroker,
        }
    }

    /// Adds this resource to an error: topics as the error's topic, others
    /// in its message.
    pub(crate) fn name_in(&self, e: Error) -> Error {
        match self {
            Self::Topic(name) => e.with_topic(name),
            Self::Broker(id) => e.with_message(format!("broker {id}")),
            Self::BrokerDefault => e.with_message("default broker config"),
        }
    }
}

impl std::fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Topic(name) => write!(f, "topic {name}"),
            Self::Broker(id) => write!(f, "broker {id}"),
            Self::BrokerDefault => f.write_str("default broker config"),
        }
    }
}

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

    /// Kafka's name, as its tools print it (e.g. `DYNAMIC_BROKER_CONFIG`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Topic => "DYNAMIC_TOPIC_CONFIG",
            Self::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
            Self::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            Self::StaticBroker => "STATIC_BROKER_CONFIG",
            Self::Default => "DEFAULT_CONFIG",
            Self::Other(_) => "UNKNOWN",
        }
    }
}

/// One config entry of a topic or broker.
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

/// A change to one config, for [`AdminClient::alter_configs`].
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

impl AdminClient {
    /// Runs `attempt` where `resource`'s config requests belong: a broker's
    /// at that broker (only it knows its static and default values), the
    /// rest at any broker (`alter` true: the controller, where changes are
    /// made; KRaft brokers would forward them).
    async fn at_resource<T, F, Fut>(
        &self,
        resource: &ConfigResource,
        api: ApiKey,
        alter: bool,
        attempt: F,
    ) -> Result<T>
    where
        F: Fn(BrokerConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let result = match resource {
            ConfigResource::Broker(id) => self.at_broker(*id, api, attempt).await,
            _ if alter => self.at_controller(api, attempt).await,
            _ => self.at_any_broker(api, attempt).await,
        };
        result.map_err(|e| resource.name_in(e))
    }

    /// Every config of a topic or broker, by name, with where its value
    /// comes from.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
    ) -> Result<BTreeMap<String, ConfigEntry>> {
        let (resource_type, resource_name) = resource.wire();
        let req = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type,
                resource_name: resource_name.clone(),
                configuration_keys: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = &req;
        let name = resource_name.as_str();
        self.at_resource(
            resource,
            ApiKey::DESCRIBE_CONFIGS,
            false,
            |conn| async move {
                let version = conn.version_for(ApiKey::DESCRIBE_CONFIGS).unwrap_or(0);
                let resp = conn.request(req).await?;
                described_configs(&resp, name, version)
            },
        )
        .await
    }

    /// Changes configs of a topic or broker (IncrementalAlterConfigs): other
    /// configs keep their values. Returns once a describe shows the change
    /// (or the operation timeout passed: the change was accepted anyway).
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        changes: &[(String, ConfigOp)],
    ) -> Result<()> {
        let (resource_type, resource_name) = resource.wire();
        let req = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type,
                resource_name: resource_name.clone(),
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
        let req = &req;
        let name = resource_name.as_str();
        self.at_resource(
            resource,
            ApiKey::INCREMENTAL_ALTER_CONFIGS,
            true,
            |conn| async move {
                let resp = conn.request(req).await?;
                let r = resp
                    .responses
                    .iter()
                    .find(|r| r.resource_name == name)
                    .ok_or_else(|| Error::protocol("the response lacks the resource"))?;
                check(r.error_code, r.error_message.clone())
            },
        )
        .await?;
        let own = resource.own_source();
        self.wait_until_visible(|| async {
            let Ok(current) = self.describe_configs(resource).await else {
                return false;
            };
            changes.iter().all(|(key, op)| {
                let entry = current.get(key);
                match op {
                    ConfigOp::Set(v) => {
                        entry.is_some_and(|e| e.is_sensitive || e.value.as_deref() == Some(v))
                    }
                    ConfigOp::Delete => entry.is_none_or(|e| e.source != own),
                    // Lists are not compared element by element.
                    ConfigOp::Append(_) | ConfigOp::Subtract(_) => true,
                }
            })
        })
        .await;
        Ok(())
    }
}

/// The configs a DescribeConfigs response at `version` reports for the
/// resource `name`, by config name. v0 has no source, only whether a config
/// has its default.
fn described_configs(
    resp: &DescribeConfigsResponse,
    name: &str,
    version: i16,
) -> Result<BTreeMap<String, ConfigEntry>> {
    let r = resp
        .results
        .iter()
        .find(|r| r.resource_name == name)
        .ok_or_else(|| Error::protocol("the response lacks the resource"))?;
    check(r.error_code, r.error_message.clone())?;
    Ok(r.configs
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
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult,
        },
        ErrorCode,
    };

    fn answer(error: ErrorCode) -> DescribeConfigsResponse {
        DescribeConfigsResponse {
            results: vec![DescribeConfigsResult {
                error_code: error.0,
                resource_name: "t".into(),
                configs: vec![DescribeConfigsResourceResult {
                    name: "retention.ms".into(),
                    value: Some("1".into()),
                    is_default: true,
                    config_source: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_source_comes_from_v1_on_and_v0_has_only_is_default() {
        let v1 = described_configs(&answer(ErrorCode::NONE), "t", 1).unwrap();
        let e = &v1["retention.ms"];
        assert_eq!((e.source, e.is_default), (ConfigSource::Topic, false));
        let v0 = described_configs(&answer(ErrorCode::NONE), "t", 0).unwrap();
        let e = &v0["retention.ms"];
        assert_eq!((e.source, e.is_default), (ConfigSource::Default, true));
        assert_eq!(e.value.as_deref(), Some("1"));
    }

    #[test]
    fn a_missing_or_failed_resource_is_an_error() {
        assert!(described_configs(&answer(ErrorCode::NONE), "other", 1).is_err());
        let e =
            described_configs(&answer(ErrorCode::TOPIC_AUTHORIZATION_FAILED), "t", 1).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
    }
}
