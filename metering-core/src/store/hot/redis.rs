//! [`RedisHot`]: hot counters in Redis or Redis Cluster, shared by every engine that
//! connects to it (fred, one auto-pipelining client, automatic reconnect).
//!
//! Every step that reads and writes runs as one Lua script (EVALSHA, loaded again after
//! a `NOSCRIPT`), so no decision is split across round trips; the decision script gives
//! the reference decision's answers ([`crate::admit`]).
//!
//! # Keys
//!
//! Under a prefix (`metering` by default), a tenant's keys carry its id as the hash tag,
//! so one tenant's keys live in one Cluster slot and a script may touch them together:
//!
//! | key | holds |
//! |---|---|
//! | `{prefix}:{tenant}:c` | a hash: every window, every period's credits, and `r`, the residency field |
//! | `{prefix}:{tenant}:e:{event_id}` | a remembered decision, until its time is up |
//! | `{prefix}:login:{key}`, `{prefix}:jti:{jti}`, `{prefix}:key:{key}` | logins, revoked tokens, keyed windows |
//!
//! A tenant's counters are one hash, loaded whole by [`HotStore::load`] and expiring
//! whole ([`COUNTER_TTL`] after its last admitted call): an evicted or expired piece can
//! never read as zero beside live ones. An absent hash answers [`Admitted::Unloaded`] and
//! the engine rebuilds it from the ledger. Calendar windows and periods older than the
//! four most recent are pruned when a new one opens. A remembered decision lives in a key
//! of its own: lost early, the call meets the ledger's unique key instead.
//!
//! # Time
//!
//! Every instant comes from the engine's clock, never from Redis's: expiries of
//! remembered ids, logins and tokens are compared with the caller's `now`, and Redis's
//! own time to live is only the garbage collector.
//!
//! # Failures
//!
//! Every command has the configured timeout. A call that times out or finds Redis gone
//! answers [`Error::Unavailable`]. A decision Redis received before the timeout may still
//! run when Redis answers again, counting a call nobody recorded; so a timed-out decision
//! is followed by the deletion of the tenant's counters and of its remembered id, which
//! Redis runs after it, and the next decision rebuilds them from the ledger.

mod changes;

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, Config, Error as RedisError, ErrorKind, HashesInterface, KeysInterface, LuaInterface,
    PubsubInterface, ReconnectPolicy,
};
use fred::types::scan::Scanner;
use fred::types::scripts::Script;
use fred::types::{Key, Value};
use futures_util::StreamExt;

use self::changes::Announcements;
use crate::changes::Change;
use crate::clock::Timestamp;
use crate::decision::{Decision, DenyReason, WindowStatus};
use crate::error::Error;
use crate::plan::Per;
use crate::store::{Admission, Admitted, HotSnapshot, HotStore, KeyCount, LockoutPolicy, LoginGuard, PeriodCredits};
use crate::tenant::{Period, TenantId};

/// How long a tenant's counters stay after its last admitted call (then rebuilt on use).
pub const COUNTER_TTL: Duration = Duration::from_secs(40 * 24 * 3600);

/// How far back calendar windows and periods are kept: the current one and three more.
const KEPT_DAYS: Duration = Duration::from_secs(3 * 24 * 3600);
const KEPT_MONTHS: Duration = Duration::from_secs(93 * 24 * 3600);

/// How to reach Redis, and what to call the keys.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`, `rediss://…` (TLS), or
    /// `redis-cluster://host:port?node=host:port&node=…` (`rediss-cluster://` with TLS).
    pub url: String,
    /// What every key starts with: 1-64 of `[A-Za-z0-9_.:-]`.
    pub prefix: String,
    /// The most any command may take before it answers [`Error::Unavailable`].
    pub timeout: Duration,
    /// The most the first connection may take at start.
    pub connect_timeout: Duration,
}

impl RedisOptions {
    /// Options for `url` with the defaults: prefix `metering`, a 50 ms timeout, 5 s to connect.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "metering".into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Whether the URL names a Redis Cluster.
    pub fn is_cluster(&self) -> Result<bool, Error> {
        Ok(self.config()?.server.is_clustered())
    }

