//! The OpenAPI document is the truth: every status the routes answer here is declared for
//! its route, with a body schema, and the document's shapes are the ones answered.

mod common;

use common::{TestServer, call};
use hyper::Method;
use serde_json::{Value, json};

/// The declared answer of `status` on `method template`, if there is one.
fn declared<'a>(doc: &'a Value, method: &Method, template: &str, status: u16) -> Option<&'a Value> {
    doc["paths"][template][method.as_str().to_ascii_lowercase()]["responses"].get(status.to_string())
}

/// A request: method, route template, path, token, extra header fields, body.
type Case<'a> = (Method, &'a str, String, Option<&'a str>, Vec<(&'a str, &'a str)>, Vec<u8>);

#[tokio::test]
async fn every_observed_status_is_declared_with_a_body_schema() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("ada@example.com", None).await;
    let key = s.http.post("/api/keys", Some(&u.token), &json!({ "name": "k" })).await;
    let key = key.body["key"].as_str().expect("key").to_owned();
    let doc = s.http.get("/openapi.json", None).await.body;
    let tenant_path = format!("/admin/tenants/{}", u.tenant);
    let json_type = ("content-type", "application/json");
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(100), "]".repeat(100));
    let mut cases: Vec<Case> = Vec::new();
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    for (method, template, path, good) in [
        (Method::POST, "/api/track", "/api/track".to_owned(), call("/e")),
        (Method::POST, "/api/track/batch", "/api/track/batch".to_owned(), json!({ "events": [call("/e")] })),
        (Method::PATCH, "/admin/tenants/{id}", tenant_path.clone(), json!({ "plan": "pro" })),
        (Method::POST, "/api/keys", "/api/keys".to_owned(), json!({ "name": "k2" })),
    ] {
        let token = if template.starts_with("/admin") { &admin } else { &u.token };
        for (headers, payload) in [
            (vec![json_type], body(good.clone())),
            (vec![json_type], b"{".to_vec()),
            (vec![json_type], b"[]".to_vec()),
            (vec![json_type], body(json!({ "colour": 1 }))),
            (vec![json_type], deep.clone().into_bytes()),
            (vec![("content-type", "text/plain")], body(good.clone())),
            (vec![json_type, ("x-api-key", key.as_str())], body(good.clone())),
        ] {
            cases.push((method.clone(), template, path.clone(), Some(token), headers, payload));
        }
        cases.push((method.clone(), template, path.clone(), None, vec![json_type], body(good.clone())));
        cases.push((method.clone(), template, path.clone(), Some("not-a-token"), vec![json_type], body(good)));
    }
    cases.push((
        Method::PATCH,
        "/admin/tenants/{id}",
        tenant_path.clone(),
        Some(&u.token),
        vec![json_type],
        body(json!({ "status": "suspended" })),
    ));
    cases.push((
        Method::PATCH,
        "/admin/tenants/{id}",
        "/admin/tenants/platform".into(),
        Some(&admin),
        vec![json_type],
        body(json!({ "status": "suspended" })),
    ));
    cases.push((
        Method::PATCH,
        "/admin/tenants/{id}",
        "/admin/tenants/nobody".into(),
        Some(&admin),
        vec![json_type],
        body(json!({ "plan": "pro" })),
    ));
    cases.push((
        Method::POST,
        "/api/track",
        "/api/track".into(),
        Some(&u.token),
        vec![json_type],
        body(json!({ "tenant_id": "platform", "service_name": "s", "endpoint": "/", "method": "GET" })),
    ));
    cases.push((
        Method::POST,
        "/api/track",
        "/api/track".into(),
        Some(&u.token),
        vec![json_type],
        body(json!({ "service_name": "s", "endpoint": "/", "method": "GET", "premium": true })),
    ));
    for query in ["", "?limit=0", "?cursor=v1zz", "?limit=1"] {
        cases.push((Method::GET, "/api/usage", format!("/api/usage{query}"), Some(&u.token), vec![], Vec::new()));
        cases.push((Method::GET, "/admin/usage", format!("/admin/usage{query}"), Some(&admin), vec![], Vec::new()));
    }
    cases.push((Method::GET, "/api/usage", "/api/usage".into(), None, vec![], Vec::new()));
    cases.push((Method::GET, "/admin/usage", "/admin/usage".into(), Some(&u.token), vec![], Vec::new()));
    for (email, password) in [("ada@example.com", "wrong password"), ("ada@example.com", common::PASSWORD)] {
        cases.push((
            Method::POST,
            "/auth/login",
            "/auth/login".into(),
            None,
            vec![json_type],
            body(json!({ "email": email, "password": password })),
        ));
    }
    cases.push((
        Method::POST,
        "/auth/login",
        "/auth/login".into(),
        None,
        vec![json_type],
        body(json!({ "email": {} })),
    ));
    cases.push((
        Method::POST,
        "/auth/signup",
        "/auth/signup".into(),
        None,
        vec![json_type],
        body(json!({ "email": "ada@example.com", "password": common::PASSWORD })),
    ));

    let mut seen = Vec::new();
    for (method, template, path, token, headers, payload) in cases {
        let a = s.http.raw(method.clone(), &path, token, &headers, payload).await;
        let status = a.status.as_u16();
        let Some(answer) = declared(&doc, &method, template, status) else {
            panic!("{method} {path} answered {status}, not declared for {template}: {}", a.text);
        };
        assert!(
            answer["content"]["application/json"]["schema"].is_object(),
            "{method} {template} {status}: no body schema"
        );
        if status >= 400 && a.body.get("error").is_some() {
            assert!(a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(), "{}", a.text);
        }
        seen.push((template, status));
    }
    seen.sort_unstable();
    seen.dedup();
    // The statuses this walk met, so a route that stops answering one is noticed.
    for expected in
        [("/api/track", 400), ("/api/track", 401), ("/api/track", 403), ("/api/track", 415), ("/api/track", 422)]
    {
        assert!(seen.contains(&expected), "{expected:?} not met: {seen:?}");
    }
}

