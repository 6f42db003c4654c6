//! The schema of the SQLite store and the migrations that bring a file up to it.

use rusqlite::{Connection, Row, TransactionBehavior};

use super::{blocks, col, corrupt, db, from_json, keys, unsigned};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::{Event, EventId};
use crate::ledger::LedgerRecord;
use crate::tenant::TenantId;

/// One step of the schema.
pub(super) enum Migration {
    /// Statements to run.
    Sql(&'static str),
    /// Work to do, in the migration's transaction.
    Code(fn(&Connection) -> Result<(), Error>),
}

/// The migrations, in order: applying `MIGRATIONS[v]` takes the schema from version `v`
/// to `v + 1`. Append new ones; never edit one that has shipped.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration::Sql(SCHEMA_V1),
    Migration::Sql(SCHEMA_V2),
    Migration::Sql(SCHEMA_V3),
    Migration::Code(ledger_into_blocks),
    Migration::Code(every_record_keyed),
];

pub(super) const SCHEMA_V1: &str = "
CREATE TABLE plans (
    id TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    region TEXT,
    status TEXT NOT NULL,
    billing_anchor INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT,
    name TEXT NOT NULL,
    service_name TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
) STRICT;
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE grants (
    tenant_id TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
) STRICT;
CREATE INDEX grants_period ON grants (tenant_id, period_start);

CREATE TABLE ledger (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    decided_at INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    credits_charged INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    method TEXT NOT NULL,
    credits_used INTEGER NOT NULL,
    premium INTEGER NOT NULL,
    feature TEXT,
    region TEXT,
    fingerprint INTEGER NOT NULL,
    status INTEGER,
    decision TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX ledger_key ON ledger (event_id, tenant_id);
CREATE INDEX ledger_time ON ledger (ts, event_id);
CREATE INDEX ledger_tenant_time ON ledger (tenant_id, ts, event_id, counted, credits_charged);
CREATE INDEX ledger_counted_decided ON ledger (tenant_id, decided_at, credits_charged) WHERE counted = 1;
";

/// Refresh tokens, the audit log, and users listed by tenant.
pub(super) const SCHEMA_V2: &str = "
CREATE INDEX users_tenant ON users (tenant_id, email);

CREATE TABLE refresh_tokens (
    id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX refresh_tokens_unused ON refresh_tokens (user_id) WHERE used_at IS NULL AND revoked = 0;

CREATE TABLE audit (
    id TEXT NOT NULL PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
) STRICT;
CREATE UNIQUE INDEX audit_time ON audit (at, id);
";

/// One tenant-ordered ledger index instead of two: decision-time totals scan it by event
/// time (a decided event is at most the engine's `max_age` old), so each appended record
/// dirties one page at a random place instead of two.
pub(super) const SCHEMA_V3: &str = "
DROP INDEX ledger_counted_decided;
DROP INDEX ledger_tenant_time;
CREATE INDEX ledger_tenant_time ON ledger (tenant_id, ts, event_id, counted, credits_charged, decided_at);
";

/// The columns of the ledger table before version 4, in [`decode_v3_record`]'s order.
const V3_RECORD_COLUMNS: &str = "tenant_id, event_id, ts, decided_at, counted, service_name, endpoint, method, \
     credits_used, premium, feature, region, fingerprint, status, decision";

pub(super) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db)?;
    let known = MIGRATIONS.len() as i64;
    if !(0..=known).contains(&version) {
        return Err(Error::Corrupt(format!("database schema version {version} is not one this build knows")));
    }
    if version == known {
        return Ok(());
    }
    for step in &MIGRATIONS[version as usize..] {
        match step {
            Migration::Sql(sql) => tx.execute_batch(sql).map_err(db)?,
            Migration::Code(run) => run(&tx)?,
        }
    }
    tx.pragma_update(None, "user_version", known).map_err(db)?;
    tx.commit().map_err(db)
}

