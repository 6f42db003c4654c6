//! In-process backends: [`MemoryHot`] (hot counters) and [`MemoryRecords`] (records).
//!
//! Both are sharded by tenant so that threads deciding for different tenants rarely meet on
//! a lock (login counters and revoked tokens, rarely written, have one lock each, the
//! tokens a read-write one), and no lock is ever held across an `.await`. Nothing survives
//! the process.

mod faults;
mod hot;
mod records;

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use parking_lot::Mutex;

use crate::Padded;
use crate::tenant::TenantId;

pub use faults::AppendFaults;
pub use hot::MemoryHot;
pub use records::MemoryRecords;

const SHARDS: usize = 64;

pub(super) type Map<K, V> = HashMap<K, V, RandomState>;

pub(super) type Shard<T> = Padded<Mutex<Map<TenantId, T>>>;

pub(super) struct Sharded<T> {
    pub(super) shards: Box<[Shard<T>]>,
    hasher: RandomState,
}

impl<T> Sharded<T> {
    pub(super) fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Map::default()))).collect(),
            hasher: RandomState::default(),
        }
    }

    pub(super) fn shard(&self, tenant: &TenantId) -> &Mutex<Map<TenantId, T>> {
        &self.shards[self.hasher.hash_one(tenant) as usize % SHARDS].0
    }
}
