//! Authentication over HTTP (`app(state).oneshot(..)` on an in-memory engine with a
//! `ManualClock`): sign-up, login and lockout, tokens, API keys, the sign-up limit (one
//! for every instance sharing the hot store).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use metering_core::store::{
    Admission, Admitted, HotSnapshot, HotStore, KeyCount, LockoutPolicy, LoginGuard, MemoryHot, MemoryRecords,
    PeriodCredits,
};
use metering_core::{Engine, Error as CoreError, ManualClock, Period, Role, TenantId, Timestamp};
use metering_server::auth::{ActsFor, DEFAULT_ADMIN_EMAIL, PLATFORM_TENANT};
use metering_server::{AppState, Settings, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "an HS256 secret of at least thirty-two bytes, for the auth tests";
const PASSWORD: &str = "a long enough password";
const ADMIN: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

enum Cred<'a> {
    None,
    Bearer(&'a str),
    Key(&'a str),
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

struct Server {
    state: AppState,
    clock: ManualClock,
    app: Router,
}

impl Server {
    async fn start() -> Server {
        Self::with(&[]).await
    }

    async fn with(extra: &[(&str, &str)]) -> Server {
        let clock = ManualClock::at("2026-03-14T12:00:00Z");
        Self::over(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new()), clock, extra).await
    }

    /// A server over these stores: several of them over the same stores are instances of
    /// one deployment.
    async fn over(
        records: Arc<MemoryRecords>,
        hot: Arc<MemoryHot>,
        clock: ManualClock,
        extra: &[(&str, &str)],
    ) -> Server {
        let engine = Engine::builder(records, hot).clock(clock.clone()).build().unwrap();
        Self::on(engine, clock, extra).await
    }

    /// A server over `engine`, whose clock is `clock`.
    async fn on(engine: Engine, clock: ManualClock, extra: &[(&str, &str)]) -> Server {
        let mut vars = vec![
            ("METERING_JWT_SECRET", SECRET),
            ("METERING_ADMIN_EMAIL", ADMIN),
            ("METERING_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("METERING_ARGON2_MEMORY_KIB", "8"),
            ("METERING_ARGON2_ITERATIONS", "1"),
            ("METERING_SIGNUP_LIMIT", "1000/hour"),
        ];
        vars.extend_from_slice(extra);
        let settings =
            Settings::from_vars(|n| vars.iter().rev().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
        let state = AppState::with_engine(engine, settings).await.unwrap();
        Server { app: app(state.clone()), state, clock }
    }

    async fn call(&self, method: Method, path: &str, cred: Cred<'_>, body: Option<Value>) -> Answer {
        self.call_on(self.app.clone(), method, path, cred, body).await
    }

    async fn call_on(&self, app: Router, method: Method, path: &str, cred: Cred<'_>, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        match cred {
            Cred::None => {}
            Cred::Bearer(t) => req = req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Cred::Key(k) => req = req.header("x-api-key", k),
        }
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Answer { status, headers, body }
    }

    async fn post(&self, path: &str, cred: Cred<'_>, body: Value) -> Answer {
        self.call(Method::POST, path, cred, Some(body)).await
    }

    async fn signup(&self, email: &str) -> Value {
        let a = self.post("/auth/signup", Cred::None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body
    }

    async fn login(&self, email: &str, password: &str) -> Answer {
        self.post("/auth/login", Cred::None, json!({"email": email, "password": password})).await
    }

    async fn admin_token(&self) -> String {
        let a = self.login(ADMIN, ADMIN_PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["access_token"].as_str().unwrap().to_owned()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no `{key}` in {v}")).to_owned()
}

fn assert_error(a: &Answer, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(a.body["error"]["message"].is_string(), "{}", a.body);
    match field {
        Some(f) => assert_eq!(a.body["error"]["field"], f, "{}", a.body),
        None => assert!(a.body["error"].get("field").is_none(), "{}", a.body),
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn forge(header: Value, claims: &Value, signature: &str) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", b64(&header), b64(claims))
}

#[tokio::test]
async fn signup_creates_a_tenant_and_a_user_and_logs_in() {
    let srv = Server::start().await;
    let a = srv.post("/auth/signup", Cred::None, json!({"email": " Ada@Example.com ", "password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let tenant = s(&a.body, "tenant_id");
    assert!(TenantId::new(tenant.clone()).is_ok());
    assert!(tenant.starts_with("ada-"), "{tenant}");
    assert_eq!(a.body["plan"], "free");
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 900);
    let user_id = s(&a.body, "user_id");

    let access = claims(&s(&a.body, "access_token"));
    assert_eq!(access["sub"], user_id.as_str());
    assert_eq!(access["tenant"], tenant.as_str());
    assert_eq!(access["role"], "user");
    assert_eq!(access["typ"], "access");
    assert_eq!(access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(), 900);
    assert!(access["jti"].is_string());
    let refresh = claims(&s(&a.body, "refresh_token"));
    assert_eq!(refresh["typ"], "refresh");
    assert_eq!(refresh["exp"].as_u64().unwrap() - refresh["iat"].as_u64().unwrap(), 30 * 86_400);

    let user = srv.state.engine().user(&user_id).await.unwrap().unwrap();
    assert_eq!((user.email.as_str(), user.role), ("ada@example.com", Role::User));
    assert!(user.password_hash.starts_with("$argon2id$"));
    let t = srv.state.engine().tenant(&TenantId::new(tenant).unwrap()).await.unwrap().unwrap();
    assert_eq!(t.plan.as_str(), "free");

    let token = s(&a.body, "access_token");
    let keys = srv.call(Method::GET, "/api/keys", Cred::Bearer(&token), None).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);

    let b = srv
        .post(
            "/auth/signup",
            Cred::None,
            json!({"email": "bo@example.com", "password": PASSWORD, "plan": "basic", "name": "Bo's shop"}),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    assert_eq!(b.body["plan"], "basic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_signups_for_one_email_make_one_account_and_one_tenant() {
    let srv = Arc::new(Server::start().await);
    let admin = srv.admin_token().await;
    let tenants = |srv: Arc<Server>, admin: String| async move {
        let a = srv.call(Method::GET, "/admin/tenants?limit=1000", Cred::Bearer(&admin), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["items"].as_array().unwrap().len()
    };
    let before = tenants(Arc::clone(&srv), admin.clone()).await;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let srv = Arc::clone(&srv);
            tokio::spawn(async move {
                srv.post("/auth/signup", Cred::None, json!({"email": "race@example.com", "password": PASSWORD})).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap().status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
    assert_eq!(tenants(Arc::clone(&srv), admin).await, before + 1, "the losers left no tenant behind");
    assert_eq!(srv.login("race@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn signup_refuses_bad_input_with_the_field() {
    let srv = Server::start().await;
    srv.signup("ada@example.com").await;
    let cases = [
        (json!({"email": "ADA@example.com ", "password": PASSWORD}), StatusCode::CONFLICT, "email_taken", "email"),
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "email",
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(250)), "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "email",
        ),
        (
            json!({"email": "bo@example.com", "password": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "password",
        ),
        (
            json!({"email": "bo@example.com", "password": "x".repeat(1025)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "password",
        ),
        (
            json!({"email": "bo@example.com", "password": PASSWORD, "plan": "platinum"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "plan",
        ),
        (
            json!({"email": "bo@example.com", "password": PASSWORD, "plan": "Not A Plan!"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "plan",
        ),
        (
            json!({"email": "bo@example.com", "password": PASSWORD, "name": "\u{7}"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "name",
        ),
    ];
    for (body, status, code, field) in cases {
        let a = srv.post("/auth/signup", Cred::None, body.clone()).await;
        assert_error(&a, status, code, Some(field));
    }
    let a = srv
        .post("/auth/signup", Cred::None, json!({"email": "bo@example.com", "password": PASSWORD, "role": "admin"}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused: {}", a.body);
    let a = srv.post("/auth/signup", Cred::None, json!({"email": "bo@example.com"})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(srv.state.engine().user_by_email("bo@example.com").await.unwrap().is_none(), "nothing half-written");
}

#[tokio::test]
async fn login_answers_the_same_for_a_wrong_password_and_an_unknown_email() {
    let srv = Server::start().await;
    srv.signup("ada@example.com").await;
    let ok = srv.login(" ADA@example.com", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    for key in ["access_token", "refresh_token"] {
        assert!(ok.body[key].is_string());
    }
    assert_eq!((ok.body["token_type"].as_str(), ok.body["expires_in"].as_u64()), (Some("Bearer"), Some(900)));
    let wrong = srv.login("ada@example.com", "not the password").await;
    let unknown = srv.login("nobody@example.com", PASSWORD).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials", None);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.status, unknown.status);
    let malformed = srv.login("nobody", PASSWORD).await;
    assert_eq!(malformed.body, wrong.body);
}

#[tokio::test]
async fn five_failures_lock_the_account_until_the_lock_expires() {
    let srv = Server::start().await;
    srv.signup("ada@example.com").await;
    for _ in 0..5 {
        assert_error(
            &srv.login("ada@example.com", "wrong password").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            None,
        );
    }
    let locked = srv.login("ada@example.com", PASSWORD).await;
    assert_error(&locked, StatusCode::LOCKED, "account_locked", None);
    assert_eq!(locked.headers[header::RETRY_AFTER], "900");
    srv.advance(Duration::from_secs(10 * 60));
    let locked = srv.login("ada@example.com", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::LOCKED);
    assert_eq!(locked.headers[header::RETRY_AFTER], "300");
    srv.advance(Duration::from_secs(5 * 60));
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);

    // Unknown e-mails lock the same way, so a lock says nothing about an account.
    for _ in 0..5 {
        srv.login("nobody@example.com", PASSWORD).await;
    }
    assert_eq!(srv.login("nobody@example.com", PASSWORD).await.status, StatusCode::LOCKED);

    // Failures spread over more than the window do not lock.
    for _ in 0..3 {
        srv.login("ada@example.com", "wrong password").await;
    }
    srv.advance(Duration::from_secs(16 * 60));
    for _ in 0..3 {
        srv.login("ada@example.com", "wrong password").await;
    }
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_admin_unlocks_a_tenants_users() {
    let srv = Server::start().await;
    let tenant = s(&srv.signup("ada@example.com").await, "tenant_id");
    let admin = srv.admin_token().await;
    for _ in 0..5 {
        srv.login("ada@example.com", "wrong password").await;
    }
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::LOCKED);
    let tenant_id = TenantId::new(tenant.clone()).unwrap();
    assert_eq!(srv.state.auth().unlock_tenant_users(&tenant_id, "usr_admin").await.unwrap(), 1);
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(srv.state.auth().unlock_tenant_users(&tenant_id, "usr_admin").await.unwrap(), 0);

    for _ in 0..5 {
        srv.login("ada@example.com", "wrong password").await;
    }
    assert!(srv.state.auth().unlock("ADA@example.com").await.unwrap());
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);

    // Through the admin route.
    for _ in 0..5 {
        srv.login("ada@example.com", "wrong password").await;
    }
    let a = srv.post(&format!("/admin/tenants/{tenant}/unlock"), Cred::Bearer(&admin), json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["unlocked"], 1);
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_token_works_once() {
    let srv = Server::start().await;
    let first = srv.signup("ada@example.com").await;
    let refresh = s(&first, "refresh_token");
    let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": refresh})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let second = s(&a.body, "refresh_token");
    assert_ne!(second, refresh);
    let access = s(&a.body, "access_token");
    assert_eq!(srv.call(Method::GET, "/api/keys", Cred::Bearer(&access), None).await.status, StatusCode::OK);

    let again = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": refresh})).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_token", None);
    // A used token coming back revokes the user's other refresh tokens (it may be stolen).
    let after = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": second})).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // An access token is no refresh token; an expired refresh token is refused.
    let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": access})).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let fresh = srv.login("ada@example.com", PASSWORD).await;
    srv.advance(Duration::from_secs(30 * 86_400));
    let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": s(&fresh.body, "refresh_token")})).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": "garbage"})).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn spent_refresh_tokens_are_pruned_and_stay_refused() {
    let srv = Server::start().await;
    let r1 = s(&srv.signup("ada@example.com").await, "refresh_token");
    let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": r1})).await;
    let r2 = s(&a.body, "refresh_token");
    assert_eq!(srv.state.prune_refresh_tokens().await.unwrap(), 1, "the used one");

    let again = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": r1})).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_token", None);
    let revoked = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": r2})).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "a pruned token coming back still revokes the others");
    assert_eq!(srv.state.prune_refresh_tokens().await.unwrap(), 1, "the revoked one");

    srv.login("ada@example.com", PASSWORD).await;
    assert_eq!(srv.state.prune_refresh_tokens().await.unwrap(), 0, "a live one stays");
    srv.advance(Duration::from_secs(31 * 86_400));
    assert_eq!(srv.state.prune_refresh_tokens().await.unwrap(), 1, "an expired one goes");
}

#[tokio::test]
async fn logout_revokes_the_refresh_tokens() {
    let srv = Server::start().await;
    let first = srv.signup("ada@example.com").await;
    let second = srv.login("ada@example.com", PASSWORD).await.body;
    assert_eq!(srv.post("/auth/logout", Cred::None, json!({})).await.status, StatusCode::UNAUTHORIZED);
    let a = srv.call(Method::POST, "/auth/logout", Cred::Bearer(&s(&second, "access_token")), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    for tokens in [&first, &second] {
        let a = srv.post("/auth/refresh", Cred::None, json!({"refresh_token": s(tokens, "refresh_token")})).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(srv.login("ada@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_revokes_the_access_token_it_was_called_with() {
    let srv = Server::start().await;
    let first = s(&srv.signup("ada@example.com").await, "access_token");
    let second = s(&srv.login("ada@example.com", PASSWORD).await.body, "access_token");
    let me = |token: String| {
        let srv = &srv;
        async move { srv.call(Method::GET, "/api/me", Cred::Bearer(&token), None).await.status }
    };
    assert_eq!(me(second.clone()).await, StatusCode::OK, "cached as verified before the logout");
    let a = srv.call(Method::POST, "/auth/logout", Cred::Bearer(&second), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(me(second.clone()).await, StatusCode::UNAUTHORIZED);
    let again = srv.call(Method::POST, "/auth/logout", Cred::Bearer(&second), None).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(first).await, StatusCode::OK, "another session's token lives until it expires");
    let third = s(&srv.login("ada@example.com", PASSWORD).await.body, "access_token");
    assert_eq!(me(third).await, StatusCode::OK);
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    let srv = Server::start().await;
    let body = srv.signup("ada@example.com").await;
    let access = s(&body, "access_token");
    let srv = &srv;
    let get = |token: String| async move { srv.call(Method::GET, "/api/keys", Cred::Bearer(&token), None).await };

    assert_eq!(get(access.clone()).await.status, StatusCode::OK);
    let c = claims(&access);
    let none = forge(json!({"alg": "none", "typ": "JWT"}), &c, "");
    assert_error(&get(none).await, StatusCode::UNAUTHORIZED, "unauthenticated", None);
    let signature = access.rsplit('.').next().unwrap().to_owned();
    let mut tampered = c.clone();
    tampered["role"] = json!("admin");
    assert_eq!(
        get(forge(json!({"alg": "HS256", "typ": "JWT"}), &tampered, &signature)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(b"another secret of at least thirty-two bytes!!").unwrap(),
    )
    .unwrap();
    assert_eq!(get(other_secret).await.status, StatusCode::UNAUTHORIZED);
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(get(hs512).await.status, StatusCode::UNAUTHORIZED);
    let mut no_exp = c.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &no_exp,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(get(no_exp).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(s(&body, "refresh_token")).await.status,
        StatusCode::UNAUTHORIZED,
        "a refresh token is no access token"
    );
    assert_eq!(get("not.a.token".into()).await.status, StatusCode::UNAUTHORIZED);
    let basic = srv
        .app
        .clone()
        .oneshot(Request::get("/api/keys").header(header::AUTHORIZATION, "Basic YTpi").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    srv.advance(Duration::from_secs(899));
    assert_eq!(get(access.clone()).await.status, StatusCode::OK);
    srv.advance(Duration::from_secs(1));
    assert_error(&get(access).await, StatusCode::UNAUTHORIZED, "unauthenticated", None);
}

#[tokio::test]
async fn api_keys_are_created_listed_used_and_revoked() {
    let srv = Server::start().await;
    let ada = srv.signup("ada@example.com").await;
    let ada_token = s(&ada, "access_token");
    let bo = srv.signup("bo@example.com").await;
    let bo_token = s(&bo, "access_token");

    let a = srv.post("/api/keys", Cred::Bearer(&ada_token), json!({"name": "ci", "service_name": "notes-api"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let (id, key) = (s(&a.body, "id"), s(&a.body, "key"));
    assert!(key.starts_with("mk_") && key.len() >= 40, "{key}");

    let list = srv.call(Method::GET, "/api/keys", Cred::Bearer(&ada_token), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let keys = list.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["service_name"], "notes-api");
    assert_eq!(keys[0]["tenant_id"], ada["tenant_id"]);
    assert!(!list.body.to_string().contains(&key), "the secret is shown once");
    assert!(keys[0].get("key_hash").is_none());
    let bo_list = srv.call(Method::GET, "/api/keys", Cred::Bearer(&bo_token), None).await;
    assert_eq!(bo_list.body["keys"].as_array().unwrap().len(), 0);

    // The key authenticates as Ada, for her tenant.
    let caller = srv.state.auth().authenticate_key(&key).await.unwrap();
    assert_eq!(caller.user_id, s(&ada, "user_id"));
    assert_eq!(caller.tenant.as_str(), s(&ada, "tenant_id"));
    assert_eq!(caller.acts_for, ActsFor::Tenant(caller.tenant.clone()));
    let track = json!({"service_name": "notes-api", "endpoint": "/notes", "method": "GET"});
    let a = srv.post("/api/track", Cred::Key(&key), track.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // ... and for nothing but reporting.
    assert_error(
        &srv.call(Method::GET, "/api/keys", Cred::Key(&key), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );

    assert_eq!(
        srv.call(Method::DELETE, &format!("/api/keys/{id}"), Cred::Bearer(&bo_token), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        srv.call(Method::DELETE, &format!("/api/keys/{id}"), Cred::Bearer(&ada_token), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &srv.post("/api/track", Cred::Key(&key), track).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    assert_eq!(
        srv.call(Method::DELETE, &format!("/api/keys/{id}"), Cred::Bearer(&ada_token), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        srv.call(Method::GET, "/api/keys", Cred::Key("mk_unknown"), None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Keys for another tenant or for any tenant: admins only.
    let a =
        srv.post("/api/keys", Cred::Bearer(&ada_token), json!({"name": "x", "tenant_id": s(&bo, "tenant_id")})).await;
    assert_error(&a, StatusCode::FORBIDDEN, "forbidden", None);
    let a = srv.post("/api/keys", Cred::Bearer(&ada_token), json!({"name": "x", "any_tenant": true})).await;
    assert_error(&a, StatusCode::FORBIDDEN, "forbidden", None);
    let a = srv.post("/api/keys", Cred::Bearer(&ada_token), json!({"name": ""})).await;
    assert_error(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("name"));
}

#[tokio::test]
async fn a_service_key_acts_for_any_tenant() {
    let srv = Server::start().await;
    let ada = srv.signup("ada@example.com").await;
    let admin = srv.admin_token().await;
    let a = srv.post("/api/keys", Cred::Bearer(&admin), json!({"name": "gateway", "any_tenant": true})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let key = s(&a.body, "key");
    let caller = srv.state.auth().authenticate_key(&key).await.unwrap();
    assert_eq!(caller.acts_for, ActsFor::AnyTenant);
    assert_eq!(caller.tenant.as_str(), PLATFORM_TENANT);
    assert_eq!(caller.role, Role::Admin);
    assert!(caller.may_act_for(&TenantId::new(s(&ada, "tenant_id")).unwrap()));
    let list = srv.call(Method::GET, "/api/keys", Cred::Bearer(&admin), None).await;
    assert_eq!(list.body["keys"][0]["any_tenant"], true);

    let track =
        json!({"tenant_id": s(&ada, "tenant_id"), "service_name": "notes-api", "endpoint": "/notes", "method": "GET"});
    let a = srv.post("/api/track", Cred::Key(&key), track).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // A service key reports; it does not administer.
    assert_eq!(srv.call(Method::GET, "/admin/tenants", Cred::Key(&key), None).await.status, StatusCode::FORBIDDEN);

    // An admin may also issue a key bound to one tenant.
    let a = srv
        .post("/api/keys", Cred::Bearer(&admin), json!({"name": "for ada", "tenant_id": s(&ada, "tenant_id")}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let caller = srv.state.auth().authenticate_key(&s(&a.body, "key")).await.unwrap();
    assert_eq!(caller.tenant.as_str(), s(&ada, "tenant_id"));
    let a = srv.post("/api/keys", Cred::Bearer(&admin), json!({"name": "x", "tenant_id": "no-such-tenant"})).await;
    assert_error(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("tenant_id"));
}

#[tokio::test]
async fn signups_are_limited_per_client_address() {
    let srv = Server::with(&[("METERING_SIGNUP_LIMIT", "2/hour")]).await;
    let from = |ip: [u8; 4]| srv.app.clone().layer(MockConnectInfo(SocketAddr::from((ip, 40_000))));
    let signup = |app: Router, email: &str| {
        let body = json!({"email": email, "password": PASSWORD});
        let srv = &srv;
        async move { srv.call_on(app, Method::POST, "/auth/signup", Cred::None, Some(body)).await }
    };
    assert_eq!(signup(from([10, 0, 0, 1]), "a@example.com").await.status, StatusCode::CREATED);
    assert_eq!(signup(from([10, 0, 0, 1]), "b@example.com").await.status, StatusCode::CREATED);
    let over = signup(from([10, 0, 0, 1]), "c@example.com").await;
    assert_error(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    assert_eq!(over.headers[header::RETRY_AFTER], "3600");
    assert_eq!(signup(from([10, 0, 0, 2]), "c@example.com").await.status, StatusCode::CREATED);
    srv.advance(Duration::from_secs(3600));
    assert_eq!(signup(from([10, 0, 0, 1]), "d@example.com").await.status, StatusCode::CREATED);

    // Without a client address (no ConnectInfo), sign-ups share one bucket.
    assert_eq!(srv.signup("e@example.com").await["plan"], "free");
    srv.signup("f@example.com").await;
    let a = srv.post("/auth/signup", Cred::None, json!({"email": "g@example.com", "password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn instances_sharing_a_hot_store_share_the_signup_limit() {
    let (records, hot) = (Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new()));
    let clock = ManualClock::at("2026-03-14T12:00:00Z");
    let limit = [("METERING_SIGNUP_LIMIT", "3/hour")];
    let one = Server::over(Arc::clone(&records), Arc::clone(&hot), clock.clone(), &limit).await;
    let two = Server::over(records, hot, clock, &limit).await;
    async fn signup(srv: &Server, email: &str) -> Answer {
        let app = srv.app.clone().layer(MockConnectInfo(SocketAddr::from(([10, 0, 0, 1], 40_000))));
        let body = json!({"email": email, "password": PASSWORD});
        srv.call_on(app, Method::POST, "/auth/signup", Cred::None, Some(body)).await
    }
    assert_eq!(signup(&one, "a@example.com").await.status, StatusCode::CREATED);
    assert_eq!(signup(&two, "b@example.com").await.status, StatusCode::CREATED);
    assert_eq!(signup(&one, "c@example.com").await.status, StatusCode::CREATED);
    for srv in [&two, &one] {
        let over = signup(srv, "d@example.com").await;
        assert_error(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
        assert_eq!(over.headers[header::RETRY_AFTER], "3600", "the limit is one, whichever instance answers");
    }
    one.advance(Duration::from_secs(3600));
    assert_eq!(signup(&two, "d@example.com").await.status, StatusCode::CREATED);
}

/// A hot store whose key counts fail (as an unreachable Redis would); the rest is memory.
struct KeyCountsFail(MemoryHot);

#[async_trait::async_trait]
impl HotStore for KeyCountsFail {
    async fn admit(&self, a: &Admission) -> Result<Admitted, CoreError> {
        self.0.admit(a).await
    }
    async fn revert(&self, a: &Admission) -> Result<(), CoreError> {
        self.0.revert(a).await
    }
    async fn forget(&self, a: &Admission) -> Result<(), CoreError> {
        self.0.forget(a).await
    }
    async fn discard(&self, tenant: &TenantId) -> Result<(), CoreError> {
        self.0.discard(tenant).await
    }
    async fn load(&self, tenant: &TenantId, snapshot: HotSnapshot) -> Result<(), CoreError> {
        self.0.load(tenant, snapshot).await
    }
    async fn grant(
        &self,
        tenant: &TenantId,
        period: Period,
        allowance: u64,
        overdraft: u64,
        amount: i64,
    ) -> Result<Option<i64>, CoreError> {
        self.0.grant(tenant, period, allowance, overdraft, amount).await
    }
    async fn credits(&self, tenant: &TenantId, start: Timestamp) -> Result<Option<PeriodCredits>, CoreError> {
        self.0.credits(tenant, start).await
    }
    async fn clear(&self) -> Result<(), CoreError> {
        self.0.clear().await
    }
    async fn login_failed(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, CoreError> {
        self.0.login_failed(key, now, policy).await
    }
    async fn login_guard(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, CoreError> {
        self.0.login_guard(key, now, policy).await
    }
    async fn clear_login(&self, key: &str) -> Result<(), CoreError> {
        self.0.clear_login(key).await
    }
    async fn clear_logins_from(&self, key: &str) -> Result<(), CoreError> {
        self.0.clear_logins_from(key).await
    }
    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), CoreError> {
        self.0.revoke_token(jti, now, until).await
    }
    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, CoreError> {
        self.0.token_revoked(jti, now).await
    }
    async fn count_key(&self, _: &str, _: Timestamp, _: Duration, _: u32) -> Result<KeyCount, CoreError> {
        Err(CoreError::Unavailable("the hot store is unreachable".into()))
    }
}

#[tokio::test]
async fn a_signup_the_hot_store_cannot_count_is_refused_as_unavailable() {
    let clock = ManualClock::at("2026-03-14T12:00:00Z");
    let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(KeyCountsFail(MemoryHot::new())))
        .clock(clock.clone())
        .build()
        .unwrap();
    let srv = Server::on(engine, clock, &[]).await;
    let a = srv.post("/auth/signup", Cred::None, json!({"email": "a@example.com", "password": PASSWORD})).await;
    assert_error(&a, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None);
    assert!(srv.state.engine().user_by_email("a@example.com").await.unwrap().is_none(), "nothing was created");
}

#[tokio::test]
async fn admins_are_created_updated_and_bootstrapped() {
    let srv = Server::start().await;
    let admin = srv.state.engine().user_by_email(ADMIN).await.unwrap().unwrap();
    assert_eq!((admin.role, admin.tenant_id.as_str()), (Role::Admin, PLATFORM_TENANT));
    let platform = srv.state.engine().tenant(&admin.tenant_id).await.unwrap().unwrap();
    assert_eq!(platform.plan.as_str(), "pro");
    assert_eq!(claims(&srv.admin_token().await)["role"], "admin");

    // Updating sets the password (and lifts a lock).
    for _ in 0..5 {
        srv.login(ADMIN, "wrong password").await;
    }
    srv.state.auth().create_or_update_admin(ADMIN, "a brand new password").await.unwrap();
    assert_eq!(srv.login(ADMIN, "a brand new password").await.status, StatusCode::OK);
    assert_eq!(srv.login(ADMIN, ADMIN_PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    assert!(srv.state.auth().create_or_update_admin(ADMIN, "short").await.is_err());

    // A user made admin keeps its tenant and gets the admin's rights.
    srv.signup("ada@example.com").await;
    srv.state.auth().create_or_update_admin("ada@example.com", PASSWORD).await.unwrap();
    let token = s(&srv.login("ada@example.com", PASSWORD).await.body, "access_token");
    let a = srv.call(Method::GET, "/admin/tenants", Cred::Bearer(&token), None).await;
    assert!(a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN, "{}", a.status);

    // With no admin configured and none in the platform tenant: admin@localhost, once.
    let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new())).build().unwrap();
    let settings = Settings::from_vars(|n| match n {
        "METERING_ARGON2_MEMORY_KIB" => Some("8".into()),
        "METERING_ARGON2_ITERATIONS" => Some("1".into()),
        _ => None,
    })
    .unwrap();
    let state = AppState::with_engine(engine, settings).await.unwrap();
    let password = state.auth().ensure_admin(None).await.unwrap().expect("a generated password");
    assert!(password.len() >= 20);
    assert_eq!(state.auth().ensure_admin(None).await.unwrap(), None, "only on the first start");
    let user = state.engine().user_by_email(DEFAULT_ADMIN_EMAIL).await.unwrap().unwrap();
    assert_eq!(user.role, Role::Admin);
    let a = Server { app: app(state.clone()), state, clock: ManualClock::default() }
        .login(DEFAULT_ADMIN_EMAIL, &password)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}
