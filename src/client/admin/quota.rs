//! Client quotas: describe and alter the quotas of users, client ids and
//! IPs.

use std::collections::BTreeMap;

use super::{check, AdminClient};
use crate::{
    error::{Error, Result},
    protocol::{
        messages::{
            alter_client_quotas_request::{EntityData, EntryData, OpData},
            describe_client_quotas_request::ComponentData,
            AlterClientQuotasRequest, DescribeClientQuotasRequest,
        },
        ApiKey,
    },
};

/// A kind of entity quotas apply to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum QuotaEntityType {
    /// A user principal (`user`).
    User,
    /// A client id (`client-id`).
    ClientId,
    /// A client IP address (`ip`).
    Ip,
    /// A type this client does not know, by its name.
    Other(String),
}

impl QuotaEntityType {
    /// Kafka's name: `user`, `client-id`, `ip`.
    pub fn name(&self) -> &str {
        match self {
            Self::User => "user",
            Self::ClientId => "client-id",
            Self::Ip => "ip",
            Self::Other(s) => s,
        }
    }

    fn from_name(s: &str) -> Self {
        match s {
            "user" => Self::User,
            "client-id" => Self::ClientId,
            "ip" => Self::Ip,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for QuotaEntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The entity a quota applies to: one name per entity type (e.g. a user,
/// or a user and a client id together); `None` is the type's default
/// entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaEntity(pub BTreeMap<QuotaEntityType, Option<String>>);

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Which names of one entity type [`AdminClient::describe_client_quotas`]
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaMatch {
    /// This name.
    Exact(String),
    /// The type's default entity.
    Default,
    /// Any name, the default included.
    Any,
}

/// One component of a quota filter: an entity type and the names it
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    /// The entity type.
    pub entity_type: QuotaEntityType,
    /// The names matched.
    pub matching: QuotaMatch,
}

impl AdminClient {
    /// The quotas of the entities that match every component of `filter`
    /// (none: all entities); with `strict`, only entities with no other
    /// types than those in the filter. Each entity comes with its quota
    /// values by key (e.g. `producer_byte_rate`).
    pub async fn describe_client_quotas(
        &self,
        filter: &[QuotaFilter],
        strict: bool,
    ) -> Result<BTreeMap<QuotaEntity, BTreeMap<String, f64>>> {
        let req = DescribeClientQuotasRequest {
            components: filter
                .iter()
                .map(|c| {
                    let (match_type, name) = match &c.matching {
                        QuotaMatch::Exact(n) => (0, Some(n.clone())),
                        QuotaMatch::Default => (1, None),
                        QuotaMatch::Any => (2, None),
                    };
                    ComponentData {
                        entity_type: c.entity_type.name().to_owned(),
                        match_type,
                        match_: name,
                        ..Default::default()
                    }
                })
                .collect(),
            strict,
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::DESCRIBE_CLIENT_QUOTAS, |conn| async move {
            let resp = conn.request(req).await?;
            check(resp.error_code, resp.error_message)?;
            Ok(resp
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let entity = QuotaEntity(
                        e.entity
                            .into_iter()
                            .map(|d| (QuotaEntityType::from_name(&d.entity_type), d.entity_name))
                            .collect(),
                    );
                    let values = e.values.into_iter().map(|v| (v.key, v.value)).collect();
                    (entity, values)
                })
                .collect())
        })
        .await
    }

    /// Sets (`Some(value)`) or removes (`None`) quotas of `entity`, by key
    /// (e.g. `producer_byte_rate`, `consumer_byte_rate`,
    /// `request_percentage`). Returns once a describe shows the change (or
    /// the operation timeout passed: the change was accepted anyway).
    pub async fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        changes: &[(String, Option<f64>)],
    ) -> Result<()> {
        if entity.0.is_empty() {
            return Err(Error::invalid_input(
                "a quota entity needs at least one type",
            ));
        }
        let req = AlterClientQuotasRequest {
            entries: vec![EntryData {
                entity: entity
                    .0
                    .iter()
                    .map(|(t, n)| EntityData {
                        entity_type: t.name().to_owned(),
                        entity_name: n.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ops: changes
                    .iter()
                    .map(|(key, value)| OpData {
                        key: key.clone(),
                        value: value.unwrap_or(0.0),
                        remove: value.is_none(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            validate_only: false,
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::ALTER_CLIENT_QUOTAS, |conn| async move {
            let resp = conn.request(req).await?;
            for e in resp.entries {
                check(e.error_code, e.error_message)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.with_message(format!("quota entity {entity}")))?;
        let filter: Vec<QuotaFilter> = entity
            .0
            .iter()
            .map(|(t, n)| QuotaFilter {
                entity_type: t.clone(),
                matching: n.clone().map_or(QuotaMatch::Default, QuotaMatch::Exact),
            })
            .collect();
        let filter = &filter;
        self.wait_until_visible(|| async move {
            let Ok(all) = self.describe_client_quotas(filter, true).await else {
                return false;
            };
            let current = all.get(entity);
            changes
                .iter()
                .all(|(key, value)| current.and_then(|c| c.get(key)).copied() == *value)
        })
        .await;
        Ok(())
    }
}
