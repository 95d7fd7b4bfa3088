//! The admin client against a real broker (`KAFKA_BOOTSTRAP`; skipped with
//! a notice when unset): cluster, configs, ACLs, reassignments, elections,
//! quotas, SCRAM users, log directories, producers, transactions, and
//! offsets in one ListOffsets request per leader.
//!
//! The SCRAM test also authenticates with the new user when the broker has
//! the security listeners (`KAFKA_SASL_PLAINTEXT`, as in CI). The ACL test
//! checks the round trip where the broker has an authorizer, and otherwise
//! that every ACL call fails with a named SECURITY_DISABLED.

mod common;

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use rskafka::{
    client::{
        admin::{
            AclBinding, AclFilter, AclOperation, AclPermission, ConfigOp, ConfigResource,
            ConfigSource, ElectionResult, ElectionType, PatternType, QuotaEntity, QuotaEntityType,
            QuotaFilter, QuotaMatch, ResourceType,
        },
        group::TopicPartition,
        partition::{Compression, IsolationLevel, OffsetAt},
        producer::{ProducerConfig, ProducerRecord},
        Client, ClientBuilder,
    },
    connection::sasl::{Credentials, SaslConfig, ScramHash},
    protocol::ErrorCode,
    record::Record,
};
use time::OffsetDateTime;

use common::unique_topic;

/// Fails the test instead of hanging it.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("test did not finish within its time limit")
}

async fn connect(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_owned()])
        .operation_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("client")
}

async fn create_topic(client: &Client, name: &str, partitions: i32) {
    client
        .controller_client()
        .expect("controller")
        .create_topic(name, partitions, 1, 30_000)
        .await
        .expect("create topic");
}

fn record(value: &str) -> Record {
    Record {
        key: None,
        value: Some(value.to_owned().into()),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

/// Writes `n` records to each partition of `topic` with the partition client.
async fn fill(client: &Client, topic: &str, partitions: i32, n: usize) {
    for p in 0..partitions {
        let pc = client.partition_client(topic, p).await.expect("partition");
        let records = (0..n).map(|i| record(&format!("r{i}"))).collect();
        pc.produce(records, Compression::None)
            .await
            .expect("produce");
    }
}

#[tokio::test]
async fn describe_cluster_names_id_brokers_and_controller() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let c = client.admin().describe_cluster().await.expect("describe");
        assert!(!c.cluster_id.is_empty());
        assert!(!c.brokers.is_empty());
        let controller = c.controller_id.expect("a controller");
        assert!(c.brokers.iter().any(|b| b.id == controller), "{c:?}");
        let md = client.metadata().await.expect("metadata");
        assert_eq!(Some(c.cluster_id.as_str()), md.cluster_id.as_deref());
        let ids: Vec<i32> = c.brokers.iter().map(|b| b.id).collect();
        assert_eq!(ids, md.brokers.keys().copied().collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn broker_config_set_shows_dynamic_source_and_delete_restores() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let admin = connect(&addr).await.admin();
        let broker = admin.describe_cluster().await.expect("cluster").brokers[0].id;
        let resource = ConfigResource::Broker(broker);
        let before = admin.describe_configs(&resource).await.expect("describe");
        // A broker's configs come from several sources.
        assert!(before.values().any(|c| c.source == ConfigSource::Default));
        assert!(before
            .values()
            .any(|c| c.source == ConfigSource::StaticBroker));
        let key = "log.cleaner.backoff.ms";
        let original = before[key].clone();
        assert_ne!(original.source, ConfigSource::DynamicBroker, "{original:?}");

        admin
            .alter_configs(
                &resource,
                &[(key.to_owned(), ConfigOp::Set("15001".into()))],
            )
            .await
            .expect("alter");
        let after = admin.describe_configs(&resource).await.expect("describe");
        assert_eq!(after[key].value.as_deref(), Some("15001"));
        assert_eq!(after[key].source, ConfigSource::DynamicBroker);

        admin
            .alter_configs(&resource, &[(key.to_owned(), ConfigOp::Delete)])
            .await
            .expect("delete");
        let restored = admin.describe_configs(&resource).await.expect("describe");
        assert_eq!(restored[key].value, original.value);
        assert_eq!(restored[key].source, original.source);

        // A per-resource error names the resource.
        let e = admin
            .alter_configs(&resource, &[(key.to_owned(), ConfigOp::Set("abc".into()))])
            .await
            .expect_err("not a number");
        assert!(
            matches!(
                e.error_code(),
                Some(ErrorCode::INVALID_REQUEST | ErrorCode::INVALID_CONFIG)
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("broker {broker}")), "{e}");
    })
    .await;
}

