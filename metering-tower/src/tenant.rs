//! Tenant extractors: who a request is charged to.
//!
//! A [`TenantExtractor`] reads the tenant id from a request's head. Built in:
//! [`HeaderTenant`] (a header, `x-tenant-id` by default) and, with the `jwt` feature,
//! [`JwtTenant`] (a claim of a verified bearer token). Any
//! `Fn(&RequestView<'_>) -> Option<String>` closure is an extractor too.
//!
//! The id is not checked here: the engine checks it (1-64 of `[A-Za-z0-9_.:-]`) and a bad
//! one answers `400 invalid_input`. No tenant at all answers `401` without calling the
//! inner service.

use std::fmt;

use http::HeaderName;

use crate::request::RequestView;

/// Reads the tenant a request is charged to.
pub trait TenantExtractor: Send + Sync + 'static {
    /// The tenant id, or why the request names none.
    fn tenant(&self, request: &RequestView<'_>) -> Result<String, NoTenant>;
}

impl<F> TenantExtractor for F
where
    F: Fn(&RequestView<'_>) -> Option<String> + Send + Sync + 'static,
{
    fn tenant(&self, request: &RequestView<'_>) -> Result<String, NoTenant> {
        self(request).ok_or(NoTenant::MISSING)
    }
}

/// Why a request names no tenant; it answers `401` with this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoTenant {
    message: &'static str,
    challenge: Option<&'static str>,
}

impl NoTenant {
    /// The request carries no tenant credentials.
    pub const MISSING: NoTenant = NoTenant { message: "the request names no tenant", challenge: None };

    /// A rejection with this message for the `401` body.
    pub const fn new(message: &'static str) -> Self {
        NoTenant { message, challenge: None }
    }

    /// Adds a `WWW-Authenticate` challenge to the `401` answer (builder style).
    pub const fn with_challenge(self, challenge: &'static str) -> Self {
        NoTenant { challenge: Some(challenge), ..self }
    }

    /// The message of the `401` body.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The `WWW-Authenticate` value, if any.
    pub fn challenge(&self) -> Option<&'static str> {
        self.challenge
    }
}

impl fmt::Display for NoTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

/// The tenant id is the value of a request header (`x-tenant-id` by default).
///
/// Use it behind something that authenticates the header (a gateway that sets it), or for
/// internal services: anyone who can send the header can charge any tenant.
#[derive(Debug, Clone)]
pub struct HeaderTenant {
    name: HeaderName,
}

impl HeaderTenant {
    /// The default header, `x-tenant-id`.
    pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-tenant-id");

    /// Reads the tenant from the header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderTenant { name }
    }
}

impl Default for HeaderTenant {
    fn default() -> Self {
        HeaderTenant::new(Self::DEFAULT_HEADER)
    }
}

impl TenantExtractor for HeaderTenant {
    fn tenant(&self, request: &RequestView<'_>) -> Result<String, NoTenant> {
        let value = request.headers().get(&self.name).ok_or(NoTenant::MISSING)?;
        let value = value.to_str().map_err(|_| NoTenant::new("the tenant header is not visible ASCII"))?.trim();
        if value.is_empty() { Err(NoTenant::MISSING) } else { Ok(value.to_owned()) }
    }
}

#[cfg(feature = "jwt")]
pub use self::jwt::JwtTenant;

#[cfg(feature = "jwt")]
mod jwt {
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use http::header::AUTHORIZATION;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    use metering_core::{Clock, SystemClock};
    use serde_json::{Map, Value};

    use super::{NoTenant, TenantExtractor};
    use crate::error::Error;
    use crate::request::RequestView;

    /// The longest bearer token looked at; longer ones are refused unread.
    const MAX_TOKEN_LEN: usize = 8 * 1024;
    /// The shortest HMAC secret accepted: the length of the SHA-256 output.
    const MIN_HMAC_SECRET: usize = 32;

    const MISSING: NoTenant = NoTenant::new("a bearer token is required").with_challenge("Bearer");
    const INVALID: NoTenant =
        NoTenant::new("the bearer token is invalid").with_challenge("Bearer error=\"invalid_token\"");
    const EXPIRED: NoTenant =
        NoTenant::new("the bearer token has expired").with_challenge("Bearer error=\"invalid_token\"");
    const NO_CLAIM: NoTenant =
        NoTenant::new("the bearer token names no tenant").with_challenge("Bearer error=\"invalid_token\"");

    /// The tenant id is a claim (`tenant_id` by default) of a verified bearer JWT.
    ///
    /// Only the one algorithm it was built for is accepted (`alg: none` and algorithm
    /// confusion are refused), the signature must verify, `exp` is required and checked
    /// (with 60 seconds of leeway, on the [`Clock`] given, the system's by default), `nbf` is
    /// checked when present, and a token with an `aud` is refused unless an
    /// [`audience`](Self::audience) is configured and matches.
    ///
    /// ```
    /// use metering_tower::JwtTenant;
    ///
    /// let tenant = JwtTenant::hs256(b"a secret of at least thirty-two bytes!")?.claim("org");
    /// # Ok::<_, metering_tower::Error>(())
    /// ```
    #[derive(Clone)]
    pub struct JwtTenant {
        key: DecodingKey,
        validation: Validation,
        claim: Box<str>,
        leeway_secs: u64,
        clock: Arc<dyn Clock>,
    }

