//! Per-tenant maps split into shards, so that threads working for different tenants
//! rarely meet on a lock (the in-process backends keep their state in them).

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use parking_lot::Mutex;

use crate::Padded;
use crate::tenant::TenantId;

const SHARDS: usize = 64;

pub(crate) type Map<K, V> = HashMap<K, V, RandomState>;

pub(crate) type Shard<T> = Padded<Mutex<Map<TenantId, T>>>;

pub(crate) struct Sharded<T> {
    pub(crate) shards: Box<[Shard<T>]>,
    hasher: RandomState,
}

impl<T> Sharded<T> {
    pub(crate) fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Map::default()))).collect(),
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn shard(&self, tenant: &TenantId) -> &Mutex<Map<TenantId, T>> {
        &self.shards[self.hasher.hash_one(tenant) as usize % SHARDS].0
    }
}
