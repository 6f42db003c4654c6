//! Who is calling: the identity every authenticated handler receives.

use metering_core::{Role, TenantId};

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT access token (`Authorization: Bearer ...`).
    AccessToken {
        /// The token's `jti`.
        jti: String,
    },
    /// An API key (`X-API-Key: ...`).
    ApiKey {
        /// The key's id.
        key_id: String,
    },
}

/// Whose data the caller may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActsFor {
    /// Exactly one tenant: its own.
    Tenant(TenantId),
    /// Any tenant: an admin-issued service key reporting for all of a project's users.
    AnyTenant,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user behind the call (the key's creator for an API key).
    pub user_id: String,
    /// The caller's own tenant (its domain for access control).
    pub tenant: TenantId,
    /// Admin or user.
    pub role: Role,
    /// Whose data it may act on.
    pub acts_for: ActsFor,
    /// How it authenticated.
    pub credential: Credential,
}

impl Caller {
    /// Whether the caller may act on `tenant`'s data.
    pub fn may_act_for(&self, tenant: &TenantId) -> bool {
        match &self.acts_for {
            ActsFor::Tenant(own) => own == tenant,
            ActsFor::AnyTenant => true,
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
