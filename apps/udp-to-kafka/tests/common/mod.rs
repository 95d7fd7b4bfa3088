//! Helpers of the service's tests: the broker from `KAFKA_BOOTSTRAP`, unique
//! topics, the service as a child process, and reading a topic back.
#![allow(dead_code)] // each test crate uses a different subset

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use rskafka::{
    client::{Client, ClientBuilder},
    record::Record,
};

pub use testkit::{bootstrap, unique as unique_topic};

/// A client of the broker.
pub async fn client(broker: &str) -> Client {
    ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .expect("client")
}

/// Creates `name` with `partitions` partitions.
pub async fn create_topic(client: &Client, name: &str, partitions: i32) {
    client
        .controller_client()
        .expect("controller")
        .create_topic(name, partitions, 1, 30_000)
        .await
        .expect("create topic");
}

/// A client, a new topic of `partitions` partitions named after `prefix`,
/// and the service forwarding to it with `env`.
pub async fn setup(
    broker: &str,
    prefix: &str,
    partitions: i32,
    env: &[(&str, &str)],
) -> (Client, String, Service) {
    let client = client(broker).await;
    let topic = unique_topic(prefix);
    create_topic(&client, &topic, partitions).await;
    let svc = Service::start(broker, &topic, env);
    (client, topic, svc)
}

/// Every record of every partition of `topic` (partitions `0..partitions`),
/// with its partition.
pub async fn read_all(client: &Client, topic: &str, partitions: i32) -> Vec<(i32, Record)> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let pc = client.partition_client(topic, p).await.expect("partition");
        let mut offset = 0;
        loop {
            let (records, high) = pc
                .fetch_records(offset, 1..4_000_000, 500)
                .await
                .expect("fetch");
            for r in records {
                offset = r.offset + 1;
                out.push((p, r.record));
            }
            if offset >= high {
                break;
            }
        }
    }
    out
}

/// A header's value as text.
pub fn header(record: &Record, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The service's binary with `env` (on a clean environment but PATH),
/// run to completion without a signal; returns its status and stderr.
pub fn run_to_exit(env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_udp-to-kafka"));
    cmd.env_clear().stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The service running as a child process.
pub struct Service {
    child: Child,
    /// Its stdout lines so far.
    lines: Arc<Mutex<Vec<String>>>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

/// `key=value` fields of a log line.
pub fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

impl Service {
    /// Starts the service on a free port of 127.0.0.1 for `topic`, with
    /// `env` on top, and waits until it listens.
    pub fn start(broker: &str, topic: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_udp-to-kafka"));
        cmd.env("KAFKA_BROKERS", broker)
            .env("KAFKA_TOPIC", topic)
            .env("LISTEN_IP", "127.0.0.1")
            .env("LISTEN_PORT", "0")
            .env("STATS_INTERVAL", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the service");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[service] {line}");
                if line.contains(" listening ") {
                    let _ = tx.send(fields(&line)["listen"].clone());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("the service did not start listening");
            }
        };
        Self { child, lines, addr }
    }

    /// Sends `signal`, waits (bounded) for the exit; returns the exit
    /// status and the fields of the final stats line.
    pub fn stop_with(mut self, signal: i32) -> (ExitStatus, HashMap<String, String>) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the service did not exit after the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread sees EOF right after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().unwrap();
        let last = lines
            .iter()
            .rev()
            .find(|l| l.contains(" final "))
            .unwrap_or_else(|| panic!("no final stats line in {lines:#?}"));
        (status, fields(last))
    }

    /// SIGTERM, then as [`stop_with`](Self::stop_with).
    pub fn stop(self) -> (ExitStatus, HashMap<String, String>) {
        self.stop_with(libc::SIGTERM)
    }

    /// Waits (up to a minute) until a stats line reports at least `n`
    /// datagrams received, so that none is still in the socket buffer when
    /// the signal comes.
    pub fn wait_received(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let got = self
                .stats_lines()
                .last()
                .map_or(0, |l| count(&fields(l), "received"));
            if got >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the service did not report {n} datagrams received");
    }

    /// Stats lines logged so far.
    pub fn stats_lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" stats "))
            .cloned()
            .collect()
    }
}

/// `n` sender sockets on 127.0.0.1.
pub fn peers(n: usize) -> Vec<UdpSocket> {
    (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a peer"))
        .collect()
}

/// A counter of the final line as a number.
pub fn count(f: &HashMap<String, String>, key: &str) -> u64 {
    f.get(key)
        .unwrap_or_else(|| panic!("no {key} in {f:?}"))
        .parse()
        .unwrap()
}
