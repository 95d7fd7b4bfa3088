//! Jittered exponential backoff with an optional deadline: the one retry
//! pacing used across the crate.

use std::time::Duration;

use tokio::time::{sleep, Instant};

/// How retries are paced: exponential backoff with jitter, up to a deadline.
///
/// ```
/// use std::time::Duration;
/// use rskafka::client::BackoffConfig;
///
/// let backoff = BackoffConfig::default()
///     .initial(Duration::from_millis(50))
///     .max(Duration::from_secs(2))
///     .multiplier(3.0)
///     .jitter(0.1);
/// # let _ = backoff;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
}

impl BackoffConfig {
    /// The first delay (default 100 ms).
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// The largest delay (default 1 s).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Growth factor per attempt (default 2; values below 1 are treated as
    /// 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Relative jitter in `[0, 1]` (default 0.2): each delay is drawn
    /// uniformly from `delay * (1 - jitter) ..= delay * (1 + jitter)`
    /// (capped at `max`), so clients that failed together do not retry
    /// together.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// The deadline of a retry loop passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("retry deadline exceeded after {attempts} attempts")]
pub struct DeadlineExceeded {
    /// How many waits had succeeded before the deadline.
    pub attempts: u32,
}

/// Retry pacing: call [`wait`](Self::wait) between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    deadline: Option<Instant>,
    /// The un-jittered delay of the next wait.
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `config.initial`, giving up at `deadline`.
    pub fn new(config: &BackoffConfig, deadline: Option<Instant>) -> Self {
        Self {
            config: config.clone(),
            deadline,
            next: config.initial,
            attempts: 0,
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Completed waits so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time left before the deadline (`None` without a deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Starts again from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.config.initial;
        self.attempts = 0;
    }

    /// The next delay, jittered, and advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.config.max);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
        let delay = base.mul_f64(factor).min(self.config.max);
        let mult = if self.config.multiplier.is_finite() {
            self.config.multiplier.max(1.0)
        } else {
            1.0
        };
        self.next = Duration::try_from_secs_f64(base.as_secs_f64() * mult)
            .unwrap_or(self.config.max)
            .min(self.config.max);
        delay
    }

    /// Sleeps for the next delay. Fails at once, without sleeping, when the
    /// delay would reach past the deadline: an attempt started at the
    /// deadline could not finish in time anyway.
    pub async fn wait(&mut self) -> Result<(), DeadlineExceeded> {
        let delay = self.next_delay();
        if let Some(deadline) = self.deadline {
            if Instant::now() + delay >= deadline {
                return Err(DeadlineExceeded {
                    attempts: self.attempts,
                });
            }
        }
        sleep(delay).await;
        self.attempts += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_within_jitter() {
        let cfg = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.2,
        };
        let mut b = Backoff::new(&cfg, None);
        let expected = [100u64, 200, 400, 800, 1000, 1000];
        for want in expected {
            let d = b.next_delay().as_millis() as u64;
            let lo = want * 8 / 10;
            let hi = (want * 12 / 10).min(1000);
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn jitter_spreads_delays() {
        let cfg = BackoffConfig::default();
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(&cfg, None).next_delay())
            .collect();
        assert!(delays.len() > 1, "no jitter: {delays:?}");
    }

    #[tokio::test]
    async fn wait_stops_at_the_deadline() {
        let cfg = BackoffConfig {
            initial: Duration::from_millis(20),
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        let start = Instant::now();
        let mut b = Backoff::new(&cfg, Some(start + Duration::from_millis(200)));
        // 20 + 40 + 80 ms fit in 200 ms; 160 more do not.
        assert!(b.wait().await.is_ok());
        assert!(b.wait().await.is_ok());
        assert!(b.wait().await.is_ok());
        assert_eq!(b.wait().await, Err(DeadlineExceeded { attempts: 3 }));
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
    }
}
