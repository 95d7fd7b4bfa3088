//! Consumer tests: the fault proxy used by the reliability test, and the
//! consumer stream against a real broker (`KAFKA_BOOTSTRAP`).

#[path = "common/proxy.rs"]
mod proxy;

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use proxy::FaultProxy;

/// An echo server on a free port; returns its address.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn proxy_forwards_transparently() {
    let upstream = echo_server().await;
    let proxy = FaultProxy::start(any_port(), upstream, None).await.unwrap();
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&payload).await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut got))
            .await
            .expect("echo through the proxy timed out")
            .unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert_eq!(got, payload);
    assert_eq!(proxy.stats().accepted.load(Ordering::Relaxed), 1);
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 0);
    assert_eq!(
        proxy.stats().bytes_up.load(Ordering::Relaxed),
        payload.len() as u64
    );
}

/// Reads until the proxy cuts the connection; returns how long it lived.
async fn lifetime_until_cut(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    loop {
        s.write_all(b"ping").await.ok();
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => panic!("the proxy did not cut the connection within 5 s"),
        }
    }
}

#[tokio::test]
async fn proxy_cuts_connections_within_the_lifetime_range() {
    let upstream = echo_server().await;
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(400));
    let proxy = FaultProxy::start(any_port(), upstream, Some((min, max)))
        .await
        .unwrap();
    for _ in 0..4 {
        let lived = lifetime_until_cut(proxy.local_addr()).await;
        assert!(lived >= min, "cut too early: {lived:?}");
        assert!(
            lived <= max + Duration::from_millis(300),
            "cut too late: {lived:?}"
        );
    }
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 4);

    // Switched off, connections outlive the range.
    proxy.set_cutting(false);
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    tokio::time::sleep(max + Duration::from_millis(200)).await;
    s.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(proxy.stats().cut.load(Ordering::Relaxed), 4);
}
