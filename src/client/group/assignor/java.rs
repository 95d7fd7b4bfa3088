//! Just enough of Java's semantics to make the assignors give the same
//! answers as the Java client's for the same input.
//!
//! The Java assignors walk `HashMap`s and `HashSet`s, and a few of their
//! choices (which of two members keeps a contested partition, which moved
//! partition moves back) depend on that iteration order. [`JHashMap`]
//! reproduces it: buckets by the spread `hashCode`, insertion order within a
//! bucket, doubling at a 0.75 load factor, and the early resize of small
//! tables with a crowded bucket. (Tree bins, which only form after 8
//! collisions in one bucket of a table of 64+, are not modelled: their
//! iteration order could differ.) Strings compare by UTF-16 code units, as
//! `String.compareTo` does.

use std::cmp::Ordering;

use super::super::TopicPartition;

/// Java's `hashCode` for the key types the assignors hash.
pub(crate) trait JavaHash {
    fn java_hash(&self) -> i32;
}

impl JavaHash for str {
    fn java_hash(&self) -> i32 {
        self.encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
    }
}

impl JavaHash for String {
    fn java_hash(&self) -> i32 {
        self.as_str().java_hash()
    }
}

impl JavaHash for TopicPartition {
    fn java_hash(&self) -> i32 {
        // `TopicPartition.hashCode`: 31 * (31 + partition) + topic.hashCode().
        31i32
            .wrapping_add(self.partition)
            .wrapping_mul(31)
            .wrapping_add(self.topic.java_hash())
    }
}

/// `String.compareTo`: lexicographic by UTF-16 code unit.
pub(crate) fn java_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Topic-then-partition order with Java string comparison.
pub(crate) fn tp_cmp(a: &TopicPartition, b: &TopicPartition) -> Ordering {
    java_cmp(&a.topic, &b.topic).then(a.partition.cmp(&b.partition))
}

/// A string ordered as Java orders it, for sorted collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JStr(pub String);

impl Ord for JStr {
    fn cmp(&self, other: &Self) -> Ordering {
        java_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for JStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

const DEFAULT_CAPACITY: usize = 16;
const TREEIFY_THRESHOLD: usize = 8;
const MIN_TREEIFY_CAPACITY: usize = 64;

/// A map that iterates in the order a `java.util.HashMap` created with the
/// default capacity would, given the same sequence of inserts and removes.
#[derive(Debug, Clone)]
pub(crate) struct JHashMap<K, V> {
    buckets: Vec<Vec<(u32, K, V)>>,
    len: usize,
}

impl<K, V> Default for JHashMap<K, V> {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            len: 0,
        }
    }
}

fn spread(h: i32) -> u32 {
    let h = h as u32;
    h ^ (h >> 16)
}

impl<K: JavaHash + Eq, V> JHashMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn index(&self, hash: u32) -> usize {
        // The table length is a power of two.
        (hash as usize) & (self.buckets.len() - 1)
    }

    fn resize(&mut self) {
        let old_cap = self.buckets.len();
        let new_cap = if old_cap == 0 {
            DEFAULT_CAPACITY
        } else {
            old_cap * 2
        };
        let mut buckets: Vec<Vec<(u32, K, V)>> = (0..new_cap).map(|_| Vec::new()).collect();
        for (j, bucket) in std::mem::take(&mut self.buckets).into_iter().enumerate() {
            // Java splits each bucket into a "lo" and a "hi" list, keeping
            // the relative order of the entries in both.
            for entry in bucket {
                let target = if old_cap != 0 && (entry.0 as usize) & old_cap != 0 {
                    j + old_cap
                } else {
                    j
                };
                buckets[target].push(entry);
            }
        }
        self.buckets = buckets;
    }

    fn threshold(&self) -> usize {
        self.buckets.len() / 4 * 3
    }

    /// `put`: replaces the value in place if the key is present.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.buckets.is_empty() {
            self.resize();
        }
        let hash = spread(key.java_hash());
        let i = self.index(hash);
        let bucket = &mut self.buckets[i];
        if let Some(e) = bucket.iter_mut().find(|e| e.0 == hash && e.1 == key) {
            return Some(std::mem::replace(&mut e.2, value));
        }
        bucket.push((hash, key, value));
        if bucket.len() > TREEIFY_THRESHOLD && self.buckets.len() < MIN_TREEIFY_CAPACITY {
            // `treeifyBin` on a small table resizes instead.
            self.resize();
        }
        self.len += 1;
        if self.len > self.threshold() {
            self.resize();
        }
        None
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        if self.buckets.is_empty() {
            return None;
        }
        let hash = spread(key.java_hash());
        self.buckets[self.index(hash)]
            .iter()
            .find(|e| e.0 == hash && e.1 == *key)
            .map(|e| &e.2)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        if self.buckets.is_empty() {
            return None;
        }
        let hash = spread(key.java_hash());
        let i = self.index(hash);
        let bucket = &mut self.buckets[i];
        let pos = bucket.iter().position(|e| e.0 == hash && e.1 == *key)?;
        self.len -= 1;
        Some(bucket.remove(pos).2)
    }

    /// Entries in Java iteration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.buckets.iter().flatten().map(|e| (&e.1, &e.2))
    }

    /// Keys in Java iteration order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }
}

/// A `java.util.HashSet` (a `HashMap` with unit values).
pub(crate) type JHashSet<K> = JHashMap<K, ()>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_hash_matches_java() {
        // Values from `"...".hashCode()` in Java.
        assert_eq!("".java_hash(), 0);
        assert_eq!("a".java_hash(), 97);
        assert_eq!("hello".java_hash(), 99_162_322);
        assert_eq!("consumer-1".java_hash(), -166_239_206);
        // A character outside the BMP hashes as its surrogate pair.
        assert_eq!("\u{1F600}".java_hash(), 0xD83D * 31 + 0xDE00);
        assert_eq!(TopicPartition::new("t", 0).java_hash(), 31 * 31 + 116);
    }

    #[test]
    fn iteration_follows_buckets_then_insertion() {
        let mut m = JHashMap::new();
        // "Aa" and "BB" collide (2112); "C" is 67.
        for k in ["BB", "C", "Aa"] {
            m.insert(k.to_owned(), ());
        }
        let order: Vec<&str> = m.keys().map(String::as_str).collect();
        // 2112 & 15 = 0, 67 & 15 = 3.
        assert_eq!(order, ["BB", "Aa", "C"]);
        m.remove(&"BB".to_owned());
        m.insert("BB".to_owned(), ());
        let order: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(order, ["Aa", "BB", "C"]);
    }

    #[test]
    fn resizes_at_the_load_factor() {
        let mut m = JHashMap::new();
        for i in 0..13 {
            m.insert(format!("k{i}"), i);
        }
        assert_eq!(m.buckets.len(), 32);
        assert_eq!(m.len, 13);
        for i in 0..13 {
            assert_eq!(m.get(&format!("k{i}")), Some(&i));
        }
        // Sixteen keys hashing to bucket 0 of a 16-table force resizes.
        let mut m = JHashMap::new();
        for i in 0..9 {
            m.insert(TopicPartition::new("", i * 64 - 31), ());
        }
        assert!(m.buckets.len() >= 32);
        assert!(java_cmp("\u{FFFF}", "\u{10000}") == Ordering::Greater);
    }
}
