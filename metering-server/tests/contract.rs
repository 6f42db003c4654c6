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

/// The schema `schema` stands for, following a `$ref` into the document's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => resolve(doc, &doc["components"]["schemas"][name]),
        None => schema,
    }
}

/// The types a schema allows (`type` as a name or a list).
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether `value` fits `schema`, for the part of JSON Schema the document uses: types,
/// `enum`, `oneOf`/`anyOf`, lengths, `pattern`, `format: date-time`, ranges, items, and
/// objects with `required` and closed `additionalProperties`.
fn fits(doc: &Value, schema: &Value, value: &Value) -> bool {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema["oneOf"].as_array() {
        return branches.iter().filter(|b| fits(doc, b, value)).count() == 1;
    }
    if let Some(branches) = schema["anyOf"].as_array() {
        return branches.iter().any(|b| fits(doc, b, value));
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return false;
    }
    let kinds = types(schema);
    let kind_ok = |k: &str| kinds.is_empty() || kinds.contains(&k);
    match value {
        Value::Null => kind_ok("null"),
        Value::Bool(_) => kind_ok("boolean"),
        Value::Number(n) => {
            let integer = n.is_i64() || n.is_u64();
            if !(kind_ok("number") || (integer && kind_ok("integer"))) {
                return false;
            }
            let v = n.as_f64().unwrap_or(f64::NAN);
            let below = schema["minimum"].as_f64().is_some_and(|m| v < m);
            let above = schema["maximum"].as_f64().is_some_and(|m| v > m);
            !below && !above
        }
        Value::String(s) => {
            if !kind_ok("string") {
                return false;
            }
            let chars = s.chars().count() as u64;
            let short = schema["minLength"].as_u64().is_some_and(|m| chars < m);
            let long = schema["maxLength"].as_u64().is_some_and(|m| chars > m);
            let pattern = schema["pattern"].as_str().is_none_or(|p| regex::Regex::new(p).expect(p).is_match(s));
            let format = match schema["format"].as_str() {
                Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                _ => true,
            };
            !short && !long && pattern && format
        }
        Value::Array(items) => {
            if !kind_ok("array") {
                return false;
            }
            let n = items.len() as u64;
            let few = schema["minItems"].as_u64().is_some_and(|m| n < m);
            let many = schema["maxItems"].as_u64().is_some_and(|m| n > m);
            let unique =
                schema["uniqueItems"] != json!(true) || items.iter().enumerate().all(|(i, x)| !items[..i].contains(x));
            !few && !many && unique && items.iter().all(|x| fits(doc, &schema["items"], x))
        }
        Value::Object(fields) => {
            if !kind_ok("object") {
                return false;
            }
            let props = schema["properties"].as_object();
            let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
            let closed = schema["additionalProperties"] == json!(false);
            required.clone().all(|r| fields.contains_key(r))
                && fields.iter().all(|(k, v)| match props.and_then(|p| p.get(k)) {
                    Some(p) => fits(doc, p, v),
                    None => !closed,
                })
        }
    }
}

/// An e-mail address of `len` characters (a local part of up to 64, labels of up to 63).
fn email_of_len(len: usize) -> String {
    let local = "a".repeat(len.saturating_sub(2).min(64));
    let mut rest = len - local.len() - 1;
    let mut labels = Vec::new();
    while rest > 0 {
        let mut take = rest.min(63);
        if rest - take == 1 {
            take -= 1;
        }
        labels.push("b".repeat(take));
        rest -= take;
        rest = rest.saturating_sub(1);
    }
    format!("{local}@{}", labels.join("."))
}

