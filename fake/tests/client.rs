//! The fake cluster driven by this repository's own client: produce,
//! consume, offsets, topics, leader moves, truncation, injected produce
//! errors, fetch sessions.

use std::{collections::BTreeSet, time::Duration};

use rskafka::{
    client::{
        consumer::{ConsumerConfig, OffsetReset, StartOffset},
        partition::OffsetAt,
        producer::{ProducerConfig, ProducerRecord},
        Client, ClientBuilder,
    },
    error::ErrorKind,
    protocol::{record::Compression, ApiKey, ErrorCode},
    record::Record,
};
use rskafka_fake::{FakeCluster, Fault};
use time::OffsetDateTime;

async fn cluster(brokers: usize) -> FakeCluster {
    FakeCluster::builder()
        .brokers(brokers)
        .start()
        .await
        .expect("fake cluster starts")
}

async fn client(cluster: &FakeCluster) -> Client {
    let brokers = cluster.bootstrap().split(',').map(str::to_owned).collect();
    ClientBuilder::new(brokers)
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("client connects")
}

fn record(value: &str) -> Record {
    Record {
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

/// Sends `values` to the partition and waits for every acknowledgement.
async fn produce_all(
    producer: &rskafka::client::producer::Producer,
    topic: &str,
    partition: i32,
    values: impl IntoIterator<Item = String>,
) -> Vec<rskafka::error::Result<rskafka::client::producer::RecordMetadata>> {
    let mut deliveries = Vec::new();
    for v in values {
        let r = ProducerRecord::new(topic, record(&v)).with_partition(partition);
        deliveries.push(producer.send(r).await.expect("send"));
    }
    producer.flush().await;
    let mut out = Vec::new();
    for d in deliveries {
        out.push(d.await);
    }
    out
}

/// Every value in the partition, in offset order, read by a fresh consumer.
async fn read_all(client: &Client, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let end = client
        .partition_client(topic, partition)
        .await
        .expect("partition client")
        .get_offset(OffsetAt::Latest)
        .await
        .expect("latest");
    let mut consumer = client
        .consumer(ConsumerConfig::default().assign(topic, partition, StartOffset::Earliest))
        .expect("consumer");
    let mut out = Vec::new();
    while out.last().is_none_or(|(o, _)| o + 1 < end) && end > 0 {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch())
            .await
            .expect("records within 10 s")
            .expect("batch");
        for r in batch {
            let v = String::from_utf8(r.record.value.as_deref().unwrap_or_default().to_vec())
                .expect("utf8");
            out.push((r.offset, v));
        }
    }
    out
}

#[tokio::test]
async fn produce_idempotently_consume_and_list_offsets() {
    let cluster = cluster(3).await;
    let client = client(&cluster).await;
    client
        .controller_client()
        .expect("controller")
        .create_topic("events", 3, 1, 5_000)
        .await
        .expect("create");
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    for p in 0..3 {
        let acks = produce_all(&producer, "events", p, (0..50).map(|i| format!("{p}-{i}"))).await;
        let offsets: Vec<i64> = acks
            .into_iter()
            .map(|a| a.expect("acknowledged").offset.expect("offset"))
            .collect();
        assert_eq!(offsets, (0..50).collect::<Vec<_>>());
    }
    for p in 0..3 {
        let read = read_all(&client, "events", p).await;
        let want: Vec<(i64, String)> = (0..50).map(|i| (i, format!("{p}-{i}"))).collect();
        assert_eq!(read, want, "partition {p}");
        let pc = client.partition_client("events", p).await.expect("pc");
        assert_eq!(
            pc.get_offset(OffsetAt::Earliest).await.expect("earliest"),
            0
        );
        assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("latest"), 50);
    }
    // By timestamp: the future has no record yet.
    let pc = client.partition_client("events", 0).await.expect("pc");
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(
        pc.get_offset(OffsetAt::Timestamp(later))
            .await
            .expect("by time"),
        -1
    );
    let earlier = OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert_eq!(
        pc.get_offset(OffsetAt::Timestamp(earlier))
            .await
            .expect("by time"),
        0
    );
    // DeleteRecords moves the log start.
    assert_eq!(
        pc.delete_records(20, 5_000).await.expect("delete records"),
        20
    );
    assert_eq!(
        pc.get_offset(OffsetAt::Earliest).await.expect("earliest"),
        20
    );
    assert_eq!(cluster.offsets("events", 0), Some((20, 50)));
    producer.close().await;
}

