//! [`Health`] for [`SqliteRecords`]: the connections answer and the journal is whole.

use async_trait::async_trait;

use super::{SqliteRecords, blocking, db, journal};
use crate::error::Error;
use crate::store::Health;

#[async_trait]
impl Health for SqliteRecords {
    async fn ping(&self) -> Result<(), Error> {
        if let Some(share) = &self.journal
            && share.journal.lock().is_broken()
        {
            return Err(Error::Unavailable("the ledger journal failed a write; restart to recover".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db)).await
    }

    async fn damage(&self) -> Result<Vec<String>, Error> {
        let Some(path) = self.path.clone() else { return Ok(Vec::new()) };
        let damaged = blocking(move || journal::unacknowledged_damage(&path)).await?;
        Ok(damaged
            .iter()
            .map(|segment| {
                format!("ledger journal segment {} was damaged; the records that verified were kept", segment.display())
            })
            .collect())
    }

    async fn acknowledge_damage(&self) -> Result<usize, Error> {
        let Some(path) = self.path.clone() else { return Ok(0) };
        blocking(move || {
            let damaged = journal::unacknowledged_damage(&path)?;
            for segment in &damaged {
                journal::acknowledge(segment)?;
                tracing::warn!(segment = %segment.display(), "ledger journal: damage acknowledged by an operator");
            }
            Ok(damaged.len())
        })
        .await
    }
}
