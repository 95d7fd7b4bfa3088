//! A member's topics when they may change: those named, and those whose
//! names a [`TopicMatcher`] accepts, looked for again every metadata period
//! (without I/O, as the members it wraps).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::{
    config::{GroupConfig, TopicMatcher},
    member::{ClusterTopic, GroupRequest, GroupResponse, Member, MembershipEvent},
};

/// How often a member looks for new matching topics (and the leader of a
/// classic group for new partitions): the client's metadata max age,
/// within 1 to 30 s (the Java client waits for its next metadata refresh,
/// 5 minutes by default).
pub(crate) fn metadata_period(metadata_max_age: Duration) -> Duration {
    metadata_max_age.clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// A [`Member`] whose subscription follows a [`TopicMatcher`]: it lists the
/// cluster's topics when it starts and every `period`, and hands the
/// matched set to the member. Without a matcher it only passes through.
#[derive(Debug)]
pub(crate) struct Subscribed<M> {
    member: M,
    named: Vec<String>,
    matcher: Option<TopicMatcher>,
    period: Duration,
    /// When to list the topics next (`None`: at once).
    next_listing: Option<Instant>,
    listing: bool,
    /// Whether the first listing was answered: until then the member waits,
    /// so that it joins with the topics matched now rather than with none.
    started: bool,
    /// Matched topics the member has not taken up yet (it takes them
    /// between generations).
    pending: Option<Vec<String>>,
}

impl<M: Member> Subscribed<M> {
    /// `member`, subscribed to the topics `config` names and those its
    /// matcher accepts, looked for every `period`.
    pub(crate) fn new(member: M, config: &GroupConfig, period: Duration) -> Self {
        Self {
            started: config.matching.is_none(),
            member,
            named: config.topics.clone(),
            matcher: config.matching.clone(),
            period,
            next_listing: None,
            listing: false,
            pending: None,
        }
    }

    /// The topics to subscribe to, sorted: those named, and the matched
    /// ones of `listed` (internal ones excepted).
    fn matched(&self, matcher: &TopicMatcher, listed: &[ClusterTopic]) -> Vec<String> {
        let mut topics: BTreeSet<String> = self.named.iter().cloned().collect();
        topics.extend(
            listed
                .iter()
                // A topic with a passing error (no leader yet) is still there.
                .filter(|t| {
                    (t.error.is_ok() || t.error.is_retriable())
                        && !t.is_internal
                        && matcher.matches(&t.name)
                })
                .map(|t| t.name.clone()),
        );
        topics.into_iter().collect()
    }
}

impl<M: Member> Member for Subscribed<M> {
    fn poll_transmit(&mut self, now: Instant) -> Option<GroupRequest> {
        let due = self.next_listing.is_none_or(|t| now >= t);
        if self.matcher.is_some() && !self.listing && due && !self.member.is_done() {
            self.listing = true;
            self.next_listing = Some(now + self.period);
            return Some(GroupRequest::ListTopics);
        }
        if !self.started && !self.member.is_done() {
            return None;
        }
        if let Some(topics) = &self.pending {
            if self.member.set_topics(topics) {
                self.pending = None;
            }
        }
        self.member.poll_transmit(now)
    }

    fn handle_response(&mut self, response: GroupResponse, now: Instant) {
        let GroupResponse::Topics(result) = response else {
            return self.member.handle_response(response, now);
        };
        self.listing = false;
        self.started = true;
        match (result, &self.matcher) {
            (Ok(listed), Some(matcher)) => self.pending = Some(self.matched(matcher, &listed)),
            (Ok(_), None) => {}
            (Err(e), _) => {
                tracing::debug!(error = %e, "matching topics failed; trying again later")
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let listing = self
            .next_listing
            .filter(|_| self.matcher.is_some() && !self.listing && !self.member.is_done());
        match (self.member.poll_timeout(), listing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.member.handle_timeout(now);
    }

    fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.member.poll_event()
    }

    fn revocation_done(&mut self, now: Instant) {
        self.member.revocation_done(now);
    }

    fn leave(&mut self, now: Instant) {
        self.pending = None;
        self.member.leave(now);
    }

    fn set_topics(&mut self, topics: &[String]) -> bool {
        self.member.set_topics(topics)
    }

    fn coordinator(&self) -> Option<i32> {
        self.member.coordinator()
    }

    fn member_id(&self) -> &str {
        self.member.member_id()
    }

    fn generation(&self) -> i32 {
        self.member.generation()
    }

    fn is_done(&self) -> bool {
        self.member.is_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::Error, protocol::ErrorCode};

    /// A member that records the topics it was given and asks for nothing
    /// but a FindCoordinator; it refuses new topics while `busy`.
    #[derive(Debug, Default)]
    struct Recorder {
        topics: Vec<Vec<String>>,
        busy: bool,
        done: bool,
    }

    impl Member for Recorder {
        fn poll_transmit(&mut self, _now: Instant) -> Option<GroupRequest> {
            Some(GroupRequest::FindCoordinator)
        }
        fn handle_response(&mut self, _response: GroupResponse, _now: Instant) {}
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<MembershipEvent> {
            None
        }
        fn revocation_done(&mut self, _now: Instant) {}
        fn leave(&mut self, _now: Instant) {
            self.done = true;
        }
        fn set_topics(&mut self, topics: &[String]) -> bool {
            if !self.busy {
                self.topics.push(topics.to_vec());
            }
            !self.busy
        }
        fn coordinator(&self) -> Option<i32> {
            None
        }
        fn member_id(&self) -> &str {
            ""
        }
        fn generation(&self) -> i32 {
            -1
        }
        fn is_done(&self) -> bool {
            self.done
        }
    }

    const PERIOD: Duration = Duration::from_secs(5);

    fn topic(name: &str, is_internal: bool, error: ErrorCode) -> ClusterTopic {
        ClusterTopic {
            name: name.into(),
            is_internal,
            error,
        }
    }

    fn matching() -> Subscribed<Recorder> {
        let config = GroupConfig::new("g", ["named"])
            .subscribe_matching(|t: &str| t.starts_with("m-") || t.starts_with("__"));
        Subscribed::new(Recorder::default(), &config, PERIOD)
    }

    #[test]
    fn named_topics_pass_through() {
        let t0 = Instant::now();
        let mut s = Subscribed::new(
            Recorder::default(),
            &GroupConfig::new("g", ["named"]),
            PERIOD,
        );
        assert_eq!(s.poll_transmit(t0), Some(GroupRequest::FindCoordinator));
        assert_eq!(s.poll_timeout(), None);
        assert!(s.member.topics.is_empty());
    }

    #[test]
    fn the_member_joins_with_the_topics_matched_at_the_start() {
        let t0 = Instant::now();
        let mut s = matching();
        assert_eq!(s.poll_transmit(t0), Some(GroupRequest::ListTopics));
        assert_eq!(
            s.poll_transmit(t0),
            None,
            "the member waits for the listing"
        );
        s.handle_response(
            GroupResponse::Topics(Ok(vec![
                topic("m-b", false, ErrorCode::NONE),
                // No leader yet: still there.
                topic("m-a", false, ErrorCode::LEADER_NOT_AVAILABLE),
                topic("m-denied", false, ErrorCode::TOPIC_AUTHORIZATION_FAILED),
                topic("__consumer_offsets", true, ErrorCode::NONE),
                topic("other", false, ErrorCode::NONE),
            ])),
            t0,
        );
        assert_eq!(s.poll_transmit(t0), Some(GroupRequest::FindCoordinator));
        assert_eq!(s.member.topics, vec![vec!["m-a", "m-b", "named"]]);
    }

    #[test]
    fn a_failed_listing_starts_with_the_named_topics_and_looks_again_later() {
        let t0 = Instant::now();
        let mut s = matching();
        assert_eq!(s.poll_transmit(t0), Some(GroupRequest::ListTopics));
        s.handle_response(
            GroupResponse::Topics(Err(Error::new(crate::error::ErrorKind::Timeout))),
            t0,
        );
        assert_eq!(s.poll_transmit(t0), Some(GroupRequest::FindCoordinator));
        assert!(s.member.topics.is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + PERIOD));
        assert_eq!(s.poll_transmit(t0 + PERIOD), Some(GroupRequest::ListTopics));
    }

    #[test]
    fn a_busy_member_takes_the_new_topics_later() {
        let t0 = Instant::now();
        let mut s = matching();
        s.poll_transmit(t0);
        s.handle_response(GroupResponse::Topics(Ok(Vec::new())), t0);
        s.poll_transmit(t0);
        s.member.busy = true;
        let t1 = t0 + PERIOD;
        assert_eq!(s.poll_transmit(t1), Some(GroupRequest::ListTopics));
        assert_eq!(s.poll_transmit(t1), Some(GroupRequest::FindCoordinator));
        s.handle_response(
            GroupResponse::Topics(Ok(vec![topic("m-new", false, ErrorCode::NONE)])),
            t1,
        );
        s.poll_transmit(t1);
        assert_eq!(s.member.topics, vec![vec!["named"]]);
        s.member.busy = false;
        s.poll_transmit(t1);
        assert_eq!(
            s.member.topics,
            vec![
                vec!["named".to_owned()],
                vec!["m-new".into(), "named".into()]
            ]
        );
        s.leave(t1);
        assert_eq!(s.poll_timeout(), None, "no more listings once left");
    }
}
