//! [`GroupConsumer`]: a [`Consumer`] whose partitions a consumer group
//! assigns, with committed offsets.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};

use super::{
    assignment::Assignment,
    classic::ClassicMember,
    committer::{outcome, Committer},
    config::{GroupConfig, GroupProtocol},
    coordinator::{CommittedOffset, Coordinator},
    driver::{self, AppEvent, Command},
    next_gen::{random_member_id, NextGenMember},
    offset_retry::Offsets,
    shared::{fetch_with_retry, Shared},
    subscription::{metadata_period, Subscribed},
    ConsumerGroupMetadata, TopicPartition,
};
use crate::{
    client::{
        consumer::{ConsumedRecord, Consumer},
        Client, Settings,
    },
    cluster::BackoffConfig,
    error::{Error, ErrorKind, Result},
};

/// What a finished background step of the stream brings.
enum StepDone {
    /// Revocation prepared (offsets committed or the commit failed), and
    /// the membership incarnation when it began.
    Revoked(Vec<TopicPartition>, Result<()>, u64),
    /// Committed offsets of newly assigned partitions.
    Offsets(
        Vec<TopicPartition>,
        Result<BTreeMap<TopicPartition, Option<CommittedOffset>>>,
    ),
    /// An auto-commit, and the membership incarnation it was made in.
    AutoCommitted(Result<()>, u64),
}

type Step = Pin<Box<dyn Future<Output = StepDone> + Send>>;

/// A member of a consumer group: a [`Stream`] of the records of the
/// partitions the group assigns to it.
///
/// Assignment changes are applied between records, inside the stream: a
/// revocation waits until the application asks for the next record (so a
/// record being processed is never handed to another member), commits the
/// consumed offsets first under [`GroupConfig::auto_commit`], and calls the
/// [`RebalanceListener`](super::RebalanceListener). The application must therefore keep polling the
/// stream; a member that does not poll within
/// [`GroupConfig::rebalance_timeout`] during a rebalance is removed from the
/// group.
///
/// ```no_run
/// # async fn example(client: rskafka::client::Client) -> rskafka::error::Result<()> {
/// use futures::StreamExt;
/// use rskafka::client::group::{GroupConfig, TopicPartition};
///
/// let mut consumer = client.group_consumer(GroupConfig::new("my-group", ["events"]).auto_commit(None))?;
/// while let Some(record) = consumer.next().await {
///     let record = record?;
///     // ... process the record, then commit it:
///     let tp = TopicPartition::new(record.topic.to_string(), record.partition);
///     consumer.commit([(tp, record.offset + 1)]).await?;
/// }
/// consumer.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct GroupConsumer {
    consumer: Consumer,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    events: mpsc::UnboundedReceiver<AppEvent>,
    commands: mpsc::UnboundedSender<Command>,
    driver: Option<tokio::task::JoinHandle<()>>,
    config: Arc<GroupConfig>,
    /// The partitions owned and how far they were delivered and committed.
    assignment: Assignment,
    /// Events to handle before anything else (re-queued after a failure).
    deferred: VecDeque<AppEvent>,
    /// A background step in progress. In a mutex only to make the consumer
    /// `Sync` (so `&self` methods can be awaited from spawned tasks); it is
    /// only ever reached through `&mut self`.
    step: std::sync::Mutex<Option<Step>>,
    /// Sends this member's commits in order.
    committer: Arc<Committer>,
    auto_commit_timer: Option<Pin<Box<Sleep>>>,
    finished: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.shared.coordinator.group_id())
            .field("assignment", self.assignment.owned())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Joins a consumer group and consumes the partitions it assigns; see
    /// [`GroupConsumer`]. Must be called inside a tokio runtime.
    pub fn group_consumer(&self, config: GroupConfig) -> Result<GroupConsumer> {
        GroupConsumer::new(self, config)
    }
}

