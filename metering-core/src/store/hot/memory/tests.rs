use std::time::Duration;

use super::*;

use crate::clock::Timestamp;
use crate::store::{HotStore, LockoutPolicy, LoginGuard};

const MINUTE: Duration = Duration::from_secs(60);

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_secs(1_773_489_600 + minutes * 60)
}

fn guard(failures: u32, locked_until: Option<Timestamp>) -> LoginGuard {
    LoginGuard { failures, locked_until }
}

#[tokio::test]
async fn the_fifth_failure_locks_until_the_lock_passes() {
    let hot = MemoryHot::new();
    let policy = LockoutPolicy::default();
    assert_eq!(hot.login_guard("ann@example.com", at(0), policy).await.unwrap(), LoginGuard::default());
    for n in 1..=4 {
        let g = hot.login_failed("ann@example.com", at(n), policy).await.unwrap();
        assert_eq!(g, guard(n as u32, None), "failure {n} does not lock");
    }
    let locked = guard(5, Some(at(5).plus(15 * MINUTE)));
    assert_eq!(hot.login_failed("ann@example.com", at(5), policy).await.unwrap(), locked);
    assert_eq!(hot.login_guard("ann@example.com", at(19), policy).await.unwrap(), locked);
    assert_eq!(hot.login_guard("bob@example.com", at(19), policy).await.unwrap(), LoginGuard::default());
    assert_eq!(hot.login_failed("ann@example.com", at(6), policy).await.unwrap(), guard(6, locked.locked_until));
    assert_eq!(hot.login_guard("ann@example.com", at(20), policy).await.unwrap(), LoginGuard::default());
    assert_eq!(hot.login_failed("ann@example.com", at(21), policy).await.unwrap(), guard(1, None));
}

#[tokio::test]
async fn failures_older_than_the_window_do_not_count() {
    let hot = MemoryHot::new();
    let policy = LockoutPolicy { max_failures: 3, window: 10 * MINUTE, lock_for: MINUTE };
    hot.login_failed("ann@example.com", at(0), policy).await.unwrap();
    hot.login_failed("ann@example.com", at(9), policy).await.unwrap();
    assert_eq!(hot.login_guard("ann@example.com", at(9), policy).await.unwrap(), guard(2, None));
    assert_eq!(hot.login_guard("ann@example.com", at(10), policy).await.unwrap(), LoginGuard::default());
    assert_eq!(hot.login_failed("ann@example.com", at(10), policy).await.unwrap(), guard(1, None));
    assert_eq!(hot.login_failed("ann@example.com", at(11), policy).await.unwrap(), guard(2, None));
    assert_eq!(hot.login_failed("ann@example.com", at(12), policy).await.unwrap(), guard(3, Some(at(13))));
}

#[tokio::test]
async fn a_revoked_token_is_refused_until_it_expires() {
    let hot = MemoryHot::new();
    hot.revoke_token("jti-1", at(0), at(15)).await.unwrap();
    assert!(hot.token_revoked("jti-1", at(0)).await.unwrap());
    assert!(hot.token_revoked("jti-1", at(14)).await.unwrap());
    assert!(!hot.token_revoked("jti-1", at(15)).await.unwrap(), "expired: nothing left to refuse");
    assert!(!hot.token_revoked("jti-2", at(0)).await.unwrap());
    // Revoking again never shortens what is remembered.
    hot.revoke_token("jti-1", at(1), at(5)).await.unwrap();
    assert!(hot.token_revoked("jti-1", at(10)).await.unwrap());
    hot.clear().await.unwrap();
    assert!(!hot.token_revoked("jti-1", at(10)).await.unwrap());
}

#[tokio::test]
async fn when_full_revocations_go_expired_first_then_closest_to_expiring() {
    let hot = MemoryHot::new();
    hot.revoked.write().max = 10;
    hot.revoke_token("expired", at(0), at(1)).await.unwrap();
    for n in 0..9 {
        hot.revoke_token(&format!("jti-{n}"), at(0), at(10 + n)).await.unwrap();
    }
    // Full: the expired entry goes and nothing else.
    hot.revoke_token("jti-9", at(2), at(19)).await.unwrap();
    assert_eq!(hot.revoked.read().until.len(), 10);
    for n in 0..10 {
        assert!(hot.token_revoked(&format!("jti-{n}"), at(2)).await.unwrap(), "jti-{n}");
    }
    // Full of live entries: the two closest to expiring go, to make room for a tenth.
    hot.revoke_token("jti-10", at(2), at(20)).await.unwrap();
    let kept: Vec<bool> = revoked_of(&hot, 11).await;
    assert_eq!(kept, [false, false, true, true, true, true, true, true, true, true, true]);
}

