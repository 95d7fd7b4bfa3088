//! What `process` does with one record, independent of the Kafka client:
//! validate, handle, and pick the output (`.processed`, `.retry` or
//! `.dlq`) with its headers. Shared with the librdkafka variant of the
//! benchmark. Also the per-partition commit watermark.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::Duration,
};

use bytes::Bytes;
use time::OffsetDateTime;

use crate::event::{self, Failure};

/// Header: attempts made so far (on `.retry` and `.dlq` records).
pub const H_ATTEMPT: &str = "x-attempt";
/// Header: the topic the event was first read from.
pub const H_ORIGINAL_TOPIC: &str = "x-original-topic";
/// Header: its partition there.
pub const H_ORIGINAL_PARTITION: &str = "x-original-partition";
/// Header: its offset there.
pub const H_ORIGINAL_OFFSET: &str = "x-original-offset";
/// Header: the last error.
pub const H_ERROR: &str = "x-error";
/// Header: when the next attempt is due (ms since the epoch; `.retry`).
pub const H_RETRY_AT: &str = "x-retry-at";
/// Header: when the event was given up (ms since the epoch; `.dlq`).
pub const H_FAILED_AT: &str = "x-failed-at";

/// The topics of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The events topic.
    pub events: String,
    /// `<events>.processed`.
    pub processed: String,
    /// `<events>.retry`.
    pub retry: String,
    /// `<events>.dlq`.
    pub dlq: String,
}

impl Topics {
    /// The four topics named after `events`.
    pub fn new(events: &str) -> Self {
        Self {
            events: events.to_owned(),
            processed: format!("{events}.processed"),
            retry: format!("{events}.retry"),
            dlq: format!("{events}.dlq"),
        }
    }
}

/// Attempts and backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before the DLQ.
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; doubles after each further.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// The wait after `failed` failed attempts (1: the base backoff).
    pub fn backoff_after(&self, failed: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
    }
}

/// Where a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Handled, written to `.processed`.
    Processed,
    /// Failed, written to `.retry`.
    Retry,
    /// Given up, written to `.dlq`.
    DeadLetter,
}

/// A consumed record, as much of it as routing needs.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: Option<&'a [u8]>,
}

/// What a `.retry` record says about earlier attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Attempts made so far (0 for a record of the events topic).
    pub attempts: u32,
    /// When the next attempt is due (ms since the epoch).
    pub retry_at_ms: Option<i64>,
    /// `x-original-topic`, `-partition`, `-offset` as they came.
    pub original: Option<(Bytes, Bytes, Bytes)>,
}

impl RetryState {
    /// Reads the `x-…` headers.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Self {
        let mut s = Self::default();
        let (mut t, mut p, mut o) = (None, None, None);
        let num = |v: Option<&[u8]>| {
            v.and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        for (k, v) in headers {
            match k {
                H_ATTEMPT => s.attempts = num(v).unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
                H_RETRY_AT => s.retry_at_ms = num(v),
                H_ORIGINAL_TOPIC => t = v.map(Bytes::copy_from_slice),
                H_ORIGINAL_PARTITION => p = v.map(Bytes::copy_from_slice),
                H_ORIGINAL_OFFSET => o = v.map(Bytes::copy_from_slice),
                _ => {}
            }
        }
        if let (Some(t), Some(p), Some(o)) = (t, p, o) {
            s.original = Some((t, p, o));
        }
        s
    }
}

