//! The `sticky` and `cooperative-sticky` assignors.
//!
//! Both run the Java client's `AbstractStickyAssignor` algorithm: keep what
//! members owned (within balance), hand out the rest round-robin, and when
//! members subscribe to different topics, rebalance by moving partitions one
//! at a time from the most to the least loaded member while avoiding moving
//! a partition back and forth. The code mirrors the Java structure step by
//! step (including its iteration orders, see `java.rs`) so that the results
//! are the same. It differs from the Java client only on inputs the Java
//! client cannot handle: owned partitions that do not exist are ignored
//! (Java would hand them out), and a previous owner that is no longer
//! eligible is skipped (Java throws).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::{
    java::{java_cmp, tp_cmp, JHashMap, JHashSet, JStr},
    member_rack, use_rack_aware, AssignError, Assignor, GroupAssignment, GroupMember, GroupTopics,
    MemberAssignmentState, RebalanceProtocol,
};
use crate::client::group::{
    protocol::{cooperative_user_data, decode_cooperative_user_data, StickyUserData, Subscription},
    TopicPartition,
};

const DEFAULT_GENERATION: i32 = -1;

/// The eager sticky assignor (`sticky`): a balanced assignment that keeps
/// as many partitions as possible where they were. Members send their
/// previous assignment in the subscription's user data, as the Java
/// client's `StickyAssignor` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

/// The cooperative sticky assignor (`cooperative-sticky`): the sticky
/// assignment, except that a partition changing owner is left unassigned
/// until its previous owner has revoked it (the follow-up rebalance then
/// assigns it). Supports both the cooperative and the eager protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

/// What the algorithm needs from a member's subscription.
struct MemberData {
    partitions: Vec<TopicPartition>,
    generation: Option<i32>,
}

fn eager_member_data(s: &Subscription) -> MemberData {
    match &s.user_data {
        None => MemberData {
            partitions: Vec::new(),
            generation: None,
        },
        Some(b) if b.is_empty() => MemberData {
            partitions: Vec::new(),
            generation: None,
        },
        Some(b) => match StickyUserData::decode(b) {
            Some(d) => MemberData {
                partitions: d.partitions,
                generation: d.generation,
            },
            None => MemberData {
                partitions: Vec::new(),
                generation: Some(DEFAULT_GENERATION),
            },
        },
    }
}

fn cooperative_member_data(s: &Subscription) -> MemberData {
    let generation = match (s.generation_id, &s.user_data) {
        (Some(g), _) => Some(g),
        (None, None) => None,
        (None, Some(b)) => Some(decode_cooperative_user_data(b).unwrap_or(DEFAULT_GENERATION)),
    };
    MemberData {
        partitions: s.owned_partitions.clone(),
        generation,
    }
}

impl Assignor for StickyAssignor {
    fn name(&self) -> &str {
        "sticky"
    }

    fn subscription_user_data(&self, state: &MemberAssignmentState<'_>) -> Option<Bytes> {
        let partitions = state.last_assignment?;
        StickyUserData {
            partitions: partitions.to_vec(),
            generation: Some(state.generation),
        }
        .encode()
        .ok()
    }

    fn assign(
        &self,
        topics: &GroupTopics,
        members: &[GroupMember],
    ) -> Result<GroupAssignment, AssignError> {
        Ok(assign_sticky(topics, members, eager_member_data)?.assignment)
    }
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn supported_protocols(&self) -> &[RebalanceProtocol] {
        &[RebalanceProtocol::Cooperative, RebalanceProtocol::Eager]
    }

    fn subscription_user_data(&self, state: &MemberAssignmentState<'_>) -> Option<Bytes> {
        Some(cooperative_user_data(state.generation))
    }

    fn assign(
        &self,
        topics: &GroupTopics,
        members: &[GroupMember],
    ) -> Result<GroupAssignment, AssignError> {
        let StickyResult {
            mut assignment,
            transferring,
        } = assign_sticky(topics, members, cooperative_member_data)?;
        let transferring = match transferring {
            Some(t) => t,
            None => compute_transferring(members, &assignment),
        };
        // A partition changing owner is first revoked by its old owner; the
        // follow-up rebalance gives it to the new one.
        for (tp, consumer) in transferring {
            if let Some(list) = assignment.get_mut(&consumer) {
                if let Some(pos) = list.iter().position(|x| *x == tp) {
                    list.remove(pos);
                }
            }
        }
        Ok(assignment)
    }
}

