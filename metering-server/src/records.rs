//! The record store the server keeps its records in: SQLite in the data directory by
//! default (one instance), or MongoDB when `METERING_MONGODB_URI` is set (any number of
//! instances, which then share Redis for their counters too).

use std::sync::Arc;

use metering_core::store::{RecordStore, SqliteRecords};

use crate::settings::{MongoSettings, Settings, SettingsError};
use crate::state::StartError;

/// Opens the record store the settings name. A serving instance (`serving`) is refused a
/// data directory whose SQLite ledger another running instance owns.
pub(crate) async fn open(settings: &Settings, serving: bool) -> Result<Arc<dyn RecordStore>, StartError> {
    if let Some(mongodb) = &settings.mongodb {
        return open_mongodb(mongodb, settings).await;
    }
    let records = SqliteRecords::open(settings.data_dir.join("metering.db"))?;
    if serving && !records.owns_journal() {
        return Err(StartError::Settings(SettingsError {
            name: "METERING_DATA_DIR",
            value: settings.data_dir.display().to_string(),
            reason: "another metering-server is running on this data directory; one instance per data directory \
                     (they would count apart)"
                .into(),
        }));
    }
    Ok(Arc::new(records))
}

#[cfg(feature = "mongodb")]
async fn open_mongodb(mongodb: &MongoSettings, settings: &Settings) -> Result<Arc<dyn RecordStore>, StartError> {
    use metering_core::store::{MongoOptions, MongoRecords, MongoWriteConcern};

    let write_concern: MongoWriteConcern =
        mongodb.write_concern.parse().map_err(|e: metering_core::store::InvalidWriteConcern| {
            StartError::Settings(SettingsError {
                name: "METERING_MONGODB_WRITE_CONCERN",
                value: mongodb.write_concern.clone(),
                reason: e.to_string(),
            })
        })?;
    let options = MongoOptions {
        write_concern,
        timeout: mongodb.timeout,
        ledger_retention: Some(settings.ledger_retention),
        ..MongoOptions::new(mongodb.uri.expose(), mongodb.database.clone())
    };
    let records = MongoRecords::connect(options).await.map_err(|e| unusable(mongodb, e.to_string()))?;
    Ok(Arc::new(records))
}

#[cfg(not(feature = "mongodb"))]
async fn open_mongodb(mongodb: &MongoSettings, _settings: &Settings) -> Result<Arc<dyn RecordStore>, StartError> {
    Err(unusable(mongodb, "this build has no MongoDB support (cargo feature `mongodb`)".into()))
}

fn unusable(mongodb: &MongoSettings, reason: String) -> StartError {
    StartError::Settings(SettingsError { name: "METERING_MONGODB_URI", value: mongodb.redacted_uri(), reason })
}
