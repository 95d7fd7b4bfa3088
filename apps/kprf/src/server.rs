//! The HTTP server: `POST /push` on `http.port`; `/metrics`, `/healthz` and
//! `/readyz` on `http.metrics_port`. Generic over the [`Backend`].

use std::{
    borrow::Cow,
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, RwLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::{
    backend::{Backend, OutRecord},
    config::Config,
    metrics::{Metrics, TopicMetrics},
    ratelimit::RateLimiter,
    wal::{self, Wal},
};

/// How long "this topic does not exist" is believed before asking again.
const UNKNOWN_TOPIC_TTL: Duration = Duration::from_secs(1);
/// The metrics label of records to unknown topics.
const UNKNOWN_TOPIC_LABEL: &str = "_unknown_";

#[derive(Deserialize)]
struct PushRequest<'a> {
    #[serde(borrow)]
    records: Vec<InRecord<'a>>,
    #[serde(default)]
    wait_for_send: bool,
}

#[derive(Deserialize)]
struct InRecord<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    status: &'static str,
    error: &'a str,
}

#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    errors: Vec<Entry<'a>>,
}

const OK_BODY: &[u8] = br#"{"status":"ok","errors":[]}"#;

/// The response body for per-record outcomes (`None` = ok).
fn body_of(errors: &[Option<String>]) -> Bytes {
    if errors.iter().all(Option::is_none) {
        return Bytes::from_static(OK_BODY);
    }
    let body = Body {
        status: "error",
        errors: errors
            .iter()
            .map(|e| match e {
                None => Entry {
                    status: "ok",
                    error: "",
                },
                Some(m) => Entry {
                    status: "error",
                    error: m,
                },
            })
            .collect(),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A known topic.
struct TopicState {
    partitions: AtomicI32,
    m: Arc<TopicMetrics>,
}

/// A record accepted by the backend, until its delivery.
struct Tracked<D> {
    delivery: D,
    topic: Arc<TopicState>,
    accepted: Instant,
    seq: Option<u64>,
}

struct Done {
    result: Result<(), String>,
    topic: Arc<TopicState>,
    accepted: Instant,
    seq: Option<u64>,
}

impl<D: Future<Output = Result<(), String>> + Unpin> Future for Tracked<D> {
    type Output = Done;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        Pin::new(&mut self.delivery).poll(cx).map(|result| Done {
            result,
            topic: self.topic.clone(),
            accepted: self.accepted,
            seq: self.seq,
        })
    }
}

/// What the push handler and the delivery task share.
pub struct App<B: Backend> {
    backend: B,
    metrics: Arc<Metrics>,
    topics: RwLock<HashMap<Box<str>, Arc<TopicState>>>,
    unknown: Mutex<HashMap<String, Instant>>,
    unknown_metrics: Arc<TopicMetrics>,
    message_max_bytes: usize,
    max_messages: usize,
    inflight: AtomicUsize,
    ratelimit: Option<RateLimiter>,
    wal: Option<Wal>,
    deliveries: mpsc::UnboundedSender<Option<Vec<Tracked<B::Delivery>>>>,
    accepting: AtomicBool,
}

/// The outcome of one push: status code, body, whether it was synchronous.
struct Outcome {
    code: StatusCode,
    body: Bytes,
    sync: bool,
}

fn all_errors(n: usize, msg: &str) -> Vec<Option<String>> {
    vec![Some(msg.to_string()); n.max(1)]
}

impl<B: Backend> App<B> {
    /// The state of `name`, from the cache or the cluster.
    async fn topic(&self, name: &str) -> Result<Option<Arc<TopicState>>, String> {
        if let Some(t) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(t.clone()));
        }
        {
            let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if unknown
                .get(name)
                .is_some_and(|t| t.elapsed() < UNKNOWN_TOPIC_TTL)
            {
                return Ok(None);
            }
        }
        match self.backend.partitions(name).await? {
            Some(n) => {
                let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
                let t = topics.entry(name.into()).or_insert_with(|| {
                    Arc::new(TopicState {
                        partitions: AtomicI32::new(n),
                        m: self.metrics.topic(name),
                    })
                });
                t.partitions.fetch_max(n, Ordering::Relaxed);
                Ok(Some(t.clone()))
            }
            None => {
                let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
                if unknown.len() > 10_000 {
                    unknown.clear();
                }
                unknown.insert(name.to_string(), Instant::now());
                Ok(None)
            }
        }
    }

    /// Whether `partition` exists in `t` (asking the cluster again once if
    /// it is beyond the count known: partitions may have been added).
    async fn partition_exists(&self, name: &str, t: &TopicState, partition: i32) -> bool {
        if partition < 0 {
            return false;
        }
        if partition < t.partitions.load(Ordering::Relaxed) {
            return true;
        }
        if let Ok(Some(n)) = self.backend.partitions(name).await {
            t.partitions.fetch_max(n, Ordering::Relaxed);
        }
        partition < t.partitions.load(Ordering::Relaxed)
    }

    /// Ends the admission of `n` records.
    fn leave(&self, n: usize) {
        self.inflight.fetch_sub(n, Ordering::AcqRel);
        self.metrics.inflight.dec_by(n as i64);
    }

    /// Accounts for a delivered (or failed) record.
    fn finish(&self, d: &Done) {
        let m = &d.topic.m;
        m.queue.dec();
        m.send_duration.observe(d.accepted.elapsed().as_secs_f64());
        match &d.result {
            Ok(()) => {
                m.sent.inc();
            }
            Err(e) => {
                m.errors.inc();
                if d.seq.is_some() {
                    tracing::warn!("delivery failed (write-ahead log entry released): {e}");
                }
            }
        }
        if let (Some(seq), Some(wal)) = (d.seq, &self.wal) {
            wal.release(seq);
        }
        self.leave(1);
    }

    /// Sends one record; `Err` if the backend refused it (then it is
    /// accounted for, and its log entry released).
    async fn send_one(
        &self,
        out: OutRecord<'_>,
        t: &Arc<TopicState>,
        seq: Option<u64>,
    ) -> Result<Tracked<B::Delivery>, String> {
        let accepted = Instant::now();
        match self.backend.send(out).await {
            Ok(delivery) => {
                t.m.queue.inc();
                Ok(Tracked {
                    delivery,
                    topic: t.clone(),
                    accepted,
                    seq,
                })
            }
            Err(e) => {
                t.m.errors.inc();
                if let (Some(seq), Some(wal)) = (seq, &self.wal) {
                    wal.release(seq);
                }
                self.leave(1);
                Err(e)
            }
        }
    }

    async fn push(&self, body: Bytes) -> Outcome {
        let req: PushRequest<'_> = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    code: StatusCode::BAD_REQUEST,
                    body: body_of(&all_errors(1, &format!("invalid request: {e}"))),
                    sync: false,
                }
            }
        };
        let sync = req.wait_for_send;
        let (code, errors) = self.push_records(&body, req.records, sync).await;
        Outcome {
            code,
            body: body_of(&errors),
            sync,
        }
    }

    async fn push_records(
        &self,
        body: &Bytes,
        records: Vec<InRecord<'_>>,
        sync: bool,
    ) -> (StatusCode, Vec<Option<String>>) {
        let n = records.len();
        if n == 0 {
            return (StatusCode::OK, Vec::new());
        }
        if !self.accepting.load(Ordering::Relaxed) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                all_errors(n, "not accepting: shutting down"),
            );
        }
        let before = self.inflight.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_messages {
            self.inflight.fetch_sub(n, Ordering::AcqRel);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                all_errors(
                    n,
                    &format!(
                        "queue full: {before} records waiting for delivery \
                         (kafka.queue_buffering_max_messages = {})",
                        self.max_messages
                    ),
                ),
            );
        }
        self.metrics.inflight.inc_by(n as i64);

        if let Some(rl) = &self.ratelimit {
            let mut counts: Vec<(&str, u32)> = Vec::new();
            for r in &records {
                match counts.iter_mut().find(|(t, _)| *t == r.topic) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((&r.topic, 1)),
                }
            }
            let limited = rl.admit(&counts);
            if !limited.is_empty() {
                for (t, c) in &counts {
                    if limited.contains(t) {
                        self.metrics.ratelimited(t, u64::from(*c));
                    }
                }
                let errors = records
                    .iter()
                    .map(|r| {
                        Some(if limited.contains(&&*r.topic) {
                            format!("rate limit exceeded for topic {}", r.topic)
                        } else {
                            "not sent: other records of the request were rate limited".into()
                        })
                    })
                    .collect();
                self.leave(n);
                return (StatusCode::TOO_MANY_REQUESTS, errors);
            }
        }

        let mut errors: Vec<Option<String>> = vec![None; n];
        let mut server_error = false;
        let mut outs: Vec<(usize, OutRecord<'_>, Arc<TopicState>)> = Vec::with_capacity(n);
        let to_bytes = |c: &Cow<'_, str>| match c {
            Cow::Borrowed(s) => body.slice_ref(s.as_bytes()),
            Cow::Owned(s) => Bytes::copy_from_slice(s.as_bytes()),
        };
        for (i, r) in records.iter().enumerate() {
            let reject = |msg: String, m: &TopicMetrics| {
                m.errors.inc();
                self.leave(1);
                Some(msg)
            };
            let t = match self.topic(&r.topic).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    errors[i] = reject(format!("unknown topic {}", r.topic), &self.unknown_metrics);
                    continue;
                }
                Err(e) => {
                    server_error = true;
                    errors[i] = reject(
                        format!("metadata of topic {}: {e}", r.topic),
                        &self.unknown_metrics,
                    );
                    continue;
                }
            };
            if let Some(p) = r.partition {
                if !self.partition_exists(&r.topic, &t, p).await {
                    errors[i] = reject(
                        format!(
                            "partition {p} does not exist: topic {} has {}",
                            r.topic,
                            t.partitions.load(Ordering::Relaxed)
                        ),
                        &t.m,
                    );
                    continue;
                }
            }
            let size = r.data.len()
                + r.key.as_ref().map_or(0, |k| k.len())
                + r.headers
                    .as_ref()
                    .map_or(0, |h| h.iter().map(|(k, v)| k.len() + v.len()).sum());
            if size > self.message_max_bytes {
                errors[i] = reject(
                    format!(
                        "record of {size} bytes exceeds kafka.message_max_bytes ({})",
                        self.message_max_bytes
                    ),
                    &t.m,
                );
                continue;
            }
            let headers = r.headers.as_ref().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), Bytes::copy_from_slice(v.as_bytes())))
                    .collect()
            });
            outs.push((
                i,
                OutRecord {
                    topic: &r.topic,
                    partition: r.partition,
                    key: r.key.as_ref().map(to_bytes),
                    value: to_bytes(&r.data),
                    headers,
                },
                t,
            ));
        }

        let mut first_seq = None;
        if let (Some(wal), false, false) = (&self.wal, sync, outs.is_empty()) {
            let payloads = outs.iter().map(|(_, o, _)| wal::encode_record(o)).collect();
            match wal.append(payloads).await {
                Ok(first) => {
                    self.metrics.wal_appended.inc_by(outs.len() as u64);
                    first_seq = Some(first);
                }
                Err(e) => {
                    let msg = format!("write-ahead log: {e}");
                    for (i, _, t) in &outs {
                        t.m.errors.inc();
                        errors[*i] = Some(msg.clone());
                    }
                    self.leave(outs.len());
                    return (StatusCode::INTERNAL_SERVER_ERROR, errors);
                }
            }
        }

        let mut pending = Vec::with_capacity(outs.len());
        let mut indices = Vec::new();
        for (k, (i, out, t)) in outs.into_iter().enumerate() {
            match self
                .send_one(out, &t, first_seq.map(|f| f + k as u64))
                .await
            {
                Ok(p) => {
                    pending.push(p);
                    if sync {
                        indices.push(i);
                    }
                }
                Err(e) => {
                    server_error = true;
                    errors[i] = Some(e);
                }
            }
        }
        if sync {
            let done = futures::future::join_all(pending).await;
            for (i, d) in indices.into_iter().zip(done) {
                self.finish(&d);
                if let Err(e) = d.result {
                    server_error = true;
                    errors[i] = Some(e);
                }
            }
        } else if !pending.is_empty() {
            let _ = self.deliveries.send(Some(pending));
        }
        let code = if server_error {
            StatusCode::INTERNAL_SERVER_ERROR
        } else if errors.iter().any(Option::is_some) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (code, errors)
    }

    /// Re-sends the write-ahead log's entries found at start.
    async fn replay(&self, entries: Vec<wal::Replayed>) -> usize {
        let Some(wal) = &self.wal else { return 0 };
        let mut count = 0;
        for e in entries {
            let Some(rec) = wal::decode_record(&e.payload) else {
                tracing::error!(seq = e.seq, "write-ahead log: undecodable entry skipped");
                wal.release(e.seq);
                continue;
            };
            let t = match self.topic(&rec.topic).await {
                Ok(Some(t)) => t,
                other => {
                    tracing::error!(
                        seq = e.seq,
                        topic = rec.topic,
                        "write-ahead log: replayed record dropped: topic unavailable ({:?})",
                        other.err()
                    );
                    wal.release(e.seq);
                    continue;
                }
            };
            self.inflight.fetch_add(1, Ordering::AcqRel);
            self.metrics.inflight.inc();
            match self.send_one(rec.as_out(), &t, Some(e.seq)).await {
                Ok(p) => {
                    count += 1;
                    self.metrics.wal_replayed.inc();
                    let _ = self.deliveries.send(Some(vec![p]));
                }
                Err(err) => {
                    tracing::error!(
                        seq = e.seq,
                        "write-ahead log: replayed record refused: {err}"
                    );
                }
            }
        }
        count
    }
}

