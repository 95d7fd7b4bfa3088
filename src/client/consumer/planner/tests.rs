use super::*;
use crate::{
    client::{
        consumer::{
            chunk::Chunk,
            requests::{FetchAnswer, ItemResult, PartAnswer},
            ConsumerConfig, OffsetReset,
        },
        Settings as ClientSettings,
    },
    cluster::{Metadata, PartitionInfo, TopicInfo},
};

const TOPIC_ID: Uuid = Uuid([7; 16]);

fn settings(reset: OffsetReset) -> Arc<Settings> {
    settings_of(ConsumerConfig::default().offset_reset(reset))
}

fn settings_of(config: ConsumerConfig) -> Arc<Settings> {
    Arc::new(Settings::new(
        &config,
        &ClientSettings {
            operation_timeout: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
        },
    ))
}

/// Topic "t" with partitions 0 and 1, led by `leader` in `epoch`.
fn metadata(leader: i32, epoch: i32) -> Metadata {
    let partitions = [0, 1]
        .map(|id| {
            let info = PartitionInfo {
                id,
                error: ErrorCode::NONE,
                leader: Some(leader),
                leader_epoch: epoch,
                replicas: vec![leader],
                isr: vec![leader],
                offline: Vec::new(),
            };
            (id, info)
        })
        .into();
    let topic = TopicInfo {
        name: "t".to_owned(),
        id: TOPIC_ID,
        error: ErrorCode::NONE,
        is_internal: false,
        partitions,
    };
    Metadata {
        cluster_id: None,
        controller_id: None,
        brokers: BTreeMap::new(),
        topics: [("t".to_owned(), topic)].into(),
    }
}

fn connected() -> Connected {
    Connected {
        addr: "broker:9092".to_owned(),
        fetch_version: Some(16),
    }
}

fn topics() -> Vec<String> {
    vec!["t".to_owned()]
}

/// Partition `partition`'s answer in `call`, with `error` and no data.
fn answered(call: &FetchCall, partition: i32, error: ErrorCode) -> PartAnswer {
    PartAnswer {
        topic: Arc::from("t"),
        partition,
        ctx: call.keys.ctx[&(Arc::from("t"), partition)],
        error,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        leader_hint: None,
        chunk: None,
        wire_bytes: 0,
    }
}

/// Partition `partition`'s records in `call` up to `next_offset`,
/// written in leader epoch `epoch`.
fn records(call: &FetchCall, partition: i32, next_offset: i64, epoch: i32) -> PartAnswer {
    PartAnswer {
        high_watermark: next_offset,
        chunk: Some(Ok(Chunk {
            records: Vec::new(),
            next_offset,
            last_epoch: Some(epoch),
            stuck: false,
            mem_bytes: 1000,
            wire_used: 1000,
        })),
        wire_bytes: 1000,
        ..answered(call, partition, ErrorCode::NONE)
    }
}

fn response(session_id: i32, partitions: Vec<PartAnswer>) -> FetchAnswer {
    FetchAnswer {
        error_code: 0,
        session_id,
        partitions,
    }
}

fn ok(offset: i64, leader_epoch: i32) -> ItemResult {
    ItemResult {
        error: ErrorCode::NONE,
        offset,
        leader_epoch,
    }
}

/// (partition, fetch offset) of each partition a fetch names.
fn offsets_of(call: &FetchCall) -> Vec<(i32, i64)> {
    call.request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition, p.fetch_offset))
        .collect()
}

fn only_fetch(plan: Plan) -> FetchCall {
    let mut fetch = plan.fetch;
    assert_eq!(fetch.len(), 1, "one fetch planned");
    fetch.remove(0)
}

