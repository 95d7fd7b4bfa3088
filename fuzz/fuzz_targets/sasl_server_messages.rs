//! Feeds arbitrary server messages to the client SASL mechanisms (SCRAM,
//! OAUTHBEARER, PLAIN) in every order. Parsing may fail; it must never
//! panic, and a SCRAM exchange must never complete on a server signature
//! the fuzzer made up (the client nonce is random, so only a broken
//! verification could accept one).
//!
//! Input: 1 byte (bits 0-1: mechanism — SCRAM-SHA-256, SCRAM-SHA-512,
//! OAUTHBEARER, PLAIN; bit 2: send a message before the initial response),
//! then the server messages separated by NUL bytes. In SCRAM's server-first
//! message the first `r=` gets the client nonce spliced in after it, so the
//! fuzzer gets past the nonce check.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rskafka::connection::sasl::{
    Mechanism, OAuthBearer, OAuthToken, Plain, Scram, ScramHash, Step, MIN_ITERATIONS,
};

fuzz_target!(|data: &[u8]| {
    let [config, rest @ ..] = data else {
        return;
    };
    let messages: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
    let mut mech: Box<dyn Mechanism> = match config & 3 {
        0 => Box::new(Scram::new(ScramHash::Sha256, "user", "pencil").expect("valid")),
        1 => Box::new(Scram::new(ScramHash::Sha512, "user", "pencil").expect("valid")),
        2 => {
            let token = OAuthToken {
                token: "eyJhbGciOiJub25lIn0.e30.".into(),
                lifetime_ms: i64::MAX,
                principal: Some("user".into()),
                extensions: BTreeMap::new(),
            };
            Box::new(OAuthBearer::new(&token, 0).expect("valid"))
        }
        _ => Box::new(Plain::new("user", "pencil").expect("valid")),
    };
    let scram = config & 3 < 2;
    if config & 4 != 0 {
        if let Some(m) = messages.first() {
            // Out of turn; SCRAM may report a malformed message first.
            assert!(mech.handle_challenge(m).is_err());
        }
    }
    let Ok(first) = mech.initial_response() else {
        // A message out of turn may end the exchange (SCRAM fails closed).
        assert!(
            config & 4 != 0,
            "initial response failed on a fresh mechanism"
        );
        return;
    };
    // "n,,n=user,r=<nonce>"
    let nonce = first
        .split(|&b| b == b',')
        .find_map(|a| a.strip_prefix(b"r="))
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    for (i, msg) in messages.iter().enumerate() {
        let mut msg = msg.to_vec();
        if scram && i == 0 {
            if too_many_iterations(&msg) {
                // Valid but slow (PBKDF2): keep the fuzzer fast.
                return;
            }
            if let Some(at) = msg.windows(2).position(|w| w == b"r=") {
                msg.splice(at + 2..at + 2, nonce.iter().copied());
            }
        }
        let step = mech.handle_challenge(&msg);
        if scram && i >= 1 {
            assert!(
                !matches!(step, Ok(Step::Done)),
                "SCRAM accepted a forged server signature: {:?}",
                String::from_utf8_lossy(&msg)
            );
        }
        let _ = mech.failure_detail();
        match step {
            Ok(Step::Respond(_)) => {}
            Ok(Step::Done) | Err(_) => {
                // The exchange is over: any further message is out of turn.
                if let Some(next) = messages.get(i + 1) {
                    assert!(mech.handle_challenge(next).is_err());
                }
                return;
            }
        }
    }
});

/// Whether a SCRAM server-first message asks for more than the minimum
/// iteration count (as the mechanism parses it: the first `i=`).
fn too_many_iterations(msg: &[u8]) -> bool {
    msg.split(|&b| b == b',')
        .find_map(|a| a.strip_prefix(b"i="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > MIN_ITERATIONS)
}
