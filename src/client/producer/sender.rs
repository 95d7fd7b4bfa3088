//! The background task that turns ready batches into ProduceRequests.
//!
//! One loop plans: it expires old batches, drains ready ones grouped by
//! leader (one request per broker, within the in-flight cap), and sleeps
//! until the next linger end or retry time, or until woken. Each request
//! runs in its own task (encoding and compressing its batches there, off the
//! accumulator's lock) and reports its batches' results back to the
//! accumulator.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::{sync::mpsc, time::Instant};

use super::{
    accumulator::{Accumulator, Drained, SendResult},
    alarm::Alarm,
    batch::ProducerBatch,
    txn::{self, TxnState},
    Acks, Shared,
};
use crate::{
    client::partition::outcome::{produce_error_message, produce_leader_hint, LeaderHint},
    cluster::{Backoff, Metadata, Role},
    connection::BrokerConnection,
    error::{Error, ErrorKind},
    protocol::{
        messages::{
            produce_request::{PartitionProduceData, TopicProduceData},
            produce_response::ProduceResponse,
            ProduceRequest,
        },
        ApiKey, ErrorCode, Message,
    },
};

/// The state behind the producer's mutex.
pub(crate) struct State {
    pub(crate) acc: Accumulator,
    /// Requests in flight per broker id.
    broker_in_flight: HashMap<i32, usize>,
    /// An InitProducerId task is running.
    producer_id_task: bool,
    /// A metadata refresh task is running.
    refreshing: bool,
    /// When the last refresh for leaderless partitions started.
    last_refresh: Option<Instant>,
    /// When the topics in use were last refreshed on schedule (partition
    /// counts grow, leaders move without errors on our side).
    last_periodic: Instant,
    /// The sender task has ended.
    pub(crate) finished: bool,
    /// A transactional producer's transaction.
    pub(crate) txn: Option<TxnState>,
}

impl State {
    pub(crate) fn new(acc: Accumulator, txn: Option<TxnState>) -> Self {
        Self {
            acc,
            txn,
            broker_in_flight: HashMap::new(),
            producer_id_task: false,
            refreshing: false,
            last_refresh: None,
            last_periodic: Instant::now(),
            finished: false,
        }
    }
}

