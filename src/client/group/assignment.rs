//! The application side's view of a member's partitions, without I/O: what
//! it owns, how far it delivered each partition, what it last committed,
//! and the decisions that follow from these (what a revocation or an
//! auto-commit commits, where a new partition starts). The
//! [`GroupConsumer`](super::GroupConsumer) carries them out.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{offset_retry::Offsets, CommittedOffset, TopicPartition};
use crate::{
    client::consumer::{ConsumedRecord, OffsetReset, StartOffset},
    error::{Error, Result},
};

/// A member's partitions as the application side sees them.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    /// Partitions currently assigned to this member.
    owned: BTreeSet<TopicPartition>,
    /// Next offset (and leader epoch) after the last record delivered, per
    /// partition.
    consumed: HashMap<TopicPartition, (i64, Option<i32>)>,
    /// What was last committed by this member, to skip empty auto-commits.
    committed: HashMap<TopicPartition, i64>,
    /// The membership incarnation of the current assignment: commits fail
    /// once the membership was lost after it.
    incarnation: u64,
    /// The key of the partition of the last record delivered.
    last_tp: Option<(Arc<str>, i32, TopicPartition)>,
}

impl Assignment {
    /// The partitions owned.
    pub(crate) fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// The membership incarnation of the current assignment.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The group assigned `assignment` in membership `incarnation`.
    pub(crate) fn assign(&mut self, assignment: Vec<TopicPartition>, incarnation: u64) {
        self.owned = assignment.into_iter().collect();
        self.incarnation = incarnation;
    }

