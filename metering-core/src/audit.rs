//! The audit log: who changed what, when, with the value before and after.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// One audited change.
///
/// Ids are chosen by the caller and time-ordered (UUIDv7 strings), so entries sort by
/// `(at, id)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The entry's id (a UUIDv7 string).
    pub id: String,
    /// When the change happened.
    pub at: Timestamp,
    /// Who made it (a user id, or a service name).
    pub actor: String,
    /// What was done (`tenant.suspend`, ...).
    pub action: String,
    /// What it was done to (a tenant id, a user id, ...).
    pub target: String,
    /// The value before the change, if there was one.
    pub before: Option<serde_json::Value>,
    /// The value after the change, if there is one.
    pub after: Option<serde_json::Value>,
}