/// The sender loop; ends once the producer is closed and everything
/// buffered is delivered or failed.
pub(crate) async fn run(shared: Arc<Shared>) {
    let max_per_broker = shared.cfg.max_in_flight_per_broker;
    let refresh_interval = shared.cfg.retry_backoff.initial;
    let max_age = shared.cluster.config().metadata_max_age;
    let mut dispatch: HashMap<i32, mpsc::UnboundedSender<Drained>> = HashMap::new();
    // The snapshot the sticky partitioner's leader lists were taken from.
    let mut leaders_from: Option<Arc<Metadata>> = None;
    // Wakes the loop on time (see `alarm`); dropped with this future.
    let alarm = {
        let shared = Arc::downgrade(&shared);
        Alarm::start(move || shared.upgrade().map(|s| s.wake.notify_one()).is_some())
    };
    loop {
        let now = Instant::now();
        // Read outside the lock; leader lookups below only read this snapshot.
        let md = shared.cluster.cached_metadata();
        let new_metadata = !leaders_from.as_ref().is_some_and(|l| Arc::ptr_eq(l, &md));
        let mut no_leader = Vec::new();
        let (requests, wake_at, start_pid, refresh, add_partitions) = {
            let mut st = shared.lock();
            let st = &mut *st;
            if new_metadata {
                st.acc.set_leaders(|topic, partition| {
                    md.topics
                        .get(topic)
                        .and_then(|t| t.partitions.get(&partition))
                        .is_some_and(|p| p.leader.is_some())
                });
                leaders_from = Some(md.clone());
            }
            st.acc.expire_batches(now);
            if st.acc.is_closing() && st.acc.is_empty() {
                st.finished = true;
                break;
            }
            // Under transaction version 2 a partition joins the transaction
            // with its first produce request.
            if let Some(t) = st.txn.as_mut().filter(|t| t.partitions_join_with_produce()) {
                let partitions = st.acc.partitions_to_add();
                if !partitions.is_empty() {
                    st.acc.partitions_added(&partitions);
                    t.joined_with_produce();
                }
            }
            let in_flight = st.broker_in_flight.clone();
            let requests = st.acc.drain(
                now,
                |topic, partition| {
                    md.topics
                        .get(topic)
                        .and_then(|t| t.partitions.get(&partition))
                        .and_then(|p| p.leader)
                },
                |broker| in_flight.get(&broker).copied().unwrap_or(0) < max_per_broker,
                &mut no_leader,
            );
            for r in &requests {
                *st.broker_in_flight.entry(r.broker).or_insert(0) += 1;
            }
            if let Some(t) = st.txn.as_mut() {
                let acc = &st.acc;
                if let Some(failure) =
                    t.unsent_failure(acc.epoch_bump_required(), || acc.txn_failure())
                {
                    st.acc.fail_unsent(failure);
                }
            }
            // Partitions with batches join the transaction before any is sent.
            let mut add_partitions = None;
            if let Some(t) = st.txn.as_mut().filter(|t| t.may_add_partitions()) {
                let partitions = st.acc.partitions_to_add();
                if !partitions.is_empty() {
                    t.adding_partitions();
                    add_partitions = Some(partitions);
                }
            }
            let start_pid = !st.producer_id_task && st.acc.wants_producer_id();
            if start_pid {
                st.producer_id_task = true;
            }
            let mut wake_at = st.acc.next_wakeup();
            let mut refresh = None;
            if now.duration_since(st.last_periodic) >= max_age && !st.refreshing {
                st.last_periodic = now;
                let topics = st.acc.topics();
                if !topics.is_empty() {
                    st.refreshing = true;
                    refresh = Some(topics);
                }
            }
            if !no_leader.is_empty() && refresh.is_none() {
                let due = st.last_refresh.is_none_or(|t| t + refresh_interval <= now);
                if !st.refreshing && due {
                    st.refreshing = true;
                    st.last_refresh = Some(now);
                    refresh = Some(std::mem::take(&mut no_leader));
                } else {
                    // Look again once another refresh is allowed.
                    let next = st.last_refresh.map_or(now, |t| t + refresh_interval);
                    wake_at = Some(wake_at.map_or(next, |w| w.min(next)));
                }
            }
            (requests, wake_at, start_pid, refresh, add_partitions)
        };
        if let Some(partitions) = add_partitions {
            tokio::spawn(super::txn::add_partitions(shared.clone(), partitions));
        }
        let sent_any = !requests.is_empty();
        for r in requests {
            let broker = r.broker;
            let tx = dispatch
                .entry(broker)
                .or_insert_with(|| spawn_broker_task(shared.clone(), broker));
            if let Err(mpsc::error::SendError(r)) = tx.send(r) {
                // The task is gone (it only ends when its channel closes, so
                // this is a panic in it): start another.
                let tx = spawn_broker_task(shared.clone(), broker);
                let _ = tx.send(r);
                dispatch.insert(broker, tx);
            }
        }
        if start_pid {
            tokio::spawn(obtain_producer_id(shared.clone()));
        }
        if let Some(topics) = refresh {
            tokio::spawn(refresh_metadata(shared.clone(), topics));
        }
        if sent_any {
            // More may be ready right away (several full batches queued).
            tokio::task::yield_now().await;
            continue;
        }
        // Times already past are blocked on something that wakes us when it
        // changes (a response, a producer id, metadata): wait for that.
        match wake_at.filter(|&t| t > now) {
            Some(at) => {
                if let Some(alarm) = &alarm {
                    alarm.set(at.into_std());
                }
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
    shared.finished.notify_waiters();
}

/// Refreshes metadata for topics with leaderless partitions and learns
/// partition counts that grew.
async fn refresh_metadata(shared: Arc<Shared>, topics: Vec<String>) {
    let result = shared.cluster.refresh_metadata(Some(&topics)).await;
    {
        let mut st = shared.lock();
        st.refreshing = false;
        if let Ok(md) = &result {
            for t in md.topics.values().filter(|t| t.error.is_ok()) {
                if let Some(last) = t.partitions.keys().next_back() {
                    if st.acc.partition_count(&t.name).is_some() {
                        st.acc.set_partition_count(&t.name, last.saturating_add(1));
                    }
                }
            }
        }
    }
    if let Err(e) = result {
        tracing::debug!(error = %e, "producer metadata refresh failed");
    }
    shared.wake.notify_one();
}

/// Obtains a producer id (or bumps the epoch), retrying with backoff.
async fn obtain_producer_id(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(&shared.cfg.retry_backoff, None);
    loop {
        let bump_from = shared.lock().acc.bump_from();
        shared
            .metrics
            .producer_id_requests
            .fetch_add(1, Ordering::Relaxed);
        match init_producer_id(&shared, bump_from).await {
            Ok((id, epoch)) => {
                tracing::debug!(
                    producer_id = id,
                    epoch,
                    bumped = bump_from.is_some(),
                    "producer id"
                );
                if bump_from.is_some() {
                    shared.metrics.epoch_bumps.fetch_add(1, Ordering::Relaxed);
                }
                let mut st = shared.lock();
                st.acc.set_producer_id(id, epoch);
                st.producer_id_task = false;
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "InitProducerId failed");
                let mut st = shared.lock();
                if !st.acc.producer_id_failed(&e) {
                    st.producer_id_task = false;
                    break;
                }
            }
        }
        shared.wake.notify_one();
        tokio::time::sleep(backoff.next_delay()).await;
    }
    shared.wake.notify_one();
}

async fn init_producer_id(
    shared: &Shared,
    bump_from: Option<(i64, i16)>,
) -> Result<(i64, i16), Error> {
    let conn = shared.cluster.any_broker().await?;
    let version = conn.version_for(ApiKey::INIT_PRODUCER_ID).ok_or_else(|| {
        Error::new(ErrorKind::Unsupported)
            .with_message("the broker does not support InitProducerId")
    })?;
    // The timeout is only meaningful for transactions; the Java client
    // sends the max.
    let req = txn::init_producer_id_request(None, Duration::MAX, bump_from, version);
    let resp = tokio::time::timeout(shared.request_timeout, conn.request_version(&req, version))
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout).with_api(ApiKey::INIT_PRODUCER_ID))??;
    txn::producer_id_granted(&resp)
}

