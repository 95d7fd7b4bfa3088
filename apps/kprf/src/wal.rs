//! Write-ahead log of asynchronous pushes.
//!
//! Segments `<first seq, 20 digits>.wal` hold frames
//! `[len u32][crc32 u32][seq u64][payload]` (little endian; `len` counts seq
//! and payload, the CRC covers them). One writer thread appends the entries
//! of all requests waiting at that moment with one write and (policy
//! `always`) one fsync: group commit. Each entry is released once Kafka
//! acknowledged it (or it failed for good); the lowest unreleased sequence
//! number, the watermark, goes to `checkpoint` every 100 ms, and segments
//! wholly below it are deleted. At start, entries at or above the watermark
//! are handed back for replay; a torn or corrupt tail (a crash mid-write) is
//! detected by its length or CRC and cut off.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::{backend::OutRecord, config::FsyncPolicy};

const HEADER: usize = 16;
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Payloads to append, and where to answer with the first sequence number.
type Append = (Vec<Vec<u8>>, oneshot::Sender<io::Result<u64>>);

enum Cmd {
    Append(Vec<Vec<u8>>, oneshot::Sender<io::Result<u64>>),
    Shutdown(oneshot::Sender<()>),
}

/// Which entries are released: `base` is the watermark, `states[i]` tells
/// whether `base + i` is released.
#[derive(Debug)]
struct Tracker {
    base: u64,
    states: VecDeque<bool>,
    gauge: Gauge,
}

impl Tracker {
    fn register(&mut self, n: usize) {
        self.states.extend(std::iter::repeat_n(false, n));
        self.gauge.set(self.states.len() as i64);
    }

    fn release(&mut self, seq: u64) {
        let slot = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.states.get_mut(i));
        if let Some(s) = slot {
            *s = true;
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.states.front() == Some(&true) {
            self.states.pop_front();
            self.base += 1;
        }
        self.gauge.set(self.states.len() as i64);
    }
}

/// An entry found at start that was not released before.
#[derive(Debug)]
pub struct Replayed {
    /// Its sequence number (release it when done).
    pub seq: u64,
    /// The encoded record.
    pub payload: Vec<u8>,
}

/// The write-ahead log.
pub struct Wal {
    tx: Mutex<mpsc::Sender<Cmd>>,
    tracker: Arc<Mutex<Tracker>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").finish_non_exhaustive()
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

fn read_checkpoint(dir: &Path) -> io::Result<u64> {
    match fs::read_to_string(dir.join(CHECKPOINT)) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("checkpoint: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_checkpoint(dir: &Path, watermark: u64) -> io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(watermark.to_string().as_bytes())?;
    f.sync_data()?;
    fs::rename(tmp, dir.join(CHECKPOINT))
}

/// Parses the frames of one segment: the valid entries, and the length of
/// the valid prefix.
fn parse_segment(data: &[u8]) -> (Vec<(u64, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        if len < 8 || data.len() - pos - 8 < len {
            break;
        }
        let body = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
        out.push((seq, &body[8..]));
        pos += 8 + len;
    }
    (out, pos)
}

impl Wal {
    /// Opens (or creates) the log in `dir`; returns it with the entries to
    /// replay, oldest first.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        interval: Duration,
        segment_bytes: u64,
        unreleased: Gauge,
    ) -> io::Result<(Self, Vec<Replayed>)> {
        fs::create_dir_all(dir)?;
        let watermark = read_checkpoint(dir)?;
        let mut segments = Vec::new();
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push(Segment { first, path });
            }
        }
        segments.sort_by_key(|s| s.first);
        let mut replay = Vec::new();
        let mut next = watermark;
        for s in &segments {
            let data = fs::read(&s.path)?;
            let (entries, valid) = parse_segment(&data);
            if valid < data.len() {
                tracing::warn!(
                    segment = %s.path.display(),
                    cut = data.len() - valid,
                    "write-ahead log: torn or corrupt tail cut off"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&s.path)?
                    .set_len(valid as u64)?;
            }
            for (seq, payload) in entries {
                next = next.max(seq + 1);
                if seq >= watermark {
                    replay.push(Replayed {
                        seq,
                        payload: payload.to_vec(),
                    });
                }
            }
        }
        replay.sort_by_key(|r| r.seq);
        replay.dedup_by_key(|r| r.seq);
        // Entries between the watermark and `next` that are not in the log
        // (cut off) count as released.
        let mut states: VecDeque<bool> = VecDeque::new();
        let mut it = replay.iter().peekable();
        for seq in watermark..next {
            let pending = it.next_if(|r| r.seq == seq).is_some();
            states.push_back(!pending);
        }
        let mut tracker = Tracker {
            base: watermark,
            states,
            gauge: unreleased,
        };
        tracker.advance();
        let tracker = Arc::new(Mutex::new(tracker));