impl GroupConsumer {
    /// Same as [`Client::group_consumer`].
    pub fn new(client: &Client, config: GroupConfig) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_input("a group consumer must be created inside a tokio runtime")
        })?;
        let consumer = client.consumer(config.consumer_config())?;
        let request_timeout = client.cluster.config().connection.request_timeout;
        // JoinGroup may wait for a whole rebalance: the coordinator
        // connection's bound covers that.
        let coordinator = Coordinator::new(
            client.cluster.clone(),
            config.group_id.clone(),
            Some(config.rebalance_timeout + Duration::from_secs(5)),
        );
        let shared = Arc::new(Shared::new(coordinator, &config, request_timeout));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let backoff = &client.settings.backoff;
        let period = metadata_period(client.cluster.config().metadata_max_age);
        let driver = match config.protocol {
            GroupProtocol::Classic => runtime.spawn(driver::run(
                Subscribed::new(
                    ClassicMember::new(config.clone(), backoff, period),
                    &config,
                    period,
                ),
                shared.clone(),
                commands_rx,
                events_tx,
            )),
            GroupProtocol::Consumer => runtime.spawn(driver::run(
                Subscribed::new(
                    NextGenMember::new(config.clone(), random_member_id(), backoff),
                    &config,
                    period,
                ),
                shared.clone(),
                commands_rx,
                events_tx,
            )),
        };
        let committer = Arc::new(Committer::spawn(&runtime, shared.clone(), backoff.clone()));
        Ok(Self {
            consumer,
            shared,
            settings: client.settings.clone(),
            events: events_rx,
            commands: commands_tx,
            driver: Some(driver),
            config,
            assignment: Assignment::default(),
            deferred: VecDeque::new(),
            step: std::sync::Mutex::new(None),
            committer,
            auto_commit_timer: None,
            finished: false,
        })
    }

    fn step_mut(&mut self) -> &mut Option<Step> {
        self.step.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.settings.operation_timeout
    }

    fn backoff(&self) -> &BackoffConfig {
        &self.settings.backoff
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.owned().iter().cloned().collect()
    }

    /// The member id the coordinator gave this member (empty outside the
    /// group).
    pub fn member_id(&self) -> String {
        self.shared.identity().member_id
    }

    /// The current generation (classic) or member epoch (KIP-848); `-1`
    /// outside the group.
    pub fn generation(&self) -> i32 {
        self.shared.identity().generation_or_epoch
    }

    /// This member's group, generation and id, for a transactional
    /// producer's [`send_offsets_to_transaction`](crate::client::producer::Producer::send_offsets_to_transaction).
    /// Taken at the call: a rebalance afterwards makes the commit fail
    /// rather than commit partitions this member may no longer own.
    pub fn group_metadata(&self) -> ConsumerGroupMetadata {
        let id = self.shared.identity();
        ConsumerGroupMetadata::member(
            self.shared.coordinator.group_id().to_owned(),
            id.generation_or_epoch,
            id.member_id,
            id.instance_id,
        )
    }

    /// The offset of the next record this member delivers for a partition
    /// it owns.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(&tp.topic, tp.partition)
    }

    /// The underlying fetcher, e.g. for high watermarks.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Commits `offsets` (each the offset of the next record to consume,
    /// i.e. the last processed offset + 1) as this member, retrying through
    /// coordinator moves and rebalances until the operation timeout.
    ///
    /// Commits are sent in the order they are asked for, from here and
    /// [`Self::commit_async`] alike, so a later commit of a partition is
    /// never overtaken by an earlier one. Fails with `ILLEGAL_GENERATION`,
    /// `UNKNOWN_MEMBER_ID` or `FENCED_MEMBER_EPOCH` if the member lost its
    /// partitions, and with [`ErrorKind::InvalidInput`] for a partition
    /// this member does not own (any longer): that one is not committed,
    /// the others are.
    pub async fn commit(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Result<()> {
        let offsets = self.assignment.to_commit(offsets)?;
        outcome(self.queue_commit(offsets)).await
    }

    /// Queues a commit of `offsets` and returns at once; the handle tells
    /// the outcome. Ordered with every other commit of this member (see
    /// [`Self::commit`]); commits waiting behind one in flight go out
    /// together as one request, the latest offset of each partition winning.
    /// A revocation waits for queued commits before the partitions move.
    pub fn commit_async(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let queued = self
            .assignment
            .to_commit(offsets)
            .map(|offsets| self.queue_commit(offsets));
        tokio::spawn(async move { outcome(queued?).await })
    }

    fn queue_commit(&self, offsets: Offsets) -> tokio::sync::oneshot::Receiver<Result<()>> {
        self.committer
            .commit(offsets, self.assignment.incarnation(), self.deadline())
    }

    /// The offsets after the records delivered so far, for the partitions
    /// this member owns.
    pub fn consumed_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.assignment
            .consumed(None)
            .into_iter()
            .map(|(tp, (o, _))| (tp, o))
            .collect()
    }

    /// Commits the offsets after every record delivered so far.
    pub async fn commit_consumed(&mut self) -> Result<()> {
        let offsets = self.assignment.consumed(None);
        outcome(self.queue_commit(offsets.clone())).await?;
        self.assignment.committed(&offsets);
        Ok(())
    }

    /// The group's committed offsets of `partitions` (`None` where nothing
    /// is committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<CommittedOffset>>> {
        fetch_with_retry(&self.shared, partitions, self.deadline(), self.backoff()).await
    }

    /// Continues an owned partition at `offset` (the next record delivered
    /// is the one at `offset`).
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if !self.assignment.owned().contains(tp) {
            return Err(
                Error::invalid_input("seek on a partition this member does not own")
                    .with_topic(&tp.topic)
                    .with_partition(tp.partition),
            );
        }
        self.consumer.seek(&tp.topic, tp.partition, offset)?;
        self.assignment.seek(tp, offset)
    }

    /// Commits (with auto-commit), gives the partitions up and leaves the
    /// group, then stops. Bounded by the operation timeout.
    pub async fn close(mut self) -> Result<()> {
        let deadline = self.deadline();
        let mut result = Ok(());
        if self.config.auto_commit.is_some() && !self.finished {
            result = self.commit_consumed().await;
        } else {
            // Commits the application queued land before the member leaves.
            let _ = outcome(self.queue_commit(Offsets::new())).await;
        }
        let owned = self.assignment.clear();
        self.shared.owned.set(self.assignment.owned());
        for tp in &owned {
            self.consumer.unassign(&tp.topic, tp.partition);
        }
        if !owned.is_empty() {
            if let Some(l) = &self.config.listener {
                l.on_revoked(&owned);
            }
        }
        let _ = self.commands.send(Command::Leave);
        if let Some(driver) = self.driver.take() {
            if tokio::time::timeout_at(deadline, driver).await.is_err() {
                tracing::warn!("leaving the group timed out");
            }
        }
        self.finished = true;
        result
    }

    /// Handles one event; `Some` if it produced an item for the stream.
    fn handle_event(&mut self, ev: AppEvent) -> Option<Result<ConsumedRecord>> {
        match ev {
            AppEvent::Revoke(partitions) => {
                let offsets = if self.config.auto_commit.is_some() {
                    self.assignment.consumed(Some(&partitions))
                } else {
                    Offsets::new()
                };
                let incarnation = self.assignment.incarnation();
                // Queued behind the application's commits, which land
                // first; empty, it only waits for them.
                let committed = self.queue_commit(offsets);
                *self.step_mut() = Some(Box::pin(async move {
                    StepDone::Revoked(partitions, outcome(committed).await, incarnation)
                }));
                None
            }
            AppEvent::Assigned {
                added,
                assignment,
                incarnation,
            } => {
                self.assignment.assign(assignment, incarnation);
                self.shared.owned.set(self.assignment.owned());
                if added.is_empty() {
                    return None;
                }
                let shared = self.shared.clone();
                let deadline = self.deadline();
                let backoff = self.backoff().clone();
                *self.step_mut() = Some(Box::pin(async move {
                    let r = fetch_with_retry(&shared, &added, deadline, &backoff).await;
                    StepDone::Offsets(added, r)
                }));
                None
            }
            AppEvent::Lost(partitions) => {
                self.assignment.remove(&partitions);
                for tp in &partitions {
                    self.consumer.unassign(&tp.topic, tp.partition);
                }
                self.shared.owned.set(self.assignment.owned());
                if let Some(l) = &self.config.listener {
                    l.on_lost(&partitions);
                }
                None
            }
            AppEvent::Fatal(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }

    /// Applies a finished background step; `Some` for an item to yield.
    fn step_done(&mut self, done: StepDone) -> Option<Result<ConsumedRecord>> {
        match done {
            StepDone::Revoked(partitions, r, incarnation) => {
                // The membership ended while the application was busy (it
                // let the rebalance timeout pass): the partitions were lost,
                // not handed over.
                let lost = self.shared.incarnation() != incarnation;
                self.assignment.remove(&partitions);
                for tp in &partitions {
                    self.consumer.unassign(&tp.topic, tp.partition);
                }
                // Before the partitions are handed over: commits still
                // queued for them must not land once another member has
                // them.
                self.shared.owned.set(self.assignment.owned());
                if let Some(l) = &self.config.listener {
                    if lost {
                        l.on_lost(&partitions);
                    } else {
                        l.on_revoked(&partitions);
                    }
                }
                let _ = self.commands.send(Command::RevocationDone);
                r.err()
                    .filter(|_| !lost)
                    .map(|e| Err(e.with_message("committing offsets before giving partitions up")))
            }
            StepDone::Offsets(added, Ok(committed)) => {
                let (starts, mut result) =
                    self.assignment
                        .start(added, &committed, self.config.fetch.offset_reset);
                let mut assigned = Vec::new();
                for (tp, start) in starts {
                    if let Err(e) = self.consumer.assign(&tp.topic, tp.partition, start) {
                        result = Some(e);
                        continue;
                    }
                    assigned.push(tp);
                }
                if !assigned.is_empty() {
                    if let Some(l) = &self.config.listener {
                        l.on_assigned(&assigned);
                    }
                }
                result.map(Err)
            }
            StepDone::Offsets(added, Err(e)) => {
                // Try again at the next poll; tell the application now.
                self.deferred.push_front(AppEvent::Assigned {
                    added,
                    assignment: self.assignment.owned().iter().cloned().collect(),
                    incarnation: self.assignment.incarnation(),
                });
                Some(Err(e.with_message(
                    "fetching committed offsets of assigned partitions",
                )))
            }
            // A membership lost meanwhile (fenced, expired) is rejoined by
            // the driver; the commit it failed is not the application's
            // error, as a revocation's is not.
            StepDone::AutoCommitted(r, incarnation) => r
                .err()
                .filter(|_| self.shared.incarnation() == incarnation)
                .map(|e| Err(e.with_message("auto-committing consumed offsets"))),
        }
    }

    /// Starts an auto-commit if one is due and there is something new.
    fn maybe_auto_commit(&mut self, cx: &mut Context<'_>) {
        let Some(interval) = self.config.auto_commit else {
            return;
        };
        let timer = self
            .auto_commit_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if timer.as_mut().poll(cx).is_pending() {
            return;
        }
        timer.as_mut().reset(Instant::now() + interval);
        // Register the waker for the next round.
        let _ = timer.as_mut().poll(cx);
        let offsets = self.assignment.auto_commit();
        if offsets.is_empty() {
            return;
        }
        let committed = self.queue_commit(offsets);
        let incarnation = self.assignment.incarnation();
        *self.step_mut() = Some(Box::pin(async move {
            StepDone::AutoCommitted(outcome(committed).await, incarnation)
        }));
    }
}

impl GroupConsumer {
    /// The next records, at most `max` (at least one): the first is awaited
    /// as the [`Stream`] awaits it, applying assignment changes first; the
    /// others are those already fetched. Assignment changes are applied
    /// between batches, never inside one: every record of a batch belongs
    /// to a partition the member owns, and when the application asks for
    /// the next batch the previous one counts as processed (what a
    /// revocation or auto-commit then commits). A batch holds records of one
    /// partition's fetched chunk. `None` once the member has stopped.
    ///
    /// ```no_run
    /// # async fn example(mut consumer: rskafka::client::group::GroupConsumer) -> rskafka::error::Result<()> {
    /// while let Some(batch) = consumer.next_batch(500).await {
    ///     for record in batch? {
    ///         println!("{}/{} @{}", record.topic, record.partition, record.offset);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<ConsumedRecord>>> {
        let first = match futures::StreamExt::next(self).await? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let mut batch = vec![first];
        // The rest of the first record's chunk only: a batch never spans
        // chunks, so it counts against the prefetch budget whole until the
        // application asks for the next one.
        for record in self.consumer.rest_of_chunk(max.saturating_sub(1)) {
            batch.extend(self.deliver(record));
        }
        Some(Ok(batch))
    }

    /// Hands `record` out if its partition is still owned, advancing the
    /// consumed position.
    fn deliver(&mut self, record: ConsumedRecord) -> Option<ConsumedRecord> {
        self.assignment.deliver(&record).then_some(record)
    }
}

