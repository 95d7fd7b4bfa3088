//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn. Under transaction version 2 (KIP-890)
//! TxnOffsetCommit v5 adds the group to the transaction itself (as Produce
//! v12 does partitions), and EndTxn v5 bumps the epoch and returns it. The
//! coordinator's state is in `txn.rs`; transactional offsets pend in the
//! group (`group.rs`).

use rskafka::protocol::{
    messages::{
        add_partitions_to_txn_response::{
            AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
        },
        txn_offset_commit_response::{
            TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
        },
        AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
    },
    ErrorCode,
};

use tokio::time::Instant;

use crate::{
    handlers::group::{offset_error, CommittedOffset},
    server::{until_stopped, Ctx},
    state::State,
};

/// Aborts the transaction just opened for `transactional_id` at its
/// deadline if it is still open then (the producer is fenced), so that a
/// producer that died does not hold back read_committed consumers.
pub(crate) fn abort_at_timeout(ctx: &Ctx, transactional_id: &str, deadline: Instant) {
    let shared = ctx.shared.clone();
    let id = transactional_id.to_owned();
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = until_stopped(&mut shutdown) => return,
        }
        shared.state().expire_transaction(&id);
        shared.notify_changed();
    });
}

/// Clients before v2 of these APIs know INVALID_PRODUCER_EPOCH only.
fn fenced_for(ctx: &Ctx, code: ErrorCode) -> ErrorCode {
    if code == ErrorCode::PRODUCER_FENCED && ctx.version < 2 {
        ErrorCode::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

pub(crate) async fn add_partitions_to_txn(
    ctx: Ctx,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = &req.v3_and_below_transactional_id;
    let code = ctx.coordinator_error(id).map(Err).unwrap_or_else(|| {
        let mut state = ctx.state();
        let unknown: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), *p)))
            .filter(|(t, p)| state.partition(t, *p).is_none())
            .collect();
        if !unknown.is_empty() {
            return Ok(Some(unknown));
        }
        let producer = state.current_producer(
            id,
            req.v3_and_below_producer_id,
            req.v3_and_below_producer_epoch,
        )?;
        let opened = producer.ongoing.is_none();
        let txn = State::ongoing_transaction(producer);
        if opened {
            abort_at_timeout(&ctx, id, txn.deadline);
        }
        for t in &req.v3_and_below_topics {
            for p in &t.partitions {
                txn.partitions.insert((t.name.clone(), *p));
            }
        }
        Ok(None)
    });
    // One code for every partition, but for unknown ones: those get
    // UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED.
    let code_of = |topic: &str, partition: i32| match &code {
        Err(code) => fenced_for(&ctx, *code),
        Ok(None) => ErrorCode(0),
        Ok(Some(unknown)) if unknown.contains(&(topic.to_owned(), partition)) => {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        }
        Ok(Some(_)) => ErrorCode::OPERATION_NOT_ATTEMPTED,
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| AddPartitionsToTxnTopicResult {
            name: t.name.clone(),
            results_by_partition: t
                .partitions
                .iter()
                .map(|&p| AddPartitionsToTxnPartitionResult {
                    partition_index: p,
                    partition_error_code: code_of(&t.name, p).0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    AddPartitionsToTxnResponse {
        throttle_time_ms: ctx.throttle_ms,
        results_by_topic_v3_and_below: results,
        ..Default::default()
    }
}

/// Adds `group` to the open transaction of the producer (transactional
/// id, producer id, epoch), opening one if none is.
fn add_group(
    ctx: &Ctx,
    state: &mut State,
    (transactional_id, producer_id, producer_epoch): (&str, i64, i16),
    group: &str,
) -> Result<(), ErrorCode> {
    let producer = state.current_producer(transactional_id, producer_id, producer_epoch)?;
    let opened = producer.ongoing.is_none();
    let txn = State::ongoing_transaction(producer);
    txn.groups.insert(group.to_owned());
    if opened {
        abort_at_timeout(ctx, transactional_id, txn.deadline);
    }
    Ok(())
}

pub(crate) async fn add_offsets_to_txn(
    ctx: Ctx,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = ctx.coordinator_error(&req.transactional_id).or_else(|| {
        add_group(
            &ctx,
            &mut ctx.state(),
            (&req.transactional_id, req.producer_id, req.producer_epoch),
            &req.group_id,
        )
        .err()
        .map(|code| fenced_for(&ctx, code))
    });
    AddOffsetsToTxnResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.map_or(0, |c| c.0),
        ..Default::default()
    }
}

pub(crate) async fn txn_offset_commit(
    ctx: Ctx,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_error = ctx.coordinator_error(&req.group_id).or_else(|| {
        let mut state = ctx.state();
        let added = state
            .transactional_ids
            .get(&req.transactional_id)
            .filter(|p| p.producer_id == req.producer_id)
            .and_then(|p| p.ongoing.as_ref())
            .is_some_and(|t| t.groups.contains(&req.group_id));
        if !added && ctx.version >= 5 && state.config.transaction_version >= 2 {
            // Transaction version 2: the commit adds the group itself.
            let producer = (
                &req.transactional_id[..],
                req.producer_id,
                req.producer_epoch,
            );
            if let Err(code) = add_group(&ctx, &mut state, producer, &req.group_id) {
                return Some(code);
            }
        } else if !added {
            return Some(ErrorCode::INVALID_TXN_STATE);
        }
        let group = state
            .coordination
            .groups
            .entry(req.group_id.clone())
            .or_default();
        group
            .check_txn_commit(
                req.generation_id,
                &req.member_id,
                req.group_instance_id.as_deref(),
            )
            .err()
    });
    let mut state = ctx.state();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = offset_error(
                        &ctx,
                        &state,
                        group_error,
                        (&t.name, p.partition_index),
                        p.committed_metadata.as_deref(),
                    );
                    if code.is_none() {
                        if let Some(g) = state.coordination.groups.get_mut(&req.group_id) {
                            g.pending_txn_offsets
                                .entry(req.producer_id)
                                .or_default()
                                .insert(
                                    (t.name.clone(), p.partition_index),
                                    CommittedOffset {
                                        offset: p.committed_offset,
                                        leader_epoch: p.committed_leader_epoch,
                                        metadata: p.committed_metadata,
                                    },
                                );
                        }
                    }
                    TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code.map_or(0, |c| c.0),
                        ..Default::default()
                    }
                })
                .collect();
            TxnOffsetCommitResponseTopic {
                name: t.name,
                partitions,
                ..Default::default()
            }
        })
        .collect();
    TxnOffsetCommitResponse {
        throttle_time_ms: ctx.throttle_ms,
        topics,
        ..Default::default()
    }
}

