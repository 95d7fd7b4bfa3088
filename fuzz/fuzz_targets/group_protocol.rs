//! Decodes arbitrary bytes as the embedded consumer protocol that group
//! members exchange through the coordinator: the version-prefixed
//! `Subscription` (JoinGroup metadata) and `Assignment` (SyncGroup), the
//! generated `ConsumerProtocol*` bodies at every known version, and the
//! sticky assignors' user data. Decoding may fail; it must never panic,
//! and whatever decodes must re-encode and decode to the same content.
//!
//! Input: 1 byte choosing the decoder (low 3 bits), then the bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rskafka::client::group::protocol::{
    decode_cooperative_user_data, Assignment, StickyUserData, Subscription,
    CONSUMER_PROTOCOL_VERSION,
};
use rskafka::protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use rskafka::protocol::{Message, Reader};

fuzz_target!(|data: &[u8]| {
    let [which, body @ ..] = data else {
        return;
    };
    let bytes = Bytes::copy_from_slice(body);
    match which & 7 {
        0 => subscription(bytes),
        1 => assignment(bytes),
        2 => {
            for v in 0..=CONSUMER_PROTOCOL_VERSION {
                generated::<ConsumerProtocolSubscription>(&bytes, v);
            }
        }
        3 => {
            for v in 0..=CONSUMER_PROTOCOL_VERSION {
                generated::<ConsumerProtocolAssignment>(&bytes, v);
            }
        }
        4 => {
            if let Some(d) = StickyUserData::decode(&bytes) {
                let again = d.encode().expect("decoded sticky data re-encodes");
                let d2 = StickyUserData::decode(&again).expect("re-encoded sticky data decodes");
                assert_eq!(sorted(d.partitions), sorted(d2.partitions));
                assert_eq!(d.generation, d2.generation);
            }
        }
        _ => {
            let _ = decode_cooperative_user_data(&bytes);
        }
    }
});

fn subscription(bytes: Bytes) {
    let Ok(s) = Subscription::decode(bytes) else {
        return;
    };
    let again = s
        .encode(CONSUMER_PROTOCOL_VERSION)
        .expect("decoded subscription re-encodes");
    let s2 = Subscription::decode(again).expect("re-encoded subscription decodes");
    let mut topics = s.topics.clone();
    topics.sort();
    assert_eq!(topics, s2.topics);
    assert_eq!(s.user_data, s2.user_data);
    assert_eq!(sorted(s.owned_partitions), s2.owned_partitions);
    assert_eq!(s.rack_id, s2.rack_id);
}

fn assignment(bytes: Bytes) {
    let Ok(a) = Assignment::decode(bytes) else {
        return;
    };
    let again = a
        .encode(CONSUMER_PROTOCOL_VERSION)
        .expect("decoded assignment re-encodes");
    let a2 = Assignment::decode(again).expect("re-encoded assignment decodes");
    // Encoding groups partitions by topic, which may reorder them.
    assert_eq!(sorted(a.partitions), sorted(a2.partitions));
    assert_eq!(a.user_data, a2.user_data);
}

fn generated<M: Message>(bytes: &Bytes, version: i16) {
    let mut r = Reader::new(bytes.clone());
    let Ok(m) = M::decode(&mut r, version) else {
        return;
    };
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version)
        .expect("decoded body re-encodes");
    let m2 = M::decode(&mut Reader::new(buf.freeze()), version).expect("re-encoded body decodes");
    assert_eq!(format!("{m:?}"), format!("{m2:?}"));
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
