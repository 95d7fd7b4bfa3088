//! Settings by the property names of the Java client and librdkafka
//! (`bootstrap.servers`, `linger.ms`, `group.id`, ...), for tools and
//! services whose users know those names.
//!
//! ```
//! use rskafka::client::properties::Properties;
//!
//! let mut props = Properties::parse(
//!     "# producer.properties\n\
//!      bootstrap.servers=broker-1:9092,broker-2:9092\n\
//!      linger.ms=20\n\
//!      compression.type=zstd\n",
//! )?;
//! props.set("acks", "1")?;
//! let builder = props.client_builder()?;
//! let producer = props.producer_config()?;
//! assert!(props.set("linger.mss", "5").is_err(), "unknown names are refused");
//! # let _ = (builder, producer);
//! # Ok::<(), rskafka::error::Error>(())
//! ```

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use super::{
    consumer::{ConsumerConfig, OffsetReset},
    group::{
        assignor::{
            Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor, StickyAssignor,
        },
        GroupConfig, GroupProtocol,
    },
    partition::{Acks, IsolationLevel},
    producer::{Compression, ProducerConfig},
    BackoffConfig, ClientBuilder,
};
use crate::{
    connection::sasl::{Credentials, SaslConfig},
    error::{Error, Result},
};

/// Which settings a property belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Client,
    Producer,
    Consumer,
    Group,
}

/// Every property understood, with its librdkafka alias where the names
/// differ (the alias is stored under the Java name).
const KNOWN: &[(&str, Option<&str>, Scope)] = &[
    (
        "bootstrap.servers",
        Some("metadata.broker.list"),
        Scope::Client,
    ),
    ("client.id", None, Scope::Client),
    ("request.timeout.ms", None, Scope::Client),
    ("socket.connection.setup.timeout.ms", None, Scope::Client),
    ("default.api.timeout.ms", None, Scope::Client),
    (
        "metadata.max.age.ms",
        Some("topic.metadata.refresh.interval.ms"),
        Scope::Client,
    ),
    ("security.protocol", None, Scope::Client),
    ("sasl.mechanism", Some("sasl.mechanisms"), Scope::Client),
    ("sasl.username", None, Scope::Client),
    ("sasl.password", None, Scope::Client),
    ("sasl.jaas.config", None, Scope::Client),
    ("sasl.oauthbearer.config", None, Scope::Client),
    ("enable.sasl.oauthbearer.unsecure.jwt", None, Scope::Client),
    (
        "ssl.ca.location",
        Some("ssl.truststore.location"),
        Scope::Client,
    ),
    ("ssl.certificate.location", None, Scope::Client),
    ("ssl.key.location", None, Scope::Client),
    ("acks", Some("request.required.acks"), Scope::Producer),
    ("linger.ms", Some("queue.buffering.max.ms"), Scope::Producer),
    ("batch.size", None, Scope::Producer),
    ("buffer.memory", None, Scope::Producer),
    ("queue.buffering.max.kbytes", None, Scope::Producer),
    (
        "max.request.size",
        Some("message.max.bytes"),
        Scope::Producer,
    ),
    (
        "compression.type",
        Some("compression.codec"),
        Scope::Producer,
    ),
    ("enable.idempotence", None, Scope::Producer),
    (
        "delivery.timeout.ms",
        Some("message.timeout.ms"),
        Scope::Producer,
    ),
    ("retries", Some("message.send.max.retries"), Scope::Producer),
    ("transactional.id", None, Scope::Producer),
    ("transaction.timeout.ms", None, Scope::Producer),
    ("retry.backoff.ms", None, Scope::Producer),
    ("retry.backoff.max.ms", None, Scope::Producer),
    (
        "max.in.flight.requests.per.connection",
        Some("max.in.flight"),
        Scope::Producer,
    ),
    ("isolation.level", None, Scope::Consumer),
    ("auto.offset.reset", None, Scope::Consumer),
    ("fetch.min.bytes", None, Scope::Consumer),
    ("fetch.max.bytes", None, Scope::Consumer),
    (
        "fetch.max.wait.ms",
        Some("fetch.wait.max.ms"),
        Scope::Consumer,
    ),
    ("max.partition.fetch.bytes", None, Scope::Consumer),
    ("check.crcs", None, Scope::Consumer),
    ("group.id", None, Scope::Group),
    ("group.instance.id", None, Scope::Group),
    ("group.protocol", None, Scope::Group),
    ("group.remote.assignor", None, Scope::Group),
    ("partition.assignment.strategy", None, Scope::Group),
    ("client.rack", None, Scope::Group),
    ("session.timeout.ms", None, Scope::Group),
    ("heartbeat.interval.ms", None, Scope::Group),
    ("max.poll.interval.ms", None, Scope::Group),
    ("enable.auto.commit", None, Scope::Group),
    ("auto.commit.interval.ms", None, Scope::Group),
];

