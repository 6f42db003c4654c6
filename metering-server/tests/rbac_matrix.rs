//! Promise 5 at the door: every route x every kind of caller x own/other tenant, as the
//! authorization layer decides it (Casbin policy + authentication).
//!
//! Callers: anonymous, a user, an admin, a user's API key, an admin's service key (acts for
//! any tenant). Allowed means the layer let the call through (the handler may still answer
//! 4xx for the body); denied means 401 for anonymous callers and 403 for the others.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use metering_core::store::{MemoryHot, MemoryRecords};
use metering_core::{Engine, ManualClock};
use metering_server::{AppState, Settings, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "a long enough password";
const ADMIN: &str = "root@example.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    User,
    Admin,
    UserKey,
    ServiceKey,
}

const EVERYONE: &[Who] = &[Who::Anonymous, Who::User, Who::Admin, Who::UserKey, Who::ServiceKey];
const PEOPLE: &[Who] = &[Who::User, Who::Admin];
const REPORTERS: &[Who] = &[Who::User, Who::Admin, Who::UserKey, Who::ServiceKey];
const ADMINS: &[Who] = &[Who::Admin];

struct World {
    app: Router,
    user_token: String,
    admin_token: String,
    user_key: String,
    service_key: String,
    own_tenant: String,
    other_tenant: String,
    own_key_id: String,
    other_key_id: String,
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    cred: Option<(&str, String)>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some((name, value)) = cred {
        req = req.header(name, value);
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

impl World {
    async fn new() -> World {
        let vars = [
            ("METERING_JWT_SECRET", "an HS256 secret of at least thirty-two bytes, for the matrix"),
            ("METERING_ADMIN_EMAIL", ADMIN),
            ("METERING_ADMIN_PASSWORD", PASSWORD),
            ("METERING_ARGON2_MEMORY_KIB", "8"),
            ("METERING_ARGON2_ITERATIONS", "1"),
            ("METERING_SIGNUP_LIMIT", "1000/hour"),
        ];
        let settings = Settings::from_vars(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
        let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new()))
            .clock(ManualClock::at("2026-03-14T12:00:00Z"))
            .build()
            .unwrap();
        let app = app(AppState::with_engine(engine, settings).await.unwrap());
        let signup = |email: &'static str| {
            let app = app.clone();
            async move {
                let body = json!({"email": email, "password": PASSWORD});
                let (status, body) = send(&app, Method::POST, "/auth/signup", None, Some(&body)).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                body
            }
        };
        let own = signup("ada@example.com").await;
        let other = signup("bo@example.com").await;
        let login = json!({"email": ADMIN, "password": PASSWORD});
        let (_, admin) = send(&app, Method::POST, "/auth/login", None, Some(&login)).await;
        let token = |v: &Value| v["access_token"].as_str().unwrap().to_owned();
        let new_key = |t: String, body: Value| {
            let app = app.clone();
            async move {
                let (status, body) =
                    send(&app, Method::POST, "/api/keys", Some(("authorization", format!("Bearer {t}"))), Some(&body))
                        .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned())
            }
        };
        let (own_key_id, user_key) = new_key(token(&own), json!({"name": "own"})).await;
        let (other_key_id, _) = new_key(token(&other), json!({"name": "other"})).await;
        let (_, service_key) = new_key(token(&admin), json!({"name": "gateway", "any_tenant": true})).await;
        World {
            user_token: token(&own),
            admin_token: token(&admin),
            own_tenant: own["tenant_id"].as_str().unwrap().to_owned(),
            other_tenant: other["tenant_id"].as_str().unwrap().to_owned(),
            app,
            user_key,
            service_key,
            own_key_id,
            other_key_id,
        }
    }

    fn cred(&self, who: Who) -> Option<(&'static str, String)> {
        match who {
            Who::Anonymous => None,
            Who::User => Some(("authorization", format!("Bearer {}", self.user_token))),
            Who::Admin => Some(("authorization", format!("Bearer {}", self.admin_token))),
            Who::UserKey => Some(("x-api-key", self.user_key.clone())),
            Who::ServiceKey => Some(("x-api-key", self.service_key.clone())),
        }
    }

    async fn call(&self, who: Who, method: &Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        send(&self.app, method.clone(), path, self.cred(who), body).await
    }

    /// Asserts the layer's decision for every caller: `allowed` pass, the others get 401/403.
    async fn check(&self, method: Method, path: &str, body: Option<Value>, allowed: &[Who]) {
        for &who in EVERYONE {
            let (status, answer) = self.call(who, &method, path, body.as_ref()).await;
            assert_ne!(answer["error"]["message"], "no such route", "{method} {path} is not routed");
            if allowed.contains(&who) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who:?} {method} {path}: expected to pass, got {status} {answer}"
                );
            } else {
                let expected = if who == Who::Anonymous { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
                assert_eq!(status, expected, "{who:?} {method} {path}: {answer}");
                let code = if who == Who::Anonymous { "unauthenticated" } else { "forbidden" };
                assert_eq!(answer["error"]["code"], code, "{who:?} {method} {path}: {answer}");
            }
        }
    }
}