/// Partitions newly assigned to a member while another member that owned
/// them loses them (the general case computes this after the fact).
fn compute_transferring(
    members: &[GroupMember],
    assignment: &GroupAssignment,
) -> HashMap<TopicPartition, String> {
    let mut added: HashMap<TopicPartition, String> = HashMap::new();
    let mut revoked: HashSet<TopicPartition> = HashSet::new();
    for m in members {
        let Some(assigned) = assignment.get(&m.member_id) else {
            continue;
        };
        let owned: HashSet<&TopicPartition> = m.subscription.owned_partitions.iter().collect();
        for tp in assigned {
            if !owned.contains(tp) {
                added.insert(tp.clone(), m.member_id.clone());
            }
        }
        let assigned: HashSet<&TopicPartition> = assigned.iter().collect();
        for tp in &m.subscription.owned_partitions {
            if !assigned.contains(tp) {
                revoked.insert(tp.clone());
            }
        }
    }
    added.retain(|tp, _| revoked.contains(tp));
    added
}

struct StickyResult {
    assignment: GroupAssignment,
    /// Filled by the constrained algorithm; `None` after the general one.
    transferring: Option<HashMap<TopicPartition, String>>,
}

/// `AbstractStickyAssignor.assignPartitions`.
fn assign_sticky(
    all_topics: &GroupTopics,
    members: &[GroupMember],
    member_data: fn(&Subscription) -> MemberData,
) -> Result<StickyResult, AssignError> {
    // Like Java, only subscribed topics with known partitions take part.
    let subscribed_topics: HashSet<&str> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    let all_topics: GroupTopics = all_topics
        .iter()
        .filter(|(t, p)| !p.is_empty() && subscribed_topics.contains(t.as_str()))
        .map(|(t, p)| (t.clone(), p.clone()))
        .collect();
    let all_topics = &all_topics;
    let topics: BTreeMap<&str, usize> = all_topics
        .iter()
        .map(|(t, p)| (t.as_str(), p.len()))
        .collect();
    if members.is_empty() {
        return Ok(StickyResult {
            assignment: GroupAssignment::new(),
            transferring: Some(HashMap::new()),
        });
    }
    // Java keeps the subscriptions in a HashMap filled in JoinGroup order;
    // its iteration order decides some ties.
    let mut subs: JHashMap<String, &Subscription> = JHashMap::new();
    for m in members {
        subs.insert(m.member_id.clone(), &m.subscription);
    }
    let order: Vec<String> = subs.keys().cloned().collect();
    let sub = |id: &str| -> Option<&Subscription> { subs.get(&id.to_owned()).copied() };

    let rack_info = RackInfo::new(all_topics, members);

    // allSubscriptionsEqual, which also collects each member's valid owned
    // partitions.
    let mut all_equal = true;
    let mut subscribed: HashSet<&str> = HashSet::new();
    let mut prev_owner: HashMap<TopicPartition, String> = HashMap::new();
    let mut owned: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let mut multiple_owners: HashSet<TopicPartition> = HashSet::new();
    let mut max_generation = DEFAULT_GENERATION;
    for consumer in &order {
        let Some(s) = sub(consumer) else { continue };
        if subscribed.is_empty() {
            subscribed.extend(s.topics.iter().map(String::as_str));
        } else if all_equal
            && !(s.topics.len() == subscribed.len()
                && s.topics.iter().all(|t| subscribed.contains(t.as_str())))
        {
            all_equal = false;
        }
        let data = member_data(s);
        let member_generation = data.generation.unwrap_or(DEFAULT_GENERATION);
        max_generation = max_generation.max(member_generation);
        owned.insert(consumer.clone(), Vec::new());
        for tp in data.partitions {
            let exists = topics
                .get(&*tp.topic)
                .is_some_and(|n| tp.partition >= 0 && (tp.partition as usize) < *n);
            if !exists {
                continue;
            }
            match prev_owner.get(&tp).cloned() {
                None => {
                    prev_owner.insert(tp.clone(), consumer.clone());
                    if let Some(v) = owned.get_mut(consumer) {
                        v.push(tp);
                    }
                }
                Some(other) => {
                    let other_generation = sub(&other)
                        .and_then(|s| s.generation_id)
                        .unwrap_or(DEFAULT_GENERATION);
                    if member_generation >= other_generation {
                        if let Some(v) = owned.get_mut(&other) {
                            if let Some(pos) = v.iter().position(|x| *x == tp) {
                                v.remove(pos);
                            }
                        }
                        prev_owner.insert(tp.clone(), consumer.clone());
                        if member_generation == other_generation {
                            // Two claims in one generation: nobody keeps it.
                            multiple_owners.insert(tp);
                        } else if let Some(v) = owned.get_mut(consumer) {
                            v.push(tp);
                        }
                    }
                }
            }
        }
    }

    if all_equal {
        let mut b = Constrained::new(&topics, &rack_info, owned, order, multiple_owners);
        let assignment = b.build()?;
        Ok(StickyResult {
            assignment,
            transferring: Some(b.transferring),
        })
    } else {
        let assignment = General::new(&topics, &rack_info, owned, members, &order).build(
            max_generation,
            member_data,
            &order,
            &sub,
        );
        Ok(StickyResult {
            assignment,
            transferring: None,
        })
    }
}

