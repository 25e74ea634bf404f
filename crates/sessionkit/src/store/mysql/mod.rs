//! [`MySqlStore`]: sessions in a MySQL or MariaDB (InnoDB) table, shared by any number of app
//! servers.
//!
//! # Schema
//!
//! One table in the URL's database (default `sessionkit_sessions`; `?table=` chooses another),
//! `ENGINE=InnoDB`, `utf8mb4` with binary collation, one row per session:
//!
//! | column | type | why |
//! | --- | --- | --- |
//! | `session_key` | `BINARY(32)` primary key | SHA-256 of the session ID, never the ID |
//! | `version` | `BIGINT` | compare-and-set: `UPDATE ... WHERE session_key = ? AND version = ?` |
//! | `expires_at` | `BIGINT` (ms), indexed | liveness test of every statement; GC order |
//! | `last_access` | `BIGINT` (ms) | moved by `touch` without rewriting the payload |
//! | `absolute_expires_at` | `BIGINT` (ms) | caps what `touch` may set |
//! | `created` | `BIGINT` (ms) | order of `sessions_of` |
//! | `user_name` | `TEXT` (`utf8mb4_bin`) | the user, compared exactly |
//! | `user_hash` | `BINARY(32)`, indexed | SHA-256 of the user: the user index, whatever the name's length |
//! | `alias` | `BOOLEAN` | a rotation alias (excluded from `len`, `scan`, the user index) |
//! | `payload` | `LONGBLOB` | [`Record::encode`] as last saved (the shared checksummed format) |
//!
//! The table is created by versioned migrations recorded in `sessionkit_meta` (one row per
//! table: its schema version) under a named lock (`GET_LOCK`), so that app servers starting
//! together do not race. A table whose recorded version is newer than this build knows, a
//! table of that name that sessionkit did not create, and a recorded table that lacks
//! sessionkit's columns are refused with a clear error rather than used.
//!
//! # Locking, expiry and GC
//!
//! Every connection runs at `READ COMMITTED` (InnoDB then takes no gap locks: a statement
//! locks only the rows it changes) with strict SQL mode and `innodb_lock_wait_timeout` /
//! `lock_wait_timeout` set from [`MySqlOptions::lock_wait_timeout`], so a blocked statement
//! fails instead of waiting for the server's default of hours. With binary logging on, the
//! server's `binlog_format` must be `ROW` or `MIXED` (MariaDB's default) for that isolation
//! level.
//!
//! Every statement tests `expires_at > now`, so an expired row is never served or written; `gc`
//! deletes expired rows in batches (`DELETE ... WHERE expires_at <= ? ORDER BY expires_at LIMIT
//! n`) along the `expires_at` index, so its cost follows the number of expired rows, each batch
//! holds row locks only on what it deletes, and logins inserting meanwhile never wait for it.
//!
//! # Connections
//!
//! [`mysql_async`] with its own pool, over TCP (or a Unix socket with its `socket` URL
//! parameter). TLS is not built in: use a trusted network, or a local socket or TLS tunnel.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, Row, TxOpts, Value};
use sha2::{Digest, Sha256};

use super::columns::Columns;
use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

mod schema;

use schema::Sql;
pub use schema::SCHEMA_VERSION;

const KIND: &str = "mysql";

/// The server's error code for a transaction chosen as a deadlock victim (rolled back).
const ER_LOCK_DEADLOCK: u16 = 1213;

/// How long a pooled connection may idle before it is closed (unless the URL's
/// `inactive_connection_ttl` says otherwise).
const IDLE_TTL: Duration = Duration::from_secs(60);

/// Settings of a [`MySqlStore`] beyond its URL.
#[derive(Clone, Debug)]
pub struct MySqlOptions {
    /// Name of the sessions table (default `sessionkit_sessions`).
    pub table: String,
    /// Maximum pooled connections (default 16).
    pub pool_size: usize,
    /// Limit for connecting and for waiting on a pooled connection (default 2 s).
    pub connect_timeout: Duration,
    /// How long the server lets a statement wait for a row or table lock before failing it
    /// (default 5 s; whole seconds, at least 1).
    pub lock_wait_timeout: Duration,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        Self {
            table: "sessionkit_sessions".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            lock_wait_timeout: Duration::from_secs(5),
        }
    }
}

