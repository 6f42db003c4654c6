//! A short-lived cache of what authenticating reads or computes: users and API keys, so a
//! request does not read the store for who it is, and the claims of access tokens whose
//! signature was verified, so a token used again is not verified again. Changes made
//! through this server drop a user or key at once; changes made by another instance are
//! dropped when its announcement arrives through the shared hot store
//! ([`Identities::listen`]), and in any case within [`IDENTITY_TTL`]. A token's claims are
//! kept until the token expires, which is checked on every use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metering_core::{ApiKey, Change, Engine, Timestamp, User};
use tokio::sync::broadcast;

use super::bounded::{BoundedMap, Expiring};
use super::token::Claims;

/// How long a user or key read from the store is trusted.
pub(crate) const IDENTITY_TTL: Duration = Duration::from_secs(5);

/// The most users (and, apart, keys) kept.
const CAPACITY: usize = 100_000;

/// The most verified access tokens kept.
const TOKEN_CAPACITY: usize = 10_000;

/// The claims of an access token, keyed by the token's whole text.
struct Verified(Arc<Claims>);

impl Expiring for Verified {
    fn expired(&self, now: Timestamp) -> bool {
        now >= Timestamp::from_secs(i64::try_from(self.0.exp).unwrap_or(i64::MAX))
    }

    fn since(&self) -> Timestamp {
        Timestamp::from_secs(i64::try_from(self.0.iat).unwrap_or(i64::MAX))
    }
}

struct Cached<T> {
    value: T,
    loaded: Timestamp,
}

impl<T> Expiring for Cached<T> {
    fn expired(&self, now: Timestamp) -> bool {
        now < self.loaded || now.since(self.loaded) >= IDENTITY_TTL
    }

    fn since(&self) -> Timestamp {
        self.loaded
    }
}

/// Users by id and API keys by hash, each entry trusted for [`IDENTITY_TTL`], and
/// verified access tokens until they expire.
pub(crate) struct Identities {
    /// Counts the users and keys dropped, so one read from the store before a drop is not
    /// cached after it.
    epoch: AtomicU64,
    users: Mutex<BoundedMap<Cached<User>>>,
    keys: Mutex<BoundedMap<Cached<ApiKey>>>,
    tokens: Mutex<BoundedMap<Verified>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identities")
    }
}

fn get<T: Clone>(map: &Mutex<BoundedMap<Cached<T>>>, key: &str, now: Timestamp) -> Option<T> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.get_live(key, now).map(|c| c.value.clone())
}

fn put<T>(map: &Mutex<BoundedMap<Cached<T>>>, epoch: &AtomicU64, read_at: u64, key: &str, value: T, now: Timestamp) {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(key);
    if epoch.load(Ordering::Acquire) != read_at {
        return;
    }
    map.entry(key, now, || Cached { value, loaded: now });
}

impl Identities {
    pub(crate) fn new() -> Self {
        Identities {
            epoch: AtomicU64::new(0),
            users: Mutex::new(BoundedMap::new(CAPACITY)),
            keys: Mutex::new(BoundedMap::new(CAPACITY)),
            tokens: Mutex::new(BoundedMap::new(TOKEN_CAPACITY)),
        }
    }

    /// The claims of an access token verified before and not expired at `now`.
    pub(crate) fn verified_token(&self, token: &str, now: Timestamp) -> Option<Arc<Claims>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.get_live(token, now).map(|v| Arc::clone(&v.0))
    }

    /// Keeps the claims of an access token whose signature, kind and expiry were checked.
    pub(crate) fn put_verified_token(&self, token: &str, claims: Arc<Claims>, now: Timestamp) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.entry(token, now, || Verified(claims));
    }

    pub(crate) fn user(&self, id: &str, now: Timestamp) -> Option<User> {
        get(&self.users, id, now)
    }

    /// The drops so far: taken before reading a user or key from the store, handed to
    /// [`put_user`](Self::put_user) or [`put_key`](Self::put_key) after.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps a user read from the store after [`epoch`](Self::epoch) answered `read_at`,
    /// unless a user or key was dropped since.
    pub(crate) fn put_user(&self, user: &User, now: Timestamp, read_at: u64) {
        put(&self.users, &self.epoch, read_at, &user.id, user.clone(), now);
    }

    pub(crate) fn forget_user(&self, id: &str) {
        let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        users.remove(id);
    }

    pub(crate) fn key(&self, hash: &str, now: Timestamp) -> Option<ApiKey> {
        get(&self.keys, hash, now)
    }

    /// Keeps a key read from the store after [`epoch`](Self::epoch) answered `read_at`,
    /// unless a user or key was dropped since.
    pub(crate) fn put_key(&self, key: &ApiKey, now: Timestamp, read_at: u64) {
        put(&self.keys, &self.epoch, read_at, &key.key_hash, key.clone(), now);
    }

    pub(crate) fn forget_key(&self, hash: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.remove(hash);
    }

    /// Drops every user and key (announcements may have been missed).
    fn forget_all(&self) {
        let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        users.clear();
        keys.clear();
    }

    /// Drops what each change `engine` hears of makes stale (its own and those other
    /// instances announce), on a task that ends with these identities; without a tokio
    /// runtime, there is nothing to listen on and entries expire as usual.
    pub(crate) fn listen(self: &Arc<Self>, engine: &Engine) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut changes = engine.changes();
        let identities = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(_)) => Change::Everything,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(identities) = identities.upgrade() else { return };
                match change {
                    Change::User(id) => identities.forget_user(&id),
                    Change::ApiKey(hash) => identities.forget_key(&hash),
                    Change::Everything => identities.forget_all(),
                    _ => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::TokenKind;
    use metering_core::Role;

    fn claims(exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            sub: "u1".into(),
            tenant: "acme".into(),
            role: Role::User,
            typ: TokenKind::Access,
            jti: "j1".into(),
            iat: exp - 900,
            exp,
        })
    }

    #[test]
    fn a_verified_token_is_known_by_its_exact_text_until_it_expires() {
        let ids = Identities::new();
        let now = Timestamp::from_secs(1_800_000_000);
        ids.put_verified_token("header.body.sig", claims(1_800_000_060), now);
        assert_eq!(ids.verified_token("header.body.sig", now), Some(claims(1_800_000_060)));
        assert_eq!(ids.verified_token("header.body.sih", now), None, "another text is verified afresh");
        assert_eq!(
            ids.verified_token("header.body.sig", Timestamp::from_secs(1_800_000_059)),
            Some(claims(1_800_000_060))
        );
        assert_eq!(ids.verified_token("header.body.sig", Timestamp::from_secs(1_800_000_060)), None, "expired");
    }
}
