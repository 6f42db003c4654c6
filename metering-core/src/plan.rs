//! Plans: what a tenant may call, how often, and at what price.
//!
//! A [`Plan`] is data. It is validated once when built ([`Plan::validate`]) so the
//! decision never meets a nonsensical plan. The seeded presets are [`Plan::free`],
//! [`Plan::basic`] and [`Plan::pro`].

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::PlanError;
use crate::pricing::PricingRule;

/// The most credits a plan may grant per month or allow as overdraft.
pub const MAX_PLAN_CREDITS: u64 = 1_000_000_000_000;
/// The most rate-limit windows one plan may have (one per [`Per`]).
pub const MAX_LIMITS: usize = 5;
/// The most pricing rules one plan may have.
pub const MAX_PRICING_RULES: usize = 64;
/// The most premium features one plan may list.
pub const MAX_PREMIUM_FEATURES: usize = 64;

/// A plan's identifier, e.g. `free` or `pro`: 1 to 64 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanId(String);

impl PlanId {
    /// Validates and wraps a plan identifier.
    pub fn new(id: impl Into<String>) -> Result<Self, PlanError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(PlanId(id)) } else { Err(PlanError::InvalidId) }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlanId {
    type Error = PlanError;
    fn try_from(s: String) -> Result<Self, PlanError> {
        PlanId::new(s)
    }
}

impl From<PlanId> for String {
    fn from(id: PlanId) -> String {
        id.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length of a rate-limit window.
///
/// `second`, `minute` and `hour` are smooth burst limits (GCRA: up to `max` at once,
/// then one call every `per / max`), judged at decision time because they protect
/// present load. `day` and `month` are exact quotas over calendar-aligned UTC windows,
/// judged by the event's timestamp because they are what the customer buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// A smooth limit per second.
    Second,
    /// A smooth limit per minute.
    Minute,
    /// A smooth limit per hour.
    Hour,
    /// An exact quota per UTC calendar day.
    Day,
    /// An exact quota per UTC calendar month.
    Month,
}

impl Per {
    /// Every window length, shortest first.
    pub const ALL: [Per; 5] = [Per::Second, Per::Minute, Per::Hour, Per::Day, Per::Month];

    /// The name used in JSON and headers (`second`, `minute`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
            Per::Month => "month",
        }
    }

    /// Whether this window is an exact calendar quota (day, month) rather than a smooth limit.
    pub fn is_calendar(self) -> bool {
        matches!(self, Per::Day | Per::Month)
    }

    /// The length of a smooth window; `None` for calendar windows, whose length varies.
    pub fn smooth_period(self) -> Option<Duration> {
        match self {
            Per::Second => Some(Duration::from_secs(1)),
            Per::Minute => Some(Duration::from_secs(60)),
            Per::Hour => Some(Duration::from_secs(3600)),
            Per::Day | Per::Month => None,
        }
    }

    /// The nominal length, used to order windows and size retention.
    pub fn nominal(self) -> Duration {
        match self {
            Per::Day => Duration::from_secs(86_400),
            Per::Month => Duration::from_secs(31 * 86_400),
            smooth => smooth.smooth_period().unwrap_or_default(),
        }
    }

    /// The UTC calendar window `[start, end)` that contains `t` (for any `Per`:
    /// smooth windows are cut at whole seconds, minutes or hours).
    pub fn window_containing(self, t: Timestamp) -> (Timestamp, Timestamp) {
        match self {
            Per::Month => {
                let dt = t.to_datetime();
                let start = month_start(dt.year(), dt.month());
                let (ny, nm) = if dt.month() == 12 { (dt.year() + 1, 1) } else { (dt.year(), dt.month() + 1) };
                (start, month_start(ny, nm))
            }
            other => {
                let len = crate::clock::duration_micros(other.nominal());
                let start = t.as_micros().div_euclid(len) * len;
                (Timestamp::from_micros(start), Timestamp::from_micros(start + len))
            }
        }
    }
}

pub(crate) fn month_start(year: i32, month: u32) -> Timestamp {
    let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    Timestamp::from_datetime(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()))
}

impl fmt::Display for Per {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rate-limit window: at most `max` allowed calls per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// The most calls allowed in the window.
    pub max: NonZeroU32,
    /// The window's length.
    pub per: Per,
}

