//! The embedded "consumer" protocol: what members put into JoinGroup's
//! protocol metadata (a [`Subscription`]) and what the leader hands out
//! through SyncGroup (an [`Assignment`]).
//!
//! Both are encoded as the Java client does (`ConsumerProtocol`): an `i16`
//! version, then the body of `ConsumerProtocolSubscription` /
//! `ConsumerProtocolAssignment` in that version. Decoding accepts versions
//! above the highest known by reading them as the highest known (newer
//! versions only append fields) and ignores trailing bytes, again like the
//! Java client, so that newer members can share a group with this one.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::TopicPartition;
use crate::protocol::{
    messages::{
        consumer_protocol_assignment, consumer_protocol_subscription, ConsumerProtocolAssignment,
        ConsumerProtocolSubscription,
    },
    DecodeError, DecodeErrorKind, EncodeError, Message, Reader, WriteExt,
};

/// The `protocol_type` of consumer groups in JoinGroup and SyncGroup.
pub const PROTOCOL_TYPE: &str = "consumer";

/// The consumer-protocol version this crate writes (the highest it knows,
/// as the Java client does: v1 owned partitions, v2 generation, v3 rack).
pub const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// A member's subscription, as carried in JoinGroup protocol metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The topics the member wants to consume.
    pub topics: Vec<String>,
    /// Assignor-specific data (e.g. the eager sticky assignor's previous
    /// assignment).
    pub user_data: Option<Bytes>,
    /// The partitions the member owns now (v1+); the cooperative protocol
    /// and the sticky assignors rely on it.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member got its owned partitions (v2+);
    /// `None` for the wire's `-1`.
    pub generation_id: Option<i32>,
    /// The member's rack (v3+), for rack-aware assignment; `None` for null
    /// or empty.
    pub rack_id: Option<String>,
    /// The member's static instance id. Not part of the encoding: the
    /// JoinGroup response carries it next to the metadata.
    pub group_instance_id: Option<String>,
}

/// What the leader assigns to one member, as carried in SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The member's partitions.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific data.
    pub user_data: Option<Bytes>,
}

/// Groups `partitions` by topic in order of first appearance, each topic's
/// partitions in the order given.
fn group_by_topic(partitions: &[TopicPartition]) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    for tp in partitions {
        match out.iter_mut().find(|(t, _)| **t == *tp.topic) {
            Some((_, ps)) => ps.push(tp.partition),
            None => out.push((tp.topic.to_string(), vec![tp.partition])),
        }
    }
    out
}

/// `version` followed by `data` encoded in that version.
fn version_prefixed<M: Message>(data: &M, version: i16) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    data.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// The inverse of [`group_by_topic`]. The partitions of a topic share one
/// copy of its name, so a long name repeated for many partitions costs its
/// bytes once, as on the wire.
fn flatten(grouped: impl Iterator<Item = (String, Vec<i32>)>) -> Vec<TopicPartition> {
    grouped
        .flat_map(|(topic, partitions)| {
            let topic: Arc<str> = topic.into();
            partitions.into_iter().map(move |p| TopicPartition {
                topic: topic.clone(),
                partition: p,
            })
        })
        .collect()
}

fn check_version(version: i16, r: &Reader, what: &'static str) -> Result<i16, DecodeError> {
    if version < 0 {
        return Err(r.error(DecodeErrorKind::UnsupportedVersion { what, version }));
    }
    Ok(version.min(CONSUMER_PROTOCOL_VERSION))
}

impl Subscription {
    /// Encodes the subscription with its version prefix, at `version`
    /// (clamped to the highest known, as the Java client does). Topics and
    /// owned partitions are written sorted.
    pub fn encode(&self, version: i16) -> Result<Bytes, EncodeError> {
        let version = version.clamp(0, CONSUMER_PROTOCOL_VERSION);
        let mut topics = self.topics.clone();
        topics.sort();
        let mut owned = self.owned_partitions.clone();
        owned.sort();
        let data = ConsumerProtocolSubscription {
            topics,
            user_data: self.user_data.clone(),
            owned_partitions: group_by_topic(&owned)
                .into_iter()
                .map(
                    |(topic, partitions)| consumer_protocol_subscription::TopicPartition {
                        topic,
                        partitions,
                    },
                )
                .collect(),
            generation_id: self.generation_id.unwrap_or(-1),
            rack_id: self.rack_id.clone(),
        };
        version_prefixed(&data, version)
    }

