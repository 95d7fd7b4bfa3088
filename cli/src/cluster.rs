//! Cluster administration commands: `cluster`, `config`, `acl`, `reassign`,
//! `elect-leaders`, `quota`, `user-scram`, `log-dirs`, `producers`, `txn`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use rskafka::{
    client::security::ScramHash,
    client::{
        admin::{
            AclBinding, AclFilter, AclOperation, AclPermission, AdminClient, ConfigOp,
            ConfigResource, ElectionResult, ElectionType, PatternType, QuotaEntity,
            QuotaEntityType, QuotaFilter, QuotaMatch, ResourceType,
        },
        group::TopicPartition,
    },
};
use serde_json::{json, Value};

use crate::{
    admin::{parse_config, print_out},
    bounded, connect, CliError, CliResult, GlobalArgs,
};

/// `--format` of the describing commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated lines.
    Text,
    /// One JSON document.
    Json,
}

/// `--format` as an option.
#[derive(Args, Debug, Clone, Copy)]
pub struct FormatArg {
    /// `text` (tab-separated lines) or `json` (one document).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// `cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Print the cluster id, the controller and the brokers.
    Describe(FormatArg),
}

/// Which configs `config` is about: exactly one of the options.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct ConfigTarget {
    /// A broker's configs (its requests go to that broker).
    #[arg(long, value_name = "ID")]
    broker: Option<i32>,
    /// A topic's configs.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// The dynamic defaults of all brokers.
    #[arg(long)]
    broker_default: bool,
}

impl ConfigTarget {
    fn resource(&self) -> ConfigResource {
        match (&self.broker, &self.topic) {
            (Some(id), _) => ConfigResource::Broker(*id),
            (_, Some(t)) => ConfigResource::Topic(t.clone()),
            _ => ConfigResource::BrokerDefault,
        }
    }
}

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every config: name, value (`-` if unset or sensitive), source.
    Describe {
        #[command(flatten)]
        target: ConfigTarget,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change configs; the others keep their values.
    Alter {
        #[command(flatten)]
        target: ConfigTarget,
        /// Set a config `KEY=VALUE`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_config)]
        set: Vec<(String, String)>,
        /// Remove a config's override (back to its default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// The resource options of `acl`: at most one.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct AclResource {
    /// A topic (`*` for all).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*` for all).
    #[arg(long)]
    group: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// A transactional id (`*` for all).
    #[arg(long)]
    transactional_id: Option<String>,
}

impl AclResource {
    /// The resource type and name given, if any.
    fn get(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, "kafka-cluster".to_owned()))
        } else {
            self.transactional_id
                .as_ref()
                .map(|t| (ResourceType::TransactionalId, t.clone()))
        }
    }
}

/// `acl` options.
#[derive(Args, Debug, Clone)]
pub struct AclArgs {
    #[command(flatten)]
    resource: AclResource,
    /// The principal, e.g. `User:alice`.
    #[arg(long)]
    principal: Option<String>,
    /// The host (create: default `*`, any host).
    #[arg(long)]
    host: Option<String>,
    /// The operation: all, read, write, create, delete, alter, describe,
    /// cluster-action, describe-configs, alter-configs, idempotent-write
    /// (filters also: any).
    #[arg(long, value_parser = parse_wire::<AclOperation>)]
    operation: Option<AclOperation>,
    /// allow or deny (filters also: any).
    #[arg(long, value_parser = parse_wire::<AclPermission>)]
    permission: Option<AclPermission>,
    /// How the resource name matches: literal (default of create) or
    /// prefixed; filters also any (the default) or match.
    #[arg(long, value_parser = parse_wire::<PatternType>)]
    pattern: Option<PatternType>,
}

/// Parses a library enum by Kafka's name, in any case.
fn parse_wire<T: std::str::FromStr<Err = rskafka::error::Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: rskafka::error::Error| e.to_string())
}

