//! Golden tests for the generated message codecs: byte sequences written out
//! by hand from Kafka's protocol definitions, so the generator is checked
//! against the spec rather than only against itself.

use bytes::{Bytes, BytesMut};
use rskafka::protocol::messages::{
    api_versions_response::ApiVersion, consumer_group_heartbeat_response::Assignment,
    metadata_request::MetadataRequestTopic, ApiVersionsRequest, ApiVersionsResponse,
    ConsumerGroupHeartbeatResponse, MetadataRequest, RequestHeader,
};
use rskafka::protocol::{
    ApiKey, DecodeErrorKind, EncodeError, Message, RawTaggedField, Reader, Request, Uuid,
};

fn encode<M: Message>(m: &M, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Decodes `bytes`, requiring every byte to be consumed.
fn decode<M: Message>(bytes: &[u8], version: i16) -> M {
    let mut r = Reader::new(Bytes::copy_from_slice(bytes));
    let m = M::decode(&mut r, version).unwrap();
    r.expect_end().unwrap();
    m
}

#[test]
fn api_versions_request_v3_with_header_v2() {
    let header = RequestHeader {
        request_api_key: ApiVersionsRequest::API_KEY.0,
        request_api_version: 3,
        correlation_id: 7,
        client_id: Some("test".into()),
        ..Default::default()
    };
    let body = ApiVersionsRequest {
        client_software_name: "rskafka".into(),
        client_software_version: "0.1.0".into(),
        ..Default::default()
    };
    assert_eq!(ApiVersionsRequest::request_header_version(3), 2);
    #[rustfmt::skip]
    let expected_header = [
        0x00, 0x12,             // api key 18
        0x00, 0x03,             // api version 3
        0x00, 0x00, 0x00, 0x07, // correlation id
        0x00, 0x04, b't', b'e', b's', b't', // client id: classic string even in v2
        0x00,                   // no tagged fields
    ];
    assert_eq!(encode(&header, 2), expected_header);
    #[rustfmt::skip]
    let expected_body = [
        0x08, b'r', b's', b'k', b'a', b'f', b'k', b'a', // compact string, length + 1
        0x06, b'0', b'.', b'1', b'.', b'0',
        0x00, // no tagged fields
    ];
    assert_eq!(encode(&body, 3), expected_body);
    assert_eq!(decode::<RequestHeader>(&expected_header, 2), header);
    assert_eq!(decode::<ApiVersionsRequest>(&expected_body, 3), body);
    // v0-v2 have no fields at all; the v3 fields are ignorable, so they are
    // dropped rather than refused.
    assert!(encode(&body, 0).is_empty());
    // A null client id is the classic -1 length.
    let header = RequestHeader {
        client_id: None,
        ..header
    };
    assert_eq!(&encode(&header, 1)[8..], [0xff, 0xff]);
}

#[test]
fn api_versions_response_v0() {
    #[rustfmt::skip]
    let bytes = [
        0x00, 0x00,             // error code
        0x00, 0x00, 0x00, 0x02, // classic array of 2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, // Produce 0-11
        0x00, 0x12, 0x00, 0x00, 0x00, 0x04, // ApiVersions 0-4
    ];
    let resp: ApiVersionsResponse = decode(&bytes, 0);
    assert_eq!(resp.error_code, 0);
    assert_eq!(
        resp.api_keys,
        vec![
            ApiVersion {
                api_key: 0,
                min_version: 0,
                max_version: 11,
                ..Default::default()
            },
            ApiVersion {
                api_key: 18,
                min_version: 0,
                max_version: 4,
                ..Default::default()
            },
        ]
    );
    assert_eq!(encode(&resp, 0), bytes);
    // ThrottleTimeMs appears from v1 and is ignorable, so it is dropped in v0.
    let throttled = ApiVersionsResponse {
        throttle_time_ms: 100,
        ..resp.clone()
    };
    assert_eq!(encode(&throttled, 0), bytes);
    assert_eq!(throttled.throttle_time_ms(), Some(100));
}

#[test]
fn api_versions_response_v3_keeps_unknown_tagged_fields() {
    #[rustfmt::skip]
    let bytes = [
        0x00, 0x00,                   // error code
        0x02,                         // compact array of 1
        0x00, 0x01, 0x00, 0x04, 0x00, 0x11, 0x00, // Fetch 4-17, no tagged fields
        0x00, 0x00, 0x00, 0x00,       // throttle time
        0x02,                         // two tagged fields
        0x01, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x05, // tag 1: FinalizedFeaturesEpoch = 5
        0x07, 0x02, b'a', b'b',       // tag 7: unknown to this crate
    ];
    let resp: ApiVersionsResponse = decode(&bytes, 3);
    assert_eq!(resp.finalized_features_epoch, 5);
    assert_eq!(
        resp.unknown_tagged_fields,
        vec![RawTaggedField {
            tag: 7,
            data: Bytes::from_static(b"ab")
        }]
    );
    assert_eq!(resp.api_keys[0].max_version, 17);
    assert_eq!(encode(&resp, 3), bytes);
    // The default (-1) of a tagged field is not written at all.
    let plain = ApiVersionsResponse {
        finalized_features_epoch: -1,
        unknown_tagged_fields: Vec::new(),
        ..resp.clone()
    };
    assert_eq!(encode(&plain, 3)[..], [&bytes[..14], &[0x00]].concat()[..]);
    // Unknown tagged fields cannot be sent in a version without them.
    let err = {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, 2).unwrap_err()
    };
    assert!(
        matches!(err, EncodeError::FieldNotInVersion { .. }),
        "{err}"
    );
}

