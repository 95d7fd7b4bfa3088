//! Layered settings: built-in defaults < `config/default.toml` <
//! `config/local.toml` < `KAFKA_<SECTION>__<KEY>` environment variables.
//!
//! Unknown keys are refused (the error names them), so a misspelt setting
//! never goes unnoticed. Environment variables starting with `KAFKA_` but
//! without a `__` (e.g. `KAFKA_BOOTSTRAP`, `KAFKA_PORT` of `scripts/kafka`)
//! are not settings and are ignored.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Format, Serialized, Toml},
    Figment,
};
use rskafka::client::{
    security::{Credentials, SaslConfig, TlsConfig, Transport},
    Client, ClientBuilder,
};
use serde::{Deserialize, Serialize};

/// Every setting, in four sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[kafka]`: where and how to connect.
    pub kafka: KafkaSettings,
    /// `[producer]`.
    pub producer: ProducerSettings,
    /// `[consumer]`.
    pub consumer: ConsumerSettings,
    /// `[observability]`.
    pub observability: ObservabilitySettings,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// `[kafka]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// The client id sent to the brokers.
    pub client_id: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    pub security_protocol: SecurityProtocol,
    /// PEM file of the CAs to trust (SSL, SASL_SSL); the system's roots
    /// without it.
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate (mutual TLS), with `ssl_key_location`.
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate.
    pub ssl_key_location: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_*).
    pub sasl_mechanism: String,
    /// SASL user.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".into(),
            client_id: "kafka-rust-pipeline".into(),
            security_protocol: SecurityProtocol::Plaintext,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            sasl_mechanism: "PLAIN".into(),
            sasl_username: None,
            sasl_password: None,
        }
    }
}

/// `[producer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerSettings {
    /// The topic events are written to; `.processed`, `.retry` and `.dlq`
    /// are named after it.
    pub events_topic: String,
    /// How long a record may take to be acknowledged.
    pub delivery_timeout_ms: u64,
    /// How long a batch waits for more records.
    pub linger_ms: u64,
    /// Bytes of records the producer buffers until acknowledged; `send`
    /// waits while it is full.
    pub buffer_memory_bytes: usize,
    /// Partitions of the topics `ingest` and `process` create when they
    /// are missing.
    pub partitions: i32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            events_topic: "events".into(),
            delivery_timeout_ms: 120_000,
            linger_ms: 5,
            buffer_memory_bytes: 16 << 20,
            partitions: 6,
        }
    }
}

/// `[consumer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    /// The consumer group of the `process` workers.
    pub group_id: String,
    /// Records taken from the consumer at a time.
    pub batch_size: usize,
    /// Attempts of a failing event before it goes to the DLQ.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles with each further one.
    pub retry_backoff_ms: u64,
    /// The group session timeout.
    pub session_timeout_ms: u64,
    /// Records handed to the handlers and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Bytes the consumer fetches ahead of the workers, at most.
    pub max_buffered_bytes: usize,
    /// Exactly-once processing: read committed records only, and write
    /// each batch's outputs and consumed offsets in one transaction.
    pub exactly_once: bool,
    /// The transactional id of this worker (with `exactly_once`): one per
    /// worker, the same across its restarts.
    pub transactional_id: Option<String>,
    /// How long the broker lets a transaction of a worker that stopped
    /// answering stay open before it aborts it.
    pub transaction_timeout_ms: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: "kafka-rust-consumer".into(),
            batch_size: 100,
            max_attempts: 3,
            retry_backoff_ms: 500,
            session_timeout_ms: 10_000,
            max_in_flight: 5_000,
            max_buffered_bytes: 16 << 20,
            exactly_once: false,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        }
    }
}

/// `[observability]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilitySettings {
    /// A tracing filter: `info`, `debug`, `pipeline=debug,rskafka=info`...
    pub log_level: String,
    /// Where `process` serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// One JSON object per log line.
    pub json_logs: bool,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            json_logs: false,
        }
    }
}