/// Assigns "t" `partitions` at `offset` and takes them to their first
/// fetch from broker 1 (leader epoch 3): leaders, connection, fetch.
fn first_fetch(
    planner: &mut FetchPlanner,
    partitions: &[i32],
    offset: i64,
    now: Instant,
) -> FetchCall {
    for p in partitions {
        planner.assign("t", *p, StartOffset::At(offset), now);
    }
    let plan = planner.plan(now);
    assert_eq!(plan.metadata, Some(topics()));
    assert!(plan.fetch.is_empty() && plan.connect.is_empty());
    planner.handle_metadata(&topics(), Ok(&metadata(1, 3)), now);
    let plan = planner.plan(now);
    assert_eq!(plan.connect, vec![1]);
    assert!(plan.fetch.is_empty());
    assert!(
        planner.plan(now).connect.is_empty(),
        "one connection attempt at a time"
    );
    planner.handle_connected(1, Ok(connected()), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(call.broker, 1);
    call
}

/// Hands every queued chunk to the application.
fn consume_all(planner: &mut FetchPlanner) {
    while let Some(ready) = planner.pop_ready() {
        let Ready::Chunk(chunk) = ready else {
            panic!("expected only chunks");
        };
        planner.release(chunk.bytes);
        assert!(planner.take_chunk(chunk).is_some());
    }
}

/// Partition 0 of "t" was fetched from broker 1 up to 20 in epoch 3,
/// the application took records up to 10, and the fetch from 20 was
/// answered: the leader moved to broker 2 in epoch 4. Returns the
/// validation the planner asks of broker 2.
fn moved_after_fetching_to_20(planner: &mut FetchPlanner, now: Instant) -> Vec<Item> {
    let call = first_fetch(planner, &[0], 0, now);
    let answer = response(0, vec![records(&call, 0, 10, 3)]);
    planner.handle_fetched(call.sent, Ok(answer), now);
    consume_all(planner);
    let call = only_fetch(planner.plan(now));
    let answer = response(0, vec![records(&call, 0, 20, 3)]);
    planner.handle_fetched(call.sent, Ok(answer), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(offsets_of(&call), vec![(0, 20)]);
    let moved = PartAnswer {
        leader_hint: Some((2, 4, Some(("broker2".to_owned(), 9092)))),
        ..answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER)
    };
    planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
    let part = planner.part("t", 0).unwrap();
    assert_eq!((part.position, part.fetch_offset), (Some(10), 20));
    assert_eq!(planner.buffered(), 1000, "the chunk 10..20 waits");
    let mut plan = planner.plan(now);
    assert!(plan.fetch.is_empty() && plan.metadata.is_none());
    assert_eq!(plan.validate.len(), 1);
    let (broker, items) = plan.validate.remove(0);
    assert_eq!(broker, 2);
    items
}

#[test]
fn a_leader_move_follows_the_hint_validates_and_fetches_from_the_new_leader() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    let call = first_fetch(&mut planner, &[0], 0, now);
    assert_eq!(offsets_of(&call), vec![(0, 0)]);
    assert_eq!(call.request.topics[0].topic_id, TOPIC_ID);
    assert_eq!(call.request.topics[0].partitions[0].current_leader_epoch, 3);
    assert!(
        planner.plan(now).fetch.is_empty(),
        "one fetch in flight per broker"
    );
    let answer = response(0, vec![records(&call, 0, 10, 3)]);
    planner.handle_fetched(call.sent, Ok(answer), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(offsets_of(&call), vec![(0, 10)]);

    // KIP-951: the answer names broker 2 as leader in epoch 4.
    let moved = PartAnswer {
        leader_hint: Some((2, 4, Some(("broker2".to_owned(), 9092)))),
        ..answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER)
    };
    planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
    assert_eq!(
        planner.take_cluster_updates(),
        vec![ClusterUpdate::LeaderHint {
            topic: Arc::from("t"),
            partition: 0,
            leader: 2,
            epoch: 4,
            endpoint: Some(("broker2".to_owned(), 9092)),
        }]
    );
    // A newer epoch: the position is validated with the new leader
    // (KIP-320) for the epoch the fetched data came from, before any
    // fetch and without a metadata round trip.
    let plan = planner.plan(now);
    assert!(plan.fetch.is_empty() && plan.metadata.is_none());
    let (broker, items) = &plan.validate[0];
    assert_eq!(*broker, 2);
    assert_eq!((items[0].query, items[0].current_leader_epoch), (3, 4));
    assert!(
        planner.plan(now).validate.is_empty(),
        "validation in flight"
    );
    // The new leader's log has epoch 3 up to past the fetch offset.
    planner.handle_validated(2, items, Ok(Some(vec![ok(12, 3)])), now);
    assert_eq!(planner.plan(now).connect, vec![2]);
    planner.handle_connected(2, Ok(connected()), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(call.broker, 2);
    assert_eq!(offsets_of(&call), vec![(0, 10)]);
    assert_eq!(call.request.topics[0].partitions[0].current_leader_epoch, 4);

    // Without a hint: the leader is looked up again after a backoff.
    let moved = answered(&call, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER);
    planner.handle_fetched(call.sent, Ok(response(0, vec![moved])), now);
    assert_eq!(
        planner.take_cluster_updates(),
        vec![ClusterUpdate::Invalidate(Arc::from("t"))]
    );
    let plan = planner.plan(now);
    assert!(plan.metadata.is_none() && plan.fetch.is_empty());
    let retry = planner.poll_timeout().expect("a retry is scheduled");
    assert!(retry > now);
    assert_eq!(planner.plan(retry).metadata, Some(topics()));
    // Same leader epoch as before: nothing to validate.
    planner.handle_metadata(&topics(), Ok(&metadata(2, 4)), retry);
    let call = only_fetch(planner.plan(retry));
    assert_eq!((call.broker, offsets_of(&call)), (2, vec![(0, 10)]));
}

#[test]
fn a_broker_that_cannot_be_reached_loses_its_partitions_leaders() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    let call = first_fetch(&mut planner, &[0, 1], 0, now);
    planner.handle_fetched(call.sent, Err(&"connection reset"), now);
    assert_eq!(planner.take_cluster_updates().len(), 2);
    assert!(planner.part("t", 0).unwrap().leader.is_none());
    assert_eq!(planner.plan(now).metadata, Some(topics()));
    // The broker itself is retried only after a backoff.
    planner.handle_metadata(&topics(), Ok(&metadata(1, 3)), now);
    assert!(planner.plan(now).fetch.is_empty());
    let later = planner.poll_timeout().unwrap();
    assert_eq!(
        offsets_of(&only_fetch(planner.plan(later))),
        vec![(0, 0), (1, 0)]
    );
}