    fn config(&self) -> Result<Config, Error> {
        let valid_prefix = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !valid_prefix {
            return Err(Error::Unavailable("the redis key prefix must be 1-64 of [A-Za-z0-9_.:-]".into()));
        }
        Config::from_url(&self.url).map_err(|e| Error::Unavailable(format!("invalid redis url: {}", e.details())))
    }
}

/// The scripts, loaded once and called by hash.
struct Scripts {
    admit: Script,
    revert: Script,
    load: Script,
    grant: Script,
    login_failed: Script,
    login_guard: Script,
    revoke_token: Script,
    count_key: Script,
    claim: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            admit: Script::from_lua(include_str!("redis/admit.lua")),
            revert: Script::from_lua(include_str!("redis/revert.lua")),
            load: Script::from_lua(include_str!("redis/load.lua")),
            grant: Script::from_lua(include_str!("redis/grant.lua")),
            login_failed: Script::from_lua(include_str!("redis/login_failed.lua")),
            login_guard: Script::from_lua(include_str!("redis/login_guard.lua")),
            revoke_token: Script::from_lua(include_str!("redis/revoke_token.lua")),
            count_key: Script::from_lua(include_str!("redis/count_key.lua")),
            claim: Script::from_lua(include_str!("redis/claim.lua")),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.admit,
            &self.revert,
            &self.load,
            &self.grant,
            &self.login_failed,
            &self.login_guard,
            &self.revoke_token,
            &self.count_key,
            &self.claim,
        ]
    }
}

/// Hot counters in Redis.
pub struct RedisHot {
    client: fred::prelude::Client,
    prefix: String,
    scripts: Scripts,
    /// The channel changes are announced on, `{prefix}:changes`.
    channel: String,
    announcements: Announcements,
}

