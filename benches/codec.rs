//! Record-batch codec micro-benchmarks, in bytes per second of uncompressed
//! batch, beside the physical limits over the same bytes (memcpy, CRC-32C)
//! and the `kafka-protocol` crate's codec.
//!
//! `cargo bench --bench codec` (see docs/benchmarks.md). Every benchmark of a
//! record size shares one throughput base — the size of the uncompressed v2
//! batch — so the MB/s figures compare directly. Encoders write into the
//! buffer of the previous batch, as the producer recycles its buffers and
//! as memcpy reuses its destination (gzip and zstd still allocate their
//! compressed output); `rskafka-fresh` allocates per batch.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records as kp;
use rskafka::protocol::record::{
    decode_batch_views, decode_batches, BatchHeader, Compression, DecodeLimits, RecordBatchWriter,
};

/// Uncompressed batch size each case aims at: about what a lingering
/// producer sends per partition under load.
const BATCH_BYTES: usize = 256 * 1024;
const BASE_TS: i64 = 1_700_000_000_000;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Record values: random upper-case letters as in Kafka's
/// ProducerPerformance, different for every record, so compressors find
/// some redundancy but not a trivially repeated payload.
fn values(size: usize) -> Vec<Bytes> {
    let n = BATCH_BYTES / size;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            let v: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'A' + (x % 26) as u8
                })
                .collect();
            Bytes::from(v)
        })
        .collect()
}

/// Encodes one batch into `spare`, the buffer of an earlier batch handed
/// back (as the producer recycles its batch buffers, and as memcpy's
/// destination is reused below), or into a fresh allocation if it is empty.
fn encode_ours_into(values: &[Bytes], compression: Compression, spare: BytesMut) -> Bytes {
    let header = BatchHeader {
        compression,
        ..BatchHeader::default()
    };
    let mut w = RecordBatchWriter::with_buffer(header, spare, BATCH_BYTES + values.len() * 8);
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = w.append(BASE_TS + i as i64, None, Some(v), &[]) {
            panic!("append: {e}");
        }
    }
    match w.finish() {
        Ok(b) => b,
        Err(e) => panic!("finish: {e}"),
    }
}

fn encode_ours(values: &[Bytes], compression: Compression) -> Bytes {
    encode_ours_into(values, compression, BytesMut::new())
}

fn kp_compression(c: Compression) -> kp::Compression {
    match c {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

fn kp_records(values: &[Bytes]) -> Vec<kp::Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kp::TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset minus sequence
            // changes; keeping it constant makes one batch, like ours.
            sequence: i as i32,
            timestamp: BASE_TS + i as i64,
            key: None,
            value: Some(v.clone()),
            headers: Default::default(),
        })
        .collect()
}

/// As [`encode_ours_into`]: into `spare`, a recycled buffer, if not empty.
fn encode_kp_into(records: &[kp::Record], compression: Compression, spare: BytesMut) -> Bytes {
    let mut buf = spare;
    buf.clear();
    buf.reserve(BATCH_BYTES + records.len() * 8 + 64);
    let opts = kp::RecordEncodeOptions {
        version: 2,
        compression: kp_compression(compression),
    };
    if let Err(e) = kp::RecordBatchEncoder::encode(&mut buf, records.iter(), &opts) {
        panic!("kafka-protocol encode: {e}");
    }
    buf.freeze()
}

fn encode_kp(records: &[kp::Record], compression: Compression) -> Bytes {
    encode_kp_into(records, compression, BytesMut::new())
}

