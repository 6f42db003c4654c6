//! One error shape for every HTTP answer: `{"error": {"code", "message", "field"?}}`.
//!
//! Handlers return `Result<_, ApiError>`; bodies and path parameters are taken through
//! [`ApiJson`] and [`ApiPath`] so their rejections have the same shape. Client errors name a
//! stable `code` and, for bad input, the `field`. Internal failures answer a generic message and are logged once here,
//! so no storage text ever reaches a client.

use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection};
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

    /// 500 `internal`: logs `detail` once and answers a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// 503 `unavailable`: logs `detail` once.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "storage unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable, try again")
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

/// A JSON body extractor whose rejections use the [`ApiError`] shape.
///
/// Malformed JSON, a wrong content type and wrong field types all answer 400/415/422 with
/// the standard body; serde's message names the field where it can.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's text is "<path>: <what>", without the path at the top level; the path
            // is the field, and a field missing from an object is named in backticks.
            let text = e.body_text();
            let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(&text).to_owned();
            let (path, what) = match detail.split_once(": ") {
                Some((path, what)) if !path.contains(' ') => (Some(path.trim()), what),
                _ => (None, detail.as_str()),
            };
            let missing = what.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(f, _)| f);
            let field = match (path, missing) {
                (Some(path), Some(missing)) => Some(format!("{path}.{missing}")),
                (None, Some(missing)) => Some(missing.to_owned()),
                (Some(path), None) => Some(path.to_owned()),
                (None, None) => None,
            };
            let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail.clone());
            match field {
                Some(f) => err.with_field(f),
                None => err,
            }
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("the body is not valid JSON"),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "expected application/json")
        }
        JsonRejection::BytesRejection(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large or unreadable")
        }
        other => ApiError::bad_request(other.body_text()),
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

    #[test]
    fn core_errors_map_to_client_errors_without_storage_text() {
        let e: ApiError = CoreError::Unavailable("disk I/O error at /secret/path".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("secret"));
    }
}
