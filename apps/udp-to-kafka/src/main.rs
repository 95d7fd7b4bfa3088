//! The udp-to-kafka service: see the crate's README for its settings, log
//! lines and operation.

use std::{process::ExitCode, sync::Arc};

use udp_to_kafka::{forward::serve, kafka};

fn main() -> ExitCode {
    udp_to_kafka::main_with("udp-to-kafka", |cfg| async move {
        let (client, partitions) = kafka::connect(&cfg).await?;
        let producer = client
            .producer(kafka::producer_config(&cfg))
            .map_err(|e| format!("invalid producer settings: {e}"))?;
        let sink = Arc::new(kafka::KafkaSink::new(producer, cfg.topic.clone()));
        serve(&cfg, sink, partitions).await
    })
}
