//! Audit entries: every admin change is written with one [`AuditEntry`], made here and
//! handed to the engine's `_audited` method that writes the change and the entry together
//! (a change outside the record store, an unlock of logins, has its entry written first).
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

/// The entry of `change`, at the engine's current time.
pub(crate) fn entry(engine: &Engine, change: Change<'_>) -> AuditEntry {
    let at = engine.now();
    AuditEntry {
        id: entry_id(at),
        at,
        actor: change.actor.to_owned(),
        action: change.action.to_owned(),
        target: change.target.to_owned(),
        before: change.before,
        after: change.after,
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
