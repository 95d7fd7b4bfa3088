//! The service's settings, read from environment variables.
//!
//! Every variable has a default except `KAFKA_BROKERS` and `KAFKA_TOPIC`; a
//! value that does not parse is a [`ConfigError`] naming the variable (the
//! binary prints it on one line and exits 2).

use std::{fmt, net::IpAddr, time::Duration};

/// How datagrams are spread over the topic's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionStrategy {
    /// The producer's default partitioner chooses; no `partition` header.
    None,
    /// A uniformly random partition per datagram.
    Random,
    /// Partitions in turn, datagram by datagram.
    RoundRobin,
    /// One partition per peer (`ip:port`), peers assigned in turn.
    StickyRoundRobin,
}

/// Which datagrams pass the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStrategy {
    /// Every datagram is forwarded.
    OpenDoors,
    /// Every datagram is discarded.
    ClosedDoors,
    /// Each datagram is forwarded with probability 1/2.
    FlipCoin,
}

/// The Kafka compression codec (`KAFKA_COMPRESSION_CODEC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// librdkafka's name of the codec.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// All settings of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LISTEN_IP`.
    pub listen_ip: IpAddr,
    /// `LISTEN_PORT` (0: any free port; the chosen one is logged).
    pub listen_port: u16,
    /// `BUFFER_SIZE`: the largest datagram forwarded; longer ones are
    /// counted as truncated and dropped.
    pub buffer_size: usize,
    /// `STATS_INTERVAL`.
    pub stats_interval: Duration,
    /// `WORKER_THREADS`: the async runtime's threads (receiving has a thread
    /// of its own).
    pub worker_threads: usize,
    /// `CACHE_SIZE`: datagrams queued between receiving and producing.
    pub cache_size: usize,
    /// `KAFKA_PARTITION_STRATEGY`.
    pub partition_strategy: PartitionStrategy,
    /// `CHECKPOINT_STRATEGY`.
    pub checkpoint_strategy: CheckpointStrategy,
    /// `KAFKA_BROKERS`, comma separated `host:port`.
    pub brokers: Vec<String>,
    /// `KAFKA_TOPIC`.
    pub topic: String,
    /// `KAFKA_BATCH_NUM_MESSAGES`.
    pub batch_num_messages: usize,
    /// `KAFKA_QUEUE_BUFFERING_MAX_MS`.
    pub queue_buffering_max: Duration,
    /// `KAFKA_QUEUE_BUFFERING_MAX_MESSAGES`.
    pub queue_buffering_max_messages: usize,
    /// `KAFKA_QUEUE_BUFFERING_MAX_KBYTES`.
    pub queue_buffering_max_kbytes: usize,
    /// `KAFKA_COMPRESSION_CODEC`.
    pub compression: Codec,
    /// `KAFKA_REQUEST_REQUIRED_ACKS`: 0, 1 or -1 (`all`).
    pub required_acks: i16,
    /// `KAFKA_RETRIES`.
    pub retries: u32,
}

/// A variable whose value is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads one variable through `get`, with its default and parser.
struct Reader<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The variable's trimmed value, `None` when unset or empty.
    fn raw(&self, var: &str) -> Option<String> {
        (self.get)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        var: &'static str,
        default: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match (self.raw(var), default) {
            (Some(v), _) => parse(&v).map_err(|message| ConfigError {
                var,
                message: format!("{v:?}: {message}"),
            }),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(ConfigError {
                var,
                message: "must be set".into(),
            }),
        }
    }

    /// A whole number in `min..=max`.
    fn number(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        self.parse(var, Some(default), |v| {
            let n: u64 = v
                .parse()
                .map_err(|_| "not a non-negative whole number".to_owned())?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        })
    }
}

/// `WORKER_THREADS`' default: the machine's cores.
fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

