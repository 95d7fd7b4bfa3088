//! The event pipeline: `ingest` writes JSON events keyed by tenant,
//! `process` validates and handles them in a consumer group and writes
//! them to `.processed`, retrying failures through `.retry` and giving up
//! into `.dlq`. See `apps/pipeline/README.md`.

pub mod config;
pub mod event;
pub mod exactly_once;
pub mod metrics;
pub mod route;
pub mod worker;

use std::time::Duration;

use rskafka::client::{
    producer::{Acks, Producer, ProducerConfig},
    Client,
};

/// Exit code for bad settings or arguments.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when Kafka cannot be used or the work failed.
pub const EXIT_FAILURE: i32 = 1;

/// Fixes glibc's mmap threshold at 256 KiB, unless `MALLOC_MMAP_THRESHOLD_`
/// sets it; call first thing in `main`, before the runtime's threads start.
///
/// glibc raises the threshold to the size of each large block freed, after
/// which fetch responses and request buffers of a few MiB come from its
/// per-thread heaps, which keep freed space: a worker behind a backlog at
/// 150k events/s peaked at 107 MiB instead of 74. The CLI does the same
/// (see the memory notes in the root README).
pub fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets an allocator parameter.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 256 * 1024);
            }
        }
    }
}

/// Loads the settings or exits 2 with a one-line error; then sets up
/// logging.
pub fn settings_or_exit() -> config::Settings {
    let settings = config::Settings::load().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(EXIT_USAGE)
    });
    metrics::init_logging(
        &settings.observability.log_level,
        settings.observability.json_logs,
    );
    settings
}

/// Exits 0, or 1 after logging the error.
pub fn exit_with(result: Result<(), String>) -> ! {
    std::process::exit(match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            EXIT_FAILURE
        }
    })
}

/// Creates those of `topics` that do not exist yet with `partitions`
/// partitions (replication factor 1 on a single broker, else 3 at most).
pub async fn ensure_topics(
    client: &Client,
    topics: &[&str],
    partitions: i32,
) -> Result<(), String> {
    let existing = client
        .list_topics()
        .await
        .map_err(|e| format!("listing topics: {e}"))?;
    let brokers = client
        .metadata()
        .await
        .map(|m| m.brokers.len())
        .unwrap_or(1)
        .clamp(1, 3) as i16;
    let controller = client
        .controller_client()
        .map_err(|e| format!("controller: {e}"))?;
    for t in topics {
        if existing.iter().any(|e| e.name == *t) {
            continue;
        }
        if let Err(e) = controller
            .create_topic(*t, partitions, brokers, 30_000)
            .await
        {
            // Another worker may have created it meanwhile.
            let now = client.list_topics().await.unwrap_or_default();
            if !now.iter().any(|x| x.name == *t) {
                return Err(format!("creating topic {t}: {e}"));
            }
        }
    }
    Ok(())
}

/// Creates the pipeline's four topics where missing and returns the
/// configured producer (idempotent, acks=all) and the topic names.
pub async fn producer_with_topics(
    settings: &config::Settings,
    client: &Client,
) -> Result<(Producer, route::Topics), String> {
    let topics = pipeline_topics(settings, client).await?;
    let producer = client
        .producer(producer_config(settings))
        .map_err(|e| format!("producer: {e}"))?;
    Ok((producer, topics))
}

/// The producer settings: idempotent, acks=all, the configured linger,
/// buffer and delivery timeout.
pub fn producer_config(settings: &config::Settings) -> ProducerConfig {
    ProducerConfig::default()
        .acks(Acks::All)
        .linger(Duration::from_millis(settings.producer.linger_ms))
        .buffer_memory(settings.producer.buffer_memory_bytes)
        .delivery_timeout(settings.delivery_timeout())
}

/// Creates the pipeline's four topics where missing; their names.
pub async fn pipeline_topics(
    settings: &config::Settings,
    client: &Client,
) -> Result<route::Topics, String> {
    let topics = route::Topics::new(&settings.producer.events_topic);
    ensure_topics(
        client,
        &[
            &topics.events,
            &topics.processed,
            &topics.retry,
            &topics.dlq,
        ],
        settings.producer.partitions,
    )
    .await?;
    Ok(topics)
}
