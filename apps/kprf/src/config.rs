//! Configuration: a YAML file overlaid with `KPRF_*` environment variables.
//!
//! `KPRF_KAFKA__BROKERS=a:9092,b:9092` sets `kafka.brokers`: the prefix is
//! dropped, `__` separates the levels and names are lower-cased. A value from
//! the environment replaces the file's. Unknown keys and bad values are
//! errors that name the key (and the variable, for one from the environment).

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The environment prefix of configuration keys.
pub const ENV_PREFIX: &str = "KPRF_";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka producer settings.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// HTTP listeners.
    #[serde(default)]
    pub http: HttpConfig,
    /// Where the log goes.
    #[serde(default = "default_output_file")]
    pub output_file: String,
    /// Per-topic rate limits.
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
    /// Write-ahead log of asynchronous pushes.
    #[serde(default)]
    pub wal: WalConfig,
}

/// `kafka.*`, with librdkafka's meaning where it has one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// SASL user name (SASL is used when set).
    pub user: Option<String>,
    /// SASL password.
    pub password: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: String,
    /// Largest record (key + value + headers) accepted, in bytes.
    pub message_max_bytes: usize,
    /// Records accepted but not yet delivered, at most (kprf's admission limit).
    pub queue_buffering_max_messages: usize,
    /// Linger of a batch.
    pub queue_buffering_max_ms: u64,
    /// Producer buffer memory in KiB.
    pub queue_buffering_max_kbytes: u64,
    /// Kept for compatibility; see the README for its mapping.
    pub retries: u32,
    /// Delivery timeout of a record (accept -> acknowledgement).
    pub message_timeout_ms: u64,
    /// Timeout of one request to a broker.
    pub request_timeout_ms: u64,
    /// -1 (all), 0 or 1.
    pub request_required_acks: RequiredAcks,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            user: None,
            password: None,
            sasl_mechanism: "PLAIN".into(),
            message_max_bytes: 1024 * 1024,
            queue_buffering_max_messages: 100_000,
            queue_buffering_max_ms: 10,
            queue_buffering_max_kbytes: 1_048_576,
            retries: 3,
            message_timeout_ms: 2000,
            request_timeout_ms: 30_000,
            request_required_acks: RequiredAcks::All,
        }
    }
}

/// `kafka.request_required_acks`: `-1`/`all`, `1` or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredAcks {
    /// -1: all in-sync replicas.
    All,
    /// 1: the leader.
    Leader,
    /// 0: no acknowledgement.
    None,
}

impl<'de> Deserialize<'de> for RequiredAcks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        let bad = |v: &dyn fmt::Display| {
            serde::de::Error::custom(format!("invalid acks {v}: want -1 (all), 0 or 1"))
        };
        match Raw::deserialize(d)? {
            Raw::Int(-1) => Ok(Self::All),
            Raw::Int(1) => Ok(Self::Leader),
            Raw::Int(0) => Ok(Self::None),
            Raw::Str(s) if s.eq_ignore_ascii_case("all") || s == "-1" => Ok(Self::All),
            Raw::Str(s) if s == "1" => Ok(Self::Leader),
            Raw::Str(s) if s == "0" => Ok(Self::None),
            Raw::Int(i) => Err(bad(&i)),
            Raw::Str(s) => Err(bad(&format!("{s:?}"))),
        }
    }
}

/// `http.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address both listeners bind to.
    pub host: String,
    /// Port of `/push`.
    pub port: u16,
    /// Port of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 4242,
            metrics_port: 8088,
        }
    }
}

/// `ratelimit.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether the rules apply.
    pub enabled: bool,
    /// One rule per topic.
    pub rules: Vec<RateLimitRule>,
}

/// A topic's limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// The topic.
    pub topic_name: String,
    /// Records per minute (a token bucket of this size, refilled evenly).
    pub max_requests_per_minute: u32,
}

/// `wal.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory of the log; no write-ahead log when unset.
    pub dir: Option<String>,
    /// `always` or `interval_ms`.
    pub fsync: FsyncPolicy,
    /// With `fsync: interval_ms`, the period of the fsync.
    pub fsync_interval_ms: u64,
    /// A segment is closed past this size.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            dir: None,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 50,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// When the write-ahead log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every 200 (group commit across concurrent requests).
    Always,
    /// Every `wal.fsync_interval_ms`; a crash may lose that much.
    IntervalMs,
}

fn default_output_file() -> String {
    "/dev/stdout".into()
}

/// A configuration error, shown as one line.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn one_line(s: impl fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keys whose environment value is taken as a string as it is.
const STRING_KEYS: &[&str] = &[
    "kafka.user",
    "kafka.password",
    "kafka.sasl_mechanism",
    "output_file",
    "http.host",
    "wal.dir",
    "wal.fsync",
];

