//! Connections by role: a [`Lane`] holds at most one connection per broker
//! for one kind of traffic.
//!
//! A broker reads a connection's requests one at a time and answers them in
//! order, and a fetch may be held for its whole `max_wait`. Traffic that
//! shares a connection therefore waits behind whatever is ahead of it: a
//! ListOffsets behind two consumers' long polls took a second. So each
//! broker gets a connection per role ([`Role`]), each still pipelined and
//! driven by its own task, and consumers fetch on lanes of their own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use super::{lock, Cluster, ClusterError};
use crate::connection::{BrokerConnection, ConnectionConfig, ConnectionError, Counters};

/// The kind of traffic a connection carries; each gets its own connection
/// to a broker, so that none waits behind another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Short requests: metadata, admin, offset lookups, coordinator lookups,
    /// producer ids.
    General,
    /// Produce requests.
    Produce,
    /// Fetch requests, which the broker may hold for their `max_wait`.
    Fetch,
}

impl Role {
    /// Every role, in the order the cluster's shared lanes are kept.
    pub(super) const ALL: [Role; 3] = [Role::General, Role::Produce, Role::Fetch];

    pub(super) fn index(self) -> usize {
        match self {
            Role::General => 0,
            Role::Produce => 1,
            Role::Fetch => 2,
        }
    }
}

/// The connection to one broker, opened on demand.
pub(super) struct Slot {
    addr: Mutex<String>,
    /// The broker's, shared with its slots in other lanes.
    counters: Arc<Counters>,
    current: Mutex<Option<BrokerConnection>>,
    /// Held while connecting, so concurrent callers share one attempt.
    connecting: tokio::sync::Mutex<Attempt>,
}

/// The outcome of the latest connection attempt of a slot.
#[derive(Default)]
struct Attempt {
    error: Option<ConnectionError>,
}

impl Slot {
    pub(super) fn new(addr: String, counters: Arc<Counters>) -> Self {
        Self {
            addr: Mutex::new(addr),
            counters,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(Attempt::default()),
        }
    }

    pub(super) fn addr(&self) -> String {
        lock(&self.addr).clone()
    }

    /// The open connection, if there is one.
    pub(super) fn open(&self) -> Option<BrokerConnection> {
        lock(&self.current)
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Makes `conn` this slot's connection unless it has an open one;
    /// returns whether it did.
    pub(super) fn adopt(&self, conn: BrokerConnection) -> bool {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| !c.is_closed()) {
            return false;
        }
        *current = Some(conn);
        true
    }

    /// Points the slot at a new address, dropping a connection to the old one.
    pub(super) fn set_addr(&self, addr: &str) {
        let mut a = lock(&self.addr);
        if *a != addr {
            *a = addr.to_owned();
            if let Some(c) = lock(&self.current).take() {
                c.close();
            }
        }
    }

    pub(super) fn close(&self) {
        if let Some(c) = lock(&self.current).take() {
            c.close();
        }
    }

