//! The consumer's background task: carries out what the fetch planner
//! (`planner.rs`) decides, and decides nothing itself.
//!
//! It asks the planner what to send, runs each request as a sub-task (so
//! that responses from several brokers are decoded in parallel on a
//! multi-threaded runtime), hands every result back to the planner with the
//! time, tells the cluster's metadata cache what the planner learnt, and
//! holds the fetch connections.

use std::{collections::HashMap, fmt::Display, sync::Arc};

use tokio::{
    task::{Id, JoinSet},
    time::Instant,
};

use super::{
    planner::{ClusterUpdate, Connected, FetchCall, FetchPlanner, Job, Plan, SentFetch},
    requests::{self, FetchAnswer, Item, ItemResult},
    settings::Settings,
    state::Shared,
};
use crate::{
    cluster::{Cluster, ClusterError, Lane, Metadata, Role},
    connection::{BrokerConnection, ConnectionError},
    error::Error,
    protocol::{messages::FetchRequest, ApiKey},
};

/// What a sub-task reports back.
enum Event {
    Connected {
        broker: i32,
        result: Result<BrokerConnection, ClusterError>,
    },
    Metadata {
        topics: Vec<String>,
        result: Result<Arc<Metadata>, ClusterError>,
    },
    Offsets {
        broker: i32,
        items: Vec<Item>,
        result: Result<Vec<ItemResult>, Error>,
    },
    Validated {
        broker: i32,
        items: Vec<Item>,
        /// `None`: the broker cannot validate.
        result: Result<Option<Vec<ItemResult>>, Error>,
    },
    Fetched(Box<(SentFetch, Result<FetchAnswer, ConnectionError>)>),
}

