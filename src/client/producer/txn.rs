//! Transactions: the life cycle of a transactional producer's
//! transactions ([`TxnState`], no I/O) and the requests that carry it out
//! with the transaction coordinator (InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn) and the group coordinator (TxnOffsetCommit).
//!
//! As in the Java client: partitions join the open transaction when its
//! first batch for them is ready (one AddPartitionsToTxn at a time, later
//! partitions wait and go together); a batch is sent only once its
//! partition is in; commit first delivers every record, then ends the
//! transaction. Where the cluster has finalized `transaction.version` 2
//! (KIP-890), a transaction instead lets the brokers add its partitions
//! (Produce v12) and offsets (TxnOffsetCommit v5) themselves, and each
//! EndTxn (v5) returns the next epoch, so that a late write of an ended
//! transaction is refused. Errors are fatal (the producer was fenced or is not
//! authorised: [`Error::is_fatal`]), abortable (the application aborts and
//! goes on) or retried here until the operation's deadline.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{batch::Failure, Producer, Shared};
use crate::{
    client::group::{
        coordinator::{check, is_coordinator_error, Coordinator},
        ConsumerGroupMetadata, TopicPartition,
    },
    cluster::{Backoff, Cluster},
    connection::BrokerConnection,
    error::{Error, ErrorKind, Result},
    protocol::{
        messages::{
            add_partitions_to_txn_request::AddPartitionsToTxnTopic,
            txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            },
            AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest,
            InitProducerIdRequest, TxnOffsetCommitRequest,
        },
        ApiKey, ErrorCode,
    },
};

/// Where the producer is in its transactions.
#[derive(Debug)]
enum Phase {
    /// `init_transactions` has not succeeded yet.
    Uninitialized,
    /// Between transactions.
    Ready,
    InTransaction,
    /// `commit_transaction` runs, or its EndTxn did not get through in time
    /// (commit again).
    Committing,
    /// `abort_transaction` runs, or did not finish (abort again).
    Aborting,
    /// The open transaction failed: only an abort is possible.
    AbortableError,
    /// The producer is unusable.
    Fatal(Error),
}

/// A transactional producer's state, kept under the producer's lock next
/// to the accumulator.
#[derive(Debug)]
pub(crate) struct TxnState {
    phase: Phase,
    /// An AddPartitionsToTxn is in flight.
    adding: bool,
    /// The coordinator knows the open transaction (partitions or offsets
    /// were added to it): ending it takes an EndTxn.
    started: bool,
    /// Why the open transaction cannot commit, besides failed batches.
    abortable: Option<Error>,
    /// EndTxn(commit) was sent for the open transaction: only a commit can
    /// settle it now.
    commit_sent: bool,
}

impl TxnState {
    pub(crate) fn new() -> Self {
        Self {
            phase: Phase::Uninitialized,
            adding: false,
            started: false,
            abortable: None,
            commit_sent: false,
        }
    }

    /// Whether records may be sent now, and why not.
    pub(crate) fn check_send(&self) -> Result<()> {
        match &self.phase {
            Phase::InTransaction => Ok(()),
            Phase::AbortableError => Err(self.abortable_error()),
            Phase::Fatal(e) => Err(e.duplicate()),
            Phase::Uninitialized => Err(Error::invalid_input(
                "a transactional producer sends only within a transaction: call \
                 init_transactions, then begin_transaction",
            )),
            Phase::Ready => Err(Error::invalid_input(
                "no transaction is open: call begin_transaction first",
            )),
            Phase::Committing | Phase::Aborting => Err(Error::invalid_input(
                "the transaction is being committed or aborted",
            )),
        }
    }

    /// Whether the sender may add partitions to the transaction now.
    pub(crate) fn may_add_partitions(&self) -> bool {
        !self.adding && matches!(self.phase, Phase::InTransaction | Phase::Committing)
    }

    pub(crate) fn set_adding(&mut self) {
        self.adding = true;
    }

    /// Partitions joined the transaction without AddPartitionsToTxn
    /// (transaction version 2): ending it takes an EndTxn.
    pub(crate) fn set_started(&mut self) {
        self.started = true;
    }