#[test]
fn metadata_request_v1() {
    let req = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: Some("foo".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    #[rustfmt::skip]
    let bytes = [
        0x00, 0x00, 0x00, 0x01,        // classic array of 1
        0x00, 0x03, b'f', b'o', b'o',  // topic name
    ];
    assert_eq!(encode(&req, 1), bytes);
    assert_eq!(decode::<MetadataRequest>(&bytes, 1), req);
    // v1+ sends null for "all topics"; v0 cannot.
    let all = MetadataRequest {
        topics: None,
        ..Default::default()
    };
    assert_eq!(encode(&all, 1), [0xff, 0xff, 0xff, 0xff]);
    let mut buf = BytesMut::new();
    assert!(matches!(
        all.encode(&mut buf, 0),
        Err(EncodeError::NullNotAllowed { .. })
    ));
    let err = MetadataRequest::decode(&mut Reader::new(vec![0xff; 4]), 0).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::UnexpectedNull);
    assert_eq!(err.path(), "MetadataRequest.topics");
    // AllowAutoTopicCreation defaults to true, exists from v4 and is not
    // ignorable: asking v1 for false is an error, not a silent change.
    let no_auto = MetadataRequest {
        allow_auto_topic_creation: false,
        ..req.clone()
    };
    assert!(matches!(
        no_auto.encode(&mut buf, 1),
        Err(EncodeError::FieldNotInVersion {
            field: "MetadataRequest.allow_auto_topic_creation",
            version: 1
        })
    ));
}

#[test]
fn metadata_request_v12() {
    let id = Uuid([0xab; 16]);
    let req = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            topic_id: id,
            name: None,
            ..Default::default()
        }]),
        allow_auto_topic_creation: false,
        include_topic_authorized_operations: true,
        ..Default::default()
    };
    let mut bytes = vec![0x02]; // compact array of 1
    bytes.extend_from_slice(&[0xab; 16]); // topic id
    bytes.extend_from_slice(&[
        0x00, // null compact name (nullable from v10)
        0x00, // topic's tagged fields
        0x00, // allow auto topic creation
        0x01, // include topic authorized operations
        0x00, // tagged fields
    ]);
    assert_eq!(encode(&req, 12), bytes);
    assert_eq!(decode::<MetadataRequest>(&bytes, 12), req);
    // IncludeClusterAuthorizedOperations exists only in 8-10.
    let cluster_ops = MetadataRequest {
        include_cluster_authorized_operations: true,
        ..req.clone()
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        cluster_ops.encode(&mut buf, 12),
        Err(EncodeError::FieldNotInVersion { .. })
    ));
    // The topic id is ignorable: dropped in v9, while the null name is refused there.
    assert!(matches!(
        req.encode(&mut buf, 9),
        Err(EncodeError::NullNotAllowed {
            field: "MetadataRequest.MetadataRequestTopic.name",
            version: 9
        })
    ));
}

