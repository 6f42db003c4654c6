//! The ledger's records in SQLite, kept in blocks.
//!
//! A block is one row of `ledger_blocks`: up to [`BLOCK_RECORDS`] records of one tenant,
//! ordered by event time and event id, encoded one after another (each a u32 length,
//! little-endian, and its [`record_codec`] payload) and compressed with zstd into a BLOB
//! after a format byte ([`BLOCK_V2`]; bodies of [`BLOCK_V1`], uncompressed, still read), beside
//! the range of their event times and of their decision times, how many there are, and
//! the calls and credits of the counted ones. Writing a batch of records makes one block
//! per tenant in it (more when the tenant's records span more than [`BLOCK_SPAN`]), so a
//! record costs its bytes in a BLOB and a share of a few index entries per tenant, not a
//! row and its own entry in every index.
//!
//! | index | serves |
//! |---|---|
//! | `(tenant_id, max_ts, min_ts)` | a tenant's listing, totals by event time, summaries |
//! | `(max_ts, min_ts)` | listings and summaries over every tenant, pruning |
//! | `(tenant_id, min_decided, max_decided)` | totals by decision time |
//!
//! No block spans more than [`BLOCK_SPAN`] of event times, nor of decision times, so the
//! blocks holding records of a time range are those whose last event time lies in the
//! range or less than [`BLOCK_SPAN`] after it: one index range, never a scan to the end.
//!
//! # Keys
//!
//! Every record has an entry in the key index (see [`keys`]), written with its block, so
//! a record is found by `(tenant, event_id)` the same way whatever made the id.

use std::cell::RefCell;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use rusqlite::{Connection, params};

use super::{db, keys, record_codec, signed};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, GroupBy, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageSummary, UsageTotals};
use crate::tenant::TenantId;

/// The blocks and keys tables and their indexes.
pub(super) const SCHEMA: &str = "
CREATE TABLE ledger_blocks (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    min_decided INTEGER NOT NULL,
    max_decided INTEGER NOT NULL,
    records INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    body BLOB NOT NULL
) STRICT;
CREATE INDEX ledger_blocks_tenant_time ON ledger_blocks (tenant_id, max_ts, min_ts);
CREATE INDEX ledger_blocks_time ON ledger_blocks (max_ts, min_ts);
CREATE INDEX ledger_blocks_decided ON ledger_blocks (tenant_id, min_decided, max_decided);
";

/// The most records in one block.
pub(super) const BLOCK_RECORDS: usize = 1_024;

/// The widest span of event times, and of decision times, within one block (µs): one hour.
pub(super) const BLOCK_SPAN: i64 = 3_600_000_000;

/// The format byte of a block body holding its records as they are (written before
/// bodies were compressed; still read).
const BLOCK_V1: u8 = 1;

/// The format byte of a block body holding a [`BLOCK_V1`] body's records compressed with
/// zstd (at [`BLOCK_ZSTD_LEVEL`]): a block repeats its tenant, services, endpoints and
/// much of every id, which compression takes out.
const BLOCK_V2: u8 = 2;

/// zstd's level for block bodies: its fastest regular level, as indexing is in the write
/// path's background and reads decompress whole blocks.
const BLOCK_ZSTD_LEVEL: i32 = 1;

/// The most bytes a block's records may take uncompressed ([`BLOCK_RECORDS`] records of
/// the largest a valid event makes, with room to spare): a body claiming more is corrupt.
const MAX_BLOCK_BYTES: usize = BLOCK_RECORDS * 4_096;

/// Decoded blocks a [`Lookup`] keeps before it starts over.
const LOOKUP_CACHE: usize = 64;

const INSERT_BLOCK: &str = "INSERT INTO ledger_blocks \
     (tenant_id, min_ts, max_ts, min_decided, max_decided, records, counted, credits, body) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const UPDATE_BLOCK: &str = "UPDATE ledger_blocks SET min_ts = ?2, max_ts = ?3, min_decided = ?4, \
     max_decided = ?5, records = ?6, counted = ?7, credits = ?8, body = ?9 WHERE id = ?1";
const SELECT_BODY: &str = "SELECT body FROM ledger_blocks WHERE id = ?1";
/// Blocks holding event times in `[?lo, ?hi)`: last event time from `?lo` to `?hi` plus a
/// span (`?hi_plus`), first one before `?hi`.
const LIST_TENANT: &str = "SELECT max_ts, body FROM ledger_blocks \
     WHERE tenant_id = ?1 AND max_ts >= ?2 AND max_ts < ?3 AND min_ts < ?4 ORDER BY max_ts DESC";
