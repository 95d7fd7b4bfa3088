//! udp-to-kafka: forwards UDP datagrams to a Kafka topic, one record per
//! datagram, with a `source` header (and a `partition` header where the
//! service chooses the partition).
//!
//! The receive path ([`recv`]), the checkpoint and partition strategies,
//! the stats and [`forward::serve`] are independent of the Kafka client:
//! [`forward::Sink`] is the seam, implemented on rskafka by
//! [`kafka::KafkaSink`] (and on librdkafka by the benchmark's variant).

pub mod config;
pub mod forward;
pub mod kafka;
pub mod recv;
pub mod stats;

pub use config::Config;

/// Logs to stdout, `RUST_LOG` filtering (default `info`).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .init();
}

/// The configuration from the environment, or exit 2 with a one-line
/// error naming the variable.
pub fn config_or_exit(program: &str) -> Config {
    match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(2);
        }
    }
}

/// The whole program around `body`: reads the configuration (exit 2 on a
/// bad value), starts logging and a runtime of `WORKER_THREADS` threads,
/// runs `body` on it; an error is one line on stderr and exit 1.
pub fn main_with<F, Fut>(program: &str, body: F) -> std::process::ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let cfg = config_or_exit(program);
    init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|rt| rt.block_on(body(cfg)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
