//! The HTTP pages under test that need no comparison crate: the sessionkit count page (the
//! demo's `/count` handler behind a bare `SessionLayer`, without the demo's CSRF middleware so
//! that it does the same work as the tower-sessions page) and a page with an atomic counter and
//! no sessions at all (the ceiling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use sessionkit::{Config, Manager, MemoryStore, Session, SessionLayer, Store};

/// The sessionkit count page at `/count`, on a fresh [`MemoryStore`] with the default config.
pub fn sessionkit_count() -> Router {
    sessionkit_count_on(Arc::new(MemoryStore::new()))
}

/// The sessionkit count page at `/count` on `store`, with the default config, plus `/peek`: a
/// read-only page showing the count without changing it (for counting a read's round trips),
/// and `/login`, which signs the session in (a new ID; later writes keep the user index).
pub fn sessionkit_count_on(store: Arc<dyn Store>) -> Router {
    let manager = Manager::new(store, Config::default()).expect("default config is valid");
    Router::new()
        .route("/count", get(count))
        .route("/peek", get(peek))
        .route("/login", get(login))
        .layer(SessionLayer::new(manager))
}

async fn login(session: Session) -> Result<&'static str, sessionkit::Error> {
    session.set_user(Some("bench-user"), "password").await?;
    Ok("ok\n")
}

async fn peek(session: Session) -> Result<String, sessionkit::Error> {
    let n: Option<u64> = session.get("count").await?;
    Ok(format!("{}\n", n.unwrap_or(0)))
}

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}\n"))
}

/// `/count` with one process-wide atomic counter and no sessions.
pub fn bare_count() -> Router {
    Router::new()
        .route("/count", get(bare))
        .with_state(Arc::new(AtomicU64::new(0)))
}

async fn bare(State(n): State<Arc<AtomicU64>>) -> String {
    format!("{}\n", n.fetch_add(1, Ordering::Relaxed) + 1)
}
