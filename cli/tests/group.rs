//! The CLI's consumer-group features against a real broker
//! (`KAFKA_BOOTSTRAP`): `consume --group` (commits exactly what it printed,
//! SIGTERM commits and leaves, a SIGKILLed member's partitions move to
//! another), and `group list|describe|lag|seek|delete`.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

mod common;

use common::{binary, bootstrap, run_bounded, unique};

fn command(bootstrap: &str, args: &[&str]) -> Command {
    let mut c = binary();
    c.args(["--brokers", bootstrap, "--timeout-ms", "10000"])
        .args(args);
    c
}

/// Runs to completion (at most 60 s) with `stdin`.
fn run(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    run_bounded(
        command(bootstrap, args),
        Some(stdin),
        Duration::from_secs(60),
    )
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A topic of `partitions` partitions holding the lines `1..=n`.
fn topic_with_lines(bootstrap: &str, partitions: u32, n: u32) -> String {
    let topic = unique("cli-group-t");
    ok(&run(
        bootstrap,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            &partitions.to_string(),
        ],
        b"",
    ));
    let lines: String = (1..=n).map(|i| format!("{i}\n")).collect();
    ok(&run(bootstrap, &["produce", &topic], lines.as_bytes()));
    topic
}

fn lag_json(bootstrap: &str, group: &str) -> Vec<String> {
    ok(&run(
        bootstrap,
        &["group", "lag", group, "--format", "json"],
        b"",
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The committed offsets in `group lag --format json` output, by partition.
fn committed(lines: &[String]) -> Vec<(i32, Option<i64>)> {
    lines
        .iter()
        .map(|l| {
            let field = |k: &str| {
                let rest = &l[l.find(&format!("\"{k}\":")).expect("key") + k.len() + 3..];
                rest[..rest.find([',', '}']).expect("end")].to_owned()
            };
            (
                field("partition").parse().expect("partition"),
                field("committed").parse().ok(),
            )
        })
        .collect()
}

#[test]
fn consume_group_commits_what_it_printed() {
    let Some(b) = bootstrap() else { return };
    let topic = topic_with_lines(&b, 1, 30);
    let group = unique("cli-group-g");
    let first = ok(&run(
        &b,
        &[
            "consume", &topic, "--group", &group, "--count", "10", "--format", "value",
        ],
        b"",
    ));
    assert_eq!(
        first.lines().collect::<Vec<_>>(),
        (1..=10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let lag = lag_json(&b, &group);
    assert_eq!(
        lag,
        vec![format!(
            "{{\"group\":\"{group}\",\"topic\":\"{topic}\",\"partition\":0,\"committed\":10,\"end\":30,\"lag\":20}}"
        )]
    );
    let text = ok(&run(&b, &["group", "lag", &group], b""));
    assert_eq!(text, format!("{topic}\t0\t10\t30\t20\n"));
    // The next member of the group goes on where the first stopped.
    let second = ok(&run(
        &b,
        &[
            "consume", &topic, "--group", &group, "--count", "5", "--format", "value",
        ],
        b"",
    ));
    assert_eq!(second, "11\n12\n13\n14\n15\n");
    assert_eq!(committed(&lag_json(&b, &group)), vec![(0, Some(15))]);

    // seek, describe, list, delete on the now empty group.
    let seek = ok(&run(
        &b,
        &["group", "seek", &group, &topic, "--to", "3"],
        b"",
    ));
    assert_eq!(seek, format!("{topic}\t0\t3\n"));
    let describe = ok(&run(&b, &["group", "describe", &group], b""));
    assert!(
        describe.contains("state: Empty") && describe.contains("members: 0"),
        "{describe}"
    );
    let list = ok(&run(&b, &["group", "list"], b""));
    assert!(
        list.lines().any(|l| l.starts_with(&format!("{group}\t"))),
        "{list}"
    );
    let third = ok(&run(
        &b,
        &[
            "consume", &topic, "--group", &group, "--count", "1", "--format", "value",
        ],
        b"",
    ));
    assert_eq!(third, "4\n");
    ok(&run(&b, &["group", "delete", &group], b""));
    let list = ok(&run(&b, &["group", "list"], b""));
    assert!(!list.contains(&group), "{list}");
}

/// A `consume --group` child whose stdout lines are collected.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(bootstrap: &str, topic: &str, group: &str) -> Self {
        let mut child = command(
            bootstrap,
            &["consume", topic, "--group", group, "--format", "value"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume --group");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Self { child, lines }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the exit status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "the member did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_commits_and_leaves_and_seek_is_refused_meanwhile() {
    let Some(b) = bootstrap() else { return };
    let topic = topic_with_lines(&b, 2, 40);
    let group = unique("cli-group-g");
    let mut m = Member::start(&b, &topic, &group);
    wait_until("all 40 lines", Duration::from_secs(60), || m.count() >= 40);
    // While it is a member, seek is refused with one line.
    let refused = run(
        &b,
        &["group", "seek", &group, &topic, "--to", "earliest"],
        b"",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("active member"), "{err}");
    let describe = ok(&run(&b, &["group", "describe", &group], b""));
    assert!(describe.contains("members: 1"), "{describe}");

    m.signal("-TERM");
    let status = m.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    // It left the group (no waiting for the session timeout) and committed
    // everything it printed.
    let describe = ok(&run(&b, &["group", "describe", &group], b""));
    assert!(describe.contains("members: 0"), "{describe}");
    let total: i64 = committed(&lag_json(&b, &group))
        .iter()
        .map(|(_, c)| c.unwrap_or(0))
        .sum();
    assert_eq!(total, 40);
}

#[test]
fn sigkilled_member_partitions_move_to_the_other() {
    let Some(b) = bootstrap() else { return };
    let topic = topic_with_lines(&b, 4, 0);
    let group = unique("cli-group-g");
    let mut a = Member::start(&b, &topic, &group);
    let second = Member::start(&b, &topic, &group);
    // Wait until both are in the group.
    wait_until("two members", Duration::from_secs(60), || {
        let d = run(&b, &["group", "describe", &group], b"");
        String::from_utf8_lossy(&d.stdout).contains("members: 2")
            && String::from_utf8_lossy(&d.stdout).contains("state: Stable")
    });
    let lines: String = (1..=200).map(|i| format!("k{i}\t{i}\n")).collect();
    ok(&run(
        &b,
        &["produce", &topic, "--key-delimiter", "\t"],
        lines.as_bytes(),
    ));
    wait_until("the first 200", Duration::from_secs(60), || {
        a.count() + second.count() >= 200
    });
    assert!(
        a.count() > 0 && second.count() > 0,
        "both members should have partitions"
    );
    a.signal("-KILL");
    let _ = a.wait(Duration::from_secs(10));
    let killed = Instant::now();
    let lines: String = (201..=400).map(|i| format!("k{i}\t{i}\n")).collect();
    ok(&run(
        &b,
        &["produce", &topic, "--key-delimiter", "\t"],
        lines.as_bytes(),
    ));
    // The survivor gets everything, after the session timeout (10 s).
    wait_until("all 400 lines", Duration::from_secs(90), || {
        let mut all: Vec<String> = a.lines.lock().unwrap().clone();
        all.extend(second.lines.lock().unwrap().iter().cloned());
        all.sort();
        all.dedup();
        all.len() >= 400
    });
    let took = killed.elapsed();
    let dups = a.count() + second.count() - 400;
    assert!(dups <= 4, "{dups} lines printed twice");
    eprintln!("CLI SIGKILL: all 400 records consumed {took:?} after the kill, {dups} twice");
}

#[test]
fn describe_and_lag_of_a_group_that_does_not_exist_fail() {
    let Some(b) = bootstrap() else { return };
    let group = unique("cli-group-none");
    for args in [
        &["group", "describe", group.as_str()][..],
        &["group", "lag", group.as_str()],
        &["group", "lag", group.as_str(), "--format", "json"],
    ] {
        let out = run(&b, args, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err,
            format!("error: group {group:?} does not exist\n"),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn describe_and_lag_of_an_existing_group_without_members_work() {
    let Some(b) = bootstrap() else { return };
    // Offsets committed from outside (no member ever joined) make a group.
    let topic = topic_with_lines(&b, 2, 10);
    let group = unique("cli-group-empty");
    ok(&run(
        &b,
        &["group", "seek", &group, &topic, "--to", "earliest"],
        b"",
    ));
    let describe = ok(&run(&b, &["group", "describe", &group], b""));
    assert!(
        describe.contains("state: Empty") && describe.contains("members: 0"),
        "{describe}"
    );
    let lag = ok(&run(&b, &["group", "lag", &group], b""));
    assert_eq!(lag.lines().count(), 2, "{lag}");
    assert!(lag.starts_with(&format!("{topic}\t0\t0\t")), "{lag}");

    // A member that committed nothing yet: the group exists and lags show
    // `-` for its partitions.
    let empty_topic = topic_with_lines(&b, 1, 0);
    let group = unique("cli-group-fresh");
    let _member = Member::start(&b, &empty_topic, &group);
    wait_until("the member's assignment", Duration::from_secs(60), || {
        let d = run(&b, &["group", "describe", &group], b"");
        String::from_utf8_lossy(&d.stdout).contains("state: Stable")
    });
    let lag = ok(&run(&b, &["group", "lag", &group], b""));
    assert_eq!(lag, format!("{empty_topic}\t0\t-\t0\t-\n"));
}