    fn abortable_error(&self) -> Error {
        match &self.abortable {
            Some(e) => e.duplicate(),
            None => Error::new(ErrorKind::Kafka(ErrorCode::TRANSACTION_ABORTABLE))
                .with_message("the transaction failed earlier; abort it"),
        }
    }

    /// The open transaction hit `e`: fatal errors end the producer, others
    /// leave only an abort (unless one is running already).
    pub(crate) fn fail(&mut self, e: &Error) {
        if e.is_fatal() {
            if !matches!(self.phase, Phase::Fatal(_)) {
                self.phase = Phase::Fatal(e.duplicate());
            }
            return;
        }
        if self.abortable.is_none() {
            self.abortable = Some(abortable(e));
        }
        if matches!(self.phase, Phase::InTransaction | Phase::Committing) {
            self.phase = Phase::AbortableError;
        }
    }

    /// A record of the open transaction could not be sent at all (too
    /// large, unknown topic, no room): the transaction must not commit
    /// without it.
    pub(crate) fn fail_send(&mut self, e: &Error) {
        if matches!(self.phase, Phase::InTransaction) {
            self.fail(e);
        }
    }

    /// Whether the open transaction can no longer commit: its unsent
    /// batches are failed rather than left waiting.
    pub(crate) fn is_failed(&self) -> bool {
        matches!(self.phase, Phase::AbortableError | Phase::Fatal(_))
    }

    /// The transaction ended: the next one starts afresh.
    fn ended(&mut self) {
        if !matches!(self.phase, Phase::Fatal(_)) {
            self.phase = Phase::Ready;
        }
        self.started = false;
        self.abortable = None;
        self.commit_sent = false;
    }
}

/// An abortable error as the application sees it: errors that look
/// retriable (a timeout, a broken connection) would invite calling commit
/// again, which cannot help once a record of the transaction failed.
fn abortable(e: &Error) -> Error {
    if e.is_retriable() || e.kind() == ErrorKind::Timeout {
        Error::new(ErrorKind::Kafka(ErrorCode::TRANSACTION_ABORTABLE))
            .with_message(format!("the transaction cannot commit, abort it: {e}"))
    } else {
        e.duplicate()
    }
}

/// What a transactional producer keeps besides its state.
#[derive(Debug)]
pub(crate) struct TxnContext {
    id: String,
    coordinator: Coordinator,
    /// Group coordinators of the groups offsets were sent for.
    groups: Mutex<HashMap<String, Arc<Coordinator>>>,
    /// One operation (init, offsets, commit, abort) at a time.
    op: tokio::sync::Mutex<()>,
    /// Signalled when an AddPartitionsToTxn finishes.
    added: Notify,
    /// The transaction coordinator's broker offers transaction version 2,
    /// as of the last connection a coordinator request used.
    v2_offered: AtomicBool,
    /// The open transaction uses transaction version 2 (decided when it
    /// begins, as the Java client does).
    v2: AtomicBool,
}

impl TxnContext {
    pub(crate) fn new(cluster: Cluster, id: String) -> Self {
        Self {
            coordinator: Coordinator::for_transaction(cluster, id.clone()),
            id,
            groups: Mutex::new(HashMap::new()),
            op: tokio::sync::Mutex::new(()),
            added: Notify::new(),
            v2_offered: AtomicBool::new(false),
            v2: AtomicBool::new(false),
        }
    }

    /// Whether the open transaction uses transaction version 2: its
    /// partitions join it with their first produce, without
    /// AddPartitionsToTxn.
    pub(crate) fn uses_v2(&self) -> bool {
        self.v2.load(Ordering::Relaxed)
    }

    /// Notes whether the coordinator's broker (through `conn`) offers
    /// transaction version 2: the cluster has finalized it, and this client
    /// may use the versions that carry it with that broker.
    fn note_coordinator(&self, conn: &BrokerConnection) {
        let at_least = |api, v| conn.version_for(api).is_some_and(|have| have >= v);
        let offered = conn
            .versions()
            .and_then(|t| t.finalized_feature("transaction.version"))
            .is_some_and(|level| level >= 2)
            && at_least(ApiKey::END_TXN, 5)
            && at_least(ApiKey::PRODUCE, 12)
            && at_least(ApiKey::TXN_OFFSET_COMMIT, 5);
        self.v2_offered.store(offered, Ordering::Relaxed);
    }

