//! The records users produce and consume.
//!
//! These are the user-facing shapes; the wire encoding (record batches,
//! varints, compression) lives in the `protocol` layer.

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

/// The time of a Kafka timestamp (milliseconds since the epoch). Values
/// beyond what a date-time holds (only a broken or hostile peer sends them)
/// saturate instead of failing.
pub(crate) fn time_from_millis(ms: i64) -> OffsetDateTime {
    // Whole seconds plus milliseconds, in i64: the i128 nanosecond
    // constructor costs a software 128-bit division per record.
    let millis = ms.rem_euclid(1000) as u16; // 0..=999
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .and_then(|t| t.replace_millisecond(millis))
        .unwrap_or_else(|_| {
            if ms < 0 {
                time::PrimitiveDateTime::MIN.assume_utc()
            } else {
                time::PrimitiveDateTime::MAX.assume_utc()
            }
        })
}

/// The Kafka timestamp of a date-time: milliseconds since the epoch,
/// floored as Java's `toEpochMilli`, saturating.
pub(crate) fn millis_from_time(t: OffsetDateTime) -> i64 {
    // Seconds and the millisecond of the second, rather than an i128
    // division of the nanoseconds: this runs once per record.
    t.unix_timestamp()
        .saturating_mul(1000)
        .saturating_add(i64::from(t.millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_timestamps_round_trip_and_saturate() {
        for ms in [0, 1, 999, 1000, 1_700_000_000_123, -1001, -999, -1] {
            let t = time_from_millis(ms);
            assert_eq!(
                t,
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap(),
                "{ms}"
            );
            assert_eq!(millis_from_time(t), ms);
        }
        assert_eq!(
            time_from_millis(i64::MAX),
            time::PrimitiveDateTime::MAX.assume_utc()
        );
        assert_eq!(
            time_from_millis(i64::MIN),
            time::PrimitiveDateTime::MIN.assume_utc()
        );
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(millis_from_time(before_epoch), -2, "floors like Java");
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(millis_from_time(t), 1_700_000_000_123);
    }
}
