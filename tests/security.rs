//! TLS, SASL, re-authentication and SOCKS5 against a real secured broker.
//!
//! `scripts/kafka` with `KAFKA_SECURITY=1` starts the listeners and `env`
//! prints the variables these tests read: `KAFKA_SASL_PLAINTEXT`,
//! `KAFKA_SSL`, `KAFKA_SASL_SSL` (bootstrap addresses), `KAFKA_CERTS_DIR`
//! (or `KAFKA_CA_FILE`, `KAFKA_CLIENT_CERT`, `KAFKA_CLIENT_KEY`) and
//! `KAFKA_SASL_REAUTH_MS`. A test whose variables are unset says so on
//! stderr and passes. Users: alice/alice-secret (PLAIN and SCRAM).
#![cfg(feature = "transport-tls")]

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use rskafka::{
    client::{
        partition::{Compression, OffsetAt},
        ClientBuilder,
    },
    cluster::{Cluster, ClusterConfig},
    connection::{
        sasl::{Credentials, OAuthToken, OAuthTokenProvider, SaslConfig},
        BrokerConnection, ConnectionConfig, ConnectionError, TlsConfig, TlsFailure, Transport,
    },
    error::ErrorKind,
    protocol::{messages::MetadataRequest, ErrorCode},
    record::Record,
};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

/// Bound on every test body, so a hang fails instead of blocking CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            testkit::skip(format!(
                "{var} not set (start the broker with KAFKA_SECURITY=1 scripts/kafka up)"
            ));
            None
        }
    }
}

/// A file of the test certificates (`ca.pem`, `client.pem`, ...).
fn cert(name: &str) -> Option<PathBuf> {
    let explicit = match name {
        "ca.pem" => std::env::var("KAFKA_CA_FILE").ok(),
        "client.pem" => std::env::var("KAFKA_CLIENT_CERT").ok(),
        "client.key" => std::env::var("KAFKA_CLIENT_KEY").ok(),
        _ => None,
    };
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let dir = std::env::var("KAFKA_CERTS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var("KAFKA_CA_FILE")
                .ok()
                .and_then(|ca| PathBuf::from(ca).parent().map(PathBuf::from))
        });
    match dir {
        Some(d) if d.join(name).exists() => Some(d.join(name)),
        _ => {
            testkit::skip(format!("KAFKA_CERTS_DIR not set or has no {name}"));
            None
        }
    }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test did not finish within its time limit")
}

fn alice(mechanism: &str) -> SaslConfig {
    SaslConfig::from_mechanism_name(mechanism, Credentials::new("alice", "alice-secret"))
        .expect("known mechanism")
}

fn tls_config() -> Option<TlsConfig> {
    Some(
        TlsConfig::builder()
            .ca_file(cert("ca.pem")?)
            .build()
            .expect("TLS config from the test CA"),
    )
}

