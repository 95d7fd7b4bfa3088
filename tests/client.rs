//! The public client API against a real broker (`KAFKA_BOOTSTRAP`).

mod common;

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use rskafka::{
    client::{
        controller::{ConfigOp, ConfigSource},
        partition::{Acks, Compression, OffsetAt, PartitionClient},
        Client, ClientBuilder,
    },
    error::ErrorKind,
    protocol::{ApiKey, ErrorCode},
    record::{Record, RecordAndOffset},
};
use time::OffsetDateTime;

async fn client(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_owned()])
        .client_id("rskafka-client-tests")
        .request_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {bootstrap}: {e}"))
}

/// A fresh topic and a partition client for its partition 0.
async fn topic_with(client: &Client, prefix: &str, partitions: i32) -> (String, PartitionClient) {
    let topic = common::unique_topic(prefix);
    let controller = client.controller_client().expect("controller client");
    controller
        .create_topic(&topic, partitions, 1, 10_000)
        .await
        .expect("create topic");
    let pc = client
        .partition_client(&topic, 0)
        .await
        .expect("partition client");
    (topic, pc)
}

/// Timestamps at millisecond precision, as Kafka stores them.
fn ms(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1_000_000)).expect("time")
}

fn record(key: Option<&str>, value: Option<&[u8]>, headers: &[(&str, Option<&str>)]) -> Record {
    Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(Bytes::copy_from_slice),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                )
            })
            .collect(),
        timestamp: ms(OffsetDateTime::now_utc()),
    }
}

/// Records covering the edge cases: null key, tombstone, empty key and
/// value, duplicate header keys, null header values, binary data.
fn tricky_records() -> Vec<Record> {
    let base = ms(OffsetDateTime::now_utc()) - Duration::from_secs(60);
    let mut records = vec![
        record(None, Some(b"no key"), &[]),
        record(Some("tombstone"), None, &[]),
        record(Some(""), Some(b""), &[]),
        record(
            Some("dups"),
            Some(b"v"),
            &[("h", Some("1")), ("x", None), ("h", Some("2")), ("h", None)],
        ),
        record(
            Some("bin"),
            Some(&[0xff, 0x00, 0xfe, 0x80]),
            &[("b", Some(""))],
        ),
        record(None, None, &[]),
    ];
    for (i, r) in records.iter_mut().enumerate() {
        // Distinct, non-monotonic timestamps exercise the deltas.
        let shift = Duration::from_millis(if i % 2 == 0 { 10 * i as u64 } else { 3 });
        r.timestamp = base + shift;
    }
    records
}

fn assert_records(got: &[RecordAndOffset], want: &[Record], first_offset: i64) {
    assert_eq!(got.len(), want.len(), "record count: {got:#?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.offset, first_offset + i as i64, "offset of record {i}");
        assert_eq!(&g.record, w, "record {i}");
    }
}

#[tokio::test]
async fn readme_example() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    // The same steps as the README's first example.
    let client = ClientBuilder::new(vec![bootstrap])
        .build()
        .await
        .expect("build");
    let controller = client.controller_client().expect("controller");
    let topic = common::unique_topic("readme");
    controller
        .create_topic(&topic, 2, 1, 5_000)
        .await
        .expect("create");
    let partition_client = client.partition_client(&topic, 0).await.expect("pc");
    let record = Record {
        key: None,
        value: Some(b"hello kafka".to_vec().into()),
        headers: vec![("foo".into(), Some(b"bar".to_vec().into()))],
        timestamp: ms(OffsetDateTime::now_utc()),
    };
    let offsets = partition_client
        .produce(vec![record.clone()], Compression::default())
        .await
        .expect("produce");
    assert_eq!(offsets, vec![0]);
    let earliest = partition_client
        .get_offset(OffsetAt::Earliest)
        .await
        .expect("earliest");
    assert_eq!(earliest, 0);
    let (records, high_watermark) = partition_client
        .fetch_records(earliest, 1..1_000_000, 1_000)
        .await
        .expect("fetch");
    assert_eq!(high_watermark, 1);
    assert_records(&records, &[record], 0);
    let topics = client.list_topics().await.expect("list");
    let t = topics
        .iter()
        .find(|t| t.name == topic)
        .expect("topic listed");
    assert_eq!(t.partitions.iter().copied().collect::<Vec<_>>(), vec![0, 1]);
}

