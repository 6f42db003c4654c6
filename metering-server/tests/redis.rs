//! The server binary on Redis (`METERING_REDIS_URL`): counts live in Redis and outlast a
//! killed process, a second instance with its own ledger is refused with one line, and
//! `/readyz` and `/api/track` follow Redis going away and coming back.

#![cfg(feature = "redis")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::processes::{data_dir, free_port, redis_cli, server_command, spawn_answering};
use common::{Http, PASSWORD, call};
use serde_json::json;

fn server(addr: SocketAddr, dir: &Path, redis_url: &str, prefix: &str) -> Command {
    let env = [
        ("METERING_REDIS_URL", redis_url.to_owned()),
        ("METERING_REDIS_PREFIX", prefix.to_owned()),
        ("METERING_REDIS_TIMEOUT", "50ms".to_owned()),
    ];
    server_command(addr, dir, &env)
}

async fn start(addr: SocketAddr, dir: &Path, redis_url: &str, prefix: &str) -> Child {
    spawn_answering(server(addr, dir, redis_url, prefix), addr).await
}

/// Deletes every key under `prefix` on the shared Redis.
fn clean(prefix: &str) {
    for key in redis_cli(6379, &["--scan", "--pattern", &format!("{prefix}:*")]).lines() {
        redis_cli(6379, &["del", key]);
    }
}

async fn signup(http: &Http, email: &str) -> (String, String) {
    let a = http.post("/auth/signup", None, &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    (a.body["access_token"].as_str().unwrap().to_owned(), a.body["tenant_id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_live_in_redis_outlast_a_kill_and_a_second_ledger_is_refused() {
    let prefix = format!("test:server-{}", std::process::id());
    clean(&prefix);
    let (dir, addr) = (data_dir("redis-server"), free_port());
    let mut first = start(addr, &dir, "redis://127.0.0.1:6379", &prefix).await;
    let http = Http::new(addr);
    let (token, tenant) = signup(&http, "shared@example.com").await;
    let mut remaining = 0;
    for i in 0..3 {
        let a = http.post("/api/track", Some(&token), &call(&format!("/notes/{i}"))).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        remaining = a.body["credits_remaining"].as_i64().unwrap();
    }
    let counters = format!("{prefix}:{{{tenant}}}:c");
    assert_eq!(redis_cli(6379, &["exists", &counters]), "1", "the tenant's counters are in Redis");

    let other = server(free_port(), &data_dir("redis-second"), "redis://127.0.0.1:6379", &prefix)
        .output()
        .expect("run a second instance");
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "a second ledger on the prefix is refused");
    assert!(stderr.contains("METERING_REDIS_URL") && stderr.contains("another instance"), "{stderr}");

    first.kill().unwrap();
    first.wait().unwrap();
    let mut again = start(addr, &dir, "redis://127.0.0.1:6379", &prefix).await;
    let a = http.post("/api/track", Some(&token), &call("/notes/after")).await;
    assert_eq!(a.status, StatusCode::OK, "the same data directory takes its prefix back: {}", a.text);
    assert_eq!(a.body["credits_remaining"].as_i64().unwrap(), remaining - 1, "counting goes on exactly");
    again.kill().unwrap();
    again.wait().unwrap();
    clean(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_track_follow_redis_going_away_and_coming_back() {
    let port = free_port().port();
    let spawn_redis = || {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let mut redis = spawn_redis();
    while redis_cli(port, &["ping"]) != "PONG" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (dir, addr) = (data_dir("redis-outage"), free_port());
    let mut server = start(addr, &dir, &format!("redis://127.0.0.1:{port}"), "outage").await;
    let http = Http::new(addr);
    let (token, _) = signup(&http, "outage@example.com").await;
    assert_eq!(http.get("/readyz", None).await.status, StatusCode::OK);
    assert_eq!(http.post("/api/track", Some(&token), &call("/a")).await.status, StatusCode::OK);

    redis.kill().unwrap();
    redis.wait().unwrap();
    assert_eq!(http.get("/readyz", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    let started = Instant::now();
    let a = http.post("/api/track", Some(&token), &call("/b")).await;
    println!("answered {:?} with Redis down", started.elapsed());
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "store_unavailable", "{}", a.text);

    let mut redis = spawn_redis();
    let mut back = false;
    for _ in 0..200 {
        if http.post("/api/track", Some(&token), &call("/c")).await.status == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "service resumes by itself");
    assert_eq!(http.get("/readyz", None).await.status, StatusCode::OK);
    server.kill().unwrap();
    server.wait().unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
}
