//! The records users produce and consume.
//!
//! These are the user-facing shapes; the wire encoding (record batches,
//! varints, compression) lives in [`crate::protocol::record`].

use bytes::Bytes;
use time::OffsetDateTime;

/// One Kafka record.
///
/// Key and value are independently nullable: a null key means "no key"
/// (the partitioner may then pick any partition), a null value is a
/// tombstone (log compaction deletes earlier records with the same key).
/// Both differ from an empty byte string, which Kafka keeps as such.
///
/// ```
/// use rskafka::record::Record;
/// use time::OffsetDateTime;
///
/// let tombstone = Record {
///     key: Some("user-42".into()),
///     value: None,
///     headers: vec![("origin".into(), Some("cli".into())), ("origin".into(), None)],
///     timestamp: OffsetDateTime::now_utc(),
/// };
/// assert_eq!(tombstone.headers.len(), 2, "duplicate header keys are kept");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, or `None` for a record without a key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in record order. Kafka allows the same key more than once and
    /// a null value, so this is a list rather than a map.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The record's timestamp: the creation time given by the producer, or
    /// the broker's append time when the topic uses `LogAppendTime`.
    pub timestamp: OffsetDateTime,
}

impl Record {
    /// Approximate number of bytes this record adds to a batch; used to size
    /// batches, not to allocate.
    pub fn approximate_size(&self) -> usize {
        // Fixed per-record overhead of the v2 format: attributes, varint
        // deltas and lengths, at most ~20 bytes in practice.
        const OVERHEAD: usize = 20;
        OVERHEAD
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// A record read from a partition, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAndOffset {
    /// The record.
    pub record: Record,
    /// Its offset in the partition.
    pub offset: i64,
}
