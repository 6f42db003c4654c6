//! Many `metering-server` processes behind one address space, sharing Redis (counters,
//! logins, revoked tokens, announcements) and MongoDB (records): quotas exact across them,
//! an `event_id` charged once whichever instances it reaches, sessions, keys and plan
//! changes shared at once, and nothing acknowledged lost when an instance is killed,
//! Redis is flushed, or MongoDB stops and comes back.
//!
//! Needs Redis on 127.0.0.1:6379, `redis-server` installed, and the shared MongoDB test
//! server (`scripts/mongodb-test-server.sh start 27117`, or `METERING_TEST_MONGODB_URI`).

#![cfg(all(feature = "redis", feature = "mongodb"))]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::processes::{
    Instance, OwnMongo, OwnRedis, data_dir, free_port, redis_cli, server_command, shared_mongodb_uri,
};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Answer, Http, PASSWORD};
use hyper::Method;
use metering_core::clock::Timestamp;
use metering_core::event::EventId;
use metering_core::ledger::TimeBasis;
use metering_core::store::{MongoOptions, MongoRecords, UsageLedger};
use metering_core::tenant::TenantId;
use serde_json::{Value, json};

/// How long a change may take to reach another instance before the test gives up (it
/// takes milliseconds; the bound only keeps a broken build from hanging).
const PATIENCE: Duration = Duration::from_secs(10);

/// Instances sharing one Redis prefix and one MongoDB database, both removed at the end.
struct Platform {
    instances: Vec<Instance>,
    redis_port: u16,
    prefix: String,
    mongodb: MongoRecords,
}

impl Platform {
    /// `n` instances on the shared Redis and the shared MongoDB.
    async fn start(n: usize) -> Platform {
        Platform::on(n, 6379, &shared_mongodb_uri()).await
    }

    /// `n` instances on the Redis at `redis_port` and the MongoDB at `mongodb_uri`.
    async fn on(n: usize, redis_port: u16, mongodb_uri: &str) -> Platform {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("test:scale-{name}");
        let database = format!("scale_{name}");
        let env = vec![
            ("METERING_REDIS_URL", format!("redis://127.0.0.1:{redis_port}")),
            ("METERING_REDIS_PREFIX", prefix.clone()),
            ("METERING_REDIS_TIMEOUT", "500ms".to_owned()),
            ("METERING_MONGODB_URI", mongodb_uri.to_owned()),
            ("METERING_MONGODB_DATABASE", database.clone()),
            ("METERING_MONGODB_TIMEOUT", "2s".to_owned()),
        ];
        let mut instances = Vec::new();
        for i in 0..n {
            let addr = free_port();
            instances.push(Instance::start(server_command(addr, &data_dir(&format!("scale-{i}")), &env), addr).await);
        }
        let mongodb = MongoRecords::connect(MongoOptions::new(mongodb_uri, database)).await.expect("MongoDB");
        Platform { instances, redis_port, prefix, mongodb }
    }

    fn http(&self, i: usize) -> &Http {
        &self.instances[i % self.instances.len()].http
    }

    async fn finish(self) {
        self.mongodb.drop_database().await.expect("drop the test's database");
        for key in redis_cli(self.redis_port, &["--scan", "--pattern", &format!("{}:*", self.prefix)]).lines() {
            redis_cli(self.redis_port, &["del", key]);
        }
    }
}

