//! The admin routes, and the operations routes (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`, `/docs`), over real HTTP.

mod common;

use common::{ADMIN_EMAIL, TestServer, call};
use hyper::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn only_admins_reach_the_admin_routes() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    for path in ["/admin/tenants", "/admin/plans", "/admin/usage", "/admin/stats", "/admin/audit"] {
        let a = s.http.get(path, Some(&u.token)).await;
        a.assert_error(403, None);
        s.http.get(path, None).await.assert_error(401, None);
    }
    let a = s.http.patch(&format!("/admin/tenants/{}", u.tenant), Some(&u.token), &json!({ "plan": "pro" })).await;
    a.assert_error(403, None);
    let me = s.http.get("/api/me", Some(&u.token)).await;
    assert_eq!(me.body["tenant"]["plan"], json!("free"));
}

#[tokio::test]
async fn tenants_are_listed_in_pages_and_read_with_their_balance() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.signup(&format!("user{i}@example.com"), None).await.tenant);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/tenants?limit=2&after={a}"),
            None => "/admin/tenants?limit=2".to_owned(),
        };
        let page = s.http.get(&path, Some(&admin)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for t in page.body["items"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
        after = page.body["next_after"].as_str().map(str::to_owned);
        if after.is_none() {
            break;
        }
    }
    for id in &ids {
        assert!(seen.contains(id), "{id} not listed in {seen:?}");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    let t = s.http.get(&format!("/admin/tenants/{}", ids[0]), Some(&admin)).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    assert_eq!(t.body["tenant"]["plan"], json!("free"));
    assert_eq!(t.body["balance"]["remaining"], json!(100));
    s.http.get("/admin/tenants/no-such-tenant", Some(&admin)).await.assert_error(404, None);
    s.http.get("/admin/tenants/bad%20id", Some(&admin)).await.assert_error(422, Some("id"));
}

#[tokio::test]
async fn a_tenant_is_suspended_and_moved_between_plans() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let path = format!("/admin/tenants/{}", u.tenant);
    s.http.patch(&path, Some(&admin), &json!({ "plan": "gold" })).await.assert_error(422, Some("plan"));
    s.http.patch(&path, Some(&admin), &json!({})).await.assert_error(422, None);
    s.http.patch(&path, Some(&admin), &json!({ "status": "asleep" })).await.assert_error(422, Some("status"));
    s.http.patch(&path, Some(&admin), &json!({ "plan": "pro", "colour": "red" })).await.assert_error(422, None);
    s.http.patch("/admin/tenants/ghost", Some(&admin), &json!({ "plan": "pro" })).await.assert_error(404, None);

    let a = s.http.patch(&path, Some(&admin), &json!({ "status": "suspended" })).await;
    assert_eq!((a.status, a.body["status"].clone()), (StatusCode::OK, json!("suspended")), "{}", a.text);
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!((a.status, a.body["reason"].clone()), (StatusCode::FORBIDDEN, json!("tenant_suspended")));
    let a = s.http.patch(&path, Some(&admin), &json!({ "status": "active", "plan": "pro" })).await;
    assert_eq!((a.body["status"].clone(), a.body["plan"].clone()), (json!("active"), json!("pro")), "{}", a.text);
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["credits_remaining"], json!(49_999));

    let audit = s.http.get("/admin/audit?limit=1", Some(&admin)).await;
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], json!("tenant.update"));
    assert_eq!(entry["target"], json!(u.tenant));
    assert_eq!(entry["before"]["status"], json!("suspended"));
    assert_eq!(entry["after"]["plan"], json!("pro"));
    assert!(entry["actor"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(audit.body["next_before"].is_string());
}

#[tokio::test]
async fn the_platform_tenant_cannot_be_suspended() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for body in [json!({ "status": "suspended" }), json!({ "status": "suspended", "plan": "free" })] {
        let a = s.http.patch("/admin/tenants/platform", Some(&admin), &body).await;
        a.assert_error(409, Some("status"));
        assert_eq!(a.body["error"]["code"], json!("platform_tenant"), "{}", a.text);
    }
    // Nothing changed, nothing was audited, and the admins still report.
    let t = s.http.get("/admin/tenants/platform", Some(&admin)).await;
    assert_eq!((t.body["tenant"]["status"].clone(), t.body["tenant"]["plan"].clone()), (json!("active"), json!("pro")));
    let audit = s.http.get("/admin/audit", Some(&admin)).await;
    assert_eq!(audit.body["items"], json!([]), "{}", audit.text);
    assert_eq!(s.track(&admin, &call("/notes")).await.status, StatusCode::OK);
    // Other changes to it stay possible.
    let a = s.http.patch("/admin/tenants/platform", Some(&admin), &json!({ "status": "active" })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn only_an_admin_moves_the_platform_tenant_to_another_plan() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let key = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "k" })).await;
    let key = key.body["key"].as_str().expect("key").to_owned();
    let move_to_free = json!({ "plan": "free" });
    s.http.patch("/admin/tenants/platform", Some(&u.token), &move_to_free).await.assert_error(403, None);
    let bytes = serde_json::to_vec(&move_to_free).unwrap();
    let headers = [("content-type", "application/json"), ("x-api-key", key.as_str())];
    let a = s.http.raw(hyper::Method::PATCH, "/admin/tenants/platform", None, &headers, bytes).await;
    a.assert_error(403, None);
    s.http.patch("/admin/tenants/platform", None, &move_to_free).await.assert_error(401, None);
    let t = s.http.get("/admin/tenants/platform", Some(&admin)).await;
    assert_eq!(t.body["tenant"]["plan"], json!("pro"), "{}", t.text);
    let a = s.http.patch("/admin/tenants/platform", Some(&admin), &move_to_free).await;
    assert_eq!((a.status, a.body["plan"].clone()), (StatusCode::OK, json!("free")), "{}", a.text);
}

