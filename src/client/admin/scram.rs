//! SCRAM users: describe, upsert and delete credentials.

use std::collections::BTreeMap;

use rand::RngCore;

use super::{check, AdminClient};
use crate::{
    connection::sasl::{ScramHash, MIN_ITERATIONS},
    error::{Error, Result},
    protocol::{
        messages::{
            alter_user_scram_credentials_request::{
                ScramCredentialDeletion, ScramCredentialUpsertion,
            },
            describe_user_scram_credentials_request::UserName,
            AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
        },
        ApiKey, ErrorCode,
    },
};

/// The most PBKDF2 iterations Kafka brokers accept for a credential.
const BROKER_MAX_ITERATIONS: u32 = 16_384;

/// Random bytes of a new credential's salt (as the Java admin client).
const SALT_BYTES: usize = 32;

/// A SCRAM credential a user has, as
/// [`AdminClient::describe_user_scram_credentials`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    /// The mechanism.
    pub mechanism: ScramHash,
    /// The PBKDF2 iterations.
    pub iterations: i32,
}

/// Kafka's number of a SCRAM mechanism.
fn mechanism_wire(m: ScramHash) -> i8 {
    match m {
        ScramHash::Sha256 => 1,
        ScramHash::Sha512 => 2,
    }
}

impl AdminClient {
    /// The SCRAM credentials of `users` (`None`: of every user that has
    /// one). A user named that has none fails with RESOURCE_NOT_FOUND,
    /// naming the user.
    pub async fn describe_user_scram_credentials(
        &self,
        users: Option<&[String]>,
    ) -> Result<BTreeMap<String, Vec<ScramCredentialInfo>>> {
        let req = DescribeUserScramCredentialsRequest {
            users: users.map(|u| {
                u.iter()
                    .map(|name| UserName {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
        let req = &req;
        self.at_any_broker(ApiKey::DESCRIBE_USER_SCRAM_CREDENTIALS, |conn| async move {
            let resp = conn.request(req).await?;
            check(resp.error_code, resp.error_message)?;
            let mut out = BTreeMap::new();
            for r in resp.results {
                check(r.error_code, r.error_message)
                    .map_err(|e| e.with_message(format!("user {}", r.user)))?;
                let infos = r
                    .credential_infos
                    .iter()
                    .filter_map(|c| {
                        // Mechanisms this client cannot name are left out:
                        // it could neither use nor change them.
                        let mechanism = match c.mechanism {
                            1 => ScramHash::Sha256,
                            2 => ScramHash::Sha512,
                            _ => return None,
                        };
                        Some(ScramCredentialInfo {
                            mechanism,
                            iterations: c.iterations,
                        })
                    })
                    .collect();
                out.insert(r.user, infos);
            }
            Ok(out)
        })
        .await
    }

    /// Creates or replaces `user`'s credential for `mechanism`: the
    /// password is salted and hashed here (as the SASL handshake does), only
    /// the salted password goes to the broker. `iterations` must be within
    /// 4096..=16384, what brokers accept. Returns once a describe
    /// shows the credential (or the operation timeout passed).
    pub async fn upsert_scram_credential(
        &self,
        user: &str,
        mechanism: ScramHash,
        iterations: u32,
        password: &str,
    ) -> Result<()> {
        if !(MIN_ITERATIONS..=BROKER_MAX_ITERATIONS).contains(&iterations) {
            return Err(Error::invalid_input(format!(
                "iterations must be within {MIN_ITERATIONS}..={BROKER_MAX_ITERATIONS}, not {iterations}"
            )));
        }
        let mut salt = vec![0u8; SALT_BYTES];
        rand::rng().fill_bytes(&mut salt);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let req = AlterUserScramCredentialsRequest {
            upsertions: vec![ScramCredentialUpsertion {
                name: user.to_owned(),
                mechanism: mechanism_wire(mechanism),
                iterations: i32::try_from(iterations).unwrap_or(i32::MAX),
                salt: salt.into(),
                salted_password: salted.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.alter_scram(user, req, |infos| {
            infos
                .iter()
                .any(|i| i.mechanism == mechanism && u32::try_from(i.iterations) == Ok(iterations))
        })
        .await
    }

    /// Deletes `user`'s credential for `mechanism` (RESOURCE_NOT_FOUND if
    /// it has none). Returns once a describe no longer shows it (or the
    /// operation timeout passed).
    pub async fn delete_scram_credential(&self, user: &str, mechanism: ScramHash) -> Result<()> {
        let req = AlterUserScramCredentialsRequest {
            deletions: vec![ScramCredentialDeletion {
                name: user.to_owned(),
                mechanism: mechanism_wire(mechanism),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.alter_scram(user, req, |infos| {
            !infos.iter().any(|i| i.mechanism == mechanism)
        })
        .await
    }

    /// Sends `req` to the controller, then waits until a describe of `user`
    /// shows credentials for which `visible` holds.
    async fn alter_scram(
        &self,
        user: &str,
        req: AlterUserScramCredentialsRequest,
        visible: impl Fn(&[ScramCredentialInfo]) -> bool,
    ) -> Result<()> {
        let req = &req;
        self.at_controller(ApiKey::ALTER_USER_SCRAM_CREDENTIALS, |conn| async move {
            let resp = conn.request(req).await?;
            for r in resp.results {
                check(r.error_code, r.error_message)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.with_message(format!("user {user}")))?;
        let users = [user.to_owned()];
        let users = &users;
        let visible = &visible;
        self.wait_until_visible(|| async move {
            let described = self.describe_user_scram_credentials(Some(users)).await;
            shown_credentials(described, &users[0]).is_some_and(|infos| visible(&infos))
        })
        .await;
        Ok(())
    }
}

/// The credentials a describe of `user` shows: none for a user without any
/// left (the broker answers RESOURCE_NOT_FOUND); `None` if the describe
/// failed otherwise, so it is not taken as an answer.
fn shown_credentials(
    described: Result<BTreeMap<String, Vec<ScramCredentialInfo>>>,
    user: &str,
) -> Option<Vec<ScramCredentialInfo>> {
    match described {
        Ok(mut m) => Some(m.remove(user).unwrap_or_default()),
        Err(e) if e.error_code() == Some(ErrorCode::RESOURCE_NOT_FOUND) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn a_user_not_found_has_no_credentials_and_other_failures_are_no_answer() {
        let info = ScramCredentialInfo {
            mechanism: ScramHash::Sha256,
            iterations: 4096,
        };
        let described = BTreeMap::from([("u".to_owned(), vec![info])]);
        assert_eq!(
            shown_credentials(Ok(described.clone()), "u"),
            Some(vec![info])
        );
        assert_eq!(shown_credentials(Ok(described), "other"), Some(vec![]));
        let not_found = Error::kafka(ErrorCode::RESOURCE_NOT_FOUND, None);
        assert_eq!(shown_credentials(Err(not_found), "u"), Some(vec![]));
        let timed_out = Error::kafka(ErrorCode::REQUEST_TIMED_OUT, None);
        assert_eq!(shown_credentials(Err(timed_out), "u"), None);
    }
}
