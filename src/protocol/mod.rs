//! The Kafka wire protocol, without I/O.
//!
//! Bytes go in; typed values or typed errors come out. Nothing here performs
//! I/O or depends on an async runtime, so every decoder can be fuzzed and
//! property-tested in isolation.

pub mod api_key;
pub mod error;
pub mod error_code;
pub mod message;
pub mod messages;
pub mod primitives;
pub mod record;

pub use api_key::ApiKey;
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use error_code::ErrorCode;
pub use message::{Message, Request};
pub use primitives::{RawTaggedField, Reader, Uuid, WriteExt};
