//! [`Sessions`] for [`SqliteRecords`]: the `refresh_tokens` and `audit` tables.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteRecords, all, col, db, first, from_json, limit, to_json};
use crate::account::RefreshToken;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ledger::LedgerQuery;
use crate::store::Sessions;

const CONSUME_REFRESH_TOKEN: &str = "UPDATE refresh_tokens SET used_at = ?2 \
     WHERE id = ?1 AND used_at IS NULL AND revoked = 0 AND expires_at > ?2 \
     RETURNING id, user_id, issued_at, expires_at";

const PRUNE_REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens \
     WHERE expires_at <= ?1 OR used_at IS NOT NULL OR revoked = 1 LIMIT ?2)";

pub(super) const REVOKE_REFRESH_TOKENS: &str =
    "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1 AND used_at IS NULL AND revoked = 0";

const AUDIT_COLUMNS: &str = "id, at, actor, action, target, before, after";

pub(super) const AUDIT_PAGE: &str = "SELECT id, at, actor, action, target, before, after FROM audit \
     ORDER BY at DESC, id DESC LIMIT ?1";

pub(super) const AUDIT_PAGE_BEFORE: &str = "SELECT id, at, actor, action, target, before, after FROM audit \
     WHERE (at, id) < (?1, ?2) ORDER BY at DESC, id DESC LIMIT ?3";

#[async_trait]
impl Sessions for SqliteRecords {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), Error> {
        let t = token.clone();
        self.write(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO refresh_tokens (id, user_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![t.id, t.user_id, t.issued_at.as_micros(), t.expires_at.as_micros()])
                })
                .map_err(db)?;
            if inserted == 0 {
                return Err(Error::AlreadyExists(format!("refresh token {}", t.id)));
            }
            Ok(())
        })
        .await
    }

    async fn consume_refresh_token(&self, id: &str, now: Timestamp) -> Result<Option<RefreshToken>, Error> {
        let id = id.to_owned();
        self.write(move |c| first(c, CONSUME_REFRESH_TOKEN, params![id, now.as_micros()], decode_refresh_token)).await
    }

    async fn revoke_refresh_tokens(&self, user_id: &str) -> Result<u64, Error> {
        let user_id = user_id.to_owned();
        self.write(move |c| {
            c.prepare_cached(REVOKE_REFRESH_TOKENS).and_then(|mut s| s.execute([user_id])).map_err(db).map(|n| n as u64)
        })
        .await
    }

    async fn prune_refresh_tokens(&self, now: Timestamp) -> Result<u64, Error> {
        self.delete_in_chunks(PRUNE_REFRESH_TOKENS, now).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let row = AuditRow::of(entry)?;
        self.write(move |c| row.insert(c)).await
    }

    async fn audit(&self, before: Option<&str>, limit_to: usize) -> Result<Vec<AuditEntry>, Error> {
        let before = before.map(str::to_owned);
        let n = limit(limit_to.min(LedgerQuery::MAX_LIMIT));
        self.read(move |c| match before {
            Some(id) => {
                // An unknown cursor gives an empty page.
                let at = c
                    .prepare_cached("SELECT at FROM audit WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&id], |row| row.get::<_, i64>(0)).optional())
                    .map_err(db)?;
                match at {
                    Some(at) => all(c, AUDIT_PAGE_BEFORE, params![at, id, n], decode_audit),
                    None => Ok(Vec::new()),
                }
            }
            None => all(c, AUDIT_PAGE, [n], decode_audit),
        })
        .await
    }
}

fn decode_refresh_token(row: &Row<'_>) -> Result<RefreshToken, Error> {
    Ok(RefreshToken {
        id: col(row, 0)?,
        user_id: col(row, 1)?,
        issued_at: Timestamp::from_micros(col(row, 2)?),
        expires_at: Timestamp::from_micros(col(row, 3)?),
    })
}

/// Decodes a row selected with [`AUDIT_COLUMNS`].
fn decode_audit(row: &Row<'_>) -> Result<AuditEntry, Error> {
    let json = |i| col::<Option<String>>(row, i)?.map(|text| from_json(&text, "audit value")).transpose();
    Ok(AuditEntry {
        id: col(row, 0)?,
        at: Timestamp::from_micros(col(row, 1)?),
        actor: col(row, 2)?,
        action: col(row, 3)?,
        target: col(row, 4)?,
        before: json(5)?,
        after: json(6)?,
    })
}

/// An audit entry with its values encoded, as its row holds it.
pub(super) struct AuditRow {
    entry: AuditEntry,
    before: Option<String>,
    after: Option<String>,
}

impl AuditRow {
    pub(super) fn of(entry: &AuditEntry) -> Result<Self, Error> {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| to_json(v, "audit value")).transpose();
        Ok(AuditRow { before: json(&entry.before)?, after: json(&entry.after)?, entry: entry.clone() })
    }

    /// Inserts the row; [`Error::AlreadyExists`] if the entry's id is taken.
    pub(super) fn insert(&self, c: &Connection) -> Result<(), Error> {
        let e = &self.entry;
        let inserted = c
            .prepare_cached(&format!(
                "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING"
            ))
            .and_then(|mut s| {
                s.execute(params![e.id, e.at.as_micros(), e.actor, e.action, e.target, self.before, self.after])
            })
            .map_err(db)?;
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!("audit entry {}", e.id)));
        }
        Ok(())
    }
}
