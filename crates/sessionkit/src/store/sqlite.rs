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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;

use super::{IntegrityReport, Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

const KIND: &str = "sqlite";

/// `PRAGMA application_id` of a sessionkit database ("SKS1").
const APPLICATION_ID: i32 = 0x534b_5331;

/// The schema version this build writes. `MIGRATIONS[i]` takes a database from version `i` to
/// `i + 1`.
pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the initial schema.
    "CREATE TABLE sessions (
        key BLOB NOT NULL PRIMARY KEY,
        version INTEGER NOT NULL,
        created INTEGER NOT NULL,
        last_access INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        absolute_expires_at INTEGER NOT NULL,
        user TEXT,
        alias INTEGER NOT NULL DEFAULT 0,
        payload BLOB NOT NULL
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    CREATE INDEX sessions_user ON sessions (user) WHERE user IS NOT NULL;",
];

/// Options parsed from the URL query.
#[derive(Clone, Debug)]
struct Options {
    synchronous_full: bool,
    pool: usize,
    busy_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            pool: 4,
            busy_timeout: Duration::from_millis(5000),
        }
    }
}

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

/// Parses `sqlite://path?query` into a path and options.
fn parse_url(url: &str) -> Result<(PathBuf, Options)> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::Config(format!("not an sqlite:// URL: {url:?}")))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::Config(format!(
            "sqlite URL {url:?} names no file; use sqlite://path.db or sqlite:///abs/path.db"
        )));
    }
    let mut options = Options::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Error::Config(format!("sqlite URL {url:?}: bad value for {k}: {v:?}"));
        match k {
            "synchronous" => {
                options.synchronous_full = match v.to_ascii_lowercase().as_str() {
                    "full" => true,
                    "normal" => false,
                    _ => return Err(bad()),
                }
            }
            "pool" => {
                options.pool = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(bad)?
            }
            "busy_timeout_ms" => {
                options.busy_timeout = Duration::from_millis(v.parse().map_err(|_| bad())?)
            }
            _ => {
                return Err(Error::Config(format!(
                    "sqlite URL {url:?}: unknown parameter {k:?} (known: synchronous, pool, busy_timeout_ms)"
                )))
            }
        }
    }
    Ok((PathBuf::from(path), options))
}

fn open_connection(path: &Path, options: &Options) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        Error::Config(format!(
            "cannot open SQLite database {} (does its directory exist?): {e}",
            path.display()
        ))
    })?;
    // Setting a pragma is the first read of the file header.
    let open_err = |e| open_error(path, e);
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    conn.pragma_update(
        None,
        "synchronous",
        if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        },
    )
    .map_err(open_err)?;
    Ok(conn)
}

/// Creates a missing database file readable by the owner only (SQLite gives its WAL and
/// shared-memory files the same mode). Failures are left to the open that follows to report.
fn create_private(path: &Path) {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let _ = o.open(path);
}

/// Maps an error met while opening: a file that is not SQLite or is damaged is the operator's
/// to fix (a clear [`Error::Config`]); anything else is a backend failure.
fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::Config(format!(
            "{} is not a sessionkit SQLite database: {e}",
            path.display()
        )),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => Error::Config(format!(
            "the SQLite database {} is damaged ({e}); restore it from a backup or move it \
             away to start with no sessions",
            path.display()
        )),
        _ => Error::backend(KIND, "open", e),
    }
}

/// Checks that `conn` is a sessionkit database (or an empty file) and brings its schema up to
/// [`SCHEMA_VERSION`].
fn prepare_schema(conn: &mut Connection, path: &Path) -> Result<()> {
    let not_ours = |why: String| {
        Error::Config(format!(
            "{} is not a sessionkit SQLite database: {why}",
            path.display()
        ))
    };
    // The first read of the header: a file that is not SQLite fails here (SQLITE_NOTADB).
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err(not_ours(format!(
            "application_id {app_id:#x} with {tables} schema objects"
        )));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    check_version(version, path)?;
    // WAL is a property of the file; switching needs no transaction and sticks.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::backend(
            KIND,
            "open",
            format!("could not switch {} to WAL (got {mode})", path.display()),
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("migrate"))?;
    // Another process may have migrated between our check and the write lock.
    let mut version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("migrate"))?;
    check_version(version, path)?;
    while version < SCHEMA_VERSION {
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(db("migrate"))?;
        version += 1;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {version};"
    ))
    .map_err(db("migrate"))?;
    tx.commit().map_err(db("migrate"))?;
    Ok(())
}

fn check_version(version: i64, path: &Path) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::Config(format!(
            "{} has sessionkit schema version {version}, newer than this build understands \
             ({SCHEMA_VERSION}); upgrade sessionkit",
            path.display()
        )));
    }
    if version < 0 {
        return Err(Error::Config(format!(
            "{} has an invalid schema version {version}",
            path.display()
        )));
    }
    Ok(())
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
fn put(conn: &Connection, key: &Key, record: &Record) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sessions
            (key, version, created, last_access, expires_at, absolute_expires_at, user, alias, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        &key.0[..],
        record.version as i64,
        record.created,
        record.last_access,
        record.expires_at,
        record.absolute_expires_at,
        record.user,
        record.successor().is_some(),
        record.encode(key),
    ])?;
    Ok(())
}

