//! Routes: API keys.
//!
//! A user mints, lists and revokes the keys of its own tenant; an admin those of any tenant
//! (and service keys that act for any tenant). An admin's mint or revocation of a key
//! outside its own tenant is written to the audit log (`key.create`, `key.revoke`) together
//! with the change, like every other admin change (the rule lives in `AuthService`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metering_core::TenantId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, CreatedApiKey, KeyPage, KeyQuery, NewApiKey};
use crate::routes::tenant::ApiQuery;
use crate::routes::track::ErrorBody;
use crate::{ApiError, ApiJson, ApiPath, AppState};

/// Keys per page of every tenant's keys when `limit` is not given.
const DEFAULT_KEYS: usize = 100;
/// The most keys per page.
const MAX_KEYS: usize = 1_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(delete_key))
}

/// Creates an API key; its secret is shown this once (only a hash is kept).
///
/// A key acts for the caller's tenant, or (admins) for `tenant_id`, or (admins,
/// `any_tenant: true`) for any tenant. A key created with `service_name` reports calls of
/// that service only. A suspended tenant's users may not create keys.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = NewApiKey, security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = CreatedApiKey),
        (status = 403, description = "another tenant or any tenant, asked by a non-admin (`forbidden`), or the caller's tenant is suspended (`tenant_suspended`)", body = ErrorBody),
        (status = 422, description = "an invalid field (`field` names it)", body = ErrorBody)
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

/// Filters and paging of the key listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KeysParams {
    /// Only this tenant's keys (admins; a user may name only its own): 1 to 64 of
    /// `[A-Za-z0-9_.:-]`.
    #[param(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    tenant_id: Option<String>,
    /// The `next_after` of the previous page (admins listing every tenant's keys): 1 to
    /// 128 characters.
    #[param(min_length = 1, max_length = 128)]
    after: Option<String>,
    /// Keys per page of every tenant's keys: 1 to 1,000, default 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The active keys: a user's own tenant's; an admin's choice of one tenant's
/// (`tenant_id`), or every tenant's and the service keys, by id, in pages. Never a secret
/// or a hash; each key shows the tenant it acts for.
#[utoipa::path(get, path = "/api/keys", tag = "keys", params(KeysParams), security(("bearer" = [])), responses(
    (status = 200, description = "the keys", body = KeyPage),
    (status = 403, description = "a user naming another tenant", body = ErrorBody),
    (status = 422, description = "a bad `tenant_id`, `after` or `limit` (named in `field`)", body = ErrorBody)
))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<KeysParams>,
) -> Result<Json<KeyPage>, ApiError> {
    let tenant = params
        .tenant_id
        .map(|t| TenantId::new(t).map_err(|e| ApiError::invalid("tenant_id", e.problem.to_string())))
        .transpose()?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_KEYS,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_KEYS).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", format!("must be a whole number from 1 to {MAX_KEYS}"))),
        },
    };
    if let Some(a) = &params.after
        && (a.is_empty() || a.chars().count() > 128)
    {
        return Err(ApiError::invalid("after", "not a key id"));
    }
    let query = KeyQuery { tenant, after: params.after, limit };
    Ok(Json(state.auth.api_keys(&caller, query).await?))
}

/// Revokes a key: a user one of its own tenant's, an admin any; it stops working at once.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "the key's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no such active key that the caller may see", body = ErrorBody),
        (status = 422, description = "an id that is not text (`field` is `id`)", body = ErrorBody)
    )
)]
async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
