//! What a Produce, Fetch, ListOffsets or DeleteRecords response says about
//! the one partition a [`PartitionClient`](super::PartitionClient) asked
//! for, without I/O: the value, or the error together with what it means
//! for the cached leader. The async code sends, applies the leader update
//! and leaves retrying to `client/retry.rs`. The producer and the consumer
//! read KIP-951 leader hints and Produce error explanations with the same
//! functions.

use std::ops::Range;

use crate::{
    error::{Error, Result},
    protocol::{
        messages::{
            fetch_request::{FetchPartition, FetchTopic},
            produce_response::PartitionProduceResponse,
            DeleteRecordsResponse, FetchRequest, FetchResponse, ListOffsetsResponse,
            ProduceResponse,
        },
        record::DecodeLimits,
        ErrorCode, Uuid,
    },
};

use super::{visible_records, FetchResult, IsolationLevel};

/// A failed attempt on the partition.
#[derive(Debug)]
pub(super) struct Failure {
    /// What the operation reports (the retry loop decides on retrying).
    pub(super) error: Error,
    /// The error says the cached leader is stale: look it up again.
    pub(super) forget_leader: bool,
    /// The new leader the response names (KIP-951), if it names one.
    pub(super) hint: Option<LeaderHint>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            forget_leader: false,
            hint: None,
        }
    }
}

impl Failure {
    /// A partition error code; `forget_leader` follows from the code.
    fn code(code: ErrorCode, message: Option<String>) -> Self {
        Self {
            error: Error::kafka(code, message),
            forget_leader: code.is_leader_moved(),
            hint: None,
        }
    }
}

/// A new leader named in a Produce or Fetch response (KIP-951).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaderHint {
    pub(crate) leader_id: i32,
    pub(crate) leader_epoch: i32,
    /// Its `(host, port)` if the response lists the node.
    pub(crate) endpoint: Option<(String, i32)>,
}

/// The hint of a partition's `current_leader`, with the endpoint from the
/// response's `(node id, host, port)` entries; none for a negative id.
pub(crate) fn leader_hint<'a>(
    leader_id: i32,
    leader_epoch: i32,
    endpoints: impl IntoIterator<Item = (i32, &'a str, i32)>,
) -> Option<LeaderHint> {
    if leader_id < 0 {
        return None;
    }
    let endpoint = endpoints
        .into_iter()
        .find(|(id, _, _)| *id == leader_id)
        .map(|(_, host, port)| (host.to_owned(), port));
    Some(LeaderHint {
        leader_id,
        leader_epoch,
        endpoint,
    })
}

/// The base offset of the batch produced to `topic`/`partition`.
pub(super) fn produce(resp: &ProduceResponse, topic: &str, partition: i32) -> Result<i64, Failure> {
    let p = resp
        .responses
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| Error::protocol("the response lacks the partition produced to"))?;
    let code = ErrorCode(p.error_code);
    if code.is_ok() {
        return Ok(p.base_offset);
    }
    Err(Failure {
        hint: produce_leader_hint(resp, p),
        ..Failure::code(code, Some(produce_error_message(p).unwrap_or_default()))
    })
}

/// The explanation of a partition's Produce error: the broker's message,
/// then each rejected record's (e.g. INVALID_RECORD says which record and
/// why); `None` if there is neither.
pub(crate) fn produce_error_message(p: &PartitionProduceResponse) -> Option<String> {
    let mut message = p.error_message.clone().filter(|m| !m.is_empty());
    for r in &p.record_errors {
        let detail = r.batch_index_error_message.as_deref().unwrap_or("");
        let m = message.get_or_insert_with(String::new);
        if !m.is_empty() {
            m.push_str("; ");
        }
        m.push_str(&format!("record {}: {detail}", r.batch_index));
    }
    message
}

/// The new leader a Produce response names for partition `p`, if any.
pub(crate) fn produce_leader_hint(
    resp: &ProduceResponse,
    p: &PartitionProduceResponse,
) -> Option<LeaderHint> {
    leader_hint(
        p.current_leader.leader_id,
        p.current_leader.leader_epoch,
        resp.node_endpoints
            .iter()
            .map(|n| (n.node_id, n.host.as_str(), n.port)),
    )
}

/// The Fetch version to use given the highest the broker offers: v13+
/// names topics by id, so without a known id (a broker that predates ids)
/// fall back to v12, the last version with names.
pub(super) fn fetch_version(highest: i16, topic_id: Uuid) -> i16 {
    if highest >= 13 && topic_id == Uuid::default() {
        12
    } else {
        highest
    }
}