#[tokio::test]
async fn produce_and_fetch_with_every_codec() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_, pc) = topic_with(&client, "codecs", 1).await;
    let mut offset = 0;
    for codec in Compression::ALL {
        let want = tricky_records();
        let offsets = pc.produce(want.clone(), codec).await.expect("produce");
        let n = want.len() as i64;
        assert_eq!(offsets, (offset..offset + n).collect::<Vec<_>>(), "{codec}");
        let (got, hw) = pc
            .fetch_records(offset, 1..1_000_000, 1_000)
            .await
            .expect("fetch");
        assert_eq!(hw, offset + n, "{codec}");
        // Batches of earlier codecs precede this one only if fetched from
        // before `offset`; the fetch starts at it, so exactly these come back.
        assert_records(&got, &want, offset);
        offset += n;
    }
}

#[tokio::test]
async fn fetch_starting_in_the_middle_of_a_batch() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_, pc) = topic_with(&client, "midbatch", 1).await;
    let records: Vec<Record> = (0..10)
        .map(|i| {
            record(
                Some(&format!("k{i}")),
                Some(format!("v{i}").as_bytes()),
                &[],
            )
        })
        .collect();
    for codec in [Compression::None, Compression::Lz4] {
        let offsets = pc.produce(records.clone(), codec).await.expect("produce");
        let from = offsets[4];
        let res = pc.fetch(from, 1..1_000_000, 1_000).await.expect("fetch");
        assert_records(&res.records, &records[4..], from);
        assert_eq!(res.next_offset, offsets[9] + 1);
    }
}

#[tokio::test]
async fn offsets_earliest_latest_and_by_timestamp() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_, pc) = topic_with(&client, "timestamps", 1).await;
    assert_eq!(
        pc.get_offset(OffsetAt::Earliest).await.expect("earliest"),
        0
    );
    assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("latest"), 0);
    let base = ms(OffsetDateTime::now_utc()) - Duration::from_secs(3600);
    for i in 0..3u64 {
        let mut r = record(None, Some(b"x"), &[]);
        r.timestamp = base + Duration::from_secs(10 * i);
        pc.produce(vec![r], Compression::None)
            .await
            .expect("produce");
    }
    assert_eq!(
        pc.get_offset(OffsetAt::Earliest).await.expect("earliest"),
        0
    );
    assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("latest"), 3);
    let at = |d: u64| OffsetAt::Timestamp(base + Duration::from_secs(d));
    assert_eq!(pc.get_offset(at(0)).await.expect("ts 0"), 0);
    assert_eq!(pc.get_offset(at(5)).await.expect("ts 5"), 1);
    assert_eq!(pc.get_offset(at(10)).await.expect("ts 10"), 1);
    assert_eq!(pc.get_offset(at(11)).await.expect("ts 11"), 2);
    assert_eq!(
        pc.get_offset(at(7200)).await.expect("after all"),
        -1,
        "no record is that recent"
    );
}

#[tokio::test]
async fn offset_out_of_range_is_a_typed_error() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (topic, pc) = topic_with(&client, "oor", 1).await;
    pc.produce(vec![record(None, Some(b"x"), &[])], Compression::None)
        .await
        .expect("produce");
    let started = std::time::Instant::now();
    let err = pc
        .fetch_records(100, 1..1_000_000, 100)
        .await
        .expect_err("offset 100 is past the end");
    assert_eq!(err.kind(), ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert_eq!(err.error_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert_eq!(err.topic(), Some(topic.as_str()));
    assert_eq!(err.partition(), Some(0));
    assert_eq!(err.api(), Some(ApiKey::FETCH));
    assert!(!err.is_retriable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until the deadline"
    );
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("OFFSET_OUT_OF_RANGE"), "{line}");
    assert!(line.contains(&format!("{topic}/0")), "{line}");
}