impl AclArgs {
    fn filter(&self) -> AclFilter {
        let (resource_type, resource_name) = match self.resource.get() {
            Some((t, n)) => (t, Some(n)),
            None => (ResourceType::Any, None),
        };
        AclFilter {
            resource_type,
            resource_name,
            pattern_type: self.pattern.unwrap_or(PatternType::Any),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.unwrap_or(AclOperation::Any),
            permission: self.permission.unwrap_or(AclPermission::Any),
        }
    }

    fn binding(&self) -> CliResult<AclBinding> {
        let missing = |what: &str| CliError::usage(format!("acl create needs {what}"));
        let (resource_type, resource_name) = self
            .resource
            .get()
            .ok_or_else(|| missing("--topic, --group, --cluster or --transactional-id"))?;
        Ok(AclBinding {
            resource_type,
            resource_name,
            pattern_type: self.pattern.unwrap_or(PatternType::Literal),
            principal: self
                .principal
                .clone()
                .ok_or_else(|| missing("--principal"))?,
            host: self.host.clone().unwrap_or_else(|| "*".to_owned()),
            operation: self.operation.ok_or_else(|| missing("--operation"))?,
            permission: self.permission.ok_or_else(|| missing("--permission"))?,
        })
    }
}

/// `acl` subcommands.
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Create an ACL (needs a resource, --principal, --operation, --permission).
    Create(AclArgs),
    /// Print the ACLs the options match (none: all).
    List {
        #[command(flatten)]
        args: AclArgs,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Delete the ACLs the options match (at least one option is needed) and
    /// print them.
    Delete(AclArgs),
}

/// `reassign` subcommands.
#[derive(Subcommand, Debug)]
pub enum ReassignCommand {
    /// Move a partition to new replicas, or cancel its reassignment.
    Alter {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The new replicas, comma-separated broker ids (the first is the
        /// preferred leader).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "cancel",
            conflicts_with = "cancel"
        )]
        replicas: Vec<i32>,
        /// Cancel the partition's reassignment in progress.
        #[arg(long)]
        cancel: bool,
    },
    /// Print the reassignments in progress: topic, partition, replicas,
    /// adding, removing.
    List {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}

/// `elect-leaders` options.
#[derive(Args, Debug)]
pub struct ElectArgs {
    /// preferred or unclean.
    #[arg(long = "type", value_parser = parse_wire::<ElectionType>)]
    election: ElectionType,
    /// Only this topic's partition --partition (without: all partitions).
    #[arg(long, requires = "partition")]
    topic: Option<String>,
    /// The partition of --topic.
    #[arg(long, requires = "topic")]
    partition: Option<i32>,
}

/// The entity options of `quota`.
#[derive(Args, Debug, Clone)]
pub struct QuotaEntityArgs {
    /// A user principal name.
    #[arg(long, conflicts_with = "user_default")]
    user: Option<String>,
    /// The default user.
    #[arg(long)]
    user_default: bool,
    /// A client id (not --client-id, which is the id this command sends).
    #[arg(long, value_name = "CLIENT_ID", conflicts_with = "client_default")]
    client: Option<String>,
    /// The default client id.
    #[arg(long)]
    client_default: bool,
}

impl QuotaEntityArgs {
    fn parts(&self) -> Vec<(QuotaEntityType, Option<String>)> {
        let mut out = Vec::new();
        if self.user.is_some() || self.user_default {
            out.push((QuotaEntityType::User, self.user.clone()));
        }
        if self.client.is_some() || self.client_default {
            out.push((QuotaEntityType::ClientId, self.client.clone()));
        }
        out
    }
}

/// `quota` subcommands.
#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Print the quotas of the entities matching the options (none: all):
    /// entity, key, value.
    Describe {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Set or remove quotas of the entity the options name.
    Alter {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Set a quota `KEY=VALUE` (e.g. producer_byte_rate=1048576); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_quota)]
        set: Vec<(String, f64)>,
        /// Remove a quota; repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

