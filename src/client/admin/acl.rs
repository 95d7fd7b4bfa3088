//! ACLs: create, describe and delete access control entries.

use super::{check, wire_enum, AdminClient};
use crate::{
    error::{Error, Result},
    protocol::{
        messages::{
            create_acls_request::AclCreation, delete_acls_request::DeleteAclsFilter,
            CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
        },
        ApiKey,
    },
};

wire_enum! {
    /// The kind of resource an ACL is about.
    pub enum ResourceType {
        /// A value this client does not know.
        Unknown = 0, "UNKNOWN";
        /// Any type (filters only).
        Any = 1, "ANY";
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (resource name `kafka-cluster`).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
        /// A delegation token.
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// A user.
        User = 7, "USER";
    }
}

wire_enum! {
    /// How an ACL's resource name matches resource names.
    pub enum PatternType {
        /// A value this client does not know.
        Unknown = 0, "UNKNOWN";
        /// Any pattern type (filters only).
        Any = 1, "ANY";
        /// Every ACL that applies to the filter's name: literal, wildcard
        /// and prefixed ones (filters only).
        Match = 2, "MATCH";
        /// The name as it is (`*` is the wildcard).
        Literal = 3, "LITERAL";
        /// Every name that starts with it.
        Prefixed = 4, "PREFIXED";
    }
}

wire_enum! {
    /// What an ACL allows or denies.
    pub enum AclOperation {
        /// A value this client does not know.
        Unknown = 0, "UNKNOWN";
        /// Any operation (filters only).
        Any = 1, "ANY";
        /// Every operation.
        All = 2, "ALL";
        /// Read.
        Read = 3, "READ";
        /// Write.
        Write = 4, "WRITE";
        /// Create.
        Create = 5, "CREATE";
        /// Delete.
        Delete = 6, "DELETE";
        /// Alter.
        Alter = 7, "ALTER";
        /// Describe.
        Describe = 8, "DESCRIBE";
        /// Inter-broker actions.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Describe configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Alter configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Idempotent produce.
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        /// Create delegation tokens.
        CreateTokens = 13, "CREATE_TOKENS";
        /// Describe delegation tokens.
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

wire_enum! {
    /// Whether an ACL allows or denies.
    pub enum AclPermission {
        /// A value this client does not know.
        Unknown = 0, "UNKNOWN";
        /// Either (filters only).
        Any = 1, "ANY";
        /// Denies.
        Deny = 2, "DENY";
        /// Allows.
        Allow = 3, "ALLOW";
    }
}

/// One ACL: `principal` from `host` is allowed or denied `operation` on
/// the resources `resource_type`/`resource_name`/`pattern_type` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource name (`*` for all, with [`PatternType::Literal`]).
    pub resource_name: String,
    /// How the name matches: [`PatternType::Literal`] or
    /// [`PatternType::Prefixed`].
    pub pattern_type: PatternType,
    /// The principal, e.g. `User:alice` (`User:*` for all).
    pub principal: String,
    /// The host the principal connects from (`*` for any).
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermission,
}

impl std::fmt::Display for AclBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} from {} {} on {} {} {:?}",
            self.permission,
            self.principal,
            self.host,
            self.operation,
            self.pattern_type,
            self.resource_type,
            self.resource_name
        )
    }
}

/// Selects ACLs to describe or delete: `None` and the `Any` variants match
/// everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource name.
    pub resource_name: Option<String>,
    /// How the filter's name is compared with the ACLs' patterns.
    pub pattern_type: PatternType,
    /// The principal.
    pub principal: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The operation.
    pub operation: AclOperation,
    /// The permission.
    pub permission: AclPermission,
}