impl Stream for GroupConsumer {
    type Item = Result<ConsumedRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(step) = this.step_mut().as_mut() {
                match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => {
                        *this.step_mut() = None;
                        if let Some(item) = this.step_done(done) {
                            return Poll::Ready(Some(item));
                        }
                        continue;
                    }
                }
            }
            if let Some(ev) = this.deferred.pop_front() {
                if let Some(item) = this.handle_event(ev) {
                    return Poll::Ready(Some(item));
                }
                continue;
            }
            match this.events.poll_recv(cx) {
                Poll::Ready(Some(ev)) => {
                    if let Some(item) = this.handle_event(ev) {
                        return Poll::Ready(Some(item));
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(Error::new(ErrorKind::Protocol)
                        .with_message("the group membership task stopped"))));
                }
                Poll::Pending => {}
            }
            this.maybe_auto_commit(cx);
            if this.step_mut().is_some() {
                continue;
            }
            match Pin::new(&mut this.consumer).poll_next(cx) {
                Poll::Ready(Some(Ok(record))) => match this.deliver(record) {
                    Some(record) => return Poll::Ready(Some(Ok(record))),
                    None => continue,
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Without close(): the driver leaves the group on its own (its
        // command channel closes); nothing is committed.
        if let Some(driver) = self.driver.take() {
            drop(driver);
        }
    }
}