/// Configuration properties by the Java client's and librdkafka's names,
/// turned into this crate's settings. Names are checked when set; values
/// when a setting is built, with an error naming the property.
///
/// What each property means is what it means in the Java client; the
/// librdkafka names that differ are accepted as aliases
/// (`metadata.broker.list`, `queue.buffering.max.ms`, `compression.codec`,
/// `request.required.acks`, `message.timeout.ms`, `message.max.bytes`,
/// `queue.buffering.max.kbytes`, `sasl.mechanisms`, `sasl.username` and
/// `sasl.password`, `ssl.ca.location`, ...). `security.protocol` takes
/// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` and `SASL_SSL`; SASL credentials
/// come from `sasl.username`/`sasl.password` or from a `sasl.jaas.config`
/// with `username="..." password="..."`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    values: BTreeMap<&'static str, String>,
}

/// Shows every property but the secrets' values.
impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.iter().map(|(name, value)| {
                let secret = name.contains("password") || name.contains("jaas");
                (*name, if secret { "<hidden>" } else { value.as_str() })
            }))
            .finish()
    }
}

impl Properties {
    /// No properties: every setting keeps this crate's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a Java `.properties`-style text: `name=value` (or `name:
    /// value`) per line, `#` and `!` start comments, blank lines are
    /// skipped. The error names the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut props = Self::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            props
                .assign(line)
                .map_err(|e| Error::invalid_input(format!("line {}: {e}", n + 1)))?;
        }
        Ok(props)
    }

    /// Sets a property from `name=value` (as kcat's `-X`).
    pub fn set_assignment(&mut self, assignment: &str) -> Result<()> {
        self.assign(assignment).map_err(Error::invalid_input)
    }

    /// Sets `name` (a Java or librdkafka property name) to `value`; an
    /// unknown name is an error.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        self.insert(name, value).map_err(Error::invalid_input)
    }

    fn assign(&mut self, assignment: &str) -> std::result::Result<(), String> {
        let split = assignment
            .find(['=', ':'])
            .ok_or_else(|| format!("expected name=value, got {assignment:?}"))?;
        let (name, value) = (&assignment[..split], &assignment[split + 1..]);
        self.insert(name.trim(), value.trim())
    }

    fn insert(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        let known = KNOWN
            .iter()
            .find(|(java, alias, _)| *java == name || *alias == Some(name))
            .ok_or_else(|| format!("unknown property {name:?}"))?;
        self.values.insert(known.0, value.to_owned());
        Ok(())
    }

    /// The value set for `name` (or its alias), if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        let (java, _, _) = KNOWN
            .iter()
            .find(|(java, alias, _)| *java == name || *alias == Some(name))?;
        self.values.get(java).map(String::as_str)
    }

    /// Checks every value set here against the settings it belongs to, so
    /// that a bad one is reported before anything connects.
    pub fn check(&self) -> Result<()> {
        let mut with_servers = self.clone();
        with_servers
            .values
            .entry("bootstrap.servers")
            .or_insert_with(|| "localhost:9092".to_owned());
        with_servers.client_builder()?;
        self.producer_config()?;
        self.consumer_config()?;
        self.apply_to_group(GroupConfig::new("", Vec::<String>::new()))?;
        Ok(())
    }

    /// Whether a property of the producer, consumer or group settings is set.
    fn has_scope(&self, scope: Scope) -> bool {
        KNOWN
            .iter()
            .any(|(java, _, s)| *s == scope && self.values.contains_key(java))
    }

    /// A client builder for `bootstrap.servers` with the client properties.
    pub fn client_builder(&self) -> Result<ClientBuilder> {
        let servers = self
            .get("bootstrap.servers")
            .ok_or_else(|| Error::invalid_input("bootstrap.servers is not set"))?;
        let brokers: Vec<String> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if brokers.is_empty() {
            return Err(bad("bootstrap.servers", servers, "no address"));
        }
        self.apply_to_client(ClientBuilder::new(brokers))
    }

    /// `builder` with the client properties set here applied (all but
    /// `bootstrap.servers`).
    pub fn apply_to_client(&self, mut builder: ClientBuilder) -> Result<ClientBuilder> {
        if let Some(id) = self.get("client.id") {
            builder = builder.client_id(id);
        }
        if let Some(t) = self.millis("request.timeout.ms")? {
            builder = builder.request_timeout(t);
        }
        if let Some(t) = self.millis("socket.connection.setup.timeout.ms")? {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = self.millis("default.api.timeout.ms")? {
            builder = builder.operation_timeout(t);
        }
        if let Some(t) = self.millis("metadata.max.age.ms")? {
            builder = builder.metadata_max_age(t);
        }
        let protocol = self
            .get("security.protocol")
            .unwrap_or("PLAINTEXT")
            .to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(bad(
                    "security.protocol",
                    other,
                    "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                ))
            }
        };
        if tls {
            builder = builder.transport(self.tls()?);
        } else if let Some(name) = [
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ]
        .into_iter()
        .find(|n| self.get(n).is_some())
        {
            return Err(bad(
                name,
                self.get(name).unwrap_or_default(),
                &format!("needs security.protocol SSL or SASL_SSL, not {protocol}"),
            ));
        }
        if sasl {
            builder = builder.sasl(self.sasl()?);
        }
        Ok(builder)
    }

    #[cfg(feature = "transport-tls")]
    fn tls(&self) -> Result<crate::connection::Transport> {
        let mut b = crate::connection::TlsConfig::builder();
        if let Some(ca) = self.get("ssl.ca.location") {
            b = b.ca_file(ca);
        }
        match (
            self.get("ssl.certificate.location"),
            self.get("ssl.key.location"),
        ) {
            (Some(cert), Some(key)) => b = b.client_cert_files(cert, key),
            (None, None) => {}
            (Some(cert), None) => {
                return Err(bad(
                    "ssl.certificate.location",
                    cert,
                    "needs ssl.key.location",
                ))
            }
            (None, Some(key)) => {
                return Err(bad(
                    "ssl.key.location",
                    key,
                    "needs ssl.certificate.location",
                ))
            }
        }
        let tls = b
            .build()
            .map_err(|e| Error::invalid_input(format!("TLS settings: {e}")))?;
        Ok(crate::connection::Transport::Tls(tls))
    }

    #[cfg(not(feature = "transport-tls"))]
    fn tls(&self) -> Result<crate::connection::Transport> {
        Err(Error::invalid_input(
            "security.protocol SSL needs the transport-tls feature of rskafka",
        ))
    }

    fn sasl(&self) -> Result<SaslConfig> {
        let mechanism = self.get("sasl.mechanism").unwrap_or("PLAIN");
        if mechanism.eq_ignore_ascii_case("OAUTHBEARER") {
            return self.unsecured_oauthbearer();
        }
        let jaas = self.get("sasl.jaas.config").map(jaas_credentials);
        let username = self
            .get("sasl.username")
            .map(str::to_owned)
            .or_else(|| jaas.as_ref().and_then(|j| j.0.clone()))
            .ok_or_else(|| {
                Error::invalid_input("SASL needs sasl.username (or sasl.jaas.config)")
            })?;
        let password = self
            .get("sasl.password")
            .map(str::to_owned)
            .or_else(|| jaas.as_ref().and_then(|j| j.1.clone()))
            .ok_or_else(|| {
                Error::invalid_input("SASL needs sasl.password (or sasl.jaas.config)")
            })?;
        SaslConfig::from_mechanism_name(mechanism, Credentials::new(username, password))
            .map_err(|e| bad("sasl.mechanism", mechanism, &e.to_string()))
    }

    /// OAUTHBEARER from properties: librdkafka's unsecured tokens, for
    /// development brokers; real tokens come from an
    /// [`OAuthTokenProvider`](crate::connection::sasl::OAuthTokenProvider)
    /// in code.
    fn unsecured_oauthbearer(&self) -> Result<SaslConfig> {
        let unsecure = "enable.sasl.oauthbearer.unsecure.jwt";
        match self.boolean(unsecure)? {
            Some(true) => {}
            _ => {
                return Err(Error::invalid_input(format!(
                    "sasl.mechanism OAUTHBEARER from properties makes unsecured tokens only: \
                     set {unsecure}=true and sasl.oauthbearer.config=principal=NAME \
                     (real tokens come from an OAuthTokenProvider in code)"
                )))
            }
        }
        let config = self.get("sasl.oauthbearer.config").ok_or_else(|| {
            Error::invalid_input("OAUTHBEARER needs sasl.oauthbearer.config=principal=NAME ...")
        })?;
        crate::connection::sasl::OAuthTokenProvider::unsecured_jwt(config)
            .map(SaslConfig::OAuthBearer)
            .map_err(|e| bad("sasl.oauthbearer.config", config, &e.to_string()))
    }

    /// The producer settings: this crate's defaults with the producer
    /// properties set here.
    pub fn producer_config(&self) -> Result<ProducerConfig> {
        self.apply_to_producer(ProducerConfig::default())
    }

    /// `config` with the producer properties set here applied.
    pub fn apply_to_producer(&self, mut config: ProducerConfig) -> Result<ProducerConfig> {
        if let Some(v) = self.get("acks") {
            config = config.acks(match v {
                "0" => Acks::None,
                "1" => Acks::Leader,
                "-1" | "all" => Acks::All,
                _ => return Err(bad("acks", v, "expected 0, 1, -1 or all")),
            });
        }
        if let Some(t) = self.millis("linger.ms")? {
            config = config.linger(t);
        }
        if let Some(n) = self.number::<usize>("batch.size")? {
            config = config.batch_size(n);
        }
        if let Some(n) = self.number::<usize>("buffer.memory")? {
            config = config.buffer_memory(n);
        }
        if let Some(kib) = self.number::<usize>("queue.buffering.max.kbytes")? {
            config = config.buffer_memory(kib.saturating_mul(1024));
        }
        if let Some(n) = self.number::<usize>("max.request.size")? {
            config = config.max_request_size(n);
        }
        if let Some(v) = self.get("compression.type") {
            config = config.compression(match v.to_ascii_lowercase().as_str() {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "lz4" => Compression::Lz4,
                "zstd" => Compression::Zstd,
                _ => {
                    return Err(bad(
                        "compression.type",
                        v,
                        "expected none, gzip, snappy, lz4 or zstd",
                    ))
                }
            });
        }
        if let Some(on) = self.boolean("enable.idempotence")? {
            config = config.idempotence(on);
        }
        if let Some(t) = self.millis("delivery.timeout.ms")? {
            config = config.delivery_timeout(t);
        }
        if let Some(n) = self.number::<u32>("retries")? {
            config = config.retries(n);
        }
        if let Some(id) = self.get("transactional.id") {
            config = config.transactional_id(id);
        }
        if let Some(t) = self.millis("transaction.timeout.ms")? {
            config = config.transaction_timeout(t);
        }
        let initial = self.millis("retry.backoff.ms")?;
        let max = self.millis("retry.backoff.max.ms")?;
        if initial.is_some() || max.is_some() {
            let default = BackoffConfig::default();
            let initial = initial.unwrap_or(default.initial);
            config = config.retry_backoff(BackoffConfig {
                initial,
                max: max.unwrap_or(default.max).max(initial),
                ..default
            });
        }
        if let Some(n) = self.number::<usize>("max.in.flight.requests.per.connection")? {
            config = config.max_in_flight_per_broker(n);
        }
        Ok(config)
    }

    /// The consumer settings: this crate's defaults with the consumer
    /// properties set here.
    pub fn consumer_config(&self) -> Result<ConsumerConfig> {
        self.apply_to_consumer(ConsumerConfig::default())
    }

    /// `config` with the consumer properties set here applied.
    pub fn apply_to_consumer(&self, mut config: ConsumerConfig) -> Result<ConsumerConfig> {
        if let Some(isolation) = self.isolation()? {
            config = config.isolation(isolation);
        }
        if let Some(reset) = self.offset_reset()? {
            config = config.offset_reset(reset);
        }
        if let Some(n) = self.number::<i32>("fetch.min.bytes")? {
            config = config.min_bytes(n);
        }
        if let Some(n) = self.number::<i32>("fetch.max.bytes")? {
            config = config.max_bytes(n);
        }
        if let Some(t) = self.millis("fetch.max.wait.ms")? {
            config = config.max_wait(t);
        }
        if let Some(n) = self.number::<i32>("max.partition.fetch.bytes")? {
            config = config.max_partition_bytes(n);
        }
        if let Some(on) = self.boolean("check.crcs")? {
            config = config.check_crcs(on);
        }
        Ok(config)
    }

    /// The settings of a group member of `group.id` consuming `topics`:
    /// this crate's defaults with the group and consumer properties set
    /// here.
    pub fn group_config<S: Into<String>>(
        &self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<GroupConfig> {
        let group = self
            .get("group.id")
            .ok_or_else(|| Error::invalid_input("group.id is not set"))?;
        self.apply_to_group(GroupConfig::new(group, topics))
    }

    /// `config` with the group and consumer properties set here applied
    /// (`group.id` included).
    pub fn apply_to_group(&self, mut config: GroupConfig) -> Result<GroupConfig> {
        if let Some(group) = self.get("group.id") {
            config.group_id = group.to_owned();
        }
        if let Some(id) = self.get("group.instance.id") {
            config = config.instance_id(id);
        }
        if let Some(rack) = self.get("client.rack") {
            config = config.rack_id(rack);
        }
        if let Some(v) = self.get("group.protocol") {
            config = config.protocol(match v.to_ascii_lowercase().as_str() {
                "classic" => GroupProtocol::Classic,
                "consumer" => GroupProtocol::Consumer,
                _ => return Err(bad("group.protocol", v, "expected classic or consumer")),
            });
        }
        if let Some(v) = self.get("group.remote.assignor") {
            config = config.server_assignor(v);
        }
        if let Some(v) = self.get("partition.assignment.strategy") {
            config = config.assignors(assignors(v)?);
        }
        if let Some(t) = self.millis("session.timeout.ms")? {
            config = config.session_timeout(t);
        }
        if let Some(t) = self.millis("heartbeat.interval.ms")? {
            config = config.heartbeat_interval(t);
        }
        if let Some(t) = self.millis("max.poll.interval.ms")? {
            config = config.rebalance_timeout(t);
        }
        let interval = self
            .millis("auto.commit.interval.ms")?
            .or(config.auto_commit)
            .unwrap_or(Duration::from_secs(5));
        match self.boolean("enable.auto.commit")? {
            Some(false) => config = config.auto_commit(None),
            Some(true) => config = config.auto_commit(Some(interval)),
            None if config.auto_commit.is_some() => config = config.auto_commit(Some(interval)),
            None => {}
        }
        if let Some(isolation) = self.isolation()? {
            config = config.isolation(isolation);
        }
        if let Some(reset) = self.offset_reset()? {
            config = config.offset_reset(reset);
        }
        if self.has_scope(Scope::Consumer) {
            let fetch = self.apply_to_consumer(config.fetch.clone())?;
            config = config.fetch(fetch);
        }
        Ok(config)
    }

    fn isolation(&self) -> Result<Option<IsolationLevel>> {
        self.get("isolation.level")
            .map(|v| match v {
                "read_committed" => Ok(IsolationLevel::ReadCommitted),
                "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
                _ => Err(bad(
                    "isolation.level",
                    v,
                    "expected read_committed or read_uncommitted",
                )),
            })
            .transpose()
    }

    fn offset_reset(&self) -> Result<Option<OffsetReset>> {
        self.get("auto.offset.reset")
            .map(|v| match v {
                "earliest" | "smallest" | "beginning" => Ok(OffsetReset::Earliest),
                "latest" | "largest" | "end" => Ok(OffsetReset::Latest),
                "none" | "error" => Ok(OffsetReset::Error),
                _ => Err(bad(
                    "auto.offset.reset",
                    v,
                    "expected earliest, latest or none",
                )),
            })
            .transpose()
    }

    fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.get(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| bad(name, v, "expected a non-negative number in range"))
            })
            .transpose()
    }

    fn millis(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.number::<u64>(name)?.map(Duration::from_millis))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad(name, v, "expected true or false")),
            })
            .transpose()
    }
}

