//! Fetch-session bookkeeping (KIP-227) for one broker, without I/O.
//!
//! A session lets the broker remember which partitions a consumer fetches
//! and at which offsets, so that after a first *full* fetch every following
//! *incremental* fetch lists only the partitions whose parameters changed
//! (in practice: those that returned data, since their offset moved) plus
//! the partitions to drop. With hundreds of partitions and little traffic
//! this shrinks requests and responses to almost nothing.
//!
//! The broker applies an incremental request to the state it holds, so the
//! client must mirror that state exactly. Any doubt (an error, a lost
//! response) is resolved by the next request being full again: it replaces
//! the broker's state wholesale.

use std::collections::BTreeMap;

/// `FETCH_SESSION_ID_NOT_FOUND`: the broker no longer knows the session.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// The per-partition values the broker caches in a session; a partition is
/// re-sent in an incremental fetch exactly when one of them changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionParams {
    /// Offset to fetch from.
    pub fetch_offset: i64,
    /// The leader epoch the client believes current (KIP-320), or -1.
    pub current_leader_epoch: i32,
    /// Epoch of the last fetched batch, or -1.
    pub last_fetched_epoch: i32,
    /// Per-partition byte limit.
    pub max_bytes: i32,
}

/// What the next fetch request to the broker must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchPlan<K> {
    /// `SessionId` to send.
    pub session_id: i32,
    /// `SessionEpoch` to send.
    pub session_epoch: i32,
    /// Whether this is a full fetch (lists every wanted partition).
    pub full: bool,
    /// Partitions to list in the request, with their parameters.
    pub send: Vec<(K, PartitionParams)>,
    /// Partitions to list in `ForgottenTopicsData` (incremental only).
    pub forget: Vec<K>,
}

/// What a fetch response meant for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionOutcome {
    /// The response is valid; its partition data can be used.
    Ok,
    /// The session was rejected or lost; the response carries no usable
    /// partition data and the next fetch is full.
    Reset,
}

/// The client's mirror of one broker's fetch session.
#[derive(Debug)]
pub(crate) struct FetchSession<K> {
    /// 0 while no session exists.
    id: i32,
    /// Epoch to send next; 0 asks the broker to (re)create the session.
    epoch: i32,
    /// The partitions the broker's session holds, with the values it holds.
    partitions: BTreeMap<K, PartitionParams>,
}

impl<K: Ord + Clone> Default for FetchSession<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> FetchSession<K> {
    /// No session yet: the first fetch creates one.
    pub fn new() -> Self {
        Self {
            id: 0,
            epoch: 0,
            partitions: BTreeMap::new(),
        }
    }

    /// The session id (0 if none).
    #[cfg(test)]
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The epoch the next request carries.
    #[cfg(test)]
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Plans the next request for the partitions the client wants now.
    ///
    /// The session state is updated at once to what the broker will hold
    /// after this request: if the request fails, [`Self::on_failure`] or
    /// [`Self::on_response`] force the next one to be full, which makes that
    /// state irrelevant. Without session support (`use_sessions` false:
    /// Fetch below v7) every request is full and sessionless.
    pub fn plan(
        &mut self,
        wanted: impl IntoIterator<Item = (K, PartitionParams)>,
        use_sessions: bool,
    ) -> FetchPlan<K> {
        let wanted: BTreeMap<K, PartitionParams> = wanted.into_iter().collect();
        if !use_sessions {
            self.id = 0;
            self.epoch = 0;
            self.partitions.clear();
            return FetchPlan {
                session_id: 0,
                // -1 (FINAL_EPOCH) with id 0 asks for a sessionless fetch.
                session_epoch: -1,
                full: true,
                send: wanted.into_iter().collect(),
                forget: Vec::new(),
            };
        }
        if self.epoch == 0 {
            let plan = FetchPlan {
                // A full fetch naming the old session closes it on the broker
                // and opens a new one, so sessions do not leak.
                session_id: self.id,
                session_epoch: 0,
                full: true,
                send: wanted.iter().map(|(k, p)| (k.clone(), *p)).collect(),
                forget: Vec::new(),
            };
            self.partitions = wanted;
            return plan;
        }
        let send = wanted
            .iter()
            .filter(|(k, p)| self.partitions.get(k) != Some(p))
            .map(|(k, p)| (k.clone(), *p))
            .collect();
        let forget = self
            .partitions
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect();
        let plan = FetchPlan {
            session_id: self.id,
            session_epoch: self.epoch,
            full: false,
            send,
            forget,
        };
        self.partitions = wanted;
        plan
    }

