//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

pub mod cluster;

use std::{path::PathBuf, process::Command};

#[allow(unused_imports)] // as dead_code above
pub use testkit::{bootstrap, python_available, unique as unique_topic};

/// The first port from `from` (in steps of 10) such that it and the four
/// after it are free on 127.0.0.1: room for a [`PrivateBroker`].
///
/// The range stays reserved until the process ends: its last port (unused
/// by a broker without security listeners) is kept bound. Otherwise two
/// tests (or two test processes) starting at once could both find the range
/// free before either broker binds it, and the second `scripts/kafka up
/// --fresh` would restart the first one's running broker with empty data.
pub fn free_port_base(from: u16) -> Option<u16> {
    static RESERVED: std::sync::Mutex<Vec<std::net::TcpListener>> =
        std::sync::Mutex::new(Vec::new());
    let mut reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
    (0..50u16)
        .filter_map(|i| from.checked_add(i * 10))
        .find(|&base| {
            let free = (base..base.saturating_add(4))
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
            match std::net::TcpListener::bind(("127.0.0.1", base.saturating_add(4))) {
                Ok(hold) if free => {
                    reserved.push(hold);
                    true
                }
                _ => false,
            }
        })
}

/// A broker of a test's own, started through `scripts/kafka` on `port`
/// (controller on `port + 1`, data in `target/kafka-private-<port>`), for
/// tests that kill, pause or restart it. Stopped on drop.
pub struct PrivateBroker {
    port: u16,
    dir: PathBuf,
    /// `KAFKA_EXTRA_PROPERTIES` for every start, restart included.
    extra_properties: String,
}

impl PrivateBroker {
    /// Starts a broker with empty data and waits until it serves requests.
    pub fn start(port: u16) -> Result<Self, String> {
        Self::start_with_properties(port, "")
    }

    /// Like [`PrivateBroker::start`], with extra `server.properties` lines
    /// (e.g. an `advertised.listeners` that points at a proxy).
    pub fn start_with_properties(port: u16, extra_properties: &str) -> Result<Self, String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("kafka-private-{port}"));
        let broker = Self {
            port,
            dir,
            extra_properties: extra_properties.to_owned(),
        };
        broker.script(&["up", "--fresh"])?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, args: &[&str]) -> Result<(), String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka");
        let mut cmd = Command::new(&script);
        cmd.env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .env("KAFKA_DIR", &self.dir)
            .env("KAFKA_EXTRA_PROPERTIES", &self.extra_properties)
            // Never the shared broker's security setup or ports.
            .env("KAFKA_SECURITY", "0")
            .env("KAFKA_SASL_PLAINTEXT_PORT", (self.port + 2).to_string())
            .env("KAFKA_SSL_PORT", (self.port + 3).to_string())
            .env("KAFKA_SASL_SSL_PORT", (self.port + 4).to_string());
        cluster::run_script(cmd, args)
    }

    /// SIGKILLs the broker (no clean shutdown); `restart` brings it back.
    pub fn kill(&self) -> Result<(), String> {
        let pid = std::fs::read_to_string(self.dir.join("kafka.pid"))
            .map_err(|e| format!("no pid file: {e}"))?;
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -KILL {} failed", pid.trim()))
        }
    }

    /// SIGSTOPs the broker: connections stay open but nothing is answered.
    pub fn pause(&self) -> Result<(), String> {
        self.script(&["pause"])
    }

    /// SIGCONTs a paused broker.
    pub fn resume(&self) -> Result<(), String> {
        self.script(&["resume"])
    }

    /// Stops (if running) and starts the broker again, keeping its data.
    pub fn restart(&self) -> Result<(), String> {
        self.script(&["restart"])
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Err(e) = self.script(&["down", "--clean"]) {
            eprintln!("{e}");
        }
    }
}
