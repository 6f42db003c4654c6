//! Promise 8, everything bounded: a flood of denied calls cannot fill the ledger, while
//! every charged call is still recorded.

mod common;

use std::time::Duration;

use common::{Backend, engine, plan, tenant_on};
use metering::UsageEvent;
use metering::core::{LedgerQuery, Limit, Per};

#[tokio::test]
async fn a_flood_of_denials_is_answered_but_only_sampled_into_the_ledger() {
    for backend in Backend::all() {
        let (engine, clock) = engine(&backend).await;
        let p = plan("p", 1_000).with_limit(Limit::new(5, Per::Day).unwrap().max, Per::Day);
        let acme = tenant_on(&engine, "acme", p).await;
        let call = || UsageEvent::new("acme", "svc", "/x", "GET");

        let mut allowed = 0;
        for _ in 0..1_000 {
            allowed += usize::from(engine.track(call()).await.unwrap().allowed);
        }
        assert_eq!(allowed, 5, "{backend:?}");
        clock.advance(Duration::from_secs(60));
        for _ in 0..10 {
            assert!(!engine.track(call()).await.unwrap().allowed);
        }
        engine.flush().await.unwrap();

        let q = LedgerQuery { tenant: Some(acme.clone()), limit: 1_000, ..Default::default() };
        let records = engine.ledger_records(&q).await.unwrap();
        let charged = records.iter().filter(|r| r.counted).count();
        let denied = records.iter().filter(|r| !r.decision.allowed).count();
        assert_eq!(charged, 5, "{backend:?}: every charged call is recorded");
        assert_eq!(denied, 100 + 10, "{backend:?}: 100 denials a minute, then the next minute's");
        assert_eq!(engine.unrecorded_denials(), 995 - 100, "{backend:?}");
        assert_eq!(engine.balance(&acme).await.unwrap().used, 5, "{backend:?}");
    }
}
