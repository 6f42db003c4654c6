//! Settings, layered with figment: defaults <- a TOML file <- `METERING_*` environment variables.
//!
//! The file is named by `--config` or `METERING_CONFIG`; its keys are the variables' names
//! without the prefix, lower-case (`listen`, `data_dir`, `signup_limit`, ...). The environment
//! wins, so secrets can come from a secret manager (`infisical run -- metering-server`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `METERING_LISTEN` | `127.0.0.1:8080` | the address to serve on |
//! | `METERING_DATA_DIR` | `./data` | the SQLite file with its WAL and ledger journal, and the generated JWT secret |
//! | `METERING_JWT_SECRET` | generated into the data dir | HS256 signing secret, at least 32 bytes |
//! | `METERING_ADMIN_EMAIL`, `METERING_ADMIN_PASSWORD` | none | an admin created or updated at start |
//! | `METERING_SIGNUP_LIMIT` | `20/hour` | sign-ups per client address, `<max>/<second\|minute\|hour\|day>` |
//! | `METERING_CASBIN_MODEL`, `METERING_CASBIN_POLICY` | the shipped files | access-control model and policy |
//! | `METERING_ACCESS_TOKEN_TTL` | `15m` | access token lifetime (`<n>[s\|m\|h\|d]`) |
//! | `METERING_REFRESH_TOKEN_TTL` | `30d` | refresh token lifetime |
//! | `METERING_ARGON2_MEMORY_KIB`, `METERING_ARGON2_ITERATIONS` | `19456`, `2` | password hashing cost |
//!
//! A value that cannot be used stops the start with one line naming the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use metering_core::FailurePolicy;

use crate::auth::password::{self, PasswordCost};

/// A secret string: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How many of something are allowed per period, e.g. `20/hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// How many.
    pub max: NonZeroU32,
    /// Per how long.
    pub per: Duration,
}

impl std::str::FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (max, per) = s.split_once('/').ok_or("expected `<max>/<per>`, e.g. `20/hour`")?;
        let max: u32 = max.trim().parse().map_err(|_| format!("`{}` is not a whole number", max.trim()))?;
        let max = NonZeroU32::new(max).ok_or("the maximum must be at least 1")?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => return Err(format!("unknown period `{other}` (second, minute, hour or day)")),
        };
        Ok(RateSpec { max, per })
    }
}

/// The first admin, from `METERING_ADMIN_EMAIL` and `METERING_ADMIN_PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSeed {
    /// The admin's e-mail (lower-cased).
    pub email: String,
    /// The admin's password.
    pub password: Secret,
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where to listen (`METERING_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Where the SQLite file lives (`METERING_DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// The HS256 secret (`METERING_JWT_SECRET`); `None`: generated once and kept in the data dir.
    pub jwt_secret: Option<Secret>,
    /// An admin to create or update at start.
    pub admin: Option<AdminSeed>,
    /// Sign-ups allowed per client address (`METERING_SIGNUP_LIMIT`, default `20/hour`).
    pub signup_limit: RateSpec,
    /// A Casbin model file replacing the shipped one (`METERING_CASBIN_MODEL`).
    pub casbin_model: Option<PathBuf>,
    /// A Casbin policy file replacing the shipped one (`METERING_CASBIN_POLICY`).
    pub casbin_policy: Option<PathBuf>,
    /// Access token lifetime (`METERING_ACCESS_TOKEN_TTL`, default 15 minutes).
    pub access_token_ttl: Duration,
    /// Refresh token lifetime (`METERING_REFRESH_TOKEN_TTL`, default 30 days).
    pub refresh_token_ttl: Duration,
    /// Password hashing cost (`METERING_ARGON2_MEMORY_KIB`, `METERING_ARGON2_ITERATIONS`).
    pub password_cost: PasswordCost,
    /// How long raw ledger records are kept (`METERING_LEDGER_RETENTION`, default 400 days;
    /// at least 62 days, so the current and the previous billing period stay rebuildable).
    pub ledger_retention: Duration,
    /// Hot counters shared through Redis (`METERING_REDIS_URL`); `None`: in this process.
    pub redis: Option<RedisSettings>,
    /// Records shared through MongoDB (`METERING_MONGODB_URI`); `None`: SQLite in the data
    /// directory. Needs Redis: instances sharing records must share their counters too.
    pub mongodb: Option<MongoSettings>,
}

