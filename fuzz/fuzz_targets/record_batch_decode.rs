//! Decodes arbitrary bytes as a Fetch partition's `records` field. Decoding
//! may fail, but must never panic, hang or allocate beyond the small limits
//! given; whatever decodes as a v2 batch must survive a re-encode unchanged.
//!
//! Input: 1 flag byte (bit 0: check CRCs — off by default so the fuzzer gets
//! past them; bit 1: recompute the CRC of the first v2 batch before decoding,
//! so CRC-on paths see valid batches too), then the records bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rskafka::protocol::record::{decode_batches, encode_batch, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let [flags, body @ ..] = data else {
        return;
    };
    let mut body = body.to_vec();
    if flags & 2 != 0 && body.len() >= 61 && body[16] == 2 {
        let crc = crc32c_of(&body[21..]);
        body[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        max_total_decompressed_bytes: 4 << 20,
        verify_crc: flags & 1 != 0,
    };
    let Ok(out) = decode_batches(Bytes::from(body), &limits) else {
        return;
    };
    for batch in out.batches.iter().filter(|b| b.magic == 2) {
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, batch).expect("a decoded batch re-encodes");
        let again = decode_batches(buf.freeze(), &limits).expect("a re-encoded batch decodes");
        assert_eq!(again.batches.len(), 1);
        assert_eq!(&again.batches[0], batch);
    }
});

/// CRC-32C (Castagnoli), bitwise: slow but dependency-free for the harness.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