#[tokio::test]
async fn topic_config_through_the_admin_client() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let admin = client.admin();
        let topic = unique_topic("admin-config");
        create_topic(&client, &topic, 1).await;
        let resource = ConfigResource::Topic(topic.clone());
        admin
            .alter_configs(
                &resource,
                &[("retention.ms".into(), ConfigOp::Set("123456".into()))],
            )
            .await
            .expect("alter");
        let configs = admin.describe_configs(&resource).await.expect("describe");
        assert_eq!(configs["retention.ms"].value.as_deref(), Some("123456"));
        assert_eq!(configs["retention.ms"].source, ConfigSource::Topic);
        // The controller client's topic configs are the same function.
        let same = client
            .controller_client()
            .expect("controller")
            .describe_topic_configs(&topic)
            .await
            .expect("describe");
        assert_eq!(same, configs);

        let missing = ConfigResource::Topic(unique_topic("admin-missing"));
        let e = admin
            .describe_configs(&missing)
            .await
            .expect_err("no such topic");
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            "{e}"
        );
        let ConfigResource::Topic(name) = &missing else {
            unreachable!()
        };
        assert_eq!(e.topic(), Some(name.as_str()));
    })
    .await;
}

#[tokio::test]
async fn acls_round_trip_or_security_disabled() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let admin = connect(&addr).await.admin();
        let topic = unique_topic("admin-acl");
        let acl = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: topic.clone(),
            pattern_type: PatternType::Literal,
            principal: "User:rskafka-test".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        let filter = AclFilter {
            resource_type: ResourceType::Topic,
            resource_name: Some(topic.clone()),
            pattern_type: PatternType::Literal,
            ..AclFilter::default()
        };
        match admin.describe_acls(&filter).await {
            Err(e) if e.error_code() == Some(ErrorCode::SECURITY_DISABLED) => {
                testkit::skip("the ACL round trip: the broker has no authorizer (KAFKA_SECURITY=1 scripts/kafka up has one)");
                assert!(e.to_string().contains("DescribeAcls"), "{e}");
                let e = admin
                    .create_acls(std::slice::from_ref(&acl))
                    .await
                    .expect_err("create");
                assert_eq!(e.error_code(), Some(ErrorCode::SECURITY_DISABLED), "{e}");
                assert!(e.to_string().contains(&topic), "names the ACL: {e}");
                let e = admin.delete_acls(&filter).await.expect_err("delete");
                assert_eq!(e.error_code(), Some(ErrorCode::SECURITY_DISABLED), "{e}");
            }
            Err(e) => panic!("describe ACLs: {e}"),
            Ok(before) => {
                assert!(before.is_empty(), "{before:?}");
                admin
                    .create_acls(std::slice::from_ref(&acl))
                    .await
                    .expect("create");
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let now = admin.describe_acls(&filter).await.expect("describe");
                    if now == vec![acl.clone()] {
                        break;
                    }
                    assert!(Instant::now() < deadline, "ACL not visible: {now:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let deleted = admin.delete_acls(&filter).await.expect("delete");
                assert_eq!(deleted, vec![acl]);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn reassignment_to_the_same_replicas_then_cancel_finds_nothing() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let admin = client.admin();
        let topic = unique_topic("admin-reassign");
        create_topic(&client, &topic, 1).await;
        let md = client.metadata().await.expect("metadata");
        let replicas = md.topics[&topic].partitions[&0].replicas.clone();
        let tp = TopicPartition::new(topic.as_str(), 0);
        admin
            .alter_partition_reassignments(&BTreeMap::from([(tp.clone(), Some(replicas))]))
            .await
            .expect("alter");
        // Same replicas: nothing moves, so nothing stays in progress.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = admin
                .list_partition_reassignments(Some(std::slice::from_ref(&tp)))
                .await
                .expect("list");
            if list.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still reassigning: {list:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = admin
            .alter_partition_reassignments(&BTreeMap::from([(tp.clone(), None)]))
            .await
            .expect_err("nothing to cancel");
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::NO_REASSIGNMENT_IN_PROGRESS),
            "{e}"
        );
        assert_eq!((e.topic(), e.partition()), (Some(topic.as_str()), Some(0)));
    })
    .await;
}

