//! The `rskafka` binary against a real broker (`KAFKA_BOOTSTRAP`), and its
//! failure modes against fake peers.

use std::{
    io::Write,
    net::TcpListener,
    process::Output,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod common;

use common::{
    assert_ok, assert_one_line_error, binary, bootstrap, kafka, run_bounded, signal_and_wait,
    stderr, stdout, unique, wait_bounded,
};

/// Runs the binary with `args` and `stdin`, killing it (and failing the
/// test) if it runs longer than `limit`.
fn run_with(args: &[&str], stdin: &[u8], limit: Duration) -> Output {
    let mut cmd = binary();
    cmd.args(args);
    run_bounded(cmd, Some(stdin), limit)
}

fn create_topic(bootstrap: &str, partitions: u32) -> String {
    let topic = unique("cli-t");
    let out = kafka(
        bootstrap,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            &partitions.to_string(),
            "--replication-factor",
            "1",
        ],
        b"",
    );
    assert_ok(&out);
    topic
}

/// Parses JSON lines and returns each line's timestamp, checking every
/// line is an object with exactly the contract's fields in order.
fn timestamps(lines: &str) -> Vec<i64> {
    lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let keys: Vec<&str> = v
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted = vec![
                "headers",
                "key",
                "offset",
                "partition",
                "timestamp",
                "topic",
                "value",
            ];
            sorted.sort_unstable();
            let mut got = keys.clone();
            got.sort_unstable();
            assert_eq!(got, sorted, "{l}");
            let prefix = "{\"topic\":";
            assert!(l.starts_with(prefix), "field order: {l}");
            v["timestamp"].as_i64().expect("timestamp is an integer")
        })
        .collect()
}

#[test]
fn topic_create_list_delete() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("cli-admin");
    let out = kafka(
        &b,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            "2",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy=compact",
        ],
        b"",
    );
    assert_ok(&out);
    let listed = kafka(&b, &["topic", "list"], b"");
    assert_ok(&listed);
    assert!(
        stdout(&listed).lines().any(|l| l == topic),
        "{}",
        stdout(&listed)
    );

    let again = kafka(
        &b,
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
    let err = assert_one_line_error(&again);
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");

    let offsets = kafka(&b, &["offsets", &topic], b"");
    assert_ok(&offsets);
    assert_eq!(stdout(&offsets), "0\t0\t0\n1\t0\t0\n");

    assert_ok(&kafka(&b, &["topic", "delete", &topic], b""));
    let listed = kafka(&b, &["topic", "list"], b"");
    assert!(!stdout(&listed).lines().any(|l| l == topic));
    let err = assert_one_line_error(&kafka(&b, &["topic", "delete", &topic], b""));
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
}

