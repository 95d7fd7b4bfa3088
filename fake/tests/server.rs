//! The fake cluster's network side and its request-level faults: framing
//! limits, ApiVersions negotiation, unknown APIs, delays, lost responses,
//! throttling, closed connections.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rskafka::{
    client::{partition::OffsetAt, ClientBuilder},
    error::ErrorKind,
    protocol::{
        messages::{ApiVersionsRequest, ApiVersionsResponse},
        ApiKey, ErrorCode, Message, Reader,
    },
};
use rskafka_fake::{FakeCluster, Fault};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn cluster() -> FakeCluster {
    FakeCluster::builder()
        .start()
        .await
        .expect("fake cluster starts")
}

/// A request frame with header v1 (client id "t") and `body`.
fn frame(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut f = BytesMut::new();
    f.put_i32((10 + 1 + body.len()) as i32);
    f.put_i16(api.0);
    f.put_i16(version);
    f.put_i32(correlation_id);
    f.put_i16(1);
    f.put_u8(b't');
    f.put_slice(body);
    f.to_vec()
}

/// The next response frame's correlation id and body; `None` if the
/// connection was closed.
async fn read_response(s: &mut TcpStream) -> Option<(i32, Vec<u8>)> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).await.ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).await.ok()?;
    let correlation_id = i32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
    Some((correlation_id, buf[4..].to_vec()))
}

async fn connect(cluster: &FakeCluster) -> TcpStream {
    TcpStream::connect(cluster.broker_addrs()[0])
        .await
        .expect("connect")
}

#[tokio::test]
async fn too_new_api_versions_gets_a_v0_answer_listing_what_is_served() {
    let cluster = cluster().await;
    let mut s = connect(&cluster).await;
    s.write_all(&frame(ApiKey::API_VERSIONS, 99, 7, &[]))
        .await
        .expect("write");
    let (correlation_id, body) = read_response(&mut s).await.expect("answered");
    assert_eq!(correlation_id, 7);
    let resp = ApiVersionsResponse::decode(&mut Reader::new(body), 0).expect("v0 body");
    assert_eq!(resp.error_code, ErrorCode::UNSUPPORTED_VERSION.0);
    let listed: Vec<(i16, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let served: Vec<(i16, i16, i16)> = cluster
        .served_apis()
        .into_iter()
        .map(|(k, min, max)| (k.0, min, max))
        .collect();
    assert_eq!(listed, served);
    assert!(served.iter().any(|&(k, ..)| k == ApiKey::FETCH.0));
    assert!(!served.iter().any(|&(k, ..)| k == ApiKey::CREATE_ACLS.0));

    // The connection stays usable: a supported version is answered.
    let mut body = BytesMut::new();
    ApiVersionsRequest::default()
        .encode(&mut body, 2)
        .expect("encode");
    s.write_all(&frame(ApiKey::API_VERSIONS, 2, 8, &body))
        .await
        .expect("write");
    let (correlation_id, body) = read_response(&mut s).await.expect("answered");
    assert_eq!(correlation_id, 8);
    let resp = ApiVersionsResponse::decode(&mut Reader::new(body), 2).expect("v2 body");
    assert_eq!(resp.error_code, 0);
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_the_broker_keeps_serving() {
    let cluster = cluster().await;
    // A size beyond the frame limit, with nothing behind it.
    let mut s = connect(&cluster).await;
    s.write_all(&i32::MAX.to_be_bytes()).await.expect("write");
    assert!(read_response(&mut s).await.is_none(), "closed");
    // A negative size.
    let mut s = connect(&cluster).await;
    s.write_all(&(-5i32).to_be_bytes()).await.expect("write");
    assert!(read_response(&mut s).await.is_none(), "closed");
    // An API that is not served.
    let mut s = connect(&cluster).await;
    s.write_all(&frame(ApiKey::CREATE_ACLS, 3, 1, &[]))
        .await
        .expect("write");
    assert!(read_response(&mut s).await.is_none(), "closed");
    // A body that does not decode (a Metadata v1 with a cut array).
    let mut s = connect(&cluster).await;
    s.write_all(&frame(ApiKey::METADATA, 1, 1, &[0, 0, 0, 9]))
        .await
        .expect("write");
    assert!(read_response(&mut s).await.is_none(), "closed");
    // A header cut short.
    let mut s = connect(&cluster).await;
    s.write_all(&[0, 0, 0, 3, 0, 18, 0]).await.expect("write");
    assert!(read_response(&mut s).await.is_none(), "closed");

    let client = ClientBuilder::new(vec![cluster.bootstrap()])
        .build()
        .await
        .expect("still serving");
    client.list_topics().await.expect("metadata");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let cluster = cluster().await;
    let mut s = connect(&cluster).await;
    let mut body = BytesMut::new();
    ApiVersionsRequest::default()
        .encode(&mut body, 1)
        .expect("encode");
    let mut all = Vec::new();
    for id in 0..20 {
        all.extend(frame(ApiKey::API_VERSIONS, 1, id, &body));
    }
    s.write_all(&all).await.expect("write");
    for id in 0..20 {
        assert_eq!(read_response(&mut s).await.expect("answered").0, id);
    }
}

#[tokio::test]
async fn delays_lost_responses_throttling_and_closed_connections() {
    let cluster = cluster().await;
    cluster.create_topic("f", 1).expect("create");
    let client = ClientBuilder::new(vec![cluster.bootstrap()])
        .request_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("client");
    let pc = client.partition_client("f", 0).await.expect("pc");

    cluster.inject(Fault::delay(
        ApiKey::LIST_OFFSETS,
        Duration::from_millis(400),
    ));
    let started = Instant::now();
    assert_eq!(
        pc.get_offset(OffsetAt::Latest)
            .await
            .expect("answered late"),
        0
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // A lost response: the request times out; the next one is answered.
    cluster.inject(Fault::drop_response(ApiKey::LIST_OFFSETS));
    let started = Instant::now();
    let err = pc
        .get_offset(OffsetAt::Latest)
        .await
        .expect_err("never answered");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("answered"), 0);

    // Throttling: the client waits that long before its next request.
    cluster.inject(Fault::throttle(ApiKey::LIST_OFFSETS, 600));
    pc.get_offset(OffsetAt::Latest)
        .await
        .expect("throttled answer");
    let started = Instant::now();
    pc.get_offset(OffsetAt::Earliest)
        .await
        .expect("next request");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // An injected top-level error, then success.
    cluster.inject(Fault::error(ApiKey::LIST_OFFSETS, ErrorCode::NOT_LEADER_OR_FOLLOWER).times(2));
    assert_eq!(pc.get_offset(OffsetAt::Latest).await.expect("retried"), 0);

    // Closed connections are reopened.
    cluster.close_connections(1).expect("broker 1");
    assert_eq!(
        pc.get_offset(OffsetAt::Latest).await.expect("reconnected"),
        0
    );
    assert!(cluster.close_connections(9).is_err());
}