#[test]
fn truncation_above_the_position_refetches_from_the_position() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
    let items = moved_after_fetching_to_20(&mut planner, now);
    // Epoch 3 ends at 15 on the new leader: 15..20 are gone. Nothing
    // the application saw diverged, so no error, whatever the policy.
    planner.handle_validated(2, &items, Ok(Some(vec![ok(15, 3)])), now);
    assert!(
        planner.pop_ready().is_none(),
        "the buffered chunk is dropped"
    );
    assert_eq!(planner.buffered(), 0);
    let part = planner.part("t", 0).unwrap();
    assert_eq!(
        (part.position, part.fetch_offset, part.phase),
        (Some(10), 10, Phase::Fetch)
    );
    assert_eq!(planner.plan(now).connect, vec![2]);
    planner.handle_connected(2, Ok(connected()), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!((call.broker, offsets_of(&call)), (2, vec![(0, 10)]));
}

#[test]
fn truncation_below_the_position_resumes_at_the_divergence_or_halts() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    let items = moved_after_fetching_to_20(&mut planner, now);
    // Epoch 3 ends at 7: records 7..10 the application saw are not in
    // the new leader's log. They are delivered again as it has them.
    planner.handle_validated(2, &items, Ok(Some(vec![ok(7, 3)])), now);
    assert!(planner.pop_ready().is_none());
    let part = planner.part("t", 0).unwrap();
    assert_eq!((part.position, part.fetch_offset), (Some(7), 7));
    assert_eq!(planner.plan(now).connect, vec![2]);
    planner.handle_connected(2, Ok(connected()), now);
    assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 7)]);

    // With OffsetReset::Error the application is told, and the
    // partition waits for a seek.
    let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
    let items = moved_after_fetching_to_20(&mut planner, now);
    planner.handle_validated(2, &items, Ok(Some(vec![ok(7, 3)])), now);
    let Some(Ready::Error(e)) = planner.pop_ready() else {
        panic!("expected an error item");
    };
    assert_eq!(e.kind(), ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert_eq!((e.topic(), e.partition()), (Some("t"), Some(0)));
    assert_eq!(planner.part("t", 0).unwrap().phase, Phase::Halted);
    let plan = planner.plan(now);
    assert!(plan.connect.is_empty() && plan.fetch.is_empty() && plan.validate.is_empty());
    planner.assign("t", 0, StartOffset::At(7), now);
    planner.handle_connected(2, Ok(connected()), now);
    assert_eq!(planner.plan(now).connect, vec![2]);
}

#[test]
fn an_epoch_unknown_to_the_new_leader_resets_the_offset() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    let items = moved_after_fetching_to_20(&mut planner, now);
    planner.handle_validated(2, &items, Ok(Some(vec![ok(-1, -1)])), now);
    assert_eq!(planner.buffered(), 0);
    let plan = planner.plan(now);
    assert_eq!(plan.list_offsets.len(), 1);
    assert_eq!(plan.list_offsets[0].1[0].query, OffsetSpec::Latest.wire());
}

