//! Turning one partition's fetched `records` bytes into consumer records.
//!
//! Everything a fetch response says about a partition's data is applied
//! here, in one pass over the decoded batches: records before the fetch
//! offset (the broker returns whole batches, so the first one may start
//! earlier) are skipped, control batches are dropped, under read_committed
//! the batches of aborted transactions are dropped, and `LogAppendTime`
//! batches report their append time on every record. The offset to fetch
//! next comes from the batches, not the records, so data that yields no
//! record at all (markers, aborted batches, compacted-away records) still
//! moves the position forward.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::aborted::{AbortedFilter, BatchMeta};
use super::{ConsumedRecord, IsolationLevel};
use crate::protocol::record::{decode_batches, DecodeLimits, RecordBatch};
use crate::protocol::DecodeError;
use crate::record::Record;

/// The usable result of one partition's fetched data.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// Records for the application, in offset order.
    pub records: Vec<ConsumedRecord>,
    /// The offset to fetch next: after the last complete batch, and never
    /// before the offset that was fetched.
    pub next_offset: i64,
    /// Leader epoch of the last complete batch, if it carried one.
    pub last_epoch: Option<i32>,
    /// Whether the data held no complete batch at all although it was not
    /// empty: a batch larger than the fetch size limit (old brokers only).
    pub stuck: bool,
    /// Memory the records hold: their bytes (decompressed, so a highly
    /// compressed fetch counts at its real size) or the received bytes,
    /// whichever is larger, plus the records' own structs. This, not the
    /// wire size, is what the prefetch budget counts.
    pub mem_bytes: usize,
    /// Bytes of the fetched data that the decoded batches took up; the
    /// rest (a cut batch, or batches past the decompression budget) is
    /// fetched again.
    pub wire_used: usize,
}

/// Decodes `records` fetched from `fetch_offset` of `topic`/`partition`.
/// `aborted` is the response's aborted-transaction list as
/// (producer id, first offset); it is ignored under read_uncommitted.
pub(crate) fn decode_chunk(
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    records: Bytes,
    aborted: &[(i64, i64)],
    isolation: IsolationLevel,
    limits: &DecodeLimits,
) -> Result<Chunk, DecodeError> {
    let non_empty = !records.is_empty();
    let wire_bytes = records.len();
    let decoded = decode_batches(records, limits)?;
    let mut chunk = Chunk {
        records: Vec::with_capacity(decoded.record_count()),
        next_offset: fetch_offset,
        last_epoch: None,
        stuck: non_empty && decoded.batches.is_empty(),
        mem_bytes: 0,
        wire_used: wire_bytes.saturating_sub(decoded.unread_bytes),
    };
    let mut data_bytes = 0usize;
    let mut filter = match isolation {
        IsolationLevel::ReadCommitted => Some(AbortedFilter::new(aborted.iter().copied())),
        IsolationLevel::ReadUncommitted => None,
    };
    for batch in decoded.batches {
        let next = batch.next_offset();
        if next <= fetch_offset {
            // Entirely before what was asked for (a legacy wrapper, or a
            // broker answering from an earlier batch): nothing to deliver.
            continue;
        }
        chunk.next_offset = chunk.next_offset.max(next);
        chunk.last_epoch =
            (batch.partition_leader_epoch >= 0).then_some(batch.partition_leader_epoch);
        let keep = match &mut filter {
            Some(filter) => filter.keep(&BatchMeta::of(&batch)),
            None => !batch.is_control,
        };
        if keep {
            data_bytes = data_bytes.saturating_add(batch_data_bytes(&batch));
            push_records(&mut chunk.records, topic, partition, fetch_offset, batch);
        }
    }
    chunk.mem_bytes = data_bytes.max(wire_bytes).saturating_add(
        chunk
            .records
            .capacity()
            .saturating_mul(std::mem::size_of::<ConsumedRecord>()),
    );
    Ok(chunk)
}

