//! Fuzzing at scale with proptest: every parser of outside input (a track event, a batch,
//! a JWT, a cursor) is fed generated and mutated inputs and must answer `Ok` or a 4xx,
//! never panic. `METERING_FUZZ_CASES` sets the inputs per target (1,000 by default, so the
//! ordinary test run is a short pass; `scripts/fuzz.sh` runs 10^6 each).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// The inputs per target.
fn cases() -> u32 {
    std::env::var("METERING_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// Runs `check` on `cases()` inputs of `strategy`; panics (failing the test) on the first
/// input whose check panics or fails, and prints how many inputs were tried.
pub(crate) fn run<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), String>) {
    let cases = cases();
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let tried = std::sync::atomic::AtomicU64::new(0);
    let outcome = runner.run(&strategy, |input| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(input).map_err(TestCaseError::fail)
    });
    let tried = tried.into_inner();
    if let Err(e) = outcome {
        panic!("fuzz {name}: failed after {tried} inputs: {e}");
    }
    eprintln!("fuzz {name}: {tried} inputs, 0 failures");
}

/// A JSON value of a few levels, with keys drawn from `keys` or anywhere.
pub(crate) fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec!["GET", "post", "/e", "acme", "2026-03-14T12:00:00Z", "", " ", "notes-api"])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    let key = prop_oneof![4 => prop::sample::select(keys).prop_map(str::to_owned), 1 => "[a-z_]{0,8}"];
    leaf.prop_recursive(4, 32, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..10).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes for a parser of JSON bodies: raw bytes, JSON-looking text, generated JSON, and
/// generated JSON with a few bytes changed.
pub(crate) fn json_bytes(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let mutated =
        (json_value(keys), prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)).prop_map(|(v, edits)| {
            let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
            for (at, b) in edits {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = b;
                }
            }
            bytes
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        r#"[\[\]{}",:0-9a-z_ .\-\\]{0,96}"#.prop_map(String::into_bytes),
        json_value(keys).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        mutated,
    ]
}

/// Bytes and text with a few changes, for inputs a valid one is known of.
pub(crate) fn mutations_of(valid: String) -> impl Strategy<Value = String> {
    let len = valid.len().max(1);
    prop_oneof![
        any::<String>(),
        prop::collection::vec((0..len, any::<char>()), 1..4).prop_map(move |edits| {
            let mut chars: Vec<char> = valid.chars().collect();
            for (at, c) in edits {
                if !chars.is_empty() {
                    let i = at % chars.len();
                    chars[i] = c;
                }
            }
            chars.into_iter().collect()
        }),
    ]
}