/// The record to write for one input.
#[derive(Debug, Clone)]
pub struct Output {
    /// Where it went.
    pub kind: Kind,
    /// The topic to write.
    pub topic: String,
    /// The key (the tenant id, or the input's key).
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The event's timestamp, for the end-to-end latency of processed ones.
    pub event_time: Option<OffsetDateTime>,
    /// The error, for a retried or dead-lettered event.
    pub error: Option<String>,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Validates and handles `input` and says what to write.
pub fn route(
    topics: &Topics,
    policy: RetryPolicy,
    input: Input<'_>,
    state: &RetryState,
    now: OffsetDateTime,
) -> Output {
    let attempt = state.attempts + 1;
    let failure = match event::parse(input.value) {
        Ok(e) => match event::handle(&e, attempt) {
            Ok(()) => {
                return Output {
                    kind: Kind::Processed,
                    topic: topics.processed.clone(),
                    key: Some(Bytes::copy_from_slice(e.tenant_id.as_bytes())),
                    value: Bytes::from(e.processed_json(now)),
                    headers: Vec::new(),
                    event_time: e.time(),
                    error: None,
                }
            }
            Err(f) => f,
        },
        Err(f) => f,
    };
    let retry = failure.retriable() && attempt < policy.max_attempts;
    let (topic_h, partition_h, offset_h) = state.original.clone().unwrap_or_else(|| {
        (
            Bytes::copy_from_slice(input.topic.as_bytes()),
            Bytes::from(input.partition.to_string()),
            Bytes::from(input.offset.to_string()),
        )
    });
    let mut headers = vec![
        (H_ATTEMPT.to_owned(), Some(Bytes::from(attempt.to_string()))),
        (H_ORIGINAL_TOPIC.to_owned(), Some(topic_h)),
        (H_ORIGINAL_PARTITION.to_owned(), Some(partition_h)),
        (H_ORIGINAL_OFFSET.to_owned(), Some(offset_h)),
        (
            H_ERROR.to_owned(),
            Some(Bytes::copy_from_slice(failure.message().as_bytes())),
        ),
    ];
    let (kind, topic) = if retry {
        let at = now + policy.backoff_after(attempt);
        headers.push((H_RETRY_AT.to_owned(), Some(Bytes::from(ms(at).to_string()))));
        (Kind::Retry, topics.retry.clone())
    } else {
        headers.push((
            H_FAILED_AT.to_owned(),
            Some(Bytes::from(ms(now).to_string())),
        ));
        (Kind::DeadLetter, topics.dlq.clone())
    };
    Output {
        kind,
        topic,
        key: input.key.map(Bytes::copy_from_slice),
        value: input.value.map(Bytes::copy_from_slice).unwrap_or_default(),
        headers,
        event_time: None,
        error: Some(match failure {
            Failure::Invalid(m) | Failure::Failed(m) => m,
        }),
    }
}

/// Per partition, the offsets to commit: batches are started in offset
/// order and may finish in any order; the watermark only moves past a
/// batch once it and every batch before it finished (at-least-once).
#[derive(Debug)]
pub struct Watermarks<P> {
    parts: HashMap<P, Lane>,
    next_epoch: u64,
}

#[derive(Debug)]
struct Lane {
    epoch: u64,
    /// (end offset, finished) in start order.
    pending: VecDeque<(i64, bool)>,
}

impl<P: Eq + Hash + Clone> Default for Watermarks<P> {
    fn default() -> Self {
        Self {
            parts: HashMap::new(),
            next_epoch: 1,
        }
    }
}

impl<P: Eq + Hash + Clone> Watermarks<P> {
    /// A batch of `p` ending before `end` was started; returns the epoch
    /// to hand to [`Self::finish`].
    pub fn start(&mut self, p: &P, end: i64) -> u64 {
        let next = &mut self.next_epoch;
        let lane = self.parts.entry(p.clone()).or_insert_with(|| {
            *next += 1;
            Lane {
                epoch: *next,
                pending: VecDeque::new(),
            }
        });
        lane.pending.push_back((end, false));
        lane.epoch
    }

    /// The batch of `p` ending before `end` finished; the new offset to
    /// commit if the watermark moved. Batches of an older epoch (the
    /// partition was revoked since) are ignored.
    pub fn finish(&mut self, p: &P, epoch: u64, end: i64) -> Option<i64> {
        let lane = self.parts.get_mut(p).filter(|l| l.epoch == epoch)?;
        let slot = lane.pending.iter_mut().find(|(e, _)| *e == end)?;
        slot.1 = true;
        let mut moved = None;
        while let Some(&(e, true)) = lane.pending.front() {
            moved = Some(e);
            lane.pending.pop_front();
        }
        moved
    }

