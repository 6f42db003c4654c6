//! One conformance suite for [`HotStore`], run against every backend.
//!
//! Each check is an async function over an `Arc<dyn HotStore>` and knows nothing of the
//! backend behind it; `conformance!` instantiates every check for one backend. Decisions
//! are compared with the reference decision ([`metering::core::admit::admit`]) on the
//! counters the check expects, so a store that decides elsewhere (a server-side script)
//! is held to the same answers. A new backend is one more `conformance!` line at the
//! bottom, and must pass unchanged.
//!
//! `cargo test --test hot_conformance`

use std::sync::Arc;
use std::time::Duration;

use metering::core::admit::{Standing, WindowState, admit};
use metering::core::store::MemoryHot;
use metering::core::store::{Admission, Admitted, HotSnapshot, HotStore, KeyCount, LockoutPolicy, PeriodCredits};
#[cfg(feature = "redis")]
#[path = "support/redis_servers.rs"]
mod redis_servers;

use metering::core::{BillingAnchor, DenyReason, Error, EventId, Limit, Per, TenantId, Timestamp};

/// Mid-month, mid-day.
fn noon() -> Timestamp {
    Timestamp::from_secs(1_773_489_600)
}

/// An admission for `tenant` at `now` under `limits`, costing `cost` of an allowance of 10.
fn admission(tenant: &str, id: &str, limits: &[(u32, Per)], cost: u64, now: Timestamp) -> Admission {
    Admission {
        tenant: TenantId::new(tenant).unwrap(),
        event_id: EventId::new(id).unwrap(),
        fingerprint: 1,
        now,
        at: now,
        denial: None,
        limits: limits.iter().map(|&(max, per)| Limit::new(max, per).unwrap()).collect(),
        cost,
        period: BillingAnchor::default().period_containing(now),
        allowance: 10,
        overdraft: 0,
        remember: false,
        remember_until: now.plus(Duration::from_secs(3600)),
    }
}

/// Loads `tenant` with nothing counted.
async fn load_empty(hot: &dyn HotStore, tenant: &str) {
    hot.load(&TenantId::new(tenant).unwrap(), HotSnapshot::default()).await.unwrap();
}

/// The decision a store gives, checked against the reference on `standing`.
async fn decided(hot: &dyn HotStore, a: &Admission, standing: &Standing) -> metering::core::Decision {
    let expected = admit(a, standing).decision;
    match hot.admit(a).await.unwrap() {
        Admitted::Decided(d) => {
            assert_eq!(d, expected, "the store and the reference decision disagree");
            d
        }
        other => panic!("expected a fresh decision, got {other:?}"),
    }
}

fn standing(a: &Admission, windows: &[WindowState], used: u64) -> Standing {
    let mut windows = windows.iter();
    Standing::read(a, PeriodCredits { used, granted: 0 }, |limit| {
        windows.next().copied().unwrap_or(WindowState::empty(limit))
    })
}

async fn an_unloaded_tenant_is_unloaded_until_loaded(hot: Arc<dyn HotStore>) {
    let a = admission("t-unloaded", "e-1", &[(3, Per::Day)], 1, noon());
    assert_eq!(hot.admit(&a).await.unwrap(), Admitted::Unloaded);
    assert_eq!(hot.credits(&a.tenant, a.period.start).await.unwrap(), None);
    load_empty(&*hot, "t-unloaded").await;
    decided(&*hot, &a, &standing(&a, &[WindowState::Calls(0)], 0)).await;
}

async fn a_calendar_window_admits_exactly_its_quota(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-quota").await;
    for n in 0..3 {
        let a = admission("t-quota", &format!("e-{n}"), &[(3, Per::Day)], 1, noon());
        assert!(decided(&*hot, &a, &standing(&a, &[WindowState::Calls(n)], n.into())).await.allowed);
    }
    let a = admission("t-quota", "e-3", &[(3, Per::Day)], 1, noon());
    let denied = decided(&*hot, &a, &standing(&a, &[WindowState::Calls(3)], 3)).await;
    assert_eq!(denied.reason, Some(DenyReason::RateLimited));
    let credits = hot.credits(&a.tenant, a.period.start).await.unwrap().unwrap();
    assert_eq!(credits.used, 3, "a denial charges nothing");
    // The next day is a new window.
    let tomorrow = admission("t-quota", "e-4", &[(3, Per::Day)], 1, noon().plus(Duration::from_secs(86_400)));
    assert!(decided(&*hot, &tomorrow, &standing(&tomorrow, &[WindowState::Calls(0)], 3)).await.allowed);
}

