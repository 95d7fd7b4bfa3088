//! Fault injection: errors, delays, lost responses and throttling for
//! chosen requests, and cluster events a real broker cannot easily be made
//! to produce on demand (leader moves, log truncation, dropped
//! connections).
//!
//! ```no_run
//! # async fn demo(cluster: &rskafka_fake::FakeCluster) -> Result<(), rskafka_fake::Error> {
//! use rskafka::{ApiKey, ErrorCode};
//! use rskafka_fake::Fault;
//!
//! // The next two Produce requests for partition 0 of "events" fail.
//! cluster.inject(
//!     Fault::error(ApiKey::PRODUCE, ErrorCode::NOT_LEADER_OR_FOLLOWER)
//!         .times(2)
//!         .on_partition("events", 0),
//! );
//! // Partition 0's leadership moves to broker 2 (its leader epoch is bumped).
//! cluster.move_leader("events", 0, 2)?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use rskafka::protocol::{ApiKey, ErrorCode};

use crate::{Error, FakeCluster};

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// The handler answers with this error code: for every partition of
    /// the request (or the one partition the fault names), or as the
    /// top-level error of APIs that have one.
    Error(ErrorCode),
    /// The response is sent after this delay (later requests on the same
    /// connection wait too, as they would behind a slow broker).
    Delay(Duration),
    /// The request is handled but never answered; later requests on the
    /// connection are answered (the client sees its request time out).
    DropResponse,
    /// The response carries this `throttle_time_ms`.
    Throttle(i32),
}

/// A fault for requests of one API: what happens, to how many requests,
/// optionally only on one broker or for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    api: ApiKey,
    action: FaultAction,
    /// `None`: until [`FakeCluster::clear_faults`].
    remaining: Option<u32>,
    broker: Option<i32>,
    partition: Option<(String, i32)>,
}

impl Fault {
    fn new(api: ApiKey, action: FaultAction) -> Self {
        Self {
            api,
            action,
            remaining: Some(1),
            broker: None,
            partition: None,
        }
    }

    /// The next request of `api` fails with `code`.
    pub fn error(api: ApiKey, code: ErrorCode) -> Self {
        Self::new(api, FaultAction::Error(code))
    }

    /// The response to the next request of `api` comes `delay` late.
    pub fn delay(api: ApiKey, delay: Duration) -> Self {
        Self::new(api, FaultAction::Delay(delay))
    }

    /// The next request of `api` is never answered.
    pub fn drop_response(api: ApiKey) -> Self {
        Self::new(api, FaultAction::DropResponse)
    }

    /// The response to the next request of `api` says the client is
    /// throttled for `throttle_ms`.
    pub fn throttle(api: ApiKey, throttle_ms: i32) -> Self {
        Self::new(api, FaultAction::Throttle(throttle_ms))
    }

    /// Applies to the next `n` matching requests (for a partition filter:
    /// the next `n` times that partition is in a matching request).
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Applies to every matching request until the faults are cleared.
    pub fn always(mut self) -> Self {
        self.remaining = None;
        self
    }

    /// Only requests sent to broker `broker_id`.
    pub fn on_broker(mut self, broker_id: i32) -> Self {
        self.broker = Some(broker_id);
        self
    }

    /// Only this partition of a request: the other partitions of the same
    /// request succeed. Applies to [`FaultAction::Error`] only; delays,
    /// lost responses and throttling apply to whole requests and ignore it.
    pub fn on_partition(mut self, topic: &str, partition: i32) -> Self {
        self.partition = Some((topic.to_owned(), partition));
        self
    }

    /// The API whose requests it affects.
    pub fn api(&self) -> ApiKey {
        self.api
    }

    /// What it does to them.
    pub fn action(&self) -> &FaultAction {
        &self.action
    }

    fn matches(&self, api: ApiKey, broker: i32) -> bool {
        self.api == api && self.broker.is_none_or(|b| b == broker) && self.remaining != Some(0)
    }

    fn consume(&mut self) {
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
        }
    }
}

/// The faults a request got at dispatch.
#[derive(Debug, Default)]
pub(crate) struct RequestFaults {
    pub error: Option<ErrorCode>,
    pub delay: Option<Duration>,
    pub drop_response: bool,
    pub throttle_ms: i32,
}

/// The injected faults still pending.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    faults: Vec<Fault>,
}