/// Logs in from the local address `from` (another client than the test's own); the status.
async fn login_from(s: &TestServer, from: &str, email: &str, password: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(s.addr).await.unwrap();
    let body = json!({ "email": email, "password": password }).to_string();
    let request = format!(
        "POST /auth/login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn failures_from_elsewhere_cannot_lock_the_last_admin_out() {
    let s = TestServer::start().await;
    // Someone else keeps failing on the only admin's behalf: that address is locked...
    let mut answers = Vec::new();
    for _ in 0..7 {
        answers.push(login_from(&s, "127.0.0.2", ADMIN_EMAIL, "a wrong password").await);
    }
    assert_eq!(answers, [401, 401, 401, 401, 401, 423, 423]);
    assert_eq!(login_from(&s, "127.0.0.2", ADMIN_EMAIL, common::ADMIN_PASSWORD).await, 423);
    // ... and the admin, from its own, still logs in.
    assert_eq!(s.login(ADMIN_EMAIL, common::ADMIN_PASSWORD).await.status, StatusCode::OK);
    // A user's failures still lock its e-mail from everywhere.
    s.signup("ada@example.com", None).await;
    for _ in 0..5 {
        login_from(&s, "127.0.0.2", "ada@example.com", "a wrong password").await;
    }
    assert_eq!(s.login("ada@example.com", common::PASSWORD).await.status, StatusCode::LOCKED);
}

#[tokio::test]
async fn a_suspended_tenants_users_read_and_revoke_but_mint_no_key() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let key = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "before" })).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    let key_id = key.body["id"].as_str().unwrap().to_owned();
    assert_eq!(s.track(&u.token, &call("/notes")).await.status, StatusCode::OK);
    let path = format!("/admin/tenants/{}", u.tenant);
    let a = s.http.patch(&path, Some(&admin), &json!({ "status": "suspended" })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    // Minting is refused, and nothing is minted.
    let a = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "after" })).await;
    a.assert_error(403, None);
    assert_eq!(a.body["error"]["code"], json!("tenant_suspended"), "{}", a.text);
    // Tracking stays refused, with its decision.
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!((a.status, a.body["reason"].clone()), (StatusCode::FORBIDDEN, json!("tenant_suspended")));
    // Signing in and reading go on.
    assert_eq!(s.login(&u.email, common::PASSWORD).await.status, StatusCode::OK);
    let me = s.http.get("/api/me", Some(&u.token)).await;
    assert_eq!(me.body["tenant"]["status"], json!("suspended"), "{}", me.text);
    for read in ["/api/credits", "/api/usage", "/api/usage/summary"] {
        assert_eq!(s.http.get(read, Some(&u.token)).await.status, StatusCode::OK, "{read}");
    }
    let keys = s.http.get("/api/keys", Some(&u.token)).await;
    let ids: Vec<&str> = keys.body["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [key_id.as_str()], "{}", keys.text);
    // Revoking goes on.
    assert_eq!(s.http.delete(&format!("/api/keys/{key_id}"), Some(&u.token)).await.status, StatusCode::NO_CONTENT);
    let keys = s.http.get("/api/keys", Some(&u.token)).await;
    assert_eq!(keys.body["keys"], json!([]), "{}", keys.text);

    // An admin may still mint a key for it; once reactivated, its users mint again.
    let a = s.http.post("/api/keys", Some(&admin), &json!({ "name": "by admin", "tenant_id": u.tenant })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    s.http.patch(&path, Some(&admin), &json!({ "status": "active" })).await;
    let a = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "again" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
}

#[tokio::test]
async fn admins_list_and_revoke_any_tenants_keys_and_it_is_audited() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let ada = s.signup("ada@example.com", None).await;
    let bob = s.signup("bob@example.com", None).await;
    let bobs_own = s.http.post("/api/keys", Some(&bob.token), &json!({ "name": "bob's" })).await;
    let bobs_own = bobs_own.body["id"].as_str().unwrap().to_owned();

    // An admin mints a key for another tenant: it is audited.
    let minted = s.http.post("/api/keys", Some(&admin), &json!({ "name": "for ada", "tenant_id": ada.tenant })).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text);
    assert_eq!(minted.body["tenant_id"], json!(ada.tenant), "{}", minted.text);
    let (id, secret) =
        (minted.body["id"].as_str().unwrap().to_owned(), minted.body["key"].as_str().unwrap().to_owned());
    let audit = s.http.get("/admin/audit?limit=1", Some(&admin)).await;
    let entry = &audit.body["items"][0];
    assert_eq!((entry["action"].clone(), entry["target"].clone()), (json!("key.create"), json!(id)), "{}", audit.text);
    assert_eq!(entry["after"]["tenant_id"], json!(ada.tenant));
    assert!(!audit.text.contains(&secret), "the secret is never audited");

    // The admin lists it, with its tenant, among every tenant's keys, and by tenant.
    let all = s.http.get("/api/keys", Some(&admin)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let listed = all.body["keys"].as_array().unwrap();
    let found = listed.iter().find(|k| k["id"] == json!(id)).expect("the minted key is listed");
    assert_eq!(found["tenant_id"], json!(ada.tenant));
    assert!(listed.iter().any(|k| k["id"] == json!(bobs_own) && k["tenant_id"] == json!(bob.tenant)));
    assert!(!all.text.contains(&secret));
    let adas = s.http.get(&format!("/api/keys?tenant_id={}", ada.tenant), Some(&admin)).await;
    let ids: Vec<&str> = adas.body["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()], "{}", adas.text);
    let page = s.http.get("/api/keys?limit=1", Some(&admin)).await;
    assert_eq!(page.body["keys"].as_array().unwrap().len(), 1, "{}", page.text);
    let after = page.body["next_after"].as_str().expect("a next page").to_owned();
    let rest = s.http.get(&format!("/api/keys?limit=1000&after={after}"), Some(&admin)).await;
    assert_eq!(rest.body["keys"].as_array().unwrap().len(), listed.len() - 1, "{}", rest.text);
    assert_eq!(rest.body["next_after"], json!(null));

    // Ada sees it as her own; Bob cannot revoke it (it does not exist for him), nor list it.
    let hers = s.http.get("/api/keys", Some(&ada.token)).await;
    assert_eq!(hers.body["keys"][0]["id"], json!(id), "{}", hers.text);
    s.http.delete(&format!("/api/keys/{id}"), Some(&bob.token)).await.assert_error(404, None);
    s.http
        .get(&format!("/api/keys?tenant_id={}", ada.tenant), Some(&bob.token))
        .await
        .assert_error(403, Some("tenant_id"));
    assert_eq!(s.http.post_with_key("/api/track", &secret, &call("/notes")).await.status, StatusCode::OK);

    // The admin revokes it: it stops at once, and it is audited.
    assert_eq!(s.http.delete(&format!("/api/keys/{id}"), Some(&admin)).await.status, StatusCode::NO_CONTENT);
    s.http.post_with_key("/api/track", &secret, &call("/notes")).await.assert_error(401, None);
    let audit = s.http.get("/admin/audit?limit=1", Some(&admin)).await;
    let entry = &audit.body["items"][0];
    assert_eq!((entry["action"].clone(), entry["target"].clone()), (json!("key.revoke"), json!(id)), "{}", audit.text);
    assert_eq!(entry["before"]["tenant_id"], json!(ada.tenant));
    s.http.delete(&format!("/api/keys/{id}"), Some(&admin)).await.assert_error(404, None);
    s.http.delete("/api/keys/no-such-key", Some(&admin)).await.assert_error(404, None);
    // And a user's own tenant's key, revoked by an admin.
    assert_eq!(s.http.delete(&format!("/api/keys/{bobs_own}"), Some(&admin)).await.status, StatusCode::NO_CONTENT);
    let bobs = s.http.get("/api/keys", Some(&bob.token)).await;
    assert_eq!(bobs.body["keys"], json!([]), "{}", bobs.text);
}

#[tokio::test]
async fn credits_are_granted_and_clawed_back_never_below_the_floor() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let path = format!("/admin/tenants/{}/credits", u.tenant);
    for (body, field) in [
        (json!({ "amount": 0, "reason": "x" }), "amount"),
        (json!({ "amount": 1_000_000_001i64, "reason": "x" }), "amount"),
        (json!({ "amount": -1_000_000_001i64, "reason": "x" }), "amount"),
        (json!({ "amount": 5, "reason": "" }), "reason"),
        (json!({ "amount": 5, "reason": "   " }), "reason"),
        (json!({ "amount": 5, "reason": "x".repeat(257) }), "reason"),
        (json!({ "amount": "5", "reason": "x" }), "amount"),
        (json!({ "amount": 1.5, "reason": "x" }), "amount"),
        (json!({ "amount": -101, "reason": "too much" }), "amount"),
    ] {
        s.http.post(&path, Some(&admin), &body).await.assert_error(422, Some(field));
    }
    let a = s.http.post(&path, Some(&admin), &json!({ "amount": 50, "reason": "goodwill" })).await;
    assert_eq!(a.body["remaining"], json!(150), "{}", a.text);
    let a = s.http.post(&path, Some(&admin), &json!({ "amount": -150, "reason": "abuse" })).await;
    assert_eq!(a.body["remaining"], json!(0), "{}", a.text);
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!((a.status, a.body["reason"].clone()), (StatusCode::PAYMENT_REQUIRED, json!("insufficient_credits")));
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!((credits.body["granted"].clone(), credits.body["remaining"].clone()), (json!(-100), json!(0)));
    s.http
        .post("/admin/tenants/ghost/credits", Some(&admin), &json!({ "amount": 5, "reason": "x" }))
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn plans_are_created_validated_and_replaced() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let plans = s.http.get("/admin/plans", Some(&admin)).await;
    let ids: Vec<&str> = plans.body["plans"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    for id in ["basic", "free", "pro"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let starter = json!({ "id": "starter", "name": "Starter", "monthly_credits": 1000,
        "limits": [{ "max": 100, "per": "day" }, { "max": 10, "per": "minute" }],
        "premium": ["gpt"], "overdraft": 50,
        "pricing": [{ "feature": "gpt", "per_call": 5, "per_unit": 0 }] });
    let a = s.http.post("/admin/plans", Some(&admin), &starter).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["premium"], json!(["gpt"]));
    assert_eq!(a.body["pricing"][0]["per_call"], json!(5));
    s.http.post("/admin/plans", Some(&admin), &starter).await.assert_error(409, Some("id"));

    let bad = |patch: Value| {
        let mut p = starter.clone();
        p["id"] = json!("other");
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    for (body, field) in [
        (bad(json!({ "id": "Bad Id" })), "id"),
        (bad(json!({ "name": "" })), "name"),
        (bad(json!({ "monthly_credits": -1 })), "monthly_credits"),
        (bad(json!({ "monthly_credits": 10_000_000_000_000u64 })), "monthly_credits"),
        (bad(json!({ "monthly_credits": 1.5 })), "monthly_credits"),
        (bad(json!({ "limits": [{ "max": 0, "per": "day" }] })), "limits[0].max"),
        (bad(json!({ "limits": [{ "max": 5, "per": "fortnight" }] })), "limits[0].per"),
        (bad(json!({ "limits": [{ "max": 5, "per": "day" }, { "max": 6, "per": "day" }] })), "limits"),
        (bad(json!({ "premium": "yes" })), "premium"),
        (bad(json!({ "overdraft": 2_000_000_000_000u64 })), "overdraft"),
        (bad(json!({ "tier": 3 })), ""),
    ] {
        let a = s.http.post("/admin/plans", Some(&admin), &body).await;
        a.assert_error(422, if field.is_empty() { None } else { Some(field) });
    }
    let mut no_id = starter.clone();
    no_id.as_object_mut().unwrap().remove("id");
    s.http.post("/admin/plans", Some(&admin), &no_id).await.assert_error(422, Some("id"));

    // PUT: the path names the plan; a different body id is refused; an unknown plan is 404.
    let mut changed = no_id.clone();
    changed["monthly_credits"] = json!(2000);
    let a = s.http.put("/admin/plans/starter", Some(&admin), &changed).await;
    assert_eq!((a.status, a.body["monthly_credits"].clone()), (StatusCode::OK, json!(2000)), "{}", a.text);
    let mut other = changed.clone();
    other["id"] = json!("pro");
    s.http.put("/admin/plans/starter", Some(&admin), &other).await.assert_error(422, Some("id"));
    s.http.put("/admin/plans/ghost", Some(&admin), &changed).await.assert_error(404, None);

    let audit = s.http.get("/admin/audit", Some(&admin)).await;
    let entry = &audit.body["items"][0];
    assert_eq!((entry["action"].clone(), entry["target"].clone()), (json!("plan.update"), json!("starter")));
    assert_eq!(
        (entry["before"]["monthly_credits"].clone(), entry["after"]["monthly_credits"].clone()),
        (json!(1000), json!(2000))
    );
}

#[tokio::test]
async fn admins_read_everyones_usage_and_the_stats() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let ada = s.signup("ada@example.com", None).await;
    let bob = s.signup("bob@example.com", None).await;
    for _ in 0..3 {
        s.track(&ada.token, &call("/a")).await;
    }
    s.track(&bob.token, &call("/b")).await;
    let mut premium = call("/gpt");
    premium["premium"] = json!(true);
    s.track(&bob.token, &premium).await;

    let all = s.http.get("/admin/usage", Some(&admin)).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 5, "{}", all.text);
    let bobs = s.http.get(&format!("/admin/usage?tenant_id={}", bob.tenant), Some(&admin)).await;
    assert_eq!(bobs.body["items"].as_array().unwrap().len(), 2);
    assert!(bobs.body["items"].as_array().unwrap().iter().all(|i| i["tenant_id"] == json!(bob.tenant)));
    s.http.get("/admin/usage?tenant_id=a%20b", Some(&admin)).await.assert_error(422, Some("tenant_id"));
    // A user sees only its own.
    let own = s.http.get("/api/usage", Some(&bob.token)).await;
    assert_eq!(own.body["items"].as_array().unwrap().len(), 2);

    let stats = s.http.get("/admin/stats", Some(&admin)).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(stats.body["totals"], json!({ "calls": 5, "denied": 1, "credits": 4 }));
    assert_eq!(stats.body["top_tenants"][0]["key"], json!(ada.tenant));
    assert_eq!(stats.body["top_endpoints"][0], json!({ "key": "/a", "calls": 3, "denied": 0, "credits": 3 }));
    assert_eq!(
        stats.body["denials_by_reason"],
        json!([{ "key": "premium_not_in_plan", "calls": 1, "denied": 1, "credits": 0 }])
    );
    let empty = s.http.get("/admin/stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z", Some(&admin)).await;
    assert_eq!(empty.body["totals"], json!({ "calls": 0, "denied": 0, "credits": 0 }));
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let path = format!("/admin/tenants/{}/credits", u.tenant);
    for i in 1..=5 {
        let a = s.http.post(&path, Some(&admin), &json!({ "amount": i, "reason": format!("grant {i}") })).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    let mut amounts = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let url = match &before {
            Some(b) => format!("/admin/audit?limit=2&before={b}"),
            None => "/admin/audit?limit=2".to_owned(),
        };
        let page = s.http.get(&url, Some(&admin)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for e in page.body["items"].as_array().unwrap() {
            if e["action"] == json!("tenant.credits") {
                amounts.push(e["after"]["amount"].as_i64().unwrap());
            }
        }
        before = page.body["next_before"].as_str().map(str::to_owned);
        if before.is_none() {
            break;
        }
    }
    assert_eq!(amounts, [5, 4, 3, 2, 1]);
    s.http.get("/admin/audit?limit=0", Some(&admin)).await.assert_error(422, Some("limit"));
    s.http.get("/admin/audit?before=%27%3B", Some(&admin)).await.assert_error(422, Some("before"));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let a = s.http.get("/healthz", None).await;
    assert_eq!((a.status, a.body["status"].clone()), (StatusCode::OK, json!("ok")));
    let a = s.http.get("/readyz", None).await;
    assert_eq!((a.status, a.body["status"].clone()), (StatusCode::OK, json!("ready")));
    let u = s.signup("ada@example.com", None).await;
    s.track(&u.token, &call("/notes")).await;
    s.http.get("/no/such/route/42", None).await.assert_error(404, None);
    let m = s.http.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    assert!(m.text.contains("http_requests_total{"), "{}", m.text);
    assert!(m.text.contains(r#"route="/api/track""#), "{}", m.text);
    assert!(m.text.contains(r#"route="unmatched""#), "{}", m.text);
    assert!(!m.text.contains("/no/such/route"), "a raw path became a label");
    assert!(m.text.contains("http_request_duration_seconds_bucket{"), "{}", m.text);
    assert!(m.text.contains(r#"metering_decisions_total{outcome="allowed",reason="none"}"#), "{}", m.text);
    for series in [
        "metering_ledger_queue_depth ",
        "metering_ledger_records_retrying ",
        "metering_ledger_records_dropped_total ",
        "metering_ledger_failed_batches_total ",
        "metering_ledger_queue_full_waits_total ",
    ] {
        assert!(m.text.contains(series), "{series}: {}", m.text);
    }
    assert!(m.text.contains("metering_denials_unrecorded "), "{}", m.text);
}

/// Every route of the reference server, as `(method, path template)`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/auth/signup"),
    ("post", "/auth/login"),
    ("post", "/api/track"),
    ("post", "/api/track/batch"),
    ("post", "/api/keys"),
    ("get", "/api/keys"),
    ("delete", "/api/keys/{id}"),
    ("get", "/api/me"),
    ("get", "/api/credits"),
    ("get", "/api/usage"),
    ("get", "/api/usage/summary"),
    ("get", "/admin/tenants"),
    ("get", "/admin/tenants/{id}"),
    ("patch", "/admin/tenants/{id}"),
    ("post", "/admin/tenants/{id}/credits"),
    ("post", "/admin/tenants/{id}/unlock"),
    ("get", "/admin/plans"),
    ("post", "/admin/plans"),
    ("put", "/admin/plans/{id}"),
    ("get", "/admin/usage"),
    ("get", "/admin/stats"),
    ("get", "/admin/audit"),
    ("post", "/admin/storage/acknowledge"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let s = TestServer::start().await;
    let a = s.http.get("/openapi.json", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = &a.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        assert!(op["responses"].is_object(), "{method} {path} has no responses");
    }
    // Every described route is served (nothing described that answers "no such route").
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "x");
            let m = hyper::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let a = s.http.raw(m, &concrete, None, &[("content-type", "application/json")], "{}").await;
            assert!(
                !(a.status == StatusCode::NOT_FOUND && a.body["error"]["message"] == json!("no such route"))
                    && a.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is described but not served: {} {}",
                a.status,
                a.text
            );
        }
    }
    // The request and response bodies are described.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["TrackRequest", "DecisionBody", "BatchRequest", "BatchResponse", "PlanBody", "UsagePage", "ErrorBody"]
    {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let docs = s.http.get("/docs/", None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.to_lowercase().contains("swagger"), "{}", docs.text);
    let _ = ADMIN_EMAIL;
}

#[tokio::test]
async fn an_unlock_clears_an_admins_lock_from_a_client_address() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for _ in 0..5 {
        s.login(common::ADMIN_EMAIL, "a wrong password").await;
    }
    // Locked from this address (the only one the test speaks from).
    s.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await.assert_error(423, None);
    let a = s.http.post("/admin/tenants/platform/unlock", Some(&admin), &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = s.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    assert_eq!(a.status, 200, "the unlock clears the lock from every address: {}", a.text);
}
