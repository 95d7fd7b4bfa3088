//! What a member's driver task and its application side share: the
//! member's identity (for commits), the coordinator, the partitions it may
//! commit; and fetching committed offsets with retries.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{
    config::{GroupConfig, GroupProtocol},
    coordinator::{fetch_offsets, CommitIdentity, CommittedOffset, Coordinator},
    offset_retry::{after_fetch_error, AfterError},
    TopicPartition,
};
use crate::{
    error::{Error, ErrorKind, Result},
    protocol::ApiKey,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the driver and the application side.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) coordinator: Coordinator,
    identity: Mutex<CommitIdentity>,
    /// Counts memberships lost (fenced, expired): commits begun in an
    /// earlier one must not go through.
    incarnation: std::sync::atomic::AtomicU64,
    /// Signalled when the identity changes (a commit that met a rebalance
    /// waits for it).
    pub(crate) identity_changed: Notify,
    /// The normal bound on one request.
    pub(crate) request_timeout: Duration,
    /// KIP-848 members name themselves in OffsetFetch (v9), classic ones
    /// do not (as the Java client).
    pub(crate) fetch_as_member: bool,
    /// The partitions the member may commit.
    pub(crate) owned: Owned,
}

impl Shared {
    /// The state of a member configured by `config`.
    pub(crate) fn new(
        coordinator: Coordinator,
        config: &GroupConfig,
        request_timeout: Duration,
    ) -> Self {
        Self {
            fetch_as_member: config.protocol == GroupProtocol::Consumer,
            coordinator,
            identity: Mutex::new(CommitIdentity {
                generation_or_epoch: -1,
                member_id: String::new(),
                instance_id: config.instance_id.clone(),
            }),
            identity_changed: Notify::new(),
            incarnation: std::sync::atomic::AtomicU64::new(0),
            request_timeout,
            owned: Owned::default(),
        }
    }

    pub(crate) fn identity(&self) -> CommitIdentity {
        lock(&self.identity).clone()
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the member's generation (epoch) and id. Dropping out of a
    /// generation (to -1, or to epoch 0) means the membership was lost.
    pub(crate) fn set_identity(&self, generation_or_epoch: i32, member_id: &str) {
        let mut id = lock(&self.identity);
        if id.generation_or_epoch > 0 && generation_or_epoch <= 0 {
            self.incarnation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        if id.generation_or_epoch != generation_or_epoch || id.member_id != member_id {
            id.generation_or_epoch = generation_or_epoch;
            id.member_id = member_id.to_owned();
            drop(id);
            self.identity_changed.notify_waiters();
        }
    }
}

/// The committed offsets of `partitions`, retried like commits (and on
/// UNSTABLE_OFFSET_COMMIT: a transaction is about to commit offsets).
pub(crate) async fn fetch_with_retry(
    shared: &Shared,
    partitions: &[TopicPartition],
    deadline: Instant,
    backoff: &crate::cluster::BackoffConfig,
) -> Result<BTreeMap<TopicPartition, Option<CommittedOffset>>> {
    let mut backoff = crate::cluster::Backoff::new(backoff, Some(deadline));
    loop {
        let identity = shared.identity();
        let attempt = async {
            let (_, conn) = shared.coordinator.get().await?;
            let member = (shared.fetch_as_member && !identity.member_id.is_empty())
                .then_some((identity.member_id.as_str(), identity.generation_or_epoch));
            fetch_offsets(
                &conn,
                shared.coordinator.group_id(),
                Some(partitions),
                true,
                member,
            )
            .await
        };
        let e = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_api(ApiKey::OFFSET_FETCH)
                    .with_message("fetching committed offsets"))
            }
        };
        match after_fetch_error(&e) {
            AfterError::FindCoordinator => shared.coordinator.invalidate(),
            AfterError::AwaitGeneration | AfterError::Retry => {}
            AfterError::Fail => return Err(e),
        }
        tracing::debug!(error = %e, "offset fetch failed; retrying");
        if backoff.wait().await.is_err() {
            return Err(e);
        }
    }
}

/// The partitions a member may commit, kept by the application side.
#[derive(Debug, Default)]
pub(crate) struct Owned(std::sync::Mutex<BTreeSet<TopicPartition>>);

impl Owned {
    pub(crate) fn get(&self) -> BTreeSet<TopicPartition> {
        self.lock().clone()
    }

    pub(crate) fn set(&self, partitions: &BTreeSet<TopicPartition>) {
        partitions.clone_into(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<TopicPartition>> {
        // A panic cannot leave a set half-written in a way that matters.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
