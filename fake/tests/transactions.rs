//! Transactions on the fake cluster, driven by rskafka's transactional
//! producer: commit and abort as read_committed sees them, offsets sent to
//! a transaction, fencing by a newer producer with the same id.

use std::time::Duration;

mod common;

use rskafka::{
    client::{
        consumer::{ConsumerConfig, IsolationLevel, StartOffset},
        group::{ConsumerGroupMetadata, TopicPartition},
        producer::{Producer, ProducerConfig, ProducerRecord},
        Client,
    },
    record::Record,
};
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
