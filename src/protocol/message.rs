//! The traits every versioned request and response implements.

use bytes::BytesMut;

use super::{api_key::ApiKey, DecodeError, EncodeError, Reader};

/// A message with versioned encoding: a request, a response, or a nested
/// structure such as the consumer-protocol subscription.
pub trait Message: Sized + Default + Clone + PartialEq + std::fmt::Debug {
    /// Lowest version this message defines.
    const MIN_VERSION: i16;
    /// Highest version this message defines.
    const MAX_VERSION: i16;
    /// First flexible (tagged-field, compact encoding) version; `None` if never flexible.
    const FLEXIBLE_FROM: Option<i16>;

    /// Whether `version` uses the flexible encoding.
    fn is_flexible(version: i16) -> bool {
        Self::FLEXIBLE_FROM.is_some_and(|v| version >= v)
    }

    /// Appends the body of the message in `version` to `buf`.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;

    /// Decodes the body of the message in `version` from `r`.
    fn decode(r: &mut Reader, version: i16) -> Result<Self, DecodeError>;

    /// The broker's throttle time, for responses that carry one; the
    /// connection layer delays the next request to that broker by it.
    fn throttle_time_ms(&self) -> Option<i32> {
        None
    }
}

/// A request, tied to its API key and response type.
pub trait Request: Message {
    /// The API this request belongs to.
    const API_KEY: ApiKey;
    /// The matching response.
    type Response: Message;

    /// The request header version to send with `version` of this request.
    fn request_header_version(version: i16) -> i16 {
        if Self::is_flexible(version) {
            2
        } else {
            1
        }
    }

    /// The response header version the broker answers `version` with.
    /// ApiVersions answers with v0 always, so a client that does not yet
    /// know the broker's versions can still parse the answer.
    fn response_header_version(version: i16) -> i16 {
        if Self::API_KEY != ApiKey::API_VERSIONS && Self::is_flexible(version) {
            1
        } else {
            0
        }
    }
}
