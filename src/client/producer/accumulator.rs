//! The record accumulator: per-partition batches, buffer accounting, and the
//! idempotent producer's sequence bookkeeping.
//!
//! This is plain synchronous state behind one mutex: `send` appends records
//! to it, the sender task drains ready batches from it and reports each
//! batch's result back. No I/O happens here, which keeps every ordering and
//! sequence rule unit-testable.
//!
//! Sequence rules (the Java client's, for the non-transactional case):
//! - A batch gets its sequence when first drained and keeps it across
//!   retries, so a retried batch that the broker already has is recognised
//!   as a duplicate instead of being written twice.
//! - After a failure, the partition stops draining until its in-flight
//!   batches are back; failed batches are re-queued in sequence order, so
//!   retries go out in the original order.
//! - A batch that definitely was not written but failed for good leaves a
//!   hole in the sequence: the partition's later batches are renumbered
//!   ("rewind") once nothing of it is in flight.
//! - When the broker's sequence state and ours can no longer be reconciled
//!   (a gap the broker reports, an unknown producer id, a batch that may have
//!   been written but timed out), the partition is "broken": the producer
//!   finishes resolving what it can under the current epoch, bumps the epoch
//!   (KIP-360) and starts every partition's sequence over. Batches whose fate
//!   is unknown at that point are failed as uncertain, never silently resent.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use bytes::BytesMut;
use tokio::{sync::Notify, time::Instant};

use super::{
    batch::{increment_sequence, BatchShared, Failure, Outcome, ProducerBatch, ProducerState},
    partitioner::{key_partition, next_sticky_partition, sticky_usable, Partitioner},
};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::{Error, ErrorKind},
    protocol::{
        record::{BatchHeader, Compression, RecordBatchWriter, RecordHeader},
        EncodeError, ErrorCode,
    },
    record::Record,
};

/// Settings the accumulator needs.
#[derive(Debug, Clone)]
pub(crate) struct AccumulatorConfig {
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) delivery_timeout: Duration,
    pub(crate) compression: Compression,
    pub(crate) idempotent: bool,
    pub(crate) max_in_flight_per_partition: usize,
    pub(crate) max_request_size: usize,
    pub(crate) retry_backoff: BackoffConfig,
    /// How often a batch is sent again after a retriable failure, at most.
    pub(crate) retries: u32,
    /// Bytes of records buffered until acknowledged.
    pub(crate) buffer_memory: usize,
    /// Batches belong to transactions: a partition's batches are sent
    /// only once the partition was added to the open transaction, and the
    /// producer id comes from the transaction manager (see `txn`).
    pub(crate) transactional: bool,
}

/// Why a record could not be appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The partition count of the topic is not known yet: load metadata and
    /// call [`Accumulator::set_partition_count`].
    UnknownTopic,
    /// The record names a partition the topic does not have.
    InvalidPartition {
        partition: i32,
        count: i32,
    },
    /// The buffer has no room for the record now.
    Full,
    /// The producer is closed.
    Closed,
    /// A transactional producer has no transaction open (or it failed).
    Transaction(crate::error::Error),
    Encode(EncodeError),
}

/// A record appended to a batch.
pub(crate) struct Appended {
    pub(crate) shared: Arc<BatchShared>,
    pub(crate) offset_delta: i32,
    /// Whether the sender must re-plan (a batch was created or closed).
    pub(crate) wake_sender: bool,
}

/// The result of sending a batch, as the sender saw it.
#[derive(Debug, Clone)]
pub(crate) enum SendResult {
    /// Written (or recognised as a duplicate of a written batch).
    Acked {
        base_offset: Option<i64>,
        log_append_time: Option<i64>,
    },
    /// The partition's entry in the response carried an error code.
    Error {
        code: ErrorCode,
        message: Option<String>,
    },
    /// The request as a whole failed (connection, timeout, decode...).
    Transport {
        retriable: bool,
        /// The request may have been written by the broker.
        ambiguous: bool,
        kind: ErrorKind,
        message: String,
    },
}

impl SendResult {
    /// The request as a whole failed with `e`. As in Java, acks=0 (`acks_none`)
    /// is sent again only if it surely was not written: nothing else would
    /// tell of a duplicate.
    pub(crate) fn transport(e: &Error, acks_none: bool) -> Self {
        SendResult::Transport {
            retriable: e.is_retriable() && !(acks_none && e.is_ambiguous()),
            ambiguous: e.is_ambiguous(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// What the sender must do after results were applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Followup {
    /// The partition's leader may have moved: refresh its metadata.
    pub(crate) refresh_metadata: bool,
}

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    writer: RecordBatchWriter,
    shared: Arc<BatchShared>,
    created: Instant,
    accounted: usize,
}

impl OpenBatch {
    /// When the batch is due by linger (see [`WAKE_LEAD`]).
    fn linger_end(&self, linger: Duration) -> Instant {
        self.created + linger.saturating_sub(WAKE_LEAD)
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    open: Option<OpenBatch>,
    /// Closed batches not in flight, in id (= sequence) order.
    queue: VecDeque<ProducerBatch>,
    in_flight: usize,
    /// Of those, batches an earlier attempt of which may have been written.
    ambiguous_in_flight: usize,
    /// Next sequence to assign (idempotence).
    next_seq: i32,
    /// Last acknowledged sequence in the current epoch, `-1` if none.
    last_acked: i32,
    /// A batch came back for a retry: drain again only once nothing of this
    /// partition is in flight, so the retry goes out first.
    retrying: bool,
    /// A sequenced batch failed for good without being written: (its id,
    /// its base sequence). Later batches are renumbered from there.
    rewind: Option<(u64, i32)>,
    /// Sequence state cannot be reconciled; waits for an epoch bump.
    broken: bool,
    /// Size of the last batch closed, to size the next one's buffer.
    size_hint: usize,
    /// The last send of a batch failed (leader gone, connection lost) and
    /// none has succeeded since: records without a key go elsewhere.
    stalled: bool,
    /// Membership in the open transaction (transactional producers).
    txn: TxnMembership,
}

/// Whether a partition is part of the open transaction: its batches may be
/// sent only once the coordinator added it (AddPartitionsToTxn).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TxnMembership {
    #[default]
    Outside,
    Adding,
    Added,
}

impl PartitionState {
    fn new() -> Self {
        Self {
            last_acked: -1,
            ..Self::default()
        }
    }

    fn has_data(&self) -> bool {
        self.open.is_some() || !self.queue.is_empty()
    }

    /// Takes the open batch, remembering its size for the next one.
    fn take_open(&mut self) -> Option<OpenBatch> {
        let open = self.open.take()?;
        // A little headroom, as batches closed by linger vary in size.
        let size = open.writer.uncompressed_size();
        self.size_hint = size.saturating_add(size / 8);
        Some(open)
    }

    /// The sequence the broker expects next from us.
    fn expected_sequence(&self) -> i32 {
        if self.last_acked < 0 {
            0
        } else {
            increment_sequence(self.last_acked, 1)
        }
    }

    /// Puts a batch back in id order (retries are older than what is queued).
    fn requeue(&mut self, batch: ProducerBatch) {
        let at = self.queue.partition_point(|b| b.id < batch.id);
        self.queue.insert(at, batch);
    }

    /// Renumbers the batches after a batch that failed without being
    /// written, so the broker sees no hole.
    fn apply_rewind(&mut self) {
        let Some((failed_id, from)) = self.rewind.take() else {
            return;
        };
        let mut seq = from;
        for b in self.queue.iter_mut().filter(|b| b.id > failed_id) {
            if let Some(s) = b.sequence.as_mut() {
                s.base_sequence = seq;
                seq = increment_sequence(seq, b.record_count);
            }
        }
        self.next_seq = seq;
    }
}

#[derive(Debug)]
struct TopicState {
    name: Arc<str>,
    partitions: Vec<PartitionState>,
    sticky: Option<i32>,
    round_robin: u32,
    /// Partitions whose leader is known, ascending (the sticky partition is
    /// one of them while any is); empty until metadata says.
    with_leader: Vec<i32>,
}

impl TopicState {
    fn count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }

    fn partition(&self, p: i32) -> Option<&PartitionState> {
        usize::try_from(p).ok().and_then(|i| self.partitions.get(i))
    }

    /// Whether partition `p` can take records without a key now.
    fn usable(&self, p: i32) -> bool {
        self.partition(p).is_some_and(|ps| !ps.stalled)
    }

    /// The sticky partition after `current`; see [`next_sticky_partition`].
    fn next_sticky(&self, current: Option<i32>) -> i32 {
        next_sticky_partition(
            current,
            self.count(),
            |p| self.usable(p),
            &self.with_leader,
            |p| {
                self.partition(p)
                    .map_or(0, |ps| ps.queue.len() + ps.in_flight)
            },
        )
    }
}

/// Topics by name, with a one-entry cache of the last name looked up:
/// producers usually write runs of records to the same topic, and comparing
/// one string is cheaper than hashing it for every record.
#[derive(Debug, Default)]
struct Topics {
    list: Vec<TopicState>,
    index: HashMap<Arc<str>, usize>,
    last: usize,
}

impl Topics {
    fn position(&self, name: &str) -> Option<usize> {
        match self.list.get(self.last) {
            Some(t) if *t.name == *name => Some(self.last),
            _ => self.index.get(name).copied(),
        }
    }

    fn get(&self, name: &str) -> Option<&TopicState> {
        self.position(name).and_then(|i| self.list.get(i))
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut TopicState> {
        let i = self.position(name)?;
        self.last = i;
        self.list.get_mut(i)
    }

    /// The topic, created without partitions if new.
    fn get_or_insert(&mut self, name: &str) -> &mut TopicState {
        let i = match self.position(name) {
            Some(i) => i,
            None => {
                let name: Arc<str> = Arc::from(name);
                self.index.insert(name.clone(), self.list.len());
                self.list.push(TopicState {
                    name,
                    partitions: Vec::new(),
                    sticky: None,
                    round_robin: 0,
                    with_leader: Vec::new(),
                });
                self.list.len() - 1
            }
        };
        self.last = i;
        &mut self.list[i]
    }

    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.list.iter().map(|t| &t.name)
    }

    fn values(&self) -> std::slice::Iter<'_, TopicState> {
        self.list.iter()
    }

    fn values_mut(&mut self) -> std::slice::IterMut<'_, TopicState> {
        self.list.iter_mut()
    }
}

