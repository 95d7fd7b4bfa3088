//! The tokio driver task and the [`BrokerConnection`] handle.

use std::{
    collections::VecDeque,
    io::IoSlice,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot, Notify},
    time::{sleep_until, timeout_at, Instant},
};

use super::{
    stats::{Counters, InFlight},
    ConnectionConfig, ConnectionCore, ConnectionError, EncodedRequest, FrameWriter, VersionTable,
};
use crate::protocol::{ApiKey, EncodeError, Message, Reader, Request};

/// Requests waiting in the channel before callers wait for room.
const CHANNEL_CAPACITY: usize = 1024;
/// Requests moved from the channel per wake-up, so queued requests go out
/// in one write.
const BATCH: usize = 128;
/// Bytes queued for writing above which no new requests are taken in.
const MAX_QUEUED_WRITE: usize = 8 * 1024 * 1024;
/// Buffers per vectored write.
const MAX_IOSLICES: usize = 64;
/// Bound on the orderly shutdown of the write half.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

type Reply = oneshot::Sender<Result<Bytes, ConnectionError>>;

struct Command {
    req: EncodedRequest,
    /// Answered with an empty body once written (the broker sends none).
    no_response: bool,
    reply: Reply,
}

/// State shared between the handles and the driver task.
struct State {
    closed: AtomicBool,
    /// Reference point for `throttle_until_nanos`.
    epoch: Instant,
    /// Nanoseconds after `epoch` before which no new request may be sent
    /// (KIP-219); 0 when not throttled.
    throttle_until_nanos: AtomicU64,
    shutdown: Notify,
    /// Shared with the other connections to the same broker.
    counters: Arc<Counters>,
}

impl State {
    fn throttle(&self, ms: i32) {
        let Ok(ms) = u64::try_from(ms) else { return };
        let until = Instant::now() + Duration::from_millis(ms);
        let nanos = until.duration_since(self.epoch).as_nanos();
        self.throttle_until_nanos
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The end of the current throttle, if it is still in the future.
    fn throttled_until(&self) -> Option<Instant> {
        let nanos = self.throttle_until_nanos.load(Ordering::Relaxed);
        if nanos == 0 {
            return None;
        }
        let until = self.epoch + Duration::from_nanos(nanos);
        (until > Instant::now()).then_some(until)
    }
}

struct Inner {
    addr: String,
    config: Arc<ConnectionConfig>,
    tx: mpsc::Sender<Command>,
    state: Arc<State>,
    versions: OnceLock<VersionTable>,
    /// With SASL: every request holds it shared until answered, and
    /// re-authentication holds it exclusively, so new requests wait while
    /// in-flight ones finish (KIP-368).
    gate: Option<tokio::sync::RwLock<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The driver also stops when the channel closes; this makes it stop
        // even while it waits on a throttle.
        self.state.shutdown.notify_one();
    }
}