async fn signup(http: &Http, email: &str) -> (String, String) {
    let a = http.post("/auth/signup", None, &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    (a.body["access_token"].as_str().unwrap().to_owned(), a.body["tenant_id"].as_str().unwrap().to_owned())
}

async fn login(http: &Http, email: &str, password: &str) -> Answer {
    http.post("/auth/login", None, &json!({ "email": email, "password": password })).await
}

fn track_body(id: &str) -> Value {
    json!({ "service_name": "notes-api", "endpoint": "/notes", "method": "GET", "event_id": id })
}

/// Asks `check` again until it holds; panics after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The whole ledger of a tenant: calls and credits.
async fn ledger_totals(mongodb: &MongoRecords, tenant: &str) -> (u64, u64) {
    let tenant = TenantId::new(tenant).unwrap();
    let far = Timestamp::from_secs(4_000_000_000);
    let t = mongodb.usage_totals(&tenant, TimeBasis::Event, Timestamp::EPOCH, far).await.unwrap();
    (t.calls, t.credits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_exactly_the_quota_and_charge_each_id_once() {
    let platform = Platform::start(3).await;
    let (token, tenant) = signup(platform.http(0), "quota@example.com").await;
    let quota = 10; // the free plan: 10 calls a day

    // 60 ids, each sent at once to two different instances.
    let mut calls = Vec::new();
    for i in 0..60 {
        for copy in 0..2 {
            let (http, token) = (platform.http(i + copy).clone(), token.clone());
            calls.push(tokio::spawn(async move {
                let a = http.post("/api/track", Some(&token), &track_body(&format!("q-{i}"))).await;
                (i, a)
            }));
        }
    }
    let mut admitted = BTreeSet::new();
    for call in calls {
        let (i, a) = call.await.unwrap();
        assert!(a.status == StatusCode::OK || a.status == StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
        if a.body["allowed"] == true {
            admitted.insert(i);
        }
    }
    assert_eq!(admitted.len(), quota, "exactly the quota across the three instances");
    for i in 0..3 {
        let a = platform.http(i).get("/api/credits", Some(&token)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.body["used"], quota, "instance {i} sees every charge: {}", a.text);
    }
    let (calls, credits) = ledger_totals(&platform.mongodb, &tenant).await;
    assert_eq!((calls, credits), (quota as u64, quota as u64), "each admitted id recorded and charged once");
    platform.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_logouts_plan_changes_and_revoked_keys_apply_on_every_instance() {
    let platform = Platform::start(3).await;
    let (_, tenant) = signup(platform.http(0), "shared@example.com").await;

    // Five failed logins spread over the instances lock the account on all of them.
    for i in 0..5 {
        let a = login(platform.http(i), "shared@example.com", "not the password at all").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    }
    for i in 0..3 {
        let a = login(platform.http(i), "shared@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::LOCKED, "instance {i}: {}", a.text);
    }
    let admin = login(platform.http(2), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = admin.body["access_token"].as_str().unwrap().to_owned();
    let a = platform.http(2).post(&format!("/admin/tenants/{tenant}/unlock"), Some(&admin), &json!({})).await;
    assert!(a.status.is_success(), "{}", a.text);

    // A logout on one instance is refused on the others.
    let a = login(platform.http(0), "shared@example.com", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let token = a.body["access_token"].as_str().unwrap().to_owned();
    for i in 0..3 {
        assert_eq!(platform.http(i).get("/api/me", Some(&token)).await.status, StatusCode::OK);
    }
    let a = platform.http(1).json(Method::POST, "/auth/logout", Some(&token), &json!({})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    for i in 0..3 {
        assert_eq!(platform.http(i).get("/api/me", Some(&token)).await.status, StatusCode::UNAUTHORIZED, "{i}");
    }

    // A plan change by an admin on one instance applies on the others.
    let token =
        login(platform.http(0), "shared@example.com", PASSWORD).await.body["access_token"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let a = platform.http(i).get("/api/credits", Some(&token)).await;
        assert_eq!(a.body["plan"], "free", "instance {i} caches the free plan: {}", a.text);
    }
    let a =
        platform.http(2).patch(&format!("/admin/tenants/{tenant}"), Some(&admin), &json!({ "plan": "basic" })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    for i in 0..2 {
        let (http, token) = (platform.http(i), token.clone());
        eventually(&format!("the plan change on instance {i}"), || async {
            http.get("/api/credits", Some(&token)).await.body["plan"] == "basic"
        })
        .await;
    }

    // A key revoked on one instance is refused on all.
    let a = platform.http(0).post("/api/keys", Some(&token), &json!({ "name": "ci" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let (id, key) = (a.body["id"].as_str().unwrap().to_owned(), a.body["key"].as_str().unwrap().to_owned());
    for i in 0..3 {
        let a = platform.http(i).post_with_key("/api/track", &key, &track_body(&format!("k-{i}"))).await;
        assert_eq!(a.status, StatusCode::OK, "instance {i} caches the key: {}", a.text);
    }
    let a = platform.http(1).delete(&format!("/api/keys/{id}"), Some(&token)).await;
    assert!(a.status.is_success(), "{}", a.text);
    for i in 0..3 {
        let (http, key) = (platform.http(i), key.clone());
        eventually(&format!("the revoked key on instance {i}"), || async {
            http.post_with_key("/api/track", &key, &track_body("after-revoke")).await.status == StatusCode::UNAUTHORIZED
        })
        .await;
    }
    platform.finish().await;
}

/// Sends `n` tracks with fresh ids to the instances in turn, `concurrency` at a time;
/// returns the ids answered with a decision (200 or 429; an instance killed meanwhile
/// answers nothing) and how many were answered 503.
async fn load(https: Vec<Http>, token: &str, round: &str, n: usize, concurrency: usize) -> (Vec<String>, usize) {
    let mut acknowledged = Vec::new();
    let mut unavailable = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if tasks.len() >= concurrency
            && let Some(done) = tasks.join_next().await
        {
            collect(done.unwrap(), &mut acknowledged, &mut unavailable);
        }
        let (http, token, id) = (https[i % https.len()].clone(), token.to_owned(), format!("{round}-{i}"));
        tasks.spawn(async move {
            let a = http.try_json(Method::POST, "/api/track", Some(&token), &track_body(&id)).await;
            (id, a)
        });
    }
    while let Some(done) = tasks.join_next().await {
        collect(done.unwrap(), &mut acknowledged, &mut unavailable);
    }
    (acknowledged, unavailable)
}

fn collect((id, answer): (String, Option<Answer>), acknowledged: &mut Vec<String>, unavailable: &mut usize) {
    match answer {
        Some(a) if a.status == StatusCode::OK || a.status == StatusCode::TOO_MANY_REQUESTS => acknowledged.push(id),
        Some(a) if a.status == StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(a.body["error"]["code"], "store_unavailable", "{}", a.text);
            *unavailable += 1;
        }
        Some(a) => panic!("unexpected answer {}: {}", a.status, a.text),
        None => {}
    }
}

/// Every id in `ids` is recorded once in MongoDB for `tenant`.
async fn all_recorded(mongodb: &MongoRecords, tenant: &str, ids: &[String]) {
    let tenant = TenantId::new(tenant).unwrap();
    for id in ids {
        let record = mongodb.record(&tenant, &EventId::new(id.clone()).unwrap()).await.unwrap();
        assert!(record.is_some(), "acknowledged event {id} is in MongoDB");
    }
}

/// A tenant on the `pro` plan (no daily window worth hitting), signed up on instance 0.
async fn pro_tenant(platform: &Platform, email: &str) -> (String, String) {
    let (token, tenant) = signup(platform.http(0), email).await;
    let admin =
        login(platform.http(0), ADMIN_EMAIL, ADMIN_PASSWORD).await.body["access_token"].as_str().unwrap().to_owned();
    let a = platform.http(0).patch(&format!("/admin/tenants/{tenant}"), Some(&admin), &json!({ "plan": "pro" })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    (token, tenant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_nothing_acknowledged_and_the_others_keep_serving() {
    let mut platform = Platform::start(3).await;
    let (token, tenant) = pro_tenant(&platform, "killed@example.com").await;
    let https: Vec<Http> = (0..3).map(|i| platform.http(i).clone()).collect();
    let running = tokio::spawn({
        let token = token.clone();
        async move { load(https, &token, "kill", 600, 16).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    platform.instances[1].kill();
    let (acknowledged, unavailable) = running.await.unwrap();
    assert_eq!(unavailable, 0, "the surviving instances keep serving");
    assert!(acknowledged.len() >= 400, "the other two answered their share: {}", acknowledged.len());
    all_recorded(&platform.mongodb, &tenant, &acknowledged).await;
    let (calls, _) = ledger_totals(&platform.mongodb, &tenant).await;
    assert!(calls as usize >= acknowledged.len() && calls <= 600, "none recorded twice: {calls}");
    // Calls the killed instance had decided but not yet recorded were never acknowledged;
    // their counts stay in Redis until the tenant's counters are rebuilt from the ledger,
    // so the live balance may count up to the calls in flight more than the ledger does.
    let credits = platform.http(0).get("/api/credits", Some(&token)).await;
    let used = credits.body["used"].as_u64().unwrap();
    assert!(
        (calls..=calls + 16).contains(&used),
        "the balance holds the ledger and at most the calls in flight: {used} vs {calls}"
    );
    platform.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_flushed_from_redis_mid_run_are_rebuilt_from_mongodb_without_an_extra_call() {
    let redis = OwnRedis::start();
    let platform = Platform::on(2, redis.port, &shared_mongodb_uri()).await;
    let (token, tenant) = signup(platform.http(0), "flushed@example.com").await;
    let https: Vec<Http> = (0..2).map(|i| platform.http(i).clone()).collect();
    let (first, _) = load(https.clone(), &token, "before", 6, 3).await;
    assert_eq!(first.len(), 6);
    assert_eq!(redis_cli(redis.port, &["flushall"]), "OK");
    // The free plan's 10 a day: 4 more admitted, whatever instance rebuilds the counters.
    let (second, _) = load(https, &token, "after", 30, 6).await;
    assert_eq!(second.len(), 30, "every call answered");
    for i in 0..2 {
        let a = platform.http(i).get("/api/credits", Some(&token)).await;
        assert_eq!(a.body["used"], 10, "instance {i}: {}", a.text);
    }
    assert_eq!(ledger_totals(&platform.mongodb, &tenant).await, (10, 10), "no extra call admitted");
    platform.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_stopped_under_load_is_answered_in_time_and_service_resumes_by_itself() {
    let mongo = OwnMongo::start();
    let platform = Platform::on(2, 6379, &mongo.uri()).await;
    let (token, tenant) = pro_tenant(&platform, "outage@example.com").await;
    let https: Vec<Http> = (0..2).map(|i| platform.http(i).clone()).collect();
    let (before, _) = load(https.clone(), &token, "before", 50, 8).await;
    assert_eq!(before.len(), 50);

    mongo.stop();
    let started = Instant::now();
    let (during, unavailable) = load(https.clone(), &token, "during", 10, 5).await;
    let waited = started.elapsed();
    assert!(during.is_empty() && unavailable == 10, "no call acknowledged without its record");
    assert!(waited < Duration::from_secs(60), "answered within the timeout, not hung: {waited:?}");
    let ready = platform.http(0).get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text);

    mongo.start_again();
    eventually("readiness after MongoDB returns", || async {
        platform.http(0).get("/readyz", None).await.status == StatusCode::OK
    })
    .await;
    let (after, _) = load(https, &token, "after", 50, 8).await;
    assert_eq!(after.len(), 50, "service resumed by itself");
    let acknowledged: Vec<String> = before.into_iter().chain(after).collect();
    all_recorded(&platform.mongodb, &tenant, &acknowledged).await;
    let (calls, credits) = ledger_totals(&platform.mongodb, &tenant).await;
    assert_eq!(calls, 100, "every acknowledged call, and none of the refused ones");
    let a = platform.http(1).get("/api/credits", Some(&token)).await;
    assert_eq!(a.body["used"], credits, "nothing charged for the refused calls: {}", a.text);
    platform.finish().await;
}
