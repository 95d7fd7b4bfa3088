//! `produce`: one record per input line, all of them through one
//! [`Producer`] (batched per partition, idempotent by default).
//!
//! A run that stops early (a failed record, unreadable input, SIGINT or
//! SIGTERM) stops reading, lets what was sent settle, and says which lines
//! were acknowledged, so that the input can be resumed without gaps. With
//! `--transactional-id` it sends them in transactions instead, and says
//! which were committed (see [`crate::transactions`]).

use std::{
    collections::{BTreeMap, VecDeque},
    io::Read,
    path::PathBuf,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
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
    transactions::{self, Transactions},
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
    /// Send an empty value (an empty line, or nothing after the key
    /// delimiter) as a null value, i.e. a tombstone (kcat's -Z).
    #[arg(short = 'Z', long)]
    null_empty: bool,
    /// Send the whole input (the file, or stdin) as one record instead of
    /// one record per line (kcat with a file argument).
    #[arg(long, conflicts_with = "key_delimiter")]
    whole_file: bool,
    /// Send the lines in transactions under this transactional id (or
    /// `-X transactional.id`; needs --acks all and idempotence):
    /// read_committed readers see a transaction's lines once it commits,
    /// all of them; a run that fails or is interrupted aborts the open one.
    /// A run with the same id fences an older one still running.
    #[arg(long, value_name = "ID")]
    transactional_id: Option<String>,
    /// With --transactional-id: commit every N lines as one transaction
    /// [default: the whole input is one].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    transaction_size: Option<u64>,
    /// With --transactional-id: how long the broker lets a transaction stay
    /// open before it aborts it (or `-X transaction.timeout.ms`; the broker
    /// caps it at its transaction.max.timeout.ms, 15 minutes by default)
    /// [default: 60000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    transaction_timeout_ms: Option<u64>,
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
fn split_line(line: Bytes, delimiter: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(d) = delimiter else {
        return (None, line);
    };
    match memchr::memmem::find(&line, d) {
        Some(pos) => {
            let key = line.slice(..pos);
            let value = line.slice(pos + d.len()..);
            (Some(key), value)
        }
        None => (None, line),
    }
}

/// Bytes of input read at a time. Lines are cut from these blocks without
/// a copy or an allocation of their own, and a block crosses the channel
/// in one step, so the cost per line is a search for its newline. Below
/// the allocator's mmap threshold (see `main`), so that blocks reuse heap
/// memory instead of faulting in fresh pages.
const BLOCK: usize = 128 * 1024;

/// Blocks waiting in the channel: the input read ahead is bounded by this
/// many blocks.
const BLOCKS_AHEAD: usize = 4;

/// Reads the input on a blocking thread (stdin and files have no portable
/// async form) and hands it over in blocks of whole lines; the channel
/// bound gives backpressure.
fn spawn_reader(file: Option<PathBuf>, whole: bool) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(BLOCKS_AHEAD);
    std::thread::spawn(move || {
        let input: Box<dyn Read> = match file {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    let e = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            },
            None => Box::new(std::io::stdin().lock()),
        };
        if whole {
            read_whole(input, &tx);
        } else {
            read_blocks(input, &tx);
        }
    });
    rx
}

/// Sends `input` as blocks that end after a newline (the last one may end
/// without one). A line longer than a block makes its block grow to hold it.
fn read_blocks(mut input: impl Read, tx: &mpsc::Sender<std::io::Result<Bytes>>) {
    let mut buf = BytesMut::new();
    // Where the search for a newline resumes: the bytes before it have none.
    let mut searched = 0;
    loop {
        let filled = buf.len();
        buf.resize(filled + BLOCK, 0);
        let n = match input.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(filled);
                continue;
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        buf.truncate(filled + n);
        if n == 0 {
            if !buf.is_empty() {
                // The last line, without a newline.
                let _ = tx.blocking_send(Ok(buf.split().freeze()));
            }
            return;
        }
        if let Some(last) = memchr::memrchr(b'\n', &buf[searched..]) {
            let block = buf.split_to(searched + last + 1).freeze();
            searched = 0;
            if tx.blocking_send(Ok(block)).is_err() {
                return;
            }
        } else {
            searched = buf.len();
        }
    }
}

