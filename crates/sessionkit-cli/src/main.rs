//! `sessionkit`: the demo server and the admin command line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sessionkit::{Config, Manager};
use sessionkit_cli::{demo, duration};

/// Server-side sessions: demo server and admin tools.
#[derive(Parser)]
#[command(name = "sessionkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The default store of `serve`: an embedded SQLite file in the working directory, so logins
/// survive a restart with no server to install.
const DEFAULT_STORE: &str = "sqlite://sessionkit.db";

#[derive(Subcommand)]
enum Command {
    /// Run the demo web app.
    Serve {
        /// Address to listen on (port 0 picks a free one; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Store URL (memory://, sqlite://PATH, file:///DIR, redis://..., postgres://...).
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        /// Idle timeout (e.g. 30m).
        #[arg(long, default_value = "30m", value_parser = duration::parse)]
        idle_timeout: Duration,
        /// Absolute timeout (e.g. 12h).
        #[arg(long, default_value = "12h", value_parser = duration::parse)]
        absolute_timeout: Duration,
        /// Give signed-in sessions a new ID after this long (off by default).
        #[arg(long, value_parser = duration::parse)]
        rotate_after: Option<Duration>,
        /// How long the previous ID stays readable after a periodic rotation.
        #[arg(long, default_value = "30s", value_parser = duration::parse)]
        rotation_grace: Duration,
        /// Store call timeout.
        #[arg(long, default_value = "5s", value_parser = duration::parse)]
        store_timeout: Duration,
        /// Background GC interval.
        #[arg(long, default_value = "60s", value_parser = duration::parse)]
        gc_interval: Duration,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            addr,
            store,
            idle_timeout,
            absolute_timeout,
            rotate_after,
            rotation_grace,
            store_timeout,
            gc_interval,
        } => {
            let store = sessionkit::store::open(&store)
                .await
                .with_context(|| format!("opening store {store}"))?;
            let mut config = Config::default();
            config.cookie.host_prefix = true;
            config.idle_timeout = idle_timeout;
            config.absolute_timeout = absolute_timeout;
            config.touch_interval = sessionkit::default_touch_interval(idle_timeout);
            config.rotate_after = rotate_after;
            config.rotation_grace = rotation_grace;
            config.store_timeout = store_timeout;
            config.gc_interval = gc_interval;
            let manager = Manager::new(store, config)?;
            manager.spawn_gc();
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let local = listener.local_addr()?;
            // Tests and scripts read this line to find the port.
            println!("sessionkit demo listening on http://{local}");
            axum::serve(listener, demo::app(manager.clone()))
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            manager.shutdown().await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
