//! Authentication: passwords, tokens, API keys, and the [`Caller`] extractor.

mod caller;

pub use caller::{ActsFor, Caller, Credential};
