//! Usage events: what a caller reports, and the checked form the engine decides on.
//!
//! A [`UsageEvent`] is the raw input (it deserializes from the JSON of `POST /api/track`).
//! [`UsageEvent::validate_at`] turns it into an [`Event`] or a [`FieldError`] naming the
//! field. The limits, all inclusive:
//!
//! | field | rule |
//! |---|---|
//! | `tenant_id` | 1-64 of `[A-Za-z0-9_.:-]` |
//! | `service_name` | 1-128 characters, no control characters |
//! | `endpoint` | 1-512 characters, no control characters |
//! | `method` | `GET` `POST` `PUT` `PATCH` `DELETE` `HEAD` `OPTIONS` (any case) |
//! | `credits_used` | 0-1,000,000, default 1 |
//! | `event_id` | 1-128 printable ASCII characters without spaces; generated (UUIDv7) when absent |
//! | `feature`, `region` | 1-64 of `[A-Za-z0-9_.:-]` |
//! | `timestamp` | RFC 3339, from 24 hours before now to 5 minutes after (see [`TimeBounds`]) |

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{FieldError, FieldProblem};
use crate::pricing::MAX_CALL_CREDITS;
use crate::tenant::TenantId;

/// An HTTP method a call can be tracked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
}

impl Method {
    /// The method's name in upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

impl FromStr for Method {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        const ALL: [Method; 7] =
            [Method::Get, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Head, Method::Options];
        ALL.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or(FieldError::new("method", FieldProblem::UnknownMethod))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's idempotency key, unique per tenant.
///
/// Compared, ordered and hashed by its text alone; whether it was generated is a hint
/// for stores (see [`is_fresh`](Self::is_fresh)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId {
    id: Arc<str>,
    fresh: bool,
}

impl PartialEq for EventId {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for EventId {}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl std::hash::Hash for EventId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl EventId {
    /// Validates a caller-chosen key.
    pub fn new(id: impl Into<String>) -> Result<Self, FieldError> {
        let id = id.into();
        if id.is_empty() {
            return Err(FieldError::new("event_id", FieldProblem::Empty));
        }
        if id.len() > 128 {
            return Err(FieldError::new("event_id", FieldProblem::TooLong { max: 128 }));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new("event_id", FieldProblem::BadCharacter));
        }
        Ok(EventId { id: id.into(), fresh: false })
    }

    /// A fresh time-ordered key (UUIDv7) for an instant.
    pub fn generate(at: Timestamp) -> Self {
        let micros = at.as_micros().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, micros / 1_000_000, ((micros % 1_000_000) * 1000) as u32);
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        EventId { id: Arc::from(&*uuid::Uuid::new_v7(ts).hyphenated().encode_lower(&mut buf)), fresh: true }
    }

    /// Whether this key was made by [`generate`](Self::generate) in this process, so no
    /// stored record can hold it yet and a store may skip looking for one. A key read
    /// back, parsed or given by a caller (even one generated earlier) is not fresh.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The millisecond a key in the form [`generate`](Self::generate) makes (a lower-case
    /// hyphenated UUIDv7) was made for: for a generated key, the instant it was generated
    /// at, floored to the millisecond. `None` for a key of any other form.
    pub fn generated_ms(&self) -> Option<Timestamp> {
        let (secs, nanos) = self.generated_uuid()?.get_timestamp()?.to_unix();
        let millis = i64::try_from(secs).ok()?.checked_mul(1_000)?.checked_add(i64::from(nanos / 1_000_000))?;
        Some(Timestamp::from_micros(millis.checked_mul(1_000)?))
    }

    fn generated_uuid(&self) -> Option<uuid::Uuid> {
        let uuid = uuid::Uuid::try_parse(&self.id).ok()?;
        let canonical = uuid.get_version_num() == 7 && *uuid.hyphenated().encode_lower(&mut [0; 36]) == *self.id;
        canonical.then_some(uuid)
    }
}

impl TryFrom<String> for EventId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        EventId::new(s)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.id.to_string()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// How far an event's timestamp may be from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// The oldest accepted event, relative to now (default 24 hours).
    pub max_age: Duration,
    /// The furthest accepted future timestamp, for clock skew (default 5 minutes).
    pub max_ahead: Duration,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds { max_age: Duration::from_secs(24 * 3600), max_ahead: Duration::from_secs(300) }
    }
}

/// A usage event as reported, before any check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The tenant the call is charged to.
    pub tenant_id: String,
    /// The API (service) that was called.
    pub service_name: String,
    /// The endpoint, as a route template (`/notes/{id}`), not a raw path.
    pub endpoint: String,
    /// The HTTP method.
    pub method: String,
    /// Credits (or units, under a per-unit price) the call used; default 1.
    #[serde(default)]
    pub credits_used: Option<i64>,
    /// Whether the endpoint is premium.
    #[serde(default)]
    pub premium: bool,
    /// Idempotency key; generated when absent.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The feature type, for entitlement and pricing.
    #[serde(default)]
    pub feature: Option<String>,
    /// The region, for pricing.
    #[serde(default)]
    pub region: Option<String>,
    /// When the call happened; default now.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
}

