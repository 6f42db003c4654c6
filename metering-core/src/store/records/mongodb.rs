//! Durable records in MongoDB: [`MongoRecords`].
//!
//! ```no_run
//! use metering_core::store::{Catalog, MongoOptions, MongoRecords};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let options = MongoOptions::new("mongodb://127.0.0.1:27017/?replicaSet=rs0", "metering");
//! let records = MongoRecords::connect(options).await?;
//! records.put_plan(&metering_core::Plan::free()).await?;
//! assert_eq!(records.plans().await?.len(), 1);
//! # Ok::<_, metering_core::Error>(()) }).unwrap();
//! ```
//!
//! # Layout
//!
//! One collection per kind of record: `plans`, `tenants`, `users`, `api_keys`, `grants`,
//! `refresh_tokens`, `audit` and `ledger`. Every document is a serde struct with explicit
//! field names (module `documents`); every index is declared in one place (module
//! `indexes`) and created when the store connects, idempotently.
//!
//! A ledger document is compact: its `_id` is `{t: tenant, e: event id}`, so the unique
//! key of the ledger is `_id` itself and costs no second unique index; an event id that is
//! a UUID in its canonical lower-case text is kept as 16 bytes (BSON binary subtype 4),
//! any other as a string; times are int64 microseconds, and the event time is also kept
//! as a BSON date (`x`) for the TTL index that expires raw records after
//! [`MongoOptions::ledger_retention`]. Field names are one or two letters.
//!
//! Listings run newest first by `(event time, event id, tenant)`. Among records of the
//! same microsecond, ids kept as UUIDs come before ids kept as strings (BSON orders binary
//! data after strings), and within each kind the order is the ids' text order; paging
//! with a cursor follows exactly that order, so pages join up, once each.
//!
//! # Atomicity
//!
//! Single-document writes are atomic in MongoDB, and most roles need no more: an insert
//! refused by a unique index is [`Error::AlreadyExists`], a refresh token is used up by
//! one `findAndModify`, a key revoked by one conditional update. Writes spanning documents
//! ([`Catalog::insert_account`], [`Audited::apply_audited`],
//! [`Sessions::revoke_refresh_tokens`]) run in a multi-document transaction (which needs a
//! replica set or a sharded cluster), retried whole on a transient transaction error.
//!
//! # Durability and time
//!
//! Every write waits for [`MongoOptions::write_concern`]; every operation, connecting
//! included, is bounded by [`MongoOptions::timeout`], after which it fails with
//! [`Error::Unavailable`] (so does an unreachable server).
//!
//! [`Catalog::insert_account`]: crate::store::Catalog::insert_account
//! [`Audited::apply_audited`]: crate::store::Audited::apply_audited
//! [`Sessions::revoke_refresh_tokens`]: crate::store::Sessions::revoke_refresh_tokens

mod audited;
mod catalog;
mod documents;
mod health;
mod indexes;
mod sessions;
mod usage_ledger;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, DatabaseOptions, TransactionOptions, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database};

use serde::de::DeserializeOwned;

use crate::error::Error;

/// The collections, by name.
pub(crate) mod names {
    /// Plans.
    pub(crate) const PLANS: &str = "plans";
    /// Tenants.
    pub(crate) const TENANTS: &str = "tenants";
    /// Users.
    pub(crate) const USERS: &str = "users";
    /// API keys.
    pub(crate) const API_KEYS: &str = "api_keys";
    /// Credit grants.
    pub(crate) const GRANTS: &str = "grants";
    /// Refresh tokens (ids only).
    pub(crate) const REFRESH_TOKENS: &str = "refresh_tokens";
    /// The audit log.
    pub(crate) const AUDIT: &str = "audit";
    /// The usage ledger.
    pub(crate) const LEDGER: &str = "ledger";
}

/// How many nodes must have a write before MongoDB acknowledges it.
///
/// Parsed from text by [`FromStr`]: `majority`, or a number of nodes (`1`, `2`, ...),
/// optionally followed by `,j=false` (or `,j=true`, the default) for whether the write
/// must be in the journal too: `majority`, `majority,j=false`, `1`, `2,j=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MongoWriteConcern {
    /// A majority of the replica set's voting members (`w: "majority"`).
    Majority {
        /// Whether the write must be in the journal (`j`).
        journal: bool,
    },
    /// This many members (`w: n`, at least 1).
    Nodes {
        /// How many members.
        w: u32,
        /// Whether the write must be in the journal (`j`).
        journal: bool,
    },
}

