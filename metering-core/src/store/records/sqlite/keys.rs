//! The ledger's key index: where the record of a `(tenant, event_id)` is stored.
//!
//! Every stored record has one entry in `ledger_ids`, `(key, block)`, whatever made its id
//! (a caller, the engine, a replay) and whenever it was decided. The key is 64 bits
//! computed from the tenant and the id's text alone, so a lookup needs nothing else:
//!
//! - an id in the form the engine generates (a lower-case UUIDv7) keeps its
//!   millisecond in the top 48 bits and 16 bits of the digest below, so the entries of a
//!   batch land together at the end of the index instead of on a page each;
//! - any other id is the first 64 bits of the digest.
//!
//! The digest is SHA-256 over the tenant's length, the tenant and the id, so ids of one
//! tenant cannot be chosen to crowd the entries of another. Two records may share a key
//! (a digest's bits collide); a lookup then decodes each candidate block and compares the
//! ids, so a collision costs a block read, never a wrong answer.

use sha2::{Digest, Sha256};

use crate::event::EventId;
use crate::tenant::TenantId;

/// The table of the index.
pub(super) const SCHEMA: &str = "
CREATE TABLE ledger_ids (
    key INTEGER NOT NULL,
    block INTEGER NOT NULL,
    PRIMARY KEY (key, block)
) STRICT, WITHOUT ROWID;
";

/// Notes that a block holds a record with this key (once per key and block).
pub(super) const INSERT: &str = "INSERT OR IGNORE INTO ledger_ids (key, block) VALUES (?1, ?2)";

/// The tenant's blocks that may hold a key: `?1` the key, `?2` the tenant.
pub(super) const CANDIDATES: &str = "SELECT k.block FROM ledger_ids AS k \
     JOIN ledger_blocks AS b ON b.id = k.block WHERE k.key = ?1 AND b.tenant_id = ?2";

/// Forgets that a block holds a key.
pub(super) const DELETE: &str = "DELETE FROM ledger_ids WHERE key = ?1 AND block = ?2";

/// The index key of a tenant's event id.
pub(super) fn key_of(tenant: &TenantId, id: &EventId) -> i64 {
    let mut digest = Sha256::new();
    digest.update((tenant.as_str().len() as u64).to_le_bytes());
    digest.update(tenant.as_str().as_bytes());
    digest.update(id.as_str().as_bytes());
    let bytes: [u8; 32] = digest.finalize().into();
    let hashed = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let key = match id.generated_ms() {
        Some(ms) => ((ms.as_micros() / 1_000) as u64) << 16 | (hashed & 0xffff),
        None => hashed,
    };
    // The bits as SQLite's signed integer; order within the index is all that matters.
    key as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn tenant(t: &str) -> TenantId {
        TenantId::new(t).unwrap()
    }

    #[test]
    fn a_key_depends_on_the_tenant_and_the_text_alone() {
        let generated = EventId::generate(Timestamp::from_secs(1_800_000_000));
        let sent_back = EventId::new(generated.as_str()).unwrap();
        assert_eq!(key_of(&tenant("acme"), &generated), key_of(&tenant("acme"), &sent_back));
        assert_ne!(key_of(&tenant("acme"), &generated), key_of(&tenant("beta"), &generated));
        let chosen = EventId::new("ev-1").unwrap();
        assert_ne!(key_of(&tenant("acme"), &chosen), key_of(&tenant("acm"), &EventId::new("eev-1").unwrap()));
    }

    #[test]
    fn generated_keys_of_later_milliseconds_sort_later() {
        let acme = tenant("acme");
        let keys: Vec<i64> = (0..50)
            .map(|ms| key_of(&acme, &EventId::generate(Timestamp::from_micros(1_800_000_000_000_000 + ms * 1_000))))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn the_digest_is_stable_across_builds() {
        // Stored on disk: a change here would hide every stored record from lookups.
        assert_eq!(key_of(&tenant("acme"), &EventId::new("ev-1").unwrap()), KNOWN);
    }

    /// SHA-256 of the little-endian length 4, `acme` and `ev-1`: its first 8 bytes, big-endian.
    const KNOWN: i64 = 6_332_790_405_387_065_999;
}
