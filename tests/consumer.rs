//! Consumer tests: the fault proxy used by the reliability test, and the
//! consumer stream against a real broker (`KAFKA_BOOTSTRAP`; skipped with a
//! notice when unset).

mod common;
#[path = "common/fake_broker.rs"]
mod fake_broker;
#[path = "common/proxy.rs"]
mod proxy;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use rskafka::{
    client::{
        consumer::{
            ConsumedRecord, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset,
            TimestampType,
        },
        partition::{Compression, OffsetAt},
        producer::{Acks, DeliveryFuture, ProducerConfig, ProducerMetrics, RecordMetadata},
        Client, ClientBuilder,
    },
    cluster::{Cluster, ClusterConfig},
    connection::BrokerConnection,
    protocol::{
        messages::{
            add_partitions_to_txn_request::AddPartitionsToTxnTopic,
            produce_request::{PartitionProduceData, TopicProduceData},
            AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest,
            InitProducerIdRequest, ProduceRequest,
        },
        record::{BatchHeader, RecordBatchWriter},
        ApiKey, ErrorCode,
    },
    record::Record,
};
use time::OffsetDateTime;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use proxy::FaultProxy;

/// An echo server on a free port; returns its address.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn proxy_forwards_transparently() {
    let upstream = echo_server().await;
    let proxy = FaultProxy::start(any_port(), upstream, None).await.unwrap();
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&payload).await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut got))
            .await
            .expect("echo through the proxy timed out")
            .unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert_eq!(got, payload);
    assert_eq!(proxy.stats().accepted.load(Ordering::Relaxed), 1);
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 0);
    assert_eq!(
        proxy.stats().bytes_up.load(Ordering::Relaxed),
        payload.len() as u64
    );
}

/// Reads until the proxy cuts the connection; returns how long it lived.
async fn lifetime_until_cut(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    loop {
        s.write_all(b"ping").await.ok();
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => panic!("the proxy did not cut the connection within 5 s"),
        }
    }
}

#[tokio::test]
async fn proxy_cuts_connections_within_the_lifetime_range() {
    let upstream = echo_server().await;
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(400));
    let proxy = FaultProxy::start(any_port(), upstream, Some((min, max)))
        .await
        .unwrap();
    for _ in 0..4 {
        let lived = lifetime_until_cut(proxy.local_addr()).await;
        assert!(lived >= min, "cut too early: {lived:?}");
        assert!(
            lived <= max + Duration::from_millis(300),
            "cut too late: {lived:?}"
        );
    }
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 4);

    // Switched off, connections outlive the range.
    proxy.set_cutting(false);
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    tokio::time::sleep(max + Duration::from_millis(200)).await;
    s.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 4);
}

// ---------------------------------------------------------------------------
// Helpers for the broker tests
// ---------------------------------------------------------------------------

async fn client(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_owned()])
        .client_id("rskafka-consumer-tests")
        .request_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {bootstrap}: {e}"))
}

async fn create_topic(client: &Client, prefix: &str, partitions: i32) -> String {
    let topic = common::unique_topic(prefix);
    client
        .controller_client()
        .unwrap()
        .create_topic(&topic, partitions, 1, 10_000)
        .await
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    topic
}

fn record_at(value: impl Into<Bytes>, timestamp: OffsetDateTime) -> Record {
    Record {
        key: None,
        value: Some(value.into()),
        headers: Vec::new(),
        timestamp,
    }
}

fn record(value: impl Into<Bytes>) -> Record {
    record_at(value, OffsetDateTime::now_utc())
}

/// Produces `values` to one partition as one batch; returns their offsets.
async fn produce(client: &Client, topic: &str, partition: i32, values: &[String]) -> Vec<i64> {
    let pc = client.partition_client(topic, partition).await.unwrap();
    pc.produce(
        values.iter().map(|v| record(v.clone())).collect(),
        Compression::None,
    )
    .await
    .unwrap_or_else(|e| panic!("produce to {topic}/{partition}: {e}"))
}

fn value(r: &ConsumedRecord) -> String {
    String::from_utf8(r.record.value.clone().unwrap_or_default().to_vec()).unwrap()
}

/// Reads `n` records with `next_batch`, failing after `timeout`.
async fn read_n(consumer: &mut Consumer, n: usize, timeout: Duration) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.next_batch()).await {
            Ok(Ok(batch)) => out.extend(batch),
            Ok(Err(e)) => panic!("consumer error after {} records: {e}", out.len()),
            Err(_) => panic!("only {} of {n} records within {timeout:?}", out.len()),
        }
    }
    out
}

/// Asserts that nothing arrives for `quiet`.
async fn assert_nothing_for(consumer: &mut Consumer, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.next_batch()).await {
            Err(_) => return,
            Ok(Ok(b)) if b.is_empty() => continue,
            Ok(Ok(b)) => panic!(
                "unexpected records: {:?}",
                b.iter().map(value).collect::<Vec<_>>()
            ),
            Ok(Err(e)) => panic!("unexpected error: {e}"),
        }
    }
}

