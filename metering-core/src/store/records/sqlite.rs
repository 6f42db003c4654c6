//! Durable records in one SQLite file: [`SqliteRecords`].
//!
//! ```
//! use metering_core::store::Catalog;
//! use metering_core::store::SqliteRecords;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let path = std::env::temp_dir().join(format!("metering-doc-{}.db", std::process::id()));
//! let records = SqliteRecords::open(&path)?;
//! records.put_plan(&metering_core::Plan::free()).await?;
//! assert_eq!(records.plans().await?.len(), 1);
//! # drop(records);
//! # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
//! # Ok::<_, metering_core::Error>(()) }).unwrap();
//! ```
//!
//! # Layout
//!
//! One table per kind of record: `plans`, `tenants`, `users`, `api_keys`, `grants`,
//! `refresh_tokens` and `audit`, and the ledger's `ledger_blocks` and `ledger_ids`, all
//! `STRICT`. Columns that queries select, order or sum on are real columns (timestamps as
//! INTEGER microseconds since the epoch); nested values (a plan, a tenant's overrides, an
//! audited value) are JSON text.
//!
//! The ledger keeps its records in blocks: a row of `ledger_blocks` holds up to 1,024
//! records of one tenant in event-time order, encoded in one BLOB, beside the range of
//! their event times and of their decision times (neither wider than an hour) and their
//! counted calls and credits. Indexing a batch writes a block per tenant in it, so a
//! record costs its bytes, not a row with an entry in each of several indexes. Indexes
//! `(tenant_id, max_ts, min_ts)`, `(max_ts, min_ts)` and `(tenant_id, min_decided,
//! max_decided)` make every listing, total, summary and prune one index range; a total
//! takes the sums of the blocks wholly inside its range without decoding them.
//! `ledger_ids (key, block)` points every record's `(tenant, event_id)`, by a 64-bit key
//! computed from them alone, at its block (see its `keys` module). New files use 64 KiB pages, which suit the
//! large rows.
//!
//! The other tables' indexes: `users (tenant_id, email)` lists a tenant's users in order;
//! `refresh_tokens (user_id) WHERE unused` revokes a user's tokens; `audit (at, id)` pages
//! the audit log newest first. A refresh token is used up by one conditional `UPDATE ...
//! RETURNING`, so two concurrent uses cannot both succeed.
//!
//! Each role is implemented in a module of its own: `catalog`, `usage_ledger`,
//! `sessions`, `audited` and `health`. An audited change and its audit entry are one
//! `IMMEDIATE` transaction on the writer connection.
//!
//! The schema version is SQLite's `user_version`; opening a file applies the migrations
//! it lacks, in one transaction, and refuses a file written by a newer schema.
//!
//! # Threads
//!
//! SQLite calls block, so none runs on the async executor: each one takes a connection
//! (waiting asynchronously for it) and runs on tokio's blocking pool. There is one writer
//! connection, so writes are serialized, and a few reader connections that WAL lets read
//! while the writer writes. At most one blocking thread per connection is busy at a time.
//! Without a tokio runtime the calls run on the caller's thread.
//!
//! # Durability: the ledger journal
//!
//! The file is in WAL mode with `synchronous = FULL`: a transaction is fsynced before it
//! returns, so what it wrote survives a process crash, an operating system crash and a
//! power loss (as far as the disk honours fsync).
//!
//! Ledger appends take a shorter way. An [`append`][append] (one group commit) writes its
//! records to the end of a journal segment next to the database file
//! (`<file>-ledger-<n>`) and `fdatasync`s it, one write and one sync for the whole batch,
//! then returns ([`append_buffered`][append_buffered], for records nobody waits on, skips
//! the sync). A SQLite transaction per group commit would instead write and sync a page
//! per tenant in it. Once four segments of 2,048 records are full, a background thread
//! moves them into ledger blocks, in one transaction, and deletes them; when no segment
//! fills for a second, the same thread indexes whatever waits, the open segment's records
//! too. Records that wait are kept in memory too (at most 16,384; appends beyond that wait
//! for the indexer):
//!
//! - duplicate keys are found among them as well as in the table;
//! - every ledger read, [`prune`][prune] and [`flush`][flush] first indexes what waits,
//!   so it sees every acknowledged append (without closing the segment appends go to, so
//!   frequent reads do not multiply segment files);
//! - opening the file replays the segments a crash left (a torn, unacknowledged last
//!   frame is ignored) before anything else runs.
//!
//! One store owns a file's journal, through a lock file (`<file>-ledger-lock`). Another
//! store opened on the same file, in this process or another (an operator's command
//! next to the server), writes blocks directly and sees the owner's appends once
//! the owner indexes them: when a segment fills, within about a second when none does, on
//! any of its ledger reads, or on [`flush`][flush], which the server runs at shutdown.
//!
//! [append]: crate::store::UsageLedger::append
//! [append_buffered]: crate::store::UsageLedger::append_buffered
//! [prune]: crate::store::UsageLedger::prune
//! [flush]: crate::store::UsageLedger::flush
//!
//! A commit that takes the WAL past 64 MiB also checkpoints it into the database file, so
//! now and then one indexing pass takes noticeably longer; appends do not wait for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, Row, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::clock::Timestamp;
use crate::error::{Error, FieldError, FieldProblem};
use crate::ledger::{Appended, LedgerRecord};

