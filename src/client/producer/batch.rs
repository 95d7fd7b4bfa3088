//! Producer batches and the futures that report their delivery.
//!
//! Records are encoded into their partition's open batch as they are sent;
//! every record of a batch shares one completion slot ([`BatchShared`]), so
//! reporting delivery costs one `Arc` clone per record and no allocation or
//! channel message.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::{
    cluster::Backoff,
    error::{Error, ErrorKind},
    protocol::{
        record::{set_producer_state, RecordBatchWriter},
        ApiKey, EncodeError, ErrorCode,
    },
};

/// Where and when a record was written, once the broker acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition the record went to.
    pub partition: i32,
    /// The record's offset; `None` where the broker did not say: with
    /// [`Acks::None`](super::Acks::None) (no response at all) and for a
    /// retried batch the broker recognised as an old duplicate it no longer
    /// has the offsets of.
    pub offset: Option<i64>,
    /// The record's timestamp: its create time, or the broker's append time
    /// if the topic uses `LogAppendTime`.
    pub timestamp: OffsetDateTime,
}

/// Why a batch failed; turned into an [`Error`] for each of its records.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The broker refused the batch with a non-retriable code.
    Kafka {
        code: ErrorCode,
        message: Option<String>,
    },
    /// The delivery timeout passed before an acknowledgement.
    DeliveryTimeout {
        attempts: u32,
        /// Whether an attempt may have written the batch.
        uncertain: bool,
        last_error: Option<String>,
    },
    /// Every retry the configuration allows failed.
    RetriesExhausted {
        attempts: u32,
        /// Whether an attempt may have written the batch.
        uncertain: bool,
        /// The last attempt's error.
        kind: ErrorKind,
        last_error: Option<String>,
    },
    /// The batch may or may not have been written and there is no way left
    /// to find out (its sequence state was reset by an epoch bump).
    Uncertain(String),
    /// The broker showed that records of this partition were lost.
    DataLoss(String),
    /// Encoding or another local failure.
    Local { kind: ErrorKind, message: String },
}

impl Failure {
    /// The user-facing error for one record of a batch of `topic`/`partition`.
    pub(crate) fn to_error(&self, topic: &str, partition: i32) -> Error {
        let err = match self {
            Failure::Kafka { code, message } => Error::kafka(*code, message.clone()),
            Failure::DeliveryTimeout {
                attempts,
                uncertain,
                last_error,
            } => {
                let mut msg = format!("delivery timeout passed after {attempts} attempt(s)");
                if *uncertain {
                    msg.push_str("; the batch may have been written");
                }
                if let Some(last) = last_error {
                    msg.push_str("; last error: ");
                    msg.push_str(last);
                }
                Error::new(ErrorKind::Timeout)
                    .with_message(msg)
                    .with_retriable(false)
            }
            Failure::RetriesExhausted {
                attempts,
                uncertain,
                kind,
                last_error,
            } => {
                let mut msg = format!("gave up after {attempts} attempt(s), the retries allowed");
                if *uncertain {
                    msg.push_str("; the batch may have been written");
                }
                if let Some(last) = last_error {
                    msg.push_str("; last error: ");
                    msg.push_str(last);
                }
                Error::new(*kind).with_message(msg).with_retriable(false)
            }
            Failure::Uncertain(msg) => Error::new(ErrorKind::DataLoss)
                .with_message(format!("delivery uncertain: {msg}"))
                .with_retriable(false),
            Failure::DataLoss(msg) => Error::new(ErrorKind::DataLoss)
                .with_message(msg.clone())
                .with_retriable(false),
            Failure::Local { kind, message } => Error::new(*kind)
                .with_message(message.clone())
                .with_retriable(false),
        };
        err.with_api(ApiKey::PRODUCE)
            .with_topic(topic)
            .with_partition(partition)
    }
}

/// The outcome of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Acked {
        base_offset: Option<i64>,
        /// Set when the topic uses `LogAppendTime`.
        log_append_time: Option<i64>,
    },
    Failed(Failure),
}

/// The completion slot every record of a batch waits on.
pub(crate) struct BatchShared {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    outcome: OnceLock<Outcome>,
    wakers: Mutex<Vec<Waker>>,
}

impl fmt::Debug for BatchShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchShared")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("outcome", &self.outcome.get())
            .finish()
    }
}