#[test]
fn out_of_range_looks_the_offset_up_again_by_policy() {
    for (policy, query) in [(OffsetReset::Latest, -1), (OffsetReset::Earliest, -2)] {
        let now = Instant::now();
        let mut planner = FetchPlanner::new(settings(policy));
        let call = first_fetch(&mut planner, &[0], 100, now);
        let generation = planner.part("t", 0).unwrap().generation;
        let out = answered(&call, 0, ErrorCode::OFFSET_OUT_OF_RANGE);
        planner.handle_fetched(call.sent, Ok(response(0, vec![out])), now);
        assert!(planner.pop_ready().is_none(), "{policy:?}: no error item");
        let part = planner.part("t", 0).unwrap();
        assert_eq!(part.position, None);
        assert!(part.generation > generation, "in-flight results are stale");
        let plan = planner.plan(now);
        assert!(plan.fetch.is_empty());
        let (broker, items) = &plan.list_offsets[0];
        assert_eq!(
            (*broker, items[0].query, items[0].current_leader_epoch),
            (1, query, 3)
        );
        // An answer for the previous generation changes nothing.
        let stale = Item {
            generation,
            ..items[0].clone()
        };
        planner.handle_offsets(1, &[stale], Ok(vec![ok(5, 3)]), now);
        assert_eq!(planner.part("t", 0).unwrap().position, None);
        planner.handle_offsets(1, items, Ok(vec![ok(50, 3)]), now);
        assert_eq!(planner.part("t", 0).unwrap().position, Some(50));
        assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 50)]);
    }

    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Error));
    let call = first_fetch(&mut planner, &[0], 100, now);
    let out = answered(&call, 0, ErrorCode::OFFSET_OUT_OF_RANGE);
    planner.handle_fetched(call.sent, Ok(response(0, vec![out])), now);
    let Some(Ready::Error(e)) = planner.pop_ready() else {
        panic!("expected an error item");
    };
    assert_eq!(e.kind(), ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert_eq!(e.partition(), Some(0));
    let plan = planner.plan(now);
    assert!(plan.fetch.is_empty() && plan.list_offsets.is_empty());
    // A seek resumes it.
    planner.assign("t", 0, StartOffset::At(0), now);
    assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 0)]);
}

#[test]
fn fetches_are_incremental_within_a_session_and_full_after_it_is_lost() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    let call = first_fetch(&mut planner, &[0, 1], 0, now);
    assert_eq!(
        (call.request.session_id, call.request.session_epoch),
        (0, 0)
    );
    assert_eq!(offsets_of(&call), vec![(0, 0), (1, 0)]);
    // The broker opens session 9; only partition 0 had records.
    let answer = response(9, vec![records(&call, 0, 10, 3)]);
    planner.handle_fetched(call.sent, Ok(answer), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(
        (call.request.session_id, call.request.session_epoch),
        (9, 1)
    );
    assert_eq!(offsets_of(&call), vec![(0, 10)], "only what changed");
    planner.handle_fetched(call.sent, Ok(response(9, Vec::new())), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(
        (call.request.session_id, call.request.session_epoch),
        (9, 2)
    );
    assert!(offsets_of(&call).is_empty(), "nothing changed");
    // The broker lost the session: start a new one at once, listing
    // every partition.
    let lost = FetchAnswer {
        error_code: ErrorCode::FETCH_SESSION_ID_NOT_FOUND.0,
        ..response(0, Vec::new())
    };
    planner.handle_fetched(call.sent, Ok(lost), now);
    let call = only_fetch(planner.plan(now));
    assert_eq!(call.request.session_epoch, 0);
    assert_eq!(offsets_of(&call), vec![(0, 10), (1, 0)]);
    // Closing names the session with the final epoch.
    planner.handle_fetched(call.sent, Ok(response(11, Vec::new())), now);
    let closing = planner.close_sessions();
    assert_eq!(closing.len(), 1);
    let (broker, version, request) = &closing[0];
    assert_eq!((*broker, *version), (1, 16));
    assert_eq!((request.session_id, request.session_epoch), (11, -1));
}

#[test]
fn the_budget_holds_fetches_until_the_application_consumes() {
    let now = Instant::now();
    let settings = settings_of(
        ConsumerConfig::default()
            .max_buffered_bytes(1 << 20)
            .max_partition_bytes(1 << 20),
    );
    let mut planner = FetchPlanner::new(settings);
    let call = first_fetch(&mut planner, &[0], 0, now);
    assert_eq!(call.request.max_bytes, 1 << 20);
    assert_eq!(planner.prefetched.reserved, 1 << 20);
    let answer = response(0, vec![records(&call, 0, 10, 3)]);
    planner.handle_fetched(call.sent, Ok(answer), now);
    assert_eq!(planner.prefetched.reserved, 0);
    assert!(planner.plan(now).fetch.is_empty(), "1000 bytes wait");
    consume_all(&mut planner);
    assert_eq!(offsets_of(&only_fetch(planner.plan(now))), vec![(0, 10)]);
}

#[test]
fn a_partition_without_progress_is_reported_once() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    planner.assign("t", 0, StartOffset::At(0), now);
    planner.plan(now);
    planner.handle_metadata(&topics(), Err(&"no broker answers"), now);
    planner.plan(now);
    let due = planner.poll_timeout().unwrap();
    let stall = now + Duration::from_millis(30_500);
    assert!(due < stall, "the retry comes first");
    planner.plan(stall);
    let Some(Ready::Error(e)) = planner.pop_ready() else {
        panic!("expected a stall report");
    };
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.to_string().contains("no broker answers"), "{e}");
    planner.plan(stall + Duration::from_secs(60));
    assert!(planner.pop_ready().is_none(), "reported once");
}