impl Limit {
    /// `max` calls per `per`; `None` when `max` is zero.
    pub fn new(max: u32, per: Per) -> Option<Self> {
        NonZeroU32::new(max).map(|max| Limit { max, per })
    }

    /// The spacing between calls of a smooth window, in microseconds (at least 1).
    pub(crate) fn emission_interval_micros(self) -> i64 {
        let period = self.per.smooth_period().map(crate::clock::duration_micros).unwrap_or(0);
        (period / i64::from(self.max.get())).max(1)
    }
}

/// Which premium endpoints and features a plan may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PremiumAccess {
    /// No premium call is allowed.
    #[default]
    None,
    /// Every premium call is allowed.
    All,
    /// Only premium calls whose `feature` is listed.
    Features(BTreeSet<String>),
}

impl PremiumAccess {
    /// Whether a premium call with this feature is allowed.
    pub fn allows(&self, feature: Option<&str>) -> bool {
        match self {
            PremiumAccess::None => false,
            PremiumAccess::All => true,
            PremiumAccess::Features(set) => feature.is_some_and(|f| set.contains(f)),
        }
    }
}

/// JSON form: `true`, `false`, or a list of allowed premium features, each listed once.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PremiumRepr {
    Flag(bool),
    Features(Vec<String>),
}

impl Serialize for PremiumAccess {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PremiumAccess::None => PremiumRepr::Flag(false),
            PremiumAccess::All => PremiumRepr::Flag(true),
            PremiumAccess::Features(f) => PremiumRepr::Features(f.iter().cloned().collect()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PremiumAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match PremiumRepr::deserialize(d)? {
            PremiumRepr::Flag(false) => PremiumAccess::None,
            PremiumRepr::Flag(true) => PremiumAccess::All,
            PremiumRepr::Features(list) => {
                let len = list.len();
                let set: BTreeSet<String> = list.into_iter().collect();
                if set.len() != len {
                    return Err(serde::de::Error::custom("a premium feature is listed twice"));
                }
                PremiumAccess::Features(set)
            }
        })
    }
}

/// A plan: allowance, windows, prices, premium access and overdraft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's identifier.
    pub id: PlanId,
    /// A human-readable name.
    pub name: String,
    /// Credits granted at the start of every billing period.
    pub monthly_credits: u64,
    /// Rate-limit windows, at most one per [`Per`]; all must admit a call.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Which premium calls are allowed.
    #[serde(default)]
    pub premium: PremiumAccess,
    /// How far below zero the balance may go (0: calls are refused at zero credits).
    #[serde(default)]
    pub overdraft: u64,
    /// Prices; a call that no rule matches costs its own `credits_used`.
    #[serde(default)]
    pub pricing: Vec<PricingRule>,
}

impl Plan {
    /// The `free` plan, the default at sign-up: 100 credits a month, 10 calls a day, no premium.
    pub fn free() -> Plan {
        Plan::preset("free", "Free", 100, &[(10, Per::Day)], PremiumAccess::None)
    }

    /// The `basic` plan: 5,000 credits a month, 1,000 calls a day and 60 a minute, no premium.
    pub fn basic() -> Plan {
        Plan::preset("basic", "Basic", 5_000, &[(1_000, Per::Day), (60, Per::Minute)], PremiumAccess::None)
    }

    /// The `pro` plan: 50,000 credits a month, 600 calls a minute, premium allowed.
    pub fn pro() -> Plan {
        Plan::preset("pro", "Pro", 50_000, &[(600, Per::Minute)], PremiumAccess::All)
    }

    /// The seeded plans: `free`, `basic` and `pro`.
    pub fn presets() -> Vec<Plan> {
        vec![Plan::free(), Plan::basic(), Plan::pro()]
    }

    fn preset(id: &str, name: &str, credits: u64, limits: &[(u32, Per)], premium: PremiumAccess) -> Plan {
        Plan {
            id: PlanId(id.to_owned()),
            name: name.to_owned(),
            monthly_credits: credits,
            limits: limits.iter().filter_map(|&(max, per)| Limit::new(max, per)).collect(),
            premium,
            overdraft: 0,
            pricing: Vec::new(),
        }
    }

    /// A plan with this id and allowance, no windows, no premium, no overdraft.
    pub fn new(id: PlanId, monthly_credits: u64) -> Plan {
        Plan {
            name: id.as_str().to_owned(),
            id,
            monthly_credits,
            limits: Vec::new(),
            premium: PremiumAccess::None,
            overdraft: 0,
            pricing: Vec::new(),
        }
    }

