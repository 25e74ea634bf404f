//! Server-side sessions for Rust web services.
//!
//! The browser holds only an unguessable ID; the data lives in a [`Store`] (memory, file,
//! SQLite, Redis, Postgres, chosen by URL with [`store::open`]). A [`Manager`] applies the
//! cookie and timeout policy, a [`SessionLayer`] wires it into tower/axum, and each handler gets
//! a [`Session`] with typed values.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use sessionkit::{Config, Manager, MemoryStore, Session, SessionLayer};
//!
//! async fn count(session: Session) -> Result<String, sessionkit::Error> {
//!     // Concurrent requests never lose increments: the update is replayed on conflict.
//!     let n: u64 = session.update("count", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("{n}"))
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
//!     manager.spawn_gc();
//!     let app = Router::new()
//!         .route("/count", get(count))
//!         .layer(SessionLayer::new(manager));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! ```
//!
//! Guarantees: IDs are 256-bit CSPRNG values, stored only as SHA-256 hashes; unknown or expired
//! IDs are never adopted (a fresh ID is issued); saves are compare-and-set with replay, so
//! concurrent requests merge; idle and absolute timeouts are enforced server side.
//!
//! # Cargo features
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `axum` (default) | the [`Session`] extractor for axum |
//! | `sqlite` | `sqlite://path.db` (SQLite compiled in) |
//! | `file` | `file:///dir`, one file per session |
//! | `redis` | `redis://` and `redis+cluster://` |
//! | `redis-tls` | `rediss://` and `rediss+cluster://` (rustls) |
//! | `postgres` | `postgres://` |
//! | `postgres-tls` | libpq's `sslmode` and `sslrootcert` on `postgres://` (rustls) |
//! | `metrics` | counters, gauges and a latency histogram through the `metrics` facade |
//! | `testkit` | the store conformance suite, for third-party stores |

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod error;
pub mod http;
mod id;
mod lifecycle;
mod manager;
pub mod metrics;
mod record;
mod session;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod token;

pub use config::{
    Config, ConfigBuilder, CookieConfig, SameSite, SigningKey, Transport, UserLimitPolicy,
};
pub use error::{BoxError, Error, Result};
pub use http::{SessionLayer, SessionService};
pub use id::{Key, SessionId, ID_LEN};
pub use manager::{Manager, SessionInfo};
pub use record::{now_millis, AuthInfo, Data, Extra, Millis, Record};
pub use session::Session;
pub use store::{MemoryStore, Page, Store};
pub use token::SessionHeaders;
