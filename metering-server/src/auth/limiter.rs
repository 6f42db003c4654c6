//! A per-key fixed-window limiter for sign-ups, in process memory, bounded, on the
//! engine's clock.

use std::sync::Mutex;
use std::time::Duration;

use metering_core::Timestamp;

use super::bounded::{BoundedMap, Expiring};
use crate::settings::RateSpec;

/// The most keys (client addresses) remembered at once.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
struct Window {
    start: Timestamp,
    end: Timestamp,
    count: u32,
}

impl Expiring for Window {
    fn expired(&self, now: Timestamp) -> bool {
        self.end <= now
    }
    fn since(&self) -> Timestamp {
        self.start
    }
}

/// Allows [`RateSpec::max`] calls per key per [`RateSpec::per`].
#[derive(Debug)]
pub struct KeyedLimiter {
    rate: RateSpec,
    windows: Mutex<BoundedMap<Window>>,
}

impl KeyedLimiter {
    /// A limiter with this rate.
    pub fn new(rate: RateSpec) -> Self {
        KeyedLimiter { rate, windows: Mutex::new(BoundedMap::new(MAX_KEYS)) }
    }

    /// The rate it allows.
    pub fn rate(&self) -> RateSpec {
        self.rate
    }

    /// Counts one call for `key`; `Err(retry_after)` when over the limit (not counted).
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), Duration> {
        let per = self.rate.per;
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(key, now, || Window { start: now, end: now.plus(per), count: 0 });
        if w.count >= self.rate.max.get() {
            return Err(w.end.since(now));
        }
        w.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_per_window() {
        let limiter = KeyedLimiter::new("2/minute".parse().unwrap());
        let t0 = Timestamp::from_secs(1_000);
        assert!(limiter.check("1.2.3.4", t0).is_ok());
        assert!(limiter.check("1.2.3.4", t0).is_ok());
        assert_eq!(limiter.check("1.2.3.4", t0.plus(Duration::from_secs(20))), Err(Duration::from_secs(40)));
        assert!(limiter.check("5.6.7.8", t0).is_ok());
        assert!(limiter.check("1.2.3.4", t0.plus(Duration::from_secs(60))).is_ok());
    }
}