#[tokio::test]
async fn every_route_for_every_caller() {
    let w = World::new().await;

    // Public.
    w.check(Method::POST, "/auth/signup", Some(json!({})), EVERYONE).await;
    w.check(Method::POST, "/auth/login", Some(json!({})), EVERYONE).await;
    w.check(Method::POST, "/auth/refresh", Some(json!({})), EVERYONE).await;
    w.check(Method::GET, "/healthz", None, EVERYONE).await;
    w.check(Method::HEAD, "/healthz", None, EVERYONE).await;
    w.check(Method::GET, "/readyz", None, EVERYONE).await;
    w.check(Method::GET, "/metrics", None, EVERYONE).await;
    w.check(Method::GET, "/openapi.json", None, EVERYONE).await;
    w.check(Method::GET, "/docs/", None, EVERYONE).await;

    // Reporting: people and keys (each for its own tenant: the body names none).
    let own_event = json!({"service_name": "notes-api", "endpoint": "/notes", "method": "GET"});
    w.check(Method::POST, "/api/track", Some(own_event.clone()), REPORTERS).await;
    w.check(Method::POST, "/api/track/batch", Some(json!({"events": [own_event]})), REPORTERS).await;

    // A user's own tenant: people only.
    w.check(Method::GET, "/api/me", None, PEOPLE).await;
    w.check(Method::GET, "/api/credits", None, PEOPLE).await;
    w.check(Method::GET, "/api/usage", None, PEOPLE).await;
    w.check(Method::GET, "/api/usage/summary", None, PEOPLE).await;
    w.check(Method::GET, "/api/keys", None, PEOPLE).await;
    w.check(Method::POST, "/api/keys", Some(json!({"name": "matrix"})), PEOPLE).await;
    w.check(Method::DELETE, "/api/keys/no-such-key", None, PEOPLE).await;

    // The platform: admins only, whichever tenant the path names.
    for tenant in [&w.own_tenant, &w.other_tenant] {
        w.check(Method::GET, &format!("/admin/tenants/{tenant}"), None, ADMINS).await;
        w.check(Method::PATCH, &format!("/admin/tenants/{tenant}"), Some(json!({})), ADMINS).await;
        w.check(Method::POST, &format!("/admin/tenants/{tenant}/credits"), Some(json!({})), ADMINS).await;
        w.check(Method::POST, &format!("/admin/tenants/{tenant}/unlock"), None, ADMINS).await;
    }
    w.check(Method::GET, "/admin/tenants", None, ADMINS).await;
    w.check(Method::GET, "/admin/plans", None, ADMINS).await;
    w.check(Method::POST, "/admin/plans", Some(json!({})), ADMINS).await;
    w.check(Method::PUT, "/admin/plans/free", Some(json!({})), ADMINS).await;
    w.check(Method::GET, "/admin/usage", None, ADMINS).await;
    w.check(Method::GET, "/admin/stats", None, ADMINS).await;
    w.check(Method::GET, "/admin/audit", None, ADMINS).await;
    w.check(Method::POST, "/admin/storage/acknowledge", None, ADMINS).await;

    // Last: a logout revokes the access token it is called with.
    w.check(Method::POST, "/auth/logout", None, PEOPLE).await;
}

#[tokio::test]
async fn own_and_other_tenant_data() {
    let w = World::new().await;
    let event =
        |tenant: &str| json!({"tenant_id": tenant, "service_name": "notes-api", "endpoint": "/notes", "method": "GET"});

    // Reporting for the own tenant passes; for another only a service key may.
    for who in [Who::User, Who::UserKey, Who::ServiceKey] {
        let (status, body) = w.call(who, &Method::POST, "/api/track", Some(&event(&w.own_tenant))).await;
        assert_eq!(status, StatusCode::OK, "{who:?}: {body}");
    }
    for who in [Who::User, Who::UserKey] {
        let (status, body) = w.call(who, &Method::POST, "/api/track", Some(&event(&w.other_tenant))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who:?}: {body}");
    }
    let (status, body) = w.call(Who::ServiceKey, &Method::POST, "/api/track", Some(&event(&w.other_tenant))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Another tenant's key is invisible: 404, never revoked.
    let (status, _) = w.call(Who::User, &Method::DELETE, &format!("/api/keys/{}", w.other_key_id), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, keys) = w.call(Who::User, &Method::GET, "/api/keys", None).await;
    let ids: Vec<&str> = keys["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [w.own_key_id.as_str()]);
    // An admin sees and may revoke every tenant's keys.
    let (_, keys) = w.call(Who::Admin, &Method::GET, &format!("/api/keys?tenant_id={}", w.other_tenant), None).await;
    assert_eq!(keys["keys"][0]["id"], w.other_key_id.as_str(), "{keys}");
    let (status, _) = w.call(Who::User, &Method::DELETE, &format!("/api/keys/{}", w.own_key_id), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = w.call(Who::UserKey, &Method::POST, "/api/track", Some(&event(&w.own_tenant))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked key stops at once");
}

#[tokio::test]
async fn credentials_that_do_not_hold() {
    let w = World::new().await;
    let bad = [("authorization", "Bearer not-a-token".to_owned()), ("x-api-key", "mk_0000".to_owned())];
    for cred in bad {
        // A protected route: 401.
        let (status, body) = send(&w.app, Method::GET, "/api/me", Some(cred.clone()), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        // A public route: the call goes on as anonymous.
        let (status, _) = send(&w.app, Method::GET, "/healthz", Some(cred), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    // An unknown path is a JSON 404, whoever asks.
    for who in EVERYONE {
        let (status, body) = w.call(*who, &Method::GET, "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who:?}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    // A known path with a method no policy line names is never let through.
    let (status, _) = w.call(Who::Admin, &Method::DELETE, "/admin/tenants", None).await;
    assert!(!status.is_success(), "{status}");
}
