//! [`MeteringLayer`] and its builder.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::{self, EndpointNames, Flags, Route, Shared};
use crate::endpoint::{CollapseIds, EndpointNamer};
use crate::error::Error;
use crate::meter::Meter;
use crate::service::Metering;
use crate::tenant::{HeaderTenant, TenantExtractor};

/// A [`Layer`] that meters every request of the service it wraps: decided by a [`Meter`]
/// before the service runs, settled after it answered.
///
/// Built with [`MeteringLayer::builder`]. Cheap to clone; clones share the settings.
pub struct MeteringLayer<M, T = HeaderTenant, N = CollapseIds> {
    meter: M,
    shared: Arc<Shared<T, N>>,
}

impl<M: Meter> MeteringLayer<M> {
    /// Starts a layer deciding through `meter` (a [`metering_core::Engine`], typically);
    /// [`service_name`](MeteringLayerBuilder::service_name) must be set before
    /// [`build`](MeteringLayerBuilder::build).
    pub fn builder(meter: M) -> MeteringLayerBuilder<M> {
        MeteringLayerBuilder {
            meter,
            service: String::new(),
            tenant: HeaderTenant::default(),
            namer: CollapseIds,
            routes: HashMap::new(),
            max_endpoint_names: DEFAULT_MAX_ENDPOINT_NAMES,
            flags: Flags::default(),
        }
    }
}

impl<M: Clone, T, N> Clone for MeteringLayer<M, T, N> {
    fn clone(&self) -> Self {
        MeteringLayer { meter: self.meter.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<S, M: Clone, T, N> Layer<S> for MeteringLayer<M, T, N> {
    type Service = Metering<S, M, T, N>;

    fn layer(&self, inner: S) -> Self::Service {
        Metering::new(inner, self.meter.clone(), Arc::clone(&self.shared))
    }
}

impl<M, T, N> fmt::Debug for MeteringLayer<M, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteringLayer")
            .field("service", &self.shared.service)
            .field("routes", &self.shared.routes.len())
            .field("flags", &self.shared.flags)
            .finish_non_exhaustive()
    }
}

/// Configures a [`MeteringLayer`]; every method takes and returns the builder.
pub struct MeteringLayerBuilder<M, T = HeaderTenant, N = CollapseIds> {
    meter: M,
    service: String,
    tenant: T,
    namer: N,
    routes: HashMap<Box<str>, Route>,
    max_endpoint_names: usize,
    flags: Flags,
}

/// How many endpoint names a layer's namer may make by default.
const DEFAULT_MAX_ENDPOINT_NAMES: usize = 1_000;

impl<M: Meter, T: TenantExtractor, N: EndpointNamer> MeteringLayerBuilder<M, T, N> {
    /// The service name every event of this layer is recorded under (required).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// Reads the tenant with this extractor instead of the `x-tenant-id` header.
    pub fn tenant<T2: TenantExtractor>(self, tenant: T2) -> MeteringLayerBuilder<M, T2, N> {
        let MeteringLayerBuilder { meter, service, namer, routes, max_endpoint_names, flags, .. } = self;
        MeteringLayerBuilder { meter, service, tenant, namer, routes, max_endpoint_names, flags }
    }

    /// Names endpoints with this namer when the router reports no template, instead of
    /// [`CollapseIds`].
    pub fn endpoint_namer<N2: EndpointNamer>(self, namer: N2) -> MeteringLayerBuilder<M, T, N2> {
        let MeteringLayerBuilder { meter, service, tenant, routes, max_endpoint_names, flags, .. } = self;
        MeteringLayerBuilder { meter, service, tenant, namer, routes, max_endpoint_names, flags }
    }

    /// How many endpoint names the namer may make (default 1,000); past that, a request
    /// whose name is new is recorded under [`OTHER_ENDPOINT`](crate::OTHER_ENDPOINT), so
    /// raw paths cannot add rows to the usage reports without end. Names axum's
    /// `MatchedPath` or a route template gives are not counted: the router bounds them.
    pub fn max_endpoint_names(mut self, max: usize) -> Self {
        self.max_endpoint_names = max;
        self
    }

    /// Marks the route `template` premium, with an optional feature: plans without premium
    /// access (or without this feature) answer `403 premium_not_in_plan`.
    ///
    /// The template is matched against every request's normalized path (see
    /// [`route_cost`](Self::route_cost)), whatever the router reports, so no spelling of
    /// the path escapes it.
    pub fn premium_route(mut self, template: impl Into<String>, feature: Option<&str>) -> Self {
        let route = self.route(template.into());
        route.premium = true;
        route.feature = feature.map(str::to_owned);
        self
    }

    /// Charges `credits` (or units, under a per-unit price) for each call of the route
    /// `template` instead of 1.
    ///
    /// A template is a path in axum's syntax: literal segments, `{name}` for any one
    /// segment and, last, `{*name}` for the rest. It is matched against the request's path
    /// with percent-escapes decoded and empty, `.` and `..` segments resolved; when several
    /// templates match, the most specific (literal before parameter, from the left) wins.
    /// [`build`](Self::build) refuses a template that could not match as written (no
    /// leading `/`, `:id` or `*rest`, a parameter inside a segment) and two that match the
    /// same paths.
    pub fn route_cost(mut self, template: impl Into<String>, credits: u64) -> Self {
        self.route(template.into()).credits = Some(credits);
        self
    }

    /// Whether answers with a `5xx` status (and inner errors and abandoned calls) stay
    /// charged; by default they are not, and the engine gives their credits and window
    /// slots back.
    pub fn charge_server_errors(mut self, charge: bool) -> Self {
        self.flags.charge_server_errors = charge;
        self
    }

    /// Whether calls the meter cannot decide (its store is down) go through uncharged and
    /// unrecorded instead of answering `503 metering_unavailable`; default `false`.
    pub fn fail_open(mut self, open: bool) -> Self {
        self.flags.fail_open = open;
        self
    }

    /// Builds the layer; fails when the service name or a route breaks the event rules of
    /// `metering-core` (names, lengths, at most 1,000,000 credits a call) or a route
    /// template cannot be used.
    pub fn build(self) -> Result<MeteringLayer<M, T, N>, Error> {
        let routes = config::validate(&self.service, self.routes)?;
        let shared = Shared {
            service: self.service,
            tenant: self.tenant,
            namer: self.namer,
            routes,
            names: EndpointNames::new(self.max_endpoint_names),
            flags: self.flags,
        };
        Ok(MeteringLayer { meter: self.meter, shared: Arc::new(shared) })
    }

    fn route(&mut self, template: String) -> &mut Route {
        self.routes.entry(template.into_boxed_str()).or_default()
    }
}

impl<M, T, N> fmt::Debug for MeteringLayerBuilder<M, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteringLayerBuilder")
            .field("service", &self.service)
            .field("routes", &self.routes)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl<M, T, N> MeteringLayer<M, T, N>
where
    M: Meter,
    T: TenantExtractor,
    N: EndpointNamer,
{
    /// Meters the handlers of one axum route: `Router::new().route("/notes",
    /// metering.on(get(list).post(create)))`.
    ///
    /// A method the route does not have is answered `405` by axum before metering,
    /// charged nothing and taking no window slot. Under `Router::route_layer` the layer
    /// wraps the route's `405` answer too, so such a call is decided first: it is not
    /// charged, but a tenant out of quota gets `429` rather than `405`.
    pub fn on<S>(&self, methods: axum::routing::MethodRouter<S>) -> axum::routing::MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        methods.route_layer(self.clone())
    }
}
