//! The metering layer over the real engine (memory stores, manual clock): on an axum
//! `Router`, on a plain `tower::service_fn`, and once over a real socket.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metering_core::{Decision, UsageEvent};
use metering_tower::{Meter, MeteringLayer};
use serde_json::Value;
use tower::{Layer, Service, ServiceExt, service_fn};

use common::*;

#[tokio::test]
async fn free_quota_answers_429_on_the_eleventh_call_without_calling_the_service() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer(&engine), &calls);
    for i in 0..10 {
        let res = app.clone().oneshot(get_as("/notes", Some("acme"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "call {i}");
        assert_eq!(res.headers()["ratelimit-remaining"], (9 - i).to_string().as_str());
    }
    let (parts, body) = json(app.clone().oneshot(get_as("/notes", Some("acme"))).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls.load(Ordering::SeqCst), 10, "the denied call must not reach the handler");
    assert_eq!(header(&parts, "content-type"), Some("application/json"));
    assert_eq!(header(&parts, "retry-after"), Some("43200"));
    assert_eq!(header(&parts, "ratelimit"), Some(r#""day";r=0;t=43200"#));
    assert_eq!(header(&parts, "ratelimit-remaining"), Some("0"));
    assert_eq!((body["allowed"].as_bool(), body["reason"].as_str()), (Some(false), Some("rate_limited")));
    assert_eq!(body["retry_after"], 43200);

    // The body is the recorded decision; the denial is in the ledger, charged nothing.
    let records = records(&engine).await;
    assert_eq!(records.len(), 11);
    let denied = records.iter().find(|r| !r.decision.allowed).unwrap();
    assert_eq!(serde_json::from_value::<Decision>(body).unwrap(), denied.decision);
    assert_eq!((denied.status, denied.counted), (Some(429), false));
    assert_eq!(remaining(&engine).await, 90);
}

#[tokio::test]
async fn premium_route_on_free_is_403_and_the_service_is_not_called() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = MeteringLayer::builder(engine.clone())
        .service_name("notes-api")
        .premium_route("/notes/{id}/summary", Some("ai"))
        .build()
        .unwrap();
    let (parts, body) = json(app(layer, &calls).oneshot(get_as("/notes/7/summary", Some("acme"))).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "premium_not_in_plan");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let records = records(&engine).await;
    assert_eq!(records[0].event.endpoint, "/notes/{id}/summary");
    assert_eq!((records[0].event.premium, records[0].event.feature.as_deref()), (true, Some("ai")));
}

#[tokio::test]
async fn raw_paths_are_recorded_under_their_template_on_a_plain_service() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer(&engine).layer(plain(StatusCode::OK, &calls));
    for path in ["/notes/42", "/notes/43"] {
        assert_eq!(svc.clone().oneshot(plain_get(path)).await.unwrap().status(), StatusCode::OK);
    }
    let records = records(&engine).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.event.endpoint == "/notes/{id}" && r.event.service_name == "notes-api"));
    assert!(records.iter().all(|r| r.status == Some(200) && r.counted));
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_matched_path_names_the_endpoint() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer(&engine), &calls);
    for path in ["/notes/42", "/notes/43", "/users/alice"] {
        assert_eq!(app.clone().oneshot(get_as(path, Some("acme"))).await.unwrap().status(), StatusCode::OK);
    }
    let mut endpoints: Vec<_> = records(&engine).await.into_iter().map(|r| r.event.endpoint).collect();
    endpoints.sort();
    // `/users/alice` has no id-like segment: only the router knows its template.
    assert_eq!(endpoints, ["/notes/{id}", "/notes/{id}", "/users/{name}"]);
}