fn parse_quota(s: &str) -> Result<(String, f64), String> {
    let (k, v) = parse_config(s)?;
    let v = v
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("expected KEY=NUMBER, got {s:?}"))?;
    Ok((k, v))
}

/// `--mechanism` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    #[value(name = "SCRAM-SHA-256", alias = "scram-sha-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[value(name = "SCRAM-SHA-512", alias = "scram-sha-512")]
    Sha512,
}

impl Mechanism {
    fn hash(self) -> ScramHash {
        match self {
            Self::Sha256 => ScramHash::Sha256,
            Self::Sha512 => ScramHash::Sha512,
        }
    }
}

/// `user-scram` subcommands.
#[derive(Subcommand, Debug)]
pub enum ScramCommand {
    /// Print users' SCRAM credentials: user, mechanism, iterations (no
    /// users given: every user with one).
    Describe {
        /// The users.
        users: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Create or replace a user's credential for a mechanism.
    Upsert {
        /// The user.
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_enum)]
        mechanism: Mechanism,
        /// PBKDF2 iterations (4096 to 16384 for Kafka).
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
        /// The password; prefer $RSKAFKA_SCRAM_PASSWORD, as command lines
        /// are visible to other users of the machine.
        #[arg(
            long,
            env = "RSKAFKA_SCRAM_PASSWORD",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        password: String,
    },
    /// Delete a user's credential for a mechanism.
    Delete {
        /// The user.
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_enum)]
        mechanism: Mechanism,
    },
}

/// `txn` subcommands.
#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// Print every transaction: transactional id, producer id, state,
    /// coordinator.
    List(FormatArg),
    /// Print a transaction's state, producer, timeout and partitions.
    Describe {
        /// The transactional id.
        id: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

fn tp_json(tp: &TopicPartition) -> Value {
    json!({ "topic": &*tp.topic, "partition": tp.partition })
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Connects and runs `f` with an admin client, bounded by the timeout.
async fn with_admin<T, F, Fut>(g: &GlobalArgs, what: &str, f: F) -> CliResult<T>
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, rskafka::error::Error>>,
{
    let admin = connect(g).await?.admin();
    // Changes wait until a describe shows them, within the timeout: allow
    // the request and that wait.
    bounded(g.timeout() * 2, what, async { Ok(f(admin).await?) }).await
}

/// `cluster describe`.
pub async fn cluster(g: &GlobalArgs, cmd: ClusterCommand) -> CliResult {
    let ClusterCommand::Describe(f) = cmd;
    let c = with_admin(g, "cluster describe", |a| async move {
        a.describe_cluster().await
    })
    .await?;
    if f.format == Format::Json {
        let j = json!({
            "cluster_id": c.cluster_id,
            "controller_id": c.controller_id,
            "brokers": c.brokers.iter().map(|b| json!({
                "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
            })).collect::<Vec<_>>(),
        });
        return print_out(&format!("{j}\n"));
    }
    let mut t = format!("cluster id: {}\n", c.cluster_id);
    t.push_str(&format!(
        "controller: {}\n",
        c.controller_id
            .map_or_else(|| "-".to_owned(), |c| c.to_string())
    ));
    for b in &c.brokers {
        t.push_str(&format!(
            "broker {} at {}:{} rack {}\n",
            b.id,
            b.host,
            b.port,
            b.rack.as_deref().unwrap_or("-")
        ));
    }
    print_out(&t)
}

/// `config describe|alter`.
pub async fn config(g: &GlobalArgs, cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Describe { target, format } => {
            let resource = target.resource();
            let configs = with_admin(g, "config describe", |a| async move {
                a.describe_configs(&resource).await
            })
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = configs
                    .values()
                    .map(|c| {
                        json!({
                            "name": c.name, "value": c.value, "source": c.source.name(),
                            "read_only": c.read_only, "sensitive": c.is_sensitive,
                        })
                    })
                    .collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            let mut t = String::new();
            for c in configs.values() {
                t.push_str(&format!(
                    "{}\t{}\t{}\n",
                    c.name,
                    c.value.as_deref().unwrap_or("-"),
                    c.source.name()
                ));
            }
            print_out(&t)
        }
        ConfigCommand::Alter {
            target,
            set,
            delete,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::usage("config alter needs --set or --delete"));
            }
            let resource = target.resource();
            let changes: Vec<(String, ConfigOp)> = set
                .into_iter()
                .map(|(k, v)| (k, ConfigOp::Set(v)))
                .chain(delete.into_iter().map(|k| (k, ConfigOp::Delete)))
                .collect();
            let r = &resource;
            with_admin(g, "config alter", |a| async move {
                a.alter_configs(r, &changes).await
            })
            .await?;
            print_out(&format!("Altered configs of {resource}.\n"))
        }
    }
}