        let current = segment_path(dir, next);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&current)?;
        File::open(dir)?.sync_all()?;
        segments.retain(|s| s.path != current);
        segments.push(Segment {
            first: next,
            path: current,
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            file,
            size: 0,
            next,
            segments,
            policy,
            interval,
            segment_bytes,
            tracker: tracker.clone(),
            last_checkpoint: None,
            buf: Vec::with_capacity(1 << 20),
        };
        let thread = std::thread::Builder::new()
            .name("kprf-wal".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Self {
                tx: Mutex::new(tx),
                tracker,
                thread: Mutex::new(Some(thread)),
            },
            replay,
        ))
    }

    /// Appends `payloads` (durably, with policy `always`); returns the
    /// sequence number of the first, the others follow in order.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> io::Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Cmd::Append(payloads, tx))
            .map_err(|_| io::Error::other("write-ahead log closed"))?;
        rx.await
            .map_err(|_| io::Error::other("write-ahead log writer ended"))?
    }

    /// Marks `seq` as done (delivered or failed for good).
    pub fn release(&self, seq: u64) {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(seq);
    }

    /// The lowest sequence number not yet released.
    pub fn watermark(&self) -> u64 {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner()).base
    }

    /// Syncs, writes the last checkpoint and stops the writer.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Cmd::Shutdown(tx))
            .is_ok();
        if sent {
            let _ = rx.await;
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    next: u64,
    segments: Vec<Segment>,
    policy: FsyncPolicy,
    interval: Duration,
    segment_bytes: u64,
    tracker: Arc<Mutex<Tracker>>,
    last_checkpoint: Option<u64>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Cmd>) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut cmds = Vec::new();
        loop {
            match rx.recv_timeout(self.interval.min(CHECKPOINT_EVERY)) {
                Ok(c) => cmds.push(c),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(c) = rx.try_recv() {
                cmds.push(c);
            }
            let mut shutdown = Vec::new();
            let mut appends = Vec::new();
            for c in cmds.drain(..) {
                match c {
                    Cmd::Append(p, tx) => appends.push((p, tx)),
                    Cmd::Shutdown(tx) => shutdown.push(tx),
                }
            }
            if !appends.is_empty() {
                let res = self.write(&appends);
                if res.is_ok() {
                    dirty = self.policy == FsyncPolicy::IntervalMs;
                }
                for (i, (_, tx)) in appends.into_iter().enumerate() {
                    let _ = tx.send(match &res {
                        Ok(firsts) => Ok(firsts[i]),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
            if dirty && last_sync.elapsed() >= self.interval {
                if let Err(e) = self.file.sync_data() {
                    tracing::error!("write-ahead log fsync: {e}");
                }
                dirty = false;
                last_sync = Instant::now();
            }
            if !shutdown.is_empty() || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = Instant::now();
                self.checkpoint();
            }
            if !shutdown.is_empty() {
                let _ = self.file.sync_data();
                for tx in shutdown {
                    let _ = tx.send(());
                }
                return;
            }
        }
        let _ = self.file.sync_data();
        self.checkpoint();
    }

    /// Writes the entries of all `appends`: the first sequence number of each.
    fn write(&mut self, appends: &[Append]) -> io::Result<Vec<u64>> {
        self.buf.clear();
        let mut firsts = Vec::with_capacity(appends.len());
        let mut n = 0;
        for (payloads, _) in appends {
            firsts.push(self.next + n as u64);
            for p in payloads {
                let seq = self.next + n as u64;
                n += 1;
                let len = (8 + p.len()) as u32;
                let mut h = crc32fast::Hasher::new();
                h.update(&seq.to_le_bytes());
                h.update(p);
                self.buf.extend_from_slice(&len.to_le_bytes());
                self.buf.extend_from_slice(&h.finalize().to_le_bytes());
                self.buf.extend_from_slice(&seq.to_le_bytes());
                self.buf.extend_from_slice(p);
            }
        }
        // Registered before anyone learns the numbers, so releases find them.
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(n);
        self.next += n as u64;
        let res = self.file.write_all(&self.buf).and_then(|()| {
            if self.policy == FsyncPolicy::Always {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            // Nothing of this batch is answered with 200: let the watermark pass.
            let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for seq in self.next - n as u64..self.next {
                t.release(seq);
            }
            tracing::error!("write-ahead log write: {e}");
            return Err(e);
        }
        self.size += self.buf.len() as u64;
        if self.size >= self.segment_bytes {
            if let Err(e) = self.roll() {
                tracing::error!("write-ahead log: new segment: {e}");
            }
        }
        Ok(firsts)
    }

    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let path = segment_path(&self.dir, self.next);
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        self.size = 0;
        self.segments.push(Segment {
            first: self.next,
            path,
        });
        Ok(())
    }

    fn checkpoint(&mut self) {
        let w = self.tracker.lock().unwrap_or_else(|p| p.into_inner()).base;
        if self.last_checkpoint == Some(w) {
            return;
        }
        if let Err(e) = write_checkpoint(&self.dir, w) {
            tracing::error!("write-ahead log checkpoint: {e}");
            return;
        }
        self.last_checkpoint = Some(w);
        while self.segments.len() > 1 && self.segments[1].first <= w {
            let s = self.segments.remove(0);
            if let Err(e) = fs::remove_file(&s.path) {
                tracing::warn!("write-ahead log: removing {}: {e}", s.path.display());
            }
        }
    }
}

/// Encodes a record as a log entry.
pub fn encode_record(r: &OutRecord<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        32 + r.topic.len() + r.value.len() + r.key.as_ref().map_or(0, |k| k.len()),
    );
    let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    put_bytes(&mut out, r.topic.as_bytes());
    out.extend_from_slice(&r.partition.unwrap_or(-1).to_le_bytes());
    match &r.key {
        Some(k) => {
            out.push(1);
            put_bytes(&mut out, k);
        }
        None => out.push(0),
    }
    put_bytes(&mut out, &r.value);
    out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
    for (k, v) in &r.headers {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v);
    }
    out
}

/// A record decoded from a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The topic.
    pub topic: String,
    /// The partition asked for.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The headers.
    pub headers: Vec<(String, Bytes)>,
}