#[test]
fn produce_and_consume_json_exactly() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, 1);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let out = kafka(
        &b,
        &[
            "produce",
            &topic,
            "--key-delimiter",
            "::",
            "--header",
            "a=1",
            "--header",
            "nul",
            "--header",
            "a=x=y",
            "--compression",
            "gzip",
        ],
        b"k1::v1\nno key here\n::empty key\nk2::\"quoted\" \\ \xc3\xa9\n",
    );
    assert_ok(&out);
    // Binary values: not valid UTF-8, so JSON carries them as base64.
    let path = std::env::temp_dir().join(format!("{topic}.in"));
    std::fs::write(&path, b"bin::\xff\x00\xfe\n").expect("write input");
    let out = kafka(
        &b,
        &[
            "produce",
            &topic,
            "--key-delimiter",
            "::",
            "--file",
            path.to_str().expect("utf-8 path"),
            "--compression",
            "zstd",
            "--acks",
            "1",
        ],
        b"",
    );
    let _ = std::fs::remove_file(&path);
    assert_ok(&out);

    let out = kafka(
        &b,
        &["consume", &topic, "--format", "json", "--exit-at-end"],
        b"",
    );
    assert_ok(&out);
    let text = stdout(&out);
    let ts = timestamps(&text);
    let after = before + 60_000;
    assert!(ts.iter().all(|t| (before..after).contains(t)), "{ts:?}");
    let h = r#"[["a","1"],["nul",null],["a","x=y"]]"#;
    let expected = [
        format!(
            r#"{{"topic":"{topic}","partition":0,"offset":0,"timestamp":{},"key":"k1","value":"v1","headers":{h}}}"#,
            ts[0]
        ),
        format!(
            r#"{{"topic":"{topic}","partition":0,"offset":1,"timestamp":{},"key":null,"value":"no key here","headers":{h}}}"#,
            ts[1]
        ),
        format!(
            r#"{{"topic":"{topic}","partition":0,"offset":2,"timestamp":{},"key":"","value":"empty key","headers":{h}}}"#,
            ts[2]
        ),
        format!(
            r#"{{"topic":"{topic}","partition":0,"offset":3,"timestamp":{},"key":"k2","value":"\"quoted\" \\ é","headers":{h}}}"#,
            ts[3]
        ),
        format!(
            r#"{{"topic":"{topic}","partition":0,"offset":4,"timestamp":{},"key":"bin","value":{{"base64":"/wD+"}},"headers":[]}}"#,
            ts[4]
        ),
    ];
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, expected.iter().map(String::as_str).collect::<Vec<_>>());

    // --format value prints values alone; --from picks the start.
    let out = kafka(
        &b,
        &[
            "consume",
            &topic,
            "--format",
            "value",
            "--exit-at-end",
            "--from",
            "1",
        ],
        b"",
    );
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        b"no key here\nempty key\n\"quoted\" \\ \xc3\xa9\n\xff\x00\xfe\n".to_vec()
    );
    let out = kafka(
        &b,
        &["consume", &topic, "--exit-at-end", "--from", "latest"],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "");

    let out = kafka(&b, &["offsets", &topic], b"");
    assert_ok(&out);
    assert_eq!(stdout(&out), "0\t0\t5\n");
}

#[test]
fn every_codec_round_trips_through_the_cli() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, 1);
    let mut want = String::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines: String = (0..20).map(|i| format!("{codec} line {i}\n")).collect();
        let out = kafka(
            &b,
            &["produce", &topic, "--compression", codec],
            lines.as_bytes(),
        );
        assert_ok(&out);
        want.push_str(&lines);
    }
    let out = kafka(
        &b,
        &["consume", &topic, "--format", "value", "--exit-at-end"],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), want);
}

#[test]
fn acks_zero_produces_end_to_end() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, 1);
    // acks=all first: until the new partition's leader takes writes, an
    // unanswered produce could be dropped without notice.
    assert_ok(&kafka(
        &b,
        &["produce", &topic, "--acks", "all"],
        b"first\n",
    ));
    let lines: String = (0..1_000).map(|i| format!("fire {i}\n")).collect();
    let out = kafka(&b, &["produce", &topic, "--acks", "0"], lines.as_bytes());
    assert_ok(&out);
    assert_ok(&kafka(&b, &["produce", &topic, "--acks", "all"], b"last\n"));
    let out = kafka(
        &b,
        &["consume", &topic, "--format", "value", "--exit-at-end"],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), format!("first\n{lines}last\n"));
}

#[test]
fn keyed_lines_follow_the_java_partitioner_and_count_limits_output() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, 2);
    // toPositive(murmur2(key)) % 2, from Kafka's murmur2 test vectors:
    // "abc" → 479470107 (odd), "foobar" → 1357151166, "21" → 1173551340.
    let out = kafka(
        &b,
        &["produce", &topic, "--key-delimiter", "=", "--acks", "all"],
        b"abc=1\nfoobar=2\n21=3\nabc=4\n",
    );
    assert_ok(&out);
    let out = kafka(&b, &["offsets", &topic], b"");
    assert_eq!(stdout(&out), "0\t0\t2\n1\t0\t2\n");
    let out = kafka(
        &b,
        &[
            "consume",
            &topic,
            "--partition",
            "1",
            "--format",
            "value",
            "--exit-at-end",
        ],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "1\n4\n");

    let out = kafka(&b, &["consume", &topic, "--count", "3"], b"");
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));

    // --partition on produce overrides the key.
    let out = kafka(
        &b,
        &[
            "produce",
            &topic,
            "--partition",
            "1",
            "--key-delimiter",
            "=",
        ],
        b"foobar=5\n",
    );
    assert_ok(&out);
    let out = kafka(&b, &["offsets", &topic], b"");
    assert_eq!(stdout(&out), "0\t0\t2\n1\t0\t3\n");
}