    /// Adds a window (builder style).
    pub fn with_limit(mut self, max: NonZeroU32, per: Per) -> Plan {
        self.limits.push(Limit { max, per });
        self
    }

    /// Sets premium access (builder style).
    pub fn with_premium(mut self, premium: PremiumAccess) -> Plan {
        self.premium = premium;
        self
    }

    /// Sets the overdraft (builder style).
    pub fn with_overdraft(mut self, overdraft: u64) -> Plan {
        self.overdraft = overdraft;
        self
    }

    /// Adds a pricing rule (builder style).
    pub fn with_rule(mut self, rule: PricingRule) -> Plan {
        self.pricing.push(rule);
        self
    }

    /// Checks every field; the engine only stores plans that pass.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.name.trim().is_empty() || self.name.chars().count() > 128 || self.name.chars().any(char::is_control) {
            return Err(PlanError::InvalidName);
        }
        if self.monthly_credits > MAX_PLAN_CREDITS {
            return Err(PlanError::TooManyCredits { field: "monthly_credits" });
        }
        if self.overdraft > MAX_PLAN_CREDITS {
            return Err(PlanError::TooManyCredits { field: "overdraft" });
        }
        validate_limits(&self.limits)?;
        if let PremiumAccess::Features(f) = &self.premium
            && (f.len() > MAX_PREMIUM_FEATURES || f.iter().any(|x| crate::event::check_token(x, 64).is_err()))
        {
            return Err(PlanError::InvalidPremium);
        }
        if self.pricing.len() > MAX_PRICING_RULES {
            return Err(PlanError::TooManyRules);
        }
        self.pricing.iter().try_for_each(PricingRule::validate)
    }
}

/// Checks a set of windows: at most one per [`Per`] (every window applies to every call),
/// and a smooth window no finer than one call per microsecond.
pub(crate) fn validate_limits(limits: &[Limit]) -> Result<(), PlanError> {
    if limits.len() > MAX_LIMITS {
        return Err(PlanError::DuplicateWindow);
    }
    let mut seen = BTreeSet::new();
    for l in limits {
        if !seen.insert(l.per) {
            return Err(PlanError::DuplicateWindow);
        }
        if l.per.smooth_period().is_some() && u64::from(l.max.get()) > 1_000_000 {
            return Err(PlanError::WindowTooFine);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_as_documented() {
        for p in Plan::presets() {
            p.validate().unwrap();
        }
        assert_eq!(Plan::free().monthly_credits, 100);
        assert_eq!(Plan::basic().limits.len(), 2);
        assert_eq!(Plan::pro().premium, PremiumAccess::All);
    }

    #[test]
    fn calendar_windows_are_utc_aligned() {
        let t = Timestamp::from_datetime("2026-02-14T13:45:00Z".parse().unwrap());
        let (s, e) = Per::Day.window_containing(t);
        assert_eq!((s.to_string(), e.to_string()), ("2026-02-14T00:00:00Z".into(), "2026-02-15T00:00:00Z".into()));
        let (s, e) = Per::Month.window_containing(t);
        assert_eq!((s.to_string(), e.to_string()), ("2026-02-01T00:00:00Z".into(), "2026-03-01T00:00:00Z".into()));
        let dec = Timestamp::from_datetime("2026-12-31T23:59:59Z".parse().unwrap());
        assert_eq!(Per::Month.window_containing(dec).1.to_string(), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn duplicate_windows_are_refused() {
        let mut p = Plan::free();
        p.limits.push(Limit::new(5, Per::Day).unwrap());
        assert_eq!(p.validate(), Err(PlanError::DuplicateWindow));
    }

    #[test]
    fn premium_json_forms() {
        let all: PremiumAccess = serde_json::from_str("true").unwrap();
        assert_eq!(all, PremiumAccess::All);
        let some: PremiumAccess = serde_json::from_str(r#"["gpt"]"#).unwrap();
        assert!(some.allows(Some("gpt")) && !some.allows(Some("x")) && !some.allows(None));
        assert_eq!(serde_json::to_string(&PremiumAccess::None).unwrap(), "false");
        assert!(serde_json::from_str::<PremiumAccess>(r#"["gpt","gpt"]"#).is_err());
    }
}
