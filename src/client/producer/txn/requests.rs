//! The coordinator requests of a transactional producer, without I/O: the
//! version of each API to use, the request bodies, what each response
//! means, and what to do after each attempt ([`Next`]): done, retry after
//! the backoff, retry soon (CONCURRENT_TRANSACTIONS), look the coordinator
//! up again, or give up with an abortable or a fatal error. `mod.rs` sends
//! and waits as told.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    client::group::{
        coordinator::{check, is_coordinator_error},
        ConsumerGroupMetadata, TopicPartition,
    },
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{
            add_partitions_to_txn_request::AddPartitionsToTxnTopic,
            txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            },
            AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
            AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
            InitProducerIdResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
        },
        ApiKey, ErrorCode,
    },
};

/// What to do after an attempt of a coordinator request.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// It succeeded.
    Done(T),
    /// Try again after the operation's backoff.
    Retry(Error),
    /// The coordinator is still completing the previous transaction, a
    /// matter of milliseconds: try again soon ([`ConcurrentRetry`]).
    RetrySoon(Error),
    /// The coordinator moved or is unreachable: look it up again, then
    /// retry after the backoff.
    FindCoordinator(Error),
    /// Retrying cannot help, but the producer goes on (the open
    /// transaction, if the error concerns it, can only abort).
    Abortable(Error),
    /// The producer is unusable (fenced, not authorised): see
    /// [`Error::is_fatal`].
    Fatal(Error),
}

/// What to do after an attempt that produced `result`.
pub(crate) fn classify<T>(result: Result<T>) -> Next<T> {
    let e = match result {
        Ok(v) => return Next::Done(v),
        Err(e) => e,
    };
    if is_coordinator_error(&e) {
        Next::FindCoordinator(e)
    } else if !e.is_retriable() {
        if e.is_fatal() {
            Next::Fatal(e)
        } else {
            Next::Abortable(e)
        }
    } else if e.error_code() == Some(ErrorCode::CONCURRENT_TRANSACTIONS) {
        Next::RetrySoon(e)
    } else {
        Next::Retry(e)
    }
}

/// The waits before asking again after CONCURRENT_TRANSACTIONS: doubling
/// from the first to the last.
pub(crate) const CONCURRENT_RETRY_MIN: Duration = Duration::from_millis(2);
pub(crate) const CONCURRENT_RETRY_MAX: Duration = Duration::from_millis(20);

/// The schedule of [`Next::RetrySoon`] within one operation: the general
/// backoff (100 ms and up) would hold up the next transaction's first
/// batches, so retry soon, then less soon up to the Java client's and
/// librdkafka's 20 ms.
#[derive(Debug)]
pub(crate) struct ConcurrentRetry {
    wait: Duration,
}

impl ConcurrentRetry {
    pub(crate) fn new() -> Self {
        Self {
            wait: CONCURRENT_RETRY_MIN,
        }
    }

    /// How long to wait before the next attempt, or `None` if that wait
    /// would reach the operation's `deadline` (then the backoff decides).
    pub(crate) fn next_wait(&mut self, now: Instant, deadline: Instant) -> Option<Duration> {
        let wait = self.wait;
        if now + wait >= deadline {
            return None;
        }
        self.wait = (wait * 2).min(CONCURRENT_RETRY_MAX);
        Some(wait)
    }
}