#[tokio::test]
async fn preferred_election_on_a_preferred_leader_is_not_needed() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let topic = unique_topic("admin-elect");
        create_topic(&client, &topic, 1).await;
        let tp = TopicPartition::new(topic.as_str(), 0);
        let missing = TopicPartition::new(topic.as_str(), 7);
        let results = client
            .admin()
            .elect_leaders(
                ElectionType::Preferred,
                Some(&[tp.clone(), missing.clone()]),
            )
            .await
            .expect("elect");
        assert!(
            matches!(results[&tp], ElectionResult::NotNeeded),
            "{results:?}"
        );
        match &results[&missing] {
            ElectionResult::Failed(e) => {
                assert_eq!(
                    e.error_code(),
                    Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                    "{e}"
                );
                assert_eq!(e.partition(), Some(7));
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn client_quota_set_describe_remove() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let admin = connect(&addr).await.admin();
        let user = unique_topic("quota-user");
        let client_id = unique_topic("quota-client");
        let entity = QuotaEntity(BTreeMap::from([
            (QuotaEntityType::User, Some(user.clone())),
            (QuotaEntityType::ClientId, Some(client_id.clone())),
        ]));
        let filter = [
            QuotaFilter {
                entity_type: QuotaEntityType::User,
                matching: QuotaMatch::Exact(user.clone()),
            },
            QuotaFilter {
                entity_type: QuotaEntityType::ClientId,
                matching: QuotaMatch::Exact(client_id.clone()),
            },
        ];
        admin
            .alter_client_quotas(&entity, &[("producer_byte_rate".into(), Some(1024.0))])
            .await
            .expect("alter");
        let quotas = admin
            .describe_client_quotas(&filter, true)
            .await
            .expect("describe");
        assert_eq!(
            quotas
                .get(&entity)
                .and_then(|q| q.get("producer_byte_rate")),
            Some(&1024.0),
            "{quotas:?}"
        );
        admin
            .alter_client_quotas(&entity, &[("producer_byte_rate".into(), None)])
            .await
            .expect("remove");
        let quotas = admin
            .describe_client_quotas(&filter, true)
            .await
            .expect("describe");
        assert!(
            quotas
                .get(&entity)
                .is_none_or(|q| !q.contains_key("producer_byte_rate")),
            "{quotas:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn scram_user_upsert_describe_authenticate_delete() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let admin = connect(&addr).await.admin();
        let user = unique_topic("scram-user");
        let users = [user.clone()];
        admin
            .upsert_scram_credential(&user, ScramHash::Sha256, 4096, "s3cret")
            .await
            .expect("upsert 256");
        admin
            .upsert_scram_credential(&user, ScramHash::Sha512, 8192, "s3cret")
            .await
            .expect("upsert 512");
        let creds = admin
            .describe_user_scram_credentials(Some(&users))
            .await
            .expect("describe");
        let mut infos: Vec<(ScramHash, i32)> = creds[&user]
            .iter()
            .map(|i| (i.mechanism, i.iterations))
            .collect();
        infos.sort_by_key(|(m, _)| m.mechanism());
        assert_eq!(
            infos,
            vec![(ScramHash::Sha256, 4096), (ScramHash::Sha512, 8192)]
        );

        match std::env::var("KAFKA_SASL_PLAINTEXT") {
            Ok(sasl_addr) if !sasl_addr.is_empty() => {
                // The broker checks the password against what we salted.
                for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                    let sasl = SaslConfig::from_mechanism_name(
                        mechanism,
                        Credentials::new(user.as_str(), "s3cret"),
                    )
                    .expect("mechanism");
                    let client = ClientBuilder::new(vec![sasl_addr.clone()])
                        .sasl(sasl)
                        .build()
                        .await
                        .unwrap_or_else(|e| panic!("{mechanism} as the new user: {e}"));
                    client.list_topics().await.expect("authenticated request");
                }
            }
            _ => testkit::skip("authenticating as the new user: KAFKA_SASL_PLAINTEXT not set"),
        }

        admin
            .delete_scram_credential(&user, ScramHash::Sha256)
            .await
            .expect("delete 256");
        admin
            .delete_scram_credential(&user, ScramHash::Sha512)
            .await
            .expect("delete 512");
        let e = admin
            .describe_user_scram_credentials(Some(&users))
            .await
            .expect_err("no credentials left");
        assert_eq!(e.error_code(), Some(ErrorCode::RESOURCE_NOT_FOUND), "{e}");
        assert!(e.to_string().contains(&user), "names the user: {e}");
        let e = admin
            .upsert_scram_credential(&user, ScramHash::Sha256, 100, "x")
            .await
            .expect_err("too few iterations");
        assert!(e.to_string().contains("iterations"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn log_dirs_show_the_size_of_written_partitions() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let topic = unique_topic("admin-logdirs");
        create_topic(&client, &topic, 2).await;
        fill(&client, &topic, 1, 50).await;
        let leader = client.metadata().await.expect("metadata").topics[&topic].partitions[&0]
            .leader
            .expect("leader");
        let dirs = client
            .admin()
            .describe_log_dirs(Some(&[leader]))
            .await
            .expect("log dirs");
        assert!(!dirs.is_empty());
        assert!(dirs.iter().all(|d| d.broker == leader && d.error.is_none()));
        let replica = |p: i32| {
            dirs.iter()
                .find_map(|d| d.replicas.get(&TopicPartition::new(topic.as_str(), p)))
                .copied()
                .unwrap_or_else(|| panic!("partition {p} in no log dir"))
        };
        assert!(replica(0).size > 0, "{:?}", replica(0));
        assert_eq!(replica(1).size, 0);
    })
    .await;
}

#[tokio::test]
async fn describe_producers_shows_an_idempotent_producer() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let topic = unique_topic("admin-producers");
        create_topic(&client, &topic, 2).await;
        let producer = client
            .producer(ProducerConfig::default().idempotence(true))
            .expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..3 {
            let r = ProducerRecord::new(topic.as_str(), record(&format!("v{i}"))).with_partition(0);
            deliveries.push(producer.send(r).await.expect("send"));
        }
        for d in deliveries {
            d.await.expect("delivered");
        }
        let (producer_id, epoch) = producer.producer_id().expect("a producer id");
        let partitions = [
            TopicPartition::new(topic.as_str(), 0),
            TopicPartition::new(topic.as_str(), 1),
        ];
        let states = client
            .admin()
            .describe_producers(&partitions)
            .await
            .expect("describe producers");
        let p0 = &states[&partitions[0]];
        assert_eq!(p0.len(), 1, "{p0:?}");
        assert_eq!(p0[0].producer_id, producer_id);
        assert_eq!(p0[0].producer_epoch, i32::from(epoch));
        assert_eq!(p0[0].last_sequence, 2, "three records: sequences 0..=2");
        assert_eq!(p0[0].current_txn_start_offset, None);
        assert!(states[&partitions[1]].is_empty());
        producer.close().await;
    })
    .await;
}

