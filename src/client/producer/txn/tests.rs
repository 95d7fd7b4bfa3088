//! Drives the transaction state and the coordinator answers through whole
//! transactions, without I/O.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    requests::{self, ConcurrentRetry, Next, CONCURRENT_RETRY_MAX, CONCURRENT_RETRY_MIN},
    state::{PartitionsAdded, TxnState},
};
use crate::{
    client::producer::batch::Failure,
    error::{Error, ErrorKind},
    protocol::{
        messages::{
            add_partitions_to_txn_response::{
                AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
            },
            txn_offset_commit_response::{
                TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
            },
            AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, EndTxnResponse,
            InitProducerIdResponse, TxnOffsetCommitResponse,
        },
        ApiKey, ErrorCode,
    },
};

fn kafka(code: ErrorCode) -> Error {
    Error::kafka(code, None)
}

/// A producer between transactions.
fn ready() -> TxnState {
    let mut t = TxnState::new();
    t.check_init().expect("a new producer initialises");
    t.initialized();
    t
}

/// A producer in a transaction with a partition added.
fn in_started_transaction() -> TxnState {
    let mut t = ready();
    t.begin().expect("begins");
    t.adding_partitions();
    assert!(matches!(
        t.handle_partitions_added(&Ok(())),
        PartitionsAdded::Added
    ));
    t
}

/// A producer committing a transaction with a partition added.
fn committing() -> TxnState {
    let mut t = in_started_transaction();
    t.start_commit().expect("commits");
    t
}

/// The in-flight AddPartitionsToTxn failed with `e`: the code the
/// partitions' batches fail with (`None`: a local failure), and whether an
/// epoch bump is required.
fn add_failed(t: &mut TxnState, e: Error) -> (Option<ErrorCode>, bool) {
    match t.handle_partitions_added(&Err(e)) {
        PartitionsAdded::Failed {
            failure,
            bump_epoch,
        } => {
            let code = match failure {
                Failure::Kafka { code, .. } => Some(code),
                _ => None,
            };
            (code, bump_epoch)
        }
        PartitionsAdded::Added => panic!("a failed add added the partitions"),
    }
}

/// The code the state answers `check_send` with.
fn send_refused_with(t: &TxnState) -> Option<ErrorCode> {
    t.check_send().err().and_then(|e| e.error_code())
}

fn end_txn_answer(code: ErrorCode) -> EndTxnResponse {
    EndTxnResponse {
        error_code: code.0,
        ..Default::default()
    }
}

