//! The on-disk side of a [`SqliteStore`](super::SqliteStore): its URL and options, opening a
//! connection with the right pragmas, and checking and migrating the schema of a database file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{db, KIND};
use crate::error::{Error, Result};

/// `PRAGMA application_id` of a sessionkit database ("SKS1").
pub(super) const APPLICATION_ID: i32 = 0x534b_5331;

/// The schema version this build writes. `MIGRATIONS[i]` takes a database from version `i` to
/// `i + 1`.
pub const SCHEMA_VERSION: i64 = 1;

pub(super) const MIGRATIONS: &[&str] = &[
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
pub(super) struct Options {
    pub(super) synchronous_full: bool,
    pub(super) pool: usize,
    pub(super) busy_timeout: Duration,
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

/// Parses `sqlite://path?query` into a path and options.
pub(super) fn parse_url(url: &str) -> Result<(PathBuf, Options)> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| Error::bad_url(url, "not an sqlite:// URL"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::bad_url(
            url,
            "sqlite URL names no file; use sqlite://path.db or sqlite:///abs/path.db",
        ));
    }
    let mut options = Options::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Error::bad_url(url, format!("sqlite URL: bad value for {k}: {v:?}"));
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
                return Err(Error::bad_url(
                    url,
                    format!(
                        "sqlite URL: unknown parameter {k:?} (known: synchronous, pool, \
                         busy_timeout_ms)"
                    ),
                ))
            }
        }
    }
    Ok((PathBuf::from(path), options))
}

pub(super) fn open_connection(path: &Path, options: &Options) -> Result<Connection> {
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
pub(super) fn create_private(path: &Path) {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let _ = o.open(path);
}

/// Maps an error met while opening: a file that is not SQLite or is damaged is the operator's
/// to fix (a clear [`Error::Config`]); anything else is a backend failure.
pub(super) fn open_error(path: &Path, e: rusqlite::Error) -> Error {
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
pub(super) fn prepare_schema(conn: &mut Connection, path: &Path) -> Result<()> {
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

pub(super) fn check_version(version: i64, path: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{key, temp_db, url};
    use super::super::SqliteStore;
    use super::*;
    use crate::record::Record;
    use crate::store::Store;

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