async fn revoked_of(hot: &MemoryHot, n: usize) -> Vec<bool> {
    let mut kept = Vec::new();
    for i in 0..n {
        kept.push(hot.token_revoked(&format!("jti-{i}"), at(2)).await.unwrap());
    }
    kept
}

#[tokio::test]
async fn clear_login_and_clear_unlock() {
    let hot = MemoryHot::new();
    let policy = LockoutPolicy { max_failures: 1, ..LockoutPolicy::default() };
    for key in ["ann@example.com", "bob@example.com"] {
        assert!(hot.login_failed(key, at(0), policy).await.unwrap().locked_until.is_some());
    }
    hot.clear_login("ann@example.com").await.unwrap();
    assert_eq!(hot.login_guard("ann@example.com", at(1), policy).await.unwrap(), LoginGuard::default());
    assert_eq!(hot.login_guard("bob@example.com", at(1), policy).await.unwrap().failures, 1);
    hot.clear().await.unwrap();
    assert_eq!(hot.login_guard("bob@example.com", at(1), policy).await.unwrap(), LoginGuard::default());
}

#[tokio::test]
async fn clear_logins_from_clears_every_address_of_one_login() {
    let hot = MemoryHot::new();
    let policy = LockoutPolicy { max_failures: 1, ..LockoutPolicy::default() };
    let keys = ["ann@example.com from 10.0.0.1", "ann@example.com from ::1", "bob@example.com from 10.0.0.1"];
    for key in keys.into_iter().chain(["ann@example.com"]) {
        hot.login_failed(key, at(0), policy).await.unwrap();
    }
    hot.clear_logins_from("ann@example.com").await.unwrap();
    for key in &keys[..2] {
        assert_eq!(hot.login_guard(key, at(1), policy).await.unwrap(), LoginGuard::default(), "{key}");
    }
    assert_eq!(hot.login_guard(keys[2], at(1), policy).await.unwrap().failures, 1);
    assert_eq!(hot.login_guard("ann@example.com", at(1), policy).await.unwrap().failures, 1);
}

#[tokio::test]
async fn login_keys_stay_bounded_dropping_expired_then_oldest() {
    let hot = MemoryHot { max_logins: 100, ..MemoryHot::new() };
    let policy = LockoutPolicy::default();
    let len = || hot.logins.lock().keys.len();
    for i in 0..100 {
        hot.login_failed(&format!("old-{i}@example.com"), at(0), policy).await.unwrap();
    }
    for i in 0..50 {
        hot.login_failed(&format!("new-{i}@example.com"), at(10), policy).await.unwrap();
    }
    assert!(len() <= 100);
    assert_eq!(hot.login_guard("old-0@example.com", at(10), policy).await.unwrap(), LoginGuard::default());
    assert_eq!(hot.login_guard("old-99@example.com", at(10), policy).await.unwrap().failures, 1);

    // At 21 minutes the old ones have expired: when the map fills they go, every new one stays.
    for i in 0..10 {
        hot.login_failed(&format!("flood-{i}@example.com"), at(21), policy).await.unwrap();
        assert!(len() <= 100);
    }
    for i in 0..50 {
        let g = hot.login_guard(&format!("new-{i}@example.com"), at(21), policy).await.unwrap();
        assert_eq!(g.failures, 1, "new-{i} kept");
    }
    for i in 10..1_000 {
        hot.login_failed(&format!("flood-{i}@example.com"), at(21), policy).await.unwrap();
        assert!(len() <= 100);
    }
    assert_eq!(hot.login_guard("flood-999@example.com", at(21), policy).await.unwrap().failures, 1);
    assert_eq!(hot.login_guard("new-0@example.com", at(21), policy).await.unwrap(), LoginGuard::default());
}
