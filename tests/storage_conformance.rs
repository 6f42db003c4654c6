//! One conformance suite for [`RecordStore`], run against every backend.
//!
//! Each check in [`checks`] is an async function over an `Arc<dyn RecordStore>` and knows
//! nothing of the backend behind it; `conformance!` instantiates every check for one
//! backend, and a durable backend also gets the restart check. A new backend (Redis,
//! MongoDB) is one more `conformance!` line at the bottom, and must pass unchanged.
//!
//! `cargo test --test storage_conformance` (add `--features mongodb` for the MongoDB
//! backend, against `METERING_TEST_MONGODB_URI`, by default the stand-in on port 27117)

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use metering::core::store::MemoryRecords;
use metering::core::store::RecordStore;
#[cfg(feature = "sqlite")]
use metering::core::store::SqliteRecords;
#[cfg(feature = "mongodb")]
use metering::core::store::{MongoOptions, MongoRecords};

/// A store under test, and what must outlive it (its files or its database, removed when
/// it is dropped).
struct Subject {
    store: Arc<dyn RecordStore>,
    _files: Option<Box<dyn Send>>,
}

/// A database file in the system temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("metering-conformance-{}-{}.db", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let db = TempDb(std::env::temp_dir().join(name));
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

fn memory() -> Subject {
    Subject { store: Arc::new(MemoryRecords::new()), _files: None }
}

#[cfg(feature = "sqlite")]
fn sqlite_in_memory() -> Subject {
    Subject { store: Arc::new(SqliteRecords::open_in_memory().expect("open sqlite in memory")), _files: None }
}

#[cfg(feature = "sqlite")]
fn sqlite_file() -> Subject {
    let file = TempDb::new();
    Subject { store: Arc::new(SqliteRecords::open(&file.0).expect("open sqlite file")), _files: Some(Box::new(file)) }
}

/// Opens the same file again each time it is called.
#[cfg(feature = "sqlite")]
fn sqlite_file_reopener() -> (impl Fn() -> Arc<dyn RecordStore>, TempDb) {
    let file = TempDb::new();
    let path = file.0.clone();
    (move || Arc::new(SqliteRecords::open(&path).expect("open sqlite file")) as Arc<dyn RecordStore>, file)
}

/// A database of its own on the MongoDB server at `METERING_TEST_MONGODB_URI` (default:
/// the stand-in on port 27117), dropped on drop.
#[cfg(feature = "mongodb")]
struct TempMongo(MongoOptions);

#[cfg(feature = "mongodb")]
impl TempMongo {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let uri = std::env::var("METERING_TEST_MONGODB_URI")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27117/?directConnection=true".to_owned());
        let database = format!("metering_conformance_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut options = MongoOptions::new(uri, database);
        options.timeout = std::time::Duration::from_secs(10);
        TempMongo(options)
    }

    /// Connects to the database (blocking the calling worker thread: the checks open
    /// stores synchronously).
    fn connect(&self) -> MongoRecords {
        let options = self.0.clone();
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(MongoRecords::connect(options)))
            .expect("connect to MongoDB")
    }
}

#[cfg(feature = "mongodb")]
impl Drop for TempMongo {
    fn drop(&mut self) {
        let store = self.connect();
        let _ = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(store.drop_database()));
    }
}

#[cfg(feature = "mongodb")]
fn mongodb() -> Subject {
    let database = TempMongo::new();
    Subject { store: Arc::new(database.connect()), _files: Some(Box::new(database)) }
}

/// Connects to the same database again each time it is called.
#[cfg(feature = "mongodb")]
fn mongodb_reconnector() -> (impl Fn() -> Arc<dyn RecordStore>, TempMongo) {
    let database = TempMongo::new();
    let options = database.0.clone();
    let open = move || {
        let options = options.clone();
        let store =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(MongoRecords::connect(options)))
                .expect("connect to MongoDB");
        Arc::new(store) as Arc<dyn RecordStore>
    };
    (open, database)
}

