//! SASL authentication: the mechanisms as sans-IO state machines, and the
//! exchange on a broker connection (SaslHandshake v1, then SaslAuthenticate
//! rounds) with re-authentication before the session expires (KIP-368).
//!
//! Each mechanism implements [`Mechanism`]: an initial client message, then
//! one step per server message, ending in [`Step::Done`] or an error. They
//! do no I/O, so they are tested against fixed vectors; neither does the
//! exchange around them (`exchange.rs`). The async functions here only
//! send what it asks for and sleep until it says to re-authenticate.

mod exchange;
mod oauthbearer;
mod plain;
mod scram;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

pub use self::oauthbearer::{
    initial_response as oauthbearer_initial_response, BoxError, OAuthBearer, OAuthToken,
    OAuthTokenCallback, OAuthTokenProvider,
};
pub use self::plain::Plain;
pub use self::scram::{escape_username, Scram, ScramHash, MAX_ITERATIONS, MIN_ITERATIONS};
use self::exchange::{Exchange, Failure, Next, Session};
use super::{BrokerConnection, ConnectionError};
use crate::protocol::ApiKey;

/// What a mechanism does after a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes in the next SaslAuthenticate request.
    Respond(Vec<u8>),
    /// Authentication succeeded.
    Done,
}

/// A client-side SASL mechanism as a state machine.
pub trait Mechanism: Send + std::fmt::Debug {
    /// The mechanism name sent in SaslHandshake.
    fn name(&self) -> &'static str;
    /// The first client message.
    fn initial_response(&mut self) -> Result<Vec<u8>, SaslError>;
    /// Consumes a server message and says what comes next.
    fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Step, SaslError>;
    /// A server-provided explanation of a failure, if the mechanism got one
    /// before the broker reported the error (OAUTHBEARER's error document).
    fn failure_detail(&self) -> Option<String> {
        None
    }
}

/// Why a SASL exchange failed on the client side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The configured credentials or token cannot be sent as they are.
    #[error("invalid SASL input: {0}")]
    InvalidInput(String),
    /// The server's message does not follow the mechanism's grammar.
    #[error("malformed server message: {0}")]
    MalformedServerMessage(String),
    /// The server reported an error inside the mechanism (SCRAM `e=`,
    /// OAUTHBEARER error document).
    #[error("server error: {0}")]
    ServerError(String),
    /// The SCRAM server nonce does not extend the client nonce: a replayed
    /// or forged exchange.
    #[error("SCRAM server nonce does not extend the client nonce")]
    ServerNonceMismatch,
    /// The SCRAM iteration count is outside the accepted bounds.
    #[error("SCRAM iteration count {count} is outside {min}..={max}")]
    IterationCount {
        /// The count the server sent.
        count: u32,
        /// The smallest count accepted.
        min: u32,
        /// The largest count accepted.
        max: u32,
    },
    /// The SCRAM server signature is wrong: the server does not know the
    /// credential, so it is not the server it claims to be.
    #[error("SCRAM server signature does not verify: the server may be an impostor")]
    ServerSignatureMismatch,
    /// The OAUTHBEARER token callback failed.
    #[error("OAuth token callback failed: {0}")]
    Token(String),
    /// A message arrived when the exchange did not expect one.
    #[error("SASL exchange out of order: {0}")]
    OutOfOrder(&'static str),
}

/// A username and password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// Credentials from a username and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How connections authenticate. Set it as `ConnectionConfig::sasl`; every
/// connection then authenticates right after version negotiation, before
/// any other request, and re-authenticates when the broker announces a
/// session lifetime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SaslConfig {
    /// PLAIN: the password is sent as it is (use it with TLS).
    Plain(Credentials),
    /// SCRAM-SHA-256.
    ScramSha256(Credentials),
    /// SCRAM-SHA-512.
    ScramSha512(Credentials),
    /// OAUTHBEARER with tokens from a callback.
    OAuthBearer(OAuthTokenProvider),
}

