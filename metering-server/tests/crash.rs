//! Promise 3, no lost event: what the server acknowledged is in the ledger after the
//! process is killed (SIGKILL, no shutdown, no flush), and a replay after the restart is
//! not charged again. The real `metering-server` binary runs as a child process.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use common::{Http, PASSWORD, call};
use serde_json::json;

/// A port nobody listens on right now.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Starts the server binary on `addr` with its data in `dir`, and waits until it answers.
async fn start(addr: SocketAddr, dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metering-server"))
        .env("METERING_LISTEN", addr.to_string())
        .env("METERING_DATA_DIR", dir)
        .env("METERING_JWT_SECRET", "a-test-secret-of-at-least-thirty-two-bytes")
        .env("METERING_ARGON2_MEMORY_KIB", "8")
        .env("METERING_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start metering-server");
    let http = Http::new(addr);
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http.get("/healthz", None).await.status == StatusCode::OK
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("metering-server did not come up on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_kill_and_are_not_charged_twice() {
    let dir = std::env::temp_dir().join(format!("metering-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = free_port();
    let mut server = start(addr, &dir).await;
    let http = Http::new(addr);

    let signup = http.post("/auth/signup", None, &json!({ "email": "ada@example.com", "password": PASSWORD })).await;
    assert_eq!(signup.status, StatusCode::CREATED, "{}", signup.text);
    let token = signup.body["access_token"].as_str().unwrap().to_owned();

    // Forty calls race against the free plan's ten a day; every answered one was durable.
    let mut handles = Vec::new();
    for i in 0..40 {
        let (http, token) = (Http::new(addr), token.clone());
        handles.push(tokio::spawn(async move {
            let mut body = call("/notes/{id}");
            body["event_id"] = json!(format!("e-{i}"));
            let a = http.post("/api/track", Some(&token), &body).await;
            (i, a.status, a.body)
        }));
    }
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    let admitted: Vec<_> = answers.iter().filter(|(_, s, _)| *s == StatusCode::OK).collect();
    assert_eq!(admitted.len(), 10, "exactly the day's quota");

    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    let mut server = start(addr, &dir).await;

    let usage = http.get("/api/usage?limit=1000", Some(&token)).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    let recorded: Vec<&str> =
        usage.body["items"].as_array().unwrap().iter().filter_map(|i| i["event_id"].as_str()).collect();
    for (i, status, _) in &answers {
        let id = format!("e-{i}");
        if *status == StatusCode::OK || *status == StatusCode::TOO_MANY_REQUESTS {
            assert!(recorded.contains(&id.as_str()), "acknowledged {id} ({status}) is in the ledger");
        }
    }
    let credits = http.get("/api/credits", Some(&token)).await;
    assert_eq!(credits.body["used"], 10, "{}", credits.text);

    // A replay after the restart gets the first decision and charges nothing.
    let (i, _, first) = admitted[0];
    let mut body = call("/notes/{id}");
    body["event_id"] = json!(format!("e-{i}"));
    let again = http.post("/api/track", Some(&token), &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(&again.body, first);
    assert_eq!(http.get("/api/credits", Some(&token)).await.body["used"], 10);

    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    let _ = std::fs::remove_dir_all(&dir);
}