    fn group_coordinator(&self, group_id: &str) -> Arc<Coordinator> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups
            .entry(group_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Coordinator::new(
                    self.coordinator.cluster().clone(),
                    group_id.to_owned(),
                    None,
                ))
            })
            .clone()
    }
}

fn context(shared: &Shared) -> Result<&TxnContext> {
    shared.txn.as_ref().ok_or_else(|| {
        Error::invalid_input(
            "the producer has no transactional id (ProducerConfig::transactional_id)",
        )
    })
}

/// Runs `f` on the producer's transaction state.
fn with_state<T>(shared: &Shared, f: impl FnOnce(&mut TxnState) -> T) -> T {
    let mut st = shared.lock();
    let txn = st
        .txn
        .as_mut()
        .expect("a transactional producer has a transaction state");
    f(txn)
}

/// The waits before asking again after CONCURRENT_TRANSACTIONS: doubling
/// from the first to the last.
const CONCURRENT_RETRY_MIN: Duration = Duration::from_millis(2);
const CONCURRENT_RETRY_MAX: Duration = Duration::from_millis(20);

/// No cap on the version of an API: the broker's highest.
const MAX_VERSION: i16 = i16::MAX;

/// How long one transaction operation may keep retrying: as the Java
/// client's `max.block.ms` (60 s), or longer if the transaction may be.
fn operation_deadline(shared: &Shared) -> Instant {
    let bound = shared
        .cfg
        .transaction_timeout
        .max(shared.request_timeout)
        .max(Duration::from_secs(60));
    let now = Instant::now();
    now.checked_add(bound)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

pub(super) async fn init(shared: &Shared) -> Result<()> {
    let ctx = context(shared)?;
    let _op = ctx.op.lock().await;
    with_state(shared, |t| match &t.phase {
        Phase::Uninitialized => Ok(()),
        Phase::Fatal(e) => Err(e.duplicate()),
        _ => Err(Error::invalid_input("init_transactions was called already")),
    })?;
    let (producer_id, epoch) = init_producer_id(shared, ctx, None).await.inspect_err(|e| {
        if e.is_fatal() {
            with_state(shared, |t| t.fail(e));
        }
    })?;
    {
        let mut st = shared.lock();
        st.acc.set_producer_id(producer_id, epoch);
        if let Some(t) = st.txn.as_mut() {
            t.phase = Phase::Ready;
        }
    }
    tracing::debug!(transactional_id = %ctx.id, producer_id, epoch, "transactions initialised");
    Ok(())
}

pub(super) fn begin(shared: &Shared) -> Result<()> {
    let ctx = context(shared)?;
    with_state(shared, |t| match &t.phase {
        Phase::Ready => {
            // Nothing of an earlier transaction is in flight: the sender
            // and the produce requests switch with it.
            ctx.v2
                .store(ctx.v2_offered.load(Ordering::Relaxed), Ordering::Relaxed);
            t.phase = Phase::InTransaction;
            Ok(())
        }
        Phase::Fatal(e) => Err(e.duplicate()),
        Phase::Uninitialized => Err(Error::invalid_input("call init_transactions first")),
        _ => Err(Error::invalid_input(
            "a transaction is open already: commit or abort it first",
        )),
    })
}

pub(super) async fn send_offsets(
    shared: &Shared,
    offsets: Vec<(TopicPartition, i64)>,
    group: &ConsumerGroupMetadata,
) -> Result<()> {
    let ctx = context(shared)?;
    if let Some((tp, o)) = offsets.iter().find(|(_, o)| *o < 0) {
        return Err(
            Error::invalid_input(format!("negative offset {o} to commit"))
                .with_topic(&tp.topic)
                .with_partition(tp.partition),
        );
    }
    let _op = ctx.op.lock().await;
    with_state(shared, |t| match &t.phase {
        Phase::InTransaction => Ok(()),
        _ => t.check_send(),
    })?;
    if offsets.is_empty() {
        return Ok(());
    }
    let result = async {
        if !ctx.uses_v2() {
            add_offsets_to_txn(shared, ctx, group.group_id()).await?;
        }
        // Under version 2 the group coordinator adds the offsets on the
        // way; if that fails half way, the abort must still reach the
        // transaction coordinator.
        with_state(shared, |t| t.started = true);
        txn_offset_commit(shared, ctx, &offsets, group).await
    }
    .await;
    if let Err(e) = &result {
        with_state(shared, |t| t.fail(e));
    }
    result
}

pub(super) async fn commit(shared: &Shared, producer: &Producer) -> Result<()> {
    let ctx = context(shared)?;
    let _op = ctx.op.lock().await;
    with_state(shared, |t| match &t.phase {
        Phase::InTransaction | Phase::Committing => {
            t.phase = Phase::Committing;
            Ok(())
        }
        Phase::AbortableError => Err(t.abortable_error()),
        Phase::Fatal(e) => Err(e.duplicate()),
        Phase::Aborting => Err(Error::invalid_input(
            "the transaction is being aborted: call abort_transaction again",
        )),
        Phase::Uninitialized | Phase::Ready => {
            Err(Error::invalid_input("no transaction to commit"))
        }
    })?;
    // Every record of the transaction is acknowledged or failed after this.
    producer.flush().await;
    wait_for_adds(shared, ctx).await;
    let failure = {
        let mut st = shared.lock();
        let st = &mut *st;
        let txn = st.txn.as_ref().and_then(|t| match &t.phase {
            Phase::Fatal(e) => Some(e.duplicate()),
            _ => t.abortable.as_ref().map(Error::duplicate),
        });
        txn.or_else(|| st.acc.txn_failure())
    };
    if let Some(e) = failure {
        with_state(shared, |t| t.fail(&e));
        return Err(if e.is_fatal() { e } else { abortable(&e) });
    }
    let mut next_epoch = None;
    if with_state(shared, |t| t.started) {
        with_state(shared, |t| t.commit_sent = true);
        match end_txn(shared, ctx, true).await {
            Ok(next) => next_epoch = next,
            Err(e) => {
                // A timeout leaves the outcome open: commit again.
                if e.kind() != ErrorKind::Timeout {
                    with_state(shared, |t| t.fail(&e));
                }
                return Err(e);
            }
        }
    }
    {
        let mut st = shared.lock();
        st.acc.end_transaction();
        if let Some((producer_id, epoch)) = next_epoch {
            // Every record was acknowledged: sequences start over.
            st.acc.set_producer_id(producer_id, epoch);
        }
    }
    with_state(shared, TxnState::ended);
    Ok(())
}

pub(super) async fn abort(shared: &Shared) -> Result<()> {
    let ctx = context(shared)?;
    let _op = ctx.op.lock().await;
    let waits = {
        let mut st = shared.lock();
        let st = &mut *st;
        let t = st.txn.as_mut().expect("transactional");
        match &t.phase {
            Phase::InTransaction | Phase::AbortableError | Phase::Aborting => {
                t.phase = Phase::Aborting;
            }
            // A commit that never got to EndTxn (its caller gave up on it).
            Phase::Committing if !t.commit_sent => t.phase = Phase::Aborting,
            Phase::Fatal(e) => return Err(e.duplicate()),
            Phase::Committing => {
                return Err(Error::invalid_input(
                    "the transaction's commit did not finish: call commit_transaction again",
                ))
            }
            Phase::Uninitialized | Phase::Ready => {
                return Err(Error::invalid_input("no transaction to abort"))
            }
        }
        st.acc.begin_abort(Failure::Local {
            kind: ErrorKind::TransactionAborted,
            message: "the record's transaction was aborted".into(),
        });
        st.acc.begin_flush()
    };
    /// Ends the flush begun above even if the caller drops the future.
    struct Flushing<'a>(&'a Shared);
    impl Drop for Flushing<'_> {
        fn drop(&mut self) {
            self.0.lock().acc.end_flush();
        }
    }
    let flushing = Flushing(shared);
    shared.wake.notify_one();
    // Batches in flight come back before the transaction's end is sent.
    for w in waits {
        w.wait().await;
    }
    drop(flushing);
    wait_for_adds(shared, ctx).await;
    // An add that came back meanwhile may have found the producer fenced.
    if let Some(e) = with_state(shared, |t| match &t.phase {
        Phase::Fatal(e) => Some(e.duplicate()),
        _ => None,
    }) {
        return Err(e);
    }
    let mut next_epoch = None;
    if with_state(shared, |t| t.started) {
        next_epoch = end_txn(shared, ctx, false).await.inspect_err(|e| {
            if e.is_fatal() {
                with_state(shared, |t| t.fail(e));
            }
        })?;
        with_state(shared, |t| t.started = false);
    }
    let bump_from = {
        let mut st = shared.lock();
        st.acc.end_transaction();
        if let Some((producer_id, epoch)) = next_epoch {
            // The coordinator bumped the epoch itself (version 2): whatever
            // the sequences' state, they start over under it.
            st.acc.set_producer_id(producer_id, epoch);
        }
        st.acc
            .needs_epoch_bump()
            .then(|| st.acc.producer_id())
            .flatten()
    };
    if let Some(current) = bump_from {
        // Sequences of this epoch cannot go on (a batch's fate is unknown,
        // or the broker lost the producer's state): a new epoch starts them
        // over (KIP-360).
        let (producer_id, epoch) = init_producer_id(shared, ctx, Some(current))
            .await
            .inspect_err(|e| {
                if e.is_fatal() {
                    with_state(shared, |t| t.fail(e));
                }
            })?;
        shared.lock().acc.set_producer_id(producer_id, epoch);
    }
    with_state(shared, TxnState::ended);
    Ok(())
}

