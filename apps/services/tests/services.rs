//! The sender and receiver binaries against the broker of `KAFKA_BOOTSTRAP`
//! (skipped with a notice without one): several receivers share a topic,
//! every message arrives, and a receiver killed with SIGKILL is replaced by
//! the others within the session timeout.

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    time::{Duration, Instant},
};

use rskafka::client::ClientBuilder;
use testkit::{unique, Process};

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let client = ClientBuilder::new(vec![bootstrap.to_owned()])
        .build()
        .await
        .expect("client");
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 30_000)
        .await
        .expect("create topic");
}

/// A running service and what its log lines say.
struct Service(Process);

impl Service {
    fn start(bin: &str, name: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied()).env("RUST_LOG", "info");
        Self(Process::start(cmd, name))
    }

    /// (producer, counter, partition) of each `Received message` line.
    fn received(&self) -> Vec<(String, u64, i32)> {
        self.0
            .output()
            .lines()
            .filter_map(|l| {
                let rest = l.split("Received message #").nth(1)?;
                let counter = rest.split(':').next()?.parse().ok()?;
                let field = |name: &str| {
                    rest.split(&format!(", {name}="))
                        .nth(1)
                        .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
                };
                Some((
                    field("producer")?,
                    counter,
                    field("partition")?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The sender's count of acknowledged messages from its last line.
    fn sent(&self) -> u64 {
        let out = self.0.output();
        let line = out
            .lines()
            .find(|l| l.contains("Sender stopped:"))
            .unwrap_or_else(|| panic!("{} has no final line:\n{out}", self.0.name));
        let field = |name: &str| -> u64 {
            line.split(&format!("{name} "))
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        assert_eq!(field("failed"), 0, "{line}");
        assert_eq!(field("created"), field("sent"), "{line}");
        field("sent")
    }
}

impl std::ops::Deref for Service {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

fn env<'a>(bootstrap: &'a str, topic: &'a str, group: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KAFKA_BROKERS", bootstrap),
        ("KAFKA_TOPIC", topic),
        ("CONSUMER_GROUP", group),
        ("SEND_INTERVAL_MS", "20"),
        ("SUMMARY_INTERVAL_MS", "2000"),
    ]
}

/// Waits until the receivers together hold every counter of every sender
/// (at most 30 s), then returns how often each was received.
fn wait_for_all(
    receivers: &[Service],
    sent: &BTreeMap<String, u64>,
) -> HashMap<(String, u64), usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen: HashMap<(String, u64), usize> = HashMap::new();
        for r in receivers {
            for (producer, counter, _) in r.received() {
                *seen.entry((producer, counter)).or_default() += 1;
            }
        }
        let missing: Vec<(String, u64)> = sent
            .iter()
            .flat_map(|(p, &n)| (1..=n).map(move |c| (p.clone(), c)))
            .filter(|k| !seen.contains_key(k))
            .collect();
        if missing.is_empty() {
            return seen;
        }
        if Instant::now() > deadline {
            panic!(
                "{} messages never arrived, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` receivers of one group, started together.
fn start_receivers(vars: &[(&str, &str)], n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            Service::start(
                env!("CARGO_BIN_EXE_receiver"),
                &format!("receiver-{i}"),
                vars,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_three_receivers_receive_everything_once() {
    let Some(bootstrap) = testkit::real_bootstrap("consumer groups") else {
        return;
    };
    let topic = unique("services");
    let group = unique("services-group");
    create_topic(&bootstrap, &topic, 3).await;
    let vars = env(&bootstrap, &topic, &group);
    let mut receivers = start_receivers(&vars, 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut senders: Vec<Service> = ["s1", "s2"]
        .iter()
        .map(|id| {
            let mut vars = vars.clone();
            vars.push(("PRODUCER_ID", id));
            Service::start(env!("CARGO_BIN_EXE_sender"), id, &vars)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut sent = BTreeMap::new();
    for (s, id) in senders.iter_mut().zip(["s1", "s2"]) {
        assert!(s.stop().success(), "{}", s.output());
        sent.insert(id.to_owned(), s.sent());
    }
    assert!(sent.values().all(|&n| n > 100), "{sent:?}");
    let seen = wait_for_all(&receivers, &sent);
    let duplicated: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicated.is_empty(), "received twice: {duplicated:?}");
    let expected: u64 = sent.values().sum();
    assert_eq!(seen.len() as u64, expected);
    for r in &mut receivers {
        assert!(r.stop().success(), "{}", r.output());
        assert!(
            !r.received().is_empty(),
            "{} got no partition's messages",
            r.name
        );
        assert!(r.output().contains("Receiver stopped: total_received="));
    }
    for r in &receivers {
        if let Some(line) = r.output().lines().rev().find(|l| l.contains("Summary:")) {
            eprintln!("{}: {line}", r.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_receiver_is_replaced_and_nothing_is_missed() {
    let Some(bootstrap) = testkit::real_bootstrap("consumer groups") else {
        return;
    };
    let topic = unique("services-kill");
    let group = unique("services-kill-group");
    create_topic(&bootstrap, &topic, 3).await;
    let vars = env(&bootstrap, &topic, &group);
    let mut receivers = start_receivers(&vars, 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sender_vars = vars.clone();
    sender_vars.push(("PRODUCER_ID", "s1"));
    let mut sender = Service::start(env!("CARGO_BIN_EXE_sender"), "s1", &sender_vars);
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Kill the receiver that has been getting messages of some partition.
    let victim = receivers
        .iter()
        .position(|r| !r.received().is_empty())
        .expect("some receiver got messages");
    let orphaned: Vec<i32> = {
        let mut p: Vec<i32> = receivers[victim].received().iter().map(|m| m.2).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    receivers[victim].kill9();
    let killed_at = Instant::now();
    let survivors_before: Vec<usize> = receivers.iter().map(|r| r.received().len()).collect();

    // The session timeout is 6 s: after it (and a rebalance) the survivors
    // must be reading the orphaned partitions.
    let deadline = killed_at + Duration::from_secs(20);
    loop {
        let taken_over = receivers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .any(|(i, r)| {
                r.received()[survivors_before[i]..]
                    .iter()
                    .any(|m| orphaned.contains(&m.2))
            });
        if taken_over {
            eprintln!(
                "partitions {orphaned:?} taken over {:?} after the kill",
                killed_at.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nobody took over partitions {orphaned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sender.stop().success(), "{}", sender.output());
    let sent = BTreeMap::from([("s1".to_owned(), sender.sent())]);
    let seen = wait_for_all(&receivers, &sent);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{} messages sent, all received; {duplicates} received again after the kill",
        sent["s1"]
    );
    for (i, r) in receivers.iter_mut().enumerate() {
        if i != victim {
            assert!(r.stop().success(), "{}", r.output());
        }
    }
}

#[test]
fn a_bad_setting_is_one_line_and_exit_2() {
    for bin in [env!("CARGO_BIN_EXE_sender"), env!("CARGO_BIN_EXE_receiver")] {
        let out = Command::new(bin)
            .env("SEND_INTERVAL_MS", "soon")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: SEND_INTERVAL_MS:"), "{err}");
    }
}
