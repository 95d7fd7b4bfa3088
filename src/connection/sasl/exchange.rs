//! The SASL exchange on one connection as a state machine without I/O:
//! which SaslHandshake version to use, what the broker's answers mean,
//! when the exchange is complete, and when its session must be renewed.
//! The driver in `mod.rs` sends what this asks for and feeds back the
//! answers.

use std::time::Duration;

use tokio::time::Instant;

use super::{Mechanism, SaslError, Step};
use crate::protocol::{
    messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    },
    ErrorCode,
};

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

/// Why the exchange failed; the driver adds the broker and the mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The broker's error code, `None` if the client found the failure.
    pub(crate) code: Option<ErrorCode>,
    /// The broker's or the client's explanation.
    pub(crate) message: String,
}

impl Failure {
    fn client(message: impl Into<String>) -> Self {
        Self {
            code: None,
            message: message.into(),
        }
    }

    fn broker(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            message: message.into(),
        }
    }
}

impl From<SaslError> for Failure {
    fn from(e: SaslError) -> Self {
        Self::client(e.to_string())
    }
}

/// A successful authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    /// When the last SaslAuthenticate request went out: the broker's
    /// session clock starts after that, so counting from it is safe.
    pub(crate) sent_at: Instant,
    /// The session lifetime the broker announced (SaslAuthenticate v1+),
    /// `None` if it did not.
    pub(crate) lifetime: Option<Duration>,
}

impl Session {
    /// When to start re-authenticating: 85–95 % into the session's
    /// lifetime, placed in that window by `jitter` (in `0.0..1.0`); `None`
    /// if the session does not expire.
    pub(crate) fn reauth_at(&self, jitter: f64) -> Option<Instant> {
        let lifetime = self.lifetime?;
        let share = REAUTH_AT + jitter.clamp(0.0, 1.0) * REAUTH_JITTER;
        let delay = lifetime
            .min(MAX_REAUTH_DELAY)
            .mul_f64(share)
            .max(MIN_REAUTH_DELAY);
        Some(self.sent_at + delay)
    }
}

/// What to do after a SaslAuthenticate response.
#[derive(Debug)]
pub(crate) enum Next {
    /// Send this SaslAuthenticate request.
    Send(SaslAuthenticateRequest),
    /// Authenticated.
    Done(Session),
}

/// One exchange: [`Exchange::new`] gives the SaslHandshake request,
/// [`Exchange::on_handshake`] takes its answer, [`Exchange::start`] the
/// mechanism and gives the first SaslAuthenticate request, and
/// [`Exchange::on_authenticate`] takes each answer until [`Next::Done`].
#[derive(Debug)]
pub(crate) struct Exchange {
    name: &'static str,
    handshake_version: i16,
    authenticate_version: i16,
    mechanism: Option<Box<dyn Mechanism>>,
    rounds: usize,
}

impl Exchange {
    /// An exchange for mechanism `name`, given the highest SaslHandshake
    /// and SaslAuthenticate versions the connection can use.
    pub(crate) fn new(
        name: &'static str,
        handshake_version: Option<i16>,
        authenticate_version: Option<i16>,
    ) -> Result<Self, Failure> {
        // SaslHandshake v0 switches the connection to unframed SASL tokens;
        // v1 (Kafka 1.0+) keeps Kafka framing, which this client requires.
        let handshake_version = handshake_version.filter(|&v| v >= 1).ok_or_else(|| {
            Failure::client(
                "the broker does not offer SaslHandshake v1 (Kafka 1.0 or newer is needed)",
            )
        })?;
        let authenticate_version = authenticate_version
            .ok_or_else(|| Failure::client("the broker does not offer SaslAuthenticate"))?;
        Ok(Self {
            name,
            handshake_version,
            authenticate_version,
            mechanism: None,
            rounds: 0,
        })
    }

    /// The SaslHandshake request and its version.
    pub(crate) fn handshake(&self) -> (SaslHandshakeRequest, i16) {
        let req = SaslHandshakeRequest {
            mechanism: self.name.to_string(),
        };
        (req, self.handshake_version)
    }

    /// The version of every SaslAuthenticate request.
    pub(crate) fn authenticate_version(&self) -> i16 {
        self.authenticate_version
    }

