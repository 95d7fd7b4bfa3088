//! How the planner takes each result back: a connection, a metadata
//! lookup, a ListOffsets or OffsetForLeaderEpoch answer, a fetch.

use std::sync::Arc;

use tokio::time::Instant;

use super::{
    find_part, part_error, parts_mut, ClusterUpdate, Connected, FetchPlanner, Job, Parts, SentFetch,
};
use crate::{
    client::consumer::{
        buffer::ReadyChunk,
        part::{Leader, OffsetSpec, Part, Phase},
        requests::{FetchAnswer, Item, ItemResult, PartAnswer},
        session::SessionOutcome,
        sizing, OffsetReset,
    },
    cluster::Metadata,
    error::{Error, ErrorKind},
    protocol::{ApiKey, ErrorCode},
};

impl FetchPlanner {
    /// A fetch connection to `broker` opened, or could not be opened.
    pub(in crate::client::consumer) fn handle_connected(
        &mut self,
        broker: i32,
        result: Result<Connected, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.connecting = false;
        match result {
            Ok(connected) => b.connection = Some(connected),
            Err(e) => {
                tracing::debug!(broker, error = %e, "consumer cannot reach broker");
                b.back_off(now);
                // The broker may be gone for good: look the leaders up again.
                self.lose_leaders_on(broker, e);
            }
        }
    }

    /// The fetch connection to `broker` closed.
    pub(in crate::client::consumer) fn handle_connection_lost(&mut self, broker: i32) {
        if let Some(b) = self.brokers.get_mut(&broker) {
            b.connection = None;
        }
    }

    /// Forgets the leader of every partition led by `broker`, which
    /// failed with `why`.
    fn lose_leaders_on(&mut self, broker: i32, why: &dyn std::fmt::Display) {
        for part in parts_mut(&mut self.parts) {
            if part.leader.is_some_and(|l| l.id == broker) {
                self.cluster_updates
                    .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                part.lose_leader();
                part.failed(format_args!("broker {broker}: {why}"));
            }
        }
    }

