//! kcat's features in the CLI, checked against kcat itself on the same
//! broker (`KAFKA_BOOTSTRAP`; kcat from Debian's package, which `.ci/run`
//! installs): format strings, `--from -N` and `@TIMESTAMP_MS`, `offsets
//! --at` (kcat -Q), null values for empty lines (-Z), whole files as one
//! record, a key delimiter on output (-K).

use std::{
    process::{Command, Output},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

mod common;

use common::{binary, bootstrap, run_bounded, stderr, stdout, unique};

fn kafka(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = binary();
    cmd.args(["--brokers", bootstrap, "--timeout-ms", "10000"])
        .args(args);
    let out = run_bounded(cmd, Some(stdin), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "rskafka {args:?}: exit {:?}, stderr: {}",
        out.status,
        stderr(&out)
    );
    out
}

/// kcat with `args` against `bootstrap`, or `None` (with a notice) when
/// kcat is not installed.
fn kcat(bootstrap: &str, args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", bootstrap]).args(args);
    match cmd.output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kcat {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(out)
        }
        Err(e) => {
            testkit::skip(format!("the kcat comparison: kcat cannot run ({e})"));
            None
        }
    }
}

fn kcat_available() -> bool {
    let ok = Command::new("kcat").arg("-V").output().is_ok();
    if !ok {
        testkit::skip("kcat is not installed");
    }
    ok
}