#[tokio::test]
async fn unknown_topic_and_partition_are_typed_errors() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let missing = common::unique_topic("missing");
    let started = std::time::Instant::now();
    let err = client
        .partition_client(&missing, 0)
        .await
        .expect_err("no such topic");
    assert_eq!(
        err.kind(),
        ErrorKind::Kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{err}"
    );
    assert_eq!(err.topic(), Some(missing.as_str()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered, not retried"
    );

    let (topic, _) = topic_with(&client, "partitions", 1).await;
    let err = client
        .partition_client(&topic, 7)
        .await
        .expect_err("no partition 7");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{err}"
    );
    assert_eq!(err.partition(), Some(7));

    let controller = client.controller_client().expect("controller");
    let err = controller
        .delete_topic(&missing, 5_000)
        .await
        .expect_err("nothing to delete");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    assert_eq!(err.api(), Some(ApiKey::DELETE_TOPICS));
}

#[tokio::test]
async fn delete_records_moves_the_earliest_offset() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_, pc) = topic_with(&client, "deleterecords", 1).await;
    let records: Vec<Record> = (0..5)
        .map(|i| record(None, Some(format!("{i}").as_bytes()), &[]))
        .collect();
    pc.produce(records.clone(), Compression::None)
        .await
        .expect("produce");
    let low = pc.delete_records(3, 5_000).await.expect("delete");
    assert_eq!(low, 3);
    assert_eq!(
        pc.get_offset(OffsetAt::Earliest).await.expect("earliest"),
        3
    );
    assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("latest"), 5);
    let res = pc.fetch(3, 1..1_000_000, 100).await.expect("fetch");
    assert_records(&res.records, &records[3..], 3);
    assert_eq!(res.log_start_offset, 3);
    let err = pc
        .fetch_records(0, 1..1_000_000, 100)
        .await
        .expect_err("deleted");
    assert_eq!(err.error_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
}

#[tokio::test]
async fn many_concurrent_produce_calls_on_one_client() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_, pc) = topic_with(&client, "concurrent", 1).await;
    const CALLS: usize = 300;
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let pc = pc.clone();
            tokio::spawn(async move {
                let r = record(
                    Some(&i.to_string()),
                    Some(format!("value {i}").as_bytes()),
                    &[],
                );
                let offsets = pc.produce(vec![r], Compression::None).await?;
                Ok::<_, rskafka::error::Error>((i, offsets))
            })
        })
        .collect();
    let mut by_offset = BTreeMap::new();
    for t in tasks {
        let (i, offsets) = t.await.expect("task").expect("produce");
        assert_eq!(offsets.len(), 1);
        assert!(
            by_offset.insert(offsets[0], i).is_none(),
            "offset {} given twice",
            offsets[0]
        );
    }
    let keys: Vec<i64> = by_offset.keys().copied().collect();
    assert_eq!(keys, (0..CALLS as i64).collect::<Vec<_>>());
    // Every acknowledged record reads back at its offset.
    let mut offset = 0;
    let mut seen = 0;
    while offset < CALLS as i64 {
        let res = pc.fetch(offset, 1..1_000_000, 500).await.expect("fetch");
        for r in &res.records {
            let i = by_offset[&r.offset];
            assert_eq!(
                r.record.value.as_deref(),
                Some(format!("value {i}").as_bytes())
            );
            seen += 1;
        }
        offset = res.next_offset;
    }
    assert_eq!(seen, CALLS);
}

#[tokio::test]
async fn create_partitions_adds_usable_partitions() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (topic, _) = topic_with(&client, "grow", 1).await;
    let controller = client.controller_client().expect("controller");
    controller
        .create_partitions(&topic, 3, 10_000)
        .await
        .expect("grow");
    let t = client
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.name == topic)
        .expect("listed");
    assert_eq!(t.partitions.len(), 3);
    let pc = client.partition_client(&topic, 2).await.expect("pc 2");
    let offsets = pc
        .produce(vec![record(None, Some(b"p2"), &[])], Compression::Snappy)
        .await
        .expect("produce");
    assert_eq!(offsets, vec![0]);
    let err = controller
        .create_partitions(&topic, 2, 5_000)
        .await
        .expect_err("cannot shrink");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::INVALID_PARTITIONS),
        "{err}"
    );
    assert!(err.broker_message().is_some(), "{err}");
}