impl SaslConfig {
    /// The config for a username/password mechanism named as Kafka names it
    /// (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`; case-insensitive).
    pub fn from_mechanism_name(
        mechanism: &str,
        credentials: Credentials,
    ) -> Result<Self, SaslError> {
        match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Self::Plain(credentials)),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256(credentials)),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512(credentials)),
            other => Err(SaslError::InvalidInput(format!(
                "unknown SASL mechanism {other:?} (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            ))),
        }
    }

    /// The mechanism name sent in SaslHandshake.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Self::Plain(_) => "PLAIN",
            Self::ScramSha256(_) => ScramHash::Sha256.mechanism(),
            Self::ScramSha512(_) => ScramHash::Sha512.mechanism(),
            Self::OAuthBearer(_) => oauthbearer::NAME,
        }
    }

    /// A fresh exchange (for OAUTHBEARER, with a token fetched now).
    pub async fn start(&self) -> Result<Box<dyn Mechanism>, SaslError> {
        Ok(match self {
            Self::Plain(c) => Box::new(Plain::new(&c.username, &c.password)?),
            Self::ScramSha256(c) => {
                Box::new(Scram::new(ScramHash::Sha256, &c.username, &c.password)?)
            }
            Self::ScramSha512(c) => {
                Box::new(Scram::new(ScramHash::Sha512, &c.username, &c.password)?)
            }
            Self::OAuthBearer(p) => {
                let token = p
                    .token()
                    .await
                    .map_err(|e| SaslError::Token(e.to_string()))?;
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                Box::new(OAuthBearer::new(&token, now_ms)?)
            }
        })
    }
}

/// Longest sleep of the re-authentication task between checks that its
/// connection still exists, so a dropped connection's task ends soon.
const REAUTH_POLL: Duration = Duration::from_secs(30);

fn auth_error(conn: &BrokerConnection, mechanism: &str, failure: Failure) -> ConnectionError {
    ConnectionError::Authentication {
        addr: conn.addr().to_string(),
        mechanism: mechanism.to_string(),
        code: failure.code,
        message: failure.message,
    }
}

/// Runs one SASL exchange on `conn`: sends what the [`Exchange`] asks for
/// and hands it the answers. Requests bypass the re-authentication gate,
/// so this works while the gate is held.
pub(crate) async fn authenticate(
    conn: &BrokerConnection,
    config: &SaslConfig,
) -> Result<Session, ConnectionError> {
    let name = config.mechanism();
    let failed = |f: Failure| auth_error(conn, name, f);
    let mut exchange = Exchange::new(
        name,
        conn.version_for(ApiKey::SASL_HANDSHAKE),
        conn.version_for(ApiKey::SASL_AUTHENTICATE),
    )
    .map_err(failed)?;
    let (handshake, version) = exchange.handshake();
    let resp = conn.request_ungated(&handshake, version).await?;
    exchange.on_handshake(&resp).map_err(failed)?;

    let mut req = exchange.start(config.start().await).map_err(failed)?;
    let version = exchange.authenticate_version();
    loop {
        let sent_at = Instant::now();
        let resp = conn.request_ungated(&req, version).await?;
        match exchange.on_authenticate(resp, sent_at).map_err(failed)? {
            Next::Send(next) => req = next,
            Next::Done(session) => {
                tracing::debug!(broker = %conn.addr(), mechanism = name, lifetime = ?session.lifetime, "SASL authenticated");
                return Ok(session);
            }
        }
    }
}

/// Authenticates a new connection within `deadline` and, if the broker
/// announced a session lifetime, starts re-authenticating it in the
/// background before each session expires.
pub(crate) async fn authenticate_connection(
    conn: &BrokerConnection,
    config: &SaslConfig,
    deadline: Instant,
    request_timeout: Duration,
) -> Result<(), ConnectionError> {
    let session = match timeout_at(deadline, authenticate(conn, config)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ConnectionError::Connect {
                addr: conn.addr().to_string(),
                reason: format!(
                    "SASL {} authentication did not finish within the connect timeout",
                    config.mechanism()
                ),
            })
        }
    };
    if session.lifetime.is_some() {
        tokio::spawn(reauthenticate_loop(
            conn.downgrade(),
            config.clone(),
            session,
            request_timeout,
        ));
    }
    Ok(())
}

