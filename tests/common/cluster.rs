//! The multi-node cluster of `scripts/kafka up --brokers 3`
//! (`KAFKA_CLUSTER_BOOTSTRAP`), for failover tests that SIGKILL and restart
//! its nodes. Part of the tests' `common` module, and shared with
//! `cli/tests/failover.rs` through `#[path]`: it uses nothing but std, tokio
//! and rskafka.
#![allow(dead_code)] // each test crate uses a different subset

use std::{
    collections::BTreeMap,
    fmt::Debug,
    fs::File,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use rskafka::client::{Client, ClientBuilder};

/// The cluster, taken for one test: other failover tests wait (see
/// [`TestCluster::acquire`]).
#[derive(Debug)]
pub struct TestCluster {
    bootstrap: Vec<String>,
    nodes: NodeControl,
    /// Released when the test ends.
    _lock: File,
}

/// Runs `scripts/kafka <command> --brokers N [<node>]` for one cluster.
#[derive(Debug, Clone)]
pub struct NodeControl {
    script: PathBuf,
    size: usize,
    /// Node 1's port: the script derives every node's ports from it.
    base_port: String,
}

impl NodeControl {
    /// `scripts/kafka <command> --brokers N [<node>]`.
    fn run(&self, command: &str, node: Option<i32>) -> Result<(), String> {
        let size = self.size.to_string();
        let node = node.map(|n| n.to_string());
        let mut args = vec![command, "--brokers", &size];
        args.extend(node.as_deref());
        let mut cmd = Command::new(&self.script);
        cmd.env("KAFKA_CLUSTER_PORT", &self.base_port);
        run_script(cmd, &args)
    }
}

/// Runs `scripts/kafka` (`cmd`, with its environment) with `args`; its
/// stderr is the error when it fails.
pub fn run_script(mut cmd: Command, args: &[&str]) -> Result<(), String> {
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/kafka {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TestCluster {
    /// The cluster named by `KAFKA_CLUSTER_BOOTSTRAP` (its nodes' addresses
    /// in node order, as `scripts/kafka env --brokers 3` prints them), once
    /// no other failover test uses it; `None`, after printing the skip
    /// notice, when the variable is not set.
    ///
    /// Tests take turns through a file lock rather than a static mutex: the
    /// library's and the CLI's test binaries (and parallel `cargo test`
    /// runs) share the cluster too, and a kill must not hit another test.
    pub fn acquire() -> Option<Self> {
        let bootstrap: Vec<String> = match std::env::var("KAFKA_CLUSTER_BOOTSTRAP") {
            Ok(s) => s
                .split(',')
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            Err(_) => Vec::new(),
        };
        if bootstrap.is_empty() {
            testkit::skip(
                "KAFKA_CLUSTER_BOOTSTRAP not set (start the cluster with \
                 scripts/kafka up --brokers 3)",
            );
            return None;
        }
        assert!(
            bootstrap.len() >= 3,
            "KAFKA_CLUSTER_BOOTSTRAP names {} brokers; the failover tests want 3 \
             (replication factor 3, min.insync.replicas 2)",
            bootstrap.len()
        );
        let base_port = bootstrap[0]
            .rsplit(':')
            .next()
            .expect("host:port")
            .to_owned();
        let lock_path =
            std::env::temp_dir().join(format!("rskafka-failover-{}.lock", bootstrap[0]));
        let lock = File::create(&lock_path).expect("create the cluster lock file");
        let waited = Instant::now();
        // Every failover test is bounded; one that holds the cluster this
        // long is stuck.
        let limit = Duration::from_secs(15 * 60);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    assert!(
                        waited.elapsed() < limit,
                        "another test held {} for {limit:?}",
                        lock_path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => panic!("cannot lock the cluster: {e}"),
            }
        }
        if waited.elapsed() > Duration::from_secs(1) {
            eprintln!("waited {:?} for the cluster", waited.elapsed());
        }
        let nodes = NodeControl {
            script: find_script(),
            size: bootstrap.len(),
            base_port,
        };
        // Starts what an earlier run killed and could not restart (e.g. it
        // was SIGKILLed itself); a no-op while every node runs.
        nodes.run("up", None).expect("start the cluster's nodes");
        Some(Self {
            nodes,
            bootstrap,
            _lock: lock,
        })
    }

    /// The brokers' addresses.
    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// A client with generous bounds: operations ride out a failover.
    pub async fn client(&self) -> Client {
        ClientBuilder::new(self.bootstrap.clone())
            .operation_timeout(Duration::from_secs(60))
            .build()
            .await
            .expect("connect to the cluster")
    }

    /// SIGKILLs `node`; the returned guard starts it again when dropped, so
    /// that a failing test leaves the cluster whole for the next one.
    pub fn kill(&self, node: i32) -> Downed {
        self.nodes
            .run("kill-node", Some(node))
            .expect("kill the node");
        eprintln!("killed node {node}");
        Downed {
            nodes: self.nodes.clone(),
            node,
            started: false,
        }
    }

    /// Creates `topic` replicated to three nodes.
    pub async fn create_topic(&self, client: &Client, topic: &str, partitions: i32) {
        client
            .controller_client()
            .expect("controller")
            .create_topic(topic, partitions, 3, 30_000)
            .await
            .expect("create topic");
    }

    /// Deletes `topic` (its replicas would slow down later catch-ups).
    pub async fn delete_topic(&self, client: &Client, topic: &str) {
        let deleted = client
            .controller_client()
            .expect("controller")
            .delete_topic(topic, 30_000)
            .await;
        if let Err(e) = deleted {
            eprintln!("could not delete {topic}: {e}");
        }
    }

    /// The leader of a partition, from fresh metadata.
    pub async fn leader(&self, client: &Client, topic: &str, partition: i32) -> i32 {
        let md = client.metadata().await.expect("metadata");
        md.topics
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .and_then(|p| p.leader)
            .unwrap_or_else(|| panic!("{topic}/{partition} has no leader"))
    }

    /// Waits until every node is a live broker again and every partition
    /// of every topic has all its replicas in sync and its preferred leader
    /// (the nodes move leaderships back on their own), so that the next
    /// test starts from the whole, balanced cluster. Panics with what is
    /// still missing after `timeout`.
    pub async fn wait_whole(&self, timeout: Duration) {
        let client = self.client().await;
        let started = Instant::now();
        loop {
            let missing = match client.metadata().await {
                Ok(md) => {
                    let mut missing = Vec::new();
                    if md.brokers.len() < self.bootstrap.len() {
                        missing.push(format!(
                            "live brokers {:?}",
                            md.brokers.keys().collect::<Vec<_>>()
                        ));
                    }
                    for t in md.topics.values().filter(|t| t.error.is_ok()) {
                        for p in t.partitions.values() {
                            let whole = p.isr.len() == p.replicas.len()
                                && p.leader.is_some()
                                && p.leader == p.replicas.first().copied();
                            if !whole {
                                missing.push(format!(
                                    "{}/{}: leader {:?}, replicas {:?}, isr {:?}",
                                    t.name, p.id, p.leader, p.replicas, p.isr
                                ));
                            }
                        }
                    }
                    missing
                }
                Err(e) => vec![format!("metadata: {e}")],
            };
            if missing.is_empty() {
                if started.elapsed() > Duration::from_secs(1) {
                    eprintln!("cluster whole again after {:?}", started.elapsed());
                }
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "the cluster is not whole after {timeout:?}: {}",
                missing.join("; ")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A killed node; starts it again on drop unless [`Downed::start`] did.
#[derive(Debug)]
pub struct Downed {
    nodes: NodeControl,
    node: i32,
    started: bool,
}

impl Downed {
    /// The node's id.
    pub fn node(&self) -> i32 {
        self.node
    }

    /// Starts the node with its data and waits until it serves requests
    /// (not until it is back in sync). Blocks for seconds.
    pub fn start(mut self) {
        self.started = true;
        self.nodes
            .run("start-node", Some(self.node))
            .expect("restart the node");
        eprintln!("restarted node {}", self.node);
    }
}

impl Drop for Downed {
    fn drop(&mut self) {
        if !self.started {
            if let Err(e) = self.nodes.run("start-node", Some(self.node)) {
                eprintln!("{e}");
            }
        }
    }
}

/// `scripts/kafka` of the repository, found from the crate's directory (the
/// root crate or `cli/`).
fn find_script() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let script = dir.join("scripts/kafka");
        if script.is_file() {
            return script;
        }
        assert!(
            dir.pop(),
            "no scripts/kafka above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

/// Per partition, every offset in `0..end` seen exactly once, in order:
/// the offsets that are missing, repeated or out of order, as messages
/// (empty when the read matches the log).
pub fn log_mismatches(read: &BTreeMap<i32, Vec<i64>>, ends: &BTreeMap<i32, i64>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, end) in ends {
        let offsets = read.get(p).map(Vec::as_slice).unwrap_or_default();
        let expected: Vec<i64> = (0..*end).collect();
        if offsets != expected.as_slice() {
            let first_bad = offsets
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(offsets.len().min(expected.len()));
            out.push(format!(
                "partition {p}: {} offsets read for {end} in the log, first difference at \
                 index {first_bad} (read {:?}, want {:?})",
                offsets.len(),
                offsets.get(first_bad),
                expected.get(first_bad)
            ));
        }
    }
    for p in read.keys().filter(|p| !ends.contains_key(p)) {
        out.push(format!("partition {p} is not in the log"));
    }
    out
}

/// Fails the test if `items` (things that went wrong) is not empty, naming
/// the first ten.
#[track_caller]
pub fn assert_none<T: Debug>(what: &str, items: &[T]) {
    assert!(
        items.is_empty(),
        "{} {what}: {:?}",
        items.len(),
        &items[..items.len().min(10)]
    );
}
