//! The cluster's state, shared by all brokers behind one lock: brokers,
//! topics and their partitions (leader, epoch, log), producer ids, fetch
//! sessions. Handlers take the lock, work, and release it before any await.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use rskafka::protocol::{ErrorCode, Uuid};
use tokio::sync::{watch, Notify};

use crate::{
    faults::FaultTable, handlers::fetch::FetchSessions, log::PartitionLog, server::Routes,
    txn::TransactionalIds,
};

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;
/// A bound on partitions per topic, so that a request cannot make the fake
/// allocate without limit.
pub(crate) const MAX_PARTITIONS: i32 = 10_000;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A random v4 UUID (topic ids).
pub(crate) fn random_uuid() -> Uuid {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid(b)
}

/// Settings fixed when the cluster starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub cluster_id: String,
    /// Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`, for auto-created topics and CreateTopics with -1.
    pub default_partitions: i32,
    /// Kafka's `default.replication.factor`.
    pub default_replication_factor: i16,
    /// The finalized `transaction.version`: 2 (KIP-890) or 1.
    pub transaction_version: i16,
    /// Kafka's `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout: std::time::Duration,
    /// Kafka's `group.consumer.heartbeat.interval.ms`.
    pub consumer_heartbeat_interval: std::time::Duration,
}

/// One broker's address as Metadata reports it.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// A partition: its leader, leader epoch, replicas and log.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The broker id of the leader.
    pub leader: i32,
    /// The leader epoch, bumped on every leader change or truncation.
    pub leader_epoch: i32,
    /// Replica broker ids, leader first.
    pub replicas: Vec<i32>,
    /// The log.
    pub log: PartitionLog,
}

/// A topic.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub id: Uuid,
    pub partitions: Vec<Partition>,
    pub replication_factor: i16,
    /// Configs set at creation (the rest are defaults).
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// `message.timestamp.type=LogAppendTime`.
    pub fn log_append_time(&self) -> bool {
        self.configs
            .get("message.timestamp.type")
            .is_some_and(|v| v == "LogAppendTime")
    }
}

/// Why a partition cannot serve a request on this broker.
pub(crate) fn leader_epoch_error(current: i32, requested: i32) -> Option<ErrorCode> {
    if requested < 0 || requested == current {
        None
    } else if requested < current {
        Some(ErrorCode::FENCED_LEADER_EPOCH)
    } else {
        Some(ErrorCode::UNKNOWN_LEADER_EPOCH)
    }
}

/// Everything the brokers share.
pub(crate) struct State {
    pub config: Config,
    pub brokers: Vec<Broker>,
    pub topics: BTreeMap<String, Topic>,
    /// Requests served, by API key (for tests: `FakeCluster::request_count`).
    pub request_counts: HashMap<i16, u64>,
    pub fetch_sessions: FetchSessions,
    pub transactional_ids: TransactionalIds,
    pub coordination: crate::handlers::coordinator::Coordination,
    next_leader: usize,
    next_producer_id: i64,
}

impl State {
    pub fn new(config: Config, brokers: Vec<Broker>) -> Self {
        Self {
            config,
            brokers,
            topics: BTreeMap::new(),
            request_counts: HashMap::new(),
            fetch_sessions: FetchSessions::default(),
            transactional_ids: TransactionalIds::default(),
            coordination: Default::default(),
            next_leader: 0,
            // Distinct from the ids a real cluster hands out at first, so
            // logs tell them apart.
            next_producer_id: 1000,
        }
    }

    /// Whether `id` is one of the brokers.
    pub fn has_broker(&self, id: i32) -> bool {
        self.brokers.iter().any(|b| b.id == id)
    }

    /// A fresh producer id.
    pub fn allocate_producer_id(&mut self) -> i64 {
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        id
    }