#[test]
fn nullable_struct_uses_an_i8_marker() {
    let resp = ConsumerGroupHeartbeatResponse {
        member_epoch: 3,
        heartbeat_interval_ms: 5000,
        assignment: Some(Assignment::default()),
        ..Default::default()
    };
    #[rustfmt::skip]
    let bytes = [
        0, 0, 0, 0,       // throttle
        0, 0,             // error code
        0x00,             // null error message
        0x00,             // null member id
        0, 0, 0, 3,       // member epoch
        0, 0, 0x13, 0x88, // heartbeat interval 5000
        0x01,             // assignment present
        0x01,             // empty compact array of topic partitions
        0x00,             // assignment's tagged fields
        0x00,             // tagged fields
    ];
    assert_eq!(encode(&resp, 0), bytes);
    assert_eq!(decode::<ConsumerGroupHeartbeatResponse>(&bytes, 0), resp);
    let null = [&bytes[..16], &[0xff, 0x00]].concat(); // marker -1, then the tagged fields
    let decoded: ConsumerGroupHeartbeatResponse = decode(&null, 0);
    assert_eq!(decoded.assignment, None);
    assert_eq!(encode(&decoded, 0), null);
}

#[test]
fn errors_name_the_field_path() {
    #[rustfmt::skip]
    let bytes = [
        0x00, 0x00,             // error code
        0x00, 0x00, 0x00, 0x01, // one api key
        0x00, 0x00, 0x00, 0x00, 0x00, // max version cut short
    ];
    let err = ApiVersionsResponse::decode(&mut Reader::new(bytes.to_vec()), 0).unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::UnexpectedEof { .. }));
    assert_eq!(err.path(), "ApiVersionsResponse.api_keys.max_version");
    assert_eq!(err.offset(), 10);
}

#[test]
fn hostile_counts_fail_without_allocating() {
    // An array claiming i32::MAX elements in a few bytes.
    let bytes = [0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0x00];
    let err = ApiVersionsResponse::decode(&mut Reader::new(bytes.to_vec()), 0).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::LengthExceedsRemaining { .. }
    ));
}

#[test]
fn api_keys_and_dispatch() {
    assert_eq!(ApiKey::FETCH.name(), "Fetch");
    assert_eq!(ApiKey::API_VERSIONS.client_versions(), Some((0, 4)));
    assert_eq!(format!("{:?}", ApiKey::METADATA), "Metadata(3)");
    assert!(!ApiKey::LEADER_AND_ISR.is_client_facing());
    assert!(ApiKey::CREATE_TOPICS.is_client_facing());
    let body = [0x00, 0x23, 0x00, 0x00, 0x00, 0x00]; // UNSUPPORTED_VERSION, no keys
    let decoded = rskafka::protocol::messages::decode_response_body(
        ApiKey::API_VERSIONS,
        0,
        &mut Reader::new(body.to_vec()),
    )
    .unwrap();
    assert!(format!("{decoded:?}").contains("error_code: 35"));
    let err = rskafka::protocol::messages::decode_response_body(
        ApiKey(-7),
        0,
        &mut Reader::new(Vec::new()),
    )
    .unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::InvalidValue(_)));
    // Trailing bytes mean the version or the type was wrong.
    let err = rskafka::protocol::messages::decode_response_body(
        ApiKey::API_VERSIONS,
        0,
        &mut Reader::new([&body[..], &[0]].concat()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::TrailingBytes(1));
}