/// The producer id and epoch of an idempotent producer.
#[derive(Debug, Clone, Copy)]
struct Idempotence {
    producer_id: i64,
    epoch: i16,
    /// No producer id yet (or the last attempt failed).
    needs_init: bool,
    bump_required: bool,
}

/// Per-partition batches and the producer-wide state; see the module docs.
#[derive(Debug)]
pub(crate) struct Accumulator {
    cfg: AccumulatorConfig,
    topics: Topics,
    /// Every batch not yet complete, for `flush`.
    incomplete: BTreeMap<u64, Arc<BatchShared>>,
    next_id: u64,
    in_flight: usize,
    flushing: usize,
    closing: bool,
    idem: Option<Idempotence>,
    /// Bytes taken by buffered records (see `append`'s `accounted`).
    buffered: usize,
    /// Signalled when buffered bytes are released while senders wait.
    room: Arc<Notify>,
    /// Senders waiting for room.
    room_waiters: usize,
    /// Record buffers of completed batches, for new batches to write into
    /// (see [`ProducerBatch::take_buffer`]); at most [`SPARE_BUFFERS`].
    spare: Vec<BytesMut>,
    /// The first batch failure of the open transaction: it cannot commit.
    txn_failure: Option<(Arc<str>, i32, Failure)>,
    /// The open transaction is being aborted: batches that come back for a
    /// retry fail with this instead.
    aborting: Option<Failure>,
}

/// Completed batches' buffers kept for reuse: enough for a partition's
/// batches in flight to recycle theirs, a bounded amount of memory (each at
/// most twice the batch size) beyond the buffer memory.
const SPARE_BUFFERS: usize = 4;

/// The sender's alarm (see `alarm`) and the wake of its task take tens of
/// microseconds, so a batch due at its linger end would leave a little
/// late. Batches are due this much before it instead: `linger` stays an
/// upper bound on the wait, as in the Java client and librdkafka. (Where
/// no alarm thread could be started, tokio's timer wakes the sender 1-2 ms
/// late and the bound does not hold.)
const WAKE_LEAD: Duration = Duration::from_micros(200);

/// One ProduceRequest's worth of batches for one broker.
#[derive(Debug)]
pub(crate) struct Drained {
    pub(crate) broker: i32,
    pub(crate) batches: Vec<(ProducerBatch, ProducerState)>,
}

impl Accumulator {
    pub(crate) fn new(cfg: AccumulatorConfig, room: Arc<Notify>) -> Self {
        let idem = cfg.idempotent.then_some(Idempotence {
            producer_id: -1,
            epoch: -1,
            needs_init: true,
            bump_required: false,
        });
        Self {
            cfg,
            topics: Topics::default(),
            incomplete: BTreeMap::new(),
            next_id: 0,
            in_flight: 0,
            flushing: 0,
            closing: false,
            idem,
            buffered: 0,
            room,
            room_waiters: 0,
            spare: Vec::new(),
            txn_failure: None,
            aborting: None,
        }
    }

    /// Bytes taken by buffered records.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Registers or unregisters a sender waiting for room; releases only
    /// signal while someone waits.
    pub(crate) fn waiting_for_room(&mut self, waiting: bool) {
        if waiting {
            self.room_waiters += 1;
        } else {
            self.room_waiters = self.room_waiters.saturating_sub(1);
        }
    }

    /// Records the partition count of a topic; partitions only ever grow.
    pub(crate) fn set_partition_count(&mut self, topic: &str, count: i32) {
        let count = usize::try_from(count).unwrap_or(0);
        if count == 0 {
            return;
        }
        let t = self.topics.get_or_insert(topic);
        while t.partitions.len() < count {
            t.partitions.push(PartitionState::new());
        }
    }

    /// Records which partitions of every topic have a leader (`leader`),
    /// for the sticky partitioner.
    pub(crate) fn set_leaders(&mut self, leader: impl Fn(&str, i32) -> bool) {
        for t in self.topics.values_mut() {
            t.with_leader.clear();
            for p in 0..t.count() {
                if leader(&t.name, p) {
                    t.with_leader.push(p);
                }
            }
        }
    }