/// Waits until no AddPartitionsToTxn is in flight, so that whether the
/// coordinator knows the transaction is settled.
async fn wait_for_adds(shared: &Shared, ctx: &TxnContext) {
    loop {
        let added = ctx.added.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        if !with_state(shared, |t| t.adding) {
            return;
        }
        added.await;
    }
}

/// Adds `partitions` to the open transaction (started by the sender for
/// partitions with batches waiting), then lets their batches go, or fails
/// them.
pub(super) async fn add_partitions(shared: Arc<Shared>, partitions: Vec<(Arc<str>, i32)>) {
    let Some(ctx) = shared.txn.as_ref() else {
        return;
    };
    let result = add_partitions_to_txn(&shared, ctx, &partitions).await;
    {
        let mut st = shared.lock();
        let st = &mut *st;
        if let Some(t) = st.txn.as_mut() {
            t.adding = false;
            match &result {
                Ok(()) => {
                    t.started = true;
                    st.acc.partitions_added(&partitions);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "AddPartitionsToTxn failed");
                    t.fail(e);
                    if e.kind() == ErrorKind::Timeout || e.is_retriable() {
                        // The coordinator may have added the partitions and
                        // so hold a transaction that this producer never
                        // ends with EndTxn: the bump after the abort ends it.
                        st.acc.require_epoch_bump();
                    }
                    let failure = match e.error_code() {
                        Some(code) => Failure::Kafka {
                            code,
                            message: Some(format!(
                                "adding the partition to the transaction failed: {}",
                                e.broker_message().unwrap_or(code.description())
                            )),
                        },
                        None => Failure::Local {
                            kind: e.kind(),
                            message: e.to_string(),
                        },
                    };
                    st.acc.fail_partitions(&partitions, failure);
                }
            }
        }
    }
    ctx.added.notify_waiters();
    shared.wake.notify_one();
}