#[test]
fn chunks_move_the_position_and_account_bytes() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    planner.assign("t", 0, StartOffset::At(10), now);
    assert_eq!(planner.part("t", 0).unwrap().position, Some(10));
    let c = chunk(&planner, "t", 0, 15, 100);
    planner.prefetched.push_chunk(c);
    let c = chunk(&planner, "t", 0, 20, 50);
    planner.prefetched.push_chunk(c);
    assert_eq!((planner.buffered(), planner.peak()), (150, 150));
    let Some(Ready::Chunk(c)) = planner.pop_ready() else {
        panic!("expected a chunk")
    };
    planner.release(c.bytes);
    assert!(planner.take_chunk(c).is_some());
    assert_eq!(planner.part("t", 0).unwrap().position, Some(15));
    assert_eq!(planner.part("t", 0).unwrap().position_epoch, 4);
    assert_eq!((planner.buffered(), planner.peak()), (50, 150));
}

fn chunk(
    planner: &FetchPlanner,
    topic: &str,
    partition: i32,
    next: i64,
    bytes: usize,
) -> ReadyChunk {
    let part = planner.part(topic, partition).unwrap();
    ReadyChunk {
        topic: Arc::clone(&part.topic),
        partition,
        generation: part.generation,
        records: Vec::new(),
        next_offset: next,
        last_epoch: Some(4),
        bytes,
    }
}

#[test]
fn reassigning_drops_buffered_chunks_and_stale_ones_are_refused() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    planner.assign("t", 0, StartOffset::At(0), now);
    planner.assign("t", 1, StartOffset::At(0), now);
    let stale = chunk(&planner, "t", 0, 5, 10);
    let c = chunk(&planner, "t", 0, 5, 10);
    planner.prefetched.push_chunk(c);
    let other = chunk(&planner, "t", 1, 7, 20);
    planner.prefetched.push_chunk(other);
    planner.assign("t", 0, StartOffset::Earliest, now);
    assert_eq!(planner.buffered(), 20, "only partition 1's chunk is left");
    assert_eq!(planner.prefetched.ready.len(), 1);
    assert!(planner.take_chunk(stale).is_none());
    assert_eq!(planner.part("t", 0).unwrap().position, None);
    assert_eq!(
        planner.part("t", 0).unwrap().phase,
        Phase::Resolve(OffsetSpec::Earliest)
    );
    assert!(planner.unassign("t", 1));
    assert!(!planner.unassign("t", 1));
    assert_eq!(planner.buffered(), 0);
    assert_eq!(planner.assignment(), vec![("t".to_owned(), 0)]);
}

#[test]
fn a_newer_leader_epoch_triggers_validation() {
    let now = Instant::now();
    let mut planner = FetchPlanner::new(settings(OffsetReset::Latest));
    planner.assign("t", 0, StartOffset::At(0), now);
    let part = find_part(&mut planner.parts, "t", 0).unwrap();
    part.set_leader(Leader { id: 1, epoch: 3 });
    assert_eq!(
        part.phase,
        Phase::Fetch,
        "first leader: nothing to validate"
    );
    part.fetch_epoch = 3;
    part.lose_leader();
    part.set_leader(Leader { id: 1, epoch: 3 });
    assert_eq!(part.phase, Phase::Fetch, "same epoch");
    part.lose_leader();
    part.set_leader(Leader { id: 2, epoch: 4 });
    assert_eq!(part.phase, Phase::Validate);
    assert_eq!(part.last_leader_epoch, 4);
}