/// Where the shared records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoSettings {
    /// `mongodb://…` or `mongodb+srv://…`, as the MongoDB drivers take it.
    pub uri: Secret,
    /// The database (`METERING_MONGODB_DATABASE`, default `metering`).
    pub database: String,
    /// The write concern a ledger record is acknowledged at (`METERING_MONGODB_WRITE_CONCERN`):
    /// `majority` (the default) or a number of nodes, journaled unless `,j=false` follows.
    pub write_concern: String,
    /// The most one MongoDB operation may take (`METERING_MONGODB_TIMEOUT`, default `2s`).
    pub timeout: Duration,
}

impl MongoSettings {
    /// The URI with any password hidden, for logs and `check-config`.
    pub fn redacted_uri(&self) -> String {
        redact_credentials(self.uri.expose())
    }
}

/// Where the shared hot counters live, and what a decision does when they cannot answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`, `rediss://…` (TLS), or
    /// `redis-cluster://host:port?node=host:port&node=…` (`rediss-cluster://`: TLS).
    pub url: Secret,
    /// What every key starts with (`METERING_REDIS_PREFIX`, default `metering`).
    pub prefix: String,
    /// The most one Redis call may take (`METERING_REDIS_TIMEOUT`, default `50ms`).
    pub timeout: Duration,
    /// `closed` (default: 503, nothing charged) or `open` (admit and count later), when
    /// Redis cannot answer in time (`METERING_REDIS_FAILURE`).
    pub failure: FailurePolicy,
}

impl RedisSettings {
    /// The URL with any password hidden, for logs and `check-config`.
    pub fn redacted_url(&self) -> String {
        redact_credentials(self.url.expose())
    }
}

/// `scheme://user:password@rest` as `scheme://<credentials>@rest`.
fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<credentials>@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The shortest ledger retention accepted.
pub(crate) const MIN_LEDGER_RETENTION: Duration = Duration::from_secs(62 * 86_400);

/// A setting that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    /// The variable's name.
    pub name: &'static str,
    /// Its value (`<redacted>` for secrets).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The shortest JWT secret accepted, in bytes (HS256 wants at least its output size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every setting's key (in the file) and variable (in the environment).
const KEYS: &[(&str, &str)] = &[
    ("listen", "METERING_LISTEN"),
    ("data_dir", "METERING_DATA_DIR"),
    ("jwt_secret", "METERING_JWT_SECRET"),
    ("admin_email", "METERING_ADMIN_EMAIL"),
    ("admin_password", "METERING_ADMIN_PASSWORD"),
    ("signup_limit", "METERING_SIGNUP_LIMIT"),
    ("casbin_model", "METERING_CASBIN_MODEL"),
    ("casbin_policy", "METERING_CASBIN_POLICY"),
    ("access_token_ttl", "METERING_ACCESS_TOKEN_TTL"),
    ("refresh_token_ttl", "METERING_REFRESH_TOKEN_TTL"),
    ("argon2_memory_kib", "METERING_ARGON2_MEMORY_KIB"),
    ("argon2_iterations", "METERING_ARGON2_ITERATIONS"),
    ("ledger_retention", "METERING_LEDGER_RETENTION"),
    ("redis_url", "METERING_REDIS_URL"),
    ("redis_prefix", "METERING_REDIS_PREFIX"),
    ("redis_timeout", "METERING_REDIS_TIMEOUT"),
    ("redis_failure", "METERING_REDIS_FAILURE"),
    ("mongodb_uri", "METERING_MONGODB_URI"),
    ("mongodb_database", "METERING_MONGODB_DATABASE"),
    ("mongodb_write_concern", "METERING_MONGODB_WRITE_CONCERN"),
    ("mongodb_timeout", "METERING_MONGODB_TIMEOUT"),
];

const SECRET_KEYS: &[&str] = &["jwt_secret", "admin_password", "redis_url", "mongodb_uri"];

