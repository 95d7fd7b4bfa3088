//! A TCP proxy for fault-injection tests.
//!
//! It listens on 127.0.0.1, forwards every accepted connection to an
//! upstream address (a broker), and, while cutting is enabled, kills each
//! connection after a random lifetime — half of the time with a RST (linger
//! 0), half with a plain close — so clients see both kinds of breakage in the
//! middle of requests and responses. Point a broker's advertised listener at
//! the proxy and every connection a client opens goes through it.
// Each test crate uses a different subset of this module.
#![allow(dead_code)]

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use rand::Rng;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// How long upstream connects may take before the client side is dropped.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of what the proxy did, for the test report.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Connections the proxy killed on purpose.
    pub cut: AtomicU64,
    /// Connections that ended by themselves (either side closed).
    pub closed: AtomicU64,
    /// Upstream connects that failed.
    pub upstream_failures: AtomicU64,
    /// Bytes forwarded client → upstream.
    pub bytes_up: AtomicU64,
    /// Bytes forwarded upstream → client.
    pub bytes_down: AtomicU64,
}

impl ProxyStats {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "accepted={} cut={} closed={} upstream_failures={} bytes_up={} bytes_down={}",
            self.accepted.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.upstream_failures.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct FaultProxy {
    local_addr: SocketAddr,
    stats: Arc<ProxyStats>,
    cutting: Arc<AtomicBool>,
    /// The accept loop; its `JoinSet` owns the connection tasks, so aborting
    /// it tears everything down.
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks a free port) and forwards to
    /// `upstream`. With `cut_after = Some((min, max))` each connection is cut
    /// after a uniformly random lifetime in `[min, max]` while cutting is
    /// enabled (it starts enabled); `None` makes a transparent proxy.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        cut_after: Option<(Duration, Duration)>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let cutting = Arc::new(AtomicBool::new(cut_after.is_some()));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut_after,
            Arc::clone(&stats),
            Arc::clone(&cutting),
        ));
        Ok(Self {
            local_addr,
            stats,
            cutting,
            accept_task,
        })
    }

    /// The address clients (and the broker's advertised listener) use.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Turns cutting on or off; connections alive when it is turned off
    /// live on until they end by themselves.
    pub fn set_cutting(&self, on: bool) {
        self.cutting.store(on, Ordering::SeqCst);
    }

    /// The counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

/// A private broker of the test's own (ports from `port_from`, see
/// `common::free_port_base`) that advertises a proxy in front of it, so
/// that every client connection goes through the proxy; `cut_after` as in
/// [`FaultProxy::start`], cutting off until the test turns it on. For test
/// crates that have the `common` module too.
pub async fn proxied_private_broker(
    port_from: u16,
    cut_after: Option<(Duration, Duration)>,
) -> (FaultProxy, crate::common::PrivateBroker) {
    let broker_port = crate::common::free_port_base(port_from).expect("a free port range");
    let proxy = FaultProxy::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], broker_port)),
        cut_after,
    )
    .await
    .expect("proxy");
    proxy.set_cutting(false);
    let advertised = proxy.local_addr();
    let broker = tokio::task::spawn_blocking(move || {
        crate::common::PrivateBroker::start_with_properties(
            broker_port,
            &format!("advertised.listeners=PLAINTEXT://{advertised}"),
        )
    })
    .await
    .expect("broker start")
    .unwrap_or_else(|e| panic!("private broker: {e}"));
    (proxy, broker)
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut_after: Option<(Duration, Duration)>,
    stats: Arc<ProxyStats>,
    cutting: Arc<AtomicBool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of file descriptors or similar: try again shortly
                    // rather than spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let lifetime = cut_after.map(|(min, max)| {
                    let ms = rand::rng().random_range(min.as_millis()..=max.as_millis().max(min.as_millis()));
                    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
                });
                let reset = rand::rng().random_bool(0.5);
                connections.spawn(serve(
                    client,
                    upstream,
                    lifetime,
                    reset,
                    Arc::clone(&stats),
                    Arc::clone(&cutting),
                ));
            }
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    lifetime: Option<Duration>,
    reset: bool,
    stats: Arc<ProxyStats>,
    cutting: Arc<AtomicBool>,
) {
    let server =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            _ => {
                stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // The forwarding futures borrow the halves; keep them in this block so
    // the halves can be reunited for a RST afterwards.
    let cut = {
        let up = pump(&mut client_read, &mut server_write, &stats.bytes_up);
        let down = pump(&mut server_read, &mut client_write, &stats.bytes_down);
        let forward = async {
            // Either direction ending ends the connection: Kafka never
            // half-closes, so waiting for the other side would only hang.
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        };
        tokio::pin!(forward);
        match lifetime {
            Some(lifetime) => {
                tokio::select! {
                    _ = &mut forward => false,
                    _ = tokio::time::sleep(lifetime) => {
                        if cutting.load(Ordering::SeqCst) {
                            true
                        } else {
                            // Cutting was switched off meanwhile: forward
                            // until the connection ends by itself.
                            (&mut forward).await;
                            false
                        }
                    }
                }
            }
            None => {
                forward.await;
                false
            }
        }
    };
    if cut {
        stats.cut.fetch_add(1, Ordering::Relaxed);
        if reset {
            // Linger 0 turns the close into a RST, as a crashed peer or a
            // middlebox would; with 0 the drop does not block.
            if let Ok(client) = client_read.reunite(client_write) {
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                drop(client);
            }
            if let Ok(server) = server_read.reunite(server_write) {
                #[allow(deprecated)]
                let _ = server.set_linger(Some(Duration::ZERO));
                drop(server);
            }
        }
    } else {
        stats.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies until EOF or an error, counting bytes.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { return };
        if to.write_all(chunk).await.is_err() {
            return;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
