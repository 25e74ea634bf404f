//! The smallest useful axum app: a per-visitor counter and a sign-in that rotates the ID.
//!
//! ```text
//! cargo run -p sessionkit --example axum_minimal
//! curl -c jar -b jar http://127.0.0.1:3000/count        # 1, 2, 3, ...
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/login/alice
//! curl -c jar -b jar http://127.0.0.1:3000/whoami       # alice
//! ```
//!
//! (The cookie is `Secure`: curl sends it back to 127.0.0.1 and browsers to `localhost`, both
//! of which count as secure origins.)

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use sessionkit::{Config, Manager, MemoryStore, Session, SessionLayer};

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    // Concurrent requests of one visitor never lose an increment: the update is replayed when
    // another request saved first.
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}\n"))
}

async fn login(session: Session, Path(name): Path<String>) -> Result<String, sessionkit::Error> {
    // A real app checks a password first. Setting the user also issues a new session ID.
    session.set_user(Some(&name), "example").await?;
    Ok(format!("signed in as {name}\n"))
}

async fn whoami(session: Session) -> Result<String, sessionkit::Error> {
    Ok(session.user().await?.unwrap_or_default())
}

#[tokio::main]
async fn main() {
    let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default())
        .expect("default config is valid");
    manager.spawn_gc();
    let app = Router::new()
        .route("/count", get(count))
        .route("/login/{name}", post(login))
        .route("/whoami", get(whoami))
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .expect("bind 127.0.0.1:3000");
    println!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app).await.expect("server");
}
