//! The producing side: takes batches off the queue, hands each datagram to
//! a [`Sink`] and tracks its delivery; and [`serve`], which wires the
//! receive thread, the forwarder, the stats line and the signals together.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Instant,
};

use futures::{stream::FuturesUnordered, StreamExt};
use time::OffsetDateTime;
use tokio::{
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{
    config::Config,
    recv::{self, Batch, Datagram, Receiver},
    stats::{Reporter, Stats},
};

/// Where datagrams go: the Kafka producer (rskafka here; librdkafka in the
/// benchmark's variant).
pub trait Sink: Send + Sync + 'static {
    /// Resolves when the record is acknowledged (`Ok`) or failed for good.
    type Delivery: Future<Output = Result<(), String>> + Send + 'static;

    /// Buffers one record: the datagram's bytes, a `source` header and,
    /// when a partition is chosen, a `partition` header. Waits while the
    /// producer's buffer is full; fails if the record is refused.
    fn send(
        &self,
        datagram: Datagram,
        timestamp: OffsetDateTime,
    ) -> impl Future<Output = Result<Self::Delivery, String>> + Send;

    /// Sends everything buffered now and waits for it.
    fn flush(&self) -> impl Future<Output = ()> + Send;
}

/// Awaits the deliveries of one batch, then accounts for them.
async fn track<D: Future<Output = Result<(), String>>>(
    deliveries: Vec<(D, usize)>,
    received_at: Instant,
    stats: Arc<Stats>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let count = deliveries.len() as u64;
    let mut pending: FuturesUnordered<_> = deliveries
        .into_iter()
        .map(|(d, len)| async move { (d.await, len) })
        .collect();
    let mut latencies = Vec::with_capacity(pending.len());
    let (mut ok_n, mut ok_bytes, mut err_n, mut err_bytes) = (0u64, 0u64, 0u64, 0u64);
    while let Some((result, len)) = pending.next().await {
        match result {
            Ok(()) => {
                ok_n += 1;
                ok_bytes += len as u64;
                latencies.push(received_at.elapsed().as_micros() as u64);
            }
            Err(e) => {
                err_n += 1;
                err_bytes += len as u64;
                stats.set_error(e);
            }
        }
    }
    stats.forwarded.add(ok_n, ok_bytes);
    stats.failed.add(err_n, err_bytes);
    stats.record_latencies(&latencies);
    stats.in_flight.fetch_sub(count, Relaxed);
}

/// Sends every queued batch through `sink` until the queue is closed, then
/// flushes and waits for all deliveries.
///
/// At most `max_in_flight` records are between `send` and their delivery
/// (librdkafka's `queue.buffering.max.messages`); beyond that it waits, the
/// queue fills, and the receiver counts overflow.
pub async fn forward<S: Sink>(
    sink: Arc<S>,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    max_in_flight: usize,
) {
    let limit = Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS)));
    let mut tasks = JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let n = batch.datagrams.len();
        let want = n.min(max_in_flight) as u32;
        let permit = limit.clone().acquire_many_owned(want).await.ok();
        let mut deliveries = Vec::with_capacity(n);
        let (mut err_n, mut err_bytes) = (0u64, 0u64);
        for dg in batch.datagrams {
            let len = dg.value.len();
            match sink.send(dg, batch.timestamp).await {
                Ok(d) => deliveries.push((d, len)),
                Err(e) => {
                    err_n += 1;
                    err_bytes += len as u64;
                    stats.set_error(e);
                }
            }
        }
        queued.fetch_sub(n, Relaxed);
        stats.failed.add(err_n, err_bytes);
        stats.in_flight.fetch_add(deliveries.len() as u64, Relaxed);
        tasks.spawn(track(deliveries, batch.received_at, stats.clone(), permit));
        // Reap finished trackers so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    sink.flush().await;
    while tasks.join_next().await.is_some() {}
}

/// SIGINT and SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name and the exit code of a process it ends.
    async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
        }
    }
}

/// Runs the service until SIGINT or SIGTERM: receives on the configured
/// address, forwards through `sink` to a topic of `partitions` partitions,
/// logs stats every interval. On the first signal it stops receiving,
/// delivers what is queued and logs the final counts; a second signal
/// during that ends the process at once (exit 128 + signal).
///
/// Errors are the socket's (bind).
pub async fn serve<S: Sink>(cfg: &Config, sink: Arc<S>, partitions: i32) -> Result<(), String> {
    let started = Instant::now();
    let mut signals = Signals::new().map_err(|e| format!("cannot catch signals: {e}"))?;
    let addr = SocketAddr::new(cfg.listen_ip, cfg.listen_port);
    let (socket, rcvbuf) = recv::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    tracing::info!(
        listen = %local,
        topic = %cfg.topic,
        partitions,
        partition_strategy = ?cfg.partition_strategy,
        checkpoint_strategy = ?cfg.checkpoint_strategy,
        buffer_size = cfg.buffer_size,
        cache_size = cfg.cache_size,
        rcvbuf,
        "listening"
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let receiver = Receiver {
        buffer_size: cfg.buffer_size,
        cache_size: cfg.cache_size,
        queued: queued.clone(),
        checkpoint: cfg.checkpoint_strategy,
        strategy: cfg.partition_strategy,
        partitions,
        stats: stats.clone(),
        stop: stop.clone(),
        tx,
    };
    let recv_thread = std::thread::Builder::new()
        .name("udp-recv".into())
        .spawn(move || receiver.run(socket))
        .map_err(|e| format!("cannot start the receive thread: {e}"))?;
    let mut forwarder = tokio::spawn(forward(
        sink,
        rx,
        queued,
        stats.clone(),
        cfg.queue_buffering_max_messages,
    ));

    let mut reporter = Reporter::new();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.stats_interval,
        cfg.stats_interval,
    );
    let (name, code) = loop {
        tokio::select! {
            _ = ticker.tick() => reporter.interval(&stats),
            s = signals.recv() => break s,
            // Only ends early if the forwarder panicked.
            _ = &mut forwarder => return Err("the forwarder stopped".into()),
        }
    };
    tracing::info!(
        signal = name,
        "stopping: no longer receiving, delivering what is queued"
    );
    stop.store(true, Relaxed);
    let drained = async {
        let _ = tokio::task::spawn_blocking(move || recv_thread.join()).await;
        let _ = forwarder.await;
    };
    tokio::pin!(drained);
    loop {
        tokio::select! {
            _ = &mut drained => break,
            _ = ticker.tick() => reporter.interval(&stats),
            (again, code2) = signals.recv() => {
                tracing::warn!(signal = again, "second signal: exiting without waiting for deliveries");
                reporter.finish(&stats, started.elapsed());
                std::process::exit(if code2 != 0 { code2 } else { code });
            }
        }
    }
    reporter.finish(&stats, started.elapsed());
    Ok(())
}