    pub fn topic_name_by_id(&self, id: Uuid) -> Option<&str> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(name, _)| name.as_str())
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    pub fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(usize::try_from(partition).ok()?)
    }

    /// The partition if `broker` leads it and `current_leader_epoch` (-1:
    /// unchecked) matches, else the error a Kafka broker would give.
    pub fn led_partition(
        &mut self,
        broker: i32,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<&mut Partition, ErrorCode> {
        let p = self
            .partition_mut(topic, partition)
            .ok_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)?;
        if let Some(e) = leader_epoch_error(p.leader_epoch, current_leader_epoch) {
            return Err(e);
        }
        if p.leader != broker {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        Ok(p)
    }

    /// New partitions, leaders round-robin over the brokers.
    fn new_partitions(&mut self, count: i32, replication_factor: i16) -> Vec<Partition> {
        (0..count)
            .map(|_| {
                let n = self.brokers.len();
                let first = self.next_leader % n;
                self.next_leader += 1;
                let replicas = (0..usize::from(replication_factor.max(1) as u16).min(n))
                    .map(|i| self.brokers[(first + i) % n].id)
                    .collect::<Vec<_>>();
                Partition {
                    leader: replicas[0],
                    leader_epoch: 0,
                    replicas,
                    log: PartitionLog::new(0),
                }
            })
            .collect()
    }

    /// Checks a topic creation as Kafka would; `-1` means the default.
    /// Returns the effective partition count and replication factor.
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<(i32, i16), (ErrorCode, String)> {
        check_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err((
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            ));
        }
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS}."),
            ));
        }
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf <= 0 {
            return Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0.".into(),
            ));
        }
        if rf as usize > self.brokers.len() {
            return Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
                    self.brokers.len()
                ),
            ));
        }
        Ok((partitions, rf))
    }

    /// Creates a topic (see [`State::check_new_topic`]).
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<&Topic, (ErrorCode, String)> {
        let (partitions, rf) = self.check_new_topic(name, partitions, replication_factor)?;
        let topic = Topic {
            id: random_uuid(),
            partitions: self.new_partitions(partitions, rf),
            replication_factor: rf,
            configs,
        };
        Ok(self.topics.entry(name.to_owned()).or_insert(topic))
    }

    /// Grows a topic to `count` partitions.
    pub fn add_partitions(
        &mut self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(topic) = self.topics.get(name) else {
            return Err((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{name}' does not exist."),
            ));
        };
        let current = topic.partitions.len() as i32;
        if count <= current || count > MAX_PARTITIONS {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                if count <= current {
                    format!("Topic currently has {current} partitions, which is higher than the requested {count}.")
                } else {
                    format!("Number of partitions must be at most {MAX_PARTITIONS}.")
                },
            ));
        }
        if validate_only {
            return Ok(());
        }
        let rf = topic.replication_factor;
        let more = self.new_partitions(count - current, rf);
        self.topics
            .get_mut(name)
            .expect("checked above")
            .partitions
            .extend(more);
        Ok(())
    }
}

/// Kafka's topic name rules: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn check_topic_name(name: &str) -> Result<(), (ErrorCode, String)> {
    let invalid = |why: String| Err((ErrorCode::INVALID_TOPIC_EXCEPTION, why));
    if name.is_empty() || name == "." || name == ".." {
        return invalid(format!("Topic name \"{name}\" is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return invalid(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// What the connections and the handlers of all brokers share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken on every change a waiting Fetch (or a delayed answer) may be
    /// waiting for: appends, markers, leader moves, truncations, deletions.
    pub changed: Notify,
    pub faults: Mutex<FaultTable>,
    pub routes: Routes,
    /// Per broker (by index): bumped to close all its connections.
    pub close_generation: Vec<watch::Sender<u64>>,
    /// Set when the cluster stops.
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(state: State, routes: Routes) -> Self {
        let close_generation = state.brokers.iter().map(|_| watch::channel(0).0).collect();
        Self {
            state: Mutex::new(state),
            changed: Notify::new(),
            faults: Mutex::new(FaultTable::default()),
            routes,
            close_generation,
            shutdown: watch::channel(false).0,
        }
    }

    /// The state. Never held across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the whole cluster down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultTable> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes everything waiting for a change of the state.
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }
}