/// Runs `attempt` on a connection to `coordinator`, at the broker's
/// version of `api` up to `max_version`, until it succeeds, fails with an
/// error that retrying cannot fix, or the operation's deadline passes.
async fn retrying<T, F, Fut>(
    shared: &Shared,
    coordinator: &Coordinator,
    api: ApiKey,
    max_version: i16,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(BrokerConnection, i16) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = operation_deadline(shared);
    let mut backoff = Backoff::new(&shared.cfg.retry_backoff, Some(deadline));
    let mut concurrent_wait = CONCURRENT_RETRY_MIN;
    loop {
        let result = match coordinator.get().await {
            Ok((_, conn)) => match conn.version_for(api) {
                Some(v) => attempt(conn, v.min(max_version)).await,
                None => Err(Error::new(ErrorKind::Unsupported)),
            },
            Err(e) => Err(e),
        };
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e.with_api(api),
        };
        let moved = is_coordinator_error(&e);
        if moved {
            coordinator.invalidate();
        }
        if !(moved || e.is_retriable()) {
            return Err(e);
        }
        tracing::debug!(error = %e, "transaction request failed; retrying");
        if e.error_code() == Some(ErrorCode::CONCURRENT_TRANSACTIONS)
            && Instant::now() + concurrent_wait < deadline
        {
            // The coordinator is still completing the previous transaction,
            // a matter of milliseconds: the general backoff (100 ms and up)
            // would hold up the next transaction's first batches. Retry
            // soon, then less soon up to the Java client's and librdkafka's
            // 20 ms.
            tokio::time::sleep(concurrent_wait).await;
            concurrent_wait = (concurrent_wait * 2).min(CONCURRENT_RETRY_MAX);
            continue;
        }
        if backoff.wait().await.is_err() {
            return Err(Error::new(ErrorKind::Timeout)
                .with_api(api)
                .with_message(format!("gave up retrying; last error: {e}")));
        }
    }
}

