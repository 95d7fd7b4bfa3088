//! `produce`: one record per input line, all of them through one
//! [`Producer`] (batched per partition, idempotent by default).
//!
//! A run that stops early (a failed record, unreadable input, SIGINT or
//! SIGTERM) stops reading, lets what was sent settle, and says which lines
//! were acknowledged, so that the input can be resumed without gaps.

use std::{
    collections::{BTreeSet, VecDeque},
    io::BufRead,
    path::PathBuf,
    time::Duration,
};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::FutureExt;
use rskafka::{
    client::producer::{Acks, Compression, DeliveryFuture, ProducerConfig},
    record::Record,
};
use tokio::sync::mpsc;

use crate::{
    connect,
    signals::{Signal, Signals},
    CliError, CliResult, CompressionArg, GlobalArgs,
};

/// Arguments of `produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Write every record to this partition instead of partitioning by key.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Split each line at the first occurrence of this string: the text
    /// before it is the key, the rest the value; a line without it has a
    /// null key.
    #[arg(long, value_name = "D")]
    key_delimiter: Option<String>,
    /// A header `KEY=VALUE` added to every record, in the order given
    /// (repeatable; `KEY` without `=` gives a null value).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
    /// Compression codec of the produced batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Acknowledgements to wait for: 0 (none), 1 (leader), all (in-sync replicas).
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// How long a partition's batch waits for more lines before it is sent.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Idempotent delivery: retries never write a record twice and keep the
    /// order per partition [default: on, but off with --acks 0 or 1, which
    /// it cannot be combined with].
    #[arg(long, value_enum, value_name = "on|off")]
    idempotent: Option<OnOff>,
    /// Read lines from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

/// `--idempotent` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `--acks` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum AcksArg {
    /// No acknowledgement: the broker sends no response.
    #[value(name = "0")]
    None,
    /// The leader has written the records.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has the records.
    #[value(name = "all", alias = "-1")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Parses `--header` values.
fn parse_headers(raw: &[String]) -> Vec<(String, Option<Bytes>)> {
    raw.iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(Bytes::copy_from_slice(v.as_bytes()))),
            None => (h.clone(), None),
        })
        .collect()
}

/// Splits a line into key and value at the first `delimiter`.
fn split_line(line: Vec<u8>, delimiter: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let line = Bytes::from(line);
    let Some(d) = delimiter else {
        return (None, line);
    };
    match line.windows(d.len()).position(|w| w == d) {
        Some(pos) => {
            let key = line.slice(..pos);
            let value = line.slice(pos + d.len()..);
            (Some(key), value)
        }
        None => (None, line),
    }
}

/// Reads lines on a blocking thread (stdin and files have no portable async
/// form) and hands them over; a channel bound gives backpressure.
fn spawn_reader(file: Option<PathBuf>) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4096);
    std::thread::spawn(move || {
        let input: Box<dyn BufRead> = match file {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => Box::new(std::io::BufReader::new(f)),
                Err(e) => {
                    let e = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            },
            None => Box::new(std::io::stdin().lock()),
        };
        read_lines(input, &tx);
    });
    rx
}

fn read_lines(mut input: Box<dyn BufRead>, tx: &mpsc::Sender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if tx.blocking_send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// Resolves `--idempotent` against `--acks`: explicit "on" needs acks=all;
/// unset leaves the library's default (on with acks=all, off otherwise).
fn idempotence(flag: Option<OnOff>, acks: Acks) -> CliResult<Option<bool>> {
    match flag {
        Some(OnOff::On) if acks != Acks::All => {
            Err(CliError::usage("--idempotent on requires --acks all"))
        }
        Some(OnOff::On) => Ok(Some(true)),
        Some(OnOff::Off) => Ok(Some(false)),
        None => Ok(None),
    }
}

/// Which input lines were acknowledged. Deliveries complete out of order
/// across partitions; where a run can safely resume is after the longest
/// run of acknowledged lines from line 1.
#[derive(Debug, Default)]
struct Progress {
    /// Lines read (handed to the producer, or failed on the way).
    read: u64,
    /// Lines 1 to `prefix` are all acknowledged.
    prefix: u64,
    /// Acknowledged lines past `prefix + 1`.
    ahead: BTreeSet<u64>,
}

impl Progress {
    /// Notes line `n` (1-based) as acknowledged.
    fn acknowledged(&mut self, n: u64) {
        if n != self.prefix + 1 {
            self.ahead.insert(n);
            return;
        }
        self.prefix = n;
        while self.ahead.remove(&(self.prefix + 1)) {
            self.prefix += 1;
        }
    }

    /// Lines acknowledged in all.
    fn total(&self) -> u64 {
        self.prefix + self.ahead.len() as u64
    }
}

/// E.g. `1240 of 5000 lines read acknowledged (lines 1-1234 and 6 after
/// line 1235); lines from 1235 on were not all, or not certainly, written`.
impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let next = self.prefix + 1;
        let mut which = Vec::new();
        if self.prefix > 0 {
            which.push(format!("lines 1-{}", self.prefix));
        }
        if !self.ahead.is_empty() {
            which.push(format!("{} after line {next}", self.ahead.len()));
        }
        write!(
            f,
            "{} of {} lines read acknowledged",
            self.total(),
            self.read
        )?;
        if !which.is_empty() {
            write!(f, " ({})", which.join(" and "))?;
        }
        let all = if self.ahead.is_empty() { "" } else { " all" };
        write!(
            f,
            "; lines from {next} on were not{all}, or not certainly, written"
        )
    }
}