    /// Forgets `p` (revoked): what is still running for it is ignored.
    pub fn forget(&mut self, p: &P) {
        self.parts.remove(p);
    }

    /// Batches not finished yet, over all partitions.
    pub fn unfinished(&self) -> usize {
        self.parts.values().map(|l| l.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{order_payload, Event};

    fn input<'a>(value: &'a [u8]) -> Input<'a> {
        Input {
            topic: "ev",
            partition: 2,
            offset: 41,
            key: Some(b"t1"),
            value: Some(value),
        }
    }

    fn header<'a>(o: &'a Output, name: &str) -> &'a str {
        let v = o.headers.iter().find(|(k, _)| k == name).unwrap();
        std::str::from_utf8(v.1.as_ref().unwrap()).unwrap()
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff: Duration::from_millis(500),
    };

    #[test]
    fn processed_retry_dlq() {
        let topics = Topics::new("ev");
        let now = OffsetDateTime::now_utc();
        let ok = Event::new("order.created", "t1", &order_payload(1), now).to_json();
        let o = route(&topics, POLICY, input(&ok), &RetryState::default(), now);
        assert_eq!(
            (o.kind, o.topic.as_str()),
            (Kind::Processed, "ev.processed")
        );
        assert_eq!(o.key.as_deref(), Some(&b"t1"[..]));

        let fail = Event::new("test.fail", "t1", &serde_json::json!({}), now).to_json();
        let o = route(&topics, POLICY, input(&fail), &RetryState::default(), now);
        assert_eq!((o.kind, o.topic.as_str()), (Kind::Retry, "ev.retry"));
        assert_eq!(header(&o, H_ATTEMPT), "1");
        assert_eq!(header(&o, H_ORIGINAL_OFFSET), "41");
        let due: i64 = header(&o, H_RETRY_AT).parse().unwrap();
        assert_eq!(due - ms(now), 500);

        // The retry record, read back from .retry (another partition).
        let state =
            RetryState::from_headers(o.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        assert_eq!(state.attempts, 1);
        let mut retry_in = input(&fail);
        retry_in.topic = "ev.retry";
        retry_in.offset = 3;
        let o = route(&topics, POLICY, retry_in, &state, now);
        assert_eq!(o.kind, Kind::Retry);
        assert_eq!(header(&o, H_ATTEMPT), "2");
        assert_eq!(header(&o, H_ORIGINAL_TOPIC), "ev");
        assert_eq!(header(&o, H_ORIGINAL_OFFSET), "41");
        let due: i64 = header(&o, H_RETRY_AT).parse().unwrap();
        assert_eq!(due - ms(now), 1000);
        let state =
            RetryState::from_headers(o.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        let o = route(&topics, POLICY, retry_in, &state, now);
        assert_eq!((o.kind, o.topic.as_str()), (Kind::DeadLetter, "ev.dlq"));
        assert_eq!(header(&o, H_ATTEMPT), "3");
        assert!(header(&o, H_ERROR).contains("test.fail"));

        // Invalid JSON: no retries.
        let o = route(
            &topics,
            POLICY,
            input(b"{oops"),
            &RetryState::default(),
            now,
        );
        assert_eq!(o.kind, Kind::DeadLetter);
        assert_eq!(header(&o, H_ATTEMPT), "1");
        assert_eq!(o.value.as_ref(), b"{oops");
    }

    #[test]
    fn watermark_is_contiguous() {
        let mut w = Watermarks::default();
        let e = w.start(&"p0", 10);
        w.start(&"p0", 20);
        w.start(&"p0", 30);
        assert_eq!(w.finish(&"p0", e, 20), None);
        assert_eq!(w.finish(&"p0", e, 10), Some(20));
        assert_eq!(w.unfinished(), 1);
        w.forget(&"p0");
        assert_eq!(w.finish(&"p0", e, 30), None);
        let e2 = w.start(&"p0", 40);
        assert_ne!(e, e2);
        assert_eq!(w.finish(&"p0", e, 40), None);
        assert_eq!(w.finish(&"p0", e2, 40), Some(40));
    }
}
