//! The rskafka backend and the mapping of the `kafka.*` settings.

use std::{
    fmt::Write as _,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use rskafka::{
    client::security::{Credentials, SaslConfig},
    client::{
        producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerMetrics},
        BackoffConfig, BrokerStats, Client, ClientBuilder,
    },
    record::Record,
};

use crate::{
    backend::{Backend, OutRecord},
    config::{Config, RequiredAcks},
};

/// The client id kprf announces to brokers.
pub const CLIENT_ID: &str = "kprf";

/// Room for a record's framing and the request around it, above
/// `message_max_bytes` (which kprf checks on the record's own bytes).
const REQUEST_OVERHEAD: usize = 16 * 1024;

/// Connects to the cluster: the brokers must answer.
pub async fn connect(cfg: &Config) -> Result<Client, String> {
    let k = &cfg.kafka;
    let mut b = ClientBuilder::new(k.brokers.clone())
        .client_id(CLIENT_ID)
        .request_timeout(Duration::from_millis(k.request_timeout_ms));
    if let (Some(user), Some(password)) = (&k.user, &k.password) {
        let sasl = SaslConfig::from_mechanism_name(
            &k.sasl_mechanism,
            Credentials::new(user.clone(), password.clone()),
        )
        .map_err(|e| e.to_string())?;
        b = b.sasl(sasl);
    }
    b.build().await.map_err(|e| e.to_string())
}

/// The producer settings for `cfg` (see the README's table).
///
/// The library bounds a batch's life by `delivery_timeout` and requires it
/// to be at least linger + request timeout, so the producer's request
/// timeout is `min(request_timeout_ms, message_timeout_ms - linger)`.
/// `retries` is the producer's: retriable failures are sent again at most
/// that often (backoff 100 ms doubling to 1 s, as librdkafka's
/// retry.backoff.ms and retry.backoff.max.ms), within `message_timeout_ms`.
pub fn producer_config(cfg: &Config) -> ProducerConfig {
    let k = &cfg.kafka;
    let linger = cfg.linger();
    let delivery = Duration::from_millis(k.message_timeout_ms);
    let request = Duration::from_millis(k.request_timeout_ms).min(delivery - linger);
    ProducerConfig::default()
        .linger(linger)
        .batch_size(k.message_max_bytes.min(1_000_000))
        .max_request_size(k.message_max_bytes + REQUEST_OVERHEAD)
        .buffer_memory(
            usize::try_from(k.queue_buffering_max_kbytes.saturating_mul(1024))
                .unwrap_or(usize::MAX),
        )
        .acks(match k.request_required_acks {
            RequiredAcks::All => Acks::All,
            RequiredAcks::Leader => Acks::Leader,
            RequiredAcks::None => Acks::None,
        })
        .delivery_timeout(delivery)
        .request_timeout(request)
        .retries(k.retries)
        .retry_backoff(
            BackoffConfig::default()
                .initial(Duration::from_millis(100))
                .max(Duration::from_secs(1)),
        )
}

/// kprf's backend: an rskafka [`Producer`].
#[derive(Debug)]
pub struct KafkaBackend {
    client: Client,
    producer: Producer,
}

impl KafkaBackend {
    /// A producer on `client` configured from `cfg`.
    pub fn new(client: Client, cfg: &Config) -> Result<Self, String> {
        let producer = client
            .producer(producer_config(cfg))
            .map_err(|e| e.to_string())?;
        Ok(Self { client, producer })
    }
}

/// The delivery of a record through rskafka.
#[derive(Debug)]
pub struct KafkaDelivery(DeliveryFuture);

impl Future for KafkaDelivery {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    }
}

impl Backend for KafkaBackend {
    type Delivery = KafkaDelivery;

    async fn partitions(&self, topic: &str) -> Result<Option<i32>, String> {
        let md = self.client.metadata().await.map_err(|e| e.to_string())?;
        Ok(md.topics.get(topic).and_then(|t| {
            (t.error.is_ok() && !t.partitions.is_empty()).then(|| {
                t.partitions
                    .keys()
                    .next_back()
                    .map_or(0, |p| p.saturating_add(1))
            })
        }))
    }

    async fn send(&self, r: OutRecord<'_>) -> Result<KafkaDelivery, String> {
        let record = Record {
            key: r.key,
            value: Some(r.value),
            headers: r.headers.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            timestamp: time::OffsetDateTime::now_utc(),
        };
        self.producer
            .send_to(r.topic, r.partition, record)
            .await
            .map(KafkaDelivery)
            .map_err(|e| e.to_string())
    }

