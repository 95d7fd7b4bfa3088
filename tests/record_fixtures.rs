//! Record batches written by real clients, and decompression-bomb memory.
//!
//! The fixtures under `tests/fixtures/records/` are broker log segments
//! captured by `scripts/capture_fixtures.py` (see the README there): the Java
//! client and librdkafka each produced [`RECORDS`] with every codec. Decoding
//! them checks our codecs and batch parser against what real clients write;
//! re-encoding the uncompressed ones checks our encoder byte for byte.
// The peak-memory checks count allocations with a global allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use rskafka::protocol::record::{
    decode_batches, encode_batch, BatchHeader, Compression, ControlRecordKind, DecodeLimits,
    DecodeStop, RecordBatch, RecordBatchWriter, RecordHeader, TimestampType,
};

const BASE_TS: i64 = 1_700_000_000_000;

/// (key, value, headers, timestamp) as in `scripts/capture_fixtures.py`.
type Expected = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(&'static str, Option<&'static [u8]>)>,
    i64,
);

#[allow(non_snake_case)]
fn RECORDS() -> Vec<Expected> {
    let s = |v: &str| Some(v.as_bytes().to_vec());
    vec![
        (
            s("key-0"),
            s("value-0"),
            vec![("h1", Some(b"v1")), ("h2", None)],
            BASE_TS,
        ),
        (None, s("null-key"), vec![], BASE_TS + 1000),
        (s("tombstone"), None, vec![], BASE_TS + 2000),
        (s(""), s(""), vec![], BASE_TS + 1500),
        (
            s("big"),
            Some(b"0123456789".repeat(1000)),
            vec![],
            BASE_TS + 3000,
        ),
        (
            s("utf8-ключ"),
            s("ünïcödé ✓"),
            vec![("dup", Some(b"a")), ("dup", Some(b"b"))],
            BASE_TS + 4000,
        ),
    ]
}

fn fixture(name: &str) -> Bytes {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "records",
        name,
    ]
    .iter()
    .collect();
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn decode_all(bytes: Bytes) -> Vec<RecordBatch> {
    let out = decode_batches(bytes, &DecodeLimits::default()).expect("fixture decodes");
    assert_eq!(out.stop, DecodeStop::Complete);
    assert_eq!(out.unread_bytes, 0);
    out.batches
}

/// Checks that `batches` hold exactly [`RECORDS`] at offsets 0.., with the
/// producer's timestamps.
fn check_records(name: &str, batches: &[RecordBatch]) {
    let expected = RECORDS();
    let mut seen = 0;
    for batch in batches {
        assert_eq!(batch.magic, 2, "{name}");
        assert_eq!(batch.timestamp_type, TimestampType::CreateTime, "{name}");
        assert!(!batch.is_control && !batch.is_transactional, "{name}");
        for rec in &batch.records {
            let (key, value, headers, ts) = &expected[seen];
            assert_eq!(batch.record_offset(rec), seen as i64, "{name} offset");
            assert_eq!(batch.record_timestamp(rec), *ts, "{name} record {seen}");
            assert_eq!(rec.key.as_deref(), key.as_deref(), "{name} record {seen}");
            assert_eq!(
                rec.value.as_deref(),
                value.as_deref(),
                "{name} record {seen}"
            );
            let got: Vec<(&str, Option<&[u8]>)> = rec
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_deref()))
                .collect();
            assert_eq!(&got, headers, "{name} record {seen}");
            seen += 1;
        }
    }
    assert_eq!(seen, expected.len(), "{name}: record count");
}

#[test]
fn real_client_batches_decode_in_every_codec() {
    for client in ["java", "librdkafka"] {
        for codec in Compression::ALL {
            let name = format!("{client}-{codec}.bin");
            if !codec.is_enabled() {
                testkit::skip(format!("{name}: codec disabled in this build"));
                continue;
            }
            let raw = fixture(&name);
            let batches = decode_all(raw.clone());
            check_records(&name, &batches);
            for b in &batches {
                assert_eq!(b.compression, codec, "{name}");
                // The Java client is idempotent by default; librdkafka is not.
                if client == "java" {
                    assert!(b.producer_id >= 0 && b.base_sequence >= 0, "{name}");
                } else {
                    assert_eq!((b.producer_id, b.base_sequence), (-1, -1), "{name}");
                }
            }
            if codec == Compression::Snappy {
                // Java frames snappy the xerial way, librdkafka writes it raw:
                // both forms were read.
                let xerial = raw.get(61..69) == Some(&b"\x82SNAPPY\0"[..]);
                assert_eq!(xerial, client == "java", "{name}");
            }
        }
    }
}

