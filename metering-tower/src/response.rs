//! The layer's own answers: denials and errors, as JSON.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use metering_core::{Decision, Error};
use serde::Serialize;

use crate::tenant::NoTenant;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The stable error body: `{"error":{"code":..,"message":..,"field":..}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response<Bytes> {
    let body = ErrorBody { error: ErrorDetail { code, message, field } };
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// `401`: the request names no tenant.
pub(crate) fn unauthorized(no: NoTenant) -> Response<Bytes> {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthenticated", no.message(), None);
    if let Some(challenge) = no.challenge() {
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

/// A denial: the status of its reason and the decision itself as the body.
pub(crate) fn denial(decision: &Decision) -> Response<Bytes> {
    let status =
        decision.reason.and_then(|r| StatusCode::from_u16(r.http_status()).ok()).unwrap_or(StatusCode::FORBIDDEN);
    match serde_json::to_vec(decision) {
        Ok(body) => json(status, body),
        Err(_) => error(status, decision.reason.map_or("denied", |r| r.as_str()), "the call was denied", None),
    }
}

/// The methods a call can be metered under.
const METERED_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");

/// `405`: a method no call can be metered under (`TRACE`, `CONNECT`, extensions).
pub(crate) fn method_not_allowed() -> Response<Bytes> {
    let message = "this method is not served here";
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message, None);
    response.headers_mut().insert(ALLOW, METERED_METHODS);
    response
}

/// `503`: the meter could not decide.
pub(crate) fn unavailable() -> Response<Bytes> {
    error(StatusCode::SERVICE_UNAVAILABLE, "metering_unavailable", "usage metering is unavailable; retry later", None)
}

/// What a meter error means for the caller.
pub(crate) enum Failure {
    /// The request is at fault: answer this whatever `fail_open` says.
    Refuse(Response<Bytes>),
    /// The meter is at fault: `503`, or through uncharged when failing open.
    Unavailable,
}

pub(crate) fn failure(e: &Error) -> Failure {
    match e {
        Error::InvalidInput(f) => {
            let message = f.to_string();
            Failure::Refuse(error(StatusCode::BAD_REQUEST, "invalid_input", &message, Some(f.field)))
        }
        Error::UnknownTenant(_) => {
            let message = e.to_string();
            Failure::Refuse(error(StatusCode::FORBIDDEN, "unknown_tenant", &message, None))
        }
        other => {
            tracing::error!(error = %other, "the meter could not decide a call");
            Failure::Unavailable
        }
    }
}
