//! Integration tests of the batching producer against a real broker
//! (`KAFKA_BOOTSTRAP`); the broker-kill test starts a private broker of its
//! own through `scripts/kafka`.

mod common;
#[path = "common/fake_broker.rs"]
mod fake_broker;

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
    // Every record went out at least once, exactly once without retries
    // (a loaded machine may time a request out).
    assert!(metrics.records_sent >= N, "{metrics:?}");
    if metrics.retries == 0 {
        assert_eq!(metrics.records_sent, N);
    }
    assert!(metrics.batch_bytes_sent > N * 50, "{metrics:?}");
    // The client's per-broker figures agree with the producer's.
    let brokers = client.broker_stats();
    let sent: u64 = brokers.iter().map(|b| b.requests_sent).sum();
    assert!(sent >= metrics.requests, "{brokers:?}");
    let retried: u64 = brokers.iter().map(|b| b.produce_retries).sum();
    assert_eq!(retried, metrics.retries, "{brokers:?}");
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
        // acks=0 completes once the request is written: the broker may
        // still be appending it when the read-back, on a connection of its
        // own, arrives.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let read = loop {
            let read = read_topic(&client, &topic, 3).await;
            let (lost, ..) = audit(&read, &(0..2_000).collect());
            if lost == 0 || acks != Acks::None || std::time::Instant::now() > deadline {
                break read;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
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

/// Reads partition 0 of `topic` from the start with librdkafka (PyPI
/// confluent-kafka, CRCs checked) until `count` records, and returns their
/// values concatenated in offset order.
const LIBRDKAFKA_READER: &str = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-" + topic,
              "enable.auto.commit": False, "check.crcs": True})
c.assign([TopicPartition(topic, 0, 0)])
got, deadline = 0, time.time() + 60
while got < count and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        sys.exit(f"consume: {m.error()}")
    sys.stdout.buffer.write(m.value())
    got += 1
c.close()
sys.exit(0 if got == count else f"{got} of {count} records")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_reads_large_compressed_batches_byte_for_byte() {
    // LZ4 and snappy batches are compressed block by block as records are
    // appended: batches of many blocks, records cut by block ends, some
    // incompressible (LZ4 stores those blocks raw), must read back exactly
    // in another client.
    let Some(bootstrap) = bootstrap() else { return };
    if !common::python_available() {
        return;
    }
    let client = connect(&bootstrap).await;
    let mut x: u32 = 0x9E37_79B9;
    let values: Vec<Bytes> = (0..3_000u32)
        .map(|id| {
            let len = (id as usize * 7_919) % 4_000;
            let mut v = id.to_be_bytes().to_vec();
            v.extend((0..len).map(|i| {
                if id % 3 == 0 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                } else {
                    b"kafka"[i % 5]
                }
            }));
            Bytes::from(v)
        })
        .collect();
    let expected: Vec<u8> = values.concat();
    for compression in Compression::ALL
        .into_iter()
        .filter(|c| c.is_enabled() && *c != Compression::None)
    {
        let topic = unique_topic(&format!("producer-librdkafka-{compression}"));
        create_topic(&client, &topic, 1).await;
        let producer = client
            .producer(
                ProducerConfig::default()
                    .compression(compression)
                    .linger(Duration::from_millis(20)),
            )
            .expect("producer");
        let mut futs = Vec::new();
        for v in &values {
            let record = Record {
                key: None,
                value: Some(v.clone()),
                headers: vec![],
                timestamp: OffsetDateTime::now_utc(),
            };
            let record = ProducerRecord::new(topic.clone(), record).with_partition(0);
            futs.push(producer.send(record).await.expect("send"));
        }
        for r in deliveries(futs, Duration::from_secs(60)).await {
            r.unwrap_or_else(|e| panic!("{compression}: {e}"));
        }
        producer.close().await;
        let out = std::process::Command::new("python3")
            .args(["-c", LIBRDKAFKA_READER, &bootstrap, &topic])
            .arg(values.len().to_string())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == expected,
            "{compression}: librdkafka read {} bytes, not the {} sent",
            out.stdout.len(),
            expected.len()
        );
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
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    let port = common::free_port_base(29_392).expect("a free port range");
    let broker = PrivateBroker::start(port).expect("private broker");
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
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    const N: u64 = 200_000;
    const PARTITIONS: i32 = 3;
    let port = common::free_port_base(29_292).expect("a free port range");
    let broker = Arc::new(PrivateBroker::start(port).expect("private broker"));
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
    let Some(bootstrap) = testkit::real_bootstrap("client quotas") else {
        return;
    };
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

