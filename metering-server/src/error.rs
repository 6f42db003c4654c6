//! One error shape for every HTTP answer: `{"error": {"code", "message", "field"?}}`.
//!
//! Handlers return `Result<_, ApiError>`; bodies and path parameters are taken through
//! [`ApiJson`] and [`ApiPath`] so their rejections have the same shape. Client errors name a
//! stable `code` and, for bad input, the `field`. Internal failures answer a generic message and are logged once here,
//! so no storage text ever reaches a client.

use axum::body::Bytes;
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metering_core::Error as CoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer: a status, a stable code, a message, maybe the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status (4xx for the caller's mistakes, 5xx only for real failures).
    pub status: StatusCode,
    /// A stable snake_case code clients can match on.
    pub code: &'static str,
    /// A human-readable message.
    pub message: String,
    /// The input field at fault, if one is.
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429, 423).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after: None }
    }

    /// Names the field at fault (builder style).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a `Retry-After` (builder style).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `invalid_field` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 408 `request_timeout`.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 500 `internal`: logs `detail` once and answers a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// 503 `store_unavailable`: logs `detail` once.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "storage unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "storage is unavailable, try again")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Inner { code: self.code, message: &self.message, field: self.field.as_deref() } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidInput(f) => ApiError::invalid(f.field, f.to_string()),
            CoreError::InvalidPlan(p) => {
                let field = p.to_string().split('`').nth(1).unwrap_or("plan").to_owned();
                ApiError::invalid(field, p.to_string())
            }
            CoreError::UnknownTenant(t) => ApiError::not_found(format!("unknown tenant `{t}`")),
            CoreError::UnknownPlan(p) => ApiError::invalid("plan", format!("unknown plan `{p}`")),
            CoreError::AlreadyExists(what) => ApiError::conflict("already_exists", format!("{what} exists already")),
            CoreError::NotFound(what) => ApiError::not_found(format!("no {what}")),
            CoreError::IdempotencyConflict(id) => ApiError::conflict(
                "idempotency_conflict",
                format!("event `{id}` was already recorded with different content"),
            )
            .with_field("event_id"),
            CoreError::BelowFloor => {
                ApiError::invalid("amount", "the adjustment would take the balance below its floor")
            }
            CoreError::ShuttingDown => ApiError::unavailable("shutting down"),
            other => ApiError::unavailable(other),
        }
    }
}

/// The deepest nesting of arrays and objects a JSON body may have; no request body of
/// this API nests deeper than a few levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// How long a request body may take to arrive before the request answers 408 (well within
/// the whole request's [`REQUEST_TIMEOUT`](crate::REQUEST_TIMEOUT)).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body extractor whose rejections use the [`ApiError`] shape.
///
/// One rule for every body, in this order:
/// - a content type other than `application/json` (or `application/*+json`): 415;
/// - a body that does not arrive within [`BODY_TIMEOUT`] (shorter than its
///   `Content-Length`, or trickling in): 408 `request_timeout`; larger than the limit: 413;
/// - bytes that are not JSON: 400 `bad_request` (the only 400 a body gets);
/// - JSON nested deeper than [`MAX_JSON_DEPTH`]: 422 `too_deep`, before anything is parsed
///   into memory;
/// - JSON that is not an object (an array, a string, `null`...): 422 `invalid_body`;
/// - an object with a field the route does not know: 422 `invalid_field` naming it
///   (unknown fields are refused, never ignored: a misspelt optional field must not pass
///   unnoticed);
/// - a missing field or a field of the wrong type: 422 `invalid_field` naming it (a path
///   like `limits[0].max` inside the body).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected application/json",
            ));
        }
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state)).await {
            Err(_) => return Err(ApiError::request_timeout("the body did not arrive in time")),
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is too large or unreadable",
                ));
            }
            Ok(Ok(bytes)) => bytes,
        };
        parse_body(&bytes).map(ApiJson)
    }
}

/// Whether the request says its body is JSON.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(mime) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json") && !sub.contains('/'))
}

/// Reads a request body by the rules of [`ApiJson`] (all but the content type and the
/// transfer).
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let not_json = || ApiError::bad_request("the body is not valid JSON");
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        // Deep but well-formed JSON is refused as too deep; serde_json checks the syntax
        // without recursing.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_deep",
                format!("the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
            )),
            Err(_) => Err(not_json()),
        };
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| not_json())?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| data_error(&e))
}

