//! Routes: tracking (`POST /api/track`, `POST /api/track/batch`).
//!
//! A track call is decided by the engine and answered once its ledger record is durable
//! (group commit). Allowed calls answer 200; denied calls answer the reason's status
//! (429 with `Retry-After`, 402, 403) with the same body. Every answer carries the
//! rate-limit header fields of the decision.
//!
//! Before the engine sees a call, the caller's right to report it is checked: the tenant
//! (its own, unless a service key) and, for a key bound to a service, the service. A field
//! of the wrong shape answers 422 before any such check answers 403.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metering_core::{Decision, Error as CoreError, Per, TenantId, TimeBounds, Timestamp, UsageEvent, WindowStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ActsFor, Caller};
use crate::{ApiError, ApiJson, AppState};

/// The most events in one batch.
pub(crate) const MAX_BATCH: usize = 1_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(track)).routes(routes!(track_batch))
}

/// The standard error body of every 4xx/5xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: ErrorDetail,
}

/// One error: a stable code, a message, the field at fault.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable snake_case code (`invalid_field`, `forbidden`, `idempotency_conflict`, ...).
    #[schema(example = "invalid_field")]
    code: String,
    /// A human-readable message.
    message: String,
    /// The input field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl From<ApiError> for ErrorDetail {
    fn from(e: ApiError) -> Self {
        ErrorDetail { code: e.code.to_owned(), message: e.message, field: e.field }
    }
}