/// Starts the task that sends the requests for `broker`, in order.
fn spawn_broker_task(shared: Arc<Shared>, broker: i32) -> mpsc::UnboundedSender<Drained> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(broker_task(shared, broker, rx));
    tx
}

/// Sends the requests drained for one broker, pipelined but strictly in the
/// order they were drained: the broker must see a partition's batches in
/// sequence order (it accepts any first sequence from a producer it does
/// not know yet, so a later batch overtaking an earlier one would make the
/// earlier one a permanent "out of order"). Requests are handed to the
/// connection one after the other from this single task, and the
/// connection keeps that order on the wire.
async fn broker_task(shared: Arc<Shared>, broker: i32, mut rx: mpsc::UnboundedReceiver<Drained>) {
    let mut pending = FuturesUnordered::new();
    let mut conn: Option<BrokerConnection> = None;
    loop {
        tokio::select! {
            // In-flight requests first: a newly pushed one is polled (and so
            // queued on the connection) before the next is prepared.
            biased;
            Some(()) = pending.next(), if !pending.is_empty() => {}
            item = rx.recv() => {
                let Some(drained) = item else { break };
                let prepared = prepare(drained);
                if prepared.batches.is_empty() {
                    settle(&shared, broker, prepared, Ok(None));
                    continue;
                }
                // Connected here, in order, rather than inside the request
                // futures, which could then be released in any order.
                let c = match conn.as_ref().filter(|c| !c.is_closed()) {
                    Some(c) => Ok(c.clone()),
                    None => shared
                        .cluster
                        .broker_for(broker, Role::Produce)
                        .await
                        .map_err(Error::from),
                };
                match c {
                    Ok(c) => {
                        conn = Some(c.clone());
                        pending.push(execute(shared.clone(), broker, c, prepared));
                    }
                    Err(e) => settle(&shared, broker, prepared, Err(e)),
                }
            }
        }
    }
    while pending.next().await.is_some() {}
}

/// A KIP-951 leader hint for a topic and partition.
type PartitionHint = (Arc<str>, i32, LeaderHint);

/// A request's batches, encoded.
struct Prepared {
    topic_data: Vec<TopicProduceData>,
    batches: HashMap<Arc<str>, HashMap<i32, ProducerBatch>>,
    /// Batches that could not be encoded.
    failed: Vec<(ProducerBatch, SendResult)>,
    /// Batches in it sent again after a failed attempt.
    retried: u64,
    /// Batches, records and batch bytes in it.
    batch_count: u64,
    records: u64,
    bytes: u64,
}

