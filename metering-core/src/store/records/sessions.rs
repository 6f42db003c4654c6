//! [`Sessions`]: refresh tokens and the audit log.

use async_trait::async_trait;

use crate::account::RefreshToken;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;

/// Sign-in sessions and accountability: refresh tokens (their ids, never the tokens) and
/// the audit log of admin changes.
#[async_trait]
pub trait Sessions: Send + Sync + 'static {
    /// Stores a refresh token's record (only its id, never the token itself);
    /// [`Error::AlreadyExists`] if the id is taken.
    ///
    /// Atomic: the check and the insert are one step.
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error>;
    /// Uses a refresh token up: returns it and marks it used if it exists, is unused and
    /// has not expired at `now`; `None` otherwise.
    ///
    /// Atomic: the check and the mark are one step, so a token works once, even under
    /// concurrent use.
    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error>;
    /// Revokes every unused refresh token of a user (expired or not); returns how many.
    ///
    /// Atomic: every one of the user's unused tokens is revoked in one step, or none.
    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error>;
    /// Deletes the refresh tokens that can no longer be used: expired at `now`, used or
    /// revoked. A deleted token answers [`consume_refresh_token`](Self::consume_refresh_token)
    /// as it did before: `None`. Returns how many were deleted.
    ///
    /// Not atomic: tokens may go in chunks, each chunk whole; after a failure those
    /// deleted stay deleted, and calling it again finishes the job.
    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error>;

    /// Appends an audit entry; [`Error::AlreadyExists`] if its id is taken.
    ///
    /// Atomic: the check and the insert are one step. An entry for a change of the
    /// records is written with the change instead, by [`Audited::apply_audited`](super::Audited::apply_audited).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error>;
    /// Audit entries, newest first (by `(at, id)`), after the cursor `before` (the id of the
    /// last entry seen; an unknown id gives an empty page), at most `limit` (capped at 1,000).
    ///
    /// Read: a page is a consistent snapshot; successive pages are not one.
    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>, Error>;
}
