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

use common::{binary, bootstrap, run_bounded, signal_and_wait, unique};

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
    let Some(b) = bootstrap() else {
        return;
    };
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
    let Some(b) = bootstrap() else {
        return;
    };
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
    let Some(b) = bootstrap() else {
        return;
    };
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
    // Each member commits right after printing; a kill between the two
    // would print that batch again (at-least-once), so the kill waits for
    // the commits, after which nothing may be printed twice.
    wait_until("the first 200 committed", Duration::from_secs(30), || {
        let total: i64 = committed(&lag_json(&b, &group))
            .iter()
            .map(|(_, c)| c.unwrap_or(0))
            .sum();
        total == 200
    });
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
    assert_eq!(dups, 0, "lines printed twice");
    eprintln!("CLI SIGKILL: all 400 records consumed {took:?} after the kill, {dups} twice");
}

#[test]
fn describe_and_lag_of_a_group_that_does_not_exist_fail() {
    let Some(b) = bootstrap() else {
        return;
    };
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
    let Some(b) = bootstrap() else {
        return;
    };
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

/// A member of a group for the stale-commit scenarios: a `consume --group`
/// child (JSON lines) or a librdkafka member (`tests/group_interop.py`),
/// reporting the (partition, offset) of every record it printed.
struct Printer {
    child: Child,
    records: Arc<Mutex<Vec<(i32, i64)>>>,
    /// Stopped with SIGTERM (the CLI) rather than by closing stdin.
    sigterm: bool,
}

/// The value of `"key":NUMBER` in a JSON line.
fn json_number(line: &str, key: &str) -> Option<i64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

impl Printer {
    fn cli(bootstrap: &str, topic: &str, group: &str) -> Self {
        let cmd = command(
            bootstrap,
            &["consume", topic, "--group", group, "--format", "json"],
        );
        Self::spawn(cmd, true, |l| {
            Some((
                i32::try_from(json_number(l, "partition")?).ok()?,
                json_number(l, "offset")?,
            ))
        })
    }

    fn librdkafka(bootstrap: &str, topic: &str, group: &str) -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/group_interop.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).args([
            "--bootstrap",
            bootstrap,
            "--group",
            group,
            "--topic",
            topic,
            "--strategy",
            "range",
        ]);
        Self::spawn(cmd, false, |l| {
            let mut f = l.strip_prefix("rec ")?.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
    }

    fn spawn(mut cmd: Command, sigterm: bool, parse: fn(&str) -> Option<(i32, i64)>) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a group member");
        let records = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = records.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(r) = parse(&l) {
                    sink.lock().unwrap().push(r);
                }
            }
        });
        Self {
            child,
            records,
            sigterm,
        }
    }

    fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Ends the member cleanly: SIGTERM (the CLI) and a closed stdin (the
    /// librdkafka member); waits at most 30 s and checks the exit status.
    fn stop(&mut self) {
        drop(self.child.stdin.take());
        if self.sigterm {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                assert!(s.success(), "member exited with {s:?}");
                return;
            }
            assert!(Instant::now() < deadline, "the member did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `n` lines to partition `p` of `topic`.
fn produce_to(bootstrap: &str, topic: &str, p: i32, n: u32) {
    let lines: String = (0..n).map(|i| format!("p{p}-{i}\n")).collect();
    ok(&run(
        bootstrap,
        &["produce", topic, "--partition", &p.to_string()],
        lines.as_bytes(),
    ));
}

/// Whether `group describe` shows a stable group of `members` members.
fn stable_with(bootstrap: &str, group: &str, members: usize) -> bool {
    let d = run(bootstrap, &["group", "describe", group], b"");
    let d = String::from_utf8_lossy(&d.stdout);
    d.contains(&format!("members: {members}\n")) && d.contains("state: Stable")
}

/// The reproduction: CLI member A prints everything, B joins and
/// takes one partition, both print new records, A leaves with SIGTERM. A
/// used to commit every partition it had ever printed, rolling B's
/// partition back to where A stopped, so that B printed those records again
/// after the next rebalance. Now every record is printed exactly once and
/// the committed offsets end at the log end.
fn leaving_member_does_not_roll_back_the_new_owner(second: fn(&str, &str, &str) -> Printer) {
    let Some(b) = bootstrap() else {
        return;
    };
    let topic = topic_with_lines(&b, 2, 0);
    let group = unique("cli-group-stale");
    for p in 0..2 {
        produce_to(&b, &topic, p, 4);
    }
    let mut a = Printer::cli(&b, &topic, &group);
    wait_until("A prints all 8", Duration::from_secs(60), || a.count() >= 8);
    let mut other = second(&b, &topic, &group);
    wait_until("A and B share the group", Duration::from_secs(60), || {
        stable_with(&b, &group, 2)
    });
    for p in 0..2 {
        produce_to(&b, &topic, p, 4);
    }
    wait_until("16 records printed", Duration::from_secs(60), || {
        a.count() + other.count() >= 16
    });
    assert!(other.count() > 0, "B got no partition");
    wait_until(
        "both partitions committed at 8",
        Duration::from_secs(30),
        || committed(&lag_json(&b, &group)) == vec![(0, Some(8)), (1, Some(8))],
    );
    a.stop();
    // A committed only what it owned and printed: nothing moved back.
    assert_eq!(
        committed(&lag_json(&b, &group)),
        vec![(0, Some(8)), (1, Some(8))]
    );
    wait_until("B alone", Duration::from_secs(60), || {
        stable_with(&b, &group, 1)
    });
    for p in 0..2 {
        produce_to(&b, &topic, p, 1);
    }
    wait_until("all 18 records", Duration::from_secs(60), || {
        let mut all: Vec<(i32, i64)> = a.records.lock().unwrap().clone();
        all.extend(other.records.lock().unwrap().iter().copied());
        all.sort_unstable();
        all.dedup();
        all.len() >= 18
    });
    other.stop();
    let mut all: Vec<(i32, i64)> = a.records.lock().unwrap().clone();
    all.extend(other.records.lock().unwrap().iter().copied());
    all.sort_unstable();
    let expected: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..9).map(move |o| (p, o))).collect();
    assert_eq!(all, expected, "every record printed exactly once");
    assert_eq!(
        committed(&lag_json(&b, &group)),
        vec![(0, Some(9)), (1, Some(9))]
    );
}

#[test]
fn leaving_cli_member_does_not_roll_back_another_cli_member() {
    leaving_member_does_not_roll_back_the_new_owner(Printer::cli);
}

#[test]
fn leaving_cli_member_does_not_roll_back_a_librdkafka_member() {
    if !common::python_available() {
        return;
    }
    leaving_member_does_not_roll_back_the_new_owner(Printer::librdkafka);
}

/// A reader that stops reading: the member blocks on stdout with a batch
/// half written. SIGINT still ends it promptly (it used to wait for the
/// reader, for up to 18 s or not at all), and it commits exactly the
/// records whose lines went out whole, so the next member neither skips
/// nor repeats any.
#[test]
fn sigint_with_a_stalled_reader_commits_exactly_what_was_printed() {
    let Some(b) = bootstrap() else {
        return;
    };
    let topic = topic_with_lines(&b, 2, 0);
    let group = unique("cli-group-stalled");
    let value = "x".repeat(500);
    for p in 0..2 {
        let lines: String = (0..10_000).map(|i| format!("{i}-{value}\n")).collect();
        ok(&run(
            &b,
            &["produce", &topic, "--partition", &p.to_string()],
            lines.as_bytes(),
        ));
    }
    let mut child = command(
        &b,
        &[
            "consume", &topic, "--group", &group, "--from", "earliest", "--format", "json",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn consume --group");
    // Nobody reads: the pipe fills and the member blocks writing.
    wait_until("a member of the group", Duration::from_secs(60), || {
        stable_with(&b, &group, 1)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (exited, took) = signal_and_wait(&mut child, "-INT", Duration::from_secs(10));
    assert!(exited.success(), "{exited:?}");
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut printed)
        .expect("read stdout");
    // Whole lines only count as printed.
    let whole = match printed.rfind('\n') {
        Some(i) => &printed[..=i],
        None => "",
    };
    let mut next = [0i64; 2];
    for l in whole.lines() {
        let p = usize::try_from(json_number(l, "partition").expect("partition")).unwrap();
        let o = json_number(l, "offset").expect("offset");
        assert_eq!(o, next[p], "partition {p} printed out of order");
        next[p] += 1;
    }
    assert!(next[0] + next[1] > 0, "nothing printed before SIGINT");
    assert!(
        next[0] + next[1] < 20_000,
        "the reader stalled, yet all was printed"
    );
    // A partition none of whose records went out may have nothing committed.
    let committed = committed(&lag_json(&b, &group));
    let committed_of = |p: i32| {
        committed
            .iter()
            .find(|(q, _)| *q == p)
            .and_then(|(_, c)| *c)
            .unwrap_or(0)
    };
    assert_eq!(
        [committed_of(0), committed_of(1)],
        next,
        "committed exactly what went out whole: {committed:?}"
    );
    eprintln!(
        "stalled reader: exit {took:?} after SIGINT, {} lines printed whole",
        next[0] + next[1]
    );
}

/// Two CLI members and a librdkafka member share a group while records keep
/// coming; members join and leave cleanly one after another. Every record
/// is printed exactly once across the rebalances, and the committed offsets
/// end at the log end.
#[test]
fn two_cli_members_and_a_librdkafka_member_print_everything_once() {
    let Some(b) = bootstrap() else {
        return;
    };
    if !common::python_available() {
        return;
    }
    let partitions = 3;
    let topic = topic_with_lines(&b, partitions, 0);
    let group = unique("cli-group-mixed");
    let mut produced = 0;
    let mut produce_round = |n: u32| {
        for p in 0..partitions {
            produce_to(&b, &topic, i32::try_from(p).unwrap(), n);
        }
        produced += n * partitions;
        produced
    };
    let mut members: Vec<Printer> = Vec::new();
    let total = |members: &[Printer], gone: &[Printer]| -> usize {
        members.iter().chain(gone).map(Printer::count).sum()
    };
    let mut gone: Vec<Printer> = Vec::new();
    // Join one by one: CLI, librdkafka, CLI; then leave in another order.
    let starts: [fn(&str, &str, &str) -> Printer; 3] =
        [Printer::cli, Printer::librdkafka, Printer::cli];
    for (i, start) in starts.iter().enumerate() {
        members.push(start(&b, &topic, &group));
        wait_until("the members to settle", Duration::from_secs(60), || {
            stable_with(&b, &group, i + 1)
        });
        let want = produce_round(200);
        wait_until("everything printed", Duration::from_secs(60), || {
            total(&members, &gone) >= want as usize
        });
    }
    for leaving in [0, 1] {
        let mut m = members.remove(leaving);
        m.stop();
        gone.push(m);
        wait_until("the members to settle", Duration::from_secs(60), || {
            stable_with(&b, &group, members.len())
        });
        let want = produce_round(200);
        wait_until("everything printed", Duration::from_secs(60), || {
            total(&members, &gone) >= want as usize
        });
    }
    for mut m in members.drain(..) {
        m.stop();
        gone.push(m);
    }
    let mut all: Vec<(i32, i64)> = gone
        .iter()
        .flat_map(|m| m.records.lock().unwrap().clone())
        .collect();
    all.sort_unstable();
    let per_partition = i64::from(produced / partitions);
    let expected: Vec<(i32, i64)> = (0..i32::try_from(partitions).unwrap())
        .flat_map(|p| (0..per_partition).map(move |o| (p, o)))
        .collect();
    assert_eq!(all.len(), expected.len(), "records printed (duplicates?)");
    assert_eq!(all, expected, "every record printed exactly once");
    let ends: Vec<(i32, Option<i64>)> = (0..i32::try_from(partitions).unwrap())
        .map(|p| (p, Some(per_partition)))
        .collect();
    assert_eq!(committed(&lag_json(&b, &group)), ends);
}

/// Issue #21: `consume '^REGEX' --group` follows topics created while it
/// runs (here with `-X metadata.max.age.ms=1000`), as librdkafka's regex
/// subscriptions do; it exits after `--count` records, all of the topic
/// that did not exist when it started.
#[test]
fn a_regex_subscription_takes_up_a_topic_created_later() {
    let Some(b) = bootstrap() else {
        return;
    };
    let prefix = unique("cli-regex");
    let later = format!("{prefix}-later");
    let child = command(
        &b,
        &[
            "consume",
            &format!("^{}-.*", prefix.replace('.', "\\.")),
            "--group",
            &format!("{prefix}-g"),
            "--from",
            "earliest",
            "--count",
            "5",
            "-X",
            "metadata.max.age.ms=1000",
            "-f",
            "%t %s\n",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn consume --group");
    // The member runs, with nothing to match yet.
    std::thread::sleep(Duration::from_secs(2));
    ok(&run(
        &b,
        &["topic", "create", &later, "--partitions", "1"],
        b"",
    ));
    let lines: String = (1..=5).map(|i| format!("{i}\n")).collect();
    ok(&run(&b, &["produce", &later], lines.as_bytes()));
    let out = common::wait_bounded(child, "consume '^regex' --group", Duration::from_secs(60));
    let printed = ok(&out);
    let want: String = (1..=5).map(|i| format!("{later} {i}\n")).collect();
    assert_eq!(printed, want);
}
