//! Login lockout: after [`LockoutPolicy::max_failures`] failed logins within
//! [`LockoutPolicy::window`], an e-mail is locked for [`LockoutPolicy::lock_for`], even
//! with the right password, until the lock expires or an admin lifts it.
//!
//! Kept in process memory, bounded (at most [`MAX_TRACKED`] e-mails, the expired dropped
//! first), on the engine's clock. Unknown e-mails are tracked like known ones, so a lock
//! tells nobody whether an account exists.

use std::sync::Mutex;
use std::time::Duration;

use metering_core::Timestamp;

use super::bounded::{BoundedMap, Expiring};

/// The most e-mails whose failures are remembered at once.
pub const MAX_TRACKED: usize = 100_000;

/// When failures lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that lock the account.
    pub max_failures: u32,
    /// The window they must fall in.
    pub window: Duration,
    /// How long the lock lasts.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures within 15 minutes lock the account for 15 minutes.
    fn default() -> Self {
        LockoutPolicy { max_failures: 5, window: Duration::from_secs(15 * 60), lock_for: Duration::from_secs(15 * 60) }
    }
}

#[derive(Debug)]
struct Failures {
    first: Timestamp,
    count: u32,
    window_end: Timestamp,
    locked_until: Option<Timestamp>,
}

impl Expiring for Failures {
    fn expired(&self, now: Timestamp) -> bool {
        match self.locked_until {
            Some(until) => until <= now,
            None => self.window_end <= now,
        }
    }
    fn since(&self) -> Timestamp {
        self.first
    }
}

/// Failed-login counters per e-mail.
#[derive(Debug)]
pub struct Lockout {
    policy: LockoutPolicy,
    failures: Mutex<BoundedMap<Failures>>,
}

impl Lockout {
    /// An empty lockout with this policy.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self::with_capacity(policy, MAX_TRACKED)
    }

    fn with_capacity(policy: LockoutPolicy, capacity: usize) -> Self {
        Lockout { policy, failures: Mutex::new(BoundedMap::new(capacity)) }
    }

    /// `Err(retry_after)` while `email` is locked at `now`.
    pub fn check(&self, email: &str, now: Timestamp) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_live(email, now).and_then(|f| f.locked_until) {
            Some(until) => Err(until.since(now)),
            None => Ok(()),
        }
    }

    /// Counts a failed login; `Some(retry_after)` if `email` is now locked.
    pub fn failed(&self, email: &str, now: Timestamp) -> Option<Duration> {
        let policy = self.policy;
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.entry(email, now, || Failures {
            first: now,
            count: 0,
            window_end: now.plus(policy.window),
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        if f.locked_until.is_none() && f.count >= policy.max_failures {
            f.locked_until = Some(now.plus(policy.lock_for));
        }
        f.locked_until.map(|until| until.since(now))
    }

    /// Forgets `email`'s failures and lock (a successful login, an admin's unlock); whether
    /// it was locked at `now`.
    pub fn clear(&self, email: &str, now: Timestamp) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(email).is_some_and(|f| f.locked_until.is_some_and(|until| until > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_for_fifteen_minutes() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let t0 = Timestamp::from_secs(1_000_000);
        for _ in 0..4 {
            assert_eq!(lockout.failed("a@x.io", t0), None);
        }
        assert_eq!(lockout.check("a@x.io", t0), Ok(()));
        assert_eq!(lockout.failed("a@x.io", t0), Some(Duration::from_secs(900)));
        assert_eq!(lockout.check("a@x.io", t0.plus(Duration::from_secs(60))), Err(Duration::from_secs(840)));
        assert_eq!(lockout.check("b@x.io", t0), Ok(()));
        assert_eq!(lockout.check("a@x.io", t0.plus(Duration::from_secs(900))), Ok(()));
        assert_eq!(lockout.failed("a@x.io", t0.plus(Duration::from_secs(900))), None, "a fresh window");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let mut t = Timestamp::from_secs(1_000_000);
        for _ in 0..10 {
            assert_eq!(lockout.failed("a@x.io", t), None);
            assert_eq!(lockout.failed("a@x.io", t), None);
            t = t.plus(Duration::from_secs(901));
        }
    }

    #[test]
    fn clearing_unlocks_and_memory_stays_bounded() {
        let lockout = Lockout::with_capacity(LockoutPolicy::default(), 50);
        let t0 = Timestamp::from_secs(1_000_000);
        for _ in 0..5 {
            lockout.failed("a@x.io", t0);
        }
        assert!(lockout.check("a@x.io", t0).is_err());
        assert!(lockout.clear("a@x.io", t0));
        assert_eq!(lockout.check("a@x.io", t0), Ok(()));
        assert!(!lockout.clear("a@x.io", t0));
        for i in 0..1_000 {
            lockout.failed(&format!("{i}@x.io"), t0);
        }
        assert!(lockout.failures.lock().unwrap().len() <= 50);
    }
}