async fn every_window_admits_or_none_counts(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-all").await;
    let limits = [(5, Per::Day), (1, Per::Minute)];
    let first = admission("t-all", "e-1", &limits, 1, noon());
    assert!(decided(&*hot, &first, &standing(&first, &[], 0)).await.allowed);
    let second = admission("t-all", "e-2", &limits, 1, noon().plus(Duration::from_secs(1)));
    let tat = Some(noon().plus(Duration::from_secs(60)));
    let denied = decided(&*hot, &second, &standing(&second, &[WindowState::Calls(1), WindowState::Tat(tat)], 1)).await;
    assert_eq!(denied.reason, Some(DenyReason::RateLimited));
    assert!(denied.retry_after.is_some());
    // The day window did not count the denied call: a minute later, one call fits again.
    let later = admission("t-all", "e-3", &limits, 1, noon().plus(Duration::from_secs(61)));
    let d = decided(&*hot, &later, &standing(&later, &[WindowState::Calls(1), WindowState::Tat(tat)], 1)).await;
    assert!(d.allowed);
    assert_eq!(d.limits[0].remaining, 3);
}

async fn credits_stop_at_the_floor_and_grants_move_it(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-credits").await;
    let a = admission("t-credits", "e-1", &[], 8, noon());
    assert!(decided(&*hot, &a, &standing(&a, &[], 0)).await.allowed);
    let b = admission("t-credits", "e-2", &[], 3, noon());
    assert_eq!(decided(&*hot, &b, &standing(&b, &[], 8)).await.reason, Some(DenyReason::InsufficientCredits));
    let tenant = a.tenant.clone();
    assert_eq!(hot.grant(&tenant, a.period, 10, 0, 5).await.unwrap(), Some(7));
    let c = admission("t-credits", "e-3", &[], 3, noon());
    let granted = Standing::read(&c, PeriodCredits { used: 8, granted: 5 }, WindowState::empty);
    assert!(decided(&*hot, &c, &granted).await.allowed);
    assert!(matches!(hot.grant(&tenant, a.period, 10, 0, -5).await, Err(Error::BelowFloor)));
    assert_eq!(hot.credits(&tenant, a.period.start).await.unwrap(), Some(PeriodCredits { used: 11, granted: 5 }));
}

async fn a_remembered_id_replays_and_a_changed_one_conflicts(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-replay").await;
    let a = Admission { remember: true, ..admission("t-replay", "e-1", &[(3, Per::Day)], 2, noon()) };
    let first = decided(&*hot, &a, &standing(&a, &[], 0)).await;
    assert_eq!(hot.admit(&a).await.unwrap(), Admitted::Replayed(first));
    let changed = Admission { fingerprint: 2, ..a.clone() };
    assert_eq!(hot.admit(&changed).await.unwrap(), Admitted::Conflict);
    let credits = hot.credits(&a.tenant, a.period.start).await.unwrap().unwrap();
    assert_eq!(credits.used, 2, "charged once");
}

async fn revert_gives_back_and_forget_only_forgets(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-undo").await;
    let a = Admission { remember: true, ..admission("t-undo", "e-1", &[(1, Per::Day)], 4, noon()) };
    decided(&*hot, &a, &standing(&a, &[], 0)).await;
    hot.revert(&a).await.unwrap();
    assert_eq!(hot.credits(&a.tenant, a.period.start).await.unwrap().unwrap().used, 0);
    // The id is forgotten and the window slot is free again: decided afresh.
    decided(&*hot, &a, &standing(&a, &[WindowState::Calls(0)], 0)).await;
    hot.forget(&a).await.unwrap();
    let again = decided(&*hot, &a, &standing(&a, &[WindowState::Calls(1)], 4)).await;
    assert_eq!(again.reason, Some(DenyReason::RateLimited), "forget left the counts");
}

async fn a_remembered_id_is_forgotten_when_its_time_is_up(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-expiry").await;
    let a = Admission {
        remember: true,
        remember_until: noon().plus(Duration::from_secs(60)),
        ..admission("t-expiry", "e-1", &[], 1, noon())
    };
    decided(&*hot, &a, &standing(&a, &[], 0)).await;
    let later = Admission { now: noon().plus(Duration::from_secs(61)), ..a.clone() };
    assert!(matches!(hot.admit(&later).await.unwrap(), Admitted::Decided(_)), "no longer a replay");
}