pub(crate) async fn end_txn(ctx: Ctx, req: EndTxnRequest) -> EndTxnResponse {
    let result = match ctx.coordinator_error(&req.transactional_id) {
        Some(code) => Err(code),
        None => {
            let mut state = ctx.state();
            if ctx.version >= 5 && state.config.transaction_version >= 2 {
                end_txn_v2(&mut state, &req)
            } else {
                end_txn_v1(&mut state, &req).map(|()| (-1, -1))
            }
        }
    };
    ctx.shared.notify_changed();
    let (code, (producer_id, producer_epoch)) = match result {
        Ok(ids) => (ErrorCode::NONE, ids),
        Err(code) => (fenced_for(&ctx, code), (-1, -1)),
    };
    EndTxnResponse {
        throttle_time_ms: ctx.throttle_ms,
        error_code: code.0,
        producer_id,
        producer_epoch,
        ..Default::default()
    }
}

/// EndTxn before transaction version 2: the epoch stays.
fn end_txn_v1(state: &mut State, req: &EndTxnRequest) -> Result<(), ErrorCode> {
    let producer =
        state.current_producer(&req.transactional_id, req.producer_id, req.producer_epoch)?;
    if producer.ongoing.is_none() {
        // A retry of the EndTxn that ended the last transaction succeeds.
        return if producer.last_ended == Some(req.committed) {
            Ok(())
        } else {
            Err(ErrorCode::INVALID_TXN_STATE)
        };
    }
    state.end_transaction(&req.transactional_id, req.committed, false);
    Ok(())
}

/// EndTxn of transaction version 2: the markers carry the next epoch, which
/// the producer gets back for its next transaction (a new producer id once
/// the epochs are used up), so late writes of the ended one are fenced.
fn end_txn_v2(state: &mut State, req: &EndTxnRequest) -> Result<(i64, i16), ErrorCode> {
    state.expire_transaction(&req.transactional_id);
    if let Some(p) = state.transactional_ids.get(&req.transactional_id) {
        // A retry of the EndTxn that ended the last transaction (or of an
        // abort after the coordinator aborted at the timeout): the epoch
        // moved on by one since.
        let retried = p.ongoing.is_none()
            && p.last_ended == Some(req.committed)
            && (p.producer_id, p.producer_epoch)
                == (req.producer_id, req.producer_epoch.saturating_add(1));
        if retried {
            return Ok((p.producer_id, p.producer_epoch));
        }
    }
    let producer =
        state.current_producer(&req.transactional_id, req.producer_id, req.producer_epoch)?;
    // An abort with nothing added yet still bumps the epoch, as in Kafka:
    // it fences the transaction's produce requests still in flight.
    if producer.ongoing.is_none() && req.committed {
        return Err(ErrorCode::INVALID_TXN_STATE);
    }
    let ended = state.end_transaction(&req.transactional_id, req.committed, true);
    if ended.producer_epoch != req.producer_epoch {
        return Ok((ended.producer_id, ended.producer_epoch));
    }
    // The epochs are used up: the next transaction runs under a new id.
    let producer_id = state.allocate_producer_id();
    let producer = state
        .transactional_ids
        .get_mut(&req.transactional_id)
        .expect("ended above");
    producer.producer_id = producer_id;
    producer.producer_epoch = 0;
    producer.previous_epoch = None;
    Ok((producer_id, 0))
}
