//! SASL/OAUTHBEARER (RFC 7628) with tokens from an async callback.
//!
//! The client sends its token once. A server that rejects it answers with a
//! JSON error document instead of success; RFC 7628 then wants one `\x01`
//! from the client before the server fails the exchange, which the broker
//! does with SASL_AUTHENTICATION_FAILED.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use futures::future::BoxFuture;

use super::{Mechanism, SaslError, Step};

/// The separator of RFC 7628 key/value pairs (`kvsep`).
const KVSEP: u8 = 0x01;

/// The error type token callbacks return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An OAuth 2 bearer token and what goes with it.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthToken {
    /// The token itself (RFC 6750 `b64token` characters, e.g. a JWT).
    pub token: String,
    /// When the token expires, in milliseconds since the Unix epoch (as
    /// Kafka's `OAuthBearerToken.lifetimeMs`). The broker bounds the session
    /// by it and announces that in the session lifetime, which drives
    /// re-authentication; the client only refuses to send a token that has
    /// already expired.
    pub lifetime_ms: i64,
    /// The principal to authorize as, sent as the GS2 authorization
    /// identity; the broker requires it to match the token's subject.
    /// `None` lets the broker take the principal from the token.
    pub principal: Option<String>,
    /// SASL extensions (KIP-342), e.g. a `logicalCluster` for a multi-tenant
    /// broker. Keys are letters only; `auth` is reserved.
    pub extensions: BTreeMap<String, String>,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthToken")
            .field("token", &"<redacted>")
            .field("lifetime_ms", &self.lifetime_ms)
            .field("principal", &self.principal)
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// The callback that produces a token for each (re-)authentication.
pub type OAuthTokenCallback =
    Arc<dyn Fn() -> BoxFuture<'static, Result<OAuthToken, BoxError>> + Send + Sync>;

/// Where OAUTHBEARER tokens come from: called on every authentication and
/// re-authentication, so it should cache tokens and refresh them before
/// they expire.
#[derive(Clone)]
pub struct OAuthTokenProvider(OAuthTokenCallback);

impl std::fmt::Debug for OAuthTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuthTokenProvider(..)")
    }
}