    impl JwtTenant {
        /// The claim read by default.
        pub const DEFAULT_CLAIM: &'static str = "tenant_id";

        /// Verifies HS256 tokens with this secret (at least 32 bytes).
        pub fn hs256(secret: &[u8]) -> Result<Self, Error> {
            if secret.len() < MIN_HMAC_SECRET {
                return Err(Error::WeakSecret { min: MIN_HMAC_SECRET });
            }
            let key = DecodingKey::from_secret(secret).map_err(Error::InvalidKey)?;
            Self::new(key, Algorithm::HS256)
        }

        /// Verifies tokens signed with `algorithm` by `key` (e.g. an RSA or EC public key);
        /// fails when the key does not belong to the algorithm's family.
        pub fn new(key: DecodingKey, algorithm: Algorithm) -> Result<Self, Error> {
            if key.family() != algorithm.family() {
                return Err(Error::InvalidKey(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()));
            }
            let mut validation = Validation::new(algorithm);
            // `exp` stays required; it and `nbf` are checked on our clock in `verify`.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.leeway = 0;
            Ok(JwtTenant {
                key,
                validation,
                claim: Self::DEFAULT_CLAIM.into(),
                leeway_secs: 60,
                clock: Arc::new(SystemClock),
            })
        }

        /// Reads the tenant id from this claim instead of `tenant_id` (builder style).
        pub fn claim(mut self, name: impl Into<String>) -> Self {
            self.claim = name.into().into_boxed_str();
            self
        }

        /// Requires the `aud` claim to be one of these (builder style).
        pub fn audience(mut self, audience: &[&str]) -> Self {
            self.validation.set_audience(audience);
            self.validation.required_spec_claims.insert("aud".to_owned());
            self
        }

        /// Requires the `iss` claim to be one of these (builder style).
        pub fn issuer(mut self, issuer: &[&str]) -> Self {
            self.validation.set_issuer(issuer);
            self.validation.required_spec_claims.insert("iss".to_owned());
            self
        }

        /// Tolerates this much clock skew on `exp` and `nbf` (default 60 seconds).
        pub fn leeway(mut self, leeway: Duration) -> Self {
            self.leeway_secs = leeway.as_secs();
            self
        }

        /// Checks `exp` and `nbf` on this clock instead of the system's (builder style).
        pub fn clock(mut self, clock: impl Clock) -> Self {
            self.clock = Arc::new(clock);
            self
        }

        /// Verifies a token and returns its tenant claim.
        pub fn verify(&self, token: &str) -> Result<String, NoTenant> {
            if token.len() > MAX_TOKEN_LEN {
                return Err(INVALID);
            }
            let data = decode::<Map<String, Value>>(token, &self.key, &self.validation).map_err(|e| {
                tracing::debug!(error = %e, "bearer token refused");
                INVALID
            })?;
            let claims = data.claims;
            let now = self.clock.now().as_micros() as f64 / 1e6;
            let leeway = self.leeway_secs as f64;
            let exp = claims.get("exp").and_then(Value::as_f64).ok_or(INVALID)?;
            if now >= exp + leeway {
                return Err(EXPIRED);
            }
            if let Some(nbf) = claims.get("nbf") {
                let nbf = nbf.as_f64().ok_or(INVALID)?;
                if now + leeway < nbf {
                    return Err(INVALID);
                }
            }
            match claims.get(&*self.claim) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(NO_CLAIM),
            }
        }
    }

    impl TenantExtractor for JwtTenant {
        fn tenant(&self, request: &RequestView<'_>) -> Result<String, NoTenant> {
            let value = request.headers().get(AUTHORIZATION).ok_or(MISSING)?;
            let value = value.to_str().map_err(|_| INVALID)?;
            let (scheme, token) = value.trim().split_once(' ').ok_or(MISSING)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(MISSING);
            }
            self.verify(token.trim())
        }
    }

    impl fmt::Debug for JwtTenant {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JwtTenant")
                .field("algorithms", &self.validation.algorithms)
                .field("claim", &self.claim)
                .field("leeway_secs", &self.leeway_secs)
                .finish_non_exhaustive()
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    #[test]
    fn header_tenant_reads_trims_and_refuses_empty() {
        let t = HeaderTenant::default();
        let req = Request::builder().header("x-tenant-id", " acme ").body(()).unwrap();
        assert_eq!(t.tenant(&RequestView::new(&req)).unwrap(), "acme");
        let req = Request::builder().header("x-tenant-id", "").body(()).unwrap();
        assert_eq!(t.tenant(&RequestView::new(&req)), Err(NoTenant::MISSING));
        let req = Request::builder().body(()).unwrap();
        assert_eq!(t.tenant(&RequestView::new(&req)), Err(NoTenant::MISSING));
    }

    #[test]
    fn closures_are_extractors() {
        let t = |r: &RequestView<'_>| r.uri().query().map(str::to_owned);
        let req = Request::builder().uri("/x?acme").body(()).unwrap();
        assert_eq!(t.tenant(&RequestView::new(&req)).unwrap(), "acme");
    }
}