async fn a_loaded_snapshot_is_counted_and_not_loaded_twice(hot: Arc<dyn HotStore>) {
    let tenant = TenantId::new("t-snapshot").unwrap();
    let a = admission("t-snapshot", "e-1", &[(3, Per::Day)], 1, noon());
    let day = Per::Day.window_containing(noon()).0;
    let snapshot =
        HotSnapshot { quotas: vec![(Per::Day, day, 2)], credits: vec![(a.period.start, 6, 1)], smooth: vec![] };
    hot.load(&tenant, snapshot).await.unwrap();
    hot.load(&tenant, HotSnapshot::default()).await.unwrap();
    let loaded = Standing::read(&a, PeriodCredits { used: 6, granted: 1 }, |_| WindowState::Calls(2));
    assert!(decided(&*hot, &a, &loaded).await.allowed);
    let b = admission("t-snapshot", "e-2", &[(3, Per::Day)], 1, noon());
    let full = Standing::read(&b, PeriodCredits { used: 7, granted: 1 }, |_| WindowState::Calls(3));
    assert_eq!(decided(&*hot, &b, &full).await.reason, Some(DenyReason::RateLimited));
}

async fn tenants_do_not_share_counters(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-one").await;
    load_empty(&*hot, "t-two").await;
    let one = admission("t-one", "e-1", &[(1, Per::Day)], 1, noon());
    assert!(decided(&*hot, &one, &standing(&one, &[], 0)).await.allowed);
    let two = admission("t-two", "e-1", &[(1, Per::Day)], 1, noon());
    assert!(decided(&*hot, &two, &standing(&two, &[], 0)).await.allowed, "same id, other tenant");
}

async fn five_failures_lock_a_login_until_the_lock_passes(hot: Arc<dyn HotStore>) {
    let policy = LockoutPolicy::default();
    let key = "locked@example.com";
    for _ in 0..4 {
        assert_eq!(hot.login_failed(key, noon(), policy).await.unwrap().locked_until, None);
    }
    let locked = hot.login_failed(key, noon(), policy).await.unwrap();
    assert_eq!(locked.locked_until, Some(noon().plus(policy.lock_for)));
    assert_eq!(hot.login_guard(key, noon().plus(Duration::from_secs(60)), policy).await.unwrap(), locked);
    let after = hot.login_guard(key, noon().plus(policy.lock_for), policy).await.unwrap();
    assert_eq!((after.failures, after.locked_until), (0, None));
    hot.login_failed(key, noon(), policy).await.unwrap();
    hot.clear_login(key).await.unwrap();
    assert_eq!(hot.login_guard(key, noon(), policy).await.unwrap().failures, 0);
}

async fn clearing_logins_from_addresses_spares_the_rest(hot: Arc<dyn HotStore>) {
    let policy = LockoutPolicy::default();
    let keys =
        ["ada@example.com from 10.0.0.1", "ada@example.com from ::1", "ada@example.com", "bo@example.com from ::1"];
    // A login whose name holds SCAN pattern characters is matched literally.
    let odd = "a*[?]\\b@example.com from 10.0.0.9";
    for key in keys.iter().chain([&odd]) {
        hot.login_failed(key, noon(), policy).await.unwrap();
    }
    hot.clear_logins_from("ada@example.com").await.unwrap();
    let failures = |key: &'static str| {
        let hot = Arc::clone(&hot);
        async move { hot.login_guard(key, noon(), policy).await.unwrap().failures }
    };
    assert_eq!((failures(keys[0]).await, failures(keys[1]).await), (0, 0), "every address of the login");
    assert_eq!((failures(keys[2]).await, failures(keys[3]).await), (1, 1), "not the login itself, nor another");
    hot.clear_logins_from("a*[?]\\b@example.com").await.unwrap();
    assert_eq!(failures(odd).await, 0);
}

async fn a_revoked_token_is_refused_until_it_expires(hot: Arc<dyn HotStore>) {
    let until = noon().plus(Duration::from_secs(900));
    assert!(!hot.token_revoked("jti-1", noon()).await.unwrap());
    hot.revoke_token("jti-1", noon(), until).await.unwrap();
    assert!(hot.token_revoked("jti-1", noon().plus(Duration::from_secs(899))).await.unwrap());
    assert!(!hot.token_revoked("jti-2", noon()).await.unwrap());
    assert!(!hot.token_revoked("jti-1", until.plus(Duration::from_secs(1))).await.unwrap());
}

