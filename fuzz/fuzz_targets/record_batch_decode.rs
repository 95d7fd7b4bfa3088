//! Decodes arbitrary bytes as a Fetch partition's `records` field. Decoding
//! may fail, but must never panic, hang or allocate beyond the small limits
//! given; whatever decodes as a v2 batch must survive a re-encode unchanged;
//! the borrowed view decoder must agree with the owned one (the same
//! batches, or a failure too, from decoding or iterating).
//!
//! Input: 1 flag byte (bit 0: check CRCs — off by default so the fuzzer gets
//! past them; bit 1: recompute the CRC of the first v2 batch before decoding,
//! so CRC-on paths see valid batches too; bit 2: make the first v2 batch an
//! lz4 one whose records are a valid LZ4 frame around one block of the
//! fuzzer's bytes, so the block decoder sees arbitrary blocks), then the
//! records bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rskafka::protocol::record::{
    decode_batch_views, decode_batches, encode_batch, DecodeLimits, DecodedBatches,
};

fuzz_target!(|data: &[u8]| {
    let [flags, body @ ..] = data else {
        return;
    };
    let mut body = body.to_vec();
    if flags & 4 != 0 && body.len() >= 61 && body[16] == 2 {
        let block = body.split_off(61);
        body[22] = (body[22] & !7) | 3;
        // Frame header: magic, version 01 with independent blocks, 64 KiB
        // blocks, header checksum; then the block and the end mark.
        body.extend_from_slice(&[0x04, 0x22, 0x4D, 0x18, 0x60, 0x40, 0x82]);
        body.extend_from_slice(&(block.len() as u32).to_le_bytes());
        body.extend_from_slice(&block);
        body.extend_from_slice(&[0; 4]);
        let length = (body.len() - 12) as u32;
        body[8..12].copy_from_slice(&length.to_be_bytes());
    }
    if flags & 2 != 0 && body.len() >= 61 && body[16] == 2 {
        let crc = crc32c_of(&body[21..]);
        body[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        max_total_decompressed_bytes: 4 << 20,
        verify_crc: flags & 1 != 0,
    };
    let body = Bytes::from(body);
    let owned = decode_batches(body.clone(), &limits);
    views_agree(&owned, body, &limits);
    let Ok(out) = owned else {
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

/// The view decoder fails where the owned one does (on decoding, or while
/// iterating a batch's records); otherwise its batches, made owned, are the
/// owned decoder's.
fn views_agree(
    owned: &Result<DecodedBatches, rskafka::protocol::DecodeError>,
    body: Bytes,
    limits: &DecodeLimits,
) {
    let views = match (owned, decode_batch_views(body, limits)) {
        // Both reject the input; the errors may differ, as the views leave
        // the checks of a batch's records (their fields, their count, bytes
        // after them) to iteration and so may meet a later batch's error
        // first.
        (Err(_), Err(_)) => return,
        (Ok(a), Err(b)) => panic!("owned {a:?} but views {b:?}"),
        (_, Ok(v)) => v,
    };
    if let Ok(o) = owned {
        assert_eq!(o.batches.len(), views.batches.len());
    }
    for (i, view) in views.batches.iter().enumerate() {
        let converted = view.to_batch();
        let iterated_error = view.records.iter().find_map(Result::err);
        assert_eq!(converted.as_ref().err(), iterated_error.as_ref());
        match (owned, converted) {
            (Ok(o), Ok(batch)) => assert_eq!(&batch, &o.batches[i]),
            (Ok(o), Err(e)) => panic!("owned {o:?} but a view fails {e:?}"),
            (Err(e), Err(v)) => {
                assert_eq!(e, &v, "the first failing view has the owned error");
                return;
            }
            (Err(_), Ok(_)) => {}
        }
    }
    if let Err(e) = owned {
        panic!("owned fails {e:?} but every view decodes");
    }
}

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