const DEFAULT_SIGNUPS_PER_HOUR: NonZeroU32 = match NonZeroU32::new(20) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// The variable naming the settings file.
pub const CONFIG_VAR: &str = "METERING_CONFIG";

impl Default for Settings {
    /// Every default; no secret, no admin.
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            jwt_secret: None,
            admin: None,
            signup_limit: RateSpec { max: DEFAULT_SIGNUPS_PER_HOUR, per: Duration::from_secs(3600) },
            casbin_model: None,
            casbin_policy: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            password_cost: PasswordCost::DEFAULT,
            ledger_retention: Duration::from_secs(400 * 86_400),
            redis: None,
            mongodb: None,
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment and the file `METERING_CONFIG` names.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::load(None, |name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (tests pass a map), with the file `METERING_CONFIG` names.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Self::load(None, var)
    }

    /// Reads the settings: defaults <- `config_file` (or the file `METERING_CONFIG` names) <-
    /// the variables `var` finds.
    pub fn load(config_file: Option<&Path>, var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let file = config_file.map(Path::to_path_buf).or_else(|| var(CONFIG_VAR).map(PathBuf::from));
        let mut figment = Figment::new().merge(Serialized::defaults(BTreeMap::<String, String>::new()));
        if let Some(path) = &file {
            let fail = |reason: String| SettingsError { name: CONFIG_VAR, value: path.display().to_string(), reason };
            if !path.is_file() {
                return Err(fail("no such file".into()));
            }
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            let table: BTreeMap<String, Value> = Figment::from(Toml::string(&text))
                .extract()
                .map_err(|e| fail(format!("not a valid TOML settings file: {e}")))?;
            if let Some(unknown) = table.keys().find(|k| !KEYS.iter().any(|(key, _)| key == k)) {
                return Err(fail(format!("unknown setting `{unknown}`")));
            }
            figment = figment.merge(Toml::string(&text));
        }
        let env: BTreeMap<&str, String> = KEYS.iter().filter_map(|(key, name)| var(name).map(|v| (*key, v))).collect();
        figment = figment.merge(Serialized::defaults(env));
        let merged: BTreeMap<String, Value> = figment.extract().map_err(|e| SettingsError {
            name: CONFIG_VAR,
            value: file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        Self::from_map(&merged)
    }

    fn from_map(map: &BTreeMap<String, Value>) -> Result<Self, SettingsError> {
        let get = |key: &str| -> Result<Option<(&'static str, String)>, SettingsError> {
            let (_, name) = KEYS.iter().find(|(k, _)| *k == key).copied().unwrap_or((key, CONFIG_VAR));
            let Some(value) = map.get(key) else { return Ok(None) };
            let text = match value {
                Value::String(_, s) => s.clone(),
                Value::Char(_, c) => c.to_string(),
                Value::Bool(_, b) => b.to_string(),
                Value::Num(..) => serde_json::to_value(value).map(|v| v.to_string()).unwrap_or_default(),
                _ => {
                    return Err(SettingsError {
                        name,
                        value: String::new(),
                        reason: "must be a string or a number".into(),
                    });
                }
            };
            Ok(Some((name, text)))
        };
        let invalid = |name: &'static str, key: &str, value: &str, reason: String| SettingsError {
            name,
            value: if SECRET_KEYS.contains(&key) { "<redacted>".into() } else { value.to_owned() },
            reason,
        };
        let mut s = Settings::default();
        if let Some((name, v)) = get("listen")? {
            s.listen =
                v.trim().parse().map_err(|e: std::net::AddrParseError| invalid(name, "listen", &v, e.to_string()))?;
        }
        if let Some((name, v)) = get("data_dir")? {
            if v.trim().is_empty() {
                return Err(invalid(name, "data_dir", &v, "must not be empty".into()));
            }
            s.data_dir = PathBuf::from(v);
        }
        if let Some((name, v)) = get("jwt_secret")? {
            if v.len() < MIN_JWT_SECRET_BYTES {
                return Err(invalid(name, "jwt_secret", &v, format!("must be at least {MIN_JWT_SECRET_BYTES} bytes")));
            }
            s.jwt_secret = Some(Secret(v));
        }
        match (get("admin_email")?, get("admin_password")?) {
            (None, None) => {}
            (Some((name, _)), None) => {
                return Err(invalid(name, "admin_email", "", "METERING_ADMIN_PASSWORD must be set as well".into()));
            }
            (None, Some((name, _))) => {
                return Err(invalid(name, "admin_password", "", "METERING_ADMIN_EMAIL must be set as well".into()));
            }
            (Some((email_name, email)), Some((password_name, password))) => {
                let email = crate::auth::normalize_email(&email)
                    .map_err(|reason| invalid(email_name, "admin_email", &email, reason.into()))?;
                password::check_password(&password)
                    .map_err(|reason| invalid(password_name, "admin_password", &password, reason))?;
                s.admin = Some(AdminSeed { email, password: Secret(password) });
            }
        }
        if let Some((name, v)) = get("signup_limit")? {
            s.signup_limit = v.parse().map_err(|reason| invalid(name, "signup_limit", &v, reason))?;
        }
        for (key, slot) in [("casbin_model", &mut s.casbin_model), ("casbin_policy", &mut s.casbin_policy)] {
            if let Some((name, v)) = get(key)? {
                let path = PathBuf::from(&v);
                if !path.is_file() {
                    return Err(invalid(name, key, &v, "no such file".into()));
                }
                *slot = Some(path);
            }
        }
        for (key, slot) in
            [("access_token_ttl", &mut s.access_token_ttl), ("refresh_token_ttl", &mut s.refresh_token_ttl)]
        {
            if let Some((name, v)) = get(key)? {
                *slot = parse_duration(&v).map_err(|reason| invalid(name, key, &v, reason))?;
            }
        }
        if let Some((name, v)) = get("ledger_retention")? {
            s.ledger_retention = parse_duration(&v).map_err(|reason| invalid(name, "ledger_retention", &v, reason))?;
            if s.ledger_retention < MIN_LEDGER_RETENTION {
                return Err(invalid(name, "ledger_retention", &v, "must be at least 62 days (62d)".into()));
            }
        }
        if s.access_token_ttl >= s.refresh_token_ttl {
            return Err(SettingsError {
                name: "METERING_ACCESS_TOKEN_TTL",
                value: format!("{}s", s.access_token_ttl.as_secs()),
                reason: "must be shorter than METERING_REFRESH_TOKEN_TTL".into(),
            });
        }
        if let Some((name, v)) = get("argon2_memory_kib")? {
            s.password_cost.memory_kib = parse_u32(&v, argon2::Params::MIN_M_COST, argon2::Params::MAX_M_COST)
                .map_err(|reason| invalid(name, "argon2_memory_kib", &v, reason))?;
        }
        if let Some((name, v)) = get("argon2_iterations")? {
            s.password_cost.iterations =
                parse_u32(&v, 1, 64).map_err(|reason| invalid(name, "argon2_iterations", &v, reason))?;
        }
        s.redis = redis_settings(map, &get, &invalid)?;
        s.mongodb = mongo_settings(map, &get, &invalid)?;
        if let Some(mongodb) = &s.mongodb {
            let refuse = |reason: &str| SettingsError {
                name: "METERING_MONGODB_URI",
                value: mongodb.redacted_uri(),
                reason: reason.into(),
            };
            if s.redis.is_none() {
                return Err(refuse(
                    "needs METERING_REDIS_URL: instances sharing records must share their counters (supported: \
                     SQLite alone, Redis + SQLite, Redis + MongoDB)",
                ));
            }
            if s.jwt_secret.is_none() {
                return Err(refuse("needs METERING_JWT_SECRET: instances sharing records must sign with one secret"));
            }
        }
        Ok(s)
    }
}

/// What reads one setting: its variable's name and its text, if set.
type Get<'a> = dyn Fn(&str) -> Result<Option<(&'static str, String)>, SettingsError> + 'a;
/// What makes the error for one setting's value.
type Invalid<'a> = dyn Fn(&'static str, &str, &str, String) -> SettingsError + 'a;

