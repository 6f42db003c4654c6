//! Promise 7 over HTTP: bad input gets a clear 4xx JSON error in the standard shape, never a
//! panic or a 500, on every route.

mod common;

use common::{TestServer, call};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

/// Routes that take a JSON body, with a path that exists.
fn body_routes(tenant: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/auth/signup".into()),
        (Method::POST, "/auth/login".into()),
        (Method::POST, "/api/track".into()),
        (Method::POST, "/api/track/batch".into()),
        (Method::PATCH, format!("/admin/tenants/{tenant}")),
        (Method::POST, format!("/admin/tenants/{tenant}/credits")),
        (Method::POST, "/admin/plans".into()),
        (Method::PUT, "/admin/plans/free".into()),
    ]
}

/// Bodies no route accepts, with their content type.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let json = "application/json";
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    vec![
        (json, b"".to_vec()),
        (json, b"{".to_vec()),
        (json, b"{\"a\":".to_vec()),
        (json, b"null".to_vec()),
        (json, b"[]".to_vec()),
        (json, b"\"text\"".to_vec()),
        (json, b"42".to_vec()),
        (json, b"{}".to_vec()),
        (json, b"{\"events\": {}}".to_vec()),
        (json, deep.into_bytes()),
        (json, b"{\"email\": \"\xff\xfe\"}".to_vec()),
        (json, b"{\"service_name\": 1, \"endpoint\": [], \"method\": {}}".to_vec()),
        (json, b"{\"amount\": 1e400}".to_vec()),
        (json, b"{\"name\": null, \"monthly_credits\": -5}".to_vec()),
        ("text/plain", b"{\"service_name\": \"s\", \"endpoint\": \"/\", \"method\": \"GET\"}".to_vec()),
        ("application/x-www-form-urlencoded", b"a=b".to_vec()),
    ]
}

fn assert_shape(what: &str, status: StatusCode, body: &Value, text: &str) {
    assert!(status.is_client_error(), "{what}: answered {status}: {text}");
    let error = &body["error"];
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()) && error["message"].is_string(),
        "{what}: not the standard error shape: {text}"
    );
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_in_the_standard_shape_on_every_route() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    for (method, path) in body_routes(&u.tenant) {
        for (content_type, body) in bad_bodies() {
            let a =
                s.http.raw(method.clone(), &path, Some(&admin), &[("content-type", content_type)], body.clone()).await;
            let what = format!("{method} {path} <- {:?}", String::from_utf8_lossy(&body[..body.len().min(60)]));
            assert_shape(&what, a.status, &a.body, &a.text);
        }
    }
    // Nothing was half-written: the plans and the tenant are as they were.
    let me = s.http.get("/api/me", Some(&u.token)).await;
    assert_eq!(
        (me.body["tenant"]["plan"].clone(), me.body["tenant"]["status"].clone()),
        (json!("free"), json!("active"))
    );
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!((credits.body["used"].clone(), credits.body["granted"].clone()), (json!(0), json!(0)));
}