const LIST_ALL: &str = "SELECT max_ts, body FROM ledger_blocks \
     WHERE max_ts >= ?1 AND max_ts < ?2 AND min_ts < ?3 ORDER BY max_ts DESC";
const TOTALS_BY_EVENT: &str = "SELECT counted, credits, \
     CASE WHEN min_ts >= ?2 AND max_ts < ?4 THEN NULL ELSE body END FROM ledger_blocks \
     WHERE tenant_id = ?1 AND max_ts >= ?2 AND max_ts < ?3 AND min_ts < ?4";
const TOTALS_BY_DECISION: &str = "SELECT counted, credits, \
     CASE WHEN min_decided >= ?2 AND max_decided < ?3 AND min_ts >= ?5 THEN NULL ELSE body END FROM ledger_blocks \
     WHERE tenant_id = ?1 AND min_decided >= ?4 AND min_decided < ?3 AND max_decided >= ?2 AND max_ts >= ?5";
/// Blocks with records before `?2`: those whose last event time is before `?1` (`?2`
/// plus a span).
const PRUNABLE: &str = "SELECT id, body FROM ledger_blocks WHERE max_ts < ?1 AND min_ts < ?2 LIMIT ?3";
const DELETE_BLOCK: &str = "DELETE FROM ledger_blocks WHERE id = ?1";

/// Stores records, in order, in one transaction of the caller's: each is new, or a
/// duplicate of a stored record or an earlier one of `records` with the same `(tenant,
/// event_id)`, which comes back instead.
pub(super) fn insert<'a>(
    c: &Connection,
    records: impl IntoIterator<Item = &'a LedgerRecord>,
) -> Result<Vec<Appended>, Error> {
    let mut lookup = Lookup::new(c);
    let mut outcomes = Vec::new();
    let mut new: Vec<&LedgerRecord> = Vec::new();
    let mut in_batch: HashMap<(&str, &str), usize, RandomState> = HashMap::default();
    for r in records {
        let key = (r.event.tenant_id.as_str(), r.event.event_id.as_str());
        if let Some(&i) = in_batch.get(&key) {
            outcomes.push(Appended::Duplicate(Box::new(new[i].clone())));
            continue;
        }
        if !r.event.event_id.is_fresh()
            && let Some(stored) = lookup.find(&r.event.tenant_id, &r.event.event_id)?
        {
            outcomes.push(Appended::Duplicate(Box::new(stored)));
            continue;
        }
        in_batch.insert(key, new.len());
        new.push(r);
        outcomes.push(Appended::Inserted);
    }
    write(c, new)?;
    Ok(outcomes)
}

/// Writes records known to be new as blocks, each with its entry in the key index.
pub(super) fn write(c: &Connection, mut records: Vec<&LedgerRecord>) -> Result<(), Error> {
    records.sort_by(|a, b| {
        (&a.event.tenant_id, a.event.timestamp, &a.event.event_id).cmp(&(
            &b.event.tenant_id,
            b.event.timestamp,
            &b.event.event_id,
        ))
    });
    let mut insert_block = c.prepare_cached(INSERT_BLOCK).map_err(db)?;
    for block in cut(&records) {
        let encoded = Encoded::of(block)?;
        insert_block
            .execute(params![
                block[0].event.tenant_id.as_str(),
                encoded.min_ts,
                encoded.max_ts,
                encoded.min_decided,
                encoded.max_decided,
                encoded.records,
                encoded.counted,
                encoded.credits,
                encoded.body,
            ])
            .map_err(db)?;
        index_keys(c, c.last_insert_rowid(), block.iter().copied())?;
    }
    Ok(())
}

/// Writes the key index entries of `records`, all held by `block`.
pub(super) fn index_keys<'a>(
    c: &Connection,
    block: i64,
    records: impl IntoIterator<Item = &'a LedgerRecord>,
) -> Result<(), Error> {
    let mut insert = c.prepare_cached(keys::INSERT).map_err(db)?;
    let mut keys: Vec<i64> = records.into_iter().map(|r| keys::key_of(&r.event.tenant_id, &r.event.event_id)).collect();
    // In index order, so consecutive inserts walk the index's pages forward.
    keys.sort_unstable();
    for key in keys {
        insert.execute(params![key, block]).map_err(db)?;
    }
    Ok(())
}