impl Default for MongoWriteConcern {
    fn default() -> Self {
        MongoWriteConcern::Majority { journal: true }
    }
}

/// A write concern that could not be parsed (see [`MongoWriteConcern`] for the syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MongoDB write concern `{0}`: expected `majority` or a number of nodes from 1, optionally with `,j=false`"
)]
pub struct InvalidWriteConcern(String);

impl FromStr for MongoWriteConcern {
    type Err = InvalidWriteConcern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidWriteConcern(s.to_owned());
        let (w, journal) = match s.trim().split_once(',') {
            None => (s.trim(), true),
            Some((w, j)) => match j.trim() {
                "j=true" => (w.trim(), true),
                "j=false" => (w.trim(), false),
                _ => return Err(invalid()),
            },
        };
        if w == "majority" {
            return Ok(MongoWriteConcern::Majority { journal });
        }
        match w.parse::<u32>() {
            Ok(n) if n >= 1 && w.bytes().all(|b| b.is_ascii_digit()) => Ok(MongoWriteConcern::Nodes { w: n, journal }),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for MongoWriteConcern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, journal) = match self {
            MongoWriteConcern::Majority { journal } => ("majority".to_owned(), *journal),
            MongoWriteConcern::Nodes { w, journal } => (w.to_string(), *journal),
        };
        if journal { write!(f, "{w}") } else { write!(f, "{w},j=false") }
    }
}

impl MongoWriteConcern {
    /// The driver's form.
    fn to_driver(self) -> WriteConcern {
        let (w, journal) = match self {
            MongoWriteConcern::Majority { journal } => (Acknowledgment::Majority, journal),
            MongoWriteConcern::Nodes { w, journal } => (Acknowledgment::Nodes(w), journal),
        };
        WriteConcern::builder().w(w).journal(journal).build()
    }
}

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoOptions {
    /// The connection string (`mongodb://...` or `mongodb+srv://...`).
    pub uri: String,
    /// The database that holds the collections.
    pub database: String,
    /// What a write waits for before it is acknowledged (default: a majority, journaled).
    pub write_concern: MongoWriteConcern,
    /// The bound on every operation, connecting included (default: 2 seconds).
    pub timeout: Duration,
    /// How long raw ledger records are kept, by their event time (a TTL index); `None`
    /// (the default) keeps them until [`prune`](crate::store::UsageLedger::prune).
    pub ledger_retention: Option<Duration>,
}

impl MongoOptions {
    /// Options for `uri` and `database`, with the defaults: write concern majority with
    /// the journal, a 2-second timeout, no ledger retention.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        MongoOptions {
            uri: uri.into(),
            database: database.into(),
            write_concern: MongoWriteConcern::default(),
            timeout: Duration::from_secs(2),
            ledger_retention: None,
        }
    }
}

impl fmt::Debug for MongoOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoOptions")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .field("write_concern", &self.write_concern)
            .field("timeout", &self.timeout)
            .field("ledger_retention", &self.ledger_retention)
            .finish()
    }
}

/// The size of the ledger collection, from MongoDB's `collStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Ledger records stored.
    pub records: u64,
    /// Their uncompressed BSON size, in bytes (`size`).
    pub data_bytes: u64,
    /// The bytes the collection takes on disk, compressed (`storageSize`).
    pub storage_bytes: u64,
    /// The bytes its indexes take (`totalIndexSize`).
    pub index_bytes: u64,
    /// How many indexes it has (`nindexes`).
    pub indexes: u64,
}

/// Durable records in a MongoDB database: every role of
/// [`RecordStore`](crate::store::RecordStore), over one pooled client.
///
/// Cloning is cheap and shares the client.
#[derive(Clone)]
pub struct MongoRecords {
    client: Client,
    db: Database,
    write_concern: WriteConcern,
    timeout: Duration,
}

impl fmt::Debug for MongoRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoRecords").field("database", &self.db.name()).field("timeout", &self.timeout).finish()
    }
}

impl MongoRecords {
    /// Connects (one pooled client), checks that the server answers and creates every
    /// index that is missing; [`Error::Unavailable`] if the server cannot be reached in
    /// [`MongoOptions::timeout`] or refuses.
    pub async fn connect(options: MongoOptions) -> Result<Self, Error> {
        let timeout = options.timeout;
        let mut client_options =
            bounded(timeout, "parsing the connection string", async { ClientOptions::parse(&options.uri).await })
                .await?;
        client_options.server_selection_timeout = Some(timeout);
        client_options.connect_timeout = Some(timeout);
        client_options.app_name.get_or_insert_with(|| "metering".to_owned());
        let client = Client::with_options(client_options).map_err(|e| driver_error("connecting", e))?;
        let write_concern = options.write_concern.to_driver();
        let db = client.database_with_options(
            &options.database,
            DatabaseOptions::builder().write_concern(write_concern.clone()).build(),
        );
        let records = MongoRecords { client, db, write_concern, timeout };
        records.command("ping", doc! { "ping": 1 }).await?;
        indexes::ensure(&records, options.ledger_retention).await?;
        Ok(records)
    }

