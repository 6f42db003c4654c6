//! Promise 3, no lost event: what the server acknowledged is in the ledger after the
//! process is killed (SIGKILL, no shutdown, no flush), and a replay after the restart is
//! not charged again. The real `metering-server` binary runs as a child process.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

use axum::http::StatusCode;
use common::processes::{data_dir, free_port, server_command, spawn_answering};
use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Http, PASSWORD, call};
use serde_json::json;

/// Starts the server binary on `addr` with its data in `dir`, and waits until it answers.
async fn start(addr: SocketAddr, dir: &Path) -> Child {
    spawn_answering(server_command(addr, dir, &[]), addr).await
}

/// How a test stops the server.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM: the server drains and flushes.
    Term,
    /// SIGKILL: nothing runs.
    Kill,
}

/// Stops the server as `how` says and waits for it.
fn stop(server: &mut Child, how: Stop) {
    match how {
        Stop::Kill => server.kill().expect("SIGKILL"),
        Stop::Term => {
            let pid = server.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
            assert!(sent.success());
        }
    }
    server.wait().expect("reaped");
}

/// Signs up a user; its access token.
async fn signup(http: &Http, email: &str) -> String {
    let signup = http.post("/auth/signup", None, &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(signup.status, StatusCode::CREATED, "{}", signup.text);
    signup.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_without_ids_are_stored_once_across_restarts() {
    for how in [Stop::Term, Stop::Kill] {
        let dir = data_dir("late-restart");
        let addr = free_port();
        let mut server = start(addr, &dir).await;
        let http = Http::new(addr);
        let token = signup(&http, "late@example.com").await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let ten_minutes_ago = chrono::DateTime::from_timestamp(now - 600, 0).unwrap().to_rfc3339();
        for _ in 0..3 {
            let mut body = call("/notes");
            body["timestamp"] = json!(ten_minutes_ago);
            body["credits_used"] = json!(7);
            let a = http.post("/api/track", Some(&token), &body).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        }
        assert_eq!(http.get("/api/usage", Some(&token)).await.body["items"].as_array().unwrap().len(), 3);
        stop(&mut server, how);
        let mut server = start(addr, &dir).await;
        assert_eq!(http.get("/api/credits", Some(&token)).await.body["used"], 21, "{how:?}");
        let usage = http.get("/api/usage", Some(&token)).await;
        assert_eq!(usage.body["items"].as_array().unwrap().len(), 3, "{how:?}: {}", usage.text);
        stop(&mut server, Stop::Kill);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_keeps_its_valid_records_and_degrades_readiness_until_acknowledged() {
    let dir = data_dir("damaged-journal");
    let addr = free_port();
    let mut server = start(addr, &dir).await;
    let http = Http::new(addr);
    let token = signup(&http, "bits@example.com").await;
    for i in 1..=5 {
        let mut body = call("/notes");
        body["event_id"] = json!(format!("ev-{i}"));
        assert_eq!(http.post("/api/track", Some(&token), &body).await.status, StatusCode::OK);
    }
    stop(&mut server, Stop::Kill);

    // One byte of the second frame's payload flips on the disk. The sign-up's records
    // (tenant, user) are in SQLite; the journal holds the five ledger records.
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_str().unwrap().contains("-ledger-") && p.to_str().unwrap().ends_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    segments.sort();
    let segment = segments.into_iter().find(|p| std::fs::read(p).unwrap()[..4] != [0; 4]).expect("a written segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let first = 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[first + 8 + 5] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let mut server = start(addr, &dir).await;
    let usage = http.get("/api/usage", Some(&token)).await;
    let mut ids: Vec<&str> =
        usage.body["items"].as_array().unwrap().iter().filter_map(|i| i["event_id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["ev-1", "ev-3", "ev-4", "ev-5"], "every record that verifies");
    let ready = http.get("/readyz", None).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (StatusCode::OK, Some("degraded")), "{}", ready.text);
    assert_eq!(ready.body["problems"].as_array().unwrap().len(), 1, "{}", ready.text);
    let metrics = http.get("/metrics", None).await;
    assert!(metrics.text.contains("metering_storage_damage_unacknowledged 1"), "{}", metrics.text);

    let login = http.post("/auth/login", None, &json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD })).await;
    let admin = login.body["access_token"].as_str().expect("admin token").to_owned();
    let refused = http.post("/admin/storage/acknowledge", Some(&token), &json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "a user cannot acknowledge");
    let ack = http.post("/admin/storage/acknowledge", Some(&admin), &json!({})).await;
    assert_eq!((ack.status, &ack.body["acknowledged"]), (StatusCode::OK, &json!(1)), "{}", ack.text);
    assert_eq!(http.get("/readyz", None).await.body["status"], "ready");
    let kept =
        std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().file_name().to_str().unwrap().ends_with("-acknowledged"));
    assert!(kept, "the damaged segment is kept");

    stop(&mut server, Stop::Kill);
    let _ = std::fs::remove_dir_all(&dir);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused_with_one_line() {
    let dir = data_dir("second-server");
    let mut first = start(free_port(), &dir).await;
    let second = server_command(free_port(), &dir, &[]).output().expect("run a second server");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("METERING_DATA_DIR") && stderr.contains("another metering-server"), "{stderr}");
    stop(&mut first, Stop::Term);
    let mut again = start(free_port(), &dir).await;
    stop(&mut again, Stop::Kill);
}