#[test]
fn our_encoder_reproduces_real_uncompressed_batches_exactly() {
    for name in ["java-none.bin", "librdkafka-none.bin"] {
        let raw = fixture(name);
        let mut again = BytesMut::new();
        for b in decode_all(raw.clone()) {
            encode_batch(&mut again, &b).unwrap();
        }
        assert_eq!(again.freeze(), raw, "{name}: re-encoded bytes differ");
    }
}

#[test]
fn real_batches_reencode_with_every_codec() {
    let batches = decode_all(fixture("java-none.bin"));
    for codec in Compression::ALL.into_iter().filter(|c| c.is_enabled()) {
        let mut buf = BytesMut::new();
        for b in &batches {
            let mut b = b.clone();
            b.compression = codec;
            encode_batch(&mut buf, &b).unwrap();
        }
        let back = decode_all(buf.freeze());
        check_records(&format!("re-encoded with {codec}"), &back);
    }
}

#[test]
fn log_append_time_batch() {
    if !Compression::Gzip.is_enabled() {
        testkit::skip("gzip disabled in this build");
        return;
    }
    let batches = decode_all(fixture("librdkafka-gzip-logappendtime.bin"));
    let mut n = 0;
    for b in &batches {
        assert_eq!(b.timestamp_type, TimestampType::LogAppendTime);
        // The broker stamped its clock at capture time, long after BASE_TS.
        assert!(
            b.max_timestamp > BASE_TS + 1_000_000_000,
            "{}",
            b.max_timestamp
        );
        for r in &b.records {
            assert_eq!(b.record_timestamp(r), b.max_timestamp);
            n += 1;
        }
    }
    assert_eq!(n, RECORDS().len());
}

#[test]
fn transactional_batches_and_markers() {
    let batches = decode_all(fixture("librdkafka-transactional.bin"));
    // (is control, marker, values) per batch
    type Shape<'a> = (bool, Option<ControlRecordKind>, Vec<&'a [u8]>);
    let shape: Vec<Shape> = batches
        .iter()
        .map(|b| {
            assert!(b.is_transactional);
            assert!(b.producer_id >= 0);
            assert_eq!(b.producer_id, batches[0].producer_id);
            let marker = b.control_record().map(|m| m.expect("marker decodes").kind);
            let values = if b.is_control {
                Vec::new()
            } else {
                b.records
                    .iter()
                    .filter_map(|r| r.value.as_deref())
                    .collect()
            };
            (b.is_control, marker, values)
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (false, None, vec![&b"committed-1"[..], b"committed-2"]),
            (true, Some(ControlRecordKind::Commit), vec![]),
            (false, None, vec![&b"aborted"[..]]),
            (true, Some(ControlRecordKind::Abort), vec![]),
        ]
    );
    let last = batches.last().unwrap();
    // Offsets 0-1 committed data, 2 its marker, 3 aborted data, 4 its marker.
    assert_eq!(last.next_offset(), 5);
}

#[test]
fn every_prefix_of_real_fixtures_decodes_or_reports_truncation() {
    for client in ["java", "librdkafka"] {
        for codec in Compression::ALL.into_iter().filter(|c| c.is_enabled()) {
            let raw = fixture(&format!("{client}-{codec}.bin"));
            // The whole file is one batch in these captures; every proper
            // prefix is a broker cut, never an error.
            let total = decode_all(raw.clone()).len();
            for cut in (0..raw.len()).step_by(7) {
                let out = decode_batches(raw.slice(..cut), &DecodeLimits::default())
                    .unwrap_or_else(|e| panic!("{client}-{codec} cut at {cut}: {e}"));
                assert!(out.batches.len() < total || total == 0);
                assert_eq!(out.truncated(), cut > 0 && out.unread_bytes > 0);
            }
        }
    }
}

