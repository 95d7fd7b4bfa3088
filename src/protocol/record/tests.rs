//! Round-trip and hardening tests for record batches.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::batch::DECODE_CHUNK;
use super::*;
use crate::protocol::error::{DecodeErrorKind, EncodeError};

type Rec = (i64, Option<Bytes>, Option<Bytes>, Vec<RecordHeader>);

fn hdr(key: &str, value: Option<&'static [u8]>) -> RecordHeader {
    RecordHeader {
        key: key.to_owned(),
        value: value.map(Bytes::from_static),
    }
}

/// Records covering the interesting cases: null key, empty key, tombstone,
/// headers with null and repeated keys, decreasing timestamps.
fn sample() -> Vec<Rec> {
    let b = |s: &'static [u8]| Some(Bytes::from_static(s));
    vec![
        (
            1_700_000_000_000,
            b(b"k1"),
            b(b"v1"),
            vec![hdr("h", Some(b"x"))],
        ),
        (1_700_000_000_005, None, b(b"null-key"), vec![]),
        (
            1_700_000_000_003,
            b(b""),
            b(b"empty-key"),
            vec![hdr("n", None), hdr("n", Some(b""))],
        ),
        (1_700_000_000_010, b(b"gone"), None, vec![]),
        (
            1_700_000_000_010,
            b(&[0xff; 300]),
            Some(Bytes::from(vec![7u8; 70_000])),
            vec![],
        ),
    ]
}

fn write(compression: Compression, recs: &[Rec]) -> Bytes {
    let mut w = RecordBatchWriter::new(BatchHeader {
        compression,
        ..BatchHeader::default()
    });
    for (ts, k, v, h) in recs {
        w.append(*ts, k.as_deref(), v.as_deref(), h).unwrap();
    }
    w.finish().unwrap()
}

fn decode(bytes: Bytes) -> Result<DecodedBatches, DecodeError> {
    decode_checked(bytes, &DecodeLimits::default())
}

/// Decodes owned and as views, checking that both agree: the same batches
/// and records, or the same error (from decoding the views, or from
/// iterating their records), so every test covers both paths.
fn decode_checked(bytes: Bytes, limits: &DecodeLimits) -> Result<DecodedBatches, DecodeError> {
    let owned = decode_batches(bytes.clone(), limits);
    let views = decode_batch_views(bytes, limits);
    let views = match (&owned, views) {
        (Err(a), Err(b)) => {
            assert_eq!(a, &b, "owned and view decoding fail alike");
            return owned;
        }
        (Ok(a), Err(b)) => panic!("owned {a:?} but views {b:?}"),
        (_, Ok(v)) => v,
    };
    // Views defer record errors to iteration: the first one must be the
    // owned decoder's error (batches after it may still decode as views).
    let mut first_error = None;
    for (i, vb) in views.batches.iter().enumerate() {
        let iterated: Vec<_> = vb.records.iter().collect();
        let converted = vb.to_batch();
        if let Some(Err(e)) = iterated.last() {
            assert_eq!(converted.as_ref().err(), Some(e));
            first_error.get_or_insert_with(|| e.clone());
            continue;
        }
        let ob = match &owned {
            Ok(a) => &a.batches[i],
            Err(_) => continue,
        };
        assert_eq!(converted.as_ref(), Ok(ob));
        assert!(vb.batch.records.is_empty());
        assert_eq!(iterated.len(), ob.records.len());
        for (o, v) in ob.records.iter().zip(iterated) {
            let v = v.unwrap();
            assert_eq!(
                (v.attributes, v.timestamp_delta, v.offset_delta),
                (o.attributes, o.timestamp_delta, o.offset_delta)
            );
            assert_eq!((v.key, v.value), (o.key.as_deref(), o.value.as_deref()));
            assert_eq!(vb.record_offset(&v), ob.record_offset(o));
            assert_eq!(vb.record_timestamp(&v), ob.record_timestamp(o));
            let headers: Vec<_> = v.headers().collect();
            let want: Vec<_> = o
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_deref()))
                .collect();
            assert_eq!(headers, want);
        }
    }
    match (&owned, first_error) {
        (Ok(a), None) => {
            assert_eq!((a.stop, a.unread_bytes), (views.stop, views.unread_bytes));
            assert_eq!(a.batches.len(), views.batches.len());
        }
        (Err(a), Some(b)) => assert_eq!(a, &b),
        (Err(a), None) => panic!("owned failed with {a:?}, views did not"),
        (Ok(_), Some(b)) => panic!("views failed with {b:?}, owned did not"),
    }
    owned
}

fn enabled_codecs() -> impl Iterator<Item = Compression> {
    Compression::ALL.into_iter().filter(|c| c.is_enabled())
}

fn check_sample(batch: &RecordBatch, recs: &[Rec]) {
    assert_eq!(batch.records.len(), recs.len());
    assert_eq!(batch.last_offset_delta as usize, recs.len() - 1);
    assert_eq!(batch.base_timestamp, recs[0].0);
    assert_eq!(batch.max_timestamp, recs.iter().map(|r| r.0).max().unwrap());
    for (i, (r, (ts, k, v, h))) in batch.records.iter().zip(recs).enumerate() {
        assert_eq!(batch.record_offset(r), batch.base_offset + i as i64);
        assert_eq!(batch.record_timestamp(r), *ts);
        assert_eq!(&r.key, k);
        assert_eq!(&r.value, v);
        assert_eq!(&r.headers, h);
    }
}

