//! Live check of the generated codecs against a real broker, over a plain
//! blocking socket so that nothing but the codecs is under test.
//!
//! Needs `KAFKA_BOOTSTRAP` (e.g. `127.0.0.1:9092`); skips otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rskafka::protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader,
};
use rskafka::protocol::{ApiKey, Message, Reader, Request};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Refuse absurd frame sizes instead of allocating them.
const MAX_FRAME: usize = 16 * 1024 * 1024;

fn bootstrap() -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => Some(s),
        _ => {
            eprintln!("skipping: KAFKA_BOOTSTRAP not set");
            None
        }
    }
}

fn connect(bootstrap: &str) -> TcpStream {
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let addr = first
        .to_socket_addrs()
        .expect("resolve KAFKA_BOOTSTRAP")
        .next()
        .expect("KAFKA_BOOTSTRAP resolves to no address");
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to broker");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Sends one request and returns the response body after its header.
fn round_trip<R: Request>(s: &mut TcpStream, correlation_id: i32, req: &R, version: i16) -> Reader {
    let header = RequestHeader {
        request_api_key: R::API_KEY.0,
        request_api_version: version,
        correlation_id,
        client_id: Some("rskafka-live-test".into()),
        ..Default::default()
    };
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, R::request_header_version(version))
        .unwrap();
    req.encode(&mut payload, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(i32::try_from(payload.len()).unwrap());
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();

    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let size = usize::try_from(i32::from_be_bytes(size)).expect("negative frame size");
    assert!(size <= MAX_FRAME, "frame of {size} bytes");
    let mut body = vec![0u8; size];
    s.read_exact(&mut body).unwrap();
    let mut r = Reader::new(Bytes::from(body));
    let resp_header = ResponseHeader::decode(&mut r, R::response_header_version(version)).unwrap();
    assert_eq!(resp_header.correlation_id, correlation_id);
    r
}

#[test]
fn api_versions_and_metadata_against_a_live_broker() {
    let Some(bootstrap) = bootstrap() else {
        return;
    };
    let mut s = connect(&bootstrap);

    // ApiVersions v3 is answered with a v0 response header.
    let req = ApiVersionsRequest {
        client_software_name: "rskafka".into(),
        client_software_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    assert_eq!(ApiVersionsRequest::response_header_version(3), 0);
    let mut r = round_trip(&mut s, 1, &req, 3);
    let versions = ApiVersionsResponse::decode(&mut r, 3).unwrap();
    r.expect_end().unwrap();
    assert_eq!(versions.error_code, 0);
    let find = |key: ApiKey| versions.api_keys.iter().find(|k| k.api_key == key.0);
    let fetch = find(ApiKey::FETCH).expect("broker lists Fetch");
    let produce = find(ApiKey::PRODUCE).expect("broker lists Produce");
    assert!(fetch.max_version >= 4 && produce.max_version >= 3);

    // The APIs the rest of the crate is built on must overlap what the
    // broker offers. Others may not: the message definitions can predate
    // the broker (e.g. share-group APIs that moved past their early-access
    // version), which is reported, not failed.
    const CORE: &[ApiKey] = &[
        ApiKey::PRODUCE,
        ApiKey::FETCH,
        ApiKey::LIST_OFFSETS,
        ApiKey::METADATA,
        ApiKey::OFFSET_COMMIT,
        ApiKey::OFFSET_FETCH,
        ApiKey::FIND_COORDINATOR,
        ApiKey::JOIN_GROUP,
        ApiKey::HEARTBEAT,
        ApiKey::LEAVE_GROUP,
        ApiKey::SYNC_GROUP,
        ApiKey::API_VERSIONS,
        ApiKey::CREATE_TOPICS,
        ApiKey::DELETE_TOPICS,
        ApiKey::DELETE_RECORDS,
        ApiKey::INIT_PRODUCER_ID,
        ApiKey::CREATE_PARTITIONS,
        ApiKey::DESCRIBE_CONFIGS,
        ApiKey::INCREMENTAL_ALTER_CONFIGS,
    ];
    for k in &versions.api_keys {
        let key = ApiKey(k.api_key);
        let Some((lo, hi)) = key.client_versions() else {
            eprintln!("note: broker offers {key:?}, unknown to this crate");
            continue;
        };
        let overlap = lo <= k.max_version && k.min_version <= hi;
        if CORE.contains(&key) {
            assert!(
                overlap,
                "{key:?}: broker {}-{}, crate {lo}-{hi}",
                k.min_version, k.max_version
            );
        } else if !overlap {
            eprintln!(
                "note: {key:?}: broker {}-{}, crate {lo}-{hi}: no common version",
                k.min_version, k.max_version
            );
        }
    }
    for key in CORE {
        assert!(find(*key).is_some(), "broker does not list {key:?}");
    }

    // Metadata for all topics at the highest version both sides know.
    let meta = find(ApiKey::METADATA).expect("broker lists Metadata");
    let version = meta.max_version.min(MetadataRequest::MAX_VERSION);
    let req = MetadataRequest {
        topics: None,
        allow_auto_topic_creation: false,
        ..Default::default()
    };
    let mut r = round_trip(&mut s, 2, &req, version);
    let md = MetadataResponse::decode(&mut r, version).unwrap();
    r.expect_end().unwrap();
    assert!(!md.brokers.is_empty(), "{md:#?}");
    assert!(md.cluster_id.is_some(), "{md:#?}");
    assert!(
        md.brokers.iter().any(|b| b.node_id == md.controller_id) || md.controller_id >= 0,
        "{md:#?}"
    );
}