mod audited;
mod blocks;
mod catalog;
mod health;
mod journal;
mod keys;
mod record_codec;
mod schema;
mod sessions;
#[cfg(test)]
mod tests;
mod usage_ledger;

use schema::migrate;

use journal::{Journal, SEGMENT_RECORDS};

/// Records that may wait in the journal; an append beyond this first waits for the
/// indexer, so memory stays bounded when SQLite falls behind.
const MAX_WAITING: usize = 8 * SEGMENT_RECORDS;

/// Sealed segments the indexer waits for before it moves them into ledger blocks, in one
/// transaction: a tenant's block, and the index entries it rewrites, then cover four
/// segments' worth of its records instead of one.
const INDEX_SEGMENTS: usize = 4;

/// How long records may wait in the open segment when no segment fills: then the indexer
/// moves them into ledger blocks, so another store on the file (which reads only the
/// blocks) sees them, and a restart has little to replay.
const IDLE_INDEX_AFTER: Duration = Duration::from_secs(1);

/// Reader connections of a file-backed store.
const READERS: usize = 4;

/// The writer's page cache, in KiB: it holds the index pages a batch touches (the tail
/// of each tenant's index ranges), so a large batch neither reads nor spills them.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL bytes after which a commit checkpoints them into the database file. Between two
/// checkpoints a page rewritten by many commits (the tail of an index range) is copied
/// back once, not once per commit.
const CHECKPOINT_BYTES: i64 = 64 * 1024 * 1024;

/// The page size of a new database file. Large pages suit the ledger, written as large
/// blocks: a block takes a few pages instead of dozens, and SQLite writes (and
/// checksums) the WAL one page at a time. A file made with other pages keeps them.
const PAGE_SIZE: i64 = 64 * 1024;

/// The page cache of each reader connection, in KiB.
const READER_CACHE_KIB: i64 = 8 * 1024;

/// The size (bytes) the WAL file is truncated back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 128 * 1024 * 1024;

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per transaction by
/// [`prune_refresh_tokens`](crate::store::Sessions::prune_refresh_tokens), so other writes
/// interleave.
const PRUNE_CHUNK: usize = 10_000;

type Shared = Arc<Mutex<Connection>>;

/// Durable records in one SQLite file (or in memory), the embedded default backend.
///
/// Cheap to share behind an `Arc`; see the [module docs](self) for the schema, the
/// threads and the durability it gives.
pub struct SqliteRecords {
    writer: Shared,
    /// Empty for an in-memory database, whose only connection is the writer.
    readers: Box<[Shared]>,
    next_reader: AtomicUsize,
    /// The ledger journal appends go through; `None` in memory, or when another store
    /// owns this file's journal (appends then insert into the ledger directly).
    journal: Option<Arc<JournalShare>>,
    /// The thread that indexes sealed journal segments, with the journal.
    indexer: Option<Indexer>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
}