/// Refuses any of `keys` set without the setting `needs` names.
fn only_with(map: &BTreeMap<String, Value>, get: &Get<'_>, keys: &[&str], needs: &str) -> Result<(), SettingsError> {
    match keys.iter().find(|k| map.contains_key(**k)) {
        Some(key) => {
            let (name, v) = get(key)?.unwrap_or_default();
            Err(SettingsError { name, value: v, reason: format!("only applies with {needs}") })
        }
        None => Ok(()),
    }
}

fn redis_settings(
    map: &BTreeMap<String, Value>,
    get: &Get<'_>,
    invalid: &Invalid<'_>,
) -> Result<Option<RedisSettings>, SettingsError> {
    let Some((url_name, url)) = get("redis_url")? else {
        only_with(map, get, &["redis_prefix", "redis_timeout", "redis_failure"], "METERING_REDIS_URL")?;
        return Ok(None);
    };
    let mut redis = RedisSettings {
        url: Secret(url.trim().to_owned()),
        prefix: "metering".into(),
        timeout: Duration::from_millis(50),
        failure: FailurePolicy::Closed,
    };
    if !["redis://", "rediss://", "redis-cluster://", "rediss-cluster://"].iter().any(|p| redis.url.0.starts_with(p)) {
        let reason = "must start with redis://, rediss://, redis-cluster:// or rediss-cluster://".into();
        return Err(invalid(url_name, "redis_url", &url, reason));
    }
    if let Some((name, v)) = get("redis_prefix")? {
        let valid = (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !valid {
            return Err(invalid(name, "redis_prefix", &v, "must be 1-64 of [A-Za-z0-9_.:-]".into()));
        }
        redis.prefix = v;
    }
    if let Some((name, v)) = get("redis_timeout")? {
        redis.timeout = parse_millis(&v).map_err(|reason| invalid(name, "redis_timeout", &v, reason))?;
    }
    if let Some((name, v)) = get("redis_failure")? {
        redis.failure = match v.trim() {
            "closed" => FailurePolicy::Closed,
            "open" => FailurePolicy::Open,
            _ => return Err(invalid(name, "redis_failure", &v, "must be `closed` or `open`".into())),
        };
    }
    Ok(Some(redis))
}

fn mongo_settings(
    map: &BTreeMap<String, Value>,
    get: &Get<'_>,
    invalid: &Invalid<'_>,
) -> Result<Option<MongoSettings>, SettingsError> {
    let Some((uri_name, uri)) = get("mongodb_uri")? else {
        let keys = ["mongodb_database", "mongodb_write_concern", "mongodb_timeout"];
        only_with(map, get, &keys, "METERING_MONGODB_URI")?;
        return Ok(None);
    };
    let uri = uri.trim().to_owned();
    if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
        return Err(invalid(uri_name, "mongodb_uri", &uri, "must start with mongodb:// or mongodb+srv://".into()));
    }
    let mut mongodb = MongoSettings {
        uri: Secret(uri),
        database: "metering".into(),
        write_concern: "majority".into(),
        timeout: Duration::from_secs(2),
    };
    if let Some((name, v)) = get("mongodb_database")? {
        // MongoDB's own rule for database names, in its strictest (Windows) form.
        let valid = (1..=63).contains(&v.len())
            && !v.contains(['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0']);
        if !valid {
            return Err(invalid(name, "mongodb_database", &v, "must be 1-63 bytes without /\\. \"$*<>:|?".into()));
        }
        mongodb.database = v;
    }
    if let Some((name, v)) = get("mongodb_write_concern")? {
        check_write_concern(&v).map_err(|reason| invalid(name, "mongodb_write_concern", &v, reason))?;
        mongodb.write_concern = v.trim().to_owned();
    }
    if let Some((name, v)) = get("mongodb_timeout")? {
        mongodb.timeout = parse_millis(&v).map_err(|reason| invalid(name, "mongodb_timeout", &v, reason))?;
    }
    Ok(Some(mongodb))
}

