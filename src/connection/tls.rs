//! TLS for broker connections, with rustls (feature `transport-tls`).
//!
//! Server certificates are verified against the system roots or a given CA,
//! for the host name of the address being connected to: the bootstrap
//! address, or the host each broker advertises in metadata. IP addresses
//! are matched against IP SANs. Client certificates give mutual TLS. TLS 1.2
//! and 1.3 are offered.
//!
//! Each failure gets its own [`TlsFailure`], so that "wrong CA", "wrong host
//! name", "expired" and "that port speaks plaintext" read differently.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    AlertDescription, CertificateError, ClientConfig, RootCertStore,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{timeout_at, Instant},
};
use tokio_rustls::TlsConnector;

use super::{
    tcp::{BoxRead, BoxWrite},
    ConnectionError,
};

/// PEM data, from a file or in memory.
#[derive(Clone, PartialEq, Eq)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>, TlsError> {
        match self {
            Pem::Bytes(b) => Ok(b.clone()),
            Pem::File(p) => std::fs::read(p).map_err(|e| TlsError::Read {
                what: what.to_string(),
                path: p.clone(),
                reason: e.to_string(),
            }),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Pem::File(p) => format!("{what} {}", p.display()),
            Pem::Bytes(_) => format!("{what} (PEM given in memory)"),
        }
    }
}

/// Why a [`TlsConfig`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {reason}", .path.display())]
    Read {
        /// Which file it was (CA, client certificate, client key).
        what: String,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// PEM data holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// No trusted root certificates could be loaded from the system.
    #[error("no CA certificates found in the system store ({0}); pass a CA file")]
    NoSystemRoots(String),
    /// rustls refused the configuration (e.g. a key that does not match
    /// the certificate).
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// Why a TLS connection to a broker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer does not speak TLS: it sent other bytes, or closed the
    /// connection on receiving the TLS hello (a Kafka plaintext listener
    /// does).
    #[error("broker did not answer TLS: is this a plaintext listener? ({0})")]
    NotTls(String),
    /// The broker's certificate chain does not lead to a trusted CA.
    #[error("the broker's certificate is not signed by a trusted CA (unknown issuer): wrong or missing CA file?")]
    UnknownIssuer,
    /// The broker's certificate does not name the host connected to.
    #[error("the broker's certificate is not valid for {expected}{}", if .presented.is_empty() { String::new() } else { format!(" (it names {})", .presented.join(", ")) })]
    NameMismatch {
        /// The name the client expected (the broker's host, or the
        /// configured server-name override).
        expected: String,
        /// The names the certificate holds, if known.
        presented: Vec<String>,
    },
    /// The broker's certificate has expired.
    #[error("the broker's certificate has expired{0}")]
    Expired(String),
    /// The broker's certificate is not valid yet (or a clock is wrong).
    #[error("the broker's certificate is not valid yet{0}")]
    NotYetValid(String),
    /// Another problem with the broker's certificate.
    #[error("the broker's certificate was rejected: {0}")]
    BadCertificate(String),
    /// The broker rejected the client's certificate, or wanted one and got
    /// none.
    #[error("the broker rejected the client certificate ({0}): missing, untrusted or expired client certificate?")]
    ClientCertRejected(String),
    /// The host (or override) is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    InvalidServerName(String),
    /// Any other handshake failure (no common version or cipher, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// TLS settings of broker connections. Cheap to clone: the rustls
/// configuration is built once and shared.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.client, &other.client) && self.server_name == other.server_name
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A builder; with nothing set it trusts the system's CA certificates
    /// and sends no client certificate.
    pub fn builder() -> TlsConfigBuilder {
        TlsConfigBuilder::default()
    }

    /// A config around a rustls configuration built by the caller (custom
    /// verifiers, key logging, ...).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self {
            client: config,
            server_name: None,
        }
    }

    /// Verifies every broker against `name` instead of its host, and sends
    /// it as SNI (for brokers reached through addresses their certificates
    /// do not name, such as a tunnel on localhost).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The rustls configuration in use.
    pub fn rustls_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }
}

/// Builds a [`TlsConfig`] from PEM files or bytes.
#[derive(Clone, Default)]
pub struct TlsConfigBuilder {
    ca: Option<Pem>,
    client_cert: Option<(Pem, Pem)>,
    server_name: Option<String>,
}

