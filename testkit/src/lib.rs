//! What the tests of the library, the CLI and the services under `apps/`
//! share: the broker under test, skips that show in the run's output, names
//! no other run uses, and a service run as a child process with its output
//! in a file, stopped with signals.

use std::{
    fmt::Display,
    fs::File,
    io::Write,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Set to `1`, a skip fails the test instead (for runs that must cover
/// everything).
pub const REQUIRE_ALL_VAR: &str = "RSKAFKA_REQUIRE_ALL";

/// Reports that the running test skips (part of) its work for want of
/// something (`reason`). libtest would count the test as passed and keep
/// its `eprintln!` output to itself, so the line `SKIPPED <test>: <reason>`
/// goes straight to the process's stderr, where the run's output (and
/// CI's summary) shows it. With `RSKAFKA_REQUIRE_ALL=1` it panics instead.
pub fn skip(reason: impl Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if std::env::var(REQUIRE_ALL_VAR).is_ok_and(|v| v == "1") {
        panic!("{test} cannot run: {reason} ({REQUIRE_ALL_VAR}=1 makes this a failure)");
    }
    // Not eprintln!: libtest captures that for passing tests.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// The trimmed value of `var`, or `None` after reporting the skip.
pub fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            skip(format!("{var} not set"));
            None
        }
    }
}

/// The shared broker from `KAFKA_BOOTSTRAP` (or its alias `KAFKA_BROKERS`,
/// the CLI's name); `None` after reporting the skip when neither is set.
pub fn bootstrap() -> Option<String> {
    for var in ["KAFKA_BOOTSTRAP", "KAFKA_BROKERS"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return Some(v.trim().to_owned());
            }
        }
    }
    skip("KAFKA_BOOTSTRAP not set (start a broker with scripts/kafka up)");
    None
}

/// Whether `python3` with PyPI's confluent-kafka (librdkafka) is there;
/// reports the skip when it is not.
pub fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("python3 with confluent_kafka is not available");
    }
    ok
}

/// A name (topic, group, file) that no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A service running as a child process, its stdout and stderr going to a
/// file; killed when dropped.
pub struct Process {
    /// The name used in failure messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` (stdin closed, output to a fresh file).
    pub fn start(mut cmd: Command, name: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
        let out = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Waits at most `limit` for it to exit; fails the test otherwise.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {limit:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then its exit status (at most 40 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(40))
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