/// `majority` or a number of nodes (1-50), optionally followed by `,j=false` (acknowledged
/// before the journal is synced) or `,j=true` (the default).
fn check_write_concern(v: &str) -> Result<(), String> {
    let (w, journal) = v.trim().split_once(',').unwrap_or((v.trim(), "j=true"));
    let w_ok = w == "majority" || w.parse::<u32>().is_ok_and(|n| (1..=50).contains(&n));
    if w_ok && matches!(journal, "j=true" | "j=false") {
        Ok(())
    } else {
        Err("must be `majority` or a number of nodes, optionally followed by `,j=false`".into())
    }
}

/// `<n>` seconds or `<n>s|m|h|d`, between 1 second and 10 years.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| "expected `<n>` seconds or `<n>s|m|h|d`, e.g. `15m`".to_owned())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit `{other}` (s, m, h or d)")),
    };
    let secs = n.saturating_mul(unit);
    if !(1..=10 * 365 * 86_400).contains(&secs) {
        return Err("must be between 1 second and 10 years".into());
    }
    Ok(Duration::from_secs(secs))
}

/// `<n>ms` or `<n>s`, between 1 millisecond and 60 seconds.
fn parse_millis(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, scale) = if let Some(d) = v.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = v.strip_suffix('s') {
        (d, 1_000)
    } else {
        return Err("expected `<n>ms` or `<n>s`, e.g. `50ms`".into());
    };
    let n: u64 = digits.parse().map_err(|_| "expected `<n>ms` or `<n>s`, e.g. `50ms`".to_owned())?;
    let millis = n.saturating_mul(scale);
    if !(1..=60_000).contains(&millis) {
        return Err("must be between 1ms and 60s".into());
    }
    Ok(Duration::from_millis(millis))
}

