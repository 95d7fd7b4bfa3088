//! Per-topic token buckets: `max_requests_per_minute` records, refilled
//! evenly over the minute.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::config::RateLimitConfig;

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }
}

/// The limiter; `None` topics have no rule.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// The rules of `cfg`, or `None` when disabled or without rules.
    pub fn new(cfg: &RateLimitConfig) -> Option<Self> {
        if !cfg.enabled || cfg.rules.is_empty() {
            return None;
        }
        let now = Instant::now();
        let buckets = cfg
            .rules
            .iter()
            .map(|r| {
                let cap = f64::from(r.max_requests_per_minute);
                (
                    r.topic_name.clone(),
                    Bucket {
                        capacity: cap,
                        per_sec: cap / 60.0,
                        tokens: cap,
                        last: now,
                    },
                )
            })
            .collect();
        Some(Self {
            buckets: Mutex::new(buckets),
        })
    }

    /// Takes `count` tokens from each topic's bucket, all or none: returns
    /// the topics whose bucket had too few (then nothing is taken).
    pub fn admit<'a>(&self, counts: &[(&'a str, u32)]) -> Vec<&'a str> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut limited = Vec::new();
        for &(topic, n) in counts {
            if let Some(b) = buckets.get_mut(topic) {
                b.refill(now);
                if b.tokens < f64::from(n) {
                    limited.push(topic);
                }
            }
        }
        if limited.is_empty() {
            for &(topic, n) in counts {
                if let Some(b) = buckets.get_mut(topic) {
                    b.tokens -= f64::from(n);
                }
            }
        }
        limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitRule;

    #[test]
    fn all_or_nothing() {
        let rl = RateLimiter::new(&RateLimitConfig {
            enabled: true,
            rules: vec![RateLimitRule {
                topic_name: "t".into(),
                max_requests_per_minute: 3,
            }],
        })
        .unwrap();
        assert!(rl.admit(&[("t", 2), ("free", 100)]).is_empty());
        assert_eq!(rl.admit(&[("t", 2)]), vec!["t"]);
        assert!(rl.admit(&[("t", 1)]).is_empty());
        assert_eq!(rl.admit(&[("t", 1)]), vec!["t"]);
    }
}
