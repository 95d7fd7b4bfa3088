//! The decisions of a member's OffsetCommit and OffsetFetch loops
//! (`committer.rs`, `shared.rs`), without their I/O: what to send, and what
//! to do after a failure.

use std::collections::{BTreeMap, BTreeSet};

use super::{coordinator::is_coordinator_error, TopicPartition};
use crate::{error::Error, protocol::ErrorCode};

/// Offsets to commit: the next offset to consume and, when known, the
/// leader epoch of the record before it.
pub(crate) type Offsets = BTreeMap<TopicPartition, (i64, Option<i32>)>;

/// What to do after an offset request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterError {
    /// The group is between generations, or just moved to a new one while
    /// the member kept its partitions (cooperative and KIP-848 members keep
    /// them; a revocation waits for the commit): try again with the next
    /// generation, once the member's identity changes or after a backoff.
    AwaitGeneration,
    /// The coordinator moved or is not ready: look it up again, then retry
    /// after a backoff.
    FindCoordinator,
    /// A passing failure: retry after a backoff.
    Retry,
    /// Give up with the error.
    Fail,
}

/// After a failed OffsetCommit.
pub(crate) fn after_commit_error(e: &Error) -> AfterError {
    match e.error_code() {
        Some(
            ErrorCode::REBALANCE_IN_PROGRESS
            | ErrorCode::ILLEGAL_GENERATION
            | ErrorCode::STALE_MEMBER_EPOCH,
        ) => AfterError::AwaitGeneration,
        _ if is_coordinator_error(e) => AfterError::FindCoordinator,
        _ if e.is_retriable() => AfterError::Retry,
        _ => AfterError::Fail,
    }
}

/// After a failed OffsetFetch: as a commit, except that a stale epoch (a
/// KIP-848 member between epochs) is only retried.
pub(crate) fn after_fetch_error(e: &Error) -> AfterError {
    if is_coordinator_error(e) {
        AfterError::FindCoordinator
    } else if e.is_retriable() || e.error_code() == Some(ErrorCode::STALE_MEMBER_EPOCH) {
        AfterError::Retry
    } else {
        AfterError::Fail
    }
}

/// The next step of a commit.
#[derive(Debug, PartialEq)]
pub(crate) enum CommitStep {
    /// The membership the offsets were consumed in was lost: fail.
    Lost,
    /// The member is (re)joining: wait until it is in a generation again.
    AwaitMembership,
    /// Send these, the member's own partitions.
    Send(Offsets),
    /// Nothing of the member's own is left to commit.
    Done,
}

/// Decides a commit attempt of `offsets`, consumed in membership
/// `incarnation`: the member is now in `current_incarnation`, in generation
/// (epoch) `generation` as `member_id`, and owns `owned`. Partitions it does
/// not own are added to `given_up` and left out.
pub(crate) fn commit_step(
    offsets: &Offsets,
    incarnation: u64,
    current_incarnation: u64,
    generation: i32,
    member_id: &str,
    owned: &BTreeSet<TopicPartition>,
    given_up: &mut BTreeSet<TopicPartition>,
) -> CommitStep {
    if current_incarnation != incarnation {
        return CommitStep::Lost;
    }
    if generation <= 0 || member_id.is_empty() {
        return CommitStep::AwaitMembership;
    }
    let mut send = Offsets::new();
    for (tp, v) in offsets {
        if owned.contains(tp) {
            send.insert(tp.clone(), *v);
        } else {
            given_up.insert(tp.clone());
        }
    }
    if send.is_empty() {
        CommitStep::Done
    } else {
        CommitStep::Send(send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kafka(code: ErrorCode) -> Error {
        Error::kafka(code, None)
    }

    #[test]
    fn commit_errors() {
        for code in [
            ErrorCode::REBALANCE_IN_PROGRESS,
            ErrorCode::ILLEGAL_GENERATION,
            ErrorCode::STALE_MEMBER_EPOCH,
        ] {
            assert_eq!(
                after_commit_error(&kafka(code)),
                AfterError::AwaitGeneration
            );
        }
        assert_eq!(
            after_commit_error(&kafka(ErrorCode::NOT_COORDINATOR)),
            AfterError::FindCoordinator
        );
        assert_eq!(
            after_commit_error(&Error::new(ErrorKind::Connection)),
            AfterError::FindCoordinator
        );
        assert_eq!(
            after_commit_error(&kafka(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)),
            AfterError::Retry
        );
        assert_eq!(
            after_commit_error(&kafka(ErrorCode::UNKNOWN_MEMBER_ID)),
            AfterError::Fail
        );
        assert_eq!(
            after_commit_error(&kafka(ErrorCode::GROUP_AUTHORIZATION_FAILED)),
            AfterError::Fail
        );
    }

    #[test]
    fn fetch_errors() {
        assert_eq!(
            after_fetch_error(&kafka(ErrorCode::STALE_MEMBER_EPOCH)),
            AfterError::Retry
        );
        assert_eq!(
            after_fetch_error(&kafka(ErrorCode::UNSTABLE_OFFSET_COMMIT)),
            AfterError::Retry
        );
        assert_eq!(
            after_fetch_error(&kafka(ErrorCode::COORDINATOR_NOT_AVAILABLE)),
            AfterError::FindCoordinator
        );
        assert_eq!(
            after_fetch_error(&kafka(ErrorCode::GROUP_AUTHORIZATION_FAILED)),
            AfterError::Fail
        );
    }

    #[test]
    fn commits_wait_for_a_generation_and_leave_out_what_is_not_owned() {
        let a = TopicPartition::new("t", 0);
        let b = TopicPartition::new("t", 1);
        let offsets: Offsets = [(a.clone(), (5, None)), (b.clone(), (7, Some(2)))]
            .into_iter()
            .collect();
        let owned: BTreeSet<_> = [a.clone()].into_iter().collect();
        let mut given_up = BTreeSet::new();
        let step = |inc, gen, id, given_up: &mut _| {
            commit_step(&offsets, 1, inc, gen, id, &owned, given_up)
        };
        assert_eq!(step(2, 3, "m", &mut given_up), CommitStep::Lost);
        assert_eq!(step(1, -1, "m", &mut given_up), CommitStep::AwaitMembership);
        assert_eq!(step(1, 0, "m", &mut given_up), CommitStep::AwaitMembership);
        assert_eq!(step(1, 3, "", &mut given_up), CommitStep::AwaitMembership);
        assert!(given_up.is_empty());
        assert_eq!(
            step(1, 3, "m", &mut given_up),
            CommitStep::Send([(a, (5, None))].into_iter().collect())
        );
        assert_eq!(given_up, [b].into_iter().collect());
        let none = BTreeSet::new();
        assert_eq!(
            commit_step(&offsets, 1, 1, 3, "m", &none, &mut given_up),
            CommitStep::Done
        );
    }
}
