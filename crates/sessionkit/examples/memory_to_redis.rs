//! Moving from the in-process store to Redis is a one-line change: the store URL.
//!
//! ```text
//! cargo run -p sessionkit --example memory_to_redis                    # memory://
//! SESSIONKIT_STORE=redis://127.0.0.1:6379 \
//!   cargo run -p sessionkit --features redis --example memory_to_redis  # Redis
//! ```
//!
//! Everything else (handlers, cookie, timeouts) stays the same. Sessions already in a durable
//! store move with `sessionkit migrate --from URL --to URL`.

use axum::routing::get;
use axum::Router;
use sessionkit::{Config, Manager, Session, SessionLayer};

/// The one line to change: `"memory://"` today, `"redis://127.0.0.1:6379"` tomorrow.
const STORE_URL: &str = "memory://";

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}\n"))
}

#[tokio::main]
async fn main() {
    // The environment may override the line above, so both setups run without editing.
    let url = std::env::var("SESSIONKIT_STORE").unwrap_or_else(|_| STORE_URL.to_owned());
    let store = match sessionkit::store::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open {url}: {e}");
            std::process::exit(1);
        }
    };
    let manager = Manager::new(store, Config::default()).expect("default config is valid");
    manager.spawn_gc();
    let app = Router::new()
        .route("/count", get(count))
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002")
        .await
        .expect("bind 127.0.0.1:3002");
    println!("sessions in {url}; listening on http://127.0.0.1:3002");
    axum::serve(listener, app).await.expect("server");
}