fn acl_json(a: &AclBinding) -> Value {
    json!({
        "resource_type": a.resource_type.name(), "resource_name": a.resource_name,
        "pattern_type": a.pattern_type.name(), "principal": a.principal, "host": a.host,
        "operation": a.operation.name(), "permission": a.permission.name(),
    })
}

fn acl_line(a: &AclBinding) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        a.resource_type,
        a.resource_name,
        a.pattern_type,
        a.principal,
        a.host,
        a.operation,
        a.permission
    )
}

/// `acl create|list|delete`.
pub async fn acl(g: &GlobalArgs, cmd: AclCommand) -> CliResult {
    match cmd {
        AclCommand::Create(args) => {
            let binding = args.binding()?;
            let b = binding.clone();
            with_admin(
                g,
                "acl create",
                |a| async move { a.create_acls(&[b]).await },
            )
            .await?;
            print_out(&format!("Created ACL {binding}.\n"))
        }
        AclCommand::List { args, format } => {
            let filter = args.filter();
            let acls = with_admin(
                g,
                "acl list",
                |a| async move { a.describe_acls(&filter).await },
            )
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = acls.iter().map(acl_json).collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            print_out(&acls.iter().map(acl_line).collect::<String>())
        }
        AclCommand::Delete(args) => {
            let filter = args.filter();
            if filter == AclFilter::default() {
                return Err(CliError::usage(
                    "acl delete needs at least one filter option (it would delete every ACL)",
                ));
            }
            let acls = with_admin(
                g,
                "acl delete",
                |a| async move { a.delete_acls(&filter).await },
            )
            .await?;
            print_out(&acls.iter().map(acl_line).collect::<String>())
        }
    }
}

/// `reassign alter|list`.
pub async fn reassign(g: &GlobalArgs, cmd: ReassignCommand) -> CliResult {
    match cmd {
        ReassignCommand::Alter {
            topic,
            partition,
            replicas,
            cancel,
        } => {
            let tp = TopicPartition::new(topic.as_str(), partition);
            let target = (!cancel).then_some(replicas);
            let map = BTreeMap::from([(tp.clone(), target)]);
            with_admin(g, "reassign alter", |a| async move {
                a.alter_partition_reassignments(&map).await
            })
            .await?;
            let what = if cancel {
                "Cancelled the reassignment of"
            } else {
                "Reassigning"
            };
            print_out(&format!("{what} {tp}.\n"))
        }
        ReassignCommand::List { topic, format } => {
            let client = connect(g).await?;
            let partitions: Option<Vec<TopicPartition>> = match &topic {
                Some(t) => Some(
                    crate::topic_partitions(&client, g, t)
                        .await?
                        .into_iter()
                        .map(|p| TopicPartition::new(t.as_str(), p))
                        .collect(),
                ),
                None => None,
            };
            let admin = client.admin();
            let list = bounded(g.timeout(), "reassign list", async {
                Ok(admin
                    .list_partition_reassignments(partitions.as_deref())
                    .await?)
            })
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = list
                    .iter()
                    .map(|(tp, r)| {
                        let mut v = tp_json(tp);
                        v["replicas"] = json!(r.replicas);
                        v["adding"] = json!(r.adding_replicas);
                        v["removing"] = json!(r.removing_replicas);
                        v
                    })
                    .collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            let mut t = String::new();
            for (tp, r) in &list {
                t.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    tp.topic,
                    tp.partition,
                    ids(&r.replicas),
                    ids(&r.adding_replicas),
                    ids(&r.removing_replicas)
                ));
            }
            print_out(&t)
        }
    }
}