/// Issue #21: a long `produce` shows its progress (count, time, rate) on
/// stderr when that is a terminal, and writes nothing there through a pipe.
#[test]
fn produce_progress_shows_on_a_terminal_only() {
    let Some(b) = bootstrap() else { return };
    if !std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        testkit::skip("util-linux script (a terminal for the test) is not installed");
        return;
    }
    let topic = create_topic(&b, 1);
    // Longer than the meter's first second.
    let run = format!(
        "(seq 1 1000; sleep 1.5; seq 1001 2000) | '{}' --brokers {b} produce {topic}",
        env!("CARGO_BIN_EXE_rskafka")
    );
    let mut on_terminal = std::process::Command::new("script");
    on_terminal.args(["-qec", &run, "/dev/null"]);
    let out = run_bounded(on_terminal, None, Duration::from_secs(60));
    assert_ok(&out);
    let shown = stdout(&out);
    assert!(
        shown.contains("\r2000 lines in ") && shown.contains("/s"),
        "the terminal shows the final count and rate: {shown:?}"
    );
    let mut piped = std::process::Command::new("sh");
    piped.args(["-c", &run]);
    let out = run_bounded(piped, None, Duration::from_secs(60));
    assert_ok(&out);
    assert_eq!(stderr(&out), "", "nothing on stderr through a pipe");
    let read = kafka(
        &b,
        &["consume", &topic, "--format", "value", "--exit-at-end"],
        b"",
    );
    assert_ok(&read);
    assert_eq!(
        stdout(&read).lines().count(),
        4000,
        "both runs' lines arrive"
    );
}

#[test]
fn api_versions_and_metadata() {
    let Some(b) = bootstrap() else { return };
    let out = kafka(&b, &["api-versions"], b"");
    assert_ok(&out);
    let text = stdout(&out);
    let produce = text
        .lines()
        .find(|l| l.starts_with("Produce\t"))
        .expect("Produce listed");
    let cols: Vec<&str> = produce.split('\t').collect();
    assert_eq!(cols.len(), 4, "{produce}");
    assert_eq!(cols[1], "0");
    let (min, max) = cols[2].split_once('-').expect("min-max");
    let (min, max): (i16, i16) = (min.parse().expect("min"), max.parse().expect("max"));
    let used: i16 = cols[3].parse().expect("a version is used for Produce");
    assert!(min <= used && used <= max && used >= 3, "{produce}");
    assert!(text.lines().any(|l| l.starts_with("Fetch\t1\t")), "{text}");

    let topic = create_topic(&b, 2);
    let out = kafka(&b, &["metadata"], b"");
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("controller: "), "{text}");
    assert!(text.contains("broker "), "{text}");
    assert!(
        text.contains(&format!("topic \"{topic}\" with 2 partitions")),
        "{text}"
    );
    assert!(text.contains("partition 1, leader "), "{text}");
}

#[test]
fn unknown_topic_and_bad_flags_fail_with_one_line() {
    let Some(b) = bootstrap() else { return };
    let missing = unique("cli-missing");
    for args in [
        vec!["consume", missing.as_str(), "--exit-at-end"],
        vec!["produce", missing.as_str()],
        vec!["offsets", missing.as_str()],
    ] {
        let err = assert_one_line_error(&kafka(&b, &args, b"x\n"));
        assert!(
            err.contains("UNKNOWN_TOPIC_OR_PARTITION"),
            "{args:?}: {err}"
        );
    }
}

/// A 2-partition topic: partition 0 holds `a0`..`a4`, partition 1 `b0`, `b1`.
fn unequal_partitions(bootstrap: &str) -> String {
    let topic = create_topic(bootstrap, 2);
    assert_ok(&kafka(
        bootstrap,
        &["produce", &topic, "--partition", "0"],
        b"a0\na1\na2\na3\na4\n",
    ));
    assert_ok(&kafka(
        bootstrap,
        &["produce", &topic, "--partition", "1"],
        b"b0\nb1\n",
    ));
    topic
}

