//! Rate-limit header fields, set on every metered answer (allowed or denied).
//!
//! Two generations are written, both from the [`Decision`]:
//!
//! - the structured fields of the IETF draft `draft-ietf-httpapi-ratelimit-headers-11`
//!   (23 May 2026), one item per window of the plan, named after the window:
//!
//!   ```text
//!   RateLimit-Policy: "minute";q=60;w=60, "day";q=1000;w=86400
//!   RateLimit: "minute";r=59;t=1, "day";r=997;t=43200
//!   ```
//!
//!   `q` is the window's limit, `w` its length in seconds (`second` 1, `minute` 60, `hour`
//!   3600, `day` 86400, and `month` a nominal 2592000, 30 days: calendar months run 28 to
//!   31 days, and `t` tells the exact time left), `r` the calls it still allows and `t` the
//!   seconds until it is whole again, or, for a window with nothing left on a `429`, until
//!   the next call may pass (never past `Retry-After`, as the draft asks). Both are
//!   appended, so an inner limiter's items of the same fields survive;
//! - the older single-window fields many clients still read, for the tightest window
//!   ([`Decision::tightest_window`]): `RateLimit-Limit`, `RateLimit-Remaining`,
//!   `RateLimit-Reset` (seconds), replacing any the inner service set.
//!
//! A `429` also carries `Retry-After` (seconds). A plan without windows gets none of these.

use std::ops::Range;

use bytes::BytesMut;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};
use metering_core::{Decision, DenyReason, Per, WindowStatus};

/// `RateLimit-Limit`: the tightest window's limit.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: calls the tightest window still allows.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the tightest window is whole again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `RateLimit-Policy`: every window's quota and length (structured field).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: every window's remaining calls and effective window (structured field).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Writes the rate-limit fields of `decision` (and `Retry-After` when it was rate limited)
/// into `headers`.
pub fn write_rate_limit_headers(decision: &Decision, headers: &mut HeaderMap) {
    RateLimitHeaders::new(decision).write(headers);
}

/// The window length `w` advertised in `RateLimit-Policy`, in seconds.
pub fn window_seconds(per: Per) -> u64 {
    match per {
        Per::Second => 1,
        Per::Minute => 60,
        Per::Hour => 3_600,
        Per::Day => 86_400,
        Per::Month => 2_592_000,
    }
}

