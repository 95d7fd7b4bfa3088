//! The cluster layer against a scripted fake broker (always run), the shared
//! broker (`KAFKA_BOOTSTRAP`), and a private broker that is restarted and
//! paused.

mod common;
#[path = "common/fake_broker.rs"]
mod fake_broker;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fake_broker::{decode_request, delayed, reply, Action, FakeBroker, Seen};
use rskafka::{
    cluster::{Backoff, BackoffConfig, Cluster, ClusterConfig, ClusterError, Role},
    connection::ConnectionConfig,
    protocol::{
        messages::{
            create_topics_request::CreatableTopic,
            metadata_response::{
                MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
            },
            CreateTopicsRequest, MetadataRequest, MetadataResponse,
        },
        ApiKey, ErrorCode, Uuid,
    },
};

fn cluster_config(bootstrap: &str, request_timeout: Duration) -> ClusterConfig {
    ClusterConfig {
        connection: ConnectionConfig {
            request_timeout,
            connect_timeout: Duration::from_secs(5),
            ..ConnectionConfig::default()
        },
        backoff: BackoffConfig::default()
            .initial(Duration::from_millis(50))
            .max(Duration::from_millis(500)),
        connect_deadline: Duration::from_secs(20),
        ..ClusterConfig::new([bootstrap])
    }
}

/// What the fake cluster's Metadata responses describe.
#[derive(Default)]
struct Model {
    /// Broker id → port on 127.0.0.1.
    brokers: BTreeMap<i32, u16>,
    /// Topic → partition → (leader, epoch).
    topics: BTreeMap<String, BTreeMap<i32, (i32, i32)>>,
    delay: Duration,
}

