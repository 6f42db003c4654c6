//! Opaque listing cursors: versioned tokens, encrypted and signed under a key of this
//! server, bound to the tenant that listed.
//!
//! A cursor is `v1` followed by the hex of `tag (16 bytes) || ciphertext`:
//! - the plaintext is the position after the last record seen
//!   (`<timestamp micros>:<tenant>/<event_id>`);
//! - the tag is the head of HMAC-SHA256 over the version, the tenant that listed and the
//!   plaintext: a cursor altered in any byte, forged without the key, or shown by another
//!   tenant than the one that listed does not check;
//! - the ciphertext is the plaintext XOR a SHA-256 keystream of the encryption key and the
//!   tag, so nothing of the position can be read from the cursor.
//!
//! Both keys are derived from the JWT secret with HMAC and distinct labels: rotating the
//! secret invalidates every cursor, as it does every token.

use metering_core::{EventId, LedgerCursor, TenantId, Timestamp};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The version prefix of every cursor this server gives out.
const VERSION: &str = "v1";
/// The bytes of the tag kept in a cursor.
const TAG_BYTES: usize = 16;
/// The longest cursor accepted (a tenant id and an event id fit many times over).
const MAX_CURSOR_CHARS: usize = 1024;
/// SHA-256's block size, for HMAC.
const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `parts` concatenated, under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The keys cursors are sealed and opened with.
#[derive(Clone)]
pub(crate) struct CursorKey {
    mac: [u8; 32],
    enc: [u8; 32],
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// The cursor keys derived from the server's JWT secret.
    pub(crate) fn derive(secret: &[u8]) -> Self {
        CursorKey {
            mac: hmac_sha256(secret, &[b"metering cursor signing key v1"]),
            enc: hmac_sha256(secret, &[b"metering cursor encryption key v1"]),
        }
    }

    fn tag(&self, scope: &TenantId, plain: &[u8]) -> [u8; TAG_BYTES] {
        let full = hmac_sha256(&self.mac, &[VERSION.as_bytes(), &[0], scope.as_str().as_bytes(), &[0], plain]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// XORs `data` with the keystream of `tag`.
    fn apply_keystream(&self, tag: &[u8; TAG_BYTES], data: &mut [u8]) {
        for (counter, chunk) in (0u64..).zip(data.chunks_mut(32)) {
            let pad = hmac_sha256(&self.enc, &[tag, &counter.to_be_bytes()]);
            for (b, p) in chunk.iter_mut().zip(pad) {
                *b ^= p;
            }
        }
    }

    /// The cursor just past `position`, for a listing by `scope`.
    pub(crate) fn seal(&self, scope: &TenantId, position: &LedgerCursor) -> String {
        let plain = format!("{}:{}/{}", position.at.as_micros(), position.tenant.as_str(), position.event_id.as_str());
        let tag = self.tag(scope, plain.as_bytes());
        let mut bytes = plain.into_bytes();
        self.apply_keystream(&tag, &mut bytes);
        let mut out = String::with_capacity(VERSION.len() + 2 * (TAG_BYTES + bytes.len()));
        out.push_str(VERSION);
        for b in tag.iter().chain(&bytes) {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        out
    }

    /// The position a cursor of `scope` stands for; 422 naming `cursor` for anything this
    /// server did not give to `scope`.
    pub(crate) fn open(&self, scope: &TenantId, cursor: &str) -> Result<LedgerCursor, ApiError> {
        let bad = || ApiError::invalid("cursor", "not a cursor this server gave out for this listing");
        if cursor.len() > MAX_CURSOR_CHARS {
            return Err(bad());
        }
        let hex = cursor.strip_prefix(VERSION).ok_or_else(bad)?;
        // Lowercase hex only, as sealed: one cursor has one spelling.
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        if bytes.len() <= TAG_BYTES {
            return Err(bad());
        }
        let (given, sealed) = bytes.split_at(TAG_BYTES);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(given);
        let mut plain = sealed.to_vec();
        self.apply_keystream(&tag, &mut plain);
        // Compared without an early exit, so timing tells nothing of the right tag.
        let expected = self.tag(scope, &plain);
        if expected.iter().zip(&tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(bad());
        }
        let text = String::from_utf8(plain).map_err(|_| bad())?;
        let (micros, rest) = text.split_once(':').ok_or_else(bad)?;
        let (tenant, id) = rest.split_once('/').ok_or_else(bad)?;
        Ok(LedgerCursor {
            at: Timestamp::from_micros(micros.parse().map_err(|_| bad())?),
            event_id: EventId::new(id).map_err(|_| bad())?,
            tenant: TenantId::new(tenant).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"])),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn position() -> LedgerCursor {
        LedgerCursor {
            at: Timestamp::from_micros(1_700_000_000_123_456),
            event_id: EventId::new("evt-1:x/y").unwrap(),
            tenant: TenantId::new("acme:eu").unwrap(),
        }
    }

    #[test]
    fn a_cursor_opens_for_its_tenant_only_and_reads_as_nothing() {
        let key = CursorKey::derive(b"an HS256 secret of at least thirty-two bytes");
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        let cursor = key.seal(&acme, &position());
        assert!(cursor.starts_with("v1"));
        assert!(!cursor.contains(&hex(b"acme")) && !cursor.contains(&hex(b"evt-1")), "{cursor}");
        assert_eq!(key.open(&acme, &cursor).unwrap(), position());
        assert_eq!(key.open(&other, &cursor).unwrap_err().field.as_deref(), Some("cursor"));
        let another_key = CursorKey::derive(b"another secret of at least thirty-two bytes!");
        assert!(another_key.open(&acme, &cursor).is_err());
    }

    #[test]
    fn an_altered_or_forged_cursor_is_refused() {
        let key = CursorKey::derive(b"an HS256 secret of at least thirty-two bytes");
        let acme = TenantId::new("acme").unwrap();
        let cursor = key.seal(&acme, &position());
        for i in 2..cursor.len() {
            let mut altered = cursor.clone().into_bytes();
            altered[i] = if altered[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            assert!(key.open(&acme, &altered).is_err(), "altered at {i}");
        }
        let readable = hex(b"1700000000123456:acme/evt-1");
        let too_long = format!("v1{}", "00".repeat(600));
        for bad in ["", "v1", "v2", "zz", &readable, &format!("v1{readable}"), &cursor[..cursor.len() - 2], &too_long] {
            assert_eq!(key.open(&acme, bad).unwrap_err().field.as_deref(), Some("cursor"), "{bad}");
        }
    }

    #[test]
    fn fuzz_cursor_decoder() {
        let key = CursorKey::derive(b"an HS256 secret of at least thirty-two bytes");
        let acme = TenantId::new("acme").unwrap();
        let valid = key.seal(&acme, &position());
        crate::fuzz::run("cursor", crate::fuzz::mutations_of(valid.clone()), |cursor| match key.open(&acme, &cursor) {
            Ok(p) if cursor != valid || p != position() => Err(format!("an altered cursor passed: {cursor}")),
            Ok(_) => Ok(()),
            Err(e) if e.field.as_deref() == Some("cursor") && e.status.as_u16() == 422 => Ok(()),
            Err(e) => Err(format!("answered {e}")),
        });
    }
}
