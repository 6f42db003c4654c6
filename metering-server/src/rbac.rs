//! Access control: Casbin decides every route.
//!
//! The model and policy shipped in `metering-server/rbac/` are embedded in the binary and
//! can be replaced by files (`METERING_CASBIN_MODEL`, `METERING_CASBIN_POLICY`). The
//! `authorize` middleware asks the enforcer with (subject, the caller's tenant, the route
//! template, the method); subjects are `anonymous`, `apikey`, `user` and `admin`. Nothing
//! is allowed that a policy line does not allow.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use casbin::{CoreApi, DefaultModel, Enforcer, MgmtApi, StringAdapter};

use crate::auth::{Caller, Credential};
use crate::{ApiError, AppState};

/// The shipped Casbin model.
pub const MODEL: &str = include_str!("../rbac/model.conf");
/// The shipped Casbin policy.
pub const POLICY: &str = include_str!("../rbac/policy.csv");

/// The subject of callers without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// The subject of callers with an API key.
pub const API_KEY: &str = "apikey";

/// A model or policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// A file could not be read.
    #[error("cannot read {setting} file {path}: {source}")]
    Read {
        /// The setting that named the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Casbin refused the model or the policy.
    #[error("invalid access-control {what}: {source}")]
    Casbin {
        /// Which: `model (METERING_CASBIN_MODEL=...)`, `policy (shipped)`, ...
        what: String,
        /// Casbin's reason.
        source: casbin::Error,
    },
}

/// The most decisions remembered; the policy is fixed while the server runs, so a
/// remembered decision never goes stale.
const DECISION_CACHE: usize = 10_000;

/// The domain every tenant that no policy line names is checked (and remembered) as.
/// Tenant ids cannot hold a NUL, so it is nobody's own.
const UNNAMED_DOMAIN: &str = "\u{0}unnamed";

/// The access-control decision point.
pub struct Rbac {
    enforcer: Enforcer,
    /// With the shipped model, the domains policy lines name: the matcher only compares
    /// the caller's domain with those, so every other domain gets the same decisions and
    /// they share one remembered answer (a Casbin check costs tens of µs, and there may
    /// be more tenants than the cache holds). `None` with another model: every domain is
    /// decided and remembered on its own.
    named_domains: Option<HashSet<String>>,
    decisions: std::sync::RwLock<HashMap<String, bool>>,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rbac")
    }
}

impl Rbac {
    /// The shipped model and policy.
    pub async fn embedded() -> Result<Self, RbacError> {
        Self::from_strs(MODEL, POLICY).await
    }

    /// The model and policy from these files, each defaulting to the shipped one.
    pub async fn load(model: Option<&Path>, policy: Option<&Path>) -> Result<Self, RbacError> {
        async fn read(setting: &'static str, path: Option<&Path>, shipped: &str) -> Result<String, RbacError> {
            match path {
                None => Ok(shipped.to_owned()),
                Some(p) => tokio::fs::read_to_string(p).await.map_err(|source| RbacError::Read {
                    setting,
                    path: p.display().to_string(),
                    source,
                }),
            }
        }
        let origin = |setting: &str, path: Option<&Path>| match path {
            Some(p) => format!("{setting}={}", p.display()),
            None => "shipped".to_owned(),
        };
        let model_origin = origin("METERING_CASBIN_MODEL", model);
        let policy_origin = origin("METERING_CASBIN_POLICY", policy);
        let model = read("METERING_CASBIN_MODEL", model, MODEL).await?;
        let policy = read("METERING_CASBIN_POLICY", policy, POLICY).await?;
        Self::build(&model, &model_origin, &policy, &policy_origin).await
    }

    /// A model and a policy given as text.
    pub async fn from_strs(model: &str, policy: &str) -> Result<Self, RbacError> {
        Self::build(model, "given", policy, "given").await
    }

    async fn build(model: &str, model_origin: &str, policy: &str, policy_origin: &str) -> Result<Self, RbacError> {
        let bad_model = |source| RbacError::Casbin { what: format!("model ({model_origin})"), source };
        let shipped_model = model == MODEL;
        let model = DefaultModel::from_str(model).await.map_err(bad_model)?;
        let enforcer = Enforcer::new(model, StringAdapter::new(policy)).await.map_err(|source| RbacError::Casbin {
            what: format!("model or policy ({model_origin}, {policy_origin})"),
            source,
        })?;
        // Casbin checks a model lazily; one probe makes a broken matcher or request shape
        // stop the start instead of denying every call.
        enforcer.enforce((ANONYMOUS, "", "/healthz", "GET")).map_err(bad_model)?;
        let named_domains = shipped_model
            .then(|| enforcer.get_policy().into_iter().filter_map(|line| line.into_iter().nth(1)).collect())
            .filter(|named: &HashSet<String>| !named.contains(UNNAMED_DOMAIN));
        Ok(Rbac { enforcer, named_domains, decisions: Default::default() })
    }

