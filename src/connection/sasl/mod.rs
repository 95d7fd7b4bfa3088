//! SASL authentication: the mechanisms as sans-IO state machines, and the
//! exchange on a broker connection (SaslHandshake v1, then SaslAuthenticate
//! rounds) with re-authentication before the session expires (KIP-368).
//!
//! Each mechanism implements [`Mechanism`]: an initial client message, then
//! one step per server message, ending in [`Step::Done`] or an error. They
//! do no I/O, so they are tested against fixed vectors.

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
use super::{BrokerConnection, ConnectionError};
use crate::protocol::{
    messages::{SaslAuthenticateRequest, SaslHandshakeRequest},
    ApiKey, ErrorCode,
};

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

/// Bound on SaslAuthenticate rounds, against a server that never finishes.
/// SCRAM needs two, PLAIN and OAUTHBEARER one (two on rejection).
const MAX_ROUNDS: usize = 8;

/// Share of the session lifetime after which re-authentication starts:
/// 85 % plus up to 10 % jitter, so that connections opened together do
/// not re-authenticate together (the same window as Kafka's Java client).
const REAUTH_AT: f64 = 0.85;
const REAUTH_JITTER: f64 = 0.10;

/// Bounds on the wait before re-authenticating, whatever lifetime the
/// broker announces: the floor keeps a tiny lifetime from turning into a
/// re-authentication loop that starves requests, the cap keeps time
/// arithmetic on a huge one from overflowing.
const MIN_REAUTH_DELAY: Duration = Duration::from_millis(100);
const MAX_REAUTH_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest sleep of the re-authentication task between checks that its
/// connection still exists, so a dropped connection's task ends soon.
const REAUTH_POLL: Duration = Duration::from_secs(30);

/// A successful authentication.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    /// When the last SaslAuthenticate request went out: the broker's
    /// session clock starts after that, so counting from it is safe.
    sent_at: Instant,
    /// The session lifetime the broker announced (SaslAuthenticate v1+),
    /// `None` if it did not.
    lifetime: Option<Duration>,
}

fn auth_error(
    conn: &BrokerConnection,
    mechanism: &str,
    code: Option<ErrorCode>,
    message: impl Into<String>,
) -> ConnectionError {
    ConnectionError::Authentication {
        addr: conn.addr().to_string(),
        mechanism: mechanism.to_string(),
        code,
        message: message.into(),
    }
}

/// Runs one SASL exchange on `conn`: SaslHandshake v1, then SaslAuthenticate
/// until the mechanism is done. Requests bypass the re-authentication gate,
/// so this works while the gate is held.
pub(crate) async fn authenticate(
    conn: &BrokerConnection,
    config: &SaslConfig,
) -> Result<Session, ConnectionError> {
    let name = config.mechanism();
    // SaslHandshake v0 switches the connection to unframed SASL tokens;
    // v1 (Kafka 1.0+) keeps Kafka framing, which this client requires.
    let handshake_version = conn
        .version_for(ApiKey::SASL_HANDSHAKE)
        .filter(|&v| v >= 1)
        .ok_or_else(|| {
            auth_error(
                conn,
                name,
                None,
                "the broker does not offer SaslHandshake v1 (Kafka 1.0 or newer is needed)",
            )
        })?;
    let authenticate_version = conn.version_for(ApiKey::SASL_AUTHENTICATE).ok_or_else(|| {
        auth_error(
            conn,
            name,
            None,
            "the broker does not offer SaslAuthenticate",
        )
    })?;
    let handshake = SaslHandshakeRequest {
        mechanism: name.to_string(),
    };
    let resp = conn.request_ungated(&handshake, handshake_version).await?;
    match ErrorCode(resp.error_code) {
        ErrorCode::NONE => {}
        code @ ErrorCode::UNSUPPORTED_SASL_MECHANISM => {
            return Err(auth_error(
                conn,
                name,
                Some(code),
                format!(
                    "the broker does not enable {name}; it enables {:?}",
                    resp.mechanisms
                ),
            ))
        }
        code @ ErrorCode::ILLEGAL_SASL_STATE => {
            return Err(auth_error(
                conn,
                name,
                Some(code),
                "the broker did not expect a SASL handshake: is this a SASL listener?",
            ))
        }
        code => return Err(auth_error(conn, name, Some(code), "SaslHandshake failed")),
    }

    let mut mechanism = config
        .start()
        .await
        .map_err(|e| auth_error(conn, name, None, e.to_string()))?;
    let mut out = mechanism
        .initial_response()
        .map_err(|e| auth_error(conn, name, None, e.to_string()))?;
    for _ in 0..MAX_ROUNDS {
        let sent_at = Instant::now();
        let req = SaslAuthenticateRequest {
            auth_bytes: out.into(),
            ..Default::default()
        };
        let resp = conn.request_ungated(&req, authenticate_version).await?;
        if resp.error_code != 0 {
            let code = ErrorCode(resp.error_code);
            let mut message = resp
                .error_message
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| code.to_string());
            if let Some(detail) = mechanism.failure_detail() {
                message = format!("{message} ({detail})");
            }
            return Err(auth_error(conn, name, Some(code), message));
        }
        match mechanism
            .handle_challenge(&resp.auth_bytes)
            .map_err(|e| auth_error(conn, name, None, e.to_string()))?
        {
            Step::Respond(next) => out = next,
            Step::Done => {
                let lifetime = u64::try_from(resp.session_lifetime_ms)
                    .ok()
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
                tracing::debug!(broker = %conn.addr(), mechanism = name, ?lifetime, "SASL authenticated");
                return Ok(Session { sent_at, lifetime });
            }
        }
    }
    Err(auth_error(
        conn,
        name,
        None,
        format!("the exchange did not finish within {MAX_ROUNDS} rounds"),
    ))
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

/// When to start re-authenticating a session: 85–95 % into its lifetime.
fn reauth_at(session: &Session, lifetime: Duration) -> Instant {
    let share = REAUTH_AT + rand::rng().random::<f64>() * REAUTH_JITTER;
    let delay = lifetime
        .min(MAX_REAUTH_DELAY)
        .mul_f64(share)
        .max(MIN_REAUTH_DELAY);
    session.sent_at + delay
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
    while let Some(lifetime) = session.lifetime {
        let at = reauth_at(&session, lifetime);
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

    #[test]
    fn reauth_falls_in_the_window() {
        let s = Session {
            sent_at: Instant::now(),
            lifetime: Some(Duration::from_secs(100)),
        };
        for _ in 0..200 {
            let at = reauth_at(&s, Duration::from_secs(100)) - s.sent_at;
            assert!(
                at >= Duration::from_secs(85) && at <= Duration::from_secs(95),
                "{at:?}"
            );
        }
        // Whatever the broker announces: no overflow, no busy loop.
        let huge = Duration::from_millis(i64::MAX as u64);
        assert!(reauth_at(&s, huge) - s.sent_at <= MAX_REAUTH_DELAY);
        assert_eq!(
            reauth_at(&s, Duration::from_millis(1)) - s.sent_at,
            MIN_REAUTH_DELAY
        );
    }
}
