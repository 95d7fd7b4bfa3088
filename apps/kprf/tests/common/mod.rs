//! Helpers of kprf's tests: the broker, topics, a kprf process, HTTP.
#![allow(dead_code)] // each test crate uses a different subset

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rskafka::{
    client::{partition::OffsetAt, ClientBuilder},
    record::Record,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use testkit::{bootstrap, free_port, unique};

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let client = ClientBuilder::new(vec![bootstrap.to_string()])
        .build()
        .await
        .unwrap();
    client
        .controller_client()
        .unwrap()
        .create_topic(topic, partitions, 1, 10_000)
        .await
        .unwrap();
}

/// Every record of `topic`'s `partition`, up to its end now.
pub async fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<Record> {
    let client = ClientBuilder::new(vec![bootstrap.to_string()])
        .build()
        .await
        .unwrap();
    let pc = client.partition_client(topic, partition).await.unwrap();
    let end = pc.get_offset(OffsetAt::Latest).await.unwrap();
    let mut offset = pc.get_offset(OffsetAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    while offset < end {
        let (records, _) = pc
            .fetch_records(offset, 1..10_000_000, 1_000)
            .await
            .unwrap();
        for r in records {
            offset = r.offset + 1;
            out.push(r.record);
        }
    }
    out
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Resp {
    pub code: u16,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection.
pub async fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<Resp> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Resp { code, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running kprf.
pub struct Kprf {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// A scratch directory of the test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Kprf {
    /// Starts kprf with `yaml` (the ports and output_file are added) in
    /// `dir` and waits for /readyz.
    pub async fn start(dir: &std::path::Path, yaml: &str) -> Kprf {
        Self::start_with(dir, yaml, &[], free_port(), free_port()).await
    }

    /// As `start`, with environment variables and given ports.
    pub async fn start_with(
        dir: &std::path::Path,
        yaml: &str,
        env: &[(&str, &str)],
        port: u16,
        metrics_port: u16,
    ) -> Kprf {
        let log = dir.join(format!("kprf-{port}.log"));
        let cfg = dir.join(format!("kprf-{port}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "{yaml}\nhttp:\n  host: 127.0.0.1\n  port: {port}\n  metrics_port: {metrics_port}\noutput_file: {}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kprf"))
            .arg(format!("--config={}", cfg.display()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut k = Kprf {
            child,
            port,
            metrics_port,
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http(metrics_port, "GET", "/readyz", "").await {
                if r.code == 200 {
                    break;
                }
            }
            if let Ok(Some(st)) = k.child.try_wait() {
                panic!("kprf exited early ({st}): {}", k.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "kprf not ready: {}",
                k.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        k
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` to /push.
    pub async fn push(&self, body: &str) -> Resp {
        http(self.port, "POST", "/push", body).await.unwrap()
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        http(self.metrics_port, "GET", "/metrics", "")
            .await
            .unwrap()
            .body
    }

    /// Sends `sig` (e.g. "TERM", "KILL").
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to end, at most `secs`.
    pub async fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "kprf did not exit: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Kprf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` (with its labels as written) in `text`.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