    /// A metadata lookup of `topics` finished.
    pub(in crate::client::consumer) fn handle_metadata(
        &mut self,
        topics: &[String],
        result: Result<&Metadata, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        self.metadata_busy = false;
        let timeout = self.settings.unknown_topic_timeout;
        for part in parts_mut(&mut self.parts) {
            if part.leader.is_some() || !topics.iter().any(|t| **t == *part.topic) {
                continue;
            }
            let md = match &result {
                Ok(md) => md,
                Err(e) => {
                    tracing::debug!(topic = %part.topic, error = %e, "consumer metadata lookup failed");
                    part.failed(e);
                    part.back_off(now);
                    continue;
                }
            };
            let topic = md.topics.get(&*part.topic);
            let info = topic
                .filter(|t| t.error.is_ok())
                .and_then(|t| t.partitions.get(&part.partition));
            let Some(info) = info else {
                match topic.map(|t| t.error) {
                    Some(code)
                        if !code.is_ok()
                            && code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                            && !code.is_retriable() =>
                    {
                        self.prefetched.push_error(part_error(
                            part,
                            Error::kafka(code, None),
                            ApiKey::METADATA,
                        ));
                        part.phase = Phase::Halted;
                    }
                    _ => {
                        // Unknown topic or partition: it may be being created.
                        let since = *part.unknown_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= timeout {
                            self.prefetched.push_error(part_error(
                                part,
                                Error::kafka(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                                ApiKey::METADATA,
                            ));
                            part.phase = Phase::Halted;
                        } else {
                            self.cluster_updates
                                .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                            part.failed("the topic or partition is unknown");
                            part.back_off(now);
                        }
                    }
                }
                continue;
            };
            part.unknown_since = None;
            match info.leader {
                Some(id)
                    if info.error.is_ok() || info.error == ErrorCode::REPLICA_NOT_AVAILABLE =>
                {
                    if let Some(t) = topic {
                        part.topic_id = t.id;
                    }
                    part.set_leader(Leader {
                        id,
                        epoch: info.leader_epoch,
                    });
                }
                _ => {
                    // An election is in progress.
                    self.cluster_updates
                        .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                    part.failed(format_args!("no leader ({})", info.error));
                    part.back_off(now);
                }
            }
        }
    }

    /// A ListOffsets request to `broker` for `items` finished.
    pub(in crate::client::consumer) fn handle_offsets(
        &mut self,
        broker: i32,
        items: &[Item],
        result: Result<Vec<ItemResult>, Error>,
        now: Instant,
    ) {
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker, error = %e, "ListOffsets failed");
                self.retry_items(items, &e, now);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut self.parts, item) else {
                continue;
            };
            if !matches!(part.phase, Phase::Resolve(_)) {
                continue;
            }
            if r.error.is_ok() {
                part.fetch_offset = r.offset;
                part.position = Some(r.offset);
                part.fetch_epoch = r.leader_epoch;
                part.position_epoch = r.leader_epoch;
                part.phase = Phase::Fetch;
                part.recovered(now);
            } else if let Some(e) = partition_failed(
                part,
                r.error,
                ApiKey::LIST_OFFSETS,
                &mut self.cluster_updates,
                now,
            ) {
                self.prefetched.push_error(e);
            }
        }
    }

    /// An OffsetForLeaderEpoch request to `broker` for `items` finished;
    /// `Ok(None)`: the broker cannot validate.
    pub(in crate::client::consumer) fn handle_validated(
        &mut self,
        broker: i32,
        items: &[Item],
        result: Result<Option<Vec<ItemResult>>, Error>,
        now: Instant,
    ) {
        let results = match result {
            Ok(Some(r)) => r,
            Ok(None) => {
                // The broker cannot validate: trust the position.
                for item in items {
                    if let Some(part) = live_part(&mut self.parts, item) {
                        if part.phase == Phase::Validate {
                            part.phase = Phase::Fetch;
                        }
                    }
                }
                return;
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "OffsetForLeaderEpoch failed");
                self.retry_items(items, &e, now);
                return;
            }
        };
        for (item, r) in items.iter().zip(results) {
            let Some(part) = live_part(&mut self.parts, item) else {
                continue;
            };
            if part.phase != Phase::Validate {
                continue;
            }
            if !r.error.is_ok() {
                if let Some(e) = partition_failed(
                    part,
                    r.error,
                    ApiKey::OFFSET_FOR_LEADER_EPOCH,
                    &mut self.cluster_updates,
                    now,
                ) {
                    self.prefetched.push_error(e);
                }
                continue;
            }
            part.recovered(now);
            if r.offset < 0 || r.leader_epoch < 0 {
                // The broker knows nothing of that epoch: like an offset
                // out of range.
                let (topic, partition) = (Arc::clone(&part.topic), part.partition);
                self.reset_offset(
                    &topic,
                    partition,
                    "the fetched epoch is unknown to the leader",
                );
                continue;
            }
            if r.offset >= part.fetch_offset {
                part.phase = Phase::Fetch;
                continue;
            }
            // Truncation: the log diverges from what was fetched at
            // `r.offset`. Buffered data past it is wrong; drop all of it and
            // fetch again from the position, or from the divergence point if
            // the application already saw diverging records.
            let (topic, partition) = (Arc::clone(&part.topic), part.partition);
            let position = part.position.unwrap_or(part.fetch_offset);
            let truncated_below_position = r.offset < position;
            let policy = self.settings.offset_reset;
            tracing::warn!(
                topic = %topic, partition, divergence = r.offset, fetch_offset = part.fetch_offset, position,
                "log truncation detected after a leader change"
            );
            self.restart(&topic, partition);
            let Some(part) = find_part(&mut self.parts, &topic, partition) else {
                continue;
            };
            if truncated_below_position && policy == OffsetReset::Error {
                part.phase = Phase::Halted;
                let e = part_error(
                    part,
                    Error::new(ErrorKind::Kafka(ErrorCode::OFFSET_OUT_OF_RANGE)).with_message(format!(
                        "log truncated at offset {} below the position {position} after a leader change",
                        r.offset
                    )),
                    ApiKey::OFFSET_FOR_LEADER_EPOCH,
                );
                self.prefetched.push_error(e);
                continue;
            }
            let resume = position.min(r.offset);
            part.fetch_offset = resume;
            part.position = Some(resume);
            part.fetch_epoch = r.leader_epoch;
            part.phase = Phase::Fetch;
        }
    }

    /// A whole ListOffsets/OffsetForLeaderEpoch request failed.
    fn retry_items(&mut self, items: &[Item], error: &Error, now: Instant) {
        for item in items {
            let Some(part) = find_part(&mut self.parts, &item.topic, item.partition) else {
                continue;
            };
            part.busy = false;
            part.failed(error);
            if error.kind() == ErrorKind::Connection || error.kind() == ErrorKind::Timeout {
                self.cluster_updates
                    .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                part.lose_leader();
            }
            part.back_off(now);
        }
    }

    /// Applies the reset policy to a partition whose position is not valid.
    fn reset_offset(&mut self, topic: &str, partition: i32, why: &str) {
        let policy = self.settings.offset_reset;
        let spec = match policy {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                let Some(part) = find_part(&mut self.parts, topic, partition) else {
                    return;
                };
                part.phase = Phase::Halted;
                let offset = part.fetch_offset;
                let e = part_error(
                    part,
                    Error::kafka(ErrorCode::OFFSET_OUT_OF_RANGE, None)
                        .with_message(format!("fetch offset {offset}: {why}")),
                    ApiKey::FETCH,
                );
                self.prefetched.push_error(e);
                return;
            }
        };
        self.restart(topic, partition);
        let Some(part) = find_part(&mut self.parts, topic, partition) else {
            return;
        };
        tracing::info!(
            topic,
            partition,
            offset = part.fetch_offset,
            ?policy,
            "resetting the offset: {why}"
        );
        part.phase = Phase::Resolve(spec);
        part.position = None;
    }

    /// A fetch finished.
    pub(in crate::client::consumer) fn handle_fetched(
        &mut self,
        sent: SentFetch,
        result: Result<FetchAnswer, &dyn std::fmt::Display>,
        now: Instant,
    ) {
        let SentFetch {
            broker,
            plan,
            reserved,
            covered,
        } = sent;
        self.prefetched.reserved = self.prefetched.reserved.saturating_sub(reserved);
        let Some(b) = self.brokers.get_mut(&broker) else {
            return;
        };
        b.fetching = false;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(broker, error = %e, "fetch failed");
                b.session.on_failure();
                b.back_off(now);
                // Leadership may have moved with the broker's troubles.
                self.lose_leaders_on(broker, e);
                return;
            }
        };
        let outcome = b
            .session
            .on_response(&plan, answer.error_code, answer.session_id);
        let top = ErrorCode(answer.error_code);
        if !top.is_ok() {
            tracing::debug!(broker, error = %top, "fetch failed at the top level");
            if top != ErrorCode::FETCH_SESSION_ID_NOT_FOUND
                && top != ErrorCode::INVALID_FETCH_SESSION_EPOCH
            {
                b.back_off(now);
            }
        } else {
            b.retry_at = None;
            b.backoff.reset();
        }
        if outcome == SessionOutcome::Reset {
            return;
        }
        if top.is_ok() {
            // The broker answered for every partition of the fetch, also
            // those it left out for having nothing new: none is stalled.
            for (topic, partition, ctx) in &covered {
                if let Some(part) = find_part(&mut self.parts, topic, *partition) {
                    if part.generation == ctx.generation {
                        part.alive(now);
                    }
                }
            }
        }
        for p in answer.partitions {
            self.apply_partition(broker, p, now);
        }
    }

    /// Applies one partition of a fetch response.
    fn apply_partition(&mut self, broker: i32, p: PartAnswer, now: Instant) {
        let max_buffered = self.settings.max_buffered;
        let max_partition_bytes = self.settings.max_partition_bytes;
        let buffered = self.prefetched.buffered;
        let Some(part) = find_part(&mut self.parts, &p.topic, p.partition) else {
            return;
        };
        let current = part.generation == p.ctx.generation
            && part.phase == Phase::Fetch
            && part.fetch_offset == p.ctx.fetch_offset
            && part.leader.is_some_and(|l| l.id == broker);
        if !current {
            return;
        }
        if p.high_watermark >= 0 {
            part.high_watermark = Some(p.high_watermark);
        }
        if p.last_stable_offset >= 0 {
            part.last_stable_offset = Some(p.last_stable_offset);
        }
        if p.error.is_ok() {
            part.alive(now);
        }
        if p.log_start_offset >= 0 {
            part.log_start_offset = Some(p.log_start_offset);
        }
        if p.error == ErrorCode::OFFSET_OUT_OF_RANGE {
            let (topic, partition) = (Arc::clone(&part.topic), part.partition);
            self.reset_offset(&topic, partition, "out of range");
            return;
        }
        if p.error.is_leader_moved() {
            tracing::debug!(topic = %part.topic, partition = part.partition, error = %p.error, "leader changed");
            part.failed(format_args!("Fetch answered {}", p.error));
            match p.leader_hint {
                Some((id, epoch, endpoint)) if id >= 0 && epoch >= 0 && id != broker => {
                    // KIP-951: move to the named leader without a metadata
                    // round trip.
                    self.cluster_updates.push(ClusterUpdate::LeaderHint {
                        topic: Arc::clone(&part.topic),
                        partition: part.partition,
                        leader: id,
                        epoch,
                        endpoint,
                    });
                    part.set_leader(Leader { id, epoch });
                }
                _ => {
                    self.cluster_updates
                        .push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
                    part.lose_leader();
                    part.back_off(now);
                }
            }
            return;
        }
        if !p.error.is_ok() {
            if let Some(e) =
                partition_failed(part, p.error, ApiKey::FETCH, &mut self.cluster_updates, now)
            {
                self.prefetched.push_error(e);
            }
            return;
        }
        let chunk = match p.chunk {
            None => return,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                // Corrupt data: tell the application and try again later
                // from the same offset (as the Java consumer does).
                let offset = part.fetch_offset;
                part.back_off(now);
                let e = part_error(
                    part,
                    Error::protocol(format!(
                        "cannot decode the records fetched at offset {offset}"
                    ))
                    .with_source(e),
                    ApiKey::FETCH,
                );
                self.prefetched.push_error(e);
                return;
            }
        };
        if chunk.stuck {
            part.phase = Phase::Halted;
            let offset = part.fetch_offset;
            let e = part_error(
                part,
                Error::new(ErrorKind::Kafka(ErrorCode::MESSAGE_TOO_LARGE)).with_message(format!(
                    "the batch at offset {offset} is larger than the fetch size limit"
                )),
                ApiKey::FETCH,
            );
            self.prefetched.push_error(e);
            return;
        }
        if chunk.next_offset <= part.fetch_offset {
            return;
        }
        if buffered > 0 && buffered.saturating_add(p.wire_bytes) > max_buffered {
            // Over budget (a batch larger than the partition limit came
            // along): leave it for a later fetch from the same offset.
            return;
        }
        part.fetch_offset = chunk.next_offset;
        part.fetch_bytes = sizing::next_fetch_bytes(
            max_partition_bytes,
            chunk.wire_used,
            chunk.mem_bytes,
            chunk.records.len(),
        );
        if let Some(epoch) = chunk.last_epoch {
            part.fetch_epoch = epoch;
        }
        part.recovered(now);
        let ready = ReadyChunk {
            topic: Arc::clone(&part.topic),
            partition: part.partition,
            generation: part.generation,
            records: chunk.records,
            next_offset: chunk.next_offset,
            last_epoch: chunk.last_epoch,
            bytes: chunk.mem_bytes,
        };
        self.prefetched.push_chunk(ready);
    }

    /// Planned work never reported back (its sub-task panicked, a bug):
    /// undo what it had marked busy.
    pub(in crate::client::consumer) fn handle_lost_job(&mut self, job: Job, now: Instant) {
        match job {
            Job::Connect(broker) => {
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.connecting = false;
                    b.back_off(now);
                }
            }
            Job::Metadata => self.metadata_busy = false,
            Job::Parts(parts) => {
                for (topic, partition) in parts {
                    if let Some(p) = find_part(&mut self.parts, &topic, partition) {
                        p.busy = false;
                        p.back_off(now);
                    }
                }
            }
            Job::Fetch { broker, reserved } => {
                self.prefetched.reserved = self.prefetched.reserved.saturating_sub(reserved);
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.fetching = false;
                    b.session.on_failure();
                    b.back_off(now);
                }
            }
        }
    }
}

/// The partition, if it is still at the item's generation; clears its busy
/// flag either way.
fn live_part<'a>(parts: &'a mut Parts, item: &Item) -> Option<&'a mut Part> {
    let part = find_part(parts, &item.topic, item.partition)?;
    part.busy = false;
    (part.generation == item.generation).then_some(part)
}

/// Reacts to a partition-level error code; returns an error for the
/// application when the partition stops.
fn partition_failed(
    part: &mut Part,
    code: ErrorCode,
    api: ApiKey,
    updates: &mut Vec<ClusterUpdate>,
    now: Instant,
) -> Option<Error> {
    part.failed(format_args!("{} answered {code}", api.name()));
    if code.is_leader_moved() {
        updates.push(ClusterUpdate::Invalidate(Arc::clone(&part.topic)));
        part.lose_leader();
        part.back_off(now);
        None
    } else if code.is_retriable() {
        part.back_off(now);
        None
    } else {
        part.phase = Phase::Halted;
        Some(part_error(part, Error::kafka(code, None), api))
    }
}
