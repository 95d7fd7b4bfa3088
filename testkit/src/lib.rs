//! What the tests of the library, the CLI and the services under `apps/`
//! share: the broker under test (a real one, or the fake cluster), skips that show in the run's output, names
//! no other run uses, and a service run as a child process with its output
//! in a file, stopped with signals.

use std::{
    fmt::Display,
    fs::File,
    io::Write,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
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

/// The variables naming a real broker under test (`KAFKA_BROKERS` is the
/// CLI's name).
const BOOTSTRAP_VARS: [&str; 2] = ["KAFKA_BOOTSTRAP", "KAFKA_BROKERS"];

/// The real broker from `KAFKA_BOOTSTRAP` (or `KAFKA_BROKERS`), if set.
fn configured_bootstrap() -> Option<String> {
    BOOTSTRAP_VARS.iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// The broker under test: the real one from `KAFKA_BOOTSTRAP` (or its
/// alias `KAFKA_BROKERS`), else a fake cluster (rskafka-fake, one broker)
/// this process starts once, on a thread and runtime of its own, so that
/// every test's runtime and child processes can use it. `None` (after
/// reporting the skip) only if neither is available.
pub fn bootstrap() -> Option<String> {
    if let Some(real) = configured_bootstrap() {
        return Some(real);
    }
    match fake_cluster() {
        Ok(bootstrap) => Some(bootstrap),
        Err(e) => {
            skip(format!(
                "KAFKA_BOOTSTRAP not set and the fake cluster did not start: {e}"
            ));
            None
        }
    }
}

/// Whether the tests run against a real broker (`KAFKA_BOOTSTRAP` or
/// `KAFKA_BROKERS` is set) rather than the fake cluster.
pub fn real_broker() -> bool {
    configured_bootstrap().is_some()
}

/// The real broker, for tests of what the fake cluster does not serve
/// (`needs`, e.g. "ACLs"); `None` after reporting the skip
/// `needs a real broker: <needs>` when only the fake cluster is there.
pub fn real_bootstrap(needs: &str) -> Option<String> {
    let real = configured_bootstrap();
    if real.is_none() {
        skip(format!("needs a real broker: {needs}"));
    }
    real
}

/// The process-wide fake cluster's bootstrap, started on first use.
fn fake_cluster() -> Result<String, String> {
    static FAKE: OnceLock<Result<rskafka_fake::BackgroundCluster, String>> = OnceLock::new();
    let cluster = FAKE.get_or_init(|| {
        let cluster = rskafka_fake::FakeCluster::builder()
            .start_background()
            .map_err(|e| e.to_string())?;
        // Straight to stderr, once: libtest would keep a test's output.
        let _ = writeln!(
            std::io::stderr().lock(),
            "testkit: KAFKA_BOOTSTRAP not set: tests run against an in-process fake cluster at {}",
            cluster.bootstrap()
        );
        Ok(cluster)
    });
    cluster
        .as_ref()
        .map(|c| c.bootstrap())
        .map_err(Clone::clone)
}

/// The Kafka jars (`scripts/kafka classpath`: the broker's libraries, the
/// Java client among them) as a classpath, for tests that run Java
/// clients; `None` when the script cannot give them (no Kafka resolved).
pub fn kafka_jars() -> Option<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka");
    Command::new(script)
        .arg("classpath")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| c.contains("kafka-clients"))
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
