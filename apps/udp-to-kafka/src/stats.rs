//! Counters shared by the receiving thread and the producing tasks, and the
//! periodic stats line.
//!
//! The hot paths only add to atomics, once per batch of datagrams; latencies
//! are recorded into the histogram once per batch of deliveries.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// A count of datagrams and of their bytes.
#[derive(Debug, Default)]
pub struct Counter {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    /// Adds `datagrams` datagrams of `bytes` bytes in all.
    pub fn add(&self, datagrams: u64, bytes: u64) {
        if datagrams > 0 {
            self.datagrams.fetch_add(datagrams, Relaxed);
            self.bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// (datagrams, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (self.datagrams.load(Relaxed), self.bytes.load(Relaxed))
    }
}

/// Everything the stats line reports.
#[derive(Debug)]
pub struct Stats {
    /// Datagrams read from the socket (truncated ones included, with the
    /// bytes actually read).
    pub received: Counter,
    /// Acknowledged by Kafka.
    pub forwarded: Counter,
    /// Turned away by the checkpoint (CLOSED_DOORS, FLIP_COIN).
    pub discarded: Counter,
    /// Longer than `BUFFER_SIZE`: dropped, not forwarded cut.
    pub truncated: Counter,
    /// Dropped because the queue to the producer (`CACHE_SIZE`) was full.
    pub overflow: Counter,
    /// Handed to the producer but not delivered (refused or failed).
    pub failed: Counter,
    /// Handed to the producer, not yet acknowledged or failed.
    pub in_flight: AtomicU64,
    /// Distinct peers seen since the last stats line.
    pub active_peers: AtomicU64,
    /// Known peers (STICKY_ROUND_ROBIN's assignments, source headers).
    pub known_peers: AtomicU64,
    /// Number of the current stats interval: a peer counts once per
    /// interval in `active_peers`.
    interval: AtomicU64,
    /// Receive → acknowledgement latencies, in microseconds, since the
    /// last stats line.
    latency: Mutex<Histogram<u64>>,
    /// The last delivery error, reported (once) with the next stats line.
    last_error: Mutex<Option<String>>,
}

/// Latencies up to an hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            received: Counter::default(),
            forwarded: Counter::default(),
            discarded: Counter::default(),
            truncated: Counter::default(),
            overflow: Counter::default(),
            failed: Counter::default(),
            in_flight: AtomicU64::new(0),
            active_peers: AtomicU64::new(0),
            known_peers: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            last_error: Mutex::new(None),
        }
    }
}

impl Stats {
    /// The current stats interval's number.
    pub fn interval_number(&self) -> u64 {
        self.interval.load(Relaxed)
    }

    /// Records the latencies (µs) of delivered datagrams.
    pub fn record_latencies(&self, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for &m in micros {
            h.saturating_record(m.max(1));
        }
    }

    /// Keeps `error` to be logged with the next stats line.
    pub fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn take_latency(&self) -> Histogram<u64> {
        std::mem::replace(
            &mut *self.latency.lock().unwrap_or_else(|p| p.into_inner()),
            histogram(),
        )
    }

    fn totals(&self) -> Totals {
        Totals {
            received: self.received.get(),
            forwarded: self.forwarded.get(),
            discarded: self.discarded.get(),
            truncated: self.truncated.get(),
            overflow: self.overflow.get(),
            failed: self.failed.get(),
        }
    }
}

/// Snapshot of the counters.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    received: (u64, u64),
    forwarded: (u64, u64),
    discarded: (u64, u64),
    truncated: (u64, u64),
    overflow: (u64, u64),
    failed: (u64, u64),
}

/// Writes the stats lines: one per interval, and the final one.
pub struct Reporter {
    last: Totals,
    last_at: Instant,
    /// Every latency since the start, for the final line.
    all_latency: Histogram<u64>,
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

/// A per-second rate.
fn rate(n: u64, over: Duration) -> f64 {
    n as f64 / over.as_secs_f64().max(1e-9)
}

/// p50, p99 and max of `h` in milliseconds (0 when empty).
fn quantiles_ms(h: &Histogram<u64>) -> (f64, f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    (
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}

impl Reporter {
    /// Starts measuring rates now.
    pub fn new() -> Self {
        Self {
            last: Totals::default(),
            last_at: Instant::now(),
            all_latency: histogram(),
        }
    }

    /// Logs the stats line of the interval just ended.
    pub fn interval(&mut self, stats: &Stats) {
        let now = Instant::now();
        let t = stats.totals();
        let latency = stats.take_latency();
        let _ = self.all_latency.add(&latency);
        let active = stats.active_peers.swap(0, Relaxed);
        stats.interval.fetch_add(1, Relaxed);
        emit(
            "stats",
            stats,
            &t,
            &self.last,
            now - self.last_at,
            &latency,
            active,
        );
        if let Some(e) = stats.take_error() {
            tracing::warn!(error = %e, "delivery failed (last error of the interval)");
        }
        self.last = t;
        self.last_at = now;
    }

    /// Logs the final counts: rates are averages since the start, latency
    /// is over the whole run, `active_peers` counts every peer seen.
    pub fn finish(&mut self, stats: &Stats, ran: Duration) {
        let t = stats.totals();
        let _ = self.all_latency.add(stats.take_latency());
        if let Some(e) = stats.take_error() {
            tracing::warn!(error = %e, "delivery failed (last error)");
        }
        let peers = stats.known_peers.load(Relaxed);
        emit(
            "final",
            stats,
            &t,
            &Totals::default(),
            ran,
            &self.all_latency,
            peers,
        );
    }
}

/// One stats line: the totals `t`, rates since `since` over `over`, the
/// latency quantiles of `latency`.
fn emit(
    what: &str,
    stats: &Stats,
    t: &Totals,
    since: &Totals,
    over: Duration,
    latency: &Histogram<u64>,
    active_peers: u64,
) {
    let (p50, p99, max) = quantiles_ms(latency);
    let per_s = |now: u64, then: u64| rate(now - then, over);
    tracing::info!(
        received = t.received.0,
        received_bytes = t.received.1,
        forwarded = t.forwarded.0,
        forwarded_bytes = t.forwarded.1,
        discarded = t.discarded.0,
        discarded_bytes = t.discarded.1,
        truncated = t.truncated.0,
        truncated_bytes = t.truncated.1,
        overflow = t.overflow.0,
        overflow_bytes = t.overflow.1,
        failed = t.failed.0,
        failed_bytes = t.failed.1,
        in_flight = stats.in_flight.load(Relaxed),
        received_per_s = format_args!("{:.0}", per_s(t.received.0, since.received.0)),
        received_mb_per_s = format_args!("{:.2}", per_s(t.received.1, since.received.1) / 1e6),
        forwarded_per_s = format_args!("{:.0}", per_s(t.forwarded.0, since.forwarded.0)),
        forwarded_mb_per_s = format_args!("{:.2}", per_s(t.forwarded.1, since.forwarded.1) / 1e6),
        latency_p50_ms = format_args!("{p50:.1}"),
        latency_p99_ms = format_args!("{p99:.1}"),
        latency_max_ms = format_args!("{max:.1}"),
        active_peers,
        "{what}"
    );
}
