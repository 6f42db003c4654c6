//! Changes of records that instances cache (tenants, plans, users, API keys), announced
//! through the hot store to every instance sharing it, so that each drops what it cached
//! at once instead of trusting it until its time to live runs out.

use crate::tenant::TenantId;

/// A change of cached records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A tenant changed (plan, status, overrides).
    Tenant(TenantId),
    /// A plan changed: every tenant's effective plan may have.
    Plans,
    /// A user changed (role, password, e-mail), by user id.
    User(String),
    /// An API key changed (it was revoked), by the hash of its secret.
    ApiKey(String),
    /// Anything may have changed: announcements may have been missed (a lost connection,
    /// a listener that fell behind), so everything cached is dropped.
    Everything,
}

/// Separates a change's kind from its subject in its encoding (a byte no id contains).
const SEPARATOR: char = '\u{1f}';

impl Change {
    /// The change as one short text message.
    pub fn encode(&self) -> String {
        match self {
            Change::Tenant(id) => format!("t{SEPARATOR}{}", id.as_str()),
            Change::Plans => "p".to_owned(),
            Change::User(id) => format!("u{SEPARATOR}{id}"),
            Change::ApiKey(hash) => format!("k{SEPARATOR}{hash}"),
            Change::Everything => "*".to_owned(),
        }
    }

    /// The change a message encodes; a message it cannot read (another version's, a
    /// damaged one) is [`Change::Everything`], the safe answer.
    pub fn decode(message: &str) -> Change {
        let (kind, subject) = message.split_once(SEPARATOR).unwrap_or((message, ""));
        match (kind, subject) {
            ("t", id) => TenantId::new(id).map(Change::Tenant).unwrap_or(Change::Everything),
            ("p", "") => Change::Plans,
            ("u", id) if !id.is_empty() => Change::User(id.to_owned()),
            ("k", hash) if !hash.is_empty() => Change::ApiKey(hash.to_owned()),
            _ => Change::Everything,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_survives_its_encoding() {
        for change in [
            Change::Tenant(TenantId::new("acme").unwrap()),
            Change::Plans,
            Change::User("usr_1".into()),
            Change::ApiKey("abc123".into()),
            Change::Everything,
        ] {
            assert_eq!(Change::decode(&change.encode()), change);
        }
    }

    #[test]
    fn an_unreadable_message_drops_everything() {
        for message in ["", "x", "t\u{1f}", "t\u{1f}not a tenant!", "u\u{1f}", "p\u{1f}extra", "\u{1f}\u{1f}"] {
            assert_eq!(Change::decode(message), Change::Everything, "{message:?}");
        }
    }
}