/// A journal shared between appends and its indexer thread.
struct JournalShare {
    journal: parking_lot::Mutex<Journal>,
    /// Records written and not yet indexed, readable without the lock.
    waiting: AtomicUsize,
    /// Sealed segments waiting for the indexer, readable without the lock.
    sealed: AtomicUsize,
}

/// The indexer thread, without a tokio runtime: woken at each sealed segment, it makes
/// the next spare, and once [`INDEX_SEGMENTS`] segments are sealed it moves them into
/// ledger blocks (appends wait for it only when [`MAX_WAITING`] records wait); after
/// [`IDLE_INDEX_AFTER`] without a sealed segment it moves whatever waits.
struct Indexer {
    wake: mpsc::SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    fn spawn(writer: Shared, share: Arc<JournalShare>) -> Result<Self, Error> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("ledger-indexer".into())
            .spawn(move || {
                loop {
                    let everything = match woken.recv_timeout(IDLE_INDEX_AFTER) {
                        Ok(()) => false,
                        Err(RecvTimeoutError::Timeout) if share.waiting.load(Ordering::SeqCst) > 0 => true,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    if everything || share.sealed.load(Ordering::SeqCst) >= INDEX_SEGMENTS {
                        let indexed = index_sealed(&mut writer.blocking_lock(), &share, everything);
                        if let Err(e) = indexed {
                            tracing::error!(error = %e, "ledger journal: indexing failed; its records wait in the journal");
                        }
                    }
                    prepare_spare(&share);
                }
            })
            .map_err(|e| Error::Unavailable(format!("cannot start the ledger indexer: {e}")))?;
        Ok(Indexer { wake, thread: Some(thread) })
    }

    /// Asks for a pass; a pass already asked for covers this one.
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

impl Drop for SqliteRecords {
    /// Lets the indexer finish its pass, so the journal is free for the next store that
    /// opens the file.
    fn drop(&mut self) {
        if let Some(mut indexer) = self.indexer.take() {
            let thread = indexer.thread.take();
            drop(indexer);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }
}

impl JournalShare {
    fn publish_counts(&self, journal: &Journal) {
        self.waiting.store(journal.waiting(), Ordering::SeqCst);
        self.sealed.store(journal.sealed_count(), Ordering::SeqCst);
    }
}

impl SqliteRecords {
    /// Whether this store owns the file's ledger journal: `false` when another store,
    /// in this process or another, opened the file first and still has it open.
    pub fn owns_journal(&self) -> bool {
        self.journal.is_some() || self.path.is_none()
    }

