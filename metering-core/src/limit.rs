//! Rate-limit algorithms, as pure functions over a window's state.
//!
//! - **Calendar quotas** (`day`, `month`): a counter per UTC-aligned window, exact: the
//!   `max`-th call of the day is the last one admitted, whatever the timing. A quota is what
//!   a customer buys, so it must neither round nor leak, and it must reset at a time the
//!   customer can read off a calendar.
//! - **Smooth limits** (`second`, `minute`, `hour`): GCRA (the generic cell rate
//!   algorithm, equivalent to a token bucket holding `max` tokens refilled at `max/per`).
//!   It keeps one timestamp per window, admits a burst of up to `max` at once, and never
//!   lets a client double its rate at a window boundary as fixed windows do.
//!
//! Each check returns the window's status if the call were admitted, or the time until it
//! would be; the store commits all windows at once or none (see the store traits).

use crate::clock::{MICROS_PER_SECOND, Timestamp};
use crate::decision::WindowStatus;
use crate::plan::Limit;

/// The outcome of checking one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The call fits; `status` is the window after admitting it.
    Fits {
        /// The window after this call.
        status: WindowStatus,
    },
    /// The window is full; `status` describes it as it stands.
    Full {
        /// The window as it stands.
        status: WindowStatus,
        /// Whole seconds until a call fits again.
        retry_after: u64,
    },
}

impl Check {
    /// The window status in either case.
    pub fn status(&self) -> WindowStatus {
        match *self {
            Check::Fits { status } | Check::Full { status, .. } => status,
        }
    }
}

/// Whole seconds from `now` until `t`, rounded up, zero if `t` is past.
pub fn secs_until(now: Timestamp, t: Timestamp) -> u64 {
    let micros = t.as_micros().saturating_sub(now.as_micros()).max(0);
    (micros as u64).div_ceil(MICROS_PER_SECOND as u64)
}

/// Checks a calendar quota holding `count` calls in the window ending at `window_end`.
pub fn check_quota(limit: Limit, count: u32, window_end: Timestamp, now: Timestamp) -> Check {
    let max = limit.max.get();
    let reset = secs_until(now, window_end);
    if count < max {
        Check::Fits { status: WindowStatus { window: limit.per, limit: max, remaining: max - count - 1, reset } }
    } else {
        Check::Full {
            status: WindowStatus { window: limit.per, limit: max, remaining: 0, reset },
            retry_after: reset.max(1),
        }
    }
}

/// Checks a smooth (GCRA) window whose theoretical arrival time is `tat` (`None`: never used).
///
/// On `Fits` the caller stores [`next_tat`] as the new state.
pub fn check_smooth(limit: Limit, tat: Option<Timestamp>, now: Timestamp) -> Check {
    let t = limit.emission_interval_micros();
    let max = limit.max.get();
    let burst = t * i64::from(max);
    let tat = tat.map_or(now.as_micros(), |x| x.as_micros().max(now.as_micros()));
    let new_tat = tat + t;
    let status = |backlog: i64| {
        let remaining = ((burst - backlog) / t).clamp(0, i64::from(max)) as u32;
        WindowStatus {
            window: limit.per,
            limit: max,
            remaining,
            reset: secs_until(now, Timestamp::from_micros(now.as_micros() + backlog)),
        }
    };
    if new_tat - now.as_micros() <= burst {
        Check::Fits { status: status(new_tat - now.as_micros()) }
    } else {
        let free_at = Timestamp::from_micros(new_tat - burst);
        Check::Full { status: status(tat - now.as_micros()), retry_after: secs_until(now, free_at).max(1) }
    }
}

/// The GCRA state after admitting one call at `now`.
pub fn next_tat(limit: Limit, tat: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let base = tat.map_or(now.as_micros(), |x| x.as_micros().max(now.as_micros()));
    Timestamp::from_micros(base + limit.emission_interval_micros())
}

/// The GCRA state after taking back one call admitted earlier.
pub fn previous_tat(limit: Limit, tat: Timestamp) -> Timestamp {
    Timestamp::from_micros(tat.as_micros() - limit.emission_interval_micros())
}

/// A conservative GCRA state rebuilt from `calls` admitted during the last window:
/// as if they had all arrived just now, so a rebuild never hands out a fresh burst.
pub fn rebuilt_tat(limit: Limit, calls: u64, now: Timestamp) -> Option<Timestamp> {
    (calls > 0).then(|| {
        let calls = calls.min(u64::from(limit.max.get())) as i64;
        Timestamp::from_micros(now.as_micros() + calls * limit.emission_interval_micros())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Per;
    use std::time::Duration;

    #[test]
    fn quota_admits_exactly_max() {
        let l = Limit::new(3, Per::Day).unwrap();
        let now = Timestamp::from_secs(100);
        let end = Timestamp::from_secs(160);
        assert!(
            matches!(check_quota(l, 2, end, now), Check::Fits { status } if status.remaining == 0 && status.reset == 60)
        );
        assert!(matches!(check_quota(l, 3, end, now), Check::Full { retry_after: 60, .. }));
    }

    #[test]
    fn gcra_allows_a_burst_then_the_rate() {
        let l = Limit::new(5, Per::Second).unwrap();
        let mut now = Timestamp::from_secs(1000);
        let mut tat = None;
        for i in 0..5 {
            let c = check_smooth(l, tat, now);
            assert!(matches!(c, Check::Fits { status } if status.remaining == 4 - i), "{c:?}");
            tat = Some(next_tat(l, tat, now));
        }
        assert!(matches!(check_smooth(l, tat, now), Check::Full { retry_after: 1, .. }));
        now = now.plus(Duration::from_millis(200));
        assert!(matches!(check_smooth(l, tat, now), Check::Fits { .. }));
        tat = Some(next_tat(l, tat, now));
        assert!(matches!(check_smooth(l, tat, now), Check::Full { .. }));
        now = now.plus(Duration::from_secs(1));
        assert!(matches!(check_smooth(l, tat, now), Check::Fits { status } if status.remaining == 4));
    }

    #[test]
    fn rebuilt_state_is_never_fresher() {
        let l = Limit::new(10, Per::Minute).unwrap();
        let now = Timestamp::from_secs(1);
        let tat = rebuilt_tat(l, 25, now);
        assert!(matches!(check_smooth(l, tat, now), Check::Full { .. }));
        assert_eq!(rebuilt_tat(l, 0, now), None);
    }
}