/// How long one transaction operation may keep retrying: as the Java
/// client's `max.block.ms` (60 s), or longer if the transaction may be.
pub(crate) fn operation_deadline(
    now: Instant,
    transaction_timeout: Duration,
    request_timeout: Duration,
) -> Instant {
    let bound = transaction_timeout
        .max(request_timeout)
        .max(Duration::from_secs(60));
    now.checked_add(bound)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// Whether a broker offers transaction version 2: the cluster finalized
/// `transaction.version` at `finalized_level` 2 or higher, and this client
/// may use the versions that carry it with that broker (`version_for`).
pub(crate) fn offers_v2(
    finalized_level: Option<i16>,
    version_for: impl Fn(ApiKey) -> Option<i16>,
) -> bool {
    let at_least = |api, v| version_for(api).is_some_and(|have| have >= v);
    finalized_level.is_some_and(|level| level >= 2)
        && at_least(ApiKey::END_TXN, END_TXN_TXN_V2_FROM)
        && at_least(ApiKey::PRODUCE, PRODUCE_TXN_V2_FROM)
        && at_least(ApiKey::TXN_OFFSET_COMMIT, TXN_OFFSET_COMMIT_TXN_V2_FROM)
}

/// The first Produce, TxnOffsetCommit and EndTxn versions with transaction
/// version 2's meaning (the broker adds the partition or offsets to the
/// transaction; EndTxn bumps the epoch).
const PRODUCE_TXN_V2_FROM: i16 = 12;
const TXN_OFFSET_COMMIT_TXN_V2_FROM: i16 = 5;
const END_TXN_TXN_V2_FROM: i16 = 5;

/// The Produce version to send at, given the broker's: version 12 asks the
/// broker to add the partition to the producer's transaction, which only a
/// transaction of transaction version 2 (`v2`) wants and needs.
pub(crate) fn produce_version(v2: bool, broker_version: i16) -> Result<i16> {
    if !v2 {
        return Ok(broker_version.min(PRODUCE_TXN_V2_FROM - 1));
    }
    if broker_version < PRODUCE_TXN_V2_FROM {
        // This broker would not add the partition to the transaction.
        return Err(Error::new(ErrorKind::Unsupported)
            .with_api(ApiKey::PRODUCE)
            .with_message(format!(
                "the transaction uses transaction version 2, which this broker's Produce \
                 v{broker_version} does not carry"
            )));
    }
    Ok(broker_version)
}

/// InitProducerId: with a transactional id a new epoch (fencing older
/// producers with the id), without one (an idempotent producer) a new
/// producer id; or a bump from `current`.
pub(crate) fn init_producer_id(
    transactional_id: Option<&str>,
    transaction_timeout: Duration,
    current: Option<(i64, i16)>,
    version: i16,
) -> InitProducerIdRequest {
    // Versions before 3 cannot name the epoch to bump: a transaction
    // coordinator bumps it all the same, other brokers hand out a fresh id,
    // which resets sequences just the same.
    let (producer_id, producer_epoch) = match current {
        Some(c) if version >= 3 => c,
        _ => (-1, -1),
    };
    InitProducerIdRequest {
        transactional_id: transactional_id.map(str::to_owned),
        transaction_timeout_ms: i32::try_from(transaction_timeout.as_millis()).unwrap_or(i32::MAX),
        producer_id,
        producer_epoch,
        ..Default::default()
    }
}

/// The new producer id and epoch, or the error the broker answered.
pub(crate) fn producer_id_granted(resp: &InitProducerIdResponse) -> Result<(i64, i16)> {
    check(resp.error_code, None, ApiKey::INIT_PRODUCER_ID)
        .map(|()| (resp.producer_id, resp.producer_epoch))
}

/// The new producer id and epoch of a transactional producer.
pub(crate) fn handle_init_producer_id(resp: &InitProducerIdResponse) -> Next<(i64, i16)> {
    classify(producer_id_granted(resp))
}

/// AddPartitionsToTxn at versions up to this: later ones are for brokers
/// verifying transactions.
pub(crate) const ADD_PARTITIONS_MAX_VERSION: i16 = 3;

pub(crate) fn add_partitions_to_txn(
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    partitions: &[(Arc<str>, i32)],
) -> AddPartitionsToTxnRequest {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| *t.name == **topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(AddPartitionsToTxnTopic {
                name: topic.to_string(),
                partitions: vec![*partition],
                ..Default::default()
            }),
        }
    }
    AddPartitionsToTxnRequest {
        v3_and_below_transactional_id: transactional_id.to_owned(),
        v3_and_below_producer_id: producer_id,
        v3_and_below_producer_epoch: epoch,
        v3_and_below_topics: topics,
        ..Default::default()
    }
}

pub(crate) fn handle_add_partitions_to_txn(resp: &AddPartitionsToTxnResponse) -> Next<()> {
    classify(partitions_added(resp))
}