impl Settings {
    /// The layers from the files under `dir` (`config/` of the working
    /// directory normally) and the process environment.
    pub fn load() -> Result<Self, String> {
        let dir = std::env::var("PIPELINE_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        Self::load_from(Path::new(&dir), std::env::vars())
    }

    /// The layers from `dir` and the given environment.
    pub fn load_from(
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("KAFKA_")?;
                rest.contains("__").then(|| (rest.to_owned(), v))
            })
            .collect();
        let mut figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(dir.join("default.toml")))
            .merge(Toml::file(dir.join("local.toml")));
        // Not figment's `Env` (which reads the process environment): the
        // variables given, one dotted key at a time, so that tests can pass
        // their own.
        let shape = serde_json::to_value(Settings::default()).expect("serializable");
        for (k, v) in &vars {
            let key = k.to_ascii_lowercase().replace("__", ".");
            // Text settings (and unset optional ones) take the value as it
            // is; the others as TOML would read it.
            let text = key
                .split('.')
                .try_fold(&shape, |v, k| v.get(k))
                .is_none_or(|d| d.is_string() || d.is_null());
            let value = if text {
                v.as_str().into()
            } else {
                parse_env_value(v)
            };
            figment = figment.merge((key.as_str(), value));
        }
        let settings: Settings = figment.extract().map_err(|e| describe(&e, &vars))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("{key}: {why}"));
        if self.brokers().is_empty() {
            return bad("kafka.bootstrap_servers", "no broker address given");
        }
        if self.producer.events_topic.trim().is_empty() {
            return bad("producer.events_topic", "must not be empty");
        }
        if self.producer.delivery_timeout_ms == 0 {
            return bad("producer.delivery_timeout_ms", "must be at least 1");
        }
        if self.producer.buffer_memory_bytes < 1 << 20 {
            return bad("producer.buffer_memory_bytes", "must be at least 1048576");
        }
        if self.consumer.max_buffered_bytes < 1 << 20 {
            return bad("consumer.max_buffered_bytes", "must be at least 1048576");
        }
        if self.producer.partitions < 1 {
            return bad("producer.partitions", "must be at least 1");
        }
        if self.consumer.group_id.trim().is_empty() {
            return bad("consumer.group_id", "must not be empty");
        }
        if self.consumer.batch_size == 0 {
            return bad("consumer.batch_size", "must be at least 1");
        }
        if self.consumer.max_attempts == 0 {
            return bad("consumer.max_attempts", "must be at least 1");
        }
        if self.consumer.max_in_flight < self.consumer.batch_size {
            return bad(
                "consumer.max_in_flight",
                "must be at least consumer.batch_size",
            );
        }
        if self.consumer.session_timeout_ms < 1000 {
            return bad("consumer.session_timeout_ms", "must be at least 1000");
        }
        if self.consumer.transaction_timeout_ms == 0 {
            return bad("consumer.transaction_timeout_ms", "must be at least 1");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.observability.log_level) {
            return bad(
                "observability.log_level",
                &format!("not a log filter ({e})"),
            );
        }
        let k = &self.kafka;
        let sasl = matches!(
            k.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if sasl {
            if k.sasl_username.as_deref().unwrap_or("").is_empty() {
                return bad(
                    "kafka.sasl_username",
                    "needed with a SASL security protocol",
                );
            }
            if k.sasl_password.as_deref().unwrap_or("").is_empty() {
                return bad(
                    "kafka.sasl_password",
                    "needed with a SASL security protocol",
                );
            }
            let probe = Credentials::new("u", "p");
            if let Err(e) = SaslConfig::from_mechanism_name(&k.sasl_mechanism, probe) {
                return bad("kafka.sasl_mechanism", &e.to_string());
            }
        }
        if k.ssl_certificate_location.is_some() != k.ssl_key_location.is_some() {
            return bad(
                "kafka.ssl_key_location",
                "ssl_certificate_location and ssl_key_location go together",
            );
        }
        Ok(())
    }

    /// Checks the settings of an exactly-once worker (`process start`
    /// only: `ingest` and the other commands share the files but not the
    /// worker's transactional id).
    pub fn check_worker(&self) -> Result<(), String> {
        let no_id = self
            .consumer
            .transactional_id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty());
        if self.consumer.exactly_once && no_id {
            return Err(
                "consumer.transactional_id: needed with consumer.exactly_once: one per worker, \
                 the same across its restarts"
                    .into(),
            );
        }
        Ok(())
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> Vec<String> {
        self.kafka
            .bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `<events>.processed`.
    pub fn processed_topic(&self) -> String {
        format!("{}.processed", self.producer.events_topic)
    }

    /// `<events>.retry`.
    pub fn retry_topic(&self) -> String {
        format!("{}.retry", self.producer.events_topic)
    }

    /// `<events>.dlq`.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.producer.events_topic)
    }

    /// The delivery timeout.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.producer.delivery_timeout_ms)
    }

    /// A client of the configured brokers with the configured security.
    pub async fn client(&self, role: &str) -> Result<Client, String> {
        let k = &self.kafka;
        let tls = match k.security_protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => {
                let mut b = TlsConfig::builder();
                if let Some(ca) = &k.ssl_ca_location {
                    b = b.ca_file(ca);
                }
                if let (Some(cert), Some(key)) = (&k.ssl_certificate_location, &k.ssl_key_location)
                {
                    b = b.client_cert_files(cert, key);
                }
                Some(b.build().map_err(|e| format!("TLS setup: {e}"))?)
            }
            _ => None,
        };
        let mut builder = ClientBuilder::new(self.brokers())
            .client_id(format!("{}-{role}", k.client_id))
            .bootstrap_timeout(Duration::from_secs(15))
            .transport(tls.map_or(Transport::Tcp, Transport::Tls));
        if matches!(
            k.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            let credentials = Credentials::new(
                k.sasl_username.clone().unwrap_or_default(),
                k.sasl_password.clone().unwrap_or_default(),
            );
            let sasl = SaslConfig::from_mechanism_name(&k.sasl_mechanism, credentials)
                .map_err(|e| format!("kafka.sasl_mechanism: {e}"))?;
            builder = builder.sasl(sasl);
        }
        builder
            .build()
            .await
            .map_err(|e| format!("cannot reach Kafka at {}: {e}", k.bootstrap_servers))
    }
}

