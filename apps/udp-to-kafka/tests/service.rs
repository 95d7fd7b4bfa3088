//! The service against the real broker (`KAFKA_BOOTSTRAP`): every partition
//! and checkpoint strategy, exactly-once delivery of 100k datagrams with
//! their headers, oversized datagrams, signals and exit codes.

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use common::*;

/// Sends `per_peer` datagrams from each of `n_peers` sockets (peer by peer
/// in turn), `value(peer, i)` each; returns the peers' addresses.
fn send(
    svc: &Service,
    n_peers: usize,
    per_peer: usize,
    value: impl Fn(usize, usize) -> Vec<u8>,
) -> Vec<String> {
    let socks = peers(n_peers);
    for i in 0..per_peer {
        for (k, s) in socks.iter().enumerate() {
            s.send_to(&value(k, i), svc.addr).expect("send");
        }
    }
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect()
}

fn value(peer: usize, i: usize) -> Vec<u8> {
    format!("peer {peer} datagram {i}").into_bytes()
}

/// Runs the service with `strategy` on a 3-partition topic, sends 4 peers
/// × 60 datagrams, stops it; returns the records read back, the peers and
/// the final line.
async fn run_strategy(
    broker: &str,
    strategy: &str,
) -> (
    Vec<(i32, rskafka::record::Record)>,
    Vec<String>,
    HashMap<String, String>,
) {
    let (client, topic, svc) = setup(
        broker,
        "udp-strategy",
        3,
        &[("KAFKA_PARTITION_STRATEGY", strategy)],
    )
    .await;
    let addrs = send(&svc, 4, 60, value);
    svc.wait_received(240);
    let (status, fin) = svc.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(count(&fin, "received"), 240);
    assert_eq!(count(&fin, "forwarded"), 240);
    assert_eq!(count(&fin, "failed"), 0);
    let records = read_all(&client, &topic, 3).await;
    assert_eq!(records.len(), 240);
    // Every datagram arrived once, with its sender as `source`.
    let mut seen = HashSet::new();
    for (_, r) in &records {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        let peer: usize = v.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(header(r, "source").as_deref(), Some(addrs[peer].as_str()));
        assert!(seen.insert(v), "duplicate");
    }
    (records, addrs, fin)
}

/// Per partition, how many records.
fn per_partition(records: &[(i32, rskafka::record::Record)]) -> [usize; 3] {
    let mut n = [0; 3];
    for (p, _) in records {
        n[*p as usize] += 1;
    }
    n
}

/// The `partition` header names the partition the record is in.
fn assert_partition_headers(records: &[(i32, rskafka::record::Record)]) {
    for (p, r) in records {
        assert_eq!(header(r, "partition"), Some(p.to_string()));
    }
}

#[tokio::test]
async fn strategy_none_leaves_the_partition_to_the_producer() {
    let Some(broker) = bootstrap() else { return };
    let (records, _, _) = run_strategy(&broker, "NONE").await;
    for (_, r) in &records {
        assert_eq!(header(r, "partition"), None);
        assert_eq!(r.headers.len(), 1);
    }
}

#[tokio::test]
async fn strategy_random_spreads_over_all_partitions() {
    let Some(broker) = bootstrap() else { return };
    let (records, _, _) = run_strategy(&broker, "RANDOM").await;
    assert_partition_headers(&records);
    // 240 uniform draws miss a partition with probability ~3·(2/3)^240.
    assert!(per_partition(&records).iter().all(|&n| n > 0));
}

#[tokio::test]
async fn strategy_round_robin_takes_partitions_in_turn() {
    let Some(broker) = bootstrap() else { return };
    let (records, _, _) = run_strategy(&broker, "ROUND_ROBIN").await;
    assert_partition_headers(&records);
    assert_eq!(per_partition(&records), [80, 80, 80]);
}