impl Config {
    /// The settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// The settings from `get` (a variable's value, `None` if unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader { get };
        let listen_ip = r.parse("LISTEN_IP", Some([127, 0, 0, 1].into()), |v| {
            v.parse::<IpAddr>()
                .map_err(|_| "not an IP address".to_owned())
        })?;
        let partition_strategy = r.parse(
            "KAFKA_PARTITION_STRATEGY",
            Some(PartitionStrategy::None),
            |v| match v.to_ascii_uppercase().as_str() {
                "NONE" => Ok(PartitionStrategy::None),
                "RANDOM" => Ok(PartitionStrategy::Random),
                "ROUND_ROBIN" => Ok(PartitionStrategy::RoundRobin),
                "STICKY_ROUND_ROBIN" => Ok(PartitionStrategy::StickyRoundRobin),
                _ => Err("expected NONE, RANDOM, ROUND_ROBIN or STICKY_ROUND_ROBIN".into()),
            },
        )?;
        let checkpoint_strategy = r.parse(
            "CHECKPOINT_STRATEGY",
            Some(CheckpointStrategy::OpenDoors),
            |v| match v.to_ascii_uppercase().as_str() {
                "OPEN_DOORS" => Ok(CheckpointStrategy::OpenDoors),
                "CLOSED_DOORS" => Ok(CheckpointStrategy::ClosedDoors),
                "FLIP_COIN" => Ok(CheckpointStrategy::FlipCoin),
                _ => Err("expected OPEN_DOORS, CLOSED_DOORS or FLIP_COIN".into()),
            },
        )?;
        let compression = r.parse("KAFKA_COMPRESSION_CODEC", Some(Codec::Lz4), |v| {
            match v.to_ascii_lowercase().as_str() {
                "none" => Ok(Codec::None),
                "gzip" => Ok(Codec::Gzip),
                "snappy" => Ok(Codec::Snappy),
                "lz4" => Ok(Codec::Lz4),
                "zstd" => Ok(Codec::Zstd),
                _ => Err("expected none, gzip, snappy, lz4 or zstd".into()),
            }
        })?;
        let required_acks = r.parse("KAFKA_REQUEST_REQUIRED_ACKS", Some(1), |v| {
            match v.to_ascii_lowercase().as_str() {
                "0" => Ok(0),
                "1" => Ok(1),
                "-1" | "all" => Ok(-1),
                _ => Err("expected 0, 1, -1 or all".into()),
            }
        })?;
        let brokers = r.parse("KAFKA_BROKERS", None, |v| {
            let list: Vec<String> = v
                .split(',')
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty())
                .collect();
            if list.is_empty() {
                Err("no broker address".into())
            } else {
                Ok(list)
            }
        })?;
        let topic = r.parse("KAFKA_TOPIC", None, |v| {
            let ok = v.len() <= 249
                && v != "."
                && v != ".."
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if ok {
                Ok(v.to_owned())
            } else {
                Err("not a valid topic name ([a-zA-Z0-9._-], at most 249)".into())
            }
        })?;
        const MAX_U32: u64 = u32::MAX as u64;
        Ok(Self {
            listen_ip,
            listen_port: r.number("LISTEN_PORT", 8888, 0, 65535)? as u16,
            // 65507 is the largest UDP payload over IPv4.
            buffer_size: r.number("BUFFER_SIZE", 1024, 1, 65507)? as usize,
            stats_interval: Duration::from_secs(r.number("STATS_INTERVAL", 10, 1, 86_400)?),
            worker_threads: r.number("WORKER_THREADS", cores(), 1, 1024)? as usize,
            cache_size: r.number("CACHE_SIZE", 50_000, 1, MAX_U32)? as usize,
            partition_strategy,
            checkpoint_strategy,
            brokers,
            topic,
            // librdkafka's ranges.
            batch_num_messages: r.number("KAFKA_BATCH_NUM_MESSAGES", 10_000, 1, 1_000_000)?
                as usize,
            queue_buffering_max: Duration::from_millis(r.number(
                "KAFKA_QUEUE_BUFFERING_MAX_MS",
                5,
                0,
                900_000,
            )?),
            queue_buffering_max_messages: r.number(
                "KAFKA_QUEUE_BUFFERING_MAX_MESSAGES",
                100_000,
                1,
                2_147_483_647,
            )? as usize,
            queue_buffering_max_kbytes: r.number(
                "KAFKA_QUEUE_BUFFERING_MAX_KBYTES",
                1_048_576,
                1,
                2_147_483_647,
            )? as usize,
            compression,
            required_acks,
            retries: r.number("KAFKA_RETRIES", 1, 0, 2_147_483_647)? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = [("KAFKA_BROKERS", "b:9092"), ("KAFKA_TOPIC", "t")]
            .iter()
            .chain(vars)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.listen_ip.to_string(), "127.0.0.1");
        assert_eq!(c.listen_port, 8888);
        assert_eq!(c.buffer_size, 1024);
        assert_eq!(c.stats_interval, Duration::from_secs(10));
        assert_eq!(c.cache_size, 50_000);
        assert_eq!(c.partition_strategy, PartitionStrategy::None);
        assert_eq!(c.checkpoint_strategy, CheckpointStrategy::OpenDoors);
        assert_eq!(c.batch_num_messages, 10_000);
        assert_eq!(c.queue_buffering_max, Duration::from_millis(5));
        assert_eq!(c.queue_buffering_max_messages, 100_000);
        assert_eq!(c.queue_buffering_max_kbytes, 1_048_576);
        assert_eq!(c.compression, Codec::Lz4);
        assert_eq!(c.required_acks, 1);
        assert_eq!(c.retries, 1);
        assert_eq!(c.brokers, vec!["b:9092".to_owned()]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("LISTEN_IP", "localhost:1"),
            ("LISTEN_PORT", "70000"),
            ("BUFFER_SIZE", "0"),
            ("STATS_INTERVAL", "ten"),
            ("WORKER_THREADS", "-1"),
            ("CACHE_SIZE", "1k"),
            ("KAFKA_PARTITION_STRATEGY", "STICKY"),
            ("CHECKPOINT_STRATEGY", "AJAR"),
            ("KAFKA_TOPIC", "a b"),
            ("KAFKA_BROKERS", ","),
            ("KAFKA_BATCH_NUM_MESSAGES", "0"),
            ("KAFKA_QUEUE_BUFFERING_MAX_MS", "x"),
            ("KAFKA_QUEUE_BUFFERING_MAX_MESSAGES", "0"),
            ("KAFKA_QUEUE_BUFFERING_MAX_KBYTES", "1.5"),
            ("KAFKA_COMPRESSION_CODEC", "brotli"),
            ("KAFKA_REQUEST_REQUIRED_ACKS", "2"),
            ("KAFKA_RETRIES", "many"),
        ] {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().contains(var), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn missing_required() {
        let err =
            Config::from_lookup(|k| (k == "KAFKA_TOPIC").then(|| "t".to_owned())).unwrap_err();
        assert_eq!(err.var, "KAFKA_BROKERS");
    }

    #[test]
    fn names_are_case_insensitive() {
        let c = with(&[
            ("KAFKA_PARTITION_STRATEGY", "sticky_round_robin"),
            ("CHECKPOINT_STRATEGY", "flip_coin"),
            ("KAFKA_REQUEST_REQUIRED_ACKS", "all"),
        ])
        .unwrap();
        assert_eq!(c.partition_strategy, PartitionStrategy::StickyRoundRobin);
        assert_eq!(c.checkpoint_strategy, CheckpointStrategy::FlipCoin);
        assert_eq!(c.required_acks, -1);
    }
}
