//! The security flags: TLS, SASL and SOCKS5, turned into the library's
//! transport and SASL settings.

use rskafka::{
    client::security::{
        Credentials, OAuthToken, OAuthTokenProvider, SaslConfig, Socks5Config, TlsConfig, Transport,
    },
    client::ClientBuilder,
};

use crate::{CliError, CliResult, GlobalArgs};

/// Applies `--tls`, `--ca-file`, `--cert-file`, `--key-file`,
/// `--sasl-*` and `--socks5` to the client builder.
pub fn apply(g: &GlobalArgs, builder: ClientBuilder) -> CliResult<ClientBuilder> {
    let mut builder = builder.transport(transport(g)?);
    if let Some(sasl) = sasl(g)? {
        builder = builder.sasl(sasl);
    }
    Ok(builder)
}

fn transport(g: &GlobalArgs) -> CliResult<Transport> {
    // A CA or client certificate only makes sense with TLS, so either
    // switches it on.
    let tls = if g.tls || g.ca_file.is_some() || g.cert_file.is_some() {
        let mut b = TlsConfig::builder();
        if let Some(ca) = &g.ca_file {
            b = b.ca_file(ca);
        }
        match (&g.cert_file, &g.key_file) {
            (Some(cert), Some(key)) => b = b.client_cert_files(cert, key),
            (None, None) => {}
            // clap's `requires` already pairs them; kept for clarity.
            _ => return Err(CliError::usage("--cert-file and --key-file go together")),
        }
        Some(
            b.build()
                .map_err(|e| CliError::msg(format!("TLS setup: {e}")))?,
        )
    } else {
        None
    };
    let proxy = g.socks5.as_ref().map(|p| Socks5Config::new(p.clone()));
    Ok(match (proxy, tls) {
        (None, None) => Transport::Tcp,
        (None, Some(tls)) => Transport::Tls(tls),
        (Some(proxy), None) => Transport::Socks5(proxy),
        (Some(proxy), Some(tls)) => Transport::Socks5Tls(proxy, tls),
    })
}

/// The SASL settings; the checks here are usage errors, found before
/// connecting.
fn sasl(g: &GlobalArgs) -> CliResult<Option<SaslConfig>> {
    let Some(mechanism) = &g.sasl_mechanism else {
        if g.sasl_username.is_some() {
            return Err(CliError::usage("--sasl-username needs --sasl-mechanism"));
        }
        if g.sasl_oauthbearer_token_file.is_some() {
            return Err(CliError::usage(
                "--sasl-oauthbearer-token-file needs --sasl-mechanism OAUTHBEARER",
            ));
        }
        return Ok(None);
    };
    if mechanism.eq_ignore_ascii_case("OAUTHBEARER") {
        let path = g.sasl_oauthbearer_token_file.clone().ok_or_else(|| {
            CliError::usage(
                "--sasl-mechanism OAUTHBEARER needs --sasl-oauthbearer-token-file (or, for \
                 unsecured development tokens, -X sasl.mechanism=OAUTHBEARER -X \
                 sasl.oauthbearer.config=principal=NAME -X enable.sasl.oauthbearer.unsecure.jwt=true)",
            )
        })?;
        if g.sasl_username.is_some() {
            return Err(CliError::usage(
                "--sasl-username does not go with OAUTHBEARER (the token names the principal)",
            ));
        }
        // Unreadable now is a usage error; later failures fail the connection.
        read_token(&path).map_err(CliError::usage)?;
        let provider = OAuthTokenProvider::new(move || {
            let path = path.clone();
            async move { read_token(&path).map_err(Into::into) }
        });
        return Ok(Some(SaslConfig::OAuthBearer(provider)));
    }
    if g.sasl_oauthbearer_token_file.is_some() {
        return Err(CliError::usage(format!(
            "--sasl-oauthbearer-token-file does not go with --sasl-mechanism {mechanism}"
        )));
    }
    let username = g.sasl_username.clone().ok_or_else(|| {
        CliError::usage(format!(
            "--sasl-mechanism {mechanism} needs --sasl-username"
        ))
    })?;
    let password = g.sasl_password.as_ref().ok_or_else(|| {
        CliError::usage(format!(
            "--sasl-mechanism {mechanism} needs a password: --sasl-password or $RSKAFKA_SASL_PASSWORD"
        ))
    })?;
    // Every mechanism refuses them; said here rather than by the broker.
    if username.is_empty() {
        return Err(CliError::usage("--sasl-username is empty"));
    }
    if password.expose().is_empty() {
        return Err(CliError::usage(
            "the SASL password (--sasl-password or $RSKAFKA_SASL_PASSWORD) is empty",
        ));
    }
    let credentials = Credentials::new(username, password.expose());
    SaslConfig::from_mechanism_name(mechanism, credentials)
        .map(Some)
        .map_err(|e| CliError::usage(e.to_string()))
}

/// The token in `path`, valid until its JWT `exp` claim, or for an hour
/// when it is not a JWT (the broker bounds the session by the token either
/// way).
fn read_token(path: &std::path::Path) -> Result<OAuthToken, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--sasl-oauthbearer-token-file {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(format!(
            "--sasl-oauthbearer-token-file {}: the file is empty",
            path.display()
        ));
    }
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let lifetime_ms = jwt_exp(&token).map_or(now_ms + 3_600_000, |exp| exp.saturating_mul(1000));
    Ok(OAuthToken {
        token,
        lifetime_ms,
        principal: None,
        extensions: Default::default(),
    })
}

/// The `exp` claim (seconds) of a JWT.
fn jwt_exp(token: &str) -> Option<i64> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?)
            .ok()?;
    claims.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwts_exp_bounds_its_token() {
        // {"alg":"none"} . {"sub":"alice","exp":1700000000} .
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.";
        assert_eq!(jwt_exp(jwt), Some(1_700_000_000));
        assert_eq!(jwt_exp("opaque-token"), None);
    }
}