/// Waits until `f` holds, polling.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Consuming against the shared broker
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_100k_records_from_six_partitions_in_order() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-100k", 6).await;
    const PER_PARTITION: usize = 100_000 / 6 + 1;
    let started = Instant::now();
    let producers: Vec<_> = (0..6)
        .map(|p| {
            let client = client.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut seq = 0;
                while seq < PER_PARTITION {
                    let n = 2_000.min(PER_PARTITION - seq);
                    let values: Vec<String> = (seq..seq + n).map(|i| format!("{p}:{i}")).collect();
                    produce(&client, &topic, p, &values).await;
                    seq += n;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let total = PER_PARTITION * 6;
    eprintln!("produced {total} records in {:?}", started.elapsed());

    let mut config = ConsumerConfig::default();
    for p in 0..6 {
        config = config.assign(&topic, p, StartOffset::Earliest);
    }
    let mut consumer = client.consumer(config).unwrap();
    let started = Instant::now();
    let records = read_n(&mut consumer, total, Duration::from_secs(60)).await;
    eprintln!(
        "consumed {} records in {:?}",
        records.len(),
        started.elapsed()
    );
    assert_eq!(records.len(), total, "no extra records");

    let mut next_seq = [0usize; 6];
    let mut seen = HashSet::new();
    for r in &records {
        assert_eq!(&*r.topic, topic);
        assert!(
            seen.insert((r.partition, r.offset)),
            "duplicate {}/{}",
            r.partition,
            r.offset
        );
        let v = value(r);
        let (p, seq) = v.split_once(':').unwrap();
        let (p, seq): (i32, usize) = (p.parse().unwrap(), seq.parse().unwrap());
        assert_eq!(p, r.partition, "record in the wrong partition");
        let expected = &mut next_seq[p as usize];
        assert_eq!(seq, *expected, "partition {p} out of order");
        assert_eq!(r.offset, seq as i64, "offsets are dense");
        *expected += 1;
    }
    assert!(next_seq.iter().all(|n| *n == PER_PARTITION));
    for p in 0..6 {
        assert_eq!(consumer.position(&topic, p), Some(PER_PARTITION as i64));
        assert_eq!(
            consumer.high_watermark(&topic, p),
            Some(PER_PARTITION as i64)
        );
    }
    assert_nothing_for(&mut consumer, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn start_positions_earliest_latest_offset_timestamp_and_mid_batch() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-start", 1).await;
    // One batch of ten records one second apart, an hour ago.
    let base =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() - 3600)
            .unwrap();
    let pc = client.partition_client(&topic, 0).await.unwrap();
    let records = (0..10)
        .map(|i| record_at(format!("r{i}"), base + Duration::from_secs(i)))
        .collect();
    assert_eq!(
        pc.produce(records, Compression::None).await.unwrap(),
        (0..10).collect::<Vec<_>>()
    );

    let consumer_at = |start| client.consumer(ConsumerConfig::default().assign(&topic, 0, start));

    let mut c = consumer_at(StartOffset::Earliest).unwrap();
    let got = read_n(&mut c, 10, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(got[3].record.timestamp, base + Duration::from_secs(3));
    assert_eq!(got[3].timestamp_type, TimestampType::CreateTime);

    // Offset 5 is in the middle of the batch: records before it are skipped.
    let mut c = consumer_at(StartOffset::At(5)).unwrap();
    let got = read_n(&mut c, 5, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        ["r5", "r6", "r7", "r8", "r9"]
    );

    let mut c = consumer_at(StartOffset::Timestamp(base + Duration::from_millis(3_500))).unwrap();
    let got = read_n(&mut c, 6, Duration::from_secs(20)).await;
    assert_eq!(got[0].offset, 4);

    // A timestamp after every record starts at the end.
    let mut future = consumer_at(StartOffset::Timestamp(
        OffsetDateTime::now_utc() + Duration::from_secs(3600),
    ))
    .unwrap();
    let mut latest = consumer_at(StartOffset::Latest).unwrap();
    eventually("latest positions", Duration::from_secs(20), || {
        future.position(&topic, 0) == Some(10) && latest.position(&topic, 0) == Some(10)
    })
    .await;
    assert_nothing_for(&mut latest, Duration::from_millis(600)).await;
    produce(&client, &topic, 0, &["new".to_owned()]).await;
    for c in [&mut future, &mut latest] {
        let got = read_n(c, 1, Duration::from_secs(20)).await;
        assert_eq!((got[0].offset, value(&got[0]).as_str()), (10, "new"));
        assert_eq!(c.position(&topic, 0), Some(11));
    }
}

#[tokio::test]
async fn offset_out_of_range_follows_the_reset_policy() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-oor", 1).await;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce(&client, &topic, 0, &values[..5]).await;
    produce(&client, &topic, 0, &values[5..]).await;
    let pc = client.partition_client(&topic, 0).await.unwrap();
    assert_eq!(pc.delete_records(3, 10_000).await.unwrap(), 3);

    let consumer = |start, reset| {
        client.consumer(
            ConsumerConfig::default()
                .assign(&topic, 0, start)
                .offset_reset(reset),
        )
    };

    // Earliest: past the end and below the log start both go to offset 3.
    for start in [StartOffset::At(100), StartOffset::At(1)] {
        let mut c = consumer(start, OffsetReset::Earliest).unwrap();
        let got = read_n(&mut c, 7, Duration::from_secs(20)).await;
        assert_eq!(got[0].offset, 3, "{start:?}");
        assert_eq!(value(&got[0]), "v3");
    }

    // Latest: continue at the end, with only new records.
    let mut c = consumer(StartOffset::At(100), OffsetReset::Latest).unwrap();
    eventually("the reset to latest", Duration::from_secs(20), || {
        c.position(&topic, 0) == Some(10)
    })
    .await;
    produce(&client, &topic, 0, &["v10".to_owned()]).await;
    let got = read_n(&mut c, 1, Duration::from_secs(20)).await;
    assert_eq!((got[0].offset, value(&got[0]).as_str()), (10, "v10"));

    // Error: an error item, then nothing until a seek.
    let mut c = consumer(StartOffset::At(100), OffsetReset::Error).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), c.next_batch())
        .await
        .expect("an error within 20 s")
        .expect_err("OFFSET_OUT_OF_RANGE is an error item");
    assert_eq!(e.error_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE), "{e}");
    assert_eq!((e.topic(), e.partition()), (Some(topic.as_str()), Some(0)));
    assert_eq!(e.api(), Some(ApiKey::FETCH));
    assert_nothing_for(&mut c, Duration::from_millis(800)).await;
    c.seek(&topic, 0, 8).unwrap();
    let got = read_n(&mut c, 3, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [8, 9, 10]);
}

#[tokio::test]
async fn assignment_changes_at_runtime() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-assign", 2).await;
    for p in 0..2 {
        let values: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        produce(&client, &topic, p, &values).await;
    }
    let mut c = client.consumer(ConsumerConfig::default()).unwrap();
    assert!(c.assignment().is_empty());
    assert_nothing_for(&mut c, Duration::from_millis(300)).await;

    c.assign(&topic, 0, StartOffset::Earliest).unwrap();
    let got = read_n(&mut c, 10, Duration::from_secs(20)).await;
    assert_eq!(value(&got[9]), "p0-9");

    c.assign(&topic, 1, StartOffset::At(5)).unwrap();
    let got = read_n(&mut c, 5, Duration::from_secs(20)).await;
    assert!(got.iter().all(|r| r.partition == 1));
    assert_eq!(value(&got[0]), "p1-5");
    assert_eq!(c.assignment(), vec![(topic.clone(), 0), (topic.clone(), 1)]);

    c.seek(&topic, 0, 8).unwrap();
    let got = read_n(&mut c, 2, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), ["p0-8", "p0-9"]);
    assert!(
        c.seek(&topic, 7, 0).is_err(),
        "seek on an unassigned partition"
    );

    assert!(c.unassign(&topic, 1));
    assert_eq!(c.position(&topic, 1), None);
    produce(&client, &topic, 1, &["p1-late".to_owned()]).await;
    produce(&client, &topic, 0, &["p0-late".to_owned()]).await;
    let got = read_n(&mut c, 1, Duration::from_secs(20)).await;
    assert_eq!(value(&got[0]), "p0-late");
    assert_nothing_for(&mut c, Duration::from_millis(800)).await;
}

#[tokio::test]
async fn prefetch_stays_within_the_memory_bound() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-memory", 2).await;
    // 2 x 4000 records of 1 KiB, in batches of ~100 KiB (below the
    // partition limit, so no batch is larger than the limits).
    let payload = "x".repeat(1024);
    for p in 0..2 {
        for chunk in 0..40 {
            let values: Vec<String> = (0..100)
                .map(|i| format!("{}-{payload}", chunk * 100 + i))
                .collect();
            produce(&client, &topic, p, &values).await;
        }
    }
    const LIMIT: usize = 1 << 20;
    // Room is reserved in wire bytes; decoded, the records also take their
    // structs (about 10% here), so a fetch into the last of the room can
    // end a little above the limit, as `max_buffered_bytes` documents.
    const BOUND: usize = LIMIT + LIMIT / 8;
    let mut c = client
        .consumer(
            ConsumerConfig::default()
                .assign(&topic, 0, StartOffset::Earliest)
                .assign(&topic, 1, StartOffset::Earliest)
                .max_buffered_bytes(LIMIT)
                .max_partition_bytes(256 << 10)
                .max_bytes(512 << 10),
        )
        .unwrap();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count < 8000 {
        assert!(Instant::now() < deadline, "only {count} records in 60 s");
        let batch = c.next_batch().await.unwrap();
        count += batch.len();
        assert!(
            c.buffered_bytes() <= BOUND,
            "buffered {} > {BOUND}",
            c.buffered_bytes()
        );
        // A slow application: the buffer fills up to its bound.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count, 8000);
    let peak = c.peak_buffered_bytes();
    eprintln!("peak buffered bytes: {peak} (limit {LIMIT})");
    assert!(
        peak <= BOUND,
        "peak {peak} above the limit {LIMIT} and its overshoot"
    );
    assert!(peak > 256 << 10, "prefetching buffered only {peak} bytes");
}

