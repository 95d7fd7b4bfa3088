//! The consumer's requests, built from what the planner decided, and the
//! parts of their responses it needs. No I/O: the driver sends them.
//!
//! A fetch response is extracted and its records decoded here too, in the
//! fetch's sub-task (so that responses from several brokers are decoded in
//! parallel), against the partitions the request named.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;

use super::{
    chunk::{decode_chunk, Chunk},
    part::OffsetSpec,
    session::FetchPlan,
    settings::Settings,
};
use crate::{
    client::partition::outcome::leader_hint,
    error::{Error, ErrorKind},
    protocol::{
        messages::{
            fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
            list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
            offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
            FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
            OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
        },
        record::DecodeLimits,
        ApiKey, DecodeError, DecodeErrorKind, ErrorCode, Uuid,
    },
};

/// Fetch v4 added the isolation level; Kafka 4 brokers accept nothing older.
pub(super) const MIN_FETCH_VERSION: i16 = 4;
/// Fetch v7 added sessions.
pub(super) const FETCH_SESSIONS_FROM: i16 = 7;
/// Fetch v9 added `CurrentLeaderEpoch`.
pub(super) const FETCH_LEADER_EPOCH_FROM: i16 = 9;
/// Fetch v13 names topics by id.
pub(super) const FETCH_TOPIC_IDS_FROM: i16 = 13;
/// OffsetForLeaderEpoch v2 added `CurrentLeaderEpoch`; older versions
/// cannot fence, so validation is skipped with them.
const MIN_VALIDATE_VERSION: i16 = 2;
/// ListOffsets v4 added `CurrentLeaderEpoch`.
const LIST_OFFSETS_LEADER_EPOCH_FROM: i16 = 4;
/// The replica id consumers send.
const CONSUMER_REPLICA_ID: i32 = -1;

/// Identifies a partition in a broker's fetch session: the broker knows
/// partitions by topic id from Fetch v13 on, by name before.
pub(super) type SessionKey = (Arc<str>, Uuid, i32);

/// Partitions by topic and index.
pub(super) type PartList = Vec<(Arc<str>, i32)>;

/// Values grouped by (topic, topic id), in request order.
type Grouped<T> = Vec<((Arc<str>, Uuid), Vec<(i32, T)>)>;

/// The partition state a request was built from; results only apply while
/// the partition is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ctx {
    pub(super) generation: u64,
    pub(super) fetch_offset: i64,
}

/// A partition named in a ListOffsets or OffsetForLeaderEpoch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) generation: u64,
    pub(super) current_leader_epoch: i32,
    /// ListOffsets: the timestamp query; OffsetForLeaderEpoch: the epoch
    /// whose end offset is asked for.
    pub(super) query: i64,
}

/// A per-partition answer of ListOffsets or OffsetForLeaderEpoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ItemResult {
    pub(super) error: ErrorCode,
    pub(super) offset: i64,
    pub(super) leader_epoch: i32,
}

impl ItemResult {
    /// For a partition the broker left out of its answer: try again.
    const MISSING: ItemResult = ItemResult {
        error: ErrorCode::UNKNOWN_SERVER_ERROR,
        offset: -1,
        leader_epoch: -1,
    };
}

/// What the fetch's sub-task needs to make sense of the response.
pub(super) struct AnswerKeys {
    pub(super) version: i16,
    /// The state each partition was fetched with.
    pub(super) ctx: HashMap<(Arc<str>, i32), Ctx>,
    /// Topic names by id (Fetch v13+).
    pub(super) ids: HashMap<Uuid, Arc<str>>,
    /// Bytes each partition's data may decompress to.
    pub(super) decode_budget: usize,
}

/// The useful part of a fetch response, decoded off the driver.
pub(super) struct FetchAnswer {
    pub(super) error_code: i16,
    pub(super) session_id: i32,
    pub(super) partitions: Vec<PartAnswer>,
}

/// A KIP-951 hint: leader id, leader epoch, and the leader's endpoint.
pub(super) type LeaderHint = (i32, i32, Option<(String, i32)>);