/// Splits records sorted by tenant, event time and id into blocks: one tenant each, at
/// most [`BLOCK_RECORDS`], spanning at most [`BLOCK_SPAN`] of event and decision times.
fn cut<'r, 'a>(records: &'r [&'a LedgerRecord]) -> Vec<&'r [&'a LedgerRecord]> {
    let mut blocks = Vec::new();
    let mut start = 0;
    // The decision times the block begun at `start` spans so far.
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for (i, r) in records.iter().enumerate() {
        let decided = r.decided_at.as_micros();
        let first = records[start];
        let ends = i > start
            && (first.event.tenant_id != r.event.tenant_id
                || i - start == BLOCK_RECORDS
                || r.event.timestamp.as_micros() - first.event.timestamp.as_micros() > BLOCK_SPAN
                || hi.max(decided) - lo.min(decided) > BLOCK_SPAN);
        if ends {
            blocks.push(&records[start..i]);
            start = i;
            (lo, hi) = (decided, decided);
        } else {
            (lo, hi) = (lo.min(decided), hi.max(decided));
        }
    }
    if start < records.len() {
        blocks.push(&records[start..]);
    }
    blocks
}

/// A block's columns.
struct Encoded {
    min_ts: i64,
    max_ts: i64,
    min_decided: i64,
    max_decided: i64,
    records: i64,
    counted: i64,
    credits: i64,
    body: Vec<u8>,
}

impl Encoded {
    /// Encodes one tenant's records, sorted by event time and id.
    fn of(block: &[&LedgerRecord]) -> Result<Self, Error> {
        let mut body = Vec::with_capacity(block.len() * 192);
        let (mut min_decided, mut max_decided) = (i64::MAX, i64::MIN);
        let (mut counted, mut credits) = (0u64, 0u64);
        for r in block {
            let at = body.len();
            body.extend_from_slice(&[0; 4]);
            record_codec::encode(r, &mut body)?;
            let len = u32::try_from(body.len() - at - 4).map_err(|_| Error::Corrupt("a record is too large".into()))?;
            body[at..at + 4].copy_from_slice(&len.to_le_bytes());
            min_decided = min_decided.min(r.decided_at.as_micros());
            max_decided = max_decided.max(r.decided_at.as_micros());
            if r.counted {
                counted += 1;
                credits = credits.saturating_add(r.decision.credits_charged);
            }
        }
        let compressed = compress(&body)?;
        let mut body = Vec::with_capacity(1 + compressed.len());
        body.push(BLOCK_V2);
        body.extend_from_slice(&compressed);
        let (first, last) = match block {
            [first, .., last] => (first, last),
            [only] => (only, only),
            [] => return Err(Error::Corrupt("an empty ledger block".into())),
        };
        Ok(Encoded {
            min_ts: first.event.timestamp.as_micros(),
            max_ts: last.event.timestamp.as_micros(),
            min_decided,
            max_decided,
            records: signed(block.len() as u64, "records")?,
            counted: signed(counted, "counted")?,
            credits: signed(credits, "credits")?,
            body,
        })
    }
}

thread_local! {
    /// Each thread's zstd contexts, made once: making one costs more than compressing a
    /// small block.
    static ZSTD: RefCell<Option<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)>> =
        const { RefCell::new(None) };
}

/// Runs `f` with this thread's zstd contexts.
fn with_zstd<T>(
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>, &mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some((zstd::bulk::Compressor::new(BLOCK_ZSTD_LEVEL)?, zstd::bulk::Decompressor::new()?));
        }
        match slot.as_mut() {
            Some((c, d)) => f(c, d),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// A block's records compressed.
fn compress(records: &[u8]) -> Result<Vec<u8>, Error> {
    with_zstd(|c, _| c.compress(records))
        .map_err(|e| Error::Corrupt(format!("a ledger block could not be compressed: {e}")))
}

/// A block's records decompressed, refusing more than [`MAX_BLOCK_BYTES`].
fn decompress(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    with_zstd(|_, d| d.decompress(compressed, MAX_BLOCK_BYTES))
}

/// The records of a block's body, in their order.
pub(super) fn decode(body: &[u8]) -> Result<Vec<LedgerRecord>, Error> {
    let corrupt = || Error::Corrupt("a stored ledger block is unreadable".into());
    let decompressed;
    let mut rest = match body.split_first() {
        Some((&BLOCK_V1, records)) => records,
        Some((&BLOCK_V2, compressed)) => {
            decompressed = decompress(compressed).map_err(|_| corrupt())?;
            &decompressed[..]
        }
        _ => return Err(corrupt()),
    };
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        let payload = tail.get(..len).ok_or_else(corrupt)?;
        records.push(record_codec::decode(payload)?);
        rest = &tail[len..];
    }
    Ok(records)
}

/// Finds stored records by key, reading and decoding each block at most once.
pub(super) struct Lookup<'c> {
    c: &'c Connection,
    decoded: HashMap<i64, Vec<LedgerRecord>, RandomState>,
}

