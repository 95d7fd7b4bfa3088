//! The TCP stream under every transport, and the stream halves every
//! transport hands to the connection driver. Below `transport.rs`, `tls.rs`
//! and `socks5.rs`, which all connect through it.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::{timeout_at, Instant},
};

use super::ConnectionError;

/// The read half of a broker stream.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a broker stream.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

fn connect_error(addr: &str, reason: impl std::fmt::Display) -> ConnectionError {
    ConnectionError::Connect {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
}

/// Resolves `addr` (`host:port`, `[v6]:port`) and connects to the first
/// address that accepts, all within `timeout`.
pub(crate) async fn tcp_connect(
    addr: &str,
    timeout: Duration,
) -> Result<TcpStream, ConnectionError> {
    let deadline = Instant::now() + timeout;
    let resolved = match timeout_at(deadline, tokio::net::lookup_host(addr)).await {
        Ok(Ok(it)) => it.collect::<Vec<_>>(),
        Ok(Err(e)) => {
            return Err(ConnectionError::Resolve {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
        }
        Err(_) => {
            return Err(connect_error(
                addr,
                format!("resolving timed out after {timeout:?}"),
            ))
        }
    };
    let mut last = String::from("the name resolved to no address");
    for sa in resolved {
        match timeout_at(deadline, TcpStream::connect(sa)).await {
            Ok(Ok(stream)) => {
                // Requests are framed and written whole; Nagle only adds latency.
                stream
                    .set_nodelay(true)
                    .map_err(|e| connect_error(addr, format!("TCP_NODELAY: {e}")))?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = format!("{sa}: {e}"),
            Err(_) => {
                return Err(connect_error(
                    addr,
                    format!("{sa}: connect timed out after {timeout:?}"),
                ))
            }
        }
    }
    Err(connect_error(addr, last))
}