#[tokio::test]
async fn unknown_topic_is_reported() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = ClientBuilder::new(vec![bootstrap])
        .operation_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let topic = common::unique_topic("consumer-missing");
    let mut c = client
        .consumer(ConsumerConfig::default().assign(&topic, 0, StartOffset::Earliest))
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(15), c.next_batch())
        .await
        .expect("an error item within 15 s")
        .expect_err("unknown topic");
    assert_eq!(
        e.error_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{e}"
    );
    assert_eq!(e.topic(), Some(topic.as_str()));
}

#[tokio::test]
async fn log_append_time_is_reported() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = common::unique_topic("consumer-append-time");
    client
        .controller_client()
        .unwrap()
        .create_topic_with_configs(
            &topic,
            1,
            1,
            BTreeMap::from([(
                "message.timestamp.type".to_owned(),
                "LogAppendTime".to_owned(),
            )]),
            10_000,
        )
        .await
        .unwrap();
    let old = OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap();
    let pc = client.partition_client(&topic, 0).await.unwrap();
    pc.produce(
        vec![record_at("a", old), record_at("b", old)],
        Compression::None,
    )
    .await
    .unwrap();
    let mut c = client
        .consumer(ConsumerConfig::default().assign(&topic, 0, StartOffset::Earliest))
        .unwrap();
    // Through the `Stream` interface, record by record.
    let got: Vec<ConsumedRecord> = tokio::time::timeout(
        Duration::from_secs(20),
        (&mut c).take(2).map(|r| r.unwrap()).collect(),
    )
    .await
    .expect("two records within 20 s");
    let now = OffsetDateTime::now_utc();
    for r in &got {
        assert_eq!(r.timestamp_type, TimestampType::LogAppendTime);
        assert!(
            (now - r.record.timestamp).abs() < time::Duration::minutes(5),
            "{}",
            r.record.timestamp
        );
    }
    assert_eq!(got[0].record.timestamp, got[1].record.timestamp);
}

// ---------------------------------------------------------------------------
// Transactions, written with the raw protocol messages
// ---------------------------------------------------------------------------

/// A minimal transactional producer for one partition (single-broker
/// cluster: the one broker is the transaction coordinator), using the
/// pre-KIP-890 flow with explicit AddPartitionsToTxn.
struct TxnProducer {
    conn: BrokerConnection,
    id: String,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
}

/// Errors a transaction coordinator answers while it is getting ready.
fn coordinator_busy(code: ErrorCode) -> bool {
    code.is_retriable() || code == ErrorCode::CONCURRENT_TRANSACTIONS
}