impl<'c> Lookup<'c> {
    /// Lookups on `c`.
    pub(super) fn new(c: &'c Connection) -> Self {
        Lookup { c, decoded: HashMap::default() }
    }

    /// The stored record with this key, from the blocks its key index entries name.
    pub(super) fn find(&mut self, tenant: &TenantId, id: &EventId) -> Result<Option<LedgerRecord>, Error> {
        let candidates: Vec<i64> = {
            let mut s = self.c.prepare_cached(keys::CANDIDATES).map_err(db)?;
            let rows = s.query_map(params![keys::key_of(tenant, id), tenant.as_str()], |row| row.get(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        for block in candidates {
            if let Some(found) = self.in_block(block, tenant, id)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn in_block(&mut self, block: i64, tenant: &TenantId, id: &EventId) -> Result<Option<LedgerRecord>, Error> {
        if !self.decoded.contains_key(&block) {
            if self.decoded.len() >= LOOKUP_CACHE {
                self.decoded.clear();
            }
            let body: Vec<u8> = self
                .c
                .prepare_cached(SELECT_BODY)
                .and_then(|mut s| s.query_row([block], |row| row.get(0)))
                .map_err(db)?;
            self.decoded.insert(block, decode(&body)?);
        }
        let records = self.decoded.get(&block).map_or(&[][..], Vec::as_slice);
        Ok(records.iter().find(|r| r.event.event_id == *id && r.event.tenant_id == *tenant).cloned())
    }
}

/// The bounds on event times `[lo, hi)` of blocks to read for `q` (with its cursor when
/// `with_cursor`), and `hi` plus a span.
fn time_bounds(q: &LedgerQuery, with_cursor: bool) -> (i64, i64, i64) {
    let lo = q.from.map_or(i64::MIN, Timestamp::as_micros);
    let mut hi = q.to.map_or(i64::MAX, Timestamp::as_micros);
    if let Some(c) = q.before.as_ref().filter(|_| with_cursor) {
        hi = hi.min(c.at.as_micros().saturating_add(1));
    }
    (lo, hi.saturating_add(BLOCK_SPAN), hi)
}

/// Visits the bodies of the blocks that may hold records of `q`'s tenant and time range,
/// last event time first, until `visit` answers `false`. `visit` gets a block's last
/// event time and its body.
fn visit_blocks(
    c: &Connection,
    q: &LedgerQuery,
    with_cursor: bool,
    mut visit: impl FnMut(i64, &[u8]) -> Result<bool, Error>,
) -> Result<(), Error> {
    let (lo, hi_plus, hi) = time_bounds(q, with_cursor);
    let mut stmt = c.prepare_cached(if q.tenant.is_some() { LIST_TENANT } else { LIST_ALL }).map_err(db)?;
    let mut rows = match &q.tenant {
        Some(t) => stmt.query(params![t.as_str(), lo, hi_plus, hi]),
        None => stmt.query(params![lo, hi_plus, hi]),
    }
    .map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let max_ts: i64 = row.get(0).map_err(db)?;
        let body = row.get_ref(1).and_then(|v| v.as_blob().map_err(Into::into)).map_err(db)?;
        if !visit(max_ts, body)? {
            break;
        }
    }
    Ok(())
}

/// Records matching `q`, newest first (by event time, event id, tenant), at most its limit.
pub(super) fn list(c: &Connection, q: &LedgerQuery) -> Result<Vec<LedgerRecord>, Error> {
    let limit = q.limit.min(LedgerQuery::MAX_LIMIT);
    let mut found: Vec<LedgerRecord> = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    visit_blocks(c, q, true, |max_ts, body| {
        // Blocks come by their last event time, newest first: once `limit` records are
        // newer than everything this block holds, no later block can displace one.
        if found.len() == limit && found[limit - 1].event.timestamp.as_micros() > max_ts {
            return Ok(false);
        }
        found.extend(decode(body)?.into_iter().filter(|r| q.matches(r)));
        found.sort_by(|a, b| b.listing_key().cmp(&a.listing_key()));
        found.truncate(limit);
        Ok(true)
    })?;
    Ok(found)
}

/// Usage of the records `q`'s filters select, grouped by `by`.
pub(super) fn summary(c: &Connection, q: &LedgerQuery, by: GroupBy, limit: usize) -> Result<Vec<UsageGroup>, Error> {
    let q = LedgerQuery { before: None, ..q.clone() };
    let mut summary = UsageSummary::new(by);
    visit_blocks(c, &q, false, |_, body| {
        decode(body)?.iter().filter(|r| q.matches(r)).for_each(|r| summary.add(r));
        Ok(true)
    })?;
    Ok(summary.finish(limit))
}

/// A tenant's counted calls and credits in `[from, to)` on `basis`: from the sums kept
/// with each block that lies inside the range, by decoding the others.
pub(super) fn totals(
    c: &Connection,
    tenant: &TenantId,
    basis: TimeBasis,
    from: Timestamp,
    to: Timestamp,
) -> Result<UsageTotals, Error> {
    let (f, t) = (from.as_micros(), to.as_micros());
    let mut stmt;
    let mut rows = match basis {
        TimeBasis::Event => {
            stmt = c.prepare_cached(TOTALS_BY_EVENT).map_err(db)?;
            stmt.query(params![tenant.as_str(), f, t.saturating_add(BLOCK_SPAN), t])
        }
        TimeBasis::Decided { events_from } => {
            stmt = c.prepare_cached(TOTALS_BY_DECISION).map_err(db)?;
            stmt.query(params![tenant.as_str(), f, t, f.saturating_sub(BLOCK_SPAN), events_from.as_micros()])
        }
    }
    .map_err(db)?;
    let mut totals = UsageTotals::default();
    while let Some(row) = rows.next().map_err(db)? {
        match row.get_ref(2).map_err(db)?.as_blob_or_null().map_err(|e| db(e.into()))? {
            None => {
                totals.calls += super::unsigned(row.get(0).map_err(db)?, "counted calls")?;
                totals.credits += super::unsigned(row.get(1).map_err(db)?, "counted credits")?;
            }
            Some(body) => decode(body)?.iter().filter(|r| basis.counts(r, from, to)).for_each(|r| totals.add(r)),
        }
    }
    Ok(totals)
}

/// Deletes records whose event time is before `before`, from at most `max_blocks`
/// blocks (a block straddling `before` keeps its later records); returns how many went
/// and whether blocks with such records may remain.
pub(super) fn prune(c: &Connection, before: Timestamp, max_blocks: usize) -> Result<(u64, bool), Error> {
    let cutoff = before.as_micros();
    let blocks: Vec<(i64, Vec<u8>)> = {
        let mut s = c.prepare_cached(PRUNABLE).map_err(db)?;
        let limit = i64::try_from(max_blocks).unwrap_or(i64::MAX);
        let rows = s
            .query_map(params![cutoff.saturating_add(BLOCK_SPAN), cutoff, limit], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let mut delete_block = c.prepare_cached(DELETE_BLOCK).map_err(db)?;
    let mut delete_key = c.prepare_cached(keys::DELETE).map_err(db)?;
    let mut removed = 0u64;
    for (id, body) in &blocks {
        let (gone, kept): (Vec<LedgerRecord>, Vec<LedgerRecord>) =
            decode(body)?.into_iter().partition(|r| r.event.timestamp.as_micros() < cutoff);
        removed += gone.len() as u64;
        for r in &gone {
            delete_key.execute(params![keys::key_of(&r.event.tenant_id, &r.event.event_id), id]).map_err(db)?;
        }
        if kept.is_empty() {
            delete_block.execute([id]).map_err(db)?;
            continue;
        }
        // A kept record may share its key with a gone one: its entry is written again.
        index_keys(c, *id, &kept)?;
        let e = Encoded::of(&kept.iter().collect::<Vec<_>>())?;
        c.prepare_cached(UPDATE_BLOCK)
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    e.min_ts,
                    e.max_ts,
                    e.min_decided,
                    e.max_decided,
                    e.records,
                    e.counted,
                    e.credits,
                    e.body
                ])
            })
            .map_err(db)?;
    }
    Ok((removed, blocks.len() == max_blocks))
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;

    use super::*;
    use crate::ledger::sample_record;
    use crate::store::records::sqlite::tests::query_plan;

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|&v| Value::Integer(v)).collect()
    }

