//! The HTTP routes, one module per area; each returns an `OpenApiRouter` so the OpenAPI
//! document is generated from the handlers themselves.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod keys;
pub(crate) mod ops;
pub(crate) mod tenant;
pub(crate) mod track;