impl fmt::Debug for TlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigBuilder")
            .field("ca", &self.ca.as_ref().map(|p| p.describe("CA")))
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|(c, _)| c.describe("cert")),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfigBuilder {
    /// Trusts only the CA certificates in this PEM file, instead of the
    /// system's.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(Pem::File(path.as_ref().to_path_buf()));
        self
    }

    /// Trusts only the CA certificates in this PEM data.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Presents this certificate chain and private key (PEM files; PKCS#8,
    /// PKCS#1 or SEC1 key) for mutual TLS.
    pub fn client_cert_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.client_cert = Some((
            Pem::File(cert.as_ref().to_path_buf()),
            Pem::File(key.as_ref().to_path_buf()),
        ));
        self
    }

    /// Presents this certificate chain and private key (PEM data).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// See [`TlsConfig::with_server_name`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the files and builds the rustls configuration (TLS 1.2 and
    /// 1.3, ring).
    pub fn build(self) -> Result<TlsConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(pem) => {
                let bytes = pem.read("CA file")?;
                let certs = parse_certs(&bytes, &pem.describe("CA file"))?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::Pem(format!(
                        "{}: no usable CA certificate",
                        pem.describe("CA file")
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_string(), ToString::to_string);
                    return Err(TlsError::NoSystemRoots(why));
                }
            }
        }
        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = parse_certs(
                    &cert.read("client certificate")?,
                    &cert.describe("client certificate"),
                )?;
                let key_bytes = key.read("client key")?;
                let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                    TlsError::Pem(format!(
                        "{}: no private key ({e})",
                        key.describe("client key")
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
        };
        Ok(TlsConfig {
            client: Arc::new(config),
            server_name: self.server_name,
        })
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no certificate in it")));
    }
    Ok(certs)
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn tls_error(addr: &str, failure: TlsFailure) -> ConnectionError {
    ConnectionError::Tls {
        addr: addr.to_string(),
        failure,
    }
}

/// Classifies a rustls error.
pub(crate) fn classify(e: &rustls::Error) -> TlsFailure {
    use rustls::Error as E;
    match e {
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => TlsFailure::NotTls(e.to_string()),
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::NotValidForName => TlsFailure::NameMismatch {
                expected: String::new(),
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TlsFailure::NameMismatch {
                expected: server_name_string(expected),
                presented: presented.clone(),
            },
            CertificateError::Expired => TlsFailure::Expired(String::new()),
            CertificateError::ExpiredContext { time, not_after } => TlsFailure::Expired(format!(
                " ({} s ago)",
                time.as_secs().saturating_sub(not_after.as_secs())
            )),
            CertificateError::NotValidYet => TlsFailure::NotYetValid(String::new()),
            CertificateError::NotValidYetContext { time, not_before } => {
                TlsFailure::NotYetValid(format!(
                    " (for another {} s)",
                    not_before.as_secs().saturating_sub(time.as_secs())
                ))
            }
            CertificateError::BadSignature => TlsFailure::BadCertificate(
                "its signature does not verify against the trusted CA of the same name \
                 (was the CA regenerated?)"
                    .to_string(),
            ),
            other => TlsFailure::BadCertificate(format!("{other:?}")),
        },
        E::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired => {
                TlsFailure::ClientCertRejected(format!("alert {alert:?}"))
            }
            other => TlsFailure::Handshake(format!("the broker sent alert {other:?}")),
        },
        other => TlsFailure::Handshake(other.to_string()),
    }
}