    /// Opens (creating it if needed) the database file at `path`, brings its schema up to
    /// date, and opens the connections.
    ///
    /// Appends are fsynced before they return, so what they acknowledge survives a power
    /// loss (see [Durability](self#durability)). It blocks for as long as SQLite takes to
    /// open: call it before serving, or from `spawn_blocking`. The parent directory must
    /// exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let mut writer = Connection::open(path).map_err(db)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        // Takes effect only on a new, empty file; an existing one keeps its pages.
        writer.pragma_update(None, "page_size", PAGE_SIZE).map_err(db)?;
        let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable("the database file cannot be put in WAL mode".into()));
        }
        writer.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(db)?;
        let page_size: i64 = writer.pragma_query_value(None, "page_size", |row| row.get(0)).map_err(db)?;
        writer.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_BYTES / page_size.max(512)).map_err(db)?;
        writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(db)?;
        migrate(&mut writer)?;
        let journal = match journal::take_ownership(path)? {
            Some(owner) => {
                let leftovers = Journal::leftovers(path)?;
                if !leftovers.records.is_empty() {
                    insert_records(&mut writer, &leftovers.records)?;
                    tracing::info!(records = leftovers.records.len(), "ledger journal replayed");
                }
                for file in &leftovers.files {
                    journal::remove_segment(file);
                }
                let mut journal = Journal::new(path, owner, &leftovers, open_reader(path)?)?;
                if let Some((no, segment)) = journal.spare_wanted() {
                    let spare = journal::make_segment(no, &segment, journal.dir());
                    journal.install_spare(spare);
                }
                Some(Arc::new(JournalShare {
                    journal: parking_lot::Mutex::new(journal),
                    waiting: AtomicUsize::new(0),
                    sealed: AtomicUsize::new(0),
                }))
            }
            None => None,
        };
        let readers =
            (0..READERS).map(|_| Ok(Arc::new(Mutex::new(open_reader(path)?)))).collect::<Result<Vec<_>, Error>>()?;
        let writer = Arc::new(Mutex::new(writer));
        let indexer =
            journal.as_ref().map(|share| Indexer::spawn(Arc::clone(&writer), Arc::clone(share))).transpose()?;
        Ok(SqliteRecords {
            writer,
            readers: readers.into_boxed_slice(),
            next_reader: AtomicUsize::new(0),
            journal,
            indexer,
            path: Some(path.to_owned()),
        })
    }

    /// A private database in memory, on one connection (for tests; nothing survives it).
    pub fn open_in_memory() -> Result<Self, Error> {
        let mut conn = Connection::open_in_memory().map_err(db)?;
        migrate(&mut conn)?;
        Ok(SqliteRecords {
            writer: Arc::new(Mutex::new(conn)),
            readers: Box::new([]),
            next_reader: AtomicUsize::new(0),
            journal: None,
            indexer: None,
            path: None,
        })
    }

    /// Runs `f` on the writer connection.
    async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        run(Arc::clone(&self.writer).lock_owned().await, f).await
    }

    /// Runs `f` on a reader connection: an idle one if there is one, else the next in turn.
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.write(f).await;
        }
        let idle = self.readers.iter().find_map(|r| Arc::clone(r).try_lock_owned().ok());
        let guard = match idle {
            Some(guard) => guard,
            None => {
                let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                Arc::clone(&self.readers[i]).lock_owned().await
            }
        };
        run(guard, f).await
    }

    /// Runs `delete` (parameters: an instant, then a row limit) until it deletes fewer than
    /// [`PRUNE_CHUNK`] rows, one transaction per chunk so a large prune never holds the
    /// writer for long; returns how many rows went.
    async fn delete_in_chunks(&self, delete: &'static str, at: Timestamp) -> Result<u64, Error> {
        let mut removed = 0;
        loop {
            let n = self
                .write(move |c| {
                    c.prepare_cached(delete)
                        .and_then(|mut s| s.execute(params![at.as_micros(), limit(PRUNE_CHUNK)]))
                        .map_err(db)
                })
                .await?;
            removed += n as u64;
            if n < PRUNE_CHUNK {
                return Ok(removed);
            }
        }
    }

    /// Appends through the journal, synced or not (seals a full segment and wakes the
    /// indexer), or straight into ledger blocks when this store does not own the journal.
    async fn append_records(&self, records: Vec<LedgerRecord>, sync: bool) -> Result<Vec<Appended>, Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let Some(share) = &self.journal else {
            return self.write(move |c| insert_records(c, &records)).await;
        };
        if share.waiting.load(Ordering::SeqCst) >= MAX_WAITING {
            self.index_journal(false).await?;
        }
        let j = Arc::clone(share);
        let (outcomes, sealed) = blocking(move || {
            let mut journal = j.journal.lock();
            let outcomes = journal.append(records, sync)?;
            let full = journal.active_full();
            if full {
                journal.seal();
            }
            j.publish_counts(&journal);
            Ok((outcomes, full))
        })
        .await?;
        if let Some(indexer) = self.indexer.as_ref().filter(|_| sealed) {
            indexer.wake();
        }
        Ok(outcomes)
    }

    /// Moves what waits in the journal into ledger blocks; with `everything`, the
    /// records of the segment appends go to as well (it stays open to them), so a read
    /// that follows sees every acknowledged append.
    async fn index_journal(&self, everything: bool) -> Result<(), Error> {
        let Some(share) = &self.journal else { return Ok(()) };
        if share.waiting.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let s = Arc::clone(share);
        self.write(move |c| index_sealed(c, &s, everything)).await
    }
}

