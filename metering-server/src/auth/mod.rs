//! Authentication: passwords, tokens, API keys, lockout, and the [`Caller`] extractor.
//!
//! [`AuthService`] holds the rules; the routes in `routes/accounts.rs` and `routes/keys.rs`
//! only parse and answer.

mod bounded;
mod caller;
mod identities;
pub mod password;
mod service;
pub mod token;

pub use caller::{ActsFor, Caller, Credential};
pub use password::{PasswordCost, hash_password, verify_password};
pub use service::{
    API_KEY_HEADER, API_KEY_PREFIX, ApiKeyInfo, AuthService, CreatedApiKey, DEFAULT_ADMIN_EMAIL, KeyPage, KeyQuery,
    LoginRequest, NewApiKey, PLATFORM_PLAN, PLATFORM_TENANT, RefreshRequest, SignupRequest, SignupResponse, TokenPair,
    hash_api_key,
};

/// The most characters of an e-mail address.
pub const MAX_EMAIL_CHARS: usize = 254;

/// Trims and lower-cases an e-mail, and checks its shape: `local@domain`, at most 254
/// characters, a local part of printable characters, a domain of letters, digits, `-` and `.`.
pub fn normalize_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty");
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else { return Err("is not an e-mail address") };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '@' | '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']')
        });
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !local_ok || !domain_ok {
        return Err("is not an e-mail address");
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(normalize_email("admin@localhost").unwrap(), "admin@localhost");
        for bad in
            ["", "ada", "@example.com", "ada@", "ada@exa mple.com", "a b@example.com", "ada@-x.com", "ada@x..com"]
        {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }
}