/// A topic with 2 partitions: partition 0 holds keyed lines with an empty
/// value and an empty line (sent as nulls with -Z), partition 1 a whole
/// two-line input as one record, then three timestamped records.
fn topic(b: &str) -> String {
    let topic = unique("cli-kcat");
    kafka(
        b,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    kafka(
        b,
        &[
            "produce",
            &topic,
            "--partition",
            "0",
            "--key-delimiter",
            ":",
            "-Z",
            "--header",
            "h=1",
        ],
        b"a:1\nb:\n\nc:3\n",
    );
    kafka(
        b,
        &["produce", &topic, "--partition", "1", "--whole-file"],
        b"line1\nline2\n",
    );
    topic
}

/// The broker and a fresh test topic, or `None` (with a notice) without a
/// broker or kcat.
fn broker_and_topic() -> Option<(String, String)> {
    let b = bootstrap()?;
    if !kcat_available() {
        return None;
    }
    let t = topic(&b);
    Some((b, t))
}

#[test]
fn format_strings_print_what_kcat_prints() {
    let Some((b, topic)) = broker_and_topic() else {
        return;
    };
    let fmt = r"%t|%p|%o|%k|%K|%s|%S|%h|%T\n";
    let ours = kafka(
        &b,
        &["consume", &topic, "--exit-at-end", "--format-string", fmt],
        b"",
    );
    let Some(theirs) = kcat(&b, &["-C", "-e", "-q", "-t", &topic, "-f", fmt]) else {
        return;
    };
    let sorted = |o: &Output| {
        let mut lines: Vec<String> = stdout(o).split_inclusive('\n').map(str::to_owned).collect();
        lines.sort();
        lines
    };
    // Partitions interleave differently; each line must match.
    assert_eq!(sorted(&ours), sorted(&theirs));
    let out = stdout(&ours);
    // -Z: the empty value and the empty line are nulls (length -1); the
    // whole input is one record of 12 bytes.
    assert!(out.contains("|0|1|b|1||-1|h=1|"), "{out}");
    assert!(out.contains("|0|2||-1||-1|h=1|"), "{out}");
    assert!(out.contains("|1|0||-1|line1\nline2\n|12||"), "{out}");
    // %R: the value's length as 4 big-endian bytes.
    let ours = kafka(
        &b,
        &[
            "consume",
            &topic,
            "--partition",
            "1",
            "--exit-at-end",
            "-f",
            "%R%s",
        ],
        b"",
    );
    let Some(theirs) = kcat(
        &b,
        &["-C", "-e", "-q", "-t", &topic, "-p", "1", "-f", "%R%s"],
    ) else {
        return;
    };
    assert_eq!(ours.stdout, theirs.stdout);
    assert_eq!(&ours.stdout[..4], &12i32.to_be_bytes());
}

#[test]
fn tail_and_time_starts_and_offsets_at_match_kcat() {
    let Some((b, topic)) = broker_and_topic() else {
        return;
    };
    let value = |args: &[&str]| {
        let mut all = vec!["consume", &topic, "--exit-at-end", "--format", "value"];
        all.extend_from_slice(args);
        stdout(&kafka(&b, &all, b""))
    };
    // -N: N before each partition's end; more than a partition has: all.
    let ours = value(&["--partition", "0", "--from", "-2"]);
    assert_eq!(ours, "\n3\n");
    let theirs = kcat(
        &b,
        &[
            "-C", "-e", "-q", "-t", &topic, "-p", "0", "-o", "-2", "-f", "%s\n",
        ],
    );
    if let Some(theirs) = theirs {
        assert_eq!(ours, stdout(&theirs));
    }
    assert_eq!(
        value(&["--partition", "1", "--from", "-5"]),
        "line1\nline2\n\n"
    );

    // x, then y and z after the time `at`, all on partition 1 after the
    // whole file (records are stamped when read).
    let produce = |v: &str| {
        kafka(
            &b,
            &["produce", &topic, "--partition", "1"],
            format!("{v}\n").as_bytes(),
        );
    };
    produce("x");
    std::thread::sleep(Duration::from_millis(20));
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    std::thread::sleep(Duration::from_millis(20));
    produce("y");
    produce("z");
    let at = at_ms.to_string();
    assert_eq!(
        value(&["--partition", "1", "--from", &format!("@{at}")]),
        "y\nz\n"
    );
    // offsets --at: partition 1's first offset at or after `at` is 2
    // (after the whole file and x); partition 0 has none: -1.
    let out = stdout(&kafka(&b, &["offsets", &topic, "--at", &at], b""));
    assert_eq!(out, "0\t-1\n1\t2\n");
    if let Some(theirs) = kcat(&b, &["-Q", "-t", &format!("{topic}:1:{at}")]) {
        let theirs = stdout(&theirs);
        assert!(theirs.contains("offset 2"), "{theirs}");
    }
}

#[test]
fn key_delimiter_on_output_matches_kcat() {
    let Some((b, topic)) = broker_and_topic() else {
        return;
    };
    let ours = kafka(
        &b,
        &[
            "consume",
            &topic,
            "--partition",
            "0",
            "--exit-at-end",
            "--format",
            "value",
            "--key-delimiter",
            "=>",
        ],
        b"",
    );
    assert_eq!(stdout(&ours), "a=>1\nb=>\n=>\nc=>3\n");
    if let Some(theirs) = kcat(&b, &["-C", "-e", "-q", "-t", &topic, "-p", "0", "-K", "=>"]) {
        assert_eq!(stdout(&ours), stdout(&theirs));
    }
}

#[test]
fn properties_by_java_and_librdkafka_names() {
    // Bad names and values: one line, exit 2, before connecting.
    for args in [
        &["-X", "linger.mss=1", "metadata"][..],
        &["-X", "acks=2", "produce", "t"],
        &["-X", "isolation.level=dirty", "consume", "t"],
    ] {
        let mut cmd = binary();
        cmd.args(["--brokers", "127.0.0.1:1"]).args(args);
        let out = run_bounded(cmd, Some(b""), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: -X: "), "{err}");
    }
    let Some(b) = bootstrap() else { return };
    let topic = unique("cli-props");
    // bootstrap.servers from a properties file wins over --brokers, and
    // -X over the file.
    let file = std::env::temp_dir().join(format!("{topic}.properties"));
    std::fs::write(
        &file,
        format!("# test\nbootstrap.servers={b}\nlinger.ms=1\ncompression.type=zstd\n"),
    )
    .expect("write properties");
    let with_file = |args: &[&str], stdin: &[u8]| {
        let mut cmd = binary();
        cmd.args(["--brokers", "127.0.0.1:1", "--timeout-ms", "10000"])
            .arg("--config-file")
            .arg(&file)
            .args(args);
        let out = run_bounded(cmd, Some(stdin), Duration::from_secs(60));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    with_file(
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    with_file(
        &[
            "produce",
            &topic,
            "-X",
            "acks=1",
            "-X",
            "enable.idempotence=false",
        ],
        b"a\nb\n",
    );
    let out = with_file(
        &[
            "consume",
            &topic,
            "--exit-at-end",
            "--format",
            "value",
            "-X",
            "isolation.level=read_committed",
            "-X",
            "fetch.max.wait.ms=100",
        ],
        b"",
    );
    assert_eq!(stdout(&out), "a\nb\n");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn metadata_json_of_one_topic_matches_kcat() {
    let Some((b, topic)) = broker_and_topic() else {
        return;
    };
    let ours = kafka(
        &b,
        &["metadata", "--topic", &topic, "--format", "json"],
        b"",
    );
    let ours: serde_json::Value = serde_json::from_str(&stdout(&ours)).expect("our JSON");
    let Some(theirs) = kcat(&b, &["-L", "-J", "-t", &topic]) else {
        return;
    };
    let theirs: serde_json::Value = serde_json::from_str(&stdout(&theirs)).expect("kcat's JSON");
    for key in ["controllerid", "brokers", "query"] {
        let strip = |v: &serde_json::Value| {
            let mut v = v[key].clone();
            if let Some(brokers) = v.as_array_mut() {
                for b in brokers {
                    b.as_object_mut().map(|o| o.remove("rack"));
                }
            }
            v
        };
        assert_eq!(strip(&ours), strip(&theirs), "{key}");
    }
    assert_eq!(ours["topics"], theirs["topics"]);
    assert_eq!(
        ours["topics"][0]["partitions"].as_array().map(Vec::len),
        Some(2)
    );
    // The text form of one topic, and an unknown topic as an error.
    let text = stdout(&kafka(&b, &["metadata", "--topic", &topic], b""));
    assert!(
        text.starts_with(&format!("  topic \"{topic}\" with 2 partitions\n")),
        "{text}"
    );
    let mut cmd = binary();
    cmd.args(["--brokers", &b, "metadata", "--topic", "no-such-topic-here"]);
    let out = run_bounded(cmd, Some(b""), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_group_member_consumes_several_topics() {
    let Some(b) = bootstrap() else {
        return;
    };
    let (t1, t2) = (unique("cli-multi-a"), unique("cli-multi-b"));
    for (t, lines) in [(&t1, &b"a1\na2\n"[..]), (&t2, b"b1\nb2\nb3\n")] {
        kafka(
            &b,
            &[
                "topic",
                "create",
                t,
                "--partitions",
                "2",
                "--replication-factor",
                "1",
            ],
            b"",
        );
        kafka(&b, &["produce", t], lines);
    }
    let group = unique("cli-multi-g");
    let out = kafka(
        &b,
        &[
            "consume", &t1, &t2, "--group", &group, "--count", "5", "-f", "%t %s\n",
        ],
        b"",
    );
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    let want: Vec<String> = ["a1", "a2"]
        .iter()
        .map(|v| format!("{t1} {v}"))
        .chain(["b1", "b2", "b3"].iter().map(|v| format!("{t2} {v}")))
        .collect();
    assert_eq!(lines, want);
    // --exit-at-end: a new member gets every partition and stops at their
    // ends (two of them empty on one topic or the other is fine too).
    let out = kafka(
        &b,
        &[
            "consume",
            &t1,
            &t2,
            "--group",
            &unique("cli-multi-e"),
            "--exit-at-end",
            "-f",
            "%t %s\n",
        ],
        b"",
    );
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, want);
    // A ^regex (as kcat's) subscribes to every topic whose name it
    // matches when the member starts.
    let prefix = t1.trim_end_matches(|c: char| c != '-');
    let out = kafka(
        &b,
        &[
            "consume",
            &format!("^{}.*", regex_escape(prefix)),
            &t2,
            "--group",
            &unique("cli-multi-r"),
            "--exit-at-end",
            "-f",
            "%t %s\n",
        ],
        b"",
    );
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, want);
    // Without a group, one topic only.
    let mut cmd = binary();
    cmd.args(["--brokers", &b, "consume", &t1, &t2]);
    let out = run_bounded(cmd, Some(b""), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("several topics need --group"));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = !c.is_ascii_alphanumeric() && c != '-' && c != '_';
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}
