//! [`Health`]: whether the store answers, and damage found in its files.

use async_trait::async_trait;

use crate::error::Error;

/// The health of the store as a whole.
///
/// A role of its own rather than part of [`RecordStore`](super::RecordStore): it concerns
/// no kind of record but the store's connections and files, a readiness probe needs it and
/// nothing else, and a backend with nothing to report implements [`ping`](Self::ping) alone.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// Whether the store answers.
    ///
    /// Read: changes nothing.
    async fn ping(&self) -> Result<(), Error>;

    /// Damage found in the store's files that no operator has acknowledged yet, each a
    /// sentence naming what was damaged and where the evidence is kept; empty when there
    /// is none. Records that could still be read were kept.
    ///
    /// Read: changes nothing.
    async fn damage(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    /// Acknowledges every damage [`damage`](Self::damage) reports (its evidence is kept);
    /// returns how many.
    ///
    /// Not atomic: each damaged file is acknowledged on its own; after a failure those
    /// acknowledged stay so, and calling it again acknowledges the rest.
    async fn acknowledge_damage(&self) -> Result<usize, Error> {
        Ok(0)
    }
}