/// Encodes (and compresses, on first send) the drained batches.
fn prepare(drained: Drained) -> Prepared {
    let mut batches: HashMap<Arc<str>, HashMap<i32, ProducerBatch>> = HashMap::new();
    let mut topic_data: Vec<TopicProduceData> = Vec::new();
    let mut failed = Vec::new();
    let (mut sent, mut retried, mut records, mut bytes_sent) = (0u64, 0u64, 0u64, 0u64);
    for (mut batch, state) in drained.batches {
        if batch.attempts > 1 {
            retried += 1;
        }
        match batch.encode(state) {
            Ok(bytes) => {
                bytes_sent += bytes.len() as u64;
                let partition = PartitionProduceData {
                    index: batch.partition(),
                    records: Some(bytes),
                    ..Default::default()
                };
                match topic_data.iter_mut().find(|t| *t.name == **batch.topic()) {
                    Some(t) => t.partition_data.push(partition),
                    None => topic_data.push(TopicProduceData {
                        name: batch.topic().to_string(),
                        partition_data: vec![partition],
                        ..Default::default()
                    }),
                }
                sent += 1;
                records += u64::try_from(batch.record_count).unwrap_or(0);
                batches
                    .entry(batch.topic().clone())
                    .or_default()
                    .insert(batch.partition(), batch);
            }
            Err(e) => failed.push((
                batch,
                SendResult::Transport {
                    retriable: false,
                    ambiguous: false,
                    kind: ErrorKind::InvalidInput,
                    message: format!("encoding the batch failed: {e}"),
                },
            )),
        }
    }
    Prepared {
        topic_data,
        batches,
        failed,
        retried,
        batch_count: sent,
        records,
        bytes: bytes_sent,
    }
}

/// Sends one prepared request and settles its batches.
async fn execute(shared: Arc<Shared>, broker: i32, conn: BrokerConnection, mut prepared: Prepared) {
    // Counted when sent: a request that never found a connection was not.
    let m = &shared.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    m.retries.fetch_add(prepared.retried, Ordering::Relaxed);
    m.batches_sent
        .fetch_add(prepared.batch_count, Ordering::Relaxed);
    m.records_sent
        .fetch_add(prepared.records, Ordering::Relaxed);
    m.batch_bytes_sent
        .fetch_add(prepared.bytes, Ordering::Relaxed);
    if prepared.retried > 0 {
        conn.count_produce_retries(prepared.retried);
    }
    let topic_data = std::mem::take(&mut prepared.topic_data);
    let outcome = produce(&shared, &conn, topic_data).await;
    if outcome.is_err() && conn.is_closed() {
        // The cluster re-establishes it on the next use.
        tracing::debug!(broker, "producer connection closed");
    }
    settle(&shared, broker, prepared, outcome);
}

