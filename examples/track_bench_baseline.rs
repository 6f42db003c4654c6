//! The baselines of `scripts/bench-track.sh`: a bare axum server whose `POST /api/track`
//! parses the same JSON body as the reference server's (into a [`UsageEvent`]) and answers
//! a small JSON decision, with no authentication, engine or storage. What the reference
//! server adds on top of this is what the benchmark measures.
//!
//! With `--durable DIR` it also makes each parsed body durable before answering, as the
//! reference server makes its ledger record durable: the bodies go to one file in `DIR`
//! through a group commit (the requests that are ready share one write and one
//! `fdatasync`, on a blocking thread). That is the floor of a server that answers only
//! once a call is on disk, on this machine's disk: everything the reference server does
//! beyond it is authentication, the decision and its ledger record.
//!
//! Run it with (the address from the first argument, else `127.0.0.1:3902`):
//!
//! ```text
//! cargo run --release --example track_bench_baseline -- 127.0.0.1:3902
//! cargo run --release --example track_bench_baseline -- 127.0.0.1:3903 --durable /tmp/floor
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. Then:
//!
//! ```text
//! $ curl -s -H 'content-type: application/json' \
//!     -d '{"service_name":"bench","endpoint":"/items/{id}","method":"GET"}' localhost:3902/api/track
//! {"allowed":true,"event_id":"","credits_charged":1,"credits_remaining":0,"limits":[]}
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use metering::core::UsageEvent;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// The reference server's allocator, so the two differ only in what they do per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The size of the file the durable variant writes in turn, made ahead of time.
const FILE_BYTES: u64 = 64 << 20;

/// At most this many yields to ready requests before a batch is cut, and this many quiet
/// ones in a row end it, as in the reference server's group commit.
const GATHER_ROUNDS: usize = 16;
const QUIET_ROUNDS: usize = 3;

type Job = (Bytes, oneshot::Sender<std::io::Result<()>>);

/// Parses the body as the server does, makes it durable when asked to, and answers a
/// decision-shaped body.
async fn track(State(durable): State<Option<mpsc::Sender<Job>>>, body: Bytes) -> Response {
    // The parse of axum's `Json` extractor, which the server's is built on.
    let event = match Json::<UsageEvent>::from_bytes(&body) {
        Ok(Json(event)) => event,
        Err(rejection) => return rejection.into_response(),
    };
    if let Some(writer) = durable {
        let (ack, written) = oneshot::channel();
        let synced = match writer.send((body, ack)).await {
            Ok(()) => written.await.map_err(|_| std::io::Error::other("writer gone")).and_then(|r| r),
            Err(_) => Err(std::io::Error::other("writer gone")),
        };
        if let Err(e) = synced {
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    }
    Json(json!({
        "allowed": true,
        "event_id": event.event_id.unwrap_or_default(),
        "credits_charged": event.credits_used.unwrap_or(1),
        "credits_remaining": 0,
        "limits": [],
    }))
    .into_response()
}

/// Writes queued bodies in batches at the next place of `file` (starting over at its
/// end) and syncs it, then acknowledges each.
async fn write_durably(mut queue: mpsc::Receiver<Job>, file: Arc<File>) {
    let mut batch: Vec<Job> = Vec::new();
    let mut at = 0u64;
    while queue.recv_many(&mut batch, 1_024).await > 0 {
        let mut quiet = 0;
        for _ in 0..GATHER_ROUNDS {
            if quiet == QUIET_ROUNDS {
                break;
            }
            tokio::task::yield_now().await;
            let before = batch.len();
            while let Ok(job) = queue.try_recv() {
                batch.push(job);
            }
            quiet = if batch.len() == before { quiet + 1 } else { 0 };
        }
        let bytes: Vec<u8> = batch.iter().flat_map(|(body, _)| body.iter().copied()).collect();
        if at + bytes.len() as u64 > FILE_BYTES {
            at = 0;
        }
        let (f, offset) = (Arc::clone(&file), at);
        at += bytes.len() as u64;
        let synced = tokio::task::spawn_blocking(move || f.write_all_at(&bytes, offset).and_then(|()| f.sync_data()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(synced.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        }
    }
}

/// A file of [`FILE_BYTES`] zeros in `dir`, synced, so a write overwrites blocks it has.
fn made_ahead(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = File::options().read(true).write(true).create(true).truncate(true).open(dir.join("durable.bin"))?;
    let zeros = vec![0; 1 << 20];
    for i in 0..FILE_BYTES >> 20 {
        file.write_all_at(&zeros, i << 20)?;
    }
    file.sync_all()?;
    Ok(file)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3902".to_owned());
    let durable = match (args.next().as_deref(), args.next()) {
        (Some("--durable"), Some(dir)) => {
            let (queue, queued) = mpsc::channel(16_384);
            tokio::spawn(write_durably(queued, Arc::new(made_ahead(Path::new(&dir))?)));
            Some(queue)
        }
        (None, _) => None,
        _ => return Err(std::io::Error::other("usage: track_bench_baseline [ADDR [--durable DIR]]")),
    };
    let app = Router::new().route("/api/track", post(track)).with_state(durable);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
