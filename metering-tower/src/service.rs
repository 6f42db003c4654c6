//! [`Metering`]: the service the layer wraps around yours.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::config::Shared;
use crate::endpoint::EndpointNamer;
use crate::future::ResponseFuture;
use crate::meter::Meter;
use crate::request::RequestView;
use crate::response;
use crate::tenant::TenantExtractor;

/// Meters every request before it reaches `S`; made by [`MeteringLayer`](crate::MeteringLayer).
///
/// A request naming no tenant answers `401`, one with a method no call is metered under
/// (`TRACE`, `CONNECT`, extensions) `405`, a denied one the denial, and none of them
/// reaches `S`; errors of `S` pass through unchanged.
pub struct Metering<S, M, T, N> {
    inner: S,
    meter: M,
    shared: Arc<Shared<T, N>>,
}

impl<S, M, T, N> Metering<S, M, T, N> {
    pub(crate) fn new(inner: S, meter: M, shared: Arc<Shared<T, N>>) -> Self {
        Metering { inner, meter, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, M: Clone, T, N> Clone for Metering<S, M, T, N> {
    fn clone(&self) -> Self {
        Metering { inner: self.inner.clone(), meter: self.meter.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<S: fmt::Debug, M, T, N> fmt::Debug for Metering<S, M, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metering")
            .field("inner", &self.inner)
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

impl<S, M, T, N, B, ResBody> Service<Request<B>> for Metering<S, M, T, N>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    M: Meter,
    T: TenantExtractor,
    N: EndpointNamer,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let flags = self.shared.flags;
        if request.method().as_str().parse::<metering_core::Method>().is_err() {
            return ResponseFuture::answered(response::method_not_allowed(), flags);
        }
        let event = match self.shared.event(&RequestView::new(&request)) {
            Ok(event) => event,
            Err(no_tenant) => return ResponseFuture::answered(response::unauthorized(no_tenant), flags),
        };
        let meter = self.meter.clone();
        let decide = Box::pin(async move {
            let decided = meter.decide(event).await;
            (meter, decided)
        });
        // The service that was polled ready goes into the future; a clone stays for the
        // next call (the `mem::replace` idiom tower documents).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        ResponseFuture::deciding(decide, inner, request, flags)
    }
}
