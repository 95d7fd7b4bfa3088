//! One record inside a v2 batch's records section: parsing it in place
//! (offsets of its fields, header walks) and decoding it into owned form.
//! Below `batch.rs`, which walks a batch's records, and `view.rs`, which
//! hands out borrowed records.

use std::ops::Range;

use bytes::Bytes;

use super::{BatchRecord, RecordHeader};
use crate::protocol::error::{DecodeError, DecodeErrorKind};
use crate::protocol::primitives::{decode_varint, decode_varlong, VarintDecoder, VarintError};

/// Bytes left after a batch's declared records.
pub(super) fn trailing_bytes(n: usize, at: usize) -> DecodeError {
    DecodeError::new(DecodeErrorKind::TrailingBytes(n), at)
}

/// A record decoding failure, kept small so that the success path returns
/// in registers; turned into a [`DecodeError`] only when it happens.
#[derive(Debug)]
pub(super) struct RecordError {
    kind: RecordErrorKind,
    /// Offset in the records section.
    at: usize,
}

#[derive(Debug)]
enum RecordErrorKind {
    Varint(VarintError),
    NegativeLength(i32),
    LengthExceedsRemaining {
        length: u64,
        remaining: usize,
    },
    /// The fields do not add up to the record's length prefix.
    LengthMismatch {
        len: usize,
        used: Option<usize>,
    },
    NullHeaderKey,
    InvalidUtf8,
}

impl RecordError {
    #[cold]
    #[inline(never)]
    pub(super) fn into_error(self, base: usize) -> DecodeError {
        let at = base + self.at;
        let kind = match self.kind {
            RecordErrorKind::Varint(e) => e.kind(),
            RecordErrorKind::NegativeLength(n) => DecodeErrorKind::NegativeLength(n.into()),
            RecordErrorKind::LengthExceedsRemaining { length, remaining } => {
                DecodeErrorKind::LengthExceedsRemaining { length, remaining }
            }
            RecordErrorKind::LengthMismatch { len, used } => {
                DecodeErrorKind::InvalidValue(match used {
                    Some(used) => format!("record length {len} but its fields take {used} bytes"),
                    // `len` is that of the slice being read (the record or
                    // its headers), so it is not repeated here.
                    None => "a record's fields run past its length prefix".to_owned(),
                })
            }
            RecordErrorKind::NullHeaderKey => {
                return DecodeError::new(DecodeErrorKind::UnexpectedNull, at).context("Header.key")
            }
            RecordErrorKind::InvalidUtf8 => DecodeErrorKind::InvalidUtf8,
        };
        DecodeError::new(kind, at)
    }
}

/// A cursor over one record's bytes: the length prefix gives the record's
/// extent up front, so every field is read with cheap checks against that
/// slice and no per-field error plumbing on the success path.
struct RecordCursor<'a> {
    /// The record's bytes (after its length prefix).
    rec: &'a [u8],
    /// Next byte within `rec`.
    pos: usize,
    /// Offset of `rec[0]` in the records section.
    start: usize,
}

impl RecordCursor<'_> {
    #[inline]
    fn rest(&self) -> &[u8] {
        self.rec.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn fail(&self, kind: RecordErrorKind) -> RecordError {
        RecordError {
            kind,
            at: self.start + self.pos,
        }
    }

    /// A field ran past the record: its length prefix is too small.
    #[cold]
    fn overrun(&self) -> RecordError {
        RecordError {
            kind: RecordErrorKind::LengthMismatch {
                len: self.rec.len(),
                used: None,
            },
            at: self.start + self.rec.len(),
        }
    }

    #[inline]
    fn varint_failed(&self, e: VarintError) -> RecordError {
        match e {
            VarintError::Eof(_) => self.overrun(),
            e => RecordError {
                kind: RecordErrorKind::Varint(e),
                at: self.start + self.pos + e.consumed(),
            },
        }
    }

    #[inline]
    fn i8(&mut self) -> Result<i8, RecordError> {
        match self.rec.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b as i8)
            }
            None => Err(self.overrun()),
        }
    }

    /// Reads one varint-coded field with `decode`.
    #[inline]
    fn var<T>(&mut self, decode: VarintDecoder<T>) -> Result<T, RecordError> {
        match decode(self.rest()) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(e) => Err(self.varint_failed(e)),
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<i32, RecordError> {
        self.var(decode_varint)
    }

    /// A varint-length byte string as a range of the records section: `-1`
    /// is null, other negatives fail.
    #[inline]
    fn nullable_range(&mut self) -> Result<Option<Range<usize>>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(self.fail(RecordErrorKind::NegativeLength(n))),
            n => {
                let n = n as usize;
                let remaining = self.rec.len() - self.pos;
                if n > remaining {
                    return Err(self.fail(RecordErrorKind::LengthExceedsRemaining {
                        length: n as u64,
                        remaining,
                    }));
                }
                let from = self.start + self.pos;
                self.pos += n;
                Ok(Some(from..from + n))
            }
        }
    }
}