#[tokio::test]
async fn the_document_declares_shapes_as_answered() {
    let s = TestServer::start().await;
    let doc = s.http.get("/openapi.json", None).await.body;
    let premium = &doc["components"]["schemas"]["PlanBody"]["properties"]["premium"];
    let kinds: Vec<Value> =
        premium["oneOf"].as_array().expect("premium is one of").iter().map(|s| s["type"].clone()).collect();
    assert_eq!(kinds, [json!("boolean"), json!("array")], "{premium}");
    let forbidden = &doc["paths"]["/api/track"]["post"]["responses"]["403"]["content"]["application/json"]["schema"];
    let refs: Vec<&str> =
        forbidden["oneOf"].as_array().expect("403 is one of").iter().filter_map(|s| s["$ref"].as_str()).collect();
    assert_eq!(refs, ["#/components/schemas/DecisionBody", "#/components/schemas/ErrorBody"]);
    let track = &doc["components"]["schemas"]["TrackRequest"]["properties"];
    assert_eq!(track["service_name"]["maxLength"], json!(128));
    assert_eq!(track["credits_used"]["maximum"], json!(1_000_000));
    assert!(track["method"]["pattern"].is_string());
    // Every error answer of every route has the one error shape (or, for a denial, the
    // decision).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, answer) in op["responses"].as_object().into_iter().flatten() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &answer["content"]["application/json"]["schema"];
                    let text = schema.to_string();
                    let shaped = ["ErrorBody", "DecisionBody"]
                        .iter()
                        .any(|c| text.contains(&format!("#/components/schemas/{c}")));
                    assert!(shaped, "{method} {path} {status}: {text}");
                }
            }
        }
    }
}