    /// Takes the SaslHandshake answer: the broker accepted the mechanism,
    /// or why not.
    pub(crate) fn on_handshake(&self, resp: &SaslHandshakeResponse) -> Result<(), Failure> {
        let name = self.name;
        match ErrorCode(resp.error_code) {
            ErrorCode::NONE => Ok(()),
            code @ ErrorCode::UNSUPPORTED_SASL_MECHANISM => Err(Failure::broker(
                code,
                format!(
                    "the broker does not enable {name}; it enables {:?}",
                    resp.mechanisms
                ),
            )),
            code @ ErrorCode::ILLEGAL_SASL_STATE => Err(Failure::broker(
                code,
                "the broker did not expect a SASL handshake: is this a SASL listener?",
            )),
            code => Err(Failure::broker(code, "SaslHandshake failed")),
        }
    }

    /// Takes the mechanism (or why it could not be started) once the
    /// handshake succeeded; gives the first SaslAuthenticate request.
    pub(crate) fn start(
        &mut self,
        mechanism: Result<Box<dyn Mechanism>, SaslError>,
    ) -> Result<SaslAuthenticateRequest, Failure> {
        let mut mechanism = mechanism?;
        let first = mechanism.initial_response()?;
        self.mechanism = Some(mechanism);
        Ok(authenticate_request(first))
    }

    /// Takes a SaslAuthenticate answer to the request sent at `sent_at`.
    pub(crate) fn on_authenticate(
        &mut self,
        resp: SaslAuthenticateResponse,
        sent_at: Instant,
    ) -> Result<Next, Failure> {
        let mechanism = self.mechanism.as_mut().ok_or_else(|| {
            Failure::from(SaslError::OutOfOrder(
                "SaslAuthenticate answer before the mechanism started",
            ))
        })?;
        self.rounds += 1;
        if resp.error_code != 0 {
            let code = ErrorCode(resp.error_code);
            let mut message = resp
                .error_message
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| code.to_string());
            if let Some(detail) = mechanism.failure_detail() {
                message = format!("{message} ({detail})");
            }
            return Err(Failure::broker(code, message));
        }
        match mechanism.handle_challenge(&resp.auth_bytes)? {
            Step::Respond(_) if self.rounds >= MAX_ROUNDS => Err(Failure::client(format!(
                "the exchange did not finish within {MAX_ROUNDS} rounds"
            ))),
            Step::Respond(next) => Ok(Next::Send(authenticate_request(next))),
            Step::Done => {
                let lifetime = u64::try_from(resp.session_lifetime_ms)
                    .ok()
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
                Ok(Next::Done(Session { sent_at, lifetime }))
            }
        }
    }
}