fn server_name_string(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The rustls error inside an I/O error, if there is one.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Rewrites a failure of the first exchange on a TLS connection that TLS
/// caused: with TLS 1.3 the broker checks the client certificate after the
/// client considers the handshake done, so its rejection arrives as an
/// alert on the first read.
pub(crate) fn explain_failure(addr: &str, e: &ConnectionError) -> Option<ConnectionError> {
    let mut cur = e;
    loop {
        match cur {
            ConnectionError::Disconnected {
                cause: Some(cause), ..
            } => cur = cause,
            ConnectionError::Io(io) => {
                return rustls_error(io).map(|r| tls_error(addr, classify(r)));
            }
            _ => return None,
        }
    }
}

/// What a failed handshake with `addr`, which had to present `name`, means.
fn handshake_error(addr: &str, name: String, e: &std::io::Error) -> ConnectionError {
    if let Some(r) = rustls_error(e) {
        let failure = match classify(r) {
            // rustls leaves the expected name out of the plain variant.
            TlsFailure::NameMismatch {
                expected,
                presented,
            } if expected.is_empty() => TlsFailure::NameMismatch {
                expected: name,
                presented,
            },
            f => f,
        };
        return tls_error(addr, failure);
    }
    match e.kind() {
        // A Kafka plaintext listener reads the hello as a huge frame size
        // and drops the connection.
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => tls_error(
            addr,
            TlsFailure::NotTls(format!(
                "the connection was closed during the TLS handshake: {e}"
            )),
        ),
        _ => ConnectionError::Connect {
            addr: addr.to_string(),
            reason: format!("TLS handshake: {e}"),
        },
    }
}

/// Runs the TLS handshake on `stream` for `addr` before `deadline`.
pub(crate) async fn handshake<S>(
    stream: S,
    addr: &str,
    config: &TlsConfig,
    deadline: Instant,
    timeout: Duration,
) -> Result<(BoxRead, BoxWrite), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = config
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(addr).to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| tls_error(addr, TlsFailure::InvalidServerName(name.clone())))?;
    let connector = TlsConnector::from(config.client.clone());
    let stream = match timeout_at(deadline, connector.connect(server_name, stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(handshake_error(addr, name, &e)),
        Err(_) => {
            return Err(ConnectionError::Connect {
                addr: addr.to_string(),
                reason: format!("TLS handshake did not finish within {timeout:?}"),
            })
        }
    };
    let (r, w) = tokio::io::split(stream);
    Ok((Box::new(r), Box::new(w)))
}

/// Connects over TCP to `addr` and runs the TLS handshake, all within
/// `timeout`.
pub(crate) async fn connect(
    addr: &str,
    config: &TlsConfig,
    timeout: Duration,
) -> Result<(BoxRead, BoxWrite), ConnectionError> {
    let deadline = Instant::now() + timeout;
    let tcp = super::tcp::tcp_connect(addr, timeout).await?;
    handshake(tcp, addr, config, deadline, timeout).await
}