    /// Gives `partitions` up (revoked or lost).
    pub(crate) fn remove(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.owned.remove(tp);
            self.consumed.remove(tp);
            self.committed.remove(tp);
        }
    }

    /// Gives every partition up; returns them.
    pub(crate) fn clear(&mut self) -> Vec<TopicPartition> {
        let owned: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
        self.remove(&owned);
        owned
    }

    /// The offsets after the records delivered, of the owned partitions
    /// (of `only` those, if given).
    pub(crate) fn consumed(&self, only: Option<&[TopicPartition]>) -> Offsets {
        self.consumed
            .iter()
            .filter(|(tp, _)| self.owned.contains(*tp))
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .map(|(tp, v)| (tp.clone(), *v))
            .collect()
    }

    /// Notes `offsets` as committed.
    pub(crate) fn committed(&mut self, offsets: &Offsets) {
        for (tp, (o, _)) in offsets {
            self.committed.insert(tp.clone(), *o);
        }
    }

    /// What an auto-commit commits: the delivered offsets that moved since
    /// the last commit, noted as committed (an empty map: nothing to do).
    pub(crate) fn auto_commit(&mut self) -> Offsets {
        let offsets: Offsets = self
            .consumed(None)
            .into_iter()
            .filter(|(tp, (o, _))| self.committed.get(tp) != Some(o))
            .collect();
        self.committed(&offsets);
        offsets
    }

    /// `offsets` to commit, with the leader epochs of the records delivered
    /// where the offset is the one after the last delivered. Negative
    /// offsets are refused.
    pub(crate) fn to_commit(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Result<Offsets> {
        let offsets: Offsets = offsets
            .into_iter()
            .map(|(tp, o)| {
                let epoch = self
                    .consumed
                    .get(&tp)
                    .filter(|(c, _)| *c == o)
                    .and_then(|(_, e)| *e);
                (tp, (o, epoch))
            })
            .collect();
        if let Some((tp, (o, _))) = offsets.iter().find(|(_, (o, _))| *o < 0) {
            return Err(
                Error::invalid_input(format!("negative offset {o} to commit"))
                    .with_topic(&tp.topic)
                    .with_partition(tp.partition),
            );
        }
        Ok(offsets)
    }

    /// Where to start each of `added` still owned: at its `committed`
    /// offset, or by `reset` without one. Partitions that cannot start
    /// (no committed offset under [`OffsetReset::Error`]) come with an
    /// error.
    pub(crate) fn start(
        &mut self,
        added: Vec<TopicPartition>,
        committed: &BTreeMap<TopicPartition, Option<CommittedOffset>>,
        reset: OffsetReset,
    ) -> (Vec<(TopicPartition, StartOffset)>, Option<Error>) {
        let mut error = None;
        let mut starts = Vec::new();
        for tp in added {
            // Revoked or lost while the offsets were fetched.
            if !self.owned.contains(&tp) {
                continue;
            }
            let start = match committed.get(&tp).cloned().flatten() {
                Some(c) => {
                    self.consumed.insert(tp.clone(), (c.offset, c.leader_epoch));
                    self.committed.insert(tp.clone(), c.offset);
                    StartOffset::At(c.offset)
                }
                None => match reset {
                    OffsetReset::Earliest => StartOffset::Earliest,
                    OffsetReset::Latest => StartOffset::Latest,
                    OffsetReset::Error => {
                        error = Some(
                            Error::invalid_input(
                                "no committed offset and the reset policy is Error",
                            )
                            .with_topic(&tp.topic)
                            .with_partition(tp.partition),
                        );
                        continue;
                    }
                },
            };
            starts.push((tp, start));
        }
        (starts, error)
    }

    /// Continues owned partition `tp` at `offset`.
    pub(crate) fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if !self.owned.contains(tp) {
            return Err(
                Error::invalid_input("seek on a partition this member does not own")
                    .with_topic(&tp.topic)
                    .with_partition(tp.partition),
            );
        }
        self.consumed.insert(tp.clone(), (offset, None));
        Ok(())
    }

    /// Whether `record` may be handed out (its partition is still owned);
    /// if so, its partition's delivered position advances past it.
    pub(crate) fn deliver(&mut self, record: &ConsumedRecord) -> bool {
        // Records come in runs of one partition: reuse its key instead of
        // allocating one per record.
        let same = self
            .last_tp
            .as_ref()
            .is_some_and(|(t, p, _)| Arc::ptr_eq(t, &record.topic) && *p == record.partition);
        if !same {
            let tp = TopicPartition::new(record.topic.to_string(), record.partition);
            self.last_tp = Some((record.topic.clone(), record.partition, tp));
        }
        let Some((_, _, tp)) = self.last_tp.as_ref() else {
            return false;
        };
        if !self.owned.contains(tp) {
            // Fetched before the partition was given up.
            return false;
        }
        let next = (record.offset + 1, record.leader_epoch);
        match self.consumed.get_mut(tp) {
            Some(v) => *v = next,
            None => {
                self.consumed.insert(tp.clone(), next);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::{protocol::record::TimestampType, record::Record};

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn record(topic: &Arc<str>, partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            record: Record {
                key: None,
                value: None,
                headers: Vec::new(),
                timestamp: OffsetDateTime::UNIX_EPOCH,
            },
            timestamp_type: TimestampType::CreateTime,
            leader_epoch: Some(4),
        }
    }

    fn committed(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: Some(2),
            metadata: None,
        })
    }

    #[test]
    fn records_of_partitions_given_up_are_not_delivered() {
        let topic: Arc<str> = "t".into();
        let mut a = Assignment::default();
        a.assign(vec![tp(0), tp(1)], 1);
        assert!(a.deliver(&record(&topic, 0, 10)));
        assert!(a.deliver(&record(&topic, 1, 20)));
        assert!(a.deliver(&record(&topic, 1, 21)));
        assert_eq!(
            a.consumed(None),
            [(tp(0), (11, Some(4))), (tp(1), (22, Some(4)))]
                .into_iter()
                .collect()
        );
        assert_eq!(a.consumed(Some(&[tp(1)])).len(), 1);
        a.remove(&[tp(1)]);
        assert!(!a.deliver(&record(&topic, 1, 22)));
        assert_eq!(a.consumed(None).len(), 1);
        assert!(a.seek(&tp(1), 5).is_err());
        a.seek(&tp(0), 5).unwrap();
        assert_eq!(a.consumed(None)[&tp(0)], (5, None));
        assert_eq!(a.clear(), vec![tp(0)]);
        assert!(a.owned().is_empty() && a.consumed(None).is_empty());
    }

    #[test]
    fn auto_commits_carry_only_what_moved() {
        let topic: Arc<str> = "t".into();
        let mut a = Assignment::default();
        a.assign(vec![tp(0), tp(1)], 1);
        a.deliver(&record(&topic, 0, 10));
        assert_eq!(a.auto_commit().keys().collect::<Vec<_>>(), [&tp(0)]);
        assert!(a.auto_commit().is_empty());
        a.deliver(&record(&topic, 1, 3));
        assert_eq!(a.auto_commit().keys().collect::<Vec<_>>(), [&tp(1)]);
    }

    #[test]
    fn commits_take_the_epoch_of_the_record_delivered_last() {
        let topic: Arc<str> = "t".into();
        let mut a = Assignment::default();
        a.assign(vec![tp(0)], 1);
        a.deliver(&record(&topic, 0, 10));
        let offsets = a.to_commit([(tp(0), 11), (tp(1), 3)]).unwrap();
        assert_eq!(offsets[&tp(0)], (11, Some(4)));
        assert_eq!(offsets[&tp(1)], (3, None));
        assert_eq!(a.to_commit([(tp(0), 9)]).unwrap()[&tp(0)], (9, None));
        assert!(a.to_commit([(tp(0), -1)]).is_err());
    }

    #[test]
    fn new_partitions_start_at_their_commit_or_by_the_reset_policy() {
        let mut a = Assignment::default();
        a.assign(vec![tp(0), tp(1)], 1);
        let offsets: BTreeMap<_, _> = [(tp(0), committed(7)), (tp(1), None)].into_iter().collect();
        let added = vec![tp(0), tp(1), tp(2)];
        let (starts, error) = a.start(added.clone(), &offsets, OffsetReset::Earliest);
        assert!(error.is_none());
        assert_eq!(
            starts,
            vec![(tp(0), StartOffset::At(7)), (tp(1), StartOffset::Earliest)],
            "tp(2) is no longer owned"
        );
        assert_eq!(a.consumed(None)[&tp(0)], (7, Some(2)));
        assert!(a.auto_commit().is_empty(), "the committed offset is known");
        let (starts, error) = a.start(added, &offsets, OffsetReset::Error);
        assert_eq!(starts, vec![(tp(0), StartOffset::At(7))]);
        assert_eq!(error.and_then(|e| e.partition()), Some(1));
    }
}
