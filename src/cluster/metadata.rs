//! The client's view of the cluster, built from Metadata responses.

use std::collections::BTreeMap;

use crate::protocol::{messages::MetadataResponse, ErrorCode, Uuid};

/// A snapshot of cluster metadata. Shared as `Arc<Metadata>`; a refresh
/// builds a new snapshot instead of mutating one in use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// The cluster id (Metadata v2+).
    pub cluster_id: Option<String>,
    /// The broker the cluster names as controller. KRaft brokers name one of
    /// themselves, which forwards controller requests.
    pub controller_id: Option<i32>,
    /// Live brokers by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name, including ones the broker answered with an error.
    pub topics: BTreeMap<String, TopicInfo>,
}

/// A broker's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker id (`node.id`).
    pub id: i32,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: i32,
    /// The rack, when configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`, with IPv6 literals in brackets, ready for connecting.
    pub fn addr(&self) -> String {
        format_addr(&self.host, self.port)
    }
}

/// `host:port`, bracketing IPv6 literals.
pub(crate) fn format_addr(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// The topic id (Metadata v10+; zero before).
    pub id: Uuid,
    /// The topic-level error; partitions are empty unless it is `NONE`.
    pub error: ErrorCode,
    /// Whether it is an internal topic such as `__consumer_offsets`.
    pub is_internal: bool,
    /// Partitions by index.
    pub partitions: BTreeMap<i32, PartitionInfo>,
}

/// A partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index.
    pub id: i32,
    /// The partition-level error (e.g. LEADER_NOT_AVAILABLE).
    pub error: ErrorCode,
    /// The leader's broker id, `None` while there is none.
    pub leader: Option<i32>,
    /// The leader epoch (-1 when unknown), used to order leader changes.
    pub leader_epoch: i32,
    /// All replicas.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Replicas whose log directory is offline.
    pub offline: Vec<i32>,
}

impl Metadata {
    /// The topic with id `id`, for APIs that name topics by id (Fetch v13+).
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        if id == Uuid::ZERO {
            return None;
        }
        self.topics.values().find(|t| t.id == id)
    }

    /// Folds a response into a new snapshot based on `self`: brokers and
    /// cluster-level fields are replaced; topics are replaced wholesale when
    /// `requested` is `None`, else only the requested ones (dropped when the
    /// response omits them).
    pub(crate) fn merged(&self, resp: &MetadataResponse, requested: Option<&[String]>) -> Metadata {
        let brokers = resp
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                };
                (b.node_id, info)
            })
            .collect();
        let mut topics = match requested {
            None => BTreeMap::new(),
            Some(names) => {
                let mut t = self.topics.clone();
                for n in names {
                    t.remove(n);
                }
                t
            }
        };
        for t in &resp.topics {
            // Metadata v12+ may omit names of topics requested by id; this
            // client requests by name, so such entries carry nothing usable.
            let Some(name) = &t.name else { continue };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let info = PartitionInfo {
                        id: p.partition_index,
                        error: ErrorCode(p.error_code),
                        leader: (p.leader_id >= 0).then_some(p.leader_id),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.clone(),
                        isr: p.isr_nodes.clone(),
                        offline: p.offline_replicas.clone(),
                    };
                    (p.partition_index, info)
                })
                .collect();
            topics.insert(
                name.clone(),
                TopicInfo {
                    name: name.clone(),
                    id: t.topic_id,
                    error: ErrorCode(t.error_code),
                    is_internal: t.is_internal,
                    partitions,
                },
            );
        }
        Metadata {
            cluster_id: resp.cluster_id.clone(),
            controller_id: (resp.controller_id >= 0).then_some(resp.controller_id),
            brokers,
            topics,
        }
    }
}
