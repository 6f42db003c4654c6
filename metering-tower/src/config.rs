//! The layer's settings, shared by every clone of the service.

use std::collections::HashMap;

use metering_core::{FieldError, Timestamp, UsageEvent};

use crate::endpoint::{EndpointNamer, matched_path};
use crate::error::Error;
use crate::request::RequestView;
use crate::tenant::{NoTenant, TenantExtractor};

/// What the layer does beyond deciding, copied into each response future.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    /// Whether a `5xx` answer (or an inner error, or an abandoned call) stays charged.
    pub(crate) charge_server_errors: bool,
    /// Whether a call the meter cannot decide goes through uncharged instead of `503`.
    pub(crate) fail_open: bool,
}

/// The settings of one route template.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    pub(crate) credits: Option<u64>,
    pub(crate) premium: bool,
    pub(crate) feature: Option<String>,
}

/// Everything the service needs besides the inner service and the meter.
pub(crate) struct Shared<T, N> {
    pub(crate) service: String,
    pub(crate) tenant: T,
    pub(crate) namer: N,
    pub(crate) routes: HashMap<Box<str>, Route>,
    pub(crate) flags: Flags,
}

impl<T: TenantExtractor, N: EndpointNamer> Shared<T, N> {
    /// The usage event of a request, or why it names no tenant.
    pub(crate) fn event(&self, request: &RequestView<'_>) -> Result<UsageEvent, NoTenant> {
        let tenant = self.tenant.tenant(request)?;
        let endpoint = matched_path(request).unwrap_or_else(|| self.namer.endpoint(request));
        let route = if self.routes.is_empty() { None } else { self.routes.get(endpoint.as_str()) };
        let mut event = UsageEvent::new(tenant, self.service.as_str(), endpoint, request.method().as_str());
        if let Some(route) = route {
            event.credits_used = route.credits.map(credits_as_i64);
            event.premium = route.premium;
            event.feature.clone_from(&route.feature);
        }
        Ok(event)
    }
}

/// Credits as the event field wants them; out-of-range values stay out of range.
fn credits_as_i64(credits: u64) -> i64 {
    i64::try_from(credits).unwrap_or(i64::MAX)
}

/// Checks the settings with the engine's own event rules, so a bad one fails at start-up
/// rather than on every request.
pub(crate) fn validate(service: &str, routes: &HashMap<Box<str>, Route>) -> Result<(), Error> {
    probe(service, "/", &Route::default()).map_err(Error::InvalidServiceName)?;
    for (template, route) in routes {
        probe("service", template, route)
            .map_err(|error| Error::InvalidRoute { route: template.to_string(), error })?;
    }
    Ok(())
}

fn probe(service: &str, endpoint: &str, route: &Route) -> Result<(), FieldError> {
    let mut event = UsageEvent::new("tenant", service, endpoint, "GET");
    event.credits_used = route.credits.map(credits_as_i64);
    event.premium = route.premium;
    event.feature.clone_from(&route.feature);
    event.validate_at(Timestamp::EPOCH, &Default::default()).map(drop)
}
