//! The brokers' network side: one listener per broker, size-prefixed
//! frames, request headers, dispatch by API key to the handlers, responses
//! written in request order per connection.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, MutexGuard},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use rskafka::protocol::{ApiKey, ErrorCode, Message, Reader, Request};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};

use crate::{
    faults::RequestFaults,
    state::{Shared, State},
};

/// The largest request frame accepted: Kafka's default
/// `socket.request.max.bytes` (100 MiB). A larger size prefix closes the
/// connection, as Kafka does, before anything is allocated for it.
pub(crate) const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;
/// Requests read ahead of the one being handled, per connection.
const PIPELINE_DEPTH: usize = 64;
/// Frames are read in pieces of at most this, so a large size prefix
/// followed by nothing costs no memory.
const READ_CHUNK: usize = 64 * 1024;

/// What a handler gets besides its request: the cluster, which broker and
/// API version it answers for, and the faults injected into this request.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// The id of the broker the request came to.
    pub broker_id: i32,
    /// The request's API version.
    pub version: i16,
    /// The request header's client id.
    #[allow(dead_code)] // for handlers that want to log or key on it
    pub client_id: Option<String>,
    /// `throttle_time_ms` to put in the response (an injected throttle).
    pub throttle_ms: i32,
    api_key: ApiKey,
    request_error: Option<ErrorCode>,
}

impl Ctx {
    /// The cluster state; never hold it across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// An error injected for the whole request (a fault with no partition
    /// filter). Handlers of APIs with a top-level error code answer with it.
    pub fn injected_error(&self) -> Option<ErrorCode> {
        self.request_error
    }

    /// The error injected for one partition of the request: the
    /// request-wide one, else a fault filtered on this partition (counted
    /// once per partition it fails).
    pub fn injected_partition_error(&self, topic: &str, partition: i32) -> Option<ErrorCode> {
        self.request_error.or_else(|| {
            self.shared
                .faults()
                .partition_error(self.api_key, self.broker_id, topic, partition)
        })
    }