#[tokio::test]
async fn topics_are_created_grown_and_deleted() {
    let cluster = cluster(2).await;
    let client = client(&cluster).await;
    let controller = client.controller_client().expect("controller");
    controller
        .create_topic("t", 2, 2, 5_000)
        .await
        .expect("create");
    let err = controller
        .create_topic("t", 2, 1, 5_000)
        .await
        .expect_err("exists");
    assert_eq!(err.error_code(), Some(ErrorCode::TOPIC_ALREADY_EXISTS));
    let err = controller
        .create_topic("u", 0, 1, 5_000)
        .await
        .expect_err("no partitions");
    assert_eq!(err.error_code(), Some(ErrorCode::INVALID_PARTITIONS));
    let err = controller
        .create_topic("u", 1, 3, 5_000)
        .await
        .expect_err("rf 3 of 2 brokers");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::INVALID_REPLICATION_FACTOR)
    );
    controller
        .create_partitions("t", 5, 5_000)
        .await
        .expect("grow");
    let topics = client.list_topics().await.expect("list");
    let t = topics.iter().find(|t| t.name == "t").expect("listed");
    assert_eq!(t.partitions.len(), 5);
    controller.delete_topic("t", 5_000).await.expect("delete");
    assert!(!client
        .list_topics()
        .await
        .expect("list")
        .iter()
        .any(|t| t.name == "t"));
}

#[tokio::test]
async fn leader_moves_are_followed_by_producer_and_consumer() {
    let cluster = cluster(3).await;
    cluster.create_topic("moving", 1).expect("create");
    let client = client(&cluster).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let first = produce_all(&producer, "moving", 0, (0..20).map(|i| i.to_string())).await;
    assert!(first.iter().all(|r| r.is_ok()));
    let mut consumer = client
        .consumer(ConsumerConfig::default().assign("moving", 0, StartOffset::Earliest))
        .expect("consumer");
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.extend(
            consumer
                .next_batch()
                .await
                .expect("batch")
                .into_iter()
                .map(|r| r.offset),
        );
    }

    let (old_leader, epoch) = cluster.leader("moving", 0).expect("partition");
    let new_leader = if old_leader == 3 { 1 } else { old_leader + 1 };
    assert_eq!(
        cluster.move_leader("moving", 0, new_leader).expect("move"),
        epoch + 1
    );

    let second = produce_all(&producer, "moving", 0, (20..40).map(|i| i.to_string())).await;
    let offsets: Vec<i64> = second
        .into_iter()
        .map(|r| {
            r.expect("acknowledged after the move")
                .offset
                .expect("offset")
        })
        .collect();
    assert_eq!(offsets, (20..40).collect::<Vec<_>>());
    while seen.len() < 40 {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch())
            .await
            .expect("the consumer follows the leader")
            .expect("batch");
        seen.extend(batch.into_iter().map(|r| r.offset));
    }
    assert_eq!(seen, (0..40).collect::<Vec<_>>(), "no gaps, no repeats");
    producer.close().await;
}

