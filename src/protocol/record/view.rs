//! Records left in the bytes they were received in, decoded and checked as
//! they are iterated ([`decode_batch_views`](super::decode_batch_views)).
//!
//! Owned [`BatchRecord`]s cost a `Bytes` reference count per key, value and
//! header value (an atomic increment when decoded, a decrement when
//! dropped) and about a hundred bytes of struct per record; for small
//! records that is most of the decoding time. A view borrows instead, and
//! turns into owned records only on request.

use std::ops::Range;

use bytes::Bytes;

use super::parse::{parse_record, trailing_bytes, HeaderWalk, RawRecord, RecordError};
use super::{BatchRecord, DecodeStop, RecordBatch};
use crate::protocol::error::DecodeError;

/// The records of one batch. For v2 batches they stay in the batch's bytes
/// (zero-copy, or the decompressed buffer) and are decoded while iterating,
/// so a malformed record shows up as an error from the iterator (the CRC,
/// batch header and record count were checked already); legacy v0/v1
/// messages are held decoded.
#[derive(Debug, Clone)]
pub struct RecordsView {
    inner: Inner,
}

#[derive(Debug, Clone)]
struct Raw {
    section: Bytes,
    count: usize,
    /// Offset of the section in the input, for errors.
    base: usize,
    /// Whether the section is decompressed (errors say so).
    decompressed: bool,
}

impl Raw {
    /// The error `decode_batches` would have returned.
    fn error(&self, e: DecodeError) -> DecodeError {
        let e = if self.decompressed {
            e.context("decompressed records")
        } else {
            e
        };
        e.context("RecordBatch")
    }
}

#[derive(Debug, Clone)]
enum Inner {
    /// A records section declaring `count` records.
    Raw(Raw),
    Owned(Vec<BatchRecord>),
}

impl RecordsView {
    /// A view of `count` records filling `section`, which starts at offset
    /// `base` of the input.
    pub(super) fn new(section: Bytes, count: usize, base: usize, decompressed: bool) -> Self {
        Self {
            inner: Inner::Raw(Raw {
                section,
                count,
                base,
                decompressed,
            }),
        }
    }

    /// A view of records that are already decoded.
    pub fn from_records(records: Vec<BatchRecord>) -> Self {
        Self {
            inner: Inner::Owned(records),
        }
    }

    /// Number of records (as declared by the batch, for v2 batches).
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Raw(raw) => raw.count,
            Inner::Owned(v) => v.len(),
        }
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, in order, borrowed from the view; after an error the
    /// iterator ends.
    pub fn iter(&self) -> RecordRefs<'_> {
        match &self.inner {
            Inner::Raw(raw) => RecordRefs {
                inner: RefsInner::Raw {
                    raw,
                    pos: 0,
                    left: raw.count,
                    done: false,
                },
            },
            Inner::Owned(v) => RecordRefs {
                inner: RefsInner::Owned(v.iter()),
            },
        }
    }

    /// The records as owned [`BatchRecord`]s (keys and values are zero-copy
    /// slices), or the error, exactly as
    /// [`decode_batches`](super::decode_batches) gives them.
    pub fn to_records(&self) -> Result<Vec<BatchRecord>, DecodeError> {
        match &self.inner {
            Inner::Raw(raw) => {
                let fail = |e: RecordError| raw.error(e.into_error(raw.base).context("Record"));
                let mut out = Vec::with_capacity(raw.count);
                let mut pos = 0;
                for _ in 0..raw.count {
                    let (rec, next) = parse_record(&raw.section, pos).map_err(fail)?;
                    out.push(rec.to_owned_record(&raw.section).map_err(fail)?);
                    pos = next;
                }
                match raw.section.len() - pos {
                    0 => Ok(out),
                    n => Err(raw.error(trailing_bytes(n, raw.base + pos))),
                }
            }
            Inner::Owned(v) => Ok(v.clone()),
        }
    }
}

impl<'a> IntoIterator for &'a RecordsView {
    type Item = Result<RecordRef<'a>, DecodeError>;
    type IntoIter = RecordRefs<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the records of a [`RecordsView`].
#[derive(Debug, Clone)]
pub struct RecordRefs<'a> {
    inner: RefsInner<'a>,
}

#[derive(Debug, Clone)]
enum RefsInner<'a> {
    Raw {
        raw: &'a Raw,
        pos: usize,
        left: usize,
        /// Set after the last record or an error.
        done: bool,
    },
    Owned(std::slice::Iter<'a, BatchRecord>),
}

impl<'a> Iterator for RecordRefs<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            RefsInner::Raw {
                raw,
                pos,
                left,
                done,
            } => {
                if *done {
                    return None;
                }
                let raw: &'a Raw = raw;
                let section: &'a [u8] = &raw.section;
                if *left == 0 {
                    *done = true;
                    return match section.len() - *pos {
                        0 => None,
                        n => Some(Err(raw.error(trailing_bytes(n, raw.base + *pos)))),
                    };
                }
                match parse_record(section, *pos) {
                    Ok((rec, next)) => {
                        *pos = next;
                        *left -= 1;
                        Some(Ok(RecordRef::raw(section, rec)))
                    }
                    Err(e) => {
                        *done = true;
                        Some(Err(raw.error(e.into_error(raw.base).context("Record"))))
                    }
                }
            }
            RefsInner::Owned(it) => it.next().map(|r| Ok(RecordRef::owned(r))),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            // One more for a trailing-bytes error.
            RefsInner::Raw { left, .. } => left.saturating_add(1),
            RefsInner::Owned(it) => it.len(),
        };
        (0, Some(n))
    }
}