/// Instantiates every check of [`checks`] for one backend.
///
/// `open` makes a fresh [`Subject`]; `reopen`, for a durable backend, makes a function
/// that opens the same storage again each time it is called (plus what must outlive it).
macro_rules! conformance {
    ($(#[$attr:meta])* $backend:ident, open: $open:expr $(, reopen: $reopen:expr)? $(,)?) => {
        conformance!(@suite $(#[$attr])* $backend, $open, [
            plans_are_put_read_listed_and_replaced,
            tenants_are_inserted_once_updated_and_paged,
            users_are_unique_by_id_and_email,
            accounts_are_created_whole_or_not_at_all,
            api_keys_are_found_listed_and_revoked,
            append_writes_each_key_once_and_returns_the_stored_twin,
            records_apply_every_filter_newest_first,
            records_page_with_the_cursor,
            records_page_through_ids_shared_by_tenants,
            records_are_capped_per_page,
            usage_totals_count_only_counted_records_on_either_basis,
            prune_deletes_records_older_than_the_cut,
            prune_handles_many_records,
            grants_are_summed_per_tenant_and_period,
            ping_answers,
            concurrent_appends_insert_each_key_exactly_once,
            users_of_a_tenant_are_listed_by_email,
            usage_summary_groups_every_way,
            usage_summary_counts_denied_and_charged_credits,
            refresh_tokens_work_once_until_they_expire_or_are_revoked,
            concurrent_uses_of_a_refresh_token_succeed_once,
            concurrent_inserts_of_a_plan_succeed_once,
            audit_entries_page_newest_first,
            audited_changes_are_written_with_their_entries_or_not_at_all,
            concurrent_audited_inserts_of_a_plan_leave_one_entry,
        ] $(, $reopen)?);
    };
    (@suite $(#[$attr:meta])* $backend:ident, $open:expr, [$($check:ident),* $(,)?] $(, $reopen:expr)?) => {
        $(#[$attr])*
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let subject: Subject = ($open)();
                    checks::$check(Arc::clone(&subject.store)).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_restart_loses_nothing() {
                    let (open, _files) = ($reopen)();
                    checks::a_restart_loses_nothing(open).await;
                }
            )?
        }
    };
}

conformance!(memory, open: memory);
conformance!(#[cfg(feature = "sqlite")] sqlite_in_memory, open: sqlite_in_memory);
conformance!(#[cfg(feature = "sqlite")] sqlite_file, open: sqlite_file, reopen: sqlite_file_reopener);
conformance!(#[cfg(feature = "mongodb")] mongodb, open: mongodb, reopen: mongodb_reconnector);

/// The checks, written against [`RecordStore`] only.
mod checks {
    use std::collections::{BTreeMap, BTreeSet};
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use metering::core::account::{ApiKey, RefreshToken, Role, User};
    use metering::core::audit::AuditEntry;
    use metering::core::decision::{Decision, DenyReason, WindowStatus};
    use metering::core::event::{EventId, Method, TimeBounds, UsageEvent};
    use metering::core::ledger::{
        Appended, Grant, GroupBy, LedgerCursor, LedgerQuery, LedgerRecord, TimeBasis, UsageGroup, UsageTotals,
    };
    use metering::core::plan::{Limit, Per, Plan, PlanId, PremiumAccess};
    use metering::core::pricing::PricingRule;
    use metering::core::store::{AuditedChange, RecordStore};
    use metering::core::tenant::{BillingAnchor, Period, Tenant, TenantId, TenantOverrides, TenantStatus};
    use metering::core::{Error, Timestamp};

    type Store = Arc<dyn RecordStore>;

    /// The records a query should return, as a predicate.
    type Filter = Box<dyn Fn(&LedgerRecord) -> bool>;

    /// `secs` seconds after 2026-03-14T12:00:00Z (before it when negative).
    fn t(secs: i64) -> Timestamp {
        let start = Timestamp::from_datetime("2026-03-14T12:00:00Z".parse().expect("instant"));
        Timestamp::from_micros(start.as_micros() + secs * 1_000_000)
    }

    fn tid(id: &str) -> TenantId {
        TenantId::new(id).expect("tenant id")
    }

    fn eid(id: &str) -> EventId {
        EventId::new(id).expect("event id")
    }

    fn tenant(id: &str) -> Tenant {
        Tenant::new(tid(id), PlanId::new("free").expect("plan id"), t(0))
    }

    fn user(id: &str, tenant: &str, email: &str) -> User {
        User {
            id: id.into(),
            tenant_id: tid(tenant),
            email: email.into(),
            password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${id}"),
            role: Role::User,
            created_at: t(1),
        }
    }

    fn key(id: &str, tenant: Option<&str>, hash: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            tenant_id: tenant.map(tid),
            name: format!("key {id}"),
            service_name: None,
            key_hash: hash.into(),
            created_by: "usr-1".into(),
            created_at: t(2),
            revoked_at: None,
        }
    }

    /// A ledger record under construction: an admitted, counted call charged 2 credits.
    struct Rec(LedgerRecord);

    impl Rec {
        fn new(tenant: &str, id: &str, at: i64) -> Rec {
            let ts = t(at);
            let raw = UsageEvent {
                region: Some("eu-west".into()),
                timestamp: Some(ts),
                ..UsageEvent::new(tenant, "notes", "/notes/{id}", "GET").with_event_id(id).with_credits(2)
            };
            let event = raw.validate_at(ts, &TimeBounds::default()).expect("a valid event");
            let decision = Decision {
                event_id: event.event_id.clone(),
                allowed: true,
                reason: None,
                credits_charged: 2,
                credits_remaining: 98,
                limits: vec![WindowStatus { window: Per::Day, limit: 10, remaining: 9, reset: 43_200 }],
                retry_after: None,
            };
            Rec(LedgerRecord { event, decided_at: ts, decision, status: Some(200), counted: true, fail_open: false })
        }

        fn service(mut self, service: &str) -> Rec {
            self.0.event.service_name = service.into();
            self
        }

        fn endpoint(mut self, endpoint: &str) -> Rec {
            self.0.event.endpoint = endpoint.into();
            self
        }

        fn method(mut self, method: Method) -> Rec {
            self.0.event.method = method;
            self
        }

        fn decided(mut self, at: i64) -> Rec {
            self.0.decided_at = t(at);
            self
        }

        fn charged(mut self, credits: u64) -> Rec {
            self.0.decision.credits_charged = credits;
            self
        }

        fn premium(mut self) -> Rec {
            self.0.event.premium = true;
            self.0.event.feature = Some("gpt-4".into());
            self.0.event.region = None;
            self
        }

        /// Denied: not counted, nothing charged.
        fn denied(mut self) -> Rec {
            let d = &mut self.0.decision;
            (d.allowed, d.reason, d.credits_charged, d.retry_after) =
                (false, Some(DenyReason::RateLimited), 0, Some(17));
            self.0.counted = false;
            self.0.status = None;
            self
        }

        /// Admitted but given back (an upstream error): its decision still says charged.
        fn given_back(mut self) -> Rec {
            self.0.counted = false;
            self.0.status = Some(503);
            self
        }

        fn build(self) -> LedgerRecord {
            self.0
        }
    }

    fn key_of(r: &LedgerRecord) -> (TenantId, EventId) {
        (r.event.tenant_id.clone(), r.event.event_id.clone())
    }

    /// `all` filtered by `keep`, newest first by `(timestamp, event_id)`, at most `limit`.
    fn expected(all: &[LedgerRecord], keep: impl Fn(&LedgerRecord) -> bool, limit: usize) -> Vec<LedgerRecord> {
        let mut v: Vec<LedgerRecord> = all.iter().filter(|r| keep(r)).cloned().collect();
        v.sort_by(|a, b| b.listing_key().cmp(&a.listing_key()));
        v.truncate(limit);
        v
    }

    fn ids(tenants: &[Tenant]) -> Vec<&str> {
        tenants.iter().map(|t| t.id.as_str()).collect()
    }

    fn by_id(mut keys: Vec<ApiKey>) -> Vec<ApiKey> {
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    async fn append_all(s: &Store, records: &[LedgerRecord], batch: usize) {
        for chunk in records.chunks(batch) {
            let out = s.append(chunk.to_vec()).await.expect("append");
            assert!(out.iter().all(|a| *a == Appended::Inserted), "fresh records must all be inserted");
        }
    }

    pub(super) async fn plans_are_put_read_listed_and_replaced(s: Store) {
        assert_eq!(s.plans().await.unwrap(), Vec::new());
        let pro = Plan::pro()
            .with_overdraft(50)
            .with_rule(PricingRule::fixed(3).for_endpoint("/search").for_region("eu-west"))
            .with_rule(PricingRule::fixed(1).per_unit(2).for_feature("gpt-4"));
        let custom = Plan::new(PlanId::new("custom").unwrap(), 7)
            .with_limit(NonZeroU32::new(5).unwrap(), Per::Second)
            .with_limit(NonZeroU32::new(900).unwrap(), Per::Month)
            .with_premium(PremiumAccess::Features(BTreeSet::from(["gpt-4".to_owned(), "vision".to_owned()])));
        for p in [&pro, &Plan::free(), &custom] {
            s.put_plan(p).await.unwrap();
        }
        assert_eq!(s.plan(&pro.id).await.unwrap(), Some(pro.clone()));
        assert_eq!(s.plan(&custom.id).await.unwrap(), Some(custom.clone()));
        assert_eq!(s.plan(&PlanId::new("missing").unwrap()).await.unwrap(), None);
        assert_eq!(s.plans().await.unwrap(), vec![custom.clone(), Plan::free(), pro.clone()], "every plan, by id");

        let mut cheaper = Plan::free();
        cheaper.name = "Free (2027)".into();
        cheaper.monthly_credits = 50;
        cheaper.limits = vec![Limit::new(3, Per::Minute).unwrap()];
        s.put_plan(&cheaper).await.unwrap();
        assert_eq!(s.plan(&cheaper.id).await.unwrap(), Some(cheaper.clone()), "put replaces");
        assert!(matches!(s.insert_plan(&Plan::free()).await, Err(Error::AlreadyExists(_))), "insert never replaces");
        assert_eq!(s.plan(&cheaper.id).await.unwrap(), Some(cheaper.clone()));
        let fresh = Plan::new(PlanId::new("fresh").unwrap(), 9);
        s.insert_plan(&fresh).await.unwrap();
        assert_eq!(s.plans().await.unwrap(), vec![custom, cheaper, fresh, pro]);
    }

    pub(super) async fn tenants_are_inserted_once_updated_and_paged(s: Store) {
        let acme = tenant("acme");
        s.insert_tenant(&acme).await.unwrap();
        let again = Tenant { name: "Another Acme".into(), ..acme.clone() };
        assert!(matches!(s.insert_tenant(&again).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.tenant(&acme.id).await.unwrap(), Some(acme.clone()), "the first insert stands");

        let changed = Tenant {
            name: "ACME Corp.".into(),
            plan: PlanId::new("pro").unwrap(),
            region: Some("eu-west".into()),
            status: TenantStatus::Suspended,
            billing_anchor: BillingAnchor::new(15).unwrap(),
            overrides: TenantOverrides {
                monthly_credits: Some(7),
                limits: Some(vec![Limit::new(3, Per::Minute).unwrap(), Limit::new(100, Per::Day).unwrap()]),
                premium: Some(PremiumAccess::All),
                overdraft: Some(2),
                pricing: vec![PricingRule::fixed(2).for_feature("gpt-4")],
            },
            ..acme.clone()
        };
        s.update_tenant(&changed).await.unwrap();
        assert_eq!(s.tenant(&acme.id).await.unwrap(), Some(changed.clone()));

        let ghost = tenant("ghost");
        assert!(matches!(s.update_tenant(&ghost).await, Err(Error::UnknownTenant(id)) if id == ghost.id));
        assert_eq!(s.tenant(&ghost.id).await.unwrap(), None, "an update does not create");

        for id in ["delta", "bravo", "echo", "charlie", "alpha"] {
            s.insert_tenant(&tenant(id)).await.unwrap();
        }
        let everyone = s.tenants(None, 100).await.unwrap();
        assert_eq!(ids(&everyone), ["acme", "alpha", "bravo", "charlie", "delta", "echo"]);
        assert_eq!(everyone[0], changed);
        let first = s.tenants(None, 4).await.unwrap();
        assert_eq!(ids(&first), ["acme", "alpha", "bravo", "charlie"]);
        let second = s.tenants(Some(&first[3].id), 4).await.unwrap();
        assert_eq!(ids(&second), ["delta", "echo"]);
        assert_eq!(s.tenants(Some(&second[1].id), 4).await.unwrap(), Vec::new());
        assert_eq!(ids(&s.tenants(Some(&tid("b")), 2).await.unwrap()), ["bravo", "charlie"], "after an absent id");
        assert_eq!(s.tenants(None, 0).await.unwrap(), Vec::new());
    }

    pub(super) async fn users_are_unique_by_id_and_email(s: Store) {
        let ann = user("u-1", "acme", "ann@example.com");
        s.insert_user(&ann).await.unwrap();
        let same_id = user("u-1", "acme", "other@example.com");
        assert!(matches!(s.insert_user(&same_id).await, Err(Error::AlreadyExists(_))));
        let same_email = user("u-9", "beta", "ann@example.com");
        assert!(matches!(s.insert_user(&same_email).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.user("u-1").await.unwrap(), Some(ann.clone()));
        assert_eq!(s.user("u-9").await.unwrap(), None);
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(ann.clone()));
        assert_eq!(s.user_by_email("nobody@example.com").await.unwrap(), None);

        let bob = User { role: Role::Admin, ..user("u-2", "beta", "bob@example.com") };
        s.insert_user(&bob).await.unwrap();
        assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), Some(bob.clone()));

        let renamed = User {
            email: "ann.smith@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$bmV3$rehashed".into(),
            role: Role::Admin,
            ..ann.clone()
        };
        s.update_user(&renamed).await.unwrap();
        assert_eq!(s.user("u-1").await.unwrap(), Some(renamed.clone()));
        assert_eq!(s.user_by_email("ann.smith@example.com").await.unwrap(), Some(renamed.clone()));
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), None, "the old e-mail no longer finds her");

        let stealing = User { email: "bob@example.com".into(), ..renamed.clone() };
        assert!(matches!(s.update_user(&stealing).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.user("u-1").await.unwrap(), Some(renamed), "a refused update changes nothing");
        assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), Some(bob));

        let ghost = s.update_user(&user("u-404", "acme", "ghost@example.com")).await;
        assert!(matches!(ghost, Err(Error::NotFound(_))), "no such user: {ghost:?}");
        assert_eq!(s.user("u-404").await.unwrap(), None, "an update does not create");

        let carol = user("u-3", "acme", "ann@example.com");
        s.insert_user(&carol).await.unwrap();
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(carol), "a freed e-mail can be taken");
    }

    pub(super) async fn accounts_are_created_whole_or_not_at_all(s: Store) {
        let ann = user("u-1", "acme", "ann@example.com");
        s.insert_account(&tenant("acme"), &ann).await.unwrap();
        assert_eq!(s.tenant(&tid("acme")).await.unwrap(), Some(tenant("acme")));
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(ann.clone()));

        let same_email = user("u-2", "beta", "ann@example.com");
        assert!(matches!(s.insert_account(&tenant("beta"), &same_email).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.tenant(&tid("beta")).await.unwrap(), None, "a refused user leaves no tenant");
        let same_id = user("u-1", "beta", "bob@example.com");
        assert!(matches!(s.insert_account(&tenant("beta"), &same_id).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.tenant(&tid("beta")).await.unwrap(), None);

        let taken_tenant = user("u-3", "acme", "carol@example.com");
        assert!(matches!(s.insert_account(&tenant("acme"), &taken_tenant).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.user("u-3").await.unwrap(), None, "a refused tenant leaves no user");
        assert_eq!(s.user_by_email("carol@example.com").await.unwrap(), None);
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(ann));
    }

    pub(super) async fn api_keys_are_found_listed_and_revoked(s: Store) {
        let k1 = key("k-1", Some("acme"), "hash-1");
        let k2 = ApiKey { service_name: Some("notes".into()), ..key("k-2", Some("acme"), "hash-2") };
        let k3 = key("k-3", Some("beta"), "hash-3");
        let service = key("k-svc", None, "hash-svc");
        for k in [&k2, &service, &k1, &k3] {
            s.insert_api_key(k).await.unwrap();
        }
        let same_id = key("k-1", Some("beta"), "hash-new");
        assert!(matches!(s.insert_api_key(&same_id).await, Err(Error::AlreadyExists(_))));
        let same_hash = key("k-new", Some("beta"), "hash-1");
        assert!(matches!(s.insert_api_key(&same_hash).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.api_key_by_hash("hash-new").await.unwrap(), None, "a refused key is not stored");

        assert_eq!(s.api_key_by_hash("hash-2").await.unwrap(), Some(k2.clone()));
        assert_eq!(s.api_key_by_hash("hash-svc").await.unwrap(), Some(service.clone()));
        assert_eq!(s.api_key_by_hash("nope").await.unwrap(), None);
        assert_eq!(by_id(s.api_keys(Some(&tid("acme"))).await.unwrap()), vec![k1.clone(), k2.clone()]);
        assert_eq!(s.api_keys(Some(&tid("beta"))).await.unwrap(), vec![k3]);
        assert_eq!(s.api_keys(None).await.unwrap(), vec![service.clone()], "service keys only");
        assert_eq!(s.api_keys(Some(&tid("nobody"))).await.unwrap(), Vec::new());

        assert!(s.revoke_api_key("k-1", t(10)).await.unwrap());
        let revoked = ApiKey { revoked_at: Some(t(10)), ..k1.clone() };
        assert_eq!(s.api_key_by_hash("hash-1").await.unwrap(), Some(revoked.clone()));
        assert!(s.revoke_api_key("k-1", t(20)).await.unwrap());
        assert_eq!(s.api_key_by_hash("hash-1").await.unwrap(), Some(revoked.clone()), "the first revocation stands");
        assert!(!s.revoke_api_key("k-404", t(10)).await.unwrap());
        assert_eq!(by_id(s.api_keys(Some(&tid("acme"))).await.unwrap()), vec![revoked, k2]);
        assert!(s.revoke_api_key("k-svc", t(30)).await.unwrap());
        assert_eq!(s.api_keys(None).await.unwrap(), vec![ApiKey { revoked_at: Some(t(30)), ..service }]);
    }

    pub(super) async fn append_writes_each_key_once_and_returns_the_stored_twin(s: Store) {
        assert_eq!(s.append(Vec::new()).await.unwrap(), Vec::new());
        let a1 = Rec::new("acme", "e-1", 0).build();
        let a2 = Rec::new("acme", "e-2", 1).premium().build();
        let b1 = Rec::new("beta", "e-1", 2).denied().build();
        let out = s.append(vec![a1.clone(), a2.clone(), b1.clone()]).await.unwrap();
        assert_eq!(out, vec![Appended::Inserted; 3], "the same event_id under another tenant is another key");

        let a3 = Rec::new("acme", "e-3", 3).build();
        let a3_twin = Rec::new("acme", "e-3", 4).charged(5).build();
        let out = s.append(vec![a3.clone(), a3_twin]).await.unwrap();
        assert_eq!(out, vec![Appended::Inserted, Appended::Duplicate(Box::new(a3.clone()))], "inside one batch");

        let a1_again = Rec::new("acme", "e-1", 9).denied().build();
        let a4 = Rec::new("acme", "e-4", 5).given_back().build();
        let out = s.append(vec![a1_again, a4.clone()]).await.unwrap();
        assert_eq!(out, vec![Appended::Duplicate(Box::new(a1.clone())), Appended::Inserted], "across batches");

        for r in [&a1, &a2, &a3, &a4, &b1] {
            let (tenant, id) = key_of(r);
            assert_eq!(s.record(&tenant, &id).await.unwrap().as_ref(), Some(r), "every field round-trips");
        }
        assert_eq!(s.record(&tid("acme"), &eid("e-404")).await.unwrap(), None);
        assert_eq!(s.record(&tid("nobody"), &eid("e-1")).await.unwrap(), None);
        let all = s.records(&LedgerQuery::default()).await.unwrap();
        assert_eq!(all, vec![a4, a3, b1, a2, a1], "one record per key, newest first");
    }

    /// 40 records over two tenants, two services, three endpoints, two methods and 13
    /// instants (many ties), with event ids whose order is not the insertion order.
    fn mixed_ledger() -> Vec<LedgerRecord> {
        (0..40)
            .map(|i: i64| {
                let tenant = if i % 3 == 0 { "beta" } else { "acme" };
                let id = format!("ev-{:02}", (i * 17) % 40);
                let mut r = Rec::new(tenant, &id, (i * 7) % 13)
                    .service(if i % 4 < 2 { "notes" } else { "search" })
                    .endpoint(["/notes", "/notes/{id}", "/search"][(i % 3) as usize])
                    .method(if i % 2 == 0 { Method::Get } else { Method::Post });
                if i % 5 == 0 {
                    r = r.denied();
                }
                r.build()
            })
            .collect()
    }

    pub(super) async fn records_apply_every_filter_newest_first(s: Store) {
        let all = mixed_ledger();
        append_all(&s, &all, 7).await;
        let acme = tid("acme");
        let q = LedgerQuery::default;
        let cases: Vec<(LedgerQuery, Filter)> = vec![
            (q(), Box::new(|_| true)),
            (LedgerQuery { tenant: Some(acme.clone()), ..q() }, Box::new(|r| r.event.tenant_id.as_str() == "acme")),
            (LedgerQuery { service: Some("search".into()), ..q() }, Box::new(|r| r.event.service_name == "search")),
            (
                LedgerQuery { endpoint: Some("/notes/{id}".into()), ..q() },
                Box::new(|r| r.event.endpoint == "/notes/{id}"),
            ),
            (LedgerQuery { method: Some(Method::Post), ..q() }, Box::new(|r| r.event.method == Method::Post)),
            (
                LedgerQuery { from: Some(t(3)), to: Some(t(9)), ..q() },
                Box::new(|r| r.event.timestamp >= t(3) && r.event.timestamp < t(9)),
            ),
            (
                LedgerQuery {
                    tenant: Some(tid("beta")),
                    service: Some("notes".into()),
                    method: Some(Method::Get),
                    from: Some(t(2)),
                    ..q()
                },
                Box::new(|r| {
                    r.event.tenant_id.as_str() == "beta"
                        && r.event.service_name == "notes"
                        && r.event.method == Method::Get
                        && r.event.timestamp >= t(2)
                }),
            ),
            (
                LedgerQuery { tenant: Some(acme.clone()), endpoint: Some("/search".into()), to: Some(t(6)), ..q() },
                Box::new(|r| {
                    r.event.tenant_id.as_str() == "acme" && r.event.endpoint == "/search" && r.event.timestamp < t(6)
                }),
            ),
            (LedgerQuery { tenant: Some(tid("nobody")), ..q() }, Box::new(|_| false)),
            (LedgerQuery { from: Some(t(5)), to: Some(t(5)), ..q() }, Box::new(|_| false)),
        ];
        for (query, keep) in cases {
            let want = expected(&all, keep, query.limit);
            assert_eq!(s.records(&query).await.unwrap(), want, "{query:?}");
        }
        let five = s.records(&LedgerQuery { limit: 5, ..q() }).await.unwrap();
        assert_eq!(five, expected(&all, |_| true, 5));
        assert_eq!(s.records(&LedgerQuery { limit: 0, ..q() }).await.unwrap(), Vec::new());
    }

    /// Every record of `tenant` (or of all), read `per_page` at a time from the cursor of
    /// each page's last record, until a page comes back empty (at most `pages` pages).
    async fn page_through(s: &Store, tenant: Option<TenantId>, per_page: usize, pages: usize) -> Vec<LedgerRecord> {
        let mut got = Vec::new();
        let mut before = None;
        for _ in 0..pages {
            let query =
                LedgerQuery { tenant: tenant.clone(), before: before.clone(), limit: per_page, ..Default::default() };
            let page = s.records(&query).await.unwrap();
            assert!(page.len() <= per_page);
            let Some(last) = page.last() else { break };
            before = Some(LedgerCursor::after(last));
            got.extend(page);
        }
        got
    }

    pub(super) async fn records_page_with_the_cursor(s: Store) {
        let all = mixed_ledger();
        append_all(&s, &all, 11).await;
        for tenant in [None, Some(tid("acme"))] {
            let want = expected(&all, |r| tenant.as_ref().is_none_or(|t| *t == r.event.tenant_id), usize::MAX);
            let got = page_through(&s, tenant.clone(), 6, want.len() + 1).await;
            assert_eq!(got, want, "pages of {tenant:?} join up to the whole listing, newest first, once each");
        }
        let cut = LedgerCursor { at: t(6), event_id: eid("ev-20"), tenant: tid("acme") };
        let query = LedgerQuery { before: Some(cut.clone()), limit: 1_000, ..Default::default() };
        let want = expected(&all, |r| cut.passes(r), usize::MAX);
        assert_eq!(s.records(&query).await.unwrap(), want, "a cursor that is not a stored record");
    }

    pub(super) async fn records_page_through_ids_shared_by_tenants(s: Store) {
        // Callers choose their own ids, so two tenants can report the same id at the same
        // instant; a page boundary between them must lose neither.
        let all: Vec<LedgerRecord> = ["acme", "beta", "gamma"]
            .into_iter()
            .flat_map(|tenant| [Rec::new(tenant, "req-1", 5).build(), Rec::new(tenant, "req-2", 5).build()])
            .collect();
        append_all(&s, &all, 6).await;
        for tenant in [None, Some(tid("beta"))] {
            let want = expected(&all, |r| tenant.as_ref().is_none_or(|t| *t == r.event.tenant_id), usize::MAX);
            let got = page_through(&s, tenant.clone(), 1, all.len() + 1).await;
            assert_eq!(got, want, "{tenant:?}: one record a page, each once");
        }
    }

    pub(super) async fn records_are_capped_per_page(s: Store) {
        let all: Vec<LedgerRecord> = (0..LedgerQuery::MAX_LIMIT as i64 + 5)
            .map(|i| Rec::new("acme", &format!("e-{i:05}"), i % 600).build())
            .collect();
        append_all(&s, &all, 500).await;
        let page = s.records(&LedgerQuery { limit: usize::MAX, ..Default::default() }).await.unwrap();
        assert_eq!(page, expected(&all, |_| true, LedgerQuery::MAX_LIMIT));
    }

    pub(super) async fn usage_totals_count_only_counted_records_on_either_basis(s: Store) {
        let records = [
            Rec::new("acme", "c-1", 0).build(),
            Rec::new("acme", "c-2", 10).decided(100).charged(3).build(),
            Rec::new("acme", "c-3", 5).denied().build(),
            Rec::new("acme", "c-4", 6).charged(4).given_back().build(),
            Rec::new("acme", "c-5", 20).charged(1).build(),
            Rec::new("beta", "c-1", 5).charged(50).build(),
        ];
        s.append(records.to_vec()).await.unwrap();
        let acme = tid("acme");
        let totals = |calls, credits| UsageTotals { calls, credits };
        let cases = [
            (TimeBasis::Event, 0, 20, totals(2, 5)),
            (TimeBasis::Event, 0, 21, totals(3, 6)),
            (TimeBasis::Event, 1, 20, totals(1, 3)),
            (TimeBasis::Event, 5, 7, totals(0, 0)),
            (TimeBasis::Event, 5, 5, totals(0, 0)),
            (TimeBasis::Decided { events_from: t(-1_000_000) }, 0, 21, totals(2, 3)),
            (TimeBasis::Decided { events_from: t(-1_000_000) }, 100, 101, totals(1, 3)),
            (TimeBasis::Decided { events_from: t(-1_000_000) }, 20, 100, totals(1, 1)),
            (TimeBasis::Decided { events_from: t(-1_000_000) }, -1000, 1000, totals(3, 6)),
        ];
        for (basis, from, to, want) in cases {
            let got = s.usage_totals(&acme, basis, t(from), t(to)).await.unwrap();
            assert_eq!(got, want, "{basis:?} [{from}, {to})");
        }
        assert_eq!(s.usage_totals(&tid("beta"), TimeBasis::Event, t(0), t(21)).await.unwrap(), totals(1, 50));
        let nobody = s
            .usage_totals(&tid("nobody"), TimeBasis::Decided { events_from: t(-1_000_000) }, t(-1000), t(1000))
            .await
            .unwrap();
        assert_eq!(nobody, UsageTotals::default());
    }

    pub(super) async fn prune_deletes_records_older_than_the_cut(s: Store) {
        let old = Rec::new("acme", "p-1", -100).build();
        let edge = Rec::new("acme", "p-2", -50).build();
        let other = Rec::new("beta", "p-1", -60).denied().build();
        let now = Rec::new("acme", "p-3", 0).build();
        let later = Rec::new("beta", "p-4", 10).build();
        s.append(vec![now.clone(), old.clone(), later.clone(), edge.clone(), other.clone()]).await.unwrap();

        assert_eq!(s.prune(t(-50)).await.unwrap(), 2, "strictly before the cut, every tenant");
        assert_eq!(s.record(&tid("acme"), &eid("p-1")).await.unwrap(), None);
        assert_eq!(s.record(&tid("beta"), &eid("p-1")).await.unwrap(), None);
        assert_eq!(s.record(&tid("acme"), &eid("p-2")).await.unwrap(), Some(edge.clone()));
        assert_eq!(s.prune(t(0)).await.unwrap(), 1);
        assert_eq!(s.prune(t(0)).await.unwrap(), 0);
        assert_eq!(s.records(&LedgerQuery::default()).await.unwrap(), vec![later, now.clone()]);
        let totals = s.usage_totals(&tid("acme"), TimeBasis::Event, t(-1000), t(1000)).await.unwrap();
        assert_eq!(totals, UsageTotals { calls: 1, credits: 2 }, "pruned records no longer count");

        assert_eq!(s.append(vec![old]).await.unwrap(), vec![Appended::Inserted], "a pruned key is free again");
        assert_eq!(s.append(vec![now.clone()]).await.unwrap(), vec![Appended::Duplicate(Box::new(now))]);
    }

    pub(super) async fn prune_handles_many_records(s: Store) {
        let old: Vec<LedgerRecord> = (0..12_345)
            .map(|i| Rec::new(if i % 2 == 0 { "acme" } else { "beta" }, &format!("old-{i}"), -3600 + i % 3000).build())
            .collect();
        append_all(&s, &old, 1_000).await;
        let kept = Rec::new("acme", "kept", 0).build();
        s.append(vec![kept.clone()]).await.unwrap();
        assert_eq!(s.prune(t(0)).await.unwrap(), 12_345);
        assert_eq!(s.records(&LedgerQuery { limit: 10, ..Default::default() }).await.unwrap(), vec![kept]);
    }

    pub(super) async fn grants_are_summed_per_tenant_and_period(s: Store) {
        let p1 = Period { start: t(0), end: t(1_000) };
        let p2 = Period { start: t(1_000), end: t(2_000) };
        let grant = |tenant: &str, period, amount| Grant {
            tenant_id: tid(tenant),
            period,
            amount,
            reason: format!("support ticket {amount}"),
            at: t(5),
        };
        assert_eq!(s.granted(&tid("acme"), p1.start).await.unwrap(), 0);
        for g in [grant("acme", p1, 50), grant("acme", p1, -20), grant("acme", p2, 7), grant("beta", p1, 100)] {
            s.add_grant(&g).await.unwrap();
        }
        assert_eq!(s.granted(&tid("acme"), p1.start).await.unwrap(), 30);
        assert_eq!(s.granted(&tid("acme"), p2.start).await.unwrap(), 7);
        assert_eq!(s.granted(&tid("beta"), p1.start).await.unwrap(), 100);
        assert_eq!(s.granted(&tid("beta"), p2.start).await.unwrap(), 0);
        assert_eq!(s.granted(&tid("acme"), t(500)).await.unwrap(), 0, "matched on the period start");
        assert_eq!(s.granted(&tid("nobody"), p1.start).await.unwrap(), 0);
    }

    pub(super) async fn ping_answers(s: Store) {
        s.ping().await.unwrap();
    }

    pub(super) async fn concurrent_appends_insert_each_key_exactly_once(s: Store) {
        const KEYS: usize = 120;
        let tasks: Vec<_> = (0..6)
            .map(|task| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for batch in 0..4 {
                        let records: Vec<LedgerRecord> = (0..30)
                            .map(|j| {
                                let k = (task * 37 + batch * 30 + j) % KEYS;
                                Rec::new("acme", &format!("k-{k:03}"), task as i64).build()
                            })
                            .collect();
                        let out = s.append(records.clone()).await.unwrap();
                        outcomes.extend(records.into_iter().zip(out));
                    }
                    outcomes
                })
            })
            .collect();
        let mut inserted = BTreeMap::<EventId, usize>::new();
        let mut duplicates = Vec::new();
        for task in tasks {
            for (record, outcome) in task.await.unwrap() {
                match outcome {
                    Appended::Inserted => *inserted.entry(record.event.event_id).or_default() += 1,
                    Appended::Duplicate(first) => duplicates.push(first),
                }
            }
        }
        assert_eq!(inserted.len(), KEYS, "every key inserted");
        assert!(inserted.values().all(|&n| n == 1), "no key inserted twice");
        let stored = s.records(&LedgerQuery { limit: 1_000, ..Default::default() }).await.unwrap();
        assert_eq!(stored.len(), KEYS);
        for first in duplicates {
            let (tenant, id) = key_of(&first);
            assert_eq!(s.record(&tenant, &id).await.unwrap(), Some(*first), "a duplicate answers the stored record");
        }
    }

    pub(super) async fn users_of_a_tenant_are_listed_by_email(s: Store) {
        assert_eq!(s.users_of_tenant(&tid("acme")).await.unwrap(), Vec::new());
        let users = [
            user("u-1", "acme", "zoe@example.com"),
            user("u-2", "beta", "bob@example.com"),
            User { role: Role::Admin, ..user("u-3", "acme", "ann@example.com") },
            user("u-4", "acme", "max@example.com"),
        ];
        for u in &users {
            s.insert_user(u).await.unwrap();
        }
        let acme = s.users_of_tenant(&tid("acme")).await.unwrap();
        assert_eq!(acme, vec![users[2].clone(), users[3].clone(), users[0].clone()], "by e-mail");
        assert_eq!(s.users_of_tenant(&tid("beta")).await.unwrap(), vec![users[1].clone()]);
        let moved = User { tenant_id: tid("beta"), ..users[3].clone() };
        s.update_user(&moved).await.unwrap();
        assert_eq!(s.users_of_tenant(&tid("acme")).await.unwrap(), vec![users[2].clone(), users[0].clone()]);
        assert_eq!(s.users_of_tenant(&tid("beta")).await.unwrap(), vec![users[1].clone(), moved]);
        assert_eq!(s.users_of_tenant(&tid("nobody")).await.unwrap(), Vec::new());
    }

    /// The summary of `all` a backend must give: a reference implementation, in memory.
    fn summarize(all: &[LedgerRecord], q: &LedgerQuery, by: GroupBy, limit: usize) -> Vec<UsageGroup> {
        let q = LedgerQuery { before: None, ..q.clone() };
        let mut groups = BTreeMap::<String, UsageGroup>::new();
        for r in all.iter().filter(|r| q.matches(r)) {
            let e = &r.event;
            let key = match by {
                GroupBy::Service => e.service_name.clone(),
                GroupBy::Endpoint => e.endpoint.clone(),
                GroupBy::Method => e.method.as_str().to_owned(),
                GroupBy::Day => e.timestamp.to_datetime().format("%Y-%m-%d").to_string(),
                GroupBy::Tenant => e.tenant_id.as_str().to_owned(),
                GroupBy::Reason => r.decision.reason.map_or("allowed", |d| d.as_str()).to_owned(),
            };
            let g = groups.entry(key.clone()).or_insert(UsageGroup { key, calls: 0, denied: 0, credits: 0 });
            g.calls += 1;
            g.denied += u64::from(!r.decision.allowed);
            g.credits += if r.counted { r.decision.credits_charged } else { 0 };
        }
        let mut groups: Vec<UsageGroup> = groups.into_values().collect();
        if by != GroupBy::Day {
            groups.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));
        }
        groups.truncate(limit.min(UsageGroup::MAX_GROUPS));
        groups
    }

    pub(super) async fn usage_summary_groups_every_way(s: Store) {
        let mut all = mixed_ledger();
        // Spread over days (before and after midnight UTC) with every kind of outcome.
        let day = 86_400;
        for (i, at) in [-43_201, -43_200, -43_199, day, 3 * day, 3 * day + 1].into_iter().enumerate() {
            let mut r = Rec::new(if i % 2 == 0 { "acme" } else { "gamma" }, &format!("d-{i}"), at).charged(i as u64);
            r = match i {
                1 => r.given_back(),
                4 => r.denied(),
                _ => r,
            };
            let mut r = r.build();
            if i == 5 {
                (r.decision.allowed, r.decision.reason, r.decision.credits_charged) =
                    (false, Some(DenyReason::InsufficientCredits), 0);
                r.counted = false;
            }
            all.push(r);
        }
        append_all(&s, &all, 9).await;
        let q = LedgerQuery::default;
        let queries = [
            q(),
            LedgerQuery { tenant: Some(tid("acme")), ..q() },
            LedgerQuery { tenant: Some(tid("acme")), from: Some(t(3)), to: Some(t(9)), ..q() },
            LedgerQuery { service: Some("notes".into()), method: Some(Method::Get), ..q() },
            LedgerQuery { endpoint: Some("/search".into()), from: Some(t(-43_200)), ..q() },
            LedgerQuery {
                before: Some(LedgerCursor { at: t(5), event_id: eid("ev-10"), tenant: tid("acme") }),
                limit: 1,
                ..q()
            },
            LedgerQuery { tenant: Some(tid("nobody")), ..q() },
        ];
        let every =
            [GroupBy::Service, GroupBy::Endpoint, GroupBy::Method, GroupBy::Day, GroupBy::Tenant, GroupBy::Reason];
        for query in &queries {
            for by in every {
                for limit in [1_000, 2, 0] {
                    let want = summarize(&all, query, by, limit);
                    assert_eq!(s.usage_summary(query, by, limit).await.unwrap(), want, "{by:?} {limit} {query:?}");
                }
            }
        }
        let days = s.usage_summary(&q(), GroupBy::Day, 10).await.unwrap();
        let keys: Vec<&str> = days.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["2026-03-13", "2026-03-14", "2026-03-15", "2026-03-17"], "days in date order, UTC");
        let reasons = s.usage_summary(&q(), GroupBy::Reason, 10).await.unwrap();
        let keys: Vec<&str> = reasons.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["allowed", "rate_limited", "insufficient_credits"]);
    }

    pub(super) async fn usage_summary_counts_denied_and_charged_credits(s: Store) {
        let records = vec![
            Rec::new("acme", "s-1", 0).charged(3).build(),
            Rec::new("acme", "s-2", 1).charged(4).given_back().build(),
            Rec::new("acme", "s-3", 2).denied().build(),
            Rec::new("acme", "s-4", 3).endpoint("/search").method(Method::Post).charged(7).build(),
            Rec::new("acme", "s-5", 4).endpoint("/search").method(Method::Post).denied().build(),
            Rec::new("acme", "s-6", 5).endpoint("/search").method(Method::Post).charged(1).build(),
            Rec::new("beta", "s-1", 6).charged(100).build(),
        ];
        s.append(records).await.unwrap();
        let acme = LedgerQuery { tenant: Some(tid("acme")), ..Default::default() };
        let group = |key: &str, calls, denied, credits| UsageGroup { key: key.into(), calls, denied, credits };
        assert_eq!(
            s.usage_summary(&acme, GroupBy::Endpoint, 10).await.unwrap(),
            vec![group("/notes/{id}", 3, 1, 3), group("/search", 3, 1, 8)],
            "ties by key; a given-back call counts as a call but charges nothing"
        );
        assert_eq!(
            s.usage_summary(&acme, GroupBy::Method, 1).await.unwrap(),
            vec![group("GET", 3, 1, 3)],
            "at most `limit` groups"
        );
        assert_eq!(
            s.usage_summary(&acme, GroupBy::Reason, 10).await.unwrap(),
            vec![group("allowed", 4, 0, 11), group("rate_limited", 2, 2, 0)]
        );
        assert_eq!(
            s.usage_summary(&LedgerQuery::default(), GroupBy::Tenant, usize::MAX).await.unwrap(),
            vec![group("acme", 6, 2, 11), group("beta", 1, 0, 100)]
        );
        assert_eq!(
            s.usage_summary(&LedgerQuery::default(), GroupBy::Day, 10).await.unwrap(),
            vec![group("2026-03-14", 7, 2, 111)]
        );
    }

    fn token(id: &str, user: &str, expires: i64) -> RefreshToken {
        RefreshToken { id: id.into(), user_id: user.into(), issued_at: t(0), expires_at: t(expires) }
    }

    pub(super) async fn refresh_tokens_work_once_until_they_expire_or_are_revoked(s: Store) {
        let (r1, r2, r3, r4) =
            (token("r-1", "u-1", 100), token("r-2", "u-1", 100), token("r-3", "u-1", 10), token("r-4", "u-2", 100));
        for r in [&r1, &r2, &r3, &r4] {
            s.insert_refresh_token(r).await.unwrap();
        }
        let same_id = token("r-1", "u-2", 500);
        assert!(matches!(s.insert_refresh_token(&same_id).await, Err(Error::AlreadyExists(_))));

        assert_eq!(s.consume_refresh_token("r-1", t(50)).await.unwrap(), Some(r1.clone()), "the first stored");
        assert_eq!(s.consume_refresh_token("r-1", t(51)).await.unwrap(), None, "used up");
        assert_eq!(s.consume_refresh_token("r-404", t(50)).await.unwrap(), None);
        assert_eq!(s.consume_refresh_token("r-2", t(100)).await.unwrap(), None, "expired at its expiry");

        assert_eq!(s.revoke_refresh_tokens("u-1").await.unwrap(), 2, "the unused ones, expired or not");
        assert_eq!(s.consume_refresh_token("r-2", t(20)).await.unwrap(), None, "revoked");
        assert_eq!(s.consume_refresh_token("r-3", t(5)).await.unwrap(), None, "revoked");
        assert_eq!(s.revoke_refresh_tokens("u-1").await.unwrap(), 0);
        assert_eq!(s.revoke_refresh_tokens("u-404").await.unwrap(), 0);
        assert_eq!(s.consume_refresh_token("r-4", t(99)).await.unwrap(), Some(r4), "another user's stays valid");

        let r5 = token("r-5", "u-1", 200);
        s.insert_refresh_token(&r5).await.unwrap();
        assert_eq!(s.consume_refresh_token("r-5", t(150)).await.unwrap(), Some(r5), "a new token after a revocation");

        // Pruning deletes what can no longer be used (r-1..r-5 are all used, revoked or
        // past their expiry by t(300)) and keeps what can; the answers stay the same.
        let (live, old) = (token("r-6", "u-1", 400), token("r-7", "u-2", 300));
        for r in [&live, &old] {
            s.insert_refresh_token(r).await.unwrap();
        }
        assert_eq!(s.prune_refresh_tokens(t(300)).await.unwrap(), 6);
        assert_eq!(s.prune_refresh_tokens(t(300)).await.unwrap(), 0);
        assert_eq!(s.consume_refresh_token("r-1", t(51)).await.unwrap(), None, "a pruned used token");
        assert_eq!(
            s.consume_refresh_token("r-6", t(300)).await.unwrap(),
            Some(live),
            "an unused one before its expiry"
        );
    }

    pub(super) async fn concurrent_uses_of_a_refresh_token_succeed_once(s: Store) {
        for round in 0..10 {
            let id = format!("race-{round}");
            s.insert_refresh_token(&token(&id, "u-1", 100)).await.unwrap();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (s, id) = (Arc::clone(&s), id.clone());
                    tokio::spawn(async move { s.consume_refresh_token(&id, t(1)).await.unwrap() })
                })
                .collect();
            let mut winners = 0;
            for task in tasks {
                winners += usize::from(task.await.unwrap().is_some());
            }
            assert_eq!(winners, 1, "round {round}: exactly one use succeeds");
        }
    }

    pub(super) async fn concurrent_inserts_of_a_plan_succeed_once(s: Store) {
        for round in 0..10 {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let s = Arc::clone(&s);
                    let plan = Plan::new(PlanId::new(format!("race-{round}")).unwrap(), 100 + i);
                    tokio::spawn(async move { s.insert_plan(&plan).await })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    Ok(()) => winners.push(()),
                    Err(e) => assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one insert succeeds");
        }
    }

    pub(super) async fn audit_entries_page_newest_first(s: Store) {
        assert_eq!(s.audit(None, 10).await.unwrap(), Vec::new());
        let entry = |id: &str, at: i64| AuditEntry {
            id: id.into(),
            at: t(at),
            actor: "u-admin".into(),
            action: "tenant.update".into(),
            target: format!("acme-{id}"),
            before: (at % 2 == 0).then(|| serde_json::json!({ "status": "active", "n": at })),
            after: Some(serde_json::json!({ "status": "suspended", "tags": ["a", "b"], "nested": { "x": null } })),
        };
        // Ids time-ordered, several entries per instant, appended out of order.
        let mut all: Vec<AuditEntry> = (0..25).map(|i| entry(&format!("0190-{i:03}"), i / 3)).collect();
        all.swap(3, 17);
        all.swap(0, 24);
        for e in &all {
            s.append_audit(e).await.unwrap();
        }
        let dup = entry("0190-005", 99);
        assert!(matches!(s.append_audit(&dup).await, Err(Error::AlreadyExists(_))));

        let mut newest_first = all.clone();
        newest_first.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        assert_eq!(s.audit(None, 100).await.unwrap(), newest_first, "every field round-trips");
        let mut got = Vec::new();
        let mut before: Option<String> = None;
        for _ in 0..=newest_first.len() {
            let page = s.audit(before.as_deref(), 4).await.unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            before = Some(last.id.clone());
            got.extend(page);
        }
        assert_eq!(got, newest_first, "pages join up, once each");
        assert_eq!(s.audit(Some("no-such-id"), 10).await.unwrap(), Vec::new(), "an unknown cursor");
        assert_eq!(s.audit(None, 0).await.unwrap(), Vec::new());

        for i in 25..1_030 {
            s.append_audit(&entry(&format!("0191-{i:04}"), 100)).await.unwrap();
        }
        assert_eq!(s.audit(None, usize::MAX).await.unwrap().len(), 1_000, "capped at 1,000");
    }

    /// An audit entry of `action` on `target`, with id `id`.
    fn audit_entry(id: &str, action: &str, target: &str) -> AuditEntry {
        AuditEntry {
            id: id.into(),
            at: t(5),
            actor: "u-admin".into(),
            action: action.into(),
            target: target.into(),
            before: None,
            after: Some(serde_json::json!({ "by": id })),
        }
    }

    /// The ids of the audit log, oldest first.
    async fn audit_ids(s: &Store) -> Vec<String> {
        let mut ids: Vec<String> = s.audit(None, 1_000).await.unwrap().into_iter().map(|e| e.id).collect();
        ids.sort();
        ids
    }

    /// Every audited change that is made has its entry; one that fails (refused by the
    /// change, or by an entry id already taken) writes neither the change nor the entry.
    pub(super) async fn audited_changes_are_written_with_their_entries_or_not_at_all(s: Store) {
        let starter = Plan::new(PlanId::new("starter").unwrap(), 500);
        let e = |id: &str| audit_entry(id, "test", id);

        s.apply_audited(AuditedChange::InsertPlan(&starter), &e("a-01")).await.unwrap();
        assert_eq!(s.plan(&starter.id).await.unwrap(), Some(starter.clone()));
        let again = Plan::new(starter.id.clone(), 900);
        let refused = s.apply_audited(AuditedChange::InsertPlan(&again), &e("a-02")).await;
        assert!(matches!(refused, Err(Error::AlreadyExists(_))), "{refused:?}");
        assert_eq!(s.plan(&starter.id).await.unwrap(), Some(starter.clone()));

        s.apply_audited(AuditedChange::PutPlan(&again), &e("a-03")).await.unwrap();
        assert_eq!(s.plan(&starter.id).await.unwrap(), Some(again.clone()));
        let taken_entry = Plan::new(starter.id.clone(), 1);
        let refused = s.apply_audited(AuditedChange::PutPlan(&taken_entry), &e("a-01")).await;
        assert!(matches!(refused, Err(Error::AlreadyExists(_))), "an entry id taken: {refused:?}");
        assert_eq!(s.plan(&starter.id).await.unwrap(), Some(again), "the change went with its entry");

        s.insert_tenant(&tenant("acme")).await.unwrap();
        let suspended = Tenant { status: TenantStatus::Suspended, ..tenant("acme") };
        s.apply_audited(AuditedChange::UpdateTenant(&suspended), &e("a-04")).await.unwrap();
        assert_eq!(s.tenant(&tid("acme")).await.unwrap(), Some(suspended));
        let refused = s.apply_audited(AuditedChange::UpdateTenant(&tenant("ghost")), &e("a-05")).await;
        assert!(matches!(refused, Err(Error::UnknownTenant(_))), "{refused:?}");
        let taken_entry = Tenant { name: "Renamed".into(), ..tenant("acme") };
        assert!(s.apply_audited(AuditedChange::UpdateTenant(&taken_entry), &e("a-04")).await.is_err());
        assert_eq!(s.tenant(&tid("acme")).await.unwrap().unwrap().status, TenantStatus::Suspended);

        let k = key("k-1", Some("acme"), "hash-1");
        s.apply_audited(AuditedChange::InsertApiKey(&k), &e("a-06")).await.unwrap();
        assert_eq!(s.api_key("k-1").await.unwrap(), Some(k.clone()));
        let same_hash = key("k-2", Some("acme"), "hash-1");
        let refused = s.apply_audited(AuditedChange::InsertApiKey(&same_hash), &e("a-07")).await;
        assert!(matches!(refused, Err(Error::AlreadyExists(_))), "{refused:?}");
        assert_eq!(s.api_key("k-2").await.unwrap(), None);
        let fresh = key("k-3", Some("acme"), "hash-3");
        assert!(s.apply_audited(AuditedChange::InsertApiKey(&fresh), &e("a-06")).await.is_err());
        assert_eq!(s.api_key("k-3").await.unwrap(), None, "no key without its entry");

        let revoke = |id| AuditedChange::RevokeApiKey { id, at: t(40) };
        assert!(s.apply_audited(revoke("k-1"), &e("a-06")).await.is_err());
        assert_eq!(s.api_key("k-1").await.unwrap().unwrap().revoked_at, None, "no revocation without its entry");
        s.apply_audited(revoke("k-1"), &e("a-08")).await.unwrap();
        assert_eq!(s.api_key("k-1").await.unwrap().unwrap().revoked_at, Some(t(40)));
        let refused = s.apply_audited(revoke("no-such-key"), &e("a-09")).await;
        assert!(matches!(refused, Err(Error::NotFound(_))), "{refused:?}");

        let period = Period { start: t(0), end: t(1_000) };
        let grant = Grant { tenant_id: tid("acme"), period, amount: 50, reason: "goodwill".into(), at: t(6) };
        s.apply_audited(AuditedChange::AddGrant(&grant), &e("a-10")).await.unwrap();
        assert!(s.apply_audited(AuditedChange::AddGrant(&grant), &e("a-10")).await.is_err());
        assert_eq!(s.granted(&tid("acme"), t(0)).await.unwrap(), 50, "one grant: the second had no entry");

        assert_eq!(
            audit_ids(&s).await,
            ["a-01", "a-03", "a-04", "a-06", "a-08", "a-10"],
            "an entry for each change made"
        );
        let stored = s.audit(None, 1_000).await.unwrap();
        assert!(stored.iter().all(|entry| *entry == e(&entry.id)), "entries are stored whole");
    }

    /// Of concurrent audited inserts of one plan id, exactly one succeeds, and the audit
    /// log holds exactly its entry.
    pub(super) async fn concurrent_audited_inserts_of_a_plan_leave_one_entry(s: Store) {
        for round in 0..5 {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let s = Arc::clone(&s);
                    let plan = Plan::new(PlanId::new(format!("race-{round}")).unwrap(), 100 + i);
                    let entry = audit_entry(&format!("r{round}-{i}"), "plan.create", plan.id.as_str());
                    tokio::spawn(
                        async move { s.apply_audited(AuditedChange::InsertPlan(&plan), &entry).await.map(|()| i) },
                    )
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    Ok(i) => winners.push(i),
                    Err(e) => assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one insert succeeds");
            let plan = s.plan(&PlanId::new(format!("race-{round}")).unwrap()).await.unwrap().unwrap();
            assert_eq!(plan.monthly_credits, 100 + winners[0]);
            let entries: Vec<String> =
                audit_ids(&s).await.into_iter().filter(|id| id.starts_with(&format!("r{round}-"))).collect();
            assert_eq!(entries, [format!("r{round}-{}", winners[0])], "round {round}: only the winner's entry");
        }
    }

    /// Everything written before closing is there after reopening.
    pub(super) async fn a_restart_loses_nothing(open: impl Fn() -> Store) {
        let s = open();
        s.put_plan(&Plan::pro().with_rule(PricingRule::fixed(2).for_feature("gpt-4"))).await.unwrap();
        s.put_plan(&Plan::free()).await.unwrap();
        let acme = tenant("acme");
        s.insert_tenant(&acme).await.unwrap();
        s.insert_tenant(&tenant("beta")).await.unwrap();
        let suspended = Tenant { status: TenantStatus::Suspended, ..acme.clone() };
        s.update_tenant(&suspended).await.unwrap();
        let ann = user("u-1", "acme", "ann@example.com");
        s.insert_user(&ann).await.unwrap();
        for k in [key("k-1", Some("acme"), "hash-1"), key("k-svc", None, "hash-svc")] {
            s.insert_api_key(&k).await.unwrap();
        }
        s.revoke_api_key("k-1", t(30)).await.unwrap();
        let records = [
            Rec::new("acme", "r-1", 0).build(),
            Rec::new("acme", "r-2", 1).denied().build(),
            Rec::new("beta", "r-1", 2).premium().decided(3).build(),
        ];
        s.append(records.to_vec()).await.unwrap();
        let period = Period { start: t(0), end: t(1_000) };
        let grant = Grant { tenant_id: acme.id.clone(), period, amount: 25, reason: "goodwill".into(), at: t(4) };
        s.add_grant(&grant).await.unwrap();
        s.insert_refresh_token(&token("r-1", "u-1", 100)).await.unwrap();
        s.insert_refresh_token(&token("r-2", "u-1", 100)).await.unwrap();
        assert!(s.consume_refresh_token("r-1", t(5)).await.unwrap().is_some());
        let audit = AuditEntry {
            id: "0190-001".into(),
            at: t(6),
            actor: "u-1".into(),
            action: "tenant.suspend".into(),
            target: "acme".into(),
            before: Some(serde_json::json!({ "status": "active" })),
            after: None,
        };
        s.append_audit(&audit).await.unwrap();

        let plans = s.plans().await.unwrap();
        let tenants = s.tenants(None, 10).await.unwrap();
        let keys = (by_id(s.api_keys(Some(&acme.id)).await.unwrap()), s.api_keys(None).await.unwrap());
        let ledger = s.records(&LedgerQuery::default()).await.unwrap();
        let totals = s.usage_totals(&acme.id, TimeBasis::Event, t(0), t(10)).await.unwrap();
        drop(s);

        let s = open();
        assert_eq!(s.plans().await.unwrap(), plans);
        assert_eq!(s.tenants(None, 10).await.unwrap(), tenants);
        assert_eq!(s.tenant(&acme.id).await.unwrap(), Some(suspended));
        assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(ann));
        assert_eq!((by_id(s.api_keys(Some(&acme.id)).await.unwrap()), s.api_keys(None).await.unwrap()), keys);
        assert_eq!(s.records(&LedgerQuery::default()).await.unwrap(), ledger);
        assert_eq!(ledger.len(), 3);
        assert_eq!(s.usage_totals(&acme.id, TimeBasis::Event, t(0), t(10)).await.unwrap(), totals);
        assert_eq!(totals, UsageTotals { calls: 1, credits: 2 });
        assert_eq!(s.granted(&acme.id, period.start).await.unwrap(), 25);
        let out = s.append(records[..1].to_vec()).await.unwrap();
        assert_eq!(out, vec![Appended::Duplicate(Box::new(records[0].clone()))], "keys stay unique after a restart");
        assert!(matches!(s.insert_tenant(&acme).await, Err(Error::AlreadyExists(_))));
        assert_eq!(s.consume_refresh_token("r-1", t(7)).await.unwrap(), None, "a used token stays used");
        assert_eq!(s.consume_refresh_token("r-2", t(7)).await.unwrap(), Some(token("r-2", "u-1", 100)));
        assert_eq!(s.audit(None, 10).await.unwrap(), vec![audit]);
        assert_eq!(s.users_of_tenant(&acme.id).await.unwrap().len(), 1);
    }
}
