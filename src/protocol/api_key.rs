//! Placeholder until the generator writes the full table.

/// A Kafka API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKey(pub i16);

impl ApiKey {
    /// ApiVersions.
    pub const API_VERSIONS: ApiKey = ApiKey(18);
}
