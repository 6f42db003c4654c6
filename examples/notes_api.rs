//! "notes-api": a small axum service metered by `MeteringLayer`, over an engine on the
//! embedded backend (SQLite records in `$NOTES_DATA_DIR/notes-api.db`, hot counters in
//! memory, the ledger written by group commit).
//!
//! It shows: the layer applied to each route's handlers with `MeteringLayer::on` (endpoints
//! named by their route template; a method a route lacks answers `405` before metering),
//! the tenant taken from `x-tenant-id`, a premium route (`/notes/{id}/summary`, feature
//! `ai`) that only `pro` may call, a quota answering `429` with `Retry-After` and the
//! `RateLimit` fields, and quotas that survive a restart (the counters are rebuilt from the
//! ledger, which a graceful shutdown flushes).
//!
//! Run it with:
//!
//! ```text
//! cargo run --example notes_api
//! ```
//!
//! It listens on `NOTES_LISTEN` (default `127.0.0.1:3000`) and keeps its data in
//! `NOTES_DATA_DIR` (default `./data`); `RUST_LOG` sets the log level (default `info`). On
//! start it seeds the plans and two tenants when missing: `acme` on `free` (100 credits a
//! month, 10 calls a day, no premium) and `globex` on `pro`. Ctrl-C (or SIGTERM) stops it
//! after writing every queued ledger record. Start without a `./data/notes-api.db`
//! (`rm -f ./data/notes-api.db*`) to see the figures below; only the event ids and the
//! seconds until UTC midnight differ.
//!
//! ```text
//! $ cargo run --example notes_api
//! notes-api listening on http://127.0.0.1:3000 (data in ./data)
//!
//! # No tenant: 401, the handler is not called.
//! $ curl -s localhost:3000/notes
//! {"error":{"code":"unauthenticated","message":"the request names no tenant"}}
//!
//! # Create a note, list the tenant's notes, read one back: acme's calls 1 to 3 of 10 today.
//! $ curl -s -H 'x-tenant-id: acme' -H 'content-type: application/json' \
//!     -d '{"title":"Groceries","body":"Milk, eggs and bread. Then call the plumber."}' localhost:3000/notes
//! {"body":"Milk, eggs and bread. Then call the plumber.","id":1,"title":"Groceries"}
//! $ curl -s -H 'x-tenant-id: acme' localhost:3000/notes
//! {"notes":[{"id":1,"title":"Groceries"}]}
//! $ curl -s -H 'x-tenant-id: acme' localhost:3000/notes/1
//! {"body":"Milk, eggs and bread. Then call the plumber.","id":1,"title":"Groceries"}
//!
//! # The premium route: acme's free plan has no premium access (403, nothing charged) ...
//! $ curl -s -H 'x-tenant-id: acme' localhost:3000/notes/1/summary
//! {"event_id":"01a2267e-03d6-...","allowed":false,"reason":"premium_not_in_plan","credits_charged":0,
//!  "credits_remaining":97,"limits":[{"window":"day","limit":10,"remaining":7,"reset":54678}]}
//!
//! # ... globex's pro plan has it (notes are per tenant: globex writes its own first).
//! $ curl -s -H 'x-tenant-id: globex' -H 'content-type: application/json' \
//!     -d '{"title":"Q3 plan","body":"Ship the importer. Hire two engineers. Review pricing."}' localhost:3000/notes
//! {"body":"Ship the importer. Hire two engineers. Review pricing.","id":2,"title":"Q3 plan"}
//! $ curl -s -i -H 'x-tenant-id: globex' localhost:3000/notes/2/summary
//! HTTP/1.1 200 OK
//! content-type: application/json
//! ratelimit-limit: 600
//! ratelimit-remaining: 598
//! ratelimit-reset: 1
//! ratelimit-policy: "minute";q=600;w=60
//! ratelimit: "minute";r=598;t=1
//! ...
//! {"feature":"ai","id":2,"summary":"Ship the importer."}
//!
//! # Use up acme's 10 calls a day (7 left), then the 11th is refused until UTC midnight.
//! $ for i in $(seq 7); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-tenant-id: acme' localhost:3000/notes; done
//! 200 200 200 200 200 200 200
//! $ curl -s -i -H 'x-tenant-id: acme' localhost:3000/notes
//! HTTP/1.1 429 Too Many Requests
//! content-type: application/json
//! ratelimit-limit: 10
//! ratelimit-remaining: 0
//! ratelimit-reset: 54678
//! ratelimit-policy: "day";q=10;w=86400
//! ratelimit: "day";r=0;t=54678
//! retry-after: 54678
//! ...
//! {"event_id":"01a2267e-0427-...","allowed":false,"reason":"rate_limited","credits_charged":0,
//!  "credits_remaining":90,"limits":[{"window":"day","limit":10,"remaining":0,"reset":54678}],"retry_after":54678}
//!
//! # Ctrl-C: the server writes the queued ledger records and stops.
//! notes-api stopped; every ledger record is written
//!
//! # Start it again with the same command: the counters are rebuilt from the ledger, the
//! # quota is still spent (the notes, kept in memory, are gone).
//! $ curl -s -o /dev/null -w '%{http_code}\n' -H 'x-tenant-id: acme' localhost:3000/notes
//! 429
//! ```
//!
//! Bad input answers the same error shape, e.g. a body over 4,096 bytes:
//! `400 {"error":{"code":"invalid_input","field":"body","message":"body is longer than 4096 bytes"}}`;
//! malformed JSON `400 invalid_json`, a wrong content type `415`, a request body over 16 KiB
//! `413 payload_too_large`, an unknown note `404 not_found`, an unknown tenant
//! `403 unknown_tenant`.
//!
//! The notes themselves live in memory (at most 10,000, bodies of at most 4,096 bytes) and
//! are gone after a restart; the metering data is not.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metering::core::GroupCommit;
use metering::core::store::MemoryHot;
use metering::core::store::SqliteRecords;
use metering::tower::MeteringLayer;
use metering::{Engine, Error, PlanId, Tenant, TenantId};
use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;