/// Whether `bytes` open more than `max` arrays or objects inside one another (strings
/// skipped); one pass, no recursion, whatever the bytes are.
pub(crate) fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A body that is a JSON object but does not fit the route's type: 422 naming the field
/// (serde's path, and the missing or unknown field's name).
fn data_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let what = e.inner().to_string();
    let path = e.path().to_string();
    let path = (path != ".").then_some(path);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| what.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(f, _)| f);
    let field = match (path, named) {
        (Some(path), Some(named)) if path == named || path.ends_with(&format!(".{named}")) => Some(path),
        (Some(path), Some(named)) => Some(format!("{path}.{named}")),
        (None, Some(named)) => Some(named.to_owned()),
        (Some(path), None) => Some(path),
        (None, None) => None,
    };
    let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", what);
    match field {
        Some(f) => err.with_field(f),
        None => err,
    }
}

/// A path-parameter extractor whose rejections use the [`ApiError`] shape.
///
/// A parameter that is not valid UTF-8 once percent-decoded, or does not parse, answers 422
/// `invalid_field` naming the parameter (`id`), like an id of the wrong shape; every route
/// with a path parameter takes it through this wrapper.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            PathErrorKind::InvalidUtf8InPathParam { key } => {
                ApiError::invalid(key, "must be valid UTF-8 once percent-decoded")
            }
            PathErrorKind::ParseErrorAtKey { key, expected_type, .. } => {
                ApiError::invalid(key, format!("must be a {expected_type}"))
            }
            PathErrorKind::DeserializeError { key, message, .. } => ApiError::invalid(key, message),
            // The handler's type does not fit its route: a mistake here, not the caller's.
            kind @ (PathErrorKind::WrongNumberOfParameters { .. } | PathErrorKind::UnsupportedType { .. }) => {
                ApiError::internal(kind)
            }
            other => ApiError::bad_request(other.to_string()),
        },
        other => ApiError::internal(other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[tokio::test]
    async fn errors_have_one_shape() {
        let r = ApiError::invalid("email", "not an e-mail").into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: serde_json::Value = serde_json::from_slice(&to_bytes(r.into_body(), 1024).await.unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "invalid_field", "message": "not an e-mail", "field": "email"}})
        );
    }

    #[tokio::test]
    async fn a_missing_body_field_is_named() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            max: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            amount: i64,
            reason: String,
            limits: Vec<Inner>,
        }
        async fn field(body: &str) -> Option<String> {
            let req = Request::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body.to_owned()))
                .unwrap();
            ApiJson::<Outer>::from_request(req, &()).await.unwrap_err().field
        }
        assert_eq!(field(r#"{"amount": 5, "limits": []}"#).await.as_deref(), Some("reason"));
        assert_eq!(field(r#"{"amount": 5, "reason": "x", "limits": [{}]}"#).await.as_deref(), Some("limits[0].max"));
        assert_eq!(field(r#"{"amount": "5", "reason": "x", "limits": []}"#).await.as_deref(), Some("amount"));
        assert_eq!(
            field(r#"{"amount": 5, "reason": "x", "limits": [{"max": -1}]}"#).await.as_deref(),
            Some("limits[0].max")
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Patch {
        status: Option<Status>,
        name: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Status {
        Active,
    }

    fn refused(body: &str) -> (StatusCode, &'static str, Option<String>) {
        let e = parse_body::<Patch>(body.as_bytes()).unwrap_err();
        (e.status, e.code, e.field)
    }

    #[test]
    fn one_rule_for_every_body() {
        let invalid = |f: &str| (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some(f.to_owned()));
        assert_eq!(refused(r#"{"status": {}}"#), invalid("status"));
        assert_eq!(refused(r#"{"status": "gone"}"#), invalid("status"));
        assert_eq!(refused(r#"{"name": 5}"#), invalid("name"));
        assert_eq!(refused(r#"{"nmae": "x"}"#), invalid("nmae"));
        for not_object in ["[]", "[null, \"x\"]", "null", "\"x\"", "1"] {
            assert_eq!(refused(not_object), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", None), "{not_object}");
        }
        for not_json in ["", "{", "{\"a\":}", "[[[[", "nul"] {
            assert_eq!(refused(not_json), (StatusCode::BAD_REQUEST, "bad_request", None), "{not_json}");
        }
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(refused(&deep), (StatusCode::UNPROCESSABLE_ENTITY, "too_deep", None));
        let broken_deep = "[".repeat(100_000);
        assert_eq!(refused(&broken_deep).0, StatusCode::BAD_REQUEST);
        assert!(
            parse_body::<Patch>(br#"{"status": "active", "name": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok()
        );
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(!nests_deeper_than(br#"{"a": [1, {"b": "\"[[[["}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a": [1, {"b": []}]}"#, 3));
        assert!(!nests_deeper_than(b"]]]]}}}", 0));
    }

    #[test]
    fn core_errors_map_to_client_errors_without_storage_text() {
        let e: ApiError = CoreError::Unavailable("disk I/O error at /secret/path".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("secret"));
    }
}
