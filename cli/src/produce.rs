//! `produce`: one record per input line.
//!
//! Kept self-contained (input → batches → `PartitionClient::produce_with`)
//! so it can later move onto the library's producer pipeline without
//! touching the rest of the CLI.

use std::{
    collections::HashMap,
    io::BufRead,
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use rskafka::{
    client::{
        partition::{Acks, Compression, PartitionClient},
        Client,
    },
    record::Record,
};
use tokio::sync::mpsc;

use crate::{bounded, connect, partitioner, CliError, CliResult, CompressionArg, GlobalArgs};

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
    /// How long to gather lines into one batch after the first one arrives.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Read lines from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
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

/// Bounds on one batch: a flush happens when either is reached, or when the
/// linger time since the batch's first line has passed.
const MAX_BATCH_RECORDS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 512 * 1024;

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

/// Routes records to partitions and sends batches.
struct Sender {
    client: Client,
    topic: String,
    partitions: Vec<i32>,
    fixed_partition: Option<i32>,
    clients: HashMap<i32, PartitionClient>,
    compression: Compression,
    acks: Acks,
    timeout: Duration,
    /// Rotates the partition that null-keyed records stick to, per batch.
    sticky: usize,
}

impl Sender {
    fn partition_for(&self, key: Option<&Bytes>) -> i32 {
        if let Some(p) = self.fixed_partition {
            return p;
        }
        let n = self.partitions.len();
        let idx = match key {
            // The partition list is sorted and dense (0..n) for Kafka topics,
            // so the hash index is the partition number.
            Some(k) => usize::try_from(partitioner::partition_for_key(
                k,
                i32::try_from(n).unwrap_or(i32::MAX),
            ))
            .unwrap_or(0),
            None => self.sticky % n.max(1),
        };
        self.partitions.get(idx).copied().unwrap_or(0)
    }

    async fn flush(&mut self, batch: Vec<Record>) -> CliResult {
        if batch.is_empty() {
            return Ok(());
        }
        let mut by_partition: HashMap<i32, Vec<Record>> = HashMap::new();
        for r in batch {
            by_partition
                .entry(self.partition_for(r.key.as_ref()))
                .or_default()
                .push(r);
        }
        self.sticky = self.sticky.wrapping_add(1);
        let mut tasks = Vec::new();
        for (p, records) in by_partition {
            let pc = match self.clients.get(&p) {
                Some(pc) => pc.clone(),
                None => {
                    let pc = bounded(self.timeout, "partition lookup", async {
                        Ok(self.client.partition_client(&self.topic, p).await?)
                    })
                    .await?;
                    self.clients.insert(p, pc.clone());
                    pc
                }
            };
            let (compression, acks) = (self.compression, self.acks);
            tasks.push(async move { pc.produce_with(records, compression, acks).await });
        }
        let results = futures::future::join_all(tasks).await;
        for r in results {
            r?;
        }
        Ok(())
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
    let mut sender = Sender {
        client,
        topic: args.topic.clone(),
        partitions,
        fixed_partition: args.partition,
        clients: HashMap::new(),
        compression: args.compression.into(),
        acks: args.acks.into(),
        timeout: g.timeout(),
        sticky: 0,
    };
    let linger = Duration::from_millis(args.linger_ms);
    let mut lines = spawn_reader(args.file);
    let mut batch: Vec<Record> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut batch_deadline: Option<Instant> = None;
    loop {
        let next = match batch_deadline {
            // Nothing buffered: wait for input as long as it takes.
            None => lines.recv().await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), lines.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    sender.flush(std::mem::take(&mut batch)).await?;
                    batch_bytes = 0;
                    batch_deadline = None;
                    continue;
                }
            },
        };
        let Some(line) = next else { break };
        let (key, value) = split_line(line?, delimiter.as_deref());
        let record = Record {
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: time::OffsetDateTime::now_utc(),
        };
        let size = record.approximate_size();
        // Flush first if this record would push the batch past the bound,
        // so batches stay below the broker's default 1 MiB message limit.
        if !batch.is_empty()
            && (batch.len() >= MAX_BATCH_RECORDS || batch_bytes + size > MAX_BATCH_BYTES)
        {
            sender.flush(std::mem::take(&mut batch)).await?;
            batch_bytes = 0;
            batch_deadline = None;
        }
        batch_bytes += size;
        batch.push(record);
        batch_deadline.get_or_insert_with(|| Instant::now() + linger);
    }
    sender.flush(batch).await
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
