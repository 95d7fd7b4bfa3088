//! Asking each partition's leader about its partitions, without I/O: which
//! broker gets which partitions given the metadata, which answers are final,
//! which topics' cached metadata is stale, and which error to report. The
//! async loop in `offsets.rs` fetches metadata, sends, waits between
//! rounds, and does what this says.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    client::group::TopicPartition,
    cluster::Metadata,
    error::{Error, Result},
    protocol::{ApiKey, ErrorCode},
};

/// One partition's answer in a per-leader request.
pub(super) type PartitionAnswer<T> = (TopicPartition, Result<T>);

/// What to do with the metadata just fetched.
#[derive(Debug, PartialEq)]
pub(super) enum Round {
    /// Forget these topics' cached metadata and look again at once: a
    /// cached entry may predate new partitions.
    Refresh(Vec<String>),
    /// Forget these topics' cached metadata (their leader is unknown), then
    /// ask each broker about its partitions.
    Ask {
        invalidate: Vec<String>,
        by_broker: BTreeMap<i32, Vec<TopicPartition>>,
    },
}

/// The partitions still to be answered, and what the answers so far gave.
#[derive(Debug)]
pub(super) struct PerLeader<T> {
    api: ApiKey,
    pending: BTreeSet<TopicPartition>,
    out: BTreeMap<TopicPartition, T>,
    /// Topics already looked up in fresh metadata.
    refreshed: BTreeSet<String>,
    /// The last retriable error of this round, reported if time runs out.
    last: Option<Error>,
}

impl<T> PerLeader<T> {
    pub(super) fn new(api: ApiKey, partitions: impl IntoIterator<Item = TopicPartition>) -> Self {
        Self {
            api,
            pending: partitions.into_iter().collect(),
            out: BTreeMap::new(),
            refreshed: BTreeSet::new(),
            last: None,
        }
    }