/// Slices `range` (already checked against the section) out of `section`.
#[inline]
fn slice(section: &Bytes, range: Option<Range<usize>>) -> Option<Bytes> {
    // An empty slice needs no reference to the buffer.
    range.map(|r| {
        if r.is_empty() {
            Bytes::new()
        } else {
            section.slice(r)
        }
    })
}

/// A record whose byte strings are ranges of its records section: what
/// both the owned decoder and [`RecordsView`] build on.
pub(super) struct RawRecord {
    pub(super) attributes: i8,
    pub(super) timestamp_delta: i64,
    pub(super) offset_delta: i32,
    pub(super) key: Option<Range<usize>>,
    pub(super) value: Option<Range<usize>>,
    /// The header entries (after the count), already checked.
    pub(super) headers: Range<usize>,
    pub(super) header_count: usize,
}

impl RawRecord {
    /// The owned record, with zero-copy slices of `section`.
    #[inline(always)]
    pub(super) fn to_owned_record(&self, section: &Bytes) -> Result<BatchRecord, RecordError> {
        let headers = if self.header_count == 0 {
            Vec::new()
        } else {
            owned_headers(section, self)?
        };
        Ok(BatchRecord {
            attributes: self.attributes,
            timestamp_delta: self.timestamp_delta,
            offset_delta: self.offset_delta,
            key: slice(section, self.key.clone()),
            value: slice(section, self.value.clone()),
            headers,
        })
    }
}

/// Out of line: most records have no headers.
#[inline(never)]
fn owned_headers(section: &Bytes, raw: &RawRecord) -> Result<Vec<RecordHeader>, RecordError> {
    let mut headers = Vec::with_capacity(raw.header_count);
    let mut walk = HeaderWalk::new(section, raw.headers.clone());
    for _ in 0..raw.header_count {
        let (key, value) = walk.next_header()?;
        headers.push(RecordHeader {
            key: key.to_owned(),
            value: slice(section, value),
        });
    }
    Ok(headers)
}

/// Reads the header entries of a record, checking each (non-null UTF-8
/// key, value within the record).
pub(super) struct HeaderWalk<'a> {
    section: &'a [u8],
    cursor: RecordCursor<'a>,
}

impl<'a> HeaderWalk<'a> {
    /// A walk over the header entries at `headers` of `section` (the
    /// records section a [`RawRecord`] was parsed from).
    pub(super) fn new(section: &'a [u8], headers: Range<usize>) -> Self {
        Self {
            section,
            cursor: RecordCursor {
                rec: section.get(headers.clone()).unwrap_or_default(),
                pos: 0,
                start: headers.start,
            },
        }
    }

    /// The next header's key and value range.
    pub(super) fn next_header(&mut self) -> Result<(&'a str, Option<Range<usize>>), RecordError> {
        let c = &mut self.cursor;
        let key_at = c.pos;
        let key = match c.nullable_range()? {
            Some(k) => k,
            None => {
                c.pos = key_at;
                return Err(c.fail(RecordErrorKind::NullHeaderKey));
            }
        };
        let key = self
            .section
            .get(key)
            .and_then(|k| std::str::from_utf8(k).ok());
        let Some(key) = key else {
            c.pos = key_at;
            return Err(c.fail(RecordErrorKind::InvalidUtf8));
        };
        Ok((key, c.nullable_range()?))
    }

    /// Bytes read so far.
    fn consumed(&self) -> usize {
        self.cursor.pos
    }
}

/// The fields every record starts with, up to its header count: read the
/// same way by [`decode_record`] and [`parse_record`].
struct RecordHead<'a> {
    /// Positioned after the header count.
    c: RecordCursor<'a>,
    len: usize,
    start: usize,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    header_count: usize,
}