/// Applies a request's outcome to each of its batches.
fn settle(
    shared: &Arc<Shared>,
    broker: i32,
    prepared: Prepared,
    outcome: Result<Option<ProduceResponse>, Error>,
) {
    let Prepared {
        mut batches,
        failed,
        ..
    } = prepared;
    let now = Instant::now();
    let m = &shared.metrics;
    let mut refresh_topics: Vec<Arc<str>> = Vec::new();
    let mut hints: Vec<PartitionHint> = Vec::new();
    let mut results = failed;
    match outcome {
        Ok(None) => {
            // acks=0: written to the socket is all anyone will know.
            for b in batches.drain().flat_map(|(_, ps)| ps.into_values()) {
                results.push((
                    b,
                    SendResult::Acked {
                        base_offset: None,
                        log_append_time: None,
                    },
                ));
            }
        }
        Ok(Some(resp)) => {
            if let Some(ms) = resp.throttle_time_ms().filter(|&ms| ms > 0) {
                m.throttled_responses.fetch_add(1, Ordering::Relaxed);
                m.throttle_time_ms
                    .fetch_add(u64::try_from(ms).unwrap_or(0), Ordering::Relaxed);
            }
            for t in &resp.responses {
                for p in &t.partition_responses {
                    // A partition we did not send to is ignored.
                    let Some(b) = batches
                        .get_mut(t.name.as_str())
                        .and_then(|ps| ps.remove(&p.index))
                    else {
                        continue;
                    };
                    let code = ErrorCode(p.error_code);
                    let result = if code.is_ok() {
                        let report = shared.acks != Acks::None;
                        SendResult::Acked {
                            base_offset: (report && p.base_offset >= 0).then_some(p.base_offset),
                            log_append_time: (p.log_append_time_ms >= 0)
                                .then_some(p.log_append_time_ms),
                        }
                    } else {
                        if let Some(hint) = produce_leader_hint(&resp, p) {
                            hints.push((b.topic().clone(), p.index, hint));
                        }
                        SendResult::Error {
                            code,
                            message: produce_error_message(p),
                        }
                    };
                    results.push((b, result));
                }
            }
            // Partitions the broker did not answer for: treat as a broken
            // exchange (it may or may not have written them).
            for b in batches.drain().flat_map(|(_, ps)| ps.into_values()) {
                results.push((
                    b,
                    SendResult::Transport {
                        retriable: true,
                        ambiguous: true,
                        kind: ErrorKind::Protocol,
                        message: "the produce response lacks this partition".into(),
                    },
                ));
            }
        }
        Err(e) => {
            let result = SendResult::transport(&e, shared.acks == Acks::None);
            for b in batches.drain().flat_map(|(_, ps)| ps.into_values()) {
                results.push((b, result.clone()));
            }
        }
    }

    let start_refresh = {
        let mut st = shared.lock();
        for (b, result) in results {
            let topic = b.topic().clone();
            let followup = st.acc.complete(b, result, now);
            if followup.refresh_metadata && !refresh_topics.contains(&topic) {
                refresh_topics.push(topic);
            }
        }
        if let Some(n) = st.broker_in_flight.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        let start = !refresh_topics.is_empty() && !st.refreshing;
        if start {
            st.refreshing = true;
            st.last_refresh = Some(now);
        }
        start
    };
    for t in &refresh_topics {
        shared.cluster.invalidate_topic(t);
    }
    // Hints after invalidation, so the hinted leader is used right away.
    for (topic, partition, h) in hints {
        shared.cluster.apply_leader_hint(
            &topic,
            partition,
            h.leader_id,
            h.leader_epoch,
            h.endpoint,
        );
    }
    if start_refresh {
        let topics = refresh_topics.iter().map(|t| t.to_string()).collect();
        tokio::spawn(refresh_metadata(shared.clone(), topics));
    }
    shared.wake.notify_one();
}

/// Sends one ProduceRequest; `None` for acks=0 (no response).
async fn produce(
    shared: &Shared,
    conn: &BrokerConnection,
    topic_data: Vec<TopicProduceData>,
) -> Result<Option<ProduceResponse>, Error> {
    let timeout = shared.request_timeout;
    let acks = shared.acks.wire();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let Some(version) = conn.version_for(ApiKey::PRODUCE) else {
        return Err(conn.unsupported::<ProduceRequest>(None).into());
    };
    let txn_v2 = shared.lock().txn.as_ref().is_some_and(TxnState::uses_v2);
    let version = txn::produce_version(txn_v2, version)?;
    // The batches are attached to the frame, not copied into it.
    let transactional_id = shared.cfg.transactional_id.as_deref();
    let encoded = conn.encode_with::<ProduceRequest>(version, |w| {
        write_produce_body(w, version, transactional_id, acks, timeout_ms, &topic_data)
    })?;
    if shared.acks == Acks::None {
        // The broker sends no response to acks=0: the request is done once
        // written.
        return match tokio::time::timeout(timeout, conn.send_encoded_no_response(encoded)).await {
            Ok(r) => r.map(|()| None).map_err(Error::from),
            // Handed to the connection: it may still be written.
            Err(_) => Err(Error::new(ErrorKind::Timeout)
                .with_api(ApiKey::PRODUCE)
                .with_message(format!("not written within {timeout:?}"))
                .with_ambiguous(true)),
        };
    }
    match tokio::time::timeout(timeout, conn.request_encoded::<ProduceRequest>(encoded)).await {
        Ok(r) => Ok(Some(r?)),
        // The request was sent: the broker may still write it.
        Err(_) => Err(Error::new(ErrorKind::Timeout)
            .with_api(ApiKey::PRODUCE)
            .with_message(format!("no response within {timeout:?}"))
            .with_ambiguous(true)),
    }
}