#[tokio::test]
async fn strategy_sticky_round_robin_keeps_each_peer_on_one_partition() {
    let Some(broker) = bootstrap() else { return };
    let (records, addrs, fin) = run_strategy(&broker, "STICKY_ROUND_ROBIN").await;
    assert_partition_headers(&records);
    let mut of_peer: HashMap<String, HashSet<i32>> = HashMap::new();
    for (p, r) in &records {
        of_peer
            .entry(header(r, "source").unwrap())
            .or_default()
            .insert(*p);
    }
    assert_eq!(of_peer.len(), 4);
    for a in &addrs {
        assert_eq!(of_peer[a].len(), 1, "peer {a} on {:?}", of_peer[a]);
    }
    // 4 peers round-robin over 3 partitions: 2, 1, 1 peers (60 each).
    let mut n = per_partition(&records);
    n.sort();
    assert_eq!(n, [60, 60, 120]);
    assert_eq!(count(&fin, "active_peers"), 4);
}

#[tokio::test]
async fn closed_doors_discards_everything() {
    let Some(broker) = bootstrap() else { return };
    let (client, topic, svc) = setup(
        &broker,
        "udp-closed",
        1,
        &[("CHECKPOINT_STRATEGY", "CLOSED_DOORS")],
    )
    .await;
    send(&svc, 2, 100, value);
    svc.wait_received(200);
    let (status, fin) = svc.stop();
    assert!(status.success());
    assert_eq!(count(&fin, "received"), 200);
    assert_eq!(count(&fin, "discarded"), 200);
    assert_eq!(count(&fin, "forwarded"), 0);
    assert!(read_all(&client, &topic, 1).await.is_empty());
}

#[tokio::test]
async fn flip_coin_forwards_about_half() {
    let Some(broker) = bootstrap() else { return };
    let (client, topic, svc) = setup(
        &broker,
        "udp-coin",
        2,
        &[("CHECKPOINT_STRATEGY", "FLIP_COIN")],
    )
    .await;
    send(&svc, 2, 1000, value);
    svc.wait_received(2000);
    let (status, fin) = svc.stop();
    assert!(status.success());
    let (fwd, dis) = (count(&fin, "forwarded"), count(&fin, "discarded"));
    assert_eq!(fwd + dis, 2000);
    // Binomial(2000, 1/2): 800..1200 is more than 8 standard deviations.
    assert!((800..=1200).contains(&fwd), "forwarded {fwd} of 2000");
    let records = read_all(&client, &topic, 2).await;
    assert_eq!(records.len() as u64, fwd);
}