/// `elect-leaders`: one line per partition: topic, partition, outcome
/// (`elected`, `not needed`, or the error). Exits 1 if any failed.
pub async fn elect_leaders(g: &GlobalArgs, args: ElectArgs) -> CliResult {
    if args.election == ElectionType::Unknown {
        return Err(CliError::usage("--type must be preferred or unclean"));
    }
    let partitions = match (&args.topic, args.partition) {
        (Some(t), Some(p)) => Some(vec![TopicPartition::new(t.as_str(), p)]),
        _ => None,
    };
    let results = with_admin(g, "elect-leaders", |a| async move {
        a.elect_leaders(args.election, partitions.as_deref()).await
    })
    .await?;
    let mut t = String::new();
    let mut failed = Vec::new();
    for (tp, r) in &results {
        let outcome = match r {
            ElectionResult::Elected => "elected".to_owned(),
            ElectionResult::NotNeeded => "not needed".to_owned(),
            ElectionResult::Failed(e) => {
                failed.push(e.to_string());
                format!("failed: {e}")
            }
            _ => "unknown".to_owned(),
        };
        t.push_str(&format!("{}\t{}\t{outcome}\n", tp.topic, tp.partition));
    }
    print_out(&t)?;
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(CliError::msg(format!(
            "{} of {} elections failed, first: {first}",
            failed.len(),
            results.len()
        ))),
    }
}

/// `quota describe|alter`.
pub async fn quota(g: &GlobalArgs, cmd: QuotaCommand) -> CliResult {
    match cmd {
        QuotaCommand::Describe { entity, format } => {
            let filter: Vec<QuotaFilter> = entity
                .parts()
                .into_iter()
                .map(|(entity_type, name)| QuotaFilter {
                    entity_type,
                    matching: name.map_or(QuotaMatch::Default, QuotaMatch::Exact),
                })
                .collect();
            let quotas = with_admin(g, "quota describe", |a| async move {
                a.describe_client_quotas(&filter, false).await
            })
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = quotas
                    .iter()
                    .map(|(e, values)| {
                        let entity: serde_json::Map<String, Value> =
                            e.0.iter()
                                .map(|(t, n)| (t.name().to_owned(), json!(n)))
                                .collect();
                        json!({ "entity": entity, "quotas": values })
                    })
                    .collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            let mut t = String::new();
            for (e, values) in &quotas {
                for (k, v) in values {
                    t.push_str(&format!("{e}\t{k}\t{v}\n"));
                }
            }
            print_out(&t)
        }
        QuotaCommand::Alter {
            entity,
            set,
            delete,
        } => {
            let parts = entity.parts();
            if parts.is_empty() {
                return Err(CliError::usage(
                    "quota alter needs --user, --user-default, --client or --client-default",
                ));
            }
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::usage("quota alter needs --set or --delete"));
            }
            let entity = QuotaEntity(parts.into_iter().collect());
            let changes: Vec<(String, Option<f64>)> = set
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .chain(delete.into_iter().map(|k| (k, None)))
                .collect();
            let e = &entity;
            with_admin(g, "quota alter", |a| async move {
                a.alter_client_quotas(e, &changes).await
            })
            .await?;
            print_out(&format!("Altered quotas of {entity}.\n"))
        }
    }
}

