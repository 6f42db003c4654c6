//! What the handlers share, and how the server starts.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use metering_core::{Engine, GroupCommit};

use crate::auth::AuthService;
use crate::cursor::CursorKey;
use crate::rbac::{Rbac, RbacError};
use crate::settings::{MIN_JWT_SECRET_BYTES, Secret};
use crate::{ApiError, Settings, SettingsError};

/// The file in the data directory that keeps a generated JWT secret.
pub const JWT_SECRET_FILE: &str = "jwt_secret";

/// The server's shared state: the engine (and through it the stores), the settings,
/// authentication and access control. Cheap to clone (one reference count), as every
/// request clones it for each extractor and middleware that takes it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub(crate) engine: Engine,
    pub(crate) settings: Settings,
    pub(crate) auth: AuthService,
    pub(crate) rbac: Rbac,
    pub(crate) cursors: CursorKey,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Why the server could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting cannot be used.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The storage could not be opened or answered with an error.
    #[error("storage: {0}")]
    Storage(#[from] metering_core::Error),
    /// The access-control model or policy cannot be used.
    #[error(transparent)]
    Rbac(#[from] RbacError),
    /// The generated JWT secret could not be read or kept.
    #[error("JWT secret file {path}: {reason}")]
    Secret {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The admin could not be created or updated.
    #[error("admin account: {0}")]
    Admin(ApiError),
}

impl AppState {
    /// Opens what a serving instance uses: `<data_dir>/metering.db` and the hot counters
    /// (in this process, or Redis), with the seeded plans; the JWT secret from the settings
    /// or the data dir; an admin ready. Refused while another instance serves from the
    /// same data directory.
    pub async fn open(settings: Settings) -> Result<Self, StartError> {
        let state = Self::open_with(settings, true).await?;
        state.ensure_admin().await?;
        Ok(state)
    }

    /// [`open`](Self::open) for an operator's command beside a running server: no admin
    /// made unless configured, and a data directory in use is no obstacle.
    pub async fn open_store(settings: Settings) -> Result<Self, StartError> {
        Self::open_with(settings, false).await
    }

    async fn open_with(mut settings: Settings, serving: bool) -> Result<Self, StartError> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| metering_core::Error::Unavailable(format!("data dir {}: {e}", settings.data_dir.display())))?;
        if settings.jwt_secret.is_none() {
            settings.jwt_secret = Some(stored_jwt_secret(&settings.data_dir)?);
        }
        let records = crate::records::open(&settings, serving).await?;
        let hot = crate::hot::open(&settings).await?;
        let failure = settings.redis.as_ref().map(|r| r.failure).unwrap_or_default();
        let engine = Engine::builder(records, hot).group_commit(GroupCommit::default()).hot_failure(failure).build()?;
        Self::with_engine(engine, settings).await
    }

    /// State over an existing engine (tests use an in-memory one), with the seeded plans,
    /// the access-control policy, and the configured admin if any. Without a configured JWT
    /// secret a random one lives as long as the process.
    pub async fn with_engine(engine: Engine, settings: Settings) -> Result<Self, StartError> {
        engine.seed_plans().await?;
        let rbac = Rbac::load(settings.casbin_model.as_deref(), settings.casbin_policy.as_deref()).await?;
        let secret = match &settings.jwt_secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => {
                tracing::debug!("no JWT secret configured; tokens last as long as this process");
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let auth = AuthService::new(engine.clone(), &settings, &secret)
            .map_err(|e| StartError::Secret { path: "METERING_JWT_SECRET".into(), reason: e.to_string() })?;
        if let Some(admin) = &settings.admin {
            auth.create_or_update_admin(&admin.email, admin.password.expose()).await.map_err(StartError::Admin)?;
        }
        let cursors = CursorKey::derive(&secret);
        Ok(AppState(Arc::new(Shared { engine, settings, auth, rbac, cursors })))
    }

    /// Makes sure an admin exists: unless one is configured or the platform tenant has one,
    /// creates `admin@localhost` with a generated password, printed once to stderr.
    pub async fn ensure_admin(&self) -> Result<(), StartError> {
        if self.settings.admin.is_some() {
            return Ok(());
        }
        if let Some(password) = self.auth.ensure_admin(None).await.map_err(StartError::Admin)? {
            eprintln!(
                "metering-server: created the admin {} with the password {password} \
                 (shown once; set METERING_ADMIN_EMAIL and METERING_ADMIN_PASSWORD to choose your own)",
                crate::auth::DEFAULT_ADMIN_EMAIL
            );
        }
        Ok(())
    }

    /// Deletes ledger records older than the retention (`METERING_LEDGER_RETENTION`) on
    /// the engine's clock; returns how many went.
    pub async fn prune_ledger(&self) -> Result<u64, metering_core::Error> {
        let cutoff = self.engine.now().minus(self.settings.ledger_retention);
        let pruned = self.engine.prune_ledger(cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, before = %cutoff, "ledger records past their retention deleted");
        }
        Ok(pruned)
    }

    /// Deletes the refresh tokens that can no longer be used (expired, used or revoked);
    /// returns how many.
    pub async fn prune_refresh_tokens(&self) -> Result<u64, metering_core::Error> {
        let pruned = self.engine.prune_refresh_tokens().await?;
        if pruned > 0 {
            tracing::info!(pruned, "spent refresh tokens deleted");
        }
        Ok(pruned)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Authentication and accounts.
    pub fn auth(&self) -> &AuthService {
        &self.auth
    }

    /// Access control.
    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }
}