impl Config {
    /// Loads `path` (if given) and overlays the `KPRF_*` variables of `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("config {}: {e}", p.display())))?;
                match serde_yaml::from_str::<Value>(&text)
                    .map_err(|e| ConfigError(one_line(format!("config {}: {e}", p.display()))))?
                {
                    Value::Null => Value::Mapping(Mapping::new()),
                    v @ Value::Mapping(_) => v,
                    _ => {
                        return Err(ConfigError(format!(
                            "config {}: the top level must be a mapping",
                            p.display()
                        )))
                    }
                }
            }
            None => Value::Mapping(Mapping::new()),
        };
        // dotted key -> variable name, to name the variable in errors
        let mut from_env = BTreeMap::new();
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, raw) in vars {
            let key = var[ENV_PREFIX.len()..].to_ascii_lowercase();
            let parts: Vec<&str> = key.split("__").collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(ConfigError(format!("{var}: not a configuration key")));
            }
            let dotted = parts.join(".");
            let value = env_value(&dotted, &raw)
                .map_err(|e| ConfigError(one_line(format!("{var} ({dotted}): {e}"))))?;
            set_path(&mut root, &parts, value)
                .map_err(|e| ConfigError(format!("{var} ({dotted}): {e}")))?;
            from_env.insert(dotted, var);
        }
        let cfg: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let path = e.path().to_string();
            let origin = from_env
                .iter()
                .find(|(k, _)| {
                    path == **k
                        || path.starts_with(&format!("{k}."))
                        || path.starts_with(&format!("{k}["))
                })
                .map(|(_, v)| format!(" (from {v})"))
                .unwrap_or_default();
            ConfigError(one_line(format!(
                "config key {path}{origin}: {}",
                e.inner()
            )))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| Err(ConfigError(format!("config key {key}: {msg}")));
        let k = &self.kafka;
        if k.brokers.is_empty() || k.brokers.iter().any(|b| b.trim().is_empty()) {
            return bad(
                "kafka.brokers",
                "at least one broker (host:port) is required",
            );
        }
        if k.user.is_some() != k.password.is_some() {
            return bad("kafka.user", "kafka.user and kafka.password go together");
        }
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
            .contains(&k.sasl_mechanism.to_ascii_uppercase().as_str())
        {
            return bad(
                "kafka.sasl_mechanism",
                &format!(
                    "unknown mechanism {:?}: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    k.sasl_mechanism
                ),
            );
        }
        if k.message_max_bytes == 0 {
            return bad("kafka.message_max_bytes", "must be positive");
        }
        if k.queue_buffering_max_messages == 0 {
            return bad("kafka.queue_buffering_max_messages", "must be positive");
        }
        if k.queue_buffering_max_kbytes == 0 {
            return bad("kafka.queue_buffering_max_kbytes", "must be positive");
        }
        if k.message_timeout_ms <= k.queue_buffering_max_ms {
            return bad(
                "kafka.message_timeout_ms",
                "must be larger than kafka.queue_buffering_max_ms",
            );
        }
        if k.request_timeout_ms == 0 {
            return bad("kafka.request_timeout_ms", "must be positive");
        }
        if self.http.port == self.http.metrics_port && self.http.port != 0 {
            return bad("http.metrics_port", "must differ from http.port");
        }
        if self.output_file.is_empty() {
            return bad("output_file", "must not be empty");
        }
        for (i, r) in self.ratelimit.rules.iter().enumerate() {
            if r.max_requests_per_minute == 0 {
                return bad(
                    &format!("ratelimit.rules[{i}].max_requests_per_minute"),
                    "must be positive",
                );
            }
        }
        if self.wal.fsync_interval_ms == 0 {
            return bad("wal.fsync_interval_ms", "must be positive");
        }
        if self.wal.segment_bytes < 4096 {
            return bad("wal.segment_bytes", "must be at least 4096");
        }
        Ok(())
    }

    /// The linger of batches.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.kafka.queue_buffering_max_ms)
    }
}

/// An environment value as YAML: lists split at commas, strings as they are.
fn env_value(dotted: &str, raw: &str) -> Result<Value, serde_yaml::Error> {
    if dotted == "kafka.brokers" {
        return Ok(Value::Sequence(
            raw.split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ));
    }
    if STRING_KEYS.contains(&dotted) {
        return Ok(Value::String(raw.to_string()));
    }
    serde_yaml::from_str(raw)
}