    /// The open connection, connecting first if needed. Callers arriving
    /// during an attempt get its outcome, success or failure.
    pub(super) async fn get(
        &self,
        config: &Arc<ConnectionConfig>,
    ) -> Result<BrokerConnection, ConnectionError> {
        if let Some(c) = self.open() {
            return Ok(c);
        }
        let contended = self.connecting.try_lock().is_err();
        let mut attempt = self.connecting.lock().await;
        if let Some(c) = self.open() {
            return Ok(c);
        }
        if contended {
            // Someone else was connecting while we arrived: share the result.
            if let Some(e) = &attempt.error {
                return Err(e.clone());
            }
        }
        let addr = self.addr();
        match BrokerConnection::connect_counted(&addr, config.clone(), self.counters.clone()).await
        {
            Ok(c) => {
                attempt.error = None;
                *lock(&self.current) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                attempt.error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// One role's slots, by broker id.
pub(super) struct Slots {
    pub(super) role: Role,
    pub(super) by_broker: Mutex<HashMap<i32, Arc<Slot>>>,
    traffic: Arc<Traffic>,
    /// A private lane's connections close with it; the shared lanes' stay
    /// usable by whoever holds them, as connections always did.
    close_on_drop: bool,
}

impl Slots {
    pub(super) fn new(role: Role, close_on_drop: bool, traffic: Arc<Traffic>) -> Self {
        Self {
            role,
            by_broker: Mutex::new(HashMap::new()),
            traffic,
            close_on_drop,
        }
    }

    pub(super) fn get(&self, id: i32) -> Option<Arc<Slot>> {
        lock(&self.by_broker).get(&id).cloned()
    }

    /// The slot of broker `id`, created for `addr` if there is none yet.
    pub(super) fn get_or_insert(&self, id: i32, addr: &str) -> Arc<Slot> {
        lock(&self.by_broker)
            .entry(id)
            .or_insert_with(|| Arc::new(Slot::new(addr.to_owned(), self.traffic.of(id))))
            .clone()
    }

    /// Follows the brokers' current addresses and closes the connections of
    /// brokers that left (`addrs` holds every live broker).
    pub(super) fn reconcile(&self, addrs: &HashMap<i32, String>) {
        let departed: Vec<Arc<Slot>> = {
            let mut slots = lock(&self.by_broker);
            for (id, slot) in slots.iter() {
                if let Some(addr) = addrs.get(id) {
                    slot.set_addr(addr);
                }
            }
            let gone: Vec<i32> = slots
                .keys()
                .filter(|id| !addrs.contains_key(id))
                .copied()
                .collect();
            gone.iter().filter_map(|id| slots.remove(id)).collect()
        };
        for slot in departed {
            tracing::debug!(addr = %slot.addr(), role = ?self.role, "broker left the cluster");
            slot.close();
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if !self.close_on_drop {
            return;
        }
        let slots = self.by_broker.get_mut().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            slot.close();
        }
    }
}

/// A private set of connections, one per broker, for one role: e.g. a
/// consumer's fetch connections, so that its long polls and another
/// consumer's never queue behind each other. Its connections close when
/// the lane is dropped.
#[derive(Clone)]
pub struct Lane {
    cluster: Cluster,
    slots: Arc<Slots>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("role", &self.slots.role)
            .finish_non_exhaustive()
    }
}

impl Lane {
    pub(super) fn new(cluster: Cluster, slots: Arc<Slots>) -> Self {
        Self { cluster, slots }
    }

    /// The role this lane's connections carry.
    pub fn role(&self) -> Role {
        self.slots.role
    }

    /// This lane's connection to broker `id`, (re)connecting if needed. An
    /// id not in the cached metadata triggers one refresh of the broker
    /// list.
    pub async fn broker(&self, id: i32) -> Result<BrokerConnection, ClusterError> {
        self.cluster.connection_in(&self.slots, id).await
    }
}

/// Traffic counters by broker id (-1: bootstrap addresses), shared by all
/// lanes' connections to a broker so that its figures add up across roles
/// and reconnects.
#[derive(Default)]
pub(super) struct Traffic {
    by_broker: Mutex<HashMap<i32, Arc<Counters>>>,
}

impl Traffic {
    pub(super) fn of(&self, id: i32) -> Arc<Counters> {
        lock(&self.by_broker).entry(id).or_default().clone()
    }

    /// Every broker's counters, by id.
    pub(super) fn all(&self) -> Vec<(i32, Arc<Counters>)> {
        let mut all: Vec<_> = lock(&self.by_broker)
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// The lanes a cluster follows: its shared ones and the live private ones.
pub(super) struct Lanes {
    shared: [Arc<Slots>; 3],
    private: Mutex<Vec<Weak<Slots>>>,
    pub(super) traffic: Arc<Traffic>,
}

impl Lanes {
    pub(super) fn new() -> Self {
        let traffic = Arc::new(Traffic::default());
        Self {
            shared: Role::ALL.map(|r| Arc::new(Slots::new(r, false, traffic.clone()))),
            private: Mutex::new(Vec::new()),
            traffic,
        }
    }

    pub(super) fn shared(&self, role: Role) -> &Arc<Slots> {
        &self.shared[role.index()]
    }

    pub(super) fn new_private(&self, role: Role) -> Arc<Slots> {
        let slots = Arc::new(Slots::new(role, true, self.traffic.clone()));
        let mut private = lock(&self.private);
        private.retain(|w| w.strong_count() > 0);
        private.push(Arc::downgrade(&slots));
        slots
    }

    /// Every live lane.
    pub(super) fn all(&self) -> Vec<Arc<Slots>> {
        let mut all: Vec<Arc<Slots>> = self.shared.to_vec();
        let mut private = lock(&self.private);
        private.retain(|w| w.strong_count() > 0);
        all.extend(private.iter().filter_map(Weak::upgrade));
        all
    }
}
