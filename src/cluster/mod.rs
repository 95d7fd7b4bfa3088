//! The cluster: bootstrap, metadata cache, and connections to the brokers,
//! one per broker and [`Role`], plus private [`Lane`]s (a consumer's fetch
//! connections).
//!
//! Connections are opened lazily and re-opened on the next use after they
//! break. Concurrent callers that need the same connection or the same
//! metadata refresh wait for one shared attempt instead of each starting
//! their own.

mod backoff;
mod error;
mod lane;
mod metadata;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use rand::seq::SliceRandom;
use tokio::time::Instant;

pub use self::backoff::{Backoff, BackoffConfig, DeadlineExceeded};
pub use self::error::ClusterError;
pub use self::lane::{Lane, Role};
use self::lane::{Lanes, Slots};
use self::metadata::format_addr;
pub use self::metadata::{BrokerInfo, Metadata, PartitionInfo, TopicInfo};
use crate::{
    connection::{BrokerConnection, BrokerStats, ConnectionConfig, ConnectionError},
    protocol::{
        messages::{metadata_request::MetadataRequestTopic, MetadataRequest},
        ErrorCode,
    },
};

/// Settings of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `host:port` addresses to discover the cluster from.
    pub bootstrap: Vec<String>,
    /// Settings of every broker connection.
    pub connection: ConnectionConfig,
    /// Pacing of retries (bootstrap, metadata refresh).
    pub backoff: BackoffConfig,
    /// How long each metadata refresh keeps retrying.
    pub connect_deadline: Duration,
    /// Bound on bootstrapping: reaching a bootstrap broker (retrying
    /// refused connections) and loading the first metadata. Names that do
    /// not resolve and malformed addresses fail at once.
    pub bootstrap_timeout: Duration,
    /// Cached metadata older than this is refreshed on use.
    pub metadata_max_age: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let connection = ConnectionConfig::default();
        Self {
            bootstrap: Vec::new(),
            connect_deadline: connection.request_timeout,
            bootstrap_timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
            connection,
            backoff: BackoffConfig::default(),
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

impl ClusterConfig {
    /// Defaults with the given bootstrap addresses.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// Default of [`ClusterConfig::bootstrap_timeout`]: a few seconds, as kcat
/// waits, so that a wrong address or a broker that is down is reported
/// promptly rather than after the request timeout.
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The port of a bootstrap address given without one, as kcat and
/// librdkafka assume.
pub const DEFAULT_PORT: u16 = 9092;

/// Checks a bootstrap address and completes it: `host:port`, `[v6]:port`,
/// or either without the port (then [`DEFAULT_PORT`]); a bare IPv6
/// literal is taken as a host.
pub fn normalize_address(addr: &str) -> Result<String, ClusterError> {
    let bad = |reason: &str| ClusterError::BadAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let addr = addr.trim();
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("expected ':' and a port after ']'")),
            },
        }
    } else if addr.matches(':').count() > 1 {
        // An IPv6 literal without brackets cannot carry a port.
        let ip = addr.split_once('%').map_or(addr, |(ip, _zone)| ip);
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(
                "more than one ':' (an IPv6 address with a port goes in brackets)",
            ));
        }
        (addr, None)
    } else {
        match addr.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (addr, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host name"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("not a host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(format_addr(host, i32::from(port)))
}

/// Locks a std mutex, recovering from poisoning: the guarded data stays
/// consistent because no critical section here can panic half-way.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the metadata cache knows and since when.
struct MetaCache {
    current: Arc<Metadata>,
    /// When brokers were last fetched (every response carries them).
    brokers_at: Option<Instant>,
    /// When all topics were last fetched; cleared by invalidation.
    all_topics_at: Option<Instant>,
    /// When each topic was last fetched; entries removed by invalidation.
    topic_at: HashMap<String, Instant>,
    /// Refreshes started so far; a caller reuses a refresh that started
    /// after it asked.
    started: u64,
    /// The latest completed refresh.
    last: Option<LastRefresh>,
}

/// A completed metadata refresh, for callers that waited on it.
struct LastRefresh {
    /// Its start number (see `MetaCache::started`).
    seq: u64,
    /// The topics it asked for (`None`: all).
    topics: Option<Vec<String>>,
    result: Result<Arc<Metadata>, ClusterError>,
}

struct Inner {
    config: ClusterConfig,
    conn_config: Arc<ConnectionConfig>,
    lanes: Lanes,
    /// A connection to a bootstrap address, until metadata names brokers.
    bootstrap: tokio::sync::Mutex<Option<BrokerConnection>>,
    meta: Mutex<MetaCache>,
    refresh: tokio::sync::Mutex<()>,
}

/// A Kafka cluster: cheap to clone, all clones share connections and the
/// metadata cache.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the first reachable bootstrap address, retrying with
    /// backoff until `connect_deadline`, and fetches the broker list.
    pub async fn connect(mut config: ClusterConfig) -> Result<Self, ClusterError> {
        if config.bootstrap.is_empty() {
            return Err(ClusterError::NoBrokerReachable {
                tried: Vec::new(),
                last: None,
            });
        }
        config.bootstrap = config
            .bootstrap
            .iter()
            .map(|a| normalize_address(a))
            .collect::<Result<_, _>>()?;
        let bootstrap_deadline = Instant::now() + config.bootstrap_timeout;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                conn_config: Arc::new(config.connection.clone()),
                config,
                lanes: Lanes::new(),
                bootstrap: tokio::sync::Mutex::new(None),
                meta: Mutex::new(MetaCache {
                    current: Arc::new(Metadata::default()),
                    brokers_at: None,
                    all_topics_at: None,
                    topic_at: HashMap::new(),
                    started: 0,
                    last: None,
                }),
                refresh: tokio::sync::Mutex::new(()),
            }),
        };
        cluster
            .fetch_metadata(Some(&[]), Some(bootstrap_deadline))
            .await?;
        Ok(cluster)
    }

    /// The configuration this cluster was created with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The cached metadata, without refreshing.
    pub fn cached_metadata(&self) -> Arc<Metadata> {
        lock(&self.inner.meta).current.clone()
    }

    /// An open connection to some broker: an existing one if any, else the
    /// first known broker or bootstrap address that accepts (one pass, no
    /// backoff).
    pub async fn any_broker(&self) -> Result<BrokerConnection, ClusterError> {
        let general = self.inner.lanes.shared(Role::General);
        let mut slots: Vec<_> = {
            let meta = lock(&self.inner.meta);
            meta.current
                .brokers
                .values()
                .map(|b| general.get_or_insert(b.id, &b.addr()))
                .collect()
        };
        if let Some(c) = slots.iter().find_map(|s| s.open()) {
            return Ok(c);
        }
        let mut tried = Vec::new();
        let mut last = None;
        {
            let mut boot = self.inner.bootstrap.lock().await;
            if let Some(c) = boot.as_ref().filter(|c| !c.is_closed()) {
                return Ok(c.clone());
            }
            *boot = None;
            slots.shuffle(&mut rand::rng());
            for slot in slots {
                match slot.get(&self.inner.conn_config).await {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tried.push(slot.addr());
                        keep_most_telling(&mut last, e);
                    }
                }
            }
            let mut addrs = self.inner.config.bootstrap.clone();
            addrs.shuffle(&mut rand::rng());
            for addr in addrs {
                let counters = self.inner.lanes.traffic.of(BOOTSTRAP_ID);
                let config = self.inner.conn_config.clone();
                match BrokerConnection::connect_counted(&addr, config, counters).await {
                    Ok(c) => {
                        *boot = Some(c.clone());
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "bootstrap address unreachable");
                        tried.push(addr);
                        keep_most_telling(&mut last, e);
                    }
                }
            }
        }
        Err(ClusterError::NoBrokerReachable { tried, last })
    }

    /// The general-purpose connection to broker `id`, (re)connecting if
    /// needed. An id not in the cached metadata triggers one refresh of the
    /// broker list.
    pub async fn broker(&self, id: i32) -> Result<BrokerConnection, ClusterError> {
        self.broker_for(id, Role::General).await
    }

    /// The shared connection of `role` to broker `id`; see [`Self::broker`].
    pub async fn broker_for(&self, id: i32, role: Role) -> Result<BrokerConnection, ClusterError> {
        self.connection_in(self.inner.lanes.shared(role), id).await
    }

    /// A private lane of `role`: connections of its own to every broker,
    /// closed when the last clone of the lane is dropped.
    pub fn private_lane(&self, role: Role) -> Lane {
        Lane::new(self.clone(), self.inner.lanes.new_private(role))
    }

    async fn connection_in(
        &self,
        slots: &Slots,
        id: i32,
    ) -> Result<BrokerConnection, ClusterError> {
        let slot = match self.slot_in(slots, id) {
            Some(s) => s,
            None => {
                self.refresh_metadata(Some(&[])).await?;
                self.slot_in(slots, id)
                    .ok_or(ClusterError::UnknownBroker(id))?
            }
        };
        Ok(slot.get(&self.inner.conn_config).await?)
    }

    /// Broker `id`'s slot in `slots`, created if needed for its address in
    /// the cached metadata; `None` for a broker the metadata does not name.
    /// Created under the metadata lock, so that a refresh either sees the
    /// new slot when it reconciles the lanes or has already stored the
    /// address the slot gets.
    fn slot_in(&self, slots: &Slots, id: i32) -> Option<Arc<lane::Slot>> {
        if let Some(slot) = slots.get(id) {
            return Some(slot);
        }
        let meta = lock(&self.inner.meta);
        let addr = meta.current.brokers.get(&id)?.addr();
        Some(slots.get_or_insert(id, &addr))
    }

    /// The connection to the broker the metadata names as controller.
    pub async fn controller(&self) -> Result<BrokerConnection, ClusterError> {
        let id = match self.cached_metadata().controller_id {
            Some(id) => id,
            None => self
                .refresh_metadata(Some(&[]))
                .await?
                .controller_id
                .ok_or(ClusterError::NoController)?,
        };
        self.broker(id).await
    }

    /// Metadata covering `topics` (`None`: all topics), from the cache when
    /// it is younger than `metadata_max_age`, not invalidated, and holds each
    /// requested topic without error; otherwise refreshed.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<Arc<Metadata>, ClusterError> {
        self.metadata_from(topics).await.map(|(md, _)| md)
    }

    /// Like [`Self::metadata`], also telling whether the answer came from the
    /// cache (`true`) or a refresh.
    async fn metadata_from(
        &self,
        topics: Option<&[String]>,
    ) -> Result<(Arc<Metadata>, bool), ClusterError> {
        {
            let cache = lock(&self.inner.meta);
            let max_age = self.inner.config.metadata_max_age;
            let fresh = |at: Option<&Instant>| at.is_some_and(|t| t.elapsed() < max_age);
            let hit = match topics {
                None => fresh(cache.all_topics_at.as_ref()),
                Some([]) => fresh(cache.brokers_at.as_ref()),
                Some(names) => names.iter().all(|n| {
                    fresh(cache.topic_at.get(n))
                        && cache.current.topics.get(n).is_some_and(|t| t.error.is_ok())
                }),
            };
            if hit {
                return Ok((cache.current.clone(), true));
            }
        }
        Ok((self.refresh_metadata(topics).await?, false))
    }

    /// Fetches metadata for `topics` (`None`: all topics), retrying with
    /// backoff until `connect_deadline`. Concurrent callers share a refresh
    /// that started after they asked and covers their topics.
    pub async fn refresh_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<Arc<Metadata>, ClusterError> {
        let asked_at = lock(&self.inner.meta).started;
        let _guard = self.inner.refresh.lock().await;
        {
            let mut cache = lock(&self.inner.meta);
            if let Some(last) = &cache.last {
                let covers = match (&last.topics, topics) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(have), Some(want)) => want.iter().all(|w| have.contains(w)),
                };
                if last.seq > asked_at && covers {
                    return last.result.clone();
                }
            }
            cache.started += 1;
        }
        let seq = lock(&self.inner.meta).started;
        let result = self.fetch_metadata(topics, None).await;
        lock(&self.inner.meta).last = Some(LastRefresh {
            seq,
            topics: topics.map(<[String]>::to_vec),
            result: result.clone(),
        });
        result
    }

    /// Fetches metadata, retrying until `connect_deadline`, or with
    /// `bootstrap` until that deadline, which also bounds each attempt; then
    /// names that no bootstrap address could resolve fail at once.
    async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        bootstrap: Option<Instant>,
    ) -> Result<Arc<Metadata>, ClusterError> {
        let deadline =
            bootstrap.unwrap_or_else(|| Instant::now() + self.inner.config.connect_deadline);
        let mut backoff = Backoff::new(&self.inner.config.backoff, Some(deadline));
        let request = MetadataRequest {
            topics: topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic {
                        name: Some(n.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            allow_auto_topic_creation: false,
            include_cluster_authorized_operations: false,
            include_topic_authorized_operations: false,
            ..Default::default()
        };
        let mut failed: Option<ClusterError> = None;
        let mut unanswered_closes = 0;
        loop {
            let attempt = async {
                let conn = self.any_broker().await?;
                let resp = conn.request(&request).await;
                if resp.is_err() && conn.is_closed() {
                    self.forget(&conn).await;
                }
                Ok::<_, ClusterError>(resp?)
            };
            let result = match bootstrap {
                None => attempt.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(ClusterError::DeadlineExceeded {
                        what: "bootstrapping",
                        last: failed.take().map(Box::new),
                    }),
                },
            };
            match result {
                Ok(resp) => return Ok(self.apply_metadata(&resp, topics).await),
                Err(ClusterError::NoBrokerReachable {
                    tried,
                    last: Some(last @ ConnectionError::Resolve { .. }),
                }) if bootstrap.is_some() => {
                    // Every address failed to resolve (any other failure
                    // would be the one reported): a typo, not an outage.
                    return Err(ClusterError::NoBrokerReachable {
                        tried,
                        last: Some(last),
                    });
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "metadata request failed; retrying");
                    // Only while bootstrapping: later, a broker restarting
                    // behind a proxy may close connections the same way.
                    match closed_before_first_answer(&e).filter(|_| bootstrap.is_some()) {
                        Some(addr) => {
                            unanswered_closes += 1;
                            if unanswered_closes >= GIVE_UP_AFTER_UNANSWERED_CLOSES {
                                return Err(ClusterError::Connection(
                                    ConnectionError::AuthenticationRequired {
                                        addr,
                                        closes: unanswered_closes,
                                    },
                                ));
                            }
                        }
                        None => unanswered_closes = 0,
                    }
                    if backoff.wait().await.is_err() {
                        return Err(e);
                    }
                    failed = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops a broken bootstrap connection so the next attempt opens another.
    async fn forget(&self, conn: &BrokerConnection) {
        let mut boot = self.inner.bootstrap.lock().await;
        if boot.as_ref().is_some_and(|b| b.addr() == conn.addr()) {
            *boot = None;
        }
    }

    /// Stores a fresh response in the cache and reconciles the broker slots.
    async fn apply_metadata(
        &self,
        resp: &crate::protocol::messages::MetadataResponse,
        topics: Option<&[String]>,
    ) -> Arc<Metadata> {
        let now = Instant::now();
        let md = {
            let mut cache = lock(&self.inner.meta);
            let md = Arc::new(cache.current.merged(resp, topics));
            cache.current = md.clone();
            cache.brokers_at = Some(now);
            match topics {
                None => {
                    cache.all_topics_at = Some(now);
                    cache.topic_at = md.topics.keys().map(|n| (n.clone(), now)).collect();
                }
                Some(names) => {
                    for n in names {
                        cache.topic_at.insert(n.clone(), now);
                    }
                }
            }
            md
        };
        let addrs: HashMap<i32, String> = md.brokers.values().map(|b| (b.id, b.addr())).collect();
        for lane in self.inner.lanes.all() {
            lane.reconcile(&addrs);
        }
        // A bootstrap connection to a listed broker becomes that broker's
        // connection instead of a second one.
        let mut boot = self.inner.bootstrap.lock().await;
        if let Some(conn) = boot.take() {
            let owner = md.brokers.values().find(|b| b.addr() == conn.addr());
            match owner {
                Some(b) if !conn.is_closed() => {
                    let general = self.inner.lanes.shared(Role::General);
                    general.get_or_insert(b.id, &b.addr()).adopt(conn);
                }
                Some(_) => {}
                None => *boot = Some(conn),
            }
        }
        md
    }

    /// The leader of `topic`/`partition` and a connection to it. Metadata is
    /// refreshed when the topic is not cached (or cached with an error), and
    /// when the cached entry has no leader or lacks the partition.
    pub async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i32, BrokerConnection), ClusterError> {
        self.leader_for(topic, partition, Role::General).await
    }

    /// Like [`Self::leader`], with the leader's connection of `role`.
    pub async fn leader_for(
        &self,
        topic: &str,
        partition: i32,
        role: Role,
    ) -> Result<(i32, BrokerConnection), ClusterError> {
        let names = [topic.to_string()];
        let (md, cached) = self.metadata_from(Some(&names)).await?;
        let id = match leader_of(&md, topic, partition) {
            Ok(id) => id,
            Err(e) if !cached => return Err(e),
            // The cache may predate a leader election or new partitions.
            Err(_) => {
                let md = self.refresh_metadata(Some(&names)).await?;
                leader_of(&md, topic, partition)?
            }
        };
        Ok((id, self.broker_for(id, role).await?))
    }

    /// Marks a topic's metadata stale, after errors such as
    /// NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION, or a broken
    /// connection to its leader.
    pub fn invalidate_topic(&self, topic: &str) {
        let mut cache = lock(&self.inner.meta);
        cache.topic_at.remove(topic);
        cache.all_topics_at = None;
    }

    /// Applies a leader hint from a Produce or Fetch response (KIP-951): the
    /// new leader and its endpoint are used right away, without a metadata
    /// round trip. Hints older than the cached leader epoch are ignored.
    pub fn apply_leader_hint(
        &self,
        topic: &str,
        partition: i32,
        leader_id: i32,
        leader_epoch: i32,
        endpoint: Option<(String, i32)>,
    ) {
        if leader_id < 0 {
            return;
        }
        let mut cache = lock(&self.inner.meta);
        let newer = cache
            .current
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .is_some_and(|p| leader_epoch > p.leader_epoch);
        if !newer {
            return;
        }
        let md = Arc::make_mut(&mut cache.current);
        if let Some(p) = md
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(&partition))
        {
            p.leader = Some(leader_id);
            p.leader_epoch = leader_epoch;
            p.error = ErrorCode::NONE;
        }
        if let Some((host, port)) = endpoint {
            let addr = format_addr(&host, port);
            let rack = md.brokers.get(&leader_id).and_then(|b| b.rack.clone());
            md.brokers.insert(
                leader_id,
                BrokerInfo {
                    id: leader_id,
                    host,
                    port,
                    rack,
                },
            );
            drop(cache);
            for lane in self.inner.lanes.all() {
                if let Some(slot) = lane.get(leader_id) {
                    slot.set_addr(&addr);
                }
            }
        }
    }

    /// Broker ids that currently have an open general-purpose connection.
    pub fn connected_brokers(&self) -> Vec<i32> {
        let general = self.inner.lanes.shared(Role::General);
        let mut ids: Vec<i32> = lock(&general.by_broker)
            .iter()
            .filter(|(_, s)| s.open().is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Traffic figures per broker since the cluster was created, over all
    /// its connections (every role, private lanes and group coordinators
    /// included), ordered by node id.
    pub fn broker_stats(&self) -> Vec<BrokerStats> {
        let meta = self.cached_metadata();
        self.inner
            .lanes
            .traffic
            .all()
            .into_iter()
            .map(|(id, counters)| {
                let addr = match meta.brokers.get(&id) {
                    Some(b) => b.addr(),
                    None if id == BOOTSTRAP_ID => self.inner.config.bootstrap.join(","),
                    None => String::new(),
                };
                counters.snapshot(id, addr)
            })
            .collect()
    }

    /// A connection of its own to broker `id` at `addr`, with `config`,
    /// counted in the broker's traffic figures.
    pub(crate) async fn connect_dedicated(
        &self,
        id: i32,
        addr: &str,
        config: Arc<ConnectionConfig>,
    ) -> Result<BrokerConnection, ConnectionError> {
        BrokerConnection::connect_counted(addr, config, self.inner.lanes.traffic.of(id)).await
    }

    /// Ids of the brokers in the cached metadata.
    pub fn known_brokers(&self) -> HashSet<i32> {
        lock(&self.inner.meta)
            .current
            .brokers
            .keys()
            .copied()
            .collect()
    }
}

/// The node id under which connections to bootstrap addresses are counted.
const BOOTSTRAP_ID: i32 = -1;

/// Connections closed right after version negotiation, in a row, after
/// which a listener is taken to require authentication: one may be a broker
/// shutting down, several at the same step are not.
const GIVE_UP_AFTER_UNANSWERED_CLOSES: u32 = 3;

/// The broker of a connection closed before its first answer after version
/// negotiation, if `e` is that failure.
fn closed_before_first_answer(e: &ClusterError) -> Option<String> {
    match e {
        ClusterError::Connection(c) | ClusterError::NoBrokerReachable { last: Some(c), .. } => {
            c.closed_before_first_answer().map(str::to_owned)
        }
        _ => None,
    }
}

/// Keeps `e` as the failure to report unless it is a resolution failure
/// and a failure of another kind is already kept: "connection refused"
/// says more about an outage than one unresolvable name among several.
fn keep_most_telling(last: &mut Option<ConnectionError>, e: ConnectionError) {
    let unresolved = matches!(e, ConnectionError::Resolve { .. });
    let have_other = last
        .as_ref()
        .is_some_and(|l| !matches!(l, ConnectionError::Resolve { .. }));
    if !(unresolved && have_other) {
        *last = Some(e);
    }
}

/// The leader id of a partition in `md`, or why there is none.
fn leader_of(md: &Metadata, topic: &str, partition: i32) -> Result<i32, ClusterError> {
    let Some(t) = md.topics.get(topic) else {
        return Err(ClusterError::UnknownTopic(topic.to_string()));
    };
    if t.error == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
        return Err(ClusterError::UnknownTopic(topic.to_string()));
    }
    if !t.error.is_ok() {
        return Err(ClusterError::Metadata {
            topic: topic.to_string(),
            code: t.error,
        });
    }
    let Some(p) = t.partitions.get(&partition) else {
        return Err(ClusterError::UnknownPartition(topic.to_string(), partition));
    };
    match p.leader {
        Some(id) if p.error.is_ok() || p.error == ErrorCode::REPLICA_NOT_AVAILABLE => Ok(id),
        _ => Err(ClusterError::LeaderNotAvailable {
            topic: topic.to_string(),
            partition,
            code: (!p.error.is_ok()).then_some(p.error),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_default_port_and_bad_ones_are_refused() {
        let ok = |a: &str| normalize_address(a).unwrap();
        assert_eq!(ok("kafka1"), "kafka1:9092");
        assert_eq!(ok(" kafka1:9093 "), "kafka1:9093");
        assert_eq!(ok("127.0.0.1"), "127.0.0.1:9092");
        assert_eq!(ok("[::1]"), "[::1]:9092");
        assert_eq!(ok("[::1]:19092"), "[::1]:19092");
        assert_eq!(ok("::1"), "[::1]:9092");
        assert_eq!(ok("fe80::1%eth0"), "[fe80::1%eth0]:9092");
        for bad in [
            "",
            ":9092",
            "host:",
            "host:0",
            "host:65536",
            "host:abc",
            "host:-1",
            "[::1",
            "[::1]x",
            "a b:9092",
            "http://host:9092",
        ] {
            let e = normalize_address(bad).unwrap_err();
            assert!(matches!(e, ClusterError::BadAddress { .. }), "{bad:?}: {e}");
            assert!(!e.is_retriable());
        }
    }
}
