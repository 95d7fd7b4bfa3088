//! What the application side of a consumer and its background task share:
//! the fetch planner, behind one mutex, and how each side wakes the other.
//!
//! Both sides hold the lock only for bookkeeping (never across an await or
//! while decoding), and the application takes it once per chunk of
//! records, not per record.

use std::{
    sync::{Mutex, MutexGuard},
    task::Waker,
};

use tokio::sync::Notify;

use super::planner::FetchPlanner;

/// The shared half of a consumer.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Wakes the background task: the application released buffer space or
    /// changed the assignment.
    pub(super) wake_driver: Notify,
}

impl Shared {
    pub(super) fn new(planner: FetchPlanner) -> Self {
        Self {
            state: Mutex::new(State {
                planner,
                app_waker: None,
                driver_gone: false,
                closing: false,
            }),
            wake_driver: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state torn in a
        // way that matters more than stopping would: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything shared; see the module docs.
pub(super) struct State {
    pub(super) planner: FetchPlanner,
    app_waker: Option<Waker>,
    /// Set if the background task ended (on [`super::Consumer::close`], or
    /// a bug).
    pub(super) driver_gone: bool,
    /// Asks the background task to close its fetch sessions and end.
    pub(super) closing: bool,
}

impl State {
    pub(super) fn register_app_waker(&mut self, waker: &Waker) {
        match &self.app_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.app_waker = Some(waker.clone()),
        }
    }

    /// Wakes the application if it waits for items.
    pub(super) fn wake_app(&mut self) {
        if self.planner.has_ready() || self.driver_gone {
            if let Some(w) = self.app_waker.take() {
                w.wake();
            }
        }
    }
}