/// Our writer's batches of [`RECORDS`] in every codec. They must decode to
/// the same records; with `RSKAFKA_DUMP_BATCHES=DIR` they are also written to
/// `DIR/rskafka-<codec>.bin`, which `scripts/capture_fixtures.py
/// --check-encoder` produces to the real broker (whose Java codecs validate
/// them) and reads back with librdkafka.
#[test]
fn our_batches_in_every_codec() {
    let dump = std::env::var_os("RSKAFKA_DUMP_BATCHES").map(PathBuf::from);
    for codec in Compression::ALL.into_iter().filter(|c| c.is_enabled()) {
        let mut w = RecordBatchWriter::new(BatchHeader {
            compression: codec,
            ..BatchHeader::default()
        });
        for (key, value, headers, ts) in RECORDS() {
            let headers: Vec<RecordHeader> = headers
                .into_iter()
                .map(|(k, v)| RecordHeader {
                    key: k.to_owned(),
                    value: v.map(Bytes::from_static),
                })
                .collect();
            w.append(ts, key.as_deref(), value.as_deref(), &headers)
                .unwrap();
        }
        let batch = w.finish().unwrap();
        check_records(&format!("our {codec}"), &decode_all(batch.clone()));
        if let Some(dir) = &dump {
            let path = dir.join(format!("rskafka-{codec}.bin"));
            std::fs::write(&path, &batch).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

// ------------------------------------------------------ allocation limits

/// Tracks live and peak heap bytes per thread, so a test can measure what
/// its own decoding allocated while other tests run in parallel.
struct PeakAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: defers to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Peak bytes allocated (above the starting level) while running `f`.
#[cfg_attr(
    not(any(feature = "compression-gzip", feature = "compression-zstd")),
    allow(dead_code)
)]
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get) - start;
    (out, peak.max(0) as usize)
}

/// A v2 batch whose records section is `payload`, claiming one record.
#[cfg_attr(
    not(any(feature = "compression-gzip", feature = "compression-zstd")),
    allow(dead_code)
)]
fn batch_around(codec: Compression, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(61 + payload.len());
    b.extend(0i64.to_be_bytes());
    b.extend(((49 + payload.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend([0; 4]);
    b.extend(i16::from(codec.id()).to_be_bytes());
    b.extend(0i32.to_be_bytes());
    b.extend([0; 16]);
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(1i32.to_be_bytes());
    b.extend_from_slice(payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[cfg(feature = "compression-zstd")]
#[test]
fn zstd_bomb_stays_within_the_cap_in_memory() {
    // 128 MiB of zeros as a single zstd frame is a few KiB.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 256 << 10, "bomb is {} bytes", bomb.len());
    let batch = batch_around(Compression::Zstd, &bomb);
    let cap = 8 << 20;
    let limits = DecodeLimits {
        max_decompressed_bytes: cap,
        ..DecodeLimits::default()
    };
    let (result, peak) = peak_during(|| decode_batches(batch, &limits));
    let err = result.expect_err("the bomb must be refused");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // The output buffer (at most cap + 1) plus the decoder's own state
    // (window and buffers, well under 16 MiB at this cap).
    eprintln!("zstd bomb: peak {peak} bytes with a cap of {cap}");
    assert!(peak < cap + (16 << 20), "peak {peak} bytes");
}

#[cfg(feature = "compression-gzip")]
#[test]
fn gzip_bomb_stays_within_the_cap_in_memory() {
    // 1 GiB of zeros: a 1 MiB gzip member repeated (gzip readers, Kafka's
    // included, read on through concatenated members).
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &vec![0u8; 1 << 20]).unwrap();
    let member = enc.finish().unwrap();
    let bomb = member.repeat(1024);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let batch = batch_around(Compression::Gzip, &bomb);
    let cap = 4 << 20;
    let limits = DecodeLimits {
        max_decompressed_bytes: cap,
        ..DecodeLimits::default()
    };
    let (result, peak) = peak_during(|| decode_batches(batch, &limits));
    assert!(result.is_err());
    eprintln!("gzip bomb: peak {peak} bytes with a cap of {cap}");
    assert!(peak < cap + (1 << 20), "peak {peak} bytes");
}