// ---------------------------------------------------------------------------
// A fake broker that loses requests and responses
// ---------------------------------------------------------------------------

/// A fake broker with a log that applies Kafka's idempotence rules (per
/// producer and partition: a batch in sequence is appended, one of the last
/// five is a duplicate answered with its original offset, anything else is
/// out of order), and that, by a seeded random draw per ProduceRequest,
/// writes the batches and then drops the connection without answering,
/// drops the connection without writing, refuses the request's first
/// partition with NOT_LEADER_OR_FOLLOWER while writing the others, or
/// answers normally. Every outcome a connection cut can cause, exactly
/// reproducible from the log.
mod lossy {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
    };

    use rskafka::protocol::{
        messages::{
            metadata_response::{
                MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
            },
            produce_response::{PartitionProduceResponse, TopicProduceResponse},
            InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
            ProduceRequest, ProduceResponse,
        },
        record::{decode_batches, DecodeLimits},
        ApiKey, ErrorCode,
    };

    use crate::fake_broker::{api_versions, decode_request, reply, Action, Seen};

    pub const TOPIC: &str = "lossy";
    pub const PARTITIONS: i32 = 3;
    pub const PRODUCER_ID: i64 = 4242;

    /// One partition's log and its idempotence state.
    #[derive(Default)]
    pub struct Partition {
        /// Record values, by offset.
        pub log: Vec<Vec<u8>>,
        /// Epoch of the producer's entries, if the producer is known.
        epoch: Option<i16>,
        /// The last five batches written: (first sequence, last sequence,
        /// base offset).
        recent: VecDeque<(i32, i32, i64)>,
    }

    /// The broker's state and what it did.
    pub struct State {
        pub port: i32,
        pub partitions: Vec<Partition>,
        /// xorshift state for the fault draws.
        rng: u64,
        pub written_unanswered: usize,
        pub dropped: usize,
        pub refused: usize,
        pub answered: usize,
        pub duplicates: usize,
        pub out_of_order: usize,
    }

    impl State {
        pub fn new(port: i32, seed: u64) -> Self {
            Self {
                port,
                partitions: (0..PARTITIONS).map(|_| Partition::default()).collect(),
                rng: seed | 1,
                written_unanswered: 0,
                dropped: 0,
                refused: 0,
                answered: 0,
                duplicates: 0,
                out_of_order: 0,
            }
        }

        fn draw(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % 10
        }

        /// Appends `bytes` (one batch) to `partition` under Kafka's rules;
        /// the error code and base offset to answer.
        fn append(&mut self, partition: i32, bytes: bytes::Bytes) -> (ErrorCode, i64) {
            let Some(p) = usize::try_from(partition)
                .ok()
                .and_then(|i| self.partitions.get_mut(i))
            else {
                return (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, -1);
            };
            let decoded = decode_batches(bytes, &DecodeLimits::default()).expect("a record batch");
            let [batch] = decoded.batches.as_slice() else {
                panic!("{} batches in one partition's data", decoded.batches.len());
            };
            let count = i32::try_from(batch.records.len()).expect("count");
            let first = batch.base_sequence;
            let last = first + count - 1;
            if batch.producer_id >= 0 {
                match p.epoch {
                    Some(e) if e == batch.producer_epoch => {
                        if let Some(&(_, _, base)) =
                            p.recent.iter().find(|(f, l, _)| *f == first && *l == last)
                        {
                            self.duplicates += 1;
                            return (ErrorCode::NONE, base);
                        }
                        let expected = p.recent.back().map_or(0, |(_, l, _)| l + 1);
                        if first != expected {
                            self.out_of_order += 1;
                            return (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                        }
                    }
                    Some(e) if e > batch.producer_epoch => {
                        return (ErrorCode::INVALID_PRODUCER_EPOCH, -1);
                    }
                    // A new epoch starts at 0; an unknown producer may start
                    // anywhere (as Kafka).
                    Some(_) if first != 0 => {
                        self.out_of_order += 1;
                        return (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                    }
                    _ => p.recent.clear(),
                }
                p.epoch = Some(batch.producer_epoch);
            }
            let base = i64::try_from(p.log.len()).expect("offset");
            p.log.extend(
                batch
                    .records
                    .iter()
                    .map(|r| r.value.clone().unwrap_or_default().to_vec()),
            );
            if batch.producer_id >= 0 {
                p.recent.push_back((first, last, base));
                if p.recent.len() > 5 {
                    p.recent.pop_front();
                }
            }
            (ErrorCode::NONE, base)
        }
    }

    fn versions(version: i16) -> Action {
        api_versions(
            version,
            &[(ApiKey::PRODUCE, 3, 11), (ApiKey::INIT_PRODUCER_ID, 0, 5)],
        )
    }

    pub fn handler(state: Arc<Mutex<State>>) -> impl Fn(&Seen) -> Action + Send + Sync {
        move |seen: &Seen| {
            let mut s = state.lock().unwrap();
            match seen.api_key {
                ApiKey::API_VERSIONS => versions(seen.version),
                ApiKey::METADATA => {
                    let resp = MetadataResponse {
                        brokers: vec![MetadataResponseBroker {
                            node_id: 1,
                            host: "127.0.0.1".to_owned(),
                            port: s.port,
                            ..Default::default()
                        }],
                        controller_id: 1,
                        topics: vec![MetadataResponseTopic {
                            name: Some(TOPIC.to_owned()),
                            partitions: (0..PARTITIONS)
                                .map(|p| MetadataResponsePartition {
                                    partition_index: p,
                                    leader_id: 1,
                                    leader_epoch: 0,
                                    replica_nodes: vec![1],
                                    isr_nodes: vec![1],
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    reply::<MetadataRequest>(&resp, seen.version)
                }
                ApiKey::INIT_PRODUCER_ID => {
                    let resp = InitProducerIdResponse {
                        producer_id: PRODUCER_ID,
                        producer_epoch: 0,
                        ..Default::default()
                    };
                    reply::<InitProducerIdRequest>(&resp, seen.version)
                }
                ApiKey::PRODUCE => {
                    let req: ProduceRequest = decode_request(seen);
                    let fault = s.draw();
                    if fault < 2 {
                        // The request is lost on the way in.
                        s.dropped += 1;
                        return Action::CloseAfter(Vec::new());
                    }
                    let mut answer = ProduceResponse::default();
                    for (i, t) in req.topic_data.into_iter().enumerate() {
                        let mut out = TopicProduceResponse {
                            name: t.name,
                            ..Default::default()
                        };
                        for (j, pd) in t.partition_data.into_iter().enumerate() {
                            let (code, base) = if fault < 4 && i == 0 && j == 0 {
                                s.refused += 1;
                                (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1)
                            } else {
                                s.append(pd.index, pd.records.unwrap_or_default())
                            };
                            out.partition_responses.push(PartitionProduceResponse {
                                index: pd.index,
                                error_code: code.0,
                                base_offset: base,
                                log_append_time_ms: -1,
                                ..Default::default()
                            });
                        }
                        answer.responses.push(out);
                    }
                    if (4..6).contains(&fault) {
                        // Written, but the answer is lost on the way out.
                        s.written_unanswered += 1;
                        return Action::CloseAfter(Vec::new());
                    }
                    s.answered += 1;
                    if req.acks == 0 {
                        return Action::Silent;
                    }
                    reply::<ProduceRequest>(&answer, seen.version)
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
    }
}

/// Sends `n` records "p:i" round the partitions of the lossy fake broker
/// through a producer with `config`; returns the broker's state and, per
/// record, its partition, id and delivery result.
async fn against_a_lossy_broker(
    config: ProducerConfig,
    seed: u64,
    n: u64,
) -> (
    Arc<std::sync::Mutex<lossy::State>>,
    Vec<(i32, u64, Result<RecordMetadata>)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = i32::from(listener.local_addr().expect("addr").port());
    let state = Arc::new(std::sync::Mutex::new(lossy::State::new(port, seed)));
    let broker =
        fake_broker::FakeBroker::serve_on(listener, None, true, lossy::handler(Arc::clone(&state)));
    let client = ClientBuilder::new(vec![broker.addr.clone()])
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("client");
    let producer = client.producer(config).expect("producer");
    let mut pending = Vec::new();
    for i in 0..n {
        let p = (i % 3) as i32;
        let f = producer
            .send(
                ProducerRecord::new(lossy::TOPIC, record_with_value(format!("{p}:{i}")))
                    .with_partition(p),
            )
            .await
            .expect("send");
        pending.push((p, i, f));
        if i % 50 == 0 {
            // Several batches and requests, not one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut results = Vec::new();
    for (p, i, f) in pending {
        let r = tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("a delivery within 60 s");
        results.push((p, i, r));
    }
    drop(broker);
    (state, results)
}

fn record_with_value(value: String) -> Record {
    Record {
        key: None,
        value: Some(value.into()),
        headers: vec![],
        timestamp: OffsetDateTime::now_utc(),
    }
}

/// Lost (acknowledged but not at its offset), duplicated (extra copies) and
/// out-of-order (a first copy below an earlier id) records in the fake log.
fn audit_lossy(
    state: &lossy::State,
    results: &[(i32, u64, Result<RecordMetadata>)],
) -> (usize, usize, usize) {
    let mut lost = 0;
    for (p, i, r) in results {
        let Ok(meta) = r else { continue };
        let offset = meta.offset.expect("an offset with acks=all");
        let at = usize::try_from(*p)
            .ok()
            .and_then(|p| state.partitions.get(p))
            .and_then(|part| part.log.get(usize::try_from(offset).ok()?));
        if at.map(Vec::as_slice) != Some(format!("{p}:{i}").as_bytes()) {
            lost += 1;
        }
    }
    let (mut duplicated, mut out_of_order) = (0, 0);
    for part in &state.partitions {
        let mut seen = HashSet::new();
        let mut last: Option<u64> = None;
        for v in &part.log {
            let id: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.split_once(':'))
                .and_then(|(_, i)| i.parse().ok())
                .expect("a record of the test");
            if !seen.insert(id) {
                duplicated += 1;
                continue;
            }
            if last.is_some_and(|l| id <= l) {
                out_of_order += 1;
            }
            last = Some(id);
        }
    }
    (lost, duplicated, out_of_order)
}

fn fast_retries(config: ProducerConfig) -> ProducerConfig {
    config
        .linger(Duration::from_millis(1))
        .batch_size(2_000)
        .retry_backoff(
            rskafka::client::BackoffConfig::default()
                .initial(Duration::from_millis(5))
                .max(Duration::from_millis(20))
                .jitter(0.0),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_loses_and_duplicates_nothing_when_requests_and_answers_are_lost() {
    for seed in 1..=8 {
        let (state, results) =
            against_a_lossy_broker(fast_retries(ProducerConfig::default()), seed, 3_000).await;
        let state = state.lock().unwrap();
        let failed: Vec<_> = results
            .iter()
            .filter_map(|(p, i, r)| r.as_ref().err().map(|e| format!("{p}:{i}: {e}")))
            .collect();
        let (lost, duplicated, out_of_order) = audit_lossy(&state, &results);
        eprintln!(
            "seed {seed}: written_unanswered={} dropped={} refused={} answered={} \
             duplicates_answered={} out_of_order_answered={} failed={} lost={lost} \
             duplicated={duplicated} out_of_order={out_of_order}",
            state.written_unanswered,
            state.dropped,
            state.refused,
            state.answered,
            state.duplicates,
            state.out_of_order,
            failed.len(),
        );
        // Every kind of fault happened, and retries met the broker's
        // duplicate detection.
        assert!(state.written_unanswered > 0 && state.dropped > 0 && state.refused > 0);
        assert!(state.duplicates > 0, "no retry of a written batch");
        assert!(
            failed.is_empty(),
            "failed deliveries: {:?}",
            &failed[..failed.len().min(5)]
        );
        assert_eq!(lost, 0, "acknowledged records not at their offsets");
        assert_eq!(duplicated, 0, "records written twice");
        assert_eq!(out_of_order, 0, "records out of order");
        let logged: usize = state.partitions.iter().map(|p| p.log.len()).sum();
        assert_eq!(logged, 3_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_without_idempotence_loses_nothing_when_requests_and_answers_are_lost() {
    let (state, results) = against_a_lossy_broker(
        fast_retries(ProducerConfig::default().acks(Acks::All).idempotence(false)),
        7,
        3_000,
    )
    .await;
    let state = state.lock().unwrap();
    let failed = results.iter().filter(|(_, _, r)| r.is_err()).count();
    let (lost, duplicated, out_of_order) = audit_lossy(&state, &results);
    eprintln!(
        "written_unanswered={} dropped={} refused={} answered={} failed={failed} lost={lost} \
         duplicated={duplicated} out_of_order={out_of_order}",
        state.written_unanswered, state.dropped, state.refused, state.answered,
    );
    assert!(state.written_unanswered > 0, "no answer was lost");
    assert_eq!(failed, 0, "failed deliveries");
    assert_eq!(lost, 0, "acknowledged records not at their offsets");
    // Retries of written batches write them again: allowed, and expected.
    assert!(duplicated > 0, "no batch was written twice");
    assert_eq!(out_of_order, 0, "records out of order");
}
