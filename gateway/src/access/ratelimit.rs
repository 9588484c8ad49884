//! Rate limits of API keys: token buckets per line of keys.
//!
//! Rate limits are token buckets in memory (capacity = the per-minute rate, refilled
//! continuously), one per line of keys (a key and the keys rotated from it share one bucket, so
//! rotating refills nothing), at most [`RATE_BUCKETS_MAX`] buckets; when the map is full, idle
//! buckets are dropped, and if none is idle the request is denied. Buckets start full after a
//! restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate-limit buckets kept in memory.
pub const RATE_BUCKETS_MAX: usize = 100_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-key token buckets (see the module docs).
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    max: usize,
}

impl RateLimiter {
    /// No bucket yet; at most `max` of them.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Takes one token from `id`'s bucket; `false` when it is empty or no bucket can be had.
    pub(crate) fn take(&self, id: &str, per_minute: u32) -> bool {
        let now = Instant::now();
        let cap = f64::from(per_minute);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !b.contains_key(id) && b.len() >= self.max {
            // A bucket idle for a minute is full again: dropping it changes nothing.
            b.retain(|_, x| now.duration_since(x.last) < Duration::from_secs(60));
            if b.len() >= self.max {
                return false;
            }
        }
        let e = b.entry(id.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let refill = now.duration_since(e.last).as_secs_f64() * cap / 60.0;
        e.tokens = (e.tokens + refill).min(cap);
        e.last = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket() {
        let l = RateLimiter::new(2);
        assert!(l.take("a", 3) && l.take("a", 3) && l.take("a", 3));
        assert!(!l.take("a", 3));
        assert!(l.take("b", 1));
        // Full map, nothing idle: fail closed.
        assert!(!l.take("c", 1));
    }
}