impl BatchShared {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> Arc<Self> {
        Arc::new(Self {
            topic,
            partition,
            outcome: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    /// Records the outcome (the first one wins) and wakes every waiter.
    pub(crate) fn complete(&self, outcome: Outcome) {
        let _ = self.outcome.set(outcome);
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for w in wakers {
            w.wake();
        }
    }

    #[cfg(test)]
    pub(crate) fn outcome(&self) -> Option<&Outcome> {
        self.outcome.get()
    }

    /// Polls for the outcome, registering `cx`'s waker if there is none yet.
    /// `slot` remembers where this waiter's waker is, so that polling the
    /// same future again replaces it instead of growing the list.
    fn poll_outcome(&self, cx: &mut Context<'_>, slot: &mut Option<usize>) -> Poll<&Outcome> {
        if let Some(o) = self.outcome.get() {
            return Poll::Ready(o);
        }
        let mut wakers = lock(&self.wakers);
        // Checked again under the lock: `complete` sets the outcome before
        // taking the wakers, so either we see it or it sees our waker.
        if let Some(o) = self.outcome.get() {
            return Poll::Ready(o);
        }
        match slot.and_then(|i| wakers.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                *slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }

    /// Waits for the outcome.
    pub(crate) fn wait(self: &Arc<Self>) -> BatchWait {
        BatchWait {
            shared: self.clone(),
            slot: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves a plain Vec of wakers
    // behind, which is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves when a batch is complete, whatever the outcome.
pub(crate) struct BatchWait {
    shared: Arc<BatchShared>,
    slot: Option<usize>,
}

impl Future for BatchWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.poll_outcome(cx, &mut this.slot).map(|_| ())
    }
}

/// Resolves when the broker acknowledged a record (or its delivery failed
/// for good): what [`Producer::send`](super::Producer::send) hands back once
/// the record is buffered.
///
/// Dropping it does not cancel the delivery; it only stops waiting for it.
pub struct DeliveryFuture {
    shared: Arc<BatchShared>,
    offset_delta: i32,
    timestamp: OffsetDateTime,
    slot: Option<usize>,
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.shared.topic)
            .field("partition", &self.shared.partition)
            .field("offset_delta", &self.offset_delta)
            .finish()
    }
}

impl DeliveryFuture {
    pub(crate) fn new(
        shared: Arc<BatchShared>,
        offset_delta: i32,
        timestamp: OffsetDateTime,
    ) -> Self {
        Self {
            shared,
            offset_delta,
            timestamp,
            slot: None,
        }
    }

    /// The partition the record was placed in.
    pub fn partition(&self) -> i32 {
        self.shared.partition
    }

    /// The topic of the record.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// Whether both records went into the same batch. A batch is written or
    /// fails as a whole, so for a run of records in one batch, awaiting the
    /// last one's future tells about all of them: a caller sending many
    /// records can keep one future per batch instead of one per record.
    pub fn same_batch(&self, other: &DeliveryFuture) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match this.shared.poll_outcome(cx, &mut this.slot) {
            Poll::Ready(o) => o,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match outcome {
            Outcome::Acked {
                base_offset,
                log_append_time,
            } => Ok(RecordMetadata {
                partition: this.shared.partition,
                offset: base_offset.map(|b| b.saturating_add(i64::from(this.offset_delta))),
                timestamp: log_append_time
                    .map(crate::record::time_from_millis)
                    .unwrap_or(this.timestamp),
            }),
            Outcome::Failed(f) => Err(f.to_error(&this.shared.topic, this.shared.partition)),
        })
    }
}

/// Producer id, epoch and base sequence a batch is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerState {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) base_sequence: i32,
}

impl ProducerState {
    /// The state of a batch without idempotence.
    pub(crate) const NONE: ProducerState = ProducerState {
        producer_id: -1,
        epoch: -1,
        base_sequence: -1,
    };
}

/// A batch's bytes: still a writer until first sent (compression happens
/// then, outside the accumulator's lock), afterwards the encoded batch.
#[derive(Debug)]
pub(crate) enum Payload {
    Writer(RecordBatchWriter),
    Encoded {
        bytes: Bytes,
        state: ProducerState,
    },
    /// Transient, while being encoded.
    Taken,
}

/// A closed batch: queued, in flight, or waiting for a retry.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    /// Creation order; also the order of the partition's sequence numbers.
    pub(crate) id: u64,
    pub(crate) shared: Arc<BatchShared>,
    pub(crate) deadline: Instant,
    pub(crate) record_count: i32,
    /// Bytes counted against the buffer memory until the batch completes.
    pub(crate) accounted: usize,
    pub(crate) payload: Payload,
    /// Assigned when first drained with idempotence; kept across retries.
    pub(crate) sequence: Option<ProducerState>,
    pub(crate) attempts: u32,
    /// Whether some attempt may have reached the broker without an answer.
    pub(crate) ambiguous: bool,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) last_error: Option<String>,
    /// The kind of the last failed attempt's error.
    pub(crate) last_kind: Option<ErrorKind>,
    /// The writer's buffer of a gzip or zstd batch once encoded (its
    /// uncompressed records), kept for reuse by a later batch (see
    /// [`Self::take_buffer`]).
    spare: Option<BytesMut>,
}