    /// Drops the whole database, every collection and index (for tests).
    pub async fn drop_database(&self) -> Result<(), Error> {
        self.run("dropping the database", self.db.drop()).await
    }

    /// The size of the ledger collection and its indexes, from `collStats`, so that a
    /// benchmark can print the bytes a record costs.
    pub async fn storage_stats(&self) -> Result<StorageStats, Error> {
        let stats = self.command("collStats", doc! { "collStats": names::LEDGER }).await?;
        let number = |field: &str| -> Result<u64, Error> {
            match stats.get(field) {
                None => Ok(0),
                Some(Bson::Int32(n)) => u64::try_from(*n).map_err(|_| bad_stat(field)),
                Some(Bson::Int64(n)) => u64::try_from(*n).map_err(|_| bad_stat(field)),
                Some(Bson::Double(n)) if n.is_finite() && *n >= 0.0 => Ok(n.round() as u64),
                Some(_) => Err(bad_stat(field)),
            }
        };
        Ok(StorageStats {
            records: number("count")?,
            data_bytes: number("size")?,
            storage_bytes: number("storageSize")?,
            index_bytes: number("totalIndexSize")?,
            indexes: number("nindexes")?,
        })
    }

    /// A collection of typed documents.
    fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }

    /// Runs a database command, bounded by the timeout.
    async fn command(&self, what: &str, command: Document) -> Result<Document, Error> {
        self.run(what, self.db.run_command(command)).await
    }

    /// Runs one driver operation, bounded by the timeout, its error mapped.
    async fn run<T>(
        &self,
        what: &str,
        operation: impl IntoFuture<Output = Result<T, mongodb::error::Error>>,
    ) -> Result<T, Error> {
        bounded(self.timeout, what, operation).await
    }

    /// The documents of `collection` matching `filter`, in `sort` order, at most `limit`
    /// (`None`: all), each decoded as `T`.
    async fn find_many<T: DeserializeOwned>(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<T>, Error> {
        let coll = self.collection::<Document>(collection);
        let docs: Vec<Document> = self
            .run("reading", async {
                let cursor = coll.find(filter).sort(sort).limit(limit.unwrap_or(0)).await?;
                cursor.try_collect().await
            })
            .await?;
        docs.into_iter().map(|doc| documents::decode(doc, collection)).collect()
    }

    /// The document of `collection` matching `filter`, decoded as `T`.
    async fn find_one<T: DeserializeOwned>(&self, collection: &str, filter: Document) -> Result<Option<T>, Error> {
        let coll = self.collection::<Document>(collection);
        let doc = self.run("reading", coll.find_one(filter)).await?;
        doc.map(|doc| documents::decode(doc, collection)).transpose()
    }

    /// The documents an aggregation pipeline on `collection` gives.
    async fn aggregate(&self, collection: &str, pipeline: Vec<Document>) -> Result<Vec<Document>, Error> {
        let coll = self.collection::<Document>(collection);
        self.run("aggregating", async {
            let cursor = coll.aggregate(pipeline).await?;
            cursor.try_collect().await
        })
        .await
    }

    /// Runs a single-document write, bounded by the timeout; one refused by a unique index
    /// is [`Error::AlreadyExists`] naming `what`.
    async fn write_unique<T>(
        &self,
        operation: impl IntoFuture<Output = Result<T, mongodb::error::Error>>,
        what: impl FnOnce() -> String,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_duplicate_key(&e) => Err(Error::AlreadyExists(what())),
            Ok(Err(e)) => Err(driver_error("writing", e)),
            Err(_) => Err(timed_out("writing", self.timeout)),
        }
    }

    /// Bounds a whole multi-step operation (a transaction and its retries) by the timeout.
    async fn within<T>(&self, what: &str, operation: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, operation).await.map_err(|_| timed_out(what, self.timeout))?
    }

    /// A session for a transaction that writes with the configured write concern.
    async fn session(&self) -> Result<ClientSession, mongodb::error::Error> {
        let transaction = TransactionOptions::builder().write_concern(self.write_concern.clone()).build();
        self.client.start_session().default_transaction_options(transaction).await
    }

    /// Ends a transaction `body` ran in: commits it when the body succeeded (and its
    /// domain answer is a success), aborts it otherwise. `Ok(None)`: a transient
    /// transaction error, run the whole transaction again.
    async fn finish<T>(
        session: &mut ClientSession,
        body: Result<Result<T, Error>, mongodb::error::Error>,
    ) -> Result<Option<T>, Error> {
        match body {
            Ok(Ok(value)) => loop {
                match session.commit_transaction().await {
                    Ok(()) => return Ok(Some(value)),
                    Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
                    Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => return Ok(None),
                    Err(e) => return Err(driver_error("committing a transaction", e)),
                }
            },
            Ok(Err(refused)) => {
                // An abort that fails leaves the transaction to the server's timeout; the
                // answer stays the refusal.
                let _ = session.abort_transaction().await;
                Err(refused)
            }
            Err(e) => {
                let _ = session.abort_transaction().await;
                if e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
                    Ok(None)
                } else if is_duplicate_key(&e) {
                    Err(Error::AlreadyExists(duplicate_key_name(&e)))
                } else {
                    Err(driver_error("a transaction", e))
                }
            }
        }
    }
}

