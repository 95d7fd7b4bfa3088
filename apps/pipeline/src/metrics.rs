//! Prometheus metrics, the `/metrics`, `/healthz` and `/readyz` endpoints,
//! logging and latency percentiles.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Seconds buckets from 1 ms to 10 s.
const BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    /// Records acknowledged by the broker (any topic).
    pub produced: Counter,
    /// Records that failed to be produced.
    pub produce_errors: Counter,
    /// Records taken from the consumer.
    pub consumed: Counter,
    /// Events written to `.processed`.
    pub processed: Counter,
    /// Events written to `.retry`.
    pub retried: Counter,
    /// Events written to `.dlq`.
    pub dead_lettered: Counter,
    /// Offset commits that failed.
    pub commit_errors: Counter,
    /// Send → acknowledgement, per record.
    pub producer_duration: Histogram,
    /// Validation and handler time, per record.
    pub processing_duration: Histogram,
    /// Event timestamp → acknowledged in `.processed`.
    pub end_to_end: Histogram,
    /// Records in flight (taken from the consumer, not yet finished).
    pub in_flight: Gauge,
    /// Partitions assigned to this member.
    pub assigned_partitions: Gauge,
    /// Exact end-to-end percentiles (milliseconds), for the final summary.
    pub e2e_ms: Mutex<Percentiles>,
    /// The member has an assignment.
    pub assigned: AtomicBool,
    /// The producer reached the brokers and its last delivery succeeded.
    pub producer_ok: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Histogram::new(BUCKETS);
        let mut m = Self {
            registry: Registry::default(),
            produced: Counter::default(),
            produce_errors: Counter::default(),
            consumed: Counter::default(),
            processed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            commit_errors: Counter::default(),
            producer_duration: histogram(),
            processing_duration: histogram(),
            end_to_end: histogram(),
            in_flight: Gauge::default(),
            assigned_partitions: Gauge::default(),
            e2e_ms: Mutex::new(Percentiles::default()),
            assigned: AtomicBool::new(false),
            producer_ok: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        r.register(
            "kafka_producer_messages_produced",
            "Records acknowledged by the broker",
            m.produced.clone(),
        );
        r.register(
            "kafka_producer_errors",
            "Records whose delivery failed",
            m.produce_errors.clone(),
        );
        r.register(
            "kafka_consumer_messages_consumed",
            "Records taken from the consumer",
            m.consumed.clone(),
        );
        r.register(
            "kafka_events_processed",
            "Events written to the .processed topic",
            m.processed.clone(),
        );
        r.register(
            "kafka_events_retried",
            "Events written to the .retry topic",
            m.retried.clone(),
        );
        r.register(
            "kafka_events_dead_lettered",
            "Events written to the .dlq topic",
            m.dead_lettered.clone(),
        );
        r.register(
            "kafka_consumer_commit_errors",
            "Offset commits that failed",
            m.commit_errors.clone(),
        );
        r.register(
            "kafka_producer_duration_seconds",
            "Time from send to acknowledgement per record",
            m.producer_duration.clone(),
        );
        r.register(
            "kafka_consumer_processing_duration_seconds",
            "Validation and handler time per record",
            m.processing_duration.clone(),
        );
        r.register(
            "kafka_end_to_end_latency_seconds",
            "Event timestamp to acknowledged write in .processed",
            m.end_to_end.clone(),
        );
        r.register(
            "kafka_consumer_in_flight_records",
            "Records being handled or written",
            m.in_flight.clone(),
        );
        r.register(
            "kafka_consumer_assigned_partitions",
            "Partitions assigned to this member",
            m.assigned_partitions.clone(),
        );
        m
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Ready: an assignment and a working producer.
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.producer_ok.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process
/// ends; returns the address bound (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, String> {
    use axum::{http::StatusCode, routing::get, Router};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("observability.metrics_addr: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let m = metrics.clone();
    let r = metrics;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = r.clone();
                async move {
                    if r.ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint failed: {e}");
        }
    });
    Ok(bound)
}

/// Plain GET of `http://addr/path` (HTTP/1.0, no keep-alive): the status
/// code and the body. For `process metrics` and the tests.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))?;
    Ok((code, body.to_owned()))
}

/// Logs to stdout with the filter `level` (`RUST_LOG` wins when set), as
/// JSON lines if `json`.
pub fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
}

/// Latencies in milliseconds (1 ms to 1 h, 3 significant digits).
pub struct Percentiles(hdrhistogram::Histogram<u64>);

impl Default for Percentiles {
    fn default() -> Self {
        Self(hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("bounds"))
    }
}

impl Percentiles {
    /// Adds one latency (clamped into range).
    pub fn record(&mut self, ms: u64) {
        self.0.saturating_record(ms.max(1));
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds, 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// `p50=…ms p99=…ms max=…ms (n=…)`.
    pub fn summary(&self) -> String {
        format!(
            "p50={}ms p99={}ms max={}ms (n={})",
            self.quantile(0.5),
            self.quantile(0.99),
            self.0.max(),
            self.count()
        )
    }
}

pub use services::shutdown_signal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::default();
        m.produced.inc();
        m.end_to_end.observe(0.004);
        let text = m.render();
        for name in [
            "kafka_producer_messages_produced_total 1",
            "kafka_consumer_messages_consumed_total 0",
            "kafka_producer_duration_seconds_bucket",
            "kafka_consumer_processing_duration_seconds_count",
            "kafka_events_retried_total",
            "kafka_events_dead_lettered_total",
            "kafka_end_to_end_latency_seconds_count 1",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(!m.ready());
    }

    #[test]
    fn percentiles() {
        let mut p = Percentiles::default();
        assert_eq!(p.quantile(0.99), 0);
        for ms in 1..=100 {
            p.record(ms);
        }
        assert_eq!(p.quantile(0.5), 50);
        assert_eq!(p.quantile(0.99), 99);
    }
}