/// At most this many notes, all tenants together.
const MAX_NOTES: usize = 10_000;
/// The longest title, in characters.
const MAX_TITLE: usize = 200;
/// The longest note body, in bytes.
const MAX_BODY: usize = 4_096;
/// The largest request body read at all (a JSON note with room for escapes).
const MAX_REQUEST: usize = 16 * 1024;
/// `GET /notes` lists at most this many notes, newest first.
const LIST_LIMIT: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let dir = std::env::var_os("NOTES_DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from);
    let listen: SocketAddr = std::env::var("NOTES_LISTEN").as_deref().unwrap_or("127.0.0.1:3000").parse()?;

    std::fs::create_dir_all(&dir)?;
    let records = SqliteRecords::open(dir.join("notes-api.db"))?;
    let engine =
        Engine::builder(Arc::new(records), Arc::new(MemoryHot::new())).group_commit(GroupCommit::default()).build()?;
    seed(&engine).await?;

    let metering = MeteringLayer::builder(engine.clone())
        .service_name("notes-api")
        .premium_route("/notes/{id}/summary", Some("ai"))
        .build()?;
    let app = app(Notes::default(), &metering).layer(DefaultBodyLimit::max(MAX_REQUEST));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("notes-api listening on http://{} (data in {})", listener.local_addr()?, dir.display());
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;

    // The layer queues ledger records; write them before the process ends so the quotas
    // spent so far are still spent after a restart.
    engine.flush().await?;
    println!("notes-api stopped; every ledger record is written");
    Ok(())
}

