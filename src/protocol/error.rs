//! Errors of the sans-IO protocol layer.

use std::fmt;

/// What went wrong while decoding bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended before a value was complete.
    UnexpectedEof {
        /// Bytes the value needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A length or count was negative but not the null marker `-1`.
    NegativeLength(i64),
    /// A length or element count promised more than the bytes left.
    LengthExceedsRemaining {
        /// The length or count read from the wire.
        length: u64,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A varint ran past its maximum encoded size.
    VarintTooLong,
    /// A string was not valid UTF-8.
    InvalidUtf8,
    /// A null was read where the field is not nullable in this version.
    UnexpectedNull,
    /// A message or field does not exist in the requested version.
    UnsupportedVersion {
        /// What was asked for (a message name).
        what: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// A CRC did not match the bytes it covers.
    CrcMismatch {
        /// The CRC stored on the wire.
        expected: u32,
        /// The CRC computed over the received bytes.
        actual: u32,
    },
    /// Decompressing failed or the codec is unknown.
    Compression(String),
    /// Decompressed output grew beyond the allowed limit.
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A value is structurally impossible (an unknown magic byte, a bad enum).
    InvalidValue(String),
    /// Bytes were left over after a value that must fill its frame.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEof { needed, remaining } => {
                write!(
                    f,
                    "unexpected end of input: needed {needed} bytes, {remaining} left"
                )
            }
            Self::NegativeLength(n) => write!(f, "negative length {n}"),
            Self::LengthExceedsRemaining { length, remaining } => write!(
                f,
                "length or count {length} exceeds the {remaining} bytes left"
            ),
            Self::VarintTooLong => write!(f, "varint longer than its maximum size"),
            Self::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            Self::UnexpectedNull => write!(f, "null in a field that is not nullable"),
            Self::UnsupportedVersion { what, version } => {
                write!(f, "{what} does not exist in version {version}")
            }
            Self::CrcMismatch { expected, actual } => write!(
                f,
                "CRC mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            Self::Compression(msg) => write!(f, "decompression failed: {msg}"),
            Self::DecompressedTooLarge { limit } => {
                write!(f, "decompressed data exceeds the limit of {limit} bytes")
            }
            Self::InvalidValue(msg) => write!(f, "invalid value: {msg}"),
            Self::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes"),
        }
    }
}

/// A decoding failure: what was wrong, at which byte offset, and in which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    offset: usize,
    /// Field names from the innermost outwards; filled only on the error path.
    context: Vec<&'static str>,
}

impl DecodeError {
    /// An error of `kind` at byte `offset` of the input.
    pub fn new(kind: DecodeErrorKind, offset: usize) -> Self {
        Self {
            kind,
            offset,
            context: Vec::new(),
        }
    }

    /// Adds the name of an enclosing field or message.
    #[must_use]
    pub fn context(mut self, what: &'static str) -> Self {
        self.context.push(what);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// The byte offset in the input at which it went wrong.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The field path, outermost first, e.g. `FetchResponse.responses.partitions`.
    pub fn path(&self) -> String {
        let mut parts: Vec<&str> = self.context.iter().rev().copied().collect();
        parts.dedup();
        parts.join(".")
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            write!(f, "{} at byte {}", self.kind, self.offset)
        } else {
            write!(
                f,
                "{} at byte {} in {}",
                self.kind,
                self.offset,
                self.path()
            )
        }
    }
}

impl std::error::Error for DecodeError {}

/// A value that cannot be encoded in the requested version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message does not exist in this version.
    #[error("{what} does not exist in version {version}")]
    UnsupportedVersion {
        /// The message name.
        what: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// A field that this version lacks was set to a value other than its default.
    #[error("field {field} cannot be sent in version {version}")]
    FieldNotInVersion {
        /// The field (`Message.field`).
        field: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// A null was given for a field that is not nullable in this version.
    #[error("field {field} is not nullable in version {version}")]
    NullNotAllowed {
        /// The field (`Message.field`).
        field: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// A string, byte string or array is too long for its length prefix.
    #[error("{what} is too long: {len} exceeds the maximum of {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum the encoding allows.
        max: usize,
    },
    /// Compressing a record batch failed.
    #[error("compression failed: {0}")]
    Compression(String),
}
