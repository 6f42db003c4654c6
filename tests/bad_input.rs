//! Promise 7, bad input: every invalid event gets a typed error naming the field, never a
//! panic, and nothing is charged or recorded.

mod common;

use common::{Backend, engine, plan, tenant_on};
use metering::core::LedgerQuery;
use metering::{Error, Timestamp, UsageEvent};
use proptest::prelude::*;

fn field_of(err: Error) -> &'static str {
    match err {
        Error::InvalidInput(e) => e.field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[tokio::test]
async fn each_bad_field_is_named_and_nothing_is_charged() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let acme = tenant_on(&engine, "acme", plan("p", 100)).await;
    let ok = || UsageEvent::new("acme", "svc", "/x", "GET");
    let cases: Vec<(UsageEvent, &str)> = vec![
        (UsageEvent::new("", "svc", "/x", "GET"), "tenant_id"),
        (UsageEvent::new("ac me", "svc", "/x", "GET"), "tenant_id"),
        (UsageEvent::new("acme", "", "/x", "GET"), "service_name"),
        (UsageEvent::new("acme", "s".repeat(129), "/x", "GET"), "service_name"),
        (UsageEvent::new("acme", "svc", "/x\u{7}", "GET"), "endpoint"),
        (UsageEvent::new("acme", "svc", "/x", "TEAPOT"), "method"),
        (ok().with_credits(-1), "credits_used"),
        (ok().with_credits(1_000_001), "credits_used"),
        (ok().with_event_id(""), "event_id"),
        (ok().with_event_id("tab\tbed"), "event_id"),
        (UsageEvent { feature: Some("".into()), ..ok() }, "feature"),
        (UsageEvent { timestamp: Some(Timestamp::from_secs(0)), ..ok() }, "timestamp"),
        (UsageEvent { timestamp: Some(engine.now().plus(std::time::Duration::from_secs(3600))), ..ok() }, "timestamp"),
    ];
    for (event, field) in cases {
        assert_eq!(field_of(engine.track(event).await.unwrap_err()), field);
    }
    assert_eq!(engine.balance(&acme).await.unwrap().used, 0);
    engine.flush().await.unwrap();
    assert!(engine.ledger_records(&LedgerQuery::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_tenant_is_a_typed_error() {
    let (engine, _clock) = engine(&Backend::Memory).await;
    let err = engine.track(UsageEvent::new("nobody", "svc", "/x", "GET")).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant(_)));
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,80}", "[a-z]{1,8}", "\\PC{0,600}", Just(String::new())]
}

fn any_event() -> impl Strategy<Value = UsageEvent> {
    (
        prop_oneof![Just("acme".to_string()), any_text()],
        any_text(),
        any_text(),
        prop_oneof![Just("GET".to_string()), Just("post".to_string()), any_text()],
        proptest::option::of(any::<i64>()),
        any::<bool>(),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        proptest::option::of(any::<i64>().prop_map(Timestamp::from_micros)),
    )
        .prop_map(|(tenant, service, endpoint, method, credits, premium, event_id, feature, timestamp)| {
            UsageEvent {
                tenant_id: tenant,
                service_name: service,
                endpoint,
                method,
                credits_used: credits,
                premium,
                event_id,
                feature,
                region: None,
                timestamp,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any input either decides or fails with a field error; an accepted event is within
    /// every documented limit.
    #[test]
    fn no_input_panics_and_accepted_events_are_within_limits(event in any_event()) {
        let now = Timestamp::from_secs(1_800_000_000);
        match event.validate_at(now, &Default::default()) {
            Ok(e) => {
                prop_assert!(e.credits_used <= 1_000_000);
                prop_assert!(!e.service_name.trim().is_empty() && e.service_name.chars().count() <= 128);
                prop_assert!(e.endpoint.chars().count() <= 512 && !e.endpoint.chars().any(char::is_control));
                prop_assert!(e.event_id.as_str().len() <= 128);
            }
            Err(err) => {
                prop_assert!(!err.field.is_empty());
                prop_assert!(err.to_string().contains(err.field));
            }
        }
    }
}