/// Why a run stopped before its input ended.
enum Stop {
    /// A record or the input failed.
    Failed(CliError),
    /// A signal.
    Signal(Signal),
}

/// Runs `produce`.
pub async fn run(g: &GlobalArgs, args: ProduceArgs) -> CliResult {
    let delimiter = match args.key_delimiter.as_deref() {
        Some("") => return Err(CliError::usage("--key-delimiter must not be empty")),
        Some(d) => Some(d.as_bytes().to_vec()),
        None => None,
    };
    let headers = parse_headers(&args.headers);
    let acks: Acks = args.acks.into();
    let idempotent = idempotence(args.idempotent, acks)?;
    let client = connect(g).await?;
    let partitions = crate::topic_partitions(&client, g, &args.topic).await?;
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            return Err(CliError::msg(format!(
                "topic {:?} has no partition {p} (UNKNOWN_TOPIC_OR_PARTITION)",
                args.topic
            )));
        }
    }
    let linger = Duration::from_millis(args.linger_ms);
    // Each request is bounded by --timeout-ms, and each record's delivery,
    // retries included, by that plus its batch's linger.
    let delivery_timeout = g.timeout() + linger;
    let mut config = ProducerConfig::default()
        .acks(acks)
        .compression(args.compression.into())
        .linger(linger)
        .request_timeout(g.timeout())
        .delivery_timeout(delivery_timeout);
    if let Some(on) = idempotent {
        config = config.idempotence(on);
    }
    let producer = client.producer(config)?;
    let mut signals = Signals::new()?;
    let mut lines = spawn_reader(args.file);
    let mut progress = Progress::default();
    // Deliveries in input order, settled from the front as they complete,
    // so memory stays flat and a failure soon ends reading.
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut stop = None;
    // Lines come in chunks: one wait (and one look at the signals) for
    // many lines keeps the per-line cost down.
    let mut chunk = Vec::with_capacity(1024);
    'read: while stop.is_none() {
        chunk.clear();
        let got = tokio::select! {
            biased;
            s = signals.recv() => {
                stop = Some(Stop::Signal(s));
                break;
            }
            // While input is slow, a failure still ends the run at once.
            delivered = async {
                match pending.front_mut() {
                    Some((_, delivery)) => delivery.await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((n, _)) = pending.pop_front() {
                    match delivered {
                        Ok(_) => progress.acknowledged(n),
                        Err(e) => stop = Some(Stop::Failed(e.into())),
                    }
                }
                continue;
            }
            got = lines.recv_many(&mut chunk, 1024) => got,
        };
        if got == 0 {
            break; // end of input
        }
        for line in chunk.drain(..) {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    stop = Some(Stop::Failed(e.into()));
                    break 'read;
                }
            };
            progress.read += 1;
            let (key, value) = split_line(line, delimiter.as_deref());
            let record = Record {
                key,
                value: Some(value),
                headers: headers.clone(),
                timestamp: time::OffsetDateTime::now_utc(),
            };
            // Waits only while the producer's buffer is full (bounded by
            // the delivery timeout) or the topic's metadata loads; a signal
            // ends the wait.
            let send = producer.send_to(&args.topic, args.partition, record);
            tokio::pin!(send);
            let sent = match send.as_mut().now_or_never() {
                Some(sent) => sent,
                None => tokio::select! {
                    biased;
                    s = signals.recv() => {
                        stop = Some(Stop::Signal(s));
                        break 'read;
                    }
                    sent = send => sent,
                },
            };
            match sent {
                Ok(delivery) => pending.push_back((progress.read, delivery)),
                Err(e) => {
                    stop = Some(Stop::Failed(e.into()));
                    break 'read;
                }
            }
        }
        while let Some((n, front)) = pending.front_mut() {
            let n = *n;
            match front.now_or_never() {
                None => break,
                Some(delivered) => {
                    pending.pop_front();
                    match delivered {
                        Ok(_) => progress.acknowledged(n),
                        Err(e) => {
                            stop = Some(Stop::Failed(e.into()));
                            break;
                        }
                    }
                }
            }
        }
    }
    // The reader thread ends at its next line.
    drop(lines);
    // Sends what is buffered at once, linger or not, and waits (bounded by
    // the delivery timeout) for every delivery to settle; another signal
    // ends the wait.
    let closed = tokio::select! {
        biased;
        s = signals.recv() => Err(s),
        _ = tokio::time::timeout(delivery_timeout + Duration::from_secs(1), producer.close()) => Ok(()),
    };
    if let (Err(s), None) = (closed, &stop) {
        stop = Some(Stop::Signal(s));
    }
    // Settled in any order now: lines after a failed one may be written.
    let mut unsettled = 0;
    for (n, delivery) in pending {
        match delivery.now_or_never() {
            Some(Ok(_)) => progress.acknowledged(n),
            Some(Err(e)) => {
                if stop.is_none() {
                    stop = Some(Stop::Failed(e.into()));
                }
            }
            None => unsettled += 1,
        }
    }
    if stop.is_none() && unsettled > 0 {
        stop = Some(Stop::Failed(CliError::msg(format!(
            "{unsettled} deliveries not settled within {} ms",
            delivery_timeout.as_millis()
        ))));
    }
    match stop {
        None => Ok(()),
        Some(Stop::Failed(e)) => Err(CliError::msg(format!(
            "{}: {progress}",
            e.to_string().trim_end_matches('.')
        ))),
        Some(Stop::Signal(s)) => Err(CliError::Interrupted(
            s,
            format!("interrupted by {}: {progress}", s.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_text_before_first_delimiter() {
        let (k, v) = split_line(b"a::b::c".to_vec(), Some(b"::"));
        assert_eq!(k.as_deref(), Some(&b"a"[..]));
        assert_eq!(&v[..], b"b::c");
        let (k, v) = split_line(b"no delimiter".to_vec(), Some(b"::"));
        assert_eq!(k, None);
        assert_eq!(&v[..], b"no delimiter");
        let (k, v) = split_line(b":v".to_vec(), Some(b":"));
        assert_eq!(k.as_deref(), Some(&b""[..]), "empty key, not null");
        assert_eq!(&v[..], b"v");
        let (k, _) = split_line(b"k:v".to_vec(), None);
        assert_eq!(k, None);
    }

    #[test]
    fn idempotence_follows_acks_unless_explicit() {
        assert_eq!(idempotence(None, Acks::Leader).ok(), Some(None));
        assert_eq!(
            idempotence(Some(OnOff::On), Acks::All).ok(),
            Some(Some(true))
        );
        assert_eq!(
            idempotence(Some(OnOff::Off), Acks::All).ok(),
            Some(Some(false))
        );
        assert!(idempotence(Some(OnOff::On), Acks::None).is_err());
    }

    #[test]
    fn headers_keep_order_and_null_values() {
        let h = parse_headers(&["b=1".into(), "a".into(), "b=x=y".into()]);
        assert_eq!(
            h,
            vec![
                ("b".to_owned(), Some(Bytes::from_static(b"1"))),
                ("a".to_owned(), None),
                ("b".to_owned(), Some(Bytes::from_static(b"x=y"))),
            ]
        );
    }

    #[test]
    fn progress_tracks_the_acknowledged_prefix_of_out_of_order_deliveries() {
        let mut p = Progress {
            read: 6,
            ..Progress::default()
        };
        assert_eq!(
            p.to_string(),
            "0 of 6 lines read acknowledged; lines from 1 on were not, or not certainly, written"
        );
        for n in [3, 5] {
            p.acknowledged(n);
        }
        assert_eq!((p.prefix, p.total()), (0, 2));
        assert_eq!(
            p.to_string(),
            "2 of 6 lines read acknowledged (2 after line 1); \
             lines from 1 on were not all, or not certainly, written"
        );
        p.acknowledged(1);
        p.acknowledged(2);
        assert_eq!((p.prefix, p.total()), (3, 4));
        assert_eq!(
            p.to_string(),
            "4 of 6 lines read acknowledged (lines 1-3 and 1 after line 4); \
             lines from 4 on were not all, or not certainly, written"
        );
        p.acknowledged(4);
        assert_eq!((p.prefix, p.total()), (5, 5));
        assert!(p.ahead.is_empty());
        assert_eq!(
            p.to_string(),
            "5 of 6 lines read acknowledged (lines 1-5); \
             lines from 6 on were not, or not certainly, written"
        );
    }

    #[test]
    fn lines_keep_empty_ones_but_not_a_trailing_newline() {
        let (tx, mut rx) = mpsc::channel(16);
        let input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(b"a\n\nb\n".to_vec()));
        read_lines(input, &tx);
        let mut got = Vec::new();
        while let Ok(Ok(l)) = rx.try_recv() {
            got.push(l);
        }
        assert_eq!(got, vec![b"a".to_vec(), Vec::new(), b"b".to_vec()]);
    }
}