/// The plans, and the two demo tenants unless they exist already.
async fn seed(engine: &Engine) -> Result<(), Error> {
    engine.seed_plans().await?;
    for (tenant, plan) in [("acme", "free"), ("globex", "pro")] {
        let tenant = Tenant::new(TenantId::new(tenant)?, PlanId::new(plan)?, engine.now());
        match engine.create_tenant(&tenant).await {
            Ok(()) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The routes, each route's handlers metered.
fn app(notes: Notes, metering: &MeteringLayer<Engine>) -> Router {
    Router::new()
        .route("/notes", metering.on(get(list_notes).post(create_note)))
        .route("/notes/{id}", metering.on(get(get_note)))
        .route("/notes/{id}/summary", metering.on(get(summarize_note)))
        .with_state(notes)
}

async fn create_note(
    State(notes): State<Notes>,
    caller: Caller,
    JsonBody(input): JsonBody,
) -> Result<Response, ApiError> {
    let Some(title) = input.get("title").and_then(Value::as_str) else {
        return Err(ApiError::invalid("title", "title is required and must be a string".into()));
    };
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(ApiError::invalid("title", format!("title must be 1 to {MAX_TITLE} characters")));
    }
    let body = match input.get("body") {
        None | Some(Value::Null) => "",
        Some(Value::String(body)) if body.len() <= MAX_BODY => body,
        Some(Value::String(_)) => {
            return Err(ApiError::invalid("body", format!("body is longer than {MAX_BODY} bytes")));
        }
        Some(_) => return Err(ApiError::invalid("body", "body must be a string".into())),
    };
    let note = notes.insert(&caller.0, title.to_owned(), body.to_owned())?;
    Ok((StatusCode::CREATED, Json(note.to_json())).into_response())
}

async fn list_notes(State(notes): State<Notes>, caller: Caller) -> Json<Value> {
    Json(json!({ "notes": notes.list(&caller.0) }))
}

async fn get_note(State(notes): State<Notes>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let note = notes.get(&caller.0, &id)?;
    Ok(Json(note.to_json()))
}

/// The premium route: a stand-in for a model call, the note's first sentence.
async fn summarize_note(
    State(notes): State<Notes>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let note = notes.get(&caller.0, &id)?;
    let end = note.body.find(['.', '!', '?']).map_or(note.body.len(), |i| i + 1);
    Ok(Json(json!({ "id": note.id, "summary": note.body[..end].trim(), "feature": "ai" })))
}

/// One note.
#[derive(Clone)]
struct Note {
    id: u64,
    title: String,
    body: String,
}

impl Note {
    fn to_json(&self) -> Value {
        json!({ "id": self.id, "title": self.title, "body": self.body })
    }
}

/// The notes of every tenant, in memory and bounded.
#[derive(Clone, Default)]
struct Notes(Arc<RwLock<Shelf>>);

#[derive(Default)]
struct Shelf {
    last_id: u64,
    count: usize,
    by_tenant: HashMap<String, BTreeMap<u64, Note>>,
}

impl Notes {
    fn insert(&self, tenant: &str, title: String, body: String) -> Result<Note, ApiError> {
        let mut shelf = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if shelf.count >= MAX_NOTES {
            return Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", "the notes store is full"));
        }
        shelf.last_id += 1;
        shelf.count += 1;
        let note = Note { id: shelf.last_id, title, body };
        shelf.by_tenant.entry(tenant.to_owned()).or_default().insert(note.id, note.clone());
        Ok(note)
    }

    fn list(&self, tenant: &str) -> Vec<Value> {
        let shelf = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let Some(notes) = shelf.by_tenant.get(tenant) else { return Vec::new() };
        notes.values().rev().take(LIST_LIMIT).map(|n| json!({ "id": n.id, "title": n.title })).collect()
    }

    fn get(&self, tenant: &str, id: &str) -> Result<Note, ApiError> {
        let shelf = self.0.read().unwrap_or_else(PoisonError::into_inner);
        id.parse::<u64>()
            .ok()
            .and_then(|id| shelf.by_tenant.get(tenant)?.get(&id).cloned())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such note"))
    }
}

/// The calling tenant, from the header the metering layer already checked.
struct Caller(String);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .map(|t| Caller(t.to_owned()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "x-tenant-id is missing"))
    }
}

/// `Json<Value>` whose rejections (malformed, too large, wrong content type) answer the
/// same JSON error body as every other error.
struct JsonBody(Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<Value>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(ApiError::from(rejection)),
        }
    }
}

/// The example's error answer: `{"error":{"code":..,"message":..,"field":..}}`, the shape
/// the metering layer answers too.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    fn invalid(field: &'static str, message: String) -> Self {
        ApiError { field: Some(field), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message) }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
