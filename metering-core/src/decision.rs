//! Decisions: what the engine answers for one call.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::EventId;
use crate::plan::Per;

/// Why a call was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The tenant is suspended (HTTP 403).
    TenantSuspended,
    /// The call is premium and the plan does not include it (HTTP 403).
    PremiumNotInPlan,
    /// A rate-limit window is full (HTTP 429 with `Retry-After`).
    RateLimited,
    /// Not enough credits left in the period (HTTP 402).
    InsufficientCredits,
}

impl DenyReason {
    /// The reason's stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TenantSuspended => "tenant_suspended",
            DenyReason::PremiumNotInPlan => "premium_not_in_plan",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::InsufficientCredits => "insufficient_credits",
        }
    }

    /// The HTTP status a denial with this reason answers.
    pub fn http_status(self) -> u16 {
        match self {
            DenyReason::TenantSuspended | DenyReason::PremiumNotInPlan => 403,
            DenyReason::RateLimited => 429,
            DenyReason::InsufficientCredits => 402,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one rate-limit window after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStatus {
    /// The window's length.
    pub window: Per,
    /// The most calls it allows.
    pub limit: u32,
    /// Calls it still allows now.
    pub remaining: u32,
    /// Whole seconds (rounded up) until it is fully available again.
    pub reset: u64,
}

/// The engine's answer for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The event's idempotency key.
    pub event_id: EventId,
    /// Whether the call may proceed.
    pub allowed: bool,
    /// Why not, when denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    /// Credits deducted (0 when denied).
    pub credits_charged: u64,
    /// Credits left in the period after this call (negative only within an overdraft).
    pub credits_remaining: i64,
    /// Every window of the plan.
    pub limits: Vec<WindowStatus>,
    /// Whole seconds until a denied call may succeed, for `Retry-After` (rate limits only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Decision {
    /// The window closest to refusing: fewest calls remaining, then longest reset.
    /// This is the one `RateLimit-Limit/Remaining/Reset` describe.
    pub fn tightest_window(&self) -> Option<&WindowStatus> {
        self.limits.iter().min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
    }
}