/// A v2 batch around a hand-made records section, with a correct CRC.
fn raw_batch(attributes: i16, count: i32, section: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i64(100);
    b.put_i32((RECORD_BATCH_OVERHEAD - 12 + section.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(attributes);
    b.put_i32(count - 1);
    b.put_i64(1000);
    b.put_i64(1000);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(count);
    b.put_slice(section);
    reseal(&mut b);
    b
}

/// Recomputes length and CRC after a test edited a batch.
fn reseal(b: &mut BytesMut) {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = ::crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn kind(r: Result<DecodedBatches, DecodeError>) -> DecodeErrorKind {
    r.expect_err("decoding must fail").kind().clone()
}

fn varint(v: i64) -> Vec<u8> {
    let mut b = BytesMut::new();
    crate::protocol::WriteExt::put_varlong(&mut b, v);
    b.to_vec()
}

/// One record as raw bytes with the given length prefix (None: correct).
fn raw_record(len: Option<i64>, key: &[u8], value: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    body.extend(varint(0)); // timestamp delta
    body.extend(varint(0)); // offset delta
    body.extend(key);
    body.extend(value);
    body.extend(tail);
    let mut out = varint(len.unwrap_or(body.len() as i64));
    out.extend(body);
    out
}

#[test]
fn every_codec_round_trips() {
    let recs = sample();
    for codec in enabled_codecs() {
        let bytes = write(codec, &recs);
        let out = decode(bytes.clone()).unwrap();
        assert_eq!(out.stop, DecodeStop::Complete, "{codec}");
        assert_eq!(out.batches.len(), 1);
        let batch = &out.batches[0];
        assert_eq!(batch.compression, codec);
        assert_eq!(batch.magic, 2);
        assert_eq!(batch.producer_id, -1);
        assert!(!batch.is_transactional && !batch.is_control);
        check_sample(batch, &recs);
        if codec != Compression::None {
            // The large repetitive value must actually have been compressed.
            assert!(bytes.len() < 20_000, "{codec}: {} bytes", bytes.len());
        }
        // Re-encoding the decoded batch gives a batch that decodes the same.
        let mut again = BytesMut::new();
        encode_batch(&mut again, batch).unwrap();
        assert_eq!(
            decode(again.freeze()).unwrap().batches[0],
            *batch,
            "{codec}"
        );
    }
}

#[test]
fn uncompressed_encoding_is_canonical() {
    let recs = sample();
    let bytes = write(Compression::None, &recs);
    let batch = decode(bytes.clone()).unwrap().batches.remove(0);
    let mut again = BytesMut::new();
    encode_batch(&mut again, &batch).unwrap();
    assert_eq!(
        again, bytes,
        "encode(decode(x)) must reproduce x byte for byte"
    );
    // finish_into and finish agree, and the writer is reusable.
    let mut w = RecordBatchWriter::new(BatchHeader::default());
    let mut out = BytesMut::new();
    for _ in 0..2 {
        for (ts, k, v, h) in &recs {
            w.append(*ts, k.as_deref(), v.as_deref(), h).unwrap();
        }
        w.finish_into(&mut out).unwrap();
    }
    assert_eq!(&out[..bytes.len()], &bytes[..]);
    assert_eq!(&out[bytes.len()..], &bytes[..]);
}

#[test]
fn batches_compressed_block_by_block_match_whole_batch_compression() {
    // LZ4 and snappy batches are compressed a block at a time while records
    // are appended. Records of many sizes, some larger than a block, so that
    // blocks end inside records, at record boundaries, and span several.
    let mut next = xorshift(0x9E37_79B9);
    let recs: Vec<Rec> = (0..100usize)
        .map(|i| {
            let len = match i % 5 {
                0 => 100_000,
                1 => i,
                _ => (i * 7919) % 20_000,
            };
            let value: Vec<u8> = (0..len).map(|_| b'a' + (next() % 4) as u8).collect();
            (
                1_700_000_000_000 + i as i64,
                None,
                Some(Bytes::from(value)),
                vec![],
            )
        })
        .collect();
    for codec in Compression::ALL {
        let streamed = write(codec, &recs);
        let batch = decode(streamed.clone()).unwrap().batches.remove(0);
        assert_eq!(batch.compression, codec);
        let values: Vec<_> = batch.records.iter().map(|r| r.value.clone()).collect();
        let expected: Vec<_> = recs.iter().map(|r| r.2.clone()).collect();
        assert!(values == expected, "{codec:?}: records differ");
        let mut whole = BytesMut::new();
        encode_batch(&mut whole, &batch).unwrap();
        assert!(
            whole == streamed,
            "{codec:?}: not the bytes of whole-batch compression"
        );
        // A reused writer, through `finish_into`, writes the same bytes again.
        let mut w = RecordBatchWriter::new(BatchHeader {
            compression: codec,
            ..BatchHeader::default()
        });
        let mut out = BytesMut::new();
        for _ in 0..2 {
            for (ts, k, v, h) in &recs {
                w.append(*ts, k.as_deref(), v.as_deref(), h).unwrap();
            }
            w.finish_into(&mut out).unwrap();
        }
        assert!(out[..streamed.len()] == streamed[..], "{codec:?}: first");
        assert!(out[streamed.len()..] == streamed[..], "{codec:?}: second");
    }
}

#[test]
fn a_batch_keeps_the_codec_of_its_first_record() {
    let mut w = RecordBatchWriter::new(BatchHeader {
        compression: Compression::Lz4,
        ..BatchHeader::default()
    });
    let recs = sample();
    for (ts, k, v, h) in &recs {
        w.append(*ts, k.as_deref(), v.as_deref(), h).unwrap();
    }
    w.header_mut().compression = Compression::None;
    let first = decode(w.finish().unwrap()).unwrap().batches.remove(0);
    assert_eq!(first.compression, Compression::Lz4);
    for (ts, k, v, h) in &recs {
        w.append(*ts, k.as_deref(), v.as_deref(), h).unwrap();
    }
    let second = decode(w.finish().unwrap()).unwrap().batches.remove(0);
    assert_eq!(second.compression, Compression::None);
    assert_eq!(first.records, second.records);
}

#[test]
fn keys_values_are_zero_copy_slices_of_the_input() {
    let bytes = write(Compression::None, &sample());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let out = decode(bytes.clone()).unwrap();
    let value = out.batches[0].records[0].value.as_ref().unwrap();
    assert!(range.contains(&(value.as_ptr() as usize)));
}

#[test]
fn null_and_empty_are_distinct() {
    let out = decode(write(Compression::None, &sample())).unwrap();
    let r = &out.batches[0].records;
    assert_eq!(r[1].key, None);
    assert_eq!(r[2].key, Some(Bytes::new()));
    assert_eq!(r[3].value, None);
    assert_eq!(r[2].headers[0].value, None);
    assert_eq!(r[2].headers[1].value, Some(Bytes::new()));
}

#[test]
fn empty_writer_writes_nothing() {
    let mut w = RecordBatchWriter::new(BatchHeader::default());
    assert!(w.is_empty());
    assert_eq!(w.finish().unwrap(), Bytes::new());
    let mut out = BytesMut::new();
    w.finish_into(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(decode(Bytes::new()).unwrap(), DecodedBatches::default());
}

#[test]
fn header_fields_round_trip_and_producer_state_patch() {
    let header = BatchHeader {
        base_offset: 0,
        partition_leader_epoch: 7,
        producer_id: 1,
        producer_epoch: 2,
        base_sequence: 3,
        is_transactional: true,
        compression: Compression::None,
        timestamp_type: TimestampType::CreateTime,
    };
    let mut w = RecordBatchWriter::new(header);
    w.append(5, Some(b"k"), Some(b"v"), &[]).unwrap();
    let mut bytes = BytesMut::from(&w.finish().unwrap()[..]);
    let b = decode(bytes.clone().freeze()).unwrap().batches.remove(0);
    assert_eq!(
        (
            b.partition_leader_epoch,
            b.producer_id,
            b.producer_epoch,
            b.base_sequence
        ),
        (7, 1, 2, 3)
    );
    assert!(b.is_transactional);
    set_producer_state(&mut bytes, 99, 4, 1234).unwrap();
    let b = decode(bytes.freeze()).unwrap().batches.remove(0);
    assert_eq!(
        (b.producer_id, b.producer_epoch, b.base_sequence),
        (99, 4, 1234)
    );
    assert_eq!(b.records[0].value.as_deref(), Some(&b"v"[..]));
    assert!(set_producer_state(&mut [0u8; 10], 1, 1, 1).is_err());
    let mut legacyish = [0u8; 80];
    legacyish[16] = 1;
    assert!(matches!(
        set_producer_state(&mut legacyish, 1, 1, 1),
        Err(EncodeError::UnsupportedVersion { version: 1, .. })
    ));
}

#[test]
fn leader_fields_are_stamped_and_the_crc_follows_the_timestamp() {
    let mut w = RecordBatchWriter::new(BatchHeader::default());
    w.append(10, None, Some(b"a"), &[]).unwrap();
    w.append(30, None, Some(b"b"), &[]).unwrap();
    let produced = w.finish().unwrap();

    let mut create_time = BytesMut::from(&produced[..]);
    set_leader_fields(&mut create_time, 42, 7, None).unwrap();
    // Base offset and leader epoch are outside the CRC: it still holds.
    let b = decode(create_time.freeze()).unwrap().batches.remove(0);
    assert_eq!((b.base_offset, b.partition_leader_epoch), (42, 7));
    assert_eq!((b.timestamp_type, b.max_timestamp), (TimestampType::CreateTime, 30));

    let mut append_time = BytesMut::from(&produced[..]);
    set_leader_fields(&mut append_time, 42, 7, Some(5_000)).unwrap();
    let b = decode(append_time.freeze()).unwrap().batches.remove(0);
    assert_eq!((b.timestamp_type, b.max_timestamp), (TimestampType::LogAppendTime, 5_000));
    assert_eq!(b.base_timestamp, 10);
    assert_eq!(b.record_timestamp(&b.records[0]), 5_000);

    assert!(matches!(
        set_leader_fields(&mut [0u8; 10], 0, 0, None),
        Err(EncodeError::UnsupportedVersion { version: -1, .. })
    ));
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let mut w = RecordBatchWriter::new(BatchHeader {
        timestamp_type: TimestampType::LogAppendTime,
        ..BatchHeader::default()
    });
    w.append(10, None, Some(b"a"), &[]).unwrap();
    w.append(30, None, Some(b"b"), &[]).unwrap();
    let b = decode(w.finish().unwrap()).unwrap().batches.remove(0);
    assert_eq!(b.timestamp_type, TimestampType::LogAppendTime);
    assert_eq!(b.record_timestamp(&b.records[0]), 30);
}

#[test]
fn control_batches_decode_markers() {
    for (kind_code, expected) in [
        (0i16, ControlRecordKind::Abort),
        (1, ControlRecordKind::Commit),
    ] {
        let mut key = vec![0, 0];
        key.extend(kind_code.to_be_bytes());
        let batch = RecordBatch {
            is_control: true,
            is_transactional: true,
            producer_id: 42,
            last_offset_delta: 0,
            records: vec![BatchRecord {
                key: Some(Bytes::from(key)),
                value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 9])),
                ..BatchRecord::default()
            }],
            ..RecordBatch::default()
        };
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, &batch).unwrap();
        let decoded = decode(buf.freeze()).unwrap().batches.remove(0);
        assert!(decoded.is_control);
        let marker = decoded.control_record().unwrap().unwrap();
        assert_eq!(marker.kind, expected);
        assert_eq!(marker.coordinator_epoch, 9);
    }
    let other = BatchRecord {
        key: Some(Bytes::from_static(&[0, 0, 0, 5])),
        ..BatchRecord::default()
    };
    let rec = ControlRecord::decode(&other).unwrap();
    assert_eq!(rec.kind, ControlRecordKind::Other(5));
    let short = BatchRecord {
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0])),
        ..BatchRecord::default()
    };
    assert!(ControlRecord::decode(&short).is_err());
    assert!(ControlRecord::decode(&BatchRecord::default()).is_err());
    assert!(RecordBatch::default().control_record().is_none());
}