fn partitions_added(resp: &AddPartitionsToTxnResponse) -> Result<()> {
    let api = ApiKey::ADD_PARTITIONS_TO_TXN;
    check(resp.error_code, None, api)?;
    // The partitions not attempted because of another's error say
    // nothing; the other's error decides.
    for t in &resp.results_by_topic_v3_and_below {
        for p in &t.results_by_partition {
            let code = ErrorCode(p.partition_error_code);
            if code != ErrorCode::OPERATION_NOT_ATTEMPTED {
                check(p.partition_error_code, None, api)
                    .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn add_offsets_to_txn(
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    group_id: &str,
) -> AddOffsetsToTxnRequest {
    AddOffsetsToTxnRequest {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        producer_epoch: epoch,
        group_id: group_id.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn handle_add_offsets_to_txn(resp: &AddOffsetsToTxnResponse) -> Next<()> {
    classify(check(resp.error_code, None, ApiKey::ADD_OFFSETS_TO_TXN))
}

/// The TxnOffsetCommit version to send at, given the broker's: version 5
/// asks the group coordinator to add the offsets to a transaction of
/// transaction version 2 (`v2`; without it no AddOffsetsToTxn was sent),
/// and from version 3 the member's generation lets the coordinator refuse
/// a zombie's commit (KIP-447).
pub(crate) fn txn_offset_commit_version(
    v2: bool,
    broker_version: i16,
    generation_id: i32,
) -> Result<i16> {
    let api = ApiKey::TXN_OFFSET_COMMIT;
    let version = if v2 {
        broker_version
    } else {
        broker_version.min(TXN_OFFSET_COMMIT_TXN_V2_FROM - 1)
    };
    if v2 && version < TXN_OFFSET_COMMIT_TXN_V2_FROM {
        return Err(Error::new(ErrorKind::Unsupported)
            .with_api(api)
            .with_message(
                "the transaction uses transaction version 2, which the group \
                 coordinator's TxnOffsetCommit does not carry",
            ));
    }
    if version < 3 && generation_id >= 0 {
        return Err(Error::new(ErrorKind::Unsupported)
            .with_api(api)
            .with_message(
                "the broker's TxnOffsetCommit cannot check the member's generation (KIP-447)",
            ));
    }
    Ok(version)
}

/// TxnOffsetCommit to the group's coordinator, with the member's
/// generation.
pub(crate) fn txn_offset_commit(
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    offsets: &[(TopicPartition, i64)],
    group: &ConsumerGroupMetadata,
) -> TxnOffsetCommitRequest {
    let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
    for (tp, offset) in offsets {
        let partition = TxnOffsetCommitRequestPartition {
            partition_index: tp.partition,
            committed_offset: *offset,
            committed_leader_epoch: -1,
            committed_metadata: Some(String::new()),
            ..Default::default()
        };
        match topics.iter_mut().find(|t| *t.name == *tp.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(TxnOffsetCommitRequestTopic {
                name: tp.topic.to_string(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    TxnOffsetCommitRequest {
        transactional_id: transactional_id.to_owned(),
        group_id: group.group_id().to_owned(),
        producer_id,
        producer_epoch: epoch,
        generation_id: group.generation_id(),
        member_id: group.member_id().to_owned(),
        group_instance_id: group.group_instance_id().map(str::to_owned),
        topics,
        ..Default::default()
    }
}

pub(crate) fn handle_txn_offset_commit(resp: &TxnOffsetCommitResponse) -> Next<()> {
    classify(offsets_committed(resp))
}

fn offsets_committed(resp: &TxnOffsetCommitResponse) -> Result<()> {
    for t in &resp.topics {
        for p in &t.partitions {
            check(p.error_code, None, ApiKey::TXN_OFFSET_COMMIT)
                .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
        }
    }
    Ok(())
}

/// The EndTxn version to send at, given the broker's: version 5 bumps the
/// epoch, only for a transaction whose partitions the brokers added
/// (`v2`).
pub(crate) fn end_txn_version(v2: bool, broker_version: i16) -> i16 {
    if v2 {
        broker_version
    } else {
        broker_version.min(END_TXN_TXN_V2_FROM - 1)
    }
}

pub(crate) fn end_txn(
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    commit: bool,
) -> EndTxnRequest {
    EndTxnRequest {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        producer_epoch: epoch,
        committed: commit,
        ..Default::default()
    }
}

/// Under transaction version 2 the coordinator answers with the producer
/// id and epoch for the next transaction.
pub(crate) fn handle_end_txn(resp: &EndTxnResponse) -> Next<Option<(i64, i16)>> {
    classify(check(resp.error_code, None, ApiKey::END_TXN).map(|()| {
        (resp.producer_id >= 0 && resp.producer_epoch >= 0)
            .then_some((resp.producer_id, resp.producer_epoch))
    }))
}