    /// Applies the response to a request planned as `plan`: its top-level
    /// `error_code` and `session_id`.
    pub fn on_response(
        &mut self,
        plan: &FetchPlan<K>,
        error_code: i16,
        session_id: i32,
    ) -> SessionOutcome {
        if plan.session_epoch == -1 {
            // Sessionless: nothing to track.
            return if error_code == 0 {
                SessionOutcome::Ok
            } else {
                SessionOutcome::Reset
            };
        }
        if error_code != 0 {
            if error_code == FETCH_SESSION_ID_NOT_FOUND {
                self.id = 0;
            }
            self.restart();
            return SessionOutcome::Reset;
        }
        if plan.full {
            // The broker answers 0 when it did not create a session (e.g.
            // its session cache is full); keep fetching in full then.
            self.id = session_id;
            self.epoch = if session_id == 0 { 0 } else { 1 };
            return SessionOutcome::Ok;
        }
        if session_id != self.id {
            // Not the session we asked about: trust nothing.
            self.restart();
            return SessionOutcome::Reset;
        }
        self.epoch = next_epoch(self.epoch);
        SessionOutcome::Ok
    }

    /// The request failed without a usable response (disconnect, timeout,
    /// decode error): whether the broker applied it is unknown, so start over.
    pub fn on_failure(&mut self) {
        self.restart();
    }

    /// Plans the request that closes the session on the broker (epoch -1,
    /// no partitions), if there is one; the session is forgotten.
    pub fn close(&mut self) -> Option<FetchPlan<K>> {
        if self.id == 0 {
            return None;
        }
        let plan = FetchPlan {
            session_id: self.id,
            session_epoch: -1,
            full: true,
            send: Vec::new(),
            forget: Vec::new(),
        };
        self.id = 0;
        self.restart();
        Some(plan)
    }

    /// Makes the next request full, closing the current session (if any).
    fn restart(&mut self) {
        self.epoch = 0;
        self.partitions.clear();
    }
}