    /// Whether `subject` in `domain` may call `action` on `object`. An enforcer error
    /// denies (and is logged).
    pub fn allows(&self, subject: &str, domain: &str, object: &str, action: &str) -> bool {
        let domain = match &self.named_domains {
            Some(named) if !named.contains(domain) => UNNAMED_DOMAIN,
            _ => domain,
        };
        let key = [subject, domain, object, action].join("\u{0}");
        if let Some(&allowed) = self.decisions.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return allowed;
        }
        let allowed = match self.enforcer.enforce((subject, domain, object, action)) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, subject, object, action, "access-control check failed; denied");
                return false;
            }
        };
        let mut decisions = self.decisions.write().unwrap_or_else(|p| p.into_inner());
        if decisions.len() >= DECISION_CACHE {
            decisions.clear();
        }
        decisions.insert(key, allowed);
        allowed
    }

    /// Whether `caller` (`None`: anonymous) may call `method` on the route `template`.
    pub fn allows_caller(&self, caller: Option<&Caller>, template: &str, method: &Method) -> bool {
        let action = if method == Method::HEAD { "GET" } else { method.as_str() };
        match caller {
            None => self.allows(ANONYMOUS, "", template, action),
            Some(c) => self.allows(subject(c), c.tenant.as_str(), template, action),
        }
    }
}

/// The Casbin subject of a caller: `apikey` for an API key, else the user's role.
pub fn subject(caller: &Caller) -> &'static str {
    match caller.credential {
        Credential::ApiKey { .. } => API_KEY,
        Credential::AccessToken { .. } => caller.role.as_str(),
    }
}

/// Authenticates the request if it carries credentials, asks the policy, and leaves the
/// [`Caller`] in the request's extensions for the handler.
///
/// Denied: 401 `unauthenticated` when the caller is anonymous (no or invalid credentials),
/// 403 `forbidden` when it is authenticated. Invalid credentials on a public route are
/// ignored (the call goes on as anonymous).
pub(crate) async fn authorize(
    State(state): State<AppState>,
    path: MatchedPath,
    mut request: Request,
    next: Next,
) -> Response {
    let (caller, failure) = match state.auth.authenticate(request.headers()).await {
        None => (None, None),
        Some(Ok(caller)) => (Some(caller), None),
        // Ambiguous credentials are refused even where anonymous callers are welcome.
        Some(Err(e)) if e.code == "ambiguous_credentials" => return e.into_response(),
        Some(Err(e)) => (None, Some(e)),
    };
    if !state.rbac.allows_caller(caller.as_ref(), path.as_str(), request.method()) {
        return match (caller, failure) {
            (Some(c), _) => {
                tracing::debug!(user = %c.user_id, route = path.as_str(), "forbidden");
                ApiError::forbidden("you may not call this route").into_response()
            }
            (None, Some(e)) => e.into_response(),
            (None, None) => ApiError::unauthenticated("credentials required").into_response(),
        };
    }
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_shipped_policy_denies_by_default() {
        let rbac = Rbac::embedded().await.unwrap();
        assert!(rbac.allows(ANONYMOUS, "", "/auth/login", "POST"));
        assert!(rbac.allows(ANONYMOUS, "", "/docs/{*rest}", "GET"));
        assert!(!rbac.allows(ANONYMOUS, "", "/auth/login", "GET"));
        assert!(!rbac.allows(ANONYMOUS, "", "/api/me", "GET"));
        assert!(rbac.allows("user", "acme", "/api/me", "GET"));
        assert!(rbac.allows("user", "acme", "/healthz", "GET"));
        assert!(!rbac.allows("user", "acme", "/admin/tenants", "GET"));
        assert!(rbac.allows("admin", "platform", "/admin/tenants/{id}", "PATCH"));
        assert!(rbac.allows("admin", "platform", "/api/keys/{id}", "DELETE"));
        assert!(rbac.allows(API_KEY, "acme", "/api/track", "POST"));
        assert!(!rbac.allows(API_KEY, "acme", "/api/keys", "POST"));
        assert!(!rbac.allows("root", "acme", "/api/me", "GET"));
        assert!(!rbac.allows("user", "acme", "/api/unknown", "GET"));
    }

    #[tokio::test]
    async fn a_policy_can_be_scoped_to_one_tenant() {
        let policy = "p, user, acme, /api/me, GET\n";
        let rbac = Rbac::from_strs(MODEL, policy).await.unwrap();
        assert!(!rbac.allows("user", "globex", "/api/me", "GET"));
        assert!(rbac.allows("user", "acme", "/api/me", "GET"), "a named tenant is not taken for an unnamed one");
        assert!(!rbac.allows("user", "initech", "/api/me", "GET"));
    }

    #[tokio::test]
    async fn with_the_shipped_model_tenants_no_policy_names_share_remembered_decisions() {
        let rbac = Rbac::embedded().await.unwrap();
        for n in 0..2 * DECISION_CACHE {
            assert!(rbac.allows("user", &format!("tenant-{n}"), "/api/track", "POST"));
        }
        assert_eq!(rbac.decisions.read().unwrap().len(), 1, "one Casbin check for them all");
    }

    #[tokio::test]
    async fn another_model_decides_every_tenant_on_its_own() {
        let model = MODEL.replace("(p.dom == \"*\" || r.dom == p.dom)", "r.dom != \"globex\"");
        let rbac = Rbac::from_strs(&model, POLICY).await.unwrap();
        assert!(rbac.allows("user", "acme", "/api/me", "GET"));
        assert!(!rbac.allows("user", "globex", "/api/me", "GET"), "no policy line names globex; the model does");
        assert_eq!(rbac.decisions.read().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn broken_files_are_named() {
        let err = Rbac::from_strs("[request_definition]\nr = sub\n", POLICY).await.unwrap_err();
        assert!(matches!(err, RbacError::Casbin { .. }), "{err}");
        let err = Rbac::load(Some(Path::new("/nonexistent/model.conf")), None).await.unwrap_err();
        assert!(err.to_string().contains("METERING_CASBIN_MODEL"), "{err}");
    }
}
