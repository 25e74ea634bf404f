//! The [`Store`] trait, the contract every session store keeps, and [`open`], which picks a store
//! by URL.
//!
//! The contract (pinned by the conformance suite in `testkit`):
//!
//! - `load` never creates and never returns an expired record; unknown keys are `Ok(None)`.
//! - `create` is insert-if-absent ([`Error::Exists`] otherwise).
//! - `save` is compare-and-set on the record version: it succeeds only if the stored version is
//!   `expected_version`, and never re-creates a destroyed session ([`Error::Conflict`]).
//! - `touch` moves `last_access`/`expires_at` without rewriting data or bumping the version.
//! - `rotate` moves a session to a new key in one step: the old key dies or holds the alias the
//!   caller gave (a [`Record::alias`] pointing at the new key) until the alias expires.
//! - `take` deletes and returns in one step, so revocation can follow a session that rotates
//!   while it is being ended.
//! - `gc` removes at most `limit` expired records per call; its cost follows the number of expired
//!   records, not the total.
//! - `scan` pages through live records with an opaque cursor.
//! - The user index (`sessions_of`, `destroy_user`) follows `create`/`save`/`rotate`/`destroy`.
//! - Corrupt records are logged and read as absent.
//!
//! Beside the trait live the helpers every store and tool shares: [`scan_all`] and
//! [`ScanPages`] (a whole scan), [`redact_url`] (store URLs in messages), [`key_cursor`] (scan
//! cursors in key order) and, with the `testkit` feature, [`RawAccess`] (the raw-bytes test
//! hook).
//!
//! # Adding a store
//!
//! 1. **The code**: `store/NAME.rs`, or `store/NAME/mod.rs` with helper files beside it once it
//!    grows (see `redis/` and `sqlite/`). Implement [`Store`]; store the alias `rotate` is given as
//!    any other record (encoded under the old key); if the store partitions keys, pick the partition with [`Key::shard`] (and
//!    take two shard locks with `shards::lock_two`, in index order, never by hand); parse the URL
//!    into [`Error::BadUrl`] (via [`Error::bad_url`], which redacts the password) for anything
//!    wrong with the URL itself. A store that keeps bytes at rest also implements [`RawAccess`]
//!    behind `#[cfg(feature = "testkit")]`.
//! 2. **The cargo feature**: add one to `crates/sessionkit/Cargo.toml` that enables the driver
//!    (an optional dependency), with a comment naming the URL schemes. Declare the module here as
//!    `#[cfg(feature = "NAME")] pub mod NAME;` and re-export the store type below next to the
//!    others.
//! 3. **The URL scheme**: add it to [`SCHEMES`] (with the feature it needs) and to the `match` in
//!    [`open`], together with the `#[cfg(not(feature = "NAME"))]` arm that answers with a
//!    [`Error::BadUrl`] naming the missing feature. The CLI then knows the store with no change
//!    of its own.
//! 4. **The conformance suite**: add `crates/sessionkit/tests/conformance_NAME.rs` with
//!    [`conformance_tests!`](crate::conformance_tests) and a factory that gives each test a
//!    fresh, isolated store (a new directory, key prefix or schema), wrapped in a
//!    [`testkit::Fixture`](crate::testkit::Fixture) with `with_raw` so the corrupt-record test
//!    runs too. A new contract test goes into the list in `testkit/mod.rs` (written once) and
//!    then runs on every store.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

#[cfg(feature = "file")]
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod columns;
pub mod file;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "testkit")]
mod raw;
#[cfg(feature = "redis")]
pub mod redis;
mod scan;
mod shards;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod url;

#[cfg(feature = "file")]
pub use file::FileStore;
pub use memory::MemoryStore;
#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "testkit")]
pub use raw::RawAccess;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use scan::{scan_all, ScanPages};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use url::redact_url;

/// One page of [`Store::scan`].
#[derive(Debug, Default)]
pub struct Page {
    /// Live records of this page with their keys.
    pub records: Vec<(Key, Record)>,
    /// Cursor for the next page; `None` when the scan is complete.
    pub next: Option<String>,
}

