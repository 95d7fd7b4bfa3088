//! A member's offset commits, sent one at a time in the order they were
//! asked for.
//!
//! Commits that overtook each other moved a partition's committed offset
//! backwards: 200 `commit_async` calls in a row left it at 66 to 158. So
//! every commit of a member (explicit, asynchronous, automatic, before a
//! revocation, on close) goes through one queue. Commits waiting behind one
//! in flight are merged into a single request, the later offset of a
//! partition winning (as franz-go does); their callers all get its outcome.
//!
//! A member never commits a partition it does not own: each attempt leaves
//! out the partitions that are no longer assigned to it (given up, lost, or
//! never its own) and fails the commits that asked for them.

use std::{collections::BTreeSet, sync::Arc};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    offset_retry::{after_commit_error, commit_step, AfterError, CommitStep, Offsets},
    shared::Shared,
    TopicPartition,
};
use crate::{
    cluster::{Backoff, BackoffConfig},
    error::{Error, ErrorKind, Result},
    protocol::{ApiKey, ErrorCode},
};

struct Request {
    offsets: Offsets,
    /// The membership incarnation the offsets were consumed in.
    incarnation: u64,
    deadline: Instant,
    reply: oneshot::Sender<Result<()>>,
}

/// The queue of one member's commits; its task stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Request>,
}

impl Committer {
    /// Starts the task that sends the commits.
    pub(crate) fn spawn(
        runtime: &tokio::runtime::Handle,
        shared: Arc<Shared>,
        backoff: BackoffConfig,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(shared, backoff, rx));
        Self { tx }
    }

    /// Queues a commit behind every commit queued before; the receiver
    /// yields its outcome. An empty commit still waits for those before it.
    pub(crate) fn commit(
        &self,
        offsets: Offsets,
        incarnation: u64,
        deadline: Instant,
    ) -> oneshot::Receiver<Result<()>> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            offsets,
            incarnation,
            deadline,
            reply,
        };
        if let Err(mpsc::error::SendError(r)) = self.tx.send(request) {
            let _ = r.reply.send(Err(stopped()));
        }
        rx
    }
}

/// Awaits a queued commit's outcome.
pub(crate) async fn outcome(rx: oneshot::Receiver<Result<()>>) -> Result<()> {
    rx.await.unwrap_or_else(|_| Err(stopped()))
}

fn stopped() -> Error {
    Error::new(ErrorKind::Protocol)
        .with_api(ApiKey::OFFSET_COMMIT)
        .with_message("the group member's commit task has stopped")
}

fn not_owned(tp: &TopicPartition) -> Error {
    Error::invalid_input("commit of a partition this member does not own")
        .with_api(ApiKey::OFFSET_COMMIT)
        .with_topic(&tp.topic)
        .with_partition(tp.partition)
}

async fn run(
    shared: Arc<Shared>,
    backoff: BackoffConfig,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(first) = rx.recv().await {
        let mut queued = vec![first];
        while let Ok(r) = rx.try_recv() {
            queued.push(r);
        }
        // Merged only within one membership incarnation: a commit from a
        // lost one must fail on its own, not take newer ones down with it.
        let mut queued = queued.into_iter().peekable();
        while let Some(head) = queued.next() {
            let mut group = vec![head];
            while let Some(next) = queued.next_if(|r| r.incarnation == group[0].incarnation) {
                group.push(next);
            }
            send_merged(&shared, &backoff, group).await;
        }
    }
}

/// Commits a run of queued requests as one and answers each.
async fn send_merged(shared: &Shared, backoff: &BackoffConfig, group: Vec<Request>) {
    let incarnation = group[0].incarnation;
    let deadline = group
        .iter()
        .map(|r| r.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let mut merged = Offsets::new();
    let mut replies = Vec::with_capacity(group.len());
    for r in group {
        replies.push((r.reply, r.offsets.keys().cloned().collect::<Vec<_>>()));
        // The later commit of a partition wins.
        merged.extend(r.offsets);
    }
    match commit_with_retry(shared, &merged, deadline, backoff, incarnation).await {
        // Partitions not owned fail only the commits that asked for them.
        Ok(left_out) => {
            for (reply, asked) in replies {
                let r = match asked.iter().find(|tp| left_out.contains(*tp)) {
                    Some(tp) => Err(not_owned(tp)),
                    None => Ok(()),
                };
                let _ = reply.send(r);
            }
        }
        // The last caller gets the error itself, the others copies.
        Err(e) => {
            let last = replies.pop();
            for (reply, _) in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
            if let Some((reply, _)) = last {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// Commits `offsets` as the member, retrying through coordinator moves and
/// rebalances until `deadline`; before each attempt, partitions the member
/// does not own (any longer) are left out. Returns those left out.
async fn commit_with_retry(
    shared: &Shared,
    offsets: &Offsets,
    deadline: Instant,
    backoff: &BackoffConfig,
    incarnation: u64,
) -> Result<BTreeSet<TopicPartition>> {
    let mut given_up = BTreeSet::new();
    if offsets.is_empty() {
        return Ok(given_up);
    }
    let mut backoff = Backoff::new(backoff, Some(deadline));
    let mut last: Option<Error> = None;
    let lost = |last: Option<Error>| {
        last.unwrap_or_else(|| {
            Error::kafka(ErrorCode::UNKNOWN_MEMBER_ID, None)
                .with_api(ApiKey::OFFSET_COMMIT)
                .with_message("the member lost its partitions before the commit")
        })
    };
    loop {
        let changed = shared.identity_changed.notified();
        let identity = shared.identity();
        let step = commit_step(
            offsets,
            incarnation,
            shared.incarnation(),
            identity.generation_or_epoch,
            &identity.member_id,
            &shared.owned.get(),
            &mut given_up,
        );
        let current = match step {
            CommitStep::Lost => return Err(lost(last)),
            CommitStep::AwaitMembership => {
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Err(lost(last).with_message("the member is not in the group"));
                }
                continue;
            }
            CommitStep::Done => return Ok(given_up),
            CommitStep::Send(current) => current,
        };
        let attempt = async {
            let (_, conn) = shared.coordinator.get().await?;
            super::coordinator::commit_offsets(
                &conn,
                shared.coordinator.group_id(),
                &identity,
                &current,
            )
            .await
        };
        let e = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(())) => return Ok(given_up),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(last.unwrap_or_else(|| {
                    Error::new(ErrorKind::Timeout)
                        .with_api(ApiKey::OFFSET_COMMIT)
                        .with_message("committing offsets")
                }))
            }
        };
        match after_commit_error(&e) {
            AfterError::AwaitGeneration => {
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                if Instant::now() >= deadline {
                    return Err(e);
                }
                last = Some(e);
                continue;
            }
            AfterError::FindCoordinator => shared.coordinator.invalidate(),
            AfterError::Retry => {}
            AfterError::Fail => return Err(e),
        }
        tracing::debug!(error = %e, "offset commit failed; retrying");
        if backoff.wait().await.is_err() {
            return Err(e);
        }
        last = Some(e);
    }
}
