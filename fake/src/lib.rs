//! An in-process fake Apache Kafka cluster for tests, with fault injection.
//!
//! N brokers listen on loopback ports and speak the Kafka protocol with
//! rskafka's own codecs; clients (this crate's, librdkafka, the Java client,
//! kcat) connect to [`FakeCluster::bootstrap`] as to a real cluster. Record
//! batches are kept as producers sent them. What is served is listed in the
//! README of this crate's directory; anything else is absent from
//! ApiVersions, and a request for it closes the connection, as Kafka does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rskafka_fake::Error> {
//! let cluster = rskafka_fake::FakeCluster::builder().brokers(3).start().await?;
//! cluster.create_topic("events", 4)?;
//! let bootstrap = cluster.bootstrap(); // "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
//! # let _ = bootstrap; Ok(()) }
//! ```
//!
//! Tests that use many short-lived runtimes (or child processes) start it
//! on its own thread instead: [`FakeClusterBuilder::start_background`].
//! Faults are injected with [`FakeCluster::inject`] and the other methods
//! of the [`faults`] module.

#![deny(missing_docs)]

mod batch;
pub mod faults;
mod handlers;
mod log;
mod server;
mod state;
mod txn;

use std::{
    collections::BTreeMap, fmt, net::SocketAddr, ops::Deref, sync::Arc, thread::JoinHandle,
    time::Duration,
};

use rskafka::protocol::{ApiKey, ErrorCode};
use tokio::net::TcpListener;

pub use faults::{Fault, FaultAction};

use state::{Broker, Config, Shared, State};

/// Errors of the fake cluster's API.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listener (or starting the background runtime) failed.
    Io(std::io::Error),
    /// No broker has this id.
    UnknownBroker(i32),
    /// The topic or partition does not exist.
    UnknownPartition,
    /// The operation was refused with this Kafka error, as a broker would.
    Kafka(ErrorCode, String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "fake cluster I/O: {e}"),
            Error::UnknownBroker(id) => write!(f, "no broker with id {id}"),
            Error::UnknownPartition => write!(f, "unknown topic or partition"),
            Error::Kafka(code, msg) => write!(f, "{}: {msg}", code.name()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Settings of a fake cluster; [`FakeCluster::builder`] makes one.
#[derive(Debug, Clone)]
pub struct FakeClusterBuilder {
    brokers: usize,
    base_port: Option<u16>,
    config: Config,
}

impl FakeClusterBuilder {
    /// The number of brokers (at least 1; default 1). Their ids are 1..=n.
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n.max(1);
        self
    }

    /// Broker i (from 0) listens on `port + i`; `None` (the default): any
    /// free ports.
    pub fn base_port(mut self, port: Option<u16>) -> Self {
        self.base_port = port;
        self
    }

    /// Kafka's `auto.create.topics.enable` (default true): Metadata for an
    /// unknown topic creates it when the client allows it.
    pub fn auto_create_topics(mut self, enable: bool) -> Self {
        self.config.auto_create_topics = enable;
        self
    }

    /// Kafka's `num.partitions` (default 1): partitions of auto-created
    /// topics and of CreateTopics asking for the default.
    pub fn default_partitions(mut self, n: i32) -> Self {
        self.config.default_partitions = n.clamp(1, state::MAX_PARTITIONS);
        self
    }

    /// The finalized `transaction.version` feature (default 2, as a Kafka
    /// 4 cluster's): 2 serves KIP-890 transactions (Produce v12 and
    /// TxnOffsetCommit v5 add partitions and groups to the transaction,
    /// EndTxn v5 bumps the epoch); 1 advertises only the versions before
    /// them. Clamped to 1..=2.
    pub fn transaction_version(mut self, version: i16) -> Self {
        self.config.transaction_version = version.clamp(1, 2);
        self
    }

    /// Kafka's `group.consumer.session.timeout.ms` (default 45 s): a
    /// KIP-848 group member that does not heartbeat for this long is
    /// removed from its group.
    pub fn consumer_session_timeout(mut self, timeout: Duration) -> Self {
        self.config.consumer_session_timeout = timeout;
        self
    }

    /// Kafka's `group.consumer.heartbeat.interval.ms` (default 5 s): the
    /// interval KIP-848 group members are told to heartbeat at.
    pub fn consumer_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.consumer_heartbeat_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The cluster id reported in Metadata and DescribeCluster.
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.config.cluster_id = id.into();
        self
    }

    /// Binds the brokers' listeners and starts serving on the current
    /// tokio runtime; the cluster stops when the returned value is dropped
    /// (or the runtime ends).
    pub async fn start(self) -> Result<FakeCluster, Error> {
        Ok(FakeCluster {
            shared: self.serve().await?,
        })
    }

    async fn serve(self) -> Result<Arc<Shared>, Error> {
        let mut listeners = Vec::with_capacity(self.brokers);
        let mut brokers = Vec::with_capacity(self.brokers);
        for i in 0..self.brokers {
            let port = match self.base_port {
                Some(p) => u16::try_from(usize::from(p) + i).map_err(|_| {
                    Error::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("port {p} + {i} is beyond 65535"),
                    ))
                })?,
                None => 0,
            };
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            brokers.push(Broker {
                id: i as i32 + 1,
                host: "127.0.0.1".into(),
                port: listener.local_addr()?.port(),
            });
            listeners.push(listener);
        }
        let shared = Arc::new(Shared::new(
            State::new(self.config, brokers.clone()),
            handlers::routes(),
        ));
        for (index, (listener, broker)) in listeners.into_iter().zip(&brokers).enumerate() {
            tokio::spawn(server::accept_loop(
                shared.clone(),
                index,
                broker.id,
                listener,
            ));
        }
        Ok(shared)
    }

    /// Starts the cluster on a thread of its own with its own
    /// multi-threaded tokio runtime, independent of the caller's runtimes;
    /// it stops when the returned handle is dropped.
    pub fn start_background(self) -> Result<BackgroundCluster, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rskafka-fake-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("rskafka-fake-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match self.serve().await {
                        Ok(shared) => {
                            let mut stopped = shared.shutdown.subscribe();
                            let _ = tx.send(Ok(shared));
                            server::until_stopped(&mut stopped).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            })?;
        let shared = rx.recv().map_err(|_| {
            Error::Io(std::io::Error::other("the fake cluster thread ended early"))
        })??;
        Ok(BackgroundCluster {
            cluster: FakeCluster { shared },
            thread: Some(thread),
        })
    }
}

