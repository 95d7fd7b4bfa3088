//! The udp-to-kafka service: see the crate's README for its settings, log
//! lines and operation.

use std::{process::ExitCode, sync::Arc};

use udp_to_kafka::{forward::serve, kafka, runtime};

fn main() -> ExitCode {
    let cfg = udp_to_kafka::config_or_exit("udp-to-kafka");
    udp_to_kafka::init_logging();
    let rt = match runtime(cfg.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("udp-to-kafka: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let (client, partitions) = kafka::connect(&cfg).await?;
        let producer = client
            .producer(kafka::producer_config(&cfg))
            .map_err(|e| format!("invalid producer settings: {e}"))?;
        let sink = Arc::new(kafka::KafkaSink::new(producer, cfg.topic.clone()));
        serve(&cfg, sink, partitions).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-to-kafka: {e}");
            ExitCode::from(1)
        }
    }
}
