//! `rskafka fake-cluster`: serves other processes (this CLI and kcat),
//! stops cleanly on signals, and rejects bad flags as usage errors.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

mod common;

use common::{assert_ok, binary, kafka, run_bounded, signal_and_wait, stderr, stdout};

/// Starts `fake-cluster` with `args`; returns the child and its bootstrap line.
fn start(args: &[&str]) -> (std::process::Child, String) {
    let mut child = binary()
        .arg("fake-cluster")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rskafka fake-cluster");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bootstrap line");
    (child, line.trim().to_owned())
}

#[test]
fn serves_brokers_on_consecutive_ports_and_stops_on_sigterm() {
    let base = (0..50)
        .map(|i| 31_000 + i * 10)
        .find(|&p| (p..p + 3).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("three free ports");
    let (mut child, bootstrap) = start(&["--brokers", "3", "--port", &base.to_string()]);
    assert_eq!(
        bootstrap,
        format!(
            "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
            base + 1,
            base + 2
        )
    );
    let o = kafka(
        &bootstrap,
        &["topic", "create", "fc", "--partitions", "3"],
        b"",
    );
    assert_ok(&o);
    assert_ok(&kafka(
        &bootstrap,
        &["produce", "fc", "--partition", "1"],
        b"a\nb\n",
    ));
    let o = kafka(&bootstrap, &["offsets", "fc"], b"");
    assert_ok(&o);
    assert_eq!(stdout(&o), "0\t0\t0\n1\t0\t2\n2\t0\t0\n");
    let o = kafka(&bootstrap, &["metadata"], b"");
    assert!(stdout(&o).contains("brokers: 3"), "{}", stdout(&o));

    let (status, took) = signal_and_wait(&mut child, "-TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
}

#[test]
fn sigint_stops_it_too() {
    let (mut child, bootstrap) = start(&[]);
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    let (status, took) = signal_and_wait(&mut child, "-INT", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["fake-cluster", "--brokers", "0"][..],
        &["fake-cluster", "--brokers", "localhost:9092"],
        &["fake-cluster", "--port", "65535", "--brokers", "2"],
        &["fake-cluster", "--port", "x"],
    ] {
        let mut cmd = binary();
        cmd.args(args);
        let o = run_bounded(cmd, None, Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn kcat_produces_and_consumes_through_it() {
    if Command::new("kcat").arg("-V").output().is_err() {
        testkit::skip("kcat is not installed");
        return;
    }
    let (mut child, bootstrap) = start(&["--brokers", "2"]);
    // One line per codec, each produce its own batch.
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let produce = Command::new("kcat")
            .args(["-b", &bootstrap, "-P", "-t", "kc", "-p", "0", "-z", codec])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(format!("{codec}\n").as_bytes())?;
                c.wait_with_output()
            })
            .expect("kcat -P");
        assert!(
            produce.status.success(),
            "kcat -P -z {codec}: {}",
            stderr(&produce)
        );
    }
    let mut consume = Command::new("kcat");
    consume.args([
        "-b",
        &bootstrap,
        "-C",
        "-t",
        "kc",
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-f",
        "%o %s\n",
    ]);
    let o = run_bounded(consume, None, Duration::from_secs(30));
    assert!(o.status.success(), "kcat -C: {}", stderr(&o));
    assert_eq!(stdout(&o), "0 none\n1 gzip\n2 snappy\n3 lz4\n4 zstd\n");
    // Offsets by time (kcat -Q): the first at or after time 0, and the
    // end (-1).
    for (at, want) in [("0", "kc [0] offset 0"), ("-1", "kc [0] offset 5")] {
        let mut query = Command::new("kcat");
        query.args(["-b", &bootstrap, "-Q", "-t", &format!("kc:0:{at}")]);
        let o = run_bounded(query, None, Duration::from_secs(30));
        assert!(o.status.success(), "kcat -Q: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), want);
    }
    // And this CLI reads what kcat wrote.
    let o = kafka(
        &bootstrap,
        &["consume", "kc", "--count", "5", "-f", "%s\\n"],
        b"",
    );
    assert_ok(&o);
    assert_eq!(stdout(&o), "none\ngzip\nsnappy\nlz4\nzstd\n");
    let (status, _) = signal_and_wait(&mut child, "-TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}