#[test]
fn concatenated_batches_and_truncation_at_every_byte() {
    let recs = sample();
    let mut all = BytesMut::new();
    let mut ends = Vec::new();
    for codec in [Compression::None, Compression::Lz4, Compression::None]
        .into_iter()
        .filter(|c| c.is_enabled())
    {
        all.put_slice(&write(codec, &recs[..3]));
        ends.push(all.len());
    }
    let all = all.freeze();
    for cut in 0..=all.len() {
        let out = decode(all.slice(..cut))
            .unwrap_or_else(|e| panic!("a cut at {cut} is a truncation, not an error: {e}"));
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(out.batches.len(), complete, "cut at {cut}");
        let at_boundary = cut == 0 || ends.contains(&cut);
        assert_eq!(out.truncated(), !at_boundary, "cut at {cut}");
        let consumed = if complete == 0 { 0 } else { ends[complete - 1] };
        assert_eq!(out.unread_bytes, cut - consumed, "cut at {cut}");
    }
}

#[test]
fn internally_truncated_batches_never_lose_records_silently() {
    // The length field and CRC agree with the cut, so the parser itself must
    // notice the missing bytes (and never panic). The one cut that may
    // decode is an LZ4 frame missing only its end mark: no data is lost.
    for codec in enabled_codecs() {
        let full = write(codec, &sample()[..3]);
        let expected = decode(full.clone()).unwrap().batches.remove(0).records;
        for cut in RECORD_BATCH_OVERHEAD - 4..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            reseal(&mut b);
            if let Ok(out) = decode(b.freeze()) {
                assert_eq!(codec, Compression::Lz4, "cut at {cut} decoded");
                assert_eq!(out.batches[0].records, expected, "{codec}: cut at {cut}");
            }
        }
    }
}

#[test]
fn crc_mismatch_is_detected_before_decompressing() {
    for codec in enabled_codecs() {
        let mut b = BytesMut::from(&write(codec, &sample())[..]);
        let last = b.len() - 1;
        b[last] ^= 0x55;
        match kind(decode(b.clone().freeze())) {
            DecodeErrorKind::CrcMismatch { expected, actual } => assert_ne!(expected, actual),
            other => panic!("{codec}: {other:?}"),
        }
        // With CRC checks off the corruption reaches the records (or the
        // codec); decoding then may fail or not, but must not panic.
        let limits = DecodeLimits {
            verify_crc: false,
            ..DecodeLimits::default()
        };
        let _ = decode_batches(b.freeze(), &limits);
    }
}

