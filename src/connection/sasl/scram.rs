//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka
//! speaks them: no channel binding (`n,,`), usernames escaped but not
//! otherwise normalised, passwords used as their UTF-8 bytes.
//!
//! The client checks what a server could get wrong or fake: the server
//! nonce must extend the client's, the iteration count must be in
//! [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`], and the server signature in
//! the final message must prove that the server knows the credential.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

use super::{Mechanism, SaslError, Step};

/// Fewest PBKDF2 iterations accepted from a server. RFC 7677 asks for at
/// least 4096, and Kafka refuses to store SCRAM credentials with fewer, so a
/// smaller count means a server trying to make the proof cheap to attack.
pub const MIN_ITERATIONS: u32 = 4096;

/// Most PBKDF2 iterations accepted from a server. Kafka stores at most
/// 16384; four times that leaves room for other servers while bounding the
/// CPU a hostile server can make the client burn (tens of milliseconds).
pub const MAX_ITERATIONS: u32 = 65_536;

/// Random bytes in a client nonce (base64-encoded to 32 characters).
const NONCE_BYTES: usize = 24;

/// `base64("n,,")`: the GS2 header of a client without channel binding.
const CHANNEL_BINDING: &str = "biws";

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, SaslError> {
        Ok(match self {
            Self::Sha256 => hmac_of::<Hmac<Sha256>>(key, data)?,
            Self::Sha512 => hmac_of::<Hmac<Sha512>>(key, data)?,
        })
    }

    /// Checks `expected` against the HMAC in constant time.
    fn verify_hmac(self, key: &[u8], data: &[u8], expected: &[u8]) -> Result<bool, SaslError> {
        Ok(match self {
            Self::Sha256 => keyed::<Hmac<Sha256>>(key)?
                .chain_update(data)
                .verify_slice(expected)
                .is_ok(),
            Self::Sha512 => keyed::<Hmac<Sha512>>(key)?
                .chain_update(data)
                .verify_slice(expected)
                .is_ok(),
        })
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi()` of RFC 5802: PBKDF2 with this hash's HMAC. Also what the
    /// admin client sends brokers to store a credential.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Self::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> Result<M, SaslError> {
    // HMAC takes keys of any length; the error exists only in the trait.
    <M as Mac>::new_from_slice(key)
        .map_err(|_| SaslError::InvalidInput("HMAC key rejected".to_string()))
}

fn hmac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, SaslError> {
    Ok(keyed::<M>(key)?
        .chain_update(data)
        .finalize()
        .into_bytes()
        .to_vec())
}

/// Escapes a username for the `n=` attribute: `=` and `,` are the only
/// characters SCRAM reserves (Kafka applies no further SASLprep).
pub fn escape_username(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
enum State {
    Initial,
    /// The client-first message went out; waiting for the server-first one.
    SentFirst {
        client_first_bare: String,
    },
    /// The proof went out; waiting for the server signature.
    SentFinal {
        server_key: Vec<u8>,
        auth_message: String,
    },
    Done,
    Failed,
}

/// A SCRAM exchange: client-first, server-first, client-final (the proof),
/// server-final (the server's signature, verified).
pub struct Scram {
    hash: ScramHash,
    username: String,
    password: String,
    nonce: String,
    state: State,
}

impl std::fmt::Debug for Scram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scram")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Scram {
    /// A SCRAM exchange for `username` and `password` with a fresh random
    /// client nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Result<Self, SaslError> {
        let mut raw = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut raw);
        // URL-safe base64 has neither ',' nor '=' padding at this length,
        // so the nonce is a valid SCRAM printable string.
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        Self::with_nonce(hash, username, password, nonce)
    }

    /// Like [`Scram::new`] with a given client nonce (test vectors).
    pub(super) fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: String,
    ) -> Result<Self, SaslError> {
        if username.is_empty() {
            return Err(SaslError::InvalidInput("SCRAM username is empty".into()));
        }
        if password.is_empty() {
            return Err(SaslError::InvalidInput("SCRAM password is empty".into()));
        }
        Ok(Self {
            hash,
            username: username.to_string(),
            password: password.to_string(),
            nonce,
            state: State::Initial,
        })
    }

    fn server_first(&mut self, client_first_bare: &str, msg: &str) -> Result<Step, SaslError> {
        let attrs = Attributes::parse(msg)?;
        if let Some(e) = attrs.get('e') {
            return Err(SaslError::ServerError(e.to_string()));
        }
        if let Some(m) = attrs.get('m') {
            return Err(SaslError::MalformedServerMessage(format!(
                "mandatory extension m={m} is not supported"
            )));
        }
        let nonce = attrs.require('r')?;
        // A server nonce that does not extend ours could be a replay.
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::ServerNonceMismatch);
        }
        let salt = STANDARD
            .decode(attrs.require('s')?)
            .map_err(|e| SaslError::MalformedServerMessage(format!("salt is not base64: {e}")))?;
        if salt.is_empty() {
            return Err(SaslError::MalformedServerMessage("empty salt".into()));
        }
        let raw_iterations = attrs.require('i')?;
        let iterations: u32 = raw_iterations.parse().map_err(|_| {
            SaslError::MalformedServerMessage(format!("iteration count {raw_iterations:?}"))
        })?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::IterationCount {
                count: iterations,
                min: MIN_ITERATIONS,
                max: MAX_ITERATIONS,
            });
        }

        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key")?;
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c={CHANNEL_BINDING},r={nonce}");
        let auth_message = format!("{client_first_bare},{msg},{without_proof}");
        let signature = h.hmac(&stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key")?;
        self.state = State::SentFinal {
            server_key,
            auth_message,
        };
        Ok(Step::Respond(
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
        ))
    }

    fn server_final(
        &self,
        server_key: &[u8],
        auth_message: &str,
        msg: &str,
    ) -> Result<Step, SaslError> {
        let attrs = Attributes::parse(msg)?;
        if let Some(e) = attrs.get('e') {
            return Err(SaslError::ServerError(e.to_string()));
        }
        let v = STANDARD.decode(attrs.require('v')?).map_err(|e| {
            SaslError::MalformedServerMessage(format!("server signature is not base64: {e}"))
        })?;
        if self
            .hash
            .verify_hmac(server_key, auth_message.as_bytes(), &v)?
        {
            Ok(Step::Done)
        } else {
            Err(SaslError::ServerSignatureMismatch)
        }
    }
}

impl Mechanism for Scram {
    fn name(&self) -> &'static str {
        self.hash.mechanism()
    }

    fn initial_response(&mut self) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, State::Initial) {
            return Err(SaslError::OutOfOrder("SCRAM client-first requested twice"));
        }
        let bare = format!("n={},r={}", escape_username(&self.username), self.nonce);
        let msg = format!("n,,{bare}").into_bytes();
        self.state = State::SentFirst {
            client_first_bare: bare,
        };
        Ok(msg)
    }

    fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let msg = std::str::from_utf8(challenge)
            .map_err(|_| SaslError::MalformedServerMessage("not UTF-8".into()))?;
        let step = match &state {
            State::SentFirst { client_first_bare } => self.server_first(client_first_bare, msg)?,
            State::SentFinal {
                server_key,
                auth_message,
            } => {
                let step = self.server_final(server_key, auth_message, msg)?;
                self.state = State::Done;
                step
            }
            State::Initial | State::Done | State::Failed => {
                return Err(SaslError::OutOfOrder(
                    "SCRAM got a server message out of turn",
                ))
            }
        };
        Ok(step)
    }
}

/// The `x=value` attributes of a SCRAM message, in order.
struct Attributes<'a>(Vec<(char, &'a str)>);

impl<'a> Attributes<'a> {
    fn parse(msg: &'a str) -> Result<Self, SaslError> {
        let mut out = Vec::new();
        for part in msg.split(',') {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => out.push((k, chars.as_str())),
                _ => {
                    return Err(SaslError::MalformedServerMessage(format!(
                        "bad attribute {part:?}"
                    )))
                }
            }
        }
        Ok(Self(out))
    }

    fn get(&self, key: char) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn require(&self, key: char) -> Result<&'a str, SaslError> {
        self.get(key)
            .ok_or_else(|| SaslError::MalformedServerMessage(format!("missing attribute {key}=")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(step: Step) -> String {
        match step {
            Step::Respond(b) => String::from_utf8(b).unwrap(),
            Step::Done => panic!("expected a response"),
        }
    }

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_vector() {
        let mut s = Scram::with_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        )
        .unwrap();
        assert_eq!(
            s.initial_response().unwrap(),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
        );
        let final_msg = respond(
            s.handle_challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap(),
        );
        assert_eq!(
            final_msg,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(matches!(
            s.handle_challenge(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap(),
            Step::Done
        ));
    }

    /// SHA-512 values computed independently with Python's hashlib/hmac;
    /// the username exercises the `=` and `,` escapes, the password UTF-8.
    #[test]
    fn sha512_with_escaped_username() {
        let mut s = Scram::with_nonce(
            ScramHash::Sha512,
            "al=ice,",
            "s3cr\u{e9}t",
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        )
        .unwrap();
        assert_eq!(
            s.initial_response().unwrap(),
            b"n,,n=al=3Dice=2C,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let final_msg = respond(
            s.handle_challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=c2FsdC1vZi1zaXh0ZWVuIQ==,i=4096",
            )
            .unwrap(),
        );
        assert_eq!(
            final_msg,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=kbvuEkotDVPpiC/qG35U+Nm8KQl9VGCCd+IBXCHM+7/7tCKrEwdsfkLIsLgYiWCkWiNznPaP043Qt9EBeb+o8w=="
        );
        assert!(matches!(
            s.handle_challenge(b"v=vGZxpz0XXAxqitYO6H3HRhNqMNBiv9fmBhZi4LQZOpg8n7s1toyc4+u3+M7rWeFCAaylc6geTJu0Exq146E9Yw==").unwrap(),
            Step::Done
        ));
    }

    fn started(nonce: &str) -> Scram {
        let mut s = Scram::with_nonce(ScramHash::Sha256, "user", "pencil", nonce.into()).unwrap();
        s.initial_response().unwrap();
        s
    }

    #[test]
    fn wrong_server_signature_is_rejected() {
        let mut s = started("abc");
        respond(
            s.handle_challenge(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                .unwrap(),
        );
        // The RFC's signature belongs to another exchange.
        assert!(matches!(
            s.handle_challenge(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerSignatureMismatch)
        ));
        let mut s = started("abc");
        respond(
            s.handle_challenge(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                .unwrap(),
        );
        assert!(matches!(
            s.handle_challenge(b"v=AAAA"),
            Err(SaslError::ServerSignatureMismatch)
        ));
    }

    #[test]
    fn server_nonce_must_extend_the_client_nonce() {
        for bad in [
            &b"r=xyzdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..],
            b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=ab,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let mut s = started("abc");
            assert!(
                matches!(s.handle_challenge(bad), Err(SaslError::ServerNonceMismatch)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn iteration_count_is_bounded() {
        for (i, ok) in [
            (0u64, false),
            (1, false),
            (4095, false),
            (4096, true),
            (65_536, true),
            (65_537, false),
            (10_000_000, false),
        ] {
            let mut s = started("abc");
            let msg = format!("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
            let r = s.handle_challenge(msg.as_bytes());
            assert_eq!(r.is_ok(), ok, "i={i}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(SaslError::IterationCount { .. })), "{r:?}");
            }
        }
        let mut s = started("abc");
        assert!(matches!(
            s.handle_challenge(b"r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999"),
            Err(SaslError::MalformedServerMessage(_))
        ));
    }

    #[test]
    fn malformed_and_error_messages() {
        for bad in [
            &b"r=abcd,i=4096"[..],
            b"r=abcd,s=!!!,i=4096",
            b"r=abcd,s=,i=4096",
            b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"garbage",
            b"",
            b"\xff\xfe",
            b"m=ext,r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let mut s = started("abc");
            assert!(
                matches!(
                    s.handle_challenge(bad),
                    Err(SaslError::MalformedServerMessage(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = started("abc");
        assert!(
            matches!(s.handle_challenge(b"e=unknown-user"), Err(SaslError::ServerError(e)) if e == "unknown-user")
        );
        let mut s = started("abc");
        respond(
            s.handle_challenge(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                .unwrap(),
        );
        assert!(
            matches!(s.handle_challenge(b"e=invalid-proof"), Err(SaslError::ServerError(e)) if e == "invalid-proof")
        );
        // After a failure the exchange is over.
        assert!(matches!(
            s.handle_challenge(b"v=AAAA"),
            Err(SaslError::OutOfOrder(_))
        ));
    }

    #[test]
    fn random_nonces_differ_and_are_printable() {
        let mut a = Scram::new(ScramHash::Sha512, "u", "p").unwrap();
        let mut b = Scram::new(ScramHash::Sha512, "u", "p").unwrap();
        let (a, b) = (a.initial_response().unwrap(), b.initial_response().unwrap());
        assert_ne!(a, b);
        let a = String::from_utf8(a).unwrap();
        let nonce = a.strip_prefix("n,,n=u,r=").unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(nonce.bytes().all(|c| c.is_ascii_graphic() && c != b','));
    }

    #[test]
    fn escape() {
        assert_eq!(escape_username("a=b,c"), "a=3Db=2Cc");
        assert_eq!(escape_username("plain"), "plain");
    }
}