#[tokio::test]
async fn create_describe_alter_and_delete_a_topic() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let controller = client.controller_client().expect("controller");
    let topic = common::unique_topic("configs");
    let configs = BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
    controller
        .create_topic_with_configs(&topic, 1, 1, configs, 10_000)
        .await
        .expect("create");
    let err = controller
        .create_topic(&topic, 1, 1, 5_000)
        .await
        .expect_err("exists");
    assert_eq!(err.error_code(), Some(ErrorCode::TOPIC_ALREADY_EXISTS));
    assert!(
        err.broker_message().is_some_and(|m| m.contains(&topic)),
        "{err}"
    );

    let described = controller
        .describe_topic_configs(&topic)
        .await
        .expect("describe");
    let retention = &described["retention.ms"];
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source, ConfigSource::Topic);
    assert!(!retention.is_default);
    assert!(described["cleanup.policy"].is_default);

    controller
        .alter_topic_configs(
            &topic,
            vec![
                ("retention.ms".to_owned(), ConfigOp::Delete),
                (
                    "max.message.bytes".to_owned(),
                    ConfigOp::Set("123456".into()),
                ),
            ],
        )
        .await
        .expect("alter");
    let described = controller
        .describe_topic_configs(&topic)
        .await
        .expect("describe");
    assert_eq!(
        described["max.message.bytes"].value.as_deref(),
        Some("123456")
    );
    assert_ne!(described["retention.ms"].source, ConfigSource::Topic);

    controller
        .delete_topic(&topic, 10_000)
        .await
        .expect("delete");
    let listed = client.list_topics().await.expect("list");
    assert!(
        !listed.iter().any(|t| t.name == topic),
        "deleted topic listed"
    );
    let err = client
        .partition_client(&topic, 0)
        .await
        .expect_err("deleted");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
}

#[tokio::test]
async fn no_broker_reachable_fails_within_the_timeout() {
    // Needs no broker: port 1 on loopback refuses connections.
    let started = std::time::Instant::now();
    let err = ClientBuilder::new(vec!["127.0.0.1:1".to_owned()])
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));
}

// Multi-threaded, as applications run: connection tasks keep running (and
// notice the broker going away) while this test blocks on scripts/kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_broker_restart_and_pause() {
    // Runs only where the shared broker runs (same prerequisites), but on a
    // broker of its own, since it restarts and pauses it.
    if testkit::real_bootstrap("a broker of its own (scripts/kafka)").is_none() {
        return;
    }
    let port = common::free_port_base(29592).expect("a free port range");
    let broker = common::PrivateBroker::start(port).expect("private broker");
    let timeout = Duration::from_secs(3);
    let client = ClientBuilder::new(vec![broker.bootstrap()])
        .request_timeout(timeout)
        .operation_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("client");
    let topic = common::unique_topic("restart");
    client
        .controller_client()
        .expect("controller")
        .create_topic(&topic, 1, 1, 10_000)
        .await
        .expect("create");
    let pc = client.partition_client(&topic, 0).await.expect("pc");
    let mut acked = Vec::new();
    let batch = |tag: &str| -> Vec<Record> {
        (0..3)
            .map(|i| record(None, Some(format!("{tag}-{i}").as_bytes()), &[]))
            .collect()
    };

    let first = batch("before");
    let offsets = pc
        .produce(first.clone(), Compression::Gzip)
        .await
        .expect("produce");
    acked.extend(offsets.into_iter().zip(first));

    // Restarted between produce calls: the client reconnects by itself.
    broker.restart().expect("restart");
    let second = batch("after-restart");
    let offsets = pc
        .produce(second.clone(), Compression::Gzip)
        .await
        .expect("produce after restart");
    acked.extend(offsets.into_iter().zip(second));

    // Paused: a request fails within the request timeout, not later.
    broker.pause().expect("pause");
    let started = std::time::Instant::now();
    let result = pc.produce(batch("while-paused"), Compression::None).await;
    let took = started.elapsed();
    broker.resume().expect("resume");
    let err = result.expect_err("the broker is stopped");
    assert!(
        matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connection),
        "{err}"
    );
    assert!(took < timeout * 2 + Duration::from_secs(1), "took {took:?}");

    // Resumed: the same client works again (within its retry deadline).
    let third = batch("after-resume");
    let offsets = pc
        .produce(third.clone(), Compression::Gzip)
        .await
        .expect("produce after resume");
    acked.extend(offsets.into_iter().zip(third));

    // Every acknowledged record reads back at its offset. The paused
    // produce may or may not have been written: it is not checked.
    let mut got = BTreeMap::new();
    let mut offset = 0;
    let end = pc.get_offset(OffsetAt::Latest).await.expect("latest");
    while offset < end {
        let res = pc.fetch(offset, 1..1_000_000, 500).await.expect("fetch");
        for r in res.records {
            got.insert(r.offset, r.record);
        }
        offset = res.next_offset;
    }
    for (offset, want) in &acked {
        assert_eq!(got.get(offset), Some(want), "offset {offset}");
    }
}