#[test]
fn garbage_magic_and_sizes_are_errors_not_truncation() {
    let good = write(Compression::None, &sample()[..1]);
    for magic in [3u8, 0x7f, 0xff] {
        let mut b = BytesMut::from(&good[..]);
        b[16] = magic;
        assert!(matches!(
            kind(decode(b.clone().freeze())),
            DecodeErrorKind::InvalidValue(_)
        ));
        // Even cut short right after the magic byte.
        assert!(decode(b.freeze().slice(..17)).is_err());
    }
    for size in [-1i32, 0, 13, i32::MIN] {
        let mut b = BytesMut::from(&good[..]);
        b[8..12].copy_from_slice(&size.to_be_bytes());
        assert!(decode(b.freeze()).is_err(), "size {size}");
    }
    // A v2 batch length below the header size.
    let mut b = BytesMut::from(&good[..]);
    b[8..12].copy_from_slice(&20i32.to_be_bytes());
    assert!(decode(b.freeze()).is_err());
    // A huge size is a truncation: nothing is allocated for it.
    let mut b = BytesMut::from(&good[..]);
    b[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let out = decode(b.freeze()).unwrap();
    assert!(out.truncated() && out.batches.is_empty());
}

#[test]
fn unknown_codec_ids_are_rejected() {
    for id in 5..8 {
        let b = raw_batch(id, 0, &[]);
        assert!(matches!(
            kind(decode(b.freeze())),
            DecodeErrorKind::InvalidValue(_)
        ));
    }
}

#[test]
fn hostile_counts_fail_before_allocating() {
    let rec = raw_record(None, &varint(-1), &varint(-1), &varint(0));
    for count in [2, 1_000_000, i32::MAX] {
        let b = raw_batch(0, count, &rec);
        assert!(
            matches!(
                kind(decode(b.freeze())),
                DecodeErrorKind::LengthExceedsRemaining { .. }
            ),
            "count {count}"
        );
    }
    assert!(matches!(
        kind(decode(raw_batch(0, -5, &rec).freeze())),
        DecodeErrorKind::NegativeLength(-5)
    ));
    // Fewer records than bytes: leftovers are an error.
    let mut two = rec.clone();
    two.extend(&rec);
    assert!(matches!(
        kind(decode(raw_batch(0, 1, &two).freeze())),
        DecodeErrorKind::TrailingBytes(_)
    ));
    assert_eq!(
        decode(raw_batch(0, 2, &two).freeze())
            .unwrap()
            .record_count(),
        2
    );
    // Header counts are bounded the same way.
    let many_headers = raw_record(None, &varint(-1), &varint(-1), &varint(1_000_000));
    assert!(matches!(
        kind(decode(raw_batch(0, 1, &many_headers).freeze())),
        DecodeErrorKind::LengthExceedsRemaining { .. }
    ));
    let neg_headers = raw_record(None, &varint(-1), &varint(-1), &varint(-1));
    assert!(matches!(
        kind(decode(raw_batch(0, 1, &neg_headers).freeze())),
        DecodeErrorKind::NegativeLength(-1)
    ));
}

#[test]
fn owned_decoding_spans_slot_chunks() {
    // More records than the owned decoder prepares slots for at once, each
    // value naming its index, so a record written to the wrong slot shows.
    let n = 2 * DECODE_CHUNK + 3;
    let recs: Vec<Rec> = (0..n)
        .map(|i| {
            let value = Bytes::from(i.to_string());
            let key = (i % 3 == 0).then(|| Bytes::from(format!("k{i}")));
            let headers = if i % 5 == 0 {
                vec![hdr("i", Some(b"five"))]
            } else {
                vec![]
            };
            (1_700_000_000_000 + i as i64, key, Some(value), headers)
        })
        .collect();
    let decoded = decode(write(Compression::None, &recs)).unwrap();
    assert_eq!(decoded.record_count(), n);
    let batch = &decoded.batches[0];
    for (i, (r, want)) in batch.records.iter().zip(&recs).enumerate() {
        assert_eq!(r.offset_delta, i as i32);
        assert_eq!(batch.record_timestamp(r), want.0);
        assert_eq!(r.key, want.1);
        assert_eq!(r.value, want.2);
        assert_eq!(r.headers, want.3);
    }

    // A record that fails in a later chunk fails the batch, at its offset.
    let rec = raw_record(None, &varint(-1), &varint(-1), &varint(0));
    let mut section: Vec<u8> = rec.repeat(DECODE_CHUNK + 5);
    let bad_at = section.len();
    section.extend(raw_record(None, &varint(-1), &varint(-7), &varint(0)));
    let count = DECODE_CHUNK as i32 + 6;
    let err = decode(raw_batch(0, count, &section).freeze()).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::NegativeLength(-7));
    // After the bad record's length, attributes, deltas, null key and the
    // negative value length: one byte each.
    assert_eq!(err.offset(), RECORD_BATCH_OVERHEAD + bad_at + 6, "{err}");
}

#[test]
fn hostile_lengths_inside_records() {
    let null = varint(-1);
    let none = varint(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "huge key",
            raw_record(None, &varint(i32::MAX.into()), &null, &none),
        ),
        ("negative key", raw_record(None, &varint(-2), &null, &none)),
        (
            "negative value",
            raw_record(None, &null, &varint(-100), &none),
        ),
        (
            "huge value",
            raw_record(None, &null, &varint(1 << 30), &none),
        ),
        (
            "negative record length",
            raw_record(Some(-3), &null, &null, &none),
        ),
        (
            "record length too long",
            raw_record(Some(1000), &null, &null, &none),
        ),
        (
            "record length too short",
            raw_record(Some(3), &null, &null, &none),
        ),
        (
            "null header key",
            raw_record(
                None,
                &null,
                &null,
                &[varint(1), null.clone(), null.clone()].concat(),
            ),
        ),
        (
            "non-UTF-8 header key",
            raw_record(
                None,
                &null,
                &null,
                &[varint(1), varint(1), vec![0xff], null.clone()].concat(),
            ),
        ),
    ];
    for (what, rec) in cases {
        let mut section = rec.clone();
        section.extend([0u8; 8]); // so counts pass the size pre-check
        let b = raw_batch(0, 1, &section);
        assert!(decode(b.freeze()).is_err(), "{what}");
    }
}