impl Default for AclFilter {
    /// Matches every ACL.
    fn default() -> Self {
        Self {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }
}

impl AdminClient {
    /// Creates ACLs. Fails on the first ACL the broker refused, naming it;
    /// a broker without an authorizer refuses all with SECURITY_DISABLED.
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let req = CreateAclsRequest {
            creations: acls
                .iter()
                .map(|a| AclCreation {
                    resource_type: a.resource_type.wire(),
                    resource_name: a.resource_name.clone(),
                    resource_pattern_type: a.pattern_type.wire(),
                    principal: a.principal.clone(),
                    host: a.host.clone(),
                    operation: a.operation.wire(),
                    permission_type: a.permission.wire(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::CREATE_ACLS, |conn| async move {
            let resp = conn.request(req).await?;
            if resp.results.len() != acls.len() {
                return Err(Error::protocol("the response lacks ACLs"));
            }
            for (acl, r) in acls.iter().zip(resp.results) {
                check(r.error_code, r.error_message)
                    .map_err(|e| e.with_message(format!("ACL {acl}")))?;
            }
            Ok(())
        })
        .await
    }

    /// The ACLs `filter` matches.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let req = DescribeAclsRequest {
            resource_type_filter: filter.resource_type.wire(),
            resource_name_filter: filter.resource_name.clone(),
            pattern_type_filter: filter.pattern_type.wire(),
            principal_filter: filter.principal.clone(),
            host_filter: filter.host.clone(),
            operation: filter.operation.wire(),
            permission_type: filter.permission.wire(),
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::DESCRIBE_ACLS, |conn| async move {
            let resp = conn.request(req).await?;
            check(resp.error_code, resp.error_message)?;
            let mut out = Vec::new();
            for r in resp.resources {
                for a in r.acls {
                    out.push(AclBinding {
                        resource_type: ResourceType::from_wire(r.resource_type),
                        resource_name: r.resource_name.clone(),
                        pattern_type: PatternType::from_wire(r.pattern_type),
                        principal: a.principal,
                        host: a.host,
                        operation: AclOperation::from_wire(a.operation),
                        permission: AclPermission::from_wire(a.permission_type),
                    });
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Deletes the ACLs `filter` matches and returns them.
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let req = DeleteAclsRequest {
            filters: vec![DeleteAclsFilter {
                resource_type_filter: filter.resource_type.wire(),
                resource_name_filter: filter.resource_name.clone(),
                pattern_type_filter: filter.pattern_type.wire(),
                principal_filter: filter.principal.clone(),
                host_filter: filter.host.clone(),
                operation: filter.operation.wire(),
                permission_type: filter.permission.wire(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::DELETE_ACLS, |conn| async move {
            let resp = conn.request(req).await?;
            let r = resp
                .filter_results
                .into_iter()
                .next()
                .ok_or_else(|| Error::protocol("the response lacks the filter"))?;
            check(r.error_code, r.error_message)?;
            let mut out = Vec::new();
            for m in r.matching_acls {
                let acl = AclBinding {
                    resource_type: ResourceType::from_wire(m.resource_type),
                    resource_name: m.resource_name,
                    pattern_type: PatternType::from_wire(m.pattern_type),
                    principal: m.principal,
                    host: m.host,
                    operation: AclOperation::from_wire(m.operation),
                    permission: AclPermission::from_wire(m.permission_type),
                };
                check(m.error_code, m.error_message)
                    .map_err(|e| e.with_message(format!("ACL {acl}")))?;
                out.push(acl);
            }
            out.sort();
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_with_dashes_and_round_trip() {
        assert_eq!(
            "cluster-action".parse::<AclOperation>().unwrap(),
            AclOperation::ClusterAction
        );
        assert_eq!(
            "Allow".parse::<AclPermission>().unwrap(),
            AclPermission::Allow
        );
        assert_eq!(
            "TRANSACTIONAL_ID".parse::<ResourceType>().unwrap(),
            ResourceType::TransactionalId
        );
        assert!("sometimes".parse::<AclPermission>().is_err());
        // Kafka's placeholder for values it does not know is nothing to ask for.
        assert!("unknown".parse::<AclOperation>().is_err());
        assert!("UNKNOWN".parse::<PatternType>().is_err());
        for op in [AclOperation::Read, AclOperation::IdempotentWrite] {
            assert_eq!(AclOperation::from_wire(op.wire()), op);
            assert_eq!(op.name().parse::<AclOperation>().unwrap(), op);
        }
        assert_eq!(PatternType::from_wire(99), PatternType::Unknown);
    }
}
