//! [`GroupConfig`]: what a group member is and does, for the consumer and
//! for the membership state machines alike.

use std::{sync::Arc, time::Duration};

use super::{
    assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor},
    TopicPartition,
};
use crate::{
    client::consumer::{ConsumerConfig, IsolationLevel, OffsetReset},
    error::{Error, Result},
};

/// Which group protocol a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol: JoinGroup/SyncGroup/Heartbeat, assignment by
    /// the group leader with the configured assignors. Works with every
    /// broker and mixes with classic members of other clients.
    #[default]
    Classic,
    /// The consumer protocol of KIP-848 (Kafka 4.0+): ConsumerGroupHeartbeat,
    /// assignment computed by the coordinator, incremental by design.
    Consumer,
}

/// Notified of assignment changes, from within the
/// [`GroupConsumer`](super::GroupConsumer)'s stream (so between records:
/// never while the application processes one).
pub trait RebalanceListener: Send + Sync {
    /// The member got these partitions (consumption starts at their
    /// committed offsets).
    fn on_assigned(&self, _partitions: &[TopicPartition]) {}
    /// The member gives these partitions up; with auto-commit their
    /// consumed offsets were committed just before.
    fn on_revoked(&self, _partitions: &[TopicPartition]) {}
    /// The member lost these partitions without a chance to commit (its
    /// membership ended: it was fenced or its session expired).
    fn on_lost(&self, _partitions: &[TopicPartition]) {}
}

/// Settings of a [`GroupConsumer`](super::GroupConsumer).
///
/// ```
/// use std::time::Duration;
/// use rskafka::client::group::{GroupConfig, GroupProtocol};
///
/// let config = GroupConfig::new("billing", ["invoices"])
///     .instance_id("billing-1")
///     .auto_commit(None)
///     .protocol(GroupProtocol::Classic)
///     .session_timeout(Duration::from_secs(10));
/// assert_eq!(config.topics(), ["invoices"]);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct GroupConfig {
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) assignors: Vec<Arc<dyn Assignor>>,
    pub(crate) protocol: GroupProtocol,
    pub(crate) server_assignor: Option<String>,
    pub(crate) auto_commit: Option<Duration>,
    pub(crate) fetch: ConsumerConfig,
    pub(crate) listener: Option<Arc<dyn RebalanceListener>>,
    pub(crate) matching: Option<TopicMatcher>,
}

/// Picks the topics of a [`GroupConfig::subscribe_matching`] subscription
/// by name (such as a regular expression's `is_match`).
#[derive(Clone)]
pub struct TopicMatcher(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl TopicMatcher {
    /// Wraps `matcher`.
    pub fn new(matcher: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(matcher))
    }

    /// Whether topic `name` is part of the subscription.
    pub fn matches(&self, name: &str) -> bool {
        (self.0)(name)
    }
}

impl std::fmt::Debug for TopicMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicMatcher(..)")
    }
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("instance_id", &self.instance_id)
            .field("protocol", &self.protocol)
            .field(
                "assignors",
                &self
                    .assignors
                    .iter()
                    .map(|a| a.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("auto_commit", &self.auto_commit)
            .field("matching", &self.matching)
            .finish_non_exhaustive()
    }
}

impl GroupConfig {
    /// Defaults for consuming `topics` in group `group_id`.
    pub fn new<S: Into<String>>(
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            instance_id: None,
            rack_id: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            protocol: GroupProtocol::Classic,
            server_assignor: None,
            auto_commit: Some(Duration::from_secs(5)),
            fetch: ConsumerConfig::default(),
            listener: None,
            matching: None,
        }
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The topics named to consume (see also [`Self::subscribe_matching`]).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The matcher of [`Self::subscribe_matching`], if one was set.
    pub fn matcher(&self) -> Option<&TopicMatcher> {
        self.matching.as_ref()
    }

    /// A static instance id (KIP-345): a member that restarts with the same
    /// id within the session timeout gets its partitions back without a
    /// rebalance. `None`: a dynamic member.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The member's rack, for rack-aware assignment.
    pub fn rack_id(mut self, rack: impl Into<String>) -> Self {
        self.rack_id = Some(rack.into());
        self
    }

    /// The coordinator removes a member it has not heard from for this long
    /// (classic protocol; default 45 s). KIP-848 groups use the broker's
    /// setting.
    pub fn session_timeout(mut self, t: Duration) -> Self {
        self.session_timeout = t;
        self
    }

