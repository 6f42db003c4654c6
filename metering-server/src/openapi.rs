//! The answers every route shares, declared in the OpenAPI document beside each handler's
//! own, so the document lists every status a route can answer.
//!
//! Which a route can answer follows from what it takes, as the server decides it:
//! - every route: 400 `ambiguous_credentials` (a bearer token and an API key), 408
//!   `request_timeout`;
//! - a route that needs credentials: 401 (none, or invalid) and 403 (not this caller's);
//! - a route with a JSON body: 400 (not JSON), 413, 415, 422 (see [`ApiJson`](crate::ApiJson));
//! - a route with a path or query parameter: 422 naming it;
//! - a route that reads or writes the store: 503 `store_unavailable`.
//!
//! Every error answer, declared here or by its handler, has the one `ErrorBody` schema;
//! where a handler answers a decision and an error for one status (`POST /api/track` 403),
//! both are declared with `oneOf`.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response};

/// The name of the error body's component.
const ERROR_BODY: &str = "ErrorBody";
/// The name of the decision body's component.
const DECISION_BODY: &str = "DecisionBody";
/// Routes that answer without the store (their own 503 is declared where they have one).
const STORELESS: &[&str] = &["/healthz", "/openapi.json", "/metrics"];

/// Declares the shared answers on every operation of `api`.
pub(crate) fn declare_shared_answers(api: &mut OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        for operation in operations(item) {
            declare(path, operation);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(ERROR_BODY))).build())
        .build()
        .into()
}

fn declare(path: &str, operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let has_params = path.contains('{') || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut shared: Vec<(&str, &str)> = vec![
        ("400", "a bearer token and an API key together (`ambiguous_credentials`), or a body that is not JSON"),
        ("408", "the body or the answer took too long (`request_timeout`)"),
    ];
    if secured {
        shared.push(("401", "no credentials, or invalid ones (`unauthenticated`)"));
        shared.push(("403", "these credentials may not call this route (`forbidden`)"));
    }
    if has_body {
        shared.push(("413", "the body is larger than 1 MiB (`payload_too_large`)"));
        shared.push(("415", "the body is not `application/json` (`unsupported_media_type`)"));
    }
    if has_body || has_params {
        shared.push(("422", "a field or parameter is invalid, unknown or missing (named in `field`)"));
    }
    if !STORELESS.contains(&path) {
        shared.push(("503", "the store is unavailable; try again (`store_unavailable`)"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        match response.content.get_mut("application/json") {
            None => {
                response.content.insert(
                    "application/json".to_owned(),
                    RefOr::T(ContentBuilder::new().schema(Some(Ref::from_schema_name(ERROR_BODY))).build()),
                );
            }
            // A denial's decision and an error share 403: both are declared.
            Some(RefOr::T(content)) if status == "403" && is_ref(content.schema.as_ref(), DECISION_BODY) => {
                let both = OneOfBuilder::new()
                    .item(Ref::from_schema_name(DECISION_BODY))
                    .item(Ref::from_schema_name(ERROR_BODY))
                    .build();
                content.schema = Some(RefOr::T(both.into()));
            }
            Some(_) => {}
        }
    }
}

fn is_ref(schema: Option<&RefOr<utoipa::openapi::Schema>>, name: &str) -> bool {
    matches!(schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with(&format!("/{name}")))
}