impl TxnProducer {
    async fn new(bootstrap: &str, id: String) -> Self {
        let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
            .await
            .unwrap();
        let conn = cluster.any_broker().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // As every transactional client does: FindCoordinator first. It is
            // also what makes a fresh broker create `__transaction_state`;
            // InitProducerId alone answers NOT_COORDINATOR until then.
            conn.request(&FindCoordinatorRequest {
                key_type: 1,
                coordinator_keys: vec![id.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
            let resp = conn
                .request(&InitProducerIdRequest {
                    transactional_id: Some(id.clone()),
                    transaction_timeout_ms: 60_000,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                })
                .await
                .unwrap();
            let code = ErrorCode(resp.error_code);
            if code.is_ok() {
                return Self {
                    conn,
                    id,
                    producer_id: resp.producer_id,
                    epoch: resp.producer_epoch,
                    sequence: 0,
                };
            }
            assert!(
                coordinator_busy(code) && Instant::now() < deadline,
                "InitProducerId: {code}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Begins a transaction on `topic`/`partition` and writes `values` in it.
    async fn write(&mut self, topic: &str, partition: i32, values: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp = self
                .conn
                .request_version(
                    &AddPartitionsToTxnRequest {
                        v3_and_below_transactional_id: self.id.clone(),
                        v3_and_below_producer_id: self.producer_id,
                        v3_and_below_producer_epoch: self.epoch,
                        v3_and_below_topics: vec![AddPartitionsToTxnTopic {
                            name: topic.to_owned(),
                            partitions: vec![partition],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    3,
                )
                .await
                .unwrap();
            let code = resp
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| ErrorCode(p.partition_error_code))
                .find(|c| !c.is_ok())
                .unwrap_or(ErrorCode(resp.error_code));
            if code.is_ok() {
                break;
            }
            assert!(
                coordinator_busy(code) && Instant::now() < deadline,
                "AddPartitionsToTxn: {code}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut w = RecordBatchWriter::new(BatchHeader {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence: self.sequence,
            is_transactional: true,
            ..BatchHeader::default()
        });
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        for v in values {
            w.append(now as i64, None, Some(v.as_bytes()), &[]).unwrap();
        }
        self.sequence += values.len() as i32;
        let request = ProduceRequest {
            transactional_id: Some(self.id.clone()),
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: topic.to_owned(),
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(w.finish().unwrap()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        // v11: before KIP-890's implicit partition registration.
        let version = self.conn.version_for(ApiKey::PRODUCE).unwrap().min(11);
        let resp = self.conn.request_version(&request, version).await.unwrap();
        for p in resp.responses.iter().flat_map(|t| &t.partition_responses) {
            assert_eq!(
                ErrorCode(p.error_code),
                ErrorCode::NONE,
                "transactional produce"
            );
        }
    }

    async fn end(&mut self, commit: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let version = self.conn.version_for(ApiKey::END_TXN).unwrap().min(4);
            let resp = self
                .conn
                .request_version(
                    &EndTxnRequest {
                        transactional_id: self.id.clone(),
                        producer_id: self.producer_id,
                        producer_epoch: self.epoch,
                        committed: commit,
                        ..Default::default()
                    },
                    version,
                )
                .await
                .unwrap();
            let code = ErrorCode(resp.error_code);
            if code.is_ok() {
                return;
            }
            assert!(
                coordinator_busy(code) && Instant::now() < deadline,
                "EndTxn: {code}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn read_committed_skips_aborted_transactions_and_never_stalls_on_markers() {
    let Some(bootstrap) = testkit::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let topic = create_topic(&client, "consumer-txn", 1).await;
    let mut txn = TxnProducer::new(&bootstrap, common::unique_topic("consumer-txn-id")).await;

    produce(&client, &topic, 0, &["before".to_owned()]).await;
    txn.write(&topic, 0, &["a1", "a2", "a3"]).await;
    txn.end(true).await;
    txn.write(&topic, 0, &["b1", "b2"]).await;
    txn.end(false).await;
    produce(&client, &topic, 0, &["after".to_owned()]).await;
    // The log ends with an aborted transaction: its last batch is an ABORT
    // marker, which an `--exit-at-end` consumer must still get past.
    txn.write(&topic, 0, &["c1"]).await;
    txn.end(false).await;

    // The markers are written after EndTxn returns: wait until the last
    // stable offset reaches the high watermark.
    let pc = client.partition_client(&topic, 0).await.unwrap();
    let committed_pc = pc
        .clone()
        .with_isolation_level(IsolationLevel::ReadCommitted);
    let deadline = Instant::now() + Duration::from_secs(20);
    let end = loop {
        let hw = pc.get_offset(OffsetAt::Latest).await.unwrap();
        let lso = committed_pc.get_offset(OffsetAt::Latest).await.unwrap();
        if hw == lso {
            break lso;
        }
        assert!(
            Instant::now() < deadline,
            "LSO {lso} never reached the high watermark {hw}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // before, a1-a3, commit, b1-b2, abort, after, c1, abort.
    assert_eq!(end, 11);

    for (isolation, expected) in [
        (
            IsolationLevel::ReadCommitted,
            vec!["before", "a1", "a2", "a3", "after"],
        ),
        (
            IsolationLevel::ReadUncommitted,
            vec!["before", "a1", "a2", "a3", "b1", "b2", "after", "c1"],
        ),
    ] {
        let mut c = client
            .consumer(
                ConsumerConfig::default()
                    .assign(&topic, 0, StartOffset::Earliest)
                    .isolation(isolation),
            )
            .unwrap();
        // Consume the way `consume --exit-at-end` does: until the position
        // reaches the end offset seen at start.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.position(&topic, 0).is_none_or(|p| p < end) {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = tokio::time::timeout(left, c.next_batch())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{isolation:?}: stalled at position {:?} of {end}",
                        c.position(&topic, 0)
                    )
                })
                .unwrap();
            got.extend(batch);
        }
        assert_eq!(c.position(&topic, 0), Some(end), "{isolation:?}");
        assert_eq!(
            got.iter().map(value).collect::<Vec<_>>(),
            expected,
            "{isolation:?}"
        );
        if isolation == IsolationLevel::ReadCommitted {
            assert_eq!(c.last_stable_offset(&topic, 0), Some(end));
        }
    }
}

// ---------------------------------------------------------------------------
// 4(b): connections cut every 0.5-1.5 s while producing and consuming
// ---------------------------------------------------------------------------

/// A chaos record's id, from its payload "partition:sequence": unique per
/// record, and it names the partition the record was sent to.
fn chaos_id(value: Option<&[u8]>) -> Option<(i32, u64)> {
    let s = std::str::from_utf8(value?).ok()?;
    let (p, seq) = s.split_once(':')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// Per partition, the acknowledged (sequence, offset) pairs of a chaos run;
/// offset -1 where the broker did not say (a retried batch it already had).
type Acked = HashMap<i32, Vec<(u64, i64)>>;

/// A record as a chaos test saw it: partition, offset, id (`None` if the
/// payload is not a chaos record).
type ChaosRecord = (i32, i64, Option<(i32, u64)>);

/// Partitions of every chaos topic.
const CHAOS_PARTITIONS: i32 = 3;

async fn chaos_client(bootstrap: &str, client_id: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_string()])
        .client_id(client_id)
        .request_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap_or_else(|e| panic!("client through the proxy: {e}"))
}

/// Sends numbered records "p:seq" to every partition through one
/// [`Producer`](rskafka::client::producer::Producer) with `config` until
/// `stop`, with up to 30k records in flight; returns the acknowledged
/// records, the number of failed deliveries and the producer's counters.
async fn chaos_producer(
    client: Client,
    config: ProducerConfig,
    topic: String,
    stop: Instant,
    // Producing goes on past `stop` until a cut has made a batch retry (or
    // this passes): a run in which no cut hit a request tests nothing.
    stop_at_latest: Instant,
) -> (Acked, usize, ProducerMetrics) {
    let producer = client.producer(config).expect("producer");
    let mut pending: VecDeque<(i32, u64, DeliveryFuture)> = VecDeque::new();
    let mut acked = Acked::new();
    let mut failures = 0;
    let mut settle = |p: i32, s: u64, result: rskafka::error::Result<RecordMetadata>| match result {
        Ok(meta) => acked
            .entry(p)
            .or_default()
            .push((s, meta.offset.unwrap_or(-1))),
        Err(e) => {
            eprintln!("delivery failed: {e}");
            failures += 1;
        }
    };
    let mut seq = 0u64;
    while Instant::now() < stop
        || (producer.metrics().retries == 0 && Instant::now() < stop_at_latest)
    {
        for p in 0..CHAOS_PARTITIONS {
            match producer
                .send_to(&topic, Some(p), record(format!("{p}:{seq}")))
                .await
            {
                Ok(f) => pending.push_back((p, seq, f)),
                Err(e) => settle(p, seq, Err(e)),
            }
        }
        seq += 1;
        if seq.is_multiple_of(100) {
            // About 30k records/s: plenty of traffic through every cut,
            // while the final comparison stays quick.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while pending.len() > 30_000 {
            if let Some((p, s, f)) = pending.pop_front() {
                settle(p, s, f.await);
            }
        }
    }
    producer.flush().await;
    while let Some((p, s, f)) = pending.pop_front() {
        settle(p, s, f.await);
    }
    let metrics = producer.metrics();
    producer.close().await;
    (acked, failures, metrics)
}

/// Writes numbered records "p:seq" to every partition in calls of 50 to
/// [`PartitionClient::produce`](rskafka::client::partition::PartitionClient::produce),
/// one call after the other per partition, until `stop`; returns the
/// acknowledged records and the failed calls. A call whose request may have
/// been written fails instead of sending it again, so calls fail under cuts
/// (their records may or may not be in the log), but nothing is written
/// twice.
async fn chaos_partition_clients(client: Client, topic: String, stop: Instant) -> (Acked, usize) {
    let tasks: Vec<_> = (0..CHAOS_PARTITIONS)
        .map(|p| {
            let client = client.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failures = 0;
                let mut seq = 0u64;
                while Instant::now() < stop {
                    let pc = match client.partition_client(&topic, p).await {
                        Ok(pc) => pc,
                        Err(e) => {
                            eprintln!("partition client {p}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let ids: Vec<u64> = (seq..seq + 50).collect();
                    seq += 50;
                    let records = ids.iter().map(|s| record(format!("{p}:{s}"))).collect();
                    match pc.produce(records, Compression::None).await {
                        Ok(offsets) => acked.extend(ids.into_iter().zip(offsets)),
                        Err(_) => failures += 1,
                    }
                }
                (p, acked, failures)
            })
        })
        .collect();
    let mut acked = Acked::new();
    let mut failures = 0;
    for t in tasks {
        let (p, a, f) = t.await.expect("partition client task");
        acked.insert(p, a);
        failures += f;
    }
    (acked, failures)
}

/// How a chaos run writes.
enum ChaosWriter {
    /// Through one [`Producer`](rskafka::client::producer::Producer).
    Producer(ProducerConfig),
    /// Through [`chaos_partition_clients`].
    PartitionClients,
}

/// What the consumer that reads during the chaos has delivered.
#[derive(Default)]
struct Live {
    records: Vec<ChaosRecord>,
    /// Per partition, the offset after the last record delivered.
    next: HashMap<i32, i64>,
    errors: usize,
}

/// Reads the whole of `topic` back from offset 0 to its end offsets at the
/// time of the call, with a client and consumer of its own (nothing the
/// chaos run's consumer learned is reused); returns the records in offset
/// order per partition and the end offsets.
async fn read_back(bootstrap: &str, topic: &str) -> (Vec<ChaosRecord>, HashMap<i32, i64>) {
    let client = chaos_client(bootstrap, "rskafka-consumer-chaos-readback").await;
    let mut ends = HashMap::new();
    // An error, not a silent jump, if offset 0 were not in the log.
    let mut config = ConsumerConfig::default()
        .max_wait(Duration::from_millis(200))
        .offset_reset(OffsetReset::Error);
    for p in 0..CHAOS_PARTITIONS {
        let pc = client
            .partition_client(topic, p)
            .await
            .unwrap_or_else(|e| panic!("read back {topic}/{p}: {e}"));
        let start = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .unwrap_or_else(|e| panic!("read back {topic}/{p}: {e}"));
        // Nothing is deleted during the test, so from 0 is every record
        // ever written.
        assert_eq!(start, 0, "{topic}/{p} does not start at offset 0");
        let end = pc
            .get_offset(OffsetAt::Latest)
            .await
            .unwrap_or_else(|e| panic!("read back {topic}/{p}: {e}"));
        ends.insert(p, end);
        config = config.assign(topic, p, StartOffset::At(0));
    }
    let mut consumer = client.consumer(config).unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut log = Vec::new();
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.next_batch()).await {
            Ok(Ok(batch)) => {
                for r in batch {
                    next.insert(r.partition, r.offset + 1);
                    log.push((r.partition, r.offset, chaos_id(r.record.value.as_deref())));
                }
            }
            Ok(Err(e)) => panic!("reading {topic} back: {e}"),
            Err(_) => panic!("reading {topic} back: at {next:?} of {ends:?} after {limit:?}"),
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    // Only what was there when the end offsets were taken.
    log.retain(|(p, o, _)| ends.get(p).is_some_and(|end| o < end));
    log.sort_by_key(|(p, o, _)| (*p, *o));
    (log, ends)
}

/// The findings of one chaos run.
#[derive(Default)]
struct ChaosCounts {
    /// Connections the proxy cut during the run.
    cuts: u64,
    /// Records whose delivery succeeded.
    acknowledged: usize,
    /// Of those, acknowledged without an offset.
    acknowledged_without_offset: usize,
    /// Records whose delivery failed.
    produce_failures: usize,
    /// Batch attempts the producer retried (each after a cut, mostly).
    retries: u64,
    /// Epoch bumps of the idempotent producer.
    epoch_bumps: u64,
    /// Records in the log read back after the run.
    log_records: usize,
    /// Acknowledged records not at their acknowledged offset in the log
    /// read back (or, acknowledged without an offset, nowhere in their
    /// partition).
    lost: usize,
    /// Extra copies of a record in the log.
    duplicated: usize,
    /// Records (first copies) whose id is not above every earlier id of
    /// their partition in the log.
    out_of_order: usize,
    /// Log records that are not chaos records of their partition.
    foreign: usize,
    /// Offsets the read-back delivered twice or skipped (a read-back fault,
    /// which would make the other counts meaningless).
    read_back_faults: usize,
    /// Records the consumer that read during the run delivered.
    live_consumed: usize,
    /// Log records it never delivered.
    live_missed: usize,
    /// Offsets it delivered twice, out of order, or with another record
    /// than the log holds there.
    live_wrong: usize,
    /// Error items it yielded.
    live_errors: usize,
}

impl ChaosCounts {
    /// The counts of a run on one line, for the test's output.
    fn summary(&self) -> String {
        format!(
            "cuts={} acknowledged={} (without offset {}) produce_failures={} retries={} \
             epoch_bumps={} log={} lost={} \
             duplicated={} out_of_order={} foreign={} read_back_faults={} live_consumed={} \
             live_missed={} live_wrong={} live_errors={}",
            self.cuts,
            self.acknowledged,
            self.acknowledged_without_offset,
            self.produce_failures,
            self.retries,
            self.epoch_bumps,
            self.log_records,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.foreign,
            self.read_back_faults,
            self.live_consumed,
            self.live_missed,
            self.live_wrong,
            self.live_errors,
        )
    }
}

/// Compares what was acknowledged and what the live consumer delivered with
/// the log read back.
fn chaos_counts(
    acked: &Acked,
    log: &[ChaosRecord],
    ends: &HashMap<i32, i64>,
    live: &Live,
) -> ChaosCounts {
    let mut c = ChaosCounts {
        acknowledged: acked.values().map(Vec::len).sum(),
        acknowledged_without_offset: acked.values().flatten().filter(|(_, o)| *o < 0).count(),
        log_records: log.len(),
        live_consumed: live.records.len(),
        live_errors: live.errors,
        ..ChaosCounts::default()
    };
    let mut at: HashMap<(i32, i64), Option<(i32, u64)>> = HashMap::new();
    let mut copies: HashMap<(i32, u64), usize> = HashMap::new();
    let mut last_id: HashMap<i32, u64> = HashMap::new();
    let mut expected_offset: HashMap<i32, i64> = HashMap::new();
    for &(p, o, id) in log {
        let e = expected_offset.entry(p).or_insert(0);
        if o != *e {
            c.read_back_faults += 1;
            eprintln!("read back: partition {p} offset {o} where {e} was due");
        }
        *e = o + 1;
        at.insert((p, o), id);
        match id {
            Some((idp, s)) if idp == p => {
                let n = copies.entry((p, s)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    c.duplicated += 1;
                } else {
                    if last_id.get(&p).is_some_and(|&l| s <= l) {
                        c.out_of_order += 1;
                        eprintln!(
                            "partition {p}: id {s} at offset {o} after id {:?}",
                            last_id.get(&p)
                        );
                    }
                    last_id.insert(p, s);
                }
            }
            _ => {
                c.foreign += 1;
                eprintln!(
                    "partition {p} offset {o}: not a chaos record of this partition ({id:?})"
                );
            }
        }
    }
    for (p, end) in ends {
        if expected_offset.get(p).copied().unwrap_or(0) != *end {
            c.read_back_faults += 1;
            eprintln!(
                "read back: partition {p} ends at {:?}, not {end}",
                expected_offset.get(p)
            );
        }
    }
    for (&p, list) in acked {
        for &(s, o) in list {
            let found = if o >= 0 {
                at.get(&(p, o)).copied().flatten() == Some((p, s))
            } else {
                copies.contains_key(&(p, s))
            };
            if !found {
                c.lost += 1;
                if c.lost <= 10 {
                    eprintln!(
                        "lost: partition {p} id {s} acknowledged at offset {o}; the log has {:?} there",
                        at.get(&(p, o))
                    );
                }
            }
        }
    }
    let mut live_next: HashMap<i32, i64> = HashMap::new();
    let mut live_seen: HashSet<(i32, i64)> = HashSet::new();
    for &(p, o, id) in &live.records {
        let wrong_order = live_next.get(&p).is_some_and(|&n| o < n);
        let wrong_record = at.get(&(p, o)).is_some_and(|&logged| logged != id);
        if !live_seen.insert((p, o)) || wrong_order || wrong_record {
            c.live_wrong += 1;
            if c.live_wrong <= 10 {
                eprintln!("live consumer: partition {p} offset {o} ({id:?}) duplicated, out of order or not the logged record");
            }
        }
        live_next.insert(p, o + 1);
    }
    c.live_missed = log
        .iter()
        .filter(|(p, o, _)| !live_seen.contains(&(*p, *o)))
        .count();
    c
}

#[test]
fn chaos_accounting_finds_lost_duplicated_misplaced_and_skipped_records() {
    let id = |p: i32, s: u64| Some((p, s));
    // Partition 0: ids 0, 1, 1 (a duplicate), 3, 2 (out of order), then a
    // record of partition 1 (foreign). Partition 1: empty.
    let log: Vec<ChaosRecord> = vec![
        (0, 0, id(0, 0)),
        (0, 1, id(0, 1)),
        (0, 2, id(0, 1)),
        (0, 3, id(0, 3)),
        (0, 4, id(0, 2)),
        (0, 5, id(1, 9)),
    ];
    let ends = HashMap::from([(0, 6), (1, 0)]);
    let acked = Acked::from([
        // 0 and 1 where acknowledged; 3 acknowledged at 2, where a copy of 1
        // is (lost); 2 without an offset but present; 4 nowhere (lost).
        (0, vec![(0, 0), (1, 1), (3, 2), (2, -1), (4, -1)]),
        // Acknowledged at an offset past the end: lost.
        (1, vec![(0, 0)]),
    ]);
    // The live consumer: offsets 0, 1, 1 again, 3 (2 skipped), then 4 with
    // the wrong record; 5 never.
    let live = Live {
        records: vec![
            (0, 0, id(0, 0)),
            (0, 1, id(0, 1)),
            (0, 1, id(0, 1)),
            (0, 3, id(0, 3)),
            (0, 4, id(0, 7)),
        ],
        next: HashMap::new(),
        errors: 1,
    };
    let c = chaos_counts(&acked, &log, &ends, &live);
    assert_eq!(c.acknowledged, 6);
    assert_eq!(c.acknowledged_without_offset, 2);
    assert_eq!(c.log_records, 6);
    assert_eq!(c.lost, 3, "3 at offset 2, 4 nowhere, partition 1's record");
    assert_eq!(c.duplicated, 1);
    assert_eq!(c.out_of_order, 1);
    assert_eq!(c.foreign, 1);
    assert_eq!(c.read_back_faults, 0);
    assert_eq!(c.live_consumed, 5);
    assert_eq!(c.live_missed, 2, "offsets 2 and 5");
    assert_eq!(c.live_wrong, 2, "offset 1 twice, offset 4's record");
    assert_eq!(c.live_errors, 1);
    // A read-back that skips an offset or stops short is caught.
    let holey: Vec<ChaosRecord> = vec![(0, 0, id(0, 0)), (0, 2, id(0, 1))];
    let c = chaos_counts(
        &Acked::new(),
        &holey,
        &HashMap::from([(0, 4)]),
        &Live::default(),
    );
    assert_eq!(c.read_back_faults, 2);
}

/// One chaos run on a fresh topic behind `proxy`: a consumer reads from
/// the start while a producer with `producer_config` writes for `chaos`
/// and the proxy cuts every connection; then the log is read back whole
/// and compared with what was acknowledged and consumed.
async fn chaos_run(
    proxy: &FaultProxy,
    name: &str,
    writer: ChaosWriter,
    chaos: Duration,
) -> ChaosCounts {
    let bootstrap = proxy.local_addr().to_string();
    proxy.set_cutting(false);
    let client = chaos_client(&bootstrap, "rskafka-consumer-chaos").await;
    let topic = create_topic(&client, &format!("consumer-chaos-{name}"), CHAOS_PARTITIONS).await;

    // An out-of-range position must show as an error, never as a silent
    // jump to the end (which would hide records).
    let mut config = ConsumerConfig::default()
        .max_wait(Duration::from_millis(200))
        .offset_reset(OffsetReset::Error);
    for p in 0..CHAOS_PARTITIONS {
        config = config.assign(&topic, p, StartOffset::Earliest);
    }
    let mut consumer = client.consumer(config).unwrap();
    let live: Arc<Mutex<Live>> = Arc::default();
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run_start = Instant::now();
    let reader = tokio::spawn({
        let live = Arc::clone(&live);
        let stop_reading = Arc::clone(&stop_reading);
        async move {
            while !stop_reading.load(Ordering::Relaxed) {
                let batch =
                    match tokio::time::timeout(Duration::from_millis(200), consumer.next_batch())
                        .await
                    {
                        Err(_) => continue,
                        Ok(b) => b,
                    };
                let mut l = live.lock().unwrap();
                match batch {
                    Ok(batch) => {
                        for r in batch {
                            l.next.insert(r.partition, r.offset + 1);
                            l.records.push((
                                r.partition,
                                r.offset,
                                chaos_id(r.record.value.as_deref()),
                            ));
                        }
                    }
                    Err(e) => {
                        eprintln!("consumer error item at {:?}: {e}", run_start.elapsed());
                        l.errors += 1;
                    }
                }
            }
            consumer
        }
    });

    let cuts_before = proxy.stats().cut.load(Ordering::Relaxed);
    proxy.set_cutting(true);
    eprintln!("{name}: chaos starts");
    let stop = Instant::now() + chaos;
    let (acked, produce_failures, metrics) = match writer {
        ChaosWriter::Producer(config) => {
            // Its own client, so producer and consumer connections are cut
            // independently.
            let producer_client = chaos_client(&bootstrap, "rskafka-consumer-chaos-producer").await;
            chaos_producer(
                producer_client,
                config,
                topic.clone(),
                stop,
                stop + 2 * chaos,
            )
            .await
        }
        ChaosWriter::PartitionClients => {
            // The consumer's client: produce and fetch requests share
            // connections and are cut together (as in the test's first form,
            // whose early runs reported losses).
            let (acked, failures) =
                chaos_partition_clients(client.clone(), topic.clone(), stop).await;
            (acked, failures, ProducerMetrics::default())
        }
    };
    proxy.set_cutting(false);
    let cuts = proxy.stats().cut.load(Ordering::Relaxed) - cuts_before;
    eprintln!(
        "{name}: chaos and producing end at {:?}",
        run_start.elapsed()
    );

    let (log, ends) = read_back(&bootstrap, &topic).await;
    eprintln!(
        "{name}: log read back at {:?}: ends {ends:?}",
        run_start.elapsed()
    );
    // The live consumer gets a minute to reach the end of the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let caught_up = {
            let l = live.lock().unwrap();
            ends.iter()
                .all(|(p, end)| l.next.get(p).copied().unwrap_or(0) >= *end)
        };
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything still in flight (e.g. a duplicate delivery) arrives within a
    // little while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_reading.store(true, Ordering::Relaxed);
    let consumer = reader.await.unwrap();
    consumer.close(Duration::from_secs(5)).await;
    let live = std::mem::take(&mut *live.lock().unwrap());
    let mut counts = chaos_counts(&acked, &log, &ends, &live);
    counts.cuts = cuts;
    counts.produce_failures = produce_failures;
    counts.retries = metrics.retries;
    counts.epoch_bumps = metrics.epoch_bumps;
    eprintln!(
        "{name} ({chaos:?}): {}; proxy {}",
        counts.summary(),
        proxy.stats().summary()
    );
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_no_duplicates_while_a_proxy_cuts_every_connection() {
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    let chaos = Duration::from_secs(
        std::env::var("RSKAFKA_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    // A port range of its own (other tests' private brokers use 29192+).
    let (proxy, broker) = proxy::proxied_private_broker(
        29_592,
        Some((Duration::from_millis(500), Duration::from_millis(1500))),
    )
    .await;

    let idempotent = chaos_run(
        &proxy,
        "idempotent",
        ChaosWriter::Producer(ProducerConfig::default()),
        chaos,
    )
    .await;
    // Without idempotence a retried batch may be written twice, but none
    // may be lost; a third of the time keeps the test's length reasonable.
    let at_least_once = chaos_run(
        &proxy,
        "at-least-once",
        ChaosWriter::Producer(ProducerConfig::default().acks(Acks::All).idempotence(false)),
        chaos / 3,
    )
    .await;
    // PartitionClient::produce never sends a maybe-written batch again: its
    // calls may fail under cuts, but nothing is lost or written twice.
    let partition_clients = chaos_run(
        &proxy,
        "partition-clients",
        ChaosWriter::PartitionClients,
        chaos / 3,
    )
    .await;
    drop(broker);

    for (name, c, secs) in [
        ("idempotent", &idempotent, chaos.as_secs()),
        ("at-least-once", &at_least_once, chaos.as_secs() / 3),
    ] {
        assert!(
            c.cuts > secs / 2,
            "{name}: the proxy cut only {} connections",
            c.cuts
        );
        assert!(c.acknowledged > 0, "{name}: nothing was acknowledged");
        // The cuts must have hit produce requests, or nothing was tested.
        assert!(c.retries > 0, "{name}: no batch had to be retried");
        assert_eq!(c.produce_failures, 0, "{name}: deliveries failed");
        assert_eq!(
            c.read_back_faults, 0,
            "{name}: the read-back skipped or repeated offsets"
        );
        assert_eq!(
            c.foreign, 0,
            "{name}: records in the wrong partition or garbled"
        );
        assert_eq!(c.lost, 0, "{name}: acknowledged records lost");
        assert_eq!(c.out_of_order, 0, "{name}: records out of order");
        assert_eq!(c.live_errors, 0, "{name}: the consumer reported errors");
        assert_eq!(c.live_missed, 0, "{name}: the consumer skipped records");
        assert_eq!(
            c.live_wrong, 0,
            "{name}: the consumer delivered wrong records"
        );
    }
    assert_eq!(
        idempotent.duplicated, 0,
        "idempotent: records written twice"
    );
    eprintln!(
        "at-least-once: {} duplicated records (allowed without idempotence)",
        at_least_once.duplicated
    );
    let c = &partition_clients;
    assert!(
        c.cuts > chaos.as_secs() / 6,
        "partition-clients: the proxy cut only {} connections",
        c.cuts
    );
    assert!(
        c.acknowledged > 0,
        "partition-clients: nothing was acknowledged"
    );
    // Failed calls show that cuts hit requests in flight.
    assert!(c.produce_failures > 0, "partition-clients: no call was cut");
    assert_eq!(c.read_back_faults, 0, "partition-clients: read-back faults");
    assert_eq!(c.foreign, 0, "partition-clients: foreign records");
    assert_eq!(c.lost, 0, "partition-clients: acknowledged records lost");
    assert_eq!(c.duplicated, 0, "partition-clients: records written twice");
    assert_eq!(c.out_of_order, 0, "partition-clients: records out of order");
    assert_eq!(c.live_errors, 0, "partition-clients: consumer errors");
    assert_eq!(c.live_missed, 0, "partition-clients: records skipped");
    assert_eq!(c.live_wrong, 0, "partition-clients: wrong deliveries");
}

// ---------------------------------------------------------------------------
// A broker that stops answering
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_is_reported_and_consumption_resumes() {
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    let port = common::free_port_base(29_692).expect("a free port range");
    let broker = tokio::task::spawn_blocking(move || common::PrivateBroker::start(port))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private broker: {e}"));
    let client = ClientBuilder::new(vec![broker.bootstrap()])
        .request_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let topic = create_topic(&client, "consumer-paused", 1).await;
    produce(&client, &topic, 0, &["a".to_owned(), "b".to_owned()]).await;
    let mut c = client
        .consumer(
            ConsumerConfig::default()
                .assign(&topic, 0, StartOffset::Earliest)
                .max_wait(Duration::from_millis(200)),
        )
        .unwrap();
    assert_eq!(read_n(&mut c, 2, Duration::from_secs(20)).await.len(), 2);

    broker.pause().unwrap();
    let paused_at = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), c.next_batch())
        .await
        .expect("an error item while the broker is paused")
        .expect_err("no records from a paused broker");
    eprintln!("after {:?}: {e}", paused_at.elapsed());
    assert!(e.is_retriable(), "{e}");
    assert_eq!((e.topic(), e.partition()), (Some(topic.as_str()), Some(0)));

    broker.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pc = client.partition_client(&topic, 0).await.unwrap();
    while pc
        .produce(vec![record("after")], Compression::None)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the broker did not come back");
    }
    // Stall reports may still be queued from the pause: skip them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_batch()).await {
            Ok(Ok(b)) if b.is_empty() => {}
            Ok(Ok(b)) => {
                assert_eq!(value(&b[0]), "after");
                assert_eq!(b[0].offset, 2);
                break;
            }
            Ok(Err(e)) => assert!(e.is_retriable(), "{e}"),
            Err(_) => panic!("consumption did not resume"),
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted two-broker cluster: fetch sessions, a leader move with a
// KIP-951 hint, and log truncation found by OffsetForLeaderEpoch
// ---------------------------------------------------------------------------

mod scripted {
    use std::sync::{Arc, Mutex};

    use bytes::{Bytes, BytesMut};
    use rskafka::protocol::{
        messages::{
            fetch_response::{
                FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
            },
            metadata_response::{
                MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
            },
            offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
            FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
            OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
        },
        record::{BatchHeader, RecordBatchWriter},
        ApiKey, ErrorCode, Uuid,
    };

    use crate::fake_broker::{api_versions, decode_request, delayed, reply, Action, Seen};

    pub const TOPIC: &str = "scripted";
    pub const TOPIC_ID: Uuid = Uuid([9; 16]);

    /// What both fake brokers share.
    #[derive(Default)]
    pub struct Script {
        pub ports: [i32; 2],
        /// Current leader id and epoch of partition 0.
        pub leader: (i32, i32),
        pub a_fetches: usize,
    }

    fn versions(version: i16) -> Action {
        api_versions(
            version,
            &[
                (ApiKey::FETCH, 4, 16),
                (ApiKey::LIST_OFFSETS, 1, 8),
                (ApiKey::OFFSET_FOR_LEADER_EPOCH, 2, 4),
            ],
        )
    }

    /// A batch of records `from..to` with values `<prefix>-<offset>`.
    fn batch(prefix: &str, from: i64, to: i64, epoch: i32) -> Bytes {
        let mut w = RecordBatchWriter::new(BatchHeader {
            base_offset: from,
            partition_leader_epoch: epoch,
            ..BatchHeader::default()
        });
        for o in from..to {
            w.append(1_000, None, Some(format!("{prefix}-{o}").as_bytes()), &[])
                .unwrap();
        }
        let mut out = BytesMut::new();
        w.finish_into(&mut out).unwrap();
        out.freeze()
    }

    fn fetch_reply(version: i16, session_id: i32, error: i16, partition: PartitionData) -> Action {
        let resp = FetchResponse {
            error_code: error,
            session_id,
            responses: if error == 0 {
                vec![FetchableTopicResponse {
                    topic: TOPIC.to_owned(),
                    topic_id: TOPIC_ID,
                    partitions: vec![partition],
                    ..Default::default()
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        reply::<FetchRequest>(&resp, version)
    }

    /// A fetch answer naming broker 2's endpoint (KIP-951).
    fn with_endpoint(version: i16, port: i32, partition: PartitionData) -> Action {
        let resp = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: TOPIC.to_owned(),
                topic_id: TOPIC_ID,
                partitions: vec![partition],
                ..Default::default()
            }],
            node_endpoints: vec![NodeEndpoint {
                node_id: 2,
                host: "127.0.0.1".to_owned(),
                port,
                ..Default::default()
            }],
            ..Default::default()
        };
        reply::<FetchRequest>(&resp, version)
    }

    /// The handler of broker `me` (1 = the first leader "A", 2 = "B").
    pub fn handler(me: i32, script: Arc<Mutex<Script>>) -> impl Fn(&Seen) -> Action + Send + Sync {
        move |seen: &Seen| {
            let mut s = script.lock().unwrap();
            match seen.api_key {
                ApiKey::API_VERSIONS => versions(seen.version),
                ApiKey::METADATA => {
                    let resp = MetadataResponse {
                        brokers: (0..2)
                            .map(|i| MetadataResponseBroker {
                                node_id: i + 1,
                                host: "127.0.0.1".to_owned(),
                                port: s.ports[i as usize],
                                ..Default::default()
                            })
                            .collect(),
                        controller_id: 1,
                        topics: vec![MetadataResponseTopic {
                            name: Some(TOPIC.to_owned()),
                            topic_id: TOPIC_ID,
                            partitions: vec![MetadataResponsePartition {
                                partition_index: 0,
                                leader_id: s.leader.0,
                                leader_epoch: s.leader.1,
                                replica_nodes: vec![1, 2],
                                isr_nodes: vec![1, 2],
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    reply::<MetadataRequest>(&resp, seen.version)
                }
                ApiKey::FETCH if me == 1 => {
                    let n = s.a_fetches;
                    s.a_fetches += 1;
                    let data = |records: Bytes| PartitionData {
                        partition_index: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 0,
                        records: Some(records),
                        ..Default::default()
                    };
                    match n {
                        0 => fetch_reply(seen.version, 77, 0, data(batch("a", 0, 5, 5))),
                        1 => fetch_reply(
                            seen.version,
                            0,
                            ErrorCode::FETCH_SESSION_ID_NOT_FOUND.0,
                            data(Bytes::new()),
                        ),
                        2 => fetch_reply(seen.version, 88, 0, data(batch("a", 5, 10, 5))),
                        _ => {
                            // The leader moved to broker 2 (epoch 6).
                            s.leader = (2, 6);
                            let p = PartitionData {
                                partition_index: 0,
                                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER.0,
                                high_watermark: -1,
                                current_leader: LeaderIdAndEpoch {
                                    leader_id: 2,
                                    leader_epoch: 6,
                                    ..Default::default()
                                },
                                ..Default::default()
                            };
                            let port = s.ports[1];
                            with_endpoint(seen.version, port, p)
                        }
                    }
                }
                ApiKey::FETCH => {
                    let req: FetchRequest = decode_request(seen);
                    let offset = req
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.fetch_offset)
                        .next();
                    let Some(offset) = offset else {
                        // Nothing changed in the session: nothing to say.
                        let resp = FetchResponse {
                            session_id: 99,
                            ..Default::default()
                        };
                        return delayed(
                            reply::<FetchRequest>(&resp, seen.version),
                            std::time::Duration::from_millis(100),
                        );
                    };
                    let records = if offset < 13 {
                        batch("b", offset, 13, 6)
                    } else {
                        Bytes::new()
                    };
                    let empty = records.is_empty();
                    // Broker 2 keeps session 99 for every fetch.
                    let action = fetch_reply(
                        seen.version,
                        99,
                        0,
                        PartitionData {
                            partition_index: 0,
                            high_watermark: 13,
                            last_stable_offset: 13,
                            log_start_offset: 0,
                            records: Some(records),
                            ..Default::default()
                        },
                    );
                    if empty {
                        delayed(action, std::time::Duration::from_millis(100))
                    } else {
                        action
                    }
                }
                ApiKey::OFFSET_FOR_LEADER_EPOCH => {
                    // Broker 2's log diverges from epoch 5 at offset 8.
                    let resp = OffsetForLeaderEpochResponse {
                        topics: vec![OffsetForLeaderTopicResult {
                            topic: TOPIC.to_owned(),
                            partitions: vec![EpochEndOffset {
                                partition: 0,
                                leader_epoch: 5,
                                end_offset: 8,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    reply::<OffsetForLeaderEpochRequest>(&resp, seen.version)
                }
                _ => Action::Silent,
            }
        }
    }
}

#[tokio::test]
async fn sessions_leader_moves_and_truncation_against_a_scripted_cluster() {
    use fake_broker::{decode_request, FakeBroker};
    use rskafka::protocol::messages::{FetchRequest, OffsetForLeaderEpochRequest};
    use scripted::{handler, Script, TOPIC, TOPIC_ID};

    let script = Arc::new(Mutex::new(Script {
        leader: (1, 5),
        ..Script::default()
    }));
    let a = FakeBroker::start(None, true, handler(1, Arc::clone(&script))).await;
    let b = FakeBroker::start(None, true, handler(2, Arc::clone(&script))).await;
    let port = |addr: &str| addr.rsplit(':').next().unwrap().parse::<i32>().unwrap();
    script.lock().unwrap().ports = [port(&a.addr), port(&b.addr)];

    let client = ClientBuilder::new(vec![a.addr.clone()])
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut c = client
        .consumer(
            ConsumerConfig::default()
                .assign(TOPIC, 0, StartOffset::At(0))
                .max_wait(Duration::from_millis(100)),
        )
        .unwrap();
    let mut got: Vec<(i64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.last().is_none_or(|(o, _)| *o < 12) {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, c.next_batch())
            .await
            .unwrap_or_else(|_| panic!("stuck after {got:?}"))
            .unwrap();
        got.extend(batch.iter().map(|r| (r.offset, value(r))));
    }
    // Broker 1's records up to some position k, then broker 2's log from
    // the divergence point (8) or from k if the application had not got
    // that far: nothing of broker 1 past the divergence is delivered after
    // broker 2's, and nothing is skipped.
    let k = got.iter().take_while(|(_, v)| v.starts_with("a-")).count() as i64;
    let expected: Vec<(i64, String)> = (0..k)
        .map(|o| (o, format!("a-{o}")))
        .chain((k.min(8)..13).map(|o| (o, format!("b-{o}"))))
        .collect();
    eprintln!("delivered: {got:?}");
    assert_eq!(got, expected);
    assert_eq!(c.position(TOPIC, 0), Some(13));

    // Broker 1 saw: a full fetch opening a session, an incremental one in
    // session 77 (epoch 1) at offset 5, a full one after the broker lost
    // the session, then an incremental one in session 88.
    let fetches: Vec<FetchRequest> = a
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.api_key == ApiKey::FETCH)
        .map(decode_request::<FetchRequest>)
        .collect();
    assert!(fetches.len() >= 4, "{} fetches", fetches.len());
    let summary = |f: &FetchRequest| {
        (
            f.session_id,
            f.session_epoch,
            f.topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.topic_id, p.fetch_offset, p.current_leader_epoch))
                })
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(summary(&fetches[0]), (0, 0, vec![(TOPIC_ID, 0, 5)]));
    assert_eq!(summary(&fetches[1]), (77, 1, vec![(TOPIC_ID, 5, 5)]));
    assert_eq!(summary(&fetches[2]), (0, 0, vec![(TOPIC_ID, 5, 5)]));
    assert_eq!(summary(&fetches[3]), (88, 1, vec![(TOPIC_ID, 10, 5)]));

    // Broker 2 was asked where epoch 5 ends, fenced by the new epoch 6,
    // and then fetched from with epoch 6.
    let seen_b = b.seen.lock().unwrap().clone();
    let validation: Vec<OffsetForLeaderEpochRequest> = seen_b
        .iter()
        .filter(|s| s.api_key == ApiKey::OFFSET_FOR_LEADER_EPOCH)
        .map(decode_request::<OffsetForLeaderEpochRequest>)
        .collect();
    assert_eq!(validation.len(), 1);
    let p = &validation[0].topics[0].partitions[0];
    assert_eq!((p.current_leader_epoch, p.leader_epoch), (6, 5));
    let first_b_fetch = seen_b
        .iter()
        .find(|s| s.api_key == ApiKey::FETCH)
        .map(decode_request::<FetchRequest>)
        .expect("broker 2 was fetched from");
    assert_eq!(summary(&first_b_fetch).2, vec![(TOPIC_ID, k.min(8), 6)]);

    // Closing the consumer closes broker 2's session: epoch -1, nothing
    // to fetch.
    c.close(Duration::from_secs(5)).await;
    let last_b_fetch = b
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s.api_key == ApiKey::FETCH)
        .map(decode_request::<FetchRequest>)
        .unwrap();
    assert_eq!(summary(&last_b_fetch), (99, -1, vec![]));
}

#[tokio::test]
async fn idle_partitions_in_a_fetch_session_are_not_reported_as_stalled() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    // Stall reports come after the operation timeout (1 s) without
    // progress; an idle partition is progress-free but not stalled: the
    // broker answers every (incremental) fetch, omitting it.
    let client = ClientBuilder::new(vec![bootstrap])
        .operation_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let topic = create_topic(&client, "consumer-idle", 2).await;
    let mut c = client
        .consumer(
            ConsumerConfig::default()
                .assign(&topic, 0, StartOffset::Latest)
                .assign(&topic, 1, StartOffset::Latest)
                .max_wait(Duration::from_millis(100)),
        )
        .unwrap();
    assert_nothing_for(&mut c, Duration::from_secs(4)).await;
    produce(&client, &topic, 1, &["wake".to_owned()]).await;
    let got = read_n(&mut c, 1, Duration::from_secs(10)).await;
    assert_eq!(value(&got[0]), "wake");
    assert_nothing_for(&mut c, Duration::from_secs(3)).await;
}