    fn tenant_and(values: &[i64]) -> Vec<Value> {
        let mut args = vec![Value::Text("t".into())];
        args.extend(ints(values));
        args
    }

    #[test]
    fn every_query_is_one_index_range() {
        let cases = [
            (
                LIST_TENANT,
                tenant_and(&[0, 1, 2]),
                "SEARCH ledger_blocks USING INDEX ledger_blocks_tenant_time (tenant_id=? AND max_ts>? AND max_ts<?)",
            ),
            (LIST_ALL, ints(&[0, 1, 2]), "SEARCH ledger_blocks USING INDEX ledger_blocks_time (max_ts>? AND max_ts<?)"),
            (
                TOTALS_BY_EVENT,
                tenant_and(&[0, 1, 2]),
                "SEARCH ledger_blocks USING INDEX ledger_blocks_tenant_time (tenant_id=? AND max_ts>? AND max_ts<?)",
            ),
            (
                TOTALS_BY_DECISION,
                tenant_and(&[0, 1, 2, 3]),
                "SEARCH ledger_blocks USING INDEX ledger_blocks_decided (tenant_id=? AND min_decided>? AND min_decided<?)",
            ),
            (PRUNABLE, ints(&[0, 1, 2]), "SEARCH ledger_blocks USING INDEX ledger_blocks_time (max_ts<?)"),
            (
                keys::CANDIDATES,
                vec![Value::Integer(7), Value::Text("t".into())],
                "SEARCH k USING PRIMARY KEY (key=?) | SEARCH b USING INTEGER PRIMARY KEY (rowid=?)",
            ),
        ];
        for (sql, args, plan) in cases {
            assert_eq!(query_plan(sql, &args), plan, "{sql}");
        }
    }