/// A read-only connection to the database file at `path`.
fn open_reader(path: &Path) -> Result<Connection, Error> {
    let reader = Connection::open(path).map_err(db)?;
    reader.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    reader.pragma_update(None, "query_only", true).map_err(db)?;
    reader.pragma_update(None, "cache_size", -READER_CACHE_KIB).map_err(db)?;
    Ok(reader)
}

/// Makes the journal's next segment ahead of time, if it has none, without holding it
/// while the file is filled.
fn prepare_spare(share: &JournalShare) {
    let wanted = {
        let mut journal = share.journal.lock();
        journal.spare_wanted().map(|(no, path)| (no, path, journal.dir().to_owned()))
    };
    if let Some((no, path, dir)) = wanted {
        let spare = journal::make_segment(no, &path, &dir);
        share.journal.lock().install_spare(spare);
    }
}

/// Inserts the sealed segments' records (and, with `with_active`, the active segment's
/// not yet indexed) into ledger blocks in one transaction, then drops them from what
/// the journal waits for.
fn index_sealed(c: &mut Connection, share: &JournalShare, with_active: bool) -> Result<(), Error> {
    let (segments, active) = {
        let journal = share.journal.lock();
        (journal.sealed(), with_active.then(|| journal.active_unindexed()).flatten())
    };
    if segments.is_empty() && active.is_none() {
        return Ok(());
    }
    let active_records = active.as_ref().map_or(&[][..], |(_, _, records)| records);
    insert_records(c, segments.iter().flat_map(|s| s.unindexed()).chain(active_records))?;
    let mut journal = share.journal.lock();
    journal.indexed(segments.len());
    if let Some((no, upto, _)) = &active {
        journal.active_indexed(*no, *upto);
    }
    share.publish_counts(&journal);
    Ok(())
}

/// Stores ledger records in one transaction, in order; a record whose `(tenant,
/// event_id)` is taken comes back as the stored one.
fn insert_records<'a>(
    c: &mut Connection,
    records: impl IntoIterator<Item = &'a LedgerRecord>,
) -> Result<Vec<Appended>, Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let out = blocks::insert(&tx, records)?;
    tx.commit().map_err(db)?;
    Ok(out)
}

/// Runs blocking SQLite work on tokio's blocking pool (inline when there is no runtime).
///
/// The connection's guard moves into the task, so a caller that gives up waiting leaves
/// the work to finish (a transaction commits or rolls back whole) before anyone else
/// gets the connection.
async fn run<T, F>(mut conn: OwnedMutexGuard<Connection>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
{
    blocking(move || f(&mut conn)).await
}

/// Runs blocking work on tokio's blocking pool (inline when there is no runtime).
async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(f).await.map_err(|_| Error::Unavailable("the database task did not finish".into()))?
        }
        Err(_) => f(),
    }
}

/// Maps a SQLite failure to a backend-neutral error with a short message; the details
/// (which may hold SQL) only go to the log.
fn db(e: rusqlite::Error) -> Error {
    let corrupt = match &e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase),
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => true,
        _ => false,
    };
    if corrupt {
        tracing::error!(error = %e, "sqlite: unreadable data");
        return Error::Corrupt("the database holds unreadable data".into());
    }
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "the database is busy",
        Some(ErrorCode::DiskFull) => "the disk is full",
        Some(ErrorCode::SystemIoFailure) => "disk I/O error",
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            "the database file cannot be opened or written"
        }
        _ => "database error",
    };
    tracing::warn!(error = %e, "sqlite: {message}");
    Error::Unavailable(message.into())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("unreadable stored {what}"))
}

fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> Result<T, Error> {
    row.get(i).map_err(db)
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|_| Error::Corrupt(format!("{what} cannot be encoded")))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

/// An unsigned count as SQLite's signed integer.
fn signed(value: u64, field: &'static str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| FieldError::new(field, FieldProblem::TooLarge { max: i64::MAX as u64 }).into())
}

fn unsigned(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupt(what))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs a query (its statement cached) and decodes every row.
fn all<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a query (its statement cached) and decodes its first row, if any.
fn first<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    rows.next().map_err(db)?.map(decode).transpose()
}
