//! Transactions on the fake cluster, driven by rskafka's transactional
//! producer: commit and abort as read_committed sees them, offsets sent to
//! a transaction, fencing by a newer producer with the same id, with
//! transaction version 2 (the default) and 1; and EndTxn v5 by hand.

use std::time::Duration;

mod common;

use std::sync::Arc;

use rskafka::{
    client::{
        consumer::{ConsumerConfig, IsolationLevel, StartOffset},
        group::{ConsumerGroupMetadata, TopicPartition},
        producer::{Producer, ProducerConfig, ProducerRecord},
        Client,
    },
    connection::{BrokerConnection, ConnectionConfig},
    protocol::{
        messages::{
            txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            },
            EndTxnRequest, InitProducerIdRequest, TxnOffsetCommitRequest,
        },
        ApiKey, ErrorCode,
    },
    record::Record,
};
use rskafka_fake::FakeCluster;
use time::OffsetDateTime;

async fn transactional(client: &Client, id: &str) -> Producer {
    let producer = client
        .producer(ProducerConfig::default().transactional_id(id))
        .expect("producer");
    producer.init_transactions().await.expect("init");
    producer
}

async fn send(producer: &Producer, topic: &str, value: &str) {
    let record = Record {
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    };
    producer
        .send(ProducerRecord::new(topic, record).with_partition(0))
        .await
        .expect("send");
}

