//! A short-lived cache of users and API keys read while authenticating, so a request does
//! not read the store for who it is. Changes made through this server drop the entry at
//! once; changes made by another instance are seen within [`IDENTITY_TTL`].

use std::sync::Mutex;
use std::time::Duration;

use metering_core::{ApiKey, Timestamp, User};

use super::bounded::{BoundedMap, Expiring};

/// How long a user or key read from the store is trusted.
pub(crate) const IDENTITY_TTL: Duration = Duration::from_secs(5);

/// The most users (and, apart, keys) kept.
const CAPACITY: usize = 100_000;

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

/// Users by id and API keys by hash, each entry trusted for [`IDENTITY_TTL`].
pub(crate) struct Identities {
    users: Mutex<BoundedMap<Cached<User>>>,
    keys: Mutex<BoundedMap<Cached<ApiKey>>>,
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

fn put<T>(map: &Mutex<BoundedMap<Cached<T>>>, key: &str, value: T, now: Timestamp) {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(key);
    map.entry(key, now, || Cached { value, loaded: now });
}

impl Identities {
    pub(crate) fn new() -> Self {
        Identities { users: Mutex::new(BoundedMap::new(CAPACITY)), keys: Mutex::new(BoundedMap::new(CAPACITY)) }
    }

    pub(crate) fn user(&self, id: &str, now: Timestamp) -> Option<User> {
        get(&self.users, id, now)
    }

    pub(crate) fn put_user(&self, user: &User, now: Timestamp) {
        put(&self.users, &user.id, user.clone(), now);
    }

    pub(crate) fn forget_user(&self, id: &str) {
        self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
    }

    pub(crate) fn key(&self, hash: &str, now: Timestamp) -> Option<ApiKey> {
        get(&self.keys, hash, now)
    }

    pub(crate) fn put_key(&self, key: &ApiKey, now: Timestamp) {
        put(&self.keys, &key.key_hash, key.clone(), now);
    }

    pub(crate) fn forget_key(&self, hash: &str) {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(hash);
    }
}