/// A running fake cluster; stops serving when dropped.
pub struct FakeCluster {
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCluster")
            .field("bootstrap", &self.bootstrap())
            .finish()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.shared.notify_changed();
    }
}

impl FakeCluster {
    /// Settings for a new cluster: one broker on any free port, topics
    /// auto-created with one partition.
    pub fn builder() -> FakeClusterBuilder {
        FakeClusterBuilder {
            brokers: 1,
            base_port: None,
            config: Config {
                cluster_id: "rskafka-fake-cluster".into(),
                auto_create_topics: true,
                default_partitions: 1,
                default_replication_factor: 1,
                transaction_version: 2,
                consumer_session_timeout: Duration::from_secs(45),
                consumer_heartbeat_interval: Duration::from_secs(5),
            },
        }
    }

    /// The brokers' addresses, comma-separated (`127.0.0.1:port,…`).
    pub fn bootstrap(&self) -> String {
        self.broker_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The brokers' addresses, in id order.
    pub fn broker_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .state()
            .brokers
            .iter()
            .map(|b| SocketAddr::from(([127, 0, 0, 1], b.port)))
            .collect()
    }

    /// The broker ids (1..=n).
    pub fn broker_ids(&self) -> Vec<i32> {
        self.shared.state().brokers.iter().map(|b| b.id).collect()
    }

    fn broker_index(&self, broker_id: i32) -> Result<usize, Error> {
        self.shared
            .state()
            .brokers
            .iter()
            .position(|b| b.id == broker_id)
            .ok_or(Error::UnknownBroker(broker_id))
    }

    /// Creates a topic as CreateTopics would (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        self.create_topic_with_configs(name, partitions, &[])
    }

    /// Creates a topic with topic configs, e.g.
    /// `("message.timestamp.type", "LogAppendTime")`.
    pub fn create_topic_with_configs(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), Error> {
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.shared
            .state()
            .create_topic(name, partitions, 1, configs)
            .map(|_| ())
            .map_err(|(code, msg)| Error::Kafka(code, msg))
    }

    /// The partition's leader and leader epoch.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        self.shared
            .state()
            .partition(topic, partition)
            .map(|p| (p.leader, p.leader_epoch))
    }

    /// The partition's log start offset and high watermark.
    pub fn offsets(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.shared
            .state()
            .partition(topic, partition)
            .map(|p| (p.log.log_start_offset(), p.log.high_watermark()))
    }

    /// How many requests of `api` the brokers received so far.
    pub fn request_count(&self, api: ApiKey) -> u64 {
        self.shared
            .state()
            .request_counts
            .get(&api.0)
            .copied()
            .unwrap_or(0)
    }

    /// Fetch sessions (KIP-227) created so far, and incremental fetches
    /// served in them.
    pub fn fetch_session_stats(&self) -> FetchSessionStats {
        self.shared.state().fetch_sessions.stats()
    }

    /// The APIs served, as ApiVersions advertises them: (key, min, max).
    pub fn served_apis(&self) -> Vec<(ApiKey, i16, i16)> {
        handlers::api_versions::advertised(&self.shared)
            .into_iter()
            .map(|(k, min, max)| (ApiKey(k), min, max))
            .collect()
    }
}

/// Counters of the fetch session cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchSessionStats {
    /// Sessions created by full fetches.
    pub created: u64,
    /// Incremental fetches answered within an existing session.
    pub incremental_fetches: u64,
}

/// A fake cluster running on its own thread and runtime
/// ([`FakeClusterBuilder::start_background`]); dereferences to the
/// [`FakeCluster`]. Dropping it stops the cluster and joins the thread.
pub struct BackgroundCluster {
    cluster: FakeCluster,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for BackgroundCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cluster.fmt(f)
    }
}

impl Deref for BackgroundCluster {
    type Target = FakeCluster;

    fn deref(&self) -> &FakeCluster {
        &self.cluster
    }
}

impl Drop for BackgroundCluster {
    fn drop(&mut self) {
        self.cluster.shared.shutdown.send_replace(true);
        self.cluster.shared.notify_changed();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
