//! Which version of each API this client uses with a given broker.
//!
//! The one table of client-side limits lives in [`client_range`]; the
//! per-broker choice is the highest version inside both that range and what
//! the broker advertised in ApiVersions.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::ApiKey;

/// The software name sent in ApiVersions v3+ (brokers show it in metrics).
pub const CLIENT_SOFTWARE_NAME: &str = "rskafka";

/// The versions of `key` this client is willing to use: the range its codecs
/// implement, narrowed where brokers are known to misbehave.
///
/// - Produce: at least v3. Kafka 4 still advertises v0–v2 but rejects them
///   (KAFKA-18659), and v3 is the first with record batches (magic v2).
///
/// Fetch is not capped: v13+ identifies topics by id, which the cluster
/// layer's metadata provides; callers that want names can cap it with
/// `ConnectionConfig::max_versions`.
pub fn client_range(key: ApiKey) -> Option<(i16, i16)> {
    let (min, max) = key.client_versions()?;
    let min = match key {
        ApiKey::PRODUCE => min.max(3),
        _ => min,
    };
    (min <= max).then_some((min, max))
}

/// The broker's advertised version ranges and the version chosen for each
/// API, with the cluster's finalized feature levels the broker reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionTable {
    broker: HashMap<i16, (i16, i16)>,
    chosen: HashMap<i16, i16>,
    features: HashMap<String, i16>,
}

impl VersionTable {
    /// Builds the table from the broker's `(key, min, max)` list, applying
    /// [`client_range`] and the caller's `caps`.
    pub fn new(
        advertised: impl IntoIterator<Item = (ApiKey, i16, i16)>,
        caps: &BTreeMap<ApiKey, i16>,
    ) -> Self {
        let mut broker = HashMap::new();
        let mut chosen = HashMap::new();
        for (key, bmin, bmax) in advertised {
            if bmin > bmax {
                continue;
            }
            broker.insert(key.0, (bmin, bmax));
            let Some((cmin, cmax)) = client_range(key) else {
                continue;
            };
            let cap = caps.get(&key).copied().unwrap_or(i16::MAX);
            let v = bmax.min(cmax).min(cap);
            if v >= bmin.max(cmin) {
                chosen.insert(key.0, v);
            }
        }
        Self {
            broker,
            chosen,
            features: HashMap::new(),
        }
    }

    /// Adds the finalized feature levels (name, max level) from ApiVersions.
    pub(crate) fn with_finalized_features(
        mut self,
        features: impl IntoIterator<Item = (String, i16)>,
    ) -> Self {
        self.features.extend(features);
        self
    }

    /// The level of feature `name` finalized in the cluster (such as
    /// `transaction.version`), `None` if the broker reported none.
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }

    /// The highest version usable with this broker, `None` if the ranges
    /// do not overlap or the broker lacks the API.
    pub fn version_for(&self, key: ApiKey) -> Option<i16> {
        self.chosen.get(&key.0).copied()
    }

    /// What the broker advertised for `key`.
    pub fn broker_versions(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.broker.get(&key.0).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_never_below_v3_and_caps_apply() {
        let caps = BTreeMap::from([(ApiKey::FETCH, 12)]);
        let t = VersionTable::new(
            [
                (ApiKey::PRODUCE, 0, 2),
                (ApiKey::FETCH, 4, 100),
                (ApiKey::METADATA, 0, 100),
                (ApiKey(30000), 0, 5),
            ],
            &caps,
        );
        assert_eq!(t.version_for(ApiKey::PRODUCE), None);
        assert_eq!(t.broker_versions(ApiKey::PRODUCE), Some((0, 2)));
        assert_eq!(t.version_for(ApiKey::FETCH), Some(12));
        assert_eq!(
            t.version_for(ApiKey::METADATA),
            ApiKey::METADATA.client_versions().map(|(_, max)| max)
        );
        assert_eq!(t.version_for(ApiKey(30000)), None);
        assert_eq!(t.broker_versions(ApiKey(30000)), Some((0, 5)));
        assert_eq!(t.version_for(ApiKey::LIST_OFFSETS), None);

        let t = VersionTable::new([(ApiKey::PRODUCE, 0, 11)], &BTreeMap::new());
        assert!(t.version_for(ApiKey::PRODUCE).is_some_and(|v| v >= 3));
        assert_eq!(t.finalized_feature("transaction.version"), None);
        let t = t.with_finalized_features([("transaction.version".to_owned(), 2)]);
        assert_eq!(t.finalized_feature("transaction.version"), Some(2));
        assert_eq!(t.finalized_feature("group.version"), None);
    }
}
