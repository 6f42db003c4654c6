//! The command line: `serve` (the default), `create-admin`, `check-config`.
//!
//! ```text
//! metering-server [--config FILE] [serve]
//! metering-server [--config FILE] create-admin --email EMAIL --password PASSWORD
//! metering-server [--config FILE] check-config
//! ```
//!
//! Settings come from the file (`--config`, else `METERING_CONFIG`) and the `METERING_*`
//! environment, the environment winning (see [`Settings`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::rbac::Rbac;
use crate::{AppState, Settings, run};

/// `metering-server`'s arguments.
#[derive(Debug, Parser)]
#[command(
    name = "metering-server",
    version,
    about = "The metering reference server: API usage metering, rate limiting and credit billing over HTTP."
)]
pub struct Cli {
    /// A TOML settings file (default: the file `METERING_CONFIG` names); `METERING_*`
    /// environment variables win over it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do (default: `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve HTTP until SIGINT or SIGTERM (the default).
    Serve,
    /// Create an admin in the platform tenant, or make the user with this e-mail an admin,
    /// and set its password.
    CreateAdmin {
        /// The admin's e-mail.
        #[arg(long)]
        email: String,
        /// The admin's password (10 to 1,024 characters).
        #[arg(long)]
        password: String,
    },
    /// Check the settings and the access-control files, print a summary, and exit.
    CheckConfig,
}

impl Cli {
    /// Runs the command; the exit code says how it went. Errors are one line on stderr.
    pub async fn run(self) -> ExitCode {
        let settings = match Settings::load(self.config.as_deref(), |name| std::env::var(name).ok()) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::CreateAdmin { email, password } => create_admin(settings, &email, &password).await,
            Command::CheckConfig => check_config(settings).await,
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("metering-server: {e}");
    ExitCode::FAILURE
}

async fn serve(settings: Settings) -> ExitCode {
    let listen = settings.listen;
    let data_dir = settings.data_dir.clone();
    let state = match AppState::open(settings).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return fail(format_args!("cannot listen on {listen} (METERING_LISTEN): {e}")),
    };
    tracing::info!(%listen, data_dir = %data_dir.display(), "metering-server ready");
    match run(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn create_admin(settings: Settings, email: &str, password: &str) -> ExitCode {
    let state = match AppState::open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let result = state.auth.create_or_update_admin(email, password).await;
    if let Err(e) = state.engine.flush().await {
        return fail(e);
    }
    match result {
        Ok(user) => {
            println!("admin {} ready in tenant {}", user.email, user.tenant_id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("{}{}", e.field.map(|f| format!("{f}: ")).unwrap_or_default(), e.message)),
    }
}

async fn check_config(settings: Settings) -> ExitCode {
    if let Err(e) = Rbac::load(settings.casbin_model.as_deref(), settings.casbin_policy.as_deref()).await {
        return fail(e);
    }
    let shipped = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "shipped".into());
    let rows = [
        ("listen", settings.listen.to_string()),
        ("data_dir", settings.data_dir.display().to_string()),
        (
            "jwt_secret",
            match settings.jwt_secret {
                Some(_) => "set".into(),
                None => format!("kept in {}", settings.data_dir.join(crate::state::JWT_SECRET_FILE).display()),
            },
        ),
        (
            "admin",
            match &settings.admin {
                Some(a) => a.email.clone(),
                None => format!("{} on first start", crate::auth::DEFAULT_ADMIN_EMAIL),
            },
        ),
        ("signup_limit", format!("{} per {}s", settings.signup_limit.max, settings.signup_limit.per.as_secs())),
        ("casbin_model", shipped(&settings.casbin_model)),
        ("casbin_policy", shipped(&settings.casbin_policy)),
        ("access_token_ttl", format!("{}s", settings.access_token_ttl.as_secs())),
        ("refresh_token_ttl", format!("{}s", settings.refresh_token_ttl.as_secs())),
        ("argon2", format!("m={} KiB, t={}", settings.password_cost.memory_kib, settings.password_cost.iterations)),
        ("hot_store", hot_store(&settings)),
        ("records", records(&settings)),
    ];
    for (name, value) in rows {
        println!("{name:<18} {value}");
    }
    println!("configuration OK");
    ExitCode::SUCCESS
}

/// Where the hot counters live, as `check-config` reports it.
fn hot_store(settings: &Settings) -> String {
    let Some(redis) = &settings.redis else {
        return "in this process (one instance; counters rebuilt from the ledger at start)".into();
    };
    let mode = if redis.url.expose().contains("-cluster://") { "redis cluster" } else { "redis" };
    let failure = match redis.failure {
        metering_core::FailurePolicy::Open => "open",
        _ => "closed",
    };
    format!(
        "{mode} {} prefix={} timeout={}ms failure={failure}",
        redis.redacted_url(),
        redis.prefix,
        redis.timeout.as_millis()
    )
}

/// Where the records live, as `check-config` reports it.
fn records(settings: &Settings) -> String {
    match &settings.mongodb {
        None => format!("sqlite {} (one instance)", settings.data_dir.join("metering.db").display()),
        Some(m) => format!(
            "mongodb {} database={} write_concern={} timeout={}ms",
            m.redacted_uri(),
            m.database,
            m.write_concern,
            m.timeout.as_millis()
        ),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["metering-server"]);
        assert_eq!(cli.command, None);
        let cli = Cli::parse_from(["metering-server", "--config", "m.toml", "serve"]);
        assert_eq!((cli.config, cli.command), (Some(PathBuf::from("m.toml")), Some(Command::Serve)));
        let cli = Cli::parse_from(["metering-server", "create-admin", "--email", "a@b.io", "--password", "0123456789"]);
        assert!(matches!(cli.command, Some(Command::CreateAdmin { .. })));
        let cli = Cli::parse_from(["metering-server", "check-config", "--config", "x.toml"]);
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        assert!(Cli::try_parse_from(["metering-server", "create-admin", "--email", "a@b.io"]).is_err());
    }
}