    /// As [`set_leaders`](Self::set_leaders) for one topic just loaded:
    /// `with_leader` lists its partitions that have a leader, ascending.
    pub(crate) fn set_topic_leaders(
        &mut self,
        topic: &str,
        with_leader: impl Iterator<Item = i32>,
    ) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.with_leader.clear();
            t.with_leader.extend(with_leader);
        }
    }

    /// The topics records were sent to, for periodic metadata refreshes.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.topics.keys().map(|t| t.to_string()).collect()
    }

    pub(crate) fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topics.get(topic).map(TopicState::count)
    }

    /// Appends a record to its partition's open batch, opening or closing
    /// batches as needed. `accounted` bytes are taken from the buffer
    /// memory (or `Full` returned) and given back when the batch completes;
    /// accounting here, under the lock `send` takes anyway, spares an atomic
    /// operation per record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        partitioner: &Partitioner,
        record: &Record,
        headers: &[RecordHeader],
        accounted: usize,
        // Read only when a batch is opened: clock reads are not free and
        // most records join an open batch.
        clock: &dyn Fn() -> Instant,
    ) -> Result<Appended, AppendError> {
        if self.closing {
            return Err(AppendError::Closed);
        }
        if self.buffered + accounted > self.cfg.buffer_memory {
            return Err(AppendError::Full);
        }
        let Some(t) = self.topics.get_mut(topic) else {
            return Err(AppendError::UnknownTopic);
        };
        let count = t.count();
        let key = record.key.as_deref();
        let mut sticky = false;
        let p = match (partition, partitioner, key) {
            (Some(p), _, _) => p,
            (None, Partitioner::RoundRobin, _) => {
                let p = (t.round_robin % count.unsigned_abs()) as i32;
                t.round_robin = t.round_robin.wrapping_add(1);
                p
            }
            (None, Partitioner::Custom(f), _) => f(topic, key, count),
            (None, Partitioner::Default, Some(k)) => key_partition(k, count),
            (None, Partitioner::Default, None) => {
                sticky = true;
                match t.sticky {
                    Some(p) if sticky_usable(p, count, |p| t.usable(p), &t.with_leader) => p,
                    current => {
                        let p = t.next_sticky(current);
                        t.sticky = Some(p);
                        p
                    }
                }
            }
        };
        let Some(mut idx) = usize::try_from(p).ok().filter(|&i| i < t.partitions.len()) else {
            return Err(AppendError::InvalidPartition {
                partition: p,
                count,
            });
        };
        // A sticky partition moves on when it would need a new batch, so
        // records without keys fill whole batches one partition at a time.
        if sticky {
            let needs_new = t.partitions.get(idx).is_some_and(|ps| {
                ps.open
                    .as_ref()
                    .is_none_or(|o| !fits(o, accounted, self.cfg.batch_size))
            });
            if needs_new {
                let p2 = t.next_sticky(Some(p));
                t.sticky = Some(p2);
                idx = usize::try_from(p2).unwrap_or(idx);
            }
        }
        // Borrowed, not cloned: an Arc clone per record is measurable.
        let name = &t.name;
        let cfg = &self.cfg;
        let Some(ps) = t.partitions.get_mut(idx) else {
            return Err(AppendError::InvalidPartition {
                partition: p,
                count,
            });
        };
        let mut wake = false;
        if let Some(open) = &ps.open {
            if !fits(open, accounted, cfg.batch_size) {
                close_open(ps, cfg);
                wake = true;
            }
        }
        if ps.open.is_none() {
            let id = self.next_id;
            self.next_id += 1;
            let shared = BatchShared::new(name.clone(), idx as i32);
            self.incomplete.insert(id, shared.clone());
            let header = BatchHeader {
                compression: cfg.compression,
                is_transactional: cfg.transactional,
                ..BatchHeader::default()
            };
            // As large as this partition's last batch (growing a buffer
            // copies it), else room for a typical batch; never the whole
            // batch size for every partition up front.
            let typical = if ps.size_hint > 0 {
                ps.size_hint
            } else {
                64 * 1024
            };
            let capacity = typical.min(cfg.batch_size).max(accounted);
            let writer = match self.spare.pop() {
                Some(buf) => RecordBatchWriter::with_buffer(header, buf, capacity),
                None => RecordBatchWriter::with_capacity(header, capacity),
            };
            ps.open = Some(OpenBatch {
                id,
                writer,
                shared,
                created: clock(),
                accounted: 0,
            });
            wake = true;
        }
        let Some(open) = ps.open.as_mut() else {
            return Err(AppendError::Closed);
        };
        let offset_delta = i32::try_from(open.writer.len()).unwrap_or(i32::MAX);
        open.writer
            .append(
                crate::record::millis_from_time(record.timestamp),
                key,
                record.value.as_deref(),
                headers,
            )
            .map_err(AppendError::Encode)?;
        open.accounted += accounted;
        let shared = open.shared.clone();
        self.buffered += accounted;
        if open.writer.uncompressed_size() >= cfg.batch_size {
            close_open(ps, cfg);
            wake = true;
        }
        Ok(Appended {
            shared,
            offset_delta,
            wake_sender: wake,
        })
    }

    /// Starts a flush: every batch is ready regardless of linger until
    /// [`end_flush`](Self::end_flush). Returns the batches to wait for.
    pub(crate) fn begin_flush(&mut self) -> Vec<Arc<BatchShared>> {
        self.flushing += 1;
        self.incomplete.values().cloned().collect()
    }

    pub(crate) fn end_flush(&mut self) {
        self.flushing = self.flushing.saturating_sub(1);
    }

    /// Stops accepting records; what is buffered is still delivered.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether nothing is buffered or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.incomplete.is_empty() && self.in_flight == 0
    }

    /// The producer id and epoch to use, if initialised.
    pub(crate) fn producer_id(&self) -> Option<(i64, i16)> {
        self.idem
            .filter(|i| !i.needs_init)
            .map(|i| (i.producer_id, i.epoch))
    }

    /// Whether the sender must obtain a producer id now: at start, or for an
    /// epoch bump once nothing is in flight and nothing can still be
    /// resolved under the current epoch.
    pub(crate) fn wants_producer_id(&self) -> bool {
        let Some(idem) = self.idem else {
            return false;
        };
        // The transaction manager obtains ids and bumps epochs itself,
        // between transactions.
        if self.cfg.transactional {
            return false;
        }
        if idem.needs_init {
            return self.has_data();
        }
        idem.bump_required && self.in_flight == 0 && !self.has_resolvable_batches()
    }

    /// The current (producer id, epoch) to send with InitProducerId for a
    /// bump, or `None` for a fresh id.
    pub(crate) fn bump_from(&self) -> Option<(i64, i16)> {
        self.idem
            .filter(|i| !i.needs_init && i.producer_id >= 0)
            .map(|i| (i.producer_id, i.epoch))
    }

    fn has_data(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .any(PartitionState::has_data)
    }

    /// Healthy partitions with batches sequenced under the current epoch
    /// that are not acknowledged yet: they are resolved before a bump.
    fn has_resolvable_batches(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .any(|p| !p.broken && p.queue.iter().any(|b| b.sequence.is_some()))
    }

    /// Installs a new producer id/epoch: every partition's sequence starts
    /// over. Batches that may have been written under the old epoch cannot
    /// be confirmed any more and are failed as uncertain; the others (known
    /// not to be written) are renumbered when next drained.
    pub(crate) fn set_producer_id(&mut self, producer_id: i64, epoch: i16) {
        let Some(idem) = self.idem.as_mut() else {
            return;
        };
        let was_bump = !idem.needs_init;
        *idem = Idempotence {
            producer_id,
            epoch,
            needs_init: false,
            bump_required: false,
        };
        if !was_bump {
            return;
        }
        let mut failed = Vec::new();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                p.next_seq = 0;
                p.last_acked = -1;
                p.retrying = false;
                p.rewind = None;
                p.broken = false;
                let mut keep = VecDeque::with_capacity(p.queue.len());
                for mut b in p.queue.drain(..) {
                    if b.sequence.is_some() && b.ambiguous {
                        failed.push(b);
                    } else {
                        b.sequence = None;
                        keep.push_back(b);
                    }
                }
                p.queue = keep;
            }
        }
        for b in failed {
            let attempts = b.attempts;
            self.finish(
                b,
                Outcome::Failed(Failure::Uncertain(format!(
                    "sent {attempts} time(s) without a definite answer, and the producer epoch had \
                     to be bumped, so the broker can no longer tell whether it was written"
                ))),
            );
        }
    }

    /// InitProducerId failed with `e`: if retrying cannot help, what waits
    /// for a producer id fails. Returns whether the sender keeps trying:
    /// something still waits for an id (not failed, not closed and
    /// expired); otherwise the sender starts a new attempt on demand.
    pub(crate) fn producer_id_failed(&mut self, e: &Error) -> bool {
        if !e.is_retriable() {
            let failure = Failure::Local {
                kind: e.kind(),
                message: format!("could not obtain a producer id: {e}"),
            };
            for b in self.take_unsent() {
                self.finish(b, Outcome::Failed(failure.clone()));
            }
        }
        self.wants_producer_id()
    }

    /// Every batch not in flight (open ones closed), out of the partitions.
    fn take_unsent(&mut self) -> Vec<ProducerBatch> {
        let mut unsent = Vec::new();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if let Some(open) = p.take_open() {
                    unsent.push(into_batch(open, &self.cfg));
                }
                unsent.extend(p.queue.drain(..));
            }
        }
        unsent
    }

    /// The partitions with records that are not part of the open
    /// transaction yet; they are marked as being added.
    pub(crate) fn partitions_to_add(&mut self) -> Vec<(Arc<str>, i32)> {
        let mut out = Vec::new();
        for t in self.topics.values_mut() {
            for (i, p) in t.partitions.iter_mut().enumerate() {
                if p.txn == TxnMembership::Outside && p.has_data() {
                    p.txn = TxnMembership::Adding;
                    out.push((t.name.clone(), i as i32));
                }
            }
        }
        out
    }

    /// The coordinator added `partitions` to the open transaction: their
    /// batches may be sent.
    pub(crate) fn partitions_added(&mut self, partitions: &[(Arc<str>, i32)]) {
        for (topic, partition) in partitions {
            if let Some(p) = self.partition_mut(topic.clone(), *partition) {
                p.txn = TxnMembership::Added;
            }
        }
    }

    /// `partitions` could not be added to the transaction: their batches
    /// (none was sent) fail with `failure`.
    pub(crate) fn fail_partitions(&mut self, partitions: &[(Arc<str>, i32)], failure: Failure) {
        let mut opened = Vec::new();
        let mut queued = Vec::new();
        for (topic, partition) in partitions {
            if let Some(p) = self.partition_mut(topic.clone(), *partition) {
                p.txn = TxnMembership::Outside;
                opened.extend(p.take_open());
                queued.extend(p.queue.drain(..));
            }
        }
        let opened: Vec<ProducerBatch> = opened
            .into_iter()
            .map(|o| into_batch(o, &self.cfg))
            .collect();
        for b in queued.into_iter().chain(opened) {
            self.fail_sequenced(b, failure.clone());
        }
    }

    /// Starts aborting the open transaction: every batch not in flight
    /// fails with `failure`, as does every batch that comes back for a
    /// retry until [`end_transaction`](Self::end_transaction).
    pub(crate) fn begin_abort(&mut self, failure: Failure) {
        self.aborting = Some(failure.clone());
        self.fail_unsent(failure);
    }

    /// Fails every batch not in flight with `failure`.
    pub(crate) fn fail_unsent(&mut self, failure: Failure) {
        for b in self.take_unsent() {
            self.fail_sequenced(b, failure.clone());
        }
    }

    /// Sequences may go on, but the coordinator may hold state of the
    /// current epoch that only a bump clears (an AddPartitionsToTxn whose
    /// outcome is unknown): the transaction manager bumps it after the abort.
    pub(crate) fn require_epoch_bump(&mut self) {
        if let Some(i) = self.idem.as_mut() {
            i.bump_required = true;
        }
    }

    /// Whether an epoch bump is pending (cheap: no scan of partitions).
    pub(crate) fn epoch_bump_required(&self) -> bool {
        self.idem.is_some_and(|i| i.bump_required)
    }

    /// The open transaction ended (committed or aborted): partitions must
    /// be added again to the next one.
    pub(crate) fn end_transaction(&mut self) {
        self.aborting = None;
        self.txn_failure = None;
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                p.txn = TxnMembership::Outside;
            }
        }
    }

    /// The first failure of a batch of the open transaction, as the error
    /// of one of its records.
    pub(crate) fn txn_failure(&self) -> Option<Error> {
        self.txn_failure
            .as_ref()
            .map(|(topic, partition, f)| f.to_error(topic, *partition))
    }

    /// Whether sequences cannot go on under the current epoch: the
    /// transaction manager bumps it before the next transaction.
    pub(crate) fn needs_epoch_bump(&self) -> bool {
        self.idem.is_some_and(|i| i.bump_required) || self.any_broken()
    }

    /// Takes the ready batches, at most one per partition per request and
    /// one request per broker, for brokers `can_send` accepts. `leader`
    /// maps a partition to its leader; partitions without one are skipped
    /// (the sender refreshes their metadata) and reported in `no_leader`.
    pub(crate) fn drain(
        &mut self,
        now: Instant,
        leader: impl Fn(&str, i32) -> Option<i32>,
        can_send: impl Fn(i32) -> bool,
        no_leader: &mut Vec<String>,
    ) -> Vec<Drained> {
        let mut requests: Vec<Drained> = Vec::new();
        let mut sizes: HashMap<i32, usize> = HashMap::new();
        let force = self.flushing > 0 || self.closing;
        let idem = self.idem;
        if idem.is_some_and(|i| i.needs_init) {
            return requests;
        }
        let resolving = idem.is_some_and(|i| i.bump_required);
        let cfg = &self.cfg;
        let mut drained = 0usize;
        for t in self.topics.values_mut() {
            for (idx, p) in t.partitions.iter_mut().enumerate() {
                let partition = idx as i32;
                if !p.has_data() || p.in_flight >= cfg.max_in_flight_per_partition {
                    continue;
                }
                if cfg.transactional && p.txn != TxnMembership::Added {
                    continue;
                }
                if (p.retrying || p.rewind.is_some()) && p.in_flight > 0 {
                    continue;
                }
                // A batch that may have been written is retried alone: later
                // batches written meanwhile could push it out of the broker's
                // memory of a producer's last five batches, and its retry
                // would then be refused as out of order instead of being
                // recognised as a duplicate.
                if p.ambiguous_in_flight > 0 {
                    continue;
                }
                // Until the broker has acknowledged a first batch of this
                // epoch, it accepts any sequence from us (it does not know
                // the producer yet): a later batch could then be written
                // before an earlier one that failed (e.g. a topic still
                // being created). One probe batch at a time avoids that.
                if idem.is_some() && p.last_acked < 0 && p.in_flight > 0 {
                    continue;
                }
                if p.broken {
                    continue;
                }
                // Ready?
                let front_ready = match p.queue.front() {
                    Some(b) => b.retry_at.is_none_or(|at| at <= now),
                    None => p
                        .open
                        .as_ref()
                        .is_some_and(|o| force || o.linger_end(cfg.linger) <= now),
                };
                if !front_ready {
                    continue;
                }
                if resolving && p.queue.front().is_none_or(|b| b.sequence.is_none()) {
                    // Only batches of the current epoch go out before a bump.
                    continue;
                }
                let Some(broker) = leader(&t.name, partition) else {
                    if !no_leader.iter().any(|n| **n == *t.name) {
                        no_leader.push(t.name.to_string());
                    }
                    continue;
                };
                if !can_send(broker) {
                    continue;
                }
                let size_so_far = sizes.get(&broker).copied().unwrap_or(0);
                let next_size = match p.queue.front() {
                    Some(b) => b.size(),
                    None => p.open.as_ref().map_or(0, |o| o.writer.uncompressed_size()),
                };
                if size_so_far > 0 && size_so_far + next_size > cfg.max_request_size {
                    continue;
                }
                if p.rewind.is_some() {
                    p.apply_rewind();
                }
                p.retrying = false;
                let mut batch = match p.queue.pop_front() {
                    Some(b) => b,
                    None => match p.take_open() {
                        Some(open) => into_batch(open, cfg),
                        None => continue,
                    },
                };
                let state = match (idem, batch.sequence) {
                    (None, _) => ProducerState::NONE,
                    (Some(_), Some(s)) => s,
                    (Some(i), None) => {
                        let s = ProducerState {
                            producer_id: i.producer_id,
                            epoch: i.epoch,
                            base_sequence: p.next_seq,
                        };
                        p.next_seq = increment_sequence(p.next_seq, batch.record_count);
                        batch.sequence = Some(s);
                        s
                    }
                };
                batch.attempts += 1;
                batch.retry_at = None;
                p.in_flight += 1;
                if batch.ambiguous {
                    p.ambiguous_in_flight += 1;
                }
                drained += 1;
                sizes.insert(broker, size_so_far + next_size);
                match requests.iter_mut().find(|r| r.broker == broker) {
                    Some(r) => r.batches.push((batch, state)),
                    None => requests.push(Drained {
                        broker,
                        batches: vec![(batch, state)],
                    }),
                }
            }
        }
        self.in_flight += drained;
        requests
    }

    /// Applies the result of sending `batch`.
    pub(crate) fn complete(
        &mut self,
        mut batch: ProducerBatch,
        result: SendResult,
        now: Instant,
    ) -> Followup {
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut followup = Followup::default();
        let idempotent = self.idem.is_some();
        let current_epoch = self.idem.map(|i| (i.producer_id, i.epoch));
        let Some(p) = self.topics.get_mut(batch.topic().as_ref()).and_then(|t| {
            usize::try_from(batch.partition())
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        }) else {
            // Cannot happen: partitions are never removed.
            self.finish(
                batch,
                Outcome::Failed(Failure::Local {
                    kind: ErrorKind::Protocol,
                    message: "batch of an unknown partition".into(),
                }),
            );
            return followup;
        };
        p.in_flight = p.in_flight.saturating_sub(1);
        // As it was when sent; updated from this result below.
        if batch.ambiguous {
            p.ambiguous_in_flight = p.ambiguous_in_flight.saturating_sub(1);
        }
        enum Next {
            Done(Outcome),
            Retry {
                ambiguous: bool,
            },
            /// Failed for good; `written_maybe` says if it may be in the
            /// log; `already_passed` if later sequences were written already
            /// (no hole to close).
            Fail {
                failure: Failure,
                written_maybe: bool,
                already_passed: bool,
            },
        }
        let next = match result {
            SendResult::Acked {
                base_offset,
                log_append_time,
            } => Next::Done(Outcome::Acked {
                base_offset,
                log_append_time,
            }),
            SendResult::Error { code, message } => {
                batch.last_kind = Some(ErrorKind::Kafka(code));
                batch.last_error = Some(match &message {
                    Some(m) if !m.is_empty() => format!("{} ({m})", code.name()),
                    _ => code.name().to_string(),
                });
                match code {
                    // The broker already has this batch (an earlier attempt
                    // got through); it no longer knows the offsets.
                    ErrorCode::DUPLICATE_SEQUENCE_NUMBER if idempotent => {
                        Next::Done(Outcome::Acked {
                            base_offset: None,
                            log_append_time: None,
                        })
                    }
                    ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER if idempotent => {
                        let base = batch.sequence.map_or(-1, |s| s.base_sequence);
                        let expected = p.expected_sequence();
                        if base == expected {
                            // Nothing of ours is missing before this batch,
                            // yet the broker expects another sequence: it lost
                            // records it had acknowledged.
                            p.broken = true;
                            Next::Fail {
                                failure: Failure::DataLoss(format!(
                                    "the broker rejected sequence {base} as out of order although every \
                                     earlier batch was acknowledged: acknowledged records of this \
                                     partition were lost by the broker"
                                )),
                                written_maybe: false,
                                already_passed: false,
                            }
                        } else if sequence_before(base, expected) && batch.ambiguous {
                            // The broker has later batches and no longer
                            // remembers this one: an earlier attempt may
                            // have been written, or not.
                            Next::Fail {
                                failure: Failure::Uncertain(format!(
                                    "batch with sequence {base} was sent {} time(s) without a \
                                     definite answer and is now refused as out of order (the \
                                     broker expects {expected}): it may or may not have been \
                                     written",
                                    batch.attempts
                                )),
                                written_maybe: true,
                                already_passed: true,
                            }
                        } else if sequence_before(base, expected) {
                            // A later batch was written first (possible only
                            // while the broker did not know this producer):
                            // this one can no longer go in order. Refused, so
                            // not written; the error says why.
                            Next::Fail {
                                failure: Failure::Kafka {
                                    code: ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                                    message: Some(format!(
                                        "batch with sequence {base} was overtaken by later batches \
                                         (the broker expects {expected}); it was not written"
                                    )),
                                },
                                written_maybe: false,
                                already_passed: true,
                            }
                        } else {
                            // An earlier batch is missing (being retried).
                            Next::Retry { ambiguous: false }
                        }
                    }
                    // In a transaction these end it: the producer was fenced
                    // (fatal), or its state is gone and the epoch must be
                    // bumped after the abort. Refused, so not written.
                    ErrorCode::UNKNOWN_PRODUCER_ID
                    | ErrorCode::INVALID_PRODUCER_EPOCH
                    | ErrorCode::PRODUCER_FENCED
                    | ErrorCode::INVALID_TXN_STATE
                    | ErrorCode::INVALID_PRODUCER_ID_MAPPING
                        if self.cfg.transactional =>
                    {
                        p.broken = true;
                        Next::Fail {
                            failure: Failure::Kafka { code, message },
                            written_maybe: false,
                            already_passed: false,
                        }
                    }
                    ErrorCode::UNKNOWN_PRODUCER_ID | ErrorCode::INVALID_PRODUCER_EPOCH
                        if idempotent =>
                    {
                        let stale = batch
                            .sequence
                            .is_some_and(|s| Some((s.producer_id, s.epoch)) != current_epoch);
                        if !stale {
                            p.broken = true;
                        }
                        // Refused, so not written: safe to renumber and resend.
                        Next::Retry { ambiguous: false }
                    }
                    // Written by the leader, but replication did not finish in time.
                    ErrorCode::REQUEST_TIMED_OUT | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND => {
                        Next::Retry { ambiguous: true }
                    }
                    c if c.is_retriable() => {
                        if c.is_leader_moved() {
                            followup.refresh_metadata = true;
                        }
                        Next::Retry { ambiguous: false }
                    }
                    c => Next::Fail {
                        failure: Failure::Kafka { code: c, message },
                        written_maybe: false,
                        already_passed: false,
                    },
                }
            }
            SendResult::Transport {
                retriable,
                ambiguous,
                kind,
                message,
            } => {
                batch.last_error = Some(message.clone());
                batch.last_kind = Some(kind);
                followup.refresh_metadata = true;
                if retriable {
                    Next::Retry { ambiguous }
                } else {
                    Next::Fail {
                        failure: Failure::Local { kind, message },
                        written_maybe: ambiguous,
                        already_passed: false,
                    }
                }
            }
        };
        // Records without a key avoid a partition whose sends fail.
        p.stalled = matches!(next, Next::Retry { .. });
        match next {
            Next::Done(outcome) => {
                if batch.sequence.map(|s| (s.producer_id, s.epoch)) == current_epoch {
                    if let Some(last) = batch.last_sequence() {
                        p.last_acked = last;
                    }
                }
                self.finish(batch, outcome);
            }
            Next::Retry { ambiguous } => {
                batch.ambiguous |= ambiguous;
                if let Some(failure) = self.aborting.clone() {
                    self.fail_sequenced(batch, failure);
                } else if now >= batch.deadline {
                    self.expire(batch);
                } else if batch.attempts > self.cfg.retries {
                    let failure = Failure::RetriesExhausted {
                        attempts: batch.attempts,
                        uncertain: batch.ambiguous,
                        kind: batch.last_kind.unwrap_or(ErrorKind::Connection),
                        last_error: batch.last_error.clone(),
                    };
                    self.fail_sequenced(batch, failure);
                } else {
                    let backoff = batch
                        .backoff
                        .get_or_insert_with(|| Backoff::new(&self.cfg.retry_backoff, None));
                    batch.retry_at = Some(now + backoff.next_delay());
                    p.retrying = true;
                    p.requeue(batch);
                }
            }
            Next::Fail {
                failure,
                written_maybe,
                already_passed,
            } => {
                batch.ambiguous |= written_maybe;
                if already_passed {
                    self.finish(batch, Outcome::Failed(failure));
                } else {
                    self.fail_sequenced(batch, failure);
                }
            }
        }
        if self.idem.is_some() && self.any_broken() {
            if let Some(i) = self.idem.as_mut() {
                i.bump_required = true;
            }
        }
        followup
    }

    fn any_broken(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .any(|p| p.broken)
    }

    /// Fails a batch that is not queued any more, keeping the partition's
    /// sequence consistent: a batch that was surely not written leaves a
    /// hole to close (rewind); one that may have been written makes the
    /// partition's state unknown (broken, epoch bump).
    fn fail_sequenced(&mut self, batch: ProducerBatch, failure: Failure) {
        let current = self.idem.map(|i| (i.producer_id, i.epoch));
        if let Some(s) = batch.sequence {
            if Some((s.producer_id, s.epoch)) == current {
                if let Some(p) = self.partition_mut(batch.topic().clone(), batch.partition()) {
                    if batch.ambiguous {
                        p.broken = true;
                    } else if !p.broken && p.rewind.is_none_or(|(id, _)| batch.id < id) {
                        p.rewind = Some((batch.id, s.base_sequence));
                    }
                }
                if batch.ambiguous {
                    if let Some(i) = self.idem.as_mut() {
                        i.bump_required = true;
                    }
                }
            }
        }
        self.finish(batch, Outcome::Failed(failure));
    }

    fn expire(&mut self, batch: ProducerBatch) {
        let failure = Failure::DeliveryTimeout {
            attempts: batch.attempts,
            uncertain: batch.ambiguous,
            last_error: batch.last_error.clone(),
        };
        self.fail_sequenced(batch, failure);
    }

    fn partition_mut(&mut self, topic: Arc<str>, partition: i32) -> Option<&mut PartitionState> {
        self.topics.get_mut(&topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        })
    }

    /// Fails the batches (queued or still open) whose delivery timeout passed.
    pub(crate) fn expire_batches(&mut self, now: Instant) {
        let timeout = self.cfg.delivery_timeout;
        let mut expired = Vec::new();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                // Deadlines grow with ids, so expired batches are at the front.
                while p.queue.front().is_some_and(|b| b.deadline <= now) {
                    if let Some(b) = p.queue.pop_front() {
                        expired.push(b);
                    }
                }
                if p.queue.is_empty() && p.open.as_ref().is_some_and(|o| o.created + timeout <= now)
                {
                    if let Some(open) = p.take_open() {
                        expired.push(into_batch(open, &self.cfg));
                    }
                }
            }
        }
        for b in expired {
            self.expire(b);
        }
    }

    /// When the sender must look again: the earliest linger end, retry time
    /// or delivery deadline of any buffered batch.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| {
            next = Some(next.map_or(at, |n| n.min(at)));
        };
        for p in self.topics.values().flat_map(|t| t.partitions.iter()) {
            if let Some(b) = p.queue.front() {
                consider(b.deadline);
                if let Some(at) = b.retry_at {
                    consider(at);
                }
            } else if let Some(o) = &p.open {
                consider(o.linger_end(self.cfg.linger));
                consider(o.created + self.cfg.delivery_timeout);
            }
        }
        next
    }

    /// Completes a batch and returns its bytes to the buffer.
    fn finish(&mut self, mut batch: ProducerBatch, outcome: Outcome) {
        if let Outcome::Failed(f) = &outcome {
            if self.cfg.transactional && self.aborting.is_none() && self.txn_failure.is_none() {
                self.txn_failure = Some((batch.topic().clone(), batch.partition(), f.clone()));
            }
        }
        self.incomplete.remove(&batch.id);
        self.buffered = self.buffered.saturating_sub(batch.accounted);
        if self.room_waiters > 0 {
            self.room.notify_waiters();
        }
        batch.shared.complete(outcome);
        if self.spare.len() < SPARE_BUFFERS {
            if let Some(buf) = batch
                .take_buffer()
                .filter(|b| b.capacity() <= self.cfg.batch_size.saturating_mul(2))
            {
                self.spare.push(buf);
            }
        }
    }
}

