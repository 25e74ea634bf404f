//! Server-side sessions for Rust web services.
//!
//! The browser holds only an unguessable ID; the data lives in a [`Store`] (memory, file,
//! SQLite, Redis, Postgres, MySQL/MariaDB, chosen by URL with [`store::open`]). A [`Manager`] applies the
//! cookie and timeout policy, a [`SessionLayer`] wires it into tower/axum (or, with the `actix`
//! feature, `SessionMiddleware` into actix-web), and each handler gets
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
//! # Layout
//!
//! A request flows one way through the crate; each module only uses those below it:
//!
//! ```text
//! http (tower layer, axum extractor, actix-web middleware and extractor)
//!  └─ manager   Manager: start / finish, GC task, user-level operations (list, revoke)
//!      ├─ session    Session: the per-request handle; logs operations, loads lazily
//!      │   └─ lifecycle  load, liveness, the operation log, finish (create / touch / save
//!      │       │         with replay) → an Outcome: issue a token, forget it, or nothing
//!      │       └─ store      the Store trait and the stores (memory, file, sqlite, redis,
//!      │                     postgres, mysql), chosen by URL
//!      └─ token      the token codec: read, verify, sign, issue, removal; from Config alone
//!          └─ record, config, id, error   the data types every layer shares
//! ```
//!
//! - [`id`](SessionId): 256-bit IDs and their at-rest [`Key`] (a SHA-256 hash).
//! - `record`: the stored [`Record`] and its binary encoding.
//! - `config`: [`Config`] and its [`ConfigBuilder`].
//! - `lifecycle` (crate-private): what happens between `start` and `finish`.
//! - [`store`]: the contract every store passes (see "Adding a store" there).
//! - `testkit` (feature `testkit`): the conformance suite, one list of tests for every store.
//! - `dbsc` (feature `dbsc`): Device Bound Session Credentials, served by the `http` layers
//!   on top of `manager` and `session`.
//!
//! # Cargo features
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `axum` (default) | the [`Session`] extractor for axum |
//! | `actix` | `SessionMiddleware` and the [`Session`] extractor for actix-web 4 (see [`http`]) |
//! | `sqlite` | `sqlite://path.db` (SQLite compiled in) |
//! | `file` | `file:///dir`, one file per session |
//! | `redis` | `redis://` and `redis+cluster://` |
//! | `redis-tls` | `rediss://` and `rediss+cluster://` (rustls) |
//! | `postgres` | `postgres://` |
//! | `postgres-tls` | libpq's `sslmode` and `sslrootcert` on `postgres://` (rustls) |
//! | `mysql` | `mysql://` (MySQL 8, MariaDB 10.6+; no TLS) |
//! | `metrics` | counters, gauges and a latency histogram through the `metrics` facade |
//! | `dbsc` | Device Bound Session Credentials (module `dbsc`; `ring` for the signatures) |
//! | `testkit` | the store conformance suite, for third-party stores |

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
#[cfg(feature = "dbsc")]
pub mod dbsc;
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
    Config, ConfigBuilder, CookieConfig, RetiredIdPolicy, SameSite, SigningKey, Transport,
    UserLimitPolicy,
};
#[cfg(feature = "dbsc")]
pub use dbsc::DbscConfig;
pub use error::{BoxError, Error, Result};
#[cfg(feature = "actix")]
pub use http::{SessionExt, SessionMiddleware, SessionMiddlewareService};
pub use http::{SessionLayer, SessionService};
pub use id::{Key, SessionId, ID_LEN};
pub use lifecycle::flash::{Flash, FlashLevel};
pub use manager::{Manager, SessionInfo};
pub use record::{now_millis, AuthInfo, Data, DeviceBinding, Extra, Millis, Record};
pub use session::Session;
pub use store::{MemoryStore, Page, Store};
pub use token::SessionHeaders;
