//! The layer's settings, shared by every clone of the service.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use metering_core::{FieldError, Timestamp, UsageEvent};

use crate::endpoint::{EndpointNamer, matched_path};
use crate::error::Error;
use crate::request::RequestView;
use crate::route::Routes;
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
    pub(crate) routes: Routes<Route>,
    pub(crate) names: EndpointNames,
    pub(crate) flags: Flags,
}

impl<T: TenantExtractor, N: EndpointNamer> Shared<T, N> {
    /// The usage event of a request, or why it names no tenant.
    pub(crate) fn event(&self, request: &RequestView<'_>) -> Result<UsageEvent, NoTenant> {
        let tenant = self.tenant.tenant(request)?;
        let matched = matched_path(request);
        let route = self.routes.find(request.path(), matched.as_deref());
        let endpoint = match (matched, route) {
            (Some(template), _) => template,
            (None, Some((template, _))) => template.to_owned(),
            (None, None) => self.names.bounded(self.namer.endpoint(request)),
        };
        let mut event = UsageEvent::new(tenant, self.service.as_str(), endpoint, request.method().as_str());
        if let Some((_, route)) = route {
            event.credits_used = route.credits.map(credits_as_i64);
            event.premium = route.premium;
            event.feature.clone_from(&route.feature);
        }
        Ok(event)
    }
}

/// The endpoint a request is recorded under once a layer knows
/// [`max_endpoint_names`](crate::MeteringLayerBuilder::max_endpoint_names) names its
/// namer made: a bound on the rows raw paths can add to the usage reports.
pub const OTHER_ENDPOINT: &str = "/{other}";

/// The names the namer made so far, up to a bound.
pub(crate) struct EndpointNames {
    known: RwLock<HashSet<Box<str>>>,
    max: usize,
}

impl EndpointNames {
    pub(crate) fn new(max: usize) -> Self {
        EndpointNames { known: RwLock::new(HashSet::new()), max }
    }

    /// `name`, if it is known or there is room for it; [`OTHER_ENDPOINT`] otherwise.
    fn bounded(&self, name: String) -> String {
        let known = self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.contains(name.as_str()) {
            return name;
        }
        let full = known.len() >= self.max;
        drop(known);
        if full {
            return OTHER_ENDPOINT.to_owned();
        }
        let mut known = self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= self.max && !known.contains(name.as_str()) {
            return OTHER_ENDPOINT.to_owned();
        }
        known.insert(name.as_str().into());
        name
    }
}

/// Credits as the event field wants them; out-of-range values stay out of range.
fn credits_as_i64(credits: u64) -> i64 {
    i64::try_from(credits).unwrap_or(i64::MAX)
}

/// Checks the settings with the engine's own event rules, so a bad one fails at start-up
/// rather than on every request, and parses the route templates.
pub(crate) fn validate(service: &str, routes: HashMap<Box<str>, Route>) -> Result<Routes<Route>, Error> {
    probe(service, "/", &Route::default()).map_err(Error::InvalidServiceName)?;
    for (template, route) in &routes {
        probe("service", template, route)
            .map_err(|error| Error::InvalidRoute { route: template.to_string(), error })?;
    }
    Routes::new(routes.into_iter().map(|(template, route)| (template.into_string(), route)))
        .map_err(|(route, problem)| Error::InvalidTemplate { route, problem })
}

fn probe(service: &str, endpoint: &str, route: &Route) -> Result<(), FieldError> {
    let mut event = UsageEvent::new("tenant", service, endpoint, "GET");
    event.credits_used = route.credits.map(credits_as_i64);
    event.premium = route.premium;
    event.feature.clone_from(&route.feature);
    event.validate_at(Timestamp::EPOCH, &Default::default()).map(drop)
}