/// An environment value as TOML would read it (`100`, `false`, `1.5`),
/// else as a string.
fn parse_env_value(v: &str) -> figment::value::Value {
    let t = v.trim();
    if let Ok(b) = t.parse::<bool>() {
        return b.into();
    }
    if let Ok(n) = t.parse::<i64>() {
        return n.into();
    }
    if let Ok(f) = t.parse::<f64>() {
        if t.contains('.') {
            return f.into();
        }
    }
    v.into()
}

/// One line naming the key and where its value came from.
fn describe(e: &figment::Error, vars: &[(String, String)]) -> String {
    let key = if e.path.is_empty() {
        String::from("settings")
    } else {
        e.path.join(".")
    };
    let var = e.path.join("__").to_ascii_uppercase();
    let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
        _ if vars.iter().any(|(k, _)| k.eq_ignore_ascii_case(&var)) => {
            format!(" (from KAFKA_{var})")
        }
        _ => String::new(),
    };
    let kind = e.kind.to_string();
    let kind = kind.lines().next().unwrap_or_default();
    format!("{key}: {kind}{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Settings, String> {
        let dir = std::env::temp_dir().join(format!(
            "pipeline-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let r = Settings::load_from(&dir, env);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn defaults() {
        let s = load(&[], &[("KAFKA_BOOTSTRAP", "ignored:1")]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.brokers(), vec!["localhost:9092"]);
        assert_eq!(s.producer.events_topic, "events");
        assert_eq!(s.producer.delivery_timeout_ms, 120_000);
        assert_eq!(s.consumer.group_id, "kafka-rust-consumer");
        assert_eq!(s.consumer.batch_size, 100);
        assert_eq!(s.observability.log_level, "info");
        assert_eq!(s.observability.metrics_addr.to_string(), "127.0.0.1:9090");
        assert!(!s.observability.json_logs);
        assert_eq!(s.processed_topic(), "events.processed");
    }

    #[test]
    fn layers_in_order() {
        let s = load(
            &[
                (
                    "default.toml",
                    "[consumer]\nbatch_size = 10\ngroup_id = \"from-default\"\n[producer]\nevents_topic = \"t1\"\n",
                ),
                ("local.toml", "[consumer]\nbatch_size = 20\n"),
            ],
            &[
                ("KAFKA_CONSUMER__GROUP_ID", "from-env"),
                ("KAFKA_OBSERVABILITY__JSON_LOGS", "true"),
                ("KAFKA_KAFKA__BOOTSTRAP_SERVERS", "a:1, b:2"),
                ("KAFKA_KAFKA__SECURITY_PROTOCOL", "SSL"),
            ],
        )
        .unwrap();
        assert_eq!(s.consumer.batch_size, 20);
        assert_eq!(s.consumer.group_id, "from-env");
        assert_eq!(s.producer.events_topic, "t1");
        assert!(s.observability.json_logs);
        assert_eq!(s.brokers(), vec!["a:1", "b:2"]);
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::Ssl);
    }

    #[test]
    fn bad_values_name_the_key() {
        let s = load(&[], &[("KAFKA_CONSUMER__GROUP_ID", "123")]).unwrap();
        assert_eq!(s.consumer.group_id, "123");
        let e = load(&[], &[("KAFKA_CONSUMER__BATCH_SIZE", "lots")]).unwrap_err();
        assert!(e.starts_with("consumer.batch_size:"), "{e}");
        let e = load(&[], &[("KAFKA_CONSUMER__BATCH_SIZE", "0")]).unwrap_err();
        assert!(e.starts_with("consumer.batch_size:"), "{e}");
        let e = load(&[], &[("KAFKA_KAFKA__SECURITY_PROTOCOL", "TLS")]).unwrap_err();
        assert!(e.starts_with("kafka.security_protocol:"), "{e}");
        let e = load(&[], &[("KAFKA_OBSERVABILITY__METRICS_ADDR", "nowhere")]).unwrap_err();
        assert!(e.starts_with("observability.metrics_addr:"), "{e}");
        let e = load(&[], &[("KAFKA_CONSUMER__BATCH_SIZ", "5")]).unwrap_err();
        assert!(e.contains("batch_siz"), "{e}");
        let e = load(&[("local.toml", "[producer]\ntopic = \"x\"\n")], &[]).unwrap_err();
        assert!(e.contains("topic"), "{e}");
        let s = load(&[], &[("KAFKA_CONSUMER__EXACTLY_ONCE", "true")]).unwrap();
        let e = s.check_worker().unwrap_err();
        assert!(e.starts_with("consumer.transactional_id:"), "{e}");
        let s = load(
            &[],
            &[
                ("KAFKA_CONSUMER__EXACTLY_ONCE", "true"),
                ("KAFKA_CONSUMER__TRANSACTIONAL_ID", "events-worker-1"),
            ],
        )
        .unwrap();
        assert!(s.consumer.exactly_once);
        assert!(s.check_worker().is_ok());
        assert_eq!(
            s.consumer.transactional_id.as_deref(),
            Some("events-worker-1")
        );
        let e = load(&[], &[("KAFKA_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")]).unwrap_err();
        assert!(e.starts_with("kafka.sasl_username:"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