/// Checks `stderr` is one `warning: ` line per partition of `partitions`,
/// each naming its partition.
#[track_caller]
fn warns_of(stderr: &str, partitions: &[i32]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), partitions.len(), "{stderr:?}");
    for (line, p) in lines.iter().zip(partitions) {
        assert!(line.starts_with("warning: "), "{stderr:?}");
        assert!(line.contains(&format!("partition {p} ")), "{stderr:?}");
    }
}

#[test]
fn from_offset_starts_each_partition_at_its_first_offset_at_or_after_it() {
    let Some(b) = bootstrap() else { return };
    let topic = unequal_partitions(&b);
    // Partition 1 ends (2) before offset 3: it starts at its end, with a
    // warning, and the run goes on; --exit-at-end and a plain run agree.
    for extra in [&["--exit-at-end"][..], &["--count", "2"]] {
        let mut args = vec!["consume", &topic, "--from", "3", "--format", "value"];
        args.extend_from_slice(extra);
        let out = kafka(&b, &args, b"");
        assert_ok(&out);
        assert_eq!(stdout(&out), "a3\na4\n", "{extra:?}");
        warns_of(&stderr(&out), &[1]);
    }
    // Beyond the end of both: nothing to print yet, one warning each.
    let out = kafka(
        &b,
        &["consume", &topic, "--from", "10", "--exit-at-end"],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "");
    warns_of(&stderr(&out), &[0, 1]);
    // Without --exit-at-end it waits at the ends for new records.
    let mut cmd = binary();
    cmd.args([
        "--brokers",
        &b,
        "--timeout-ms",
        "10000",
        "consume",
        &topic,
        "--from",
        "10",
        "--count",
        "1",
        "--format",
        "value",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn consume");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut warnings = String::new();
    for _ in 0..2 {
        // Blocks until the line comes, or ends at EOF if the process died.
        std::io::BufRead::read_line(&mut err, &mut warnings).expect("read stderr");
    }
    warns_of(&warnings, &[0, 1]);
    assert_ok(&kafka(
        &b,
        &["produce", &topic, "--partition", "1"],
        b"b2\n",
    ));
    let out = wait_bounded(child, "consume --count 1", Duration::from_secs(30));
    assert_ok(&out);
    assert_eq!(stdout(&out), "b2\n");
}

#[test]
fn from_offset_before_the_log_start_starts_at_the_log_start() {
    let Some(b) = bootstrap() else { return };
    let topic = unequal_partitions(&b);
    // Records before offset 2 of partition 0 are deleted.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = rskafka::client::ClientBuilder::new(vec![b.clone()])
            .build()
            .await
            .expect("client");
        let pc = client
            .partition_client(topic.as_str(), 0)
            .await
            .expect("partition client");
        assert_eq!(pc.delete_records(2, 10_000).await.expect("delete"), 2);
    });
    let out = kafka(
        &b,
        &[
            "consume",
            &topic,
            "--from",
            "1",
            "--partition",
            "0",
            "--format",
            "value",
            "--exit-at-end",
        ],
        b"",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "a2\na3\na4\n");
    assert_eq!(stderr(&out), "", "no warning: every record is after 1");
}

/// The `N of M lines read acknowledged` (or `committed`: `what`) numbers
/// of a produce error.
fn counted_of_read(err: &str, what: &str) -> (u64, u64) {
    let at = err
        .find(&format!(" lines read {what}"))
        .expect("progress in the error");
    let words: Vec<&str> = err[..at].rsplit(' ').take(3).collect();
    assert_eq!(words[1], "of", "{err}");
    (
        words[2].parse().expect("acknowledged"),
        words[0].parse().expect("read"),
    )
}