fn producer_id_and_epoch(shared: &Shared) -> Result<(i64, i16)> {
    shared
        .lock()
        .acc
        .producer_id()
        .ok_or_else(|| Error::invalid_input("call init_transactions first"))
}

/// InitProducerId with the transactional id: a new epoch (fencing older
/// producers with the id), or a bump from `current` after an abort.
async fn init_producer_id(
    shared: &Shared,
    ctx: &TxnContext,
    current: Option<(i64, i16)>,
) -> Result<(i64, i16)> {
    let api = ApiKey::INIT_PRODUCER_ID;
    let timeout_ms = i32::try_from(shared.cfg.transaction_timeout.as_millis()).unwrap_or(i32::MAX);
    retrying(
        shared,
        &ctx.coordinator,
        api,
        MAX_VERSION,
        |conn, version| async move {
            // Versions before 3 cannot name the epoch to bump; the
            // coordinator bumps it all the same.
            let (producer_id, producer_epoch) = match current {
                Some(c) if version >= 3 => c,
                _ => (-1, -1),
            };
            let req = InitProducerIdRequest {
                transactional_id: Some(ctx.id.clone()),
                transaction_timeout_ms: timeout_ms,
                producer_id,
                producer_epoch,
                ..Default::default()
            };
            ctx.note_coordinator(&conn);
            let resp = conn.request_version(&req, version).await?;
            check(resp.error_code, None, api)?;
            Ok((resp.producer_id, resp.producer_epoch))
        },
    )
    .await
}

async fn add_partitions_to_txn(
    shared: &Shared,
    ctx: &TxnContext,
    partitions: &[(Arc<str>, i32)],
) -> Result<()> {
    let api = ApiKey::ADD_PARTITIONS_TO_TXN;
    let (producer_id, epoch) = producer_id_and_epoch(shared)?;
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
    let topics = &topics;
    retrying(
        shared,
        &ctx.coordinator,
        api,
        // Versions 4 and later are for brokers verifying transactions.
        3,
        |conn, version| async move {
            let req = AddPartitionsToTxnRequest {
                v3_and_below_transactional_id: ctx.id.clone(),
                v3_and_below_producer_id: producer_id,
                v3_and_below_producer_epoch: epoch,
                v3_and_below_topics: topics.clone(),
                ..Default::default()
            };
            let resp = conn.request_version(&req, version).await?;
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
        },
    )
    .await
}