/// Java's `RackInfo`.
struct RackInfo {
    /// Member to rack; empty unless rack-aware assignment applies.
    consumer_racks: HashMap<String, String>,
    /// Partition to replica racks; empty unless rack-aware.
    partition_racks: HashMap<TopicPartition, BTreeSet<String>>,
    /// Members on the racks of each partition's replicas (filled whenever
    /// some member has a rack, rack-aware or not: Java sorts by it anyway).
    consumers_by_partition: HashMap<TopicPartition, usize>,
}

impl RackInfo {
    fn new(topics: &GroupTopics, members: &[GroupMember]) -> Self {
        let mut consumers_by_rack: HashMap<&str, usize> = HashMap::new();
        for m in members {
            if let Some(r) = member_rack(m) {
                *consumers_by_rack.entry(r).or_default() += 1;
            }
        }
        let mut partition_racks: HashMap<TopicPartition, BTreeSet<String>> = HashMap::new();
        let mut all_partition_racks: BTreeSet<&str> = BTreeSet::new();
        if !consumers_by_rack.is_empty() {
            for (topic, parts) in topics.iter().filter(|(_, p)| !p.is_empty()) {
                for p in parts {
                    all_partition_racks.extend(p.replica_racks.iter().map(String::as_str));
                    partition_racks.insert(
                        TopicPartition::new(topic.clone(), p.partition),
                        p.replica_racks.iter().cloned().collect(),
                    );
                }
            }
        }
        let consumers_by_partition = partition_racks
            .iter()
            .map(|(tp, racks)| {
                let n = racks
                    .iter()
                    .map(|r| consumers_by_rack.get(r.as_str()).copied().unwrap_or(0))
                    .sum();
                (tp.clone(), n)
            })
            .collect();
        let consumer_rack_set: BTreeSet<&str> = consumers_by_rack.keys().copied().collect();
        let per_partition: Vec<BTreeSet<&str>> = partition_racks
            .values()
            .map(|r| r.iter().map(String::as_str).collect())
            .collect();
        if use_rack_aware(
            &consumer_rack_set,
            &all_partition_racks,
            per_partition.iter(),
        ) {
            let consumer_racks = members
                .iter()
                .filter_map(|m| Some((m.member_id.clone(), member_rack(m)?.to_owned())))
                .collect();
            Self {
                consumer_racks,
                partition_racks,
                consumers_by_partition,
            }
        } else {
            Self {
                consumer_racks: HashMap::new(),
                partition_racks: HashMap::new(),
                consumers_by_partition,
            }
        }
    }

    fn racks_mismatch(&self, consumer: &str, tp: &TopicPartition) -> bool {
        match self.consumer_racks.get(consumer) {
            None => false,
            Some(rack) => !self
                .partition_racks
                .get(tp)
                .is_some_and(|r| r.contains(rack)),
        }
    }

    /// A stable sort by the number of members on the partition's racks.
    fn sort_partitions(&self, partitions: &mut [TopicPartition]) {
        if self.consumers_by_partition.is_empty() {
            return;
        }
        partitions.sort_by_key(|tp| self.consumers_by_partition.get(tp).copied().unwrap_or(0));
    }

    fn next_rack_consumer(
        &self,
        tp: &TopicPartition,
        consumers: &[String],
        first: usize,
    ) -> Option<usize> {
        let racks = self.partition_racks.get(tp).filter(|r| !r.is_empty())?;
        let n = consumers.len();
        (0..n).map(|i| (first + i) % n).find(|&i| {
            self.consumer_racks
                .get(&consumers[i])
                .is_some_and(|r| racks.contains(r))
        })
    }
}

/// Every partition of `topics` (names in Java order), in id order.
fn all_partitions_sorted(topics: &BTreeMap<&str, usize>) -> Vec<TopicPartition> {
    let mut names: Vec<&str> = topics.keys().copied().collect();
    names.sort_by(|a, b| java_cmp(a, b));
    names
        .into_iter()
        .flat_map(|t| (0..topics[t]).map(move |p| TopicPartition::new(t, p as i32)))
        .collect()
}

/// Java's `ConstrainedAssignmentBuilder`: every member subscribes to the
/// same topics.
struct Constrained<'a> {
    topics: &'a BTreeMap<&'a str, usize>,
    rack: &'a RackInfo,
    /// Valid owned partitions per member.
    owned: BTreeMap<String, Vec<TopicPartition>>,
    /// Members in Java iteration order.
    order: Vec<String>,
    multiple_owners: HashSet<TopicPartition>,
    maybe_revoked: HashMap<TopicPartition, String>,
    unfilled_under_min: Vec<String>,
    unfilled_exactly_min: VecDeque<String>,
    min_quota: usize,
    max_quota: usize,
    expected_over_min: usize,
    current_over_min: usize,
    assignment: GroupAssignment,
    assigned: Vec<TopicPartition>,
    transferring: HashMap<TopicPartition, String>,
}

