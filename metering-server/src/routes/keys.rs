//! Routes: API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ApiKeyInfo, Caller, CreatedApiKey, NewApiKey};
use crate::{ApiError, ApiJson, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(delete_key))
}

/// `GET /api/keys`.
#[derive(Debug, Serialize, ToSchema)]
struct KeyList {
    /// The active keys.
    keys: Vec<ApiKeyInfo>,
}

/// Creates an API key; its secret is shown this once (only a hash is kept).
///
/// A key acts for the caller's tenant, or (admins) for `tenant_id`, or (admins,
/// `any_tenant: true`) for any tenant.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = NewApiKey, security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = CreatedApiKey),
        (status = 403, description = "another tenant or any tenant, asked by a non-admin"),
        (status = 422, description = "an invalid field (`field` names it)")
    )
)]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewApiKey>,
) -> Result<impl IntoResponse, ApiError> {
    let created = state.auth.create_api_key(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The active keys of the caller's tenant (and, for admins, the service keys); never a
/// secret or a hash.
#[utoipa::path(get, path = "/api/keys", tag = "keys", security(("bearer" = [])), responses(
    (status = 200, description = "the keys", body = KeyList)
))]
async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList { keys: state.auth.api_keys(&caller).await? }))
}

/// Revokes a key of the caller's tenant; it stops working at once.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "the key's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no such key in the caller's tenant")
    )
)]
async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