impl UsageEvent {
    /// An event with the four required fields and every other field at its default.
    pub fn new(
        tenant_id: impl Into<String>,
        service: impl Into<String>,
        endpoint: impl Into<String>,
        method: impl Into<String>,
    ) -> Self {
        UsageEvent {
            tenant_id: tenant_id.into(),
            service_name: service.into(),
            endpoint: endpoint.into(),
            method: method.into(),
            credits_used: None,
            premium: false,
            event_id: None,
            feature: None,
            region: None,
            timestamp: None,
        }
    }

    /// Sets the idempotency key (builder style).
    pub fn with_event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// Sets the credits used (builder style).
    pub fn with_credits(mut self, credits: i64) -> Self {
        self.credits_used = Some(credits);
        self
    }

    /// Marks the call premium, with an optional feature (builder style).
    pub fn premium(mut self, feature: Option<&str>) -> Self {
        self.premium = true;
        self.feature = feature.map(Into::into);
        self
    }

    /// Checks every field against the documented limits, with `now` for the time bounds.
    pub fn validate_at(self, now: Timestamp, bounds: &TimeBounds) -> Result<Event, FieldError> {
        let tenant_id = TenantId::new(self.tenant_id)?;
        check_text(&self.service_name, 128).map_err(|p| FieldError::new("service_name", p))?;
        check_text(&self.endpoint, 512).map_err(|p| FieldError::new("endpoint", p))?;
        let method: Method = self.method.parse()?;
        let credits_used = match self.credits_used {
            None => 1,
            Some(c) if c < 0 => return Err(FieldError::new("credits_used", FieldProblem::Negative)),
            Some(c) if c as u64 > MAX_CALL_CREDITS => {
                return Err(FieldError::new("credits_used", FieldProblem::TooLarge { max: MAX_CALL_CREDITS }));
            }
            Some(c) => c as u64,
        };
        let feature = optional_token(self.feature, "feature")?;
        let region = optional_token(self.region, "region")?;
        if let Some(ts) = self.timestamp {
            if ts < now.minus(bounds.max_age) {
                return Err(FieldError::new(
                    "timestamp",
                    FieldProblem::TooOld { max_age_secs: bounds.max_age.as_secs() },
                ));
            }
            if ts > now.plus(bounds.max_ahead) {
                return Err(FieldError::new(
                    "timestamp",
                    FieldProblem::InFuture { max_ahead_secs: bounds.max_ahead.as_secs() },
                ));
            }
        }
        let timestamp = self.timestamp.unwrap_or(now);
        let given_id = self.event_id.map(EventId::new).transpose()?;
        let mut event = Event {
            event_id: given_id.clone().unwrap_or_else(|| EventId::generate(timestamp)),
            tenant_id,
            service_name: self.service_name,
            endpoint: self.endpoint,
            method,
            credits_used,
            premium: self.premium,
            feature,
            region,
            timestamp,
            fingerprint: 0,
        };
        event.fingerprint = event.content_fingerprint(self.timestamp.is_some());
        Ok(event)
    }
}

fn optional_token(value: Option<String>, field: &'static str) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) => match check_token(&v, 64) {
            Ok(_) => Ok(Some(v)),
            Err(p) => Err(FieldError::new(field, p)),
        },
        None => Ok(None),
    }
}

/// Checks free text: non-empty after trimming, at most `max` characters, no control characters.
pub(crate) fn check_text(s: &str, max: usize) -> Result<&str, FieldProblem> {
    if s.trim().is_empty() {
        return Err(FieldProblem::Empty);
    }
    if s.chars().count() > max {
        return Err(FieldProblem::TooLong { max });
    }
    if s.chars().any(char::is_control) {
        return Err(FieldProblem::ControlCharacter);
    }
    Ok(s)
}

/// Checks an identifier-like token: 1 to `max` of `[A-Za-z0-9_.:-]`.
pub(crate) fn check_token(s: &str, max: usize) -> Result<&str, FieldProblem> {
    if s.is_empty() {
        return Err(FieldProblem::Empty);
    }
    if s.len() > max {
        return Err(FieldProblem::TooLong { max });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        return Err(FieldProblem::BadCharacter);
    }
    Ok(s)
}

/// A checked event: every field within its limits, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The idempotency key (given or generated).
    pub event_id: EventId,
    /// The tenant charged.
    pub tenant_id: TenantId,
    /// The service called.
    pub service_name: String,
    /// The endpoint's route template.
    pub endpoint: String,
    /// The method.
    pub method: Method,
    /// Credits or units reported by the caller.
    pub credits_used: u64,
    /// Whether the endpoint is premium.
    pub premium: bool,
    /// The feature type.
    pub feature: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// When the call happened; decides its calendar windows and billing period.
    pub timestamp: Timestamp,
    /// A stable hash of the reported content, to tell a replay from a conflicting reuse.
    pub fingerprint: u64,
}