fn config(transport: Transport, sasl: Option<SaslConfig>) -> Arc<ConnectionConfig> {
    Arc::new(ConnectionConfig {
        client_id: "rskafka-security-tests".into(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        transport,
        sasl,
        ..ConnectionConfig::default()
    })
}

/// A Metadata round trip: proves the connection is authenticated (a SASL
/// listener closes connections that skip authentication).
async fn metadata_works(conn: &BrokerConnection) {
    let resp = conn
        .request(&MetadataRequest {
            topics: Some(Vec::new()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("metadata on {}: {e}", conn.addr()));
    assert!(!resp.brokers.is_empty(), "metadata lists no broker");
}

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[tokio::test]
async fn each_mechanism_over_sasl_plaintext() {
    let Some(addr) = env("KAFKA_SASL_PLAINTEXT") else {
        return;
    };
    bounded(async {
        for mech in MECHANISMS {
            let conn = BrokerConnection::connect(&addr, config(Transport::Tcp, Some(alice(mech))))
                .await
                .unwrap_or_else(|e| panic!("{mech}: {e}"));
            metadata_works(&conn).await;
            // Cluster-level too: brokers learnt from metadata authenticate.
            let cluster = Cluster::connect(ClusterConfig {
                connection: (*config(Transport::Tcp, Some(alice(mech)))).clone(),
                ..ClusterConfig::new([addr.clone()])
            })
            .await
            .unwrap_or_else(|e| panic!("{mech} cluster: {e}"));
            let md = cluster.refresh_metadata(None).await.expect("metadata");
            let id = *md.brokers.keys().next().expect("a broker");
            metadata_works(&cluster.broker(id).await.expect("broker connection")).await;
        }
    })
    .await;
}

#[tokio::test]
async fn each_mechanism_over_sasl_ssl() {
    let (Some(addr), Some(tls)) = (env("KAFKA_SASL_SSL"), tls_config()) else {
        return;
    };
    bounded(async {
        for mech in MECHANISMS {
            let conn = BrokerConnection::connect(
                &addr,
                config(Transport::Tls(tls.clone()), Some(alice(mech))),
            )
            .await
            .unwrap_or_else(|e| panic!("{mech}: {e}"));
            metadata_works(&conn).await;
        }
    })
    .await;
}

/// Large records through TLS and SASL both ways: big frames are written as
/// several TLS records and responses arrive in many reads.
#[tokio::test]
async fn large_records_round_trip_over_sasl_ssl() {
    let (Some(addr), Some(tls)) = (env("KAFKA_SASL_SSL"), tls_config()) else {
        return;
    };
    bounded(async {
        let client = ClientBuilder::new(vec![addr.clone()])
            .transport(Transport::Tls(tls))
            .sasl(alice("SCRAM-SHA-256"))
            .request_timeout(Duration::from_secs(20))
            .build()
            .await
            .expect("client over SASL_SSL");
        let topic = format!(
            "rskafka-security-large-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        );
        client
            .controller_client()
            .expect("controller")
            .create_topic(&topic, 1, 1, 10_000)
            .await
            .expect("create topic");
        let pc = client.partition_client(&topic, 0).await.expect("partition");
        // Distinct, incompressible-looking payloads of 200 KiB each (the batch
        // stays under the broker's 1 MiB message limit).
        let values: Vec<Bytes> = (0u32..4)
            .map(|i| {
                Bytes::from(
                    (0..200 * 1024u32)
                        .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let records = values
            .iter()
            .map(|v| Record {
                key: None,
                value: Some(v.clone()),
                headers: Vec::new(),
                timestamp: OffsetDateTime::now_utc(),
            })
            .collect();
        let offsets = pc
            .produce(records, Compression::None)
            .await
            .expect("produce");
        assert_eq!(offsets, vec![0, 1, 2, 3]);
        let mut got = Vec::new();
        while got.len() < values.len() {
            let (records, _hw) = pc
                .fetch_records(got.len() as i64, 1..8 * 1024 * 1024, 1_000)
                .await
                .expect("fetch");
            assert!(!records.is_empty(), "fetch returned nothing");
            got.extend(records.into_iter().map(|r| r.record.value));
        }
        assert_eq!(got, values.into_iter().map(Some).collect::<Vec<_>>());
    })
    .await;
}

/// An unsigned JWT, which the broker's default (unsecured) OAUTHBEARER
/// validator accepts; issued and expiring at these offsets from now (s).
fn unsecured_jwt(sub: &str, iat: i64, exp: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{sub}","iat":{},"exp":{}}}"#,
        now + iat,
        now + exp
    ));
    format!("{header}.{payload}.")
}

fn oauth(token: String, extensions: BTreeMap<String, String>) -> SaslConfig {
    SaslConfig::OAuthBearer(OAuthTokenProvider::new(move || {
        let token = token.clone();
        let extensions = extensions.clone();
        async move {
            Ok(OAuthToken {
                token,
                lifetime_ms: i64::MAX,
                principal: None,
                extensions,
            })
        }
    }))
}

#[tokio::test]
async fn oauthbearer_token_from_callback() {
    let (Some(plain_addr), Some(ssl_addr), Some(tls)) = (
        env("KAFKA_SASL_PLAINTEXT"),
        env("KAFKA_SASL_SSL"),
        tls_config(),
    ) else {
        return;
    };
    bounded(async {
        let ext = BTreeMap::from([("traceId".to_string(), "abc-123".to_string())]);
        for (addr, transport) in [
            (&plain_addr, Transport::Tcp),
            (&ssl_addr, Transport::Tls(tls.clone())),
        ] {
            for extensions in [BTreeMap::new(), ext.clone()] {
                let sasl = oauth(unsecured_jwt("alice", 0, 3600), extensions);
                let conn = BrokerConnection::connect(addr, config(transport.clone(), Some(sasl)))
                    .await
                    .unwrap_or_else(|e| panic!("OAUTHBEARER on {addr}: {e}"));
                metadata_works(&conn).await;
            }
        }
        // A token the broker finds expired: it answers with an error
        // document, the client acknowledges, the broker fails the exchange.
        let stale = unsecured_jwt("alice", -7200, -3600);
        let err = BrokerConnection::connect(
            &plain_addr,
            config(Transport::Tcp, Some(oauth(stale, BTreeMap::new()))),
        )
        .await
        .expect_err("an expired JWT must be refused");
        assert!(
            matches!(
                &err,
                ConnectionError::Authentication {
                    code: Some(ErrorCode::SASL_AUTHENTICATION_FAILED),
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retriable());
    })
    .await;
}

#[tokio::test]
async fn wrong_password_fails_at_once() {
    let (Some(addr), Some(ssl_addr), Some(tls)) = (
        env("KAFKA_SASL_PLAINTEXT"),
        env("KAFKA_SASL_SSL"),
        tls_config(),
    ) else {
        return;
    };
    bounded(async {
        for mech in MECHANISMS {
            for (addr, transport) in [
                (&addr, Transport::Tcp),
                (&ssl_addr, Transport::Tls(tls.clone())),
            ] {
                let bad = SaslConfig::from_mechanism_name(
                    mech,
                    Credentials::new("alice", "not-the-password"),
                )
                .expect("mechanism");
                let t0 = Instant::now();
                let err = BrokerConnection::connect(addr, config(transport.clone(), Some(bad)))
                    .await
                    .expect_err("a wrong password must fail");
                assert!(
                    t0.elapsed() < Duration::from_secs(2),
                    "{mech}: took {:?}",
                    t0.elapsed()
                );
                assert!(
                    matches!(
                        &err,
                        ConnectionError::Authentication {
                            code: Some(ErrorCode::SASL_AUTHENTICATION_FAILED),
                            ..
                        }
                    ),
                    "{mech}: {err}"
                );
                assert!(!err.is_retriable(), "{mech}: {err}");
                assert!(err.to_string().contains(mech), "{err}");
            }
        }

        // Through the whole client: no retrying until the deadline, and a
        // typed error.
        let t0 = Instant::now();
        let err = ClientBuilder::new(vec![addr.clone()])
            .sasl(SaslConfig::ScramSha256(Credentials::new("alice", "wrong")))
            .request_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(20))
            .build()
            .await
            .expect_err("a wrong password must fail");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(
            err.kind(),
            ErrorKind::Kafka(ErrorCode::SASL_AUTHENTICATION_FAILED),
            "{err}"
        );
        assert!(!err.is_retriable(), "{err}");

        // An unknown user fails the same way.
        let err = BrokerConnection::connect(
            &addr,
            config(
                Transport::Tcp,
                Some(SaslConfig::ScramSha512(Credentials::new("mallory", "x"))),
            ),
        )
        .await
        .expect_err("an unknown user must fail");
        assert!(
            matches!(err, ConnectionError::Authentication { .. }),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn sasl_against_a_listener_without_sasl_is_explained() {
    let (Some(addr), Some(_)) = (env("KAFKA_BOOTSTRAP"), env("KAFKA_SASL_PLAINTEXT")) else {
        return;
    };
    bounded(async {
        let err = BrokerConnection::connect(&addr, config(Transport::Tcp, Some(alice("PLAIN"))))
            .await
            .expect_err("the PLAINTEXT listener does not do SASL");
        assert!(
            matches!(
                &err,
                ConnectionError::Authentication {
                    code: Some(ErrorCode::ILLEGAL_SASL_STATE),
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("is this a SASL listener?"),
            "{err}"
        );
    })
    .await;
}

/// No SASL against a SASL listener: the broker answers ApiVersions, then
/// closes; the client stops after a few such closes and says that the
/// listener probably wants SASL (it used to reconnect until its deadline).
#[tokio::test]
async fn no_sasl_against_a_sasl_listener_is_explained() {
    let Some(addr) = env("KAFKA_SASL_PLAINTEXT") else {
        return;
    };
    bounded(async {
        let t0 = Instant::now();
        let err = ClientBuilder::new(vec![addr.clone()])
            .request_timeout(Duration::from_secs(30))
            .bootstrap_timeout(Duration::from_secs(30))
            .build()
            .await
            .expect_err("the listener needs SASL");
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert!(err.to_string().contains("probably requires SASL"), "{err}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn tls_with_ca_file_and_ip_or_dns_names() {
    let (Some(addr), Some(tls)) = (env("KAFKA_SSL"), tls_config()) else {
        return;
    };
    bounded(async {
        // 127.0.0.1 matches the certificate's IP SAN, localhost its DNS SAN.
        let port = addr.rsplit_once(':').expect("host:port").1;
        for a in [addr.clone(), format!("localhost:{port}")] {
            let conn = BrokerConnection::connect(&a, config(Transport::Tls(tls.clone()), None))
                .await
                .unwrap_or_else(|e| panic!("{a}: {e}"));
            metadata_works(&conn).await;
        }
        // Brokers learnt from metadata are verified against their
        // advertised host (127.0.0.1 here).
        let cluster = Cluster::connect(ClusterConfig {
            connection: (*config(Transport::Tls(tls.clone()), None)).clone(),
            ..ClusterConfig::new([format!("localhost:{port}")])
        })
        .await
        .expect("cluster over TLS");
        let md = cluster.refresh_metadata(None).await.expect("metadata");
        let id = *md.brokers.keys().next().expect("a broker");
        metadata_works(&cluster.broker(id).await.expect("broker")).await;
    })
    .await;
}

fn tls_failure(err: &ConnectionError) -> &TlsFailure {
    match err {
        ConnectionError::Tls { failure, .. } => failure,
        other => panic!("expected a TLS error, got: {other}"),
    }
}

#[tokio::test]
async fn tls_failures_are_told_apart() {
    let (Some(addr), Some(plain), Some(other_ca)) = (
        env("KAFKA_SSL"),
        env("KAFKA_BOOTSTRAP"),
        cert("other-ca.pem"),
    ) else {
        return;
    };
    let Some(tls) = tls_config() else { return };
    bounded(async {
        // Wrong CA.
        let wrong_ca = TlsConfig::builder()
            .ca_file(&other_ca)
            .build()
            .expect("config");
        let err = BrokerConnection::connect(&addr, config(Transport::Tls(wrong_ca), None))
            .await
            .expect_err("an untrusted CA must fail");
        assert_eq!(tls_failure(&err), &TlsFailure::UnknownIssuer, "{err}");
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("CA"), "{err}");

        // Host-name mismatch: the certificate names localhost and 127.0.0.1.
        let renamed = tls.clone().with_server_name("broker.example.com");
        let err = BrokerConnection::connect(&addr, config(Transport::Tls(renamed), None))
            .await
            .expect_err("a name the certificate lacks must fail");
        match tls_failure(&err) {
            TlsFailure::NameMismatch { expected, .. } => assert_eq!(expected, "broker.example.com"),
            other => panic!("expected a name mismatch, got {other}"),
        }
        assert!(
            err.to_string().contains("not valid for broker.example.com"),
            "{err}"
        );

        // TLS to the plaintext listener.
        let t0 = Instant::now();
        let err = BrokerConnection::connect(&plain, config(Transport::Tls(tls.clone()), None))
            .await
            .expect_err("the plaintext listener does not speak TLS");
        assert!(matches!(tls_failure(&err), TlsFailure::NotTls(_)), "{err}");
        assert!(
            err.to_string().contains("is this a plaintext listener?"),
            "{err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t0.elapsed()
        );

        // Plaintext to the TLS listener.
        let err = BrokerConnection::connect(&addr, config(Transport::Tcp, None))
            .await
            .expect_err("the TLS listener does not speak plaintext");
        assert!(!err.is_retriable(), "{err}");
        assert!(
            matches!(err, ConnectionError::PeerIsTls),
            "expected the TLS peer to be recognised: {err}"
        );
    })
    .await;
}

#[tokio::test]
async fn mutual_tls() {
    let (Some(addr), Some(ca), Some(cert_file), Some(key_file), Some(other_cert), Some(other_key)) = (
        env("KAFKA_SSL"),
        cert("ca.pem"),
        cert("client.pem"),
        cert("client.key"),
        cert("other-client.pem"),
        cert("other-client.key"),
    ) else {
        return;
    };
    bounded(async {
        let mtls = TlsConfig::builder()
            .ca_file(&ca)
            .client_cert_files(&cert_file, &key_file)
            .build()
            .expect("mTLS config");
        let conn = BrokerConnection::connect(&addr, config(Transport::Tls(mtls), None))
            .await
            .expect("mTLS with a certificate of the broker's CA");
        metadata_works(&conn).await;

        // In-memory PEM works the same.
        let pem = TlsConfig::builder()
            .ca_pem(std::fs::read(&ca).expect("ca"))
            .client_cert_pem(
                std::fs::read(&cert_file).expect("cert"),
                std::fs::read(&key_file).expect("key"),
            )
            .build()
            .expect("mTLS config from PEM bytes");
        metadata_works(
            &BrokerConnection::connect(&addr, config(Transport::Tls(pem), None))
                .await
                .expect("mTLS from PEM bytes"),
        )
        .await;

        // The broker checks what it is given: a client certificate from an
        // unknown CA is rejected (the listener only requests one, so going
        // without works, see the other tests).
        let untrusted = TlsConfig::builder()
            .ca_file(&ca)
            .client_cert_files(&other_cert, &other_key)
            .build()
            .expect("config");
        let err = BrokerConnection::connect(&addr, config(Transport::Tls(untrusted), None))
            .await
            .expect_err("an untrusted client certificate must be refused");
        assert!(
            matches!(tls_failure(&err), TlsFailure::ClientCertRejected(_)),
            "{err}"
        );
        assert!(!err.is_retriable());
    })
    .await;
}

/// Produces for 20 s on SASL_PLAINTEXT, whose sessions last
/// `KAFKA_SASL_REAUTH_MS` (5 s): the broker closes a connection that uses
/// an expired session, so every request succeeding on one connection means
/// the client re-authenticated in time, several times, without disturbing
/// requests in flight.
#[tokio::test]
async fn reauthentication_during_a_long_produce() {
    let (Some(addr), Some(reauth)) = (env("KAFKA_SASL_PLAINTEXT"), env("KAFKA_SASL_REAUTH_MS"))
    else {
        return;
    };
    let reauth_ms: u64 = reauth.parse().expect("KAFKA_SASL_REAUTH_MS is a number");
    let run = Duration::from_millis((reauth_ms * 4).max(20_000));
    bounded(async {
        for mech in ["SCRAM-SHA-512", "PLAIN"] {
            let client = ClientBuilder::new(vec![addr.clone()])
                .sasl(alice(mech))
                .request_timeout(Duration::from_secs(10))
                .build()
                .await
                .unwrap_or_else(|e| panic!("{mech}: {e}"));
            let topic = format!(
                "rskafka-security-reauth-{}-{}",
                mech.to_lowercase(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos()
            );
            client
                .controller_client()
                .expect("controller")
                .create_topic(&topic, 1, 1, 10_000)
                .await
                .expect("create topic");
            let pc = Arc::new(client.partition_client(&topic, 0).await.expect("partition"));
            let t0 = Instant::now();
            // Several producers keep requests in flight at every moment.
            let tasks: Vec<JoinHandle<usize>> = (0..4)
                .map(|i| {
                    let pc = pc.clone();
                    tokio::spawn(async move {
                        let mut n = 0;
                        while t0.elapsed() < run {
                            let record = Record {
                                key: None,
                                value: Some(Bytes::from(format!("task {i} record {n}"))),
                                headers: Vec::new(),
                                timestamp: OffsetDateTime::now_utc(),
                            };
                            pc.produce(vec![record], Compression::None)
                                .await
                                .unwrap_or_else(|e| {
                                    panic!("produce {n} of task {i} after {:?}: {e}", t0.elapsed())
                                });
                            n += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        n
                    })
                })
                .collect();
            // Alongside, one raw connection with requests always in
            // flight: the client's retries cannot hide a dropped connection
            // here.
            let conn = BrokerConnection::connect(&addr, config(Transport::Tcp, Some(alice(mech))))
                .await
                .expect("connection");
            let metadata_loops: Vec<JoinHandle<usize>> = (0..4)
                .map(|_| {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let mut n = 0;
                        while t0.elapsed() < run {
                            metadata_works(&conn).await;
                            n += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.expect("producer task");
            }
            assert!(total > 100, "{mech}: only {total} records produced");
            let mut requests = 0;
            for t in metadata_loops {
                requests += t.await.expect("metadata task");
            }
            assert!(requests > 100, "{mech}: only {requests} metadata requests");
            assert!(!conn.is_closed(), "{mech}: the connection was dropped");
            // Each record was written exactly once.
            let end = pc
                .get_offset(OffsetAt::Latest)
                .await
                .expect("latest offset");
            assert_eq!(end, total as i64, "{mech}");
        }
    })
    .await;
}

/// SOCKS5 tests, with a proxy of their own.
#[cfg(feature = "transport-socks5")]
mod socks5 {
    use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

    use super::*;
    use rskafka::connection::Socks5Config;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    /// The requests a test SOCKS5 proxy saw, as `host:port` strings.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// A minimal SOCKS5 proxy (no authentication, CONNECT only) on 127.0.0.1.
    /// `names` maps host names to the addresses the proxy really connects to,
    /// standing for names that only the proxy's side can resolve.
    struct Socks5Proxy {
        addr: SocketAddr,
        seen: Seen,
        task: JoinHandle<()>,
    }

    impl Drop for Socks5Proxy {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Socks5Proxy {
        async fn start(names: HashMap<String, String>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            let addr = listener.local_addr().expect("proxy address");
            let seen = Seen::default();
            let names = Arc::new(names);
            let task = {
                let seen = seen.clone();
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let (seen, names) = (seen.clone(), names.clone());
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(120),
                                serve_socks5(client, seen, names),
                            )
                            .await;
                        });
                    }
                })
            };
            Self { addr, seen, task }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().expect("lock").clone()
        }
    }

    async fn serve_socks5(
        mut client: TcpStream,
        seen: Seen,
        names: Arc<HashMap<String, String>>,
    ) -> std::io::Result<()> {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await?;
        let mut methods = vec![0u8; usize::from(head[1])];
        client.read_exact(&mut methods).await?;
        if head[0] != 5 || !methods.contains(&0) {
            client.write_all(&[5, 0xff]).await?;
            return Ok(());
        }
        client.write_all(&[5, 0]).await?;
        let mut req = [0u8; 4];
        client.read_exact(&mut req).await?;
        let host = match req[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).await?;
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let mut len = [0u8; 1];
                client.read_exact(&mut len).await?;
                let mut name = vec![0u8; usize::from(len[0])];
                client.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
            4 => {
                let mut ip = [0u8; 16];
                client.read_exact(&mut ip).await?;
                format!("[{}]", std::net::Ipv6Addr::from(ip))
            }
            _ => return Ok(()),
        };
        let port = client.read_u16().await?;
        seen.lock().expect("lock").push(format!("{host}:{port}"));
        let real = names.get(&host).cloned().unwrap_or(host);
        let upstream = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(format!("{real}:{port}")),
        )
        .await;
        let mut upstream = match upstream {
            Ok(Ok(s)) => s,
            _ => {
                // Reply 5: connection refused.
                client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                return Ok(());
            }
        };
        client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    #[tokio::test]
    async fn socks5_proxy_with_names_only_the_proxy_resolves() {
        let Some(bootstrap) = env("KAFKA_BOOTSTRAP") else {
            return;
        };
        bounded(async {
            let proxy = Socks5Proxy::start(HashMap::from([(
                "kafka.rskafka.invalid".to_string(),
                "127.0.0.1".to_string(),
            )]))
            .await;
            let port = bootstrap.rsplit_once(':').expect("host:port").1;
            // `.invalid` never resolves here: connecting works only if the name
            // goes to the proxy unresolved.
            let via_name = format!("kafka.rskafka.invalid:{port}");
            let transport = Transport::Socks5(Socks5Config::new(proxy.addr.to_string()));
            let cluster = Cluster::connect(ClusterConfig {
                connection: (*config(transport.clone(), None)).clone(),
                ..ClusterConfig::new([via_name.clone()])
            })
            .await
            .expect("cluster through the proxy");
            let md = cluster.refresh_metadata(None).await.expect("metadata");
            let (id, broker) = md.brokers.iter().next().expect("a broker");
            let conn = cluster.broker(*id).await.expect("broker through the proxy");
            metadata_works(&conn).await;
            let advertised = format!("{}:{}", broker.host, broker.port);
            let seen = proxy.seen();
            assert_eq!(seen.first(), Some(&via_name), "{seen:?}");
            // The broker learnt from metadata was reached through the proxy too.
            assert!(seen.contains(&advertised), "{advertised} not in {seen:?}");

            // A proxy that refuses: a connect error naming the proxy.
            let err =
                BrokerConnection::connect("unreachable.rskafka.invalid:1", config(transport, None))
                    .await
                    .expect_err("the proxy cannot reach that");
            assert!(matches!(err, ConnectionError::Connect { .. }), "{err}");
            assert!(err.to_string().contains("SOCKS5"), "{err}");
        })
        .await;
    }

    #[tokio::test]
    async fn socks5_with_tls_and_sasl() {
        let (Some(addr), Some(tls)) = (env("KAFKA_SASL_SSL"), tls_config()) else {
            return;
        };
        bounded(async {
            let proxy = Socks5Proxy::start(HashMap::new()).await;
            let port = addr.rsplit_once(':').expect("host:port").1;
            // TLS runs end to end through the proxy and is verified against
            // the broker's name (localhost), not the proxy's.
            let target = format!("localhost:{port}");
            let transport = Transport::Socks5Tls(Socks5Config::new(proxy.addr.to_string()), tls);
            let conn =
                BrokerConnection::connect(&target, config(transport, Some(alice("SCRAM-SHA-256"))))
                    .await
                    .expect("SASL_SSL through the proxy");
            metadata_works(&conn).await;
            assert_eq!(proxy.seen(), vec![target]);
        })
        .await;
    }
}
