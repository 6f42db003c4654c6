//! Tests of the SQLite store as a whole: schema, migrations, the journal, reopening.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::catalog::USER_COLUMNS;
use super::schema::{MIGRATIONS, SCHEMA_V1, SCHEMA_V2, SCHEMA_V3};
use super::sessions::{AUDIT_PAGE, AUDIT_PAGE_BEFORE, REVOKE_REFRESH_TOKENS};
use super::*;
use crate::account::RefreshToken;
use crate::event::EventId;
use crate::ledger::sample_record as ledger_record;
use crate::ledger::{LedgerQuery, TimeBasis, UsageTotals};
use crate::plan::Plan;
use crate::store::{Catalog, Health, Sessions, UsageLedger};
use crate::tenant::TenantId;

/// What SQLite plans for `sql`, one line per step.
pub(super) fn query_plan(sql: &str, args: &[Value]) -> String {
    let mut c = Connection::open_in_memory().unwrap();
    migrate(&mut c).unwrap();
    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(3)).unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join(" | ")
}

/// A database path in the temp dir; the file, its WAL and its journal go when it drops
/// (declared first in a test, it drops after the stores that use it).
struct TempDb(PathBuf);

impl std::ops::Deref for TempDb {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDb {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

fn temp_file(name: &str) -> TempDb {
    let path = std::env::temp_dir().join(format!("metering-core-{}-{name}.db", std::process::id()));
    TempDb(path)
}

/// The ledger journal's files next to the database at `path`.
fn journal_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}-ledger-", path.file_name().unwrap().to_str().unwrap());
    let mut files: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
        .collect();
    files.sort();
    files
}

