//! The `rskafka` binary against the three-broker cluster of `scripts/kafka
//! up --brokers 3` (`KAFKA_CLUSTER_BOOTSTRAP`) while a partition leader is
//! SIGKILLed: `consume --exit-at-end` still prints exactly the log.

#[path = "../../tests/common/cluster.rs"]
mod cluster;
mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cluster::{assert_none, log_mismatches, TestCluster};
use common::{binary, run_bounded, stderr, stdout, unique};

const WHOLE: Duration = Duration::from_secs(120);

/// Runs the binary against the cluster, bounded.
fn rskafka(brokers: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = binary();
    cmd.args(["--brokers", brokers, "--timeout-ms", "30000"])
        .args(args);
    let out = run_bounded(cmd, Some(stdin), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "rskafka {args:?}: exit {:?}, stderr: {}",
        out.status,
        stderr(&out)
    );
    out
}

/// The value of record `i` of partition `p`: about 200 bytes, so that a
/// partition holds several fetches' worth.
fn value(p: i32, i: usize) -> String {
    format!("p{p}-{i:06}-{}", "x".repeat(180))
}

/// Kills the child (e.g. left stopped by a failing test) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Issue: `consume TOPIC --exit-at-end` over all partitions while the
/// leader of one of them is SIGKILLed prints every offset of every
/// partition once, in order, and exits 0. The consume is stopped (SIGSTOP)
/// right after its first record and resumed after the kill, so that most
/// of the victim's partition must come from the new leader.
#[test]
fn consume_exit_at_end_across_a_leader_kill() {
    let Some(cluster) = TestCluster::acquire() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(cluster.wait_whole(WHOLE));
    let brokers = cluster.bootstrap().join(",");
    let topic = unique("cli-failover");
    const PARTITIONS: i32 = 3;
    const PER: usize = 60_000;
    rskafka(
        &brokers,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            &PARTITIONS.to_string(),
            "--replication-factor",
            "3",
        ],
        b"",
    );
    for p in 0..PARTITIONS {
        let lines: String = (0..PER).map(|i| value(p, i) + "\n").collect();
        rskafka(
            &brokers,
            &["produce", &topic, "--partition", &p.to_string()],
            lines.as_bytes(),
        );
    }
    let offsets = stdout(&rskafka(&brokers, &["offsets", &topic], b""));
    let ends: BTreeMap<i32, i64> = offsets
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().expect("partition"), f[2].parse().expect("end"))
        })
        .collect();
    assert_eq!(
        ends,
        (0..PARTITIONS).map(|p| (p, PER as i64)).collect(),
        "the log holds what was produced, once"
    );
    let victim = rt.block_on(async {
        let client = cluster.client().await;
        cluster.leader(&client, &topic, 0).await
    });

    let started = Instant::now();
    let mut child = Reaped(
        binary()
            .args(["--brokers", &brokers, "--timeout-ms", "30000"])
            .args(["consume", &topic, "--exit-at-end"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rskafka consume"),
    );
    let pid = child.0.id();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(child.0.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        for line in out.lines() {
            if tx.send(line.expect("read stdout")).is_err() {
                break;
            }
        }
    });
    let mut err_pipe = child.0.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });

    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a first record");
    signal(pid, "-STOP");
    let downed = cluster.kill(victim);
    signal(pid, "-CONT");
    let mut printed = vec![first];
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => printed.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "consume still runs after 180 s, {} lines printed",
                    printed.len()
                )
            }
        }
    }
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "consume did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let errors = err_reader.join().expect("stderr reader");
    downed.start();
    rt.block_on(cluster.wait_whole(WHOLE));

    eprintln!(
        "consume across the kill of node {victim} (leader of partition 0): {} lines in {took:?}, \
         {status}, stderr: {errors:?}",
        printed.len()
    );
    assert!(
        status.success(),
        "consume failed: {status}, stderr: {errors}"
    );
    let mut read: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut wrong_values = Vec::new();
    for line in &printed {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let p = i32::try_from(v["partition"].as_i64().expect("partition")).expect("i32");
        let offset = v["offset"].as_i64().expect("offset");
        assert_eq!(v["topic"], topic.as_str());
        if v["value"].as_str() != Some(value(p, offset as usize).as_str()) {
            wrong_values.push((p, offset));
        }
        read.entry(p).or_default().push(offset);
    }
    assert_none("differences from the log", &log_mismatches(&read, &ends));
    assert_none(
        "other values than produced at (partition, offset)",
        &wrong_values,
    );

    rskafka(&brokers, &["topic", "delete", &topic], b"");
}
