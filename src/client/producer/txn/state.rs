//! A transactional producer's life cycle, without I/O: which operation the
//! application may start in which phase, what each outcome of a request to
//! the coordinators does to the transaction (it goes on, it can only abort,
//! the producer is unusable), and whether the open transaction uses
//! transaction version 2. `mod.rs` asks before each step and reports each
//! outcome; it never looks at the phase itself.

use super::super::batch::Failure;
use crate::{
    error::{Error, ErrorKind, Result},
    protocol::ErrorCode,
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
    /// The transaction coordinator's broker offers transaction version 2,
    /// as of the last connection a coordinator request used.
    v2_offered: bool,
    /// The open transaction uses transaction version 2 (decided when it
    /// begins, as the Java client does).
    v2: bool,
}

/// What became of an AddPartitionsToTxn.
#[derive(Debug)]
pub(crate) enum PartitionsAdded {
    /// The partitions' batches may be sent.
    Added,
    /// The partitions' batches fail with `failure`.
    Failed {
        failure: Failure,
        /// The coordinator may hold the partitions in a transaction this
        /// producer never ends with EndTxn: only an epoch bump (after the
        /// abort) ends it.
        bump_epoch: bool,
    },
}

impl TxnState {
    pub(crate) fn new() -> Self {
        Self {
            phase: Phase::Uninitialized,
            adding: false,
            started: false,
            abortable: None,
            commit_sent: false,
            v2_offered: false,
            v2: false,
        }
    }

    /// Whether `init_transactions` may run.
    pub(crate) fn check_init(&self) -> Result<()> {
        match &self.phase {
            Phase::Uninitialized => Ok(()),
            Phase::Fatal(e) => Err(e.duplicate()),
            _ => Err(Error::invalid_input("init_transactions was called already")),
        }
    }

    /// The producer has its id and epoch: transactions may begin.
    pub(crate) fn initialized(&mut self) {
        self.phase = Phase::Ready;
    }

    /// Opens a transaction. Whether it uses transaction version 2 is
    /// decided now, while nothing of an earlier transaction is in flight:
    /// the sender and the produce requests switch with it.
    pub(crate) fn begin(&mut self) -> Result<()> {
        match &self.phase {
            Phase::Ready => {
                self.v2 = self.v2_offered;
                self.phase = Phase::InTransaction;
                Ok(())
            }
            Phase::Fatal(e) => Err(e.duplicate()),
            Phase::Uninitialized => Err(Error::invalid_input("call init_transactions first")),
            _ => Err(Error::invalid_input(
                "a transaction is open already: commit or abort it first",
            )),
        }
    }

    /// Whether records (or offsets) may be sent now, and why not.
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

    /// Offsets are about to go to the coordinators. Under version 2 the
    /// group coordinator adds them to the transaction on the way; if that
    /// fails half way, the abort must still reach the transaction
    /// coordinator, so the transaction counts as started either way.
    pub(crate) fn sending_offsets(&mut self) {
        self.started = true;
    }

    /// Starts (or resumes) `commit_transaction`.
    pub(crate) fn start_commit(&mut self) -> Result<()> {
        match &self.phase {
            Phase::InTransaction | Phase::Committing => {
                self.phase = Phase::Committing;
                Ok(())
            }
            Phase::AbortableError => Err(self.abortable_error()),
            Phase::Fatal(e) => Err(e.duplicate()),
            Phase::Aborting => Err(Error::invalid_input(
                "the transaction is being aborted: call abort_transaction again",
            )),
            Phase::Uninitialized | Phase::Ready => {
                Err(Error::invalid_input("no transaction to commit"))
            }
        }
    }

    /// Every record of the committing transaction is acknowledged or
    /// failed (`batch_failure`, the first failure): whether it may commit.
    pub(crate) fn check_commit(&mut self, batch_failure: Option<Error>) -> Result<()> {
        let failure = match &self.phase {
            Phase::Fatal(e) => Some(e.duplicate()),
            _ => self.abortable.as_ref().map(Error::duplicate),
        }
        .or(batch_failure);
        match failure {
            None => Ok(()),
            Some(e) => {
                self.fail(&e);
                Err(if e.is_fatal() { e } else { abortable(&e) })
            }
        }
    }

    /// Whether the commit takes an EndTxn (the coordinator knows the
    /// transaction); if so, it is about to be sent and only a commit can
    /// settle the transaction from now on.
    pub(crate) fn sending_commit(&mut self) -> bool {
        if self.started {
            self.commit_sent = true;
        }
        self.started
    }

    /// EndTxn(commit) failed with `e`. A timeout leaves the outcome open:
    /// the application commits again.
    pub(crate) fn commit_failed(&mut self, e: &Error) {
        if e.kind() != ErrorKind::Timeout {
            self.fail(e);
        }
    }