    /// How long a rebalance waits for members to rejoin; also the time the
    /// application has to finish processing before a revocation completes
    /// (default 60 s).
    pub fn rebalance_timeout(mut self, t: Duration) -> Self {
        self.rebalance_timeout = t;
        self
    }

    /// How often to heartbeat (classic; default 3 s). KIP-848 groups use
    /// the interval the coordinator sends.
    pub fn heartbeat_interval(mut self, t: Duration) -> Self {
        self.heartbeat_interval = t;
        self
    }

    /// Classic assignors, most preferred first (default `range` then
    /// `cooperative-sticky`, as the Java client). The rebalance protocol is
    /// cooperative only if all of them support it.
    pub fn assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.assignors = assignors;
        self
    }

    /// Classic or KIP-848.
    pub fn protocol(mut self, protocol: GroupProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The server-side assignor of a KIP-848 group (`uniform` or `range`);
    /// `None`: the broker's default.
    pub fn server_assignor(mut self, name: impl Into<String>) -> Self {
        self.server_assignor = Some(name.into());
        self
    }

    /// Commit the offsets of delivered records every interval (default
    /// 5 s), and before revoking partitions or closing. The commit happens
    /// when the application asks for the next record, so a record counts as
    /// processed once the application comes back for more. `None`: commit
    /// explicitly with [`GroupConsumer::commit`](super::GroupConsumer::commit).
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// Where to start partitions without a committed offset, and what to do
    /// on an out-of-range offset (default latest, as the Java client): sets
    /// [`ConsumerConfig::offset_reset`] of [`Self::fetch`].
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.fetch.offset_reset = reset;
        self
    }

    /// Which records are visible (default read_uncommitted): sets
    /// [`ConsumerConfig::isolation`] of [`Self::fetch`].
    pub fn isolation(mut self, isolation: IsolationLevel) -> Self {
        self.fetch.isolation = isolation;
        self
    }

    /// Fetch tuning, offset reset and isolation included (see
    /// [`Self::offset_reset`] and [`Self::isolation`]). Its assignments are
    /// ignored: the group assigns.
    pub fn fetch(mut self, fetch: ConsumerConfig) -> Self {
        self.fetch = fetch;
        self
    }

    /// Told of assignment changes.
    pub fn listener(mut self, listener: Arc<dyn RebalanceListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Also consumes every topic whose name `matcher` accepts, internal
    /// topics excepted, as the Java client's `subscribe(Pattern)` does:
    /// matched when the member starts and again at each metadata refresh
    /// (the client's metadata max age, at most 30 s), so that topics
    /// created later join the subscription. A change of the matched set
    /// rebalances a classic group and updates a KIP-848 member's
    /// subscription. [`Self::topics`] may then be empty.
    ///
    /// ```
    /// use rskafka::client::group::GroupConfig;
    ///
    /// let config = GroupConfig::new("billing", Vec::<String>::new())
    ///     .subscribe_matching(|topic: &str| topic.starts_with("invoices-"));
    /// assert!(config.matcher().is_some_and(|m| m.matches("invoices-eu")));
    /// ```
    pub fn subscribe_matching(
        mut self,
        matcher: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.matching = Some(TopicMatcher::new(matcher));
        self
    }

    /// The fetcher's settings: [`Self::fetch`] without assignments (the
    /// group assigns).
    pub(super) fn consumer_config(&self) -> ConsumerConfig {
        let mut fetch = self.fetch.clone();
        fetch.assignments.clear();
        fetch
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.group_id.is_empty() {
            return Err(Error::invalid_input("empty group id"));
        }
        if (self.topics.is_empty() && self.matching.is_none())
            || self.topics.iter().any(String::is_empty)
        {
            return Err(Error::invalid_input(
                "a group consumer needs non-empty topic names (or subscribe_matching)",
            ));
        }
        if self.protocol == GroupProtocol::Classic && self.assignors.is_empty() {
            return Err(Error::invalid_input(
                "a classic group member needs an assignor",
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return Err(Error::invalid_input(
                "the heartbeat interval must be positive and below the session timeout",
            ));
        }
        if self.auto_commit.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid_input(
                "the auto-commit interval must be positive",
            ));
        }
        Ok(())
    }
}
