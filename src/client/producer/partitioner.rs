//! Choosing the partition of a record.
//!
//! Keyed records are placed exactly as the Java client (and librdkafka's
//! `murmur2_random`) place them, so that a key lands on the same partition
//! whichever of these clients wrote it: `(murmur2(key) & 0x7fffffff) % n`.

use std::{fmt, sync::Arc};

/// How a [`super::Producer`] picks the partition of a record that does not
/// name one itself ([`super::ProducerRecord::partition`] is `None`; a record
/// that names its partition always goes there).
#[derive(Clone, Default)]
pub enum Partitioner {
    /// Keyed records: murmur2 of the key, as the Java client. Records
    /// without a key stick to one partition of the topic until its batch is
    /// closed, then move on to another (KIP-480), which makes fuller batches
    /// than spreading every record; partitions without a leader are passed
    /// over while any partition has one, so records do not wait for a
    /// leader election that other partitions make unnecessary.
    #[default]
    Default,
    /// Every record (keyed or not) goes to the next partition in turn.
    RoundRobin,
    /// A user-supplied function of (topic, key, partition count) that
    /// returns a partition in `0..count`; other values fail the send.
    Custom(PartitionFn),
}

/// A custom partitioner: (topic, key, partition count) → partition.
pub type PartitionFn = Arc<dyn Fn(&str, Option<&[u8]>, i32) -> i32 + Send + Sync>;

impl fmt::Debug for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("Default"),
            Self::RoundRobin => f.write_str("RoundRobin"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), bit for bit as the Java
/// client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // The length is mixed in as a Java int; keys are far below 2 GiB, and
    // truncating like Java does keeps the hash identical even if not.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    // Java's switch falls through from the highest remaining byte down.
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner gives `key` in a topic
/// of `num_partitions` partitions. `num_partitions` must be positive.
pub fn key_partition(key: &[u8], num_partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % num_partitions.max(1)
}

/// The next sticky partition for records without a key: a random partition
/// of `0..count` other than `current` (when there is a choice).
///
/// As the Java client's built-in partitioner (KIP-480 and KIP-794's
/// adaptive choice): only partitions `usable` says can take records now
/// (their leader is known and their last send did not fail) are chosen
/// while there are any, else those with a known leader (`with_leader`),
/// else any (records then wait for a leader rather than fail); and among
/// them, one with fewer batches waiting (`depth`) is likelier: a partition
/// whose leader is slow or gone does not keep taking records that other
/// partitions could send.
pub(crate) fn next_sticky_partition(
    current: Option<i32>,
    count: i32,
    usable: impl Fn(i32) -> bool,
    with_leader: &[i32],
    depth: impl Fn(i32) -> usize,
) -> i32 {
    if count <= 1 {
        return 0;
    }
    let fit = |p: i32| fitness(p, &usable, with_leader);
    let best = (0..count).map(fit).min().unwrap_or(Fitness::Unknown);
    let candidates: Vec<i32> = (0..count).filter(|&p| fit(p) == best).collect();
    let others: Vec<i32> = candidates
        .iter()
        .copied()
        .filter(|&p| Some(p) != current)
        .collect();
    if others.is_empty() {
        // The current partition is the only choice.
        return current.unwrap_or(0);
    }
    // Weights as the Java client's: the deepest queue gets 1, an empty one
    // one more than the deepest.
    let depths: Vec<usize> = others.iter().map(|&p| depth(p)).collect();
    let deepest = depths.iter().copied().max().unwrap_or(0);
    let total: usize = depths.iter().map(|d| deepest + 1 - d).sum();
    let mut pick = rand::random_range(0..total.max(1));
    for (&p, d) in others.iter().zip(&depths) {
        let w = deepest + 1 - d;
        if pick < w {
            return p;
        }
        pick -= w;
    }
    others[0]
}

/// Whether records without a key may stay on the sticky `partition`: it
/// exists and is as fit to take them as any (see [`next_sticky_partition`]).
pub(crate) fn sticky_usable(
    partition: i32,
    count: i32,
    usable: impl Fn(i32) -> bool,
    with_leader: &[i32],
) -> bool {
    if !(0..count).contains(&partition) {
        return false;
    }
    // The common case, checked first: once per record.
    let f = fitness(partition, &usable, with_leader);
    f == Fitness::Ready || (0..count).all(|q| fitness(q, &usable, with_leader) >= f)
}

/// How fit a partition is to take records without a key, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fitness {
    /// Its leader is known and its last send did not fail.
    Ready,
    /// Its leader is known.
    Led,
    /// Its leader is not known.
    Unknown,
}