#[tokio::test]
async fn bad_track_fields_name_the_field() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let long = "x".repeat(600);
    let with = |k: &str, v: Value| {
        let mut b = call("/notes");
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("service_name", json!("")), 422, "service_name"),
        (with("service_name", json!("   ")), 422, "service_name"),
        (with("service_name", json!(long.clone())), 422, "service_name"),
        (with("service_name", json!("a\u{0007}b")), 422, "service_name"),
        (with("service_name", json!(5)), 422, "service_name"),
        (with("endpoint", json!(long.repeat(2))), 422, "endpoint"),
        (with("endpoint", json!(null)), 422, "endpoint"),
        (with("method", json!("FETCH")), 422, "method"),
        (with("method", json!("")), 422, "method"),
        (with("credits_used", json!(-1)), 422, "credits_used"),
        (with("credits_used", json!(1_000_001)), 422, "credits_used"),
        (with("credits_used", json!(1e300)), 422, "credits_used"),
        (with("credits_used", json!("3")), 422, "credits_used"),
        (with("credits_used", json!(u64::MAX)), 422, "credits_used"),
        (with("premium", json!("yes")), 422, "premium"),
        (with("event_id", json!("")), 422, "event_id"),
        (with("event_id", json!("has space")), 422, "event_id"),
        (with("event_id", json!("e".repeat(129))), 422, "event_id"),
        (with("feature", json!("bad feature!")), 422, "feature"),
        (with("region", json!("")), 422, "region"),
        (with("timestamp", json!("yesterday")), 422, "timestamp"),
        (with("timestamp", json!("2026-13-45T00:00:00Z")), 422, "timestamp"),
        (with("timestamp", json!("2020-01-01T00:00:00Z")), 422, "timestamp"),
        (with("timestamp", json!("2099-01-01T00:00:00Z")), 422, "timestamp"),
        (with("timestamp", json!(1_700_000_000)), 422, "timestamp"),
        (with("tenant_id", json!("other-tenant")), 403, "tenant_id"),
        // The shape of the id is checked before the caller's right to it.
        (with("tenant_id", json!("")), 422, "tenant_id"),
        (with("tenant_id", json!("t".repeat(65))), 422, "tenant_id"),
        (with("tenant_id", json!("not a tenant")), 422, "tenant_id"),
        (with("tenant_id", json!(7)), 422, "tenant_id"),
    ];
    for (body, status, field) in cases {
        let a = s.track(&u.token, &body).await;
        assert_shape(&body.to_string(), a.status, &a.body, &a.text);
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.text);
        assert_eq!(a.body["error"]["field"], json!(field), "{body}: {}", a.text);
    }
    // Nothing was charged or recorded.
    let usage = s.http.get("/api/usage", Some(&u.token)).await;
    assert_eq!(usage.body["items"], json!([]), "{}", usage.text);
}

#[tokio::test]
async fn a_missing_body_field_is_named() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let path = format!("/admin/tenants/{}/credits", u.tenant);
    s.http.post(&path, Some(&admin), &json!({ "amount": 5 })).await.assert_error(422, Some("reason"));
    s.http.post(&path, Some(&admin), &json!({ "reason": "goodwill" })).await.assert_error(422, Some("amount"));
    s.http.post("/api/keys", Some(&u.token), &json!({})).await.assert_error(422, Some("name"));
    s.http.post("/auth/login", None, &json!({ "email": "ada@example.com" })).await.assert_error(422, Some("password"));
    let credits = s.http.get("/api/credits", Some(&u.token)).await;
    assert_eq!(credits.body["granted"], json!(0), "{}", credits.text);
}

#[tokio::test]
async fn path_ids_that_are_not_utf8_get_the_standard_shape_on_every_route() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let plan = json!({ "name": "x", "monthly_credits": 1, "limits": [] });
    let cases: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (Method::GET, "/admin/tenants/%ff", None, &admin),
        (Method::PATCH, "/admin/tenants/%ff", Some(json!({ "status": "active" })), &admin),
        (Method::POST, "/admin/tenants/%ff/credits", Some(json!({ "amount": 5, "reason": "x" })), &admin),
        (Method::POST, "/admin/tenants/%ff/unlock", None, &admin),
        (Method::PUT, "/admin/plans/%ff", Some(plan), &admin),
        (Method::DELETE, "/api/keys/%ff", None, &admin),
        (Method::DELETE, "/api/keys/%c3%28", None, &u.token),
    ];
    for (method, path, body, token) in cases {
        let a = match body {
            Some(b) => s.http.json(method.clone(), path, Some(token), &b).await,
            None => s.http.raw(method.clone(), path, Some(token), &[], "").await,
        };
        let what = format!("{method} {path}");
        assert_shape(&what, a.status, &a.body, &a.text);
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", a.text);
        assert_eq!(a.body["error"]["field"], json!("id"), "{what}: {}", a.text);
        assert!(a.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{what}");
    }
}

