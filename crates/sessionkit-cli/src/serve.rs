//! `sessionkit serve`: the demo app on a real listener, with the manager's metrics exported at
//! `GET /metrics` (Prometheus text format) outside the session layer, so scrapes never create
//! sessions: on the app's port by default, or with `--metrics-addr` on a listener of their own
//! (the production setting: the app's visitors cannot read them).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sessionkit::{Config, Manager};

use crate::{demo, duration};

/// The default store of `serve`: an embedded SQLite file in the working directory, so logins
/// survive a restart with no server to install.
pub const DEFAULT_STORE: &str = "sqlite://sessionkit.db";

/// Arguments of `sessionkit serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Store URL (memory://, sqlite://PATH, file:///DIR, redis://, postgres://, mysql://...).
    #[arg(long, default_value = DEFAULT_STORE)]
    pub store: String,
    /// Idle timeout (e.g. 30m).
    #[arg(long, default_value = "30m", value_parser = duration::parse)]
    pub idle_timeout: Duration,
    /// Absolute timeout (e.g. 12h).
    #[arg(long, default_value = "12h", value_parser = duration::parse)]
    pub absolute_timeout: Duration,
    /// Give signed-in sessions a new ID after this long (off by default).
    #[arg(long, value_parser = duration::parse)]
    pub rotate_after: Option<Duration>,
    /// How long the previous ID stays readable after a periodic rotation.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub rotation_grace: Duration,
    /// Store call timeout.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub store_timeout: Duration,
    /// Background GC interval.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub gc_interval: Duration,
    /// Do not serve /metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Serve /metrics on this separate listener instead of the app's port: the production
    /// setting (e.g. `127.0.0.1:9100`, reachable by the scraper only).
    #[arg(long, conflicts_with = "no_metrics")]
    pub metrics_addr: Option<SocketAddr>,
    /// What an ID retired by periodic rotation does when it comes back after its grace
    /// window (a copied cookie): ignore it, log it, or end every session of its user.
    #[arg(long, value_enum, default_value = "log")]
    pub on_retired_id: OnRetiredId,
    /// Take the client's address (shown as a /24 or /48 on the devices page) from
    /// `X-Forwarded-For`: only behind a proxy that sets it, since any client can send it.
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Device Bound Session Credentials: `/login` asks the browser to bind the session to a
    /// key on its device (registration at /dbsc/register, refresh at /dbsc/refresh); a bound
    /// session's requests then need the short-lived bound cookie.
    #[arg(long)]
    pub dbsc: bool,
    /// How long a DBSC bound cookie lasts (with --dbsc).
    #[arg(long, default_value = "5m", value_parser = duration::parse, requires = "dbsc")]
    pub dbsc_bound_lifetime: Duration,
    /// End the session when a DBSC refresh proof fails verification (with --dbsc).
    #[arg(long, requires = "dbsc")]
    pub dbsc_end_on_failed_proof: bool,
    /// The web framework to serve the demo on (the same pages and HTTP contract on both).
    #[arg(long, value_enum, default_value = "axum")]
    pub framework: demo::Framework,
    /// Async worker threads (default: one per CPU this process may run on). With one, the
    /// server runs on a single-threaded runtime, which spares each request the cross-thread
    /// scheduling a multi-threaded one pays for on a single core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

impl ServeArgs {
    /// How many async worker threads to run: `--workers`, else the CPUs this process may use
    /// (its affinity mask and cgroup quota, as the standard library counts them).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// The runtime for `serve` with `workers` threads: a current-thread runtime for one.
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

/// `--on-retired-id`: the CLI's names for [`sessionkit::RetiredIdPolicy`].
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OnRetiredId {
    /// Treat it as unknown, silently.
    Ignore,
    /// Treat it as unknown and log a `grace_expired` event.
    Log,
    /// Log it and end every session of its user.
    RevokeUser,
}

impl From<OnRetiredId> for sessionkit::RetiredIdPolicy {
    fn from(p: OnRetiredId) -> Self {
        match p {
            OnRetiredId::Ignore => Self::Ignore,
            OnRetiredId::Log => Self::Log,
            OnRetiredId::RevokeUser => Self::RevokeUser,
        }
    }
}

/// Store latency buckets in seconds: sub-millisecond (memory) up to the default store timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Installs the process-wide Prometheus recorder and keeps its histograms trimmed.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(sessionkit::metrics::names::STORE_LATENCY.to_owned()),
            LATENCY_BUCKETS,
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Runs the demo server until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = if args.no_metrics {
        None
    } else {
        Some(install_metrics()?)
    };
    let store = sessionkit::store::open(&args.store)
        .await
        .with_context(|| format!("opening store {}", crate::admin::redact(&args.store)))?;
    let mut config = Config::builder()
        .idle_timeout(args.idle_timeout)
        .absolute_timeout(args.absolute_timeout)
        .rotation_grace(args.rotation_grace)
        .store_timeout(args.store_timeout)
        .gc_interval(args.gc_interval)
        .on_retired_id(args.on_retired_id.into());
    if let Some(after) = args.rotate_after {
        config = config.rotate_after(after);
    }
    if args.dbsc {
        let mut dbsc = sessionkit::DbscConfig::default();
        dbsc.bound_cookie_lifetime = args.dbsc_bound_lifetime;
        dbsc.end_session_on_failed_proof = args.dbsc_end_on_failed_proof;
        config = config.dbsc(dbsc);
    }
    let manager = Manager::new(store, config.build()?)?;
    manager.spawn_gc();
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr()?;
    let options = demo::DemoOptions {
        trust_forwarded_for: args.trust_forwarded_for,
    };
    // Metrics on the app's port, or on a listener of their own.
    let (metrics_here, metrics_apart) = match (metrics, args.metrics_addr) {
        (Some(handle), Some(addr)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            (None, Some((handle, listener)))
        }
        (handle, _) => (handle, None),
    };
    let metrics_at = match &metrics_apart {
        Some((_, listener)) => Some(listener.local_addr()?),
        None => None,
    };
    let announce = || {
        // Tests and scripts read this line to find the port.
        println!("sessionkit demo listening on http://{local}");
        if let Some(at) = metrics_at {
            // The second line: the app's address stays the first thing printed.
            println!("sessionkit metrics listening on http://{at}");
        }
    };
    match args.framework {
        demo::Framework::Axum => {
            let mut app = demo::app_with(manager.clone(), options);
            if let Some(handle) = metrics_here {
                app = app.merge(demo::axum::metrics(handle));
            }
            if let Some((handle, listener)) = metrics_apart {
                let metrics = demo::axum::metrics(handle);
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, metrics).await {
                        tracing::error!(error = %e, "metrics listener failed");
                    }
                });
            }
            announce();
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        }
        demo::Framework::Actix => {
            let server =
                demo::actix::server(manager.clone(), options, metrics_here, listener.into_std()?)?;
            let metrics_server = match metrics_apart {
                Some((handle, listener)) => {
                    Some(demo::actix::metrics_server(handle, listener.into_std()?)?)
                }
                None => None,
            };
            let handles: Vec<_> = std::iter::once(server.handle())
                .chain(metrics_server.as_ref().map(|s| s.handle()))
                .collect();
            if let Some(metrics_server) = metrics_server {
                tokio::spawn(async move {
                    if let Err(e) = metrics_server.await {
                        tracing::error!(error = %e, "metrics listener failed");
                    }
                });
            }
            tokio::spawn(async move {
                shutdown_signal().await;
                for handle in handles {
                    handle.stop(true).await;
                }
            });
            announce();
            server.await?;
        }
    }
    manager.shutdown().await;
    Ok(())
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
