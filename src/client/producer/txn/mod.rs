//! Transactions: a transactional producer's requests to the transaction
//! coordinator (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn) and the group coordinator (TxnOffsetCommit), carrying out what
//! the life cycle in `state.rs` ([`TxnState`]) allows and what
//! `requests.rs` makes of each answer. Nothing here decides: it asks,
//! sends, waits and reports back.
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

mod requests;
mod state;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::{sync::Notify, time::Instant};

pub(crate) use self::{
    requests::{
        init_producer_id as init_producer_id_request, produce_version, producer_id_granted,
    },
    state::TxnState,
};
use self::{
    requests::{ConcurrentRetry, Next},
    state::PartitionsAdded,
};
use super::{batch::Failure, Producer, Shared};
use crate::{
    client::group::{coordinator::Coordinator, ConsumerGroupMetadata, TopicPartition},
    cluster::{Backoff, Cluster},
    connection::BrokerConnection,
    error::{Error, ErrorKind, Result},
    protocol::{ApiKey, Request},
};

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
}

impl TxnContext {
    pub(crate) fn new(cluster: Cluster, id: String) -> Self {
        Self {
            coordinator: Coordinator::for_transaction(cluster, id.clone()),
            id,
            groups: Mutex::new(HashMap::new()),
            op: tokio::sync::Mutex::new(()),
            added: Notify::new(),
        }
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

/// Tells the state what the coordinator's broker (through `conn`) offers.
fn note_coordinator(shared: &Shared, conn: &BrokerConnection) {
    let offered = requests::offers_v2(
        conn.versions()
            .and_then(|t| t.finalized_feature("transaction.version")),
        |api| conn.version_for(api),
    );
    with_state(shared, |t| t.coordinator_offers_v2(offered));
}

pub(super) async fn init(shared: &Shared) -> Result<()> {
    let ctx = context(shared)?;
    let _op = ctx.op.lock().await;
    with_state(shared, |t| t.check_init())?;
    let (producer_id, epoch) = init_producer_id(shared, ctx, None)
        .await
        .inspect_err(|e| with_state(shared, |t| t.fail_if_fatal(e)))?;
    {
        let mut st = shared.lock();
        st.acc.set_producer_id(producer_id, epoch);
        if let Some(t) = st.txn.as_mut() {
            t.initialized();
        }
    }
    tracing::debug!(transactional_id = %ctx.id, producer_id, epoch, "transactions initialised");
    Ok(())
}

pub(super) fn begin(shared: &Shared) -> Result<()> {
    context(shared)?;
    with_state(shared, TxnState::begin)
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
    with_state(shared, |t| t.check_send())?;
    if offsets.is_empty() {
        return Ok(());
    }
    let v2 = with_state(shared, |t| t.uses_v2());
    let result = async {
        if !v2 {
            add_offsets_to_txn(shared, ctx, group.group_id()).await?;
        }
        with_state(shared, TxnState::sending_offsets);
        txn_offset_commit(shared, ctx, v2, &offsets, group).await
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
    with_state(shared, TxnState::start_commit)?;
    // Every record of the transaction is acknowledged or failed after this.
    producer.flush().await;
    wait_for_adds(shared, ctx).await;
    {
        let mut st = shared.lock();
        let st = &mut *st;
        let batch_failure = st.acc.txn_failure();
        if let Some(t) = st.txn.as_mut() {
            t.check_commit(batch_failure)?;
        }
    }
    let mut next_epoch = None;
    if with_state(shared, TxnState::sending_commit) {
        let v2 = with_state(shared, |t| t.uses_v2());
        next_epoch = end_txn(shared, ctx, v2, true)
            .await
            .inspect_err(|e| with_state(shared, |t| t.commit_failed(e)))?;
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
        st.txn
            .as_mut()
            .expect("a transactional producer has a transaction state")
            .start_abort()?;
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
    with_state(shared, |t| t.check_abort())?;
    let mut next_epoch = None;
    if with_state(shared, |t| t.abort_needs_end_txn()) {
        let v2 = with_state(shared, |t| t.uses_v2());
        next_epoch = end_txn(shared, ctx, v2, false)
            .await
            .inspect_err(|e| with_state(shared, |t| t.fail_if_fatal(e)))?;
        with_state(shared, TxnState::abort_sent);
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
            .inspect_err(|e| with_state(shared, |t| t.fail_if_fatal(e)))?;
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
        if !with_state(shared, |t| t.is_adding()) {
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
    if let Err(e) = &result {
        tracing::debug!(error = %e, "AddPartitionsToTxn failed");
    }
    {
        let mut st = shared.lock();
        let st = &mut *st;
        if let Some(t) = st.txn.as_mut() {
            match t.handle_partitions_added(&result) {
                PartitionsAdded::Added => st.acc.partitions_added(&partitions),
                PartitionsAdded::Failed {
                    failure,
                    bump_epoch,
                } => {
                    if bump_epoch {
                        st.acc.require_epoch_bump();
                    }
                    st.acc.fail_partitions(&partitions, failure);
                }
            }
        }
    }
    ctx.added.notify_waiters();
    shared.wake.notify_one();
}

/// Runs `attempt` on a connection to `coordinator` with the broker's
/// version of `api` until [`requests::classify`] says it is done or cannot
/// be retried, or the operation's deadline passes. An attempt fails with
/// `Err` before it has a response (no connection, no version to send at);
/// with a response it says what to do next.
async fn retrying<T, F, Fut>(
    shared: &Shared,
    coordinator: &Coordinator,
    api: ApiKey,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(BrokerConnection, i16) -> Fut,
    Fut: Future<Output = Result<Next<T>>>,
{
    let deadline = requests::operation_deadline(
        Instant::now(),
        shared.cfg.transaction_timeout,
        shared.request_timeout,
    );
    let mut backoff = Backoff::new(&shared.cfg.retry_backoff, Some(deadline));
    let mut concurrent = ConcurrentRetry::new();
    loop {
        let result = match coordinator.get().await {
            Ok((_, conn)) => match conn.version_for(api) {
                Some(v) => attempt(conn, v).await,
                None => Err(Error::new(ErrorKind::Unsupported)),
            },
            Err(e) => Err(e),
        };
        let next = match result {
            Ok(next) => next,
            Err(e) => requests::classify(Err(e.with_api(api))),
        };
        let e = match next {
            Next::Done(v) => return Ok(v),
            Next::Abortable(e) | Next::Fatal(e) => return Err(e),
            Next::FindCoordinator(e) => {
                coordinator.invalidate();
                e
            }
            Next::RetrySoon(e) => match concurrent.next_wait(Instant::now(), deadline) {
                Some(wait) => {
                    tracing::debug!(error = %e, "transaction request failed; retrying soon");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                None => e,
            },
            Next::Retry(e) => e,
        };
        tracing::debug!(error = %e, "transaction request failed; retrying");
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
    retrying(
        shared,
        &ctx.coordinator,
        ApiKey::INIT_PRODUCER_ID,
        |conn, version| async move {
            let req = requests::init_producer_id(
                Some(&ctx.id),
                shared.cfg.transaction_timeout,
                current,
                version,
            );
            note_coordinator(shared, &conn);
            let resp = conn.request_version(&req, version).await?;
            Ok(requests::handle_init_producer_id(&resp))
        },
    )
    .await
}

/// Sends `req` to `coordinator` (see [`retrying`]) at the version
/// `version` picks from the connection and the broker's version, and
/// `handle`s each answer.
async fn ask<R, T>(
    shared: &Shared,
    coordinator: &Coordinator,
    req: &R,
    version: impl Fn(&BrokerConnection, i16) -> Result<i16>,
    handle: impl Fn(&R::Response) -> Next<T>,
) -> Result<T>
where
    R: Request + Sync,
{
    let (version, handle) = (&version, &handle);
    retrying(
        shared,
        coordinator,
        R::API_KEY,
        |conn, broker_version| async move {
            let version = version(&conn, broker_version)?;
            let resp = conn.request_version(req, version).await?;
            Ok(handle(&resp))
        },
    )
    .await
}

async fn add_partitions_to_txn(
    shared: &Shared,
    ctx: &TxnContext,
    partitions: &[(Arc<str>, i32)],
) -> Result<()> {
    let req = requests::add_partitions_to_txn(&ctx.id, producer_id_and_epoch(shared)?, partitions);
    ask(
        shared,
        &ctx.coordinator,
        &req,
        |_, version| Ok(version.min(requests::ADD_PARTITIONS_MAX_VERSION)),
        requests::handle_add_partitions_to_txn,
    )
    .await
}

async fn add_offsets_to_txn(shared: &Shared, ctx: &TxnContext, group_id: &str) -> Result<()> {
    let req = requests::add_offsets_to_txn(&ctx.id, producer_id_and_epoch(shared)?, group_id);
    ask(
        shared,
        &ctx.coordinator,
        &req,
        |_, version| Ok(version),
        requests::handle_add_offsets_to_txn,
    )
    .await
}

/// TxnOffsetCommit to the group's coordinator, with the member's
/// generation so that a member that lost its partitions is refused
/// (KIP-447).
async fn txn_offset_commit(
    shared: &Shared,
    ctx: &TxnContext,
    v2: bool,
    offsets: &[(TopicPartition, i64)],
    group: &ConsumerGroupMetadata,
) -> Result<()> {
    let req = requests::txn_offset_commit(&ctx.id, producer_id_and_epoch(shared)?, offsets, group);
    ask(
        shared,
        &ctx.group_coordinator(group.group_id()),
        &req,
        |_, version| requests::txn_offset_commit_version(v2, version, group.generation_id()),
        requests::handle_txn_offset_commit,
    )
    .await
}

/// EndTxn: commits or aborts the open transaction (of transaction version
/// 2 if `v2`); under version 2 the coordinator answers with the producer id
/// and epoch for the next transaction.
async fn end_txn(
    shared: &Shared,
    ctx: &TxnContext,
    v2: bool,
    commit: bool,
) -> Result<Option<(i64, i16)>> {
    let req = requests::end_txn(&ctx.id, producer_id_and_epoch(shared)?, commit);
    ask(
        shared,
        &ctx.coordinator,
        &req,
        |conn, version| {
            note_coordinator(shared, conn);
            Ok(requests::end_txn_version(v2, version))
        },
        requests::handle_end_txn,
    )
    .await
}
