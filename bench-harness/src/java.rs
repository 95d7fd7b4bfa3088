//! The Java client, through Kafka's own perf tools, run as a JVM child.

use std::process::Command;

use crate::{Job, Measured, Op};

/// The classpath of the broker and kafka-tools jars, from `scripts/kafka`.
pub fn classpath() -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka");
    let out = Command::new(script)
        .arg("classpath")
        .output()
        .map_err(|e| format!("{script} classpath: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} classpath failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let cp = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if cp.is_empty() {
        return Err("empty classpath".into());
    }
    Ok(cp)
}

/// The JVM command for one run; `group` names the consumer group.
pub fn command(cp: &str, op: Op, job: &Job, group: &str) -> Command {
    let mut c = Command::new("java");
    c.arg("-Xmx1g").arg("-cp").arg(cp);
    match op {
        Op::Produce | Op::Latency => {
            let throughput = if job.rate == 0 {
                "-1".to_owned()
            } else {
                job.rate.to_string()
            };
            c.args([
                "org.apache.kafka.tools.ProducerPerformance",
                "--bootstrap-server",
                &job.bootstrap,
                "--topic",
                &job.topic,
                "--num-records",
                &job.count.to_string(),
                "--record-size",
                &job.size.to_string(),
                "--throughput",
                &throughput,
                "--producer-props",
                "acks=all",
                "linger.ms=5",
                &format!("compression.type={}", job.compression),
            ]);
        }
        Op::Consume => {
            c.args([
                "org.apache.kafka.tools.ConsumerPerformance",
                "--bootstrap-server",
                &job.bootstrap,
                "--topic",
                &job.topic,
                "--num-records",
                &job.count.to_string(),
                "--group",
                group,
                "--timeout",
                "60000",
            ]);
        }
        Op::ProduceTxn => unreachable!("the Java client runs no transactional workload"),
    }
    c
}

/// Reads the tool's summary. ProducerPerformance's last line is
/// `N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max
/// latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th.`;
/// ConsumerPerformance prints a CSV line whose 5th field is the record count
/// and 8th the fetch time in ms (excluding the group join).
pub fn parse(op: Op, job: &Job, stdout: &str) -> Result<Measured, String> {
    match op {
        Op::Produce | Op::Latency => {
            let line = stdout
                .lines()
                .rev()
                .find(|l| l.contains("records sent") && l.contains("50th"))
                .ok_or_else(|| format!("no summary in ProducerPerformance output: {stdout}"))?;
            let num_before = |marker: &str| -> Option<f64> {
                let idx = line.find(marker)?;
                line[..idx].split_whitespace().last()?.parse().ok()
            };
            let records = num_before(" records sent").ok_or("records sent")? as u64;
            let rps = line
                .split(',')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or("records/sec")?;
            let p50 = num_before(" ms 50th").ok_or("50th")?;
            let p99 = num_before(" ms 99th").ok_or("99th")?;
            let lat = op == Op::Latency;
            Ok(Measured {
                records,
                bytes: records * job.size as u64,
                secs: records as f64 / rps.max(1e-9),
                p50_us: lat.then_some(p50 * 1e3),
                p99_us: lat.then_some(p99 * 1e3),
                commits: 0,
            })
        }
        Op::Consume => {
            let line = stdout
                .lines()
                .rev()
                .find(|l| l.split(',').count() >= 10)
                .ok_or_else(|| format!("no summary in ConsumerPerformance output: {stdout}"))?;
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
            let records = num(4).ok_or("nMsg")? as u64;
            let fetch_ms = num(7).ok_or("fetch.time.ms")?;
            Ok(Measured {
                records,
                bytes: records * job.size as u64,
                secs: fetch_ms / 1e3,
                p50_us: None,
                p99_us: None,
                commits: 0,
            })
        }
        Op::ProduceTxn => Err("the Java client runs no transactional workload".into()),
    }
}