fn fitness(p: i32, usable: &impl Fn(i32) -> bool, with_leader: &[i32]) -> Fitness {
    match (with_leader.binary_search(&p).is_ok(), usable(p)) {
        (true, true) => Fitness::Ready,
        (true, false) => Fitness::Led,
        (false, _) => Fitness::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_partitions_skip_partitions_without_a_leader() {
        // Partitions 1 and 3 of 5 have a leader.
        let led = [1, 3];
        let mut picked = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = next_sticky_partition(None, 5, |_| true, &led, |_| 0);
            assert!(led.contains(&p), "picked {p} without a leader");
            picked.insert(p);
            // Moving on from a partition with a leader picks the other.
            assert_eq!(next_sticky_partition(Some(1), 5, |_| true, &led, |_| 0), 3);
            assert_eq!(next_sticky_partition(Some(3), 5, |_| true, &led, |_| 0), 1);
            // From one without a leader: either with a leader.
            assert!(led.contains(&next_sticky_partition(Some(0), 5, |_| true, &led, |_| 0)));
        }
        assert_eq!(picked.len(), 2, "both partitions with a leader are used");
        // The only partition with a leader is kept.
        assert_eq!(next_sticky_partition(Some(2), 5, |_| true, &[2], |_| 0), 2);
        assert_eq!(next_sticky_partition(None, 5, |_| true, &[2], |_| 0), 2);
        assert!(sticky_usable(3, 5, |_| true, &led));
        assert!(!sticky_usable(2, 5, |_| true, &led));
        assert!(!sticky_usable(5, 5, |_| true, &led));
    }

    #[test]
    fn sticky_partitions_without_known_leaders_use_every_partition() {
        let mut picked = std::collections::HashSet::new();
        for _ in 0..400 {
            let p = next_sticky_partition(Some(2), 4, |_| true, &[], |_| 0);
            assert!((0..4).contains(&p) && p != 2, "picked {p}");
            picked.insert(p);
            // Leaders known only beyond the partition count do not count.
            let q = next_sticky_partition(None, 4, |_| true, &[7], |_| 0);
            assert!((0..4).contains(&q), "picked {q}");
        }
        assert_eq!(picked.len(), 3);
        assert_eq!(next_sticky_partition(Some(0), 1, |_| true, &[], |_| 0), 0);
        assert!(sticky_usable(2, 4, |_| true, &[]));
        assert!(sticky_usable(2, 4, |_| true, &[7]));
    }

    #[test]
    fn sticky_partitions_avoid_failing_and_backed_up_partitions() {
        let led = [0, 1, 2, 3];
        // Partition 1's last send failed: never chosen while others can.
        for _ in 0..200 {
            let p = next_sticky_partition(Some(0), 4, |p| p != 1, &led, |_| 0);
            assert!(p == 2 || p == 3, "picked {p}");
        }
        assert!(!sticky_usable(1, 4, |p| p != 1, &led));
        assert!(sticky_usable(2, 4, |p| p != 1, &led));
        // When no partition can take records, one with a leader still does.
        assert!(sticky_usable(1, 4, |_| false, &led));
        assert!(led.contains(&next_sticky_partition(None, 4, |_| false, &led, |_| 0)));
        // A partition with many batches waiting is rarely chosen: weights
        // 1 against 11 for each of the others.
        let depth = |p| if p == 2 { 10 } else { 0 };
        let mut to_deep = 0;
        for _ in 0..3000 {
            if next_sticky_partition(Some(0), 4, |_| true, &led, depth) == 2 {
                to_deep += 1;
            }
        }
        // Expected 3000 / 23 = 130; uniform would be 1000.
        assert!((40..300).contains(&to_deep), "{to_deep} of 3000");
    }

    #[test]
    fn murmur2_matches_java_vectors() {
        // The vectors of Kafka's own `UtilsTest.testMurmur2` (plus short
        // keys that exercise every tail length), as published.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key),
                *want,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn murmur2_of_empty_key_is_stable() {
        // Empty keys hash too (only a null key is "no key"); value computed
        // from the algorithm with an empty body: seed ^ 0 then the final mix.
        let mut h: u32 = 0x9747_b28c;
        h ^= h >> 13;
        h = h.wrapping_mul(0x5bd1_e995);
        h ^= h >> 15;
        assert_eq!(murmur2(b""), h as i32);
    }

    #[test]
    fn key_partition_is_positive_modulo() {
        // "21" hashes negative: the sign bit is masked, not abs()'d.
        let h = murmur2(b"21");
        assert!(h < 0);
        assert_eq!(key_partition(b"21", 6), (h & 0x7fff_ffff) % 6);
        for n in 1..50 {
            let p = key_partition(b"some key", n);
            assert!((0..n).contains(&p));
        }
        assert_eq!(key_partition(b"x", 1), 0);
    }
}
