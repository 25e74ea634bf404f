//! [`SqliteStore`]: sessions in one SQLite database file (`sqlite://path.db`).
//!
//! The embedded durable store: no server, survives restarts and crashes. Layout and choices:
//!
//! - One table, `sessions`, keyed by the 32-byte [`Key`] (the SHA-256 of the session ID, so a
//!   dump holds no live token). The record is stored as [`Record::encode`] in `payload`, next to
//!   the columns SQL needs: `version` (compare-and-set: `UPDATE ... WHERE key = ? AND version = ?
//!   AND expires_at > now`), `expires_at` (indexed, for GC and liveness), `user` (indexed, the user
//!   index), `alias` (rotation aliases are excluded from `len` and `scan`).
//! - `last_access` and `expires_at` columns are authoritative over the copies inside `payload`:
//!   that makes `touch` one small `UPDATE` that never rewrites the data.
//! - WAL journal, `synchronous=FULL` by default (an acknowledged write survives a power cut; pass
//!   `?synchronous=normal` to trade the last moments before a power cut for speed — a process
//!   crash loses nothing either way), a busy timeout so concurrent processes wait instead of
//!   failing, and `BEGIN IMMEDIATE` for multi-statement writes so a read never has to be upgraded
//!   to a write mid-transaction.
//! - rusqlite is blocking, so every read runs on `tokio::task::spawn_blocking` with a connection
//!   taken from a small pool; a semaphore bounds the calls in flight to the pool size.
//! - Every write goes to one writer thread with a connection of its own, which commits in
//!   groups: it takes all writes waiting (up to 64), runs each inside its own savepoint within
//!   one `BEGIN IMMEDIATE` transaction, commits once, and only then answers them. Each write
//!   keeps its own compare-and-set check and its own outcome (a conflict rolls back to its
//!   savepoint and leaves the others alone), but a burst of writes from concurrent requests
//!   pays one commit — one `fsync` with `synchronous=FULL` — instead of one each, and our own
//!   writers never race each other for SQLite's single write lock (the loser of such a race
//!   sleeps in SQLite's busy handler). Nothing is acknowledged before its commit is durable.
//! - The schema is versioned with `PRAGMA user_version` and the file is marked as ours with
//!   `PRAGMA application_id`; opening a newer schema, a foreign SQLite database or a file that is
//!   not SQLite at all fails with a clear [`Error::Config`].
//!
//! URL: `sqlite://path.db` (relative to the working directory) or `sqlite:///abs/path.db`, with
//! optional query parameters `synchronous=full|normal`, `pool=N` (connections, 1..=64, default 4)
//! and `busy_timeout_ms=N` (default 5000).
//!
//! # Files
//!
//! This file holds the store itself (the pool, the reads and the [`Store`] calls); `schema.rs`
//! the URL, opening a connection, the schema and its migrations; `writer.rs` the group-commit
//! writer thread. This file is over 700 lines because its tests (corrupt and damaged files,
//! index use) pin the reads and `Store` calls beside them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use tokio::sync::Semaphore;

use super::columns::Columns;
use super::{IntegrityReport, Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

pub use schema::SCHEMA_VERSION;
use schema::{create_private, open_connection, parse_url, prepare_schema, Options};
use writer::{run_writer, WriteJob};

mod schema;
mod writer;

const KIND: &str = "sqlite";

/// A session store in an SQLite database file. See the module documentation for the layout.
///
/// ```no_run
/// # async fn demo() -> sessionkit::Result<()> {
/// let store = sessionkit::store::SqliteStore::open("sqlite://sessions.db").await?;
/// # let _ = store; Ok(()) }
/// ```
///
/// Clones share the same connection pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: Options,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// The group-commit writer (see the module doc); `None` once dropped.
    writer: Option<std::sync::mpsc::Sender<WriteJob>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the last connection checkpoints the WAL (file I/O): keep it off the executor
        // threads of a multi-threaded runtime. Elsewhere (no runtime, a current-thread one, as
        // in tests that reopen the file at once) close right here.
        let conns = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        // Closing the channel ends the writer thread once it has answered what it holds.
        drop(self.writer.take());
        let writer = self.writer_thread.take();
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                drop(h.spawn_blocking(move || drop(conns)));
            }
            _ => {
                drop(conns);
                // Wait for the writer's connection to close too, so the file is ours alone.
                if let Some(t) = writer {
                    let _ = t.join();
                }
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::backend(KIND, op, e)
}