impl RedisHot {
    /// Connects (waiting at most `options.connect_timeout`) and loads the scripts.
    pub async fn connect(options: RedisOptions) -> Result<Self, Error> {
        let config = options.config()?;
        let timeout = options.timeout;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = options.connect_timeout;
                c.internal_command_timeout = options.connect_timeout;
                // A script is never sent twice: a second run would count a call twice.
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 10, 1_000, 2));
        let client = builder.build().map_err(unavailable)?;
        client.connect();
        tokio::time::timeout(options.connect_timeout, client.wait_for_connect())
            .await
            .map_err(|_| Error::Unavailable(format!("redis: no connection within {:?}", options.connect_timeout)))?
            .map_err(unavailable)?;
        let channel = format!("{}:changes", options.prefix);
        let announcements =
            tokio::time::timeout(options.connect_timeout, Announcements::start(&builder, channel.clone()))
                .await
                .map_err(|_| {
                    Error::Unavailable(format!("redis: no connection within {:?}", options.connect_timeout))
                })??;
        let store = RedisHot { client, prefix: options.prefix, scripts: Scripts::new(), channel, announcements };
        for script in store.scripts.all() {
            script.load(&store.client).await.map_err(unavailable)?;
        }
        Ok(store)
    }

    fn counters_key(&self, tenant: &TenantId) -> Key {
        Key::from(format!("{}:{{{}}}:c", self.prefix, tenant.as_str()))
    }

    fn seen_key(&self, a: &Admission) -> Key {
        Key::from(format!("{}:{{{}}}:e:{}", self.prefix, a.tenant.as_str(), a.event_id.as_str()))
    }

    fn other_key(&self, kind: &str, key: &str) -> Key {
        Key::from(format!("{}:{kind}:{key}", self.prefix))
    }

    /// Runs `script` by hash, loading it again if Redis lost it (a restart, a failover).
    async fn run(&self, script: &Script, keys: Vec<Key>, args: Vec<Value>) -> Result<Vec<String>, Error> {
        let again = (keys.clone(), args.clone());
        self.run_with(script, (keys, args), move || again).await.map_err(unavailable)
    }

    /// Runs `script` with `first`'s keys and arguments, and after a `NOSCRIPT` loads it and
    /// runs it again with `again`'s (made only then, so the usual call copies nothing).
    async fn run_with(
        &self,
        script: &Script,
        (keys, args): (Vec<Key>, Vec<Value>),
        again: impl FnOnce() -> (Vec<Key>, Vec<Value>),
    ) -> Result<Vec<String>, RedisError> {
        match self.client.evalsha::<Vec<String>, _, _, _>(script.sha1().clone(), keys, args).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(&self.client).await?;
                let (keys, args) = again();
                self.client.evalsha(script.sha1().clone(), keys, args).await
            }
            other => other,
        }
    }

    /// Claims `name` under the prefix for `owner` for `ttl`, or renews `owner`'s claim:
    /// `None` when the claim is `owner`'s now, else the owner holding it. A process
    /// claims what only one may use at a time and renews well within `ttl`.
    pub async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<String>, Error> {
        let reply =
            self.run(&self.scripts.claim, vec![self.other_key("claim", name)], vec![text(owner), millis(ttl)]).await?;
        match reply.first().map(String::as_str) {
            Some("mine") => Ok(None),
            Some("held") => Ok(Some(reply.get(1).cloned().unwrap_or_default())),
            _ => Err(corrupt("a claim")),
        }
    }

    /// The `EVALSHA` command of the decision on `a`, word by word, as another client
    /// (`redis-benchmark`) would send it; the script is loaded first.
    pub async fn benchmark_command(&self, a: &Admission) -> Result<Vec<String>, Error> {
        self.scripts.admit.load(&self.client).await.map_err(unavailable)?;
        let keys = [self.counters_key(&a.tenant), self.seen_key(a)];
        let mut words = vec!["EVALSHA".to_owned(), self.scripts.admit.sha1().to_string(), keys.len().to_string()];
        words.extend(keys.iter().map(|k| k.as_str_lossy().into_owned()));
        for arg in admit_args(a) {
            words.push(match arg {
                Value::Integer(i) => i.to_string(),
                other => other.as_string().unwrap_or_default(),
            });
        }
        Ok(words)
    }

    /// Deletes every key matching `pattern`, on every node.
    async fn delete_matching(&self, pattern: String) -> Result<(), Error> {
        let mut keys = Vec::new();
        if self.client.is_clustered() {
            let mut pages = self.client.scan_cluster(pattern, Some(1_000), None);
            while let Some(page) = pages.next().await {
                let mut page = page.map_err(unavailable)?;
                keys.extend(page.take_results().unwrap_or_default());
                page.next();
            }
        } else {
            let mut pages = self.client.scan(pattern, Some(1_000), None);
            while let Some(page) = pages.next().await {
                let mut page = page.map_err(unavailable)?;
                keys.extend(page.take_results().unwrap_or_default());
                page.next();
            }
        }
        for key in keys {
            self.client.del::<(), _>(key).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

fn unavailable(e: RedisError) -> Error {
    match e.kind() {
        ErrorKind::Timeout => Error::Unavailable("redis did not answer in time".into()),
        _ => Error::Unavailable(format!("redis: {}", e.details())),
    }
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("unexpected redis reply: {what}"))
}

fn int(v: i64) -> Value {
    Value::Integer(v)
}

fn text(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

fn millis(d: Duration) -> Value {
    int(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}

fn micros(d: Duration) -> Value {
    int(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The field of a calendar window: `d:` or `m:` and its start (as the admit script's
/// arguments name it too).
fn calendar_field(per: Per, start: Timestamp) -> String {
    format!("{}:{}", if per == Per::Day { 'd' } else { 'm' }, start.as_micros())
}

fn smooth_field(per: Per) -> String {
    format!("s:{}", per.as_str())
}

fn denial_code(reason: Option<DenyReason>) -> i64 {
    match reason {
        None => 0,
        Some(DenyReason::TenantSuspended) => 1,
        Some(DenyReason::PremiumNotInPlan) => 2,
        Some(DenyReason::RateLimited) => 3,
        Some(DenyReason::InsufficientCredits) => 4,
    }
}

fn reason_of(code: &str) -> Result<Option<DenyReason>, Error> {
    Ok(match code {
        "0" => None,
        "1" => Some(DenyReason::TenantSuspended),
        "2" => Some(DenyReason::PremiumNotInPlan),
        "3" => Some(DenyReason::RateLimited),
        "4" => Some(DenyReason::InsufficientCredits),
        _ => return Err(corrupt("a reason")),
    })
}

fn per_of(code: &str) -> Result<Per, Error> {
    [Per::Second, Per::Minute, Per::Hour, Per::Day, Per::Month]
        .into_iter()
        .find(|p| p.as_str() == code)
        .ok_or_else(|| corrupt("a window"))
}

fn number<T: std::str::FromStr>(s: Option<&str>) -> Result<T, Error> {
    s.and_then(|s| s.parse().ok()).ok_or_else(|| corrupt("a number"))
}

/// Reads a decision as the admit script writes it:
/// `allowed;reason;charged;remaining;retry;window:limit:remaining:reset,…`.
fn parse_decision(a: &Admission, s: &str) -> Result<Decision, Error> {
    let mut parts = s.splitn(6, ';');
    let allowed = parts.next() == Some("1");
    let reason = reason_of(parts.next().unwrap_or(""))?;
    let credits_charged = number(parts.next())?;
    let credits_remaining = number(parts.next())?;
    let retry_after = match parts.next() {
        Some("-") => None,
        other => Some(number(other)?),
    };
    let mut limits = Vec::new();
    for window in parts.next().unwrap_or("").split(',').filter(|w| !w.is_empty()) {
        let mut f = window.split(':');
        let per = per_of(f.next().unwrap_or(""))?;
        limits.push(WindowStatus {
            window: per,
            limit: number(f.next())?,
            remaining: number(f.next())?,
            reset: number(f.next())?,
        });
    }
    Ok(Decision {
        event_id: a.event_id.clone(),
        allowed,
        reason,
        credits_charged,
        credits_remaining,
        limits,
        retry_after,
    })
}

/// A script's arguments written as text into one buffer, and sent as slices of it: one
/// allocation for all of them, and no number formatted twice.
struct Args {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl Args {
    fn with_capacity(args: usize) -> Self {
        Args { text: Vec::with_capacity(args * 12), ends: Vec::with_capacity(args) }
    }

    /// Appends one argument written by `write`.
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
        // Writing into a Vec cannot fail.
        let _ = write(&mut self.text);
        self.ends.push(self.text.len());
    }

    fn int(&mut self, v: i64) {
        self.push(|t| write!(t, "{v}"));
    }

    fn text(&mut self, s: &str) {
        self.push(|t| t.write_all(s.as_bytes()));
    }

    fn values(self) -> Vec<Value> {
        let text = fred::bytes::Bytes::from(self.text);
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|end| {
                let value = Value::Bytes(text.slice(start..end));
                start = end;
                value
            })
            .collect()
    }
}

fn admit_args(a: &Admission) -> Vec<Value> {
    let mut args = Args::with_capacity(13 + 6 * a.limits.len());
    args.int(a.now.as_micros());
    args.int(i64::from(a.remember));
    args.push(|t| write!(t, "{}", a.fingerprint));
    args.int(a.remember_until.as_micros());
    args.int(i64::try_from(a.remember_until.since(a.now).as_millis()).unwrap_or(i64::MAX).max(1));
    args.int(denial_code(a.denial));
    args.int(a.allowance.min(i64::MAX as u64) as i64);
    args.int(a.overdraft.min(i64::MAX as u64) as i64);
    args.int(a.cost.min(i64::MAX as u64) as i64);
    args.int(a.period.start.as_micros());
    args.int(a.period.start.minus(KEPT_MONTHS).as_micros());
    args.int(COUNTER_TTL.as_secs() as i64);
    args.int(a.limits.len() as i64);
    for limit in a.limits.iter() {
        if limit.per.is_calendar() {
            let (start, end) = limit.per.window_containing(a.at);
            let kept = if limit.per == Per::Day { KEPT_DAYS } else { KEPT_MONTHS };
            args.text("c");
            let kind = if limit.per == Per::Day { 'd' } else { 'm' };
            args.push(|t| write!(t, "{kind}:{}", start.as_micros()));
            args.int(i64::from(limit.max.get()));
            args.int(end.as_micros());
            args.text(limit.per.as_str());
            args.int(start.minus(kept).as_micros());
        } else {
            args.text("s");
            args.push(|t| write!(t, "s:{}", limit.per.as_str()));
            args.int(i64::from(limit.max.get()));
            args.int(limit.emission_interval_micros());
            args.text(limit.per.as_str());
            args.int(0);
        }
    }
    args.values()
}

#[async_trait]
impl HotStore for RedisHot {
    async fn admit(&self, a: &Admission) -> Result<Admitted, Error> {
        let call = || (vec![self.counters_key(&a.tenant), self.seen_key(a)], admit_args(a));
        let reply = match self.run_with(&self.scripts.admit, call(), call).await {
            Ok(reply) => reply,
            Err(e) => {
                if *e.kind() == ErrorKind::Timeout {
                    // The script may still run once Redis answers again: whatever it
                    // counts goes with the tenant's counters, which the next decision
                    // rebuilds from the ledger. Sent after the script on the same
                    // connection, this runs after it.
                    let (client, keys) = (self.client.clone(), call().0);
                    tokio::spawn(async move { client.del::<(), _>(keys).await });
                }
                return Err(unavailable(e));
            }
        };
        match reply.first().map(String::as_str) {
            Some("u") => Ok(Admitted::Unloaded),
            Some("c") => Ok(Admitted::Conflict),
            Some("r") => Ok(Admitted::Replayed(parse_decision(a, reply.get(1).ok_or_else(|| corrupt("a replay"))?)?)),
            Some("d") => Ok(Admitted::Decided(parse_decision(a, reply.get(1).ok_or_else(|| corrupt("a decision"))?)?)),
            _ => Err(corrupt("an admission")),
        }
    }

    async fn revert(&self, a: &Admission) -> Result<(), Error> {
        let mut args =
            vec![int(a.cost.min(i64::MAX as u64) as i64), int(a.period.start.as_micros()), int(a.limits.len() as i64)];
        for limit in a.limits.iter() {
            if limit.per.is_calendar() {
                args.extend([text("c"), text(calendar_field(limit.per, limit.per.window_containing(a.at).0)), int(0)]);
            } else {
                args.extend([text("s"), text(smooth_field(limit.per)), int(limit.emission_interval_micros())]);
            }
        }
        self.run(&self.scripts.revert, vec![self.counters_key(&a.tenant), self.seen_key(a)], args).await?;
        Ok(())
    }

    async fn forget(&self, a: &Admission) -> Result<(), Error> {
        self.client.del::<(), _>(self.seen_key(a)).await.map_err(unavailable)
    }

    async fn discard(&self, tenant: &TenantId) -> Result<(), Error> {
        self.client.del::<(), _>(self.counters_key(tenant)).await.map_err(unavailable)
    }

    async fn load(&self, tenant: &TenantId, s: HotSnapshot) -> Result<(), Error> {
        let mut args = vec![int(COUNTER_TTL.as_secs() as i64)];
        for (per, start, count) in s.quotas {
            args.extend([text(calendar_field(per, start)), int(i64::from(count))]);
        }
        for (per, tat) in s.smooth {
            args.extend([text(smooth_field(per)), int(tat.as_micros())]);
        }
        for (start, used, granted) in s.credits {
            let used = used.min(i64::MAX as u64) as i64;
            args.extend([text(format!("u:{}", start.as_micros())), int(used)]);
            args.extend([text(format!("g:{}", start.as_micros())), int(granted)]);
        }
        self.run(&self.scripts.load, vec![self.counters_key(tenant)], args).await?;
        Ok(())
    }

    async fn grant(
        &self,
        tenant: &TenantId,
        period: Period,
        allowance: u64,
        overdraft: u64,
        amount: i64,
    ) -> Result<Option<i64>, Error> {
        let args = vec![
            int(period.start.as_micros()),
            int(allowance.min(i64::MAX as u64) as i64),
            int(overdraft.min(i64::MAX as u64) as i64),
            int(amount),
        ];
        let reply = self.run(&self.scripts.grant, vec![self.counters_key(tenant)], args).await?;
        match reply.first().map(String::as_str) {
            Some("u") => Ok(None),
            Some("f") => Err(Error::BelowFloor),
            Some("ok") => Ok(Some(number(reply.get(1).map(String::as_str))?)),
            _ => Err(corrupt("a grant")),
        }
    }

    async fn credits(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Option<PeriodCredits>, Error> {
        let fields =
            ["r".to_owned(), format!("u:{}", period_start.as_micros()), format!("g:{}", period_start.as_micros())];
        let values: Vec<Option<String>> =
            self.client.hmget(self.counters_key(tenant), fields.to_vec()).await.map_err(unavailable)?;
        if values.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let field = |i: usize| values.get(i).cloned().flatten().unwrap_or_else(|| "0".into());
        Ok(Some(PeriodCredits { used: number(Some(&field(1)))?, granted: number(Some(&field(2)))? }))
    }

    async fn clear(&self) -> Result<(), Error> {
        self.delete_matching(format!("{}:*", self.prefix)).await
    }

    async fn login_failed(&self, key: &str, now: Timestamp, policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        let args = vec![
            int(now.as_micros()),
            micros(policy.window),
            micros(policy.lock_for),
            int(i64::from(policy.max_failures)),
        ];
        let reply = self.run(&self.scripts.login_failed, vec![self.other_key("login", key)], args).await?;
        login_guard(&reply)
    }

    async fn login_guard(&self, key: &str, now: Timestamp, _policy: LockoutPolicy) -> Result<LoginGuard, Error> {
        let reply =
            self.run(&self.scripts.login_guard, vec![self.other_key("login", key)], vec![int(now.as_micros())]).await?;
        login_guard(&reply)
    }

    async fn clear_login(&self, key: &str) -> Result<(), Error> {
        self.client.del::<(), _>(self.other_key("login", key)).await.map_err(unavailable)
    }

    async fn clear_logins_from(&self, key: &str) -> Result<(), Error> {
        // The key as a literal in a SCAN pattern, then any address after it.
        let literal: String = format!("{}:login:{key} from ", self.prefix)
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        self.delete_matching(format!("{literal}*")).await
    }

    async fn revoke_token(&self, jti: &str, now: Timestamp, until: Timestamp) -> Result<(), Error> {
        let args = vec![int(until.as_micros()), millis(until.since(now))];
        self.run(&self.scripts.revoke_token, vec![self.other_key("jti", jti)], args).await?;
        Ok(())
    }

    async fn token_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, Error> {
        let until: Option<String> = self.client.get(self.other_key("jti", jti)).await.map_err(unavailable)?;
        Ok(until.and_then(|u| u.parse::<i64>().ok()).is_some_and(|u| u > now.as_micros()))
    }

    async fn count_key(&self, key: &str, now: Timestamp, window: Duration, max: u32) -> Result<KeyCount, Error> {
        let args = vec![int(now.as_micros()), micros(window), int(i64::from(max))];
        let reply = self.run(&self.scripts.count_key, vec![self.other_key("key", key)], args).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(KeyCount::Counted),
            Some("over") => {
                let left: u64 = number(reply.get(1).map(String::as_str))?;
                Ok(KeyCount::Over { retry_after: Duration::from_micros(left) })
            }
            _ => Err(corrupt("a keyed count")),
        }
    }

    async fn ping(&self) -> Result<(), Error> {
        self.client.ping::<()>(None).await.map_err(unavailable)
    }

    async fn announce(&self, change: &Change) -> Result<(), Error> {
        self.client.publish::<(), _, _>(self.channel.as_str(), change.encode()).await.map_err(unavailable)
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.announcements.listen())
    }
}

fn login_guard(reply: &[String]) -> Result<LoginGuard, Error> {
    let failures = number(reply.first().map(String::as_str))?;
    let locked_until = match reply.get(1).map(String::as_str) {
        None | Some("") => None,
        Some(t) => Some(Timestamp::from_micros(number(Some(t))?)),
    };
    Ok(LoginGuard { failures, locked_until })
}
