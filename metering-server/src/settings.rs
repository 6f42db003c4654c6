//! Settings from the environment (`METERING_*`), each with a default.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where to listen (`METERING_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Where the SQLite file lives (`METERING_DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
}

/// A setting that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    /// The variable's name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let listen = match var("METERING_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.parse().map_err(|e: std::net::AddrParseError| SettingsError {
                name: "METERING_LISTEN",
                value: v,
                reason: e.to_string(),
            })?,
        };
        let data_dir = match var("METERING_DATA_DIR") {
            Some(v) if v.trim().is_empty() => {
                return Err(SettingsError { name: "METERING_DATA_DIR", value: v, reason: "must not be empty".into() });
            }
            Some(v) => PathBuf::from(v),
            None => PathBuf::from("data"),
        };
        Ok(Settings { listen, data_dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let s = Settings::from_vars(|_| None).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        let err = Settings::from_vars(|n| (n == "METERING_LISTEN").then(|| "nope".to_string())).unwrap_err();
        assert_eq!(err.name, "METERING_LISTEN");
    }
}
