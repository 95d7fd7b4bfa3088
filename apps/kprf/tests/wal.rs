//! The write-ahead log's promise: kill -9 during asynchronous load, restart,
//! and every record that was answered 200 is in Kafka.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_async_load_loses_nothing_acknowledged() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-wal");
    create_topic(&bs, &topic, 2).await;
    let dir = scratch("kprf-wal");
    // a long linger keeps acknowledged records buffered when the kill comes
    let yaml = format!(
        "kafka:\n  brokers: [\"{bs}\"]\n  queue_buffering_max_ms: 300\nwal:\n  dir: {}\n  fsync: always\n",
        dir.join("wal").display()
    );
    let (port, mport) = (free_port(), free_port());
    let mut k = Kprf::start_with(&dir, &yaml, &[], port, mport).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let acked = acked.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u32;
            while Instant::now() < stop_at {
                let ids: Vec<String> = (0..3).map(|j| format!("w{w}-{i}-{j}")).collect();
                i += 1;
                let body = json!({"records": ids.iter().map(|id| json!({"topic": topic, "data": id})).collect::<Vec<_>>()})
                    .to_string();
                match http(port, "POST", "/push", &body).await {
                    Ok(r) if r.code == 200 => acked.lock().unwrap().extend(ids),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    k.signal("KILL");
    let _ = k.wait_exit(10).await;
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = std::mem::take(&mut *acked.lock().unwrap());
    assert!(!acked.is_empty());
    let read = |bs: String, topic: String| async move {
        let mut all = Vec::new();
        for p in 0..2 {
            for r in read_partition(&bs, &topic, p).await {
                all.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        all
    };
    let before: HashSet<String> = read(bs.clone(), topic.clone()).await.into_iter().collect();
    let missing_before = acked.iter().filter(|id| !before.contains(*id)).count();

    // restart on the same log
    drop(k);
    let k = Kprf::start_with(&dir, &yaml, &[], free_port(), free_port()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (counts, lost) = loop {
        let all = read(bs.clone(), topic.clone()).await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for id in all {
            *counts.entry(id).or_default() += 1;
        }
        let lost = acked.iter().filter(|id| !counts.contains_key(*id)).count();
        if lost == 0 || Instant::now() > deadline {
            break (counts, lost);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let m = k.metrics().await;
    let replayed = sample(&m, "wal_replayed_records_total").unwrap_or(0.0);
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let found = acked.iter().filter(|id| counts.contains_key(*id)).count();
    println!(
        "WAL crash test: acknowledged {} records, in Kafka before restart {}, missing before restart {missing_before}, \
         replayed {replayed}, found after restart {found}, lost {lost}, duplicates {duplicates}",
        acked.len(),
        acked.len() - missing_before
    );
    assert_eq!(lost, 0, "{}", k.log_text());
    assert!(
        replayed >= missing_before as f64,
        "replayed {replayed} < missing {missing_before}"
    );
}
