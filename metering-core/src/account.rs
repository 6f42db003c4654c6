//! Accounts: the people and keys that act for a tenant.
//!
//! The engine stores them; hashing passwords and keys is the server's concern, so these
//! records only ever hold hashes.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::tenant::TenantId;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the platform.
    Admin,
    /// Acts inside its own tenant.
    User,
}

impl Role {
    /// The role's name (`admin`, `user`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// A person who logs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: String,
    /// The tenant the user belongs to.
    pub tenant_id: TenantId,
    /// Login e-mail, stored lower-case; unique.
    pub email: String,
    /// A PHC-format password hash (argon2id).
    pub password_hash: String,
    /// Admin or user.
    pub role: Role,
    /// When the user was created.
    pub created_at: Timestamp,
}

/// An API key; only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key's id (not secret).
    pub id: String,
    /// The tenant the key acts for; `None` for a service key that may act for any tenant.
    pub tenant_id: Option<TenantId>,
    /// A label.
    pub name: String,
    /// The service the key reports for, if bound to one.
    pub service_name: Option<String>,
    /// A hash of the secret.
    pub key_hash: String,
    /// The id of the user who created it; the key acts with that user's role.
    pub created_by: String,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// A refresh token's record; the token itself is never stored, only its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// The token's id (the lookup key the token carries).
    pub id: String,
    /// The user it was issued to.
    pub user_id: String,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
}