fn authenticate_request(auth_bytes: Vec<u8>) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest {
        auth_bytes: auth_bytes.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::sasl::{Plain, Scram, ScramHash};

    fn exchange(name: &'static str) -> Exchange {
        let x = Exchange::new(name, Some(1), Some(2)).unwrap();
        x.on_handshake(&SaslHandshakeResponse::default()).unwrap();
        x
    }

    fn answer(bytes: &[u8]) -> SaslAuthenticateResponse {
        SaslAuthenticateResponse {
            auth_bytes: bytes.to_vec().into(),
            ..Default::default()
        }
    }

    fn sent(next: Next) -> Vec<u8> {
        match next {
            Next::Send(req) => req.auth_bytes.to_vec(),
            Next::Done(s) => panic!("expected a request, got {s:?}"),
        }
    }

    #[test]
    fn versions_the_exchange_needs() {
        let x = Exchange::new("PLAIN", Some(1), Some(2)).unwrap();
        let (req, version) = x.handshake();
        assert_eq!((req.mechanism.as_str(), version), ("PLAIN", 1));
        assert_eq!(x.authenticate_version(), 2);
        assert_eq!(
            Exchange::new("PLAIN", Some(0), Some(2)).unwrap_err(),
            Failure::client(
                "the broker does not offer SaslHandshake v1 (Kafka 1.0 or newer is needed)"
            )
        );
        assert_eq!(
            Exchange::new("PLAIN", Some(1), None).unwrap_err(),
            Failure::client("the broker does not offer SaslAuthenticate")
        );
    }

    #[test]
    fn handshake_errors_say_what_the_broker_meant() {
        let x = Exchange::new("SCRAM-SHA-512", Some(1), Some(2)).unwrap();
        let refused = SaslHandshakeResponse {
            error_code: ErrorCode::UNSUPPORTED_SASL_MECHANISM.0,
            mechanisms: vec!["PLAIN".into()],
        };
        assert_eq!(
            x.on_handshake(&refused).unwrap_err(),
            Failure::broker(
                ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                "the broker does not enable SCRAM-SHA-512; it enables [\"PLAIN\"]"
            )
        );
        let not_sasl = SaslHandshakeResponse {
            error_code: ErrorCode::ILLEGAL_SASL_STATE.0,
            ..Default::default()
        };
        assert_eq!(
            x.on_handshake(&not_sasl).unwrap_err().message,
            "the broker did not expect a SASL handshake: is this a SASL listener?"
        );
        let other = SaslHandshakeResponse {
            error_code: ErrorCode::UNKNOWN_SERVER_ERROR.0,
            ..Default::default()
        };
        assert_eq!(
            x.on_handshake(&other).unwrap_err(),
            Failure::broker(ErrorCode::UNKNOWN_SERVER_ERROR, "SaslHandshake failed")
        );
    }

    #[test]
    fn plain_succeeds_in_one_round_with_the_announced_lifetime() {
        let mut x = exchange("PLAIN");
        let first = x
            .start(Ok(Box::new(Plain::new("alice", "alice-secret").unwrap())))
            .unwrap();
        assert_eq!(&first.auth_bytes[..], b"\0alice\0alice-secret");
        let at = Instant::now();
        let done = x
            .on_authenticate(
                SaslAuthenticateResponse {
                    session_lifetime_ms: 60_000,
                    ..Default::default()
                },
                at,
            )
            .unwrap();
        assert!(matches!(
            done,
            Next::Done(Session { sent_at, lifetime: Some(l) })
                if sent_at == at && l == Duration::from_secs(60)
        ));
        // No lifetime (v0, or 0 from the broker): the session does not expire.
        let mut x = exchange("PLAIN");
        x.start(Ok(Box::new(Plain::new("alice", "pw").unwrap())))
            .unwrap();
        assert!(matches!(
            x.on_authenticate(answer(b""), at).unwrap(),
            Next::Done(Session { lifetime: None, .. })
        ));
    }

    /// RFC 7677's SCRAM-SHA-256 vector through the exchange: two rounds.
    #[test]
    fn scram_takes_two_rounds() {
        let mut x = exchange("SCRAM-SHA-256");
        let scram = Scram::with_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        )
        .unwrap();
        let first = x.start(Ok(Box::new(scram))).unwrap();
        assert_eq!(&first.auth_bytes[..], b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let now = Instant::now();
        let second = sent(
            x.on_authenticate(
                answer(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
                now,
            )
            .unwrap(),
        );
        assert_eq!(
            second,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let later = now + Duration::from_millis(5);
        let done = x
            .on_authenticate(
                answer(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
                later,
            )
            .unwrap();
        // The session counts from the last request, not the first.
        assert!(matches!(done, Next::Done(s) if s.sent_at == later));
    }

    #[test]
    fn a_failed_mechanism_is_reported_by_the_client() {
        let mut x = exchange("SCRAM-SHA-256");
        let scram = Scram::with_nonce(ScramHash::Sha256, "user", "pencil", "abc".into()).unwrap();
        x.start(Ok(Box::new(scram))).unwrap();
        let err = x
            .on_authenticate(answer(b"r=xyz,s=c2FsdA==,i=4096"), Instant::now())
            .unwrap_err();
        assert_eq!(err, Failure::from(SaslError::ServerNonceMismatch));
        // A mechanism that cannot start (OAUTHBEARER without a token).
        let mut x = exchange("OAUTHBEARER");
        assert_eq!(
            x.start(Err(SaslError::Token("idp down".into())))
                .unwrap_err(),
            Failure::client("OAuth token callback failed: idp down")
        );
    }

    #[test]
    fn authentication_failure_carries_the_brokers_message() {
        let failed = |message: Option<&str>| {
            let mut x = exchange("PLAIN");
            x.start(Ok(Box::new(Plain::new("alice", "wrong").unwrap())))
                .unwrap();
            x.on_authenticate(
                SaslAuthenticateResponse {
                    error_code: ErrorCode::SASL_AUTHENTICATION_FAILED.0,
                    error_message: message.map(str::to_string),
                    ..Default::default()
                },
                Instant::now(),
            )
            .unwrap_err()
        };
        assert_eq!(
            failed(Some("Authentication failed: Invalid username or password")),
            Failure::broker(
                ErrorCode::SASL_AUTHENTICATION_FAILED,
                "Authentication failed: Invalid username or password"
            )
        );
        // Without a message (or an empty one) the code explains itself.
        let code_text = ErrorCode::SASL_AUTHENTICATION_FAILED.to_string();
        assert_eq!(failed(None).message, code_text);
        assert_eq!(failed(Some("")).message, code_text);
    }

    /// A mechanism that never finishes.
    #[derive(Debug)]
    struct Endless;

    impl Mechanism for Endless {
        fn name(&self) -> &'static str {
            "ENDLESS"
        }
        fn initial_response(&mut self) -> Result<Vec<u8>, SaslError> {
            Ok(b"more".to_vec())
        }
        fn handle_challenge(&mut self, _: &[u8]) -> Result<Step, SaslError> {
            Ok(Step::Respond(b"more".to_vec()))
        }
        fn failure_detail(&self) -> Option<String> {
            Some("detail from the mechanism".into())
        }
    }

    #[test]
    fn rounds_are_bounded_and_failure_detail_is_appended() {
        let mut x = exchange("ENDLESS");
        x.start(Ok(Box::new(Endless))).unwrap();
        for _ in 1..MAX_ROUNDS {
            sent(x.on_authenticate(answer(b""), Instant::now()).unwrap());
        }
        assert_eq!(
            x.on_authenticate(answer(b""), Instant::now()).unwrap_err(),
            Failure::client("the exchange did not finish within 8 rounds")
        );

        let mut x = exchange("ENDLESS");
        x.start(Ok(Box::new(Endless))).unwrap();
        let err = x
            .on_authenticate(
                SaslAuthenticateResponse {
                    error_code: ErrorCode::SASL_AUTHENTICATION_FAILED.0,
                    error_message: Some("rejected".into()),
                    ..Default::default()
                },
                Instant::now(),
            )
            .unwrap_err();
        assert_eq!(err.message, "rejected (detail from the mechanism)");
    }

    #[test]
    fn an_answer_before_the_mechanism_started_is_out_of_order() {
        let mut x = exchange("PLAIN");
        assert_eq!(
            x.on_authenticate(answer(b""), Instant::now()).unwrap_err(),
            Failure::from(SaslError::OutOfOrder(
                "SaslAuthenticate answer before the mechanism started"
            ))
        );
    }

    #[test]
    fn reauth_falls_in_the_window() {
        let s = Session {
            sent_at: Instant::now(),
            lifetime: Some(Duration::from_secs(100)),
        };
        let after = |s: &Session, jitter| s.reauth_at(jitter).unwrap() - s.sent_at;
        assert_eq!(after(&s, 0.0), Duration::from_secs(85));
        assert_eq!(after(&s, 0.5), Duration::from_secs(90));
        // Jitter outside its range stays inside the window.
        assert_eq!(after(&s, 7.0), Duration::from_secs(95));
        assert_eq!(after(&s, -1.0), Duration::from_secs(85));
        // Whatever the broker announces: no overflow, no busy loop.
        let huge = Session {
            lifetime: Some(Duration::from_millis(i64::MAX as u64)),
            ..s
        };
        assert!(after(&huge, 1.0) <= MAX_REAUTH_DELAY);
        let tiny = Session {
            lifetime: Some(Duration::from_millis(1)),
            ..s
        };
        assert_eq!(after(&tiny, 0.5), MIN_REAUTH_DELAY);
        let forever = Session {
            lifetime: None,
            ..s
        };
        assert_eq!(forever.reauth_at(0.5), None);
    }
}