/// Epochs run 1..=i32::MAX and then wrap to 1 (0 means "create").
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: i64) -> PartitionParams {
        PartitionParams {
            fetch_offset: offset,
            current_leader_epoch: 3,
            last_fetched_epoch: -1,
            max_bytes: 1 << 20,
        }
    }

    type Key = (&'static str, i32);

    #[test]
    fn first_fetch_is_full_and_creates_a_session() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0)), (("a", 1), p(5))], true);
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (0, 0));
        assert_eq!(plan.send, vec![(("a", 0), p(0)), (("a", 1), p(5))]);
        assert!(plan.forget.is_empty());
        assert_eq!(s.on_response(&plan, 0, 77), SessionOutcome::Ok);
        assert_eq!((s.id(), s.epoch()), (77, 1));
    }

    #[test]
    fn incremental_fetch_lists_changed_added_and_forgotten_partitions() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0)), (("a", 1), p(5)), (("b", 0), p(9))], true);
        s.on_response(&plan, 0, 77);

        // a-0 moved, a-1 unchanged, b-0 dropped, c-0 new.
        let plan = s.plan(
            [(("a", 0), p(10)), (("a", 1), p(5)), (("c", 0), p(0))],
            true,
        );
        assert!(!plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (77, 1));
        assert_eq!(plan.send, vec![(("a", 0), p(10)), (("c", 0), p(0))]);
        assert_eq!(plan.forget, vec![("b", 0)]);
        assert_eq!(s.on_response(&plan, 0, 77), SessionOutcome::Ok);
        assert_eq!(s.epoch(), 2);

        // Nothing changed: an empty incremental fetch, still epoch-numbered.
        let plan = s.plan(
            [(("a", 0), p(10)), (("a", 1), p(5)), (("c", 0), p(0))],
            true,
        );
        assert!(plan.send.is_empty() && plan.forget.is_empty());
        assert_eq!(plan.session_epoch, 2);
        s.on_response(&plan, 0, 77);
        assert_eq!(s.epoch(), 3);

        // Changing only the leader epoch or the byte limit re-sends too.
        let mut changed = p(10);
        changed.current_leader_epoch = 4;
        let mut smaller = p(5);
        smaller.max_bytes = 10;
        let plan = s.plan(
            [(("a", 0), changed), (("a", 1), smaller), (("c", 0), p(0))],
            true,
        );
        assert_eq!(plan.send, vec![(("a", 0), changed), (("a", 1), smaller)]);
    }

    #[test]
    fn session_id_not_found_starts_a_new_session() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0))], true);
        s.on_response(&plan, 0, 77);
        let plan = s.plan([(("a", 0), p(4))], true);
        assert_eq!(s.on_response(&plan, 70, 0), SessionOutcome::Reset);
        let plan = s.plan([(("a", 0), p(4))], true);
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (0, 0));
        assert_eq!(plan.send, vec![(("a", 0), p(4))]);
    }

    #[test]
    fn invalid_epoch_closes_and_recreates_the_session() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0))], true);
        s.on_response(&plan, 0, 77);
        let plan = s.plan([(("a", 0), p(4))], true);
        assert_eq!(s.on_response(&plan, 71, 0), SessionOutcome::Reset);
        let plan = s.plan([(("a", 0), p(4))], true);
        // Naming the old id with epoch 0 closes it on the broker.
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (77, 0));
        assert_eq!(s.on_response(&plan, 0, 78), SessionOutcome::Ok);
        assert_eq!((s.id(), s.epoch()), (78, 1));
    }

    #[test]
    fn a_lost_response_makes_the_next_fetch_full() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0)), (("a", 1), p(0))], true);
        s.on_response(&plan, 0, 77);
        let _lost = s.plan([(("a", 0), p(3))], true);
        s.on_failure();
        let plan = s.plan([(("a", 0), p(3)), (("a", 1), p(0))], true);
        assert!(plan.full);
        assert_eq!(plan.send.len(), 2, "a full fetch lists every partition");
    }

    #[test]
    fn broker_without_session_slots_keeps_full_fetches() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0))], true);
        assert_eq!(s.on_response(&plan, 0, 0), SessionOutcome::Ok);
        let plan = s.plan([(("a", 0), p(1))], true);
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (0, 0));
    }

    #[test]
    fn mismatched_session_id_in_incremental_response_resets() {
        let mut s = FetchSession::<Key>::new();
        let plan = s.plan([(("a", 0), p(0))], true);
        s.on_response(&plan, 0, 77);
        let plan = s.plan([(("a", 0), p(1))], true);
        assert_eq!(s.on_response(&plan, 0, 99), SessionOutcome::Reset);
        assert!(s.plan([(("a", 0), p(1))], true).full);
    }

    #[test]
    fn sessionless_mode_for_old_brokers() {
        let mut s = FetchSession::<Key>::new();
        for offset in 0..3 {
            let plan = s.plan([(("a", 0), p(offset))], false);
            assert!(plan.full);
            assert_eq!((plan.session_id, plan.session_epoch), (0, -1));
            assert_eq!(s.on_response(&plan, 0, 0), SessionOutcome::Ok);
        }
    }

    #[test]
    fn closing_names_the_session_with_the_final_epoch() {
        let mut s = FetchSession::<Key>::new();
        assert!(s.close().is_none(), "no session, nothing to close");
        let plan = s.plan([(("a", 0), p(0))], true);
        s.on_response(&plan, 0, 77);
        let close = s.close().unwrap();
        assert_eq!((close.session_id, close.session_epoch), (77, -1));
        assert!(close.send.is_empty() && close.forget.is_empty());
        assert!(s.close().is_none());
        assert_eq!((s.id(), s.epoch()), (0, 0));
    }

    #[test]
    fn epoch_wraps_to_one() {
        assert_eq!(next_epoch(1), 2);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
