//! The `range` assignor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    java::tp_cmp, member_rack, sorted_members, use_rack_aware, AssignError, Assignor,
    GroupAssignment, GroupMember, GroupTopics, PartitionMetadata,
};
use crate::client::group::TopicPartition;

/// Per topic, the partitions in id order are cut into consecutive ranges,
/// one per subscribed member in member order (static instance id, else
/// member id); the first members get one extra when it does not divide.
///
/// Example: members C0 and C1, topics t0 and t1 with 3 partitions each give
/// C0 `[t0p0, t0p1, t1p0, t1p1]` and C1 `[t0p2, t1p2]`.
///
/// When members announce racks and some partitions have replicas on only
/// some racks, partitions go to members on a replica's rack where the
/// per-topic balance allows (topics with the same subscribers and partition
/// count stay co-partitioned), as in the Java client since 3.5 (KIP-881).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

/// Topics with the same subscribers (and racks) and partition count.
type GroupKey<'a> = (Vec<(&'a str, Option<&'a str>)>, usize);

/// Java's `TopicAssignmentState`.
struct TopicState<'a> {
    topic: &'a str,
    /// Subscribed members in member order, with their racks.
    consumers: Vec<(&'a str, Option<&'a str>)>,
    needs_rack_aware: bool,
    /// Replica racks per partition id; empty unless some member has a rack.
    partition_racks: BTreeMap<i32, BTreeSet<&'a str>>,
    /// Partition ids not yet assigned, in id order.
    unassigned: Vec<i32>,
    assigned_count: HashMap<&'a str, usize>,
    per_consumer: usize,
    remaining_with_extra: usize,
}

impl<'a> TopicState<'a> {
    fn new(
        topic: &'a str,
        partitions: &'a [PartitionMetadata],
        members: &[&'a GroupMember],
    ) -> Self {
        let consumers: Vec<(&str, Option<&str>)> = members
            .iter()
            .map(|m| (m.member_id.as_str(), member_rack(m)))
            .collect();
        let n = partitions.len();
        let c = consumers.len();
        let all_consumer_racks: BTreeSet<&str> = consumers.iter().filter_map(|c| c.1).collect();
        let mut partition_racks = BTreeMap::new();
        let mut all_partition_racks = BTreeSet::new();
        if !all_consumer_racks.is_empty() {
            for p in partitions {
                let racks: BTreeSet<&str> = p.replica_racks.iter().map(String::as_str).collect();
                all_partition_racks.extend(racks.iter().copied());
                partition_racks.insert(p.partition, racks);
            }
        }
        let needs_rack_aware = use_rack_aware(
            &all_consumer_racks,
            &all_partition_racks,
            partition_racks.values(),
        );
        Self {
            topic,
            assigned_count: consumers.iter().map(|c| (c.0, 0)).collect(),
            consumers,
            needs_rack_aware,
            partition_racks,
            unassigned: partitions.iter().map(|p| p.partition).collect(),
            per_consumer: n.checked_div(c).unwrap_or(0),
            remaining_with_extra: n.checked_rem(c).unwrap_or(0),
        }
    }

    fn rack_of(&self, consumer: &str) -> Option<&'a str> {
        self.consumers
            .iter()
            .find(|c| c.0 == consumer)
            .and_then(|c| c.1)
    }

    fn racks_match(&self, consumer: &str, partition: i32) -> bool {
        match self.rack_of(consumer) {
            None => true,
            Some(rack) => self
                .partition_racks
                .get(&partition)
                .is_some_and(|r| r.contains(rack)),
        }
    }

    fn max_assignable(&self, consumer: &str) -> usize {
        let cap = self.per_consumer + usize::from(self.remaining_with_extra > 0);
        cap.saturating_sub(self.assigned_count.get(consumer).copied().unwrap_or(0))
    }

    fn on_assigned(&mut self, consumer: &'a str, partitions: &[i32]) {
        let count = self.assigned_count.entry(consumer).or_insert(0);
        *count += partitions.len();
        if *count > self.per_consumer {
            self.remaining_with_extra = self.remaining_with_extra.saturating_sub(1);
        }
        self.unassigned.retain(|p| !partitions.contains(p));
    }
}

fn assign_to<'a>(
    consumer: &'a str,
    partitions: &[i32],
    state: &mut TopicState<'a>,
    out: &mut GroupAssignment,
) {
    if let Some(list) = out.get_mut(consumer) {
        list.extend(
            partitions
                .iter()
                .map(|p| TopicPartition::new(state.topic, *p)),
        );
    }
    state.on_assigned(consumer, partitions);
}

fn assign_ranges<'a>(
    state: &mut TopicState<'a>,
    may_assign: impl Fn(&TopicState<'a>, &str, i32) -> bool,
    out: &mut GroupAssignment,
) {
    let consumers: Vec<&'a str> = state.consumers.iter().map(|c| c.0).collect();
    for consumer in consumers {
        if state.unassigned.is_empty() {
            break;
        }
        let max = state.max_assignable(consumer);
        let assignable: Vec<i32> = state
            .unassigned
            .iter()
            .copied()
            .filter(|p| may_assign(state, consumer, *p))
            .take(max)
            .collect();
        if assignable.is_empty() {
            continue;
        }
        assign_to(consumer, &assignable, state, out);
    }
}