/// Session store on MySQL 8 or MariaDB 10.6+ (mysql_async with its pool).
///
/// ```no_run
/// # async fn f() -> sessionkit::Result<()> {
/// use sessionkit::store::mysql::MySqlStore;
/// let store = MySqlStore::open("mysql://app:secret@127.0.0.1:3306/app?table=sessions").await?;
/// # Ok(()) }
/// ```
pub struct MySqlStore {
    pool: Pool,
    sql: Sql,
    connect_timeout: Duration,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

fn backend(op: &'static str) -> impl FnOnce(mysql_async::Error) -> Error {
    move |e| Error::backend(KIND, op, e)
}

/// Column `i` of `row` as a `T`; a missing or mistyped column is a backend error.
fn column<T: FromValue>(row: &Row, i: usize, op: &'static str) -> Result<T> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Error::backend(KIND, op, format!("column {i}: {e}"))),
        None => Err(Error::backend(KIND, op, format!("column {i} missing"))),
    }
}

/// Column `i` of `row` as bytes, without copying.
fn bytes_at(row: &Row, i: usize) -> Option<&[u8]> {
    match row.as_ref(i)? {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

/// SHA-256 of a user name: the indexed column of the user index.
fn user_hash(user: &str) -> Vec<u8> {
    Sha256::digest(user.as_bytes()).to_vec()
}

/// A record's row in [`COLUMNS`] order, less `alias` (a literal in the statements, which only
/// write live rows this way).
fn row_values(c: Columns<'_>) -> Vec<Value> {
    vec![
        c.key.into(),
        c.version.into(),
        c.expires_at.into(),
        c.last_access.into(),
        c.absolute_expires_at.into(),
        c.created.into(),
        c.user.into(),
        c.user.map(user_hash).into(),
        c.payload.into(),
    ]
}

impl MySqlStore {
    /// Connects to `mysql://user[:password]@host[:3306]/db[?table=T]` (other query parameters
    /// go to mysql_async, which refuses ones it does not know), creating or checking the table.
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`] for a URL that cannot be used as written (no database, a bad table
    /// name or parameter); [`Error::Config`] for a table that is foreign or of a newer schema;
    /// a backend error when the server does not answer.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, MySqlOptions::default()).await
    }

    /// Like [`MySqlStore::open`] with explicit options; `?table=` in the URL wins.
    ///
    /// # Errors
    ///
    /// As [`MySqlStore::open`].
    pub async fn open_with(url: &str, mut options: MySqlOptions) -> Result<Self> {
        let given = url;
        let (url, params) = super::url::take_params(url, &["table"]);
        if let Some(Some(t)) = params.into_iter().next() {
            options.table = t;
        }
        schema::check_table(&options.table).map_err(|e| match e {
            Error::Config(reason) => Error::bad_url(given, reason),
            e => e,
        })?;
        let opts =
            Opts::from_url(&url).map_err(|e| Error::bad_url(given, format!("mysql URL: {e}")))?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(Error::bad_url(
                given,
                "mysql URL names no database: use mysql://user@host:3306/DATABASE",
            ));
        }
        let locks = options.lock_wait_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let constraints =
            PoolConstraints::new(0, options.pool_size.max(1)).expect("0 <= max and max >= 1");
        let mut pool_opts = opts.pool_opts().clone();
        if pool_opts.inactive_connection_ttl().is_zero() {
            // Zero (mysql_async's default) keeps no more than the pool's minimum, 0 here, idle:
            // every call would connect anew. Idle connections close after a minute instead.
            pool_opts = pool_opts.with_inactive_connection_ttl(IDLE_TTL);
        }
        let pool_opts = pool_opts
            .with_constraints(constraints)
            // Nothing of a session's state outlives a call but what `setup` sets again; a
            // reset per checkout would cost a round trip and the prepared statements.
            .with_reset_connection(false);
        let builder = OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            .client_found_rows(false)
            .setup(vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
                format!(
                    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', \
                     innodb_lock_wait_timeout = {locks}, lock_wait_timeout = {locks}"
                ),
            ]);
        let store = Self {
            pool: Pool::new(builder),
            sql: Sql::new(&options.table),
            connect_timeout: options.connect_timeout,
        };
        let mut conn = store.conn("migrate").await?;
        schema::migrate(&mut conn, &options.table, &store.sql).await?;
        Ok(store)
    }

    /// A pooled connection, within the connect timeout.
    async fn conn(&self, op: &'static str) -> Result<Conn> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Error::backend(KIND, op, e)),
            Err(_) => Err(Error::backend(
                KIND,
                op,
                format!("no connection within {:?}", self.connect_timeout),
            )),
        }
    }

    /// Runs one statement and returns the number of rows it changed.
    async fn exec(&self, op: &'static str, sql: &str, params: Vec<Value>) -> Result<u64> {
        let mut conn = self.conn(op).await?;
        conn.exec_drop(sql, params).await.map_err(backend(op))?;
        Ok(conn.affected_rows())
    }

    async fn query(&self, op: &'static str, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let mut conn = self.conn(op).await?;
        conn.exec(sql, params).await.map_err(backend(op))
    }

    /// True if `sql` (a `SELECT 1 ...`) finds a row.
    async fn exists(&self, op: &'static str, sql: &str, params: Vec<Value>) -> Result<bool> {
        Ok(!self.query(op, sql, params).await?.is_empty())
    }

    /// A single `COUNT(*)`.
    async fn count(&self, op: &'static str, sql: &str, now: Millis) -> Result<u64> {
        let rows = self.query(op, sql, vec![now.into()]).await?;
        match rows.first() {
            Some(row) => Ok(column::<i64>(row, 0, op)?.max(0) as u64),
            None => Ok(0),
        }
    }

    /// A record from (expires_at, last_access, payload) at `at`; `None` if corrupt.
    fn decode(key: &Key, row: &Row, at: usize) -> Option<Record> {
        let decoded = bytes_at(row, at + 2)
            .ok_or_else(|| Error::Corrupt("payload is not bytes".into()))
            .and_then(|payload| Record::decode(key, payload))
            .and_then(|mut r| {
                r.expires_at = column(row, at, "load")?;
                r.last_access = column(row, at + 1, "load")?;
                Ok(r)
            });
        match decoded {
            Ok(r) => Some(r),
            Err(err) => {
                tracing::warn!(store = KIND, key = %key.short(), error = %err, "corrupt session record ignored");
                None
            }
        }
    }

    /// Rows of (session_key, expires_at, last_access, payload) as records, skipping corrupt
    /// ones.
    fn decode_rows(rows: &[Row]) -> Vec<(Key, Record)> {
        rows.iter()
            .filter_map(|row| {
                let key = Key(bytes_at(row, 0)?.try_into().ok()?);
                Self::decode(&key, row, 1).map(|r| (key, r))
            })
            .collect()
    }

    /// One attempt of `take`: the row locked, read and deleted in one transaction (MySQL has
    /// no `DELETE ... RETURNING`).
    async fn take_once(
        &self,
        conn: &mut Conn,
        key: &Key,
    ) -> std::result::Result<Option<Record>, mysql_async::Error> {
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let k = Value::from(&key.0[..]);
        let rows: Vec<Row> = tx.exec(&self.sql.take, vec![k.clone()]).await?;
        tx.exec_drop(&self.sql.destroy, vec![k]).await?;
        tx.commit().await?;
        Ok(rows.first().and_then(|row| Self::decode(key, row, 0)))
    }

    /// The two steps of `rotate` inside `tx`; the caller commits or rolls back.
    async fn rotate_in(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        old: &Key,
        expected_version: u64,
        new: &Key,
        r: &Record,
        alias: Option<&Record>,
    ) -> std::result::Result<Result<()>, mysql_async::Error> {
        let now = r.last_access;
        let (key, expected) = (
            Value::from(&old.0[..]),
            Value::from(expected_version as i64),
        );
        // The old row first: its row lock orders concurrent rotations and saves of one session.
        match alias {
            None => {
                tx.exec_drop(&self.sql.retire, vec![key, expected, now.into()])
                    .await?
            }
            Some(alias) => {
                let (until, payload) = (alias.expires_at, alias.encode(old));
                let params: Vec<Value> = vec![
                    until.into(),
                    now.into(),
                    until.into(),
                    payload.into(),
                    key,
                    expected,
                    now.into(),
                ];
                tx.exec_drop(&self.sql.make_alias, params).await?
            }
        }
        if tx.affected_rows() != 1 {
            return Ok(Err(Error::Conflict));
        }
        tx.exec_drop(&self.sql.create, row_values(Columns::of(new, r)))
            .await?;
        Ok(if tx.affected_rows() == 0 {
            Err(Error::Exists)
        } else {
            Ok(())
        })
    }
}

/// Writes `bytes` as the payload of `key` with every other column saying "live" (far-off
/// deadlines, no user): the conformance suite's hook for planting corrupt records.
#[cfg(feature = "testkit")]
#[async_trait]
impl super::RawAccess for MySqlStore {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let now = crate::record::now_millis();
        let far = now + 3_600_000;
        let sql = format!(
            "REPLACE INTO {t} ({c}) VALUES (?, 1, ?, ?, ?, ?, NULL, NULL, FALSE, ?)",
            c = schema::COLUMNS,
            t = self.sql.table
        );
        let params = vec![
            Value::from(&key.0[..]),
            far.into(),
            now.into(),
            far.into(),
            now.into(),
            bytes.into(),
        ];
        self.exec("put_raw", &sql, params).await.map(drop)
    }
}

#[async_trait]
impl Store for MySqlStore {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let rows = self
            .query(
                "load",
                &self.sql.load,
                vec![(&key.0[..]).into(), now.into()],
            )
            .await?;
        Ok(rows.first().and_then(|row| Self::decode(key, row, 0)))
    }

    async fn create(&self, key: &Key, r: &Record) -> Result<()> {
        // 1: inserted; 2: an expired row replaced; 0: a live row left as it was.
        match self
            .exec("create", &self.sql.create, row_values(Columns::of(key, r)))
            .await?
        {
            0 => Err(Error::Exists),
            _ => Ok(()),
        }
    }

    async fn save(&self, key: &Key, r: &Record, expected_version: u64) -> Result<()> {
        let mut params = row_values(Columns::of(key, r));
        let key_value = params.remove(0);
        let expected = Value::from(expected_version as i64);
        params.extend([key_value.clone(), expected.clone(), r.last_access.into()]);
        let mut conn = self.conn("save").await?;
        match conn.exec_drop(&self.sql.save, params).await {
            Ok(()) if conn.affected_rows() == 1 => return Ok(()),
            Ok(()) => {}
            // The server rolled the statement back (it lost a lock race with a concurrent
            // `take`): nothing was written, so it is a lost compare-and-set like any other.
            Err(mysql_async::Error::Server(e)) if e.code == ER_LOCK_DEADLOCK => {
                return Err(Error::Conflict)
            }
            Err(e) => return Err(Error::backend(KIND, "save", e)),
        }
        drop(conn);
        // 0 rows: no live row at that version, or (a save that keeps the version) the row
        // already held exactly these values, which the server does not count as changed.
        let unchanged = r.version == expected_version
            && self
                .exists(
                    "save",
                    &self.sql.live_at,
                    vec![key_value, expected, r.last_access.into()],
                )
                .await?;
        if unchanged {
            Ok(())
        } else {
            Err(Error::Conflict)
        }
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let k = Value::from(&key.0[..]);
        let params = vec![
            last_access.into(),
            expires_at.into(),
            k.clone(),
            last_access.into(),
        ];
        if self.exec("touch", &self.sql.touch, params).await? == 1 {
            return Ok(true);
        }
        // 0 rows: no live row, or one that already had these deadlines.
        self.exists("touch", &self.sql.live, vec![k, last_access.into()])
            .await
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        r: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        let mut conn = self.conn("rotate").await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(backend("rotate"))?;
        let outcome = match self
            .rotate_in(&mut tx, old, expected_version, new, r, alias)
            .await
        {
            Ok(outcome) => outcome,
            // A deadlock victim was rolled back by the server: nothing moved, try again.
            Err(mysql_async::Error::Server(e)) if e.code == ER_LOCK_DEADLOCK => {
                return Err(Error::Conflict)
            }
            Err(e) => return Err(Error::backend(KIND, "rotate", e)),
        };
        match outcome {
            Ok(()) => tx.commit().await.map_err(backend("rotate")),
            Err(e) => {
                tx.rollback().await.map_err(backend("rotate"))?;
                Err(e)
            }
        }
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        // A deadlock victim was rolled back whole: nothing was taken, so try again.
        for _ in 0..8 {
            let mut conn = self.conn("destroy").await?;
            match self.take_once(&mut conn, key).await {
                Err(mysql_async::Error::Server(e)) if e.code == ER_LOCK_DEADLOCK => continue,
                other => return other.map_err(backend("destroy")),
            }
        }
        Err(Error::backend(
            KIND,
            "destroy",
            "deadlocked 8 times in a row",
        ))
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let limit = limit.min(i64::MAX as usize) as u64;
        let n = self
            .exec("gc", &self.sql.gc, vec![now.into(), limit.into()])
            .await?;
        Ok(n as usize)
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        self.count("len", &self.sql.len, now).await
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        self.count("expired", &self.sql.expired, now)
            .await
            .map(Some)
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = super::key_cursor(cursor)?
            .map(|k| k.0.to_vec())
            .unwrap_or_default();
        let limit = limit.clamp(1, 1 << 20);
        let rows = self
            .query(
                "scan",
                &self.sql.scan,
                vec![after.into(), now.into(), (limit as u64).into()],
            )
            .await?;
        let full = rows.len() >= limit;
        // The cursor is the last row read, even if that row was corrupt and skipped.
        let last = rows
            .last()
            .and_then(|r| Some(Key(bytes_at(r, 0)?.try_into().ok()?)));
        let records = Self::decode_rows(&rows);
        let next = if full { last.map(|k| k.to_hex()) } else { None };
        Ok(Page { records, next })
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let params = vec![user_hash(user).into(), user.into(), now.into()];
        let rows = self
            .query("sessions_of", &self.sql.sessions_of, params)
            .await?;
        Ok(Self::decode_rows(&rows))
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        let params = vec![user_hash(user).into(), user.into()];
        self.exec("destroy_user", &self.sql.destroy_user, params)
            .await
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn("ping").await?;
        conn.ping().await.map_err(backend("ping"))
    }
}