#[test]
fn failed_produce_reports_the_acknowledged_prefix() {
    let Some(b) = bootstrap() else { return };
    // Two partitions, keys abc (partition 1) and foobar (partition 0)
    // spreading the lines over both (see the partitioner test). Line
    // 1001, too large for the broker, is a batch of its own (it is larger
    // than a batch), after those of the lines before it, which are
    // written; later lines may or may not be.
    let topic = create_topic(&b, 2);
    let key = |i: u32| if i.is_multiple_of(2) { "foobar" } else { "abc" };
    let mut input = Vec::new();
    for i in 1..=1000 {
        input.extend_from_slice(format!("{}\tline {i}\n", key(i)).as_bytes());
    }
    input.extend_from_slice(b"foobar\t");
    input.extend(std::iter::repeat_n(b'x', 1_200_000));
    input.push(b'\n');
    for i in 1002..=1500 {
        input.extend_from_slice(format!("{}\tline {i}\n", key(i)).as_bytes());
    }
    let out = kafka(
        &b,
        &[
            "produce",
            &topic,
            "--key-delimiter",
            "\t",
            "--timeout-ms",
            "10000",
        ],
        &input,
    );
    let err = assert_one_line_error(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("MESSAGE_TOO_LARGE"), "{err}");
    assert!(
        err.contains("(lines 1-1000") && err.contains("lines from 1001 on were not"),
        "{err}"
    );
    let (acked, read) = counted_of_read(&err, "acknowledged");
    assert!(
        (1000..=1500).contains(&acked) && acked < read && read <= 1501,
        "{err}"
    );
    // What is in the topic agrees: lines 1-1000, and as many lines as
    // were reported acknowledged.
    let out = kafka(
        &b,
        &["consume", &topic, "--format", "value", "--exit-at-end"],
        b"",
    );
    assert_ok(&out);
    let mut got: Vec<u32> = stdout(&out)
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .expect("a small line")
                .parse()
                .expect("n")
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got.len() as u64, acked, "{err}");
    assert_eq!(got[..1000], (1..=1000).collect::<Vec<u32>>()[..]);
    assert!(!got.contains(&1001));

    // A line larger than a request fails before it is sent.
    let topic = create_topic(&b, 1);
    let mut input = b"one\ntwo\n".to_vec();
    input.extend(std::iter::repeat_n(b'y', 9 * 1024 * 1024));
    input.extend_from_slice(b"\nfour\n");
    let out = kafka(&b, &["produce", &topic], &input);
    let err = assert_one_line_error(&out);
    assert!(
        err.ends_with(
            ": 2 of 3 lines read acknowledged (lines 1-2); lines from 3 on were not, or not certainly, written\n"
        ),
        "{err}"
    );
}

/// Starts `produce` with a stdin pipe kept open, writes `lines`, waits
/// until the topic holds them, sends `signal` and returns the output.
fn produce_interrupted(bootstrap: &str, topic: &str, lines: &[u8], signal: &str) -> Output {
    let want = lines.iter().filter(|&&c| c == b'\n').count() as u64;
    produce_interrupted_at(bootstrap, topic, &[], lines, want, || {}, signal)
}

/// [`produce_interrupted`] for `produce TOPIC EXTRA...`: waits until the
/// single partition of `topic` ends at offset `end`, then calls
/// `meanwhile` before it sends `signal`.
fn produce_interrupted_at(
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
    lines: &[u8],
    end: u64,
    meanwhile: impl FnOnce(),
    signal: &str,
) -> Output {
    let mut child = binary()
        .args([
            "--brokers",
            bootstrap,
            "--timeout-ms",
            "10000",
            "produce",
            topic,
        ])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn produce");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(lines).expect("write lines");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kafka(bootstrap, &["offsets", topic], b"");
        if stdout(&out) == format!("0\t0\t{end}\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lines not written: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    meanwhile();
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = wait_bounded(child, "produce after a signal", Duration::from_secs(30));
    drop(stdin);
    out
}

#[test]
fn interrupted_produce_reports_what_was_written() {
    let Some(b) = bootstrap() else { return };
    for (signal, name, code) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        let topic = create_topic(&b, 1);
        let out = produce_interrupted(&b, &topic, b"1\n2\n3\n", signal);
        let err = assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(
            err,
            format!(
                "error: interrupted by {name}: 3 of 3 lines read acknowledged (lines 1-3); \
                 lines from 4 on were not, or not certainly, written\n"
            )
        );
    }
}