/// Sends all of `input` as one block.
fn read_whole(mut input: impl Read, tx: &mpsc::Sender<std::io::Result<Bytes>>) {
    let mut all = Vec::new();
    let _ = tx.blocking_send(input.read_to_end(&mut all).map(|_| Bytes::from(all)));
}

/// The lines of a block from [`read_blocks`], without their newlines; an
/// empty line is an empty record, a trailing newline ends the last line.
fn lines_of(block: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= block.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &block[start..]).map_or(block.len(), |i| start + i);
        let line = block.slice(start..end);
        start = end + 1;
        Some(line)
    })
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
    /// Acknowledged runs of lines past `prefix + 1`, first line → last line,
    /// not touching one another.
    ahead: BTreeMap<u64, u64>,
}

impl Progress {
    /// Notes lines `first..=last` (1-based) as acknowledged.
    fn acknowledged(&mut self, first: u64, last: u64) {
        if first != self.prefix + 1 {
            self.ahead.insert(first, last);
            return;
        }
        self.prefix = last;
        while let Some(last) = self.ahead.remove(&(self.prefix + 1)) {
            self.prefix = last;
        }
    }

    /// Lines acknowledged past the prefix.
    fn ahead_count(&self) -> u64 {
        self.ahead
            .iter()
            .map(|(first, last)| last - first + 1)
            .sum()
    }

