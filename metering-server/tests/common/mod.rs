//! Shared setup for the HTTP tests: the real server on `127.0.0.1:0` (via
//! `metering_server::run`) over an in-memory engine on a [`ManualClock`], and a small
//! hyper-util client that speaks JSON.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metering_core::store::{MemoryHot, MemoryRecords};
use metering_core::{Engine, GroupCommit, ManualClock};
use metering_server::{AppState, Settings};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod processes;

/// The instant every test starts at: mid-month, mid-day, so no window is about to roll.
pub const START: &str = "2026-03-14T12:00:00Z";
/// The admin every test server is started with.
pub const ADMIN_EMAIL: &str = "root@example.com";
/// The admin's password.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// The password of every user the tests sign up.
pub const PASSWORD: &str = "a long enough password";

/// A running server: its address, its clock and engine, and a client for it.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The clock its engine reads; move it with `advance`.
    pub clock: ManualClock,
    /// Its engine (for set-up that has no route).
    pub engine: Engine,
    /// A client for it.
    pub http: Http,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The settings of a test server: cheap password hashing, no sign-up limit to speak of,
/// a fixed JWT secret, and the test admin.
pub fn settings() -> Settings {
    let data_dir = std::env::temp_dir().join(format!("metering-http-tests-{}", std::process::id()));
    let vars = [
        ("METERING_LISTEN", "127.0.0.1:0".to_owned()),
        ("METERING_DATA_DIR", data_dir.display().to_string()),
        ("METERING_JWT_SECRET", "an HS256 secret of at least thirty-two bytes, for tests".to_owned()),
        ("METERING_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("METERING_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("METERING_SIGNUP_LIMIT", "100000/hour".to_owned()),
        ("METERING_ARGON2_MEMORY_KIB", "8".to_owned()),
        ("METERING_ARGON2_ITERATIONS", "1".to_owned()),
        // The tests move the clock by days; tokens outlive that.
        ("METERING_ACCESS_TOKEN_TTL", "30d".to_owned()),
        ("METERING_REFRESH_TOKEN_TTL", "60d".to_owned()),
    ];
    Settings::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())).expect("test settings")
}

impl TestServer {
    /// Starts a server over a fresh in-memory engine whose clock stands at [`START`].
    pub async fn start() -> TestServer {
        let clock = ManualClock::at(START);
        let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::new()))
            .clock(clock.clone())
            .group_commit(GroupCommit::default())
            .build()
            .expect("engine");
        let state = AppState::with_engine(engine.clone(), settings()).await.expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(metering_server::run(listener, state, async move {
            let _ = rx.await;
        }));
        TestServer { addr, clock, engine, http: Http::new(addr), shutdown: Some(tx), task: Some(task) }
    }

    /// Stops the server: in-flight requests finish and the ledger is flushed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Signs up a new user on `plan` (`None`: the default); returns its access token and tenant.
    pub async fn signup(&self, email: &str, plan: Option<&str>) -> User {
        let mut body = json!({ "email": email, "password": PASSWORD });
        if let Some(plan) = plan {
            body["plan"] = json!(plan);
        }
        let a = self.http.post("/auth/signup", None, &body).await;
        assert_eq!(a.status, StatusCode::CREATED, "sign-up of {email}: {}", a.text);
        User {
            token: a.body["access_token"].as_str().expect("access_token").to_owned(),
            tenant: a.body["tenant_id"].as_str().expect("tenant_id").to_owned(),
            email: email.to_owned(),
        }
    }

    /// Logs in; returns the answer (200 with tokens, or the error).
    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.http.post("/auth/login", None, &json!({ "email": email, "password": password })).await
    }

    /// The admin's access token.
    pub async fn admin(&self) -> String {
        let a = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "admin login: {}", a.text);
        a.body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Tracks one call for the caller's own tenant; returns the answer.
    pub async fn track(&self, token: &str, body: &Value) -> Answer {
        self.http.post("/api/track", Some(token), body).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A signed-up user.
#[derive(Debug, Clone)]
pub struct User {
    /// Its access token.
    pub token: String,
    /// Its tenant's id.
    pub tenant: String,
    /// Its e-mail.
    pub email: String,
}

/// A minimal call to track.
pub fn call(endpoint: &str) -> Value {
    json!({ "service_name": "notes-api", "endpoint": endpoint, "method": "GET" })
}

/// An HTTP answer, its body parsed as JSON when it is JSON (else `Null`).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The header fields.
    pub headers: HeaderMap,
    /// The body as JSON, `Null` when it is not JSON.
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// A header field as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the standard error shape with this status (and field, if given).
    pub fn assert_error(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "answer: {}", self.text);
        let error = &self.body["error"];
        assert!(error["code"].is_string() && error["message"].is_string(), "not the error shape: {}", self.text);
        if let Some(field) = field {
            assert_eq!(error["field"].as_str(), Some(field), "answer: {}", self.text);
        }
    }
}

/// A small HTTP/1.1 client for one server.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    /// A client for `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build_http();
        Http { base: format!("http://{addr}"), client }
    }

    /// Sends any request: raw body bytes and extra header fields.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let req = req.body(Full::new(body.into())).expect("request");
        self.send(req).await.expect("the server answers")
    }

    /// Sends JSON with `method`; `None` when no answer comes (the server went away).
    pub async fn try_json(&self, method: Method, path: &str, token: Option<&str>, body: &Value) -> Option<Answer> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.header("content-type", "application/json").body(Full::new(Bytes::from(body.to_string())));
        self.send(req.expect("request")).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Option<Answer> {
        let res = self.client.request(req).await.ok()?;
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.ok()?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Some(Answer { status, headers, body, text })
    }

    /// Sends JSON with `method`.
    pub async fn json(&self, method: Method, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("json");
        self.raw(method, path, token, &[("content-type", "application/json")], bytes).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.raw(Method::GET, path, token, &[], Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.json(Method::POST, path, token, body).await
    }

    /// `POST path` with a JSON body, authenticated with an API key (`X-API-Key`).
    pub async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("json");
        self.raw(Method::POST, path, None, &[("content-type", "application/json"), ("x-api-key", key)], bytes).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.raw(Method::DELETE, path, token, &[], Bytes::new()).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.json(Method::PATCH, path, token, body).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.json(Method::PUT, path, token, body).await
    }
}
