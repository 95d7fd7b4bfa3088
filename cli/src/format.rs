//! Output formats of `consume`.

use base64::Engine;
use bytes::Bytes;
use rskafka::record::RecordAndOffset;
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

/// Appends the value alone (nothing for a tombstone) and `\n`.
pub fn value_line(out: &mut Vec<u8>, r: &RecordAndOffset) {
    if let Some(v) = &r.record.value {
        out.extend_from_slice(v);
    }
    out.push(b'\n');
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
        value_line(&mut v, &r);
        assert_eq!(v, b"\n");
    }

    #[test]
    fn timestamps_before_the_epoch_stay_negative() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(-1_500_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        assert_eq!(timestamp_ms(t), -1);
    }
}
