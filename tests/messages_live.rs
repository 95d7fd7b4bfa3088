//! Live check of the generated codecs against a real broker, over a plain
//! blocking socket so that nothing but the codecs is under test.
//!
//! Needs `KAFKA_BOOTSTRAP` (e.g. `127.0.0.1:9092`); skips otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rskafka::protocol::messages::*;
use rskafka::protocol::{ApiKey, Message, Reader, Request};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Refuse absurd frame sizes instead of allocating them.
const MAX_FRAME: usize = 16 * 1024 * 1024;

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
    let Some(bootstrap) = testkit::real_bootstrap("the codecs checked against Kafka itself") else {
        return;
    };
    let mut s = connect(&bootstrap);

    let versions = hello(&mut s);
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
    let req = MetadataRequest {
        topics: None,
        allow_auto_topic_creation: false,
        ..Default::default()
    };
    let md = send(&mut s, &versions, 2, &req);
    assert!(!md.brokers.is_empty(), "{md:#?}");
    assert!(md.cluster_id.is_some(), "{md:#?}");
    assert!(
        md.brokers.iter().any(|b| b.node_id == md.controller_id) || md.controller_id >= 0,
        "{md:#?}"
    );
}

/// Sends ApiVersions v3, which is answered with a v0 response header.
fn hello(s: &mut TcpStream) -> ApiVersionsResponse {
    let req = ApiVersionsRequest {
        client_software_name: "rskafka".into(),
        client_software_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    assert_eq!(ApiVersionsRequest::response_header_version(3), 0);
    let mut r = round_trip(s, 1, &req, 3);
    let versions = ApiVersionsResponse::decode(&mut r, 3).unwrap();
    r.expect_end().unwrap();
    assert_eq!(versions.error_code, 0);
    versions
}

/// Sends `req` at the highest version both sides know and requires the
/// whole response to decode.
fn send<R: Request>(
    s: &mut TcpStream,
    versions: &ApiVersionsResponse,
    correlation_id: i32,
    req: &R,
) -> R::Response {
    let broker = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == R::API_KEY.0)
        .unwrap_or_else(|| panic!("broker does not list {:?}", R::API_KEY));
    let version = broker.max_version.min(R::MAX_VERSION);
    let mut r = round_trip(s, correlation_id, req, version);
    let resp = R::Response::decode(&mut r, version)
        .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", R::API_KEY));
    r.expect_end().unwrap();
    resp
}

/// [`send`] with the all-default request.
fn default_request<R: Request>(
    s: &mut TcpStream,
    versions: &ApiVersionsResponse,
    correlation_id: i32,
) -> R::Response {
    send(s, versions, correlation_id, &R::default())
}

#[test]
fn describe_style_responses_decode_from_a_live_broker() {
    let Some(bootstrap) = testkit::real_bootstrap("the codecs checked against Kafka itself") else {
        return;
    };
    let mut s = connect(&bootstrap);
    let versions = hello(&mut s);

    // Requests whose all-default form is valid (or at worst answered with
    // an error code): what matters is that each answer decodes completely.
    let cluster = default_request::<DescribeClusterRequest>(&mut s, &versions, 2);
    assert!(!cluster.brokers.is_empty(), "{cluster:#?}");
    let groups = default_request::<ListGroupsRequest>(&mut s, &versions, 3);
    assert_eq!(groups.error_code, 0, "{groups:#?}");
    let dirs = default_request::<DescribeLogDirsRequest>(&mut s, &versions, 4);
    assert_eq!(dirs.error_code, 0, "{dirs:#?}");
    let txns = default_request::<ListTransactionsRequest>(&mut s, &versions, 5);
    assert_eq!(txns.error_code, 0, "{txns:#?}");
    let quotas = default_request::<DescribeClientQuotasRequest>(&mut s, &versions, 6);
    assert_eq!(quotas.error_code, 0, "{quotas:#?}");
    let parts = default_request::<DescribeTopicPartitionsRequest>(&mut s, &versions, 7);
    // An empty topic list means every topic.
    assert!(parts.topics.iter().all(|t| t.error_code == 0), "{parts:#?}");
    let quorum = default_request::<DescribeQuorumRequest>(&mut s, &versions, 8);
    // Quorum details are answered for the metadata topic only.
    assert!(quorum.topics.is_empty(), "{quorum:#?}");
    // Match-any ACL filter; without an authorizer the broker answers
    // SECURITY_DISABLED (54), with one NONE.
    let req = DescribeAclsRequest {
        resource_type_filter: 1,
        resource_name_filter: None,
        pattern_type_filter: 1,
        principal_filter: None,
        host_filter: None,
        operation: 1,
        permission_type: 1,
        ..Default::default()
    };
    let acls = send(&mut s, &versions, 9, &req);
    assert!(matches!(acls.error_code, 0 | 54), "{acls:#?}");

    // A broker config describe returns many entries with synonyms.
    let req = DescribeConfigsRequest {
        resources: vec![describe_configs_request::DescribeConfigsResource {
            resource_type: 4, // broker
            resource_name: cluster.brokers[0].broker_id.to_string(),
            configuration_keys: None,
            ..Default::default()
        }],
        include_synonyms: true,
        include_documentation: true,
        ..Default::default()
    };
    let configs = send(&mut s, &versions, 10, &req);
    let result = &configs.results[0];
    assert_eq!(result.error_code, 0, "{configs:#?}");
    assert!(result.configs.len() > 10, "{configs:#?}");
}
