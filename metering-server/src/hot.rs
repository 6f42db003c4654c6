//! The hot store the server decides with: in this process by default, or shared through
//! Redis when `METERING_REDIS_URL` is set.
//!
//! With Redis, the records still live in this instance's SQLite file, so exactly one
//! instance may use a Redis prefix: two would each rebuild counters from half the
//! ledger. At start the instance claims the prefix for its ledger (an id kept in the
//! data directory, so a restart on the same data takes it back at once) and renews the
//! claim every few seconds; an instance with another ledger is refused with one line.
//! With records in MongoDB, every instance shares the one ledger, and the prefix is
//! theirs together: no claim is made.

use std::path::Path;
use std::sync::Arc;

use metering_core::store::{HotStore, MemoryHot};

use crate::settings::{RedisSettings, Settings};
use crate::state::StartError;

/// The file in the data directory naming this instance's ledger.
#[cfg(feature = "redis")]
const LEDGER_ID_FILE: &str = "ledger_id";

/// How long a claim on a Redis prefix lasts unless renewed.
#[cfg(feature = "redis")]
const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens the hot store the settings name.
pub(crate) async fn open(settings: &Settings) -> Result<Arc<dyn HotStore>, StartError> {
    match &settings.redis {
        None => Ok(Arc::new(MemoryHot::new())),
        Some(redis) => {
            let ledger = if settings.mongodb.is_none() { Some(settings.data_dir.as_path()) } else { None };
            open_redis(redis, ledger).await
        }
    }
}

#[cfg(feature = "redis")]
/// Connects to Redis; with `sqlite_ledger` (the data directory of this instance's own
/// ledger), claims the prefix for that ledger.
async fn open_redis(redis: &RedisSettings, sqlite_ledger: Option<&Path>) -> Result<Arc<dyn HotStore>, StartError> {
    use metering_core::store::{RedisHot, RedisOptions};

    let options =
        RedisOptions { prefix: redis.prefix.clone(), timeout: redis.timeout, ..RedisOptions::new(redis.url.expose()) };
    let store = Arc::new(RedisHot::connect(options).await.map_err(|e| unusable(redis, e.to_string()))?);
    let Some(data_dir) = sqlite_ledger else { return Ok(store) };
    let ledger = ledger_id(data_dir)?;
    if let Some(holder) = store.claim("ledger", &ledger, CLAIM_TTL).await? {
        let reason = format!(
            "the prefix `{}` is in use by another instance with its own ledger ({holder}); one instance per \
             prefix while records live in SQLite",
            redis.prefix
        );
        return Err(unusable(redis, reason));
    }
    let renewing = Arc::clone(&store);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CLAIM_TTL / 3).await;
            match renewing.claim("ledger", &ledger, CLAIM_TTL).await {
                Ok(None) => {}
                Ok(Some(holder)) => tracing::error!(%holder, "another instance took this Redis prefix"),
                Err(e) => tracing::warn!(error = %e, "could not renew the claim on the Redis prefix"),
            }
        }
    });
    Ok(store)
}

#[cfg(not(feature = "redis"))]
async fn open_redis(redis: &RedisSettings, _sqlite_ledger: Option<&Path>) -> Result<Arc<dyn HotStore>, StartError> {
    Err(unusable(redis, "this build has no Redis support (cargo feature `redis`)".into()))
}

fn unusable(redis: &RedisSettings, reason: String) -> StartError {
    StartError::Settings(crate::SettingsError { name: "METERING_REDIS_URL", value: redis.redacted_url(), reason })
}

/// This data directory's ledger id, made once.
#[cfg(feature = "redis")]
fn ledger_id(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join(LEDGER_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).map_err(|e| metering_core::Error::Unavailable(format!("{}: {e}", path.display())))?;
    Ok(id)
}
