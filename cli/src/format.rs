//! Output formats of `consume`.

use base64::Engine;
use bytes::Bytes;
use rskafka::{client::consumer::ConsumedRecord, record::RecordAndOffset};

use crate::output::Ends;
use serde::Serialize;

/// Bytes as JSON: a string when valid UTF-8, else `{"base64": "..."}`.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonBytes<'a> {
    Text(&'a str),
    Binary { base64: String },
}

impl<'a> JsonBytes<'a> {
    fn new(b: &'a Bytes) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => Self::Text(s),
            Err(_) => Self::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
    }

    fn opt(b: Option<&'a Bytes>) -> Option<Self> {
        b.map(Self::new)
    }
}

/// One consumed record; field order is the contract's order (serde keeps
/// struct declaration order).
#[derive(Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<JsonBytes<'a>>,
    value: Option<JsonBytes<'a>>,
    headers: Vec<(&'a str, Option<JsonBytes<'a>>)>,
}

/// Milliseconds since the Unix epoch, the unit Kafka stores.
pub fn timestamp_ms(t: time::OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// Appends one JSON line (with `\n`) for `r` to `out`.
pub fn json_line(out: &mut Vec<u8>, topic: &str, partition: i32, r: &RecordAndOffset) {
    let rec = &r.record;
    let line = JsonRecord {
        topic,
        partition,
        offset: r.offset,
        timestamp: timestamp_ms(rec.timestamp),
        key: JsonBytes::opt(rec.key.as_ref()),
        value: JsonBytes::opt(rec.value.as_ref()),
        headers: rec
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), JsonBytes::opt(v.as_ref())))
            .collect(),
    };
    // Serializing these plain types into a Vec cannot fail; should it ever,
    // an empty object keeps the stream line-oriented.
    if serde_json::to_writer(&mut *out, &line).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
}

/// Appends the value alone (nothing for a tombstone) and `\n`; with a
/// `key_delimiter`, the key (nothing for a null key) and the delimiter
/// first.
pub fn value_line(out: &mut Vec<u8>, key_delimiter: Option<&[u8]>, r: &RecordAndOffset) {
    if let Some(d) = key_delimiter {
        if let Some(k) = &r.record.key {
            out.extend_from_slice(k);
        }
        out.extend_from_slice(d);
    }
    if let Some(v) = &r.record.value {
        out.extend_from_slice(v);
    }
    out.push(b'\n');
}

/// One part of a kcat-style format string (`-f`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    /// `%t`
    Topic,
    /// `%p`
    Partition,
    /// `%o`
    Offset,
    /// `%k`
    Key,
    /// `%K`: the key's length, -1 for a null key.
    KeyLength,
    /// `%s`
    Value,
    /// `%S`: the value's length, -1 for a null value.
    ValueLength,
    /// `%R`: the value's length as a big-endian 32-bit integer.
    ValueLengthBinary,
    /// `%T`: the timestamp in milliseconds.
    Timestamp,
    /// `%h`: headers as `name=value` separated by commas.
    Headers,
}

/// A kcat-style output format string, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `%t %p %o %k %K %s %S %R %T %h %%` and the escapes `\n \r \t
    /// \\ \0 \xHH`, as kcat's `-f` does; anything else is an error naming it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let part = match chars.next() {
                        Some('%') => {
                            literal.push(b'%');
                            continue;
                        }
                        Some('t') => Part::Topic,
                        Some('p') => Part::Partition,
                        Some('o') => Part::Offset,
                        Some('k') => Part::Key,
                        Some('K') => Part::KeyLength,
                        Some('s') => Part::Value,
                        Some('S') => Part::ValueLength,
                        Some('R') => Part::ValueLengthBinary,
                        Some('T') => Part::Timestamp,
                        Some('h') => Part::Headers,
                        Some(other) => return Err(format!("unknown format token %{other}")),
                        None => return Err("the format ends with a lone %".into()),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                '\\' => match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('r') => literal.push(b'\r'),
                    Some('t') => literal.push(b'\t'),
                    Some('0') => literal.push(0),
                    Some('\\') => literal.push(b'\\'),
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        let byte = u8::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 2)
                            .ok_or_else(|| format!("\\x needs two hex digits, got {hex:?}"))?;
                        literal.push(byte);
                    }
                    Some(other) => return Err(format!("unknown escape \\{other}")),
                    None => return Err("the format ends with a lone \\".into()),
                },
                c => {
                    let mut buf = [0; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self(parts))
    }

    /// Appends `r` formatted (no newline unless the format has one).
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, partition: i32, r: &RecordAndOffset) {
        use std::io::Write;
        let rec = &r.record;
        let len = |b: Option<&Bytes>| b.map_or(-1, |b| i64::try_from(b.len()).unwrap_or(i64::MAX));
        for part in &self.0 {
            // Writing into a Vec cannot fail.
            let _ = match part {
                Part::Literal(l) => out.write_all(l),
                Part::Topic => out.write_all(topic.as_bytes()),
                Part::Partition => write!(out, "{partition}"),
                Part::Offset => write!(out, "{}", r.offset),
                Part::Key => out.write_all(rec.key.as_deref().unwrap_or_default()),
                Part::KeyLength => write!(out, "{}", len(rec.key.as_ref())),
                Part::Value => out.write_all(rec.value.as_deref().unwrap_or_default()),
                Part::ValueLength => write!(out, "{}", len(rec.value.as_ref())),
                Part::ValueLengthBinary => {
                    let n = i32::try_from(len(rec.value.as_ref())).unwrap_or(i32::MAX);
                    out.write_all(&n.to_be_bytes())
                }
                Part::Timestamp => write!(out, "{}", timestamp_ms(rec.timestamp)),
                Part::Headers => {
                    for (i, (k, v)) in rec.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                    Ok(())
                }
            };
        }
    }
}