#[test]
fn record_length_disagreeing_with_its_fields() {
    let null = varint(-1);
    let none = varint(0);
    let good = raw_record(
        None,
        &null,
        &varint(3),
        &[b"abc".as_slice(), &none].concat(),
    );
    let body_len = good.len() as i64 - 1;
    let invalid = |r: Result<DecodedBatches, DecodeError>| match kind(r) {
        DecodeErrorKind::InvalidValue(msg) => msg,
        other => panic!("expected InvalidValue, got {other:?}"),
    };
    // One byte longer than its fields: the spare byte is not skipped.
    let mut longer = raw_record(Some(body_len + 1), &null, &varint(3), b"abc");
    longer.extend(&none);
    longer.push(0);
    let msg = invalid(decode(raw_batch(0, 1, &longer).freeze()));
    assert!(msg.contains("fields take"), "{msg}");
    // One byte shorter: the header count falls outside the record, even
    // though the section still holds it.
    let mut shorter = raw_record(Some(body_len - 1), &null, &varint(3), b"abc");
    shorter.extend(&none);
    let msg = invalid(decode(raw_batch(0, 1, &shorter).freeze()));
    assert!(msg.contains("run past"), "{msg}");
    // A value running past its record, into the next one.
    let mut two = raw_record(Some(6), &null, &varint(3), b"abc");
    two.extend(&good);
    assert!(matches!(
        kind(decode(raw_batch(0, 2, &two).freeze())),
        DecodeErrorKind::LengthExceedsRemaining { length: 3, .. }
    ));
    // Two-byte varints for every field decode through the same path.
    let big_value = vec![b'x'; 300];
    let mut ok = raw_record(
        None,
        &varint(200),
        &[varint(300), big_value.clone()].concat(),
        &none,
    );
    // Key bytes follow the key length; insert them.
    let key_at = ok.len() - 1 - 300 - varint(300).len();
    ok.splice(key_at..key_at, vec![b'k'; 200]);
    let len_prefix = varint(ok.len() as i64 - 2);
    ok.splice(0..2, len_prefix);
    let d = decode(raw_batch(0, 1, &ok).freeze()).unwrap();
    let r = &d.batches[0].records[0];
    assert_eq!(r.key.as_deref(), Some(vec![b'k'; 200].as_slice()));
    assert_eq!(r.value.as_deref(), Some(big_value.as_slice()));
}

#[test]
fn views_borrow_without_reference_counts() {
    let recs = sample();
    let bytes = write(Compression::None, &recs);
    let views = decode_batch_views(bytes.clone(), &DecodeLimits::default()).unwrap();
    let view = &views.batches[0];
    assert_eq!(view.records.len(), recs.len());
    // Keys and values point into the received bytes.
    let range = bytes.as_ptr_range();
    for r in &view.records {
        let r = r.unwrap();
        for b in [r.key, r.value].into_iter().flatten() {
            if !b.is_empty() {
                assert!(range.contains(&b.as_ptr()));
            }
        }
    }
    // Once the views are gone, nothing else refers to the input.
    drop(views);
    assert!(bytes.try_into_mut().is_ok());
    // A malformed record fails when it is reached, not before: the views
    // decode, the records before it iterate, then the error, then nothing.
    let mut bad = BytesMut::from(&write(Compression::None, &recs[..2])[..]);
    let last = bad.len() - 1;
    bad[last] = 0x7f; // the second record's header count: -64
    reseal(&mut bad);
    let views = decode_batch_views(bad.freeze(), &DecodeLimits::default()).unwrap();
    let mut it = views.batches[0].records.iter();
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::NegativeLength(-64));
    assert!(it.next().is_none());
}

#[test]
fn writer_reuse_after_finish() {
    let mut w = RecordBatchWriter::new(BatchHeader::default());
    w.append(5, None, Some(b"first"), &[]).unwrap();
    let a = w.finish().unwrap();
    // Handed over whole: the writer holds no buffer until the next append.
    assert_eq!(w.uncompressed_size(), RECORD_BATCH_OVERHEAD);
    assert!(w.is_empty());
    w.append(7, Some(b"k"), Some(b"second"), &[hdr("h", None)])
        .unwrap();
    let b = w.finish().unwrap();
    for (bytes, ts, value) in [(a, 5, b"first".as_slice()), (b, 7, b"second")] {
        let d = decode(bytes).unwrap();
        let batch = &d.batches[0];
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.record_timestamp(&batch.records[0]), ts);
        assert_eq!(batch.records[0].value.as_deref(), Some(value));
    }
}

#[test]
fn overlong_varints_are_rejected() {
    let mut section = vec![0xff; 6]; // record length: six continuation bytes
    section.extend([0u8; 10]);
    assert_eq!(
        kind(decode(raw_batch(0, 1, &section).freeze())),
        DecodeErrorKind::VarintTooLong
    );
    // An overlong timestamp delta varlong inside an otherwise sized record.
    let mut body = vec![0u8];
    body.extend([0xff; 11]);
    let mut rec = varint(body.len() as i64);
    rec.extend(body);
    assert_eq!(
        kind(decode(raw_batch(0, 1, &rec).freeze())),
        DecodeErrorKind::VarintTooLong
    );
}

#[cfg_attr(not(feature = "compression-snappy"), allow(dead_code))]
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\0";

/// The 16-byte xerial snappy stream header (magic, version 1, compatible 1).
#[cfg_attr(not(feature = "compression-snappy"), allow(dead_code))]
fn xerial_header() -> Vec<u8> {
    [XERIAL_MAGIC, &1i32.to_be_bytes(), &1i32.to_be_bytes()].concat()
}

/// A compressed bomb of `mib` MiB of zeros that is tiny on the wire:
/// concatenated gzip members and zstd frames (decoders read on through
/// them), and one xerial snappy stream or LZ4 frame with a compressed block
/// of zeros repeated.
fn bomb(codec: Compression, mib: usize) -> Vec<u8> {
    let block = if codec == Compression::Lz4 {
        64 << 10
    } else {
        1 << 20
    };
    let mut one = BytesMut::new();
    compression::compress(codec, &vec![0u8; block], &mut one).unwrap();
    let (head, body, tail) = match codec {
        // Header; blocks.
        Compression::Snappy => (&one[..16], &one[16..], &[][..]),
        // Magic, FLG, BD, header checksum; one block; end mark.
        Compression::Lz4 => (&one[..7], &one[7..one.len() - 4], &one[one.len() - 4..]),
        _ => (&[][..], &one[..], &[][..]),
    };
    let mut out = head.to_vec();
    for _ in 0..(mib << 20) / block {
        out.extend_from_slice(body);
    }
    out.extend_from_slice(tail);
    out
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let limits = DecodeLimits {
        max_decompressed_bytes: 4 << 20,
        ..DecodeLimits::default()
    };
    for codec in enabled_codecs().filter(|&c| c != Compression::None) {
        // 1 GiB once inflated; snappy's ratio is capped near 20:1, so its
        // bomb is smaller, but still far beyond the cap.
        let mib = if codec == Compression::Snappy {
            128
        } else {
            1024
        };
        let payload = bomb(codec, mib);
        assert!(payload.len() < 8 << 20, "{codec}: {}", payload.len());
        // The records section is the bomb; its record count is plausible.
        let mut b = raw_batch(codec.id().into(), 1, &payload);
        reseal(&mut b);
        let started = std::time::Instant::now();
        let err = kind(decode_batches(b.freeze(), &limits));
        assert_eq!(
            err,
            DecodeErrorKind::DecompressedTooLarge { limit: 4 << 20 },
            "{codec}"
        );
        assert!(
            started.elapsed().as_secs() < 20,
            "{codec} took {:?}",
            started.elapsed()
        );
    }
}