/// Writes the body of a ProduceRequest at `version` carrying `topics`: the
/// bytes [`ProduceRequest`]'s own encoder writes (checked by a test),
/// except that each record batch is attached to the frame by reference
/// rather than copied into it.
fn write_produce_body(
    w: &mut crate::connection::FrameWriter,
    version: i16,
    transactional_id: Option<&str>,
    acks: i16,
    timeout_ms: i32,
    topics: &[TopicProduceData],
) -> Result<(), crate::protocol::EncodeError> {
    use crate::protocol::{EncodeError, WriteExt};
    use bytes::BufMut;
    if !(ProduceRequest::MIN_VERSION..=ProduceRequest::MAX_VERSION).contains(&version) {
        return Err(EncodeError::UnsupportedVersion {
            what: "ProduceRequest",
            version,
        });
    }
    let flexible = ProduceRequest::is_flexible(version);
    let b = w.buf();
    if version >= 3 {
        b.put_nullable_string(transactional_id, flexible)?;
    }
    b.put_i16(acks);
    b.put_i32(timeout_ms);
    b.put_array_len(Some(topics.len()), flexible)?;
    for t in topics {
        let b = w.buf();
        b.put_string(&t.name, flexible)?;
        b.put_array_len(Some(t.partition_data.len()), flexible)?;
        for p in &t.partition_data {
            let b = w.buf();
            b.put_i32(p.index);
            match &p.records {
                Some(records) => {
                    // The length prefix `put_byte_string` would write.
                    let len = u32::try_from(records.len())
                        .ok()
                        .filter(|&l| l < i32::MAX as u32)
                        .ok_or(EncodeError::TooLong {
                            what: "bytes",
                            len: records.len(),
                            max: i32::MAX as usize - 1,
                        })?;
                    if flexible {
                        b.put_unsigned_varint(len + 1);
                    } else {
                        b.put_u32(len);
                    }
                    w.attach(records.clone());
                }
                None => b.put_nullable_byte_string(None, flexible)?,
            }
            if flexible {
                // No tagged fields.
                w.buf().put_unsigned_varint(0);
            }
        }
        if flexible {
            w.buf().put_unsigned_varint(0);
        }
    }
    if flexible {
        w.buf().put_unsigned_varint(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::connection::{ConnectionCore, EncodedRequest};

    /// The bytes a fresh connection would write for `req`.
    fn wire(req: EncodedRequest) -> Vec<u8> {
        let mut core = ConnectionCore::new(1 << 20);
        core.queue(req, ()).expect("queue");
        std::iter::from_fn(|| core.poll_transmit())
            .collect::<Vec<_>>()
            .concat()
    }

    #[test]
    fn produce_body_matches_the_generated_encoder() {
        let batch = |len: usize, fill: u8| Bytes::from(vec![fill; len]);
        let topics = vec![
            TopicProduceData {
                name: "first".into(),
                partition_data: vec![
                    PartitionProduceData {
                        index: 0,
                        // Large enough to be attached, not copied.
                        records: Some(batch(70_000, 1)),
                        ..Default::default()
                    },
                    PartitionProduceData {
                        index: 3,
                        records: Some(batch(100, 2)),
                        ..Default::default()
                    },
                    PartitionProduceData {
                        index: 4,
                        records: None,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            TopicProduceData {
                name: "second".into(),
                partition_data: vec![PartitionProduceData {
                    index: 7,
                    records: Some(batch(20_000, 3)),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        for version in ProduceRequest::MIN_VERSION..=ProduceRequest::MAX_VERSION {
            for (acks, txn) in [(0i16, None), (1, None), (-1, None), (-1, Some("txn-1"))] {
                let req = ProduceRequest {
                    transactional_id: txn.filter(|_| version >= 3).map(str::to_owned),
                    acks,
                    timeout_ms: 30_000,
                    topic_data: topics.clone(),
                    ..Default::default()
                };
                let generated =
                    wire(EncodedRequest::new(&req, version, Some("client")).expect("encode"));
                let ours = wire(
                    EncodedRequest::with_body::<ProduceRequest>(version, Some("client"), |w| {
                        write_produce_body(w, version, txn, acks, 30_000, &topics)
                    })
                    .expect("encode"),
                );
                assert_eq!(ours, generated, "version {version}, acks {acks}");
            }
        }
        let past = ProduceRequest::MAX_VERSION + 1;
        let unsupported = EncodedRequest::with_body::<ProduceRequest>(past, None, |w| {
            write_produce_body(w, past, None, -1, 1, &topics)
        });
        assert!(unsupported.is_err());
    }
}