#[inline(always)]
fn record_head(section: &[u8], pos: usize) -> Result<RecordHead<'_>, RecordError> {
    let rest = section.get(pos..).unwrap_or_default();
    let (len, n) = decode_varint(rest).map_err(|e| RecordError {
        kind: RecordErrorKind::Varint(e),
        at: pos + e.consumed(),
    })?;
    let start = pos + n;
    if len < 0 {
        return Err(RecordError {
            kind: RecordErrorKind::NegativeLength(len),
            at: start,
        });
    }
    let len = len as usize;
    let Some(rec) = section.get(start..).and_then(|d| d.get(..len)) else {
        return Err(RecordError {
            kind: RecordErrorKind::LengthExceedsRemaining {
                length: len as u64,
                remaining: section.len().saturating_sub(start),
            },
            at: start,
        });
    };
    let mut c = RecordCursor { rec, pos: 0, start };
    let attributes = c.i8()?;
    let timestamp_delta = c.var(decode_varlong)?;
    let offset_delta = c.varint()?;
    let key = c.nullable_range()?;
    let value = c.nullable_range()?;
    let header_count = c.varint()?;
    if header_count < 0 {
        return Err(c.fail(RecordErrorKind::NegativeLength(header_count)));
    }
    // A header takes at least two bytes (key length and value length).
    let header_count = header_count as usize;
    let remaining = len - c.pos;
    if header_count > remaining / 2 {
        return Err(c.fail(RecordErrorKind::LengthExceedsRemaining {
            length: header_count as u64,
            remaining,
        }));
    }
    Ok(RecordHead {
        c,
        len,
        start,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
    })
}

/// Decodes the record at `pos` of `section` into `slot` (a default record);
/// returns the offset after it. The same checks as [`parse_record`],
/// building the record directly: going through [`RawRecord`] measured 15%
/// slower. The fields are stored into the slot one by one because a record
/// built on the stack and pushed was copied with 16-byte loads spanning
/// narrower stores of its fields, stalling store forwarding (+7-15%).
#[inline(always)]
pub(super) fn decode_record(
    section: &Bytes,
    pos: usize,
    slot: &mut BatchRecord,
) -> Result<usize, RecordError> {
    let data: &[u8] = section;
    let RecordHead {
        mut c,
        len,
        start,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
    } = record_head(data, pos)?;
    if header_count == 0 {
        // Left as the default: assigning an empty `Vec` measured 3% slower.
        debug_assert!(
            slot.headers.is_empty(),
            "decode_record needs a default slot"
        );
    } else {
        slot.headers = decode_owned_headers(section, &mut c, header_count)?;
    }
    if c.pos != len {
        return Err(c.fail(RecordErrorKind::LengthMismatch {
            len,
            used: Some(c.pos),
        }));
    }
    slot.attributes = attributes;
    slot.timestamp_delta = timestamp_delta;
    slot.offset_delta = offset_delta;
    slot.key = slice(section, key);
    slot.value = slice(section, value);
    Ok(start + len)
}

/// Out of line: most records have no headers.
#[inline(never)]
fn decode_owned_headers(
    section: &Bytes,
    c: &mut RecordCursor<'_>,
    count: usize,
) -> Result<Vec<RecordHeader>, RecordError> {
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let key_at = c.pos;
        let Some(key) = c.nullable_range()? else {
            c.pos = key_at;
            return Err(c.fail(RecordErrorKind::NullHeaderKey));
        };
        let key = section
            .get(key)
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(|| {
                c.pos = key_at;
                c.fail(RecordErrorKind::InvalidUtf8)
            })?
            .to_owned();
        let value = slice(section, c.nullable_range()?);
        headers.push(RecordHeader { key, value });
    }
    Ok(headers)
}

/// Parses and checks the record at `pos` of `section`; returns it and the
/// offset after it.
#[inline(always)]
pub(super) fn parse_record(section: &[u8], pos: usize) -> Result<(RawRecord, usize), RecordError> {
    let RecordHead {
        c,
        len,
        start,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
    } = record_head(section, pos)?;
    let headers_at = start + c.pos;
    let mut raw = RawRecord {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: headers_at..start + len,
        header_count,
    };
    let mut used = c.pos;
    if header_count > 0 {
        used += check_headers(section, &raw)?;
    }
    if used != len {
        return Err(RecordError {
            kind: RecordErrorKind::LengthMismatch {
                len,
                used: Some(used),
            },
            at: start + used,
        });
    }
    raw.headers = headers_at..start + used;
    Ok((raw, start + len))
}

/// Checks every header of `raw`; returns the bytes they take.
#[inline(never)]
fn check_headers(section: &[u8], raw: &RawRecord) -> Result<usize, RecordError> {
    let mut walk = HeaderWalk::new(section, raw.headers.clone());
    for _ in 0..raw.header_count {
        walk.next_header()?;
    }
    Ok(walk.consumed())
}
