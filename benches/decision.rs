//! The decision on the in-memory backend: 10,000 tenants, one and two threads.
//!
//! `cargo bench --bench decision`
//!
//! Subjects, each beside a baseline in the same run:
//! - `track`: the whole decision plus its ledger record (`Engine::track`);
//! - `decide`: the decision alone (`Engine::decide`, counters committed, no record);
//! - `governor_keyed_check`: a keyed GCRA check of the `governor` crate over the same
//!   10,000 keys, the floor of what an in-process rate limiter costs.
//!
//! The two-thread figures are time per decision of the pair (wall time / decisions), so
//! the speed-up is the one-thread figure divided by the two-thread one.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use metering::core::store::{MemoryHot, MemoryRecords};
use metering::core::{Limit, Per, Plan, PlanId, Tenant, TenantId};
use metering::{Engine, UsageEvent};

const TENANTS: usize = 10_000;

/// Polls a future that never waits (the memory backends never do) to completion.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn engine() -> (Engine, Arc<Vec<String>>) {
    let engine = Engine::builder(Arc::new(MemoryRecords::new()), Arc::new(MemoryHot::with_max_remembered(100)))
        .build()
        .expect("engine");
    let plan = Plan::new(PlanId::new("bench").unwrap(), 1_000_000_000_000)
        .with_limit(NonZeroU32::new(1_000_000).unwrap(), Per::Hour)
        .with_limit(Limit::new(4_000_000_000, Per::Day).unwrap().max, Per::Day);
    run(engine.put_plan(&plan)).unwrap();
    let names: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i}")).collect();
    for name in &names {
        let tenant = Tenant::new(TenantId::new(name.clone()).unwrap(), plan.id.clone(), engine.now());
        run(engine.create_tenant(&tenant)).unwrap();
    }
    (engine, Arc::new(names))
}

fn event(names: &[String], i: usize) -> UsageEvent {
    UsageEvent::new(names[i % TENANTS].clone(), "bench", "/items/{id}", "GET")
}

/// Runs `op(i)` `iters` times on each of `threads` threads; returns wall time per op of the pool.
fn on_threads(threads: usize, iters: u64, op: impl Fn(usize) + Send + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..iters as usize {
                    op(i * threads + t);
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn decision(c: &mut Criterion) {
    let (engine, names) = engine();
    let governor = RateLimiter::keyed(Quota::per_hour(NonZeroU32::new(1_000_000).unwrap()));
    for name in names.iter() {
        let _ = governor.check_key(name);
    }
    let mut group = c.benchmark_group("decision");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        group.bench_function(format!("track/{threads}-threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    let d = run(engine.track(event(&names, i))).unwrap();
                    assert!(d.allowed);
                })
            })
        });
        group.bench_function(format!("decide/{threads}-threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    let t = run(engine.decide(event(&names, i))).unwrap();
                    assert!(t.decision().allowed);
                })
            })
        });
        group.bench_function(format!("governor_keyed_check/{threads}-threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    let _ = std::hint::black_box(governor.check_key(&names[i % TENANTS]));
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