fn remove(path: &Path) {
    for file in journal_files(path) {
        let _ = std::fs::remove_file(file);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn audit_pages_token_updates_and_user_lists_use_their_indexes() {
    let page = query_plan(AUDIT_PAGE_BEFORE, &[Value::Integer(0), Value::Text("a".into()), Value::Integer(10)]);
    assert_eq!(page, "SEARCH audit USING INDEX audit_time ((at,id)<(?,?))");
    let page = query_plan(AUDIT_PAGE, &[Value::Integer(10)]);
    assert_eq!(page, "SCAN audit USING INDEX audit_time");
    let revoke = query_plan(REVOKE_REFRESH_TOKENS, &[Value::Text("u".into())]);
    assert!(revoke.contains("refresh_tokens_unused (user_id=?)"), "{revoke}");
    let users = query_plan(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 ORDER BY email"),
        &[Value::Text("t".into())],
    );
    assert_eq!(users, "SEARCH users USING INDEX users_tenant (tenant_id=?)");
}

#[tokio::test]
async fn a_version_1_file_is_migrated_keeping_its_data() {
    let path = temp_file("v1");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute("INSERT INTO plans (id, body) VALUES ('free', ?1)", [serde_json::to_string(&Plan::free()).unwrap()])
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(store.plans().await.unwrap(), vec![Plan::free()]);
    let token = RefreshToken {
        id: "r-1".into(),
        user_id: "u-1".into(),
        issued_at: Timestamp::EPOCH,
        expires_at: Timestamp::from_secs(60),
    };
    store.insert_refresh_token(&token).await.unwrap();
    assert_eq!(store.consume_refresh_token("r-1", Timestamp::EPOCH).await.unwrap(), Some(token));
    drop(store);
    let c = Connection::open(&path).unwrap();
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[test]
fn a_newer_schema_is_refused_and_garbage_reported_without_sql() {
    let path = temp_file("newer");
    drop(SqliteRecords::open(&path).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let Err(Error::Corrupt(message)) = SqliteRecords::open(&path) else { panic!("a newer schema was opened") };
    assert!(message.contains("99"), "{message}");

    let path = temp_file("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let message = match SqliteRecords::open(&path) {
        Err(e @ (Error::Corrupt(_) | Error::Unavailable(_))) => e.to_string(),
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("a garbage file was opened"),
    };
    assert!(!message.contains("PRAGMA") && !message.contains("SELECT"), "{message}");
}

#[test]
fn reopening_keeps_the_schema_version() {
    let path = temp_file("version");
    drop(SqliteRecords::open(&path).unwrap());
    drop(SqliteRecords::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!((version, mode.as_str()), (MIGRATIONS.len() as i64, "wal"));
}

async fn ids(store: &SqliteRecords) -> Vec<String> {
    let mut ids: Vec<String> = store
        .records(&LedgerQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event_id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn acknowledged_appends_come_back_from_the_journal_after_a_restart() {
    let path = temp_file("journal-replay");
    {
        let store = SqliteRecords::open(&path).unwrap();
        let appended = store.append(vec![ledger_record("acme", "a", 1), ledger_record("beta", "b", 2)]).await;
        assert_eq!(appended.unwrap(), vec![Appended::Inserted, Appended::Inserted]);
        // Dropped without a read or a flush: the records are only in the journal.
    }
    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(ids(&store).await, ["a", "b"]);
    let again = store.append(vec![ledger_record("acme", "a", 1)]).await.unwrap();
    assert!(matches!(&again[..], [Appended::Duplicate(r)] if r.event.event_id.as_str() == "a"));
}

#[tokio::test]
async fn a_damaged_journal_keeps_every_valid_record_and_its_evidence_until_acknowledged() {
    let path = temp_file("journal-bit-flip");
    {
        let store = SqliteRecords::open(&path).unwrap();
        for id in ["a", "b", "c", "d", "e"] {
            store.append(vec![ledger_record("acme", id, 1)]).await.unwrap();
        }
    }
    let segment =
        journal_files(&path).into_iter().find(|f| f.to_str().unwrap().ends_with(|c: char| c.is_ascii_digit()));
    let segment = segment.expect("a journal segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let first = 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[first + 8 + 5] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(ids(&store).await, ["a", "c", "d", "e"], "every record that verifies");
    let damage = store.damage().await.unwrap();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(!segment.exists());
    let aside: Vec<PathBuf> =
        journal_files(&path).into_iter().filter(|f| f.to_str().unwrap().contains("damaged")).collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes, "the damaged segment is kept as it was found");
    drop(store);

    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(store.damage().await.unwrap().len(), 1, "still reported after a restart");
    assert_eq!(store.acknowledge_damage().await.unwrap(), 1);
    assert!(store.damage().await.unwrap().is_empty());
    assert!(journal_files(&path).iter().any(|f| f.to_str().unwrap().ends_with("-acknowledged")), "the evidence stays");
    assert_eq!(ids(&store).await, ["a", "c", "d", "e"], "nothing stored twice");
}

#[tokio::test]
async fn a_failed_journal_write_refuses_appends_until_a_restart_and_loses_only_itself() {
    let path = temp_file("journal-write-fails");
    {
        let store = SqliteRecords::open(&path).unwrap();
        store.append(vec![ledger_record("acme", "before", 1)]).await.unwrap();
        store.journal.as_ref().unwrap().journal.lock().fail_writes();
        let failed = store.append(vec![ledger_record("acme", "failed", 1)]).await;
        assert!(matches!(failed, Err(Error::Unavailable(_))), "{failed:?}");
        // The failed write could not be zeroed either (the handle cannot write): the
        // segment's tail is unknown, so nothing more is appended to it, not even a
        // duplicate check's answer.
        for key in ["later", "before", "failed"] {
            let refused = store.append(vec![ledger_record("acme", key, 1)]).await;
            assert!(matches!(&refused, Err(Error::Unavailable(m)) if m.contains("restart")), "{key}: {refused:?}");
        }
    }
    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(ids(&store).await, ["before"], "what was acknowledged came back, nothing else");
    let retried = store.append(vec![ledger_record("acme", "failed", 1), ledger_record("acme", "before", 1)]).await;
    assert!(matches!(&retried.unwrap()[..], [Appended::Inserted, Appended::Duplicate(_)]));
}

#[tokio::test]
async fn buffered_appends_are_read_checked_for_duplicates_and_replayed_like_synced_ones() {
    let path = temp_file("journal-buffered");
    {
        let store = SqliteRecords::open(&path).unwrap();
        let first = ledger_record("acme", "b1", 1);
        store.append_buffered(vec![first.clone(), ledger_record("acme", "b2", 1)]).await.unwrap();
        store.append(vec![ledger_record("acme", "s1", 1)]).await.unwrap();
        let again = store.append_buffered(vec![ledger_record("acme", "b1", 5)]).await.unwrap();
        assert_eq!(again, vec![Appended::Duplicate(Box::new(first))]);
        // Dropped without a flush: a crash of the process keeps what was written.
    }
    let store = SqliteRecords::open(&path).unwrap();
    assert_eq!(ids(&store).await, ["b1", "b2", "s1"]);
}

#[tokio::test]
async fn a_fresh_key_is_found_while_it_waits_and_a_given_one_once_indexed() {
    let path = temp_file("journal-fresh-keys");
    let store = SqliteRecords::open(&path).unwrap();
    let event = crate::event::UsageEvent::new("acme", "svc", "/x", "GET");
    let mut record = ledger_record("acme", "placeholder", 1);
    record.event = event.validate_at(Timestamp::from_secs(1_800_000_000), &Default::default()).unwrap();
    assert!(record.event.event_id.is_fresh());
    assert_eq!(
        store.append(vec![record.clone(), record.clone()]).await.unwrap()[1],
        Appended::Duplicate(Box::new(record.clone()))
    );
    assert!(matches!(store.append(vec![record.clone()]).await.unwrap()[..], [Appended::Duplicate(_)]), "waiting");
    store.flush().await.unwrap();
    let mut sent_back = record.clone();
    sent_back.event.event_id = EventId::new(record.event.event_id.as_str()).unwrap();
    let indexed = store.append(vec![sent_back]).await.unwrap();
    assert_eq!(indexed, vec![Appended::Duplicate(Box::new(record))], "a caller sending the key back");
}

#[tokio::test]
async fn reads_index_the_open_segment_without_closing_it_and_replay_repeats_nothing() {
    let path = temp_file("journal-reads");
    {
        let store = SqliteRecords::open(&path).unwrap();
        let files = journal_files(&path).len();
        for i in 0..20 {
            store.append(vec![ledger_record("acme", &format!("r{i:02}"), 1)]).await.unwrap();
            assert_eq!(ids(&store).await.len(), i + 1, "a read sees every acknowledged append");
        }
        assert_eq!(journal_files(&path).len(), files, "reads opened no new segment");
        let again = store.append(vec![ledger_record("acme", "r05", 9)]).await.unwrap();
        assert!(matches!(&again[..], [Appended::Duplicate(r)] if r.event.credits_used == 1), "found indexed");
        store.append(vec![ledger_record("acme", "late", 1)]).await.unwrap();
        // Dropped with 20 indexed frames and 1 waiting one in the open segment.
    }
    let store = SqliteRecords::open(&path).unwrap();
    let all = ids(&store).await;
    assert_eq!(all.len(), 21);
    assert_eq!(all.last().map(String::as_str), Some("r19"));
    assert!(all.contains(&"late".to_owned()));
}

/// An admitted call of `tenant` at `secs` whose key the engine generated.
fn generated_record(tenant: &str, secs: i64) -> LedgerRecord {
    let at = Timestamp::from_secs(secs);
    let mut record = ledger_record(tenant, "placeholder", 1);
    record.event =
        crate::event::UsageEvent::new(tenant, "svc", "/x", "GET").validate_at(at, &Default::default()).unwrap();
    record.decided_at = at;
    record.decision.event_id = record.event.event_id.clone();
    assert!(record.event.event_id.is_fresh());
    record
}

#[tokio::test]
async fn generated_keys_indexed_from_the_open_segment_are_not_stored_twice_by_a_replay() {
    let path = temp_file("journal-generated-replay");
    let written: Vec<LedgerRecord> =
        (0..30).map(|i| generated_record(["acme", "beta"][i % 2], 1_800_000_000 + i as i64)).collect();
    {
        let store = SqliteRecords::open(&path).unwrap();
        store.append(written[..20].to_vec()).await.unwrap();
        store.flush().await.unwrap();
        store.append(written[20..].to_vec()).await.unwrap();
        // Dropped with 20 indexed frames and 10 waiting ones in the open segment.
    }
    let store = SqliteRecords::open(&path).unwrap();
    let mut stored = store.records(&LedgerQuery { limit: 100, ..Default::default() }).await.unwrap();
    stored.sort_by_key(|r| r.event.timestamp);
    assert_eq!(stored, written, "each record once");
    let sent_back: Vec<LedgerRecord> = written
        .iter()
        .map(|r| {
            let mut again = r.clone();
            again.event.event_id = EventId::new(r.event.event_id.as_str()).unwrap();
            again
        })
        .collect();
    let outcomes = store.append(sent_back).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Appended::Duplicate(_))), "{outcomes:?}");
    let first = &written[0];
    assert_eq!(store.record(&first.event.tenant_id, &first.event.event_id).await.unwrap().as_ref(), Some(first));
}

#[tokio::test]
async fn a_version_3_ledger_moves_into_blocks_whole() {
    let path = temp_file("v3-ledger");
    let records: Vec<LedgerRecord> = (0..2_500)
        .map(|i| {
            let mut r = ledger_record(["acme", "beta", "gamma"][i % 3], &format!("e-{i:04}"), 1 + (i % 4) as u64);
            r.event.timestamp = Timestamp::from_secs(1_800_000_000 + (i as i64) * 7);
            r.counted = i % 5 != 0;
            r
        })
        .collect();
    {
        let mut c = Connection::open(&path).unwrap();
        for sql in [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3] {
            c.execute_batch(sql).unwrap();
        }
        let tx = c.transaction().unwrap();
        for r in &records {
            let e = &r.event;
            tx.execute(
                "INSERT INTO ledger (tenant_id, event_id, ts, decided_at, counted, credits_charged, service_name, \
                 endpoint, method, credits_used, premium, feature, region, fingerprint, status, decision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    e.tenant_id.as_str(),
                    e.event_id.as_str(),
                    e.timestamp.as_micros(),
                    r.decided_at.as_micros(),
                    r.counted,
                    r.decision.credits_charged as i64,
                    e.service_name,
                    e.endpoint,
                    e.method.as_str(),
                    e.credits_used as i64,
                    e.premium,
                    e.feature,
                    e.region,
                    e.fingerprint as i64,
                    r.status,
                    serde_json::to_string(&r.decision).unwrap(),
                ],
            )
            .unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteRecords::open(&path).unwrap();
    let mut stored = Vec::new();
    let mut query = LedgerQuery { limit: LedgerQuery::MAX_LIMIT, ..Default::default() };
    loop {
        let page = store.records(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.before = Some(crate::ledger::LedgerCursor::after(last));
        stored.extend(page);
    }
    stored.reverse();
    assert_eq!(stored, records, "every record, unchanged, in order");
    let acme = TenantId::new("acme").unwrap();
    let everything = (Timestamp::EPOCH, Timestamp::from_secs(2_000_000_000));
    let expected =
        records.iter().filter(|r| r.event.tenant_id == acme && r.counted).fold(UsageTotals::default(), |mut t, r| {
            t.add(r);
            t
        });
    assert_eq!(store.usage_totals(&acme, TimeBasis::Event, everything.0, everything.1).await.unwrap(), expected);
    let again = store.append(vec![records[7].clone()]).await.unwrap();
    assert_eq!(again, vec![Appended::Duplicate(Box::new(records[7].clone()))], "its keys came along");
    let tables: i64 = store
        .read(|c| c.query_row("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'ledger'", [], |r| r.get(0)).map_err(db))
        .await
        .unwrap();
    assert_eq!(tables, 0, "the old table is gone");
}

/// A ledger as version 4 of an earlier build left it: key entries, in `ledger_keys`, only
/// for ids callers chose, and generated ids found by their decision's millisecond.
fn as_left_by_version_4(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "DROP TABLE ledger_ids;
         CREATE TABLE ledger_keys (event_id TEXT NOT NULL, tenant_id TEXT NOT NULL, block INTEGER NOT NULL,
             PRIMARY KEY (event_id, tenant_id)) STRICT, WITHOUT ROWID;
         ALTER TABLE ledger_blocks ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE ledger_blocks ADD COLUMN generated BLOB NOT NULL DEFAULT x'';
         PRAGMA user_version = 4;",
    )
    .unwrap();
}

#[tokio::test]
async fn a_version_4_ledger_gets_a_key_entry_for_every_record() {
    let path = temp_file("v4-keys");
    let records: Vec<LedgerRecord> =
        (0..700).map(|i| generated_record(["acme", "beta"][i % 2], 1_800_000_000 + i as i64)).collect();
    {
        let store = SqliteRecords::open(&path).unwrap();
        store.append(records.clone()).await.unwrap();
        store.flush().await.unwrap();
    }
    as_left_by_version_4(&path);
    let store = SqliteRecords::open(&path).unwrap();
    for r in &records {
        let sent_back = EventId::new(r.event.event_id.as_str()).unwrap();
        assert_eq!(store.record(&r.event.tenant_id, &sent_back).await.unwrap().as_ref(), Some(r));
    }
    let again: Vec<LedgerRecord> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.event.event_id = EventId::new(r.event.event_id.as_str()).unwrap();
            r
        })
        .collect();
    let outcomes = store.append(again).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Appended::Duplicate(_))), "every record is found again");
    let version: i64 = Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn a_key_is_taken_whether_its_record_waits_in_the_journal_or_is_indexed() {
    let path = temp_file("journal-duplicates");
    let store = SqliteRecords::open(&path).unwrap();
    let first = ledger_record("acme", "k", 3);
    let batch = store.append(vec![first.clone(), ledger_record("acme", "k", 9)]).await.unwrap();
    assert_eq!(batch, vec![Appended::Inserted, Appended::Duplicate(Box::new(first.clone()))]);
    let waiting = store.append(vec![ledger_record("acme", "k", 5)]).await.unwrap();
    assert_eq!(waiting, vec![Appended::Duplicate(Box::new(first.clone()))]);
    store.flush().await.unwrap();
    let indexed = store.append(vec![ledger_record("acme", "k", 7), ledger_record("beta", "k", 1)]).await.unwrap();
    assert_eq!(indexed, vec![Appended::Duplicate(Box::new(first)), Appended::Inserted]);
    assert_eq!(store.records(&LedgerQuery::default()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn full_segments_are_indexed_and_deleted_in_the_background() {
    let path = temp_file("journal-segments");
    let store = SqliteRecords::open(&path).unwrap();
    let total = INDEX_SEGMENTS * SEGMENT_RECORDS + 10;
    for chunk in (0..total).collect::<Vec<_>>().chunks(SEGMENT_RECORDS / 4) {
        let records = chunk.iter().map(|i| ledger_record("acme", &format!("e{i:05}"), 1)).collect();
        store.append(records).await.unwrap();
    }
    let share = store.journal.as_ref().unwrap();
    // The indexer takes the sealed segments on its own; only the active one waits.
    for _ in 0..1_000 {
        if share.waiting.load(Ordering::SeqCst) == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(share.waiting.load(Ordering::SeqCst), 10);
    let acme = TenantId::new("acme").unwrap();
    let totals = store.usage_totals(&acme, TimeBasis::Event, Timestamp::EPOCH, Timestamp::from_secs(2_000_000_000));
    assert_eq!(totals.await.unwrap(), UsageTotals { calls: total as u64, credits: total as u64 });
    assert_eq!(share.waiting.load(Ordering::SeqCst), 0);
    // The sealed segments are gone: what remains is the lock, at most one spare
    // (all zeros) and the open segment with its 10 records.
    let written: Vec<_> = journal_files(&path)
        .into_iter()
        .filter(|f| !f.to_str().unwrap().ends_with("lock"))
        .filter(|f| std::fs::read(f).unwrap().iter().any(|&b| b != 0))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
}

#[tokio::test]
async fn a_second_store_on_the_same_file_writes_the_ledger_directly() {
    let path = temp_file("journal-second-store");
    let owner = SqliteRecords::open(&path).unwrap();
    let second = SqliteRecords::open(&path).unwrap();
    assert!(owner.journal.is_some() && second.journal.is_none());
    owner.append(vec![ledger_record("acme", "from-owner", 1)]).await.unwrap();
    second.append(vec![ledger_record("acme", "from-second", 1)]).await.unwrap();
    assert_eq!(ids(&owner).await, ["from-owner", "from-second"]);
    assert_eq!(ids(&second).await, ["from-owner", "from-second"], "the owner's read indexed its journal");
    let taken = second.append(vec![ledger_record("acme", "from-owner", 1)]).await.unwrap();
    assert!(matches!(&taken[..], [Appended::Duplicate(_)]));
}

#[tokio::test]
async fn appends_wait_for_the_indexer_once_the_journal_holds_its_most() {
    let path = temp_file("journal-bound");
    let store = Arc::new(SqliteRecords::open(&path).unwrap());
    let waiting = || store.journal.as_ref().unwrap().waiting.load(Ordering::SeqCst);
    // Holding the writer connection holds the indexer back.
    let writer = store.writer.lock().await;
    let mut n = 0;
    while waiting() < MAX_WAITING {
        let batch = (0..1_000).map(|_| {
            n += 1;
            ledger_record("acme", &format!("e-{n}"), 1)
        });
        store.append_buffered(batch.collect()).await.unwrap();
    }
    let full = waiting();
    let blocked = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.append(vec![ledger_record("acme", "one-more", 1)]).await }
    });
    // Time enough for an append that wrongly went ahead to write its record.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "an append past the bound waits for the indexer");
    assert_eq!(waiting(), full, "and adds nothing to the journal meanwhile");
    drop(writer);
    assert!(matches!(&blocked.await.unwrap().unwrap()[..], [Appended::Inserted]));
    assert!(waiting() < MAX_WAITING, "the indexer caught up first: {}", waiting());
    for key in ["e-1".to_owned(), format!("e-{n}"), "one-more".to_owned()] {
        let again = store.append(vec![ledger_record("acme", &key, 1)]).await.unwrap();
        assert!(matches!(&again[..], [Appended::Duplicate(_)]), "{key}: indexed or waiting, still taken");
    }
    store.flush().await.unwrap();
}

#[tokio::test]
async fn the_owner_indexes_a_quiet_open_segment_for_other_stores() {
    let path = temp_file("journal-idle-index");
    let owner = SqliteRecords::open(&path).unwrap();
    let second = SqliteRecords::open(&path).unwrap();
    owner.append(vec![ledger_record("acme", "quiet", 1)]).await.unwrap();
    // Nothing reads through the owner, so only its indexer thread can move the record
    // into the table; it runs on real time: wait for it, for at most ten of its periods.
    let deadline = std::time::Instant::now() + 10 * IDLE_INDEX_AFTER;
    while ids(&second).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the open segment was never indexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids(&second).await, ["quiet"]);
    assert_eq!(owner.journal.as_ref().unwrap().waiting.load(Ordering::SeqCst), 0);
}

#[test]
fn works_without_a_tokio_runtime() {
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
    let store = SqliteRecords::open_in_memory().unwrap();
    block_on(store.put_plan(&Plan::free())).unwrap();
    assert_eq!(block_on(store.plan(&Plan::free().id)).unwrap(), Some(Plan::free()));
    block_on(store.ping()).unwrap();
}

#[tokio::test]
async fn api_keys_are_found_by_id_and_listed_across_tenants() {
    let path = temp_file("api-keys");
    let store = SqliteRecords::open(&path).unwrap();
    crate::store::checks::api_keys_by_id_and_across_tenants(&store).await;
}