fn parse_u32(v: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = v.trim().parse().map_err(|_| format!("`{v}` is not a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn defaults_and_bad_values() {
        let s = Settings::from_vars(|_| None).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.signup_limit, "20/hour".parse().unwrap());
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        let err = Settings::from_vars(vars(&[("METERING_LISTEN", "nope")])).unwrap_err();
        assert_eq!(err.name, "METERING_LISTEN");
        let err = Settings::from_vars(vars(&[("METERING_SIGNUP_LIMIT", "20/fortnight")])).unwrap_err();
        assert_eq!(err.name, "METERING_SIGNUP_LIMIT");
        assert!(err.to_string().contains("fortnight"), "{err}");
        let err = Settings::from_vars(vars(&[("METERING_SIGNUP_LIMIT", "0/hour")])).unwrap_err();
        assert_eq!(err.name, "METERING_SIGNUP_LIMIT");
        let err = Settings::from_vars(vars(&[("METERING_LEDGER_RETENTION", "10d")])).unwrap_err();
        assert_eq!(err.name, "METERING_LEDGER_RETENTION");
        let s = Settings::from_vars(vars(&[("METERING_LEDGER_RETENTION", "90d")])).unwrap();
        assert_eq!(s.ledger_retention, Duration::from_secs(90 * 86_400));
        let err = Settings::from_vars(vars(&[("METERING_CASBIN_MODEL", "/nonexistent/model.conf")])).unwrap_err();
        assert_eq!(err.name, "METERING_CASBIN_MODEL");
        let err = Settings::from_vars(vars(&[("METERING_ACCESS_TOKEN_TTL", "40d")])).unwrap_err();
        assert_eq!(err.name, "METERING_ACCESS_TOKEN_TTL");
    }

    #[test]
    fn mongodb_needs_redis_and_a_shared_secret_and_valid_values() {
        let uri = ("METERING_MONGODB_URI", "mongodb://user:pw@db.example:27017/?replicaSet=rs0");
        let redis = ("METERING_REDIS_URL", "redis://127.0.0.1:6379");
        let secret = ("METERING_JWT_SECRET", "a-shared-secret-of-at-least-thirty-two-bytes");
        let err = Settings::from_vars(vars(&[uri, secret])).unwrap_err();
        assert_eq!(err.name, "METERING_MONGODB_URI");
        assert!(err.reason.contains("METERING_REDIS_URL") && !err.value.contains("pw"), "{err}");
        let err = Settings::from_vars(vars(&[uri, redis])).unwrap_err();
        assert!(err.reason.contains("METERING_JWT_SECRET"), "{err}");
        let s = Settings::from_vars(vars(&[uri, redis, secret])).unwrap();
        let m = s.mongodb.unwrap();
        assert_eq!(
            (m.database.as_str(), m.write_concern.as_str(), m.timeout),
            ("metering", "majority", Duration::from_secs(2))
        );
        assert_eq!(m.redacted_uri(), "mongodb://<credentials>@db.example:27017/?replicaSet=rs0");
        for (name, value) in [
            ("METERING_MONGODB_URI", "postgres://db"),
            ("METERING_MONGODB_DATABASE", "a.b"),
            ("METERING_MONGODB_WRITE_CONCERN", "most"),
            ("METERING_MONGODB_WRITE_CONCERN", "2,j=maybe"),
            ("METERING_MONGODB_TIMEOUT", "0ms"),
        ] {
            let err = Settings::from_vars(vars(&[(name, value), uri, redis, secret])).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
        let s = Settings::from_vars(vars(&[uri, redis, secret, ("METERING_MONGODB_WRITE_CONCERN", "2,j=false")]));
        assert_eq!(s.unwrap().mongodb.unwrap().write_concern, "2,j=false");
        let err = Settings::from_vars(vars(&[("METERING_MONGODB_DATABASE", "metering")])).unwrap_err();
        assert!(err.reason.contains("only applies with METERING_MONGODB_URI"), "{err}");
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let err = Settings::from_vars(vars(&[("METERING_JWT_SECRET", "short-secret")])).unwrap_err();
        assert_eq!(err.name, "METERING_JWT_SECRET");
        assert!(!err.to_string().contains("short-secret"), "{err}");
        let s = Settings::from_vars(vars(&[("METERING_JWT_SECRET", &"k".repeat(40))])).unwrap();
        assert!(!format!("{s:?}").contains("kkkk"));

        let err = Settings::from_vars(vars(&[("METERING_ADMIN_EMAIL", "root@example.com")])).unwrap_err();
        assert_eq!(err.name, "METERING_ADMIN_EMAIL");
        let err = Settings::from_vars(vars(&[
            ("METERING_ADMIN_EMAIL", "root@example.com"),
            ("METERING_ADMIN_PASSWORD", "short"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "METERING_ADMIN_PASSWORD");
        assert!(!err.to_string().contains("short\""), "{err}");
        let s = Settings::from_vars(vars(&[
            ("METERING_ADMIN_EMAIL", " Root@Example.com "),
            ("METERING_ADMIN_PASSWORD", "a long enough password"),
        ]))
        .unwrap();
        assert_eq!(s.admin.unwrap().email, "root@example.com");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("metering-settings-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("metering.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/metering\"\naccess_token_ttl = 600\n")
            .unwrap();
        let path = file.display().to_string();
        let s =
            Settings::from_vars(vars(&[("METERING_CONFIG", &path), ("METERING_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/metering"));
        assert_eq!(s.access_token_ttl, Duration::from_secs(600));

        std::fs::write(&file, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Settings::load(Some(&file), |_| None).unwrap_err();
        assert_eq!(err.name, "METERING_CONFIG");
        assert!(err.to_string().contains("lisen"), "{err}");
        std::fs::write(&file, "listen = [1, 2]\n").unwrap();
        assert_eq!(Settings::load(Some(&file), |_| None).unwrap_err().name, "METERING_LISTEN");
        std::fs::write(&file, "listen = \n").unwrap();
        assert_eq!(Settings::load(Some(&file), |_| None).unwrap_err().name, "METERING_CONFIG");
        let err = Settings::load(Some(&dir.join("missing.toml")), |_| None).unwrap_err();
        assert_eq!(err.name, "METERING_CONFIG");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("-5").is_err());
        let r: RateSpec = "3/minute".parse().unwrap();
        assert_eq!((r.max.get(), r.per), (3, Duration::from_secs(60)));
        assert!("3".parse::<RateSpec>().is_err());
        assert!("x/hour".parse::<RateSpec>().is_err());
    }
}