#[tokio::test]
async fn bad_query_strings_name_the_parameter() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let bad_range = "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z";
    let cases: Vec<(&str, &str, &str)> = vec![
        ("/api/usage", "limit=0", "limit"),
        ("/api/usage", "limit=1001", "limit"),
        ("/api/usage", "limit=-1", "limit"),
        ("/api/usage", "limit=abc", "limit"),
        ("/api/usage", "limit=1&limit=2", "limit"),
        ("/api/usage", "from=yesterday", "from"),
        ("/api/usage", "to=2026-02-30T00:00:00Z", "to"),
        ("/api/usage", bad_range, "to"),
        ("/api/usage", "method=FETCH", "method"),
        ("/api/usage", "service=", "service"),
        ("/api/usage", "cursor=zz", "cursor"),
        ("/api/usage", "cursor=3a", "cursor"),
        ("/api/usage", "cursor=%00%01", "cursor"),
        ("/api/usage/summary", "group_by=planet", "group_by"),
        ("/api/usage/summary", "group_by=tenant", "group_by"),
        ("/api/usage/summary", "from=1", "from"),
        ("/admin/usage", "tenant_id=%20", "tenant_id"),
        ("/admin/usage", "limit=9999999999999999999999", "limit"),
        ("/admin/tenants", "limit=0", "limit"),
        ("/admin/tenants", "after=a%20b", "after"),
        ("/admin/stats", bad_range, "to"),
        ("/admin/stats", "from=%FF", "from"),
        ("/admin/audit", "limit=x", "limit"),
        ("/admin/audit", "before=not%20an%20id", "before"),
        ("/api/keys", "tenant_id=a%20b", "tenant_id"),
        ("/api/keys", "limit=0", "limit"),
        ("/api/keys", "after=", "after"),
    ];
    for (path, query, field) in cases {
        let a = s.http.get(&format!("{path}?{query}"), Some(&admin)).await;
        let what = format!("GET {path}?{query}");
        assert_shape(&what, a.status, &a.body, &a.text);
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", a.text);
        assert_eq!(a.body["error"]["field"], json!(field), "{what}: {}", a.text);
    }
}

#[tokio::test]
async fn unknown_routes_and_oversized_bodies_answer_in_the_standard_shape() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    for path in ["/nope", "/api", "/api/track/", "/admin/tenants/x/y/z", "/%2e%2e/etc/passwd"] {
        let a = s.http.get(path, Some(&u.token)).await;
        assert_shape(path, a.status, &a.body, &a.text);
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
    }
    let a = s.http.get("/api/track", Some(&u.token)).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", a.text);
    assert_shape("GET /api/track", a.status, &a.body, &a.text);
    let big = format!("{{\"events\": [{}]}}", vec![call("/x").to_string(); 30_000].join(","));
    assert!(big.len() > metering_server::MAX_BODY_BYTES);
    let a = s
        .http
        .raw(Method::POST, "/api/track/batch", Some(&u.token), &[("content-type", "application/json")], big)
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);
    assert_shape("/api/track/batch", a.status, &a.body, &a.text);
    // The server is still fine.
    assert_eq!(s.track(&u.token, &call("/x")).await.status, StatusCode::OK);
}

/// The credits the user's tenant has used.
async fn used(s: &TestServer, token: &str) -> Value {
    s.http.get("/api/credits", Some(token)).await.body["used"].clone()
}

#[tokio::test]
async fn only_objects_with_known_fields_are_bodies() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let json = [("content-type", "application/json")];
    // An array in place of the event is refused, and charges nothing.
    let array = br#"[null, "notes-api", "/e", "GET", 1, false, null, null, null, null]"#.to_vec();
    let a = s.http.raw(Method::POST, "/api/track", Some(&u.token), &json, array).await;
    a.assert_error(422, None);
    assert_eq!(a.body["error"]["code"], "invalid_body");
    // An unknown field is named, on every route that takes a body.
    for (method, path) in body_routes(&u.tenant) {
        let a = s.http.json(method.clone(), &path, Some(&admin), &json!({"colour": "blue"})).await;
        a.assert_error(422, Some("colour"));
    }
    let mut event = call("/e");
    event["colour"] = json!("blue");
    s.track(&u.token, &event).await.assert_error(422, Some("colour"));
    let a = s.http.post("/api/track/batch", Some(&u.token), &json!({"events": [event]})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["results"][0]["error"]["field"], "colour");
    // A wrong type is named on every route, not taken for bad JSON.
    let path = format!("/admin/tenants/{}", u.tenant);
    s.http.patch(&path, Some(&admin), &json!({"status": {}})).await.assert_error(422, Some("status"));
    s.http.patch(&path, Some(&admin), &json!({"status": []})).await.assert_error(422, Some("status"));
    s.http.post("/auth/login", None, &json!({"email": {}, "password": "x"})).await.assert_error(422, Some("email"));
    assert_eq!(used(&s, &u.token).await, json!(0));
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_quickly_and_charges_nothing() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let depth = 100_000;
    let body = format!(
        r#"{{"service_name": "notes-api", "endpoint": "/e", "method": "GET", "x": {}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let started = std::time::Instant::now();
    let a = s.http.raw(Method::POST, "/api/track", Some(&u.token), &[("content-type", "application/json")], body).await;
    a.assert_error(422, None);
    assert_eq!(a.body["error"]["code"], "too_deep");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(used(&s, &u.token).await, json!(0));
}

