//! Broker connections against a scripted fake broker (always run) and a real
//! broker (`KAFKA_BOOTSTRAP`).

mod common;
#[path = "common/fake_broker.rs"]
mod fake_broker;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use fake_broker::{decode_request, default_api_versions, delayed, reply, Action, FakeBroker, Seen};
use rskafka::{
    connection::{BrokerConnection, ConnectionConfig, ConnectionError},
    protocol::{
        messages::{
            api_versions_response::ApiVersion, metadata_request::MetadataRequestTopic,
            ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
            ProduceRequest,
        },
        ApiKey, ErrorCode, Message,
    },
};

fn config(request_timeout: Duration) -> Arc<ConnectionConfig> {
    Arc::new(ConnectionConfig {
        request_timeout,
        connect_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    })
}

/// A Metadata request whose first topic name tags it, so the fake can echo
/// the tag back and the test can tell responses apart.
fn tagged(tag: &str) -> MetadataRequest {
    MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: Some(tag.to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn tag_of(seen: &Seen) -> String {
    let req: MetadataRequest = decode_request(seen);
    req.topics
        .and_then(|t| t.into_iter().next())
        .and_then(|t| t.name)
        .unwrap_or_default()
}

/// Answers a tagged Metadata request with the tag as cluster id.
fn echo_with(seen: &Seen, throttle_time_ms: i32, delay: Duration) -> Action {
    let resp = MetadataResponse {
        cluster_id: Some(tag_of(seen)),
        throttle_time_ms,
        ..Default::default()
    };
    delayed(reply::<MetadataRequest>(&resp, seen.version), delay)
}

async fn connect(fake: &FakeBroker, request_timeout: Duration) -> BrokerConnection {
    BrokerConnection::connect(&fake.addr, config(request_timeout))
        .await
        .unwrap()
}

fn echo(seen: &Seen) -> Action {
    echo_with(seen, 0, Duration::ZERO)
}

#[tokio::test]
async fn negotiates_versions_and_pipelines_requests() {
    let fake = FakeBroker::start(None, false, echo).await;
    let conn = connect(&fake, Duration::from_secs(10)).await;
    assert_eq!(conn.addr(), fake.addr);
    assert_eq!(conn.broker_versions(ApiKey::METADATA), Some((0, 12)));
    assert_eq!(conn.version_for(ApiKey::METADATA), Some(12));
    assert_eq!(conn.version_for(ApiKey::API_VERSIONS), Some(4));
    // The fake does not list Produce.
    assert_eq!(conn.version_for(ApiKey::PRODUCE), None);

    // ApiVersions went out at the highest version, with the software name.
    let first = fake.seen.lock().unwrap()[0].clone();
    assert_eq!((first.api_key, first.version), (ApiKey::API_VERSIONS, 4));
    let req: ApiVersionsRequest = decode_request(&first);
    assert_eq!(req.client_software_name, "rskafka");
    assert_eq!(req.client_software_version, env!("CARGO_PKG_VERSION"));

    let results = futures::future::join_all((0..50).map(|i| {
        let conn = conn.clone();
        async move { conn.request(&tagged(&format!("t{i}"))).await }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap().cluster_id, Some(format!("t{i}")));
    }
    assert_eq!(fake.count(ApiKey::METADATA), 50);
}

#[tokio::test]
async fn falls_back_when_the_broker_rejects_the_api_versions_version() {
    let fake = FakeBroker::start(None, true, |seen| {
        if seen.api_key == ApiKey::API_VERSIONS && seen.version > 2 {
            // What a broker does for an ApiVersions version it does not
            // know: UNSUPPORTED_VERSION in a v0 body with its own range.
            let resp = ApiVersionsResponse {
                error_code: ErrorCode::UNSUPPORTED_VERSION.0,
                api_keys: vec![ApiVersion {
                    api_key: ApiKey::API_VERSIONS.0,
                    min_version: 0,
                    max_version: 2,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let mut body = BytesMut::new();
            resp.encode(&mut body, 0).unwrap();
            Action::Reply {
                header_version: 0,
                body: body.freeze(),
                delay: Duration::ZERO,
            }
        } else if seen.api_key == ApiKey::API_VERSIONS {
            default_api_versions(seen.version)
        } else {
            echo(seen)
        }
    })
    .await;
    let conn = connect(&fake, Duration::from_secs(10)).await;
    let versions: Vec<i16> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, vec![4, 2]);
    assert_eq!(conn.version_for(ApiKey::METADATA), Some(12));
    let resp = conn.request(&tagged("after-fallback")).await.unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("after-fallback"));
}

#[tokio::test]
async fn tls_and_http_listeners_are_named_in_the_error() {
    let tls_alert = vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec();
    for (bytes, tls) in [(tls_alert, true), (http, false)] {
        let fake = FakeBroker::start(Some(bytes), false, echo).await;
        let start = Instant::now();
        let err = BrokerConnection::connect(&fake.addr, config(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        if tls {
            assert!(matches!(err, ConnectionError::PeerIsTls), "{err:?}");
            assert!(err.to_string().contains("TLS listener"), "{err}");
        } else {
            assert!(matches!(err, ConnectionError::PeerIsHttp), "{err:?}");
        }
        assert!(!err.is_retriable());
    }
}

/// Bytes a fake peer sends, and a check of the error they must cause.
type GarbageCase = (&'static [u8], fn(&ConnectionError) -> bool);

#[tokio::test]
async fn garbage_fails_fast_and_closes_the_connection() {
    let cases: [GarbageCase; 2] = [
        // A plausible frame with a correlation id nobody sent.
        (b"\x00\x00\x00\x0cgarbage-byte", |c| {
            matches!(c, ConnectionError::UnknownCorrelationId(_))
        }),
        // Text where a length belongs: over 1 GB announced.
        (b"GARBAGE!!", |c| {
            matches!(c, ConnectionError::FrameTooLarge { .. })
        }),
    ];
    for (garbage, expected_cause) in cases {
        let fake = FakeBroker::start(None, false, move |_| Action::Raw(garbage.to_vec())).await;
        let conn = BrokerConnection::connect(&fake.addr, config(Duration::from_secs(10)))
            .await
            .unwrap();
        let start = Instant::now();
        let err = conn.request(&tagged("x")).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        match &err {
            ConnectionError::Disconnected {
                ambiguous: true,
                cause: Some(cause),
                ..
            } => assert!(expected_cause(cause), "{cause:?}"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!err.is_retriable());
        assert!(conn.is_closed());
    }
}

#[tokio::test]
async fn silent_peer_times_out_at_the_request_timeout() {
    let fake = FakeBroker::start(None, false, |_| Action::Silent).await;
    let timeout = Duration::from_millis(500);
    let conn = connect(&fake, timeout).await;
    let start = Instant::now();
    let err = conn.request(&tagged("x")).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout * 3, "{elapsed:?}");
    assert!(
        matches!(
            err,
            ConnectionError::Timeout {
                ambiguous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retriable() && err.is_ambiguous());
    // A timeout does not break the connection.
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn peer_closing_mid_frame_fails_every_in_flight_request() {
    let requests = Arc::new(AtomicUsize::new(0));
    let fake = FakeBroker::start(None, false, {
        let requests = requests.clone();
        move |seen| {
            if requests.fetch_add(1, Ordering::SeqCst) + 1 < 10 {
                return Action::Silent;
            }
            // Half of a real response frame, then the connection closes.
            let Action::Reply {
                header_version,
                body,
                ..
            } = echo(seen)
            else {
                unreachable!()
            };
            let frame = fake_broker::frame(seen.correlation_id, header_version, &body);
            Action::CloseAfter(frame[..frame.len() / 2].to_vec())
        }
    })
    .await;
    let conn = connect(&fake, Duration::from_secs(10)).await;
    let start = Instant::now();
    let results = futures::future::join_all((0..10).map(|i| {
        let conn = conn.clone();
        async move { conn.request(&tagged(&format!("r{i}"))).await }
    }))
    .await;
    assert!(start.elapsed() < Duration::from_secs(3));
    for r in results {
        let err = r.unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Disconnected {
                    ambiguous: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retriable());
    }
    assert!(conn.is_closed());
    // Later requests fail at once, and were certainly not sent.
    let err = conn.request(&tagged("late")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::Disconnected {
                ambiguous: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_response_requests_complete_once_written_and_keep_the_stream_in_sync() {
    // Like a broker with acks=0 produces, the fake never answers "quiet-*".
    let fake = FakeBroker::start(None, false, |seen| {
        if tag_of(seen).starts_with("quiet") {
            Action::Silent
        } else {
            echo(seen)
        }
    })
    .await;
    let timeout = Duration::from_secs(2);
    let conn = connect(&fake, timeout).await;
    let version = conn.version_for(ApiKey::METADATA).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        conn.send_no_response(&tagged(&format!("quiet-{i}")), version)
            .await
            .unwrap();
        // Were the quiet request waiting for an answer, this one's would be
        // taken for it, or the connection would break.
        let resp = conn.request(&tagged(&format!("loud-{i}"))).await.unwrap();
        assert_eq!(resp.cluster_id, Some(format!("loud-{i}")));
    }
    assert!(started.elapsed() < timeout, "nothing waited for a timeout");
    assert!(!conn.is_closed());
    let seen = fake.seen.lock().unwrap().clone();
    let metadata: Vec<_> = seen
        .iter()
        .filter(|s| s.api_key == ApiKey::METADATA)
        .collect();
    assert_eq!(metadata.len(), 40);
    // Every request, answered or not, took its own correlation id.
    for pair in metadata.windows(2) {
        assert_eq!(pair[1].correlation_id, pair[0].correlation_id + 1);
    }
    // Versions are checked before anything is sent, as for other requests.
    let err = conn
        .send_no_response(&ProduceRequest::default(), 9)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectionError::UnsupportedVersion { .. }),
        "{err:?}"
    );
    assert_eq!(fake.count(ApiKey::PRODUCE), 0);
}

#[tokio::test]
async fn abandoned_requests_leave_the_connection_usable() {
    // "slow-<ms>" is answered after <ms>; like a broker, the fake answers in
    // order, so later requests wait behind a slow one.
    let fake = FakeBroker::start(None, false, |seen| {
        let tag = tag_of(seen);
        let delay = tag
            .strip_prefix("slow-")
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        echo_with(seen, 0, delay)
    })
    .await;
    let conn = connect(&fake, Duration::from_secs(1)).await;

    // The caller drops the future while the request is in flight.
    let slow = tagged("slow-300");
    let dropped = tokio::time::timeout(Duration::from_millis(50), conn.request(&slow));
    assert!(dropped.await.is_err());
    let resp = conn.request(&tagged("fast-1")).await.unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("fast-1"));

    // The request timeout fires; the late response is read and discarded.
    let err = conn.request(&tagged("slow-1300")).await.unwrap_err();
    assert!(matches!(err, ConnectionError::Timeout { .. }), "{err:?}");
    let resp = conn.request(&tagged("fast-2")).await.unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("fast-2"));
    assert!(!conn.is_closed());
    assert_eq!(fake.count(ApiKey::METADATA), 4);
}

#[tokio::test]
async fn throttled_response_delays_the_next_request_only() {
    let fake = FakeBroker::start(None, false, |seen| {
        if tag_of(seen) == "throttle" {
            echo_with(seen, 400, Duration::ZERO)
        } else {
            echo(seen)
        }
    })
    .await;
    let conn = connect(&fake, Duration::from_secs(10)).await;
    let resp = conn.request(&tagged("throttle")).await.unwrap();
    assert_eq!(resp.throttle_time_ms, 400);
    let resp = conn.request(&tagged("next")).await.unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("next"));
    let seen: Vec<Seen> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.api_key == ApiKey::METADATA)
        .cloned()
        .collect();
    // The throttled request was not re-sent, and the next one waited.
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(380), "{gap:?}");
}

#[tokio::test]
async fn unsupported_versions_are_refused_without_sending() {
    let fake = FakeBroker::start(None, false, echo).await;
    let conn = connect(&fake, Duration::from_secs(10)).await;
    let err = conn.request_version(&tagged("x"), 13).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::UnsupportedVersion {
                requested: Some(13),
                broker: Some((0, 12)),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    let err = conn
        .request(&rskafka::protocol::messages::ProduceRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::UnsupportedVersion { broker: None, .. }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(ApiKey::METADATA), 0);
    assert_eq!(fake.count(ApiKey::PRODUCE), 0);
    // An older version the broker lists is fine.
    let resp = conn.request_version(&tagged("v9"), 9).await.unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("v9"));
}

#[tokio::test]
async fn resolves_names_and_ipv6_literals() {
    let fake = FakeBroker::start(None, false, echo).await;
    let port = fake.addr.rsplit(':').next().unwrap().to_string();
    let conn =
        BrokerConnection::connect(&format!("localhost:{port}"), config(Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(conn.request(&tagged("name")).await.is_ok());

    match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(listener) => {
            let fake6 = FakeBroker::serve_on(listener, None, false, echo);
            assert!(fake6.addr.starts_with("[::1]:"), "{}", fake6.addr);
            let conn = BrokerConnection::connect(&fake6.addr, config(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(conn.request(&tagged("v6")).await.is_ok());
        }
        Err(e) => testkit::skip(format!("the IPv6 part: cannot bind [::1]: {e}")),
    }
}

#[tokio::test]
async fn refused_connection_names_the_address() {
    // Bind then drop a listener to get a port nothing listens on.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let err = BrokerConnection::connect(&addr, config(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectionError::Connect { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    assert!(err.is_retriable());
    let err =
        BrokerConnection::connect("no-such-host.invalid:9092", config(Duration::from_secs(5)))
            .await
            .unwrap_err();
    // Named as a resolution failure, which bootstrapping gives up on.
    assert!(
        matches!(&err, ConnectionError::Resolve { addr, .. } if addr == "no-such-host.invalid:9092"),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot resolve"), "{err}");
}

#[tokio::test]
async fn real_broker_negotiation_and_metadata() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let conn = BrokerConnection::connect(&bootstrap, config(Duration::from_secs(30)))
        .await
        .unwrap();
    let produce = conn
        .version_for(ApiKey::PRODUCE)
        .expect("a Produce version");
    assert!(produce >= 3, "Produce v{produce}");
    let (_, broker_max) = conn.broker_versions(ApiKey::PRODUCE).unwrap();
    assert!(produce <= broker_max);
    assert!(conn.version_for(ApiKey::FETCH).is_some());
    let md = conn
        .request(&MetadataRequest {
            topics: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!md.brokers.is_empty());
    assert!(md.cluster_id.is_some());
}

#[tokio::test]
async fn real_broker_answers_a_thousand_concurrent_requests_on_one_connection() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let conn = BrokerConnection::connect(&bootstrap, config(Duration::from_secs(60)))
        .await
        .unwrap();
    let req = MetadataRequest {
        topics: Some(vec![]),
        ..Default::default()
    };
    let start = Instant::now();
    let results = futures::future::join_all((0..1000).map(|_| conn.request(&req))).await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_ok_and(|m| !m.brokers.is_empty())));
    eprintln!("1000 pipelined Metadata requests in {:?}", start.elapsed());
    assert!(!conn.is_closed());
}

/// A listener that answers ApiVersions and then closes every connection
/// (as a SASL listener does to a client that does not authenticate): the
/// client gives up after a few such closes and says why, instead of
/// reconnecting until its deadline.
#[tokio::test]
async fn a_listener_that_closes_after_negotiation_is_named_as_needing_sasl() {
    let fake = FakeBroker::start(None, false, |_| Action::CloseAfter(Vec::new())).await;
    let start = Instant::now();
    let err = rskafka::client::ClientBuilder::new(vec![fake.addr.clone()])
        .request_timeout(Duration::from_secs(30))
        .bootstrap_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect_err("nothing but ApiVersions is ever answered");
    assert_eq!(
        err.kind(),
        rskafka::error::ErrorKind::Authentication,
        "{err}"
    );
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("probably requires SASL"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let attempts = fake.count(ApiKey::METADATA);
    assert!((2..=4).contains(&attempts), "{attempts} attempts");
}

/// A SCRAM server whose server-first is `server_first(client nonce)` and
/// whose server-final is a signature of nobody's: the client rejects the
/// exchange itself.
fn scram_fake(server_first: fn(&str) -> String) -> impl Fn(&Seen) -> Action + Send + Sync {
    use base64::Engine;
    use rskafka::protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    move |seen| match seen.api_key {
        ApiKey::API_VERSIONS => fake_broker::api_versions(
            seen.version,
            &[
                (ApiKey::SASL_HANDSHAKE, 0, 1),
                (ApiKey::SASL_AUTHENTICATE, 0, 2),
            ],
        ),
        ApiKey::SASL_HANDSHAKE => reply::<SaslHandshakeRequest>(
            &SaslHandshakeResponse {
                mechanisms: vec!["SCRAM-SHA-256".into()],
                ..Default::default()
            },
            seen.version,
        ),
        ApiKey::SASL_AUTHENTICATE => {
            let req: SaslAuthenticateRequest = decode_request(seen);
            let msg = String::from_utf8_lossy(&req.auth_bytes).into_owned();
            let answer = match msg.split(",r=").nth(1) {
                // client-first: "n,,n=user,r=NONCE"
                Some(nonce) if msg.starts_with("n,,") => server_first(nonce),
                // client-final: a signature that proves nothing.
                _ => format!(
                    "v={}",
                    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
                ),
            };
            reply::<SaslAuthenticateRequest>(
                &SaslAuthenticateResponse {
                    auth_bytes: answer.into_bytes().into(),
                    ..Default::default()
                },
                seen.version,
            )
        }
        _ => Action::Silent,
    }
}

/// SCRAM exchanges the client itself rejects are reported as its own
/// authentication failure, not as the broker's SASL_AUTHENTICATION_FAILED.
#[tokio::test]
async fn scram_servers_the_client_rejects_are_not_reported_as_broker_failures() {
    use rskafka::connection::sasl::{Credentials, SaslConfig};
    type ServerFirst = fn(&str) -> String;
    let cases: [(ServerFirst, &str); 2] = [
        (|n| format!("r={n}srv,s=c2FsdA==,i=4096"), "signature"),
        (|n| format!("r={n}srv,s=c2FsdA==,i=1"), "iteration"),
    ];
    for (server_first, says) in cases {
        let fake = FakeBroker::start(None, true, scram_fake(server_first)).await;
        let err = rskafka::client::ClientBuilder::new(vec![fake.addr.clone()])
            .sasl(SaslConfig::ScramSha256(Credentials::new("alice", "pw")))
            .build()
            .await
            .expect_err("the server must fail the client's checks");
        assert_eq!(
            err.kind(),
            rskafka::error::ErrorKind::Authentication,
            "{err}"
        );
        assert_eq!(err.error_code(), None, "{err}");
        assert!(
            !err.to_string().contains("SASL_AUTHENTICATION_FAILED"),
            "{err}"
        );
        assert!(err.to_string().to_lowercase().contains(says), "{err}");
    }
}