fn metadata_handler(model: Arc<Mutex<Model>>) -> impl Fn(&Seen) -> Action + Send + Sync {
    move |seen| {
        let req: MetadataRequest = decode_request(seen);
        let m = model.lock().unwrap();
        let wanted: Vec<String> = match req.topics {
            None => m.topics.keys().cloned().collect(),
            Some(t) => t.into_iter().filter_map(|t| t.name).collect(),
        };
        let topics = wanted
            .into_iter()
            .map(|name| match m.topics.get(&name) {
                None => MetadataResponseTopic {
                    name: Some(name),
                    error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                    ..Default::default()
                },
                Some(parts) => MetadataResponseTopic {
                    name: Some(name),
                    topic_id: Uuid([7; 16]),
                    partitions: parts
                        .iter()
                        .map(|(&p, &(leader, epoch))| MetadataResponsePartition {
                            partition_index: p,
                            leader_id: leader,
                            leader_epoch: epoch,
                            error_code: if leader < 0 {
                                ErrorCode::LEADER_NOT_AVAILABLE.0
                            } else {
                                0
                            },
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            })
            .collect();
        let resp = MetadataResponse {
            brokers: m
                .brokers
                .iter()
                .map(|(&id, &port)| MetadataResponseBroker {
                    node_id: id,
                    host: "127.0.0.1".into(),
                    port: port.into(),
                    ..Default::default()
                })
                .collect(),
            cluster_id: Some("fake".into()),
            controller_id: m.brokers.keys().next().copied().unwrap_or(-1),
            topics,
            ..Default::default()
        };
        delayed(reply::<MetadataRequest>(&resp, seen.version), m.delay)
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A fake broker that is broker 1 of a one-topic cluster ("t": partition 0
/// led by 1 at epoch 5, partition 1 without leader).
async fn fake_cluster() -> (FakeBroker, Arc<Mutex<Model>>) {
    let model = Arc::new(Mutex::new(Model::default()));
    let fake = FakeBroker::start(None, false, metadata_handler(model.clone())).await;
    {
        let mut m = model.lock().unwrap();
        m.brokers.insert(1, port_of(&fake.addr));
        m.topics
            .insert("t".into(), BTreeMap::from([(0, (1, 5)), (1, (-1, 5))]));
    }
    (fake, model)
}

async fn connect_fake(fake: &FakeBroker) -> Cluster {
    Cluster::connect(cluster_config(&fake.addr, Duration::from_secs(5)))
        .await
        .unwrap()
}

fn connections(fake: &FakeBroker) -> usize {
    fake.seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.conn)
        .collect::<HashSet<_>>()
        .len()
}

#[tokio::test]
async fn bootstrap_gives_up_at_the_deadline() {
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut config = cluster_config(&addr, Duration::from_secs(5));
    config.bootstrap_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let err = Cluster::connect(config).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // Several attempts were made before giving up.
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    match err {
        ClusterError::NoBrokerReachable { tried, last } => {
            assert_eq!(tried, vec![addr]);
            assert!(last.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn bootstrap_to_a_tls_listener_fails_fast_and_says_so() {
    let tls_alert = vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let fake = FakeBroker::start(Some(tls_alert), false, |_| Action::Silent).await;
    let start = Instant::now();
    let err = Cluster::connect(cluster_config(&fake.addr, Duration::from_secs(5)))
        .await
        .unwrap_err();
    // Not retried until the 20 s connect deadline.
    assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("TLS listener"), "{err}");
}

#[tokio::test]
async fn one_connection_per_broker_shared_by_concurrent_callers() {
    let (fake, _model) = fake_cluster().await;
    let cluster = connect_fake(&fake).await;
    let conns = futures::future::join_all((0..20).map(|_| cluster.broker(1))).await;
    for c in &conns {
        assert_eq!(c.as_ref().unwrap().addr(), fake.addr);
    }
    // The bootstrap connection was adopted as broker 1's: one socket in all.
    assert_eq!(connections(&fake), 1);
    assert_eq!(cluster.connected_brokers(), vec![1]);
    assert!(matches!(
        cluster.broker(42).await,
        Err(ClusterError::UnknownBroker(42))
    ));
}

#[tokio::test]
async fn concurrent_refreshes_share_requests() {
    let (fake, model) = fake_cluster().await;
    let cluster = connect_fake(&fake).await;
    assert_eq!(fake.count(ApiKey::METADATA), 1);
    model.lock().unwrap().delay = Duration::from_millis(200);
    let topics = vec!["t".to_string()];
    let results =
        futures::future::join_all((0..20).map(|_| cluster.refresh_metadata(Some(&topics)))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    // One refresh in progress plus at most one that started after the
    // waiting callers asked; never one per caller.
    let refreshes = fake.count(ApiKey::METADATA) - 1;
    assert!((1..=2).contains(&refreshes), "{refreshes} refreshes");
    // Fresh cached metadata is served without a request.
    let before = fake.count(ApiKey::METADATA);
    let results = futures::future::join_all((0..20).map(|_| cluster.metadata(Some(&topics)))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(fake.count(ApiKey::METADATA), before);
    // Invalidation makes the next lookup fetch again.
    cluster.invalidate_topic("t");
    cluster.metadata(Some(&topics)).await.unwrap();
    assert_eq!(fake.count(ApiKey::METADATA), before + 1);
}

#[tokio::test]
async fn leader_lookup_reports_each_kind_of_failure() {
    let (fake, _model) = fake_cluster().await;
    let cluster = connect_fake(&fake).await;
    let (id, conn) = cluster.leader("t", 0).await.unwrap();
    assert_eq!((id, conn.addr()), (1, fake.addr.as_str()));
    let md = cluster.cached_metadata();
    let t = &md.topics["t"];
    assert_eq!(t.id, Uuid([7; 16]));
    assert_eq!(
        md.topic_by_id(Uuid([7; 16])).map(|t| t.name.as_str()),
        Some("t")
    );
    assert_eq!(md.controller_id, Some(1));
    assert_eq!(md.cluster_id.as_deref(), Some("fake"));

    let err = cluster.leader("t", 1).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::LeaderNotAvailable { partition: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_retriable());
    // A cached topic lacking the partition is refreshed once before failing;
    // an unknown topic costs one request, not a second confirming one.
    let before = fake.count(ApiKey::METADATA);
    let err = cluster.leader("t", 7).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::UnknownPartition(_, 7)),
        "{err:?}"
    );
    assert_eq!(fake.count(ApiKey::METADATA), before + 1);
    let err = cluster.leader("nope", 0).await.unwrap_err();
    assert_eq!(fake.count(ApiKey::METADATA), before + 2);
    assert!(
        matches!(err, ClusterError::UnknownTopic(ref t) if t == "nope"),
        "{err:?}"
    );
    assert_eq!(cluster.controller().await.unwrap().addr(), fake.addr);
}

#[tokio::test]
async fn leader_hints_move_leadership_without_metadata_requests() {
    let (fake, model) = fake_cluster().await;
    let fake2 = FakeBroker::start(None, false, metadata_handler(model.clone())).await;
    let cluster = connect_fake(&fake).await;
    assert_eq!(cluster.leader("t", 0).await.unwrap().0, 1);
    let requests = fake.count(ApiKey::METADATA) + fake2.count(ApiKey::METADATA);

    // A stale hint (older epoch) is ignored.
    cluster.apply_leader_hint("t", 0, 2, 4, Some(("127.0.0.1".into(), 1)));
    assert_eq!(cluster.leader("t", 0).await.unwrap().0, 1);

    let port2 = i32::from(port_of(&fake2.addr));
    cluster.apply_leader_hint("t", 0, 2, 6, Some(("127.0.0.1".into(), port2)));
    let (id, conn) = cluster.leader("t", 0).await.unwrap();
    assert_eq!((id, conn.addr()), (2, fake2.addr.as_str()));
    let p = cluster.cached_metadata().topics["t"].partitions[&0].clone();
    assert_eq!((p.leader, p.leader_epoch), (Some(2), 6));
    assert_eq!(
        fake.count(ApiKey::METADATA) + fake2.count(ApiKey::METADATA),
        requests
    );
}

#[tokio::test]
async fn brokers_missing_from_fresh_metadata_are_dropped() {
    let (fake, model) = fake_cluster().await;
    let fake2 = FakeBroker::start(None, false, metadata_handler(model.clone())).await;
    model
        .lock()
        .unwrap()
        .brokers
        .insert(2, port_of(&fake2.addr));
    let cluster = connect_fake(&fake).await;
    let conn2 = cluster.broker(2).await.unwrap();
    assert_eq!(cluster.known_brokers(), HashSet::from([1, 2]));
    model.lock().unwrap().brokers.remove(&2);
    cluster.refresh_metadata(Some(&[])).await.unwrap();
    assert_eq!(cluster.known_brokers(), HashSet::from([1]));
    // Its connection was closed, not just forgotten.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !conn2.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn2.is_closed());
    assert!(matches!(
        cluster.broker(2).await,
        Err(ClusterError::UnknownBroker(2))
    ));
}

#[tokio::test]
async fn each_role_and_private_lane_has_its_own_connection() {
    let (fake, model) = fake_cluster().await;
    let fake2 = FakeBroker::start(None, false, metadata_handler(model.clone())).await;
    let cluster = connect_fake(&fake).await;
    assert_eq!(cluster.leader("t", 0).await.unwrap().0, 1);
    let general = cluster.broker(1).await.unwrap();
    let produce = cluster.broker_for(1, Role::Produce).await.unwrap();
    let fetch = cluster.broker_for(1, Role::Fetch).await.unwrap();
    let lane = cluster.private_lane(Role::Fetch);
    assert_eq!(lane.role(), Role::Fetch);
    let private = lane.broker(1).await.unwrap();
    // The bootstrap connection became the general one; three more sockets.
    assert_eq!(connections(&fake), 4);
    // Shared lanes hand out the same connection again.
    assert_eq!(
        cluster.broker_for(1, Role::Produce).await.unwrap().addr(),
        produce.addr()
    );
    assert_eq!(connections(&fake), 4);

    // A leader hint with a new endpoint moves every lane, private ones too.
    model
        .lock()
        .unwrap()
        .brokers
        .insert(1, port_of(&fake2.addr));
    let port2 = i32::from(port_of(&fake2.addr));
    cluster.apply_leader_hint("t", 0, 1, 9, Some(("127.0.0.1".into(), port2)));
    for old in [&general, &produce, &fetch, &private] {
        assert!(
            closes(old).await,
            "{old:?} still open after the broker moved"
        );
    }
    assert_eq!(lane.broker(1).await.unwrap().addr(), fake2.addr);
    assert_eq!(
        cluster.broker_for(1, Role::Fetch).await.unwrap().addr(),
        fake2.addr
    );

    // Dropping the last clone of a private lane closes its connections.
    let moved = lane.broker(1).await.unwrap();
    let clone = lane.clone();
    drop(lane);
    assert!(!closes(&moved).await);
    drop(clone);
    assert!(closes(&moved).await);
}

/// Whether `conn` is closed within a second (closing is asynchronous).
async fn closes(conn: &rskafka::connection::BrokerConnection) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !conn.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.is_closed()
}

/// Creates a topic through the controller and waits until every partition
/// has a leader.
async fn create_topic(cluster: &Cluster, name: &str, partitions: i32) {
    let controller = cluster.controller().await.unwrap();
    let resp = controller
        .request(&CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.to_string(),
                num_partitions: partitions,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let code = ErrorCode(resp.topics[0].error_code);
    assert!(code.is_ok(), "CreateTopics: {code}");
    let mut backoff = Backoff::new(
        &BackoffConfig::default(),
        Some(tokio::time::Instant::now() + Duration::from_secs(20)),
    );
    for p in 0..partitions {
        loop {
            match cluster.leader(name, p).await {
                Ok(_) => break,
                Err(e) if e.is_retriable() => {
                    cluster.invalidate_topic(name);
                    backoff
                        .wait()
                        .await
                        .unwrap_or_else(|_| panic!("no leader: {e}"));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[tokio::test]
async fn real_cluster_metadata_leaders_and_controller() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let cluster = Cluster::connect(cluster_config(&bootstrap, Duration::from_secs(30)))
        .await
        .unwrap();
    let topic = common::unique_topic("cluster-test");
    create_topic(&cluster, &topic, 3).await;
    let md = cluster.metadata(None).await.unwrap();
    let t = &md.topics[&topic];
    assert_eq!(t.partitions.len(), 3);
    assert_ne!(t.id, Uuid::ZERO);
    assert!(md.cluster_id.is_some());
    for p in 0..3 {
        let (id, conn) = cluster.leader(&topic, p).await.unwrap();
        assert!(md.brokers.contains_key(&id));
        assert!(!conn.is_closed());
    }
    let err = cluster
        .leader(&common::unique_topic("missing"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::UnknownTopic(_)), "{err:?}");
}

/// A metadata round trip on broker `id`'s connection.
async fn ping(cluster: &Cluster, id: i32) -> Result<(), String> {
    let conn = cluster.broker(id).await.map_err(|e| e.to_string())?;
    conn.request(&MetadataRequest {
        topics: Some(vec![]),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn private_broker_restart_and_pause() {
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    let port = common::free_port_base(29192).expect("a free port range");
    let broker = common::PrivateBroker::start(port).expect("private broker");
    let timeout = Duration::from_secs(3);
    let cluster = Cluster::connect(cluster_config(&broker.bootstrap(), timeout))
        .await
        .unwrap();
    let topic = common::unique_topic("restart");
    create_topic(&cluster, &topic, 1).await;
    let (id, before) = cluster.leader(&topic, 0).await.unwrap();
    ping(&cluster, id).await.unwrap();

    // Restarted between two requests: the old connection breaks, the next
    // use of the cluster opens a new one.
    broker.restart().expect("restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !before.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(before.is_closed());
    ping(&cluster, id).await.unwrap();
    let (_, after) = cluster.leader(&topic, 0).await.unwrap();
    assert!(!after.is_closed());

    // Paused: requests fail at the request timeout, not later.
    broker.pause().expect("pause");
    let start = Instant::now();
    let err = ping(&cluster, id).await.unwrap_err();
    let elapsed = start.elapsed();
    broker.resume().expect("resume");
    assert!(err.contains("timed out"), "{err}");
    assert!(elapsed >= timeout && elapsed < timeout * 2, "{elapsed:?}");

    // Resumed: the same Cluster works again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = ping(&cluster, id).await;
    while last.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = ping(&cluster, id).await;
    }
    last.unwrap();
    cluster.invalidate_topic(&topic);
    assert_eq!(cluster.leader(&topic, 0).await.unwrap().0, id);
}

#[tokio::test]
async fn broker_stats_count_requests_timeouts_and_connections() {
    let (fake, model) = fake_cluster().await;
    let mut config = cluster_config(&fake.addr, Duration::from_millis(300));
    config.bootstrap_timeout = Duration::from_secs(5);
    let cluster = Cluster::connect(config).await.unwrap();

    let stats = cluster.broker_stats();
    let boot = stats
        .iter()
        .find(|s| s.node_id == -1)
        .expect("bootstrap figures");
    assert_eq!(boot.addr, fake.addr);
    assert_eq!((boot.connects, boot.connect_failures), (1, 0));
    assert_eq!(boot.connections_open, 1);
    // ApiVersions and Metadata, both answered.
    assert_eq!(boot.requests_sent, 2);
    assert_eq!(boot.responses_received, 2);
    assert!(boot.bytes_sent > 0 && boot.bytes_received > 0, "{boot:?}");
    assert_eq!(boot.requests_in_flight, 0);

    // Another role's connection is counted under the broker's id.
    let produce = cluster.broker_for(1, Role::Produce).await.unwrap();
    let broker1 = |c: &Cluster| {
        c.broker_stats()
            .into_iter()
            .find(|s| s.node_id == 1)
            .expect("broker 1's figures")
    };
    let b1 = broker1(&cluster);
    assert_eq!(b1.addr, fake.addr);
    assert_eq!((b1.connects, b1.connections_open), (1, 1));
    assert_eq!(b1.requests_sent, 1, "ApiVersions");

    // An unanswered request counts as a timeout and leaves flight.
    model.lock().unwrap().delay = Duration::from_secs(2);
    let req = MetadataRequest {
        topics: Some(Vec::new()),
        ..Default::default()
    };
    let err = produce.request(&req).await.unwrap_err();
    assert!(err.to_string().contains("time"), "{err}");
    let b1 = broker1(&cluster);
    assert_eq!(b1.request_timeouts, 1);
    assert_eq!(b1.requests_sent, 2);
    assert_eq!(b1.responses_received, 1);
    assert_eq!(b1.requests_in_flight, 0);

    // A closed connection is counted as ended.
    produce.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker1(&cluster).connections_open > 0 {
        assert!(Instant::now() < deadline, "{:?}", broker1(&cluster));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker1(&cluster).disconnects, 1);
}
