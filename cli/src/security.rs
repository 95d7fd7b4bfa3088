//! The security flags: TLS, SASL and SOCKS5, turned into the library's
//! transport and SASL settings.

use rskafka::{
    client::ClientBuilder,
    connection::{
        sasl::{Credentials, SaslConfig},
        Socks5Config, TlsConfig, Transport,
    },
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
        return Ok(None);
    };
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