/// Values at and just past every bound `schema` states, with `base` (a valid value, when
/// known) as the starting point: each is then judged by the document itself ([`fits`]).
fn candidates(doc: &Value, schema: &Value, base: Option<&Value>) -> Vec<Value> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    for key in ["oneOf", "anyOf"] {
        for branch in schema[key].as_array().into_iter().flatten() {
            out.extend(candidates(doc, branch, base.filter(|b| fits(doc, branch, b))));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        out.extend(values.iter().cloned());
        if let Some(first) = values.first().and_then(Value::as_str) {
            out.push(json!(format!("x{first}")));
        }
    }
    let kinds = types(schema);
    if kinds.contains(&"string") && schema["enum"].is_null() {
        out.extend(string_candidates(doc, schema, base));
    }
    if kinds.contains(&"integer") {
        let mut bounds = Vec::new();
        for (key, step) in [("maximum", 1i128), ("minimum", -1)] {
            if let Some(m) = schema[key].as_i64().map(i128::from).or(schema[key].as_u64().map(i128::from)) {
                bounds.extend([m + step, m]);
            }
        }
        bounds.sort_unstable_by(|a, b| b.cmp(a));
        out.extend(
            bounds.into_iter().filter_map(|v| {
                i64::try_from(v).ok().map(Value::from).or_else(|| u64::try_from(v).ok().map(Value::from))
            }),
        );
    }
    if kinds.contains(&"array") {
        let item = &schema["items"];
        let samples = samples(doc, item, None);
        if let Some(max) = schema["maxItems"].as_u64().map(|m| m as usize)
            && !samples.is_empty()
        {
            for n in [max, max + 1] {
                out.push(Value::Array(samples.iter().cycle().take(n).cloned().collect()));
            }
        }
        if schema["uniqueItems"] == json!(true)
            && let Some(first) = samples.first()
        {
            out.push(json!([first, first]));
        }
        for c in candidates(doc, item, base.and_then(|b| b.get(0)).or(samples.first())) {
            out.push(json!([c]));
        }
    }
    if kinds.contains(&"object")
        && let Some(props) = schema["properties"].as_object()
    {
        let start = base.cloned().unwrap_or_else(|| minimal(doc, schema));
        for (name, prop) in props {
            for c in candidates(doc, prop, start.get(name)) {
                let mut v = start.clone();
                v[name] = c;
                out.push(v);
            }
        }
    }
    let mut unique = Vec::new();
    for c in out {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    // Numbers largest first, so a grant is made before the claw-back it covers.
    if unique.iter().all(Value::is_number) {
        unique.sort_by(|a, b| b.as_f64().unwrap_or(0.0).total_cmp(&a.as_f64().unwrap_or(0.0)));
    }
    unique
}

/// A valid object of `schema` with its required fields only, each its first sample.
fn minimal(doc: &Value, schema: &Value) -> Value {
    let mut v = json!({});
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Some(first) = samples(doc, &schema["properties"][name], None).into_iter().next() {
            v[name] = first;
        }
    }
    v
}

/// Distinct valid values of `schema` (for filling arrays), `base` first when it fits.
fn samples(doc: &Value, schema: &Value, base: Option<&Value>) -> Vec<Value> {
    let schema = resolve(doc, schema);
    let mut out: Vec<Value> = base.filter(|b| fits(doc, schema, b)).into_iter().cloned().collect();
    for branch in schema["oneOf"].as_array().into_iter().flatten() {
        out.extend(samples(doc, branch, None));
    }
    if let Some(values) = schema["enum"].as_array() {
        out.extend(values.iter().cloned());
    } else if types(schema).contains(&"string") {
        out.extend((0..100).map(|i| json!(format!("f{i}"))));
    } else if types(schema).contains(&"integer") {
        out.push(schema["minimum"].clone());
    } else if schema["properties"].is_object() {
        // One object per value of the first enumerated field, else the minimal one.
        let start = minimal(doc, schema);
        let props = schema["properties"].as_object().into_iter().flatten();
        match props.clone().find(|(_, p)| resolve(doc, p)["enum"].is_array()) {
            Some((name, p)) => out.extend(resolve(doc, p)["enum"].as_array().into_iter().flatten().map(|e| {
                let mut v = start.clone();
                v[name.as_str()] = e.clone();
                v
            })),
            None => out.push(start),
        }
    }
    out.retain(|v| fits(doc, schema, v));
    out
}