/// How records are printed.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One JSON object per line.
    Json,
    /// The value per line, with the key and a delimiter first if given.
    Value(Option<Vec<u8>>),
    /// A kcat-style format string.
    Template(Template),
}

impl Layout {
    fn write(&self, out: &mut Vec<u8>, topic: &str, partition: i32, r: &RecordAndOffset) {
        match self {
            Self::Json => json_line(out, topic, partition, r),
            Self::Value(d) => value_line(out, d.as_deref(), r),
            Self::Template(t) => t.write(out, topic, partition, r),
        }
    }
}

/// Output written at once at most (one record more): formatting a whole
/// fetched chunk before writing it held a second copy of up to 4 MiB of
/// records, and records formatted are dropped as it goes.
pub const PIECE: usize = 1 << 20;

/// Formats records from `records` into `out` in `layout` until `out` holds
/// [`PIECE`] bytes or `records` is empty, noting in `ends` (if given) where
/// each record ends.
pub fn format_piece(
    out: &mut Vec<u8>,
    mut ends: Option<&mut Ends>,
    layout: &Layout,
    topic: &str,
    records: &mut std::vec::IntoIter<ConsumedRecord>,
) {
    while out.len() < PIECE {
        let Some(r) = records.next() else { return };
        let partition = r.partition;
        let r = RecordAndOffset {
            record: r.record,
            offset: r.offset,
        };
        layout.write(out, topic, partition, &r);
        if let Some(ends) = ends.as_deref_mut() {
            ends.push(partition, r.offset, out.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::record::Record;

    fn rec(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Vec<(&str, Option<&[u8]>)>,
    ) -> RecordAndOffset {
        RecordAndOffset {
            record: Record {
                key: key.map(Bytes::copy_from_slice),
                value: value.map(Bytes::copy_from_slice),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.map(Bytes::copy_from_slice)))
                    .collect(),
                timestamp: time::OffsetDateTime::from_unix_timestamp_nanos(
                    1_700_000_000_123_456_789,
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
            offset: 42,
        }
    }

    #[test]
    fn json_is_exactly_the_contract() {
        let r = rec(
            None,
            Some(b"\xff\x00v"),
            vec![("b", Some(b"1")), ("a", None), ("b", Some(b"q\"uote\n"))],
        );
        let mut out = Vec::new();
        json_line(&mut out, "t\"x", 3, &r);
        assert_eq!(
            String::from_utf8_lossy(&out),
            concat!(
                r#"{"topic":"t\"x","partition":3,"offset":42,"timestamp":1700000000123,"#,
                r#""key":null,"value":{"base64":"/wB2"},"#,
                r#""headers":[["b","1"],["a",null],["b","q\"uote\n"]]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn text_key_and_tombstone() {
        let r = rec(Some(b"k\xc3\xa9"), None, vec![]);
        let mut out = Vec::new();
        json_line(&mut out, "t", 0, &r);
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains(r#""key":"ké","value":null,"headers":[]}"#),
            "{s}"
        );
        let mut v = Vec::new();
        value_line(&mut v, None, &r);
        assert_eq!(v, b"\n");
        v.clear();
        value_line(&mut v, Some(b"\t"), &r);
        assert_eq!(v, "ké\t\n".as_bytes());
    }

    #[test]
    fn timestamps_before_the_epoch_stay_negative() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(-1_500_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        assert_eq!(timestamp_ms(t), -1);
    }

    #[test]
    fn templates_format_like_kcat() {
        let r = rec(
            Some(b"k"),
            Some(b"value"),
            vec![("a", Some(b"1")), ("b", None)],
        );
        let t = Template::parse(r"%t/%p@%o %k=%s (%K,%S) %T [%h] 100%%\n").unwrap();
        let mut out = Vec::new();
        t.write(&mut out, "topic", 2, &r);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "topic/2@42 k=value (1,5) 1700000000123 [a=1,b=] 100%\n"
        );
        let nulls = rec(None, None, vec![]);
        out.clear();
        Template::parse("%k|%s|%K|%S|%R\\x41")
            .unwrap()
            .write(&mut out, "t", 0, &nulls);
        assert_eq!(out, b"||-1|-1|\xff\xff\xff\xffA");
        for bad in ["%q", "50%", "\\", "\\xZ1", "\\y"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