    async fn close(&self) {
        self.producer.close().await;
    }

    fn encode_metrics(&self, out: &mut String) {
        encode_producer_metrics(&self.producer.metrics(), out);
        encode_broker_stats(&self.client.broker_stats(), out);
    }
}

/// A metric family header in OpenMetrics text.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `kafka_producer_*`: the producer's own counters.
fn encode_producer_metrics(m: &ProducerMetrics, out: &mut String) {
    let counters = [
        (
            "kafka_producer_requests",
            "ProduceRequests sent.",
            m.requests,
        ),
        (
            "kafka_producer_batches_sent",
            "Batches sent, retries included.",
            m.batches_sent,
        ),
        (
            "kafka_producer_records_sent",
            "Records in the batches sent.",
            m.records_sent,
        ),
        (
            "kafka_producer_batch_bytes_sent",
            "Bytes of the batches sent.",
            m.batch_bytes_sent,
        ),
        (
            "kafka_producer_retries",
            "Batch attempts retried.",
            m.retries,
        ),
        (
            "kafka_producer_throttled_responses",
            "Responses reporting throttling.",
            m.throttled_responses,
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}_total {v}");
    }
    let avg = |num: u64| {
        if m.batches_sent == 0 {
            0.0
        } else {
            num as f64 / m.batches_sent as f64
        }
    };
    let gauges = [
        (
            "kafka_producer_buffered_bytes",
            "Bytes of records buffered, not yet acknowledged.",
            m.buffered_bytes as f64,
        ),
        (
            "kafka_producer_avg_batch_bytes",
            "Average size of a batch sent, in bytes (since start).",
            avg(m.batch_bytes_sent),
        ),
        (
            "kafka_producer_avg_batch_records",
            "Average records per batch sent (since start).",
            avg(m.records_sent),
        ),
    ];
    for (name, help, v) in gauges {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// `kafka_broker_*{broker="id",addr="host:port"}`: the client's traffic per broker.
fn encode_broker_stats(stats: &[BrokerStats], out: &mut String) {
    type Field = fn(&BrokerStats) -> u64;
    let counters: [(&str, &str, Field); 10] = [
        (
            "kafka_broker_requests_sent",
            "Requests sent to the broker.",
            |b| b.requests_sent,
        ),
        ("kafka_broker_bytes_sent", "Bytes of requests sent.", |b| {
            b.bytes_sent
        }),
        (
            "kafka_broker_responses_received",
            "Responses received.",
            |b| b.responses_received,
        ),
        (
            "kafka_broker_bytes_received",
            "Bytes of responses received.",
            |b| b.bytes_received,
        ),
        (
            "kafka_broker_request_timeouts",
            "Requests that timed out.",
            |b| b.request_timeouts,
        ),
        (
            "kafka_broker_produce_retries",
            "Produce batches sent again.",
            |b| b.produce_retries,
        ),
        ("kafka_broker_connects", "Connections established.", |b| {
            b.connects
        }),
        (
            "kafka_broker_connect_failures",
            "Connection attempts that failed.",
            |b| b.connect_failures,
        ),
        ("kafka_broker_disconnects", "Connections that ended.", |b| {
            b.disconnects
        }),
        (
            "kafka_broker_requests_in_flight",
            "Requests sent and not yet answered.",
            |b| b.requests_in_flight,
        ),
    ];
    let labels = |b: &BrokerStats| {
        format!(
            "{{broker=\"{}\",addr=\"{}\"}}",
            b.node_id,
            b.addr.replace(['"', '\\'], "_")
        )
    };
    for (name, help, get) in counters {
        let gauge = name.ends_with("in_flight");
        family(out, name, if gauge { "gauge" } else { "counter" }, help);
        for b in stats {
            let suffix = if gauge { "" } else { "_total" };
            let _ = writeln!(out, "{name}{suffix}{} {}", labels(b), get(b));
        }
    }
    family(
        out,
        "kafka_broker_connections_open",
        "gauge",
        "Connections open to the broker now.",
    );
    for b in stats {
        let _ = writeln!(
            out,
            "kafka_broker_connections_open{} {}",
            labels(b),
            b.connections_open
        );
    }
    family(
        out,
        "kafka_broker_connection_up",
        "gauge",
        "1 if a connection to the broker is open.",
    );
    for b in stats {
        let _ = writeln!(
            out,
            "kafka_broker_connection_up{} {}",
            labels(b),
            u8::from(b.connections_open > 0)
        );
    }
}