#[cfg(feature = "compression-snappy")]
#[test]
fn snappy_declared_lengths_are_checked_before_allocating() {
    // Raw snappy whose preamble claims 1 GiB.
    let claim = {
        let mut b = BytesMut::new();
        crate::protocol::WriteExt::put_unsigned_varint(&mut b, 1 << 30);
        b.put_slice(&[0u8; 4]);
        b
    };
    let err = compression::decompress(Compression::Snappy, &claim, 1 << 20, 2).unwrap_err();
    assert_eq!(
        err,
        DecodeErrorKind::DecompressedTooLarge { limit: 1 << 20 }
    );
    // The same inside a xerial block.
    let mut framed = xerial_header();
    framed.extend((claim.len() as u32).to_be_bytes());
    framed.extend_from_slice(&claim);
    let err = compression::decompress(Compression::Snappy, &framed, 1 << 20, 2).unwrap_err();
    assert_eq!(
        err,
        DecodeErrorKind::DecompressedTooLarge { limit: 1 << 20 }
    );
    // Block lengths past the end are errors, not panics.
    let mut framed = xerial_header();
    framed.extend(u32::MAX.to_be_bytes());
    framed.push(0);
    assert!(compression::decompress(Compression::Snappy, &framed, 1 << 20, 2).is_err());
}

#[cfg(feature = "compression-snappy")]
#[test]
fn snappy_reads_raw_and_xerial() {
    let data = b"hello hello hello hello snappy".repeat(100);
    let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
    assert_eq!(
        compression::decompress(Compression::Snappy, &raw, 1 << 20, 2).unwrap(),
        data
    );
    let mut framed = BytesMut::new();
    compression::compress(Compression::Snappy, &data, &mut framed).unwrap();
    assert!(framed.starts_with(XERIAL_MAGIC));
    assert_eq!(
        compression::decompress(Compression::Snappy, &framed, 1 << 20, 2).unwrap(),
        data
    );
    // Several xerial blocks (input above the 32 KiB block size).
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut framed = BytesMut::new();
    compression::compress(Compression::Snappy, &big, &mut framed).unwrap();
    assert_eq!(
        compression::decompress(Compression::Snappy, &framed, 1 << 20, 2).unwrap(),
        big
    );
}

#[cfg(feature = "compression-zstd")]
#[test]
fn zstd_huge_window_is_refused() {
    use std::io::Write;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(30))
        .unwrap();
    enc.write_all(b"tiny").unwrap();
    let frame = enc.finish().unwrap();
    // The frame declares a 1 GiB window; decoding must refuse rather than
    // allocate it.
    let err = compression::decompress(Compression::Zstd, &frame, 1 << 20, 2).unwrap_err();
    assert!(matches!(err, DecodeErrorKind::Compression(_)), "{err:?}");
}

#[cfg(feature = "compression-zstd")]
#[test]
fn zstd_cached_context_recovers_after_failures() {
    // The thread keeps one decoder context; a frame abandoned half-way (a
    // bomb, garbage) must not leak state into the next decode.
    let good = {
        let mut b = BytesMut::new();
        compression::compress(Compression::Zstd, b"payload", &mut b).unwrap();
        b
    };
    let bomb = bomb(Compression::Zstd, 16);
    for _ in 0..3 {
        assert_eq!(
            compression::decompress(Compression::Zstd, &bomb, 1 << 20, 2),
            Err(DecodeErrorKind::DecompressedTooLarge { limit: 1 << 20 })
        );
        assert!(
            compression::decompress(Compression::Zstd, &good[..good.len() / 2], 1 << 20, 2)
                .is_err()
        );
        assert!(compression::decompress(Compression::Zstd, b"garbage!", 1 << 20, 2).is_err());
        assert_eq!(
            compression::decompress(Compression::Zstd, &good, 1 << 20, 2).unwrap(),
            &b"payload"[..]
        );
    }
}

#[cfg(feature = "compression-lz4")]
#[test]
fn lz4_header_checksum_helper_matches_lz4_flex() {
    let mut framed = BytesMut::new();
    compression::compress(Compression::Lz4, b"abc", &mut framed).unwrap();
    // lz4_flex wrote a correct checksum, so there is nothing to fix.
    assert!(compression::test_support::fix_header_checksum(&framed).is_none());
    let expected = (compression::test_support::xxh32(&framed[4..6], 0) >> 8) as u8;
    assert_eq!(framed[6], expected);
    // XXH32 reference values.
    assert_eq!(compression::test_support::xxh32(b"", 0), 0x02CC_5D05);
    assert_eq!(compression::test_support::xxh32(b"a", 0), 0x550D_7456);
    assert_eq!(compression::test_support::xxh32(b"abc", 0), 0x32D1_53FF);
}

#[test]
fn disabled_codecs_fail_clearly() {
    for codec in Compression::ALL.into_iter().filter(|c| !c.is_enabled()) {
        let err = compression::decompress(codec, b"xx", 100, 2).unwrap_err();
        assert!(format!("{err}").contains("feature"), "{err}");
        for input in [&b"xx"[..], b""] {
            let mut out = BytesMut::new();
            let err = compression::compress(codec, input, &mut out).unwrap_err();
            assert!(format!("{err}").contains("feature"), "{err}");
            // A writer of that codec fails the same way, at the latest
            // when the batch is finished.
            let mut w = RecordBatchWriter::new(BatchHeader {
                compression: codec,
                ..BatchHeader::default()
            });
            let written = w.append(0, None, Some(input), &[]).and_then(|_| w.finish());
            let err = written.unwrap_err();
            assert!(format!("{err}").contains("feature"), "{err}");
        }
    }
    assert!(Compression::None.is_enabled());
}

#[test]
fn total_budget_stops_between_batches() {
    let Some(codec) = enabled_codecs().find(|&c| c != Compression::None) else {
        return;
    };
    let recs = vec![(1, None, Some(Bytes::from(vec![1u8; 100_000])), vec![])];
    let mut all = BytesMut::new();
    for _ in 0..3 {
        all.put_slice(&write(codec, &recs));
    }
    let all = all.freeze();
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        max_total_decompressed_bytes: 250_000,
        verify_crc: true,
    };
    let out = decode_batches(all.clone(), &limits).unwrap();
    assert_eq!(out.batches.len(), 2);
    assert_eq!(out.stop, DecodeStop::DecompressionBudget);
    assert_eq!(out.unread_bytes, all.len() / 3);
    // When even the first batch does not fit, that is an error.
    let tiny = DecodeLimits {
        max_total_decompressed_bytes: 1000,
        ..limits
    };
    assert!(matches!(
        kind(decode_batches(all, &tiny)),
        DecodeErrorKind::DecompressedTooLarge { .. }
    ));
}

