//! Pricing: what a call costs, decided by the tenant's plan.
//!
//! The platform is the authority. A matching [`PricingRule`] sets the price as
//! `per_call + per_unit * credits_used`, so a caller can report units (tokens, rows) but
//! never talk the fixed part down; a call no rule matches costs its `credits_used`.
//! The most specific rule wins (the one that names the most of endpoint, method,
//! feature and region); among equally specific rules the first listed wins.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::event::{Event, Method};
use crate::plan::MAX_PLAN_CREDITS;

/// The most credits one call may cost.
pub const MAX_CALL_CREDITS: u64 = 1_000_000;

/// A price for the calls it matches; an absent field matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingRule {
    /// Matches calls to this endpoint (route template) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Matches calls with this method only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Matches calls of this feature only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Matches calls in this region only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Credits charged per call, whatever the caller reports.
    #[serde(default)]
    pub per_call: u64,
    /// Credits charged per unit the caller reports in `credits_used`.
    #[serde(default)]
    pub per_unit: u64,
}

impl PricingRule {
    /// A rule that matches everything and charges `per_call` credits per call.
    pub fn fixed(per_call: u64) -> Self {
        PricingRule { endpoint: None, method: None, feature: None, region: None, per_call, per_unit: 0 }
    }

    /// Restricts the rule to a feature (builder style).
    pub fn for_feature(mut self, feature: impl Into<String>) -> Self {
        self.feature = Some(feature.into());
        self
    }

    /// Restricts the rule to a region (builder style).
    pub fn for_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Restricts the rule to an endpoint (builder style).
    pub fn for_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Charges `per_unit` per reported unit on top of `per_call` (builder style).
    pub fn per_unit(mut self, per_unit: u64) -> Self {
        self.per_unit = per_unit;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), PlanError> {
        let strings_ok =
            [&self.feature, &self.region].into_iter().flatten().all(|s| crate::event::check_token(s, 64).is_ok())
                && self.endpoint.as_deref().is_none_or(|e| crate::event::check_text(e, 512).is_ok());
        if !strings_ok {
            return Err(PlanError::InvalidPricing);
        }
        if self.per_call > MAX_CALL_CREDITS || self.per_unit > MAX_CALL_CREDITS {
            return Err(PlanError::TooManyCredits { field: "pricing" });
        }
        Ok(())
    }

    fn matches(&self, e: &Event) -> Option<u32> {
        fn field<T: PartialEq + ?Sized>(rule: Option<&T>, value: Option<&T>) -> Option<u32> {
            match rule {
                None => Some(0),
                Some(r) if Some(r) == value => Some(1),
                Some(_) => None,
            }
        }
        Some(
            field(self.endpoint.as_deref(), Some(e.endpoint.as_str()))?
                + field(self.method.as_ref(), Some(&e.method))?
                + field(self.feature.as_deref(), e.feature.as_deref())?
                + field(self.region.as_deref(), e.region.as_deref())?,
        )
    }
}

/// The credits an event costs under these rules (saturating at [`MAX_PLAN_CREDITS`]).
pub fn price(rules: &[PricingRule], event: &Event) -> u64 {
    let mut best: Option<(u32, &PricingRule)> = None;
    for rule in rules {
        if let Some(score) = rule.matches(event)
            && best.is_none_or(|(s, _)| score > s)
        {
            best = Some((score, rule));
        }
    }
    let cost = match best {
        None => event.credits_used,
        Some((_, r)) => r.per_call.saturating_add(r.per_unit.saturating_mul(event.credits_used)),
    };
    cost.min(MAX_PLAN_CREDITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::UsageEvent;

    fn event(feature: Option<&str>, region: Option<&str>, credits: i64) -> Event {
        let mut e = UsageEvent::new("t1", "svc", "/x", "GET");
        e.feature = feature.map(Into::into);
        e.region = region.map(Into::into);
        e.credits_used = Some(credits);
        e.validate_at(crate::clock::Timestamp::EPOCH, &Default::default()).unwrap()
    }

    #[test]
    fn without_rules_the_event_says() {
        assert_eq!(price(&[], &event(None, None, 3)), 3);
    }

    #[test]
    fn most_specific_rule_wins_and_caller_cannot_lower_fixed_part() {
        let rules = vec![
            PricingRule::fixed(1),
            PricingRule::fixed(10).for_feature("gpt"),
            PricingRule::fixed(20).for_feature("gpt").for_region("eu"),
            PricingRule::fixed(2).per_unit(1).for_region("us"),
        ];
        assert_eq!(price(&rules, &event(None, None, 0)), 1);
        assert_eq!(price(&rules, &event(Some("gpt"), None, 0)), 10);
        assert_eq!(price(&rules, &event(Some("gpt"), Some("eu"), 0)), 20);
        assert_eq!(price(&rules, &event(None, Some("us"), 5)), 7);
    }
}