impl OAuthTokenProvider {
    /// Wraps an async function returning tokens.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<OAuthToken, BoxError>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(f())))
    }

    /// Wraps an already boxed callback.
    pub fn from_callback(callback: OAuthTokenCallback) -> Self {
        Self(callback)
    }

    /// Asks the callback for a token.
    pub async fn token(&self) -> Result<OAuthToken, BoxError> {
        (self.0)().await
    }

    /// Unsigned tokens (JWS `"alg":"none"`) made here for each
    /// authentication, as librdkafka's `enable.sasl.oauthbearer.unsecure.jwt`
    /// makes them: for development brokers that accept them (Kafka's
    /// default OAUTHBEARER validator does), never for production.
    ///
    /// `config` is librdkafka's `sasl.oauthbearer.config`: space-separated
    /// `principal=NAME` (required), `principalClaimName` (`sub`), `scope`
    /// (comma-separated), `scopeClaimName` (`scope`), `lifeSeconds` (3600)
    /// and `extension_NAME=VALUE` (SASL extensions).
    ///
    /// ```
    /// use rskafka::connection::sasl::{OAuthTokenProvider, SaslConfig};
    ///
    /// let provider = OAuthTokenProvider::unsecured_jwt("principal=alice scope=read lifeSeconds=600")?;
    /// let sasl = SaslConfig::OAuthBearer(provider);
    /// # Ok::<(), rskafka::connection::sasl::SaslError>(())
    /// ```
    pub fn unsecured_jwt(config: &str) -> Result<Self, SaslError> {
        let jwt = UnsecuredJwt::parse(config)?;
        Ok(Self::new(move || {
            let jwt = jwt.clone();
            async move { Ok(jwt.token(now_ms())) }
        }))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The claims of [`OAuthTokenProvider::unsecured_jwt`]'s tokens.
#[derive(Debug, Clone, PartialEq)]
struct UnsecuredJwt {
    principal: String,
    principal_claim: String,
    scope: Vec<String>,
    scope_claim: String,
    life_seconds: i64,
    extensions: BTreeMap<String, String>,
}

impl UnsecuredJwt {
    fn parse(config: &str) -> Result<Self, SaslError> {
        let bad = |m: String| SaslError::InvalidInput(format!("sasl.oauthbearer.config: {m}"));
        let mut jwt = Self {
            principal: String::new(),
            principal_claim: "sub".into(),
            scope: Vec::new(),
            scope_claim: "scope".into(),
            life_seconds: 3600,
            extensions: BTreeMap::new(),
        };
        for pair in config.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("{pair:?} is not name=value")))?;
            match k {
                "principal" => jwt.principal = v.to_owned(),
                "principalClaimName" => jwt.principal_claim = v.to_owned(),
                "scope" => {
                    jwt.scope = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "scopeClaimName" => jwt.scope_claim = v.to_owned(),
                "lifeSeconds" => {
                    jwt.life_seconds =
                        v.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            bad(format!("lifeSeconds {v:?} is not a positive number"))
                        })?
                }
                _ => match k.strip_prefix("extension_") {
                    Some(name) => {
                        jwt.extensions.insert(name.to_owned(), v.to_owned());
                    }
                    None => return Err(bad(format!("unknown name {k:?}"))),
                },
            }
        }
        if jwt.principal.is_empty() {
            return Err(bad("principal=NAME is required".into()));
        }
        if jwt.principal_claim.is_empty() || jwt.scope_claim.is_empty() {
            return Err(bad("claim names must not be empty".into()));
        }
        Ok(jwt)
    }

    fn token(&self, now_ms: i64) -> OAuthToken {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let iat = now_ms / 1000;
        let exp = iat.saturating_add(self.life_seconds);
        let mut claims = format!(
            "{{{}:{},\"iat\":{iat},\"exp\":{exp}",
            json_string(&self.principal_claim),
            json_string(&self.principal)
        );
        if !self.scope.is_empty() {
            let scope: Vec<String> = self.scope.iter().map(|s| json_string(s)).collect();
            claims.push_str(&format!(
                ",{}:[{}]",
                json_string(&self.scope_claim),
                scope.join(",")
            ));
        }
        claims.push('}');
        OAuthToken {
            token: format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(claims)
            ),
            lifetime_ms: exp.saturating_mul(1000),
            principal: Some(self.principal.clone()),
            extensions: self.extensions.clone(),
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `s` is an RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." /
/// "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}

/// Escapes a GS2 authorization identity (`=` and `,` are reserved).
fn escape_authzid(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The OAUTHBEARER client message for `token`:
/// `n,[a=authzid],` `\x01auth=Bearer TOKEN\x01` `key=value\x01`... `\x01`.
pub fn initial_response(token: &OAuthToken) -> Result<Vec<u8>, SaslError> {
    if !is_b64token(&token.token) {
        return Err(SaslError::InvalidInput(
            "OAuth token is empty or has characters outside RFC 6750 b64token".into(),
        ));
    }
    let mut msg = Vec::with_capacity(32 + token.token.len());
    msg.extend_from_slice(b"n,");
    if let Some(p) = &token.principal {
        if p.is_empty() || p.bytes().any(|c| c == 0 || c == KVSEP) {
            return Err(SaslError::InvalidInput(
                "OAuth principal is empty or has control characters".into(),
            ));
        }
        msg.extend_from_slice(b"a=");
        msg.extend_from_slice(escape_authzid(p).as_bytes());
    }
    msg.push(b',');
    msg.push(KVSEP);
    msg.extend_from_slice(b"auth=Bearer ");
    msg.extend_from_slice(token.token.as_bytes());
    msg.push(KVSEP);
    for (k, v) in &token.extensions {
        // RFC 7628: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphabetic()) || k == "auth" {
            return Err(SaslError::InvalidInput(format!(
                "SASL extension name {k:?}: letters only, and not \"auth\""
            )));
        }
        if !v
            .bytes()
            .all(|c| c.is_ascii_graphic() || b" \t\r\n".contains(&c))
        {
            return Err(SaslError::InvalidInput(format!(
                "SASL extension {k}: the value has characters RFC 7628 forbids"
            )));
        }
        msg.extend_from_slice(k.as_bytes());
        msg.push(b'=');
        msg.extend_from_slice(v.as_bytes());
        msg.push(KVSEP);
    }
    msg.push(KVSEP);
    Ok(msg)
}

#[derive(Debug)]
enum State {
    Initial(Vec<u8>),
    Sent,
    /// The server sent an error document; `\x01` went out and the exchange
    /// must now fail.
    Rejected(String),
    Finished,
}

/// An OAUTHBEARER exchange for one token.
#[derive(Debug)]
pub struct OAuthBearer {
    state: State,
}

impl OAuthBearer {
    /// An exchange presenting `token`. Fails on an invalid or already
    /// expired token (`now_ms`: the current time in ms since the epoch).
    pub fn new(token: &OAuthToken, now_ms: i64) -> Result<Self, SaslError> {
        if token.lifetime_ms <= now_ms {
            return Err(SaslError::InvalidInput(format!(
                "the OAuth token expired {} ms ago",
                now_ms.saturating_sub(token.lifetime_ms)
            )));
        }
        Ok(Self {
            state: State::Initial(initial_response(token)?),
        })
    }
}

/// The mechanism name.
pub(super) const NAME: &str = "OAUTHBEARER";

impl Mechanism for OAuthBearer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn initial_response(&mut self) -> Result<Vec<u8>, SaslError> {
        match std::mem::replace(&mut self.state, State::Sent) {
            State::Initial(msg) => Ok(msg),
            other => {
                self.state = other;
                Err(SaslError::OutOfOrder(
                    "OAUTHBEARER initial response requested twice",
                ))
            }
        }
    }

    fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Sent if challenge.is_empty() => Ok(Step::Done),
            State::Sent => {
                // The error document (JSON with status, scope,
                // openid-configuration): kept for the final error.
                let doc = String::from_utf8_lossy(challenge).into_owned();
                self.state = State::Rejected(doc);
                Ok(Step::Respond(vec![KVSEP]))
            }
            // The server had rejected the token but then reported success.
            State::Rejected(doc) => Err(SaslError::ServerError(doc)),
            State::Initial(_) | State::Finished => Err(SaslError::OutOfOrder(
                "OAUTHBEARER got a server message out of turn",
            )),
        }
    }

    fn failure_detail(&self) -> Option<String> {
        self.rejection().map(str::to_string)
    }
}