impl Event {
    /// FNV-1a over the reported fields, stable across builds and platforms (it is stored).
    fn content_fingerprint(&self, timestamp_given: bool) -> u64 {
        let mut h = Fnv1a::default();
        for part in [self.tenant_id.as_str(), &self.service_name, &self.endpoint, self.method.as_str()] {
            h.write(part.as_bytes());
            h.write_u8(0xff);
        }
        h.write_u64(self.credits_used);
        h.write_u8(u8::from(self.premium));
        for part in [&self.feature, &self.region] {
            match part {
                Some(s) => {
                    h.write_u8(1);
                    h.write(s.as_bytes());
                }
                None => h.write_u8(0),
            }
            h.write_u8(0xff);
        }
        if timestamp_given {
            h.write_i64(self.timestamp.as_micros());
        }
        h.finish()
    }
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_secs(1_800_000_000)
    }

    #[test]
    fn a_generated_key_tells_its_millisecond_and_no_other_key_does() {
        let at = Timestamp::from_micros(1_800_000_000_123_456);
        let generated = EventId::generate(at);
        assert_eq!(generated.generated_ms(), Some(Timestamp::from_micros(1_800_000_000_123_000)));
        let sent_back = EventId::new(generated.as_str()).unwrap();
        assert_eq!(sent_back.generated_ms(), generated.generated_ms(), "the form tells, not where it came from");
        for other in [
            generated.as_str().to_uppercase(),
            generated.as_str().replace('-', ""),
            "0194d3c1-7a2b-4c3d-8e4f-123456789abc".to_owned(),
            "order-17".to_owned(),
        ] {
            let other = EventId::new(other).unwrap();
            assert_eq!(other.generated_ms(), None, "{}", other.as_str());
        }
    }

    #[test]
    fn only_a_key_generated_here_is_fresh_and_freshness_never_changes_equality() {
        let generated = EventId::generate(now());
        assert!(generated.is_fresh());
        let given = EventId::new(generated.as_str()).unwrap();
        assert!(!given.is_fresh(), "a caller may send back a key it was given");
        let read: EventId = serde_json::from_value(serde_json::json!(generated.as_str())).unwrap();
        assert!(!read.is_fresh());
        assert_eq!(given, generated);
        let hash = |id: &EventId| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
        };
        assert_eq!(hash(&given), hash(&generated));
        let event = UsageEvent::new("acme", "svc", "/x", "GET").validate_at(now(), &TimeBounds::default()).unwrap();
        assert!(event.event_id.is_fresh());
    }

    fn check(e: UsageEvent) -> Result<Event, FieldError> {
        e.validate_at(now(), &TimeBounds::default())
    }

    #[test]
    fn defaults_are_filled_in() {
        let e = check(UsageEvent::new("acme", "notes", "/notes/{id}", "get")).unwrap();
        assert_eq!((e.method, e.credits_used, e.timestamp), (Method::Get, 1, now()));
        assert_eq!(e.event_id.as_str().len(), 36);
    }

    #[test]
    fn bad_fields_are_named() {
        let base = || UsageEvent::new("acme", "notes", "/n", "GET");
        let cases: Vec<(UsageEvent, &str)> = vec![
            (UsageEvent::new("", "s", "/n", "GET"), "tenant_id"),
            (UsageEvent::new("acme", " ", "/n", "GET"), "service_name"),
            (UsageEvent::new("acme", "s", "/n\n", "GET"), "endpoint"),
            (UsageEvent::new("acme", "s", "/n", "BREW"), "method"),
            (base().with_credits(-1), "credits_used"),
            (base().with_credits(i64::MAX), "credits_used"),
            (base().with_event_id(""), "event_id"),
            (base().with_event_id("a b"), "event_id"),
            (base().with_event_id("x".repeat(129)), "event_id"),
            (UsageEvent { region: Some("eu west".into()), ..base() }, "region"),
            (UsageEvent { timestamp: Some(now().minus(Duration::from_secs(90_000))), ..base() }, "timestamp"),
            (UsageEvent { timestamp: Some(now().plus(Duration::from_secs(301))), ..base() }, "timestamp"),
        ];
        for (event, field) in cases {
            assert_eq!(check(event).unwrap_err().field, field);
        }
    }

    #[test]
    fn fingerprint_tells_content_apart() {
        let a = check(UsageEvent::new("acme", "s", "/n", "GET").with_event_id("e1")).unwrap();
        let b = check(UsageEvent::new("acme", "s", "/n", "GET").with_event_id("e1")).unwrap();
        let c = check(UsageEvent::new("acme", "s", "/n", "GET").with_event_id("e1").with_credits(2)).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }
}