fn add_partitions_answer(
    top: ErrorCode,
    partitions: &[(i32, ErrorCode)],
) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse {
        error_code: top.0,
        results_by_topic_v3_and_below: vec![AddPartitionsToTxnTopicResult {
            name: "t".into(),
            results_by_partition: partitions
                .iter()
                .map(|&(p, code)| AddPartitionsToTxnPartitionResult {
                    partition_index: p,
                    partition_error_code: code.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What each coordinator answer carrying `code` leads to: InitProducerId,
/// AddPartitionsToTxn, AddOffsetsToTxn, EndTxn.
fn what_next(code: ErrorCode) -> [&'static str; 4] {
    fn name<T>(next: Next<T>) -> &'static str {
        match next {
            Next::Done(_) => "done",
            Next::Retry(_) => "retry",
            Next::RetrySoon(_) => "retry soon",
            Next::FindCoordinator(_) => "find coordinator",
            Next::Abortable(_) => "abortable",
            Next::Fatal(_) => "fatal",
        }
    }
    [
        name(requests::handle_init_producer_id(&InitProducerIdResponse {
            error_code: code.0,
            ..Default::default()
        })),
        name(requests::handle_add_partitions_to_txn(
            &add_partitions_answer(code, &[]),
        )),
        name(requests::handle_add_offsets_to_txn(
            &AddOffsetsToTxnResponse {
                error_code: code.0,
                ..Default::default()
            },
        )),
        name(requests::handle_end_txn(&end_txn_answer(code))),
    ]
}

#[test]
fn a_transaction_runs_from_init_to_commit_and_the_next_begins() {
    let mut t = TxnState::new();
    assert!(t.check_send().is_err(), "nothing is sent before init");
    assert!(t.begin().is_err(), "no transaction before init");
    t.check_init().unwrap();
    t.initialized();
    assert!(t.check_init().is_err(), "init runs once");
    assert!(
        t.check_send().is_err(),
        "nothing is sent outside a transaction"
    );
    assert!(!t.may_add_partitions());

    t.begin().unwrap();
    assert!(t.begin().is_err(), "one transaction at a time");
    t.check_send().unwrap();
    assert!(t.may_add_partitions());
    assert!(!t.partitions_join_with_produce(), "not under version 1");
    t.adding_partitions();
    assert!(t.is_adding());
    assert!(!t.may_add_partitions(), "one AddPartitionsToTxn at a time");
    assert!(matches!(
        t.handle_partitions_added(&Ok(())),
        PartitionsAdded::Added
    ));
    assert!(!t.is_adding());
    assert!(t.may_add_partitions());
    assert!(t.unsent_failure(false, || None).is_none());

    t.start_commit().unwrap();
    assert!(t.check_send().is_err(), "no records while committing");
    assert!(t.may_add_partitions(), "the commit's flush still adds");
    t.check_commit(None).unwrap();
    assert!(t.sending_commit(), "the coordinator knows the transaction");
    t.ended();

    assert!(t.check_send().is_err());
    assert!(t.start_commit().is_err(), "nothing to commit");
    assert!(t.start_abort().is_err(), "nothing to abort");
    t.begin().unwrap();
    t.start_commit().unwrap();
    t.check_commit(None).unwrap();
    assert!(
        !t.sending_commit(),
        "a transaction nothing was added to ends without EndTxn"
    );
}

#[test]
fn offsets_start_the_transaction_at_the_coordinator() {
    let mut t = ready();
    t.begin().unwrap();
    t.start_abort().unwrap();
    assert!(!t.abort_needs_end_txn());
    t.ended();
    t.begin().unwrap();
    t.sending_offsets();
    t.start_abort().unwrap();
    assert!(t.abort_needs_end_txn());
    t.abort_sent();
    assert!(
        !t.abort_needs_end_txn(),
        "an abort resumed after a failed bump does not end the transaction again"
    );
}

#[test]
fn a_fenced_producer_is_unusable() {
    for code in [
        ErrorCode::PRODUCER_FENCED,
        ErrorCode::INVALID_PRODUCER_EPOCH,
    ] {
        // However the coordinator says it, retrying cannot help.
        assert_eq!(what_next(code), ["fatal"; 4], "{code:?}");

        let mut t = in_started_transaction();
        t.fail(&kafka(code));
        assert!(t.is_failed());
        assert_eq!(send_refused_with(&t), Some(code));
        assert!(t.unsent_failure(false, || None).is_some());
        assert_eq!(t.start_commit().unwrap_err().error_code(), Some(code));
        assert_eq!(t.start_abort().unwrap_err().error_code(), Some(code));
        // A later abortable error does not hide why the producer stopped.
        t.fail(&kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
        t.ended();
        assert_eq!(t.begin().unwrap_err().error_code(), Some(code));
    }
}

#[test]
fn a_fenced_add_comes_back_during_an_abort() {
    let mut t = ready();
    t.begin().unwrap();
    t.adding_partitions();
    t.start_abort().unwrap();
    t.check_abort().unwrap();
    let (failure, bump_epoch) = add_failed(&mut t, kafka(ErrorCode::PRODUCER_FENCED));
    assert_eq!(failure, Some(ErrorCode::PRODUCER_FENCED));
    assert!(!bump_epoch);
    assert_eq!(
        t.check_abort().unwrap_err().error_code(),
        Some(ErrorCode::PRODUCER_FENCED)
    );
}

#[test]
fn fatal_errors_of_init_and_bump_end_the_producer_others_do_not() {
    let mut t = TxnState::new();
    t.fail_if_fatal(&Error::new(ErrorKind::Timeout));
    t.check_init()
        .expect("init may be called again after a timeout");
    t.fail_if_fatal(&kafka(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
    assert_eq!(
        t.check_init().unwrap_err().error_code(),
        Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    );
}

#[test]
fn concurrent_transactions_are_retried_soon() {
    assert_eq!(
        what_next(ErrorCode::CONCURRENT_TRANSACTIONS),
        ["retry soon"; 4]
    );

    let now = Instant::now();
    let deadline = now + Duration::from_secs(60);
    let mut retry = ConcurrentRetry::new();
    let waits: Vec<_> = (0..6).map(|_| retry.next_wait(now, deadline)).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        waits,
        [ms(2), ms(4), ms(8), ms(16), ms(20), ms(20)].map(Some),
        "doubling from {CONCURRENT_RETRY_MIN:?} up to {CONCURRENT_RETRY_MAX:?}"
    );
    let mut retry = ConcurrentRetry::new();
    assert_eq!(
        retry.next_wait(now, now + ms(2)),
        None,
        "a wait reaching the deadline is left to the backoff"
    );
}

#[test]
fn a_moved_coordinator_is_looked_up_again() {
    let moved = [
        ErrorCode::NOT_COORDINATOR,
        ErrorCode::COORDINATOR_NOT_AVAILABLE,
    ]
    .map(what_next);
    assert_eq!(moved, [["find coordinator"; 4]; 2]);
    assert!(matches!(
        requests::classify::<()>(Err(Error::new(ErrorKind::Connection))),
        Next::FindCoordinator(_)
    ));
    // Other retriable answers wait for the backoff at the same coordinator.
    assert_eq!(
        what_next(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
        ["retry"; 4]
    );
    assert!(matches!(
        requests::classify::<()>(Err(Error::new(ErrorKind::Timeout))),
        Next::Retry(_)
    ));
}

#[test]
fn answers_without_errors_are_done() {
    assert!(matches!(
        requests::handle_init_producer_id(&InitProducerIdResponse {
            producer_id: 7,
            producer_epoch: 3,
            ..Default::default()
        }),
        Next::Done((7, 3))
    ));
    assert!(matches!(
        requests::handle_end_txn(&end_txn_answer(ErrorCode::NONE)),
        Next::Done(None)
    ));
    // Partitions not attempted because of another's error say nothing.
    let answer = add_partitions_answer(
        ErrorCode::NONE,
        &[
            (0, ErrorCode::OPERATION_NOT_ATTEMPTED),
            (1, ErrorCode::TOPIC_AUTHORIZATION_FAILED),
        ],
    );
    assert!(matches!(
        requests::handle_add_partitions_to_txn(&answer),
        Next::Abortable(e) if e.error_code() == Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
            && e.partition() == Some(1)
    ));
    let answer = add_partitions_answer(ErrorCode::NONE, &[(0, ErrorCode::NONE)]);
    assert!(matches!(
        requests::handle_add_partitions_to_txn(&answer),
        Next::Done(())
    ));
    let committed = |code: ErrorCode| TxnOffsetCommitResponse {
        topics: vec![TxnOffsetCommitResponseTopic {
            name: "t".into(),
            partitions: vec![TxnOffsetCommitResponsePartition {
                partition_index: 0,
                error_code: code.0,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(matches!(
        requests::handle_txn_offset_commit(&committed(ErrorCode::NONE)),
        Next::Done(())
    ));
    assert!(matches!(
        requests::handle_txn_offset_commit(&committed(ErrorCode::ILLEGAL_GENERATION)),
        Next::Abortable(_)
    ));
}

#[test]
fn an_abortable_failure_leaves_only_an_abort_then_the_next_transaction_runs() {
    let mut t = in_started_transaction();
    t.adding_partitions();
    let (failure, bump_epoch) = add_failed(&mut t, kafka(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
    assert_eq!(failure, Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
    assert!(!bump_epoch, "the coordinator added nothing");
    assert!(t.is_failed());
    assert!(!t.may_add_partitions());
    assert_eq!(
        send_refused_with(&t),
        Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
    );
    assert!(t.unsent_failure(false, || None).is_some());
    assert_eq!(
        t.start_commit().unwrap_err().error_code(),
        Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
    );

    t.start_abort().unwrap();
    t.start_abort()
        .expect("an abort that did not finish runs again");
    t.check_abort().unwrap();
    assert!(t.abort_needs_end_txn());
    t.abort_sent();
    t.ended();

    t.begin().unwrap();
    t.check_send().expect("the next transaction starts clean");
    t.start_commit().unwrap();
    t.check_commit(None).unwrap();
}

#[test]
fn an_add_with_unknown_outcome_requires_an_epoch_bump() {
    let mut t = in_started_transaction();
    t.adding_partitions();
    let (failure, bump_epoch) = add_failed(&mut t, Error::new(ErrorKind::Timeout));
    assert_eq!(failure, None, "the batches fail with the local error");
    assert!(bump_epoch);
    // Committing again cannot help: the application is told to abort.
    assert_eq!(
        send_refused_with(&t),
        Some(ErrorCode::TRANSACTION_ABORTABLE)
    );
}

#[test]
fn a_failed_record_fails_the_commit_as_abortable() {
    let mut t = committing();
    let e = t
        .check_commit(Some(kafka(ErrorCode::NOT_ENOUGH_REPLICAS)))
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::TRANSACTION_ABORTABLE));
    assert!(t.start_commit().is_err());
    t.start_abort().unwrap();

    let mut t = committing();
    let e = t
        .check_commit(Some(kafka(ErrorCode::PRODUCER_FENCED)))
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::PRODUCER_FENCED));
    assert!(t.start_abort().is_err());
}

#[test]
fn a_failed_record_that_needs_a_bump_fails_the_unsent_batches() {
    let mut t = in_started_transaction();
    assert!(
        t.unsent_failure(false, || Some(kafka(
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        )))
        .is_none(),
        "without a bump pending the batches go on until the commit"
    );
    assert!(!t.is_failed());
    assert!(t.unsent_failure(true, || None).is_none());
    let failure = t.unsent_failure(true, || {
        Some(kafka(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER))
    });
    assert!(
        matches!(
            failure,
            Some(Failure::Local {
                kind: ErrorKind::TransactionAborted,
                ..
            })
        ),
        "{failure:?}"
    );
    assert!(t.is_failed());
}

#[test]
fn a_record_that_cannot_be_sent_fails_only_an_open_transaction() {
    let mut t = committing();
    t.fail_send(&Error::new(ErrorKind::BufferFull));
    t.check_commit(None)
        .expect("a commit's flush is not failed by a late send");
    let mut t = in_started_transaction();
    t.fail_send(&Error::new(ErrorKind::BufferFull));
    assert_eq!(
        send_refused_with(&t),
        Some(ErrorCode::TRANSACTION_ABORTABLE)
    );
}

#[test]
fn a_commit_that_timed_out_is_committed_again_not_aborted() {
    let mut t = committing();
    t.check_commit(None).unwrap();
    assert!(t.sending_commit());
    t.commit_failed(&Error::new(ErrorKind::Timeout));
    assert!(
        t.start_abort().is_err(),
        "EndTxn(commit) may have got through"
    );
    t.start_commit().expect("commit again");

    // A commit that never sent EndTxn may still be aborted.
    let mut t = committing();
    t.start_abort().unwrap();

    // A refused EndTxn leaves only an abort.
    let mut t = committing();
    assert!(t.sending_commit());
    t.commit_failed(&kafka(ErrorCode::TRANSACTION_ABORTABLE));
    assert!(t.start_commit().is_err());
}

#[test]
fn transaction_version_2_is_chosen_when_a_transaction_begins() {
    let mut t = ready();
    t.coordinator_offers_v2(true);
    assert!(
        !t.uses_v2(),
        "decided by begin, not by the coordinator's answer"
    );
    t.begin().unwrap();
    assert!(t.uses_v2());
    assert!(t.partitions_join_with_produce());
    t.joined_with_produce();
    // The coordinator's broker stops offering it: the open transaction
    // keeps its version, the next one does not use it.
    t.coordinator_offers_v2(false);
    assert!(t.uses_v2());
    t.start_commit().unwrap();
    t.check_commit(None).unwrap();
    assert!(
        t.sending_commit(),
        "partitions joined with produce need EndTxn"
    );
    t.ended();
    t.begin().unwrap();
    assert!(!t.uses_v2());
    assert!(!t.partitions_join_with_produce());
}

#[test]
fn transaction_version_2_needs_the_feature_and_the_versions() {
    let all = |api| match api {
        ApiKey::END_TXN => Some(5),
        ApiKey::PRODUCE => Some(12),
        ApiKey::TXN_OFFSET_COMMIT => Some(5),
        _ => None,
    };
    assert!(requests::offers_v2(Some(2), all));
    assert!(!requests::offers_v2(Some(1), all), "not finalized at 2");
    assert!(!requests::offers_v2(None, all));
    for missing in [ApiKey::END_TXN, ApiKey::PRODUCE, ApiKey::TXN_OFFSET_COMMIT] {
        let older = |api| all(api).map(|v| if api == missing { v - 1 } else { v });
        assert!(!requests::offers_v2(Some(2), older), "{missing:?}");
    }
}

#[test]
fn versions_follow_the_transactions_version() {
    assert_eq!(requests::end_txn_version(false, 5), 4);
    assert_eq!(requests::end_txn_version(true, 5), 5);
    assert_eq!(requests::end_txn_version(false, 3), 3);

    assert_eq!(requests::produce_version(false, 13).unwrap(), 11);
    assert_eq!(requests::produce_version(true, 13).unwrap(), 13);
    assert_eq!(
        requests::produce_version(true, 11).unwrap_err().kind(),
        ErrorKind::Unsupported
    );

    assert_eq!(requests::txn_offset_commit_version(false, 5, 3).unwrap(), 4);
    assert_eq!(requests::txn_offset_commit_version(true, 5, 3).unwrap(), 5);
    assert!(requests::txn_offset_commit_version(true, 4, 3).is_err());
    // Without the generation a zombie's commit could not be refused.
    assert!(requests::txn_offset_commit_version(false, 2, 3).is_err());
    assert_eq!(
        requests::txn_offset_commit_version(false, 2, -1).unwrap(),
        2
    );
}

#[test]
fn the_next_epoch_comes_with_end_txn_only_under_version_2() {
    let answer = EndTxnResponse {
        producer_id: 7,
        producer_epoch: 4,
        ..Default::default()
    };
    assert!(matches!(
        requests::handle_end_txn(&answer),
        Next::Done(Some((7, 4)))
    ));
}

#[test]
fn init_producer_id_names_the_epoch_to_bump_from_version_3() {
    let timeout = Duration::from_secs(60);
    let bump = requests::init_producer_id(Some("id"), timeout, Some((7, 3)), 3);
    assert_eq!((bump.producer_id, bump.producer_epoch), (7, 3));
    assert_eq!(bump.transaction_timeout_ms, 60_000);
    let old = requests::init_producer_id(Some("id"), timeout, Some((7, 3)), 2);
    assert_eq!((old.producer_id, old.producer_epoch), (-1, -1));
    let first = requests::init_producer_id(Some("id"), timeout, None, 4);
    assert_eq!((first.producer_id, first.producer_epoch), (-1, -1));
    let idempotent = requests::init_producer_id(None, Duration::MAX, Some((7, 3)), 4);
    assert_eq!(idempotent.transactional_id, None);
    assert_eq!(idempotent.transaction_timeout_ms, i32::MAX);
    assert_eq!((idempotent.producer_id, idempotent.producer_epoch), (7, 3));
}

#[test]
fn requests_group_partitions_by_topic() {
    let t: Arc<str> = "t".into();
    let u: Arc<str> = "u".into();
    let req =
        requests::add_partitions_to_txn("id", (7, 3), &[(t.clone(), 0), (u.clone(), 1), (t, 2)]);
    let topics: Vec<_> = req
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.as_str(), t.partitions.clone()))
        .collect();
    assert_eq!(topics, [("t", vec![0, 2]), ("u", vec![1])]);
    assert_eq!(
        (
            req.v3_and_below_producer_id,
            req.v3_and_below_producer_epoch
        ),
        (7, 3)
    );
}

#[test]
fn a_granted_producer_id_or_the_init_producer_id_error() {
    let granted = InitProducerIdResponse {
        producer_id: 7,
        producer_epoch: 3,
        ..Default::default()
    };
    assert_eq!(requests::producer_id_granted(&granted).unwrap(), (7, 3));
    let refused = InitProducerIdResponse {
        error_code: ErrorCode::CLUSTER_AUTHORIZATION_FAILED.0,
        producer_id: 7,
        ..Default::default()
    };
    let e = requests::producer_id_granted(&refused).unwrap_err();
    assert_eq!(
        e.error_code(),
        Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
    );
    assert_eq!(e.api(), Some(ApiKey::INIT_PRODUCER_ID));
}