/// A connection to one broker, shared by cloning. Requests from all clones
/// are pipelined on the one socket and matched to responses by correlation
/// id. Once broken it stays broken ([`is_closed`](Self::is_closed)); the
/// cluster layer opens a new one.
#[derive(Clone)]
pub struct BrokerConnection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("addr", &self.inner.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl BrokerConnection {
    /// Starts the driver task over an established stream. Versions are not
    /// negotiated yet.
    pub(super) fn spawn<R, W>(
        addr: &str,
        config: Arc<ConnectionConfig>,
        reader: R,
        writer: W,
        counters: Arc<Counters>,
    ) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let state = Arc::new(State {
            closed: AtomicBool::new(false),
            epoch: Instant::now(),
            throttle_until_nanos: AtomicU64::new(0),
            shutdown: Notify::new(),
            counters,
        });
        Counters::add(&state.counters.connections_open, 1);
        let driver = Driver {
            addr: addr.to_string(),
            core: ConnectionCore::new(config.max_frame_size),
            rx,
            state: state.clone(),
            held: VecDeque::new(),
            write_queue: VecDeque::new(),
            queued_write: 0,
            answered: 0,
        };
        tokio::spawn(driver.run(reader, writer));
        Self {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                tx,
                state,
                versions: OnceLock::new(),
                gate: config.sasl.as_ref().map(|_| tokio::sync::RwLock::new(())),
                config,
            }),
        }
    }

    /// Installs the negotiated versions; only opening the connection does,
    /// once.
    pub(super) fn set_versions(&self, versions: VersionTable) {
        let _ = self.inner.versions.set(versions);
    }

    /// The highest version of `key` usable with this broker, `None` if the
    /// broker and this client share none.
    pub fn version_for(&self, key: ApiKey) -> Option<i16> {
        self.inner.versions.get()?.version_for(key)
    }

    /// The version range the broker advertised for `key`.
    pub fn broker_versions(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.inner.versions.get()?.broker_versions(key)
    }

    /// The negotiated version table.
    pub fn versions(&self) -> Option<&VersionTable> {
        self.inner.versions.get()
    }

    /// Sends `req` at [`version_for`](Self::version_for) its API and waits
    /// for the response.
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Response, ConnectionError> {
        let Some(version) = self.version_for(R::API_KEY) else {
            return Err(self.unsupported::<R>(None));
        };
        self.request_version(req, version).await
    }

    /// Sends `req` at `version` and waits for the response, at most the
    /// request timeout. A response carrying a throttle time delays the next
    /// request on this connection; it is still returned as a success.
    pub async fn request_version<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ConnectionError> {
        self.request_inner(req, version, true).await
    }

    /// Like [`Self::request_version`], without waiting for a running
    /// re-authentication: for the SASL exchange itself.
    pub(crate) async fn request_ungated<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ConnectionError> {
        self.request_inner(req, version, false).await
    }

    /// Sends `req` at `version` for which the broker sends no response at
    /// all — in Kafka only a ProduceRequest with `acks` = 0; anything else
    /// would leave its answer unmatched and break the connection. Resolves
    /// once the whole frame has been written to the socket, which is all
    /// the caller will ever learn: not that the broker read or accepted it.
    ///
    /// Errors as [`Self::request_version`]: with `ambiguous` set only if the
    /// frame may have been written (a timeout after handing it over). Other
    /// requests on the connection are unaffected. Cancellation-safe: dropped
    /// before the driver takes it, it is not sent; after, it is still
    /// written whole, keeping the stream intact.
    pub async fn send_no_response<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<(), ConnectionError> {
        let encoded = self.encode(req, version)?;
        self.exchange(encoded, true, true).await.map(drop)
    }

    /// Checks `version` against the codec and the broker, then encodes.
    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<EncodedRequest, ConnectionError> {
        self.check_version::<R>(version)?;
        EncodedRequest::new(req, version, Some(&self.inner.config.client_id))
    }

    /// Encodes a request of type `R` at `version` whose body `body` writes
    /// (see [`EncodedRequest::with_body`]), for
    /// [`Self::request_encoded`] and [`Self::send_encoded_no_response`]:
    /// this lets large byte strings reach the socket without being copied.
    pub fn encode_with<R: Request>(
        &self,
        version: i16,
        body: impl FnOnce(&mut FrameWriter) -> Result<(), EncodeError>,
    ) -> Result<EncodedRequest, ConnectionError> {
        self.check_version::<R>(version)?;
        EncodedRequest::with_body::<R>(version, Some(&self.inner.config.client_id), body)
    }

    /// Sends a request built by [`Self::encode_with`] for `R` and waits for
    /// its response, as [`Self::request_version`] does.
    pub async fn request_encoded<R: Request>(
        &self,
        encoded: EncodedRequest,
    ) -> Result<R::Response, ConnectionError> {
        if encoded.api_key() != R::API_KEY {
            return Err(self.unsupported::<R>(Some(encoded.version())));
        }
        self.finish_request::<R>(encoded, true).await
    }

    /// Sends a request built by [`Self::encode_with`] that the broker does
    /// not answer; see [`Self::send_no_response`].
    pub async fn send_encoded_no_response(
        &self,
        encoded: EncodedRequest,
    ) -> Result<(), ConnectionError> {
        self.exchange(encoded, true, true).await.map(drop)
    }

    /// Whether `version` of `R` is known to both the codec and the broker.
    fn check_version<R: Request>(&self, version: i16) -> Result<(), ConnectionError> {
        let in_codec = (R::MIN_VERSION..=R::MAX_VERSION).contains(&version);
        // ApiVersions itself goes out before any table exists.
        let in_broker = match self.inner.versions.get() {
            None => true,
            Some(t) => t
                .broker_versions(R::API_KEY)
                .is_some_and(|(min, max)| (min..=max).contains(&version)),
        };
        if !in_codec || !in_broker {
            return Err(self.unsupported::<R>(Some(version)));
        }
        Ok(())
    }

    async fn request_inner<R: Request>(
        &self,
        req: &R,
        version: i16,
        gated: bool,
    ) -> Result<R::Response, ConnectionError> {
        let encoded = self.encode(req, version)?;
        self.finish_request::<R>(encoded, gated).await
    }

    /// Sends an encoded request of `R` and decodes its response.
    async fn finish_request<R: Request>(
        &self,
        encoded: EncodedRequest,
        gated: bool,
    ) -> Result<R::Response, ConnectionError> {
        let version = encoded.version();
        let body = self.round_trip(encoded, gated).await?;
        let mut r = Reader::new(body);
        let resp =
            R::Response::decode(&mut r, version).map_err(|source| ConnectionError::Decode {
                api: R::API_KEY,
                version,
                source,
            })?;
        if r.remaining() > 0 {
            tracing::debug!(
                api = %R::API_KEY,
                version,
                trailing = r.remaining(),
                "response has trailing bytes"
            );
        }
        if let Some(ms) = resp.throttle_time_ms().filter(|&ms| ms > 0) {
            tracing::debug!(broker = %self.inner.addr, ms, "throttled by the broker");
            self.inner.state.throttle(ms);
        }
        Ok(resp)
    }

    /// The error for a request at `requested` (`None`: at no version) that
    /// this client and broker cannot exchange.
    pub(crate) fn unsupported<R: Request>(&self, requested: Option<i16>) -> ConnectionError {
        let client = super::client_range(R::API_KEY)
            .map(|(min, max)| (min.max(R::MIN_VERSION), max.min(R::MAX_VERSION)));
        ConnectionError::UnsupportedVersion {
            api: R::API_KEY,
            requested,
            broker: self.broker_versions(R::API_KEY),
            client,
        }
    }

    /// Sends an encoded request and returns the raw response body.
    pub(super) async fn round_trip(&self, req: EncodedRequest, gated: bool) -> Result<Bytes, ConnectionError> {
        self.exchange(req, false, gated).await
    }

    /// Hands `req` to the driver and waits, within the request timeout, for
    /// its response body, or with `no_response` for its frame to be written
    /// (then the body is empty).
    async fn exchange(
        &self,
        req: EncodedRequest,
        no_response: bool,
        gated: bool,
    ) -> Result<Bytes, ConnectionError> {
        let (api, version) = (req.api_key(), req.version());
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let counters = &*self.inner.state.counters;
        let timed_out = |ambiguous| {
            Counters::add(&counters.request_timeouts, 1);
            ConnectionError::Timeout {
                addr: self.inner.addr.clone(),
                api,
                version,
                timeout,
                ambiguous,
            }
        };
        // Held until the response arrives (or the frame is written), so
        // re-authentication can wait for requests in flight.
        let _pass = match self.inner.gate.as_ref().filter(|_| gated) {
            Some(gate) => match timeout_at(deadline, gate.read()).await {
                Ok(pass) => Some(pass),
                Err(_) => return Err(timed_out(false)),
            },
            None => None,
        };
        let (reply, rx) = oneshot::channel();
        let request_bytes = req.len() as u64;
        let _in_flight = InFlight::start(counters);
        match timeout_at(
            deadline,
            self.inner.tx.send(Command {
                req,
                no_response,
                reply,
            }),
        )
        .await
        {
            Ok(Ok(())) => {
                Counters::add(&counters.requests_sent, 1);
                Counters::add(&counters.bytes_sent, request_bytes);
            }
            Ok(Err(_)) => return Err(self.disconnected(false)),
            Err(_) => return Err(timed_out(false)),
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(result)) => {
                if let Ok(body) = &result {
                    if !no_response {
                        Counters::add(&counters.responses_received, 1);
                        Counters::add(&counters.bytes_received, body.len() as u64);
                    }
                }
                result
            }
            Ok(Err(_)) => Err(self.disconnected(true)),
            // Dropping `rx` leaves the in-flight entry in place; the late
            // response is read and discarded.
            Err(_) => Err(timed_out(true)),
        }
    }

    fn disconnected(&self, ambiguous: bool) -> ConnectionError {
        ConnectionError::Disconnected {
            addr: self.inner.addr.clone(),
            ambiguous,
            cause: None,
        }
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether the connection is broken or closed; requests on it fail fast.
    pub fn is_closed(&self) -> bool {
        self.inner.state.closed.load(Ordering::Acquire) || self.inner.tx.is_closed()
    }

    /// Closes the connection for every clone; requests in flight fail with
    /// [`ConnectionError::Disconnected`].
    pub fn close(&self) {
        self.inner.state.shutdown.notify_one();
    }

    /// Stops new requests until the guard drops, once the requests in
    /// flight are answered; `None` (no waiting) without SASL.
    pub(crate) async fn pause_requests(&self) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
        match &self.inner.gate {
            Some(gate) => Some(gate.write().await),
            None => None,
        }
    }

    /// Counts `n` produce batches sent again on this connection.
    pub(crate) fn count_produce_retries(&self, n: u64) {
        Counters::add(&self.inner.state.counters.produce_retries, n);
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakConnection {
        WeakConnection(Arc::downgrade(&self.inner))
    }
}

