//! The baseline of `scripts/bench-track.sh`: a bare axum server whose `POST /api/track`
//! parses the same JSON body as the reference server's (into a [`UsageEvent`]) and answers
//! a small JSON decision, with no authentication, engine or storage. What the reference
//! server adds on top of this is what the benchmark measures.
//!
//! Run it with (the address from the first argument, else `127.0.0.1:3902`):
//!
//! ```text
//! cargo run --release --example track_bench_baseline -- 127.0.0.1:3902
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. Then:
//!
//! ```text
//! $ curl -s -H 'content-type: application/json' \
//!     -d '{"service_name":"bench","endpoint":"/items/{id}","method":"GET"}' localhost:3902/api/track
//! {"allowed":true,"event_id":"","credits_charged":1,"credits_remaining":0,"limits":[]}
//! ```

use axum::Json;
use axum::Router;
use axum::routing::post;
use metering::core::UsageEvent;
use serde_json::{Value, json};

/// The reference server's allocator, so the two differ only in what they do per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the body as the server does, and answers a decision-shaped body.
async fn track(Json(event): Json<UsageEvent>) -> Json<Value> {
    Json(json!({
        "allowed": true,
        "event_id": event.event_id.unwrap_or_default(),
        "credits_charged": event.credits_used.unwrap_or(1),
        "credits_remaining": 0,
        "limits": [],
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3902".to_owned());
    let app = Router::new().route("/api/track", post(track));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
