//! The smallest useful actix-web app: a per-visitor counter and a sign-in that rotates the ID
//! (the README's "actix-web" example).
//!
//! ```text
//! cargo run -p sessionkit --features actix --example actix_minimal
//! curl -c jar -b jar http://127.0.0.1:3000/count        # 1, 2, 3, ...
//! curl -c jar -b jar -X POST http://127.0.0.1:3000/login/alice
//! curl -c jar -b jar http://127.0.0.1:3000/whoami       # alice
//! ```

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use sessionkit::{Config, Manager, MemoryStore, Session, SessionMiddleware};

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    // Concurrent requests never lose an increment: the update is replayed on conflict.
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}\n"))
}

async fn login(session: Session, name: web::Path<String>) -> Result<String, sessionkit::Error> {
    // A real app checks a password first. Setting the user also issues a new session ID.
    session.set_user(Some(&name), "example").await?;
    Ok(format!("signed in as {name}\n"))
}

async fn whoami(session: Session) -> Result<String, sessionkit::Error> {
    Ok(session.user().await?.unwrap_or_default())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
    manager.spawn_gc();
    println!("listening on http://127.0.0.1:3000");
    HttpServer::new(move || {
        App::new()
            .route("/count", web::get().to(count))
            .route("/login/{name}", web::post().to(login))
            .route("/whoami", web::get().to(whoami))
            .wrap(SessionMiddleware::new(manager.clone()))
    })
    .bind("127.0.0.1:3000")?
    .run()
    .await
}