#[tokio::test]
async fn server_errors_are_not_charged_unless_configured() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let before = remaining(&engine).await;
    let svc = layer(&engine).layer(plain(StatusCode::BAD_GATEWAY, &calls));
    let res = svc.oneshot(plain_get("/notes")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(remaining(&engine).await, before, "a 5xx gives the credit back");
    let records = records(&engine).await;
    assert_eq!((records[0].status, records[0].counted), (Some(502), false));

    let charging = MeteringLayer::builder(engine.clone()).service_name("notes-api").charge_server_errors(true);
    let svc = charging.build().unwrap().layer(plain(StatusCode::INTERNAL_SERVER_ERROR, &calls));
    assert_eq!(svc.oneshot(plain_get("/notes")).await.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(remaining(&engine).await, before - 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn route_cost_is_charged_and_beyond_the_balance_is_402() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer =
        MeteringLayer::builder(engine.clone()).service_name("notes-api").route_cost("/notes/{id}", 60).build().unwrap();
    let svc = layer.layer(plain(StatusCode::OK, &calls));
    let res = svc.clone().oneshot(plain_get("/notes/1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(remaining(&engine).await, 40);
    let (parts, body) = json(svc.oneshot(plain_get("/notes/2")).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!((body["reason"].as_str(), body["credits_remaining"].as_i64()), (Some("insufficient_credits"), Some(40)));
    assert_eq!(header(&parts, "retry-after"), None);
    assert_eq!(header(&parts, "ratelimit-policy"), Some(r#""day";q=10;w=86400"#));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn headers_describe_every_window_and_the_tightest() {
    let (engine, _clock) = engine_on("basic").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let res = layer(&engine).layer(plain(StatusCode::OK, &calls)).oneshot(plain_get("/notes")).await.unwrap();
    let h = res.headers();
    assert_eq!(h["ratelimit-policy"], r#""day";q=1000;w=86400, "minute";q=60;w=60"#);
    assert_eq!(h["ratelimit"], r#""day";r=999;t=43200, "minute";r=59;t=1"#);
    // The tightest window (fewest calls left) is the minute.
    assert_eq!([&h["ratelimit-limit"], &h["ratelimit-remaining"], &h["ratelimit-reset"]], ["60", "59", "1"]);
    assert!(h.get("retry-after").is_none());
}

#[tokio::test]
async fn a_plan_without_windows_gets_no_rate_limit_headers() {
    let (engine, _clock) = engine_on("unlimited").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let res = layer(&engine).layer(plain(StatusCode::OK, &calls)).oneshot(plain_get("/notes")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().keys().all(|k| !k.as_str().starts_with("ratelimit")), "{:?}", res.headers());
}

#[tokio::test]
async fn no_bad_or_unknown_tenant_never_reaches_the_service() {
    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer(&engine), &calls);

    let (parts, body) = json(app.clone().oneshot(get_as("/notes", None)).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");

    let (parts, body) = json(app.clone().oneshot(get_as("/notes", Some("ac me"))).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (Some("invalid_input"), Some("tenant_id"))
    );

    let (parts, body) = json(app.oneshot(get_as("/notes", Some("globex"))).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "unknown_tenant");

    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(records(&engine).await.is_empty());
}

#[tokio::test]
async fn a_suspended_tenant_is_403() {
    let (engine, _clock) = engine_on("pro").await;
    engine.set_status(&acme(), metering_core::TenantStatus::Suspended).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (parts, body) = json(app(layer(&engine), &calls).oneshot(get_as("/notes", Some("acme"))).await.unwrap()).await;
    assert_eq!((parts.status, body["reason"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_suspended")));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A meter whose store is down.
#[derive(Clone)]
struct DownMeter;

impl Meter for DownMeter {
    type Pending = metering_core::Ticket;

    async fn decide(&self, _event: UsageEvent) -> Result<Self::Pending, metering_core::Error> {
        Err(metering_core::Error::Unavailable("connection refused".into()))
    }

    async fn settle(&self, _pending: Self::Pending, _outcome: metering_core::Outcome) {}
}

#[tokio::test]
async fn a_failing_meter_answers_503_or_fails_open() {
    let calls = Arc::new(AtomicUsize::new(0));
    let closed = MeteringLayer::builder(DownMeter).service_name("notes-api").build().unwrap();
    let (parts, body) = json(closed.layer(plain(StatusCode::OK, &calls)).oneshot(plain_get("/n")).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "metering_unavailable");
    assert!(!body.to_string().contains("connection refused"), "no store error text in answers");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let open = MeteringLayer::builder(DownMeter).service_name("notes-api").fail_open(true).build().unwrap();
    let res = open.layer(plain(StatusCode::OK, &calls)).oneshot(plain_get("/n")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("ratelimit").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_abandoned_mid_way_is_still_settled_uncharged() {
    let (engine, _clock) = engine_on("free").await;
    let before = remaining(&engine).await;
    let never =
        service_fn(|_req: Request<Full<Bytes>>| std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>());
    let mut svc = layer(&engine).layer(never);
    let mut call = Box::pin(svc.ready().await.unwrap().call(plain_get("/notes")));
    // Poll until the call is decided and waiting on the inner service, then drop it.
    for _ in 0..10 {
        assert!(futures_poll_once(call.as_mut()).await.is_none());
    }
    drop(call);
    let mut settled = Vec::new();
    for _ in 0..1_000 {
        settled = records(&engine).await;
        if !settled.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(settled.len(), 1, "the abandoned call is recorded");
    assert_eq!((settled[0].status, settled[0].counted, settled[0].decision.allowed), (None, false, true));
    assert_eq!(remaining(&engine).await, before);
}

/// Polls a future once; `Some` if it completed.
async fn futures_poll_once<F: std::future::Future + ?Sized>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut f = Some(f);
    std::future::poll_fn(move |cx| {
        let out = f.take().map(|f| f.poll(cx));
        std::task::Poll::Ready(match out {
            Some(std::task::Poll::Ready(v)) => Some(v),
            _ => None,
        })
    })
    .await
}

#[tokio::test]
async fn bad_configuration_is_refused_at_build() {
    let (engine, _clock) = engine_on("free").await;
    let err = MeteringLayer::builder(engine.clone()).build().unwrap_err();
    assert!(matches!(err, metering_tower::Error::InvalidServiceName(_)), "{err}");
    let err = MeteringLayer::builder(engine.clone()).service_name("s").route_cost("/x", 2_000_000).build().unwrap_err();
    assert!(matches!(&err, metering_tower::Error::InvalidRoute { route, .. } if route == "/x"), "{err}");
    let err = MeteringLayer::builder(engine).service_name("s").premium_route("/x", Some("a b")).build().unwrap_err();
    assert!(matches!(err, metering_tower::Error::InvalidRoute { .. }), "{err}");
}

#[tokio::test]
async fn over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (engine, _clock) = engine_on("free").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app(layer(&engine), &calls)).into_future());

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /notes/42 HTTP/1.1\r\nHost: localhost\r\nX-Tenant-Id: acme\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    server.abort();

    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nratelimit-policy: \"day\";q=10;w=86400\r\n"), "{answer}");
    assert!(lower.contains("\r\nratelimit: \"day\";r=9;t=43200\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    assert_eq!(records(&engine).await[0].event.endpoint, "/notes/{id}");
}

#[cfg(feature = "jwt")]
mod jwt {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use metering_tower::JwtTenant;
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    fn b64url(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    async fn status_with(app: &Router, authorization: Option<&str>) -> (StatusCode, Option<String>) {
        let mut b = Request::get("/notes");
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        let res = app.clone().oneshot(b.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        (res.status(), challenge)
    }

    #[tokio::test]
    async fn jwt_tenant_accepts_valid_tokens_only() {
        let (engine, clock) = engine_on("free").await;
        let now = engine.now().as_micros() / 1_000_000;
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = MeteringLayer::builder(engine.clone())
            .service_name("notes-api")
            .tenant(JwtTenant::hs256(SECRET).unwrap().clock(clock.clone()))
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/notes",
                get({
                    let calls = calls.clone();
                    move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            )
            .route_layer(layer);
        let claims = json!({ "tenant_id": "acme", "exp": now + 3600 });

        let good = token(Algorithm::HS256, SECRET, &claims);
        assert_eq!(status_with(&app, Some(&format!("Bearer {good}"))).await.0, StatusCode::OK);
        assert_eq!(records(&engine).await[0].event.tenant_id, acme());

        let unsigned =
            format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims.to_string().as_bytes()));
        let wrong_secret = token(Algorithm::HS256, b"another secret, also 32 bytes long!", &claims);
        let other_alg = token(Algorithm::HS384, SECRET, &claims);
        let expired = token(Algorithm::HS256, SECRET, &json!({ "tenant_id": "acme", "exp": now - 120 }));
        let no_exp = token(Algorithm::HS256, SECRET, &json!({ "tenant_id": "acme" }));
        let no_claim = token(Algorithm::HS256, SECRET, &json!({ "sub": "acme", "exp": now + 3600 }));
        for bad in [unsigned, wrong_secret, other_alg, expired, no_exp, no_claim] {
            let (status, challenge) = status_with(&app, Some(&format!("Bearer {bad}"))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
            assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
        }
        assert_eq!(status_with(&app, None).await, (StatusCode::UNAUTHORIZED, Some("Bearer".to_owned())));
        assert_eq!(status_with(&app, Some(&format!("Basic {good}"))).await.0, StatusCode::UNAUTHORIZED);

        // The token expires on the engine's clock, not the machine's.
        clock.advance(std::time::Duration::from_secs(3600 + 60));
        assert_eq!(status_with(&app, Some(&format!("Bearer {good}"))).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn short_secrets_and_mismatched_keys_are_refused() {
        assert!(matches!(JwtTenant::hs256(b"short"), Err(metering_tower::Error::WeakSecret { min: 32 })));
        let key = jsonwebtoken::DecodingKey::from_secret(SECRET).unwrap();
        assert!(matches!(JwtTenant::new(key, Algorithm::RS256), Err(metering_tower::Error::InvalidKey(_))));
    }
}