/// The JWT secret kept in the data dir, generated (32 random bytes, hex, mode 0600) on the
/// first start; a warning says so, since tokens then depend on that file.
fn stored_jwt_secret(data_dir: &Path) -> Result<Secret, StartError> {
    let path = data_dir.join(JWT_SECRET_FILE);
    let fail = |reason: String| StartError::Secret { path: path.display().to_string(), reason };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim();
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(fail(format!("holds fewer than {MIN_JWT_SECRET_BYTES} bytes")));
            }
            tracing::warn!(file = %path.display(), "METERING_JWT_SECRET is not set; using the secret kept in the data dir");
            return Ok(Secret::new(secret));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let secret: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| fail(e.to_string()))?;
    file.write_all(secret.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| fail(e.to_string()))?;
    tracing::warn!(
        file = %path.display(),
        "METERING_JWT_SECRET is not set; generated a secret and kept it in the data dir (mode 0600)"
    );
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("metering-secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = stored_jwt_secret(&dir).unwrap();
        assert!(first.expose().len() >= MIN_JWT_SECRET_BYTES);
        assert_eq!(stored_jwt_secret(&dir).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(JWT_SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(JWT_SECRET_FILE), "short").unwrap();
        assert!(matches!(stored_jwt_secret(&dir), Err(StartError::Secret { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn records_past_their_retention_are_pruned() {
        use metering_core::store::{MemoryHot, MemoryRecords};
        use metering_core::{ManualClock, PlanId, Tenant, TenantId, UsageEvent};

        let clock = ManualClock::at("2026-01-10T00:00:00Z");
        let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new()))
            .clock(clock.clone())
            .build()
            .unwrap();
        let settings = Settings { jwt_secret: Some(Secret::new("x".repeat(32))), ..Settings::default() };
        let state = AppState::with_engine(engine.clone(), settings).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        engine.create_tenant(&Tenant::new(acme, PlanId::new("free").unwrap(), engine.now())).await.unwrap();
        engine.track(UsageEvent::new("acme", "svc", "/x", "GET")).await.unwrap();

        clock.advance(std::time::Duration::from_secs(399 * 86_400));
        assert_eq!(state.prune_ledger().await.unwrap(), 0, "still within 400 days");
        clock.advance(std::time::Duration::from_secs(2 * 86_400));
        assert_eq!(state.prune_ledger().await.unwrap(), 1);
    }
}