impl<'a> Constrained<'a> {
    fn new(
        topics: &'a BTreeMap<&'a str, usize>,
        rack: &'a RackInfo,
        owned: BTreeMap<String, Vec<TopicPartition>>,
        order: Vec<String>,
        multiple_owners: HashSet<TopicPartition>,
    ) -> Self {
        let total: usize = topics.values().sum();
        let n = order.len().max(1);
        Self {
            topics,
            rack,
            assignment: order.iter().map(|c| (c.clone(), Vec::new())).collect(),
            owned,
            order,
            multiple_owners,
            maybe_revoked: HashMap::new(),
            unfilled_under_min: Vec::new(),
            unfilled_exactly_min: VecDeque::new(),
            min_quota: total / n,
            max_quota: total.div_ceil(n),
            expected_over_min: total % n,
            current_over_min: 0,
            assigned: Vec::new(),
            transferring: HashMap::new(),
        }
    }

    fn build(&mut self) -> Result<GroupAssignment, AssignError> {
        self.assign_owned();
        let assigned: HashSet<&TopicPartition> = self.assigned.iter().collect();
        let mut unassigned: Vec<TopicPartition> = all_partitions_sorted(self.topics)
            .into_iter()
            .filter(|tp| !assigned.contains(tp))
            .collect();
        self.unfilled_under_min.sort_by(|a, b| java_cmp(a, b));
        self.unfilled_exactly_min
            .make_contiguous()
            .sort_by(|a, b| java_cmp(a, b));
        self.rack.sort_partitions(&mut unassigned);
        self.assign_rack_aware_round_robin(&mut unassigned);
        self.assign_round_robin(&unassigned)?;
        self.verify_unfilled()?;
        Ok(std::mem::take(&mut self.assignment))
    }

    fn assign_owned(&mut self) {
        for consumer in self.order.clone() {
            let mut owned: Vec<TopicPartition> = Vec::new();
            for tp in self.owned.get(&consumer).cloned().unwrap_or_default() {
                if self.rack.racks_mismatch(&consumer, &tp) {
                    self.maybe_revoked.insert(tp, consumer.clone());
                } else {
                    owned.push(tp);
                }
            }
            owned.sort_by(|a, b| {
                a.partition
                    .cmp(&b.partition)
                    .then_with(|| java_cmp(&a.topic, &b.topic))
            });
            for tp in &self.multiple_owners {
                if let Some(pos) = owned.iter().position(|x| x == tp) {
                    owned.remove(pos);
                }
            }
            let Some(target) = self.assignment.get_mut(&consumer) else {
                continue;
            };
            if owned.len() < self.min_quota {
                target.extend(owned.iter().cloned());
                self.assigned.extend(owned);
                self.unfilled_under_min.push(consumer);
            } else if owned.len() >= self.max_quota
                && self.current_over_min < self.expected_over_min
            {
                self.current_over_min += 1;
                if self.current_over_min == self.expected_over_min {
                    self.unfilled_exactly_min.clear();
                }
                let rest = owned.split_off(self.max_quota);
                target.extend(owned.iter().cloned());
                self.assigned.extend(owned);
                for tp in rest {
                    self.maybe_revoked.insert(tp, consumer.clone());
                }
            } else {
                let rest = owned.split_off(self.min_quota);
                target.extend(owned.iter().cloned());
                self.assigned.extend(owned);
                for tp in rest {
                    self.maybe_revoked.insert(tp, consumer.clone());
                }
                if self.current_over_min < self.expected_over_min {
                    self.unfilled_exactly_min.push_back(consumer);
                }
            }
        }
    }

    fn assign_rack_aware_round_robin(&mut self, unassigned: &mut Vec<TopicPartition>) {
        if self.rack.consumer_racks.is_empty() {
            return;
        }
        let mut next_unfilled = 0usize;
        let mut i = 0usize;
        while i < unassigned.len() {
            let tp = unassigned[i].clone();
            let mut consumer = None;
            if let Some(mut next) =
                self.rack
                    .next_rack_consumer(&tp, &self.unfilled_under_min, next_unfilled)
            {
                let c = self.unfilled_under_min[next].clone();
                let count = self.assignment.get(&c).map_or(0, Vec::len) + 1;
                if count >= self.min_quota {
                    self.unfilled_under_min.retain(|x| *x != c);
                    if count < self.max_quota && self.current_over_min < self.expected_over_min {
                        self.unfilled_exactly_min.push_back(c.clone());
                    }
                } else {
                    next += 1;
                }
                next_unfilled = if self.unfilled_under_min.is_empty() {
                    0
                } else {
                    next % self.unfilled_under_min.len()
                };
                consumer = Some(c);
            } else if !self.unfilled_exactly_min.is_empty() {
                let list: Vec<String> = self.unfilled_exactly_min.iter().cloned().collect();
                if let Some(first) = self.rack.next_rack_consumer(&tp, &list, 0) {
                    let c = list[first].clone();
                    if self.assignment.get(&c).map_or(0, Vec::len) + 1 == self.max_quota {
                        self.unfilled_exactly_min.remove(first);
                        self.current_over_min += 1;
                        if self.current_over_min == self.expected_over_min {
                            self.unfilled_exactly_min.clear();
                        }
                    }
                    consumer = Some(c);
                }
            }
            match consumer {
                Some(c) => {
                    self.assign_new(tp, &c);
                    unassigned.remove(i);
                }
                None => i += 1,
            }
        }
    }

