//! SASL/PLAIN (RFC 4616): the username and password in one message.
//!
//! The password travels as it is, so PLAIN belongs on TLS connections
//! (`SASL_SSL`) outside of tests.

use super::{Mechanism, SaslError, Step};

/// The PLAIN mechanism: one message `authzid NUL authcid NUL passwd`, with
/// an empty authorization id (Kafka authorizes as the username).
#[derive(Clone)]
pub struct Plain {
    username: String,
    password: String,
    sent: bool,
    done: bool,
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Plain {
    /// A PLAIN exchange for `username` and `password`. Neither may contain a
    /// NUL byte (the field separator) or be empty.
    pub fn new(username: &str, password: &str) -> Result<Self, SaslError> {
        for (what, v) in [("username", username), ("password", password)] {
            if v.is_empty() {
                return Err(SaslError::InvalidInput(format!("PLAIN {what} is empty")));
            }
            if v.contains('\0') {
                return Err(SaslError::InvalidInput(format!(
                    "PLAIN {what} contains a NUL byte"
                )));
            }
        }
        Ok(Self {
            username: username.to_string(),
            password: password.to_string(),
            sent: false,
            done: false,
        })
    }
}

impl Mechanism for Plain {
    fn name(&self) -> &'static str {
        "PLAIN"
    }

    fn initial_response(&mut self) -> Result<Vec<u8>, SaslError> {
        if self.sent {
            return Err(SaslError::OutOfOrder(
                "PLAIN initial response requested twice",
            ));
        }
        self.sent = true;
        let mut msg = Vec::with_capacity(2 + self.username.len() + self.password.len());
        msg.push(0);
        msg.extend_from_slice(self.username.as_bytes());
        msg.push(0);
        msg.extend_from_slice(self.password.as_bytes());
        Ok(msg)
    }

    fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        if !self.sent || self.done {
            return Err(SaslError::OutOfOrder(
                "PLAIN got a server message out of turn",
            ));
        }
        self.done = true;
        // The broker answers success with no bytes; anything else is a
        // server that does not speak PLAIN the way Kafka does.
        if challenge.is_empty() {
            Ok(Step::Done)
        } else {
            Err(SaslError::MalformedServerMessage(format!(
                "PLAIN expects an empty server message, got {} bytes",
                challenge.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_and_completion() {
        let mut p = Plain::new("alice", "alice-secret").unwrap();
        assert_eq!(p.initial_response().unwrap(), b"\0alice\0alice-secret");
        assert!(matches!(p.handle_challenge(b"").unwrap(), Step::Done));
        // Nothing more is expected after success.
        assert!(matches!(
            p.handle_challenge(b""),
            Err(SaslError::OutOfOrder(_))
        ));
    }

    #[test]
    fn rejects_bad_input_and_unexpected_server_bytes() {
        assert!(matches!(
            Plain::new("a\0b", "x"),
            Err(SaslError::InvalidInput(_))
        ));
        assert!(matches!(
            Plain::new("", "x"),
            Err(SaslError::InvalidInput(_))
        ));
        assert!(matches!(
            Plain::new("a", ""),
            Err(SaslError::InvalidInput(_))
        ));
        let mut p = Plain::new("a", "b").unwrap();
        assert!(matches!(
            p.handle_challenge(b""),
            Err(SaslError::OutOfOrder(_))
        ));
        p.initial_response().unwrap();
        assert!(matches!(
            p.handle_challenge(b"surprise"),
            Err(SaslError::MalformedServerMessage(_))
        ));
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Plain::new("alice", "alice-secret").unwrap();
        let s = format!("{p:?}");
        assert!(s.contains("alice") && !s.contains("secret"), "{s}");
    }
}
