//! Integration tests of the batching producer against a real broker
//! (`KAFKA_BOOTSTRAP`); the broker-kill test starts a private broker of its
//! own through `scripts/kafka`.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{future::join_all, FutureExt};
use rskafka::{
    client::{
        partition::OffsetAt,
        producer::{
            key_partition, Acks, Compression, DeliveryFuture, Producer, ProducerConfig,
            ProducerRecord, RecordMetadata,
        },
        Client, ClientBuilder,
    },
    cluster::{Cluster, ClusterConfig},
    error::{ErrorKind, Result},
    protocol::{
        messages::{
            alter_client_quotas_request::{EntityData, EntryData, OpData},
            AlterClientQuotasRequest,
        },
        ErrorCode,
    },
    record::{Record, RecordAndOffset},
};
use time::OffsetDateTime;

use common::{bootstrap, unique_topic, PrivateBroker};

async fn connect(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_string()])
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

/// Waits until every partition of a new topic takes writes (its leader is
/// elected and known to the broker): until then a fire-and-forget producer
/// would lose records without anyone noticing. Writes one record (id
/// `u64::MAX - partition`) per partition.
async fn warm_up(client: &Client, name: &str, partitions: i32) {
    for p in 0..partitions {
        let pc = client
            .partition_client(name, p)
            .await
            .expect("partition client");
        pc.produce(
            vec![record(u64::MAX - p as u64, None, 0)],
            Compression::None,
        )
        .await
        .expect("warm-up produce");
    }
}