#[tokio::test]
async fn acks_none_is_fire_and_forget_and_the_connection_stays_usable() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let client = client(&bootstrap).await;
    let (_topic, pc) = topic_with(&client, "acks-none", 1).await;
    // acks=all first: a fire-and-forget produce sent before the leader takes
    // writes would be lost without anyone noticing.
    let warm = record(Some("warm"), Some(b"up"), &[]);
    let offsets = pc
        .produce(vec![warm.clone()], Compression::None)
        .await
        .expect("warm-up produce");
    assert_eq!(offsets, vec![0]);
    let mut sent = vec![warm];
    for batch in 0..10 {
        let records: Vec<Record> = (0..100)
            .map(|i| {
                let v = format!("{}", batch * 100 + i);
                record(None, Some(v.as_bytes()), &[])
            })
            .collect();
        let offsets = pc
            .produce_with(records.clone(), Compression::None, Acks::None)
            .await
            .expect("acks=0 produce");
        assert_eq!(offsets, vec![-1; 100], "acks=0 offsets are unknown");
        sent.extend(records);
    }
    // The same connection still matches responses: a real answer comes back
    // with the offset after the 1 + 1000 records before it.
    let last = record(Some("last"), Some(b"acked"), &[]);
    let offsets = pc
        .produce_with(vec![last.clone()], Compression::None, Acks::All)
        .await
        .expect("acks=all after acks=0");
    assert_eq!(offsets, vec![1_001]);
    sent.push(last);
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let (records, _) = pc
            .fetch_records(got.len() as i64, 1..1_000_000, 1_000)
            .await
            .expect("fetch");
        assert!(
            !records.is_empty(),
            "fetch made no progress at {}",
            got.len()
        );
        got.extend(records);
    }
    assert_records(&got, &sent, 0);
}

/// Bad bootstrap addresses fail at once, refused connections within the
/// bootstrap budget, never after the (here long) request timeout; both
/// with a one-line error naming the cause. Needs no broker.
#[tokio::test]
async fn bad_bootstrap_addresses_fail_fast() {
    let build = |addr: &str, bootstrap: Option<Duration>| {
        let mut b = ClientBuilder::new(vec![addr.to_owned()])
            .request_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(60));
        if let Some(t) = bootstrap {
            b = b.bootstrap_timeout(t);
        }
        let addr = addr.to_owned();
        async move {
            let start = std::time::Instant::now();
            let e = b.build().await.expect_err(&addr);
            (start.elapsed(), e)
        }
    };
    for (addr, says) in [
        ("127.0.0.1:99999", "port"),
        ("127.0.0.1:abc", "port"),
        (":9092", "no host"),
        ("[::1", "']'"),
    ] {
        let (took, e) = build(addr, None).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{addr}: {e}");
        assert!(e.to_string().contains(says), "{addr}: {e}");
        assert!(took < Duration::from_secs(2), "{addr}: {took:?}");
    }
    // Reserved by RFC 2606: never resolves.
    for addr in ["no-such-broker.invalid:9092", "no-such-broker.invalid"] {
        let (took, e) = build(addr, None).await;
        assert!(e.to_string().contains("cannot resolve"), "{addr}: {e}");
        assert!(took < Duration::from_secs(5), "{addr}: {took:?}");
    }
    // A port nobody listens on: refused until the bootstrap budget ends.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for budget in [None, Some(Duration::from_secs(1))] {
        let (took, e) = build(&closed, budget).await;
        assert!(e.to_string().contains("refused"), "{e}");
        let limit = budget.unwrap_or(Duration::from_secs(5)) + Duration::from_secs(3);
        assert!(took < limit, "{budget:?}: {took:?}");
    }
}
