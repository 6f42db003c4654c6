//! The audit log helper: every admin change is written as one [`AuditEntry`].
//!
//! Entry ids are UUIDv7 strings made from the engine's clock (never the system's) with a
//! process-wide monotonic counter, so entries written in the same microsecond still sort
//! in the order they were written.

use std::sync::Mutex;

use metering_core::{AuditEntry, Engine, Timestamp};
use serde_json::Value;

/// The UUIDv7 context: a counter that keeps ids of one instant increasing.
static CONTEXT: Mutex<uuid::ContextV7> = Mutex::new(uuid::ContextV7::new());

/// A fresh time-ordered entry id for `at`.
fn entry_id(at: Timestamp) -> String {
    let micros = at.as_micros().max(0) as u64;
    let (secs, nanos) = (micros / 1_000_000, ((micros % 1_000_000) * 1_000) as u32);
    let context = CONTEXT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ts = uuid::Timestamp::from_unix(&*context, secs, nanos);
    drop(context);
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

/// One change to audit: who did what to which target, with the values before and after.
#[derive(Debug, Clone)]
pub(crate) struct Change<'a> {
    /// The user who made it.
    pub(crate) actor: &'a str,
    /// What was done: `tenant.update`, `tenant.credits`, `tenant.unlock`, `plan.create`,
    /// `plan.update`, `storage.acknowledge`, `key.create`, `key.revoke`.
    pub(crate) action: &'static str,
    /// What it was done to (a tenant, plan or API key id).
    pub(crate) target: &'a str,
    /// The value before, if there was one.
    pub(crate) before: Option<Value>,
    /// The value after, if there is one.
    pub(crate) after: Option<Value>,
}

/// Appends `change` to the audit log at the engine's current time.
///
/// The change itself has already been applied when this runs; a failure to write its entry
/// is logged (loudly: an unaudited change) and does not turn the change into an error.
pub(crate) async fn record(engine: &Engine, change: Change<'_>) {
    let at = engine.now();
    let entry = AuditEntry {
        id: entry_id(at),
        at,
        actor: change.actor.to_owned(),
        action: change.action.to_owned(),
        target: change.target.to_owned(),
        before: change.before,
        after: change.after,
    };
    if let Err(e) = engine.records().append_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, target = %entry.target, actor = %entry.actor,
            "an admin change was applied but its audit entry could not be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_instant_increase() {
        let at = Timestamp::from_secs(1_770_000_000);
        let ids: Vec<String> = (0..100).map(|_| entry_id(at)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