/// A record whose value is its id (8 bytes, big endian), so read-back
/// records can be matched to what was sent.
fn record(id: u64, key: Option<String>, pad: usize) -> Record {
    let mut value = id.to_be_bytes().to_vec();
    value.resize(8 + pad, b'x');
    Record {
        key: key.map(Bytes::from),
        value: Some(Bytes::from(value)),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

fn id_of(r: &RecordAndOffset) -> u64 {
    let v = r.record.value.as_deref().unwrap_or_default();
    let mut id = [0u8; 8];
    id.copy_from_slice(&v[..8]);
    u64::from_be_bytes(id)
}

/// Every record of a partition, from its start to the current end.
async fn read_partition(client: &Client, topic: &str, partition: i32) -> Vec<RecordAndOffset> {
    let pc = client
        .partition_client(topic, partition)
        .await
        .expect("partition client");
    let end = pc
        .get_offset(OffsetAt::Latest)
        .await
        .expect("latest offset");
    let mut offset = pc.get_offset(OffsetAt::Earliest).await.expect("earliest");
    let mut out = Vec::new();
    while offset < end {
        let r = pc
            .fetch(offset, 1..16 * 1024 * 1024, 500)
            .await
            .expect("fetch");
        assert!(r.next_offset > offset, "fetch made no progress at {offset}");
        out.extend(r.records);
        offset = r.next_offset;
    }
    out
}

/// All records of a topic by partition.
async fn read_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<RecordAndOffset>> {
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        all.insert(p, read_partition(client, topic, p).await);
    }
    all
}

/// Awaits every delivery, bounded so a stuck producer fails the test.
async fn deliveries(futs: Vec<DeliveryFuture>, within: Duration) -> Vec<Result<RecordMetadata>> {
    tokio::time::timeout(within, join_all(futs))
        .await
        .expect("deliveries did not complete in time")
}

/// Checks what was read back against the ids sent: no duplicates, every id
/// in `must_have` present, and ids in increasing order within a partition
/// (records were sent in id order). Returns (lost, duplicated, out of order).
fn audit(
    read: &BTreeMap<i32, Vec<RecordAndOffset>>,
    must_have: &HashSet<u64>,
) -> (usize, usize, usize) {
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    let mut out_of_order = 0;
    for records in read.values() {
        let mut last: Option<u64> = None;
        for r in records {
            let id = id_of(r);
            if id > u64::MAX - 1_000 {
                continue; // a warm-up record
            }
            if !seen.insert(id) {
                duplicated += 1;
            }
            if last.is_some_and(|l| id <= l) {
                out_of_order += 1;
            }
            last = Some(id);
        }
    }
    let lost = must_have.iter().filter(|id| !seen.contains(id)).count();
    (lost, duplicated, out_of_order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_keyed_and_unkeyed() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    let topic = unique_topic("producer-100k");
    const PARTITIONS: i32 = 6;
    const N: u64 = 100_000;
    create_topic(&client, &topic, PARTITIONS).await;

    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let started = Instant::now();
    let mut futs = Vec::with_capacity(N as usize);
    for id in 0..N {
        // Every other record has a key (1000 distinct keys).
        let key = (id % 2 == 0).then(|| format!("key-{}", id % 1000));
        let fut = producer
            .send(ProducerRecord::new(topic.clone(), record(id, key, 50)))
            .await
            .expect("send");
        futs.push(fut);
    }
    let results = deliveries(futs, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let mut placed: HashMap<u64, (i32, i64)> = HashMap::new();
    for (id, r) in results.into_iter().enumerate() {
        let meta = r.unwrap_or_else(|e| panic!("record {id} failed: {e}"));
        let offset = meta.offset.expect("acks=all reports offsets");
        placed.insert(id as u64, (meta.partition, offset));
    }
    let metrics = producer.metrics();
    eprintln!("sent {N} records in {elapsed:?}; metrics {metrics:?}");
    assert_eq!(
        metrics.buffered_bytes, 0,
        "acknowledged records free the buffer"
    );
    producer.close().await;

    let read = read_topic(&client, &topic, PARTITIONS).await;
    let all: HashSet<u64> = (0..N).collect();
    let (lost, duplicated, out_of_order) = audit(&read, &all);
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    let total: usize = read.values().map(Vec::len).sum();
    assert_eq!(total as u64, N);
    let mut used = HashSet::new();
    for (&p, records) in &read {
        for r in records {
            let id = id_of(r);
            // The future reported where the record really is.
            assert_eq!(placed.get(&id), Some(&(p, r.offset)), "record {id}");
            if let Some(key) = &r.record.key {
                assert_eq!(p, key_partition(key, PARTITIONS), "key placement of {id}");
            }
            used.insert(p);
        }
    }
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "records reached every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acks_setting_delivers() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        let topic = unique_topic("producer-acks");
        create_topic(&client, &topic, 3).await;
        warm_up(&client, &topic, 3).await;
        let producer = client
            .producer(ProducerConfig::default().acks(acks))
            .expect("producer");
        let mut futs = Vec::new();
        for id in 0..2_000 {
            futs.push(
                producer
                    .send(ProducerRecord::new(
                        topic.clone(),
                        record(id, Some(format!("k{id}")), 20),
                    ))
                    .await
                    .expect("send"),
            );
        }
        producer.flush().await;
        for r in deliveries(futs, Duration::from_secs(60)).await {
            let meta = r.expect("delivered");
            assert_eq!(meta.offset.is_none(), acks == Acks::None, "{acks:?}");
        }
        producer.close().await;
        let read = read_topic(&client, &topic, 3).await;
        let (lost, duplicated, out_of_order) = audit(&read, &(0..2_000).collect());
        assert_eq!((lost, duplicated, out_of_order), (0, 0, 0), "{acks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    for compression in Compression::ALL.into_iter().filter(|c| c.is_enabled()) {
        let topic = unique_topic(&format!("producer-{compression}"));
        create_topic(&client, &topic, 2).await;
        let producer = client
            .producer(ProducerConfig::default().compression(compression))
            .expect("producer");
        let mut futs = Vec::new();
        for id in 0..5_000 {
            futs.push(
                producer
                    .send(ProducerRecord::new(topic.clone(), record(id, None, 200)))
                    .await
                    .expect("send"),
            );
        }
        for r in deliveries(futs, Duration::from_secs(60)).await {
            r.unwrap_or_else(|e| panic!("{compression}: {e}"));
        }
        producer.close().await;
        let read = read_topic(&client, &topic, 2).await;
        let (lost, duplicated, out_of_order) = audit(&read, &(0..5_000).collect());
        assert_eq!((lost, duplicated, out_of_order), (0, 0, 0), "{compression}");
        for r in read.values().flatten() {
            assert_eq!(
                r.record.value.as_ref().map(Bytes::len),
                Some(208),
                "{compression}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_lingering_batches_at_once() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    let topic = unique_topic("producer-flush");
    create_topic(&client, &topic, 2).await;
    let producer = client
        .producer(
            ProducerConfig::default()
                .linger(Duration::from_secs(60))
                .delivery_timeout(Duration::from_secs(120)),
        )
        .expect("producer");
    let mut futs = Vec::new();
    for id in 0..100 {
        futs.push(
            producer
                .send(ProducerRecord::new(topic.clone(), record(id, None, 0)))
                .await
                .expect("send"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        futs.iter_mut().all(|f| f.now_or_never().is_none()),
        "nothing is sent before the linger ends"
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), producer.flush())
        .await
        .expect("flush ignores the 60 s linger");
    assert!(started.elapsed() < Duration::from_secs(10));
    for f in futs {
        let r = f.now_or_never().expect("resolved by flush");
        r.expect("delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_fails_fast_when_not_blocking() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    let topic = unique_topic("producer-full");
    create_topic(&client, &topic, 1).await;
    let producer = client
        .producer(
            ProducerConfig::default()
                .buffer_memory(4096)
                .block_on_full(false)
                .linger(Duration::from_secs(60))
                .delivery_timeout(Duration::from_secs(120)),
        )
        .expect("producer");
    let mut futs = Vec::new();
    let err = loop {
        match producer
            .send(ProducerRecord::new(
                topic.clone(),
                record(futs.len() as u64, None, 100),
            ))
            .await
        {
            Ok(f) => futs.push(f),
            Err(e) => break e,
        }
        assert!(
            futs.len() < 100,
            "a 4 KiB buffer holds fewer than 100 records of 108 bytes"
        );
    };
    assert_eq!(err.kind(), ErrorKind::BufferFull, "{err}");
    assert!(!futs.is_empty());
    producer.flush().await;
    for f in futs {
        f.await.expect("buffered records are still delivered");
    }
    // The buffer has room again.
    let f = producer
        .send(ProducerRecord::new(topic.clone(), record(1_000, None, 100)))
        .await
        .expect("room after the flush");
    producer.flush().await;
    f.await.expect("delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_fail_at_send() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = ClientBuilder::new(vec![bootstrap])
        .request_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect("client");
    let topic = unique_topic("producer-invalid");
    create_topic(&client, &topic, 2).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");

    let err = producer
        .send(ProducerRecord::new(
            unique_topic("no-such-topic"),
            record(0, None, 0),
        ))
        .await
        .expect_err("unknown topic");
    assert_eq!(
        err.kind(),
        ErrorKind::Kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{err}"
    );

    let err = producer
        .send(ProducerRecord::new(topic.clone(), record(0, None, 0)).with_partition(2))
        .await
        .expect_err("partition 2 of 2");
    assert_eq!(err.partition(), Some(2), "{err}");

    let small = client
        .producer(ProducerConfig::default().max_request_size(1_000))
        .expect("producer");
    let err = small
        .send(ProducerRecord::new(topic.clone(), record(0, None, 2_000)))
        .await
        .expect_err("too large");
    assert_eq!(
        err.kind(),
        ErrorKind::Kafka(ErrorCode::MESSAGE_TOO_LARGE),
        "{err}"
    );

    // Idempotence cannot be forced without acks=all.
    let err = client
        .producer(
            ProducerConfig::default()
                .idempotence(true)
                .acks(Acks::Leader),
        )
        .expect_err("conflicting config");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    producer.close().await;
    let err = producer
        .send(ProducerRecord::new(topic, record(0, None, 0)))
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_timeout_on_unreachable_broker() {
    if bootstrap().is_none() {
        return;
    }
    let broker = PrivateBroker::start(29392).expect("private broker");
    let client = ClientBuilder::new(vec![broker.bootstrap()])
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("client");
    let topic = unique_topic("producer-unreachable");
    create_topic(&client, &topic, 1).await;
    let delivery_timeout = Duration::from_secs(4);
    let producer = client
        .producer(
            ProducerConfig::default()
                .linger(Duration::ZERO)
                .request_timeout(Duration::from_secs(1))
                .delivery_timeout(delivery_timeout),
        )
        .expect("producer");
    producer
        .send(ProducerRecord::new(topic.clone(), record(0, None, 0)))
        .await
        .expect("send")
        .await
        .expect("delivered while the broker is up");

    broker.kill().expect("kill");
    let started = Instant::now();
    let fut = producer
        .send(ProducerRecord::new(topic.clone(), record(1, None, 0)))
        .await
        .expect("buffered");
    let err = tokio::time::timeout(delivery_timeout + Duration::from_secs(5), fut)
        .await
        .expect("the delivery future resolves after the delivery timeout")
        .expect_err("nothing can be delivered");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        elapsed >= delivery_timeout - Duration::from_millis(500),
        "failed after {elapsed:?}, before the delivery timeout"
    );
    eprintln!("delivery failed after {elapsed:?}: {err}");
}

/// Issue 4(a): an idempotent producer keeps writing while its broker is
/// SIGKILLed and restarted (twice); every acknowledged record must be in
/// the log exactly once, in send order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_broker_kill() {
    if bootstrap().is_none() {
        return;
    }
    const N: u64 = 200_000;
    const PARTITIONS: i32 = 3;
    let broker = Arc::new(PrivateBroker::start(29292).expect("private broker"));
    let client = ClientBuilder::new(vec![broker.bootstrap()])
        .request_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("client");
    let topic = unique_topic("producer-kill");
    create_topic(&client, &topic, PARTITIONS).await;
    let producer: Producer = client
        .producer(
            ProducerConfig::default()
                .request_timeout(Duration::from_secs(5))
                .delivery_timeout(Duration::from_secs(180)),
        )
        .expect("producer");

    // Kills the broker twice while records flow, restarting it each time.
    let chaos = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let b = broker.clone();
                tokio::task::spawn_blocking(move || {
                    b.kill()?;
                    std::thread::sleep(Duration::from_millis(500));
                    b.restart()
                })
                .await
                .expect("join")
                .expect("kill and restart");
                eprintln!("broker killed and restarted");
            }
        })
    };

    let started = Instant::now();
    let mut futs = Vec::with_capacity(N as usize);
    for id in 0..N {
        let key = Some(format!("k{}", id % 100));
        futs.push(
            producer
                .send(ProducerRecord::new(topic.clone(), record(id, key, 40)))
                .await
                .expect("send"),
        );
        // Spread the records over the restarts (about 20 s in all).
        if id % 1_000 == 999 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    chaos.await.expect("chaos task");
    let results = deliveries(futs, Duration::from_secs(240)).await;
    let mut acked = HashSet::new();
    let mut failures = Vec::new();
    for (id, r) in results.into_iter().enumerate() {
        match r {
            Ok(_) => {
                acked.insert(id as u64);
            }
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    let metrics = producer.metrics();
    producer.close().await;

    let read = read_topic(&client, &topic, PARTITIONS).await;
    let (lost, duplicated, out_of_order) = audit(&read, &acked);
    let total: usize = read.values().map(Vec::len).sum();
    eprintln!(
        "4(a): sent={N} acknowledged={} failed={} in log={total} lost={lost} duplicated={duplicated} \
         out_of_order={out_of_order} in {:?}; {metrics:?}",
        acked.len(),
        failures.len(),
        started.elapsed()
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    assert!(
        failures.is_empty(),
        "with a 180 s delivery timeout every record should be acknowledged: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(metrics.retries > 0, "the kills should have forced retries");
}

/// Issue 4(c): a produce quota for the client id makes the broker throttle;
/// the producer honours it (nothing duplicated, everything delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_quota_is_honoured() {
    let Some(bootstrap) = bootstrap() else { return };
    let client_id = unique_topic("rskafka-quota");
    const RATE: f64 = 100_000.0;
    let set_quota = |remove: bool| {
        let bootstrap = bootstrap.clone();
        let client_id = client_id.clone();
        async move {
            let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
                .await
                .expect("cluster");
            let conn = cluster.any_broker().await.expect("broker");
            let resp = conn
                .request(&AlterClientQuotasRequest {
                    entries: vec![EntryData {
                        entity: vec![EntityData {
                            entity_type: "client-id".into(),
                            entity_name: Some(client_id),
                            ..Default::default()
                        }],
                        ops: vec![OpData {
                            key: "producer_byte_rate".into(),
                            value: RATE,
                            remove,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    validate_only: false,
                    ..Default::default()
                })
                .await
                .expect("AlterClientQuotas");
            for e in resp.entries {
                assert_eq!(
                    ErrorCode(e.error_code),
                    ErrorCode::NONE,
                    "{:?}",
                    e.error_message
                );
            }
        }
    };
    set_quota(false).await;
    // Quotas reach the broker through the metadata log: give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = ClientBuilder::new(vec![bootstrap.clone()])
        .client_id(client_id.clone())
        .build()
        .await
        .expect("client");
    let topic = unique_topic("producer-quota");
    create_topic(&client, &topic, 2).await;
    // Small batches, so that throttling shows between many requests.
    let producer = client
        .producer(ProducerConfig::default().batch_size(16 * 1024))
        .expect("producer");
    const N: u64 = 2_500;
    const PAD: usize = 1_000;
    let started = Instant::now();
    let mut futs = Vec::new();
    for id in 0..N {
        futs.push(
            producer
                .send(ProducerRecord::new(topic.clone(), record(id, None, PAD)))
                .await
                .expect("send"),
        );
    }
    for r in deliveries(futs, Duration::from_secs(120)).await {
        r.expect("delivered");
    }
    let elapsed = started.elapsed();
    let metrics = producer.metrics();
    producer.close().await;
    set_quota(true).await;

    let read = read_topic(&client, &topic, 2).await;
    let (lost, duplicated, out_of_order) = audit(&read, &(0..N).collect());
    let bytes = N as f64 * (PAD + 8) as f64;
    // The broker measures the rate over 11 one-second samples and counts a
    // young window as 10 s long, so about 10 s worth of quota goes through
    // before throttling starts; the rest is paced at the quota.
    let implied = Duration::from_secs_f64((bytes / RATE - 11.0).max(0.0));
    eprintln!(
        "4(c): {N} records ({bytes} value bytes) at a quota of {RATE} B/s took {elapsed:?} \
         (quota implies ~{implied:?} after the initial burst); lost={lost} \
         duplicated={duplicated}; {metrics:?}"
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    assert!(
        metrics.throttled_responses > 0,
        "the broker never throttled: {metrics:?}"
    );
    // Loose on purpose: only that the throttling really slowed the run.
    assert!(
        elapsed >= implied / 2,
        "{elapsed:?} is far below the {implied:?} the quota implies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_later_are_used() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    let topic = unique_topic("producer-grow");
    create_topic(&client, &topic, 1).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let meta = producer
        .send(ProducerRecord::new(topic.clone(), record(0, None, 0)))
        .await
        .expect("send")
        .await
        .expect("delivered");
    assert_eq!(meta.partition, 0);
    client
        .controller_client()
        .expect("controller")
        .create_partitions(&topic, 3, 30_000)
        .await
        .expect("create partitions");
    // The producer still believes in one partition; naming the third makes
    // it look again instead of failing.
    let meta = producer
        .send(ProducerRecord::new(topic.clone(), record(1, None, 0)).with_partition(2))
        .await
        .expect("partition 2 is found after a metadata refresh")
        .await
        .expect("delivered");
    assert_eq!((meta.partition, meta.offset), (2, Some(0)));
    // Keys now spread over three partitions.
    let meta = producer
        .send(ProducerRecord::new(
            topic.clone(),
            record(2, Some("foobar".into()), 0),
        ))
        .await
        .expect("send")
        .await
        .expect("delivered");
    assert_eq!(meta.partition, key_partition(b"foobar", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_delivers_without_offsets_and_acks_all_follows() {
    let Some(bootstrap) = bootstrap() else { return };
    let client = connect(&bootstrap).await;
    let topic = unique_topic("producer-acks0");
    create_topic(&client, &topic, 1).await;
    warm_up(&client, &topic, 1).await;
    let producer = client
        .producer(ProducerConfig::default().acks(Acks::None))
        .expect("producer");
    let mut futs = Vec::new();
    for id in 0..1_000 {
        let r = ProducerRecord::new(topic.clone(), record(id, None, 10)).with_partition(0);
        futs.push(producer.send(r).await.expect("send"));
    }
    producer.flush().await;
    for r in deliveries(futs, Duration::from_secs(30)).await {
        let meta = r.expect("written");
        assert_eq!(meta.offset, None, "acks=0 has no offset");
    }
    producer.close().await;
    // The connection (shared through the client) still pairs answers with
    // requests: an acks=all producer gets the real next offset.
    let acked = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let fut = acked
        .send(ProducerRecord::new(topic.clone(), record(1_000, None, 10)).with_partition(0))
        .await
        .expect("send");
    acked.flush().await;
    let meta = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("delivery in time")
        .expect("acked");
    // One warm-up record, then the 1000 fire-and-forget ones.
    assert_eq!(meta.offset, Some(1_001));
    acked.close().await;
    let read = read_topic(&client, &topic, 1).await;
    let (lost, duplicated, out_of_order) = audit(&read, &(0..=1_000).collect());
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
}