/// Whether sequence `a` comes before `b`, in Kafka's sequence space that
/// wraps from `i32::MAX` to 0 (the nearer way round decides).
fn sequence_before(a: i32, b: i32) -> bool {
    let d = (i64::from(b) - i64::from(a)).rem_euclid(1 << 31);
    d != 0 && d < 1 << 30
}

/// Whether `more` bytes still fit the open batch (an empty batch takes any
/// record, however large).
fn fits(open: &OpenBatch, more: usize, batch_size: usize) -> bool {
    open.writer.is_empty() || open.writer.uncompressed_size() + more <= batch_size
}

fn close_open(p: &mut PartitionState, cfg: &AccumulatorConfig) {
    if let Some(open) = p.take_open() {
        p.queue.push_back(into_batch(open, cfg));
    }
}

fn into_batch(open: OpenBatch, cfg: &AccumulatorConfig) -> ProducerBatch {
    // The delivery timeout runs from the batch's creation, as in Java: the
    // first record of a batch waits at most that long.
    ProducerBatch::new(
        open.id,
        open.shared,
        open.created + cfg.delivery_timeout,
        open.accounted,
        open.writer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use time::OffsetDateTime;

    const MS: Duration = Duration::from_millis(1);

    fn config(idempotent: bool) -> AccumulatorConfig {
        AccumulatorConfig {
            transactional: false,
            retries: u32::MAX,
            batch_size: 1_000,
            linger: 5 * MS,
            delivery_timeout: Duration::from_secs(10),
            compression: Compression::None,
            idempotent,
            max_in_flight_per_partition: if idempotent { 5 } else { 1 },
            max_request_size: 1 << 20,
            retry_backoff: BackoffConfig {
                initial: 10 * MS,
                max: 10 * MS,
                multiplier: 1.0,
                jitter: 0.0,
            },
            buffer_memory: MEMORY,
        }
    }

    struct Fixture {
        acc: Accumulator,
        t0: Instant,
    }

    const MEMORY: usize = 1 << 20;

    fn fixture(idempotent: bool, partitions: i32) -> Fixture {
        let mut acc = Accumulator::new(config(idempotent), Arc::new(Notify::new()));
        acc.set_partition_count("t", partitions);
        if idempotent {
            acc.set_producer_id(1000, 0);
        }
        Fixture {
            acc,
            t0: Instant::now(),
        }
    }

    fn record(key: Option<&str>, value_len: usize) -> Record {
        Record {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: vec![],
            timestamp: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("ts"),
        }
    }

    impl Fixture {
        /// Appends a record, taking its bytes from the buffer as `send` does.
        fn send(
            &mut self,
            partition: Option<i32>,
            key: Option<&str>,
            value_len: usize,
        ) -> Appended {
            self.send_with(&Partitioner::Default, partition, key, value_len)
        }

        fn send_with(
            &mut self,
            partitioner: &Partitioner,
            partition: Option<i32>,
            key: Option<&str>,
            value_len: usize,
        ) -> Appended {
            let r = record(key, value_len);
            let size = 50 + value_len;
            self.acc
                .append("t", partition, partitioner, &r, &[], size, &|| self.t0)
                .expect("append")
        }

        /// Drains with every partition led by broker `1 + partition % brokers`.
        fn drain_at(&mut self, after: Duration, brokers: i32) -> Vec<Drained> {
            let mut no_leader = Vec::new();
            let out = self.acc.drain(
                self.t0 + after,
                |_, p| Some(1 + p % brokers),
                |_| true,
                &mut no_leader,
            );
            assert!(no_leader.is_empty());
            out
        }

        fn complete(&mut self, b: ProducerBatch, r: SendResult, after: Duration) {
            self.acc.complete(b, r, self.t0 + after);
        }
    }

    fn acked(offset: i64) -> SendResult {
        SendResult::Acked {
            base_offset: Some(offset),
            log_append_time: None,
        }
    }

    fn kafka(code: ErrorCode) -> SendResult {
        SendResult::Error {
            code,
            message: None,
        }
    }

    fn disconnected() -> SendResult {
        SendResult::Transport {
            retriable: true,
            ambiguous: true,
            kind: ErrorKind::Connection,
            message: "connection reset".into(),
        }
    }

    /// All drained batches, flattened, with their producer state.
    fn flat(requests: Vec<Drained>) -> Vec<(ProducerBatch, ProducerState)> {
        requests.into_iter().flat_map(|r| r.batches).collect()
    }

    fn outcome(a: &Appended) -> Option<Outcome> {
        a.shared.outcome().cloned()
    }

    #[test]
    fn keyed_records_follow_murmur2_and_explicit_partitions_win() {
        let mut f = fixture(false, 6);
        for key in ["a", "b", "user-42", "21", "foobar"] {
            let a = f.send(None, Some(key), 10);
            assert_eq!(
                a.shared.partition,
                key_partition(key.as_bytes(), 6),
                "key {key}"
            );
        }
        let a = f.send(Some(4), Some("a"), 10);
        assert_eq!(a.shared.partition, 4);
        let r = record(None, 1);
        assert!(matches!(
            f.acc
                .append("t", Some(6), &Partitioner::Default, &r, &[], 10, &|| f.t0),
            Err(AppendError::InvalidPartition {
                partition: 6,
                count: 6
            })
        ));
        assert!(matches!(
            f.acc
                .append("other", None, &Partitioner::Default, &r, &[], 10, &|| f.t0),
            Err(AppendError::UnknownTopic)
        ));
    }

    #[test]
    fn records_without_key_stick_to_a_partition_until_its_batch_closes() {
        let mut f = fixture(false, 4);
        let first = f.send(None, None, 100).shared.partition;
        // ~150 bytes each against a 1000-byte batch: a few fit.
        let mut same = 1;
        let mut next = None;
        for _ in 0..20 {
            let p = f.send(None, None, 100).shared.partition;
            if p == first && next.is_none() {
                same += 1;
            } else if next.is_none() {
                next = Some(p);
            }
        }
        assert!(same >= 4, "{same} records stayed on partition {first}");
        assert_ne!(
            next,
            Some(first),
            "a closed batch moves on to another partition"
        );
        assert!(next.is_some());
        // Draining the open batch also moves records elsewhere.
        let mut f = fixture(false, 4);
        let p0 = f.send(None, None, 10).shared.partition;
        let drained = flat(f.drain_at(10 * MS, 1));
        assert_eq!(drained.len(), 1);
        let p1 = f.send(None, None, 10).shared.partition;
        assert_ne!(p0, p1);
    }

    #[test]
    fn records_without_key_avoid_partitions_without_a_leader() {
        let mut f = fixture(false, 4);
        // Only partitions 1 and 2 have a leader: records without a key go
        // there, batch after batch, however the sticky choice falls.
        f.acc.set_leaders(|_, p| p == 1 || p == 2);
        let mut used = std::collections::HashSet::new();
        for _ in 0..200 {
            used.insert(f.send(None, None, 100).shared.partition);
        }
        assert_eq!(used, [1, 2].into_iter().collect());
        // Partition 2 loses its leader: the sticky partition moves at once.
        f.acc.set_leaders(|_, p| p == 1);
        for _ in 0..20 {
            assert_eq!(f.send(None, None, 100).shared.partition, 1);
        }
        // Keyed and explicit records are placed as before.
        assert_eq!(f.send(Some(0), None, 10).shared.partition, 0);
        // With no leader known at all, any partition is used.
        f.acc.set_leaders(|_, _| false);
        let mut used = std::collections::HashSet::new();
        for _ in 0..400 {
            used.insert(f.send(None, None, 100).shared.partition);
        }
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn records_without_key_avoid_partitions_whose_sends_fail() {
        // A leader killed: its partition's batch fails to send and waits
        // for a retry. Records without a key go to the other partitions
        // (before, a quarter of them kept piling onto it), until a send to
        // it succeeds again.
        let mut f = fixture(false, 4);
        f.acc.set_leaders(|_, _| true);
        let first = f.send(None, None, 10).shared.partition;
        let mut batches = flat(f.drain_at(10 * MS, 1));
        assert_eq!(batches.len(), 1);
        let (batch, _) = batches.pop().unwrap();
        f.complete(batch, disconnected(), 11 * MS);
        let mut used = std::collections::HashSet::new();
        for _ in 0..400 {
            used.insert(f.send(None, None, 100).shared.partition);
        }
        assert!(!used.contains(&first), "{used:?} includes {first}");
        assert_eq!(used.len(), 3);
        // Keyed and explicit records still go where they belong.
        assert_eq!(f.send(Some(first), None, 10).shared.partition, first);
        // Its retry succeeds: the partition takes records again.
        let retried: Vec<_> = flat(f.drain_at(40 * MS, 1))
            .into_iter()
            .filter(|(b, _)| b.partition() == first)
            .collect();
        assert!(!retried.is_empty());
        for (b, _) in retried {
            f.complete(b, acked(0), 41 * MS);
        }
        let mut used = std::collections::HashSet::new();
        for _ in 0..400 {
            used.insert(f.send(None, None, 100).shared.partition);
        }
        assert!(used.contains(&first), "{used:?} lacks {first}");
    }

    #[test]
    fn round_robin_cycles_through_partitions() {
        let mut f = fixture(false, 3);
        let parts: Vec<i32> = (0..6)
            .map(|_| {
                f.send_with(&Partitioner::RoundRobin, None, Some("same-key"), 1)
                    .shared
                    .partition
            })
            .collect();
        assert_eq!(parts, [0, 1, 2, 0, 1, 2]);
        let custom = Partitioner::Custom(Arc::new(|_, _, n| n - 1));
        assert_eq!(f.send_with(&custom, None, None, 1).shared.partition, 2);
    }

    #[test]
    fn batches_wait_for_linger_or_size_or_flush() {
        let mut f = fixture(false, 2);
        f.send(Some(0), None, 10);
        assert!(f.drain_at(Duration::ZERO, 1).is_empty(), "lingering");
        assert!(f.drain_at(4 * MS, 1).is_empty(), "lingering");
        // Due a wake-up's lead before the linger end, so it never leaves later.
        assert_eq!(f.acc.next_wakeup(), Some(f.t0 + 5 * MS - WAKE_LEAD));
        assert_eq!(flat(f.drain_at(5 * MS - WAKE_LEAD, 1)).len(), 1);

        // A full batch is ready at once; the record that did not fit starts
        // the next batch.
        let mut f = fixture(false, 2);
        let mut closed = false;
        for _ in 0..10 {
            closed |= f.send(Some(1), None, 200).wake_sender;
        }
        assert!(closed);
        let ready = flat(f.drain_at(Duration::ZERO, 1));
        assert_eq!(ready.len(), 1);
        assert!(ready[0].0.size() <= 1_000);

        let mut f = fixture(false, 2);
        f.send(Some(0), None, 10);
        let waits = f.acc.begin_flush();
        assert_eq!(waits.len(), 1);
        assert_eq!(
            flat(f.drain_at(Duration::ZERO, 1)).len(),
            1,
            "flush ignores linger"
        );
        f.acc.end_flush();
    }

    #[test]
    fn one_request_per_broker_carries_all_its_partitions() {
        let mut f = fixture(false, 6);
        for p in 0..6 {
            f.send(Some(p), None, 10);
        }
        let requests = f.drain_at(10 * MS, 2);
        assert_eq!(requests.len(), 2, "two brokers, two requests");
        for r in &requests {
            let parts: Vec<i32> = r.batches.iter().map(|(b, _)| b.partition()).collect();
            assert_eq!(parts.len(), 3);
            assert!(parts.iter().all(|p| 1 + p % 2 == r.broker));
        }
        // A broker at its in-flight cap gets nothing.
        let mut f = fixture(false, 2);
        f.send(Some(0), None, 10);
        f.send(Some(1), None, 10);
        let mut nl = Vec::new();
        let r = f
            .acc
            .drain(f.t0 + 10 * MS, |_, p| Some(p), |b| b == 1, &mut nl);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].broker, 1);
        // Partitions without a leader are reported.
        let r = f.acc.drain(f.t0 + 10 * MS, |_, _| None, |_| true, &mut nl);
        assert!(r.is_empty());
        assert_eq!(nl, vec!["t".to_string()]);
    }

    #[test]
    fn request_size_limit_splits_requests() {
        let mut cfg = config(false);
        cfg.max_request_size = 1_500;
        let mut acc = Accumulator::new(cfg, Arc::new(Notify::new()));
        acc.set_partition_count("t", 3);
        let t0 = Instant::now();
        for p in 0..3 {
            acc.append(
                "t",
                Some(p),
                &Partitioner::Default,
                &record(None, 900),
                &[],
                950,
                &|| t0,
            )
            .expect("append");
        }
        let mut nl = Vec::new();
        let first = acc.drain(t0 + 10 * MS, |_, _| Some(1), |_| true, &mut nl);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].batches.len(),
            1,
            "two 900-byte batches exceed 1500"
        );
        let second = acc.drain(t0 + 10 * MS, |_, _| Some(1), |_| true, &mut nl);
        assert_eq!(second[0].batches.len(), 1);
    }

    #[test]
    fn a_full_buffer_refuses_records_until_batches_complete() {
        let mut cfg = config(false);
        cfg.buffer_memory = 1_000;
        let room = Arc::new(Notify::new());
        let mut acc = Accumulator::new(cfg, room.clone());
        acc.set_partition_count("t", 1);
        let t0 = Instant::now();
        let r = record(None, 10);
        let append = |acc: &mut Accumulator| {
            acc.append("t", Some(0), &Partitioner::Default, &r, &[], 400, &|| t0)
        };
        assert!(append(&mut acc).is_ok());
        assert!(append(&mut acc).is_ok());
        assert!(matches!(append(&mut acc), Err(AppendError::Full)));
        assert_eq!(acc.buffered(), 800);
        // A waiting sender is woken when the batch completes.
        let waiter = room.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        acc.waiting_for_room(true);
        let mut nl = Vec::new();
        let (b, _) = acc
            .drain(t0 + 10 * MS, |_, _| Some(1), |_| true, &mut nl)
            .pop()
            .and_then(|r| r.batches.into_iter().next())
            .expect("batch");
        acc.complete(b, acked(0), t0 + 11 * MS);
        assert_eq!(acc.buffered(), 0);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::future::Future::poll(waiter, &mut cx).is_ready());
        assert!(append(&mut acc).is_ok());
    }

    #[test]
    fn memory_is_returned_when_batches_complete() {
        let mut f = fixture(false, 1);
        let a = f.send(Some(0), None, 100);
        assert_eq!(f.acc.buffered(), 150);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, acked(42), 11 * MS);
        assert_eq!(f.acc.buffered(), 0);
        assert!(matches!(
            outcome(&a),
            Some(Outcome::Acked {
                base_offset: Some(42),
                ..
            })
        ));
        assert!(f.acc.is_empty());
    }

    #[test]
    fn completed_batches_lend_their_buffers_to_new_ones() {
        use crate::protocol::record::{decode_batches, DecodeLimits};
        for compression in [Compression::None, Compression::Lz4, Compression::Gzip] {
            // Uncompressed and LZ4 batches are built in the buffer that is
            // sent; gzip compresses into a new one and leaves the records'
            // buffer behind.
            let in_place = compression != Compression::Gzip;
            let mut f = fixture(false, 1);
            f.acc.cfg.compression = compression;
            f.send(Some(0), None, 100);
            let (mut b, state) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
            let first = b.encode(state).expect("encode").as_ptr();
            f.complete(b, acked(0), 11 * MS);
            assert_eq!(f.acc.spare.len(), 1, "{compression:?}");

            f.send(Some(0), None, 200);
            assert!(f.acc.spare.is_empty(), "the new batch took the buffer");
            let (mut b, state) = flat(f.drain_at(30 * MS, 1)).pop().expect("batch");
            let bytes = b.encode(state).expect("encode");
            if in_place {
                assert_eq!(
                    bytes.as_ptr(),
                    first,
                    "{compression:?} written in place of the first"
                );
            }
            let decoded = decode_batches(bytes.clone(), &DecodeLimits::default()).expect("decode");
            let records = &decoded.batches[0].records;
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].value.as_deref(), Some(&[b'v'; 200][..]));
            // Still referenced (say, by a connection writing it): the sent
            // bytes must not be written over.
            f.complete(b, acked(1), 31 * MS);
            let kept = usize::from(!in_place);
            assert_eq!(f.acc.spare.len(), kept, "{compression:?}");
            drop(bytes);
        }
    }

    #[test]
    fn idempotent_batches_get_consecutive_sequences_kept_across_retries() {
        let mut f = fixture(true, 1);
        ack_a_first_batch(&mut f, 0);
        let mut drained = Vec::new();
        for _ in 0..3 {
            for _ in 0..4 {
                f.send(Some(0), None, 10);
            }
            f.acc.begin_flush();
            drained.extend(flat(f.drain_at(Duration::ZERO, 1)));
        }
        let seqs: Vec<i32> = drained.iter().map(|(_, s)| s.base_sequence).collect();
        assert_eq!(seqs, [1, 5, 9]);
        assert!(drained
            .iter()
            .all(|(_, s)| s.producer_id == 1000 && s.epoch == 0));

        // The first fails retriably, the others come back out of order.
        let mut it = drained.into_iter();
        let (b0, _) = it.next().expect("b0");
        let (b1, _) = it.next().expect("b1");
        let (b2, _) = it.next().expect("b2");
        f.complete(b0, kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER), 1 * MS);
        // Still two in flight: the partition waits for them.
        assert!(f.drain_at(100 * MS, 1).is_empty());
        f.complete(b1, kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER), 2 * MS);
        f.complete(b2, disconnected(), 3 * MS);
        // Nothing in flight: retried in the original order with the same
        // sequences, the first alone at first (one batch per partition and
        // request), then the next ones.
        let mut again = Vec::new();
        for _ in 0..3 {
            again.extend(flat(f.drain_at(100 * MS, 1)));
        }
        let seqs: Vec<i32> = again.iter().map(|(_, s)| s.base_sequence).collect();
        assert_eq!(seqs, [1, 5, 9]);
        assert!(
            again[2].0.ambiguous,
            "the disconnected attempt may have been written"
        );
        let mut shared = Vec::new();
        for (b, _) in again {
            shared.push(b.shared.clone());
            f.complete(b, acked(7), 101 * MS);
        }
        assert!(shared
            .iter()
            .all(|s| matches!(s.outcome(), Some(Outcome::Acked { .. }))));
        assert!(f.acc.is_empty());
        assert!(!f.acc.wants_producer_id());
    }

    #[test]
    fn a_batch_fails_with_its_last_error_once_its_retries_are_used() {
        for idempotent in [false, true] {
            let mut f = fixture(idempotent, 1);
            f.acc.cfg.retries = 1;
            let a = f.send(Some(0), None, 10);
            let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
            f.complete(b, kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER), 11 * MS);
            assert!(outcome(&a).is_none(), "one retry left");
            let (b, _) = flat(f.drain_at(100 * MS, 1)).pop().expect("retry");
            assert_eq!(b.attempts, 2);
            f.complete(b, kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER), 101 * MS);
            let Some(Outcome::Failed(failure)) = outcome(&a) else {
                panic!("expected a failure, got {:?}", outcome(&a));
            };
            let err = failure.to_error("t", 0);
            assert_eq!(
                err.kind(),
                ErrorKind::Kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER),
                "{err}"
            );
            assert!(err.to_string().contains("2 attempt(s)"), "{err}");
            assert!(f.acc.is_empty());
            // Later records of the partition still go out.
            let c = f.send(Some(0), None, 10);
            let (b, _) = flat(f.drain_at(200 * MS, 1)).pop().expect("next batch");
            f.complete(b, acked(9), 201 * MS);
            assert!(matches!(outcome(&c), Some(Outcome::Acked { .. })));
        }
    }

    #[test]
    fn duplicate_sequence_is_success_without_offset() {
        let mut f = fixture(true, 1);
        let a = f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, kafka(ErrorCode::DUPLICATE_SEQUENCE_NUMBER), 11 * MS);
        assert!(matches!(
            outcome(&a),
            Some(Outcome::Acked {
                base_offset: None,
                ..
            })
        ));
    }

    #[test]
    fn a_producer_id_failure_fails_the_waiting_batches_only_if_retrying_cannot_help() {
        let mut f = fixture(true, 1);
        f.acc = Accumulator::new(config(true), Arc::new(Notify::new()));
        f.acc.set_partition_count("t", 1);
        let a = f.send(Some(0), None, 10);
        assert!(f.acc.wants_producer_id());
        assert!(
            f.acc.producer_id_failed(&Error::new(ErrorKind::Connection)),
            "a broken connection is retried"
        );
        assert!(outcome(&a).is_none());
        let refused = Error::kafka(ErrorCode::CLUSTER_AUTHORIZATION_FAILED, None);
        assert!(
            !f.acc.producer_id_failed(&refused),
            "nothing waits for an id any more"
        );
        assert!(matches!(
            outcome(&a),
            Some(Outcome::Failed(Failure::Local {
                kind: ErrorKind::Kafka(ErrorCode::CLUSTER_AUTHORIZATION_FAILED),
                ..
            }))
        ));
    }

    #[test]
    fn a_request_that_may_have_been_written_is_not_resent_with_acks_0() {
        let retriable = |e: &Error, acks_none| match SendResult::transport(e, acks_none) {
            SendResult::Transport { retriable, .. } => retriable,
            other => panic!("{other:?}"),
        };
        let unwritten = Error::new(ErrorKind::Connection);
        let maybe_written = Error::new(ErrorKind::Connection).with_ambiguous(true);
        assert!(retriable(&unwritten, true));
        assert!(retriable(&maybe_written, false));
        assert!(!retriable(&maybe_written, true));
        assert!(!retriable(&Error::new(ErrorKind::Protocol), false));
    }

    #[test]
    fn nothing_is_drained_before_the_producer_id() {
        let mut acc = Accumulator::new(config(true), Arc::new(Notify::new()));
        acc.set_partition_count("t", 1);
        let t0 = Instant::now();
        assert!(!acc.wants_producer_id(), "no data, no request");
        acc.append(
            "t",
            Some(0),
            &Partitioner::Default,
            &record(None, 1),
            &[],
            60,
            &|| t0,
        )
        .expect("append");
        assert!(acc.wants_producer_id());
        let mut nl = Vec::new();
        assert!(acc
            .drain(t0 + 10 * MS, |_, _| Some(1), |_| true, &mut nl)
            .is_empty());
        acc.set_producer_id(5, 3);
        let r = acc.drain(t0 + 10 * MS, |_, _| Some(1), |_| true, &mut nl);
        assert_eq!(
            r[0].batches[0].1,
            ProducerState {
                producer_id: 5,
                epoch: 3,
                base_sequence: 0
            }
        );
    }

    #[test]
    fn gap_reported_by_the_broker_is_data_loss_and_bumps_the_epoch() {
        let mut f = fixture(true, 2);
        // Partition 0: batch acked, then the next is refused as out of order
        // although nothing is missing: the broker lost acknowledged data.
        f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, acked(0), 11 * MS);
        let lost = f.send(Some(0), None, 10);
        // Partition 1 has a batch whose fate is unknown (disconnect).
        let uncertain = f.send(Some(1), None, 10);
        let batches = flat(f.drain_at(20 * MS, 2));
        assert_eq!(batches.len(), 2);
        for (b, _) in batches {
            let r = if b.partition() == 0 {
                kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            } else {
                disconnected()
            };
            f.complete(b, r, 21 * MS);
        }
        assert!(matches!(
            outcome(&lost),
            Some(Outcome::Failed(Failure::DataLoss(_)))
        ));
        // Before bumping, the healthy partition resolves its batch under the
        // old epoch: it is re-sent with its old sequence.
        assert!(!f.acc.wants_producer_id());
        let again = flat(f.drain_at(100 * MS, 2));
        assert_eq!(again.len(), 1);
        let (b, s) = again.into_iter().next().expect("retry");
        assert_eq!((b.partition(), s.epoch, s.base_sequence), (1, 0, 0));
        // ... and it times out again, then its delivery deadline passes.
        f.complete(b, disconnected(), Duration::from_secs(11));
        assert!(matches!(
            outcome(&uncertain),
            Some(Outcome::Failed(Failure::DeliveryTimeout {
                uncertain: true,
                ..
            }))
        ));
        assert!(f.acc.wants_producer_id());
        assert_eq!(f.acc.bump_from(), Some((1000, 0)));

        // New records wait for the bump, then start at sequence 0.
        let fresh = f.send(Some(0), None, 10);
        assert!(f.drain_at(Duration::from_secs(12), 2).is_empty());
        f.acc.set_producer_id(1000, 1);
        let (b, s) = flat(f.drain_at(Duration::from_secs(12), 2))
            .pop()
            .expect("batch");
        assert_eq!((s.epoch, s.base_sequence), (1, 0));
        f.complete(b, acked(1), Duration::from_secs(12));
        assert!(outcome(&fresh).is_some());
    }

    #[test]
    fn batches_of_unknown_fate_fail_as_uncertain_at_an_epoch_bump() {
        let mut f = fixture(true, 1);
        let a = f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        // Ambiguous, then the producer id becomes unknown to the broker.
        f.complete(b, disconnected(), 11 * MS);
        let (b, _) = flat(f.drain_at(100 * MS, 1)).pop().expect("retry");
        f.complete(b, kafka(ErrorCode::UNKNOWN_PRODUCER_ID), 101 * MS);
        assert!(f.acc.wants_producer_id());
        f.acc.set_producer_id(1000, 1);
        match outcome(&a) {
            Some(Outcome::Failed(Failure::Uncertain(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
        let e = Failure::Uncertain("x".into()).to_error("t", 0);
        assert_eq!(e.kind(), ErrorKind::DataLoss);
    }

    #[test]
    fn refused_batches_are_renumbered_after_an_epoch_bump() {
        let mut f = fixture(true, 1);
        let a = f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, kafka(ErrorCode::UNKNOWN_PRODUCER_ID), 11 * MS);
        assert!(f.acc.wants_producer_id());
        f.acc.set_producer_id(2000, 0);
        let (b, s) = flat(f.drain_at(100 * MS, 1)).pop().expect("batch");
        assert_eq!(
            s,
            ProducerState {
                producer_id: 2000,
                epoch: 0,
                base_sequence: 0
            }
        );
        f.complete(b, acked(3), 101 * MS);
        assert!(matches!(outcome(&a), Some(Outcome::Acked { .. })));
    }

    /// Sends one record to `partition` and acknowledges it, so the broker
    /// knows the producer there (lifting the one-probe-batch limit).
    fn ack_a_first_batch(f: &mut Fixture, partition: i32) {
        f.send(Some(partition), None, 1);
        f.acc.begin_flush();
        let (b, s) = flat(f.drain_at(Duration::ZERO, 1))
            .pop()
            .expect("first batch");
        assert_eq!(s.base_sequence, 0);
        f.complete(b, acked(0), Duration::ZERO);
        f.acc.end_flush();
    }

    #[test]
    fn one_probe_batch_until_the_first_acknowledgement() {
        let mut f = fixture(true, 1);
        f.send(Some(0), None, 10);
        f.acc.begin_flush();
        let first = flat(f.drain_at(Duration::ZERO, 1));
        assert_eq!(first.len(), 1);
        f.send(Some(0), None, 10);
        assert!(
            f.drain_at(Duration::ZERO, 1).is_empty(),
            "waits for the probe"
        );
        let (b, _) = first.into_iter().next().expect("probe");
        f.complete(b, acked(0), MS);
        f.send(Some(0), None, 10);
        // Now batches are pipelined.
        assert_eq!(flat(f.drain_at(MS, 1)).len(), 1);
        f.send(Some(0), None, 10);
        assert_eq!(flat(f.drain_at(MS, 1)).len(), 1);
    }

    #[test]
    fn a_batch_overtaken_by_later_ones_fails_without_data_loss() {
        let mut f = fixture(true, 1);
        ack_a_first_batch(&mut f, 0);
        let overtaken = f.send(Some(0), None, 10);
        f.acc.begin_flush();
        let (a, _) = flat(f.drain_at(Duration::ZERO, 1)).pop().expect("a");
        f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(Duration::ZERO, 1)).pop().expect("b");
        // b got in first (the broker had lost the producer's state), a is
        // refused as out of order behind it.
        f.complete(b, acked(5), MS);
        f.complete(a, kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER), MS);
        match outcome(&overtaken) {
            Some(Outcome::Failed(Failure::Kafka {
                code: ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                ..
            })) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(!f.acc.wants_producer_id());
        assert!(sequence_before(5, 6));
        assert!(sequence_before(i32::MAX, 0), "wraps around");
        assert!(!sequence_before(0, i32::MAX));
        assert!(!sequence_before(3, 3));
    }

    #[test]
    fn a_retry_that_may_have_been_written_goes_out_alone() {
        let mut f = fixture(true, 1);
        ack_a_first_batch(&mut f, 0);
        f.acc.begin_flush();
        let a = f.send(Some(0), None, 10);
        let (ba, _) = flat(f.drain_at(Duration::ZERO, 1)).pop().expect("a");
        // a's answer is lost: it may have been written.
        f.complete(ba, disconnected(), MS);
        f.send(Some(0), None, 10);
        let retry = flat(f.drain_at(100 * MS, 1));
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].0.id, 1, "the retry first");
        // Nothing else of the partition goes out while it is in flight:
        // later batches written meanwhile could push it out of the broker's
        // memory of the last five batches, and its answer would no longer
        // be recognised as a duplicate.
        assert!(flat(f.drain_at(100 * MS, 1)).is_empty());
        let (ba, _) = retry.into_iter().next().expect("retry");
        f.complete(ba, acked(1), 101 * MS);
        assert!(matches!(outcome(&a), Some(Outcome::Acked { .. })));
        assert_eq!(flat(f.drain_at(101 * MS, 1)).len(), 1, "then the rest");
    }

    #[test]
    fn an_overtaken_batch_that_may_have_been_written_is_uncertain() {
        let mut f = fixture(true, 1);
        ack_a_first_batch(&mut f, 0);
        f.acc.begin_flush();
        let a = f.send(Some(0), None, 10);
        let (ba, _) = flat(f.drain_at(Duration::ZERO, 1)).pop().expect("a");
        f.send(Some(0), None, 10);
        let (bb, _) = flat(f.drain_at(Duration::ZERO, 1)).pop().expect("b");
        // a's answer is lost, b is acknowledged: the broker expects what
        // follows b. If a's retry is then refused as out of order (the
        // broker no longer remembers it), a was written or not: nobody can
        // tell, and it must not be reported as not written.
        f.complete(ba, disconnected(), MS);
        f.complete(bb, acked(2), MS);
        let (ba, _) = flat(f.drain_at(100 * MS, 1)).pop().expect("retry");
        f.complete(ba, kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER), 101 * MS);
        match outcome(&a) {
            Some(Outcome::Failed(Failure::Uncertain(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_refused_batch_leaves_no_hole_in_the_sequence() {
        let mut f = fixture(true, 1);
        ack_a_first_batch(&mut f, 0);
        let mut drained = Vec::new();
        let mut appended = Vec::new();
        for _ in 0..3 {
            appended.push(f.send(Some(0), None, 10));
            f.acc.begin_flush();
            drained.extend(flat(f.drain_at(Duration::ZERO, 1)));
        }
        let mut it = drained.into_iter();
        let (b0, _) = it.next().expect("b0");
        let (b1, _) = it.next().expect("b1");
        let (b2, _) = it.next().expect("b2");
        f.complete(b0, acked(0), MS);
        f.complete(b1, kafka(ErrorCode::MESSAGE_TOO_LARGE), MS);
        f.complete(b2, kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER), MS);
        assert!(matches!(
            outcome(&appended[1]),
            Some(Outcome::Failed(Failure::Kafka {
                code: ErrorCode::MESSAGE_TOO_LARGE,
                ..
            }))
        ));
        // The third batch takes the refused one's sequence.
        let (b, s) = flat(f.drain_at(100 * MS, 1)).pop().expect("batch");
        assert_eq!(s.base_sequence, 2);
        f.complete(b, acked(1), 101 * MS);
        let next = f.send(Some(0), None, 10);
        f.acc.begin_flush();
        let (b, s) = flat(f.drain_at(101 * MS, 1)).pop().expect("batch");
        assert_eq!(s.base_sequence, 3);
        f.complete(b, acked(2), 102 * MS);
        assert!(outcome(&next).is_some());
        assert!(!f.acc.wants_producer_id(), "no epoch bump needed");
    }

    #[test]
    fn queued_batches_expire_at_the_delivery_timeout() {
        let mut f = fixture(false, 1);
        let a = f.send(Some(0), None, 10);
        f.acc.expire_batches(f.t0 + Duration::from_secs(9));
        assert!(outcome(&a).is_none());
        f.acc.expire_batches(f.t0 + Duration::from_secs(10));
        match outcome(&a) {
            Some(Outcome::Failed(Failure::DeliveryTimeout {
                uncertain: false,
                attempts: 0,
                ..
            })) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(f.acc.buffered(), 0);
        assert_eq!(
            Failure::DeliveryTimeout {
                attempts: 1,
                uncertain: false,
                last_error: None
            }
            .to_error("t", 0)
            .kind(),
            ErrorKind::Timeout
        );
    }

    #[test]
    fn without_idempotence_one_batch_per_partition_is_in_flight() {
        let mut f = fixture(false, 1);
        f.send(Some(0), None, 10);
        f.acc.begin_flush();
        let first = flat(f.drain_at(Duration::ZERO, 1));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, ProducerState::NONE);
        f.send(Some(0), None, 10);
        assert!(
            f.drain_at(Duration::ZERO, 1).is_empty(),
            "one in flight already"
        );
        let (b, _) = first.into_iter().next().expect("batch");
        f.complete(b, kafka(ErrorCode::REQUEST_TIMED_OUT), MS);
        // The retry goes before the newer batch.
        let (b, _) = flat(f.drain_at(100 * MS, 1)).pop().expect("retry");
        assert_eq!(b.attempts, 2);
        assert!(b.ambiguous);
    }

    #[test]
    fn fatal_errors_fail_the_batch() {
        let mut f = fixture(false, 1);
        let a = f.send(Some(0), None, 10);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED), 11 * MS);
        let e = match outcome(&a) {
            Some(Outcome::Failed(fail)) => fail.to_error("t", 0),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            e.kind(),
            ErrorKind::Kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
        );
        assert_eq!(e.partition(), Some(0));
    }

    #[test]
    fn closing_refuses_new_records_and_drains_at_once() {
        let mut f = fixture(false, 1);
        f.send(Some(0), None, 10);
        f.acc.close();
        assert!(matches!(
            f.acc.append(
                "t",
                Some(0),
                &Partitioner::Default,
                &record(None, 1),
                &[],
                60,
                &|| f.t0
            ),
            Err(AppendError::Closed)
        ));
        assert_eq!(flat(f.drain_at(Duration::ZERO, 1)).len(), 1);
    }

    fn transactional_fixture(partitions: i32) -> Fixture {
        let cfg = AccumulatorConfig {
            transactional: true,
            ..config(true)
        };
        let mut acc = Accumulator::new(cfg, Arc::new(Notify::new()));
        acc.set_partition_count("t", partitions);
        acc.set_producer_id(1000, 0);
        Fixture {
            acc,
            t0: Instant::now(),
        }
    }

    #[test]
    fn transactional_batches_wait_until_their_partition_joins_the_transaction() {
        let mut f = transactional_fixture(2);
        f.send(Some(0), None, 10);
        f.send(Some(1), None, 10);
        assert!(
            !f.acc.wants_producer_id(),
            "the transaction manager owns ids"
        );
        assert!(f.drain_at(10 * MS, 1).is_empty());
        let adding = f.acc.partitions_to_add();
        assert_eq!(adding.len(), 2);
        // Asked for once: the add is in flight.
        assert!(f.acc.partitions_to_add().is_empty());
        f.acc.partitions_added(&adding[..1]);
        let drained = flat(f.drain_at(10 * MS, 1));
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].0.partition(), adding[0].1);
        f.acc.partitions_added(&adding[1..]);
        assert_eq!(flat(f.drain_at(10 * MS, 1)).len(), 1);
        // The next transaction adds them again.
        f.acc.end_transaction();
        f.send(Some(0), None, 10);
        assert!(f.drain_at(10 * MS, 1).is_empty());
        assert_eq!(f.acc.partitions_to_add().len(), 1);
    }

    #[test]
    fn a_failed_batch_fails_the_transaction_and_an_abort_fails_the_rest() {
        let mut f = transactional_fixture(3);
        f.send(Some(0), None, 10);
        let adding = f.acc.partitions_to_add();
        f.acc.partitions_added(&adding);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        assert!(f.acc.txn_failure().is_none());
        f.complete(b, kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED), 11 * MS);
        let e = f.acc.txn_failure().expect("the transaction failed");
        assert_eq!(
            e.kind(),
            ErrorKind::Kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
        );

        // Waiting for its partition to join, in flight, and still open
        // when the abort begins.
        let waiting = f.send(Some(2), None, 10);
        let in_flight = f.send(Some(1), None, 10);
        let adding = f.acc.partitions_to_add();
        f.acc.partitions_added(&adding[..1]);
        let (sent, _) = flat(f.drain_at(20 * MS, 1))
            .pop()
            .expect("partition 1 sent");
        let open = f.send(Some(0), None, 10);
        f.acc.begin_abort(Failure::Local {
            kind: ErrorKind::TransactionAborted,
            message: "aborted".into(),
        });
        for a in [&waiting, &open] {
            match outcome(a) {
                Some(Outcome::Failed(fail)) => {
                    assert_eq!(fail.to_error("t", 0).kind(), ErrorKind::TransactionAborted)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            outcome(&in_flight).is_none(),
            "in flight: its answer decides"
        );
        // A retriable answer is not retried any more.
        f.complete(sent, kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER), 21 * MS);
        assert!(matches!(outcome(&in_flight), Some(Outcome::Failed(_))));
        assert!(f.acc.is_empty());
        // The first failure stays the transaction's.
        assert_eq!(
            f.acc.txn_failure().map(|e| e.kind()),
            Some(ErrorKind::Kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED))
        );
        f.acc.end_transaction();
        assert!(f.acc.txn_failure().is_none());
    }

    #[test]
    fn a_fenced_transactional_batch_is_not_retried() {
        let mut f = transactional_fixture(1);
        let a = f.send(Some(0), None, 10);
        let adding = f.acc.partitions_to_add();
        f.acc.partitions_added(&adding);
        let (b, _) = flat(f.drain_at(10 * MS, 1)).pop().expect("batch");
        f.complete(b, kafka(ErrorCode::INVALID_PRODUCER_EPOCH), 11 * MS);
        assert!(matches!(outcome(&a), Some(Outcome::Failed(_))));
        assert!(f.acc.txn_failure().is_some_and(|e| e.is_fatal()));
        assert!(f.acc.needs_epoch_bump());
    }
}