async fn delivery_loop<B: Backend>(
    app: Arc<App<B>>,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<Tracked<B::Delivery>>>>,
) {
    let mut futs = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(done) = futs.next(), if !futs.is_empty() => app.finish(&done),
            batch = rx.recv() => match batch {
                Some(Some(b)) => futs.extend(b),
                _ => break,
            },
        }
    }
    while let Some(done) = futs.next().await {
        app.finish(&done);
    }
}

async fn push_handler<B: Backend>(State(app): State<Arc<App<B>>>, body: Bytes) -> Response {
    let start = Instant::now();
    let out = app.push(body).await;
    app.metrics
        .http(out.sync, out.code.as_u16())
        .observe(start.elapsed().as_secs_f64());
    json_response(out.code, out.body)
}

fn json_response(code: StatusCode, body: Bytes) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Appends a backend's own figures.
type ExtraMetrics = Box<dyn Fn(&mut String) + Send + Sync>;

/// What the metrics listener shows.
struct Status {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    extra: OnceLock<ExtraMetrics>,
}

async fn metrics_handler(State(s): State<Arc<Status>>) -> Response {
    let text = s.metrics.encode(|out| {
        if let Some(f) = s.extra.get() {
            f(out);
        }
    });
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn readyz_handler(State(s): State<Arc<Status>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("binding {host}:{port}: {e}"))
}