#[test]
fn bad_flags_fail_with_a_usage_error() {
    // No broker needed: arguments are checked first.
    for args in [
        vec!["consume", "t", "--bogus"],
        vec!["produce", "t", "--compression", "brotli"],
        vec!["consume", "t", "--from", "yesterday"],
        vec!["nosuchcommand"],
        vec![
            "produce",
            "t",
            "--transactional-id",
            "x",
            "--transaction-size",
            "0",
        ],
    ] {
        let out = run_with(&args, b"", Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_one_line_error(&out);
    }
}

#[test]
fn invalid_values_found_after_parsing_are_usage_errors_too() {
    // Each is checked before connecting: nothing listens on port 1, so a
    // check done later would fail with 1 (cannot connect) instead.
    let cases: [&[&str]; 19] = [
        &["produce", "t", "--idempotent", "on", "--acks", "1"],
        &["produce", "t", "--idempotent", "on", "--acks", "0"],
        &["produce", "t", "--transactional-id", "x", "--acks", "1"],
        &["produce", "t", "--transactional-id", "x", "--acks", "0"],
        &[
            "produce",
            "t",
            "--transactional-id",
            "x",
            "--idempotent",
            "off",
        ],
        &["-X", "acks=1", "produce", "t", "--transactional-id", "x"],
        &["produce", "t", "--transactional-id", ""],
        &["-X", "transactional.id=x", "produce", "t", "--acks", "1"],
        &["produce", "t", "--transaction-size", "5"],
        &["produce", "t", "--transaction-timeout-ms", "5000"],
        &["produce", "t", "--key-delimiter", ""],
        &["produce", "t", "--partition=-1"],
        &["consume", "t", "--partition=-1"],
        &["consume", "t", "--group", "g", "--from", "5"],
        &["topic", "create", "t", "--config", "novalue"],
        &["topic", "create", "t", "--config", "=v"],
        &["--sasl-mechanism", "PLAIN", "metadata"],
        &["--sasl-username", "alice", "metadata"],
        &["--socks5", "no-port", "metadata"],
    ];
    for args in cases {
        let mut all = vec!["--brokers", "127.0.0.1:1", "--timeout-ms", "2000"];
        all.extend_from_slice(args);
        let out = run_with(&all, b"", Duration::from_secs(10));
        let err = assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    }
    for brokers in [" , ", "127.0.0.1:99999", "host:abc", ":9092", "[::1"] {
        let out = run_with(
            &["--brokers", brokers, "metadata"],
            b"",
            Duration::from_secs(10),
        );
        let err = assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(2), "{brokers:?}: {err}");
    }
}

/// kcat's habits: a broker without a port means 9092; a name that does
/// not resolve and a refused connection fail in seconds, not after the
/// 30 s request timeout.
#[test]
fn bad_broker_addresses_fail_fast() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for (brokers, says) in [
        ("no-such-broker.invalid", "no-such-broker.invalid:9092"),
        ("no-such-broker.invalid:9092", "cannot resolve"),
        (closed.as_str(), "refused"),
    ] {
        let started = Instant::now();
        let out = run_with(
            &["--brokers", brokers, "metadata"],
            b"",
            Duration::from_secs(20),
        );
        let took = started.elapsed();
        let err = assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1), "{brokers}: {err}");
        assert!(err.contains(says), "{brokers}: {err}");
        assert!(took < Duration::from_secs(10), "{brokers}: took {took:?}");
    }
}