/// One call to track. A field it does not know is refused (422 naming it).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackRequest {
    /// The tenant charged; may be left out when the caller acts for exactly one tenant.
    #[schema(example = "acme", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    tenant_id: Option<String>,
    /// The API (service) called: 1-128 characters.
    #[schema(
        example = "notes-api",
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    service_name: String,
    /// The endpoint's route template: 1-512 characters.
    #[schema(
        example = "/notes/{id}",
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    endpoint: String,
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`, in any case.
    #[schema(
        example = "GET",
        pattern = r"^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    )]
    method: String,
    /// Credits (or units under a per-unit price) used: 0 to 1,000,000, default 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    credits_used: Option<i64>,
    /// Whether the endpoint is premium.
    #[serde(default)]
    premium: bool,
    /// Idempotency key (1-128 printable ASCII characters); a UUIDv7 when absent.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
    event_id: Option<String>,
    /// The feature type, for entitlement and pricing: 1 to 64 of `[A-Za-z0-9_.:-]`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    feature: Option<String>,
    /// The region, for pricing: 1 to 64 of `[A-Za-z0-9_.:-]`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    region: Option<String>,
    /// When the call happened (RFC 3339; at most 24 hours old, 5 minutes ahead); default now.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    timestamp: Option<Timestamp>,
}

impl TrackRequest {
    /// The engine's event for this request, with the tenant the caller may charge, for a
    /// service the caller may report.
    fn into_event(self, caller: &Caller) -> Result<UsageEvent, ApiError> {
        let tenant_id = tenant_for(caller, self.tenant_id)?;
        service_for(caller, &self.service_name)?;
        Ok(UsageEvent {
            tenant_id,
            service_name: self.service_name,
            endpoint: self.endpoint,
            method: self.method,
            credits_used: self.credits_used,
            premium: self.premium,
            event_id: self.event_id,
            feature: self.feature,
            region: self.region,
            timestamp: self.timestamp,
        })
    }

    /// Reads one event of a batch field by field, so a bad one names its field.
    fn from_value(value: Value) -> Result<Self, ApiError> {
        let Value::Object(mut map) = value else {
            return Err(ApiError::invalid("events", "every event must be a JSON object"));
        };
        fn take<T: serde::de::DeserializeOwned>(
            map: &mut serde_json::Map<String, Value>,
            field: &'static str,
        ) -> Result<Option<T>, ApiError> {
            match map.remove(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => serde_json::from_value(v).map(Some).map_err(|e| ApiError::invalid(field, e.to_string())),
            }
        }
        fn required<T>(v: Option<T>, field: &'static str) -> Result<T, ApiError> {
            v.ok_or_else(|| ApiError::invalid(field, format!("missing field `{field}`")))
        }
        let request = TrackRequest {
            tenant_id: take(&mut map, "tenant_id")?,
            service_name: required(take(&mut map, "service_name")?, "service_name")?,
            endpoint: required(take(&mut map, "endpoint")?, "endpoint")?,
            method: required(take(&mut map, "method")?, "method")?,
            credits_used: take(&mut map, "credits_used")?,
            premium: take(&mut map, "premium")?.unwrap_or(false),
            event_id: take(&mut map, "event_id")?,
            feature: take(&mut map, "feature")?,
            region: take(&mut map, "region")?,
            timestamp: take(&mut map, "timestamp")?,
        };
        // As for one call, a field the event does not know is refused.
        match map.keys().next() {
            Some(unknown) => Err(ApiError::invalid(unknown.clone(), format!("unknown field `{unknown}`"))),
            None => Ok(request),
        }
    }
}

/// The tenant a call is charged to: the one named, which a caller acting for one tenant
/// may only name as its own, or, when none is named, the caller's only tenant. A named id
/// of the wrong shape answers 422 before the caller's right to it is looked at.
fn tenant_for(caller: &Caller, named: Option<String>) -> Result<String, ApiError> {
    let named = named
        .map(|n| TenantId::new(n).map_err(|e| ApiError::invalid("tenant_id", e.problem.to_string())))
        .transpose()?;
    match (named, &caller.acts_for) {
        (None, ActsFor::Tenant(own)) => Ok(own.as_str().to_owned()),
        (None, ActsFor::AnyTenant) => Err(ApiError::invalid("tenant_id", "a service key must name the tenant")),
        (Some(named), ActsFor::Tenant(own)) if named != *own => {
            Err(ApiError::forbidden("this caller may only track calls of its own tenant").with_field("tenant_id"))
        }
        (Some(named), _) => Ok(named.as_str().to_owned()),
    }
}

/// Checks that the caller may report calls of `service_name`: an API key bound to a
/// service reports that service only (the exact name it was created with), any other
/// answers 403 naming `service_name`. A name of the wrong shape answers the engine's 422
/// first, so the binding is never a way to learn less about a bad field.
fn service_for(caller: &Caller, service_name: &str) -> Result<(), ApiError> {
    let Some(bound) = caller.bound_service() else { return Ok(()) };
    if bound == service_name {
        return Ok(());
    }
    // The engine's own rules for the field, on an event that is otherwise valid.
    if let Err(e) =
        UsageEvent::new("probe", service_name, "/", "GET").validate_at(Timestamp::EPOCH, &TimeBounds::default())
        && e.field == "service_name"
    {
        return Err(ApiError::invalid(e.field, e.to_string()));
    }
    Err(ApiError::forbidden(format!("this API key reports calls of the service `{bound}` only"))
        .with_field("service_name"))
}

/// The engine's error as an answer; an unknown tenant is a bad `tenant_id` here.
fn track_error(e: CoreError) -> ApiError {
    match e {
        CoreError::UnknownTenant(t) => ApiError::invalid("tenant_id", format!("unknown tenant `{t}`")),
        other => ApiError::from(other),
    }
}

/// The state of one rate-limit window after the decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct WindowBody {
    /// The window: `second`, `minute`, `hour`, `day` or `month`.
    #[schema(value_type = String, example = "day")]
    window: Per,
    /// The most calls it allows.
    limit: u32,
    /// Calls it still allows.
    remaining: u32,
    /// Seconds until it is whole again.
    reset: u64,
}

impl From<&WindowStatus> for WindowBody {
    fn from(w: &WindowStatus) -> Self {
        WindowBody { window: w.window, limit: w.limit, remaining: w.remaining, reset: w.reset }
    }
}

/// The decision on one call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DecisionBody {
    /// Whether the call may proceed.
    allowed: bool,
    /// Why not: `rate_limited`, `insufficient_credits`, `premium_not_in_plan` or `tenant_suspended`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "rate_limited")]
    reason: Option<&'static str>,
    /// The event's idempotency key (given or generated).
    event_id: String,
    /// Credits deducted (0 when denied).
    credits_charged: u64,
    /// Credits left in the period (negative only within an overdraft).
    credits_remaining: i64,
    /// Every window of the plan.
    limits: Vec<WindowBody>,
    /// Seconds until a rate-limited call may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl From<&Decision> for DecisionBody {
    fn from(d: &Decision) -> Self {
        DecisionBody {
            allowed: d.allowed,
            reason: d.reason.map(|r| r.as_str()),
            event_id: d.event_id.as_str().to_owned(),
            credits_charged: d.credits_charged,
            credits_remaining: d.credits_remaining,
            limits: d.limits.iter().map(WindowBody::from).collect(),
            retry_after: d.retry_after,
        }
    }
}

/// The HTTP answer of a decision: its status, its body, its rate-limit header fields.
fn decision_response(decision: &Decision) -> Response {
    let status = match decision.reason {
        None => StatusCode::OK,
        Some(r) => StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::FORBIDDEN),
    };
    let mut response = (status, Json(DecisionBody::from(decision))).into_response();
    metering_tower::headers::write_rate_limit_headers(decision, response.headers_mut());
    response
}

/// Decides and records one event. A client that goes away cannot abandon a decision
/// between its commit in the counters and its ledger record: the engine finishes an
/// abandoned `track` on a task of its own.
async fn track_event(state: &AppState, event: UsageEvent) -> Result<Decision, ApiError> {
    let decision = state.engine.track(event).await.map_err(track_error)?;
    crate::metrics::record_decision(&decision);
    Ok(decision)
}

/// Track one call: decide it (plan, status, entitlement, every window, credits), record it,
/// and answer once the record is durable.
///
/// The same `event_id` again answers the first decision and charges nothing; the same
/// `event_id` with different content answers 409 `idempotency_conflict`.
#[utoipa::path(
    post,
    path = "/api/track",
    tag = "tracking",
    request_body = TrackRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "allowed", body = DecisionBody),
        (status = 402, description = "denied: insufficient_credits", body = DecisionBody),
        (status = 403, description = "denied: premium_not_in_plan or tenant_suspended (a decision), or forbidden: another tenant, or another service than the API key is bound to (an error naming `tenant_id` or `service_name`)", body = DecisionBody),
        (status = 429, description = "denied: rate_limited (with Retry-After)", body = DecisionBody),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 409, description = "idempotency_conflict: the event_id was used with other content", body = ErrorBody),
        (status = 422, description = "a field is invalid (named in `field`)", body = ErrorBody),
    )
)]
async fn track(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TrackRequest>,
) -> Result<Response, ApiError> {
    let event = request.into_event(&caller)?;
    let decision = track_event(&state, event).await?;
    Ok(decision_response(&decision))
}

/// A batch of calls to track.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// 1 to 1,000 events, each as the body of `POST /api/track`.
    #[schema(value_type = Vec<TrackRequest>, min_items = 1, max_items = 1000)]
    events: Vec<Value>,
}

/// One slot of a batch answer: the event's decision, or why it was not decided.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum BatchSlot {
    /// The decision.
    Decided(DecisionBody),
    /// The event was not decided.
    Failed {
        /// Why.
        error: ErrorDetail,
    },
}

/// The answer of a batch: one slot per event, in the submitted order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchResponse {
    /// One decision or error per event, in order.
    results: Vec<BatchSlot>,
}

/// Track up to 1,000 calls in one request.
///
/// Answers 200 with one slot per event, in order: its decision (allowed or denied), or,
/// for an event that is invalid or not the caller's to track, `{"error": {...}}`. Each
/// event is checked on its own, as its own call would be: one of another tenant, or of
/// another service than the API key is bound to, gets a `forbidden` slot naming
/// `tenant_id` or `service_name`, is neither charged nor recorded, and the others are
/// decided. Events
/// are decided in the submitted order (so the decisions of one tenant follow it) and their
/// ledger records are written together; the answer comes once all are durable.
#[utoipa::path(
    post,
    path = "/api/track/batch",
    tag = "tracking",
    request_body = BatchRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "one slot per event, in order", body = BatchResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 422, description = "`events` is missing, empty or longer than 1,000", body = ErrorBody),
    )
)]
async fn track_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if request.events.is_empty() {
        return Err(ApiError::invalid("events", "must hold at least one event"));
    }
    if request.events.len() > MAX_BATCH {
        return Err(ApiError::invalid("events", format!("at most {MAX_BATCH} events per batch")));
    }
    // The valid events go to the engine; each slot holds its event's error, if it has one.
    let mut events = Vec::with_capacity(request.events.len());
    let mut failed = Vec::with_capacity(request.events.len());
    for value in request.events {
        match TrackRequest::from_value(value).and_then(|r| r.into_event(&caller)) {
            Ok(event) => {
                events.push(event);
                failed.push(None);
            }
            Err(e) => failed.push(Some(e)),
        }
    }
    // The engine decides in order and writes the records together; dropped (the client
    // went away), it still finishes on a task of its own.
    let mut decided = state.engine.track_batch(events).await.into_iter();
    let results = failed
        .into_iter()
        .map(|failed| {
            let decision = match failed {
                Some(e) => Err(e),
                None => decided
                    .next()
                    .ok_or_else(|| ApiError::internal("a batch decision is missing"))
                    .and_then(|d| d.map_err(track_error)),
            };
            match decision {
                Ok(decision) => {
                    crate::metrics::record_decision(&decision);
                    BatchSlot::Decided(DecisionBody::from(&decision))
                }
                Err(e) => BatchSlot::Failed { error: e.into() },
            }
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;
    use metering_core::{Role, TenantId};
    use proptest::prelude::*;

    fn caller(acts_for: ActsFor) -> Caller {
        Caller {
            user_id: "u1".into(),
            tenant: TenantId::new("acme").unwrap(),
            role: Role::User,
            acts_for,
            credential: Credential::ApiKey { key_id: "k1".into(), service_name: None },
        }
    }

    #[test]
    fn the_tenant_defaults_to_the_callers_and_is_checked() {
        let own = caller(ActsFor::Tenant(TenantId::new("acme").unwrap()));
        assert_eq!(tenant_for(&own, None).unwrap(), "acme");
        assert_eq!(tenant_for(&own, Some("acme".into())).unwrap(), "acme");
        let e = tenant_for(&own, Some("other".into())).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::FORBIDDEN, Some("tenant_id")));
        let service = caller(ActsFor::AnyTenant);
        assert_eq!(tenant_for(&service, Some("other".into())).unwrap(), "other");
        assert_eq!(tenant_for(&service, None).unwrap_err().field.as_deref(), Some("tenant_id"));
        for bad in [String::new(), "a b".into(), "t".repeat(65)] {
            let e = tenant_for(&own, Some(bad.clone())).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("tenant_id")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_bound_key_reports_its_service_only() {
        let mut bound = caller(ActsFor::Tenant(TenantId::new("acme").unwrap()));
        bound.credential = Credential::ApiKey { key_id: "k1".into(), service_name: Some("billing-api".into()) };
        assert!(service_for(&bound, "billing-api").is_ok());
        let e = service_for(&bound, "other-svc").unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::FORBIDDEN, Some("service_name")));
        let e = service_for(&bound, " ").unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("service_name")));
        let free = caller(ActsFor::Tenant(TenantId::new("acme").unwrap()));
        assert!(service_for(&free, "other-svc").is_ok());
    }

    #[test]
    fn batch_events_name_their_bad_field() {
        let e = TrackRequest::from_value(serde_json::json!({"service_name": 5})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("service_name"));
        let e = TrackRequest::from_value(serde_json::json!({"service_name": "s", "method": "GET"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("endpoint"));
        let e = TrackRequest::from_value(serde_json::json!({"service_name": "s", "endpoint": "/", "method": "GET",
            "timestamp": "yesterday"}))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("timestamp"));
        let e = TrackRequest::from_value(serde_json::json!({"service_name": "s", "endpoint": "/", "method": "GET",
            "extra": {"a": 1}}))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("extra"));
        let e = TrackRequest::from_value(serde_json::json!([1])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("events"));
        let ok = TrackRequest::from_value(serde_json::json!({"service_name": "s", "endpoint": "/", "method": "GET",
            "premium": true, "credits_used": 3}))
        .unwrap();
        assert!(ok.premium && ok.credits_used == Some(3));
    }

    const EVENT_KEYS: &[&str] = &[
        "tenant_id",
        "service_name",
        "endpoint",
        "method",
        "credits_used",
        "premium",
        "event_id",
        "feature",
        "region",
        "timestamp",
    ];

    /// An answer of the parser: a 4xx, never anything else.
    fn client_error(e: &ApiError) -> Result<(), String> {
        if e.status.is_client_error() { Ok(()) } else { Err(format!("answered {e}")) }
    }

    fn check_event(request: TrackRequest, caller: &Caller) -> Result<(), String> {
        match request.into_event(caller) {
            Ok(event) => match event.validate_at(Timestamp::from_secs(1_773_489_600), &TimeBounds::default()) {
                Ok(_) => Ok(()),
                Err(e) => client_error(&ApiError::from(CoreError::InvalidInput(e))),
            },
            Err(e) => client_error(&e),
        }
    }

    #[test]
    fn fuzz_track_event_parser() {
        let own = caller(ActsFor::Tenant(TenantId::new("acme").unwrap()));
        crate::fuzz::run("track event", crate::fuzz::json_bytes(EVENT_KEYS), |bytes| {
            match crate::error::parse_body::<TrackRequest>(&bytes) {
                Ok(request) => check_event(request, &own),
                Err(e) => client_error(&e),
            }
        });
    }

    #[test]
    fn fuzz_batch_parser() {
        let service = caller(ActsFor::AnyTenant);
        let events = prop::collection::vec(crate::fuzz::json_value(EVENT_KEYS), 0..8)
            .prop_map(|events| serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap_or_default());
        let bytes = prop_oneof![crate::fuzz::json_bytes(&["events"]), events];
        crate::fuzz::run("batch", bytes, |bytes| match crate::error::parse_body::<BatchRequest>(&bytes) {
            Ok(batch) => batch.events.into_iter().try_for_each(|value| match TrackRequest::from_value(value) {
                Ok(request) => check_event(request, &service),
                Err(e) => client_error(&e),
            }),
            Err(e) => client_error(&e),
        });
    }
}