/// Runs `operation` for at most `timeout`, its errors mapped.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    operation: impl IntoFuture<Output = Result<T, mongodb::error::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result.map_err(|e| driver_error(what, e)),
        Err(_) => Err(timed_out(what, timeout)),
    }
}

fn timed_out(what: &str, timeout: Duration) -> Error {
    Error::Unavailable(format!("MongoDB did not answer within {} ms ({what})", timeout.as_millis()))
}

fn bad_stat(field: &str) -> Error {
    Error::Corrupt(format!("MongoDB collStats of `{}` has an unreadable `{field}`", names::LEDGER))
}

/// A driver error as a backend-neutral one. Messages name MongoDB and what was being
/// done, never the connection string (which can hold a password).
fn driver_error(what: &str, e: mongodb::error::Error) -> Error {
    let reason = match &*e.kind {
        ErrorKind::ServerSelection { .. } => "no server could be reached".to_owned(),
        ErrorKind::Io(io) => format!("connection failed: {}", io.kind()),
        ErrorKind::ConnectionPoolCleared { .. } => "the connection pool was cleared".to_owned(),
        ErrorKind::Authentication { .. } => "authentication failed".to_owned(),
        ErrorKind::DnsResolve { .. } => "the host name could not be resolved".to_owned(),
        ErrorKind::InvalidArgument { .. } => "invalid connection string or argument".to_owned(),
        ErrorKind::Command(c) => format!("command failed: {} ({})", c.code_name, c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("write failed: code {}", w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => format!("write concern failed: code {}", w.code),
        ErrorKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (_, Some(w)) => format!("write concern failed: code {}", w.code),
            (Some(errors), None) => {
                format!("write failed: code {}", errors.first().map_or(0, |w| w.code))
            }
            (None, None) => "write failed".to_owned(),
        },
        ErrorKind::BsonDeserialization(_) | ErrorKind::BsonSerialization(_) => {
            return Error::Corrupt(format!("MongoDB: a document could not be converted ({what})"));
        }
        ErrorKind::SessionsNotSupported | ErrorKind::Transaction { .. } => {
            "transactions are not available (a replica set is needed)".to_owned()
        }
        _ => "the operation failed".to_owned(),
    };
    Error::Unavailable(format!("MongoDB: {reason} ({what})"))
}

/// The duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Whether a write was refused by a unique index.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => {
            m.write_errors.as_ref().is_some_and(|errors| errors.iter().any(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// What a duplicate-key error names: the index that refused the write, for
/// [`Error::AlreadyExists`] (the key's value is not repeated).
fn duplicate_key_name(e: &mongodb::error::Error) -> String {
    let message = match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.message.as_str(),
        ErrorKind::Command(c) => c.message.as_str(),
        _ => "",
    };
    let index = message.split("index: ").nth(1).and_then(|rest| rest.split_whitespace().next());
    match index {
        Some(index) => format!("a record with the same key ({index})"),
        None => "a record with the same key".to_owned(),
    }
}

/// A limit for a find or a pipeline: MongoDB reads 0 as "no limit", so callers return
/// early on 0; anything beyond `cap` is `cap`.
fn limit_of(limit: usize, cap: usize) -> i64 {
    i64::try_from(limit.min(cap)).unwrap_or(i64::MAX)
}