fn set_path(root: &mut Value, parts: &[&str], value: Value) -> Result<(), String> {
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let map = match cur {
            Value::Mapping(m) => m,
            Value::Null => {
                *cur = Value::Mapping(Mapping::new());
                match cur {
                    Value::Mapping(m) => m,
                    _ => unreachable!(),
                }
            }
            _ => return Err(format!("{} is not a section", parts[..i].join("."))),
        };
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        cur = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "kprf-cfg-{}-{}",
            std::process::id(),
            yaml.len() + env.len() * 1000
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{:x}.yaml", crc32fast::hash(yaml.as_bytes())));
        std::fs::write(&p, yaml).unwrap();
        Config::load(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_and_file() {
        let c = load("kafka:\n  brokers: [\"a:9092\"]\n", &[]).unwrap();
        assert_eq!(c.kafka.brokers, vec!["a:9092"]);
        assert_eq!(c.kafka.message_max_bytes, 1 << 20);
        assert_eq!(c.kafka.queue_buffering_max_messages, 100_000);
        assert_eq!(c.kafka.queue_buffering_max_ms, 10);
        assert_eq!(c.kafka.queue_buffering_max_kbytes, 1_048_576);
        assert_eq!(c.kafka.retries, 3);
        assert_eq!(c.kafka.message_timeout_ms, 2000);
        assert_eq!(c.kafka.request_timeout_ms, 30_000);
        assert_eq!(c.kafka.request_required_acks, RequiredAcks::All);
        assert_eq!(c.http.port, 4242);
        assert_eq!(c.http.metrics_port, 8088);
        assert_eq!(c.output_file, "/dev/stdout");
        assert!(!c.ratelimit.enabled);
        assert!(c.wal.dir.is_none());
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "kafka:\n  brokers: [x:1]\n  user: u\n  password: p\nhttp:\n  port: 1\nratelimit:\n  enabled: true\n  rules:\n    - topic_name: t\n      max_requests_per_minute: 5\n",
            &[
                ("KPRF_KAFKA__BROKERS", "a:9092, b:9092"),
                ("KPRF_HTTP__PORT", "5555"),
                ("KPRF_KAFKA__PASSWORD", "123"),
                ("KPRF_KAFKA__REQUEST_REQUIRED_ACKS", "1"),
                ("KPRF_WAL__DIR", "/tmp/w"),
                ("KPRF_WAL__FSYNC", "interval_ms"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092"]);
        assert_eq!(c.http.port, 5555);
        assert_eq!(c.kafka.password.as_deref(), Some("123"));
        assert_eq!(c.kafka.request_required_acks, RequiredAcks::Leader);
        assert_eq!(c.ratelimit.rules[0].max_requests_per_minute, 5);
        assert_eq!(c.wal.dir.as_deref(), Some("/tmp/w"));
        assert_eq!(c.wal.fsync, FsyncPolicy::IntervalMs);
    }

    #[test]
    fn env_alone_is_enough() {
        let c = Config::load(
            None,
            [("KPRF_KAFKA__BROKERS".to_string(), "h:1".to_string())],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, vec!["h:1"]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("kafka:\n  brokers: [a:1]\n  bogus: 1\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("bogus"), "{e}");
        assert!(!e.contains('\n'));
        let e = load("kafka:\n  brokers: [a:1]\nhttp:\n  port: many\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("http.port"), "{e}");
        let e = load(
            "kafka:\n  brokers: [a:1]\n",
            &[("KPRF_HTTP__PORT", "99999")],
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("http.port") && e.contains("KPRF_HTTP__PORT"),
            "{e}"
        );
        let e = load("kafka:\n  brokers: [a:1]\n", &[("KPRF_NOPE", "1")])
            .unwrap_err()
            .0;
        assert!(e.contains("nope"), "{e}");
        let e = load(
            "kafka:\n  brokers: [a:1]\n  request_required_acks: 2\n",
            &[],
        )
        .unwrap_err()
        .0;
        assert!(e.contains("request_required_acks"), "{e}");
        let e = load("kafka:\n  brokers: [a:1]\n  sasl_mechanism: GSSAPI\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("sasl_mechanism"), "{e}");
        let e = load("kafka:\n  brokers: [a:1]\n  user: u\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("kafka.user"), "{e}");
        let e = load("http:\n  port: 1\n", &[]).unwrap_err().0;
        assert!(e.contains("kafka.brokers"), "{e}");
        let e = load("kafka:\n  brokers: [a:1]\nwal:\n  fsync: sometimes\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("wal.fsync"), "{e}");
    }

    #[test]
    fn sasl_mechanisms_parse() {
        for m in ["PLAIN", "scram-sha-256", "SCRAM-SHA-512"] {
            let c = load(
                &format!(
                    "kafka:\n  brokers: [a:1]\n  user: u\n  password: p\n  sasl_mechanism: {m}\n"
                ),
                &[],
            )
            .unwrap();
            assert_eq!(c.kafka.sasl_mechanism, m);
        }
    }
}
