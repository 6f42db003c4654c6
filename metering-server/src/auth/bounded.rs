//! A small bounded map for per-key entries that expire (the cached identities).
//!
//! At capacity it first drops what has expired, then the oldest hundredth of the rest, so
//! a flood of new keys costs one sweep per many inserts and never grows memory.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use metering_core::Timestamp;

/// What the bounded map needs to know about its values.
pub(crate) trait Expiring {
    /// Whether the entry means nothing any more at `now`.
    fn expired(&self, now: Timestamp) -> bool;
    /// When the entry started (the oldest go first when nothing has expired).
    fn since(&self) -> Timestamp;
}

/// A map of at most `capacity` entries.
#[derive(Debug)]
pub(crate) struct BoundedMap<V> {
    entries: HashMap<String, V, RandomState>,
    capacity: usize,
}

impl<V: Expiring> BoundedMap<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        BoundedMap { entries: HashMap::default(), capacity: capacity.max(1) }
    }

    /// The live entry for `key`, if any (an expired one is removed).
    pub(crate) fn get_live(&mut self, key: &str, now: Timestamp) -> Option<&mut V> {
        if self.entries.get(key).is_some_and(|v| v.expired(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// The live entry for `key`, made with `fresh` if absent or expired.
    pub(crate) fn entry(&mut self, key: &str, now: Timestamp, fresh: impl FnOnce() -> V) -> &mut V {
        if self.get_live(key, now).is_none() && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.entry(key.to_owned()).or_insert_with(fresh)
    }

    /// Forgets `key`, returning its entry.
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.entries.remove(key)
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn make_room(&mut self, now: Timestamp) {
        self.entries.retain(|_, v| !v.expired(now));
        if self.entries.len() < self.capacity {
            return;
        }
        let drop = (self.capacity / 100).max(1);
        let mut ages: Vec<Timestamp> = self.entries.values().map(Expiring::since).collect();
        let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        let mut dropped = 0;
        self.entries.retain(|_, v| {
            if dropped < drop && v.since() <= cutoff {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Until(Timestamp, Timestamp);

    impl Expiring for Until {
        fn expired(&self, now: Timestamp) -> bool {
            self.1 <= now
        }
        fn since(&self) -> Timestamp {
            self.0
        }
    }

    #[test]
    fn stays_bounded_dropping_the_expired_then_the_oldest() {
        let mut map = BoundedMap::new(100);
        let t = Timestamp::from_secs;
        for i in 0..100 {
            let until = if i < 10 { t(50) } else { t(1_000) };
            map.entry(&format!("k{i}"), t(i), || Until(t(i), until));
        }
        assert_eq!(map.len(), 100);
        map.entry("new", t(100), || Until(t(100), t(1_000)));
        assert_eq!(map.len(), 91, "the ten expired ones went");
        for i in 0..20 {
            map.entry(&format!("more{i}"), t(200), || Until(t(200), t(1_000)));
        }
        assert!(map.len() <= 100);
        assert!(map.get_live("k10", t(200)).is_none(), "the oldest went first");
        assert!(map.get_live("more19", t(200)).is_some());
        assert!(map.get_live("more19", t(1_000)).is_none(), "expired entries are not returned");
    }
}