impl ProducerBatch {
    /// A batch closed from a writer, not sent yet.
    pub(crate) fn new(
        id: u64,
        shared: Arc<BatchShared>,
        deadline: Instant,
        accounted: usize,
        writer: RecordBatchWriter,
    ) -> Self {
        Self {
            id,
            shared,
            deadline,
            record_count: i32::try_from(writer.len()).unwrap_or(i32::MAX),
            accounted,
            payload: Payload::Writer(writer),
            sequence: None,
            attempts: 0,
            ambiguous: false,
            retry_at: None,
            backoff: None,
            last_error: None,
            last_kind: None,
            spare: None,
        }
    }

    /// The batch's record buffer, for a later batch to write into (a fresh
    /// buffer costs a page fault per 4 KiB written): the writer's buffer, or
    /// the encoded bytes of a batch built in place (uncompressed, LZ4,
    /// snappy) if nothing else holds them any more (a connection may still
    /// be writing them). Called once the batch is complete.
    pub(crate) fn take_buffer(&mut self) -> Option<BytesMut> {
        if let Some(spare) = self.spare.take() {
            return Some(spare);
        }
        match std::mem::replace(&mut self.payload, Payload::Taken) {
            Payload::Writer(w) => Some(w.into_buffer()),
            Payload::Encoded { bytes, .. } => bytes.try_into_mut().ok(),
            Payload::Taken => None,
        }
    }

    pub(crate) fn topic(&self) -> &Arc<str> {
        &self.shared.topic
    }

    pub(crate) fn partition(&self) -> i32 {
        self.shared.partition
    }

    /// Bytes this batch adds to a request (before compression, if not yet
    /// encoded).
    pub(crate) fn size(&self) -> usize {
        match &self.payload {
            Payload::Writer(w) => w.uncompressed_size(),
            Payload::Encoded { bytes, .. } => bytes.len(),
            Payload::Taken => 0,
        }
    }

    /// The sequence of this batch's last record, if it has a sequence.
    pub(crate) fn last_sequence(&self) -> Option<i32> {
        self.sequence
            .map(|s| increment_sequence(s.base_sequence, self.record_count - 1))
    }

    /// The encoded batch carrying `state`: encoded (and compressed) on first
    /// use, re-stamped only if the producer state changed since.
    pub(crate) fn encode(&mut self, state: ProducerState) -> Result<Bytes, EncodeError> {
        match std::mem::replace(&mut self.payload, Payload::Taken) {
            Payload::Writer(mut w) => {
                let h = w.header_mut();
                h.producer_id = state.producer_id;
                h.producer_epoch = state.epoch;
                h.base_sequence = state.base_sequence;
                match w.finish() {
                    Ok(bytes) => {
                        // Gzip and zstd leave the uncompressed records
                        // behind in it; other batches took it along.
                        let left = w.into_buffer();
                        if left.capacity() > 0 {
                            self.spare = Some(left);
                        }
                        self.payload = Payload::Encoded {
                            bytes: bytes.clone(),
                            state,
                        };
                        Ok(bytes)
                    }
                    Err(e) => Err(e),
                }
            }
            Payload::Encoded { bytes, state: old } if old == state => {
                self.payload = Payload::Encoded {
                    bytes: bytes.clone(),
                    state,
                };
                Ok(bytes)
            }
            Payload::Encoded { bytes, .. } => {
                // Rare (an epoch bump or a rewind): one copy to re-stamp.
                let mut copy = BytesMut::from(&bytes[..]);
                set_producer_state(
                    &mut copy,
                    state.producer_id,
                    state.epoch,
                    state.base_sequence,
                )?;
                let bytes = copy.freeze();
                self.payload = Payload::Encoded {
                    bytes: bytes.clone(),
                    state,
                };
                Ok(bytes)
            }
            Payload::Taken => Err(EncodeError::Compression(
                "batch payload missing after an earlier encoding failure".into(),
            )),
        }
    }
}

