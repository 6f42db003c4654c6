//! `POST /api/track` and `POST /api/track/batch` over real HTTP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestServer, call};
use hyper::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_allowed_call_answers_its_decision_and_rate_limit_fields() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["allowed"], json!(true));
    assert_eq!(a.body["credits_charged"], json!(1));
    assert_eq!(a.body["credits_remaining"], json!(99));
    assert!(a.body["event_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(a.body["limits"], json!([{ "window": "day", "limit": 10, "remaining": 9, "reset": 43_200 }]));
    assert!(a.body.get("reason").is_none());
    assert_eq!(a.header("ratelimit-limit"), Some("10"));
    assert_eq!(a.header("ratelimit-remaining"), Some("9"));
    assert_eq!(a.header("ratelimit-reset"), Some("43200"));
    assert_eq!(a.header("ratelimit-policy"), Some("\"day\";q=10;w=86400"));
    assert!(a.header("ratelimit").is_some_and(|v| v.contains("r=9")));
    // The record is durable once answered: it is in the ledger.
    let usage = s.http.get("/api/usage", Some(&u.token)).await;
    assert_eq!(usage.body["items"].as_array().map(Vec::len), Some(1), "{}", usage.text);
    assert_eq!(usage.body["items"][0]["event_id"], a.body["event_id"]);
}

#[tokio::test]
async fn a_user_tracks_only_for_its_own_tenant() {
    let s = TestServer::start().await;
    let ada = s.signup("ada@example.com", None).await;
    let bob = s.signup("bob@example.com", None).await;
    let mut body = call("/notes");
    body["tenant_id"] = json!(ada.tenant);
    assert_eq!(s.track(&ada.token, &body).await.status, StatusCode::OK);
    body["tenant_id"] = json!(bob.tenant);
    s.track(&ada.token, &body).await.assert_error(403, Some("tenant_id"));
    // Nothing was charged to bob.
    let credits = s.http.get("/api/credits", Some(&bob.token)).await;
    assert_eq!(credits.body["used"], json!(0), "{}", credits.text);
    // No credential at all.
    s.http.post("/api/track", None, &call("/notes")).await.assert_error(401, None);
}

#[tokio::test]
async fn a_service_key_names_the_tenant_and_an_unknown_one_is_a_bad_field() {
    let s = TestServer::start().await;
    let ada = s.signup("ada@example.com", None).await;
    let admin = s.admin().await;
    let key = s.http.post("/api/keys", Some(&admin), &json!({ "name": "gateway", "any_tenant": true })).await;
    assert!(key.status.is_success(), "{}", key.text);
    let key = key.body["key"].as_str().expect("key").to_owned();
    let send = |body: Value| {
        let key = key.clone();
        let http = s.http.clone();
        async move {
            let bytes = serde_json::to_vec(&body).unwrap();
            http.raw(
                hyper::Method::POST,
                "/api/track",
                None,
                &[("content-type", "application/json"), ("x-api-key", &key)],
                bytes,
            )
            .await
        }
    };
    let mut body = call("/notes");
    body["tenant_id"] = json!(ada.tenant);
    let a = send(body.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    body["tenant_id"] = json!("nobody-here");
    send(body).await.assert_error(422, Some("tenant_id"));
    send(call("/notes")).await.assert_error(422, Some("tenant_id"));
}

#[tokio::test]
async fn a_key_bound_to_a_service_reports_that_service_only() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let a = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "bound", "service_name": "billing-api" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["service_name"], json!("billing-api"), "{}", a.text);
    let key = a.body["key"].as_str().expect("key").to_owned();
    let event = |service: &str| json!({ "service_name": service, "endpoint": "/invoices", "method": "GET" });

    let a = s.http.post_with_key("/api/track", &key, &event("billing-api")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = s.http.post_with_key("/api/track", &key, &event("other-svc")).await;
    a.assert_error(403, Some("service_name"));
    assert_eq!(a.body["error"]["code"], json!("forbidden"));
    // A name of the wrong shape is a bad field first.
    s.http.post_with_key("/api/track", &key, &event(" ")).await.assert_error(422, Some("service_name"));

    // In a batch each event is checked on its own: the other service's gets its error slot.
    let batch = json!({ "events": [event("billing-api"), event("other-svc"), event("billing-api")] });
    let a = s.http.post_with_key("/api/track/batch", &key, &batch).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let results = a.body["results"].as_array().expect("results");
    assert_eq!(results[0]["allowed"], json!(true), "{}", a.text);
    assert_eq!(
        (results[1]["error"]["code"].clone(), results[1]["error"]["field"].clone()),
        (json!("forbidden"), json!("service_name")),
        "{}",
        a.text
    );
    assert_eq!(results[2]["allowed"], json!(true), "{}", a.text);

    // Only the three calls of the bound service were charged and recorded.
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!(credits.body["used"], json!(3), "{}", credits.text);
    let usage = s.http.get("/api/usage", Some(&u.token)).await;
    let items = usage.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{}", usage.text);
    assert!(items.iter().all(|i| i["service_name"] == json!("billing-api")), "{}", usage.text);
    // The user's own token is bound to nothing.
    assert_eq!(s.track(&u.token, &event("other-svc")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_replayed_event_id_answers_the_first_decision_and_charges_nothing() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let mut body = call("/notes");
    body["event_id"] = json!("evt-1");
    body["credits_used"] = json!(5);
    let first = s.track(&u.token, &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = s.track(&u.token, &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!((credits.body["used"].clone(), credits.body["remaining"].clone()), (json!(5), json!(95)));
    body["credits_used"] = json!(6);
    s.track(&u.token, &body).await.assert_error(409, Some("event_id"));
    assert_eq!(s.track(&u.token, &body).await.body["error"]["code"], json!("idempotency_conflict"));
}

#[tokio::test]
async fn denials_answer_their_status_with_the_same_body() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    // Premium on free: 403 with the decision.
    let mut premium = call("/gpt");
    premium["premium"] = json!(true);
    let a = s.track(&u.token, &premium).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!((a.body["allowed"].clone(), a.body["reason"].clone()), (json!(false), json!("premium_not_in_plan")));
    assert_eq!(a.body["credits_charged"], json!(0));
    // Ten calls a day, then 429 with Retry-After until midnight UTC.
    for i in 0..10 {
        assert_eq!(s.track(&u.token, &call("/notes")).await.status, StatusCode::OK, "call {i}");
    }
    let a = s.track(&u.token, &call("/notes")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert_eq!(a.body["reason"], json!("rate_limited"));
    assert_eq!(a.header("retry-after"), Some("43200"));
    assert_eq!(a.header("ratelimit-remaining"), Some("0"));
    // The next day the quota is back.
    s.advance(Duration::from_secs(12 * 3600));
    assert_eq!(s.track(&u.token, &call("/notes")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_batch_answers_one_slot_per_event_in_order() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let mut events: Vec<Value> = (0..12)
        .map(|i| {
            json!({ "service_name": "notes-api", "endpoint": format!("/n/{i}"),
        "method": "GET", "event_id": format!("b-{i}") })
        })
        .collect();
    events[3] = json!({ "service_name": "notes-api", "endpoint": "/x", "method": "FETCH" });
    events[5] = json!({ "service_name": 7, "endpoint": "/x", "method": "GET" });
    events[7] = json!({ "tenant_id": "someone-else", "service_name": "s", "endpoint": "/x", "method": "GET" });
    let a = s.http.post("/api/track/batch", Some(&u.token), &json!({ "events": events })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let results = a.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 12);
    assert_eq!(results[3]["error"]["field"], json!("method"));
    assert_eq!(results[5]["error"]["field"], json!("service_name"));
    assert_eq!(results[7]["error"]["code"], json!("forbidden"));
    // Nine valid events, a quota of ten: all allowed, decided in the submitted order.
    let decided: Vec<&Value> = results.iter().filter(|r| r.get("error").is_none()).collect();
    assert_eq!(decided.len(), 9);
    let remaining: Vec<i64> = decided.iter().map(|r| r["credits_remaining"].as_i64().unwrap()).collect();
    assert_eq!(remaining, (91..=99).rev().collect::<Vec<i64>>());
    assert_eq!(results[0]["event_id"], json!("b-0"));
    // Replaying the batch charges nothing more; two more events hit the quota.
    let again = s.http.post("/api/track/batch", Some(&u.token), &json!({ "events": events })).await;
    assert_eq!(again.body["results"][11], a.body["results"][11]);
    let more = json!({ "events": [call("/a"), call("/b")] });
    let a = s.http.post("/api/track/batch", Some(&u.token), &more).await;
    assert_eq!(a.body["results"][0]["allowed"], json!(true), "{}", a.text);
    assert_eq!(a.body["results"][1]["reason"], json!("rate_limited"));
}

#[tokio::test]
async fn a_batch_must_hold_one_to_a_thousand_events() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let path = "/api/track/batch";
    s.http.post(path, Some(&u.token), &json!({ "events": [] })).await.assert_error(422, Some("events"));
    let many: Vec<Value> = (0..1001).map(|_| call("/x")).collect();
    s.http.post(path, Some(&u.token), &json!({ "events": many })).await.assert_error(422, Some("events"));
    s.http.post(path, Some(&u.token), &json!({})).await.assert_error(422, None);
    s.http.post(path, Some(&u.token), &json!({ "events": "no" })).await.assert_error(422, Some("events"));
}

/// Promise 1 over HTTP: N concurrent calls against a remaining quota of L admit exactly L.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_over_http_admit_exactly_the_quota() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let plan = json!({ "id": "tight", "name": "Tight", "monthly_credits": 1_000_000,
        "limits": [{ "max": 37, "per": "day" }] });
    let a = s.http.post("/admin/plans", Some(&admin), &plan).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let u = s.signup("ada@example.com", Some("tight")).await;
    let n = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let http = s.http.clone();
        let token = u.token.clone();
        tasks.spawn(async move {
            let mut body = call("/notes");
            body["event_id"] = json!(format!("c-{i}"));
            http.post("/api/track", Some(&token), &body).await
        });
    }
    let mut allowed = HashSet::new();
    let mut denied = 0;
    while let Some(a) = tasks.join_next().await {
        let a = a.unwrap();
        match a.status {
            StatusCode::OK => {
                allowed.insert(a.body["event_id"].as_str().unwrap().to_owned());
            }
            StatusCode::TOO_MANY_REQUESTS => denied += 1,
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert_eq!((allowed.len(), denied), (37, n - 37));
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!(credits.body["used"], json!(37));
}
