//! Feeds arbitrary bytes, in arbitrary chunks, to the sans-IO
//! `ConnectionCore` as if a broker sent them, after queueing a few requests.
//! Whatever arrives must never panic, must not make the receive buffer grow
//! beyond one buffer for the announced frame (which a length prefix may
//! reserve, untouched, up to the cap) or far beyond the bytes received, and
//! every waiter must come back exactly once: answered, or handed back by
//! `fail_all`.
//!
//! Input: 1 byte choosing the requests (bits 0-2: how many, 0-7; bit 3:
//! abandon the first; bit 4: queue one without response; bit 5: pad each
//! chunk with 2 KiB of zeros per unit of `n`, so frames past 256 KiB, which
//! take other buffer paths, are reached), then chunks, each a length byte
//! `n` followed by up to `n` bytes (bit 7 of `n` set: fed with
//! `handle_received`, else read into `recv_buf`'s spare capacity, as a
//! socket read does, in as many reads as that takes).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use rskafka::connection::{ConnectionCore, ConnectionError};
use rskafka::protocol::messages::ListGroupsRequest;

/// A small frame cap, so hostile prefixes near it are cheap to explore.
const MAX_FRAME: usize = 1 << 20;

/// The smallest read reservation `recv_buf` makes (64 KiB); the bound below
/// allows it plus amortised doubling of what has arrived.
const RESERVE: usize = 64 * 1024;

/// The buffer a length prefix alone may reserve: one for the largest frame
/// (below the core's exact-allocation limit of 8 MiB), rounded up to a power
/// of two, as the core allocates. Its pages are touched only as bytes arrive.
const ANNOUNCED_FRAME_BUFFER: usize = (MAX_FRAME + 4).next_power_of_two();

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut core: ConnectionCore<u32> = ConnectionCore::new(MAX_FRAME);
    let n = usize::from(config & 7);
    let mut waiting: HashSet<u32> = HashSet::new();
    let mut ids = Vec::new();
    for token in 0..n as u32 {
        // v0: response header v0; v3+: flexible, response header v1 with
        // tagged fields.
        let version = if token % 2 == 0 { 0 } else { 4 };
        let id = core
            .queue_request(&ListGroupsRequest::default(), version, Some("fuzz"), token)
            .expect("queueing on a fresh connection");
        ids.push(id);
        waiting.insert(token);
    }
    if config & 8 != 0 {
        if let Some(&id) = ids.first() {
            assert!(core.abandon(id));
            waiting.remove(&0);
        }
    }
    if config & 16 != 0 {
        core.queue_no_response(
            rskafka::connection::EncodedRequest::new(&ListGroupsRequest::default(), 0, None)
                .expect("encode"),
            100,
        )
        .expect("queue");
        waiting.insert(100);
    }
    // Everything queued is "written", so no-response waiters complete.
    while let Some(b) = core.poll_transmit() {
        core.on_written(b.len());
    }
    while let Some(t) = core.poll_written() {
        assert!(waiting.remove(&t), "no-response token {t} twice");
    }

    let mut fed = 0usize;
    // The last response body stays alive until the next arrives, as a
    // consumer holds its records, so its buffer is shared meanwhile.
    let mut held = None;
    let bound = |fed: usize| ANNOUNCED_FRAME_BUFFER.max(4 * (fed + RESERVE));
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        rest = tail;
        let mut bytes = chunk.to_vec();
        if config & 32 != 0 {
            bytes.resize(chunk.len() + 2048 * usize::from(len & 0x7f), 0);
        }
        if len & 0x80 != 0 {
            core.handle_received(&bytes);
            fed += bytes.len();
            drain_responses(&mut core, &mut waiting, &mut held);
        } else {
            let mut at = 0;
            while at < bytes.len() && !core.is_closed() {
                let buf = core.recv_buf();
                let n = (buf.capacity() - buf.len()).min(bytes.len() - at);
                assert!(n > 0, "no room to read into");
                buf.extend_from_slice(&bytes[at..at + n]);
                at += n;
                fed += n;
                let cap = core.recv_buf().capacity();
                assert!(
                    cap <= bound(fed),
                    "receive buffer capacity {cap} after {fed} bytes received"
                );
                drain_responses(&mut core, &mut waiting, &mut held);
            }
        }
        let cap = core.recv_buf().capacity();
        assert!(
            cap <= bound(fed),
            "receive buffer capacity {cap} after {fed} bytes received"
        );
        if core.is_closed() {
            assert!(core.poll_frame().is_err());
            break;
        }
    }
    for f in core.fail_all(ConnectionError::Closed) {
        assert!(waiting.remove(&f.token), "token {} failed twice", f.token);
    }
    assert!(waiting.is_empty(), "waiters lost: {waiting:?}");
});

/// Takes every complete response, checking it was awaited.
fn drain_responses(
    core: &mut ConnectionCore<u32>,
    waiting: &mut HashSet<u32>,
    held: &mut Option<bytes::Bytes>,
) {
    while let Some(res) = core.poll_response() {
        match res {
            Ok(resp) => {
                assert!(resp.body.len() <= MAX_FRAME);
                assert!(
                    waiting.remove(&resp.token),
                    "token {} answered but not waiting",
                    resp.token
                );
                *held = Some(resp.body);
            }
            Err(_) => assert!(core.is_closed()),
        }
    }
}
