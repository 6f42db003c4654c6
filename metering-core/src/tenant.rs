//! Tenants: who is charged, on which plan, with which overrides, in which period.

use std::fmt;
use std::sync::Arc;

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{FieldError, PlanError};
use crate::plan::{Limit, MAX_PLAN_CREDITS, Plan, PlanId, PremiumAccess, validate_limits};
use crate::pricing::PricingRule;

/// A tenant's identifier: 1-64 of `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Arc<str>);

impl PartialEq for TenantId {
    /// Clones of one id compare by pointer; others by content.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::hash::Hash for TenantId {
    /// By content, as equality is.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl TenantId {
    /// Validates and wraps a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Self, FieldError> {
        let id = id.into();
        crate::event::check_token(&id, 64).map_err(|p| FieldError::new("tenant_id", p))?;
        Ok(TenantId(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a tenant's calls are decided at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Calls are decided normally.
    #[default]
    Active,
    /// Every call is denied with `tenant_suspended`.
    Suspended,
}

/// The day of the month (1-28, UTC midnight) on which a tenant's billing period starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct BillingAnchor(u8);

impl BillingAnchor {
    /// Periods that follow calendar months.
    pub const FIRST: BillingAnchor = BillingAnchor(1);

    /// An anchor on `day` (1-28).
    pub fn new(day: u8) -> Option<Self> {
        (1..=28).contains(&day).then_some(BillingAnchor(day))
    }

    /// The billing period `[start, end)` that contains `t`.
    pub fn period_containing(self, t: Timestamp) -> Period {
        let dt = t.to_datetime();
        let (mut y, mut m) = (dt.year(), dt.month());
        if dt.day() < u32::from(self.0) {
            (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        }
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let day = i64::from(self.0 - 1) * 86_400 * 1_000_000;
        Period {
            start: Timestamp::from_micros(crate::plan::month_start(y, m).as_micros() + day),
            end: Timestamp::from_micros(crate::plan::month_start(ny, nm).as_micros() + day),
        }
    }
}

impl Default for BillingAnchor {
    fn default() -> Self {
        BillingAnchor::FIRST
    }
}

impl TryFrom<u8> for BillingAnchor {
    type Error = &'static str;
    fn try_from(day: u8) -> Result<Self, &'static str> {
        BillingAnchor::new(day).ok_or("billing anchor day must be 1-28")
    }
}

impl From<BillingAnchor> for u8 {
    fn from(a: BillingAnchor) -> u8 {
        a.0
    }
}

/// A billing period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// First instant of the period.
    pub start: Timestamp,
    /// First instant after the period.
    pub end: Timestamp,
}

/// Per-tenant changes to its plan, held as data. An absent field keeps the plan's value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    /// Replaces the plan's monthly allowance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_credits: Option<u64>,
    /// Replaces the plan's windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<Limit>>,
    /// Replaces the plan's premium access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub premium: Option<PremiumAccess>,
    /// Replaces the plan's overdraft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft: Option<u64>,
    /// Rules checked before the plan's own (a tenant's negotiated prices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pricing: Vec<PricingRule>,
}

impl TenantOverrides {
    /// The plan with these overrides applied, validated.
    pub fn apply(&self, plan: &Plan) -> Result<Plan, PlanError> {
        let mut p = plan.clone();
        if let Some(c) = self.monthly_credits {
            p.monthly_credits = c;
        }
        if let Some(l) = &self.limits {
            validate_limits(l)?;
            p.limits = l.clone();
        }
        if let Some(pr) = &self.premium {
            p.premium = pr.clone();
        }
        if let Some(o) = self.overdraft {
            p.overdraft = o;
        }
        if !self.pricing.is_empty() {
            let mut rules = self.pricing.clone();
            rules.extend(p.pricing);
            p.pricing = rules;
        }
        if p.monthly_credits > MAX_PLAN_CREDITS || p.overdraft > MAX_PLAN_CREDITS {
            return Err(PlanError::TooManyCredits { field: "overrides" });
        }
        p.validate()?;
        Ok(p)
    }
}

/// A tenant: the party whose calls are metered and billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// A display name.
    pub name: String,
    /// The plan it is on.
    pub plan: PlanId,
    /// Its home region, used for pricing when an event names none.
    pub region: Option<String>,
    /// Active or suspended.
    pub status: TenantStatus,
    /// When its billing periods start.
    pub billing_anchor: BillingAnchor,
    /// Its changes to the plan.
    pub overrides: TenantOverrides,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Tenant {
    /// An active tenant on `plan`, anchored on the 1st, with no overrides.
    pub fn new(id: TenantId, plan: PlanId, created_at: Timestamp) -> Self {
        Tenant {
            name: id.as_str().to_owned(),
            id,
            plan,
            region: None,
            status: TenantStatus::Active,
            billing_anchor: BillingAnchor::FIRST,
            overrides: TenantOverrides::default(),
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::from_datetime(s.parse().unwrap())
    }

    #[test]
    fn periods_follow_the_anchor() {
        let p = BillingAnchor::FIRST.period_containing(ts("2026-03-15T10:00:00Z"));
        assert_eq!((p.start, p.end), (ts("2026-03-01T00:00:00Z"), ts("2026-04-01T00:00:00Z")));
        let a = BillingAnchor::new(15).unwrap();
        let p = a.period_containing(ts("2026-01-10T00:00:00Z"));
        assert_eq!((p.start, p.end), (ts("2025-12-15T00:00:00Z"), ts("2026-01-15T00:00:00Z")));
        let p = a.period_containing(ts("2026-01-15T00:00:00Z"));
        assert_eq!(p.start, ts("2026-01-15T00:00:00Z"));
        assert!(BillingAnchor::new(29).is_none());
    }

    #[test]
    fn overrides_replace_and_are_validated() {
        let o = TenantOverrides { monthly_credits: Some(7), overdraft: Some(3), ..Default::default() };
        let p = o.apply(&Plan::free()).unwrap();
        assert_eq!((p.monthly_credits, p.overdraft, p.limits.len()), (7, 3, 1));
        let bad = TenantOverrides { monthly_credits: Some(u64::MAX), ..Default::default() };
        assert!(bad.apply(&Plan::free()).is_err());
    }
}