/// Key, value and header bytes of a batch's records (about its
/// decompressed size, which the records keep alive), plus the headers'
/// own allocations.
fn batch_data_bytes(batch: &RecordBatch) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    batch.records.iter().fold(0usize, |n, r| {
        let headers = r
            .headers
            .iter()
            .map(|h| std::mem::size_of_val(h) + h.key.len() + len(&h.value))
            .sum::<usize>();
        n.saturating_add(len(&r.key) + len(&r.value) + headers)
    })
}

fn push_records(
    out: &mut Vec<ConsumedRecord>,
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    batch: RecordBatch,
) {
    let leader_epoch = (batch.partition_leader_epoch >= 0).then_some(batch.partition_leader_epoch);
    let timestamp_type = batch.timestamp_type;
    // Field copies so `batch.records` can be moved out below.
    let header = RecordBatch {
        records: Vec::new(),
        ..batch
    };
    // Records of a batch mostly share their timestamp (down to the
    // millisecond): convert each distinct one once.
    let mut last: Option<(i64, OffsetDateTime)> = None;
    for r in batch.records {
        let offset = header.record_offset(&r);
        if offset < fetch_offset {
            continue;
        }
        let ms = header.record_timestamp(&r);
        let timestamp = match last {
            Some((m, t)) if m == ms => t,
            _ => {
                let t = crate::record::time_from_millis(ms);
                last = Some((ms, t));
                t
            }
        };
        out.push(ConsumedRecord {
            topic: Arc::clone(topic),
            partition,
            offset,
            timestamp_type,
            leader_epoch,
            record: Record {
                key: r.key,
                value: r.value,
                // Same layout, so this reuses the allocation.
                headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                timestamp,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::record::{
        encode_batch, BatchHeader, BatchRecord, Compression, RecordBatchWriter, RecordHeader,
        TimestampType,
    };

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    /// A batch of `n` records at `base`, values "v<offset>".
    fn data_batch(buf: &mut BytesMut, base: i64, n: i64, producer_id: i64, txn: bool) {
        let mut w = RecordBatchWriter::new(BatchHeader {
            base_offset: base,
            partition_leader_epoch: 5,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            base_sequence: if producer_id >= 0 { 0 } else { -1 },
            is_transactional: txn,
            ..BatchHeader::default()
        });
        for i in 0..n {
            let value = format!("v{}", base + i);
            w.append(1_000 + i, None, Some(value.as_bytes()), &[])
                .unwrap();
        }
        w.finish_into(buf).unwrap();
    }

    /// A control batch with one marker record at `offset`.
    fn marker(buf: &mut BytesMut, offset: i64, producer_id: i64, abort: bool) {
        let mut key = BytesMut::new();
        key.extend_from_slice(&0i16.to_be_bytes());
        key.extend_from_slice(&(if abort { 0i16 } else { 1 }).to_be_bytes());
        let mut value = BytesMut::new();
        value.extend_from_slice(&0i16.to_be_bytes());
        value.extend_from_slice(&7i32.to_be_bytes());
        let batch = RecordBatch {
            base_offset: offset,
            partition_leader_epoch: 5,
            is_transactional: true,
            is_control: true,
            last_offset_delta: 0,
            base_timestamp: 2_000,
            max_timestamp: 2_000,
            producer_id,
            producer_epoch: 0,
            records: vec![BatchRecord {
                key: Some(key.freeze()),
                value: Some(value.freeze()),
                ..BatchRecord::default()
            }],
            ..RecordBatch::default()
        };
        encode_batch(buf, &batch).unwrap();
    }

    fn values(chunk: &Chunk) -> Vec<String> {
        chunk
            .records
            .iter()
            .map(|r| String::from_utf8(r.record.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    fn offsets(chunk: &Chunk) -> Vec<i64> {
        chunk.records.iter().map(|r| r.offset).collect()
    }

    fn decode(buf: BytesMut, from: i64, aborted: &[(i64, i64)], iso: IsolationLevel) -> Chunk {
        decode_chunk(
            &topic(),
            3,
            from,
            buf.freeze(),
            aborted,
            iso,
            &DecodeLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn plain_batches_become_records_with_absolute_offsets() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 0, 3, -1, false);
        data_batch(&mut buf, 3, 2, -1, false);
        let chunk = decode(buf, 0, &[], IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&chunk), vec![0, 1, 2, 3, 4]);
        assert_eq!(values(&chunk), vec!["v0", "v1", "v2", "v3", "v4"]);
        assert_eq!(chunk.next_offset, 5);
        assert_eq!(chunk.last_epoch, Some(5));
        assert!(!chunk.stuck);
        let r = &chunk.records[1];
        assert_eq!((&*r.topic, r.partition, r.leader_epoch), ("t", 3, Some(5)));
        assert_eq!(r.timestamp_type, TimestampType::CreateTime);
        assert_eq!(
            r.record.timestamp,
            OffsetDateTime::from_unix_timestamp_nanos(1_001_000_000).unwrap()
        );
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 10, 5, -1, false);
        let chunk = decode(buf, 12, &[], IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&chunk), vec![12, 13, 14]);
        assert_eq!(chunk.next_offset, 15);
    }

    #[test]
    fn a_truncated_last_batch_is_left_for_the_next_fetch() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 0, 3, -1, false);
        let first_len = buf.len();
        data_batch(&mut buf, 3, 3, -1, false);
        buf.truncate(first_len + 20);
        let chunk = decode(buf, 0, &[], IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&chunk), vec![0, 1, 2]);
        assert_eq!(chunk.next_offset, 3, "the cut batch is fetched again");
    }

    #[cfg(feature = "compression-lz4")]
    #[test]
    fn memory_counts_decompressed_bytes_and_record_structs() {
        let mut buf = BytesMut::new();
        let mut w = RecordBatchWriter::new(BatchHeader {
            compression: Compression::Lz4,
            ..BatchHeader::default()
        });
        let value = vec![b'x'; 1000];
        for i in 0..100 {
            w.append(i, None, Some(&value), &[]).unwrap();
        }
        w.finish_into(&mut buf).unwrap();
        let wire = buf.len();
        assert!(wire < 10_000, "repeated bytes compress well: {wire}");
        let chunk = decode(buf, 0, &[], IsolationLevel::ReadUncommitted);
        let structs = 100 * std::mem::size_of::<ConsumedRecord>();
        assert!(chunk.mem_bytes >= 100_000 + structs, "{}", chunk.mem_bytes);
        assert!(chunk.mem_bytes < 100_000 + structs + wire + 1000);

        // Uncompressed, the records hold the received bytes.
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 0, 3, -1, false);
        let wire = buf.len();
        let chunk = decode(buf, 0, &[], IsolationLevel::ReadUncommitted);
        assert_eq!(
            chunk.mem_bytes,
            wire + chunk.records.capacity() * std::mem::size_of::<ConsumedRecord>()
        );
    }

    #[test]
    fn only_a_cut_batch_is_stuck_and_does_not_move() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 7, 3, -1, false);
        buf.truncate(30);
        let chunk = decode(buf, 7, &[], IsolationLevel::ReadUncommitted);
        assert!(chunk.records.is_empty());
        assert!(chunk.stuck);
        assert_eq!(chunk.next_offset, 7);
        // Empty data is not stuck: there is just nothing new.
        let chunk = decode(BytesMut::new(), 7, &[], IsolationLevel::ReadUncommitted);
        assert!(!chunk.stuck);
        assert_eq!(chunk.next_offset, 7);
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_markers() {
        // Producer 9: 0-2 aborted (marker 3); 4-5 committed (marker 6).
        // Producer -1 (plain) at 7.
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 0, 3, 9, true);
        marker(&mut buf, 3, 9, true);
        data_batch(&mut buf, 4, 2, 9, true);
        marker(&mut buf, 6, 9, false);
        data_batch(&mut buf, 7, 1, -1, false);
        let committed = decode(buf.clone(), 0, &[(9, 0)], IsolationLevel::ReadCommitted);
        assert_eq!(offsets(&committed), vec![4, 5, 7]);
        assert_eq!(committed.next_offset, 8);

        // read_uncommitted sees every data record but still no marker.
        let all = decode(buf, 0, &[(9, 0)], IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&all), vec![0, 1, 2, 4, 5, 7]);
    }

    #[test]
    fn only_markers_and_aborted_data_still_advance() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 20, 2, 9, true);
        marker(&mut buf, 22, 9, true);
        let chunk = decode(buf, 20, &[(9, 20)], IsolationLevel::ReadCommitted);
        assert!(chunk.records.is_empty());
        assert_eq!(chunk.next_offset, 23);
        assert!(!chunk.stuck);

        let mut buf = BytesMut::new();
        marker(&mut buf, 40, 9, false);
        let chunk = decode(buf, 40, &[], IsolationLevel::ReadUncommitted);
        assert!(chunk.records.is_empty());
        assert_eq!(chunk.next_offset, 41);
    }

    #[test]
    fn log_append_time_is_reported_on_every_record() {
        let mut buf = BytesMut::new();
        let batch = RecordBatch {
            base_offset: 0,
            timestamp_type: TimestampType::LogAppendTime,
            last_offset_delta: 1,
            base_timestamp: 1_000,
            max_timestamp: 9_000,
            records: vec![
                BatchRecord {
                    timestamp_delta: 0,
                    offset_delta: 0,
                    value: Some(Bytes::from_static(b"a")),
                    headers: vec![
                        RecordHeader {
                            key: "k".into(),
                            value: None,
                        },
                        RecordHeader {
                            key: "k".into(),
                            value: Some(Bytes::from_static(b"x")),
                        },
                    ],
                    ..BatchRecord::default()
                },
                BatchRecord {
                    timestamp_delta: 5,
                    offset_delta: 1,
                    ..BatchRecord::default()
                },
            ],
            ..RecordBatch::default()
        };
        encode_batch(&mut buf, &batch).unwrap();
        let chunk = decode(buf, 0, &[], IsolationLevel::ReadUncommitted);
        let nine_s = OffsetDateTime::from_unix_timestamp(9).unwrap();
        for r in &chunk.records {
            assert_eq!(r.timestamp_type, TimestampType::LogAppendTime);
            assert_eq!(r.record.timestamp, nine_s);
        }
        assert_eq!(
            chunk.records[0].record.headers,
            vec![
                ("k".to_owned(), None),
                ("k".to_owned(), Some(Bytes::from_static(b"x")))
            ]
        );
        assert_eq!(chunk.records[1].record.key, None);
        assert_eq!(chunk.records[1].record.value, None);
        assert_eq!(chunk.last_epoch, None);
    }

    #[test]
    fn compressed_batches_decode() {
        for compression in Compression::ALL {
            if !compression.is_enabled() {
                continue;
            }
            let mut w = RecordBatchWriter::new(BatchHeader {
                base_offset: 100,
                compression,
                ..BatchHeader::default()
            });
            for i in 0..50 {
                w.append(i, Some(b"key"), Some(format!("value {i}").as_bytes()), &[])
                    .unwrap();
            }
            let mut buf = BytesMut::new();
            w.finish_into(&mut buf).unwrap();
            let chunk = decode(buf, 110, &[], IsolationLevel::ReadUncommitted);
            assert_eq!(chunk.records.len(), 40, "{compression}");
            assert_eq!(chunk.records[0].offset, 110);
            assert_eq!(chunk.next_offset, 150);
        }
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut buf = BytesMut::new();
        data_batch(&mut buf, 0, 3, -1, false);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let err = decode_chunk(
            &topic(),
            0,
            0,
            buf.freeze(),
            &[],
            IsolationLevel::ReadUncommitted,
            &DecodeLimits::default(),
        );
        assert!(err.is_err());
    }
}