/// `user-scram describe|upsert|delete`.
pub async fn user_scram(g: &GlobalArgs, cmd: ScramCommand) -> CliResult {
    match cmd {
        ScramCommand::Describe { users, format } => {
            let wanted = (!users.is_empty()).then_some(users);
            let creds = with_admin(g, "user-scram describe", |a| async move {
                a.describe_user_scram_credentials(wanted.as_deref()).await
            })
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = creds
                    .iter()
                    .map(|(user, infos)| {
                        json!({
                            "user": user,
                            "credentials": infos.iter().map(|i| json!({
                                "mechanism": i.mechanism.mechanism(), "iterations": i.iterations,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            let mut t = String::new();
            for (user, infos) in &creds {
                for i in infos {
                    t.push_str(&format!(
                        "{user}\t{}\t{}\n",
                        i.mechanism.mechanism(),
                        i.iterations
                    ));
                }
            }
            print_out(&t)
        }
        ScramCommand::Upsert {
            user,
            mechanism,
            iterations,
            password,
        } => {
            let u = &user;
            with_admin(g, "user-scram upsert", |a| async move {
                a.upsert_scram_credential(u, mechanism.hash(), iterations, &password)
                    .await
            })
            .await?;
            print_out(&format!(
                "Upserted the {} credential of {user}.\n",
                mechanism.hash().mechanism()
            ))
        }
        ScramCommand::Delete { user, mechanism } => {
            let u = &user;
            with_admin(g, "user-scram delete", |a| async move {
                a.delete_scram_credential(u, mechanism.hash()).await
            })
            .await?;
            print_out(&format!(
                "Deleted the {} credential of {user}.\n",
                mechanism.hash().mechanism()
            ))
        }
    }
}

/// `log-dirs` options.
#[derive(Args, Debug)]
pub struct LogDirsArgs {
    /// Only this broker (default: every broker).
    #[arg(long, value_name = "ID")]
    broker: Option<i32>,
    /// Only this topic's replicas.
    #[arg(long)]
    topic: Option<String>,
    #[command(flatten)]
    format: FormatArg,
}

/// `log-dirs`: per directory a `broker path error total usable` line, then
/// one indented `topic partition size lag` line per replica.
pub async fn log_dirs(g: &GlobalArgs, args: LogDirsArgs) -> CliResult {
    let brokers = args.broker.map(|b| vec![b]);
    let dirs = with_admin(g, "log-dirs", |a| async move {
        a.describe_log_dirs(brokers.as_deref()).await
    })
    .await?;
    let keep = |tp: &TopicPartition| args.topic.as_deref().is_none_or(|t| *tp.topic == *t);
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    if args.format.format == Format::Json {
        let j: Vec<Value> = dirs
            .iter()
            .map(|d| {
                json!({
                    "broker": d.broker, "path": d.path, "error": d.error.map(|e| e.name()),
                    "total_bytes": d.total_bytes, "usable_bytes": d.usable_bytes,
                    "replicas": d.replicas.iter().filter(|(tp, _)| keep(tp)).map(|(tp, r)| {
                        let mut v = tp_json(tp);
                        v["size"] = json!(r.size);
                        v["offset_lag"] = json!(r.offset_lag);
                        v["future"] = json!(r.is_future);
                        v
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_out(&format!("{}\n", Value::from(j)));
    }
    let mut t = String::new();
    for d in &dirs {
        t.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            d.broker,
            d.path,
            d.error.map_or("-", |e| e.name()),
            opt(d.total_bytes),
            opt(d.usable_bytes)
        ));
        for (tp, r) in d.replicas.iter().filter(|(tp, _)| keep(tp)) {
            t.push_str(&format!(
                "  {}\t{}\t{}\t{}{}\n",
                tp.topic,
                tp.partition,
                r.size,
                r.offset_lag,
                if r.is_future { "\tfuture" } else { "" }
            ));
        }
    }
    print_out(&t)
}

/// `producers` options.
#[derive(Args, Debug)]
pub struct ProducersArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    #[command(flatten)]
    format: FormatArg,
}

/// `producers`: one line per partition and producer: topic, partition,
/// producer id, epoch, last sequence, last timestamp, open transaction's
/// first offset (`-` if none).
pub async fn producers(g: &GlobalArgs, args: ProducersArgs) -> CliResult {
    let client = connect(g).await?;
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) => vec![TopicPartition::new(args.topic.as_str(), p)],
        None => crate::topic_partitions(&client, g, &args.topic)
            .await?
            .into_iter()
            .map(|p| TopicPartition::new(args.topic.as_str(), p))
            .collect(),
    };
    let admin = client.admin();
    let states = bounded(g.timeout(), "producers", async {
        Ok(admin.describe_producers(&partitions).await?)
    })
    .await?;
    if args.format.format == Format::Json {
        let j: Vec<Value> = states
            .iter()
            .map(|(tp, ps)| {
                let mut v = tp_json(tp);
                v["producers"] = ps
                    .iter()
                    .map(|p| {
                        json!({
                            "producer_id": p.producer_id, "producer_epoch": p.producer_epoch,
                            "last_sequence": p.last_sequence, "last_timestamp": p.last_timestamp_ms,
                            "coordinator_epoch": p.coordinator_epoch,
                            "current_txn_start_offset": p.current_txn_start_offset,
                        })
                    })
                    .collect();
                v
            })
            .collect();
        return print_out(&format!("{}\n", Value::from(j)));
    }
    let mut t = String::new();
    for (tp, ps) in &states {
        for p in ps {
            t.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                tp.topic,
                tp.partition,
                p.producer_id,
                p.producer_epoch,
                p.last_sequence,
                p.last_timestamp_ms,
                p.current_txn_start_offset
                    .map_or_else(|| "-".to_owned(), |o| o.to_string())
            ));
        }
    }
    print_out(&t)
}

/// `txn list|describe`.
pub async fn txn(g: &GlobalArgs, cmd: TxnCommand) -> CliResult {
    match cmd {
        TxnCommand::List(format) => {
            let list = with_admin(
                g,
                "txn list",
                |a| async move { a.list_transactions().await },
            )
            .await?;
            if format.format == Format::Json {
                let j: Vec<Value> = list
                    .iter()
                    .map(|t| {
                        json!({
                            "transactional_id": t.transactional_id, "producer_id": t.producer_id,
                            "state": t.state, "coordinator": t.coordinator,
                        })
                    })
                    .collect();
                return print_out(&format!("{}\n", Value::from(j)));
            }
            let mut out = String::new();
            for t in &list {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    t.transactional_id, t.producer_id, t.state, t.coordinator
                ));
            }
            print_out(&out)
        }
        TxnCommand::Describe { id, format } => {
            let i = &id;
            let d = with_admin(g, "txn describe", |a| async move {
                a.describe_transaction(i).await
            })
            .await?;
            let parts: Vec<String> = d.partitions.iter().map(ToString::to_string).collect();
            if format.format == Format::Json {
                let j = json!({
                    "transactional_id": d.transactional_id, "state": d.state,
                    "timeout_ms": d.timeout_ms, "start_time_ms": d.start_time_ms,
                    "producer_id": d.producer_id, "producer_epoch": d.producer_epoch,
                    "coordinator": d.coordinator,
                    "partitions": d.partitions.iter().map(tp_json).collect::<Vec<_>>(),
                });
                return print_out(&format!("{j}\n"));
            }
            print_out(&format!(
                "transactional id: {}\nstate: {}\nproducer: {} epoch {}\ntimeout ms: {}\nstarted: {}\ncoordinator: {}\npartitions: {}\n",
                d.transactional_id,
                d.state,
                d.producer_id,
                d.producer_epoch,
                d.timeout_ms,
                d.start_time_ms.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                d.coordinator,
                if parts.is_empty() { "-".to_owned() } else { parts.join(" ") }
            ))
        }
    }
}