/// The error for a bad value of a known property.
fn bad(name: &str, value: &str, why: &str) -> Error {
    Error::invalid_input(format!("{name}={value}: {why}"))
}

/// `partition.assignment.strategy`: Java class names or librdkafka's short
/// names, comma separated, most preferred first.
fn assignors(list: &str) -> Result<Vec<Arc<dyn Assignor>>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let short = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
            let assignor: Arc<dyn Assignor> = match short.as_str() {
                "range" | "rangeassignor" => Arc::new(RangeAssignor),
                "roundrobin" | "roundrobinassignor" => Arc::new(RoundRobinAssignor),
                "sticky" | "stickyassignor" => Arc::new(StickyAssignor),
                "cooperative-sticky" | "cooperativestickyassignor" => {
                    Arc::new(CooperativeStickyAssignor)
                }
                _ => {
                    return Err(bad(
                        "partition.assignment.strategy",
                        name,
                        "expected range, roundrobin, sticky or cooperative-sticky",
                    ))
                }
            };
            Ok(assignor)
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|a| {
            if a.is_empty() {
                Err(bad("partition.assignment.strategy", list, "no assignor"))
            } else {
                Ok(a)
            }
        })
}

/// `username="..."` and `password="..."` of a JAAS login module line.
fn jaas_credentials(jaas: &str) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        let start = jaas.find(&format!("{name}=\""))? + name.len() + 2;
        let end = jaas[start..].find('"')? + start;
        Some(jaas[start..end].to_owned())
    };
    (field("username"), field("password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::new();
        for (k, v) in pairs {
            p.set(k, v).unwrap();
        }
        p
    }

    #[test]
    fn oauthbearer_from_properties_is_librdkafkas_unsecured_jwt() {
        let base = [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "OAUTHBEARER"),
        ];
        let client = |extra: &[(&str, &str)]| {
            let pairs: Vec<_> = base.iter().chain(extra).copied().collect();
            props(&pairs).apply_to_client(ClientBuilder::new(vec!["a:1".into()]))
        };
        let e = client(&[]).unwrap_err().to_string();
        assert!(
            e.contains("enable.sasl.oauthbearer.unsecure.jwt=true"),
            "{e}"
        );
        let e = client(&[("enable.sasl.oauthbearer.unsecure.jwt", "true")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sasl.oauthbearer.config"), "{e}");
        let e = client(&[
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "scope=x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("principal=NAME is required"), "{e}");
        client(&[
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "principal=alice"),
        ])
        .expect("an unsecured OAUTHBEARER client");
    }

    #[test]
    fn names_and_aliases() {
        let mut p = Properties::new();
        p.set("metadata.broker.list", "a:1").unwrap();
        p.set("queue.buffering.max.ms", "7").unwrap();
        assert_eq!(p.get("bootstrap.servers"), Some("a:1"));
        assert_eq!(p.get("linger.ms"), Some("7"));
        let e = p.set("linger.mss", "1").unwrap_err();
        assert!(
            e.to_string().contains("unknown property \"linger.mss\""),
            "{e}"
        );
        let parsed = Properties::parse("# c\n! c\n\nbootstrap.servers = b:2\nacks: all\n").unwrap();
        assert_eq!(parsed.get("bootstrap.servers"), Some("b:2"));
        assert_eq!(parsed.get("acks"), Some("all"));
        let e = Properties::parse("acks=1\nnonsense\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn producer_properties() {
        let c = props(&[
            ("acks", "1"),
            ("linger.ms", "20"),
            ("compression.codec", "zstd"),
            ("retries", "3"),
            ("message.timeout.ms", "60000"),
            ("queue.buffering.max.kbytes", "1024"),
            ("transactional.id", "orders-1"),
            ("transaction.timeout.ms", "30000"),
        ])
        .producer_config()
        .unwrap();
        let debug = format!("{c:?}");
        for want in [
            "acks: Leader",
            "linger: 20ms",
            "compression: Zstd",
            "retries: 3",
            "delivery_timeout: 60s",
            "buffer_memory: 1048576",
            "transactional_id: Some(\"orders-1\")",
            "transaction_timeout: 30s",
        ] {
            assert!(debug.contains(want), "{want} in {debug}");
        }
        for (name, value) in [
            ("acks", "2"),
            ("linger.ms", "-1"),
            ("compression.type", "brotli"),
            ("enable.idempotence", "yes"),
        ] {
            let p = props(&[(name, value)]);
            let e = p.producer_config().unwrap_err();
            assert!(e.to_string().contains(&format!("{name}={value}")), "{e}");
            assert!(p.check().is_err(), "{name}");
        }
        assert!(props(&[("linger.ms", "5"), ("group.id", "g")])
            .check()
            .is_ok());
        assert!(props(&[("isolation.level", "dirty")]).check().is_err());
    }

    #[test]
    fn group_and_consumer_properties() {
        let g = props(&[
            ("group.id", "billing"),
            ("group.instance.id", "billing-1"),
            ("session.timeout.ms", "10000"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.RoundRobinAssignor,range",
            ),
            ("group.protocol", "consumer"),
            ("fetch.max.wait.ms", "100"),
        ])
        .group_config(["t"])
        .unwrap();
        assert_eq!(g.group_id, "billing");
        assert_eq!(g.instance_id.as_deref(), Some("billing-1"));
        assert_eq!(g.session_timeout, Duration::from_secs(10));
        assert_eq!(g.auto_commit, None);
        assert_eq!(g.fetch.offset_reset, OffsetReset::Earliest);
        assert_eq!(g.fetch.isolation, IsolationLevel::ReadCommitted);
        assert_eq!(g.protocol, GroupProtocol::Consumer);
        let names: Vec<&str> = g.assignors.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["roundrobin", "range"]);
        assert!(
            format!("{:?}", g.fetch).contains("max_wait: 100ms"),
            "{:?}",
            g.fetch
        );
        assert!(
            props(&[]).group_config(["t"]).is_err(),
            "group.id is required"
        );
        let e = props(&[("group.id", "g"), ("auto.offset.reset", "soon")])
            .group_config(["t"])
            .unwrap_err();
        assert!(e.to_string().contains("auto.offset.reset=soon"), "{e}");
        let g = props(&[("group.id", "g"), ("auto.commit.interval.ms", "1000")])
            .group_config(["t"])
            .unwrap();
        assert_eq!(g.auto_commit, Some(Duration::from_secs(1)));
    }

    #[test]
    fn client_properties() {
        assert!(
            props(&[]).client_builder().is_err(),
            "bootstrap.servers is required"
        );
        let ok = props(&[
            ("bootstrap.servers", "a:9092"),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";"#,
            ),
        ]);
        assert!(ok.client_builder().is_ok());
        for (pairs, want) in [
            (
                vec![
                    ("bootstrap.servers", "a:1"),
                    ("security.protocol", "SASL_PLAINTEXT"),
                ],
                "sasl.username",
            ),
            (
                vec![("bootstrap.servers", "a:1"), ("security.protocol", "TLS")],
                "security.protocol=TLS",
            ),
            (
                vec![("bootstrap.servers", "a:1"), ("ssl.ca.location", "/ca.pem")],
                "ssl.ca.location=/ca.pem",
            ),
            (
                vec![
                    ("bootstrap.servers", "a:1"),
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "GSSAPI"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ],
                "sasl.mechanism=GSSAPI",
            ),
        ] {
            let e = props(&pairs).client_builder().unwrap_err();
            assert!(e.to_string().contains(want), "{want} in {e}");
        }
        let debug = format!("{ok:?}");
        assert!(
            debug.contains("\"sasl.mechanism\": \"SCRAM-SHA-256\""),
            "{debug}"
        );
        assert!(!debug.contains("password=\\\"p"), "{debug}");
        assert!(debug.contains("<hidden>"), "{debug}");
        assert_eq!(
            jaas_credentials(r#"x required username="a b" password="c\";"#),
            (Some("a b".into()), Some("c\\".into()))
        );
    }
}
