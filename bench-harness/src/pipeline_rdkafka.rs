//! What the librdkafka variants of the pipeline share (included by path).

use rdkafka::{config::ClientConfig, producer::FutureProducer};

/// A `FutureProducer` set up as the rskafka pipeline's producer:
/// idempotent, acks=all, the configured linger and delivery timeout.
pub fn producer(settings: &pipeline::config::Settings) -> Result<FutureProducer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", settings.brokers().join(","))
        .set("linger.ms", settings.producer.linger_ms.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            settings.producer.delivery_timeout_ms.to_string(),
        )
        .create()
        .map_err(|e| format!("producer: {e}"))
}