    fn assign_round_robin(&mut self, unassigned: &[TopicPartition]) -> Result<(), AssignError> {
        // A Java iterator over `unfilled_under_min` that supports removing
        // the element it returned last.
        let mut cursor = 0usize;
        for tp in unassigned {
            let consumer = if cursor < self.unfilled_under_min.len() {
                cursor += 1;
                self.unfilled_under_min[cursor - 1].clone()
            } else if self.unfilled_under_min.is_empty() && self.unfilled_exactly_min.is_empty() {
                return Err(AssignError(
                    "no more unfilled consumers to be assigned".into(),
                ));
            } else if self.unfilled_under_min.is_empty() {
                match self.unfilled_exactly_min.pop_front() {
                    Some(c) => c,
                    None => return Err(AssignError("no unfilled consumer left".into())),
                }
            } else {
                cursor = 1;
                self.unfilled_under_min[0].clone()
            };
            let count = self.assign_new(tp.clone(), &consumer);
            if count == self.min_quota {
                // `iterator.remove()`: the element returned last.
                if cursor > 0 && cursor <= self.unfilled_under_min.len() {
                    self.unfilled_under_min.remove(cursor - 1);
                    cursor -= 1;
                }
                self.unfilled_exactly_min.push_back(consumer);
            } else if count == self.max_quota {
                self.current_over_min += 1;
            }
        }
        Ok(())
    }

    fn assign_new(&mut self, tp: TopicPartition, consumer: &str) -> usize {
        let moved = self
            .maybe_revoked
            .get(&tp)
            .is_some_and(|old| old != consumer)
            || self.multiple_owners.contains(&tp);
        if moved {
            self.transferring.insert(tp.clone(), consumer.to_owned());
        }
        match self.assignment.get_mut(consumer) {
            Some(list) => {
                list.push(tp);
                list.len()
            }
            None => 0,
        }
    }

    fn verify_unfilled(&self) -> Result<(), AssignError> {
        if self.unfilled_under_min.is_empty() {
            return Ok(());
        }
        if self.current_over_min != self.expected_over_min {
            return Err(AssignError(format!(
                "{} members above the minimum quota, expected {}",
                self.current_over_min, self.expected_over_min
            )));
        }
        for c in &self.unfilled_under_min {
            let n = self.assignment.get(c).map_or(0, Vec::len);
            if n != self.min_quota {
                return Err(AssignError(format!(
                    "member {c} got {n} partitions, below the minimum quota {}",
                    self.min_quota
                )));
            }
        }
        Ok(())
    }
}

/// Java's `PartitionMovements`: which partitions moved between which
/// members, to prefer moving a partition back over moving another one on.
#[derive(Default)]
struct Movements {
    by_topic: HashMap<String, HashMap<(String, String), JHashSet<TopicPartition>>>,
    moves: HashMap<TopicPartition, (String, String)>,
}

impl Movements {
    fn remove_record(&mut self, tp: &TopicPartition) -> Option<(String, String)> {
        let pair = self.moves.remove(tp)?;
        if let Some(topic) = self.by_topic.get_mut(&*tp.topic) {
            if let Some(set) = topic.get_mut(&pair) {
                set.remove(tp);
                if set.is_empty() {
                    topic.remove(&pair);
                }
            }
            if topic.is_empty() {
                self.by_topic.remove(&*tp.topic);
            }
        }
        Some(pair)
    }

    fn add_record(&mut self, tp: TopicPartition, pair: (String, String)) {
        self.moves.insert(tp.clone(), pair.clone());
        self.by_topic
            .entry(tp.topic.to_string())
            .or_default()
            .entry(pair)
            .or_default()
            .insert(tp, ());
    }

    fn move_partition(&mut self, tp: &TopicPartition, old: &str, new: &str) {
        if self.moves.contains_key(tp) {
            if let Some((src, _dst)) = self.remove_record(tp) {
                if src != new {
                    self.add_record(tp.clone(), (src, new.to_owned()));
                }
            }
        } else {
            self.add_record(tp.clone(), (old.to_owned(), new.to_owned()));
        }
    }

