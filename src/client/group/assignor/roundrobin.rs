//! The `roundrobin` assignor.

use std::collections::BTreeSet;

use super::{
    java::JStr, sorted_members, AssignError, Assignor, GroupAssignment, GroupMember, GroupTopics,
};
use crate::client::group::TopicPartition;

/// All partitions of all subscribed topics (topics in name order,
/// partitions in id order) dealt out one at a time to the members in member
/// order (static instance id, else member id), skipping members not
/// subscribed to the partition's topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        topics: &GroupTopics,
        members: &[GroupMember],
    ) -> Result<GroupAssignment, AssignError> {
        let mut out: GroupAssignment = members
            .iter()
            .map(|m| (m.member_id.clone(), Vec::new()))
            .collect();
        let sorted = sorted_members(members);
        let subscribed: BTreeSet<JStr> = members
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned().map(JStr))
            .collect();
        // A circular cursor over the sorted members, as Java's
        // `CircularIterator`.
        let mut next = 0usize;
        for JStr(topic) in subscribed {
            let Some(partitions) = topics.get(&topic) else {
                continue;
            };
            for p in 0..partitions.len() {
                let Ok(p) = i32::try_from(p) else { break };
                // Some member subscribes to every topic in the set, so this
                // finds one within a full turn.
                let mut found = None;
                for _ in 0..sorted.len() {
                    let m = sorted[next % sorted.len()];
                    next = (next + 1) % sorted.len();
                    if m.subscription.topics.contains(&topic) {
                        found = Some(m);
                        break;
                    }
                }
                let Some(m) = found else { break };
                if let Some(list) = out.get_mut(&m.member_id) {
                    list.push(TopicPartition::new(topic.clone(), p));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn deals_in_turn_skipping_unsubscribed() {
        let t = topics(&[("t0", 3), ("t1", 3)]);
        let m = [
            member("c2", &["t0", "t1"]),
            member("c0", &["t0"]),
            member("c1", &["t0", "t1"]),
        ];
        let a = RoundRobinAssignor.assign(&t, &m).unwrap();
        // Java's example: C0 [t0p0], C1 [t0p1, t1p0, t1p2], C2 [t0p2, t1p1].
        assert_eq!(a["c0"], tps(&[("t0", 0)]));
        assert_eq!(a["c1"], tps(&[("t0", 1), ("t1", 0), ("t1", 2)]));
        assert_eq!(a["c2"], tps(&[("t0", 2), ("t1", 1)]));
    }
}
