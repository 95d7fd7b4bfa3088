//! Reaching brokers through a SOCKS5 proxy (feature `transport-socks5`).
//!
//! The broker's host name goes to the proxy unresolved (address type
//! DOMAINNAME), so brokers learnt from metadata resolve on the proxy's side,
//! where their advertised names mean something. IP literals are sent as IP
//! addresses.

use std::{fmt, net::IpAddr, time::Duration};

use async_socks5::{AddrKind, Auth};
use tokio::{
    net::TcpStream,
    time::{timeout_at, Instant},
};

use super::{tcp::tcp_connect, ConnectionError};

/// A SOCKS5 proxy, optionally with username/password authentication
/// (RFC 1929). `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Socks5Config {
    /// The proxy's `host:port`.
    pub proxy: String,
    /// Username and password, if the proxy wants them.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for Socks5Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socks5Config")
            .field("proxy", &self.proxy)
            .field(
                "username",
                &self.credentials.as_ref().map(|(u, _)| u.as_str()),
            )
            .finish()
    }
}

impl Socks5Config {
    /// A proxy without authentication.
    pub fn new(proxy: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            credentials: None,
        }
    }

    /// The same proxy with username/password authentication.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }
}

/// The SOCKS5 target for `addr` (`host:port` or `[v6]:port`).
fn target(addr: &str) -> Result<AddrKind, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr:?}: bad port {port:?}"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{addr:?}: empty host"));
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => AddrKind::Ip((ip, port).into()),
        Err(_) => AddrKind::Domain(host.to_string(), port),
    })
}

/// Opens a TCP stream to `addr` through the proxy, all within `timeout`.
pub(crate) async fn connect(
    addr: &str,
    config: &Socks5Config,
    timeout: Duration,
) -> Result<TcpStream, ConnectionError> {
    let fail = |reason: String| ConnectionError::Connect {
        addr: addr.to_string(),
        reason: format!("via SOCKS5 proxy {}: {reason}", config.proxy),
    };
    let deadline = Instant::now() + timeout;
    let target = target(addr).map_err(fail)?;
    let mut stream = tcp_connect(&config.proxy, timeout)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let auth = config
        .credentials
        .as_ref()
        .map(|(u, p)| Auth::new(u.as_str(), p.as_str()));
    match timeout_at(deadline, async_socks5::connect(&mut stream, target, auth)).await {
        Ok(Ok(_bound)) => Ok(stream),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("no CONNECT answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target("broker-1.internal:9092").unwrap(),
            AddrKind::Domain("broker-1.internal".into(), 9092)
        );
        assert_eq!(
            target("127.0.0.1:9092").unwrap(),
            AddrKind::Ip("127.0.0.1:9092".parse().unwrap())
        );
        assert_eq!(
            target("[::1]:9092").unwrap(),
            AddrKind::Ip("[::1]:9092".parse().unwrap())
        );
        assert!(target("nohost").is_err());
        assert!(target(":9092").is_err());
        assert!(target("h:99999").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Socks5Config::new("proxy:1080").with_credentials("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
