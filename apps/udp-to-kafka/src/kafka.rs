//! The rskafka sink and the mapping of the `KAFKA_*` settings (librdkafka's
//! names) onto [`ProducerConfig`].

use std::time::Duration;

use rskafka::{
    client::{
        producer::{Acks, Compression, DeliveryFuture, Producer, ProducerConfig, RecordMetadata},
        BackoffConfig, Client, ClientBuilder,
    },
    record::Record,
};
use time::OffsetDateTime;

use crate::{
    config::{Codec, Config},
    forward::Sink,
    recv::Datagram,
};

/// librdkafka's `request.timeout.ms` default: the bound on one produce
/// request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// librdkafka's `message.timeout.ms` default: no record waits longer.
pub const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// librdkafka's `retry.backoff.ms` / `retry.backoff.max.ms` defaults, and
/// the library's: 100 ms doubling to 1 s.
fn backoff() -> BackoffConfig {
    BackoffConfig::default()
        .initial(Duration::from_millis(100))
        .max(Duration::from_secs(1))
        .multiplier(2.0)
        .jitter(0.2)
}

/// A record's size on the wire at most, besides its value: record framing,
/// the `source` header (`[v6addr%scope]:port`) and the `partition` header.
pub const RECORD_OVERHEAD: usize = 128;

/// The producer settings for `cfg`.
pub fn producer_config(cfg: &Config) -> ProducerConfig {
    let acks = match cfg.required_acks {
        0 => Acks::None,
        1 => Acks::Leader,
        _ => Acks::All,
    };
    let compression = match cfg.compression {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    };
    // The library limits batches by bytes only: batch.num.messages becomes
    // that many records of the largest size, within librdkafka's batch.size
    // default (1,000,000 bytes).
    let batch_bytes = cfg
        .batch_num_messages
        .saturating_mul(cfg.buffer_size + RECORD_OVERHEAD)
        .min(1_000_000);
    ProducerConfig::default()
        .linger(cfg.queue_buffering_max)
        .batch_size(batch_bytes)
        .buffer_memory(cfg.queue_buffering_max_kbytes.saturating_mul(1024))
        .acks(acks)
        .compression(compression)
        .request_timeout(REQUEST_TIMEOUT)
        .delivery_timeout(MAX_DELIVERY_TIMEOUT)
        .retries(cfg.retries)
        .retry_backoff(backoff())
}

/// Connects to the brokers and returns the client and the topic's partition
/// count; errors are one line (no brokers, unknown topic).
pub async fn connect(cfg: &Config) -> Result<(Client, i32), String> {
    let client = ClientBuilder::new(cfg.brokers.clone())
        .client_id("udp-to-kafka")
        .build()
        .await
        .map_err(|e| format!("cannot reach the brokers {}: {e}", cfg.brokers.join(",")))?;
    let topics = client
        .list_topics()
        .await
        .map_err(|e| format!("cannot list the topics: {e}"))?;
    let partitions = topics
        .iter()
        .find(|t| t.name == cfg.topic)
        .map(|t| t.partitions.len() as i32)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("unknown topic {:?}", cfg.topic))?;
    Ok((client, partitions))
}

/// Forwards through an rskafka [`Producer`].
pub struct KafkaSink {
    producer: Producer,
    topic: String,
}

impl KafkaSink {
    /// A sink writing to `topic` with `producer`.
    pub fn new(producer: Producer, topic: String) -> Self {
        Self { producer, topic }
    }
}

/// A delivery's outcome, as the forwarder wants it.
type Outcome = fn(rskafka::error::Result<RecordMetadata>) -> Result<(), String>;

fn outcome(r: rskafka::error::Result<RecordMetadata>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}

impl Sink for KafkaSink {
    type Delivery = futures::future::Map<DeliveryFuture, Outcome>;

    async fn send(
        &self,
        datagram: Datagram,
        timestamp: OffsetDateTime,
    ) -> Result<Self::Delivery, String> {
        use futures::FutureExt;
        let Datagram {
            value,
            source,
            partition,
        } = datagram;
        let mut headers = Vec::with_capacity(2);
        headers.push(("source".to_owned(), Some(source)));
        let partition = partition.map(|(p, header)| {
            headers.push(("partition".to_owned(), Some(header)));
            p
        });
        let record = Record {
            key: None,
            value: Some(value),
            headers,
            timestamp,
        };
        match self.producer.send_to(&self.topic, partition, record).await {
            Ok(d) => Ok(d.map(outcome as Outcome)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn flush(&self) {
        self.producer.flush().await;
        self.producer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_count_within_librdkafkas_message_timeout() {
        let cfg = Config::from_lookup(|name| match name {
            "KAFKA_BROKERS" => Some("127.0.0.1:9092".into()),
            "KAFKA_TOPIC" => Some("t".into()),
            "KAFKA_RETRIES" => Some("4".into()),
            _ => None,
        })
        .expect("config");
        let debug = format!("{:?}", producer_config(&cfg));
        assert!(debug.contains("retries: 4"), "{debug}");
        assert!(debug.contains("delivery_timeout: 300s"), "{debug}");
    }
}
