//! Decodes arbitrary bytes as the response body of any API at any version
//! this crate knows. Decoding may fail, but must never panic, hang or
//! allocate far beyond the input. Input format: see `split.rs`.
#![no_main]

mod split;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rskafka::protocol::messages::decode_response_body;
use rskafka::protocol::Reader;

fuzz_target!(|data: &[u8]| {
    let Some((key, version, body)) = split::split(data) else {
        return;
    };
    let mut r = Reader::new(Bytes::copy_from_slice(body));
    if let Ok(decoded) = decode_response_body(key, version, &mut r) {
        // Formatting walks every decoded value.
        let _ = format!("{decoded:?}");
    }
});
