//! `metering-server`: serves the reference server on the embedded default.
//!
//! `metering-server --help` lists the subcommands (`serve`, the default; `create-admin`;
//! `check-config`); settings come from `METERING_*` variables and an optional TOML file.

use std::process::ExitCode;

use clap::Parser;
use metering_server::cli::Cli;

/// mimalloc serves the many small, short-lived allocations of a request faster than the
/// system allocator does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,metering=info".into()),
        )
        .init();
    cli.run().await
}
