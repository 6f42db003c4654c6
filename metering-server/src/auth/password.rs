//! Password hashing with argon2id, off the async threads.
//!
//! Hashing and verification each take tens of milliseconds of CPU on purpose, so they run
//! in [`tokio::task::spawn_blocking`] and never stall the runtime's workers.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::ApiError;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest password accepted (hashing cost must not depend on an attacker's input size).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks a new password's length (in characters): at least [`MIN_PASSWORD_CHARS`], at most
/// [`MAX_PASSWORD_CHARS`].
pub fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    Ok(())
}

/// The cost of argon2id hashing.
///
/// [`PasswordCost::DEFAULT`] is argon2's own recommendation (m = 19 MiB, t = 2, p = 1);
/// [`PasswordCost::TEST`] is the cheapest the algorithm allows, for test suites only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl PasswordCost {
    /// Argon2's recommended defaults.
    pub const DEFAULT: PasswordCost =
        PasswordCost { memory_kib: argon2::Params::DEFAULT_M_COST, iterations: argon2::Params::DEFAULT_T_COST };
    /// The cheapest valid cost: fast tests, useless against an offline attack.
    pub const TEST: PasswordCost = PasswordCost { memory_kib: argon2::Params::MIN_M_COST, iterations: 1 };

    fn hasher(self) -> Result<Argon2<'static>, argon2::Error> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, 1, None)?;
        Ok(Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
    }
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string.
pub async fn hash_password(password: String, cost: PasswordCost) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hasher = cost.hasher().map_err(ApiError::internal)?;
        hasher.hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Whether `password` matches the PHC string `hash` (with the parameters recorded in it).
///
/// A malformed hash does not match.
pub async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok())
        .await
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_salt_themselves() {
        for cost in [PasswordCost::TEST, PasswordCost::DEFAULT] {
            let a = hash_password("correct horse".into(), cost).await.unwrap();
            assert!(a.contains(&format!("m={},t={}", cost.memory_kib, cost.iterations)), "{a}");
            let b = hash_password("correct horse".into(), cost).await.unwrap();
            assert!(a.starts_with("$argon2id$"));
            assert_ne!(a, b, "each hash has its own salt");
            assert!(verify_password("correct horse".into(), a.clone()).await.unwrap());
            assert!(!verify_password("wrong horse".into(), a).await.unwrap());
            assert!(!verify_password("x".into(), "not a hash".into()).await.unwrap());
        }
    }
}
