//! JWTs: HS256 access and refresh tokens, checked against the engine's clock.
//!
//! Only `HS256` is accepted (so neither `none` nor an algorithm swap gets through);
//! `exp`, `sub` and our own claims are required. jsonwebtoken's own expiry check reads the
//! system clock, so it is off and `exp` is compared with the engine's clock instead: tests
//! move time with a `ManualClock`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use metering_core::{Role, Timestamp};
use serde::{Deserialize, Serialize};

/// Which kind of token a JWT is; one can never be used as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Authenticates requests, short-lived.
    Access,
    /// Buys a new token pair, once.
    Refresh,
}

/// The claims of every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's tenant.
    pub tenant: String,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Access or refresh.
    pub typ: TokenKind,
    /// The token's unique id.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, wrong algorithm or missing claims.
    #[error("the token is invalid")]
    Invalid,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// An access token where a refresh token was expected, or the reverse.
    #[error("the token is of the wrong type")]
    WrongKind,
}

/// Signs and checks tokens with one HS256 secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    /// Keys from a secret.
    pub fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// Signs claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// New claims of `kind` for a user, valid for `ttl` from `now`, with a fresh `jti`.
    pub fn claims(kind: TokenKind, user: &metering_core::User, now: Timestamp, ttl: Duration) -> Claims {
        let iat = secs(now);
        Claims {
            sub: user.id.clone(),
            tenant: user.tenant_id.to_string(),
            role: user.role,
            typ: kind,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        }
    }

    /// Checks a token's signature, algorithm, kind and expiry (at `now`).
    pub fn verify(&self, token: &str, kind: TokenKind, now: Timestamp) -> Result<Claims, TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        if claims.typ != kind {
            return Err(TokenError::WrongKind);
        }
        if claims.exp <= secs(now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Whole seconds since the epoch (0 before it).
fn secs(t: Timestamp) -> u64 {
    u64::try_from(t.as_micros() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metering_core::{TenantId, User};

    fn user() -> User {
        User {
            id: "u1".into(),
            tenant_id: TenantId::new("acme").unwrap(),
            email: "a@example.com".into(),
            password_hash: String::new(),
            role: Role::User,
            created_at: Timestamp::EPOCH,
        }
    }

    #[test]
    fn tokens_expire_on_the_given_clock_and_keep_their_kind() {
        let keys = TokenKeys::new(&[7; 32]).unwrap();
        let now = Timestamp::from_secs(1_800_000_000);
        let claims = TokenKeys::claims(TokenKind::Access, &user(), now, Duration::from_secs(900));
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token, TokenKind::Access, now).unwrap(), claims);
        assert_eq!(keys.verify(&token, TokenKind::Refresh, now), Err(TokenError::WrongKind));
        let later = now.plus(Duration::from_secs(900));
        assert_eq!(keys.verify(&token, TokenKind::Access, later), Err(TokenError::Expired));
        let other = TokenKeys::new(&[8; 32]).unwrap();
        assert_eq!(other.verify(&token, TokenKind::Access, now), Err(TokenError::Invalid));
    }

    #[test]
    fn none_and_other_algorithms_are_refused() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let keys = TokenKeys::new(&[7; 32]).unwrap();
        let now = Timestamp::from_secs(1_800_000_000);
        let claims = TokenKeys::claims(TokenKind::Access, &user(), now, Duration::from_secs(900));
        let body = b64(&serde_json::to_vec(&claims).unwrap());
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), body);
        assert_eq!(keys.verify(&none, TokenKind::Access, now), Err(TokenError::Invalid));
        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(&[7; 32]).unwrap())
                .unwrap();
        assert_eq!(keys.verify(&hs512, TokenKind::Access, now), Err(TokenError::Invalid));
    }

    #[test]
    fn fuzz_jwt_verification() {
        let keys = TokenKeys::new(&[7; 32]).unwrap();
        let now = Timestamp::from_secs(1_800_000_000);
        let valid = keys.sign(&TokenKeys::claims(TokenKind::Access, &user(), now, Duration::from_secs(900))).unwrap();
        crate::fuzz::run("jwt", crate::fuzz::mutations_of(valid.clone()), |token| {
            match keys.verify(&token, TokenKind::Access, now) {
                Ok(_) if token != valid => Err(format!("an altered token passed: {token}")),
                _ => Ok(()),
            }
        });
    }
}