    /// Decodes a version-prefixed subscription.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.i16().map_err(|e| e.context("Subscription.version"))?;
        let version = check_version(version, &r, "ConsumerProtocolSubscription")?;
        let data = ConsumerProtocolSubscription::decode(&mut r, version)?;
        Ok(Self {
            topics: data.topics,
            user_data: data.user_data,
            owned_partitions: flatten(
                data.owned_partitions
                    .into_iter()
                    .map(|tp| (tp.topic, tp.partitions)),
            ),
            generation_id: (data.generation_id >= 0).then_some(data.generation_id),
            rack_id: data.rack_id.filter(|r| !r.is_empty()),
            group_instance_id: None,
        })
    }
}

impl Assignment {
    /// Encodes the assignment with its version prefix, at `version`
    /// (clamped). Partitions are grouped by topic in order of first
    /// appearance, as the Java client writes them.
    pub fn encode(&self, version: i16) -> Result<Bytes, EncodeError> {
        let version = version.clamp(0, CONSUMER_PROTOCOL_VERSION);
        let data = ConsumerProtocolAssignment {
            assigned_partitions: group_by_topic(&self.partitions)
                .into_iter()
                .map(
                    |(topic, partitions)| consumer_protocol_assignment::TopicPartition {
                        topic,
                        partitions,
                    },
                )
                .collect(),
            user_data: self.user_data.clone(),
        };
        version_prefixed(&data, version)
    }

    /// Decodes a version-prefixed assignment. An empty buffer (what the
    /// coordinator sends a member the leader gave nothing) is an empty
    /// assignment.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let mut r = Reader::new(bytes);
        let version = r.i16().map_err(|e| e.context("Assignment.version"))?;
        let version = check_version(version, &r, "ConsumerProtocolAssignment")?;
        let data = ConsumerProtocolAssignment::decode(&mut r, version)?;
        Ok(Self {
            partitions: flatten(
                data.assigned_partitions
                    .into_iter()
                    .map(|tp| (tp.topic, tp.partitions)),
            ),
            user_data: data.user_data,
        })
    }
}

/// The eager sticky assignor's user data: the member's previous assignment
/// and its generation (the Java client's `StickyAssignor` schema v1; v0
/// lacks the generation). No version prefix: readers try v1, then v0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StickyUserData {
    /// The partitions the member had.
    pub partitions: Vec<TopicPartition>,
    /// The generation they were assigned in; `None` in v0 data.
    pub generation: Option<i32>,
}

impl StickyUserData {
    /// Encodes in the v1 layout.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        let grouped = group_by_topic(&self.partitions);
        buf.put_array_len(Some(grouped.len()), false)?;
        for (topic, partitions) in &grouped {
            buf.put_string(topic, false)?;
            buf.put_array_len(Some(partitions.len()), false)?;
            for p in partitions {
                buf.put_i32(*p);
            }
        }
        if let Some(g) = self.generation {
            buf.put_i32(g);
        }
        Ok(buf.freeze())
    }

    /// Decodes v1, falling back to v0; `None` if neither parses (the Java
    /// client then ignores the member's previous assignment).
    pub fn decode(bytes: &Bytes) -> Option<Self> {
        let mut r = Reader::new(bytes.clone());
        let partitions = Self::read_partitions(&mut r).ok()?;
        // v1 appends the generation; without it the data is v0.
        let generation = r.i32().ok();
        Some(Self {
            partitions,
            generation,
        })
    }

    fn read_partitions(r: &mut Reader) -> Result<Vec<TopicPartition>, DecodeError> {
        // Java's schema has no null arrays here: a null fails the parse.
        let null = |r: &Reader| r.error(DecodeErrorKind::UnexpectedNull);
        let n = r.array_len(false)?.ok_or_else(|| null(r))?;
        let mut out = Vec::new();
        for _ in 0..n {
            let topic: Arc<str> = r.string()?.into();
            let m = r.array_len(false)?.ok_or_else(|| null(r))?;
            for _ in 0..m {
                out.push(TopicPartition {
                    topic: topic.clone(),
                    partition: r.i32()?,
                });
            }
        }
        Ok(out)
    }
}

/// The cooperative-sticky assignor's user data: only the generation (kept
/// for members older than subscription v2, which carries it natively).
pub fn cooperative_user_data(generation: i32) -> Bytes {
    Bytes::copy_from_slice(&generation.to_be_bytes())
}