    /// Lines acknowledged in all.
    fn total(&self) -> u64 {
        self.prefix + self.ahead_count()
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
            which.push(format!("{} after line {next}", self.ahead_count()));
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

/// Lines `first..=last`, all in the batch of `delivery`.
struct Pending {
    first: u64,
    last: u64,
    delivery: DeliveryFuture,
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
    let props = g.properties()?;
    // -X transactional.id overrides the flag, as -X does.
    let transactional = props
        .get("transactional.id")
        .or(args.transactional_id.as_deref());
    match transactional {
        Some("") => return Err(CliError::usage("--transactional-id must not be empty")),
        Some(_) => transactions::check_settings(acks, idempotent, &props)?,
        None if args.transaction_size.is_some() || args.transaction_timeout_ms.is_some() => {
            return Err(CliError::usage(
                "--transaction-size and --transaction-timeout-ms require --transactional-id",
            ))
        }
        None => {}
    }
    let transactional = transactional.is_some();
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
    if let Some(id) = &args.transactional_id {
        config = config.transactional_id(id.clone());
    }
    if let Some(ms) = args.transaction_timeout_ms {
        config = config.transaction_timeout(Duration::from_millis(ms));
    }
    let config = props
        .apply_to_producer(config)
        .map_err(|e| CliError::usage(format!("-X: {e}")))?;
    let producer = client.producer(config)?;
    let mut signals = Signals::new()?;
    // A commit delivers the transaction's records, then ends it: bounded
    // as a delivery plus a request.
    let txn_limit = delivery_timeout + g.timeout();
    let mut txn = match transactional {
        true => {
            let init = tokio::time::timeout(txn_limit, producer.init_transactions());
            tokio::select! {
                biased;
                s = signals.recv() => {
                    return Err(CliError::Interrupted(s, format!("interrupted by {}", s.name())))
                }
                r = init => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(CliError::msg(format!("initializing transactions: {e}"))),
                    Err(_) => return Err(CliError::msg(format!(
                        "initializing transactions timed out after {} ms",
                        txn_limit.as_millis()
                    ))),
                },
            }
            Some(Transactions::new(args.transaction_size))
        }
        false => None,
    };
    let meter_from_stdin = args.file.is_none();
    let mut blocks = spawn_reader(args.file, args.whole_file);
    let mut progress = Progress::default();
    let mut meter = crate::meter::Meter::for_produce(meter_from_stdin);
    // Deliveries in input order, settled from the front as they complete,
    // so memory stays flat and a failure soon ends reading. Consecutive
    // lines in one batch share an entry: they are written or fail together.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut stop = None;
    'read: while stop.is_none() {
        let block = tokio::select! {
            biased;
            s = signals.recv() => {
                stop = Some(Stop::Signal(s));
                break;
            }
            // While input is slow, a failure still ends the run at once.
            delivered = async {
                match pending.front_mut() {
                    Some(front) => (&mut front.delivery).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(front) = pending.pop_front() {
                    match delivered {
                        Ok(_) => progress.acknowledged(front.first, front.last),
                        Err(e) => stop = Some(Stop::Failed(e.into())),
                    }
                }
                continue;
            }
            block = blocks.recv() => block,
        };
        let block = match block {
            None => break, // end of input
            Some(Ok(block)) => block,
            Some(Err(e)) => {
                stop = Some(Stop::Failed(e.into()));
                break;
            }
        };
        // The lines of a block were read at one moment.
        let timestamp = time::OffsetDateTime::now_utc();
        let lines: Box<dyn Iterator<Item = Bytes> + '_> = if args.whole_file {
            Box::new(std::iter::once(block.clone()))
        } else {
            Box::new(lines_of(&block))
        };
        for line in lines {
            if let Some(t) = txn.as_mut() {
                if let Err(e) = t.begin_if_closed(&producer, progress.read) {
                    stop = Some(Stop::Failed(e));
                    break 'read;
                }
            }
            progress.read += 1;
            let (key, value) = split_line(line, delimiter.as_deref());
            let record = Record {
                key,
                value: (!(args.null_empty && value.is_empty())).then_some(value),
                headers: headers.clone(),
                timestamp,
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
                Ok(delivery) => {
                    let line = progress.read;
                    match pending.back_mut() {
                        Some(back)
                            if back.last + 1 == line && back.delivery.same_batch(&delivery) =>
                        {
                            back.last = line;
                        }
                        _ => pending.push_back(Pending {
                            first: line,
                            last: line,
                            delivery,
                        }),
                    }
                }
                Err(e) => {
                    stop = Some(Stop::Failed(e.into()));
                    break 'read;
                }
            }
            if let Some(t) = txn.as_mut().filter(|t| t.is_full(progress.read)) {
                match t
                    .commit(&producer, &mut signals, progress.read, txn_limit)
                    .await
                {
                    // Every delivery of the transaction is settled now, and
                    // none failed: it committed.
                    Ok(signal) => {
                        settle(&mut pending, &mut progress);
                        if let Some(s) = signal {
                            stop = Some(Stop::Signal(s));
                            break 'read;
                        }
                    }
                    Err(e) => {
                        stop = Some(Stop::Failed(e));
                        break 'read;
                    }
                }
            }
        }
        if let Some(e) = settle(&mut pending, &mut progress) {
            stop = Some(Stop::Failed(e.into()));
        }
        meter.update(progress.read);
    }
    // The reader thread ends at its next block.
    drop(blocks);
    if let Some(t) = txn.as_mut() {
        if stop.is_none() {
            match t
                .commit(&producer, &mut signals, progress.read, txn_limit)
                .await
            {
                Ok(signal) => stop = signal.map(Stop::Signal),
                Err(e) => stop = Some(Stop::Failed(e)),
            }
        }
        // What the open transaction holds must not become visible.
        t.abort(&producer, &mut signals, g.timeout()).await;
    }
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
    for p in pending {
        match p.delivery.now_or_never() {
            Some(Ok(_)) => progress.acknowledged(p.first, p.last),
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
    // The progress line ends before the report.
    drop(meter);
    let report = match &txn {
        Some(t) => t.report(progress.read),
        None => progress.to_string(),
    };
    match stop {
        None => Ok(()),
        Some(Stop::Failed(e)) => Err(CliError::msg(format!(
            "{}: {report}",
            e.to_string().trim_end_matches('.')
        ))),
        Some(Stop::Signal(s)) => Err(CliError::Interrupted(
            s,
            format!("interrupted by {}: {report}", s.name()),
        )),
    }
}

/// Notes the settled deliveries at the front of `pending` in `progress`,
/// up to the first failed one, whose error it returns.
fn settle(
    pending: &mut VecDeque<Pending>,
    progress: &mut Progress,
) -> Option<rskafka::error::Error> {
    while let Some(front) = pending.front_mut() {
        let delivered = (&mut front.delivery).now_or_never()?;
        let (first, last) = (front.first, front.last);
        pending.pop_front();
        match delivered {
            Ok(_) => progress.acknowledged(first, last),
            Err(e) => return Some(e),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_text_before_first_delimiter() {
        let line = |s: &'static [u8]| Bytes::from_static(s);
        let (k, v) = split_line(line(b"a::b::c"), Some(b"::"));
        assert_eq!(k.as_deref(), Some(&b"a"[..]));
        assert_eq!(&v[..], b"b::c");
        let (k, v) = split_line(line(b"no delimiter"), Some(b"::"));
        assert_eq!(k, None);
        assert_eq!(&v[..], b"no delimiter");
        let (k, v) = split_line(line(b":v"), Some(b":"));
        assert_eq!(k.as_deref(), Some(&b""[..]), "empty key, not null");
        assert_eq!(&v[..], b"v");
        let (k, _) = split_line(line(b"k:v"), None);
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
            p.acknowledged(n, n);
        }
        assert_eq!((p.prefix, p.total()), (0, 2));
        assert_eq!(
            p.to_string(),
            "2 of 6 lines read acknowledged (2 after line 1); \
             lines from 1 on were not all, or not certainly, written"
        );
        p.acknowledged(1, 2);
        assert_eq!((p.prefix, p.total()), (3, 4));
        assert_eq!(
            p.to_string(),
            "4 of 6 lines read acknowledged (lines 1-3 and 1 after line 4); \
             lines from 4 on were not all, or not certainly, written"
        );
        p.acknowledged(4, 4);
        assert_eq!((p.prefix, p.total()), (5, 5));
        assert!(p.ahead.is_empty());
        // Runs of lines (one batch each) join up the same way.
        let mut r = Progress {
            read: 30,
            ..Progress::default()
        };
        r.acknowledged(21, 30);
        r.acknowledged(11, 20);
        assert_eq!((r.prefix, r.total()), (0, 20));
        r.acknowledged(1, 10);
        assert_eq!((r.prefix, r.total()), (30, 30));
        assert!(r.ahead.is_empty());
        assert_eq!(
            p.to_string(),
            "5 of 6 lines read acknowledged (lines 1-5); \
             lines from 6 on were not, or not certainly, written"
        );
    }

    /// The lines `read_blocks` and `lines_of` make of `input` read in
    /// pieces of at most `piece` bytes.
    fn lines_read(input: &[u8], piece: usize) -> Vec<Vec<u8>> {
        struct Pieces<'a>(&'a [u8], usize);
        impl Read for Pieces<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (tx, mut rx) = mpsc::channel(1024);
        read_blocks(Pieces(input, piece), &tx);
        let mut got = Vec::new();
        while let Ok(Ok(block)) = rx.try_recv() {
            assert!(!block.is_empty());
            got.extend(lines_of(&block).map(|l| l.to_vec()));
        }
        got
    }

    #[test]
    fn lines_keep_empty_ones_but_not_a_trailing_newline() {
        let want = |lines: &[&str]| -> Vec<Vec<u8>> {
            lines.iter().map(|l| l.as_bytes().to_vec()).collect()
        };
        for piece in [1, 2, 3, BLOCK] {
            assert_eq!(lines_read(b"a\n\nb\n", piece), want(&["a", "", "b"]));
            assert_eq!(lines_read(b"a\nlast", piece), want(&["a", "last"]));
            assert_eq!(lines_read(b"\n", piece), want(&[""]));
            assert!(lines_read(b"", piece).is_empty());
        }
        // A line longer than a block is kept whole.
        let long = vec![b'x'; BLOCK * 2 + 17];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\n");
        assert_eq!(lines_read(&input, BLOCK), vec![long, b"short".to_vec()]);
    }
}