/// One write for the writer thread: given the connection inside the open group transaction
/// (or the reason the transaction could not begin), it runs and returns what to do once the
/// group's commit is known (`Some(message)` if the commit failed).
type WriteJob =
    Box<dyn FnOnce(std::result::Result<&mut Connection, &str>) -> WriteDone + Send + 'static>;
type WriteDone = Box<dyn FnOnce(Option<&str>) + Send + 'static>;

/// Most writes one group commit takes; later ones wait for the next group.
const MAX_GROUP: usize = 64;

/// The writer thread: group commits until every sender is gone.
fn run_writer(mut conn: Connection, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in group {
                job(Err(&msg))(None);
            }
            continue;
        }
        let done: Vec<WriteDone> = group.into_iter().map(|job| job(Ok(&mut conn))).collect();
        let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for d in done {
            d(commit_error.as_deref());
        }
    }
}

/// Runs one write inside a savepoint of the group transaction: kept if it succeeds, undone
/// (without touching the rest of the group) if it fails or panics.
fn in_savepoint<T, F>(conn: &mut Connection, op: &'static str, f: F) -> Result<T>
where
    F: FnOnce(&mut Connection) -> Result<T>,
{
    conn.execute_batch("SAVEPOINT write").map_err(db(op))?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *conn)))
        .unwrap_or_else(|_| Err(Error::backend(KIND, op, "the write panicked")));
    let end = if out.is_ok() {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    conn.execute_batch(end).map_err(db(op))?;
    out
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

    /// Runs `f` on the writer thread, inside a savepoint of the next group commit; answers once
    /// that commit is durable (or failed).
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let stopped = || Error::backend(KIND, op, "the SQLite writer thread has stopped");
        let (answer, outcome) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: WriteJob = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = answer.send(Err(Error::backend(KIND, op, e.to_owned())));
                    return Box::new(|_| {});
                }
            };
            let out = in_savepoint(conn, op, f);
            Box::new(move |commit_error| {
                let out = match (out, commit_error) {
                    // The write's own outcome stands if it failed; a good one needs the commit.
                    (Ok(_), Some(e)) => Err(Error::backend(KIND, op, e.to_owned())),
                    (out, _) => out,
                };
                let _ = answer.send(out);
            })
        });
        self.inner
            .writer
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
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
                .prepare_cached(
                    "INSERT INTO sessions
                        (key, version, created, last_access, expires_at, absolute_expires_at,
                         user, alias, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (key) DO UPDATE SET
                        version = excluded.version, created = excluded.created,
                        last_access = excluded.last_access, expires_at = excluded.expires_at,
                        absolute_expires_at = excluded.absolute_expires_at, user = excluded.user,
                        alias = excluded.alias, payload = excluded.payload
                     WHERE sessions.expires_at <= excluded.last_access",
                )
                .map_err(db("create"))?
                .execute(params![
                    &key.0[..],
                    record.version as i64,
                    record.created,
                    record.last_access,
                    record.expires_at,
                    record.absolute_expires_at,
                    record.user,
                    record.successor().is_some(),
                    record.encode(&key),
                ])
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
            let n = conn
                .prepare_cached(
                    "UPDATE sessions SET version = ?3, created = ?4, last_access = ?5,
                        expires_at = ?6, absolute_expires_at = ?7, user = ?8, alias = ?9,
                        payload = ?10
                     WHERE key = ?1 AND version = ?2 AND expires_at > ?5 AND alias = 0",
                )
                .map_err(db("save"))?
                .execute(params![
                    &key.0[..],
                    expected_version as i64,
                    record.version as i64,
                    record.created,
                    record.last_access,
                    record.expires_at,
                    record.absolute_expires_at,
                    record.user,
                    record.successor().is_some(),
                    record.encode(&key),
                ])
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
        grace_until: Option<Millis>,
    ) -> Result<()> {
        let (old, new, record) = (*old, *new, record.clone());
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
            match grace_until {
                Some(until) => {
                    let mut alias = Record::new(now, until, until);
                    alias.extra_mut().successor = Some(new);
                    put(tx, &old, &alias).map_err(db("rotate"))?;
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

    async fn destroy(&self, key: &Key) -> Result<bool> {
        let key = *key;
        self.write("destroy", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE key = ?1")
                .map_err(db("destroy"))?
                .execute(params![&key.0[..]])
                .map_err(db("destroy"))?;
            Ok(n > 0)
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
impl crate::testkit::RawAccess for SqliteStore {
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

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sessionkit-sqlite-unit-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("s.db")
    }

    fn url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    fn key() -> Key {
        SessionId::generate().unwrap().key()
    }

    #[test]
    fn url_parsing() {
        let (p, o) = parse_url("sqlite://data/s.db").unwrap();
        assert_eq!(p, PathBuf::from("data/s.db"));
        assert!(o.synchronous_full);
        let (p, o) =
            parse_url("sqlite:///tmp/x.db?synchronous=normal&pool=2&busy_timeout_ms=10").unwrap();
        assert_eq!(p, PathBuf::from("/tmp/x.db"));
        assert!(!o.synchronous_full);
        assert_eq!(o.pool, 2);
        assert_eq!(o.busy_timeout, Duration::from_millis(10));
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("sqlite://x.db?pool=0").is_err());
        assert!(parse_url("sqlite://x.db?nope=1").is_err());
    }

    /// Many writes land in one group commit; a stale one among them fails alone and the
    /// others (including a rotation) are kept, each with its own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_keeps_each_writes_own_outcome() {
        let store = SqliteStore::open(&url(&temp_db("group"))).await.unwrap();
        let now = crate::record::now_millis();
        let keys: Vec<Key> = (0..40).map(|_| key()).collect();
        for k in &keys {
            store
                .create(k, &Record::new(now, now + 60_000, now + 60_000))
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (store, k) = (store.clone(), *k);
            tasks.push(tokio::spawn(async move {
                let mut r = Record::new(now, now + 60_000, now + 60_000);
                r.data.set("i", &i.to_string()).unwrap();
                r.version = 2;
                match i % 4 {
                    // Stale: expects version 7, the row is at 1.
                    0 => store.save(&k, &r, 7).await,
                    1 => store.rotate(&k, 1, &key(), &r, None).await,
                    _ => store.save(&k, &r, 1).await,
                }
            }));
        }
        let outcomes: Vec<Result<()>> = futures_join(tasks).await;
        for (i, (k, out)) in keys.iter().zip(&outcomes).enumerate() {
            let row = store.load(k, now).await.unwrap();
            match i % 4 {
                0 => {
                    assert!(matches!(out, Err(Error::Conflict)), "{i}: {out:?}");
                    assert_eq!(
                        row.unwrap().version,
                        1,
                        "{i}: a failed write changed the row"
                    );
                }
                1 => {
                    assert!(out.is_ok(), "{i}: {out:?}");
                    assert!(row.is_none(), "{i}: the rotated-away key is still live");
                }
                _ => {
                    assert!(out.is_ok(), "{i}: {out:?}");
                    let row = row.unwrap();
                    assert_eq!(row.version, 2);
                    assert_eq!(row.data.get("i"), Some(i.to_string().as_str()));
                }
            }
        }
        assert_eq!(store.len(now).await.unwrap(), 40);
    }

    async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
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

    #[tokio::test]
    async fn foreign_newer_and_garbage_files_are_clear_errors() {
        // Not SQLite at all.
        let path = temp_db("garbage");
        std::fs::write(
            &path,
            b"this is not a database, just some text. ".repeat(200),
        )
        .unwrap();
        let err = SqliteStore::open(&url(&path)).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("not a sessionkit"), "{err}");

        // An SQLite database of some other application.
        let path = temp_db("foreign");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);")
            .unwrap();
        let err = SqliteStore::open(&url(&path)).await.unwrap_err();
        assert!(err.to_string().contains("not a sessionkit"), "{err}");

        // A sessionkit database from the future.
        let path = temp_db("newer");
        drop(SqliteStore::open(&url(&path)).await.unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let err = SqliteStore::open(&url(&path)).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");

        // An empty file is a fresh database.
        let path = temp_db("empty");
        std::fs::write(&path, b"").unwrap();
        let store = SqliteStore::open(&url(&path)).await.unwrap();
        store.ping().await.unwrap();
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

    #[tokio::test]
    async fn reopen_keeps_sessions_and_migration_is_idempotent() {
        let path = temp_db("reopen");
        let k = key();
        {
            let store = SqliteStore::open(&url(&path)).await.unwrap();
            let mut r = Record::new(1_000, 10_000, 20_000);
            r.user = Some("ann".into());
            store.create(&k, &r).await.unwrap();
            r.version = 2;
            store.save(&k, &r, 1).await.unwrap();
            assert!(store.touch(&k, 3_000, 30_000).await.unwrap());
        }
        let store = SqliteStore::open(&url(&path)).await.unwrap();
        let r = store.load(&k, 3_500).await.unwrap().unwrap();
        assert_eq!(r.version, 2);
        assert_eq!(r.last_access, 3_000);
        // touch is clamped to the absolute deadline.
        assert_eq!(r.expires_at, 20_000);
        assert_eq!(store.sessions_of("ann", 3_500).await.unwrap().len(), 1);
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::metadata(&path).unwrap().permissions();
            assert_eq!(perms.mode() & 0o777, 0o600);
        }
    }
}
