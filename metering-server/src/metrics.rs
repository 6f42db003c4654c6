//! Prometheus metrics: requests, decisions, latencies.
//!
//! One global recorder per process, installed on first use and kept with its
//! [`PrometheusHandle`] in a static, so several servers in one process (the tests) share it
//! and `GET /metrics` renders what all of them recorded. The series:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `route` (the route template, `unmatched` for none), `method`, `status` |
//! | `http_request_duration_seconds` | histogram | `route`, `method` |
//! | `http_requests_in_flight` | gauge | none |
//! | `metering_decisions_total` | counter | `outcome` (`allowed`, `denied`), `reason` (`none` when allowed) |
//! | `metering_denials_unrecorded` | gauge | none: denials answered but over the ledger's per-tenant budget |
//! | `metering_ledger_queue_depth` | gauge | none: records waiting for the group-commit writer |
//! | `metering_ledger_records_retrying` | gauge | none: records whose batch failed, waiting to be written again |
//! | `metering_ledger_records_dropped_total` | counter | none: records dropped unwritten (no room, or shut down), their counts given back |
//! | `metering_ledger_failed_batches_total` | counter | none: batches the record store failed to append |
//! | `metering_ledger_queue_full_waits_total` | counter | none: times a record waited for room in a full queue |
//!
//! Routes are labelled by their template (`/admin/tenants/{id}`), never by the raw path, so
//! the number of series stays bounded whatever clients send.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metering_core::{Decision, DenyReason};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder handle, installing the global recorder on first call.
///
/// When another global recorder was installed first (an embedding program's), the handle
/// still renders, but only what was recorded through it: nothing.
pub(crate) fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "latency buckets refused; histograms become summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "a global metrics recorder was installed already; /metrics stays empty");
        }
        handle
    })
}

/// The Prometheus text exposition of every series.
pub(crate) fn render() -> String {
    handle().render()
}

/// Every outcome of a decision, in the order of their series.
const OUTCOMES: [Option<DenyReason>; 5] = [
    None,
    Some(DenyReason::TenantSuspended),
    Some(DenyReason::PremiumNotInPlan),
    Some(DenyReason::RateLimited),
    Some(DenyReason::InsufficientCredits),
];

/// The position of an outcome in [`OUTCOMES`].
fn outcome_slot(reason: Option<DenyReason>) -> usize {
    match reason {
        None => 0,
        Some(DenyReason::TenantSuspended) => 1,
        Some(DenyReason::PremiumNotInPlan) => 2,
        Some(DenyReason::RateLimited) => 3,
        Some(DenyReason::InsufficientCredits) => 4,
    }
}

/// Counts one decision of the engine by outcome and reason; the five series are
/// registered once, not per decision.
pub(crate) fn record_decision(decision: &Decision) {
    static SERIES: OnceLock<[metrics::Counter; 5]> = OnceLock::new();
    let series = SERIES.get_or_init(|| {
        handle();
        OUTCOMES.map(|reason| {
            let (outcome, reason) = match reason {
                None => ("allowed", "none"),
                Some(r) => ("denied", r.as_str()),
            };
            metrics::counter!("metering_decisions_total", "outcome" => outcome, "reason" => reason)
        })
    });
    series[outcome_slot(decision.reason)].increment(1);
}

/// Counts and times every request, labelled by route template, method and status.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    handle();
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let in_flight = InFlight::enter();
    let response = next.run(request).await;
    drop(in_flight);
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let series = RequestSeries::of(route, method, response.status().as_u16());
    series.duration.record(start.elapsed().as_secs_f64());
    series.requests.increment(1);
    response
}

/// The series one request updates, registered once per route, method and status (a
/// bounded set: route templates, standard methods, status codes) instead of per request.
struct RequestSeries {
    duration: metrics::Histogram,
    requests: metrics::Counter,
}

type SeriesByRoute = HashMap<Box<str>, HashMap<(&'static str, u16), Arc<RequestSeries>>>;

impl RequestSeries {
    fn of(route: &str, method: &'static str, status: u16) -> Arc<RequestSeries> {
        static REGISTERED: OnceLock<RwLock<SeriesByRoute>> = OnceLock::new();
        let registered = REGISTERED.get_or_init(Default::default);
        let known = registered.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(series) = known.get(route).and_then(|by| by.get(&(method, status))) {
            return Arc::clone(series);
        }
        drop(known);
        let mut registered = registered.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let by_route = registered.entry(route.into()).or_default();
        let series = by_route.entry((method, status)).or_insert_with(|| {
            let route = route.to_owned();
            Arc::new(RequestSeries {
                duration: metrics::histogram!("http_request_duration_seconds", "route" => route.clone(), "method" => method),
                requests: metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status.to_string()),
            })
        });
        Arc::clone(series)
    }
}

/// One request in flight; leaves the gauge when dropped, also when the request is
/// abandoned (client gone, timeout).
struct InFlight(&'static metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
        let gauge = GAUGE.get_or_init(|| metrics::gauge!("http_requests_in_flight"));
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A bounded label for a method: the standard ones by name, anything else `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_series() {
        for (i, reason) in OUTCOMES.into_iter().enumerate() {
            assert_eq!(outcome_slot(reason), i, "{reason:?}");
        }
    }
}
