//! [`AuthService`]: sign-up, login, tokens, API keys, admins, lockout.
//!
//! Handlers parse and answer; this service holds the rules and talks to the engine, which
//! keeps the records. Every instant comes from the engine's clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use metering_core::store::KeyCount;
use metering_core::{
    ApiKey, Engine, LockoutPolicy, PlanId, RefreshToken, Role, Tenant, TenantId, TenantStatus, Timestamp, User,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use super::caller::{ActsFor, Caller, Credential};
use super::identities::Identities;
use super::normalize_email;
use super::password::{self, PasswordCost};
use super::token::{TokenKeys, TokenKind};
use crate::settings::{RateSpec, Settings};
use crate::{ApiError, audit};

/// The tenant admins belong to.
pub const PLATFORM_TENANT: &str = "platform";
/// The plan of the platform tenant when it is created.
pub const PLATFORM_PLAN: &str = "pro";
/// The admin created on a first start without `METERING_ADMIN_EMAIL`.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";
/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "mk_";
/// The header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// 400 `ambiguous_credentials`: a request carries both an `Authorization` and an
/// `X-API-Key` header.
fn ambiguous_credentials() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "ambiguous_credentials",
        "send either `Authorization` or `X-API-Key`, not both",
    )
}

/// The most characters of a display name.
const MAX_NAME_CHARS: usize = 200;
/// The longest credential looked at (longer ones are refused unread).
const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// `POST /auth/signup`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Login e-mail (trimmed and lower-cased, at most 254 characters): a local part of
    /// 1 to 64 printable ASCII characters other than `@"(),:;<>[\]`, `@`, and a domain of
    /// dot-separated labels of 1 to 63 letters, digits and inner `-`.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = r"^\s*[!#-'*+\-./0-9=?A-Z^-~]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\s*$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// 10 to 1,024 characters.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    /// The new tenant's display name (default: the e-mail): 1 to 200 characters, not only
    /// white space, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    /// The new tenant's plan (default `free`), an existing plan's id: 1 to 64 of `[a-z0-9_-]`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]+$")]
    pub plan: Option<String>,
}

/// `POST /auth/login`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login e-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /auth/refresh`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A refresh token; it works once.
    pub refresh_token: String,
}

/// A token pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenPair {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Buys a new pair once at `POST /auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
}

/// What `POST /auth/signup` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SignupResponse {
    /// The new tenant.
    pub tenant_id: String,
    /// The new user.
    pub user_id: String,
    /// The tenant's plan.
    pub plan: String,
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Buys a new pair once at `POST /auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
}

/// `POST /api/keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A label: 1 to 100 characters, not only white space, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// The service the key reports for, if bound to one: 1 to 128 characters, not only
    /// white space, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub service_name: Option<String>,
    /// The tenant the key acts for (default: the caller's; admins may name any): 1 to 64
    /// of `[A-Za-z0-9_.:-]`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub tenant_id: Option<String>,
    /// Admins only: a service key that acts for any tenant.
    #[serde(default)]
    pub any_tenant: bool,
}

/// A new API key: the key as it is listed, and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The secret: send as `X-API-Key`. Only a hash is kept.
    pub key: String,
    /// The key as listed (its `id` is for listing and revoking).
    #[serde(flatten)]
    pub info: ApiKeyInfo,
}

/// An API key as listed (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The service it reports for, if bound.
    pub service_name: Option<String>,
    /// The tenant it acts for; `null` for a service key.
    pub tenant_id: Option<String>,
    /// Whether it acts for any tenant.
    pub any_tenant: bool,
    /// When it was created (RFC 3339).
    #[schema(value_type = String)]
    pub created_at: metering_core::Timestamp,
}

impl From<ApiKey> for ApiKeyInfo {
    fn from(k: ApiKey) -> Self {
        ApiKeyInfo {
            any_tenant: k.tenant_id.is_none(),
            id: k.id,
            name: k.name,
            service_name: k.service_name,
            tenant_id: k.tenant_id.map(String::from),
            created_at: k.created_at,
        }
    }
}

