//! Records to stdout from a thread of their own, in slices, so that a signal
//! takes effect within one slice whatever the reader does.
//!
//! A reader that stops reading blocks a write until it reads again; written
//! from the runtime, one large write kept SIGINT waiting for up to 18 s and
//! let megabytes out after it. Here only the writer thread waits, the
//! caller can stop it between slices, and it counts exactly which bytes
//! went out, so a group member commits only records printed whole.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc as tokio_mpsc;

/// Bytes per write: at 1 MiB/s a slice takes 64 ms.
const SLICE: usize = 64 * 1024;
/// How long a stop waits for the slice being written, so that the count of
/// bytes written is exact when the reader keeps reading.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// How a buffer's write ended.
pub enum Written {
    /// All of it went out; the buffer comes back for reuse.
    All(Vec<u8>),
    /// The reader went away (EPIPE) after this many bytes.
    Closed(usize),
    /// Writing failed after this many bytes.
    Failed(usize, std::io::Error),
}

/// The writer thread and what it reports.
pub struct Output {
    jobs: mpsc::Sender<Vec<u8>>,
    done: tokio_mpsc::UnboundedReceiver<Written>,
    stop: Arc<AtomicBool>,
    /// Bytes of the current buffer written so far.
    progress: Arc<AtomicUsize>,
    busy: bool,
}

impl Output {
    /// Starts the writer thread on stdout.
    pub fn stdout() -> std::io::Result<Self> {
        let out = raw_stdout()?;
        let (jobs, rx) = mpsc::channel::<Vec<u8>>();
        let (done_tx, done) = tokio_mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicUsize::new(0));
        let (t_stop, t_progress) = (stop.clone(), progress.clone());
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || writer(out, &rx, &done_tx, &t_stop, &t_progress))?;
        Ok(Self {
            jobs,
            done,
            stop,
            progress,
            busy: false,
        })
    }

    /// Writes `buf` whole. Cancellation-safe: dropped before it finished,
    /// the write goes on until [`Self::stop`] (or the next write, which
    /// waits for it first).
    pub async fn write(&mut self, buf: Vec<u8>) -> Written {
        if self.busy {
            let _ = self.done.recv().await;
        }
        self.progress.store(0, Ordering::Release);
        if self.jobs.send(buf).is_err() {
            return Written::Failed(0, std::io::ErrorKind::BrokenPipe.into());
        }
        self.busy = true;
        let written = self.done.recv().await;
        self.busy = false;
        written.unwrap_or_else(|| Written::Failed(0, std::io::ErrorKind::BrokenPipe.into()))
    }

    /// Stops the write in progress after its current slice; returns how
    /// many bytes of its buffer were written. A slice whose write does not
    /// finish within a moment is not counted: if the reader takes it after
    /// all (before the process ends), its records count as not printed and
    /// the next group member prints them again; none is ever lost.
    pub async fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Release);
        if self.busy {
            if let Ok(Some(w)) = tokio::time::timeout(STOP_GRACE, self.done.recv()).await {
                self.busy = false;
                return match w {
                    Written::All(buf) => buf.len(),
                    Written::Closed(n) | Written::Failed(n, _) => n,
                };
            }
        }
        self.progress.load(Ordering::Acquire)
    }
}

fn writer(
    mut out: impl Write,
    jobs: &mpsc::Receiver<Vec<u8>>,
    done: &tokio_mpsc::UnboundedSender<Written>,
    stop: &AtomicBool,
    progress: &AtomicUsize,
) {
    while let Ok(buf) = jobs.recv() {
        let mut pos = 0;
        let mut failure = None;
        while pos < buf.len() && !stop.load(Ordering::Acquire) {
            let end = buf.len().min(pos + SLICE);
            match out.write(&buf[pos..end]) {
                Ok(0) => {
                    failure = Some(std::io::Error::from(std::io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => {
                    pos += n;
                    progress.store(pos, Ordering::Release);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            if let Err(e) = out.flush() {
                failure = Some(e);
            }
        }
        let report = match failure {
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Written::Closed(pos),
            Some(e) => Written::Failed(pos, e),
            None if pos == buf.len() => Written::All(buf),
            // Stopped part-way.
            None => Written::Closed(pos),
        };
        if done.send(report).is_err() {
            return;
        }
    }
}

/// Stdout without Rust's line buffering, so that every byte counted as
/// written reached the file descriptor.
#[cfg(unix)]
fn raw_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        std::io::stdout().as_fd().try_clone_to_owned()?,
    ))
}

#[cfg(not(unix))]
fn raw_stdout() -> std::io::Result<std::io::Stdout> {
    Ok(std::io::stdout())
}

/// Where each record of a formatted buffer ends, to tell which records a
/// partial write printed whole.
#[derive(Default)]
pub struct Ends {
    /// (partition, offset, end byte), in buffer order.
    ends: Vec<(i32, i64, usize)>,
}

impl Ends {
    /// Forgets the previous buffer's records.
    pub fn clear(&mut self) {
        self.ends.clear();
    }

    /// Notes that the record at `offset` of `partition` ends at `end`.
    pub fn push(&mut self, partition: i32, offset: i64, end: usize) {
        self.ends.push((partition, offset, end));
    }

    /// The first record of each partition not printed whole when `written`
    /// bytes went out: where that partition must resume.
    pub fn first_unprinted(&self, written: usize) -> Vec<(i32, i64)> {
        let mut first: Vec<(i32, i64)> = Vec::new();
        for &(p, o, end) in &self.ends {
            if end > written && !first.iter().any(|(q, _)| *q == p) {
                first.push((p, o));
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_unprinted_record_per_partition() {
        let mut ends = Ends::default();
        for (p, o, end) in [(0, 5, 10), (1, 7, 20), (0, 6, 30), (1, 8, 40)] {
            ends.push(p, o, end);
        }
        assert_eq!(ends.first_unprinted(40), vec![]);
        assert_eq!(ends.first_unprinted(25), vec![(0, 6), (1, 8)]);
        // A record cut in the middle was not printed.
        assert_eq!(ends.first_unprinted(15), vec![(1, 7), (0, 6)]);
        assert_eq!(ends.first_unprinted(0), vec![(0, 5), (1, 7)]);
    }

    #[test]
    fn writer_counts_what_went_out_and_stops_between_slices() {
        let (jobs_tx, jobs) = mpsc::channel();
        let (done_tx, mut done) = tokio_mpsc::unbounded_channel();
        let stop = AtomicBool::new(false);
        let progress = AtomicUsize::new(0);
        let mut sink = Vec::new();
        jobs_tx.send(vec![b'x'; 3 * SLICE + 1]).unwrap();
        drop(jobs_tx);
        writer(&mut sink, &jobs, &done_tx, &stop, &progress);
        assert!(matches!(done.try_recv(), Ok(Written::All(b)) if b.len() == 3 * SLICE + 1));
        assert_eq!(sink.len(), 3 * SLICE + 1);

        let (jobs_tx, jobs) = mpsc::channel();
        stop.store(true, Ordering::Release);
        jobs_tx.send(vec![b'x'; 10]).unwrap();
        drop(jobs_tx);
        writer(&mut sink, &jobs, &done_tx, &stop, &progress);
        assert!(matches!(done.try_recv(), Ok(Written::Closed(0))));
    }
}