/// Reads [`cooperative_user_data`]; `None` if it is too short.
pub fn decode_cooperative_user_data(bytes: &Bytes) -> Option<i32> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(i32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn subscription_v3_bytes_match_the_java_layout() {
        let s = Subscription {
            topics: vec!["b".into(), "a".into()],
            user_data: Some(Bytes::from_static(&[0, 0, 0, 7])),
            owned_partitions: vec![tp("b", 1), tp("a", 2), tp("b", 0)],
            generation_id: Some(5),
            rack_id: Some("r1".into()),
            group_instance_id: None,
        };
        let bytes = s.encode(3).unwrap();
        let expected: Vec<u8> = [
            &[0, 3][..],                           // version
            &[0, 0, 0, 2, 0, 1, b'a', 0, 1, b'b'], // topics, sorted
            &[0, 0, 0, 4, 0, 0, 0, 7],             // user data
            &[0, 0, 0, 2],                         // owned: 2 topics, sorted
            &[0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 2],
            &[0, 1, b'b', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 5],       // generation
            &[0, 2, b'r', b'1'], // rack
        ]
        .concat();
        assert_eq!(&bytes[..], &expected[..]);
        let back = Subscription::decode(bytes).unwrap();
        assert_eq!(back.topics, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            back.owned_partitions,
            vec![tp("a", 2), tp("b", 0), tp("b", 1)]
        );
        assert_eq!(back.generation_id, Some(5));
        assert_eq!(back.rack_id.as_deref(), Some("r1"));
    }

    #[test]
    fn subscription_v0_has_no_owned_partitions_and_newer_versions_are_read() {
        let s = Subscription {
            topics: vec!["t".into()],
            owned_partitions: vec![tp("t", 0)],
            generation_id: Some(3),
            ..Default::default()
        };
        let v0 = s.encode(0).unwrap();
        assert_eq!(&v0[..], &[0, 0, 0, 0, 0, 1, 0, 1, b't', 255, 255, 255, 255]);
        let back = Subscription::decode(v0).unwrap();
        assert!(back.owned_partitions.is_empty());
        assert_eq!(back.generation_id, None);

        // A v7 subscription from a future client: read as v3, extra bytes ignored.
        let mut future = BytesMut::new();
        future.put_i16(7);
        future.extend_from_slice(&s.encode(3).unwrap()[2..]);
        future.extend_from_slice(&[1, 2, 3]);
        let back = Subscription::decode(future.freeze()).unwrap();
        assert_eq!(back.owned_partitions, vec![tp("t", 0)]);
        assert_eq!(back.generation_id, Some(3));

        assert!(Subscription::decode(Bytes::from_static(&[255, 255, 0, 0, 0, 0])).is_err());
        assert!(Subscription::decode(Bytes::from_static(&[0, 3, 0, 0, 0, 9])).is_err());
    }

    #[test]
    fn assignment_groups_by_first_appearance_and_empty_is_empty() {
        let a = Assignment {
            partitions: vec![tp("y", 1), tp("x", 0), tp("y", 0)],
            user_data: None,
        };
        let bytes = a.encode(3).unwrap();
        let expected: Vec<u8> = [
            &[0, 3, 0, 0, 0, 2][..],
            &[0, 1, b'y', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0],
            &[0, 1, b'x', 0, 0, 0, 1, 0, 0, 0, 0],
            &[255, 255, 255, 255],
        ]
        .concat();
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(
            Assignment::decode(bytes).unwrap().partitions,
            vec![tp("y", 1), tp("y", 0), tp("x", 0)]
        );
        assert_eq!(
            Assignment::decode(Bytes::new()).unwrap(),
            Assignment::default()
        );
        assert!(Assignment::decode(Bytes::from_static(&[0])).is_err());
    }

    #[test]
    fn sticky_user_data_v1_and_v0() {
        let d = StickyUserData {
            partitions: vec![tp("t", 1), tp("t", 0)],
            generation: Some(9),
        };
        let bytes = d.encode().unwrap();
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        assert_eq!(StickyUserData::decode(&bytes), Some(d.clone()));
        let v0 = bytes.slice(..bytes.len() - 4);
        assert_eq!(
            StickyUserData::decode(&v0),
            Some(StickyUserData {
                generation: None,
                ..d
            })
        );
        assert_eq!(
            StickyUserData::decode(&Bytes::from_static(&[0, 0, 0, 5])),
            None
        );
        assert_eq!(
            decode_cooperative_user_data(&cooperative_user_data(-1)),
            Some(-1)
        );
    }

    proptest::proptest! {
        /// Whatever another member or the coordinator sends, decoding
        /// returns (never panics), and what decodes re-encodes to itself.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let b = Bytes::from(bytes);
            if let Ok(s) = Subscription::decode(b.clone()) {
                let again = Subscription::decode(s.encode(3).unwrap()).unwrap();
                proptest::prop_assert_eq!(again.topics.len(), s.topics.len());
            }
            if let Ok(a) = Assignment::decode(b.clone()) {
                let again = Assignment::decode(a.encode(3).unwrap()).unwrap();
                proptest::prop_assert_eq!(again.partitions.len(), a.partitions.len());
            }
            let _ = StickyUserData::decode(&b);
            let _ = decode_cooperative_user_data(&b);
        }
    }
}