/// Which keys [`AuthService::api_keys`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyQuery {
    /// Only this tenant's (admins; a user may only name its own).
    pub tenant: Option<TenantId>,
    /// Every tenant's (admins, no `tenant`): the keys after this id.
    pub after: Option<String>,
    /// Every tenant's (admins, no `tenant`): at most this many.
    pub limit: usize,
}

/// A listing of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyPage {
    /// The active keys, by id.
    pub keys: Vec<ApiKeyInfo>,
    /// Pass as `after` for the next page of every tenant's keys; `null` on the last page
    /// and for one tenant's keys, which come whole.
    pub next_after: Option<String>,
}

/// Authentication and accounts for the server.
pub struct AuthService {
    engine: Engine,
    tokens: TokenKeys,
    access_ttl: Duration,
    refresh_ttl: Duration,
    cost: PasswordCost,
    lockout: LockoutPolicy,
    signup_limit: RateSpec,
    dummy_hash: OnceCell<String>,
    identities: Arc<Identities>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("access_ttl", &self.access_ttl).finish_non_exhaustive()
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong e-mail or password")
}

fn invalid_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the refresh token is invalid, expired or used")
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The SHA-256 hex digest of an API key: what is stored and looked up.
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A new random id with a prefix.
fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A tenant id from the e-mail's local part: `acme-3f9a...` (valid for [`TenantId::new`]).
fn tenant_id_for(email: &str) -> Result<TenantId, ApiError> {
    let local = email.split('@').next().unwrap_or_default();
    let mut slug: String = local
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(24);
    if slug.is_empty() {
        slug.push_str("tenant");
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    TenantId::new(format!("{slug}-{}", &random[..16])).map_err(ApiError::internal)
}

impl AuthService {
    /// A service over `engine`, signing with `jwt_secret`, with the lifetimes, password cost
    /// and sign-up limit of `settings`.
    pub fn new(engine: Engine, settings: &Settings, jwt_secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let identities = Arc::new(Identities::new());
        identities.listen(&engine);
        Ok(AuthService {
            engine,
            tokens: TokenKeys::new(jwt_secret)?,
            access_ttl: settings.access_token_ttl,
            refresh_ttl: settings.refresh_token_ttl,
            cost: settings.password_cost,
            lockout: LockoutPolicy::default(),
            signup_limit: settings.signup_limit,
            dummy_hash: OnceCell::new(),
            identities,
        })
    }

    /// The sign-up limit in force.
    pub fn signup_limit(&self) -> RateSpec {
        self.signup_limit
    }

    /// The token keys (to sign or check tokens directly).
    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    /// Creates a tenant on the requested plan and its first user; answers a token pair.
    ///
    /// `client` is the caller's address for the sign-up limit (`None`: one shared bucket).
    /// The limit is counted in the hot store (key `signup:<address>`), so every instance
    /// sharing it counts together.
    pub async fn signup(&self, req: SignupRequest, client: Option<IpAddr>) -> Result<SignupResponse, ApiError> {
        let now = self.engine.now();
        let bucket = client.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".to_owned());
        let RateSpec { max, per } = self.signup_limit;
        if let KeyCount::Over { retry_after } =
            self.engine.count_key(&format!("signup:{bucket}"), per, max.get()).await?
        {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many sign-ups, try later")
                .with_retry_after(retry_secs(retry_after)));
        }
        let email = normalize_email(&req.email).map_err(|m| ApiError::invalid("email", m))?;
        password::check_password(&req.password).map_err(|m| ApiError::invalid("password", m))?;
        let name = match &req.name {
            Some(n) => check_text("name", n, MAX_NAME_CHARS)?,
            None => email.clone(),
        };
        let plan = PlanId::new(req.plan.as_deref().unwrap_or("free"))
            .map_err(|_| ApiError::invalid("plan", "not a plan id"))?;
        if self.engine.plan(&plan).await?.is_none() {
            return Err(ApiError::invalid("plan", format!("unknown plan `{}`", plan.as_str())));
        }
        if self.engine.user_by_email(&email).await?.is_some() {
            return Err(email_taken());
        }
        let hash = password::hash_password(req.password, self.cost).await?;
        let tenant_id = tenant_id_for(&email)?;
        let user = User {
            id: new_id("usr_"),
            tenant_id: tenant_id.clone(),
            email,
            password_hash: hash,
            role: Role::User,
            created_at: now,
        };
        let mut tenant = Tenant::new(tenant_id.clone(), plan.clone(), now);
        tenant.name = name;
        // Both or neither: of sign-ups racing for one e-mail, the losers leave nothing.
        match self.engine.create_account(&tenant, &user).await {
            Ok(()) => {}
            Err(metering_core::Error::AlreadyExists(_)) => return Err(email_taken()),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(tenant = %tenant_id, user = %user.id, plan = plan.as_str(), "signed up");
        let pair = self.issue_tokens(&user).await?;
        Ok(SignupResponse {
            tenant_id: tenant_id.to_string(),
            user_id: user.id,
            plan: plan.as_str().to_owned(),
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: pair.token_type,
            expires_in: pair.expires_in,
        })
    }

    /// Checks an e-mail and password from `client`; 401 `invalid_credentials` (the same
    /// whether the e-mail exists or not), 423 `account_locked` after too many failures.
    ///
    /// A user's failures lock its e-mail; an admin's lock the e-mail from that client
    /// address only, so nobody can keep the admins, the last one
    /// included, locked out by failing on their behalf from elsewhere.
    pub async fn login(&self, req: LoginRequest, client: Option<IpAddr>) -> Result<TokenPair, ApiError> {
        let now = self.engine.now();
        let Ok(email) = normalize_email(&req.email) else { return Err(invalid_credentials()) };
        let user = self.engine.user_by_email(&email).await?;
        let key = attempt_key(&email, user.as_ref(), client);
        if let Some(until) = self.engine.login_guard(&key, self.lockout).await?.locked_until {
            return Err(locked(until.since(now)));
        }
        let too_long = req.password.chars().count() > password::MAX_PASSWORD_CHARS;
        let hash = match &user {
            Some(u) if !too_long => u.password_hash.clone(),
            _ => self.dummy_hash().await?,
        };
        let password = if too_long { String::new() } else { req.password };
        let matches = password::verify_password(password, hash).await? && user.is_some() && !too_long;
        match user {
            Some(user) if matches => {
                self.engine.clear_login(&key).await?;
                self.issue_tokens(&user).await
            }
            _ => {
                if self.engine.login_failed(&key, self.lockout).await?.locked_until.is_some() {
                    tracing::warn!(email = %email, "account locked after repeated failed logins");
                }
                Err(invalid_credentials())
            }
        }
    }

    /// Trades a refresh token for a new pair; each refresh token works once. A used or
    /// revoked one coming back revokes all of its user's refresh tokens (it may be stolen).
    pub async fn refresh(&self, req: RefreshRequest) -> Result<TokenPair, ApiError> {
        let now = self.engine.now();
        if req.refresh_token.len() > MAX_CREDENTIAL_BYTES {
            return Err(invalid_token());
        }
        let claims = self.tokens.verify(&req.refresh_token, TokenKind::Refresh, now).map_err(|_| invalid_token())?;
        match self.engine.consume_refresh_token(&claims.jti).await? {
            Some(stored) if stored.user_id == claims.sub => {}
            Some(_) => return Err(invalid_token()),
            None => {
                let revoked = self.engine.revoke_refresh_tokens(&claims.sub).await?;
                tracing::warn!(user = %claims.sub, revoked, "a used or revoked refresh token came back");
                return Err(invalid_token());
            }
        }
        let user = self.engine.user(&claims.sub).await?.ok_or_else(invalid_token)?;
        self.issue_tokens(&user).await
    }

    /// Ends the caller's sessions: revokes the access token it called with, and every
    /// refresh token of its user; returns how many refresh tokens.
    pub async fn logout(&self, caller: &Caller) -> Result<u64, ApiError> {
        if let Credential::AccessToken { jti, expires_at } = &caller.credential {
            self.engine.revoke_token(jti, *expires_at).await?;
        }
        Ok(self.engine.revoke_refresh_tokens(&caller.user_id).await?)
    }

    /// A new access and refresh token for `user`; the refresh token's id is stored.
    pub async fn issue_tokens(&self, user: &User) -> Result<TokenPair, ApiError> {
        let now = self.engine.now();
        let access = TokenKeys::claims(TokenKind::Access, user, now, self.access_ttl);
        let refresh = TokenKeys::claims(TokenKind::Refresh, user, now, self.refresh_ttl);
        self.engine
            .store_refresh_token(&RefreshToken {
                id: refresh.jti.clone(),
                user_id: user.id.clone(),
                issued_at: now,
                expires_at: now.plus(self.refresh_ttl),
            })
            .await?;
        Ok(TokenPair {
            access_token: self.tokens.sign(&access).map_err(ApiError::internal)?,
            refresh_token: self.tokens.sign(&refresh).map_err(ApiError::internal)?,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// Who sent these headers: `None` without credentials, else the caller or 401
    /// `unauthenticated`; both an `Authorization` and an `X-API-Key` header answer 400
    /// `ambiguous_credentials` (which one names the caller is not guessed).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Option<Result<Caller, ApiError>> {
        match presented(headers) {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(Presented::Bearer(token))) => Some(self.authenticate_token(token).await),
            Ok(Some(Presented::ApiKey(key))) => Some(self.authenticate_key(key).await),
        }
    }

    /// The caller behind an access token.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, ApiError> {
        let refused = || ApiError::unauthenticated("the access token is invalid or expired");
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(refused());
        }
        let now = self.engine.now();
        let claims = match self.identities.verified_token(token, now) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.tokens.verify(token, TokenKind::Access, now).map_err(|_| refused())?);
                self.identities.put_verified_token(token, Arc::clone(&claims), now);
                claims
            }
        };
        if self.engine.token_revoked(&claims.jti).await? {
            return Err(refused());
        }
        let user = self.cached_user(&claims.sub).await?.ok_or_else(refused)?;
        if user.tenant_id.as_str() != claims.tenant {
            return Err(refused());
        }
        Ok(Caller {
            user_id: user.id,
            acts_for: ActsFor::Tenant(user.tenant_id.clone()),
            tenant: user.tenant_id,
            role: user.role,
            credential: Credential::AccessToken {
                jti: claims.jti.clone(),
                expires_at: Timestamp::from_secs(i64::try_from(claims.exp).unwrap_or(i64::MAX)),
            },
        })
    }

    /// A user by id, from the identity cache or the store.
    async fn cached_user(&self, id: &str) -> Result<Option<User>, ApiError> {
        let now = self.engine.now();
        if let Some(user) = self.identities.user(id, now) {
            return Ok(Some(user));
        }
        let read_at = self.identities.epoch();
        let user = self.engine.user(id).await?;
        if let Some(user) = &user {
            self.identities.put_user(user, now, read_at);
        }
        Ok(user)
    }

    /// An API key by the hash of its secret, from the identity cache or the store.
    async fn cached_key(&self, hash: &str) -> Result<Option<ApiKey>, ApiError> {
        let now = self.engine.now();
        if let Some(key) = self.identities.key(hash, now) {
            return Ok(Some(key));
        }
        let read_at = self.identities.epoch();
        let key = self.engine.api_key_by_hash(hash).await?;
        if let Some(key) = &key {
            self.identities.put_key(key, now, read_at);
        }
        Ok(key)
    }

    /// The caller behind an API key: the key's creator, acting for the key's tenant (any
    /// tenant for a service key, while its creator is still an admin).
    pub async fn authenticate_key(&self, key: &str) -> Result<Caller, ApiError> {
        let refused = || ApiError::unauthenticated("the API key is invalid or revoked");
        if !key.starts_with(API_KEY_PREFIX) || key.len() > MAX_CREDENTIAL_BYTES {
            return Err(refused());
        }
        let stored = self.cached_key(&hash_api_key(key)).await?.ok_or_else(refused)?;
        if stored.revoked_at.is_some() {
            return Err(refused());
        }
        let creator = self.cached_user(&stored.created_by).await?.ok_or_else(refused)?;
        let (tenant, acts_for) = match stored.tenant_id {
            Some(t) => (t.clone(), ActsFor::Tenant(t)),
            None if creator.role == Role::Admin => (creator.tenant_id.clone(), ActsFor::AnyTenant),
            None => return Err(refused()),
        };
        Ok(Caller {
            user_id: creator.id,
            tenant,
            role: creator.role,
            acts_for,
            credential: Credential::ApiKey { key_id: stored.id, service_name: stored.service_name },
        })
    }

    /// Creates an API key for the caller's tenant, another tenant (admins), or any tenant
    /// (admins, `any_tenant`).
    ///
    /// What a suspended tenant's users may still do is decided here and in the engine: they
    /// sign in, read (their usage, credits, keys, and invoices where there are some) and
    /// revoke keys, but they may not mint a key (403 `tenant_suspended`) and their calls are
    /// denied with `tenant_suspended`. Admins may still mint a key for a suspended tenant,
    /// which reports nothing until the tenant is active again.
    pub async fn create_api_key(&self, caller: &Caller, req: NewApiKey) -> Result<CreatedApiKey, ApiError> {
        let name = check_text("name", &req.name, 100)?;
        let service_name = req.service_name.as_deref().map(|s| check_text("service_name", s, 128)).transpose()?;
        let tenant = match (req.any_tenant, req.tenant_id) {
            (true, Some(_)) => return Err(ApiError::invalid("any_tenant", "name a tenant or ask for any, not both")),
            (true, None) if !caller.is_admin() => {
                return Err(ApiError::forbidden("only admins may create keys for any tenant"));
            }
            (true, None) => None,
            (false, None) => Some(caller.tenant.clone()),
            (false, Some(t)) => {
                let t = TenantId::new(t).map_err(|e| ApiError::invalid("tenant_id", e.to_string()))?;
                if t != caller.tenant && !caller.is_admin() {
                    return Err(ApiError::forbidden("keys can only be created for your own tenant"));
                }
                if self.engine.tenant(&t).await?.is_none() {
                    return Err(ApiError::invalid("tenant_id", format!("unknown tenant `{t}`")));
                }
                Some(t)
            }
        };
        if !caller.is_admin()
            && let Some(own) = self.engine.tenant(&caller.tenant).await?
            && own.status == TenantStatus::Suspended
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                "the tenant is suspended: its keys can be listed and revoked, not created",
            ));
        }
        let secret = format!("{API_KEY_PREFIX}{}", hex(&rand::random::<[u8; 32]>()));
        let key = ApiKey {
            id: new_id("key_"),
            tenant_id: tenant,
            name,
            service_name,
            key_hash: hash_api_key(&secret),
            created_by: caller.user_id.clone(),
            created_at: self.engine.now(),
            revoked_at: None,
        };
        let info = ApiKeyInfo::from(key.clone());
        if outside_own_tenant(caller, &key) {
            let after = serde_json::to_value(&info).ok();
            let change =
                audit::Change { actor: &caller.user_id, action: "key.create", target: &key.id, before: None, after };
            self.engine.create_api_key_audited(&key, &audit::entry(&self.engine, change)).await?;
        } else {
            self.engine.create_api_key(&key).await?;
        }
        tracing::info!(key = %key.id, tenant = ?key.tenant_id, "API key created");
        Ok(CreatedApiKey { key: secret, info })
    }

    /// The active keys a caller may see: a user those of its own tenant (all of them; naming
    /// another tenant answers 403); an admin those of `query.tenant`, or, without one, every
    /// tenant's and the service keys, by id, in pages.
    pub async fn api_keys(&self, caller: &Caller, query: KeyQuery) -> Result<KeyPage, ApiError> {
        let (mut keys, paged) = match (caller.is_admin(), query.tenant) {
            (false, Some(t)) if t != caller.tenant => {
                return Err(ApiError::forbidden("you may only list your own tenant's keys").with_field("tenant_id"));
            }
            (false, _) => (self.engine.api_keys(Some(&caller.tenant)).await?, false),
            (true, Some(t)) => (self.engine.api_keys(Some(&t)).await?, false),
            (true, None) => (self.engine.active_api_keys(query.after.as_deref(), query.limit).await?, true),
        };
        keys.retain(|k| k.revoked_at.is_none());
        let next_after = match keys.last() {
            Some(last) if paged && keys.len() >= query.limit => Some(last.id.clone()),
            _ => None,
        };
        Ok(KeyPage { keys: keys.into_iter().map(ApiKeyInfo::from).collect(), next_after })
    }

    /// Revokes a key and returns it as it was listed: any active key for an admin, one of
    /// its own tenant's for a user; 404 for any other (another tenant's key is not shown to
    /// exist), and for a key already revoked.
    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<ApiKeyInfo, ApiError> {
        let not_found = || ApiError::not_found("no such API key");
        let key = self.engine.api_key(id).await?.ok_or_else(not_found)?;
        let visible = caller.is_admin() || key.tenant_id.as_ref() == Some(&caller.tenant);
        if !visible || key.revoked_at.is_some() {
            return Err(not_found());
        }
        let info = ApiKeyInfo::from(key.clone());
        if outside_own_tenant(caller, &key) {
            let before = serde_json::to_value(&info).ok();
            let after = Some(serde_json::json!({ "revoked": true }));
            let change = audit::Change { actor: &caller.user_id, action: "key.revoke", target: id, before, after };
            self.engine.revoke_api_key_audited(id, &audit::entry(&self.engine, change)).await?;
        } else {
            self.engine.revoke_api_key(id).await?;
        }
        self.identities.forget_key(&key.key_hash);
        tracing::info!(key = %id, tenant = ?key.tenant_id, by = %caller.user_id, "API key revoked");
        Ok(info)
    }

    /// Creates the admin `email` in the platform tenant, or makes the existing user with
    /// that e-mail an admin; sets the password and lifts any lock.
    pub async fn create_or_update_admin(&self, email: &str, password: &str) -> Result<User, ApiError> {
        let email = normalize_email(email).map_err(|m| ApiError::invalid("email", m))?;
        password::check_password(password).map_err(|m| ApiError::invalid("password", m))?;
        let platform = self.ensure_platform_tenant().await?;
        let hash = password::hash_password(password.to_owned(), self.cost).await?;
        // Instances starting together race to create the admin: the loser updates it.
        let mut attempts = 0;
        let user = loop {
            attempts += 1;
            match self.engine.user_by_email(&email).await? {
                Some(mut user) => {
                    user.password_hash = hash;
                    user.role = Role::Admin;
                    self.engine.update_user(&user).await?;
                    self.identities.forget_user(&user.id);
                    break user;
                }
                None => {
                    let user = User {
                        id: new_id("usr_"),
                        tenant_id: platform.clone(),
                        email: email.clone(),
                        password_hash: hash.clone(),
                        role: Role::Admin,
                        created_at: self.engine.now(),
                    };
                    match self.engine.create_user(&user).await {
                        Ok(()) => break user,
                        Err(metering_core::Error::AlreadyExists(_)) if attempts < 2 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        self.clear_logins(&email).await?;
        tracing::info!(admin = %email, tenant = %user.tenant_id, "admin ready");
        Ok(user)
    }

    /// Makes sure an admin exists at start: the configured one (created or updated), else,
    /// when the platform tenant has no admin yet, `admin@localhost` with a generated
    /// password, which is returned (to be shown once).
    pub async fn ensure_admin(&self, configured: Option<(&str, &str)>) -> Result<Option<String>, ApiError> {
        if let Some((email, password)) = configured {
            self.create_or_update_admin(email, password).await?;
            return Ok(None);
        }
        let platform = TenantId::new(PLATFORM_TENANT).map_err(ApiError::internal)?;
        let users = self.engine.users_of_tenant(&platform).await?;
        if users.iter().any(|u| u.role == Role::Admin) {
            return Ok(None);
        }
        let password = hex(&rand::random::<[u8; 16]>());
        self.create_or_update_admin(DEFAULT_ADMIN_EMAIL, &password).await?;
        Ok(Some(password))
    }

    async fn ensure_platform_tenant(&self) -> Result<TenantId, ApiError> {
        let id = TenantId::new(PLATFORM_TENANT).map_err(ApiError::internal)?;
        if self.engine.tenant(&id).await?.is_none() {
            let plan = PlanId::new(PLATFORM_PLAN).map_err(ApiError::internal)?;
            let mut tenant = Tenant::new(id.clone(), plan, self.engine.now());
            tenant.name = "Platform".into();
            match self.engine.create_tenant(&tenant).await {
                Ok(()) | Err(metering_core::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(id)
    }

    /// Lifts the login lock of `email`, and for an admin the locks of its logins from
    /// each client address; whether the e-mail itself was locked.
    pub async fn unlock(&self, email: &str) -> Result<bool, ApiError> {
        let email = login_key(email);
        let was_locked = self.is_locked(&email).await?;
        self.clear_logins(&email).await?;
        Ok(was_locked)
    }

    /// Clears the failures and locks of the login `key`, from everywhere and from each
    /// client address.
    async fn clear_logins(&self, key: &str) -> Result<(), ApiError> {
        self.engine.clear_login(key).await?;
        self.engine.clear_logins_from(key).await?;
        Ok(())
    }

    /// Whether the login `key` is locked now.
    async fn is_locked(&self, key: &str) -> Result<bool, ApiError> {
        Ok(self.engine.login_guard(key, self.lockout).await?.locked_until.is_some())
    }

    /// Lifts the login locks of every user of `tenant`, for the admin `actor`; returns how
    /// many were locked.
    ///
    /// The logins live in the hot store, outside the records, so the audit entry
    /// (`tenant.unlock`) cannot share the change's step: it is written first, and an
    /// unlock whose entry cannot be written does not happen.
    pub async fn unlock_tenant_users(&self, tenant: &TenantId, actor: &str) -> Result<usize, ApiError> {
        let keys: Vec<String> =
            self.engine.users_of_tenant(tenant).await?.iter().map(|user| login_key(&user.email)).collect();
        let mut locked = 0;
        for key in &keys {
            locked += usize::from(self.is_locked(key).await?);
        }
        let after = Some(serde_json::json!({ "unlocked": locked }));
        let change = audit::Change { actor, action: "tenant.unlock", target: tenant.as_str(), before: None, after };
        self.engine.append_audit(&audit::entry(&self.engine, change)).await?;
        for key in &keys {
            self.clear_logins(key).await?;
        }
        Ok(locked)
    }

    async fn dummy_hash(&self) -> Result<String, ApiError> {
        self.dummy_hash
            .get_or_try_init(|| password::hash_password(hex(&rand::random::<[u8; 16]>()), self.cost))
            .await
            .cloned()
    }
}

/// The login-lock key of an e-mail: its normal form, or the text itself if it has none.
fn login_key(email: &str) -> String {
    normalize_email(email).unwrap_or_else(|_| email.to_owned())
}

/// The login-lock key of an attempt on `email`: the e-mail's own, or for an admin, the
/// e-mail's from the client's address. An admin's account cannot be locked from everywhere
/// (the admins would have no way in but the command line); a guesser from one address is
/// still stopped there.
fn attempt_key(email: &str, user: Option<&User>, client: Option<IpAddr>) -> String {
    match (user, client) {
        (Some(user), Some(ip)) if user.role == Role::Admin => format!("{email} from {ip}"),
        _ => email.to_owned(),
    }
}

/// The credential a request presents, as read from its header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// `Authorization: Bearer <token>` (the scheme in any case, the token trimmed).
    Bearer(&'a str),
    /// `X-API-Key: <key>` (trimmed).
    ApiKey(&'a str),
}

/// Reads the credential of `headers`: `None` without one; 400 `ambiguous_credentials` for
/// both an `Authorization` and an `X-API-Key` header; 401 `unauthenticated` for an
/// `Authorization` that is not a bearer token, or a value that is not visible ASCII text.
pub(crate) fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) && headers.contains_key(API_KEY_HEADER) {
        return Err(ambiguous_credentials());
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        return match token {
            Some(token) => Ok(Some(Presented::Bearer(token))),
            None => Err(ApiError::unauthenticated("expected `Authorization: Bearer <token>`")),
        };
    }
    let Some(key) = headers.get(API_KEY_HEADER) else { return Ok(None) };
    match key.to_str() {
        Ok(key) => Ok(Some(Presented::ApiKey(key.trim()))),
        Err(_) => Err(ApiError::unauthenticated("the API key is invalid or revoked")),
    }
}

/// Whether an admin's change to `key` is outside its own tenant (another tenant's key, or
/// a service key that acts for any): such changes are audited like every other admin change.
fn outside_own_tenant(caller: &Caller, key: &ApiKey) -> bool {
    caller.is_admin() && key.tenant_id.as_ref() != Some(&caller.tenant)
}

fn email_taken() -> ApiError {
    ApiError::conflict("email_taken", "this e-mail is already registered").with_field("email")
}

fn locked(wait: Duration) -> ApiError {
    ApiError::new(StatusCode::LOCKED, "account_locked", "too many failed logins; try again later")
        .with_retry_after(retry_secs(wait).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_have_their_shapes() {
        let t = tenant_id_for("John.Doe+tag@example.com").unwrap();
        assert!(t.as_str().starts_with("john-doe-tag-"), "{t}");
        assert!(tenant_id_for("...@example.com").unwrap().as_str().starts_with("tenant-"));
        assert_eq!(hash_api_key("mk_x").len(), 64);
        assert_eq!(retry_secs(Duration::from_millis(1_001)), 2);
    }

    #[test]
    fn credentials_are_read_from_one_header() {
        let headers = |fields: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in fields {
                h.append(header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            h
        };
        assert_eq!(presented(&headers(&[])), Ok(None));
        assert_eq!(presented(&headers(&[("authorization", "bearer  t ")])), Ok(Some(Presented::Bearer("t"))));
        assert_eq!(presented(&headers(&[("x-api-key", " mk_1 ")])), Ok(Some(Presented::ApiKey("mk_1"))));
        assert_eq!(presented(&headers(&[("authorization", "Basic x")])).unwrap_err().status, StatusCode::UNAUTHORIZED);
        let both = presented(&headers(&[("authorization", "Bearer t"), ("x-api-key", "mk_1")])).unwrap_err();
        assert_eq!((both.status, both.code), (StatusCode::BAD_REQUEST, "ambiguous_credentials"));
    }

    #[test]
    fn fuzz_credential_headers() {
        use proptest::prelude::*;
        let name = prop::sample::select(vec!["authorization", "Authorization", "x-api-key", "X-API-Key", "cookie"]);
        let value = prop_oneof![
            crate::fuzz::mutations_of("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned()).prop_map(String::into_bytes),
            crate::fuzz::mutations_of(format!("{API_KEY_PREFIX}{}", "ab".repeat(32))).prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..48),
        ];
        let fields = prop::collection::vec((name, value), 0..4);
        crate::fuzz::run("credential headers", fields, |fields| {
            let mut headers = HeaderMap::new();
            for (name, value) in &fields {
                if let Ok(value) = axum::http::HeaderValue::from_bytes(value) {
                    headers.append(header::HeaderName::from_static(lower(name)), value);
                }
            }
            let auth = headers.contains_key(header::AUTHORIZATION);
            let key = headers.contains_key(API_KEY_HEADER);
            match presented(&headers) {
                Err(e) if auth && key && e.code == "ambiguous_credentials" && e.status == StatusCode::BAD_REQUEST => {
                    Ok(())
                }
                Err(e) if !(auth && key) && e.status == StatusCode::UNAUTHORIZED => Ok(()),
                Ok(None) if !auth && !key => Ok(()),
                Ok(Some(Presented::Bearer(t))) if auth && !key && t == t.trim() => Ok(()),
                Ok(Some(Presented::ApiKey(k))) if key && !auth && k == k.trim() => Ok(()),
                other => Err(format!("{fields:?} read as {other:?}")),
            }
        });
    }

    /// A header name in the lower case `HeaderName::from_static` takes.
    fn lower(name: &str) -> &'static str {
        match name.to_ascii_lowercase().as_str() {
            "authorization" => "authorization",
            "x-api-key" => "x-api-key",
            _ => "cookie",
        }
    }
}