/// Rack matching for topics with the same subscribers and partition count:
/// partition `p` of all of them goes to the same member.
fn assign_co_partitioned<'a>(
    consumers: &[&'a str],
    num_partitions: usize,
    states: &mut [&mut TopicState<'a>],
    out: &mut GroupAssignment,
) {
    let mut remaining: Vec<&'a str> = consumers.to_vec();
    for p in 0..num_partitions {
        let Ok(p) = i32::try_from(p) else { break };
        let matching = remaining.iter().copied().find(|c| {
            states
                .iter()
                .all(|t| t.racks_match(c, p) && t.max_assignable(c) > 0)
        });
        if let Some(consumer) = matching {
            for t in states.iter_mut() {
                assign_to(consumer, &[p], t, out);
            }
            if states.iter().all(|t| t.max_assignable(consumer) == 0) {
                remaining.retain(|c| *c != consumer);
                if remaining.is_empty() {
                    break;
                }
            }
        }
    }
}

impl Assignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        topics: &GroupTopics,
        members: &[GroupMember],
    ) -> Result<GroupAssignment, AssignError> {
        let sorted = sorted_members(members);
        let mut states: Vec<TopicState<'_>> = topics
            .iter()
            .filter(|(_, parts)| !parts.is_empty())
            .map(|(topic, parts)| {
                let subscribed: Vec<&GroupMember> = sorted
                    .iter()
                    .copied()
                    .filter(|m| m.subscription.topics.iter().any(|t| t == topic))
                    .collect();
                TopicState::new(topic, parts, &subscribed)
            })
            .collect();
        let mut out: GroupAssignment = members
            .iter()
            .map(|m| (m.member_id.clone(), Vec::new()))
            .collect();

        let rack_aware = states.iter().any(|s| s.needs_rack_aware);
        if rack_aware {
            // Group topics by subscriber list, then by partition count; the
            // groups touch disjoint topics, so their order does not matter.
            let mut groups: BTreeMap<GroupKey<'_>, Vec<usize>> = BTreeMap::new();
            for (i, s) in states.iter().enumerate() {
                groups
                    .entry((s.consumers.clone(), s.partition_racks.len()))
                    .or_default()
                    .push(i);
            }
            for ((consumers, num_partitions), idx) in groups {
                if idx.len() > 1 {
                    let consumers: Vec<&str> = consumers.iter().map(|c| c.0).collect();
                    let mut group: Vec<&mut TopicState<'_>> = states
                        .iter_mut()
                        .enumerate()
                        .filter(|(i, _)| idx.contains(i))
                        .map(|(_, s)| s)
                        .collect();
                    assign_co_partitioned(&consumers, num_partitions, &mut group, &mut out);
                } else if let Some(state) = idx.first().and_then(|i| states.get_mut(*i)) {
                    if state.needs_rack_aware {
                        assign_ranges(state, |s, c, p| s.racks_match(c, p), &mut out);
                    }
                }
            }
        }
        for state in &mut states {
            assign_ranges(state, |_, _, _| true, &mut out);
        }
        for list in out.values_mut() {
            list.sort_by(tp_cmp);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn the_documented_example() {
        let t = topics(&[("t0", 3), ("t1", 3)]);
        let m = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let a = RangeAssignor.assign(&t, &m).unwrap();
        assert_eq!(a["C0"], tps(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]));
        assert_eq!(a["C1"], tps(&[("t0", 2), ("t1", 2)]));
    }

    #[test]
    fn static_members_come_first_and_unsubscribed_get_nothing() {
        let t = topics(&[("t", 5), ("u", 1)]);
        let mut z = member("z", &["t"]);
        z.subscription.group_instance_id = Some("i0".into());
        let m = [member("a", &["t"]), z, member("b", &["u"])];
        let a = RangeAssignor.assign(&t, &m).unwrap();
        assert_eq!(a["z"], tps(&[("t", 0), ("t", 1), ("t", 2)]));
        assert_eq!(a["a"], tps(&[("t", 3), ("t", 4)]));
        assert_eq!(a["b"], tps(&[("u", 0)]));
        // More members than partitions; an unknown topic is skipped.
        let m = [
            member("a", &["u", "x"]),
            member("b", &["u"]),
            member("c", &["x"]),
        ];
        let a = RangeAssignor.assign(&t, &m).unwrap();
        assert_eq!(a["a"], tps(&[("u", 0)]));
        assert!(a["b"].is_empty() && a["c"].is_empty());
    }

    #[test]
    fn rack_aware_prefers_replica_racks_within_balance() {
        // Partition p has its only replica on rack r{p % 2}.
        let mut t = topics(&[("t", 4)]);
        for p in t.get_mut("t").unwrap() {
            p.replica_racks = vec![format!("r{}", p.partition % 2)];
        }
        let mut a0 = member("a", &["t"]);
        a0.subscription.rack_id = Some("r1".into());
        let mut b0 = member("b", &["t"]);
        b0.subscription.rack_id = Some("r0".into());
        let a = RangeAssignor.assign(&t, &[a0, b0]).unwrap();
        assert_eq!(a["a"], tps(&[("t", 1), ("t", 3)]));
        assert_eq!(a["b"], tps(&[("t", 0), ("t", 2)]));
    }
}