/// What a full check of a durable store found (`SqliteStore::verify`, `FileStore::verify`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Records that decoded cleanly (live or expired, aliases included).
    pub records: u64,
    /// One line per problem: a corrupt record, a failed backend check.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A session store. Object safe: the manager holds an `Arc<dyn Store>`.
///
/// Implementations must be safe to share between tasks and (for shared backends) between
/// processes: every guarantee holds across processes that use the same backend.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors, e.g. `"memory"`.
    fn kind(&self) -> &'static str;

    /// The live record under `key`, or `None` if absent, expired at `now` or unreadable.
    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>>;

    /// Inserts `record` under `key` if nothing (live) is there; [`Error::Exists`] otherwise.
    async fn create(&self, key: &Key, record: &Record) -> Result<()>;

    /// Replaces the record under `key` if its stored version equals `expected_version`;
    /// [`Error::Conflict`] if it differs or the record is gone.
    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()>;

    /// Sets `last_access` and `expires_at` of a live record; false if there is none.
    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool>;

    /// Moves the session at `old` (which must be at `expected_version`, else
    /// [`Error::Conflict`]) to `new`, storing `record` there, in one atomic step. Without
    /// `alias` the old key is deleted; with it, the old key holds that record (a
    /// [`Record::alias`] naming `new`) until its `expires_at`. An alias is never a
    /// compare-and-set target: `save` and `rotate` at its key give [`Error::Conflict`].
    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()>;

    /// Deletes the record under `key` and returns it, aliases and expired records included, in
    /// one atomic step: `None` if nothing was there, or if what was there could not be decoded
    /// (it is deleted all the same). Revocation relies on the atomicity: once `take` returned an
    /// alias, its successor is where the session went, and once it returned a live record no
    /// rotation from that key can succeed.
    async fn take(&self, key: &Key) -> Result<Option<Record>>;

    /// Deletes the record under `key`; true if one (that could be decoded) was there.
    async fn destroy(&self, key: &Key) -> Result<bool> {
        Ok(self.take(key).await?.is_some())
    }

    /// Removes up to `limit` records expired at `now`; returns how many it removed.
    async fn gc(&self, now: Millis, limit: usize) -> Result<usize>;

    /// Number of live sessions at `now` (aliases left by rotation excluded where cheap).
    async fn len(&self, now: Millis) -> Result<u64>;

    /// A page of at most `limit` live records after `cursor` (`None` starts the scan).
    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page>;

    /// The live sessions of `user`. A session rotating meanwhile must be listed under its old
    /// key or its new one (both for a moment is allowed, neither never is): user-level
    /// revocation lists, ends what it found and lists again until nothing is left, which closes
    /// the rotate-between-list-and-delete race only if no listing misses a session.
    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>>;

    /// Deletes every session of `user`; returns how many.
    async fn destroy_user(&self, user: &str) -> Result<u64>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// [`Store::load`] answered at once, for a store that never waits (memory): `None`, the
    /// default, sends the caller through `load`. It spares the request path the boxed future
    /// of an `async` trait call. A store that answers here must answer exactly as `load` would
    /// (the conformance suite checks it).
    ///
    /// ```
    /// # use sessionkit::{MemoryStore, Store};
    /// let store = MemoryStore::new();
    /// let key = sessionkit::SessionId::generate().unwrap().key();
    /// assert!(matches!(store.load_ready(&key, 0), Some(Ok(None))));
    /// ```
    fn load_ready(&self, key: &Key, now: Millis) -> Option<Result<Option<Record>>> {
        let _ = (key, now);
        None
    }

    /// [`Store::create`] answered at once, as for [`Store::load_ready`].
    fn create_ready(&self, key: &Key, record: &Record) -> Option<Result<()>> {
        let _ = (key, record);
        None
    }

    /// [`Store::save`] answered at once, as for [`Store::load_ready`].
    fn save_ready(&self, key: &Key, record: &Record, expected_version: u64) -> Option<Result<()>> {
        let _ = (key, record, expected_version);
        None
    }

    /// [`Store::touch`] answered at once, as for [`Store::load_ready`].
    fn touch_ready(
        &self,
        key: &Key,
        last_access: Millis,
        expires_at: Millis,
    ) -> Option<Result<bool>> {
        let _ = (key, last_access, expires_at);
        None
    }

    /// How many records have expired at `now` but are still stored (awaiting GC), if the
    /// backend can tell cheaply; `None` (the default) when it cannot. Used by admin tools only.
    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        let _ = now;
        Ok(None)
    }
}

