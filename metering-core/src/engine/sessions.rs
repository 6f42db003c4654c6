//! The engine's sessions: refresh tokens, kept by the record store's
//! [`Sessions`](crate::store::Sessions) role (ids only, never the tokens).

use super::Engine;
use crate::account::RefreshToken;
use crate::error::Error;

impl Engine {
    /// Stores a refresh token's record; [`Error::AlreadyExists`] if its id is taken.
    pub async fn store_refresh_token(&self, token: &RefreshToken) -> Result<(), Error> {
        self.inner.records.insert_refresh_token(token).await
    }

    /// Uses up the refresh token with id `id`, once: returns it if it was unused and has
    /// not expired by now, `None` otherwise (also when another call used it first).
    pub async fn consume_refresh_token(&self, id: &str) -> Result<Option<RefreshToken>, Error> {
        self.inner.records.consume_refresh_token(id, self.now()).await
    }

    /// Revokes every unused refresh token of a user; returns how many.
    pub async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error> {
        self.inner.records.revoke_refresh_tokens(user_id).await
    }

    /// Deletes the refresh tokens that can no longer be used by now (expired, used or
    /// revoked); returns how many.
    pub async fn prune_refresh_tokens(&self) -> Result<u64, Error> {
        self.inner.records.prune_refresh_tokens(self.now()).await
    }
}