impl DecodedRecord {
    /// As a record to send.
    pub fn as_out(&self) -> OutRecord<'_> {
        OutRecord {
            topic: &self.topic,
            partition: self.partition,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// Decodes an entry of [`encode_record`].
pub fn decode_record(mut b: &[u8]) -> Option<DecodedRecord> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn u32_(b: &mut &[u8]) -> Option<u32> {
        take(b, 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    }
    fn bytes_<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32_(b)? as usize;
        take(b, n)
    }
    let topic = String::from_utf8(bytes_(&mut b)?.to_vec()).ok()?;
    let partition = u32_(&mut b)? as i32;
    let key = match take(&mut b, 1)?[0] {
        0 => None,
        _ => Some(Bytes::copy_from_slice(bytes_(&mut b)?)),
    };
    let value = Bytes::copy_from_slice(bytes_(&mut b)?);
    let n = u32_(&mut b)?;
    let mut headers = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        let k = String::from_utf8(bytes_(&mut b)?.to_vec()).ok()?;
        headers.push((k, Bytes::copy_from_slice(bytes_(&mut b)?)));
    }
    Some(DecodedRecord {
        topic,
        partition: (partition >= 0).then_some(partition),
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Vec<u8> {
        encode_record(&OutRecord {
            topic: "t",
            partition: i.is_multiple_of(2).then_some(1),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Bytes::from(format!("v{i}")),
            headers: vec![("h".into(), Bytes::from_static(b"x"))],
        })
    }

    #[tokio::test]
    async fn replays_unreleased_and_cuts_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("kprf-wal-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let open = || {
            Wal::open(
                &dir,
                FsyncPolicy::Always,
                Duration::from_millis(50),
                4096,
                Gauge::default(),
            )
            .unwrap()
        };
        let (wal, replay) = open();
        assert!(replay.is_empty());
        let first = wal.append((0..3).map(rec).collect()).await.unwrap();
        assert_eq!(first, 0);
        assert_eq!(wal.append(vec![rec(3)]).await.unwrap(), 3);
        // released out of order: the watermark stops at the first gap
        wal.release(0);
        wal.release(2);
        assert_eq!(wal.watermark(), 1);
        wal.shutdown().await;
        // a torn frame at the end of the last written segment
        let mut segs: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        segs.sort();
        let first_seg = segs[0].clone();
        let len_before = fs::metadata(&first_seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&first_seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);

        let (wal, replay) = open();
        assert_eq!(fs::metadata(&first_seg).unwrap().len(), len_before);
        let seqs: Vec<u64> = replay.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]); // 2 is above the watermark: replayed
        let d = decode_record(&replay[0].payload).unwrap();
        assert_eq!(d.value, Bytes::from("v1"));
        assert_eq!(d.partition, None);
        assert_eq!(d.key, Some(Bytes::from("k1")));
        assert_eq!(d.headers, vec![("h".to_string(), Bytes::from_static(b"x"))]);
        assert_eq!(
            decode_record(&replay[1].payload).unwrap().partition,
            Some(1)
        );
        // new entries continue the numbering
        assert_eq!(wal.append(vec![rec(9)]).await.unwrap(), 4);
        for s in 1..=4 {
            wal.release(s);
        }
        assert_eq!(wal.watermark(), 5);
        wal.shutdown().await;
        let (wal, replay) = open();
        assert!(replay.is_empty());
        wal.shutdown().await;
        // old segments wholly below the watermark are gone
        let left = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wal")
            })
            .count();
        assert_eq!(left, 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_crc_ends_the_valid_prefix() {
        let mut data = Vec::new();
        for (seq, p) in [(0u64, b"aa".as_slice()), (1, b"bb")] {
            let mut h = crc32fast::Hasher::new();
            h.update(&seq.to_le_bytes());
            h.update(p);
            data.extend_from_slice(&((8 + p.len()) as u32).to_le_bytes());
            data.extend_from_slice(&h.finalize().to_le_bytes());
            data.extend_from_slice(&seq.to_le_bytes());
            data.extend_from_slice(p);
        }
        let whole = data.len();
        let (e, valid) = parse_segment(&data);
        assert_eq!((e.len(), valid), (2, whole));
        let last = data.len() - 1;
        data[last] ^= 1;
        let (e, valid) = parse_segment(&data);
        assert_eq!((e.len(), valid), (1, whole / 2));
    }
}
