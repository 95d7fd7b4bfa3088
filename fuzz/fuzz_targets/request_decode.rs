//! Decodes arbitrary bytes as the request body of any API at any version
//! this crate knows. Decoding may fail, but must never panic, hang or
//! allocate far beyond the input.
//!
//! Input: 2 bytes choosing the API (index into `ApiKey::ALL`), 1 byte
//! choosing the version within its range, then the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rskafka::protocol::messages::decode_request_body;
use rskafka::protocol::{ApiKey, Reader};

fuzz_target!(|data: &[u8]| {
    let Some((key, version, body)) = split(data) else {
        return;
    };
    let mut r = Reader::new(Bytes::copy_from_slice(body));
    if let Ok(decoded) = decode_request_body(key, version, &mut r) {
        // Formatting walks every decoded value.
        let _ = format!("{decoded:?}");
    }
});

fn split(data: &[u8]) -> Option<(ApiKey, i16, &[u8])> {
    let [a, b, v, body @ ..] = data else {
        return None;
    };
    let keys = ApiKey::ALL;
    let key = *keys.get(usize::from(u16::from_be_bytes([*a, *b])) % keys.len())?;
    let (lo, hi) = key.client_versions()?;
    let span = i32::from(hi) - i32::from(lo) + 1;
    let version = i16::try_from(i32::from(lo) + i32::from(*v) % span).ok()?;
    Some((key, version, body))
}