/// Parses the scan cursor of a store that pages in key order (the hex key of the last record of
/// the previous page; `None` starts the scan). A malformed cursor is a clear error.
pub fn key_cursor(cursor: Option<&str>) -> Result<Option<Key>> {
    cursor
        .map(|c| Key::from_hex(c).ok_or_else(|| Error::Config(format!("bad scan cursor {c:?}"))))
        .transpose()
}

/// The URL schemes [`open`] knows, with the cargo feature each needs.
pub const SCHEMES: &[(&str, &str)] = &[
    ("memory://", "(always available)"),
    ("sqlite://path.db", "(cargo feature `sqlite`)"),
    ("file:///dir", "(cargo feature `file`)"),
    ("redis://", "(cargo feature `redis`)"),
    ("redis+cluster://", "(cargo feature `redis`)"),
    ("rediss://", "(cargo feature `redis-tls`)"),
    ("rediss+cluster://", "(cargo feature `redis-tls`)"),
    ("postgres://", "(cargo feature `postgres`)"),
    ("postgresql://", "(cargo feature `postgres`)"),
    ("mysql://", "(cargo feature `mysql`)"),
];

/// Opens a store by URL, e.g. `memory://`, `sqlite://sessions.db` (feature `sqlite`),
/// `file:///var/lib/app/sessions` (feature `file`), `redis://127.0.0.1:6379`,
/// `redis+cluster://h1:7001,h2:7002` (feature `redis`; `rediss://` and `rediss+cluster://` over
/// TLS with feature `redis-tls`), `postgres://user@host/db` (feature `postgres`) or
/// `mysql://user@host:3306/db` (feature `mysql`, MySQL or MariaDB).
///
/// # Errors
///
/// [`Error::BadUrl`] (its URL redacted) for an unknown scheme, a scheme whose cargo feature is
/// off, or bad syntax or parameters; [`Error::Config`] for a store that is not a sessionkit
/// store or is of a newer format; a backend error or timeout when the server cannot be
/// reached.
///
/// ```
/// # tokio_test_block_on(async {
/// let store = sessionkit::store::open("memory://").await.unwrap();
/// assert_eq!(store.kind(), "memory");
/// assert!(sessionkit::store::open("nosuch://x").await.is_err());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "redis")]
        "redis" | "redis+cluster" | "rediss" | "rediss+cluster" => {
            Ok(Arc::new(redis::RedisStore::open(url).await?))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
        #[cfg(not(feature = "redis"))]
        "redis" | "redis+cluster" | "rediss" | "rediss+cluster" => Err(Error::bad_url(
            url,
            "needs the cargo feature `redis` of sessionkit",
        )),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(Error::bad_url(
            url,
            "needs the cargo feature `postgres` of sessionkit",
        )),
        #[cfg(feature = "mysql")]
        "mysql" => Ok(Arc::new(mysql::MySqlStore::open(url).await?)),
        #[cfg(not(feature = "mysql"))]
        "mysql" => Err(Error::bad_url(
            url,
            "needs the cargo feature `mysql` of sessionkit",
        )),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteStore::open(url).await?)),
        #[cfg(feature = "file")]
        "file" => Ok(Arc::new(FileStore::open(url).await?)),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(Error::bad_url(
            url,
            "needs the cargo feature `sqlite` of sessionkit",
        )),
        #[cfg(not(feature = "file"))]
        "file" => Err(Error::bad_url(
            url,
            "needs the cargo feature `file` of sessionkit",
        )),
        _ => Err(Error::bad_url(
            url,
            format!(
                "unknown store URL scheme; known schemes: {}",
                SCHEMES
                    .iter()
                    .map(|(s, f)| format!("{s} {f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
