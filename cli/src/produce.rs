//! `produce`: one record per input line, all of them through one
//! [`Producer`] (batched per partition, idempotent by default).

use std::{collections::VecDeque, io::BufRead, path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::FutureExt;
use rskafka::{
    client::producer::{Acks, Compression, DeliveryFuture, ProducerConfig},
    record::Record,
};
use tokio::sync::mpsc;

use crate::{connect, CliError, CliResult, CompressionArg, GlobalArgs};

/// Arguments of `produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Write every record to this partition instead of partitioning by key.
    #[arg(long)]
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
            Err(CliError::msg("--idempotent on requires --acks all"))
        }
        Some(OnOff::On) => Ok(Some(true)),
        Some(OnOff::Off) => Ok(Some(false)),
        None => Ok(None),
    }
}

/// Runs `produce`.
pub async fn run(g: &GlobalArgs, args: ProduceArgs) -> CliResult {
    let delimiter = match args.key_delimiter.as_deref() {
        Some("") => return Err(CliError::msg("--key-delimiter must not be empty")),
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
    let mut config = ProducerConfig::default()
        .acks(acks)
        .compression(args.compression.into())
        .linger(linger)
        .request_timeout(g.timeout())
        .delivery_timeout(g.timeout() + linger);
    if let Some(on) = idempotent {
        config = config.idempotence(on);
    }
    let producer = client.producer(config)?;
    let mut lines = spawn_reader(args.file);
    // Deliveries in input order; settled as they complete, so memory stays
    // flat on long inputs and the first failure ends the run early.
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    while let Some(line) = lines.recv().await {
        let (key, value) = split_line(line?, delimiter.as_deref());
        let record = Record {
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: time::OffsetDateTime::now_utc(),
        };
        // Waits only while the producer's buffer is full (bounded by the
        // delivery timeout) or the topic's metadata loads.
        pending.push_back(
            producer
                .send_to(&args.topic, args.partition, record)
                .await?,
        );
        while let Some(front) = pending.front_mut() {
            match front.now_or_never() {
                Some(result) => {
                    result?;
                    pending.pop_front();
                }
                None => break,
            }
        }
    }
    for delivery in pending {
        delivery.await?;
    }
    producer.close().await;
    Ok(())
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