/// Strings at the length bounds and strings that break the pattern, built from a filler
/// character the pattern accepts (or from `base`).
fn string_candidates(doc: &Value, schema: &Value, base: Option<&Value>) -> Vec<Value> {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().map(|m| m as usize);
    let mut out = Vec::new();
    if schema["pattern"].as_str().is_some_and(|p| p.contains('@')) {
        let max = max.unwrap_or(254);
        for s in [email_of_len(min.max(3)), email_of_len(max), email_of_len(max + 1)] {
            out.push(json!(s));
        }
        let bad = [
            "ab",
            "a b@c",
            "a@b@c",
            "a@-b",
            "a@b..c",
            &format!("{}@b", "a".repeat(65)),
            &format!("a@{}", "b".repeat(64)),
        ];
        out.extend(bad.iter().map(|s| json!(s)));
        return out;
    }
    if schema["format"] == json!("date-time") {
        return ["2026-03-14T12:00:00Z", "2026-03-14T12:00:00+02:00", "2026-03-14T12:00:00", "yesterday"]
            .iter()
            .map(|s| json!(s))
            .collect();
    }
    let lengths: Vec<usize> =
        [Some(min.max(1)), max, max.map(|m| m + 1), min.checked_sub(1)].into_iter().flatten().collect();
    let filler =
        ['a', '0', 'x', 'A', '-'].into_iter().find(|c| fits(doc, schema, &json!(c.to_string().repeat(min.max(1)))));
    let start = match (filler, base.and_then(Value::as_str)) {
        (Some(c), _) => {
            for &n in &lengths {
                out.push(json!(c.to_string().repeat(n)));
            }
            c.to_string().repeat(min.max(1))
        }
        (None, Some(b)) => {
            out.push(json!(b));
            out.push(json!(format!("{b}x")));
            b.to_owned()
        }
        (None, None) => return out,
    };
    for bad in [' ', '\u{1}', '\u{85}', 'A', '@', '/', 'é', '_', '.', 'x'] {
        let mut chars: Vec<char> = start.chars().collect();
        chars[0] = bad;
        out.push(json!(chars.into_iter().collect::<String>()));
    }
    out.push(json!(" ".repeat(min.max(1))));
    out
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a 422's `field` names `name` (itself, or a place inside it).
fn names(field: &Value, name: &str) -> bool {
    field
        .as_str()
        .is_some_and(|f| f == name || f.starts_with(&format!("{name}[")) || f.starts_with(&format!("{name}.")))
}

/// One route walked by the bound test: method, route template, path, caller, a valid body
/// (or `Null` for a query-only route) and valid query parameters.
struct Walk<'a> {
    method: Method,
    template: &'static str,
    path: String,
    token: &'a str,
    body: Value,
    query: Vec<(&'static str, &'static str)>,
    /// The body fields walked (`None`: every one).
    only: Option<&'static [&'static str]>,
}

impl<'a> Walk<'a> {
    fn body(method: Method, template: &'static str, path: impl Into<String>, token: &'a str, body: Value) -> Self {
        Walk { method, template, path: path.into(), token, body, query: Vec::new(), only: None }
    }

    fn query(template: &'static str, token: &'a str, query: Vec<(&'static str, &'static str)>) -> Self {
        Walk { method: Method::GET, template, path: template.into(), token, body: Value::Null, query, only: None }
    }
}

/// A cursor in the documented shape that this server did not seal.
const UNSEALED_CURSOR: &str = "v10000000000000000000000000000000000";

