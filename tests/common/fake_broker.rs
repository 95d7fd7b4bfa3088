//! A scripted fake broker on 127.0.0.1 for connection-level tests: it parses
//! request headers, answers ApiVersions itself, and lets the test decide what
//! happens to every other request.
#![allow(dead_code)] // each test crate uses a different subset

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use rskafka::protocol::{
    messages::{api_versions_response::ApiVersion, ApiVersionsResponse},
    ApiKey, Message, Request,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A request as the fake broker saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Accepted connection number, from 0.
    pub conn: usize,
    /// The API key.
    pub api_key: ApiKey,
    /// The request version.
    pub version: i16,
    /// The correlation id.
    pub correlation_id: i32,
    /// The request body after the header.
    pub body: Bytes,
    /// When the request was read.
    pub at: Instant,
}

/// What the fake broker does with a request.
pub enum Action {
    /// Answers with this body and response header version, after a delay.
    Reply {
        header_version: i16,
        body: Bytes,
        delay: Duration,
    },
    /// Writes these bytes verbatim.
    Raw(Vec<u8>),
    /// Writes these bytes, then closes the connection.
    CloseAfter(Vec<u8>),
    /// Never answers.
    Silent,
}

/// A reply with `resp` encoded as the response to `R` at `version`.
pub fn reply<R: Request>(resp: &R::Response, version: i16) -> Action {
    let mut body = BytesMut::new();
    resp.encode(&mut body, version).expect("encodable response");
    Action::Reply {
        header_version: R::response_header_version(version),
        body: body.freeze(),
        delay: Duration::ZERO,
    }
}

/// The same reply, sent after `delay`; other actions unchanged.
pub fn delayed(action: Action, delay: Duration) -> Action {
    match action {
        Action::Reply {
            header_version,
            body,
            ..
        } => Action::Reply {
            header_version,
            body,
            delay,
        },
        other => other,
    }
}

/// Response header + body as a size-prefixed frame.
pub fn frame(correlation_id: i32, header_version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = BytesMut::new();
    let header_len = if header_version >= 1 { 5 } else { 4 };
    f.put_i32((header_len + body.len()) as i32);
    f.put_i32(correlation_id);
    if header_version >= 1 {
        f.put_u8(0);
    }
    f.put_slice(body);
    f.to_vec()
}

type Handler = dyn Fn(&Seen) -> Action + Send + Sync;

/// The running fake broker; stops when dropped.
pub struct FakeBroker {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Every request read so far, ApiVersions included.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The versions the fake advertises: ApiVersions 0–4, Metadata 0–12.
pub fn default_api_versions(version: i16) -> Action {
    api_versions(version, &[])
}

/// An ApiVersions answer advertising ApiVersions 0–4, Metadata 0–12 and
/// `more` (key, min, max).
pub fn api_versions(version: i16, more: &[(ApiKey, i16, i16)]) -> Action {
    let base = [(ApiKey::API_VERSIONS, 0, 4), (ApiKey::METADATA, 0, 12)];
    let resp = ApiVersionsResponse {
        api_keys: base
            .iter()
            .chain(more)
            .map(|&(key, min, max)| ApiVersion {
                api_key: key.0,
                min_version: min,
                max_version: max,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    reply::<rskafka::protocol::messages::ApiVersionsRequest>(&resp, version)
}

impl FakeBroker {
    /// Starts a fake broker: ApiVersions gets [`default_api_versions`] unless
    /// `handler` is asked first via `handle_api_versions`; every other request
    /// goes to `handler`. `on_accept` bytes are written as soon as a
    /// connection is accepted (to imitate a TLS or HTTP listener).
    pub async fn start(
        on_accept: Option<Vec<u8>>,
        handle_api_versions: bool,
        handler: impl Fn(&Seen) -> Action + Send + Sync + 'static,
    ) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve_on(listener, on_accept, handle_api_versions, handler)
    }

    /// Like [`FakeBroker::start`] on an already bound listener (e.g. IPv6).
    pub fn serve_on(
        listener: TcpListener,
        on_accept: Option<Vec<u8>>,
        handle_api_versions: bool,
        handler: impl Fn(&Seen) -> Action + Send + Sync + 'static,
    ) -> FakeBroker {
        let addr = listener.local_addr().expect("local addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut conn = 0;
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(
                        stream,
                        conn,
                        on_accept.clone(),
                        handle_api_versions,
                        handler.clone(),
                        seen.clone(),
                    ));
                    conn += 1;
                }
            }
        });
        FakeBroker { addr, seen, task }
    }

    /// Requests of `key` seen so far.
    pub fn count(&self, key: ApiKey) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.api_key == key)
            .count()
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    on_accept: Option<Vec<u8>>,
    handle_api_versions: bool,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    if let Some(bytes) = on_accept {
        let _ = stream.write_all(&bytes).await;
    }
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let req = Seen {
            conn,
            api_key: ApiKey(i16::from_be_bytes([buf[0], buf[1]])),
            version: i16::from_be_bytes([buf[2], buf[3]]),
            correlation_id: i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            body: Bytes::from(buf).slice(8..),
            at: Instant::now(),
        };
        seen.lock().unwrap().push(req.clone());
        let action = if req.api_key == ApiKey::API_VERSIONS && !handle_api_versions {
            default_api_versions(req.version)
        } else {
            handler(&req)
        };
        match action {
            Action::Reply {
                header_version,
                body,
                delay,
            } => {
                tokio::time::sleep(delay).await;
                let f = frame(req.correlation_id, header_version, &body);
                if stream.write_all(&f).await.is_err() {
                    return;
                }
            }
            Action::Raw(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Action::CloseAfter(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Action::Silent => {}
        }
    }
}

/// Decodes the request body of `seen` as `R` (skipping the header's client id
/// and tagged fields).
pub fn decode_request<R: Request>(seen: &Seen) -> R {
    let mut r = rskafka::protocol::Reader::new(seen.body.clone());
    let header_version = R::request_header_version(seen.version);
    if header_version >= 1 {
        r.nullable_string().expect("client id");
    }
    if header_version >= 2 {
        r.tagged_fields(|_, _| Ok(false)).expect("header tags");
    }
    R::decode(&mut r, seen.version).expect("request body")
}