/// One record of a [`RecordsView`], borrowing its bytes.
#[derive(Debug, Clone)]
pub struct RecordRef<'a> {
    /// Record attributes (unused by Kafka in v2).
    pub attributes: i8,
    /// Milliseconds after the batch's `base_timestamp`.
    pub timestamp_delta: i64,
    /// Offset after the batch's `base_offset`.
    pub offset_delta: i32,
    /// The key; `None` (null) is distinct from empty.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone on compacted topics.
    pub value: Option<&'a [u8]>,
    headers: HeadersSrc<'a>,
}

#[derive(Debug, Clone)]
enum HeadersSrc<'a> {
    Raw {
        section: &'a [u8],
        headers: Range<usize>,
        count: usize,
    },
    Owned(&'a [super::RecordHeader]),
}

impl<'a> RecordRef<'a> {
    fn raw(section: &'a [u8], raw: RawRecord) -> Self {
        Self {
            attributes: raw.attributes,
            timestamp_delta: raw.timestamp_delta,
            offset_delta: raw.offset_delta,
            key: raw.key.clone().and_then(|r| section.get(r)),
            value: raw.value.clone().and_then(|r| section.get(r)),
            headers: HeadersSrc::Raw {
                section,
                headers: raw.headers,
                count: raw.header_count,
            },
        }
    }

    fn owned(r: &'a BatchRecord) -> Self {
        Self {
            attributes: r.attributes,
            timestamp_delta: r.timestamp_delta,
            offset_delta: r.offset_delta,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: HeadersSrc::Owned(&r.headers),
        }
    }

    /// The headers, in wire order: key and optional value (checked when the
    /// record was decoded).
    pub fn headers(&self) -> HeaderRefs<'a> {
        match &self.headers {
            HeadersSrc::Raw {
                section,
                headers,
                count,
            } => HeaderRefs {
                inner: HeaderRefsInner::Raw {
                    section,
                    walk: HeaderWalk::new(section, headers.clone()),
                    left: *count,
                },
            },
            HeadersSrc::Owned(h) => HeaderRefs {
                inner: HeaderRefsInner::Owned(h.iter()),
            },
        }
    }
}

/// Iterator over a [`RecordRef`]'s headers: `(key, value)`.
pub struct HeaderRefs<'a> {
    inner: HeaderRefsInner<'a>,
}

enum HeaderRefsInner<'a> {
    Raw {
        section: &'a [u8],
        walk: HeaderWalk<'a>,
        left: usize,
    },
    Owned(std::slice::Iter<'a, super::RecordHeader>),
}

impl std::fmt::Debug for HeaderRefs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderRefs").finish_non_exhaustive()
    }
}

impl<'a> Iterator for HeaderRefs<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            HeaderRefsInner::Raw {
                section,
                walk,
                left,
            } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Checked when the view was made: cannot fail.
                let (key, value) = walk.next_header().ok()?;
                Some((key, value.and_then(|r| section.get(r))))
            }
            HeaderRefsInner::Owned(it) => it.next().map(|h| (h.key.as_str(), h.value.as_deref())),
        }
    }
}

/// A batch from [`decode_batch_views`](super::decode_batch_views): its
/// header fields (with `batch.records` empty) and its records as a view.
#[derive(Debug, Clone)]
pub struct BatchView {
    /// Every field of the batch but its records (`records` is empty); use
    /// its methods for offsets and timestamps.
    pub batch: RecordBatch,
    /// The records.
    pub records: RecordsView,
}

impl BatchView {
    /// The absolute offset of `record`, one of this batch's records.
    pub fn record_offset(&self, record: &RecordRef<'_>) -> i64 {
        self.batch
            .base_offset
            .wrapping_add(i64::from(record.offset_delta))
    }

    /// The absolute timestamp of `record` (see
    /// [`RecordBatch::record_timestamp`]).
    pub fn record_timestamp(&self, record: &RecordRef<'_>) -> i64 {
        match self.batch.timestamp_type {
            super::TimestampType::LogAppendTime => self.batch.max_timestamp,
            super::TimestampType::CreateTime => self
                .batch
                .base_timestamp
                .wrapping_add(record.timestamp_delta),
        }
    }

    /// The batch with owned records, as [`decode_batches`](super::decode_batches)
    /// would have returned it.
    pub fn to_batch(&self) -> Result<RecordBatch, DecodeError> {
        Ok(RecordBatch {
            records: self.records.to_records()?,
            ..self.batch.clone()
        })
    }
}

/// The result of [`decode_batch_views`](super::decode_batch_views).
#[derive(Debug, Clone, Default)]
pub struct DecodedBatchViews {
    /// The complete batches, in order.
    pub batches: Vec<BatchView>,
    /// Why decoding stopped.
    pub stop: DecodeStop,
    /// Bytes after the last decoded batch that were not decoded.
    pub unread_bytes: usize,
}

impl DecodedBatchViews {
    /// Total number of records in all batches (as declared).
    pub fn record_count(&self) -> usize {
        self.batches.iter().map(|b| b.records.len()).sum()
    }
}