    /// Starts (or resumes) `abort_transaction`.
    pub(crate) fn start_abort(&mut self) -> Result<()> {
        match &self.phase {
            Phase::InTransaction | Phase::AbortableError | Phase::Aborting => {
                self.phase = Phase::Aborting;
            }
            // A commit that never got to EndTxn (its caller gave up on it).
            Phase::Committing if !self.commit_sent => self.phase = Phase::Aborting,
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
        Ok(())
    }

    /// Whether the abort may go on to the coordinator: an add that came
    /// back while it waited may have found the producer fenced.
    pub(crate) fn check_abort(&self) -> Result<()> {
        match &self.phase {
            Phase::Fatal(e) => Err(e.duplicate()),
            _ => Ok(()),
        }
    }

    /// Whether the abort takes an EndTxn (the coordinator knows the
    /// transaction).
    pub(crate) fn abort_needs_end_txn(&self) -> bool {
        self.started
    }

    /// EndTxn(abort) succeeded: an abort resumed after a failed epoch bump
    /// does not send it again.
    pub(crate) fn abort_sent(&mut self) {
        self.started = false;
    }

    /// The transaction ended: the next one starts afresh.
    pub(crate) fn ended(&mut self) {
        if !matches!(self.phase, Phase::Fatal(_)) {
            self.phase = Phase::Ready;
        }
        self.started = false;
        self.abortable = None;
        self.commit_sent = false;
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

    /// An operation outside the open transaction's records (init, the
    /// abort's EndTxn, an epoch bump) failed with `e`: only a fatal error
    /// changes the state; the application may try the operation again.
    pub(crate) fn fail_if_fatal(&mut self, e: &Error) {
        if e.is_fatal() {
            self.fail(e);
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

    /// Whether the sender must fail the transaction's unsent batches now,
    /// and with what. A transaction that can no longer commit (a record
    /// failed in a way that needs an epoch bump, the producer was fenced,
    /// an add failed) sends nothing more: its waiting batches would wait
    /// for partitions or an epoch that will not come before the abort.
    /// `batch_failure` is asked only when an epoch bump is required.
    pub(crate) fn unsent_failure(
        &mut self,
        epoch_bump_required: bool,
        batch_failure: impl FnOnce() -> Option<Error>,
    ) -> Option<Failure> {
        if !self.is_failed() && epoch_bump_required {
            if let Some(e) = batch_failure() {
                self.fail(&e);
            }
        }
        self.is_failed().then(|| Failure::Local {
            kind: ErrorKind::TransactionAborted,
            message: "the transaction failed earlier and cannot commit: abort it".into(),
        })
    }

    /// Whether partitions with batches should be added now with
    /// AddPartitionsToTxn: one request at a time, while the transaction
    /// goes on or commits.
    pub(crate) fn may_add_partitions(&self) -> bool {
        !self.adding && matches!(self.phase, Phase::InTransaction | Phase::Committing)
    }

    /// Whether partitions join the transaction with their first produce
    /// request instead (transaction version 2), at the same moments.
    pub(crate) fn partitions_join_with_produce(&self) -> bool {
        self.v2 && self.may_add_partitions()
    }

    /// Partitions joined the transaction with their produce requests:
    /// ending it takes an EndTxn.
    pub(crate) fn joined_with_produce(&mut self) {
        self.started = true;
    }

    /// An AddPartitionsToTxn is sent.
    pub(crate) fn adding_partitions(&mut self) {
        self.adding = true;
    }

    /// Whether an AddPartitionsToTxn is in flight.
    pub(crate) fn is_adding(&self) -> bool {
        self.adding
    }

    /// The AddPartitionsToTxn came back with `result`.
    pub(crate) fn handle_partitions_added(&mut self, result: &Result<()>) -> PartitionsAdded {
        self.adding = false;
        let e = match result {
            Ok(()) => {
                self.started = true;
                return PartitionsAdded::Added;
            }
            Err(e) => e,
        };
        self.fail(e);
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
        PartitionsAdded::Failed {
            failure,
            bump_epoch: e.kind() == ErrorKind::Timeout || e.is_retriable(),
        }
    }

    /// What the transaction coordinator's broker offers, as seen on the
    /// connection a coordinator request just used (see
    /// [`super::requests::offers_v2`]).
    pub(crate) fn coordinator_offers_v2(&mut self, offered: bool) {
        self.v2_offered = offered;
    }

    /// Whether the open transaction uses transaction version 2: its
    /// partitions join it with their first produce, its offsets with
    /// TxnOffsetCommit v5, and EndTxn v5 returns the next epoch.
    pub(crate) fn uses_v2(&self) -> bool {
        self.v2
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