#[test]
fn unreachable_broker_fails_within_the_timeout() {
    let started = Instant::now();
    let out = run_with(
        &[
            "--brokers",
            "127.0.0.1:1",
            "--timeout-ms",
            "2000",
            "topic",
            "list",
        ],
        b"",
        Duration::from_secs(10),
    );
    let took = started.elapsed();
    assert_one_line_error(&out);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// A peer that accepts connections and answers with `reply` (then keeps
/// the connection open), for `lifetime`.
fn fake_peer(reply: &'static [u8], lifetime: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let end = Instant::now() + lifetime;
        let mut open = Vec::new();
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(reply);
                    open.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    addr
}

#[test]
fn garbage_or_silent_peers_fail_within_the_timeout() {
    // Random-looking bytes, HTTP, TLS, and a peer that never answers.
    let peers: [&'static [u8]; 4] = [
        b"\x93\x1f\xa0\x07\x55\xc3\x10\x99\x42\x00\x01\xfe\xde\xad\xbe\xef",
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x46",
        b"",
    ];
    for reply in peers {
        let addr = fake_peer(reply, Duration::from_secs(10));
        let started = Instant::now();
        let out = run_with(
            &["--brokers", &addr, "--timeout-ms", "2000", "metadata"],
            b"",
            Duration::from_secs(10),
        );
        let took = started.elapsed();
        let err = assert_one_line_error(&out);
        assert!(took < Duration::from_secs(4), "{reply:?}: took {took:?}");
        if reply.starts_with(b"HTTP") {
            assert!(err.contains("HTTP"), "{err}");
        }
        if reply.starts_with(b"\x15\x03") {
            assert!(err.contains("TLS"), "{err}");
        }
    }
}

/// SIGINT and SIGTERM end `consume` promptly even while nobody reads its
/// output (the write used to block the runtime until the reader read), and
/// nothing is written after the signal but the slice being written.
#[test]
fn consume_stops_on_a_signal_while_the_reader_stalls() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, 1);
    let lines: String = (0..20_000)
        .map(|i| format!("{i}-{}\n", "y".repeat(400)))
        .collect();
    assert_ok(&kafka(&b, &["produce", &topic], lines.as_bytes()));
    for signal in ["-INT", "-TERM"] {
        let mut cmd = binary();
        cmd.args(["--brokers", &b, "consume", &topic, "--format", "value"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn consume");
        // Long enough to fill the pipe and block on it.
        std::thread::sleep(Duration::from_secs(3));
        let (exited, _) = signal_and_wait(&mut child, signal, Duration::from_secs(10));
        assert!(exited.success(), "{signal}: {exited:?}");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().expect("stdout"), &mut out)
            .expect("read");
        // The pipe's 64 KiB plus at most one 64 KiB slice.
        assert!(out.len() <= 192 * 1024, "{signal}: {} bytes", out.len());
        assert!(!out.is_empty(), "{signal}: nothing printed");
    }
}

/// `consume --format value --exit-at-end` of `topic` with `args` added: the
/// values printed.
fn values(bootstrap: &str, topic: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["consume", topic, "--format", "value", "--exit-at-end"];
    all.extend_from_slice(args);
    let out = kafka(bootstrap, &all, b"");
    assert_ok(&out);
    stdout(&out).lines().map(str::to_owned).collect()
}

/// `prefix 1` to `prefix n`.
fn numbered(prefix: &str, lines: std::ops::RangeInclusive<u32>) -> Vec<String> {
    lines.map(|i| format!("{prefix} {i}")).collect()
}

const READ_COMMITTED: [&str; 2] = ["--isolation", "read_committed"];

/// `produce TOPIC` of `input` in transactions of `size` lines, under a new
/// transactional id.
fn produce_in_transactions(bootstrap: &str, topic: &str, size: u32, input: &[u8]) -> Output {
    let id = unique("cli-txn");
    let size = size.to_string();
    let args = [
        "produce",
        topic,
        "--transactional-id",
        &id,
        "--transaction-size",
        &size,
    ];
    kafka(bootstrap, &args, input)
}

#[test]
fn transactions_of_transaction_size_lines_are_committed_and_read_committed() {
    let Some(b) = bootstrap() else {
        return;
    };
    let topic = create_topic(&b, 1);
    let lines = numbered("line", 1..=1000).join("\n") + "\n";
    assert_ok(&produce_in_transactions(&b, &topic, 300, lines.as_bytes()));
    // Each commit ends with a marker in the partition: 1000 records and 4
    // markers are 4 transactions (300, 300, 300, 100).
    assert_eq!(
        stdout(&kafka(&b, &["offsets", &topic], b"")),
        "0\t0\t1004\n"
    );
    assert_eq!(
        values(&b, &topic, &READ_COMMITTED),
        numbered("line", 1..=1000)
    );
    // Without --transaction-size the whole input is one transaction.
    commit_more(&b, &topic, "more", 50);
    assert_eq!(
        stdout(&kafka(&b, &["offsets", &topic], b"")),
        "0\t0\t1055\n"
    );
    let mut want = numbered("line", 1..=1000);
    want.extend(numbered("more", 1..=50));
    assert_eq!(values(&b, &topic, &READ_COMMITTED), want);
}

