//! A borrowed view of a request's head, for the hooks.

use http::{Extensions, HeaderMap, Method, Request, Uri, request::Parts};

/// The head of a request (method, URI, headers, extensions), whatever its body type.
///
/// [`TenantExtractor`](crate::TenantExtractor)s and [`EndpointNamer`](crate::EndpointNamer)s
/// see requests through this view, so one hook serves every body type.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestView<'a> {
    /// A view of `request`'s head.
    pub fn new<B>(request: &'a Request<B>) -> Self {
        RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The raw path of the URI (not a route template).
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions (where routers leave what they matched).
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

impl<'a, B> From<&'a Request<B>> for RequestView<'a> {
    fn from(request: &'a Request<B>) -> Self {
        RequestView::new(request)
    }
}

impl<'a> From<&'a Parts> for RequestView<'a> {
    fn from(parts: &'a Parts) -> Self {
        RequestView { method: &parts.method, uri: &parts.uri, headers: &parts.headers, extensions: &parts.extensions }
    }
}