#[tokio::test]
async fn transactions_are_listed_and_described_by_their_coordinator() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let admin = client.admin();
        let topic = unique_topic("admin-txn");
        create_topic(&client, &topic, 1).await;
        let id = unique_topic("admin-txn-id");
        let producer = client
            .producer(ProducerConfig::default().transactional_id(id.as_str()))
            .expect("producer");
        producer.init_transactions().await.expect("init");
        producer.begin_transaction().expect("begin");
        let r = ProducerRecord::new(topic.as_str(), record("in txn")).with_partition(0);
        producer
            .send(r)
            .await
            .expect("send")
            .await
            .expect("delivered");

        let open = admin
            .describe_transaction(&id)
            .await
            .expect("describe open");
        assert_eq!(open.state, "Ongoing");
        assert_eq!(
            open.partitions,
            vec![TopicPartition::new(topic.as_str(), 0)]
        );
        assert!(open.start_time_ms.is_some());
        let (producer_id, _) = producer.producer_id().expect("producer id");
        assert_eq!(open.producer_id, producer_id);
        // The open transaction shows in the partition's producer state too.
        let states = admin
            .describe_producers(&[TopicPartition::new(topic.as_str(), 0)])
            .await
            .expect("producers");
        let state = states
            .values()
            .flatten()
            .find(|s| s.producer_id == producer_id);
        assert_eq!(state.and_then(|s| s.current_txn_start_offset), Some(0));

        producer.commit_transaction().await.expect("commit");
        // EndTxn returns once PrepareCommit is logged; the markers follow.
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = loop {
            let d = admin
                .describe_transaction(&id)
                .await
                .expect("describe done");
            match d.state.as_str() {
                "CompleteCommit" => break d,
                "PrepareCommit" if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("state {other} after commit"),
            }
        };
        assert!(done.partitions.is_empty());
        let listed = admin.list_transactions().await.expect("list");
        let mine = listed
            .iter()
            .find(|t| t.transactional_id == id)
            .expect("listed");
        assert_eq!(
            (mine.producer_id, mine.state.as_str()),
            (producer_id, "CompleteCommit")
        );
        assert_eq!(mine.coordinator, done.coordinator);

        let e = admin
            .describe_transaction(&unique_topic("admin-no-txn"))
            .await
            .expect_err("unknown id");
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::TRANSACTIONAL_ID_NOT_FOUND),
            "{e}"
        );
        producer.close().await;
    })
    .await;
}

