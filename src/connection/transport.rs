//! Establishing the byte stream to a broker.

#[cfg(all(feature = "transport-tls", feature = "transport-socks5"))]
use tokio::time::Instant;

use super::{
    tcp::{tcp_connect, BoxRead, BoxWrite},
    ConnectionConfig, ConnectionError, Transport,
};

/// Opens the stream `config.transport` asks for and splits it in halves.
pub(crate) async fn connect(
    addr: &str,
    config: &ConnectionConfig,
) -> Result<(BoxRead, BoxWrite), ConnectionError> {
    match &config.transport {
        Transport::Tcp => {
            let (r, w) = tcp_connect(addr, config.connect_timeout)
                .await?
                .into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        #[cfg(feature = "transport-tls")]
        Transport::Tls(tls) => super::tls::connect(addr, tls, config.connect_timeout).await,
        #[cfg(feature = "transport-socks5")]
        Transport::Socks5(proxy) => {
            let (r, w) = super::socks5::connect(addr, proxy, config.connect_timeout)
                .await?
                .into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        #[cfg(all(feature = "transport-tls", feature = "transport-socks5"))]
        Transport::Socks5Tls(proxy, tls) => {
            let deadline = Instant::now() + config.connect_timeout;
            let stream = super::socks5::connect(addr, proxy, config.connect_timeout).await?;
            super::tls::handshake(stream, addr, tls, deadline, config.connect_timeout).await
        }
    }
}