/// A shutdown signal that can be awaited many times.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the function that fires it.
    pub fn new() -> (Self, impl Fn() + Send + Sync + 'static) {
        let (tx, rx) = watch::channel(false);
        (Self(rx), move || {
            let _ = tx.send(true);
        })
    }

    /// Fires on SIGTERM or SIGINT.
    pub fn on_signals() -> Self {
        let (s, fire) = Self::new();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
            fire();
        });
        s
    }

    /// Waits for the signal.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    fn fired(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs the service until `shutdown`: the metrics listener at once, then
/// `connect` (retried every second until it succeeds), write-ahead log
/// replay, and `/push`. On shutdown: stops accepting, delivers what is
/// buffered, releases and checkpoints the log.
pub async fn run<B, F, Fut>(cfg: Config, connect: F, shutdown: Shutdown) -> Result<(), String>
where
    B: Backend,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<B, String>>,
{
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        extra: OnceLock::new(),
    });
    let metrics_listener = bind(&cfg.http.host, cfg.http.metrics_port).await?;
    let metrics_router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(status.clone());
    tracing::info!(addr = %metrics_listener.local_addr().map_err(|e| e.to_string())?, "metrics listening");
    let metrics_server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(metrics_listener, metrics_router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await;
        })
    };

    let backend = loop {
        match connect().await {
            Ok(b) => break b,
            Err(e) => {
                tracing::error!("connecting to Kafka: {e}; retrying in 1 s");
                tokio::select! {
                    _ = shutdown.wait() => {
                        let _ = metrics_server.await;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(brokers = ?cfg.kafka.brokers, "connected to Kafka");

    let (wal, replay) = match &cfg.wal.dir {
        Some(dir) => {
            let (w, r) = Wal::open(
                std::path::Path::new(dir),
                cfg.wal.fsync,
                Duration::from_millis(cfg.wal.fsync_interval_ms),
                cfg.wal.segment_bytes,
                metrics.wal_unreleased.clone(),
            )
            .map_err(|e| format!("write-ahead log {dir}: {e}"))?;
            (Some(w), r)
        }
        None => (None, Vec::new()),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        backend,
        unknown_metrics: metrics.topic(UNKNOWN_TOPIC_LABEL),
        metrics: metrics.clone(),
        topics: RwLock::new(HashMap::new()),
        unknown: Mutex::new(HashMap::new()),
        message_max_bytes: cfg.kafka.message_max_bytes,
        max_messages: cfg.kafka.queue_buffering_max_messages,
        inflight: AtomicUsize::new(0),
        ratelimit: RateLimiter::new(&cfg.ratelimit),
        wal,
        deliveries: tx,
        accepting: AtomicBool::new(true),
    });
    let delivery_task = tokio::spawn(delivery_loop(app.clone(), rx));
    {
        let app = app.clone();
        let _ = status.extra.set(Box::new(move |out: &mut String| {
            app.backend.encode_metrics(out)
        }));
    }
    if !replay.is_empty() {
        let found = replay.len();
        let sent = app.replay(replay).await;
        tracing::info!(found, replayed = sent, "write-ahead log replayed");
    }

    let listener = bind(&cfg.http.host, cfg.http.port).await?;
    tracing::info!(addr = %listener.local_addr().map_err(|e| e.to_string())?, "push listening");
    let router = Router::new()
        .route("/push", post(push_handler::<B>))
        .with_state(app.clone());
    status.ready.store(true, Ordering::Relaxed);
    if !shutdown.fired() {
        let s = shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { s.wait().await })
            .await
            .map_err(|e| format!("HTTP server: {e}"))?;
    }
    app.accepting.store(false, Ordering::Relaxed);
    status.ready.store(false, Ordering::Relaxed);
    tracing::info!("delivering buffered records");
    app.backend.close().await;
    let _ = app.deliveries.send(None);
    let _ = delivery_task.await;
    if let Some(w) = &app.wal {
        w.shutdown().await;
        tracing::info!(watermark = w.watermark(), "write-ahead log checkpointed");
    }
    let _ = metrics_server.await;
    tracing::info!("stopped");
    Ok(())
}
