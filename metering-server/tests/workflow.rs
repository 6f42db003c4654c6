//! The original workflow end to end over real HTTP: sign up, track until the quota, premium
//! on free, credits on a small plan, replays, lockout and unlock, usage and summaries, and
//! a plan change applied at once.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestServer, call};
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_original_workflow() {
    let s = TestServer::start().await;

    // Sign-ups: one on free (the default), one on pro.
    let free = s.signup("free@example.com", None).await;
    let pro = s.signup("pro@example.com", Some("pro")).await;
    let me = s.http.get("/api/me", Some(&free.token)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["email"], json!("free@example.com"));
    assert_eq!(me.body["role"], json!("user"));
    assert_eq!(me.body["tenant"]["id"], json!(free.tenant));
    assert_eq!(me.body["tenant"]["plan"], json!("free"));
    assert_eq!(me.body["tenant"]["status"], json!("active"));

    // Free: ten calls a day, then 429.
    for i in 0..10 {
        let a = s.track(&free.token, &call(&format!("/notes/{i}"))).await;
        assert_eq!(a.status, StatusCode::OK, "call {i}: {}", a.text);
    }
    let a = s.track(&free.token, &call("/notes")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.header("retry-after").is_some());

    // Premium on free: 403; on pro: allowed.
    let mut premium = call("/gpt");
    premium["premium"] = json!(true);
    s.advance(Duration::from_secs(12 * 3600)); // a new day for free
    let a = s.track(&free.token, &premium).await;
    assert_eq!((a.status, a.body["reason"].clone()), (StatusCode::FORBIDDEN, json!("premium_not_in_plan")));
    assert_eq!(s.track(&pro.token, &premium).await.status, StatusCode::OK);

    // An admin makes a small plan; credits run out on it: 402.
    let admin = s.admin().await;
    let tiny = json!({ "id": "tiny", "name": "Tiny", "monthly_credits": 3, "limits": [{ "max": 1000, "per": "day" }],
        "premium": false, "overdraft": 0 });
    let a = s.http.post("/admin/plans", Some(&admin), &tiny).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let small = s.signup("small@example.com", Some("tiny")).await;
    let mut costly = call("/export");
    costly["credits_used"] = json!(2);
    assert_eq!(s.track(&small.token, &costly).await.status, StatusCode::OK);
    let a = s.track(&small.token, &costly).await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{}", a.text);
    assert_eq!(
        (a.body["reason"].clone(), a.body["credits_remaining"].clone()),
        (json!("insufficient_credits"), json!(1))
    );
    // An admin grants credits; the call goes through.
    let path = format!("/admin/tenants/{}/credits", small.tenant);
    let a = s.http.post(&path, Some(&admin), &json!({ "amount": 10, "reason": "trial extension" })).await;
    assert_eq!((a.status, a.body["remaining"].clone()), (StatusCode::OK, json!(11)), "{}", a.text);
    assert_eq!(s.track(&small.token, &costly).await.status, StatusCode::OK);

    // A replayed event_id: the first decision, nothing charged.
    let mut once = call("/notes");
    once["event_id"] = json!("order-42");
    let first = s.track(&pro.token, &once).await;
    let before = s.http.get("/api/credits", Some(&pro.token)).await.body["used"].clone();
    let again = s.track(&pro.token, &once).await;
    assert_eq!(again.body, first.body);
    assert_eq!(s.http.get("/api/credits", Some(&pro.token)).await.body["used"], before);

    // Bad passwords lock the account; an admin unlocks it.
    let mut locked = false;
    for _ in 0..10 {
        let a = s.login("free@example.com", "not the password at all").await;
        assert!(a.status.is_client_error(), "{}", a.text);
        if a.status != StatusCode::UNAUTHORIZED {
            locked = true;
            break;
        }
    }
    assert!(locked, "bad passwords never locked the account");
    let a = s.login("free@example.com", PASSWORD).await;
    assert!(a.status.is_client_error(), "a locked account logged in: {}", a.text);
    let a = s.http.post(&format!("/admin/tenants/{}/unlock", free.tenant), Some(&admin), &json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(s.login("free@example.com", PASSWORD).await.status, StatusCode::OK);

    // Usage and summaries: the free tenant's eleven calls of yesterday and one of today.
    let usage = s.http.get("/api/usage?limit=5", Some(&free.token)).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    let items = usage.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["endpoint"], json!("/gpt"));
    assert_eq!(items[0]["reason"], json!("premium_not_in_plan"));
    let mut seen = items.len();
    let mut cursor = usage.body["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = s.http.get(&format!("/api/usage?limit=5&cursor={c}"), Some(&free.token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen += page.body["items"].as_array().unwrap().len();
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 12);
    let only_gpt = s.http.get("/api/usage?endpoint=/gpt", Some(&free.token)).await;
    assert_eq!(only_gpt.body["items"].as_array().unwrap().len(), 1);
    let by_day = s.http.get("/api/usage/summary?group_by=day", Some(&free.token)).await;
    assert_eq!(by_day.status, StatusCode::OK, "{}", by_day.text);
    assert_eq!(
        by_day.body["groups"],
        json!([
            { "key": "2026-03-14", "calls": 11, "denied": 1, "credits": 10 },
            { "key": "2026-03-15", "calls": 1, "denied": 1, "credits": 0 },
        ])
    );
    let by_service = s.http.get("/api/usage/summary", Some(&free.token)).await;
    assert_eq!(by_service.body["groups"][0]["key"], json!("notes-api"));
    assert_eq!(by_service.body["groups"][0]["calls"], json!(12));

    // The admin moves free's tenant to a plan of two calls a day: it applies at once,
    // and what was spent today still counts.
    let two =
        json!({ "id": "two", "name": "Two a day", "monthly_credits": 100, "limits": [{ "max": 2, "per": "day" }] });
    assert_eq!(s.http.post("/admin/plans", Some(&admin), &two).await.status, StatusCode::CREATED);
    let a = s.http.patch(&format!("/admin/tenants/{}", free.tenant), Some(&admin), &json!({ "plan": "two" })).await;
    assert_eq!((a.status, a.body["plan"].clone()), (StatusCode::OK, json!("two")), "{}", a.text);
    let a = s.track(&free.token, &call("/notes")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["limits"][0]["limit"], json!(2));
    assert_eq!(s.track(&free.token, &call("/notes")).await.status, StatusCode::OK);
    assert_eq!(s.track(&free.token, &call("/notes")).await.status, StatusCode::TOO_MANY_REQUESTS);
    // And a change of the plan itself applies at once too.
    let three = json!({ "name": "Three a day", "monthly_credits": 100, "limits": [{ "max": 3, "per": "day" }] });
    let a = s.http.put("/admin/plans/two", Some(&admin), &three).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = s.track(&free.token, &call("/notes")).await;
    assert_eq!((a.status, a.body["limits"][0]["remaining"].clone()), (StatusCode::OK, json!(0)), "{}", a.text);

    // Every admin change is in the audit log, newest first.
    let audit = s.http.get("/admin/audit", Some(&admin)).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    let mine = ["plan.create", "plan.update", "tenant.update", "tenant.credits", "tenant.unlock"];
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| mine.contains(a))
        .collect();
    assert_eq!(
        actions,
        ["plan.update", "tenant.update", "plan.create", "tenant.unlock", "tenant.credits", "plan.create"]
    );
    s.stop().await;
}