#[tokio::test]
async fn every_documented_bound_is_the_servers() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let u = s.signup("bounds@example.com", None).await;
    let doc = s.http.get("/openapi.json", None).await.body;
    let plan = json!({
        "name": "Contract", "monthly_credits": 100, "overdraft": 0,
        "limits": [{ "max": 10, "per": "day" }],
        "premium": ["gpt"],
        "pricing": [{ "endpoint": "/e", "method": "GET", "feature": "f", "region": "r", "per_call": 1, "per_unit": 1 }],
    });
    let mut with_id = plan.clone();
    with_id["id"] = json!("contract");
    assert_eq!(s.http.post("/admin/plans", Some(&admin), &with_id).await.status, 201);
    let tenant_path = format!("/admin/tenants/{}", u.tenant);
    let put_fields: &'static [&'static str] = &["name", "monthly_credits", "limits", "premium", "overdraft", "pricing"];
    let walks = vec![
        // A new plan for each valid id; the other fields are walked by replacing a plan.
        Walk { only: Some(&["id"]), ..Walk::body(Method::POST, "/admin/plans", "/admin/plans", &admin, with_id) },
        Walk {
            only: Some(put_fields),
            ..Walk::body(Method::PUT, "/admin/plans/{id}", "/admin/plans/contract", &admin, plan)
        },
        Walk::body(
            Method::POST,
            "/auth/signup",
            "/auth/signup",
            "",
            json!({ "email": "e@example.com", "password": common::PASSWORD, "name": "N", "plan": "free" }),
        ),
        Walk::body(
            Method::POST,
            "/api/keys",
            "/api/keys",
            &admin,
            json!({ "name": "k", "service_name": "s", "tenant_id": u.tenant }),
        ),
        Walk::body(
            Method::POST,
            "/admin/tenants/{id}/credits",
            format!("{tenant_path}/credits"),
            &admin,
            json!({ "amount": 1, "reason": "r" }),
        ),
        Walk::body(
            Method::PATCH,
            "/admin/tenants/{id}",
            tenant_path.clone(),
            &admin,
            json!({ "plan": "free", "status": "active" }),
        ),
        Walk::query("/api/usage", &u.token, vec![("method", "get"), ("cursor", UNSEALED_CURSOR)]),
        Walk::query("/admin/usage", &admin, vec![("method", "get"), ("cursor", UNSEALED_CURSOR)]),
        Walk::query("/api/usage/summary", &u.token, vec![]),
        Walk::query("/admin/stats", &admin, vec![]),
        Walk::query("/admin/audit", &admin, vec![]),
        Walk::query("/admin/tenants", &admin, vec![]),
        Walk::query("/api/keys", &admin, vec![]),
    ];
    // Every route with a constrained body or query parameter is walked (the track routes
    // have their own tests; login and refresh constrain nothing but types).
    let walked: Vec<(String, &str)> =
        walks.iter().map(|w| (w.method.as_str().to_ascii_lowercase(), w.template)).collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().into_iter().flatten();
            let constrained_query =
                params.clone().any(|p| p["in"] == "query" && p["schema"].as_object().is_some_and(|s| s.len() > 1));
            let body = !op["requestBody"].is_null();
            let exempt = ["/api/track", "/api/track/batch", "/auth/login", "/auth/refresh"].contains(&path.as_str());
            if (body || constrained_query) && !exempt {
                assert!(walked.contains(&(method.clone(), path.as_str())), "{method} {path} is not walked");
            }
        }
    }

    let mut checked = 0;
    let mut fresh = 0;
    for walk in walks {
        let op = &doc["paths"][walk.template][walk.method.as_str().to_ascii_lowercase()];
        // Body fields.
        let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
        let props = resolve(&doc, body_schema)["properties"].as_object().cloned().unwrap_or_default();
        for (name, prop) in props.iter().filter(|(n, _)| walk.only.is_none_or(|o| o.contains(&n.as_str()))) {
            for value in candidates(&doc, prop, walk.body.get(name)) {
                let mut body = walk.body.clone();
                fresh += 1;
                if walk.template == "/auth/signup" && name != "email" {
                    body["email"] = json!(format!("fresh-{fresh}@example.com"));
                }
                body[name.as_str()] = value.clone();
                let inside = fits(&doc, prop, &value);
                if inside {
                    prepare(&s, name, &value).await;
                }
                let token = (!walk.token.is_empty()).then_some(walk.token);
                let a = s.http.json(walk.method.clone(), &walk.path, token, &body).await;
                let status = a.status.as_u16();
                if inside {
                    assert!(
                        (200..300).contains(&status),
                        "{} {} `{name}` = {value}: documented valid, answered {status}: {}",
                        walk.method,
                        walk.template,
                        a.text
                    );
                } else {
                    assert!(
                        status == 422 && names(&a.body["error"]["field"], name),
                        "{} {} `{name}` = {value}: documented invalid, answered {status}: {}",
                        walk.method,
                        walk.template,
                        a.text
                    );
                }
                checked += 1;
            }
        }
        // Query parameters.
        for param in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
            let name = param["name"].as_str().unwrap();
            let base = walk.query.iter().find(|(n, _)| *n == name).map(|(_, v)| json!(v));
            for value in candidates(&doc, &param["schema"], base.as_ref()) {
                let inside = fits(&doc, &param["schema"], &value);
                // A cursor in the documented shape is still one this server must have sealed.
                if inside && name == "cursor" {
                    continue;
                }
                let text = match &value {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                let mut query: Vec<String> = walk
                    .query
                    .iter()
                    .filter(|(n, _)| *n != name && *n != "cursor")
                    .map(|(n, v)| format!("{n}={}", encode(v)))
                    .collect();
                query.push(format!("{name}={}", encode(&text)));
                let path = format!("{}?{}", walk.path, query.join("&"));
                let a = s.http.get(&path, Some(walk.token)).await;
                let status = a.status.as_u16();
                if inside {
                    assert_eq!(status, 200, "{path}: documented valid: {}", a.text);
                } else {
                    assert!(
                        status == 422 && names(&a.body["error"]["field"], name),
                        "{path}: documented invalid, answered {status}: {}",
                        a.text
                    );
                }
                checked += 1;
            }
        }
    }
    eprintln!("{checked} bounds checked");
    assert!(checked > 200, "only {checked} bounds checked");
}

/// Makes a documented-valid reference real: a plan or tenant named by id must exist.
async fn prepare(s: &TestServer, field: &str, value: &Value) {
    let Some(id) = value.as_str() else { return };
    match field {
        "plan" => {
            let id = metering_core::PlanId::new(id).expect("a documented plan id is one");
            if s.engine.plan(&id).await.unwrap().is_none() {
                s.engine.create_plan(&metering_core::Plan::new(id, 100)).await.unwrap();
            }
        }
        "tenant_id" => {
            let id = metering_core::TenantId::new(id).expect("a documented tenant id is one");
            if s.engine.tenant(&id).await.unwrap().is_none() {
                let plan = metering_core::PlanId::new("free").unwrap();
                s.engine.create_tenant(&metering_core::Tenant::new(id, plan, s.engine.now())).await.unwrap();
            }
        }
        _ => {}
    }
}
