//! Who is calling: the identity every authenticated handler receives.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use metering_core::{Role, TenantId, Timestamp};

use crate::{ApiError, AppState};

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT access token (`Authorization: Bearer ...`).
    AccessToken {
        /// The token's `jti`.
        jti: String,
        /// When it expires.
        expires_at: Timestamp,
    },
    /// An API key (`X-API-Key: ...`).
    ApiKey {
        /// The key's id.
        key_id: String,
        /// The service the key is bound to, if it is: it reports calls of that service only.
        service_name: Option<String>,
    },
}

/// Whose data the caller may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActsFor {
    /// Exactly one tenant: its own.
    Tenant(TenantId),
    /// Any tenant: an admin-issued service key reporting for all of a project's users.
    AnyTenant,
}

/// An authenticated caller; also the extractor of every protected handler.
///
/// The authorization middleware (`rbac::authorize`) authenticates each request (with
/// `Authorization: Bearer <access token>` or `X-API-Key: <key>`) and leaves the `Caller` in
/// the request's extensions; extracting it answers 401 `unauthenticated` without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user behind the call (the key's creator for an API key).
    pub user_id: String,
    /// The caller's own tenant (its domain for access control).
    pub tenant: TenantId,
    /// Admin or user.
    pub role: Role,
    /// Whose data it may act on.
    pub acts_for: ActsFor,
    /// How it authenticated.
    pub credential: Credential,
}

impl Caller {
    /// Whether the caller may act on `tenant`'s data.
    pub fn may_act_for(&self, tenant: &TenantId) -> bool {
        match &self.acts_for {
            ActsFor::Tenant(own) => own == tenant,
            ActsFor::AnyTenant => true,
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The service the caller's credential is bound to, if it is (an API key created with a
    /// `service_name`); such a caller reports calls of that service only.
    pub fn bound_service(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { service_name, .. } => service_name.as_deref(),
            Credential::AccessToken { .. } => None,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// The caller the authorization middleware found; without it (a route outside the
    /// middleware), the request's own credentials; 401 `unauthenticated` without any.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        match state.auth.authenticate(&parts.headers).await {
            Some(result) => result,
            None => Err(ApiError::unauthenticated("credentials required")),
        }
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// The caller if the request carries credentials; an error only if they are invalid.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(Some(caller.clone()));
        }
        state.auth.authenticate(&parts.headers).await.transpose()
    }
}