/// What a fetch asked for, to find and read its answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct FetchAsked<'a> {
    pub(super) version: i16,
    pub(super) topic: &'a str,
    pub(super) topic_id: Uuid,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) isolation: IsolationLevel,
}

/// The Fetch request for what `asked` names, at `asked.version`: the topic
/// by name up to v12, by id from v13; one partition, whose limit is the
/// response's.
pub(super) fn fetch_request(
    asked: &FetchAsked<'_>,
    max_wait_ms: i32,
    bytes: Range<i32>,
) -> FetchRequest {
    let by_id = asked.version >= 13;
    FetchRequest {
        max_wait_ms,
        min_bytes: bytes.start,
        max_bytes: bytes.end,
        isolation_level: asked.isolation.wire(),
        topics: vec![FetchTopic {
            topic: if by_id {
                String::new()
            } else {
                asked.topic.to_owned()
            },
            topic_id: if by_id {
                asked.topic_id
            } else {
                Uuid::default()
            },
            partitions: vec![FetchPartition {
                partition: asked.partition,
                fetch_offset: asked.offset,
                partition_max_bytes: bytes.end,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The records and offsets a Fetch response holds for the partition.
pub(super) fn fetch(resp: &FetchResponse, asked: FetchAsked<'_>) -> Result<FetchResult, Failure> {
    let top = ErrorCode(resp.error_code);
    if !top.is_ok() {
        return Err(Error::kafka(top, None).into());
    }
    let p = resp
        .responses
        .iter()
        .filter(|t| {
            if asked.version >= 13 {
                t.topic_id == asked.topic_id
            } else {
                t.topic == asked.topic
            }
        })
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == asked.partition)
        .ok_or_else(|| Error::protocol("the response lacks the partition fetched"))?;
    let code = ErrorCode(p.error_code);
    if !code.is_ok() {
        return Err(Failure {
            hint: leader_hint(
                p.current_leader.leader_id,
                p.current_leader.leader_epoch,
                resp.node_endpoints
                    .iter()
                    .map(|n| (n.node_id, n.host.as_str(), n.port)),
            ),
            ..Failure::code(code, None)
        });
    }
    let decoded = match &p.records {
        Some(b) if !b.is_empty() => {
            crate::protocol::record::decode_batches(b.clone(), &DecodeLimits::default())
                .map_err(|e| Error::protocol("cannot decode the fetched records").with_source(e))?
        }
        _ => Default::default(),
    };
    let next_offset = decoded
        .next_offset()
        .unwrap_or(asked.offset)
        .max(asked.offset);
    let aborted: Vec<(i64, i64)> = match (&p.aborted_transactions, asked.isolation) {
        (Some(a), IsolationLevel::ReadCommitted) => {
            a.iter().map(|t| (t.producer_id, t.first_offset)).collect()
        }
        _ => Vec::new(),
    };
    Ok(FetchResult {
        records: visible_records(decoded.batches, asked.offset, aborted),
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start_offset: p.log_start_offset,
        next_offset,
    })
}

/// The entry of `topic`'s `partition` in a response's `topics` (`topic_key`
/// gives a topic's name and entries, `key` an entry's partition and error
/// code); its error code, if any, fails the attempt.
fn answer_ok<'a, T, P: 'a>(
    topics: &'a [T],
    topic_key: impl Fn(&'a T) -> (&'a str, &'a [P]),
    (topic, partition): (&str, i32),
    key: impl Fn(&P) -> (i32, i16),
) -> Result<&'a P, Failure> {
    let p = topics
        .iter()
        .map(topic_key)
        .filter(|(name, _)| *name == topic)
        .flat_map(|(_, entries)| entries)
        .find(|p| key(p).0 == partition)
        .ok_or_else(|| Error::protocol("the response lacks the partition asked for"))?;
    let code = ErrorCode(key(p).1);
    if !code.is_ok() {
        return Err(Failure::code(code, None));
    }
    Ok(p)
}

/// The offset a ListOffsets response (at `version`) gives the partition.
pub(super) fn list_offset(
    resp: &ListOffsetsResponse,
    version: i16,
    topic: &str,
    partition: i32,
) -> Result<i64, Failure> {
    let p = answer_ok(
        &resp.topics,
        |t| (t.name.as_str(), t.partitions.as_slice()),
        (topic, partition),
        |p| (p.partition_index, p.error_code),
    )?;
    if version == 0 {
        // v0 answers with a list of offsets; we asked for one.
        return Ok(p.old_style_offsets.first().copied().unwrap_or(-1));
    }
    Ok(p.offset)
}

/// The partition's new log start offset from a DeleteRecords response.
pub(super) fn delete_records(
    resp: &DeleteRecordsResponse,
    topic: &str,
    partition: i32,
) -> Result<i64, Failure> {
    let p = answer_ok(
        &resp.topics,
        |t| (t.name.as_str(), t.partitions.as_slice()),
        (topic, partition),
        |p| (p.partition_index, p.error_code),
    )?;
    Ok(p.low_watermark)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        error::ErrorKind,
        protocol::{
            messages::{
                delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
                fetch_response::{
                    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch as FetchLeader,
                    NodeEndpoint as FetchNode, PartitionData,
                },
                list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
                produce_response::{
                    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, TopicProduceResponse,
                },
            },
            record::{BatchHeader, RecordBatchWriter},
        },
    };

    fn produced(p: PartitionProduceResponse, nodes: Vec<NodeEndpoint>) -> ProduceResponse {
        ProduceResponse {
            responses: vec![TopicProduceResponse {
                name: "t".into(),
                partition_responses: vec![p],
                ..Default::default()
            }],
            node_endpoints: nodes,
            ..Default::default()
        }
    }

    fn no_leader() -> LeaderIdAndEpoch {
        LeaderIdAndEpoch {
            leader_id: -1,
            leader_epoch: -1,
            ..Default::default()
        }
    }

    #[test]
    fn produce_success_and_a_missing_partition() {
        let resp = produced(
            PartitionProduceResponse {
                index: 3,
                base_offset: 42,
                current_leader: no_leader(),
                ..Default::default()
            },
            vec![],
        );
        assert_eq!(produce(&resp, "t", 3).unwrap(), 42);
        for (topic, partition) in [("t", 4), ("u", 3)] {
            let f = produce(&resp, topic, partition).unwrap_err();
            assert_eq!(f.error.kind(), ErrorKind::Protocol);
            assert!(!f.forget_leader);
            assert_eq!(f.hint, None);
        }
    }

    #[test]
    fn produce_leader_moved_with_and_without_a_hint() {
        let moved = |leader_id, nodes| {
            produce(
                &produced(
                    PartitionProduceResponse {
                        index: 0,
                        error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER.0,
                        current_leader: LeaderIdAndEpoch {
                            leader_id,
                            leader_epoch: 7,
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                    nodes,
                ),
                "t",
                0,
            )
            .unwrap_err()
        };
        let node = |node_id, host: &str| NodeEndpoint {
            node_id,
            host: host.into(),
            port: 9093,
            ..Default::default()
        };
        let f = moved(2, vec![node(1, "a"), node(2, "b")]);
        assert_eq!(
            f.error.error_code(),
            Some(ErrorCode::NOT_LEADER_OR_FOLLOWER)
        );
        assert!(f.error.is_retriable());
        assert!(f.forget_leader);
        assert_eq!(
            f.hint,
            Some(LeaderHint {
                leader_id: 2,
                leader_epoch: 7,
                endpoint: Some(("b".into(), 9093)),
            })
        );
        // A leader the response has no endpoint for: the id alone.
        let f = moved(5, vec![node(1, "a")]);
        assert_eq!(f.hint.and_then(|h| h.endpoint), None);
        // No leader named (before KIP-951): only forget the cached one.
        let f = moved(-1, vec![]);
        assert!(f.forget_leader);
        assert_eq!(f.hint, None);
    }

    #[test]
    fn produce_errors_name_the_records() {
        let f = produce(
            &produced(
                PartitionProduceResponse {
                    index: 0,
                    error_code: ErrorCode::INVALID_RECORD.0,
                    error_message: Some("bad batch".into()),
                    record_errors: vec![
                        BatchIndexAndErrorMessage {
                            batch_index: 1,
                            batch_index_error_message: Some("null key".into()),
                            ..Default::default()
                        },
                        BatchIndexAndErrorMessage {
                            batch_index: 4,
                            batch_index_error_message: None,
                            ..Default::default()
                        },
                    ],
                    current_leader: no_leader(),
                    ..Default::default()
                },
                vec![],
            ),
            "t",
            0,
        )
        .unwrap_err();
        assert_eq!(f.error.error_code(), Some(ErrorCode::INVALID_RECORD));
        assert!(!f.error.is_retriable());
        assert!(!f.forget_leader);
        let text = f.error.to_string();
        assert!(
            text.contains("bad batch; record 1: null key; record 4: "),
            "{text}"
        );
        // Neither a message nor rejected records: nothing to explain.
        let bare = PartitionProduceResponse {
            error_message: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(produce_error_message(&bare), None);
        let records_only = PartitionProduceResponse {
            record_errors: vec![BatchIndexAndErrorMessage {
                batch_index: 0,
                batch_index_error_message: Some("too old".into()),
                ..Default::default()
            }],
            ..bare
        };
        assert_eq!(
            produce_error_message(&records_only).as_deref(),
            Some("record 0: too old")
        );
    }

    #[test]
    fn fetch_falls_back_to_names_without_a_topic_id() {
        let id = Uuid([1; 16]);
        assert_eq!(fetch_version(17, Uuid::default()), 12);
        assert_eq!(fetch_version(17, id), 17);
        assert_eq!(fetch_version(11, Uuid::default()), 11);
    }

    fn batch_bytes(base_offset: i64, values: &[&str]) -> Bytes {
        let mut w = RecordBatchWriter::with_capacity(
            BatchHeader {
                base_offset,
                ..BatchHeader::default()
            },
            64,
        );
        for v in values {
            w.append(0, None, Some(v.as_bytes()), &[]).unwrap();
        }
        w.finish().unwrap()
    }

    fn fetched(version_13_id: Option<Uuid>, p: PartitionData) -> FetchResponse {
        FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: if version_13_id.is_some() {
                    String::new()
                } else {
                    "t".into()
                },
                topic_id: version_13_id.unwrap_or_default(),
                partitions: vec![p],
                ..Default::default()
            }],
            node_endpoints: vec![FetchNode {
                node_id: 3,
                host: "c".into(),
                port: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn asked(version: i16, topic_id: Uuid, offset: i64) -> FetchAsked<'static> {
        FetchAsked {
            version,
            topic: "t",
            topic_id,
            partition: 0,
            offset,
            isolation: IsolationLevel::ReadCommitted,
        }
    }

    #[test]
    fn fetch_requests_name_the_topic_by_name_up_to_v12_and_by_id_after() {
        let id = Uuid([7; 16]);
        let by_name = fetch_request(&asked(12, id, 40), 500, 1..1024);
        let t = &by_name.topics[0];
        assert_eq!((t.topic.as_str(), t.topic_id), ("t", Uuid::default()));
        assert_eq!(
            (
                t.partitions[0].fetch_offset,
                t.partitions[0].partition_max_bytes
            ),
            (40, 1024)
        );
        assert_eq!(
            (by_name.max_wait_ms, by_name.min_bytes, by_name.max_bytes),
            (500, 1, 1024)
        );
        assert_eq!(by_name.isolation_level, 1, "read_committed");
        let by_id = fetch_request(&asked(13, id, 40), 500, 1..1024);
        let t = &by_id.topics[0];
        assert_eq!((t.topic.as_str(), t.topic_id), ("", id));
    }

    #[test]
    fn fetch_reads_the_partition_by_name_or_id() {
        let data = PartitionData {
            partition_index: 0,
            high_watermark: 9,
            last_stable_offset: 8,
            log_start_offset: 2,
            records: Some(batch_bytes(5, &["a", "b", "c"])),
            aborted_transactions: Some(vec![AbortedTransaction {
                producer_id: 77,
                first_offset: 0,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let id = Uuid([9; 16]);
        let by_id = fetch(&fetched(Some(id), data.clone()), asked(13, id, 6)).unwrap();
        let offsets: Vec<i64> = by_id.records.iter().map(|r| r.offset).collect();
        // Records before the fetch offset are dropped; the aborted
        // producer is another one than the batch's.
        assert_eq!(offsets, vec![6, 7]);
        assert_eq!(
            (
                by_id.high_watermark,
                by_id.last_stable_offset,
                by_id.log_start_offset,
                by_id.next_offset
            ),
            (9, 8, 2, 8)
        );
        let by_name = fetch(&fetched(None, data.clone()), asked(12, Uuid::default(), 6)).unwrap();
        assert_eq!(by_name, by_id);
        // An empty answer stays at the offset asked for.
        let empty = PartitionData {
            records: None,
            ..data.clone()
        };
        let r = fetch(&fetched(None, empty), asked(12, Uuid::default(), 6)).unwrap();
        assert_eq!((r.records.len(), r.next_offset), (0, 6));
        // The wrong topic id is a protocol error.
        let f = fetch(&fetched(Some(id), data), asked(13, Uuid([8; 16]), 6)).unwrap_err();
        assert_eq!(f.error.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn fetch_errors_at_the_top_and_at_the_partition() {
        let top = FetchResponse {
            error_code: ErrorCode::UNKNOWN_SERVER_ERROR.0,
            ..Default::default()
        };
        let f = fetch(&top, asked(12, Uuid::default(), 0)).unwrap_err();
        assert_eq!(f.error.error_code(), Some(ErrorCode::UNKNOWN_SERVER_ERROR));
        assert!(!f.forget_leader && f.hint.is_none());

        let fenced = PartitionData {
            partition_index: 0,
            error_code: ErrorCode::FENCED_LEADER_EPOCH.0,
            current_leader: FetchLeader {
                leader_id: 3,
                leader_epoch: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        let f = fetch(&fetched(None, fenced), asked(12, Uuid::default(), 0)).unwrap_err();
        assert!(f.forget_leader);
        assert_eq!(
            f.hint,
            Some(LeaderHint {
                leader_id: 3,
                leader_epoch: 4,
                endpoint: Some(("c".into(), 1)),
            })
        );

        let out_of_range = PartitionData {
            partition_index: 0,
            error_code: ErrorCode::OFFSET_OUT_OF_RANGE.0,
            current_leader: FetchLeader {
                leader_id: -1,
                leader_epoch: -1,
                ..Default::default()
            },
            ..Default::default()
        };
        let f = fetch(&fetched(None, out_of_range), asked(12, Uuid::default(), 0)).unwrap_err();
        assert_eq!(f.error.error_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
        assert!(!f.forget_leader && f.hint.is_none());
    }

    fn listed(p: ListOffsetsPartitionResponse) -> ListOffsetsResponse {
        ListOffsetsResponse {
            topics: vec![ListOffsetsTopicResponse {
                name: "t".into(),
                partitions: vec![p],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn list_offset_by_version_and_errors() {
        let p = ListOffsetsPartitionResponse {
            partition_index: 1,
            offset: 10,
            old_style_offsets: vec![20, 5],
            ..Default::default()
        };
        assert_eq!(list_offset(&listed(p.clone()), 1, "t", 1).unwrap(), 10);
        assert_eq!(list_offset(&listed(p.clone()), 0, "t", 1).unwrap(), 20);
        let none = ListOffsetsPartitionResponse {
            old_style_offsets: vec![],
            ..p.clone()
        };
        assert_eq!(list_offset(&listed(none), 0, "t", 1).unwrap(), -1);
        assert_eq!(
            list_offset(&listed(p.clone()), 1, "t", 0)
                .unwrap_err()
                .error
                .kind(),
            ErrorKind::Protocol
        );
        let moved = ListOffsetsPartitionResponse {
            error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER.0,
            ..p.clone()
        };
        let f = list_offset(&listed(moved), 1, "t", 1).unwrap_err();
        assert!(f.forget_leader && f.hint.is_none());
        let unsupported = ListOffsetsPartitionResponse {
            error_code: ErrorCode::UNSUPPORTED_VERSION.0,
            ..p
        };
        let f = list_offset(&listed(unsupported), 1, "t", 1).unwrap_err();
        assert_eq!(f.error.error_code(), Some(ErrorCode::UNSUPPORTED_VERSION));
        assert!(!f.forget_leader);
    }

    #[test]
    fn delete_records_low_watermark_and_errors() {
        let resp = |error_code| DeleteRecordsResponse {
            topics: vec![DeleteRecordsTopicResult {
                name: "t".into(),
                partitions: vec![DeleteRecordsPartitionResult {
                    partition_index: 0,
                    low_watermark: 33,
                    error_code,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(delete_records(&resp(0), "t", 0).unwrap(), 33);
        let f = delete_records(&resp(ErrorCode::NOT_LEADER_OR_FOLLOWER.0), "t", 0).unwrap_err();
        assert!(f.forget_leader);
        let f = delete_records(&resp(ErrorCode::POLICY_VIOLATION.0), "t", 0).unwrap_err();
        assert_eq!(f.error.error_code(), Some(ErrorCode::POLICY_VIOLATION));
        assert!(!f.forget_leader);
        assert_eq!(
            delete_records(&resp(0), "u", 0).unwrap_err().error.kind(),
            ErrorKind::Protocol
        );
    }
}