    fn at(record: &LedgerRecord, secs: i64) -> LedgerRecord {
        let mut r = record.clone();
        r.event.timestamp = Timestamp::from_secs(secs);
        r.decided_at = Timestamp::from_secs(secs);
        r
    }

    #[test]
    fn blocks_hold_one_tenant_a_bounded_count_and_a_bounded_span() {
        let base = sample_record("a", "e", 1);
        let mut records: Vec<LedgerRecord> =
            (0..BLOCK_RECORDS as i64 + 5).map(|i| at(&base, 1_000 + i / 100)).collect();
        records.push(at(&base, 1_000 + BLOCK_SPAN / 1_000_000 + 60));
        records.push(at(&sample_record("b", "e", 1), 1_000));
        let sorted: Vec<&LedgerRecord> = records.iter().collect();
        let blocks = cut(&sorted);
        let sizes: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [BLOCK_RECORDS, 5, 1, 1], "full, the rest, past the span, another tenant");
        for block in &blocks {
            let span = |f: fn(&LedgerRecord) -> i64| {
                block.iter().map(|r| f(r)).max().unwrap() - block.iter().map(|r| f(r)).min().unwrap()
            };
            assert!(span(|r| r.event.timestamp.as_micros()) <= BLOCK_SPAN);
            assert!(span(|r| r.decided_at.as_micros()) <= BLOCK_SPAN);
        }