fn codec(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let label = if size == 100 { "100B" } else { "1KiB" };
        let vals = values(size);
        let kp_recs = kp_records(&vals);
        let plain = encode_ours(&vals, Compression::None);
        // The throughput base of every case of this record size.
        let bytes = plain.len() as u64;

        let mut g = c.benchmark_group(format!("limits/{label}"));
        g.throughput(Throughput::Bytes(bytes));
        let mut dst = vec![0u8; plain.len()];
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&plain));
                black_box(&dst);
            })
        });
        // The CRC this crate uses (carry-less multiply, AVX-512 where the
        // CPU has it), and the SSE4.2 `crc32` instruction for comparison.
        g.bench_function("crc32c", |b| {
            b.iter(|| black_box(crc_fast::crc32_iscsi(black_box(&plain))))
        });
        g.bench_function("crc32c-sse42", |b| {
            b.iter(|| black_box(crc32c::crc32c(black_box(&plain))))
        });
        // What any encoder of these records must at least do: copy every
        // value into one buffer and checksum it, with no framing at all.
        // The CRC follows the copy in 4 KiB steps, while the bytes are in
        // L1 (the fastest of the step sizes tried, 4-64 KiB or at the end).
        let mut gathered = Vec::with_capacity(plain.len());
        g.bench_function("values+crc32c", |b| {
            b.iter(|| {
                gathered.clear();
                let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
                let mut checked = 0;
                for v in black_box(&vals) {
                    gathered.extend_from_slice(v);
                    if gathered.len() - checked >= 4096 {
                        crc.update(&gathered[checked..]);
                        checked = gathered.len();
                    }
                }
                crc.update(&gathered[checked..]);
                black_box(crc.finalize())
            })
        });
        g.finish();

        let limits = DecodeLimits::default();
        for comp in CODECS {
            let name = comp.name();
            let mut g = c.benchmark_group(format!("encode/{label}"));
            g.throughput(Throughput::Bytes(bytes));
            let mut spare = BytesMut::new();
            g.bench_function(BenchmarkId::new("rskafka", name), |b| {
                b.iter(|| {
                    let batch =
                        encode_ours_into(black_box(&vals), comp, std::mem::take(&mut spare));
                    black_box(&batch);
                    spare = batch.try_into_mut().unwrap_or_default();
                })
            });
            if comp == Compression::None {
                // A new allocation per batch: what a one-off encode pays.
                g.bench_function(BenchmarkId::new("rskafka-fresh", name), |b| {
                    b.iter(|| black_box(encode_ours(black_box(&vals), comp)))
                });
            }
            g.bench_function(BenchmarkId::new("kafka-protocol", name), |b| {
                b.iter(|| {
                    let batch =
                        encode_kp_into(black_box(&kp_recs), comp, std::mem::take(&mut spare));
                    black_box(&batch);
                    spare = batch.try_into_mut().unwrap_or_default();
                })
            });
            g.finish();

            let ours = encode_ours(&vals, comp);
            let theirs = encode_kp(&kp_recs, comp);
            // Both sides must read back every record, or the comparison
            // would time a failure path.
            match decode_batches(ours.clone(), &limits) {
                Ok(d) => assert_eq!(d.record_count(), vals.len(), "rskafka {name}"),
                Err(e) => panic!("rskafka decode {name}: {e}"),
            }
            match kp::RecordBatchDecoder::decode(&mut theirs.clone()) {
                Ok(s) => assert_eq!(s.records.len(), vals.len(), "kafka-protocol {name}"),
                Err(e) => panic!("kafka-protocol decode {name}: {e}"),
            }
            let mut g = c.benchmark_group(format!("decode/{label}"));
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(BenchmarkId::new("rskafka", name), |b| {
                b.iter(|| black_box(decode_batches(black_box(ours.clone()), &limits)))
            });
            // The borrowed view: same checks (CRC included), records decoded
            // while iterating; every record is visited so the lazy part is
            // timed too.
            g.bench_function(BenchmarkId::new("rskafka-view", name), |b| {
                b.iter(|| {
                    let Ok(d) = decode_batch_views(black_box(ours.clone()), &limits) else {
                        panic!("rskafka view decode {name}");
                    };
                    let mut n = 0usize;
                    for batch in &d.batches {
                        for r in &batch.records {
                            let Ok(r) = r else {
                                panic!("rskafka view record {name}");
                            };
                            n += r.value.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len);
                        }
                    }
                    black_box(n)
                })
            });
            g.bench_function(BenchmarkId::new("kafka-protocol", name), |b| {
                b.iter(|| {
                    black_box(kp::RecordBatchDecoder::decode(&mut black_box(
                        theirs.clone(),
                    )))
                })
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared and has two cores; on a loaded
    // machine the spread is 10-20%, which criterion's intervals show.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = codec
}
criterion_main!(benches);
