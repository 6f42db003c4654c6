//! Decisions per second through the Redis hot store, beside `redis-benchmark` running the
//! same decision script on the same Redis in the same run.
//!
//! One process, one `RedisHot` (one auto-pipelining connection), CALLERS concurrent
//! callers deciding for TENANTS tenants in turn (each decision a day quota, a per-minute
//! window and credits). Then `redis-benchmark` sends EVALSHA of the very same script with
//! the same arguments, with CALLERS requests in flight: first over CALLERS connections
//! (`-c CALLERS -P 1`), then pipelined on one connection (`-c 1 -P CALLERS`), as fred
//! sends them. It prints decisions/s, p50 and p99 of each, and the ratios.
//!
//! ```text
//! cargo bench --features redis --bench redis_decisions
//! REDIS_URL=redis://127.0.0.1:6379 CALLERS=64 TENANTS=1000 SECONDS=5 cargo bench --features redis --bench redis_decisions
//! ```

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metering::core::store::{Admission, Admitted, HotSnapshot, HotStore, RedisHot, RedisOptions};
use metering::core::{BillingAnchor, EventId, Limit, Per, TenantId, Timestamp};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn admission(tenant: &TenantId, n: u64, now: Timestamp) -> Admission {
    Admission {
        tenant: tenant.clone(),
        event_id: EventId::new(format!("bench-{n}")).unwrap(),
        fingerprint: n,
        now,
        at: now,
        denial: None,
        limits: [Limit::new(4_000_000_000, Per::Day).unwrap(), Limit::new(1_000_000, Per::Minute).unwrap()]
            .into_iter()
            .collect(),
        cost: 1,
        period: BillingAnchor::default().period_containing(now),
        allowance: 1_000_000_000_000,
        overdraft: 0,
        remember: false,
        remember_until: now.plus(Duration::from_secs(3600)),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs redis-benchmark; its requests/s, p50 and p99 in milliseconds.
fn redis_benchmark(
    port: &str,
    connections: usize,
    pipeline: usize,
    requests: usize,
    evalsha: &[String],
) -> (f64, f64, f64) {
    let out = Command::new("redis-benchmark")
        .args(["-p", port, "-n", &requests.to_string(), "-c", &connections.to_string(), "-P", &pipeline.to_string()])
        .args(["--csv"])
        .args(evalsha)
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().last().unwrap_or_default().replace('"', "");
    let fields: Vec<f64> = row.split(',').skip(1).filter_map(|f| f.parse().ok()).collect();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    match fields.as_slice() {
        [rps, _avg, _min, p50, _p95, p99, ..] => (*rps, *p50, *p99),
        _ => panic!("unexpected redis-benchmark output: {text}"),
    }
}

fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port = url.rsplit(':').next().unwrap_or("6379").trim_end_matches('/').to_owned();
    let (callers, tenants, seconds) = (setting("CALLERS", 64), setting("TENANTS", 1_000), setting("SECONDS", 5));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let options = RedisOptions { prefix: "bench".into(), timeout: Duration::from_secs(2), ..RedisOptions::new(&url) };
    let store = Arc::new(runtime.block_on(RedisHot::connect(options)).expect("redis reachable"));
    let now = Timestamp::from_secs(1_773_489_600);
    let ids: Arc<[TenantId]> = (0..tenants).map(|t| TenantId::new(format!("tenant-{t}")).unwrap()).collect();
    runtime.block_on(async {
        store.clear().await.unwrap();
        for id in ids.iter() {
            store.load(id, HotSnapshot::default()).await.unwrap();
        }
    });

    let deadline = Duration::from_secs(seconds as u64);
    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = caller as u64;
                while started.elapsed() < deadline {
                    let a = admission(&ids[n as usize % ids.len()], n, now);
                    let t = Instant::now();
                    let answer = store.admit(&a).await.unwrap();
                    seen.push(t.elapsed());
                    assert!(matches!(answer, Admitted::Decided(ref d) if d.allowed), "{answer:?}");
                    n += callers as u64;
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    let mut sorted = latencies;
    sorted.sort_unstable();
    let ours = sorted.len() as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99));
    println!(
        "metering RedisHot::admit   {callers} callers, {tenants} tenants: {ours:>9.0} decisions/s  p50 {:.3} ms  p99 {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );

    // The same script, arguments and keys for one tenant, by hash.
    let sample = admission(&ids[0], 0, now);
    let evalsha = runtime.block_on(store.benchmark_command(&sample)).expect("the decision script's command");
    let requests = (ours * seconds as f64) as usize;
    for (connections, pipeline) in [(callers, 1), (1, callers)] {
        let (rps, p50, p99) = redis_benchmark(&port, connections, pipeline, requests.max(10_000), &evalsha);
        println!(
            "redis-benchmark EVALSHA    -c {connections:<3} -P {pipeline:<3}           : {rps:>9.0} requests/s   p50 {p50:.3} ms  p99 {p99:.3} ms   metering at {:.0}%",
            100.0 * ours / rps
        );
    }
    runtime.block_on(store.clear()).unwrap();
}