/// The values read_committed sees up to the last stable offset.
async fn committed_values(client: &Client, topic: &str) -> Vec<String> {
    let mut consumer = client
        .consumer(
            ConsumerConfig::default()
                .assign(topic, 0, StartOffset::Earliest)
                .isolation(IsolationLevel::ReadCommitted),
        )
        .expect("consumer");
    let mut out = Vec::new();
    while let Ok(Ok(batch)) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next_batch()).await
    {
        out.extend(batch.into_iter().map(|r| {
            String::from_utf8(r.record.value.as_deref().unwrap_or_default().to_vec()).unwrap()
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_transactions_only() {
    let (_cluster, client) = common::start(3, "txn", 1).await;
    let producer = transactional(&client, "t1").await;
    producer.begin_transaction().expect("begin");
    send(&producer, "txn", "committed-1").await;
    producer.commit_transaction().await.expect("commit");
    producer.begin_transaction().expect("begin");
    send(&producer, "txn", "aborted").await;
    producer.flush().await;
    producer.abort_transaction().await.expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, "txn", "committed-2").await;
    producer.commit_transaction().await.expect("commit");
    assert_eq!(
        committed_values(&client, "txn").await,
        ["committed-1", "committed-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_producer_fences_the_older_and_aborts_its_transaction() {
    let (_cluster, client) = common::start(3, "fenced", 1).await;
    let old = transactional(&client, "same-id").await;
    old.begin_transaction().expect("begin");
    send(&old, "fenced", "never-visible").await;
    old.flush().await;
    let new = transactional(&client, "same-id").await;
    let err = old.commit_transaction().await.expect_err("fenced");
    assert!(err.is_fatal(), "{err}");
    new.begin_transaction().expect("begin");
    send(&new, "fenced", "visible").await;
    new.commit_transaction().await.expect("commit");
    assert_eq!(committed_values(&client, "fenced").await, ["visible"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_count_only_once_it_commits() {
    let (_cluster, client) = common::start(3, "offsets", 1).await;
    let producer = transactional(&client, "t-offsets").await;
    let group = ConsumerGroupMetadata::new("g-offsets");
    let tp = TopicPartition::new("offsets", 0);
    let committed = || async {
        client
            .group_admin()
            .fetch_offsets("g-offsets", Some(std::slice::from_ref(&tp)))
            .await
            .expect("fetch offsets")
            .get(&tp)
            .cloned()
            .flatten()
            .map(|c| c.offset)
    };
    producer.begin_transaction().expect("begin");
    send(&producer, "offsets", "a").await;
    producer
        .send_offsets_to_transaction([(tp.clone(), 7)], &group)
        .await
        .expect("send offsets");
    producer.abort_transaction().await.expect("abort");
    assert_eq!(
        committed().await,
        None,
        "an aborted transaction commits nothing"
    );

    producer.begin_transaction().expect("begin");
    send(&producer, "offsets", "b").await;
    producer
        .send_offsets_to_transaction([(tp.clone(), 9)], &group)
        .await
        .expect("send offsets");
    producer.commit_transaction().await.expect("commit");
    assert_eq!(committed().await, Some(9));
}

/// The same transactions under both transaction versions: version 2 adds
/// partitions and offsets without AddPartitionsToTxn/AddOffsetsToTxn and
/// moves the epoch on with every EndTxn; version 1 keeps the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transaction_versions_commit_and_abort() {
    for version in [2, 1] {
        let cluster = FakeCluster::builder()
            .transaction_version(version)
            .start()
            .await
            .expect("fake cluster starts");
        cluster.create_topic("tv", 1).expect("topic");
        let client = common::client(&cluster).await;
        let producer = transactional(&client, "t-tv").await;
        let (id, first_epoch) = producer.producer_id().expect("producer id");
        let group = ConsumerGroupMetadata::new("g-tv");
        for (i, commit) in [true, false, true].into_iter().enumerate() {
            producer.begin_transaction().expect("begin");
            send(&producer, "tv", &format!("{i}")).await;
            producer
                .send_offsets_to_transaction([(TopicPartition::new("tv", 0), i as i64 + 1)], &group)
                .await
                .expect("offsets");
            if commit {
                producer.commit_transaction().await.expect("commit");
            } else {
                producer.flush().await;
                producer.abort_transaction().await.expect("abort");
            }
            let epoch = if version == 2 {
                first_epoch + i as i16 + 1
            } else {
                first_epoch
            };
            assert_eq!(
                producer.producer_id(),
                Some((id, epoch)),
                "version {version}"
            );
        }
        assert_eq!(
            committed_values(&client, "tv").await,
            ["0", "2"],
            "version {version}"
        );
        let explicit_adds = cluster.request_count(ApiKey::ADD_PARTITIONS_TO_TXN)
            + cluster.request_count(ApiKey::ADD_OFFSETS_TO_TXN);
        if version == 2 {
            assert_eq!(explicit_adds, 0);
        } else {
            assert_eq!(explicit_adds, 6);
            let end_txn = cluster
                .served_apis()
                .into_iter()
                .find(|(k, _, _)| *k == ApiKey::END_TXN);
            assert_eq!(end_txn, Some((ApiKey::END_TXN, 0, 4)));
        }
    }
}

/// A raw connection to the cluster's first broker.
async fn first_broker(cluster: &FakeCluster) -> BrokerConnection {
    BrokerConnection::connect(
        &cluster.broker_addrs()[0].to_string(),
        Arc::new(ConnectionConfig::default()),
    )
    .await
    .expect("connect")
}

/// A TxnOffsetCommit of `offset` for partition 0 of `topic` (at v5 it
/// opens the transaction and adds the group itself), outside any group
/// generation.
fn txn_offset_commit(
    transactional_id: &str,
    (producer_id, producer_epoch): (i64, i16),
    group: &str,
    topic: &str,
    offset: i64,
) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest {
        transactional_id: transactional_id.into(),
        group_id: group.into(),
        producer_id,
        producer_epoch,
        generation_id: -1,
        topics: vec![TxnOffsetCommitRequestTopic {
            name: topic.into(),
            partitions: vec![TxnOffsetCommitRequestPartition {
                partition_index: 0,
                committed_offset: offset,
                committed_leader_epoch: -1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn end_txn_v5_bumps_the_epoch_and_answers_a_retry_alike() {
    let cluster = FakeCluster::builder()
        .start()
        .await
        .expect("fake cluster starts");
    cluster.create_topic("tv2", 1).expect("topic");
    let conn = first_broker(&cluster).await;
    let init = conn
        .request(&InitProducerIdRequest {
            transactional_id: Some("raw".into()),
            transaction_timeout_ms: 60_000,
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        })
        .await
        .expect("init");
    let (id, epoch) = (init.producer_id, init.producer_epoch);
    // TxnOffsetCommit v5 opens the transaction and adds the group itself.
    let offsets = conn
        .request(&txn_offset_commit("raw", (id, epoch), "g-raw", "tv2", 5))
        .await
        .expect("txn offset commit");
    assert_eq!(offsets.topics[0].partitions[0].error_code, 0);
    let end = |epoch: i16| EndTxnRequest {
        transactional_id: "raw".into(),
        producer_id: id,
        producer_epoch: epoch,
        committed: true,
        ..Default::default()
    };
    let ended = conn.request(&end(epoch)).await.expect("end");
    assert_eq!(
        (ended.error_code, ended.producer_id, ended.producer_epoch),
        (0, id, epoch + 1)
    );
    let retried = conn.request(&end(epoch)).await.expect("retry");
    assert_eq!(
        (
            retried.error_code,
            retried.producer_id,
            retried.producer_epoch
        ),
        (0, id, epoch + 1),
        "a retry gets the same answer"
    );
    let nothing_open = conn.request(&end(epoch + 1)).await.expect("end");
    assert_eq!(
        ErrorCode(nothing_open.error_code),
        ErrorCode::INVALID_TXN_STATE
    );
    // Aborting nothing fences what may still be in flight: a new epoch.
    let aborted = conn
        .request(&EndTxnRequest {
            committed: false,
            ..end(epoch + 1)
        })
        .await
        .expect("abort");
    assert_eq!((aborted.error_code, aborted.producer_epoch), (0, epoch + 2));
    let stale = conn.request(&end(epoch - 1)).await.expect("end");
    assert_eq!(ErrorCode(stale.error_code), ErrorCode::PRODUCER_FENCED);
}

/// KIP-360: a producer whose transaction the coordinator aborted at its
/// timeout (bumping the epoch) recovers with InitProducerId and the epoch
/// it still holds, as Kafka allows; an epoch it never had is fenced.
#[tokio::test]
async fn a_producer_recovers_after_a_timeout_abort_with_its_old_epoch() {
    let cluster = FakeCluster::builder()
        .start()
        .await
        .expect("fake cluster starts");
    cluster.create_topic("kip360", 1).expect("topic");
    let conn = first_broker(&cluster).await;
    let init = |producer_id: i64, producer_epoch: i16| InitProducerIdRequest {
        transactional_id: Some("kip360".into()),
        transaction_timeout_ms: 100,
        producer_id,
        producer_epoch,
        ..Default::default()
    };
    let first = conn.request(&init(-1, -1)).await.expect("init");
    let (id, epoch) = (first.producer_id, first.producer_epoch);
    // Opens a transaction (TxnOffsetCommit v5 adds the group itself).
    let opened = conn
        .request(&txn_offset_commit(
            "kip360",
            (id, epoch),
            "g-kip360",
            "kip360",
            1,
        ))
        .await
        .expect("txn offset commit");
    assert_eq!(opened.topics[0].partitions[0].error_code, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let never_held = conn.request(&init(id, epoch + 5)).await.expect("init");
    assert_eq!(ErrorCode(never_held.error_code), ErrorCode::PRODUCER_FENCED);
    // The timeout abort took the epoch to epoch + 1; recovering from the
    // epoch before it bumps once more.
    let recovered = conn.request(&init(id, epoch)).await.expect("init");
    assert_eq!(
        (
            recovered.error_code,
            recovered.producer_id,
            recovered.producer_epoch
        ),
        (0, id, epoch + 2)
    );
}