/// `seq + n` with Kafka's wrap-around from `i32::MAX` to 0.
pub(crate) fn increment_sequence(seq: i32, n: i32) -> i32 {
    if seq > i32::MAX - n {
        n - (i32::MAX - seq) - 1
    } else {
        seq + n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::{decode_batches, BatchHeader, Compression, DecodeLimits};

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(i32::MAX - 2, 2), i32::MAX);
    }

    fn batch_with(records: usize, compression: Compression) -> ProducerBatch {
        let mut w = RecordBatchWriter::new(BatchHeader {
            compression,
            ..BatchHeader::default()
        });
        for i in 0..records {
            let v = format!("value-{i}");
            w.append(1_000 + i as i64, None, Some(v.as_bytes()), &[])
                .expect("append");
        }
        ProducerBatch::new(1, BatchShared::new("t".into(), 0), Instant::now(), 0, w)
    }

    #[test]
    fn encode_stamps_and_restamps_producer_state() {
        for compression in [Compression::None, Compression::Lz4] {
            let mut b = batch_with(3, compression);
            let s1 = ProducerState {
                producer_id: 7,
                epoch: 1,
                base_sequence: 10,
            };
            let first = b.encode(s1).expect("encode");
            // Same state: the very same bytes, no re-encoding.
            let again = b.encode(s1).expect("encode");
            assert_eq!(first.as_ptr(), again.as_ptr());
            let decoded = decode_batches(first.clone(), &DecodeLimits::default()).expect("decode");
            let batch = &decoded.batches[0];
            assert_eq!(
                (batch.producer_id, batch.producer_epoch, batch.base_sequence),
                (7, 1, 10)
            );
            assert_eq!(batch.records.len(), 3);
            assert_eq!(batch.compression, compression);

            let s2 = ProducerState {
                producer_id: 7,
                epoch: 2,
                base_sequence: 0,
            };
            let restamped = b.encode(s2).expect("encode");
            let decoded =
                decode_batches(restamped, &DecodeLimits::default()).expect("decode (CRC checked)");
            let batch = &decoded.batches[0];
            assert_eq!(
                (batch.producer_id, batch.producer_epoch, batch.base_sequence),
                (7, 2, 0)
            );
            assert_eq!(batch.records[2].value.as_deref(), Some(&b"value-2"[..]));
            assert_eq!(b.last_sequence(), None, "no sequence assigned in this test");
        }
    }

    #[test]
    fn batches_sealed_in_place_match_batches_written_whole() {
        // `finish` seals with the CRC kept while appending; `finish_into`
        // computes it over the whole batch.
        let header = BatchHeader {
            producer_id: 9,
            base_sequence: 4,
            ..BatchHeader::default()
        };
        let (mut a, mut b) = (
            RecordBatchWriter::new(header),
            RecordBatchWriter::with_buffer(header, BytesMut::from(&[7u8; 100][..]), 10),
        );
        let big = vec![b'x'; 70_000];
        let headers = [crate::protocol::record::RecordHeader {
            key: "h".into(),
            value: Some(Bytes::from_static(b"hv")),
        }];
        for (round, count) in [(0, 50usize), (1, 1), (2, 7), (3, 50)] {
            for i in 0..count {
                let value = &big[..(i * 997 + round) % big.len()];
                let key = (i % 3 == 0).then_some(&b"key"[..]);
                let hs = if i % 5 == 0 { &headers[..] } else { &[] };
                for w in [&mut a, &mut b] {
                    w.append(1_000 + i as i64, key, Some(value), hs)
                        .expect("append");
                }
            }
            let mut whole = BytesMut::new();
            a.finish_into(&mut whole).expect("finish_into");
            let in_place = b.finish().expect("finish");
            assert_eq!(&in_place[..], &whole[..], "round {round}");
            decode_batches(in_place, &DecodeLimits::default()).expect("CRC checked");
        }
    }

    #[test]
    fn delivery_future_reports_offset_and_errors() {
        let shared = BatchShared::new("topic".into(), 3);
        let ts = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("ts");
        let mut fut = DeliveryFuture::new(shared.clone(), 2, ts);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        // Polling twice keeps one waker slot.
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(lock(&shared.wakers).len(), 1);
        shared.complete(Outcome::Acked {
            base_offset: Some(100),
            log_append_time: None,
        });
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Ok(m)) => {
                assert_eq!(m.partition, 3);
                assert_eq!(m.offset, Some(102));
                assert_eq!(m.timestamp, ts);
            }
            other => panic!("unexpected {other:?}"),
        }

        let shared = BatchShared::new("topic".into(), 1);
        let mut fut = DeliveryFuture::new(shared.clone(), 0, ts);
        shared.complete(Outcome::Failed(Failure::Kafka {
            code: ErrorCode::MESSAGE_TOO_LARGE,
            message: None,
        }));
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Kafka(ErrorCode::MESSAGE_TOO_LARGE));
                assert_eq!(e.topic(), Some("topic"));
                assert_eq!(e.partition(), Some(1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn log_append_time_replaces_create_time() {
        let shared = BatchShared::new("t".into(), 0);
        let ts = OffsetDateTime::from_unix_timestamp(1).expect("ts");
        let mut fut = DeliveryFuture::new(shared.clone(), 0, ts);
        shared.complete(Outcome::Acked {
            base_offset: None,
            log_append_time: Some(5_000),
        });
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Ok(m)) => {
                assert_eq!(m.offset, None);
                assert_eq!(
                    m.timestamp,
                    OffsetDateTime::from_unix_timestamp(5).expect("ts")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