async fn add_offsets_to_txn(shared: &Shared, ctx: &TxnContext, group_id: &str) -> Result<()> {
    let api = ApiKey::ADD_OFFSETS_TO_TXN;
    let (producer_id, epoch) = producer_id_and_epoch(shared)?;
    retrying(
        shared,
        &ctx.coordinator,
        api,
        MAX_VERSION,
        |conn, version| async move {
            let req = AddOffsetsToTxnRequest {
                transactional_id: ctx.id.clone(),
                producer_id,
                producer_epoch: epoch,
                group_id: group_id.to_owned(),
                ..Default::default()
            };
            let resp = conn.request_version(&req, version).await?;
            check(resp.error_code, None, api)
        },
    )
    .await
}

/// TxnOffsetCommit to the group's coordinator, with the member's
/// generation so that a member that lost its partitions is refused
/// (KIP-447).
async fn txn_offset_commit(
    shared: &Shared,
    ctx: &TxnContext,
    offsets: &[(TopicPartition, i64)],
    group: &ConsumerGroupMetadata,
) -> Result<()> {
    let api = ApiKey::TXN_OFFSET_COMMIT;
    let (producer_id, epoch) = producer_id_and_epoch(shared)?;
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
    let topics = &topics;
    let coordinator = ctx.group_coordinator(group.group_id());
    retrying(
        shared,
        &coordinator,
        api,
        // Version 5 asks the group coordinator to add the offsets to the
        // transaction.
        if ctx.uses_v2() { MAX_VERSION } else { 4 },
        |conn, version| async move {
            if ctx.uses_v2() && version < 5 {
                // The group coordinator would not add the offsets to the
                // transaction, and no AddOffsetsToTxn was sent.
                return Err(Error::new(ErrorKind::Unsupported)
                    .with_api(api)
                    .with_message(
                        "the transaction uses transaction version 2, which the group \
                         coordinator's TxnOffsetCommit does not carry",
                    ));
            }
            if version < 3 && group.generation_id() >= 0 {
                // Without the member's generation the coordinator could not
                // refuse a zombie's commit.
                return Err(Error::new(ErrorKind::Unsupported)
                    .with_api(api)
                    .with_message(
                    "the broker's TxnOffsetCommit cannot check the member's generation (KIP-447)",
                ));
            }
            let req = TxnOffsetCommitRequest {
                transactional_id: ctx.id.clone(),
                group_id: group.group_id().to_owned(),
                producer_id,
                producer_epoch: epoch,
                generation_id: group.generation_id(),
                member_id: group.member_id().to_owned(),
                group_instance_id: group.group_instance_id().map(str::to_owned),
                topics: topics.clone(),
                ..Default::default()
            };
            let resp = conn.request_version(&req, version).await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    check(p.error_code, None, api)
                        .map_err(|e| e.with_topic(&t.name).with_partition(p.partition_index))?;
                }
            }
            Ok(())
        },
    )
    .await
}

/// EndTxn: commits or aborts the open transaction. Under transaction
/// version 2 the coordinator answers with the producer id and epoch for the
/// next transaction.
async fn end_txn(shared: &Shared, ctx: &TxnContext, commit: bool) -> Result<Option<(i64, i16)>> {
    let api = ApiKey::END_TXN;
    let (producer_id, epoch) = producer_id_and_epoch(shared)?;
    retrying(
        shared,
        &ctx.coordinator,
        api,
        // Version 5 bumps the epoch: only for a transaction whose
        // partitions the brokers added.
        if ctx.uses_v2() { MAX_VERSION } else { 4 },
        |conn, version| async move {
            ctx.note_coordinator(&conn);
            let req = EndTxnRequest {
                transactional_id: ctx.id.clone(),
                producer_id,
                producer_epoch: epoch,
                committed: commit,
                ..Default::default()
            };
            let resp = conn.request_version(&req, version).await?;
            check(resp.error_code, None, api)?;
            Ok((resp.producer_id >= 0 && resp.producer_epoch >= 0)
                .then_some((resp.producer_id, resp.producer_epoch)))
        },
    )
    .await
}
