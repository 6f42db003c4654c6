//! The engine's view of its record store's health, through the
//! [`Health`](crate::store::Health) role.

use super::Engine;
use crate::error::Error;

impl Engine {
    /// Whether the record store answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.records.ping().await
    }

    /// Damage found in the record store's files that no operator has acknowledged yet,
    /// each a sentence naming what was damaged and where the evidence is kept.
    pub async fn damage(&self) -> Result<Vec<String>, Error> {
        self.inner.records.damage().await
    }
}