/// Decodes a row's payload, applying the authoritative columns. Corrupt rows are logged and
/// read as absent.
fn decode_row(
    key: &Key,
    payload: &[u8],
    version: i64,
    last_access: Millis,
    expires_at: Millis,
) -> Option<Record> {
    match Record::decode(key, payload) {
        Ok(mut r) if r.version as i64 == version => {
            r.last_access = last_access;
            r.expires_at = expires_at;
            Some(r)
        }
        Ok(r) => {
            tracing::warn!(
                store = KIND,
                key = %key.short(),
                "corrupt session row: payload version {} but column version {version}; treated as absent",
                r.version
            );
            None
        }
        Err(e) => {
            tracing::warn!(store = KIND, key = %key.short(), error = %e, "corrupt session row; treated as absent");
            None
        }
    }
}

fn key_from_blob(blob: &[u8]) -> Option<Key> {
    blob.try_into().ok().map(Key)
}

/// The scan cursor: hex of the last row's key blob. Normally a 32-byte key, but a damaged row
/// may hold another length and the scan must still go on past it in key order.
fn format_cursor(blob: &[u8]) -> String {
    blob.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_cursor(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Columns selected by every read, in this order.
const ROW: &str = "key, payload, version, last_access, expires_at";

type RawRow = (Vec<u8>, Vec<u8>, i64, i64, i64);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn decode_raw((key, payload, version, last, exp): RawRow) -> Option<(Key, Record)> {
    let Some(k) = key_from_blob(&key) else {
        tracing::warn!(
            store = KIND,
            len = key.len(),
            "session row with a malformed key; ignored"
        );
        return None;
    };
    decode_row(&k, &payload, version, last, exp).map(|r| (k, r))
}

/// Inserts or replaces the row for `key` (inside the caller's transaction).
/// The column list every statement that writes a whole row uses, in the order of
/// [`row_params`] (`?1` to `?9`).
const ROW_COLUMNS: &str =
    "key, version, created, last_access, expires_at, absolute_expires_at, user, alias, payload";

/// A record's row bound as `?1` to `?9` in [`ROW_COLUMNS`] order; statements add their own
/// parameters from `?10`.
fn row_params<'a>(c: &'a Columns<'a>) -> [&'a dyn ToSql; 9] {
    [
        &c.key,
        &c.version,
        &c.created,
        &c.last_access,
        &c.expires_at,
        &c.absolute_expires_at,
        &c.user,
        &c.alias,
        &c.payload,
    ]
}

fn put(conn: &Connection, key: &Key, record: &Record) -> rusqlite::Result<()> {
    let c = Columns::of(key, record);
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO sessions ({ROW_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(&row_params(&c)[..])?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database named by an `sqlite://` URL, checks it is a
    /// sessionkit database and migrates its schema.
    pub async fn open(url: &str) -> Result<Self> {
        let (path, options) = parse_url(url)?;
        Self::open_path(path, options).await
    }

    async fn open_path(path: PathBuf, options: Options) -> Result<Self> {
        let (conn, writer_conn, path, options) = tokio::task::spawn_blocking(move || {
            create_private(&path);
            let mut conn = open_connection(&path, &options)?;
            prepare_schema(&mut conn, &path)?;
            let writer_conn = open_connection(&path, &options)?;
            Ok::<_, Error>((conn, writer_conn, path, options))
        })
        .await
        .map_err(|e| Error::backend(KIND, "open", e))??;
        let (writer, jobs) = std::sync::mpsc::channel();
        let writer_thread = std::thread::Builder::new()
            .name("sessionkit-sqlite-writer".into())
            .spawn(move || run_writer(writer_conn, jobs))
            .map_err(|e| Error::backend(KIND, "open", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                permits: Arc::new(Semaphore::new(options.pool)),
                writer: Some(writer),
                writer_thread: Some(writer_thread),
                options,
                idle: Mutex::new(vec![conn]),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    async fn with<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::backend(KIND, op, e))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path, &inner.options)?,
            };
            let out = f(&mut conn);
            // A connection left inside a transaction (an error mid-way) is rolled back by
            // rusqlite's Transaction drop, so it is clean to reuse.
            inner
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            out
        })
        .await
        .map_err(|e| Error::backend(KIND, op, e))?
    }

    /// Checks the whole database: SQLite's own `integrity_check` and a decode of every row.
    /// Meant for admin tools and tests; it reads everything.
    pub async fn verify(&self) -> Result<IntegrityReport> {
        self.with("verify", |conn| {
            let mut report = IntegrityReport::default();
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(db("verify"))?;
            let lines = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db("verify"))?;
            for line in lines {
                let line = line.map_err(db("verify"))?;
                if line != "ok" {
                    report.problems.push(format!("integrity_check: {line}"));
                }
            }
            let mut stmt = conn
                .prepare(&format!("SELECT {ROW} FROM sessions"))
                .map_err(db("verify"))?;
            let rows = stmt.query_map([], raw_row).map_err(db("verify"))?;
            for row in rows {
                let row = row.map_err(db("verify"))?;
                let hex = key_from_blob(&row.0)
                    .map(|k| k.to_hex())
                    .unwrap_or_else(|| format!("<{}-byte key>", row.0.len()));
                if decode_raw(row).is_some() {
                    report.records += 1;
                } else {
                    report.problems.push(format!("corrupt row {hex}"));
                }
            }
            Ok(report)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let key = *key;
        self.with("load", move |conn| {
            let row = conn
                .prepare_cached(&format!(
                    "SELECT {ROW} FROM sessions WHERE key = ?1 AND expires_at > ?2"
                ))
                .map_err(db("load"))?
                .query_row(params![&key.0[..], now], raw_row)
                .optional()
                .map_err(db("load"))?;
            Ok(row.and_then(decode_raw).map(|(_, r)| r))
        })
        .await
    }

    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.write("create", move |conn| {
            // Insert-if-absent in one statement: the upsert only overwrites an expired row.
            let n = conn
                .prepare_cached(&format!(
                    "INSERT INTO sessions ({ROW_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (key) DO UPDATE SET
                        version = excluded.version, created = excluded.created,
                        last_access = excluded.last_access, expires_at = excluded.expires_at,
                        absolute_expires_at = excluded.absolute_expires_at, user = excluded.user,
                        alias = excluded.alias, payload = excluded.payload
                     WHERE sessions.expires_at <= excluded.last_access"
                ))
                .map_err(db("create"))?
                .execute(&row_params(&Columns::of(&key, &record))[..])
                .map_err(db("create"))?;
            if n == 0 {
                Err(Error::Exists)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.write("save", move |conn| {
            let c = Columns::of(&key, &record);
            let expected = expected_version as i64;
            let n = conn
                .prepare_cached(
                    "UPDATE sessions SET version = ?2, created = ?3, last_access = ?4,
                        expires_at = ?5, absolute_expires_at = ?6, user = ?7, alias = ?8,
                        payload = ?9
                     WHERE key = ?1 AND version = ?10 AND expires_at > ?4 AND alias = 0",
                )
                .map_err(db("save"))?
                .execute(&[&row_params(&c)[..], &[&expected as &dyn ToSql]].concat()[..])
                .map_err(db("save"))?;
            if n == 0 {
                Err(Error::Conflict)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let key = *key;
        self.write("touch", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE sessions SET last_access = ?2, expires_at = min(?3, absolute_expires_at)
                     WHERE key = ?1 AND expires_at > ?2",
                )
                .map_err(db("touch"))?
                .execute(params![&key.0[..], last_access, expires_at])
                .map_err(db("touch"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        let (old, new, record, alias) = (*old, *new, record.clone(), alias.cloned());
        self.write("rotate", move |conn| {
            let now = record.last_access;
            // Atomic: the writer runs this inside a savepoint of its group transaction.
            let tx = &*conn;
            let cur: Option<(i64, bool)> = tx
                .prepare_cached(
                    "SELECT version, alias FROM sessions WHERE key = ?1 AND expires_at > ?2",
                )
                .map_err(db("rotate"))?
                .query_row(params![&old.0[..], now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db("rotate"))?;
            if cur != Some((expected_version as i64, false)) {
                return Err(Error::Conflict);
            }
            let taken: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE key = ?1 AND expires_at > ?2)",
                )
                .map_err(db("rotate"))?
                .query_row(params![&new.0[..], now], |r| r.get(0))
                .map_err(db("rotate"))?;
            if taken {
                return Err(Error::Exists);
            }
            put(tx, &new, &record).map_err(db("rotate"))?;
            match &alias {
                Some(alias) => {
                    put(tx, &old, alias).map_err(db("rotate"))?;
                }
                None => {
                    tx.prepare_cached("DELETE FROM sessions WHERE key = ?1")
                        .map_err(db("rotate"))?
                        .execute(params![&old.0[..]])
                        .map_err(db("rotate"))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        let key = *key;
        self.write("destroy", move |conn| {
            let row: Option<(Vec<u8>, i64, Millis, Millis)> = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE key = ?1
                     RETURNING payload, version, last_access, expires_at",
                )
                .map_err(db("destroy"))?
                .query_row(params![&key.0[..]], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(db("destroy"))?;
            Ok(row.and_then(|(payload, v, l, e)| decode_row(&key, &payload, v, l, e)))
        })
        .await
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.write("gc", move |conn| {
            // The subquery walks the expires_at index from the oldest deadline and stops at
            // `limit`: the cost follows the number of expired rows, not the table size.
            let n = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE rowid IN
                        (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .map_err(db("gc"))?
                .execute(params![now, limit])
                .map_err(db("gc"))?;
            Ok(n)
        })
        .await
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        self.with("len", move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM sessions WHERE expires_at > ?1 AND alias = 0")
                .map_err(db("len"))?
                .query_row(params![now], |r| r.get(0))
                .map_err(db("len"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        // Admin tools only; the expires_at index that GC uses answers it.
        self.with("expired_awaiting_gc", move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM sessions WHERE expires_at <= ?1")
                .map_err(db("expired_awaiting_gc"))?
                .query_row(params![now], |r| r.get(0))
                .map_err(db("expired_awaiting_gc"))?;
            Ok(Some(n as u64))
        })
        .await
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = match cursor {
            None => Vec::new(),
            Some(c) => {
                parse_cursor(c).ok_or_else(|| Error::Config(format!("bad scan cursor {c:?}")))?
            }
        };
        let limit = limit.clamp(1, 100_000);
        self.with("scan", move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ROW} FROM sessions WHERE key > ?1 AND expires_at > ?2 AND alias = 0
                     ORDER BY key LIMIT ?3"
                ))
                .map_err(db("scan"))?;
            let rows = stmt
                .query_map(params![after, now, limit as i64], raw_row)
                .map_err(db("scan"))?;
            let mut records = Vec::new();
            let mut last = None;
            let mut seen = 0;
            for row in rows {
                let row = row.map_err(db("scan"))?;
                seen += 1;
                last = Some(row.0.clone());
                if let Some(kr) = decode_raw(row) {
                    records.push(kr);
                }
            }
            // The cursor is the last row read, decodable or not, so a corrupt row at the end of
            // a page does not stop the scan.
            let next = if seen >= limit {
                last.map(|k| format_cursor(&k))
            } else {
                None
            };
            Ok(Page { records, next })
        })
        .await
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let user = user.to_owned();
        self.with("sessions_of", move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ROW} FROM sessions WHERE user = ?1 AND expires_at > ?2 AND alias = 0"
                ))
                .map_err(db("sessions_of"))?;
            let rows = stmt
                .query_map(params![user, now], raw_row)
                .map_err(db("sessions_of"))?;
            let mut out = Vec::new();
            for row in rows {
                if let Some((k, r)) = decode_raw(row.map_err(db("sessions_of"))?) {
                    if r.user.as_deref() == Some(user.as_str()) {
                        out.push((k, r));
                    }
                }
            }
            out.sort_by_key(|(_, r)| r.created);
            Ok(out)
        })
        .await
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.write("destroy_user", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE user = ?1")
                .map_err(db("destroy_user"))?
                .execute(params![user])
                .map_err(db("destroy_user"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.with("ping", |conn| {
            conn.query_row("SELECT count(*) FROM sessions WHERE 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(db("ping"))?;
            Ok(())
        })
        .await
    }
}

/// Plants raw bytes as the payload of a row (for the conformance suite's corrupt-record test).
/// The columns beside it say "live": those of the record if the bytes decode, otherwise a
/// far-future deadline, version 1 and no user.
#[cfg(feature = "testkit")]
#[async_trait]
impl super::RawAccess for SqliteStore {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let (key, bytes) = (*key, bytes.to_vec());
        self.write("put_raw", move |conn| {
            let far = Millis::MAX / 2;
            let (version, created, last, exp, abs, user) = match Record::decode(&key, &bytes) {
                Ok(r) => (
                    r.version as i64,
                    r.created,
                    r.last_access,
                    r.expires_at,
                    r.absolute_expires_at,
                    r.user,
                ),
                Err(_) => (1, 0, 0, far, far, None),
            };
            conn.execute(
                "INSERT OR REPLACE INTO sessions
                    (key, version, created, last_access, expires_at, absolute_expires_at, user,
                     alias, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                params![&key.0[..], version, created, last, exp, abs, user, bytes],
            )
            .map_err(db("put_raw"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    pub(super) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sessionkit-sqlite-unit-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("s.db")
    }

    pub(super) fn url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    pub(super) fn key() -> Key {
        SessionId::generate().unwrap().key()
    }

    pub(super) async fn futures_join<T: Send + 'static>(
        tasks: Vec<tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn corrupt_rows_read_as_absent_and_never_leak() {
        let path = temp_db("corrupt");
        let store = SqliteStore::open(&url(&path)).await.unwrap();
        let (a, b, c, d) = (key(), key(), key(), key());
        for k in [a, b, c, d] {
            let mut r = Record::new(1_000, 10_000, 20_000);
            r.data.set("who", &format!("\"{}\"", k.short())).unwrap();
            store.create(&k, &r).await.unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        // a: truncated payload; b: zeroed payload; c: garbage; d: b's payload copied under d.
        conn.execute(
            "UPDATE sessions SET payload = substr(payload, 1, 20) WHERE key = ?1",
            params![&a.0[..]],
        )
        .unwrap();
        conn.execute(
            "UPDATE sessions SET payload = zeroblob(length(payload)) WHERE key = ?1",
            params![&b.0[..]],
        )
        .unwrap();
        conn.execute(
            "UPDATE sessions SET payload = X'DEADBEEF' WHERE key = ?1",
            params![&c.0[..]],
        )
        .unwrap();
        let mut other = Record::new(1_000, 10_000, 20_000);
        other.data.set("who", "\"intruder\"").unwrap();
        conn.execute(
            "UPDATE sessions SET payload = ?2 WHERE key = ?1",
            params![&d.0[..], other.encode(&a)],
        )
        .unwrap();
        // A row whose key is not 32 bytes.
        conn.execute(
            "INSERT INTO sessions VALUES (X'0102', 1, 0, 0, 99999, 99999, NULL, 0, X'00')",
            [],
        )
        .unwrap();
        drop(conn);
        for k in [a, b, c, d] {
            assert_eq!(store.load(&k, 2_000).await.unwrap(), None);
        }
        let page = store.scan(None, 100, 2_000).await.unwrap();
        assert!(page.records.is_empty(), "{page:?}");
        let report = store.verify().await.unwrap();
        assert_eq!(report.records, 0);
        assert_eq!(report.problems.len(), 5, "{report:?}");
    }

    /// A database file damaged at rest (truncated, zeroed, pages overwritten) gives errors or
    /// "no session", never a panic and never one session's data under another key.
    #[tokio::test]
    async fn damaged_database_files_never_panic_or_leak() {
        let path = temp_db("damaged");
        let mut records = Vec::new();
        {
            let store = SqliteStore::open(&url(&path)).await.unwrap();
            for i in 0..300 {
                let k = key();
                let mut r = Record::new(1_000, 1_000_000, 2_000_000);
                r.data
                    .set("who", &format!("\"{}{}\"", k.to_hex(), "x".repeat(i % 50)))
                    .unwrap();
                store.create(&k, &r).await.unwrap();
                records.push((k, r));
            }
        }
        // Closing the last connection checkpoints the WAL into the main file.
        assert!(!path.with_extension("db-wal").exists());
        let pristine = std::fs::read(&path).unwrap();
        assert!(pristine.len() > 8 * 4096, "{} bytes", pristine.len());

        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damages: Vec<(&str, Damage)> = vec![
            (
                "truncated",
                Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
            ),
            ("zeroed", Box::new(|b: &mut Vec<u8>| b.fill(0))),
            (
                "pages overwritten",
                Box::new(|b: &mut Vec<u8>| {
                    for page in [2usize, 5, 7] {
                        for (i, x) in b[page * 4096..(page + 1) * 4096].iter_mut().enumerate() {
                            *x = (i as u8).wrapping_mul(31);
                        }
                    }
                }),
            ),
            (
                "header garbage",
                Box::new(|b: &mut Vec<u8>| b[..100].fill(0xAB)),
            ),
        ];
        for (what, damage) in damages {
            let mut bytes = pristine.clone();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            let store = match SqliteStore::open(&url(&path)).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{what}: open failed: {e}");
                    assert!(matches!(e, Error::Config(_)), "{what}: {e}");
                    continue;
                }
            };
            let mut served = 0;
            for (k, r) in &records {
                // Errors and "no session" are both fine; someone else's data is not.
                if let Ok(Some(got)) = store.load(k, 2_000).await {
                    assert_eq!(&got, r, "{what}: wrong data under {k:?}");
                    served += 1;
                }
            }
            let _ = store.scan(None, 1000, 2_000).await;
            let _ = store.len(2_000).await;
            let _ = store.gc(2_000, 100).await;
            let report = store.verify().await;
            eprintln!(
                "{what}: {served} of {} served, verify: {report:?}",
                records.len()
            );
            if let Ok(report) = report {
                assert!(!report.is_clean() || served == records.len(), "{what}");
            }
            drop(store);
            let _ = std::fs::remove_file(path.with_extension("db-wal"));
            let _ = std::fs::remove_file(path.with_extension("db-shm"));
        }
    }

    /// The hot statements use the indexes, so their cost follows what they touch, not the
    /// table size (GC in particular walks only expired rows).
    #[tokio::test]
    async fn statements_use_the_indexes() {
        let path = temp_db("plans");
        drop(SqliteStore::open(&url(&path)).await.unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let gc = plan("DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE expires_at <= 5 LIMIT 10)");
        assert!(gc.contains("sessions_expires_at"), "{gc}");
        let by_user =
            plan("SELECT key FROM sessions WHERE user = 'ann' AND expires_at > 5 AND alias = 0");
        assert!(by_user.contains("sessions_user"), "{by_user}");
        let destroy_user = plan("DELETE FROM sessions WHERE user = 'ann'");
        assert!(destroy_user.contains("sessions_user"), "{destroy_user}");
        let load = plan("SELECT payload FROM sessions WHERE key = X'00' AND expires_at > 5");
        assert!(load.contains("INDEX sqlite_autoindex_sessions_1"), "{load}");
    }
}