/// rustls on *ring*: the provider that needs no C toolchain beyond *ring*'s
/// own (aws-lc-rs needs cmake). rustls 0.23.48 deprecated it for lacking
/// post-quantum key exchange, which it still supports in every other way;
/// Kafka brokers on the JVM do not offer hybrid post-quantum groups either.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("broker-1.example.com:9093"), "broker-1.example.com");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("[fe80::1]"), "fe80::1");
    }

    #[test]
    fn build_errors_are_clear() {
        let e = TlsConfig::builder()
            .ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert!(
            matches!(&e, TlsError::Read { what, .. } if what == "CA file"),
            "{e}"
        );
        let e = TlsConfig::builder()
            .ca_pem(&b"not pem"[..])
            .build()
            .unwrap_err();
        assert!(matches!(e, TlsError::Pem(_)), "{e}");
    }

    #[test]
    fn classification() {
        assert!(matches!(
            classify(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            TlsFailure::UnknownIssuer
        ));
        assert!(matches!(
            classify(&rustls::Error::InvalidCertificate(
                CertificateError::Expired
            )),
            TlsFailure::Expired(_)
        ));
        assert!(matches!(
            classify(&rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            TlsFailure::ClientCertRejected(_)
        ));
        assert!(matches!(
            classify(&rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            )),
            TlsFailure::NotTls(_)
        ));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::BadCertificate),
        );
        let e = ConnectionError::Disconnected {
            addr: "b:1".into(),
            ambiguous: false,
            cause: Some(Arc::new(ConnectionError::from(io))),
        };
        assert!(matches!(
            explain_failure("b:1", &e),
            Some(ConnectionError::Tls {
                failure: TlsFailure::ClientCertRejected(_),
                ..
            })
        ));
        assert!(explain_failure("b:1", &ConnectionError::Closed).is_none());
    }

    #[test]
    fn handshake_errors_name_the_cause() {
        let io = |kind, inner: rustls::Error| std::io::Error::new(kind, inner);
        // rustls's plain name mismatch gets the name that was expected.
        let e = handshake_error(
            "b:1",
            "broker.example".into(),
            &io(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            ),
        );
        assert!(matches!(
            e,
            ConnectionError::Tls {
                failure: TlsFailure::NameMismatch { ref expected, .. },
                ..
            } if expected == "broker.example"
        ));
        // A plaintext listener drops the connection: not TLS.
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            handshake_error("b:1", "b".into(), &eof),
            ConnectionError::Tls {
                failure: TlsFailure::NotTls(_),
                ..
            }
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            handshake_error("b:1", "b".into(), &refused),
            ConnectionError::Connect { ref reason, .. } if reason.starts_with("TLS handshake: ")
        ));
    }

    /// In-process TLS servers with generated certificates, for failures a
    /// Kafka broker in CI cannot easily be made to show.
    mod live {
        use super::*;
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use rustls::{server::WebPkiClientVerifier, ServerConfig};
        use time::OffsetDateTime;
        use tokio::{
            io::{AsyncReadExt, AsyncWriteExt},
            net::TcpListener,
        };
        use tokio_rustls::TlsAcceptor;

        struct Ca {
            cert: rcgen::Certificate,
            key: KeyPair,
        }

        fn new_ca(name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            Ca {
                cert: params.self_signed(&key).unwrap(),
                key,
            }
        }

        /// A leaf for `names`, valid from `from` to `to` days from now.
        fn leaf(ca: &Ca, names: &[&str], from: i64, to: i64) -> (rcgen::Certificate, KeyPair) {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            let now = OffsetDateTime::now_utc();
            params.not_before = now + time::Duration::days(from);
            params.not_after = now + time::Duration::days(to);
            (params.signed_by(&key, &ca.cert, &ca.key).unwrap(), key)
        }

        fn provider() -> Arc<rustls::crypto::CryptoProvider> {
            Arc::new(super::ring_provider())
        }

        /// Serves TLS with `cert` on a loopback port, answering "ok" to
        /// every client; `client_ca` makes client certificates required.
        async fn server(
            cert: &rcgen::Certificate,
            key: &KeyPair,
            client_ca: Option<&Ca>,
        ) -> std::net::SocketAddr {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap();
            let builder = match client_ca {
                None => builder.with_no_client_auth(),
                Some(ca) => {
                    let mut roots = RootCertStore::empty();
                    roots.add(ca.cert.der().clone()).unwrap();
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                            .build()
                            .unwrap();
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let config = builder
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(tcp).await {
                            let _ = tls.write_all(b"ok").await;
                            let _ = tls.flush().await;
                        }
                    });
                }
            });
            addr
        }

        /// Connects to `port` as `host`, reads the greeting: `Ok` if it
        /// arrived, else the error as `connect()` would report it.
        async fn try_connect(
            host: &str,
            port: u16,
            config: &TlsConfig,
        ) -> Result<(), ConnectionError> {
            let addr = format!("{host}:{port}");
            let timeout = Duration::from_secs(5);
            let (mut r, _w) = connect(&addr, config, timeout).await?;
            let mut buf = [0u8; 2];
            match tokio::time::timeout(timeout, r.read_exact(&mut buf)).await {
                Ok(Ok(_)) if &buf == b"ok" => Ok(()),
                Ok(Ok(_)) => panic!("unexpected greeting {buf:?}"),
                Ok(Err(e)) => {
                    let e = ConnectionError::from(e);
                    Err(explain_failure(&addr, &e).unwrap_or(e))
                }
                Err(_) => panic!("no greeting from the test server"),
            }
        }

        fn trusting(ca: &Ca) -> TlsConfigBuilder {
            TlsConfig::builder().ca_pem(ca.cert.pem())
        }

        fn failure(r: Result<(), ConnectionError>) -> TlsFailure {
            match r {
                Err(ConnectionError::Tls { failure, .. }) => failure,
                other => panic!("expected a TLS failure, got {other:?}"),
            }
        }

        #[tokio::test]
        async fn ip_and_dns_sans_verify() {
            let ca = new_ca("test CA");
            let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1", "::1"], -1, 30);
            let port = server(&cert, &key, None).await.port();
            let config = trusting(&ca).build().unwrap();
            try_connect("127.0.0.1", port, &config).await.unwrap();
            try_connect("localhost", port, &config).await.unwrap();
            // An override replaces the host for SNI and verification.
            let renamed = config.clone().with_server_name("localhost");
            let (cert2, key2) = leaf(&ca, &["broker-7.internal"], -1, 30);
            let port2 = server(&cert2, &key2, None).await.port();
            try_connect(
                "127.0.0.1",
                port2,
                &renamed.with_server_name("broker-7.internal"),
            )
            .await
            .unwrap();
        }

        #[tokio::test]
        async fn each_certificate_failure_has_its_own_error() {
            let ca = new_ca("test CA");
            let config = trusting(&ca).build().unwrap();

            let (cert, key) = leaf(&ca, &["broker-7.internal"], -1, 30);
            let port = server(&cert, &key, None).await.port();
            match failure(try_connect("127.0.0.1", port, &config).await) {
                TlsFailure::NameMismatch {
                    expected,
                    presented,
                } => {
                    assert_eq!(expected, "127.0.0.1");
                    assert!(
                        presented.iter().any(|p| p.contains("broker-7.internal")),
                        "{presented:?}"
                    );
                }
                other => panic!("{other}"),
            }

            let (cert, key) = leaf(&ca, &["127.0.0.1"], -30, -1);
            let port = server(&cert, &key, None).await.port();
            let f = failure(try_connect("127.0.0.1", port, &config).await);
            assert!(matches!(f, TlsFailure::Expired(_)), "{f}");
            assert!(f.to_string().contains("expired"), "{f}");

            let (cert, key) = leaf(&ca, &["127.0.0.1"], 1, 30);
            let port = server(&cert, &key, None).await.port();
            let f = failure(try_connect("127.0.0.1", port, &config).await);
            assert!(matches!(f, TlsFailure::NotYetValid(_)), "{f}");

            let other = new_ca("unrelated CA");
            let (cert, key) = leaf(&other, &["127.0.0.1"], -1, 30);
            let port = server(&cert, &key, None).await.port();
            assert_eq!(
                failure(try_connect("127.0.0.1", port, &config).await),
                TlsFailure::UnknownIssuer
            );

            // A CA of the same name but another key (a regenerated CA).
            let twin = new_ca("test CA");
            let (cert, key) = leaf(&twin, &["127.0.0.1"], -1, 30);
            let port = server(&cert, &key, None).await.port();
            let f = failure(try_connect("127.0.0.1", port, &config).await);
            assert!(
                matches!(&f, TlsFailure::BadCertificate(m) if m.contains("signature")),
                "{f}"
            );
        }

        #[tokio::test]
        async fn required_client_certificate() {
            let ca = new_ca("test CA");
            let (cert, key) = leaf(&ca, &["127.0.0.1"], -1, 30);
            let port = server(&cert, &key, Some(&ca)).await.port();

            // Without a certificate: with TLS 1.3 the rejection arrives
            // after the handshake, as an alert on the first read.
            let f = failure(try_connect("127.0.0.1", port, &trusting(&ca).build().unwrap()).await);
            assert!(matches!(f, TlsFailure::ClientCertRejected(_)), "{f}");

            let (client, client_key) = leaf(&ca, &["client"], -1, 30);
            let mtls = trusting(&ca)
                .client_cert_pem(client.pem(), client_key.serialize_pem())
                .build()
                .unwrap();
            try_connect("127.0.0.1", port, &mtls).await.unwrap();

            let other = new_ca("unrelated CA");
            let (stranger, stranger_key) = leaf(&other, &["client"], -1, 30);
            let untrusted = trusting(&ca)
                .client_cert_pem(stranger.pem(), stranger_key.serialize_pem())
                .build()
                .unwrap();
            let f = failure(try_connect("127.0.0.1", port, &untrusted).await);
            assert!(matches!(f, TlsFailure::ClientCertRejected(_)), "{f}");

            // A key that does not belong to the certificate is refused up front.
            let (_, wrong_key) = leaf(&ca, &["x"], -1, 30);
            let e = trusting(&ca)
                .client_cert_pem(client.pem(), wrong_key.serialize_pem())
                .build()
                .unwrap_err();
            assert!(matches!(e, TlsError::Config(_)), "{e}");
        }

        #[tokio::test]
        async fn peers_that_do_not_speak_tls() {
            let ca = new_ca("test CA");
            let config = trusting(&ca).build().unwrap();
            // One answers with a Kafka-looking frame, one hangs up on the
            // hello like a Kafka plaintext listener.
            for answer in [
                Some(&b"\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00"[..]),
                None,
            ] {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                tokio::spawn(async move {
                    let (mut s, _) = listener.accept().await.unwrap();
                    let mut buf = [0u8; 4];
                    let _ = s.read_exact(&mut buf).await;
                    if let Some(a) = answer {
                        let _ = s.write_all(a).await;
                    }
                });
                let f = failure(try_connect("127.0.0.1", port, &config).await);
                assert!(matches!(f, TlsFailure::NotTls(_)), "{answer:?}: {f}");
                assert!(f.to_string().contains("is this a plaintext listener?"));
            }
        }
    }
}