    fn actual_partition_to_move(
        &self,
        tp: &TopicPartition,
        old: &str,
        new: &str,
    ) -> TopicPartition {
        let Some(topic) = self.by_topic.get(&*tp.topic) else {
            return tp.clone();
        };
        let old = match self.moves.get(tp) {
            Some((src, _)) => src.as_str(),
            None => old,
        };
        match topic
            .get(&(new.to_owned(), old.to_owned()))
            .and_then(|set| set.keys().next())
        {
            Some(first) => first.clone(),
            None => tp.clone(),
        }
    }
}

/// A member ordered by (assigned partition count, Java member order), as
/// Java's `SubscriptionComparator` sorts the `TreeSet` of members.
type SortKey = (usize, JStr);

/// Java's `GeneralAssignmentBuilder`: members subscribe to different topics.
struct General<'a> {
    topics: &'a BTreeMap<&'a str, usize>,
    rack: &'a RackInfo,
    total: usize,
    current: BTreeMap<String, Vec<TopicPartition>>,
    topic_consumers: BTreeMap<String, Vec<String>>,
    consumer_topics: BTreeMap<String, Vec<String>>,
    subscriptions: HashMap<String, Vec<String>>,
    partition_consumer: HashMap<TopicPartition, String>,
    sorted_all: Vec<TopicPartition>,
    sorted: BTreeSet<SortKey>,
    revocation_required: bool,
    movements: Movements,
}

impl<'a> General<'a> {
    fn new(
        topics: &'a BTreeMap<&'a str, usize>,
        rack: &'a RackInfo,
        current: BTreeMap<String, Vec<TopicPartition>>,
        members: &[GroupMember],
        order: &[String],
    ) -> Self {
        let mut topic_consumers: BTreeMap<String, Vec<String>> = topics
            .keys()
            .map(|t| ((*t).to_owned(), Vec::new()))
            .collect();
        let mut consumer_topics = BTreeMap::new();
        let by_id: HashMap<&str, &GroupMember> =
            members.iter().map(|m| (m.member_id.as_str(), m)).collect();
        let mut subscriptions = HashMap::new();
        for consumer in order {
            let Some(m) = by_id.get(consumer.as_str()) else {
                continue;
            };
            let mut subscribed = Vec::new();
            for t in &m.subscription.topics {
                if let Some(list) = topic_consumers.get_mut(t) {
                    subscribed.push(t.clone());
                    list.push(consumer.clone());
                }
            }
            consumer_topics.insert(consumer.clone(), subscribed);
            subscriptions.insert(consumer.clone(), m.subscription.topics.clone());
        }
        let mut partition_consumer = HashMap::new();
        for (c, list) in &current {
            for tp in list {
                partition_consumer.insert(tp.clone(), c.clone());
            }
        }
        let mut names: Vec<&String> = topic_consumers.keys().collect();
        names.sort_by(|a, b| {
            topic_consumers[*a]
                .len()
                .cmp(&topic_consumers[*b].len())
                .then_with(|| java_cmp(a, b))
        });
        let sorted_all = names
            .into_iter()
            .flat_map(|t| {
                let n = topics.get(t.as_str()).copied().unwrap_or(0);
                (0..n).map(move |p| TopicPartition::new(t.clone(), p as i32))
            })
            .collect();
        Self {
            total: topics.values().sum(),
            topics,
            rack,
            current,
            topic_consumers,
            consumer_topics,
            subscriptions,
            partition_consumer,
            sorted_all,
            sorted: BTreeSet::new(),
            revocation_required: false,
            movements: Movements::default(),
        }
    }

    fn size(&self, consumer: &str) -> usize {
        self.current.get(consumer).map_or(0, Vec::len)
    }

    fn key(&self, consumer: &str) -> SortKey {
        (self.size(consumer), JStr(consumer.to_owned()))
    }

