//! `sessionkit`: the demo server and the admin command line.
//!
//! Exit codes: 0 success, 1 runtime or store error, 2 usage error (bad arguments, bad or unknown
//! store URL).

use clap::{Parser, Subcommand};
use sessionkit_cli::admin::{self, Failure, EXIT_RUNTIME};
use sessionkit_cli::{bench, serve};

/// Server-side sessions: demo server and admin tools.
///
/// Exit codes: 0 success, 1 runtime or store error, 2 usage error.
#[derive(Parser)]
#[command(name = "sessionkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo web app (metrics at /metrics).
    Serve(serve::ServeArgs),
    /// Count live, authenticated and expired sessions in a store.
    Stats(admin::StatsArgs),
    /// List sessions (metadata only: key hash prefix, user, times; never IDs).
    List(admin::ListArgs),
    /// Remove every expired record now (one full GC pass).
    Gc(admin::GcArgs),
    /// End every session of a user.
    Revoke(admin::RevokeArgs),
    /// Copy every live session from one store to another (idempotent: re-run to resume).
    Migrate(admin::MigrateArgs),
    /// Bounded load against a running server (--url) or a store (--store).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // clap exits with 2 on usage errors by itself.
    let cli = Cli::parse();
    let runtime = match &cli.command {
        Command::Serve(args) => serve::runtime(args.worker_threads()),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args)
                .await
                .map_err(|e| Failure::runtime(format!("{e:#}"))),
            Command::Stats(args) => admin::stats(args).await,
            Command::List(args) => admin::list(args).await,
            Command::Gc(args) => admin::gc(args).await,
            Command::Revoke(args) => admin::revoke(args).await,
            Command::Migrate(args) => admin::migrate(args).await,
            Command::Bench(args) => bench::bench(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.code)
        }
    }
}