async fn a_key_counts_at_most_its_maximum_per_window(hot: Arc<dyn HotStore>) {
    let window = Duration::from_secs(60);
    for _ in 0..2 {
        assert_eq!(hot.count_key("signup:1.2.3.4", noon(), window, 2).await.unwrap(), KeyCount::Counted);
    }
    let later = noon().plus(Duration::from_secs(20));
    let over = hot.count_key("signup:1.2.3.4", later, window, 2).await.unwrap();
    assert_eq!(over, KeyCount::Over { retry_after: Duration::from_secs(40) }, "the window opened at the first call");
    assert_eq!(hot.count_key("signup:5.6.7.8", later, window, 2).await.unwrap(), KeyCount::Counted, "keys apart");
    let next = noon().plus(window);
    assert_eq!(hot.count_key("signup:1.2.3.4", next, window, 2).await.unwrap(), KeyCount::Counted, "a new window");
}

async fn clear_forgets_counters_logins_and_tokens(hot: Arc<dyn HotStore>) {
    load_empty(&*hot, "t-clear").await;
    let a = admission("t-clear", "e-1", &[], 1, noon());
    decided(&*hot, &a, &standing(&a, &[], 0)).await;
    hot.login_failed("cleared@example.com", noon(), LockoutPolicy::default()).await.unwrap();
    hot.revoke_token("jti-cleared", noon(), noon().plus(Duration::from_secs(60))).await.unwrap();
    hot.clear().await.unwrap();
    assert_eq!(hot.admit(&a).await.unwrap(), Admitted::Unloaded);
    assert_eq!(hot.login_guard("cleared@example.com", noon(), LockoutPolicy::default()).await.unwrap().failures, 0);
    assert!(!hot.token_revoked("jti-cleared", noon()).await.unwrap());
}

/// Calls `$then!($($arg)*; every check)`: the one list of checks.
macro_rules! with_checks {
    ($then:ident!($($arg:tt)*)) => {
        $then!($($arg)*;
            an_unloaded_tenant_is_unloaded_until_loaded,
            a_calendar_window_admits_exactly_its_quota,
            every_window_admits_or_none_counts,
            credits_stop_at_the_floor_and_grants_move_it,
            a_remembered_id_replays_and_a_changed_one_conflicts,
            revert_gives_back_and_forget_only_forgets,
            a_remembered_id_is_forgotten_when_its_time_is_up,
            a_loaded_snapshot_is_counted_and_not_loaded_twice,
            tenants_do_not_share_counters,
            five_failures_lock_a_login_until_the_lock_passes,
            clearing_logins_from_addresses_spares_the_rest,
            a_revoked_token_is_refused_until_it_expires,
            a_key_counts_at_most_its_maximum_per_window,
            clear_forgets_counters_logins_and_tokens,
        );
    };
}

/// Each check in a test of its own, on a store `$make(check name)` builds.
macro_rules! each_in_own_test {
    ($make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let hot: Arc<dyn HotStore> = ($make)(stringify!($check)).await;
                super::$check(Arc::clone(&hot)).await;
                hot.clear().await.unwrap();
            }
        )*
    };
}

/// Every check in turn on one store, emptied between checks.
#[cfg(feature = "redis")]
macro_rules! all_in_turn {
    ($hot:expr; $($check:ident),* $(,)?) => {
        $(
            super::$check(Arc::clone(&$hot)).await;
            $hot.clear().await.unwrap();
        )*
    };
}

mod memory {
    use super::*;

    with_checks!(each_in_own_test!(|_: &str| async { Arc::new(MemoryHot::new()) as Arc<dyn HotStore> }));
}

/// On the shared Redis, each check under a key prefix of its own.
#[cfg(feature = "redis")]
mod redis {
    use super::*;

    with_checks!(each_in_own_test!(|name: &str| {
        let prefix = format!("c:{name}");
        async move { Arc::new(redis_servers::shared_store(&prefix).await) as Arc<dyn HotStore> }
    }));
}

/// On a three-master Redis Cluster the test starts and stops.
#[cfg(feature = "redis")]
mod redis_cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn every_check_holds_on_a_three_master_cluster() {
        let cluster = tokio::task::spawn_blocking(redis_servers::RedisCluster::start).await.unwrap();
        let hot: Arc<dyn HotStore> = Arc::new(redis_servers::store_at(&cluster.url(), "conformance").await);
        with_checks!(all_in_turn!(hot));
    }
}
