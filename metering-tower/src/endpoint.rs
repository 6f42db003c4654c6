//! Endpoint namers: the route template a request is recorded under, never its raw path.
//!
//! With the `axum` feature, axum's `MatchedPath` (the template the router matched, such
//! as `/notes/{id}`) names the endpoint whenever it is in the request's extensions, and
//! the namer is not asked. Otherwise an [`EndpointNamer`] names it; the default,
//! [`CollapseIds`], replaces path segments that look like ids with `{id}`. Any
//! `Fn(&RequestView<'_>) -> String` closure is a namer too.

use crate::request::RequestView;
use crate::route::segments;

/// Names the endpoint of a request as a route template.
///
/// Keep the set of names small and stable: each one is a row in the usage reports, and
/// route settings ([`premium_route`](crate::MeteringLayerBuilder::premium_route),
/// [`route_cost`](crate::MeteringLayerBuilder::route_cost)) are looked up by it.
pub trait EndpointNamer: Send + Sync + 'static {
    /// The endpoint's route template.
    fn endpoint(&self, request: &RequestView<'_>) -> String;
}

impl<F> EndpointNamer for F
where
    F: Fn(&RequestView<'_>) -> String + Send + Sync + 'static,
{
    fn endpoint(&self, request: &RequestView<'_>) -> String {
        self(request)
    }
}

/// The default namer: the normalized path with every id-like segment replaced by `{id}`.
///
/// The path is normalized first as route templates see it: percent-escapes decoded,
/// empty and `.` segments dropped, `..` resolved, so `/notes/%31` and `/notes//1/` are
/// both `/notes/{id}`. A segment is id-like when it is all digits, with or without a sign
/// (`42`, `+42`), a UUID in its hyphenated form, or 16 or more hexadecimal digits
/// (hashes, object ids). `/notes/42/tags/7` is named `/notes/{id}/tags/{id}`. Slugs and
/// other free-form segments are kept as they are, so behind a router that does not report
/// its templates, name such routes with your own [`EndpointNamer`] or give them a
/// template ([`route_cost`](crate::MeteringLayerBuilder::route_cost)); the names a namer
/// can make are bounded
/// ([`max_endpoint_names`](crate::MeteringLayerBuilder::max_endpoint_names)).
#[derive(Debug, Clone, Copy, Default)]
pub struct CollapseIds;

/// What an id-like segment becomes.
const ID: &str = "{id}";

impl CollapseIds {
    /// The template for a raw path.
    pub fn name(path: &str) -> String {
        let segments = segments(path);
        if segments.is_empty() {
            return "/".to_owned();
        }
        let mut out = String::with_capacity(path.len());
        for segment in &segments {
            out.push('/');
            out.push_str(if is_id(segment) { ID } else { segment });
        }
        out
    }
}

impl EndpointNamer for CollapseIds {
    fn endpoint(&self, request: &RequestView<'_>) -> String {
        CollapseIds::name(request.path())
    }
}

/// Whether a path segment looks like an identifier.
fn is_id(segment: &str) -> bool {
    let b = segment.as_bytes();
    let digits = b.strip_prefix(b"+").or_else(|| b.strip_prefix(b"-")).unwrap_or(b);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.is_empty() {
        return false;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    is_uuid(b)
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The route template axum matched, when the layer runs inside the router.
#[cfg(feature = "axum")]
pub(crate) fn matched_path(request: &RequestView<'_>) -> Option<String> {
    request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned())
}

/// Without the `axum` feature no router template is known.
#[cfg(not(feature = "axum"))]
pub(crate) fn matched_path(_request: &RequestView<'_>) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_collapse_and_words_stay() {
        let cases = [
            ("/notes/42", "/notes/{id}"),
            ("/notes/42/tags/7", "/notes/{id}/tags/{id}"),
            ("/notes/0b7e4f0a-3c1d-4e8b-9a2f-6d5c4b3a2f10", "/notes/{id}"),
            ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{id}"),
            ("/notes/recent", "/notes/recent"),
            ("/notes/", "/notes"),
            ("/notes/%31", "/notes/{id}"),
            ("/notes/+1/summary", "/notes/{id}/summary"),
            ("/notes/-1", "/notes/{id}"),
            ("//notes/./7/../8", "/notes/{id}"),
            ("/notes/+", "/notes/+"),
            ("/caf%C3%A9", "/café"),
            ("/v2/notes", "/v2/notes"),
            ("/cafe", "/cafe"),
            ("/", "/"),
            ("", "/"),
        ];
        for (path, template) in cases {
            assert_eq!(CollapseIds::name(path), template, "{path}");
        }
    }

    #[test]
    fn uuid_shape_is_exact() {
        assert!(is_uuid(b"0b7e4f0a-3c1d-4e8b-9a2f-6d5c4b3a2f10"));
        assert!(!is_uuid(b"0b7e4f0a-3c1d-4e8b-9a2f-6d5c4b3a2f1g"));
        assert!(!is_uuid(b"0b7e4f0a13c1d-4e8b-9a2f-6d5c4b3a2f10"));
    }
}