#[tokio::test]
async fn a_truncated_log_is_detected_by_the_consumer() {
    let cluster = cluster(2).await;
    cluster.create_topic("trunc", 1).expect("create");
    let client = client(&cluster).await;
    let pc = client.partition_client("trunc", 0).await.expect("pc");
    // One batch per record, so the truncation point is exact.
    for i in 0..10 {
        pc.produce(vec![record(&i.to_string())], Compression::None)
            .await
            .expect("produce");
    }
    let mut consumer = client
        .consumer(
            ConsumerConfig::default()
                .assign("trunc", 0, StartOffset::Earliest)
                .offset_reset(OffsetReset::Error),
        )
        .expect("consumer");
    let mut seen = 0;
    while seen < 10 {
        seen += consumer.next_batch().await.expect("batch").len();
    }
    assert_eq!(cluster.truncate("trunc", 0, 5).expect("truncate"), 5);
    let err = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match consumer.next_batch().await {
                Ok(batch) => assert!(batch.is_empty(), "records after the truncation: {batch:?}"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the truncation is reported");
    assert_eq!(
        err.kind(),
        ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[tokio::test]
async fn injected_not_leader_is_retried_without_duplicates() {
    let cluster = cluster(2).await;
    cluster.create_topic("nl", 1).expect("create");
    let client = client(&cluster).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    cluster.inject(
        Fault::error(ApiKey::PRODUCE, ErrorCode::NOT_LEADER_OR_FOLLOWER)
            .times(2)
            .on_partition("nl", 0),
    );
    let acks = produce_all(&producer, "nl", 0, (0..10).map(|i| i.to_string())).await;
    assert!(acks.iter().all(|a| a.is_ok()), "{acks:?}");
    let values: Vec<String> = read_all(&client, "nl", 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(
        cluster.request_count(ApiKey::PRODUCE) >= 3,
        "the injected errors were retried"
    );
    producer.close().await;
}

#[tokio::test]
async fn unknown_producer_id_bumps_the_epoch_and_writes_once() {
    let cluster = cluster(1).await;
    cluster.create_topic("upid", 1).expect("create");
    let client = client(&cluster).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let acks = produce_all(&producer, "upid", 0, ["a".to_owned()]).await;
    assert!(acks[0].is_ok());
    let inits = cluster.request_count(ApiKey::INIT_PRODUCER_ID);
    cluster.inject(
        Fault::error(ApiKey::PRODUCE, ErrorCode::UNKNOWN_PRODUCER_ID).on_partition("upid", 0),
    );
    let acks = produce_all(&producer, "upid", 0, ["b".to_owned(), "c".to_owned()]).await;
    assert!(acks.iter().all(|a| a.is_ok()), "{acks:?}");
    assert!(
        cluster.request_count(ApiKey::INIT_PRODUCER_ID) > inits,
        "the producer got a new producer id / epoch"
    );
    let values: Vec<String> = read_all(&client, "upid", 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["a", "b", "c"]);
    producer.close().await;
}

#[tokio::test]
async fn out_of_order_sequence_after_acknowledgements_is_reported_as_data_loss() {
    let cluster = cluster(1).await;
    cluster.create_topic("ooo", 1).expect("create");
    let client = client(&cluster).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    assert!(produce_all(&producer, "ooo", 0, ["a".to_owned()]).await[0].is_ok());
    // The broker claims a gap although every earlier batch was acknowledged:
    // it lost acknowledged records.
    cluster.inject(
        Fault::error(ApiKey::PRODUCE, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            .on_partition("ooo", 0),
    );
    let acks = produce_all(&producer, "ooo", 0, ["b".to_owned()]).await;
    let err = acks[0].as_ref().expect_err("reported");
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    // The producer goes on, with a bumped epoch.
    let acks = produce_all(&producer, "ooo", 0, ["c".to_owned()]).await;
    assert!(acks[0].is_ok(), "{acks:?}");
    let values: BTreeSet<String> = read_all(&client, "ooo", 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    producer.close().await;
}

#[tokio::test]
async fn consumers_reuse_fetch_sessions() {
    let cluster = cluster(1).await;
    cluster.create_topic("sessions", 2).expect("create");
    let client = client(&cluster).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut consumer = client
        .consumer(
            ConsumerConfig::default()
                .assign("sessions", 0, StartOffset::Earliest)
                .assign("sessions", 1, StartOffset::Earliest)
                .max_wait(Duration::from_millis(100)),
        )
        .expect("consumer");
    let mut seen = 0;
    for round in 0..5 {
        let acks = produce_all(&producer, "sessions", round % 2, [format!("r{round}")]).await;
        assert!(acks[0].is_ok());
        while seen <= round as usize {
            seen += consumer.next_batch().await.expect("batch").len();
        }
    }
    let stats = cluster.fetch_session_stats();
    assert!(stats.created >= 1, "{stats:?}");
    assert!(stats.incremental_fetches >= 3, "{stats:?}");
    producer.close().await;
}