/// The header values of one decision, built once right after it (the decision itself is
/// handed back to the meter before the answer is ready).
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimitHeaders {
    windows: Option<Windows>,
    retry_after: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
struct Windows {
    limit: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
    policy: HeaderValue,
    state: HeaderValue,
}

impl RateLimitHeaders {
    pub(crate) fn new(decision: &Decision) -> Self {
        let retry = match decision.reason {
            Some(DenyReason::RateLimited) => decision.retry_after,
            _ => None,
        };
        RateLimitHeaders { windows: windows(decision, retry), retry_after: retry.map(HeaderValue::from) }
    }

    pub(crate) fn write(self, headers: &mut HeaderMap) {
        if let Some(w) = self.windows {
            headers.reserve(6);
            headers.insert(RATELIMIT_LIMIT, w.limit);
            headers.insert(RATELIMIT_REMAINING, w.remaining);
            headers.insert(RATELIMIT_RESET, w.reset);
            headers.append(RATELIMIT_POLICY, w.policy);
            headers.append(RATELIMIT, w.state);
        }
        if let Some(retry) = self.retry_after {
            headers.insert(RETRY_AFTER, retry);
        }
    }
}

/// The effective window `t` of one window: its reset, but for a window with nothing left
/// on a rate-limited answer, no later than `Retry-After` (a smooth window frees a call
/// before it is whole again).
fn effective(w: &WindowStatus, retry: Option<u64>) -> u64 {
    match retry {
        Some(r) if w.remaining == 0 => w.reset.min(r),
        _ => w.reset,
    }
}

fn windows(decision: &Decision, retry: Option<u64>) -> Option<Windows> {
    let tight = decision.tightest_window()?;
    // All five values go into one buffer and share it: one allocation per answer, not five.
    let mut buf = BytesMut::with_capacity(32 + 64 * decision.limits.len());
    let limit = push(&mut buf, |b| push_u64(b, u64::from(tight.limit)));
    let remaining = push(&mut buf, |b| push_u64(b, u64::from(tight.remaining)));
    let reset = push(&mut buf, |b| push_u64(b, effective(tight, retry)));
    let policy = push(&mut buf, |b| {
        for (i, w) in decision.limits.iter().enumerate() {
            item(b, i, w.window, b";q=", u64::from(w.limit), b";w=", window_seconds(w.window));
        }
    });
    let state = push(&mut buf, |b| {
        for (i, w) in decision.limits.iter().enumerate() {
            item(b, i, w.window, b";r=", u64::from(w.remaining), b";t=", effective(w, retry));
        }
    });
    let bytes = buf.freeze();
    let value = |range: Range<usize>| HeaderValue::from_maybe_shared(bytes.slice(range)).ok();
    Some(Windows {
        limit: value(limit)?,
        remaining: value(remaining)?,
        reset: value(reset)?,
        policy: value(policy)?,
        state: value(state)?,
    })
}

/// Appends what `write` writes and returns where it is.
fn push(buf: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) -> Range<usize> {
    let start = buf.len();
    write(buf);
    start..buf.len()
}

/// One structured-field item: `"name";a=1;b=2`, after `, ` unless it is the first.
fn item(buf: &mut BytesMut, index: usize, per: Per, a: &[u8], x: u64, b: &[u8], y: u64) {
    if index > 0 {
        buf.extend_from_slice(b", ");
    }
    buf.extend_from_slice(b"\"");
    buf.extend_from_slice(per.as_str().as_bytes());
    buf.extend_from_slice(b"\"");
    buf.extend_from_slice(a);
    push_u64(buf, x);
    buf.extend_from_slice(b);
    push_u64(buf, y);
}

/// Decimal digits of `n`, without the formatting machinery.
fn push_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use metering_core::EventId;

    use super::*;

    fn decision(limits: Vec<WindowStatus>, reason: Option<DenyReason>, retry_after: Option<u64>) -> Decision {
        Decision {
            event_id: EventId::new("e1").unwrap(),
            allowed: reason.is_none(),
            reason,
            credits_charged: 0,
            credits_remaining: 5,
            limits,
            retry_after,
        }
    }

    fn status(window: Per, limit: u32, remaining: u32, reset: u64) -> WindowStatus {
        WindowStatus { window, limit, remaining, reset }
    }

    #[test]
    fn every_window_is_an_item_and_the_tightest_is_the_triple() {
        let d = decision(vec![status(Per::Minute, 60, 59, 1), status(Per::Day, 1000, 3, 3600)], None, None);
        let mut h = HeaderMap::new();
        write_rate_limit_headers(&d, &mut h);
        assert_eq!(h[RATELIMIT_POLICY], "\"minute\";q=60;w=60, \"day\";q=1000;w=86400");
        assert_eq!(h[RATELIMIT], "\"minute\";r=59;t=1, \"day\";r=3;t=3600");
        assert_eq!([&h[RATELIMIT_LIMIT], &h[RATELIMIT_REMAINING], &h[RATELIMIT_RESET]], ["1000", "3", "3600"]);
        assert!(h.get(RETRY_AFTER).is_none());
    }

    #[test]
    fn a_full_window_on_429_resets_no_later_than_retry_after() {
        let d = decision(
            vec![status(Per::Second, 5, 0, 1), status(Per::Hour, 100, 0, 1800), status(Per::Month, 10, 4, 90_000)],
            Some(DenyReason::RateLimited),
            Some(36),
        );
        let mut h = HeaderMap::new();
        write_rate_limit_headers(&d, &mut h);
        assert_eq!(h[RATELIMIT], "\"second\";r=0;t=1, \"hour\";r=0;t=36, \"month\";r=4;t=90000");
        assert_eq!(h[RATELIMIT_POLICY], "\"second\";q=5;w=1, \"hour\";q=100;w=3600, \"month\";q=10;w=2592000");
        assert_eq!([&h[RATELIMIT_LIMIT], &h[RATELIMIT_RESET]], ["100", "36"]);
        assert_eq!(h[RETRY_AFTER], "36");
    }

    #[test]
    fn digits_without_fmt() {
        for n in [0, 7, 10, 86_400, u64::MAX] {
            let mut buf = BytesMut::new();
            push_u64(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn no_windows_no_headers_and_no_retry_after_unless_rate_limited() {
        let mut h = HeaderMap::new();
        write_rate_limit_headers(&decision(vec![], None, None), &mut h);
        assert!(h.is_empty());
        let d = decision(vec![status(Per::Day, 10, 0, 60)], Some(DenyReason::InsufficientCredits), Some(60));
        write_rate_limit_headers(&d, &mut h);
        assert!(h.get(RETRY_AFTER).is_none());
        assert_eq!(h[RATELIMIT_RESET], "60");
    }
}