/// Version 4: the ledger's records move from a row each into blocks (see [`blocks`]),
/// read in order of tenant and event time and written a batch at a time, and the old
/// table goes. It makes today's blocks and key index, so version 5 has nothing left to do.
fn ledger_into_blocks(c: &Connection) -> Result<(), Error> {
    const BATCH: usize = 8 * blocks::BLOCK_RECORDS;
    c.execute_batch(blocks::SCHEMA).map_err(db)?;
    c.execute_batch(keys::SCHEMA).map_err(db)?;
    let mut read =
        c.prepare(&format!("SELECT {V3_RECORD_COLUMNS} FROM ledger ORDER BY tenant_id, ts, event_id")).map_err(db)?;
    let mut rows = read.query([]).map_err(db)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut moved = 0;
    while let Some(row) = rows.next().map_err(db)? {
        batch.push(decode_v3_record(row)?);
        if batch.len() == BATCH {
            blocks::write(c, batch.iter().collect())?;
            moved += batch.len();
            batch.clear();
        }
    }
    blocks::write(c, batch.iter().collect())?;
    moved += batch.len();
    drop(rows);
    drop(read);
    c.execute_batch("DROP TABLE ledger").map_err(db)?;
    if moved > 0 {
        tracing::info!(records = moved, "ledger moved into blocks (schema version 4)");
    }
    Ok(())
}

/// Decodes a row of the ledger table before version 4, selected with [`V3_RECORD_COLUMNS`].
fn decode_v3_record(row: &Row<'_>) -> Result<LedgerRecord, Error> {
    let event = Event {
        tenant_id: TenantId::new(col::<String>(row, 0)?).map_err(|_| corrupt("tenant id"))?,
        event_id: EventId::new(col::<String>(row, 1)?).map_err(|_| corrupt("event id"))?,
        timestamp: Timestamp::from_micros(col(row, 2)?),
        service_name: col(row, 5)?,
        endpoint: col(row, 6)?,
        method: col::<String>(row, 7)?.parse().map_err(|_| corrupt("method"))?,
        credits_used: unsigned(col(row, 8)?, "credits used")?,
        premium: col(row, 9)?,
        feature: col(row, 10)?,
        region: col(row, 11)?,
        // The fingerprint's bits, stored as a signed integer.
        fingerprint: col::<i64>(row, 12)? as u64,
    };
    Ok(LedgerRecord {
        event,
        decided_at: Timestamp::from_micros(col(row, 3)?),
        counted: col(row, 4)?,
        fail_open: false,
        status: col(row, 13)?,
        decision: from_json(&col::<String>(row, 14)?, "decision")?,
    })
}

/// Version 5: every record gets an entry in the key index (see [`keys`]). A file made at
/// version 4 by an earlier build kept entries only for ids callers chose, in
/// `ledger_keys`, and found generated ids by their decision's millisecond; its blocks are
/// read a few at a time, their records indexed, and the old table and columns go.
fn every_record_keyed(c: &Connection) -> Result<(), Error> {
    const BLOCKS_PER_STEP: i64 = 64;
    let old: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'ledger_keys')",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !old {
        return Ok(());
    }
    c.execute_batch(keys::SCHEMA).map_err(db)?;
    let mut next = c.prepare("SELECT id, body FROM ledger_blocks WHERE id > ?1 ORDER BY id LIMIT ?2").map_err(db)?;
    let (mut after, mut indexed) = (i64::MIN, 0usize);
    loop {
        let step: Vec<(i64, Vec<u8>)> = next
            .query_map([after, BLOCKS_PER_STEP], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(db)?;
        let Some(&(last, _)) = step.last() else { break };
        for (block, body) in &step {
            let records = blocks::decode(body)?;
            indexed += records.len();
            blocks::index_keys(c, *block, &records)?;
        }
        after = last;
    }
    drop(next);
    c.execute_batch(
        "DROP TABLE ledger_keys; \
         ALTER TABLE ledger_blocks DROP COLUMN keyed; \
         ALTER TABLE ledger_blocks DROP COLUMN generated;",
    )
    .map_err(db)?;
    if indexed > 0 {
        tracing::info!(records = indexed, "every ledger record keyed (schema version 5)");
    }
    Ok(())
}