#[tokio::test]
async fn a_bearer_token_and_an_api_key_together_are_refused() {
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let other = s.signup("bob@example.com", None).await;
    let key = s.http.post("/api/keys", Some(&other.token), &json!({"name": "k"})).await;
    let key = key.body["key"].as_str().expect("key").to_owned();
    let headers = [("content-type", "application/json"), ("x-api-key", key.as_str())];
    let body = serde_json::to_vec(&call("/e")).unwrap();
    let a = s.http.raw(Method::POST, "/api/track", Some(&u.token), &headers, body.clone()).await;
    a.assert_error(400, None);
    assert_eq!(a.body["error"]["code"], "ambiguous_credentials");
    // Even on a route open to anonymous callers.
    let login = serde_json::to_vec(&json!({"email": "ada@example.com", "password": "x"})).unwrap();
    s.http.raw(Method::POST, "/auth/login", Some(&u.token), &headers, login).await.assert_error(400, None);
    assert_eq!(used(&s, &u.token).await, json!(0));
    assert_eq!(used(&s, &other.token).await, json!(0));
}

#[tokio::test]
async fn a_body_shorter_than_its_length_gets_a_json_408_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let u = s.signup("ada@example.com", None).await;
    let mut socket = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/track HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"service_name\":",
        u.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        metering_server::error::BODY_TIMEOUT + std::time::Duration::from_secs(5),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer within the body timeout");
    assert!(started.elapsed() < metering_server::REQUEST_TIMEOUT);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "request_timeout", "{text}");
    assert_eq!(used(&s, &u.token).await, json!(0));
}

#[tokio::test]
async fn cursors_are_opaque_signed_and_good_for_the_tenant_that_listed_only() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let ada = s.signup("ada@example.com", None).await;
    let bob = s.signup("bob@example.com", None).await;
    for i in 0..3 {
        assert_eq!(s.track(&ada.token, &call(&format!("/e{i}"))).await.status, StatusCode::OK);
    }
    let first = s.http.get("/api/usage?limit=2", Some(&ada.token)).await;
    let cursor = first.body["next_cursor"].as_str().expect("a next page").to_owned();
    let readable: String = ada.tenant.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(cursor.starts_with("v1") && !cursor.contains(&readable), "{cursor}");
    let next = s.http.get(&format!("/api/usage?limit=2&cursor={cursor}"), Some(&ada.token)).await;
    assert_eq!(next.body["items"].as_array().map(Vec::len), Some(1), "{}", next.text);
    // Another tenant, even an admin, cannot use it; an altered or forged one is refused.
    s.http.get(&format!("/api/usage?cursor={cursor}"), Some(&bob.token)).await.assert_error(422, Some("cursor"));
    s.http.get(&format!("/admin/usage?cursor={cursor}"), Some(&admin)).await.assert_error(422, Some("cursor"));
    let last = cursor.chars().last().map(|c| if c == '0' { '1' } else { '0' }).unwrap_or('0');
    let altered = format!("{}{last}", &cursor[..cursor.len() - 1]);
    s.http.get(&format!("/api/usage?cursor={altered}"), Some(&ada.token)).await.assert_error(422, Some("cursor"));
    let forged: String = format!("1773489600000000:{}/x", ada.tenant).bytes().map(|b| format!("{b:02x}")).collect();
    for bad in [forged.clone(), format!("v1{forged}")] {
        s.http.get(&format!("/api/usage?cursor={bad}"), Some(&ada.token)).await.assert_error(422, Some("cursor"));
    }
    // An admin's own listing gives cursors the admin can use.
    let page = s.http.get("/admin/usage?limit=1", Some(&admin)).await;
    let cursor = page.body["next_cursor"].as_str().expect("a next page").to_owned();
    let next = s.http.get(&format!("/admin/usage?limit=1&cursor={cursor}"), Some(&admin)).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    s.http.get(&format!("/api/usage?cursor={cursor}"), Some(&ada.token)).await.assert_error(422, Some("cursor"));
}
