//! The crate's one error: a layer or extractor that cannot be built.
//!
//! Nothing here happens per request: a denied or failed call is an HTTP answer, not an error.

use metering_core::FieldError;

/// Why a [`MeteringLayer`](crate::MeteringLayer) or a tenant extractor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service name is empty, too long or holds control characters.
    #[error("invalid service name: {0}")]
    InvalidServiceName(#[source] FieldError),
    /// A route's template, cost or feature breaks the event rules of `metering-core`.
    #[error("invalid configuration of route `{route}`: {error}")]
    InvalidRoute {
        /// The route template as configured.
        route: String,
        /// What is wrong with it.
        #[source]
        error: FieldError,
    },
    /// A route template that cannot be matched as written (not a path, an older router
    /// syntax, a parameter inside a segment) or that matches the same paths as another.
    #[error("route template `{route}` cannot be used: {problem}")]
    InvalidTemplate {
        /// The route template as configured.
        route: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An HMAC secret shorter than the hash it keys (RFC 7518, section 3.2).
    #[cfg(feature = "jwt")]
    #[error("the JWT secret must be at least {min} bytes")]
    WeakSecret {
        /// The fewest bytes accepted.
        min: usize,
    },
    /// A JWT key that does not fit the algorithm, or cannot be read.
    #[cfg(feature = "jwt")]
    #[error("invalid JWT key: {0}")]
    InvalidKey(#[source] jsonwebtoken::errors::Error),
}