        let mut late = at(&base, 5_000);
        late.decided_at = Timestamp::from_secs(5_000 + BLOCK_SPAN / 1_000_000 + 1);
        let decided_apart = [at(&base, 5_000), late];
        let sorted: Vec<&LedgerRecord> = decided_apart.iter().collect();
        assert_eq!(cut(&sorted).len(), 2, "decisions further apart than the span");
    }

    #[test]
    fn a_key_is_found_whatever_made_it_and_whenever_it_was_decided() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(keys::SCHEMA).unwrap();
        let at = Timestamp::from_secs(1_800_000_000);
        // Generated for an event an hour before its decision, as for a late event.
        let mut late = sample_record("acme", "k", 1);
        late.event.event_id = EventId::generate(at.minus(std::time::Duration::from_secs(3_600)));
        late.event.timestamp = at.minus(std::time::Duration::from_secs(3_600));
        late.decided_at = at;
        let chosen = sample_record("acme", "order-17", 2);
        write(&c, vec![&late, &chosen]).unwrap();

        let mut lookup = Lookup::new(&c);
        let acme = TenantId::new("acme").unwrap();
        let neighbour = EventId::new(EventId::generate(late.event.timestamp).as_str()).unwrap();
        assert_eq!(lookup.find(&acme, &neighbour).unwrap(), None);
        assert!(lookup.decoded.is_empty(), "a key the index does not hold reads no body");
        let sent_back = EventId::new(late.event.event_id.as_str()).unwrap();
        assert_eq!(lookup.find(&acme, &sent_back).unwrap(), Some(late.clone()));
        assert_eq!(lookup.find(&acme, &chosen.event.event_id).unwrap(), Some(chosen.clone()));
        assert_eq!(lookup.find(&TenantId::new("beta").unwrap(), &sent_back).unwrap(), None, "another tenant's");
    }

    #[test]
    fn a_body_reads_back_as_its_records_and_a_damaged_one_is_corruption() {
        let records = [sample_record("a", "x", 1), sample_record("a", "y", 2)];
        let encoded = Encoded::of(&records.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(decode(&encoded.body).unwrap(), records);
        assert_eq!((encoded.records, encoded.counted, encoded.credits), (2, 2, 3));
        for damaged in [&encoded.body[..encoded.body.len() - 1], &encoded.body[1..], &[][..]] {
            assert!(matches!(decode(damaged), Err(Error::Corrupt(_))));
        }
    }

    #[test]
    fn bodies_are_compressed_and_uncompressed_ones_of_earlier_versions_still_read() {
        let records: Vec<_> = (0..200).map(|i| sample_record("acme", &format!("order-{i:06}"), 1)).collect();
        let encoded = Encoded::of(&records.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(encoded.body[0], BLOCK_V2);
        let mut plain = vec![BLOCK_V1];
        for r in &records {
            let at = plain.len();
            plain.extend_from_slice(&[0; 4]);
            record_codec::encode(r, &mut plain).unwrap();
            let len = (plain.len() - at - 4) as u32;
            plain[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        assert_eq!(decode(&plain).unwrap(), records, "a body written before compression");
        assert!(encoded.body.len() * 4 < plain.len(), "{} bytes compressed, {} plain", encoded.body.len(), plain.len());
        let mut bomb = vec![BLOCK_V2];
        bomb.extend(zstd::bulk::compress(&vec![0u8; MAX_BLOCK_BYTES + 1], 1).unwrap());
        assert!(matches!(decode(&bomb), Err(Error::Corrupt(_))), "a body claiming too much is corruption");
    }

    /// The block store answers every ledger read as the in-memory store does, whatever
    /// the records (late ones, keys chosen, generated and sent back, duplicates), however
    /// they are batched, and after pruning.
    #[cfg(feature = "memory")]
    mod same_as_memory {
        use proptest::prelude::*;

        use super::*;
        use crate::decision::DenyReason;
        use crate::event::Method;
        use crate::ledger::LedgerCursor;
        use crate::store::MemoryRecords;
        use crate::store::SqliteRecords;
        use crate::store::{RecordStore, UsageLedger};

        const START: i64 = 1_800_000_000;
        const HOUR: i64 = 3_600;
        const TENANTS: [&str; 3] = ["acme", "beta", "gamma"];
        const ENDPOINTS: [&str; 2] = ["/a", "/b"];

        /// How one record is made: its tenant, event time and decision time (seconds
        /// after START), its key (chosen from a small pool, generated, or an earlier
        /// generated one sent back), and its content.
        #[derive(Debug, Clone)]
        struct Spec {
            tenant: usize,
            decided: i64,
            late: i64,
            key: Key,
            endpoint: usize,
            post: bool,
            credits: u64,
            outcome: u8,
        }

        #[derive(Debug, Clone)]
        enum Key {
            Chosen(u8),
            Generated,
            SentBack(usize),
        }

        fn spec() -> impl Strategy<Value = Spec> {
            let key = prop_oneof![
                (0u8..12).prop_map(Key::Chosen),
                Just(Key::Generated),
                (0usize..64).prop_map(Key::SentBack)
            ];
            // Times on a 10-minute grid, so records of different blocks often share one.
            let grid = |n: i64| (0..n).prop_map(|i| i * 600);
            (
                0..TENANTS.len(),
                grid(24),
                prop_oneof![3 => Just(0i64), 1 => grid(12)],
                key,
                0..2usize,
                any::<bool>(),
                0..5u64,
                0..4u8,
            )
                .prop_map(|(tenant, decided, late, key, endpoint, post, credits, outcome)| Spec {
                    tenant,
                    decided,
                    late,
                    key,
                    endpoint,
                    post,
                    credits,
                    outcome,
                })
        }

        fn records(specs: &[Spec]) -> Vec<LedgerRecord> {
            let mut made: Vec<LedgerRecord> = Vec::new();
            for s in specs {
                let tenant = TENANTS[s.tenant];
                let decided = Timestamp::from_secs(START + s.decided);
                let mut r = sample_record(tenant, "k", s.credits);
                r.event.event_id = match &s.key {
                    Key::Chosen(n) => EventId::new(format!("key-{n}")).unwrap(),
                    // As the engine does: from the event's time, which may be long before
                    // its decision.
                    Key::Generated => EventId::generate(Timestamp::from_secs(START + s.decided - s.late)),
                    Key::SentBack(i) => match made.iter().filter(|r| r.event.event_id.generated_ms().is_some()).nth(*i)
                    {
                        Some(earlier) => EventId::new(earlier.event.event_id.as_str()).unwrap(),
                        None => EventId::generate(decided),
                    },
                };
                r.event.timestamp = Timestamp::from_secs(START + s.decided - s.late);
                r.event.endpoint = ENDPOINTS[s.endpoint].to_owned();
                r.event.method = if s.post { Method::Post } else { Method::Get };
                r.event.fingerprint = s.credits;
                r.decided_at = decided;
                r.decision.event_id = r.event.event_id.clone();
                r.decision.allowed = s.outcome != 0;
                r.decision.reason = (s.outcome == 0).then_some(DenyReason::RateLimited);
                r.decision.credits_charged = if s.outcome == 0 { 0 } else { s.credits };
                r.counted = s.outcome >= 2;
                made.push(r);
            }
            made
        }

        /// Every page of `query`, followed to its end with the cursor.
        async fn all_pages(store: &dyn RecordStore, mut query: LedgerQuery) -> Vec<LedgerRecord> {
            let mut all = Vec::new();
            loop {
                let page = store.records(&query).await.unwrap();
                let Some(last) = page.last() else { return all };
                query.before = Some(LedgerCursor::after(last));
                all.extend(page);
            }
        }

        fn query(
            tenant: Option<usize>,
            endpoint: Option<usize>,
            from: Option<i64>,
            to: Option<i64>,
            limit: usize,
        ) -> LedgerQuery {
            LedgerQuery {
                tenant: tenant.map(|t| TenantId::new(TENANTS[t]).unwrap()),
                endpoint: endpoint.map(|e| ENDPOINTS[e].to_owned()),
                from: from.map(|s| Timestamp::from_secs(START + s)),
                to: to.map(|s| Timestamp::from_secs(START + s)),
                limit,
                ..Default::default()
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn reads_answer_as_the_memory_store_does(
                specs in proptest::collection::vec(spec(), 1..120),
                batch in 1usize..40,
                tenant in proptest::option::of(0..TENANTS.len()),
                endpoint in proptest::option::of(0..2usize),
                from in proptest::option::of(-2 * HOUR..4 * HOUR),
                span in proptest::option::of(0..5 * HOUR),
                limit in 1usize..25,
                prune_at in -2 * HOUR..5 * HOUR,
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async {
                    let memory = MemoryRecords::new();
                    let sqlite = SqliteRecords::open_in_memory().unwrap();
                    let records = records(&specs);
                    for chunk in records.chunks(batch) {
                        assert_eq!(sqlite.append(chunk.to_vec()).await.unwrap(), memory.append(chunk.to_vec()).await.unwrap());
                    }
                    let to = from.zip(span).map(|(f, s)| f + s);
                    let q = query(tenant, endpoint, from, to, limit);
                    assert_eq!(all_pages(&sqlite, q.clone()).await, all_pages(&memory, q.clone()).await);
                    for by in [GroupBy::Endpoint, GroupBy::Day, GroupBy::Tenant, GroupBy::Reason] {
                        assert_eq!(sqlite.usage_summary(&q, by, 10).await.unwrap(), memory.usage_summary(&q, by, 10).await.unwrap());
                    }
                    let (f, t) = (Timestamp::from_secs(START + from.unwrap_or(0)), Timestamp::from_secs(START + to.unwrap_or(3 * HOUR)));
                    for (i, name) in TENANTS.iter().enumerate() {
                        let id = TenantId::new(*name).unwrap();
                        let decided = TimeBasis::Decided { events_from: Timestamp::from_secs(START + i as i64 * HOUR - HOUR) };
                        for basis in [TimeBasis::Event, decided] {
                            assert_eq!(sqlite.usage_totals(&id, basis, f, t).await.unwrap(), memory.usage_totals(&id, basis, f, t).await.unwrap());
                        }
                    }
                    for r in &records {
                        let (tenant, id) = (&r.event.tenant_id, &r.event.event_id);
                        assert_eq!(sqlite.record(tenant, id).await.unwrap(), memory.record(tenant, id).await.unwrap());
                    }
                    let cut = Timestamp::from_secs(START + prune_at);
                    assert_eq!(sqlite.prune(cut).await.unwrap(), memory.prune(cut).await.unwrap());
                    let everything = query(None, None, None, None, 50);
                    assert_eq!(all_pages(&sqlite, everything.clone()).await, all_pages(&memory, everything).await);
                    // Sent again (a fresh key is one no store can hold yet, so a copy
                    // is sent back as a caller would).
                    let again: Vec<LedgerRecord> = records.iter().rev().take(5).map(|r| {
                        let mut again = r.clone();
                        again.event.event_id = EventId::new(r.event.event_id.as_str()).unwrap();
                        again
                    }).collect();
                    assert_eq!(sqlite.append(again.clone()).await.unwrap(), memory.append(again).await.unwrap());
                });
            }
        }
    }
}
