//! The udp-to-kafka service with librdkafka (`rdkafka`'s `FutureProducer`)
//! as the Kafka client instead of rskafka, for `scripts/bench-udp`: the
//! same environment variables, receive path, checkpoint, partition
//! strategies, stats lines and signals (the app's library), only the sink
//! differs. The `KAFKA_*` settings are passed to librdkafka under their own
//! names (`batch.num.messages`, `queue.buffering.max.ms`, ...).

use std::{process::ExitCode, sync::Arc, time::Duration};

use futures::{channel::oneshot::Canceled, FutureExt};
use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{
        future_producer::OwnedDeliveryResult, DeliveryFuture, FutureProducer, FutureRecord,
        Producer,
    },
    util::Timeout,
};
use time::OffsetDateTime;
use udp_to_kafka::{
    config::Config,
    forward::{serve, Sink},
    recv::Datagram,
};

/// Forwards through librdkafka.
struct RdSink {
    producer: FutureProducer,
    topic: String,
}

type Outcome = fn(Result<OwnedDeliveryResult, Canceled>) -> Result<(), String>;

fn outcome(r: Result<OwnedDeliveryResult, Canceled>) -> Result<(), String> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.to_string()),
        Err(_) => Err("delivery canceled".into()),
    }
}

impl Sink for RdSink {
    type Delivery = futures::future::Map<DeliveryFuture, Outcome>;

    async fn send(
        &self,
        dg: Datagram,
        timestamp: OffsetDateTime,
    ) -> Result<Self::Delivery, String> {
        let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
            key: "source",
            value: Some(&dg.source[..]),
        });
        if let Some((_, h)) = &dg.partition {
            headers = headers.insert(Header {
                key: "partition",
                value: Some(&h[..]),
            });
        }
        let mut record = FutureRecord::<(), [u8]>::to(&self.topic)
            .payload(&dg.value[..])
            .headers(headers)
            .timestamp((timestamp.unix_timestamp_nanos() / 1_000_000) as i64);
        if let Some((p, _)) = dg.partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d.map(outcome as Outcome)),
                // queue.buffering.max.* reached: wait as rskafka's send does.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }

    async fn flush(&self) {
        let p = self.producer.clone();
        let _ =
            tokio::task::spawn_blocking(move || p.flush(Timeout::After(Duration::from_secs(300))))
                .await;
    }
}

/// librdkafka's settings for `cfg`.
fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.join(","))
        .set("client.id", "udp-forwarder-rdkafka")
        .set("batch.num.messages", cfg.batch_num_messages.to_string())
        .set(
            "queue.buffering.max.ms",
            cfg.queue_buffering_max.as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            cfg.queue_buffering_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            cfg.queue_buffering_max_kbytes.to_string(),
        )
        .set("compression.codec", cfg.compression.name())
        .set("request.required.acks", cfg.required_acks.to_string())
        .set("message.send.max.retries", cfg.retries.to_string());
    c
}

fn main() -> ExitCode {
    udp_to_kafka::main_with("udp-forwarder-rdkafka", |cfg| async move {
        let producer: FutureProducer = client_config(&cfg)
            .create()
            .map_err(|e| format!("invalid producer settings: {e}"))?;
        let (p, topic) = (producer.clone(), cfg.topic.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            let md = p
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| format!("cannot reach the brokers: {e}"))?;
            md.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("unknown topic {topic:?}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        let sink = Arc::new(RdSink {
            producer,
            topic: cfg.topic.clone(),
        });
        serve(&cfg, sink, partitions).await
    })
}
