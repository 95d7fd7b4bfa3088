//! The `rskafka` binary against a real broker (`KAFKA_BOOTSTRAP`), and its
//! failure modes against fake peers.

use std::{
    io::Write,
    net::TcpListener,
    process::Output,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod common;

use common::{binary, bootstrap, run_bounded, stderr, stdout, unique};

/// Runs the binary with `args` and `stdin`, killing it (and failing the
/// test) if it runs longer than `limit`.
fn run_with(args: &[&str], stdin: &[u8], limit: Duration) -> Output {
    let mut cmd = binary();
    cmd.args(args);
    run_bounded(cmd, Some(stdin), limit)
}

/// Runs against the shared broker with a 10 s bound per request.
fn kafka(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["--brokers", bootstrap, "--timeout-ms", "10000"];
    all.extend_from_slice(args);
    run_with(&all, stdin, Duration::from_secs(60))
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        stderr(o)
    );
}

/// A failure: non-zero exit and exactly one `error: ...` line on stderr.
#[track_caller]
fn assert_one_line_error(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure; stdout: {}",
        stdout(o)
    );
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "stderr must be one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    err
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
    let topic = create_topic(&b, 1);
    let err = assert_one_line_error(&kafka(
        &b,
        &["consume", &topic, "--from", "99", "--partition", "0"],
        b"",
    ));
    assert!(err.contains("OFFSET_OUT_OF_RANGE"), "{err}");
}

#[test]
fn bad_flags_fail_with_a_usage_error() {
    // No broker needed: arguments are checked first.
    for args in [
        vec!["consume", "t", "--bogus"],
        vec!["produce", "t", "--compression", "brotli"],
        vec!["consume", "t", "--from", "yesterday"],
        vec!["nosuchcommand"],
    ] {
        let out = run_with(&args, b"", Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_one_line_error(&out);
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