#[tokio::test]
async fn list_offsets_sends_one_request_per_leader() {
    let Some(addr) = testkit::real_bootstrap(
        "the admin APIs (ACLs, quotas, SCRAM users, log dirs, reassignments, groups)",
    ) else {
        return;
    };
    bounded(async {
        let client = connect(&addr).await;
        let admin = client.admin();
        let topic = unique_topic("admin-offsets");
        create_topic(&client, &topic, 4).await;
        fill(&client, &topic, 4, 5).await;
        let queries = |at: OffsetAt| -> BTreeMap<TopicPartition, OffsetAt> {
            (0..4)
                .map(|p| (TopicPartition::new(topic.as_str(), p), at))
                .collect()
        };
        let ends = admin
            .list_offsets(&queries(OffsetAt::Latest), IsolationLevel::ReadUncommitted)
            .await
            .expect("latest");
        assert_eq!(ends.len(), 4);
        assert!(ends.values().all(|o| *o == 5), "{ends:?}");
        // Metadata is cached now: the next lookup is one request per leader.
        let leaders = client.metadata().await.expect("metadata").topics[&topic]
            .partitions
            .values()
            .filter_map(|p| p.leader)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        let sent = |c: &Client| {
            c.broker_stats()
                .iter()
                .map(|b| b.requests_sent)
                .sum::<u64>()
        };
        let before = sent(&client);
        let starts = admin
            .list_offsets(
                &queries(OffsetAt::Earliest),
                IsolationLevel::ReadUncommitted,
            )
            .await
            .expect("earliest");
        assert_eq!(sent(&client) - before, leaders);
        assert!(starts.values().all(|o| *o == 0), "{starts:?}");
        let future = OffsetAt::Timestamp(OffsetDateTime::now_utc() + time::Duration::hours(1));
        let none = admin
            .list_offsets(&queries(future), IsolationLevel::ReadUncommitted)
            .await
            .expect("by time");
        assert!(none.values().all(|o| *o == -1), "{none:?}");
        let missing = BTreeMap::from([(TopicPartition::new(topic.as_str(), 9), OffsetAt::Latest)]);
        let e = admin
            .list_offsets(&missing, IsolationLevel::ReadUncommitted)
            .await
            .expect_err("no partition 9");
        assert_eq!(e.partition(), Some(9), "{e}");

        // Partitions added by another client are found although this
        // client's cached metadata predates them.
        connect(&addr)
            .await
            .controller_client()
            .expect("controller")
            .create_partitions(&topic, 5, 30_000)
            .await
            .expect("add a partition");
        let new = BTreeMap::from([(TopicPartition::new(topic.as_str(), 4), OffsetAt::Latest)]);
        let end = admin
            .list_offsets(&new, IsolationLevel::ReadUncommitted)
            .await
            .expect("the new partition");
        assert_eq!(end.values().copied().collect::<Vec<_>>(), vec![0]);
    })
    .await;
}