    /// Every partition has its answer.
    pub(super) fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The topics whose metadata the next round needs.
    pub(super) fn topics(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|tp| tp.topic.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Plans a round from `md`; an error fails the call.
    pub(super) fn plan(&mut self, md: &Metadata) -> Result<Round> {
        let known = |tp: &TopicPartition| {
            md.topics
                .get(&*tp.topic)
                .filter(|t| t.error.is_ok())
                .and_then(|t| t.partitions.get(&tp.partition))
        };
        let unknown: Vec<&TopicPartition> = self
            .pending
            .iter()
            .filter(|tp| known(tp).is_none())
            .collect();
        let stale: BTreeSet<String> = unknown
            .iter()
            .map(|tp| tp.topic.to_string())
            .filter(|t| !self.refreshed.contains(t))
            .collect();
        if !stale.is_empty() {
            self.refreshed.extend(stale.iter().cloned());
            return Ok(Round::Refresh(stale.into_iter().collect()));
        }
        self.last = None;
        let mut invalidate = BTreeSet::new();
        if let Some(tp) = unknown.first() {
            // The topic's own error if it has one (not authorised, no
            // leader yet), else an unknown partition.
            let e = match md.topics.get(&*tp.topic).map(|t| t.error) {
                Some(code) if !code.is_ok() => Error::kafka(code, None),
                _ => Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
            }
            .with_api(self.api)
            .with_topic(&tp.topic)
            .with_partition(tp.partition);
            if !e.is_retriable() {
                return Err(e);
            }
            invalidate.extend(unknown.iter().map(|tp| tp.topic.to_string()));
            self.last = Some(e);
        }
        let mut by_broker: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for tp in self.pending.iter().filter(|tp| !unknown.contains(tp)) {
            match known(tp).and_then(|p| p.leader) {
                Some(leader) => by_broker.entry(leader).or_default().push(tp.clone()),
                None => {
                    invalidate.insert(tp.topic.to_string());
                    self.last = Some(Error::kafka(ErrorCode::LEADER_NOT_AVAILABLE, None));
                }
            }
        }
        Ok(Round::Ask {
            invalidate: invalidate.into_iter().collect(),
            by_broker,
        })
    }

    /// Takes a broker's answer about the partitions it was `asked`; gives
    /// the topics whose cached metadata is stale, or the error that fails
    /// the call.
    pub(super) fn on_answer(
        &mut self,
        asked: &[TopicPartition],
        answer: Result<Vec<PartitionAnswer<T>>>,
    ) -> Result<Vec<String>> {
        let mut invalidate = BTreeSet::new();
        match answer {
            Ok(parts) => {
                for (tp, r) in parts {
                    // A broker's answer for a partition it was not asked
                    // about says nothing.
                    if !self.pending.contains(&tp) || !asked.contains(&tp) {
                        continue;
                    }
                    match r {
                        Ok(v) => {
                            self.pending.remove(&tp);
                            self.out.insert(tp, v);
                        }
                        Err(e) => {
                            let e = e
                                .with_api(self.api)
                                .with_topic(&tp.topic)
                                .with_partition(tp.partition);
                            if !e.is_retriable() {
                                return Err(e);
                            }
                            invalidate.insert(tp.topic.to_string());
                            self.last = Some(e);
                        }
                    }
                }
            }
            Err(e) if e.is_retriable() => {
                // The leader may be gone: look its partitions up again
                // rather than ask it until the deadline.
                invalidate.extend(asked.iter().map(|tp| tp.topic.to_string()));
                self.last = Some(e.with_api(self.api));
            }
            Err(e) => return Err(e.with_api(self.api)),
        }
        Ok(invalidate.into_iter().collect())
    }

    /// The error to report when time runs out before every answer came.
    pub(super) fn give_up(self) -> Error {
        let api = self.api;
        self.last.unwrap_or_else(|| {
            Error::protocol("leaders did not answer for every partition").with_api(api)
        })
    }

    /// The answers, once [`Self::is_done`].
    pub(super) fn finish(self) -> BTreeMap<TopicPartition, T> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{PartitionInfo, TopicInfo};

    const API: ApiKey = ApiKey::LIST_OFFSETS;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// A topic in test metadata: name, error, each partition's leader.
    type TopicLeaders<'a> = (&'a str, ErrorCode, &'a [(i32, Option<i32>)]);

    fn metadata(topics: &[TopicLeaders<'_>]) -> Metadata {
        let mut md = Metadata::default();
        for (name, error, partitions) in topics {
            md.topics.insert(
                (*name).to_owned(),
                TopicInfo {
                    name: (*name).to_owned(),
                    id: Default::default(),
                    error: *error,
                    is_internal: false,
                    partitions: partitions
                        .iter()
                        .map(|&(id, leader)| {
                            (
                                id,
                                PartitionInfo {
                                    id,
                                    error: ErrorCode::NONE,
                                    leader,
                                    leader_epoch: 0,
                                    replicas: vec![],
                                    isr: vec![],
                                    offline: vec![],
                                },
                            )
                        })
                        .collect(),
                },
            );
        }
        md
    }

    #[test]
    fn partitions_go_to_their_leaders() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0), tp("a", 1), tp("b", 0)]);
        assert_eq!(rounds.topics(), vec!["a".to_owned(), "b".to_owned()]);
        let md = metadata(&[
            ("a", ErrorCode::NONE, &[(0, Some(1)), (1, Some(2))]),
            ("b", ErrorCode::NONE, &[(0, Some(1))]),
        ]);
        assert_eq!(
            rounds.plan(&md).unwrap(),
            Round::Ask {
                invalidate: vec![],
                by_broker: BTreeMap::from([
                    (1, vec![tp("a", 0), tp("b", 0)]),
                    (2, vec![tp("a", 1)]),
                ]),
            }
        );
        let stale = rounds
            .on_answer(
                &[tp("a", 0), tp("b", 0)],
                Ok(vec![
                    (tp("a", 0), Ok(10)),
                    (tp("b", 0), Ok(20)),
                    // Not asked of this broker: ignored.
                    (tp("a", 1), Ok(99)),
                ]),
            )
            .unwrap();
        assert!(stale.is_empty());
        assert!(!rounds.is_done());
        rounds
            .on_answer(&[tp("a", 1)], Ok(vec![(tp("a", 1), Ok(11))]))
            .unwrap();
        assert!(rounds.is_done());
        assert_eq!(
            rounds.finish(),
            BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 11), (tp("b", 0), 20)])
        );
    }

    #[test]
    fn an_unknown_partition_is_looked_up_once_more_then_retried() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0), tp("a", 5)]);
        let md = metadata(&[("a", ErrorCode::NONE, &[(0, Some(1))])]);
        assert_eq!(rounds.plan(&md).unwrap(), Round::Refresh(vec!["a".into()]));
        // Still unknown in fresh metadata: retriable, the rest is asked.
        let Round::Ask {
            invalidate,
            by_broker,
        } = rounds.plan(&md).unwrap()
        else {
            panic!("expected a round of requests");
        };
        assert_eq!(invalidate, vec!["a".to_owned()]);
        assert_eq!(by_broker, BTreeMap::from([(1, vec![tp("a", 0)])]));
        let e = rounds.give_up();
        assert_eq!(e.error_code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    }

    #[test]
    fn a_topic_error_that_is_final_fails_the_call() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("secret", 0)]);
        let md = metadata(&[("secret", ErrorCode::TOPIC_AUTHORIZATION_FAILED, &[])]);
        assert_eq!(
            rounds.plan(&md).unwrap(),
            Round::Refresh(vec!["secret".into()])
        );
        let e = rounds.plan(&md).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
    }

    #[test]
    fn no_leader_means_look_again_later() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0)]);
        let md = metadata(&[("a", ErrorCode::NONE, &[(0, None)])]);
        assert_eq!(
            rounds.plan(&md).unwrap(),
            Round::Ask {
                invalidate: vec!["a".into()],
                by_broker: BTreeMap::new(),
            }
        );
        assert_eq!(
            rounds.give_up().error_code(),
            Some(ErrorCode::LEADER_NOT_AVAILABLE)
        );
    }

    #[test]
    fn partition_errors_are_retried_or_final() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0), tp("b", 0)]);
        let asked = [tp("a", 0), tp("b", 0)];
        let stale = rounds
            .on_answer(
                &asked,
                Ok(vec![
                    (
                        tp("a", 0),
                        Err(Error::kafka(ErrorCode::NOT_LEADER_OR_FOLLOWER, None)),
                    ),
                    (tp("b", 0), Ok(1)),
                ]),
            )
            .unwrap();
        assert_eq!(stale, vec!["a".to_owned()]);
        assert_eq!(rounds.topics(), vec!["a".to_owned()]);
        let e = rounds
            .on_answer(
                &asked,
                Ok(vec![(
                    tp("a", 0),
                    Err(Error::kafka(ErrorCode::POLICY_VIOLATION, None)),
                )]),
            )
            .unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::POLICY_VIOLATION));
        let text = e.to_string();
        assert!(text.contains('a'), "{text}");
    }

    #[test]
    fn a_failed_request_is_retried_or_final() {
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0), tp("b", 1)]);
        let asked = [tp("a", 0), tp("b", 1)];
        let stale = rounds
            .on_answer(
                &asked,
                Err(Error::kafka(ErrorCode::REQUEST_TIMED_OUT, None)),
            )
            .unwrap();
        assert_eq!(stale, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            rounds.give_up().error_code(),
            Some(ErrorCode::REQUEST_TIMED_OUT)
        );
        let mut rounds: PerLeader<i64> = PerLeader::new(API, [tp("a", 0)]);
        let e = rounds
            .on_answer(
                &[tp("a", 0)],
                Err(Error::kafka(ErrorCode::CLUSTER_AUTHORIZATION_FAILED, None)),
            )
            .unwrap_err();
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
        );
        // Nothing went wrong and nothing answered: a protocol error.
        let silent: PerLeader<i64> = PerLeader::new(API, [tp("a", 0)]);
        assert_eq!(silent.give_up().kind(), crate::error::ErrorKind::Protocol);
    }
}
