//! Retrying an operation on retriable errors, bounded by a deadline.

use std::future::Future;

use tokio::time::Instant;

use crate::{cluster::Backoff, error::Result};

use super::Settings;

/// Runs `attempt` until it succeeds, fails with an error that is not
/// retriable or for which `final_error` holds, or the operation timeout
/// would pass; sleeps with the crate's jittered backoff in between. Each
/// attempt gets the operation's deadline (for Kafka's `timeout_ms` fields).
pub(crate) async fn retry<T, F, Fut>(
    settings: &Settings,
    final_error: impl Fn(&crate::error::Error) -> bool,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(Instant) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + settings.operation_timeout;
    let mut backoff = Backoff::new(&settings.backoff, Some(deadline));
    loop {
        match attempt(deadline).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if !e.is_retriable() || final_error(&e) {
                    return Err(e);
                }
                tracing::debug!(error = %e, "retrying");
                if backoff.wait().await.is_err() {
                    return Err(e);
                }
            }
        }
    }
}

/// For [`retry`]: every retriable error is retried.
pub(crate) fn never_final(_: &crate::error::Error) -> bool {
    false
}