#[test]
fn compression_names_parse() {
    for c in Compression::ALL {
        assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        assert_eq!(Compression::from_id(c.id()), Some(c));
    }
    assert_eq!("GZIP".parse::<Compression>().unwrap(), Compression::Gzip);
    assert!("brotli".parse::<Compression>().is_err());
    assert_eq!(Compression::from_id(5), None);
}

#[test]
fn size_estimate_is_an_upper_bound() {
    let mut w = RecordBatchWriter::new(BatchHeader::default());
    for (ts, k, v, h) in sample() {
        let bound =
            record_size_upper_bound(k.as_ref().map(Bytes::len), v.as_ref().map(Bytes::len), &h);
        let before = w.uncompressed_size();
        let n = w.append(ts, k.as_deref(), v.as_deref(), &h).unwrap();
        assert_eq!(w.uncompressed_size() - before, n);
        assert!(n <= bound, "{n} > {bound}");
    }
    assert_eq!(w.finish().unwrap().len(), w_size_of(&sample()));
}

fn w_size_of(recs: &[Rec]) -> usize {
    write(Compression::None, recs).len()
}

// ------------------------------------------------------------ legacy sets

fn legacy_message(
    magic: i8,
    attributes: i8,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i8(magic);
    body.put_i8(attributes);
    if magic == 1 {
        body.put_i64(ts);
    }
    for f in [key, value] {
        match f {
            None => body.put_i32(-1),
            Some(b) => {
                body.put_i32(b.len() as i32);
                body.put_slice(b);
            }
        }
    }
    let mut msg = crc32fast::hash(&body).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

fn legacy_entry(offset: i64, message: &[u8]) -> Vec<u8> {
    let mut e = offset.to_be_bytes().to_vec();
    e.extend((message.len() as i32).to_be_bytes());
    e.extend_from_slice(message);
    e
}

#[test]
fn legacy_plain_messages() {
    let mut set = legacy_entry(5, &legacy_message(0, 0, 0, Some(b"k0"), Some(b"v0")));
    set.extend(legacy_entry(
        6,
        &legacy_message(1, 0x08, 1234, None, Some(b"v1")),
    ));
    set.extend(legacy_entry(7, &legacy_message(1, 0, 99, Some(b""), None)));
    // A v2 batch may follow after a format upgrade.
    set.extend_from_slice(&write(Compression::None, &sample()[..1]));
    let out = decode(Bytes::from(set)).unwrap();
    assert_eq!(out.batches.len(), 4);
    let [a, b, c, d] = &out.batches[..] else {
        unreachable!()
    };
    assert_eq!((a.magic, a.base_offset, a.base_timestamp), (0, 5, -1));
    assert_eq!(a.records[0].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!((b.magic, b.base_offset), (1, 6));
    assert_eq!(b.timestamp_type, TimestampType::LogAppendTime);
    assert_eq!(b.record_timestamp(&b.records[0]), 1234);
    assert_eq!(b.records[0].key, None);
    assert_eq!(
        (c.records[0].key.as_deref(), c.records[0].value.as_ref()),
        (Some(&b""[..]), None)
    );
    assert_eq!(c.record_timestamp(&c.records[0]), 99);
    assert_eq!(c.next_offset(), 8);
    assert_eq!(d.magic, 2);
}

#[test]
fn legacy_crc_and_structure_errors() {
    let mut m = legacy_message(1, 0, 1, Some(b"k"), Some(b"v"));
    let last = m.len() - 1;
    m[last] ^= 1;
    assert!(matches!(
        kind(decode(Bytes::from(legacy_entry(0, &m)))),
        DecodeErrorKind::CrcMismatch { .. }
    ));
    // Key length beyond the message.
    let mut body = vec![1u8, 0];
    body.extend(0i64.to_be_bytes());
    body.extend(1000i32.to_be_bytes());
    body.extend((-1i32).to_be_bytes());
    let mut msg = crc32fast::hash(&body).to_be_bytes().to_vec();
    msg.extend(&body);
    assert!(decode(Bytes::from(legacy_entry(0, &msg))).is_err());
    // zstd never existed for v0/v1.
    let zstd = legacy_message(1, 4, 1, None, Some(b"x"));
    assert!(decode(Bytes::from(legacy_entry(0, &zstd))).is_err());
    // A compressed wrapper needs a value.
    let wrapper = legacy_message(1, 1, 1, None, None);
    assert!(decode(Bytes::from(legacy_entry(0, &wrapper))).is_err());
}

/// A wrapper message of `magic` whose value is `inner` compressed with `codec`.
fn legacy_wrapper(
    codec: Compression,
    magic: i8,
    attrs: i8,
    ts: i64,
    offset: i64,
    inner: &[u8],
) -> Vec<u8> {
    let mut compressed = BytesMut::new();
    compression::compress(codec, inner, &mut compressed).unwrap();
    let wrapper = legacy_message(magic, attrs | codec.id() as i8, ts, None, Some(&compressed));
    legacy_entry(offset, &wrapper)
}

#[test]
fn legacy_compressed_wrappers() {
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4]
        .into_iter()
        .filter(|c| c.is_enabled())
    {
        // v1: inner offsets 0..3 relative; the wrapper holds the absolute
        // offset of the last (102), so they are 100, 101, 102.
        let mut inner = Vec::new();
        for (i, ts) in [(0, 10), (1, 30), (2, 20)] {
            inner.extend(legacy_entry(
                i,
                &legacy_message(1, 0, ts, Some(format!("k{i}").as_bytes()), Some(b"v")),
            ));
        }
        let set = legacy_wrapper(codec, 1, 0, 30, 102, &inner);
        let b = decode(Bytes::from(set)).unwrap().batches.remove(0);
        assert_eq!(b.compression, codec);
        assert_eq!((b.base_offset, b.last_offset()), (100, 102), "{codec}");
        let offsets: Vec<i64> = b.records.iter().map(|r| b.record_offset(r)).collect();
        assert_eq!(offsets, [100, 101, 102]);
        let ts: Vec<i64> = b.records.iter().map(|r| b.record_timestamp(r)).collect();
        assert_eq!(ts, [10, 30, 20]);
        assert_eq!(b.records[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(b.max_timestamp, 30);

        // v1 with LogAppendTime on the wrapper: every record gets its time.
        let set = legacy_wrapper(codec, 1, 0x08, 777, 102, &inner);
        let b = decode(Bytes::from(set)).unwrap().batches.remove(0);
        assert!(b.records.iter().all(|r| b.record_timestamp(r) == 777));

        // v0: inner offsets are absolute.
        let mut inner = Vec::new();
        for i in [50, 51] {
            inner.extend(legacy_entry(i, &legacy_message(0, 0, 0, None, Some(b"x"))));
        }
        let set = legacy_wrapper(codec, 0, 0, 0, 51, &inner);
        let b = decode(Bytes::from(set)).unwrap().batches.remove(0);
        let offsets: Vec<i64> = b.records.iter().map(|r| b.record_offset(r)).collect();
        assert_eq!(offsets, [50, 51], "{codec}");

        // Nested compression and empty sets are rejected.
        let nested = legacy_wrapper(
            codec,
            1,
            0,
            1,
            0,
            &legacy_wrapper(codec, 1, 0, 1, 0, &inner),
        );
        assert!(decode(Bytes::from(nested)).is_err());
        let empty = legacy_wrapper(codec, 1, 0, 1, 0, &[]);
        assert!(decode(Bytes::from(empty)).is_err());
        // A truncated inner set is corruption, not a broker cut.
        let cut = legacy_wrapper(codec, 1, 0, 1, 0, &inner[..inner.len() - 1]);
        assert!(decode(Bytes::from(cut)).is_err());
    }
}

#[cfg(feature = "compression-lz4")]
#[test]
fn legacy_v0_lz4_with_kafka_3160_checksum() {
    let inner = legacy_entry(3, &legacy_message(0, 0, 0, Some(b"key"), Some(b"value")));
    let mut compressed = BytesMut::new();
    compression::compress(Compression::Lz4, &inner, &mut compressed).unwrap();
    // Break the header checksum the way Kafka's v0 writer did: computed
    // from the start of the frame (magic included).
    let broken = (compression::test_support::xxh32(&compressed[0..6], 0) >> 8) as u8;
    assert_ne!(broken, compressed[6]);
    compressed[6] = broken;
    let v0 = legacy_entry(3, &legacy_message(0, 3, 0, None, Some(&compressed)));
    let b = decode(Bytes::from(v0)).unwrap().batches.remove(0);
    assert_eq!(b.records[0].value.as_deref(), Some(&b"value"[..]));
    // v1 requires the correct checksum.
    let v1 = legacy_entry(3, &legacy_message(1, 3, 0, None, Some(&compressed)));
    assert!(decode(Bytes::from(v1)).is_err());
}

// ------------------------------------------------------------- properties

fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
}

fn arb_record() -> impl Strategy<Value = Rec> {
    (
        any::<i64>(),
        arb_bytes(),
        arb_bytes(),
        proptest::collection::vec(("[a-z]{0,5}", arb_bytes()), 0..3),
    )
        .prop_map(|(ts, k, v, h)| {
            let headers = h
                .into_iter()
                .map(|(key, value)| RecordHeader { key, value })
                .collect();
            (ts, k, v, headers)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_writer_round_trips(recs in proptest::collection::vec(arb_record(), 1..20), codec in 0u8..5) {
        let codec = Compression::from_id(codec).unwrap();
        prop_assume!(codec.is_enabled());
        let out = decode(write(codec, &recs)).unwrap();
        prop_assert_eq!(out.batches.len(), 1);
        let b = &out.batches[0];
        for (r, (ts, k, v, h)) in b.records.iter().zip(&recs) {
            prop_assert_eq!(b.record_timestamp(r), *ts);
            prop_assert_eq!(&r.key, k);
            prop_assert_eq!(&r.value, v);
            prop_assert_eq!(&r.headers, h);
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let limits = DecodeLimits { max_decompressed_bytes: 1 << 16, max_total_decompressed_bytes: 1 << 18, verify_crc: false };
        let _ = decode_checked(Bytes::from(data), &limits);
    }

    #[test]
    fn prop_mutated_batches_never_panic(pos in 0usize..200, byte in any::<u8>(), codec in 0u8..5) {
        let codec = Compression::from_id(codec).unwrap();
        prop_assume!(codec.is_enabled());
        let mut b = BytesMut::from(&write(codec, &sample()[..3])[..]);
        let pos = pos % b.len();
        b[pos] = byte;
        if pos >= 21 { reseal(&mut b); }
        let _ = decode(b.freeze());
    }
}

/// The writer's record framing has a fast path (no headers, every varint
/// within 8 bytes, the framing before the first byte string within 16
/// bytes) and a general one. Records on both sides of each of those
/// limits, and of the varint lengths, must come out as the reference
/// encoding built here from `WriteExt`'s varints.
#[test]
fn record_framing_matches_the_reference_on_both_sides_of_every_limit() {
    fn nullable(out: &mut Vec<u8>, v: &Option<Bytes>) {
        match v {
            None => out.extend(varint(-1)),
            Some(b) => {
                out.extend(varint(b.len() as i64));
                out.extend(&b[..]);
            }
        }
    }
    fn reference(r: &BatchRecord) -> Vec<u8> {
        let mut body = vec![r.attributes as u8];
        body.extend(varint(r.timestamp_delta));
        body.extend(varint(i64::from(r.offset_delta)));
        nullable(&mut body, &r.key);
        nullable(&mut body, &r.value);
        body.extend(varint(r.headers.len() as i64));
        for h in &r.headers {
            nullable(&mut body, &Some(Bytes::from(h.key.clone())));
            nullable(&mut body, &h.value);
        }
        let mut out = varint(body.len() as i64);
        out.extend(body);
        out
    }
    let bytes = |n: usize| Some(Bytes::from(vec![b'x'; n]));
    let strings = [
        None,
        bytes(0),
        bytes(63),
        bytes(64),
        bytes(8191),
        bytes(8192),
    ];
    // Zig-zag doubles: 63 and -64 take 1 byte, 64 takes 2, 2^27 takes 5,
    // 2^55 takes 9 and i64::MIN 10.
    let timestamps = [
        0,
        63,
        -64,
        64,
        8191,
        1 << 27,
        (1 << 55) - 1,
        1 << 55,
        i64::MIN,
    ];
    let offsets = [0, 64, 1 << 20, i32::MAX];
    let mut template = decode(write(Compression::None, &sample()))
        .unwrap()
        .batches
        .remove(0);
    let mut cases = 0;
    for timestamp_delta in timestamps {
        for offset_delta in offsets {
            for key in &strings {
                for value in &strings {
                    for headers in [vec![], vec![hdr("h", Some(b"v"))]] {
                        let record = BatchRecord {
                            attributes: -1,
                            timestamp_delta,
                            offset_delta,
                            key: key.clone(),
                            value: value.clone(),
                            headers,
                        };
                        let expected = reference(&record);
                        template.records = vec![record];
                        let mut out = BytesMut::new();
                        encode_batch(&mut out, &template).unwrap();
                        assert_eq!(
                            &out[RECORD_BATCH_OVERHEAD..],
                            &expected[..],
                            "{:?}",
                            template.records[0]
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 9 * 4 * 6 * 6 * 2);
    // And through the writer, whose deltas it computes itself: a huge
    // timestamp delta after a small one, with and without a key.
    let recs: Vec<Rec> = vec![
        (0, None, bytes(10), vec![]),
        (i64::MAX, bytes(3), bytes(100), vec![]),
        (i64::MIN, None, None, vec![]),
    ];
    let out = decode(write(Compression::None, &recs)).unwrap();
    check_sample(&out.batches[0], &recs);
}
