//! What the `sender` and `receiver` services share: their settings from the
//! environment, the message format, logging, signals and latency figures.

use std::{fmt::Display, str::FromStr, time::Duration};

use rskafka::client::{Client, ClientBuilder};
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Exit code for bad settings.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when Kafka cannot be used.
pub const EXIT_FAILURE: i32 = 1;

/// The settings both services read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `KAFKA_BROKERS`: comma-separated `host:port` list.
    pub brokers: Vec<String>,
    /// `KAFKA_TOPIC`.
    pub topic: String,
    /// `SEND_INTERVAL_MS`: the sender's pace.
    pub send_interval: Duration,
    /// `MESSAGE_TIMEOUT_MS`: how long a message may take to be acknowledged.
    pub message_timeout: Duration,
    /// `CONSUMER_GROUP`.
    pub group: String,
    /// `PRODUCER_ID`: carried in each message when set.
    pub producer_id: Option<String>,
    /// `SUMMARY_INTERVAL_MS`: how often both log a summary.
    pub summary_interval: Duration,
}

impl Settings {
    /// Reads the settings; the error names the variable and its bad value.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in
    /// tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let text = |name: &str, default: &str| {
            let value = lookup(name).unwrap_or_else(|| default.to_owned());
            let value = value.trim().to_owned();
            if value.is_empty() {
                return Err(format!("{name}: must not be empty"));
            }
            Ok(value)
        };
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            let ms: u64 = number(name, lookup(name), default)?;
            if ms == 0 {
                return Err(format!("{name}: must be at least 1 (milliseconds)"));
            }
            Ok(Duration::from_millis(ms))
        };
        let brokers: Vec<String> = text("KAFKA_BROKERS", "localhost:9092")?
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect();
        if brokers.is_empty() {
            return Err("KAFKA_BROKERS: no broker address given".into());
        }
        Ok(Self {
            brokers,
            topic: text("KAFKA_TOPIC", "rust-messages")?,
            send_interval: millis("SEND_INTERVAL_MS", 100)?,
            message_timeout: millis("MESSAGE_TIMEOUT_MS", 5000)?,
            group: text("CONSUMER_GROUP", "rust-consumer-group")?,
            producer_id: lookup("PRODUCER_ID")
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
            summary_interval: millis("SUMMARY_INTERVAL_MS", 10_000)?,
        })
    }

    /// A client of the configured brokers, failing within the message
    /// timeout when none answers.
    pub async fn client(&self, client_id: &str) -> Result<Client, String> {
        ClientBuilder::new(self.brokers.clone())
            .client_id(client_id)
            .bootstrap_timeout(self.message_timeout)
            .build()
            .await
            .map_err(|e| format!("cannot reach Kafka at {}: {e}", self.brokers.join(",")))
    }
}

fn number<T: FromStr>(name: &str, value: Option<String>, default: T) -> Result<T, String>
where
    T::Err: Display,
{
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| format!("{name}: {v:?} is not a valid number ({e})")),
    }
}

/// The JSON message the sender writes and the receiver reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// A fresh UUID v4.
    pub id: uuid::Uuid,
    /// `Hello from Rust sender! Message #N`.
    pub content: String,
    /// When it was made: ISO 8601 UTC with milliseconds and `Z`.
    pub timestamp: String,
    /// N, counting from 1 per sender.
    pub counter: u64,
    /// The sender's `PRODUCER_ID`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
}

impl Message {
    /// Message number `counter`, stamped `now`.
    pub fn new(counter: u64, producer_id: Option<String>, now: OffsetDateTime) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            content: format!("Hello from Rust sender! Message #{counter}"),
            timestamp: iso_millis(now),
            counter,
            producer_id,
        }
    }

    /// Milliseconds from the message's timestamp to `now` (0 if the clocks
    /// disagree), `None` if the timestamp does not parse.
    pub fn latency_ms(&self, now: OffsetDateTime) -> Option<u64> {
        let sent = OffsetDateTime::parse(&self.timestamp, &Rfc3339).ok()?;
        Some(u64::try_from((now - sent).whole_milliseconds()).unwrap_or(0))
    }
}

/// `t` as `2026-12-05T17:02:23.123Z`.
pub fn iso_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Latencies of one summary interval, in milliseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Adds one latency.
    pub fn record(&mut self, ms: u64) {
        self.0.push(ms);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// p50 and p99 of what was recorded since the last call, and a reset.
    pub fn take_percentiles(&mut self) -> Option<(u64, u64)> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = std::mem::take(&mut self.0);
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.50), at(0.99)))
    }
}

/// A service's `main`: reads the settings (a bad one: a one-line error,
/// exit 2), sets up logging, runs `service` and exits 0, or 1 after logging
/// its error.
pub async fn main<F, Fut>(service: F) -> !
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(EXIT_USAGE)
    });
    init_logging();
    std::process::exit(match service(settings).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            EXIT_FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.brokers, vec!["localhost:9092"]);
        assert_eq!(s.topic, "rust-messages");
        assert_eq!(s.send_interval, Duration::from_millis(100));
        assert_eq!(s.message_timeout, Duration::from_millis(5000));
        assert_eq!(s.group, "rust-consumer-group");
        assert_eq!(s.producer_id, None);
        let s = settings(&[
            ("KAFKA_BROKERS", "a:1, b:2"),
            ("SEND_INTERVAL_MS", "7"),
            ("PRODUCER_ID", "s1"),
        ])
        .unwrap();
        assert_eq!(s.brokers, vec!["a:1", "b:2"]);
        assert_eq!(s.send_interval, Duration::from_millis(7));
        assert_eq!(s.producer_id.as_deref(), Some("s1"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = settings(&[("SEND_INTERVAL_MS", "fast")]).unwrap_err();
        assert!(e.starts_with("SEND_INTERVAL_MS:"), "{e}");
        let e = settings(&[("MESSAGE_TIMEOUT_MS", "0")]).unwrap_err();
        assert!(e.starts_with("MESSAGE_TIMEOUT_MS:"), "{e}");
        let e = settings(&[("KAFKA_BROKERS", " , ")]).unwrap_err();
        assert!(e.starts_with("KAFKA_BROKERS:"), "{e}");
        let e = settings(&[("KAFKA_TOPIC", " ")]).unwrap_err();
        assert!(e.starts_with("KAFKA_TOPIC:"), "{e}");
    }

    #[test]
    fn message_format() {
        let t = time::macros::datetime!(2026-12-05 17:02:23.045 UTC);
        let m = Message::new(3, None, t);
        assert_eq!(m.content, "Hello from Rust sender! Message #3");
        assert_eq!(m.timestamp, "2026-12-05T17:02:23.045Z");
        assert_eq!(m.id.get_version_num(), 4);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["counter"], 3);
        assert!(json.get("producer_id").is_none());
        let later = t + time::Duration::milliseconds(12);
        assert_eq!(m.latency_ms(later), Some(12));
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        assert_eq!(l.take_percentiles(), None);
        for ms in 1..=100 {
            l.record(ms);
        }
        assert_eq!(l.take_percentiles(), Some((51, 99)));
        assert!(l.is_empty());
    }
}