/// Re-authenticates the connection before each session expires (KIP-368).
/// New requests wait while in-flight ones finish, the exchange runs alone
/// on the connection, then requests resume — as Kafka's Java client does.
/// A failed re-authentication closes the connection; the next use opens a
/// new one (which reports an authentication error if credentials changed).
async fn reauthenticate_loop(
    conn: super::broker::WeakConnection,
    config: SaslConfig,
    mut session: Session,
    request_timeout: Duration,
) {
    loop {
        let jitter = rand::rng().random();
        let Some(at) = session.reauth_at(jitter) else {
            return;
        };
        // Sleep in slices so that a dropped connection ends this task.
        loop {
            let now = Instant::now();
            if now >= at {
                break;
            }
            sleep_until(at.min(now + REAUTH_POLL)).await;
            match conn.upgrade() {
                Some(c) if !c.is_closed() => {}
                _ => return,
            }
        }
        let Some(c) = conn.upgrade().filter(|c| !c.is_closed()) else {
            return;
        };
        // In-flight requests end within the request timeout (answered or
        // abandoned), so the pause is bounded by it.
        let result = match timeout(request_timeout, c.pause_requests()).await {
            Err(_) => Err("in-flight requests did not finish".to_string()),
            Ok(_pause) => match timeout(request_timeout, authenticate(&c, &config)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within the request timeout".to_string()),
            },
        };
        match result {
            Ok(s) => {
                tracing::debug!(broker = %c.addr(), lifetime = ?s.lifetime, "SASL re-authenticated");
                session = s;
            }
            Err(e) => {
                tracing::warn!(broker = %c.addr(), error = %e, "SASL re-authentication failed; closing the connection");
                c.close();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_and_debug() {
        let c = Credentials::new("alice", "alice-secret");
        assert!(!format!("{c:?}").contains("secret"));
        for (name, want) in [
            ("plain", "PLAIN"),
            ("SCRAM-SHA-256", "SCRAM-SHA-256"),
            ("scram-sha-512", "SCRAM-SHA-512"),
        ] {
            let cfg = SaslConfig::from_mechanism_name(name, c.clone()).unwrap();
            assert_eq!(cfg.mechanism(), want);
            assert!(!format!("{cfg:?}").contains("secret"));
        }
        assert!(matches!(
            SaslConfig::from_mechanism_name("GSSAPI", c),
            Err(SaslError::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn start_builds_each_mechanism() {
        let c = Credentials::new("alice", "alice-secret");
        let m = SaslConfig::Plain(c.clone()).start().await.unwrap();
        assert_eq!(m.name(), "PLAIN");
        let mut m = SaslConfig::ScramSha512(c).start().await.unwrap();
        assert_eq!(m.name(), "SCRAM-SHA-512");
        assert!(m.initial_response().unwrap().starts_with(b"n,,n=alice,r="));
        let provider = OAuthTokenProvider::new(|| async {
            Ok(OAuthToken {
                token: "abc".into(),
                lifetime_ms: i64::MAX,
                principal: None,
                extensions: Default::default(),
            })
        });
        let mut m = SaslConfig::OAuthBearer(provider).start().await.unwrap();
        assert_eq!(m.name(), "OAUTHBEARER");
        assert_eq!(
            m.initial_response().unwrap(),
            b"n,,\x01auth=Bearer abc\x01\x01"
        );
        let failing =
            OAuthTokenProvider::new(|| async { Err::<OAuthToken, BoxError>("idp down".into()) });
        assert!(matches!(
            SaslConfig::OAuthBearer(failing).start().await,
            Err(SaslError::Token(m)) if m == "idp down"
        ));
    }
}
