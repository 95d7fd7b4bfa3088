//! Traffic counters shared by every connection to one broker, so that the
//! figures survive reconnects and stay monotonic for monitoring.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a client has exchanged with one broker since it started, over all
/// its connections to it (see `Client::broker_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// The broker's node id; -1 for connections to bootstrap addresses made
    /// before the broker list was known.
    pub node_id: i32,
    /// The broker's `host:port` (the bootstrap list for node -1).
    pub addr: String,
    /// Connections open now (connecting, or established and not broken).
    pub connections_open: u64,
    /// Connections established: versions negotiated and, with SASL,
    /// authenticated.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections that ended, broken or closed.
    pub disconnects: u64,
    /// Requests handed to a connection.
    pub requests_sent: u64,
    /// Bytes of those requests, size prefixes included.
    pub bytes_sent: u64,
    /// Responses received.
    pub responses_received: u64,
    /// Bytes of those responses after their header.
    pub bytes_received: u64,
    /// Requests sent and not yet answered, failed or timed out.
    pub requests_in_flight: u64,
    /// Requests that timed out waiting for their response.
    pub request_timeouts: u64,
    /// Produce batches sent again after a failed attempt.
    pub produce_retries: u64,
}

/// The live counters behind a [`BrokerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) responses_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) requests_in_flight: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) produce_retries: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Decrements a gauge.
    pub(crate) fn sub(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, node_id: i32, addr: String) -> BrokerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStats {
            node_id,
            addr,
            connections_open: get(&self.connections_open),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            disconnects: get(&self.disconnects),
            requests_sent: get(&self.requests_sent),
            bytes_sent: get(&self.bytes_sent),
            responses_received: get(&self.responses_received),
            bytes_received: get(&self.bytes_received),
            requests_in_flight: get(&self.requests_in_flight),
            request_timeouts: get(&self.request_timeouts),
            produce_retries: get(&self.produce_retries),
        }
    }
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    pub(crate) fn start(counters: &'a Counters) -> Self {
        Counters::add(&counters.requests_in_flight, 1);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        Counters::sub(&self.0.requests_in_flight);
    }
}