impl OAuthBearer {
    /// The server's error document, if it rejected the token; the broker's
    /// final error message is usually less specific.
    pub fn rejection(&self) -> Option<&str> {
        match &self.state {
            State::Rejected(doc) => Some(doc),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsecured_jwts_carry_librdkafkas_claims() {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let jwt = UnsecuredJwt::parse(
            "principal=al\"ice scope=a,b lifeSeconds=60 principalClaimName=azp extension_traceId=7",
        )
        .unwrap();
        let t = jwt.token(1_000_000);
        let parts: Vec<&str> = t.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "", "unsigned");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"none"}"#
        );
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            r#"{"azp":"al\"ice","iat":1000,"exp":1060,"scope":["a","b"]}"#
        );
        assert_eq!(t.lifetime_ms, 1_060_000);
        assert_eq!(t.principal.as_deref(), Some("al\"ice"));
        assert_eq!(t.extensions.get("traceId").map(String::as_str), Some("7"));
        assert!(is_b64token(&t.token.replace('.', "")));

        for bad in [
            "",
            "scope=a",
            "principal=a lifeSeconds=0",
            "principal=a what=1",
            "principal",
        ] {
            assert!(UnsecuredJwt::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn token(t: &str) -> OAuthToken {
        OAuthToken {
            token: t.into(),
            lifetime_ms: 2_000,
            principal: None,
            extensions: BTreeMap::new(),
        }
    }

    #[test]
    fn message_layout() {
        let mut t = token("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.");
        assert_eq!(
            initial_response(&t).unwrap(),
            b"n,,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.\x01\x01"
        );
        t.principal = Some("al,i=ce".into());
        t.extensions.insert("traceId".into(), "a b".into());
        t.extensions.insert("logicalCluster".into(), "lkc-1".into());
        assert_eq!(
            initial_response(&t).unwrap(),
            b"n,a=al=2Ci=3Dce,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.\x01logicalCluster=lkc-1\x01traceId=a b\x01\x01"
        );
    }

    #[test]
    fn invalid_tokens_and_extensions() {
        for bad in ["", "a b", "a\x01b", "=", "tok=en"] {
            assert!(
                matches!(
                    initial_response(&token(bad)),
                    Err(SaslError::InvalidInput(_))
                ),
                "{bad:?}"
            );
        }
        assert!(initial_response(&token("abc==")).is_ok());
        for (k, v) in [("auth", "x"), ("a1", "x"), ("", "x"), ("ok", "\x01")] {
            let mut t = token("abc");
            t.extensions.insert(k.into(), v.into());
            assert!(
                matches!(initial_response(&t), Err(SaslError::InvalidInput(_))),
                "{k:?}={v:?}"
            );
        }
        assert!(matches!(
            OAuthBearer::new(&token("abc"), 2_000),
            Err(SaslError::InvalidInput(_))
        ));
    }

    #[test]
    fn success_and_rejection() {
        let mut m = OAuthBearer::new(&token("abc"), 1_000).unwrap();
        assert!(m
            .initial_response()
            .unwrap()
            .starts_with(b"n,,\x01auth=Bearer abc"));
        assert!(matches!(m.handle_challenge(b"").unwrap(), Step::Done));
        assert!(matches!(
            m.handle_challenge(b""),
            Err(SaslError::OutOfOrder(_))
        ));

        let mut m = OAuthBearer::new(&token("abc"), 1_000).unwrap();
        m.initial_response().unwrap();
        let doc = br#"{"status":"invalid_token"}"#;
        match m.handle_challenge(doc).unwrap() {
            Step::Respond(b) => assert_eq!(b, [KVSEP]),
            Step::Done => panic!("a rejection is not success"),
        }
        assert_eq!(m.rejection(), Some(r#"{"status":"invalid_token"}"#));
        assert!(
            matches!(m.handle_challenge(b""), Err(SaslError::ServerError(d)) if d.contains("invalid_token"))
        );
    }

    #[tokio::test]
    async fn provider_calls_the_callback() {
        let p = OAuthTokenProvider::new(|| async { Ok(token("abc")) });
        assert_eq!(p.token().await.unwrap().token, "abc");
        let failing =
            OAuthTokenProvider::new(|| async { Err::<OAuthToken, BoxError>("no idp".into()) });
        assert_eq!(failing.token().await.unwrap_err().to_string(), "no idp");
        assert!(!format!("{:?}", token("secret-token")).contains("secret-token"));
    }
}