/// One partition of a fetch response.
pub(super) struct PartAnswer {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) ctx: Ctx,
    pub(super) error: ErrorCode,
    pub(super) high_watermark: i64,
    pub(super) last_stable_offset: i64,
    pub(super) log_start_offset: i64,
    /// KIP-951: the new leader and its epoch, with its endpoint if given.
    pub(super) leader_hint: Option<LeaderHint>,
    pub(super) chunk: Option<Result<Chunk, DecodeError>>,
    /// Size of the `records` field.
    pub(super) wire_bytes: usize,
}

/// Groups `(topic, id, partition)` keys by topic, preserving order.
fn group<T>(keys: impl IntoIterator<Item = (SessionKey, T)>) -> Grouped<T> {
    let mut out: Grouped<T> = Vec::new();
    for ((topic, id, partition), value) in keys {
        match out.last_mut() {
            Some(((t, i), ps)) if *t == topic && *i == id => ps.push((partition, value)),
            _ => out.push(((topic, id), vec![(partition, value)])),
        }
    }
    out
}

/// The Fetch request for `plan`, asking for at most `max_bytes`.
pub(super) fn fetch_request(
    plan: &FetchPlan<SessionKey>,
    version: i16,
    settings: &Settings,
    max_bytes: usize,
) -> FetchRequest {
    let by_id = version >= FETCH_TOPIC_IDS_FROM;
    let topics = group(plan.send.iter().map(|(k, p)| (k.clone(), *p)))
        .into_iter()
        .map(|((topic, id), parts)| FetchTopic {
            topic: if by_id {
                String::new()
            } else {
                topic.to_string()
            },
            topic_id: if by_id { id } else { Uuid::ZERO },
            partitions: parts
                .into_iter()
                .map(|(partition, p)| FetchPartition {
                    partition,
                    current_leader_epoch: p.current_leader_epoch,
                    fetch_offset: p.fetch_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                    log_start_offset: -1,
                    partition_max_bytes: p.max_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let forgotten_topics_data = group(plan.forget.iter().map(|k| (k.clone(), ())))
        .into_iter()
        .map(|((topic, id), parts)| ForgottenTopic {
            topic: if by_id {
                String::new()
            } else {
                topic.to_string()
            },
            topic_id: if by_id { id } else { Uuid::ZERO },
            partitions: parts.into_iter().map(|(p, ())| p).collect(),
            ..Default::default()
        })
        .collect();
    FetchRequest {
        replica_id: CONSUMER_REPLICA_ID,
        max_wait_ms: settings.max_wait_ms,
        min_bytes: settings.min_bytes,
        max_bytes: i32::try_from(max_bytes).unwrap_or(i32::MAX),
        isolation_level: settings.isolation.wire(),
        session_id: plan.session_id,
        session_epoch: plan.session_epoch,
        topics,
        forgotten_topics_data,
        ..Default::default()
    }
}

/// Extracts and decodes a fetch response (runs in the fetch sub-task).
pub(super) fn answer(resp: FetchResponse, keys: &AnswerKeys, settings: &Settings) -> FetchAnswer {
    let AnswerKeys {
        version,
        ctx,
        ids,
        decode_budget,
    } = keys;
    let (version, decode_budget) = (*version, *decode_budget);
    let FetchResponse {
        error_code,
        session_id,
        responses,
        node_endpoints,
        ..
    } = resp;
    let mut partitions = Vec::new();
    for t in responses {
        let topic = if version >= FETCH_TOPIC_IDS_FROM {
            ids.get(&t.topic_id).cloned()
        } else {
            ctx.keys()
                .find(|(name, _)| **name == *t.topic)
                .map(|(name, _)| Arc::clone(name))
        };
        let Some(topic) = topic else {
            continue;
        };
        for p in t.partitions {
            let Some(c) = ctx.get(&(Arc::clone(&topic), p.partition_index)).copied() else {
                continue;
            };
            let error = ErrorCode(p.error_code);
            let leader_hint = leader_hint(
                p.current_leader.leader_id,
                p.current_leader.leader_epoch,
                node_endpoints
                    .iter()
                    .map(|n| (n.node_id, n.host.as_str(), n.port)),
            )
            .map(|h| (h.leader_id, h.leader_epoch, h.endpoint));
            let records = p.records.unwrap_or_default();
            let wire_bytes = records.len();
            let chunk = (error.is_ok() && !records.is_empty()).then(|| {
                let aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .unwrap_or_default()
                    .iter()
                    .map(|a| (a.producer_id, a.first_offset))
                    .collect();
                decode(
                    &topic,
                    p.partition_index,
                    c.fetch_offset,
                    records,
                    &aborted,
                    settings,
                    decode_budget,
                )
            });
            partitions.push(PartAnswer {
                topic: Arc::clone(&topic),
                partition: p.partition_index,
                ctx: c,
                error,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                log_start_offset: p.log_start_offset,
                leader_hint,
                chunk,
                wire_bytes,
            });
        }
    }
    FetchAnswer {
        error_code,
        session_id,
        partitions,
    }
}

/// Decodes one partition's records, decompressing at most about
/// `decode_budget` bytes (see [`super::sizing::DECODE_AHEAD_BYTES`]).
fn decode(
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    records: Bytes,
    aborted: &[(i64, i64)],
    settings: &Settings,
    decode_budget: usize,
) -> Result<Chunk, DecodeError> {
    let limits = &settings.limits;
    let soft = DecodeLimits {
        max_total_decompressed_bytes: limits.max_total_decompressed_bytes.min(decode_budget),
        ..*limits
    };
    let run = |limits: &DecodeLimits| {
        decode_chunk(
            topic,
            partition,
            fetch_offset,
            records.clone(),
            aborted,
            settings.isolation,
            limits,
        )
    };
    match run(&soft) {
        // The first batch alone inflates past the budget: decode it within
        // the configured limits, or the partition could never move on.
        Err(e)
            if soft != *limits
                && matches!(e.kind(), DecodeErrorKind::DecompressedTooLarge { .. }) =>
        {
            run(&DecodeLimits {
                max_total_decompressed_bytes: limits
                    .max_total_decompressed_bytes
                    .min(limits.max_decompressed_bytes),
                ..*limits
            })
        }
        other => other,
    }
}

/// The Fetch version to use with a broker whose best is `best`:
/// below v13 while a topic's id is unknown (it can only be named).
pub(super) fn fetch_version(
    best: Option<i16>,
    addr: &str,
    topic_ids_known: bool,
) -> Result<i16, Error> {
    match best {
        Some(v) if v >= MIN_FETCH_VERSION => Ok(if v >= FETCH_TOPIC_IDS_FROM && !topic_ids_known {
            FETCH_TOPIC_IDS_FROM - 1
        } else {
            v
        }),
        other => Err(Error::new(ErrorKind::Unsupported)
            .with_message(format!(
                "broker {addr} supports no Fetch version >= {MIN_FETCH_VERSION} (best: {other:?})"
            ))
            .with_api(ApiKey::FETCH)),
    }
}

/// The ListOffsets version to use with a broker whose best is `best`.
pub(super) fn list_offsets_version(best: Option<i16>, addr: &str) -> Result<i16, Error> {
    match best {
        Some(v) if v >= 1 => Ok(v),
        _ => Err(Error::new(ErrorKind::Unsupported)
            .with_message(format!(
                "broker {addr} supports no ListOffsets version >= 1"
            ))
            .with_api(ApiKey::LIST_OFFSETS)),
    }
}

/// A ListOffsets request asking each item's partition for its timestamp
/// query.
pub(super) fn list_offsets_request(
    queries: &[(&Item, i64)],
    version: i16,
    isolation: i8,
    timeout_ms: i32,
) -> ListOffsetsRequest {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (item, timestamp) in queries {
        let partition = ListOffsetsPartition {
            partition_index: item.partition,
            current_leader_epoch: if version >= LIST_OFFSETS_LEADER_EPOCH_FROM {
                item.current_leader_epoch
            } else {
                -1
            },
            timestamp: *timestamp,
            ..Default::default()
        };
        match topics.last_mut() {
            Some(t) if *t.name == *item.topic => t.partitions.push(partition),
            _ => topics.push(ListOffsetsTopic {
                name: item.topic.to_string(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    ListOffsetsRequest {
        replica_id: CONSUMER_REPLICA_ID,
        isolation_level: isolation,
        topics,
        timeout_ms,
        ..Default::default()
    }
}

/// The item's answer in a ListOffsets response.
fn list_offsets_answer(resp: &ListOffsetsResponse, item: &Item) -> ItemResult {
    resp.topics
        .iter()
        .filter(|t| *t.name == *item.topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == item.partition)
        .map(|p| ItemResult {
            error: ErrorCode(p.error_code),
            offset: p.offset,
            leader_epoch: p.leader_epoch,
        })
        .unwrap_or(ItemResult::MISSING)
}

/// Each item's answer in a ListOffsets response.
pub(super) fn list_offsets_answers(resp: &ListOffsetsResponse, items: &[Item]) -> Vec<ItemResult> {
    items.iter().map(|i| list_offsets_answer(resp, i)).collect()
}

/// Whether an item's timestamp query found no record (offset -1), which
/// means the end of the log.
fn past_end(item: &Item, result: &ItemResult) -> bool {
    result.error.is_ok() && result.offset < 0 && item.query >= 0
}

/// The queries to ask again for the end of the log (see [`past_end`]).
pub(super) fn past_end_queries<'a>(
    items: &'a [Item],
    results: &[ItemResult],
) -> Vec<(&'a Item, i64)> {
    items
        .iter()
        .zip(results)
        .filter(|(i, r)| past_end(i, r))
        .map(|(i, _)| (i, OffsetSpec::Latest.wire()))
        .collect()
}

/// Takes the end-of-log answers of [`past_end_queries`] for the items that
/// asked for them.
pub(super) fn merge_past_end(
    items: &[Item],
    results: &mut [ItemResult],
    resp: &ListOffsetsResponse,
) {
    for (item, r) in items.iter().zip(results.iter_mut()) {
        if past_end(item, r) {
            *r = list_offsets_answer(resp, item);
        }
    }
}

/// An answer without an offset although without an error is retried
/// rather than fetched from -1.
pub(super) fn refuse_missing_offsets(results: &mut [ItemResult]) {
    for r in results {
        if r.error.is_ok() && r.offset < 0 {
            r.error = ErrorCode::OFFSET_NOT_AVAILABLE;
        }
    }
}

/// The OffsetForLeaderEpoch version to use with a broker whose best is
/// `best`; `None` if it cannot validate (the position is then trusted).
pub(super) fn validate_version(best: Option<i16>) -> Option<i16> {
    best.filter(|v| *v >= MIN_VALIDATE_VERSION)
}

/// An OffsetForLeaderEpoch request for the end offset of each item's
/// fetched epoch.
pub(super) fn offsets_for_leader_epoch_request(items: &[Item]) -> OffsetForLeaderEpochRequest {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for item in items {
        let partition = OffsetForLeaderPartition {
            partition: item.partition,
            current_leader_epoch: item.current_leader_epoch,
            leader_epoch: i32::try_from(item.query).unwrap_or(-1),
            ..Default::default()
        };
        match topics.last_mut() {
            Some(t) if *t.topic == *item.topic => t.partitions.push(partition),
            _ => topics.push(OffsetForLeaderTopic {
                topic: item.topic.to_string(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    OffsetForLeaderEpochRequest {
        replica_id: CONSUMER_REPLICA_ID,
        topics,
        ..Default::default()
    }
}

/// Each item's answer in an OffsetForLeaderEpoch response.
pub(super) fn offsets_for_leader_epoch_answers(
    resp: &OffsetForLeaderEpochResponse,
    items: &[Item],
) -> Vec<ItemResult> {
    items
        .iter()
        .map(|item| {
            resp.topics
                .iter()
                .filter(|t| *t.topic == *item.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition == item.partition)
                .map(|p| ItemResult {
                    error: ErrorCode(p.error_code),
                    offset: p.end_offset,
                    leader_epoch: p.leader_epoch,
                })
                .unwrap_or(ItemResult::MISSING)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::session::{FetchSession, PartitionParams};
    use super::*;
    use crate::{
        client::{consumer::ConsumerConfig, Settings as ClientSettings},
        cluster::BackoffConfig,
    };
    use std::time::Duration;

    fn settings() -> Settings {
        Settings::new(
            &ConsumerConfig::default(),
            &ClientSettings {
                operation_timeout: Duration::from_secs(1),
                backoff: BackoffConfig::default(),
            },
        )
    }

    fn key(topic: &str, partition: i32) -> SessionKey {
        (Arc::from(topic), Uuid([7; 16]), partition)
    }

    fn params(offset: i64) -> PartitionParams {
        PartitionParams {
            fetch_offset: offset,
            current_leader_epoch: 2,
            last_fetched_epoch: -1,
            max_bytes: 1000,
        }
    }

    #[test]
    fn fetch_requests_group_partitions_by_topic_and_name_topics_by_version() {
        let mut session = FetchSession::new();
        let plan = session.plan(
            [
                (key("a", 0), params(5)),
                (key("a", 1), params(6)),
                (key("b", 0), params(7)),
            ],
            true,
        );
        let req = fetch_request(&plan, 12, &settings(), 3000);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].topic, "a");
        assert_eq!(req.topics[0].topic_id, Uuid::ZERO);
        assert_eq!(req.topics[0].partitions.len(), 2);
        assert_eq!(req.topics[0].partitions[1].fetch_offset, 6);
        assert_eq!(req.topics[0].partitions[1].partition_max_bytes, 1000);
        assert_eq!(req.topics[0].partitions[1].current_leader_epoch, 2);
        assert_eq!((req.session_id, req.session_epoch), (0, 0));
        assert_eq!(req.max_bytes, 3000);
        assert_eq!(req.replica_id, -1);

        let req = fetch_request(&plan, 13, &settings(), 3000);
        assert_eq!(req.topics[1].topic, "");
        assert_eq!(req.topics[1].topic_id, Uuid([7; 16]));

        session.on_response(&plan, 0, 9);
        let plan = session.plan([(key("a", 0), params(8)), (key("b", 0), params(7))], true);
        let req = fetch_request(&plan, 12, &settings(), 3000);
        assert_eq!((req.session_id, req.session_epoch), (9, 1));
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].partitions[0].fetch_offset, 8);
        assert_eq!(req.forgotten_topics_data.len(), 1);
        assert_eq!(req.forgotten_topics_data[0].topic, "a");
        assert_eq!(req.forgotten_topics_data[0].partitions, vec![1]);
    }

    #[test]
    fn fetch_requests_encode_at_every_supported_version() {
        let mut session = FetchSession::new();
        let plan = session.plan([(key("a", 0), params(5))], true);
        for version in MIN_FETCH_VERSION..=<FetchRequest as crate::protocol::Message>::MAX_VERSION {
            let req = fetch_request(&plan, version, &settings(), 3000);
            let mut buf = bytes::BytesMut::new();
            crate::protocol::Message::encode(&req, &mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }

    /// Three lz4 batches of ten records each, every batch 100 kB
    /// decompressed but only a few hundred bytes on the wire.
    #[cfg(feature = "compression-lz4")]
    fn inflating_batches() -> Bytes {
        use crate::protocol::record::{BatchHeader, Compression, RecordBatchWriter};
        let mut buf = bytes::BytesMut::new();
        let value = vec![b'z'; 10_000];
        for base in [0, 10, 20] {
            let mut w = RecordBatchWriter::new(BatchHeader {
                base_offset: base,
                compression: Compression::Lz4,
                ..BatchHeader::default()
            });
            for i in 0..10 {
                w.append(i, None, Some(&value), &[]).unwrap();
            }
            w.finish_into(&mut buf).unwrap();
        }
        buf.freeze()
    }

    #[cfg(feature = "compression-lz4")]
    #[test]
    fn decoding_stops_at_the_budget_but_always_takes_one_batch() {
        let data = inflating_batches();
        assert!(data.len() < 10_000);
        let topic: Arc<str> = Arc::from("t");
        let s = settings();
        // Room for one batch and a half: the second waits for a later fetch.
        let chunk = decode(&topic, 0, 0, data.clone(), &[], &s, 150_000).unwrap();
        assert_eq!(chunk.records.len(), 10);
        assert_eq!(chunk.next_offset, 10);
        assert!(chunk.mem_bytes >= 100_000);
        // Less room than the first batch needs: it is decoded anyway.
        let chunk = decode(&topic, 0, 0, data.clone(), &[], &s, 1_000).unwrap();
        assert!(!chunk.records.is_empty());
        assert_eq!(chunk.records[0].offset, 0);
        // Plenty of room: everything.
        let chunk = decode(&topic, 0, 5, data, &[], &s, 1 << 20).unwrap();
        assert_eq!(chunk.records.len(), 25);
        assert_eq!(chunk.next_offset, 30);
    }

    fn item(topic: &str, partition: i32, query: i64) -> Item {
        Item {
            topic: Arc::from(topic),
            partition,
            generation: 1,
            current_leader_epoch: 3,
            query,
        }
    }

    fn offsets_response(answers: &[(&str, i32, i16, i64)]) -> ListOffsetsResponse {
        use crate::protocol::messages::list_offsets_response::{
            ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
        };
        ListOffsetsResponse {
            topics: answers
                .iter()
                .map(
                    |(topic, partition, error_code, offset)| ListOffsetsTopicResponse {
                        name: topic.to_string(),
                        partitions: vec![ListOffsetsPartitionResponse {
                            partition_index: *partition,
                            error_code: *error_code,
                            offset: *offset,
                            leader_epoch: 3,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_timestamp_past_the_last_record_asks_again_for_the_end() {
        let items = [item("a", 0, 1_000), item("a", 1, -2), item("b", 0, 2_000)];
        let request = list_offsets_request(
            &items.iter().map(|i| (i, i.query)).collect::<Vec<_>>(),
            4,
            1,
            500,
        );
        assert_eq!(request.topics.len(), 2);
        assert_eq!(request.topics[0].partitions[0].current_leader_epoch, 3);
        assert_eq!(request.topics[0].partitions[1].timestamp, -2);
        assert_eq!(request.isolation_level, 1);
        // a/0 found no record at its timestamp; b/0 is left out.
        let mut results = list_offsets_answers(
            &offsets_response(&[("a", 0, 0, -1), ("a", 1, 0, 5)]),
            &items,
        );
        assert_eq!(results[1].offset, 5);
        assert_eq!(results[2], ItemResult::MISSING);
        let again = past_end_queries(&items, &results);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].0.partition, again[0].1), (0, -1));
        merge_past_end(&items, &mut results, &offsets_response(&[("a", 0, 0, 42)]));
        assert_eq!(results[0].offset, 42);
        // No offset and no error: retried, not fetched from -1.
        let mut results = vec![ItemResult {
            error: ErrorCode::NONE,
            offset: -1,
            leader_epoch: -1,
        }];
        refuse_missing_offsets(&mut results);
        assert_eq!(results[0].error, ErrorCode::OFFSET_NOT_AVAILABLE);
        assert!(list_offsets_version(Some(0), "b:1").is_err());
        assert_eq!(validate_version(Some(1)), None);
        assert_eq!(validate_version(Some(4)), Some(4));
    }
}
