//! Prometheus metrics of the server.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// `topic` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The topic (`_unknown_` for records to topics the cluster does not know).
    pub topic: String,
}

/// Labels of `http_requests_duration`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `push/sync` or `push/async`.
    pub method: String,
    /// The HTTP status code.
    pub code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Status codes the push handler answers with.
pub const CODES: [u16; 5] = [200, 400, 429, 500, 503];

/// The server's metric families.
pub struct Metrics {
    /// The registry they are in.
    pub registry: Registry,
    http: HistogramFamily<HttpLabels>,
    /// Per-(sync, code) handles of `http_requests_duration`.
    http_cached: [[Histogram; CODES.len()]; 2],
    queue: Family<TopicLabel, Gauge>,
    send_duration: HistogramFamily<TopicLabel>,
    sent: Family<TopicLabel, Counter>,
    errors: Family<TopicLabel, Counter>,
    ratelimited: Family<TopicLabel, Counter>,
    /// `wal_replayed_records`.
    pub wal_replayed: Counter,
    /// `wal_appended_records`.
    pub wal_appended: Counter,
    /// `wal_unreleased_records`.
    pub wal_unreleased: Gauge,
    /// `kprf_inflight_records` (the admission count).
    pub inflight: Gauge,
}

/// The per-topic handles, looked up once per topic.
#[derive(Debug, Clone)]
pub struct TopicMetrics {
    /// `kafka_internal_queue_size{topic}`.
    pub queue: Gauge,
    /// `kafka_message_send_duration{topic}`.
    pub send_duration: Histogram,
    /// `kafka_sent_messages{topic}`.
    pub sent: Counter,
    /// `kafka_errors_count{topic}`.
    pub errors: Counter,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http: HistogramFamily<HttpLabels> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "http_requests_duration",
            "Duration of /push requests in seconds, by method (push/sync, push/async) and status code",
            http.clone(),
        );
        let queue = Family::<TopicLabel, Gauge>::default();
        registry.register(
            "kafka_internal_queue_size",
            "Records accepted into the producer and not yet delivered or failed",
            queue.clone(),
        );
        let send_duration: HistogramFamily<TopicLabel> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "kafka_message_send_duration",
            "Seconds from a record's acceptance to its delivery (or failure)",
            send_duration.clone(),
        );
        let sent = Family::<TopicLabel, Counter>::default();
        registry.register(
            "kafka_sent_messages",
            "Records Kafka acknowledged",
            sent.clone(),
        );
        let errors = Family::<TopicLabel, Counter>::default();
        registry.register(
            "kafka_errors_count",
            "Records that failed: rejected by the producer or not delivered",
            errors.clone(),
        );
        let ratelimited = Family::<TopicLabel, Counter>::default();
        registry.register(
            "ratelimit_messages_count",
            "Records refused by the rate limit",
            ratelimited.clone(),
        );
        let wal_replayed = Counter::default();
        registry.register(
            "wal_replayed_records",
            "Write-ahead log entries re-sent at start",
            wal_replayed.clone(),
        );
        let wal_appended = Counter::default();
        registry.register(
            "wal_appended_records",
            "Records appended to the write-ahead log",
            wal_appended.clone(),
        );
        let wal_unreleased = Gauge::default();
        registry.register(
            "wal_unreleased_records",
            "Write-ahead log entries not yet acknowledged by Kafka",
            wal_unreleased.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "kprf_inflight_records",
            "Records accepted and not yet finished (admission count for queue_buffering_max_messages)",
            inflight.clone(),
        );
        let http_cached = [false, true].map(|sync| {
            CODES.map(|code| {
                http.get_or_create(&HttpLabels {
                    method: method_name(sync).into(),
                    code: code.to_string(),
                })
                .clone()
            })
        });
        Self {
            registry,
            http,
            http_cached,
            queue,
            send_duration,
            sent,
            errors,
            ratelimited,
            wal_replayed,
            wal_appended,
            wal_unreleased,
            inflight,
        }
    }

    /// The `http_requests_duration` handle of a request.
    pub fn http(&self, sync: bool, code: u16) -> Histogram {
        match CODES.iter().position(|&c| c == code) {
            Some(i) => self.http_cached[usize::from(sync)][i].clone(),
            None => self
                .http
                .get_or_create(&HttpLabels {
                    method: method_name(sync).into(),
                    code: code.to_string(),
                })
                .clone(),
        }
    }

    /// The handles of `topic`.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let l = TopicLabel {
            topic: topic.to_string(),
        };
        Arc::new(TopicMetrics {
            queue: self.queue.get_or_create(&l).clone(),
            send_duration: self.send_duration.get_or_create(&l).clone(),
            sent: self.sent.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
        })
    }

    /// Counts `n` rate-limited records of `topic`.
    pub fn ratelimited(&self, topic: &str, n: u64) {
        self.ratelimited
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n);
    }

    /// The registry as OpenMetrics text followed by `extra`.
    pub fn encode(&self, extra: impl FnOnce(&mut String)) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        extra(&mut out);
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label.
pub fn method_name(sync: bool) -> &'static str {
    if sync {
        "push/sync"
    } else {
        "push/async"
    }
}