/// Runs until the consumer drops (which aborts it) or closes.
pub(super) async fn run(shared: Arc<Shared>, cluster: Cluster, settings: Arc<Settings>) {
    let _gone = GoneGuard(Arc::clone(&shared));
    let mut driver = Driver {
        shared,
        // Fetches are long-polled: a lane of this consumer's own keeps them
        // from delaying anyone else's requests, and theirs from delaying
        // these.
        fetch_lane: cluster.private_lane(Role::Fetch),
        cluster,
        settings,
        conns: HashMap::new(),
        jobs: JoinSet::new(),
        jobs_started: HashMap::new(),
    };
    loop {
        let planned = {
            let mut st = driver.shared.lock();
            drop_closed_connections(&mut driver.conns, &mut st.planner);
            if st.closing {
                Err(st.planner.close_sessions())
            } else {
                let plan = st.planner.plan(Instant::now());
                st.wake_app();
                Ok((plan, st.planner.poll_timeout()))
            }
        };
        let (plan, wake_at) = match planned {
            Ok(planned) => planned,
            Err(closing) => {
                driver.close_sessions(closing).await;
                return;
            }
        };
        driver.start(plan);
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = driver.jobs.join_next_with_id(), if !driver.jobs.is_empty() => {
                match joined {
                    Ok((id, event)) => {
                        driver.jobs_started.remove(&id);
                        driver.handle(event);
                    }
                    Err(e) => driver.job_failed(e.id()),
                }
            }
            _ = driver.shared.wake_driver.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Tells the application if the task ends (it only does on a bug or when
/// the consumer is dropped).
struct GoneGuard(Arc<Shared>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.driver_gone = true;
        st.wake_app();
    }
}

struct Driver {
    shared: Arc<Shared>,
    /// This consumer's own fetch connections.
    fetch_lane: Lane,
    cluster: Cluster,
    settings: Arc<Settings>,
    /// The open fetch connection of each broker.
    conns: HashMap<i32, BrokerConnection>,
    jobs: JoinSet<Event>,
    /// What each running sub-task does, for the planner if it panics.
    jobs_started: HashMap<Id, Job>,
}

impl Driver {
    fn spawn(&mut self, job: Job, work: impl std::future::Future<Output = Event> + Send + 'static) {
        let id = self.jobs.spawn(work).id();
        self.jobs_started.insert(id, job);
    }

    /// Sends the planner's session-closing fetches. Best effort: failures
    /// are ignored.
    async fn close_sessions(&self, closing: Vec<(i32, i16, FetchRequest)>) {
        let sends = closing.into_iter().filter_map(|(broker, version, request)| {
            let conn = self.conns.get(&broker)?.clone();
            Some(async move {
                if let Err(e) = conn.request_version(&request, version).await {
                    tracing::debug!(broker = conn.addr(), error = %e, "closing the fetch session failed");
                }
            })
        });
        futures::future::join_all(sends).await;
    }

    /// Starts the planned work.
    fn start(&mut self, plan: Plan) {
        let Plan {
            metadata,
            connect,
            list_offsets: lookups,
            validate,
            fetch,
        } = plan;
        if let Some(topics) = metadata {
            let cluster = self.cluster.clone();
            self.spawn(Job::Metadata, async move {
                let result = cluster.metadata(Some(&topics)).await;
                Event::Metadata { topics, result }
            });
        }
        for broker in connect {
            let lane = self.fetch_lane.clone();
            self.spawn(Job::Connect(broker), async move {
                let result = lane.broker(broker).await;
                Event::Connected { broker, result }
            });
        }
        for (broker, items) in lookups {
            let cluster = self.cluster.clone();
            let isolation = self.settings.isolation.wire();
            self.spawn(Job::items(&items), async move {
                let result = list_offsets(&cluster, broker, &items, isolation).await;
                Event::Offsets {
                    broker,
                    items,
                    result,
                }
            });
        }
        for (broker, items) in validate {
            let cluster = self.cluster.clone();
            self.spawn(Job::items(&items), async move {
                let result = offsets_for_leader_epoch(&cluster, broker, &items).await;
                Event::Validated {
                    broker,
                    items,
                    result,
                }
            });
        }
        for call in fetch {
            self.spawn_fetch(call);
        }
    }

    fn spawn_fetch(&mut self, call: FetchCall) {
        let FetchCall {
            broker,
            request,
            keys,
            sent,
        } = call;
        let Some(conn) = self.conns.get(&broker).cloned() else {
            // The planner plans fetches only on connections it was told
            // of, and hears of closed ones before planning.
            let mut st = self.shared.lock();
            st.planner.handle_connection_lost(broker);
            let why: &dyn Display = &"the fetch connection is gone";
            st.planner.handle_fetched(sent, Err(why), Instant::now());
            return;
        };
        let settings = Arc::clone(&self.settings);
        self.spawn(Job::fetch(&sent), async move {
            let result = conn
                .request_version(&request, keys.version)
                .await
                .map(|resp| requests::answer(resp, &keys, &settings));
            Event::Fetched(Box::new((sent, result)))
        });
    }

    /// A sub-task panicked (a bug).
    fn job_failed(&mut self, id: Id) {
        tracing::error!("a consumer sub-task failed unexpectedly");
        if let Some(job) = self.jobs_started.remove(&id) {
            self.shared
                .lock()
                .planner
                .handle_lost_job(job, Instant::now());
        }
    }

    /// Hands a sub-task's result to the planner.
    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        let updates = {
            let mut st = self.shared.lock();
            let planner = &mut st.planner;
            match event {
                Event::Connected { broker, result } => match result {
                    Ok(conn) => {
                        let connected = Connected {
                            addr: conn.addr().to_owned(),
                            fetch_version: conn.version_for(ApiKey::FETCH),
                        };
                        self.conns.insert(broker, conn);
                        planner.handle_connected(broker, Ok(connected), now);
                    }
                    Err(e) => planner.handle_connected(broker, Err(&e), now),
                },
                Event::Metadata { topics, result } => {
                    let result = match &result {
                        Ok(md) => Ok(&**md),
                        Err(e) => Err(e as &dyn Display),
                    };
                    planner.handle_metadata(&topics, result, now);
                }
                Event::Offsets {
                    broker,
                    items,
                    result,
                } => planner.handle_offsets(broker, &items, result, now),
                Event::Validated {
                    broker,
                    items,
                    result,
                } => planner.handle_validated(broker, &items, result, now),
                Event::Fetched(done) => {
                    let (sent, result) = *done;
                    match result {
                        Ok(answer) => planner.handle_fetched(sent, Ok(answer), now),
                        Err(e) => planner.handle_fetched(sent, Err(&e), now),
                    }
                }
            }
            st.wake_app();
            st.planner.take_cluster_updates()
        };
        for update in updates {
            match update {
                ClusterUpdate::Invalidate(topic) => self.cluster.invalidate_topic(&topic),
                ClusterUpdate::LeaderHint {
                    topic,
                    partition,
                    leader,
                    epoch,
                    endpoint,
                } => self
                    .cluster
                    .apply_leader_hint(&topic, partition, leader, epoch, endpoint),
            }
        }
    }
}

/// Forgets the fetch connections that closed, and tells the planner.
fn drop_closed_connections(conns: &mut HashMap<i32, BrokerConnection>, planner: &mut FetchPlanner) {
    conns.retain(|broker, conn| {
        let open = !conn.is_closed();
        if !open {
            planner.handle_connection_lost(*broker);
        }
        open
    });
}

/// Looks up offsets for `items`, all led by `broker`. A timestamp query
/// that finds no record is asked again for the end of the log.
async fn list_offsets(
    cluster: &Cluster,
    broker: i32,
    items: &[Item],
    isolation: i8,
) -> Result<Vec<ItemResult>, Error> {
    let conn = cluster.broker(broker).await?;
    let version =
        requests::list_offsets_version(conn.version_for(ApiKey::LIST_OFFSETS), conn.addr())?;
    let timeout_ms =
        i32::try_from(cluster.config().connection.request_timeout.as_millis()).unwrap_or(i32::MAX);
    let queries: Vec<(&Item, i64)> = items.iter().map(|i| (i, i.query)).collect();
    let request = requests::list_offsets_request(&queries, version, isolation, timeout_ms);
    let resp = conn.request_version(&request, version).await?;
    let mut results = requests::list_offsets_answers(&resp, items);
    let past_end = requests::past_end_queries(items, &results);
    if !past_end.is_empty() {
        let request = requests::list_offsets_request(&past_end, version, isolation, timeout_ms);
        let resp = conn.request_version(&request, version).await?;
        requests::merge_past_end(items, &mut results, &resp);
    }
    requests::refuse_missing_offsets(&mut results);
    Ok(results)
}

/// Asks `broker` for the end offset of each item's fetched epoch; `None`
/// if it cannot validate.
async fn offsets_for_leader_epoch(
    cluster: &Cluster,
    broker: i32,
    items: &[Item],
) -> Result<Option<Vec<ItemResult>>, Error> {
    let conn = cluster.broker(broker).await?;
    let Some(version) =
        requests::validate_version(conn.version_for(ApiKey::OFFSET_FOR_LEADER_EPOCH))
    else {
        return Ok(None);
    };
    let request = requests::offsets_for_leader_epoch_request(items);
    let resp = conn.request_version(&request, version).await?;
    Ok(Some(requests::offsets_for_leader_epoch_answers(
        &resp, items,
    )))
}