/// A [`BrokerConnection`] that does not keep it open (for background tasks
/// such as re-authentication).
pub(crate) struct WeakConnection(std::sync::Weak<Inner>);

impl WeakConnection {
    /// The connection, if some handle still holds it.
    pub(crate) fn upgrade(&self) -> Option<BrokerConnection> {
        self.0.upgrade().map(|inner| BrokerConnection { inner })
    }
}


/// The per-connection task: owns the socket halves and the core.
struct Driver {
    addr: String,
    core: ConnectionCore<Reply>,
    rx: mpsc::Receiver<Command>,
    state: Arc<State>,
    /// Requests taken from the channel but not yet queued (throttled).
    held: VecDeque<Command>,
    write_queue: VecDeque<Bytes>,
    queued_write: usize,
    /// Responses received so far (the first is ApiVersions').
    answered: u64,
}

/// Why the driver loop ended.
enum Stop {
    /// Every handle is gone and nothing can be waiting.
    Idle,
    /// The connection broke or was closed.
    Error(ConnectionError),
}

impl Driver {
    async fn run<R, W>(mut self, mut reader: R, mut writer: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let stop = self.run_loop(&mut reader, &mut writer).await;
        self.state.closed.store(true, Ordering::Release);
        Counters::sub(&self.state.counters.connections_open);
        Counters::add(&self.state.counters.disconnects, 1);
        self.rx.close();
        let cause = match stop {
            Stop::Idle => ConnectionError::Closed,
            Stop::Error(e) => {
                tracing::debug!(broker = %self.addr, error = %e, "connection closed");
                e
            }
        };
        let cause_arc = Arc::new(cause.clone());
        let lost = |ambiguous| ConnectionError::Disconnected {
            addr: self.addr.clone(),
            ambiguous,
            cause: Some(cause_arc.clone()),
        };
        for f in self.core.fail_all(cause) {
            let _ = f.token.send(Err(lost(f.ambiguous)));
        }
        for cmd in self.held.drain(..) {
            let _ = cmd.reply.send(Err(lost(false)));
        }
        while let Ok(cmd) = self.rx.try_recv() {
            let _ = cmd.reply.send(Err(lost(false)));
        }
        // A TLS close_notify can block on a peer that stopped reading.
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, writer.shutdown()).await;
    }

    async fn run_loop<R, W>(&mut self, reader: &mut R, writer: &mut W) -> Stop
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut need_flush = false;
        loop {
            let throttled = self.state.throttled_until();
            if throttled.is_none() {
                while let Some(cmd) = self.held.pop_front() {
                    // A caller that already gave up is not worth sending.
                    if cmd.reply.is_closed() {
                        continue;
                    }
                    let queued = if cmd.no_response {
                        self.core.queue_no_response(cmd.req, cmd.reply).map(drop)
                    } else {
                        self.core.queue(cmd.req, cmd.reply).map(drop)
                    };
                    if let Err(e) = queued {
                        return Stop::Error(e);
                    }
                }
            }
            while let Some(b) = self.core.poll_transmit() {
                self.queued_write += b.len();
                self.write_queue.push_back(b);
            }
            let accept = self.held.len() < BATCH && self.queued_write < MAX_QUEUED_WRITE;
            tokio::select! {
                biased;
                _ = self.state.shutdown.notified() => return Stop::Error(ConnectionError::Closed),
                res = reader.read_buf(self.core.recv_buf()) => match res {
                    Ok(0) => {
                        // Only ApiVersions answered, the next request not:
                        // what a listener expecting SASL does.
                        if self.answered == 1 && self.core.in_flight() > 0 {
                            return Stop::Error(ConnectionError::ClosedBeforeFirstAnswer {
                                addr: self.addr.clone(),
                            });
                        }
                        return Stop::Error(ConnectionError::from(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the broker closed the connection",
                        )))
                    }
                    Ok(_) => {
                        while let Some(ev) = self.core.poll_response() {
                            match ev {
                                // A waiter that timed out has dropped its receiver.
                                Ok(resp) => {
                                    self.answered += 1;
                                    drop(resp.token.send(Ok(resp.body)));
                                }
                                Err(e) => return Stop::Error(e),
                            }
                        }
                    }
                    Err(e) => return Stop::Error(e.into()),
                },
                res = write_step(writer, &self.write_queue), if need_flush || !self.write_queue.is_empty() => match res {
                    Ok(Some(0)) => return Stop::Error(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                    Ok(Some(n)) => {
                        self.core.on_written(n);
                        while let Some(reply) = self.core.poll_written() {
                            // Written is all a no-response request learns.
                            let _ = reply.send(Ok(Bytes::new()));
                        }
                        self.queued_write -= n;
                        advance(&mut self.write_queue, n);
                        need_flush = true;
                    }
                    Ok(None) => need_flush = false,
                    Err(e) => return Stop::Error(e.into()),
                },
                cmd = self.rx.recv(), if accept => match cmd {
                    Some(cmd) => {
                        self.held.push_back(cmd);
                        while self.held.len() < BATCH {
                            match self.rx.try_recv() {
                                Ok(cmd) => self.held.push_back(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: requests still in flight were
                    // abandoned, nobody waits for them.
                    None => return Stop::Idle,
                },
                _ = sleep_until(throttled.unwrap_or_else(Instant::now)), if throttled.is_some() => {}
            }
        }
    }
}

/// One vectored write of the queued buffers (`Some(bytes written)`), or a
/// flush once the queue is empty (`None`): transports that buffer, such as
/// TLS, need it; for TCP it is a no-op.
async fn write_step<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &VecDeque<Bytes>,
) -> std::io::Result<Option<usize>> {
    if queue.is_empty() {
        writer.flush().await?;
        return Ok(None);
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOSLICES];
    let mut n = 0;
    for (slot, b) in slices.iter_mut().zip(queue.iter()) {
        *slot = IoSlice::new(b);
        n += 1;
    }
    writer.write_vectored(&slices[..n]).await.map(Some)
}

/// Drops the first `n` written bytes from the queue.
fn advance(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            queue.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}
