//! The rskafka backend and the mapping of the `kafka.*` settings.

use std::{
    fmt::Write as _,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use rskafka::{
    client::{
        producer::{Acks, DeliveryFuture, Producer, ProducerConfig},
        BackoffConfig, Client, ClientBuilder,
    },
    connection::sasl::{Credentials, SaslConfig},
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
/// `retries` has no counterpart: retriable failures are retried (backoff
/// 100 ms doubling to 1 s, as librdkafka's retry.backoff.ms and
/// retry.backoff.max.ms) until `message_timeout_ms`.
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
        .retry_backoff(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..BackoffConfig::default()
        })
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
        let m = self.producer.metrics();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {v}\n"
            );
        };
        counter(
            "kafka_producer_requests",
            "ProduceRequests sent.",
            m.requests,
        );
        counter(
            "kafka_producer_batches_sent",
            "Batches sent, retries included.",
            m.batches_sent,
        );
        counter(
            "kafka_producer_retries",
            "Batch attempts retried.",
            m.retries,
        );
        counter(
            "kafka_producer_throttled_responses",
            "Responses reporting throttling.",
            m.throttled_responses,
        );
        let _ = write!(
            out,
            "# HELP kafka_producer_buffered_bytes Bytes of records buffered, not yet acknowledged.\n\
             # TYPE kafka_producer_buffered_bytes gauge\nkafka_producer_buffered_bytes {}\n",
            m.buffered_bytes
        );
    }
}