#[tokio::test]
async fn hundred_thousand_datagrams_arrive_exactly_once_with_headers() {
    let Some(broker) = bootstrap() else { return };
    let (client, topic, svc) = setup(
        &broker,
        "udp-100k",
        4, // The whole run fits the queue: a debug build on a busy CI machine
        // may produce slower than the datagrams come, and this test is
        // about exactly-once delivery, not overflow.
        &[
            ("KAFKA_PARTITION_STRATEGY", "ROUND_ROBIN"),
            ("CACHE_SIZE", "100000"),
        ],
    )
    .await;
    const PEERS: usize = 5;
    const PER_PEER: usize = 20_000;
    let socks = peers(PEERS);
    let addrs: Vec<String> = socks
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect();
    // A moderate rate: bursts of 250 (50 per peer) every 10 ms, at most
    // 25k datagrams/s.
    for chunk in 0..PER_PEER / 50 {
        for i in chunk * 50..(chunk + 1) * 50 {
            for (k, s) in socks.iter().enumerate() {
                // 100 to 500 bytes, distinct per (peer, i).
                let mut v = format!("{k}:{i}:").into_bytes();
                v.resize(100 + (i * 7 + k * 13) % 400, b'a' + (i % 26) as u8);
                s.send_to(&v, svc.addr).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    svc.wait_received((PEERS * PER_PEER) as u64);
    let (status, fin) = svc.stop();
    assert!(status.success());
    let total = (PEERS * PER_PEER) as u64;
    assert_eq!(count(&fin, "received"), total);
    assert_eq!(count(&fin, "forwarded"), total);
    assert_eq!(count(&fin, "overflow"), 0);
    assert_eq!(count(&fin, "failed"), 0);
    let records = read_all(&client, &topic, 4).await;
    assert_eq!(records.len() as u64, total);
    let mut seen = vec![vec![false; PER_PEER]; PEERS];
    for (p, r) in &records {
        let v = r.value.as_ref().unwrap();
        let text = String::from_utf8_lossy(v);
        let mut it = text.split(':');
        let k: usize = it.next().unwrap().parse().unwrap();
        let i: usize = it.next().unwrap().parse().unwrap();
        // The value is the datagram, byte for byte.
        let mut expect = format!("{k}:{i}:").into_bytes();
        expect.resize(100 + (i * 7 + k * 13) % 400, b'a' + (i % 26) as u8);
        assert_eq!(&v[..], &expect[..]);
        assert_eq!(header(r, "source").as_deref(), Some(addrs[k].as_str()));
        assert_eq!(header(r, "partition"), Some(p.to_string()));
        assert!(!seen[k][i], "duplicate of peer {k} datagram {i}");
        seen[k][i] = true;
    }
    assert!(seen.iter().flatten().all(|&s| s));
}

#[tokio::test]
async fn oversized_datagrams_are_counted_as_truncated_and_not_forwarded() {
    let Some(broker) = bootstrap() else { return };
    let (client, topic, svc) = setup(&broker, "udp-trunc", 1, &[("BUFFER_SIZE", "100")]).await;
    let sock = &peers(1)[0];
    for len in [1, 99, 100, 101, 1000, 60_000] {
        sock.send_to(&vec![b'x'; len], svc.addr).unwrap();
    }
    svc.wait_received(6);
    // SIGINT as well as SIGTERM ends the service cleanly.
    let (status, fin) = svc.stop_with(libc::SIGINT);
    assert!(status.success());
    assert_eq!(count(&fin, "received"), 6);
    assert_eq!(count(&fin, "truncated"), 3);
    assert_eq!(count(&fin, "forwarded"), 3);
    let mut lens: Vec<usize> = read_all(&client, &topic, 1)
        .await
        .iter()
        .map(|(_, r)| r.value.as_ref().unwrap().len())
        .collect();
    lens.sort();
    assert_eq!(lens, [1, 99, 100]);
}

#[tokio::test]
async fn unknown_topic_is_one_line_and_exit_1() {
    let Some(broker) = bootstrap() else { return };
    let topic = unique_topic("udp-missing");
    let (status, err) = run_to_exit(
        &[
            ("KAFKA_BROKERS", &broker),
            ("KAFKA_TOPIC", &topic),
            ("LISTEN_PORT", "0"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown topic") && err.contains(&topic),
        "{err}"
    );
}

#[test]
fn unreachable_brokers_are_one_line_and_exit_1() {
    // Nothing listens on port 1.
    let (status, err) = run_to_exit(
        &[
            ("KAFKA_BROKERS", "127.0.0.1:1"),
            ("KAFKA_TOPIC", "t"),
            ("LISTEN_PORT", "0"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the brokers"), "{err}");
}

#[test]
fn bad_configuration_is_one_line_naming_the_variable_and_exit_2() {
    for (var, bad) in [
        ("LISTEN_PORT", "eighty"),
        ("BUFFER_SIZE", "0"),
        ("KAFKA_PARTITION_STRATEGY", "STICKY"),
        ("CHECKPOINT_STRATEGY", "HALF"),
        ("KAFKA_COMPRESSION_CODEC", "brotli"),
        ("KAFKA_REQUEST_REQUIRED_ACKS", "2"),
        ("CACHE_SIZE", "-5"),
    ] {
        let (status, err) = run_to_exit(
            &[
                ("KAFKA_BROKERS", "127.0.0.1:1"),
                ("KAFKA_TOPIC", "t"),
                (var, bad),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(2), "{var}={bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(var), "{err}");
    }
    let (status, err) = run_to_exit(&[("KAFKA_TOPIC", "t")], Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("KAFKA_BROKERS"), "{err}");
}
