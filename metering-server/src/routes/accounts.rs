//! Routes: sign-up, login, token refresh, logout.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, LoginRequest, RefreshRequest, SignupRequest, SignupResponse, TokenPair};
use crate::{ApiError, ApiJson, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(signup)).routes(routes!(login)).routes(routes!(refresh)).routes(routes!(logout))
}

/// The client's address, when the server knows it (`None` under `oneshot` tests).
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| parts.extensions.get::<MockConnectInfo<SocketAddr>>().map(|c| c.0));
        Ok(ClientIp(addr.map(|a| a.ip())))
    }
}

/// Creates a tenant on a plan (default `free`) with its first user, and logs it in.
///
/// Limited per client address (`METERING_SIGNUP_LIMIT`).
#[utoipa::path(post, path = "/auth/signup", tag = "accounts", request_body = SignupRequest, responses(
    (status = 201, description = "signed up", body = SignupResponse),
    (status = 409, description = "the e-mail is taken (`email_taken`)"),
    (status = 422, description = "an invalid e-mail, password, name or plan (`field` names it)"),
    (status = 429, description = "too many sign-ups from this address; see `Retry-After`")
))]
async fn signup(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let created = state.auth.signup(req, client).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Logs in with e-mail and password.
#[utoipa::path(post, path = "/auth/login", tag = "accounts", request_body = LoginRequest, responses(
    (status = 200, description = "logged in", body = TokenPair),
    (status = 401, description = "wrong e-mail or password (`invalid_credentials`)"),
    (status = 423, description = "locked after 5 failures in 15 minutes (`account_locked`); see `Retry-After`")
))]
async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(state.auth.login(req, client).await?))
}

/// Trades a refresh token (once) for a new token pair.
#[utoipa::path(post, path = "/auth/refresh", tag = "accounts", request_body = RefreshRequest, responses(
    (status = 200, description = "a new pair", body = TokenPair),
    (status = 401, description = "invalid, expired or used (`invalid_token`)")
))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(state.auth.refresh(req).await?))
}

/// Revokes every refresh token of the caller's user and the access token it called with.
#[utoipa::path(post, path = "/auth/logout", tag = "accounts", security(("bearer" = [])), responses(
    (status = 204, description = "logged out"),
    (status = 401, description = "not logged in")
))]
async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    state.auth.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