    fn build<'s>(
        mut self,
        max_generation: i32,
        member_data: fn(&Subscription) -> MemberData,
        order: &[String],
        sub: &dyn Fn(&str) -> Option<&'s Subscription>,
    ) -> GroupAssignment {
        // prepopulateCurrentAssignments: the latest older owner of each
        // partition, to move partitions back where they came from.
        let mut prev: HashMap<TopicPartition, (String, i32)> = HashMap::new();
        for consumer in order {
            let Some(s) = sub(consumer) else { continue };
            let data = member_data(s);
            let generation = match data.generation {
                Some(g) if g < max_generation => g,
                None if max_generation > DEFAULT_GENERATION => DEFAULT_GENERATION,
                _ => continue,
            };
            for tp in data.partitions {
                match prev.get(&tp) {
                    Some((_, g)) if generation <= *g => {}
                    _ => {
                        prev.insert(tp, (consumer.clone(), generation));
                    }
                }
            }
        }

        // assignOwnedPartitions: drop what members no longer subscribe to.
        let mut assigned: HashSet<TopicPartition> = HashSet::new();
        for (consumer, list) in self.current.iter_mut() {
            let topics = self.subscriptions.get(consumer);
            list.retain(|tp| {
                let keep = topics.is_some_and(|t| t.iter().any(|x| **x == *tp.topic))
                    && !self.rack.racks_mismatch(consumer, tp);
                if keep {
                    assigned.insert(tp.clone());
                } else {
                    self.revocation_required = true;
                }
                keep
            });
        }
        let mut unassigned: Vec<TopicPartition> = self
            .sorted_all
            .iter()
            .filter(|tp| !assigned.contains(tp))
            .cloned()
            .collect();
        let keys: Vec<SortKey> = self.current.keys().map(|c| self.key(c)).collect();
        self.sorted.extend(keys);
        self.balance(&prev, &mut unassigned);
        let mut out = self.current;
        for list in out.values_mut() {
            list.sort_by(tp_cmp);
        }
        out
    }

    fn max_assignment_size(&self, topics: &[String]) -> usize {
        if topics.len() == self.topics.len() {
            self.total
        } else {
            topics
                .iter()
                .map(|t| self.topics.get(t.as_str()).copied().unwrap_or(0))
                .sum()
        }
    }

    fn is_balanced(&self) -> bool {
        let (Some(first), Some(last)) = (self.sorted.first(), self.sorted.last()) else {
            return true;
        };
        if first.0 + 1 >= last.0 {
            return true;
        }
        let mut owner: HashMap<&TopicPartition, &str> = HashMap::new();
        for (c, list) in &self.current {
            for tp in list {
                owner.insert(tp, c);
            }
        }
        for (count, JStr(consumer)) in &self.sorted {
            let topics = self
                .consumer_topics
                .get(consumer)
                .map_or(&[][..], Vec::as_slice);
            if *count == self.max_assignment_size(topics) {
                continue;
            }
            let mine = self.current.get(consumer);
            for t in topics {
                let n = self.topics.get(t.as_str()).copied().unwrap_or(0);
                for p in 0..n {
                    let tp = TopicPartition::new(t.clone(), p as i32);
                    if mine.is_some_and(|m| m.contains(&tp)) {
                        continue;
                    }
                    let other = owner.get(&tp).map_or(0, |o| self.size(o));
                    if count + 1 < other {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn balance_score(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> usize {
        let sizes: Vec<usize> = assignment.values().map(Vec::len).collect();
        let mut score = 0;
        for (i, a) in sizes.iter().enumerate() {
            for b in &sizes[i + 1..] {
                score += a.abs_diff(*b);
            }
        }
        score
    }

    fn maybe_assign_partition(&mut self, tp: &TopicPartition, rack_aware: bool) -> bool {
        let found = self.sorted.iter().find(|(_, JStr(c))| {
            self.consumer_topics
                .get(c)
                .is_some_and(|t| t.iter().any(|x| **x == *tp.topic))
                && (!rack_aware || !self.rack.racks_mismatch(c, tp))
        });
        let Some(key) = found.cloned() else {
            return false;
        };
        let consumer = key.1 .0.clone();
        self.sorted.remove(&key);
        if let Some(list) = self.current.get_mut(&consumer) {
            list.push(tp.clone());
        }
        self.partition_consumer.insert(tp.clone(), consumer.clone());
        let key = self.key(&consumer);
        self.sorted.insert(key);
        true
    }

    fn maybe_assign(
        &mut self,
        partitions: &mut Vec<TopicPartition>,
        rack_aware: bool,
        remove: bool,
    ) {
        let mut i = 0;
        while i < partitions.len() {
            let tp = partitions[i].clone();
            if self
                .topic_consumers
                .get(&*tp.topic)
                .is_none_or(|c| c.is_empty())
            {
                i += 1;
                continue;
            }
            if self.maybe_assign_partition(&tp, rack_aware) && remove {
                partitions.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn topic_can_move(&self, topic: &str) -> bool {
        self.topic_consumers
            .get(topic)
            .is_some_and(|c| c.len() >= 2)
    }

    fn consumer_can_move(&self, consumer: &str) -> bool {
        let topics = self
            .consumer_topics
            .get(consumer)
            .map_or(&[][..], Vec::as_slice);
        let size = self.size(consumer);
        if size < self.max_assignment_size(topics) {
            return true;
        }
        self.current
            .get(consumer)
            .is_some_and(|l| l.iter().any(|tp| self.topic_can_move(&tp.topic)))
    }

    fn balance(
        &mut self,
        prev: &HashMap<TopicPartition, (String, i32)>,
        unassigned: &mut Vec<TopicPartition>,
    ) {
        let initializing = self
            .sorted
            .last()
            .is_none_or(|(_, JStr(c))| self.size(c) == 0);
        if !self.rack.consumer_racks.is_empty() {
            let mut to_assign = unassigned.clone();
            self.maybe_assign(&mut to_assign, true, true);
            self.maybe_assign(&mut to_assign, false, false);
        } else {
            let mut to_assign = std::mem::take(unassigned);
            self.maybe_assign(&mut to_assign, false, false);
            *unassigned = to_assign;
        }

        // Only partitions of topics with several possible consumers, and
        // members that could gain or lose some, take part in balancing.
        let fixed_topics: HashSet<String> = self
            .topic_consumers
            .keys()
            .filter(|t| !self.topic_can_move(t))
            .cloned()
            .collect();
        self.sorted_all
            .retain(|tp| !fixed_topics.contains(&*tp.topic));
        unassigned.retain(|tp| !fixed_topics.contains(&*tp.topic));
        let mut fixed: Vec<(String, Vec<TopicPartition>)> = Vec::new();
        for consumer in self.consumer_topics.keys().cloned().collect::<Vec<_>>() {
            if !self.consumer_can_move(&consumer) {
                let key = self.key(&consumer);
                self.sorted.remove(&key);
                if let Some(list) = self.current.remove(&consumer) {
                    fixed.push((consumer, list));
                }
            }
        }

        let pre_balance = self.current.clone();
        let pre_balance_owners = self.partition_consumer.clone();
        if !self.revocation_required {
            let list = unassigned.clone();
            self.perform_reassignments(&list, prev);
        }
        let list = self.sorted_all.clone();
        let performed = self.perform_reassignments(&list, prev);
        if !initializing
            && performed
            && Self::balance_score(&self.current) >= Self::balance_score(&pre_balance)
        {
            self.current = pre_balance;
            self.partition_consumer = pre_balance_owners;
        }
        for (consumer, list) in fixed {
            self.current.insert(consumer, list);
        }
    }

    fn perform_reassignments(
        &mut self,
        partitions: &[TopicPartition],
        prev: &HashMap<TopicPartition, (String, i32)>,
    ) -> bool {
        let mut performed = false;
        loop {
            let mut modified = false;
            for tp in partitions {
                if self.is_balanced() {
                    break;
                }
                let Some(consumer) = self.partition_consumer.get(tp).cloned() else {
                    continue;
                };
                if let Some((prev_consumer, _)) = prev.get(tp) {
                    if self.current.contains_key(prev_consumer)
                        && self.size(&consumer) > self.size(prev_consumer) + 1
                    {
                        let prev_consumer = prev_consumer.clone();
                        self.reassign_to(tp, &prev_consumer);
                        performed = true;
                        modified = true;
                        continue;
                    }
                }
                let others = self
                    .topic_consumers
                    .get(&*tp.topic)
                    .cloned()
                    .unwrap_or_default();
                let mut found_rack = false;
                let racks = self.rack.partition_racks.get(tp);
                if let (Some(rack), Some(racks)) = (self.rack.consumer_racks.get(&consumer), racks)
                {
                    if !racks.is_empty() && racks.contains(rack) {
                        for other in &others {
                            let in_rack = self
                                .rack
                                .consumer_racks
                                .get(other)
                                .is_some_and(|r| racks.contains(r));
                            if !in_rack {
                                continue;
                            }
                            if self.size(&consumer) > self.size(other) + 1 {
                                self.reassign(tp);
                                performed = true;
                                modified = true;
                                found_rack = true;
                                break;
                            }
                        }
                    }
                }
                if !found_rack {
                    for other in &others {
                        if self.size(&consumer) > self.size(other) + 1 {
                            self.reassign(tp);
                            performed = true;
                            modified = true;
                            break;
                        }
                    }
                }
            }
            if !modified {
                return performed;
            }
        }
    }

    fn reassign(&mut self, tp: &TopicPartition) {
        let new = self
            .sorted
            .iter()
            .find(|(_, JStr(c))| {
                self.consumer_topics
                    .get(c)
                    .is_some_and(|t| t.iter().any(|x| **x == *tp.topic))
            })
            .map(|(_, JStr(c))| c.clone());
        if let Some(new) = new {
            self.reassign_to(tp, &new);
        }
    }

    fn reassign_to(&mut self, tp: &TopicPartition, new: &str) {
        let Some(consumer) = self.partition_consumer.get(tp).cloned() else {
            return;
        };
        let to_move = self.movements.actual_partition_to_move(tp, &consumer, new);
        self.process_movement(&to_move, new);
    }

    fn process_movement(&mut self, tp: &TopicPartition, new: &str) {
        let Some(old) = self.partition_consumer.get(tp).cloned() else {
            return;
        };
        let old_key = self.key(&old);
        let new_key = self.key(new);
        self.sorted.remove(&old_key);
        self.sorted.remove(&new_key);
        self.movements.move_partition(tp, &old, new);
        if let Some(list) = self.current.get_mut(&old) {
            if let Some(pos) = list.iter().position(|x| x == tp) {
                list.remove(pos);
            }
        }
        if let Some(list) = self.current.get_mut(new) {
            list.push(tp.clone());
        }
        self.partition_consumer.insert(tp.clone(), new.to_owned());
        let new_key = self.key(new);
        let old_key = self.key(&old);
        self.sorted.insert(new_key);
        self.sorted.insert(old_key);
    }
}
