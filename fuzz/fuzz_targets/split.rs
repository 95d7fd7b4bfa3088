//! The input format shared by the message fuzz targets: 2 bytes choose the
//! API (index into `ApiKey::ALL`), 1 byte the version within the crate's
//! range for it, the rest is the body.

use rskafka::protocol::ApiKey;

/// Splits a fuzz input into API key, version and body; `None` if too short.
pub fn split(data: &[u8]) -> Option<(ApiKey, i16, &[u8])> {
    let [a, b, v, body @ ..] = data else {
        return None;
    };
    let keys = ApiKey::ALL;
    let key = *keys.get(usize::from(u16::from_be_bytes([*a, *b])) % keys.len())?;
    let (lo, hi) = key.client_versions()?;
    let span = i32::from(hi) - i32::from(lo) + 1;
    let version = i16::try_from(i32::from(lo) + i32::from(*v) % span).ok()?;
    Some((key, version, body))
}
