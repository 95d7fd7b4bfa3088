//! Helpers shared by the CLI's integration tests.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::{
    io::Write,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

#[allow(unused_imports)] // as dead_code above
pub use testkit::{bootstrap, env_or_skip, python_available, unique};

/// The `rskafka` binary, with no broker list inherited from the caller's
/// environment.
pub fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rskafka"));
    c.env_remove("KAFKA_BOOTSTRAP").env_remove("KAFKA_BROKERS");
    c
}

/// Runs `cmd` to completion with `stdin` (none if `None`), killing it (and
/// failing the test) if it runs longer than `limit`.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rskafka");
    if let (Some(mut input), Some(bytes)) = (child.stdin.take(), stdin) {
        // A process that exits early closes the pipe; that is its answer.
        let _ = input.write_all(bytes);
    }
    wait_bounded(child, &what, limit)
}

/// Waits for `child` and its output, killing it (and failing the test,
/// naming it `what`) if it runs longer than `limit`.
pub fn wait_bounded(child: Child, what: &str, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for rskafka"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} ran longer than {limit:?}");
        }
    }
}

/// Runs against the shared broker with a 10 s bound per request.
pub fn kafka(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = binary();
    cmd.args(["--brokers", bootstrap, "--timeout-ms", "10000"])
        .args(args);
    run_bounded(cmd, Some(stdin), Duration::from_secs(60))
}

/// Success: exit status 0.
#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        stderr(o)
    );
}

/// A failure: non-zero exit and exactly one `error: ...` line on stderr.
#[track_caller]
pub fn assert_one_line_error(o: &Output) -> String {
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

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends `signal` (e.g. `-INT`) to `child` and waits for it to exit,
/// failing the test if it still runs after `limit`; returns its status and
/// how long it took.
pub fn signal_and_wait(
    child: &mut Child,
    signal: &str,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal}");
    let signalled = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return (s, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < limit,
            "still running {:?} after {signal}",
            signalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