    /// Calls `attempt` until it returns `Some`, again after every state
    /// change ([`Shared::notify_changed`]), with `last = true` once
    /// `deadline` has passed (it must then return `Some`). This is how
    /// Fetch waits for data and how delayed answers wait: no polling.
    pub async fn wait_until<T>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut(bool) -> Option<T>,
    ) -> T {
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change between the look and
            // the wait is not missed.
            notified.as_mut().enable();
            let last = Instant::now() >= deadline || *shutdown.borrow_and_update();
            if let Some(done) = attempt(last) {
                return done;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Option<BytesMut>, String>> + Send>>;
type Call = dyn Fn(Ctx, &mut Reader) -> Result<HandlerFuture, String> + Send + Sync;

/// One API's entry in the dispatch table.
pub(crate) struct Route {
    min: i16,
    max: i16,
    request_header_version: fn(i16) -> i16,
    response_header_version: fn(i16) -> i16,
    call: Box<Call>,
}

/// A route to `handler` for versions `min..=max` of `R` (capped at what the
/// codec knows).
pub(crate) fn route<R, F, Fut>(min: i16, max: i16, handler: F) -> (ApiKey, Route)
where
    R: Request + Send + 'static,
    R::Response: Send,
    F: Fn(Ctx, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R::Response> + Send + 'static,
{
    route_optional::<R, _, _>(min, max, move |ctx, req| {
        let answer = handler(ctx, req);
        async move { Some(answer.await) }
    })
}

/// Like [`route`] for an API that sometimes sends no response (Produce
/// with acks=0): the handler returns `None` then.
pub(crate) fn route_optional<R, F, Fut>(min: i16, max: i16, handler: F) -> (ApiKey, Route)
where
    R: Request + Send + 'static,
    R::Response: Send,
    F: Fn(Ctx, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<R::Response>> + Send + 'static,
{
    let max = max.min(R::MAX_VERSION);
    let call = move |ctx: Ctx, r: &mut Reader| -> Result<HandlerFuture, String> {
        let version = ctx.version;
        let req = R::decode(r, version).map_err(|e| e.to_string())?;
        let answer = handler(ctx, req);
        Ok(Box::pin(async move {
            let Some(resp) = answer.await else {
                return Ok(None);
            };
            let mut body = BytesMut::new();
            resp.encode(&mut body, version)
                .map_err(|e| format!("encoding the response: {e}"))?;
            Ok(Some(body))
        }))
    };
    (
        R::API_KEY,
        Route {
            min: min.max(R::MIN_VERSION),
            max,
            request_header_version: R::request_header_version,
            response_header_version: R::response_header_version,
            call: Box::new(call),
        },
    )
}

/// The dispatch table: what the cluster serves.
pub(crate) struct Routes(BTreeMap<i16, Route>);

impl Routes {
    pub fn new(routes: impl IntoIterator<Item = (ApiKey, Route)>) -> Self {
        Self(routes.into_iter().map(|(k, r)| (k.0, r)).collect())
    }

    /// `(key, min, max)` of every API served, for ApiVersions.
    pub fn advertised(&self) -> Vec<(i16, i16, i16)> {
        self.0.iter().map(|(&k, r)| (k, r.min, r.max)).collect()
    }
}

/// Accepts connections for broker number `index` until the cluster stops.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    index: usize,
    broker_id: i32,
    listener: TcpListener,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(shared.clone(), index, broker_id, stream));
                }
                Err(e) => {
                    tracing::warn!(broker = broker_id, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = until_stopped(&mut shutdown) => return,
        }
    }
}

/// Resolves once the cluster stops (or its state is gone).
pub(crate) async fn until_stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: dropped at once.
    let _ = shutdown.wait_for(|&stop| stop).await.is_ok();
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What becomes of one request.
enum Outcome {
    Reply(Bytes),
    NoReply,
    Close(String),
}

async fn serve_connection(shared: Arc<Shared>, index: usize, broker_id: i32, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
    // Reading ahead lets clients pipeline; requests are still handled one
    // at a time, in order, as a Kafka broker does per connection.
    let _reader = AbortOnDrop(tokio::spawn(async move {
        while let Ok(Some(frame)) = read_frame(&mut rd).await {
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    }));
    let mut closed = shared.close_generation[index].subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let work = async {
        while let Some(frame) = rx.recv().await {
            match process(&shared, broker_id, frame).await {
                Outcome::Reply(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Outcome::NoReply => {}
                Outcome::Close(why) => {
                    tracing::debug!(broker = broker_id, "closing connection: {why}");
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = closed.changed() => {}
        _ = until_stopped(&mut shutdown) => {}
    }
}

/// The next frame, `None` at a clean end of stream.
async fn read_frame(rd: &mut OwnedReadHalf) -> std::io::Result<Option<Bytes>> {
    let mut size = [0u8; 4];
    match rd.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame size {size} outside 0..={MAX_FRAME_BYTES}"),
            )
        })?;
    let mut buf = BytesMut::with_capacity(size.min(READ_CHUNK));
    while buf.len() < size {
        buf.reserve((size - buf.len()).min(READ_CHUNK));
        let want = size - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Some(buf.freeze()))
}

/// A response frame: size, correlation id, (v1) empty tagged fields, body.
fn response_frame(correlation_id: i32, header_version: i16, body: &[u8]) -> Bytes {
    let header_len = if header_version >= 1 { 5 } else { 4 };
    let mut f = BytesMut::with_capacity(4 + header_len + body.len());
    f.put_i32((header_len + body.len()) as i32);
    f.put_i32(correlation_id);
    if header_version >= 1 {
        f.put_u8(0);
    }
    f.put_slice(body);
    f.freeze()
}

async fn process(shared: &Arc<Shared>, broker_id: i32, frame: Bytes) -> Outcome {
    let mut r = Reader::new(frame);
    let (Ok(key), Ok(version), Ok(correlation_id)) = (r.i16(), r.i16(), r.i32()) else {
        return Outcome::Close("request header cut short".into());
    };
    let key = ApiKey(key);
    *shared.state().request_counts.entry(key.0).or_default() += 1;
    let Some(route) = shared.routes.0.get(&key.0) else {
        // Kafka closes the connection on an API it does not know.
        return Outcome::Close(format!("API key {} is not served", key.0));
    };
    if !(route.min..=route.max).contains(&version) {
        if key == ApiKey::API_VERSIONS {
            // Clients send their newest ApiVersions first; a v0 body with
            // UNSUPPORTED_VERSION and the list tells them what to use.
            let body = crate::handlers::api_versions::unsupported_version_body(shared);
            return Outcome::Reply(response_frame(correlation_id, 0, &body));
        }
        return Outcome::Close(format!("{key:?} v{version} is not served"));
    }
    let header_version = (route.request_header_version)(version);
    let client_id = if header_version >= 1 {
        match r.nullable_string() {
            Ok(id) => id,
            Err(e) => return Outcome::Close(format!("request header: {e}")),
        }
    } else {
        None
    };
    if header_version >= 2 {
        if let Err(e) = r.tagged_fields(|_, _| Ok(false)) {
            return Outcome::Close(format!("request header: {e}"));
        }
    }
    let RequestFaults {
        error,
        delay,
        drop_response,
        throttle_ms,
    } = shared.faults().on_request(key, broker_id);
    let ctx = Ctx {
        shared: shared.clone(),
        broker_id,
        version,
        client_id,
        throttle_ms,
        api_key: key,
        request_error: error,
    };
    let answer = match (route.call)(ctx, &mut r) {
        Ok(answer) => answer,
        Err(e) => return Outcome::Close(format!("{key:?} v{version}: {e}")),
    };
    let body = match answer.await {
        Ok(Some(body)) => body,
        Ok(None) => return Outcome::NoReply,
        Err(e) => {
            tracing::error!(broker = broker_id, "{key:?} v{version}: {e}");
            return Outcome::Close(e);
        }
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if drop_response {
        return Outcome::NoReply;
    }
    Outcome::Reply(response_frame(
        correlation_id,
        (route.response_header_version)(version),
        &body,
    ))
}