impl FaultTable {
    /// Takes the request-level faults for one request (at most one of each
    /// kind, oldest first).
    pub fn on_request(&mut self, api: ApiKey, broker: i32) -> RequestFaults {
        let mut out = RequestFaults::default();
        let (mut error, mut delay, mut drop, mut throttle) = (false, false, false, false);
        for f in self.faults.iter_mut().filter(|f| f.matches(api, broker)) {
            match f.action {
                FaultAction::Error(code) if f.partition.is_none() && !error => {
                    error = true;
                    out.error = Some(code);
                }
                FaultAction::Delay(d) if !delay => {
                    delay = true;
                    out.delay = Some(d);
                }
                FaultAction::DropResponse if !drop => {
                    drop = true;
                    out.drop_response = true;
                }
                FaultAction::Throttle(ms) if !throttle => {
                    throttle = true;
                    out.throttle_ms = ms;
                }
                _ => continue,
            }
            f.consume();
        }
        self.faults.retain(|f| f.remaining != Some(0));
        out
    }

    /// Takes an error fault filtered on this partition, if one matches.
    pub fn partition_error(
        &mut self,
        api: ApiKey,
        broker: i32,
        topic: &str,
        partition: i32,
    ) -> Option<ErrorCode> {
        let f = self.faults.iter_mut().find(|f| {
            f.matches(api, broker)
                && matches!(f.action, FaultAction::Error(_))
                && f.partition
                    .as_ref()
                    .is_some_and(|(t, p)| t == topic && *p == partition)
        })?;
        f.consume();
        let FaultAction::Error(code) = f.action else {
            unreachable!("filtered on errors")
        };
        self.faults.retain(|f| f.remaining != Some(0));
        Some(code)
    }
}

impl FakeCluster {
    /// Adds a fault; faults apply in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults().faults.push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared.faults().faults.clear();
    }

    /// Closes every client connection of broker `broker_id` (the broker
    /// keeps accepting new ones).
    pub fn close_connections(&self, broker_id: i32) -> Result<(), Error> {
        let index = self.broker_index(broker_id)?;
        self.shared.close_generation[index].send_modify(|g| *g += 1);
        Ok(())
    }

    /// Makes `broker_id` the leader of the partition and bumps its leader
    /// epoch (even if the leader stays the same); returns the new epoch.
    /// Requests to the old leader get NOT_LEADER_OR_FOLLOWER, requests with
    /// the old epoch FENCED_LEADER_EPOCH.
    pub fn move_leader(&self, topic: &str, partition: i32, broker_id: i32) -> Result<i32, Error> {
        self.broker_index(broker_id)?;
        let epoch = {
            let mut state = self.shared.state();
            let p = state
                .partition_mut(topic, partition)
                .ok_or(Error::UnknownPartition)?;
            p.leader = broker_id;
            p.leader_epoch += 1;
            if !p.replicas.contains(&broker_id) {
                p.replicas.insert(0, broker_id);
            }
            p.log.begin_epoch(p.leader_epoch);
            p.leader_epoch
        };
        self.shared.notify_changed();
        Ok(epoch)
    }

    /// Truncates the partition's log so that it ends at or before `offset`
    /// (whole batches are dropped, as after an unclean leader election) and
    /// bumps the leader epoch, so that consumers past the new end detect
    /// the truncation (KIP-320). Returns the new log end offset.
    pub fn truncate(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, Error> {
        let end = {
            let mut state = self.shared.state();
            let p = state
                .partition_mut(topic, partition)
                .ok_or(Error::UnknownPartition)?;
            let end = p.log.truncate_to(offset);
            p.leader_epoch += 1;
            p.log.begin_epoch(p.leader_epoch);
            end
        };
        self.shared.notify_changed();
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_count_down_and_filter() {
        let mut t = FaultTable::default();
        t.faults.push(
            Fault::error(ApiKey::PRODUCE, ErrorCode::REQUEST_TIMED_OUT)
                .times(2)
                .on_broker(1),
        );
        t.faults.push(
            Fault::error(ApiKey::FETCH, ErrorCode::NOT_LEADER_OR_FOLLOWER).on_partition("t", 3),
        );
        assert_eq!(t.on_request(ApiKey::PRODUCE, 2).error, None);
        assert_eq!(
            t.on_request(ApiKey::PRODUCE, 1).error,
            Some(ErrorCode::REQUEST_TIMED_OUT)
        );
        assert_eq!(
            t.on_request(ApiKey::PRODUCE, 1).error,
            Some(ErrorCode::REQUEST_TIMED_OUT)
        );
        assert_eq!(t.on_request(ApiKey::PRODUCE, 1).error, None);
        assert_eq!(
            t.on_request(ApiKey::FETCH, 1).error,
            None,
            "partition faults wait for their partition"
        );
        assert_eq!(t.partition_error(ApiKey::FETCH, 1, "t", 2), None);
        assert_eq!(
            t.partition_error(ApiKey::FETCH, 1, "t", 3),
            Some(ErrorCode::NOT_LEADER_OR_FOLLOWER)
        );
        assert_eq!(t.partition_error(ApiKey::FETCH, 1, "t", 3), None);
        assert!(t.faults.is_empty());
    }
}