/// Lines `prefix 1..=n` committed by a producer of a new transactional id:
/// they become visible to read_committed readers only once no earlier
/// transaction in the partition is still open.
fn commit_more(bootstrap: &str, topic: &str, prefix: &str, n: u32) {
    let lines = numbered(prefix, 1..=n).join("\n") + "\n";
    let id = unique("cli-txn-after");
    let out = kafka(
        bootstrap,
        &["produce", topic, "--transactional-id", &id],
        lines.as_bytes(),
    );
    assert_ok(&out);
}

#[test]
fn a_signal_aborts_the_open_transaction_and_keeps_the_committed_ones() {
    let Some(b) = bootstrap() else {
        return;
    };
    for (signal, name, code) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        let topic = create_topic(&b, 1);
        let id = unique("cli-txn");
        let lines = numbered("line", 1..=250).join("\n") + "\n";
        // 2 committed transactions (200 records, 2 markers), then the 50
        // records of the open one.
        let out = produce_interrupted_at(
            &b,
            &topic,
            &["--transactional-id", &id, "--transaction-size", "100"],
            lines.as_bytes(),
            252,
            || {
                // The open transaction's records are in the log, unread
                // under read_committed, whether the flag or -X asks for it
                // (and --exit-at-end stops at the last stable offset
                // instead of waiting for the open transaction).
                assert_eq!(values(&b, &topic, &[]), numbered("line", 1..=250));
                assert_eq!(
                    values(&b, &topic, &READ_COMMITTED),
                    numbered("line", 1..=200)
                );
                assert_eq!(
                    values(&b, &topic, &["-X", "isolation.level=read_committed"]),
                    numbered("line", 1..=200)
                );
            },
            signal,
        );
        let err = assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(
            err,
            format!(
                "error: interrupted by {name}: 200 of 250 lines read committed (lines 1-200 in \
                 2 transactions); lines from 201 on were not committed (transaction aborted)\n"
            )
        );
        // The abort marker is written: the transaction is over, not left
        // open for the broker to time out.
        assert_eq!(stdout(&kafka(&b, &["offsets", &topic], b"")), "0\t0\t253\n");
        // So a later transaction (of another id, which could not abort it)
        // is readable at once, and the aborted lines never are.
        commit_more(&b, &topic, "after", 10);
        let mut want = numbered("line", 1..=200);
        want.extend(numbered("after", 1..=10));
        assert_eq!(values(&b, &topic, &READ_COMMITTED), want, "{name}");
        assert_eq!(values(&b, &topic, &[]).len(), 260, "{name}");
    }
}

#[test]
fn a_failing_line_aborts_its_transaction_and_keeps_the_committed_ones() {
    let Some(b) = bootstrap() else {
        return;
    };
    let topic = create_topic(&b, 1);
    // Line 251 is larger than the broker takes.
    let mut input = (numbered("line", 1..=250).join("\n") + "\n").into_bytes();
    input.extend(std::iter::repeat_n(b'x', 1_200_000));
    input.push(b'\n');
    input.extend((numbered("line", 252..=300).join("\n") + "\n").into_bytes());
    let out = produce_in_transactions(&b, &topic, 100, &input);
    let err = assert_one_line_error(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("MESSAGE_TOO_LARGE"), "{err}");
    let (committed, read) = counted_of_read(&err, "committed");
    assert_eq!(committed, 200, "{err}");
    assert!((251..=300).contains(&read), "{err}");
    assert!(
        err.ends_with(
            "(lines 1-200 in 2 transactions); lines from 201 on were not committed \
             (transaction aborted)\n"
        ),
        "{err}"
    );
    assert_eq!(
        values(&b, &topic, &READ_COMMITTED),
        numbered("line", 1..=200)
    );
    commit_more(&b, &topic, "after", 5);
    let mut want = numbered("line", 1..=200);
    want.extend(numbered("after", 1..=5));
    assert_eq!(values(&b, &topic, &READ_COMMITTED), want);
}
