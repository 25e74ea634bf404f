//! [`PostgresStore`]: sessions in a PostgreSQL table, shared by any number of app servers.
//!
//! # Schema
//!
//! One table (default `sessionkit_sessions` in schema `public`; `?schema=` and `?table=` in the
//! URL choose others) with one row per session:
//!
//! | column | type | why |
//! | --- | --- | --- |
//! | `key` | `bytea` primary key | SHA-256 of the session ID, never the ID |
//! | `version` | `bigint` | compare-and-set: `UPDATE ... WHERE key = $1 AND version = $2` |
//! | `expires_at` | `bigint` (ms), indexed | liveness test of every statement; GC order |
//! | `last_access` | `bigint` (ms) | moved by `touch` without rewriting the payload |
//! | `absolute_expires_at` | `bigint` (ms) | caps what `touch` may set |
//! | `created` | `bigint` (ms) | order of `sessions_of` |
//! | `user_name` | `text`, indexed where not null | the user index |
//! | `alias` | `boolean` | a rotation alias (excluded from `len`, `scan`, the user index) |
//! | `payload` | `bytea` | [`Record::encode`] as last saved (the shared checksummed format) |
//!
//! `bytea` rather than `jsonb`: the payload is the one binary format every byte store shares, so
//! a record decodes the same whichever store it came from, and the checksum catches damage.
//! The columns next to it are what the SQL needs to compare, index and expire without decoding.
//! `last_access` and `expires_at` columns override the payload's copies on read, because `touch`
//! moves only them.
//!
//! The schema is created by versioned migrations recorded in `sessionkit_meta` (one row per
//! table: its schema version), under an advisory lock so that app servers starting together do
//! not race. A table whose recorded version is newer than this build knows is refused with a
//! clear error rather than used.
//!
//! # Expiry and GC
//!
//! Every statement tests `expires_at > now`, so an expired row is never served or written; `gc`
//! deletes expired rows in batches (`DELETE ... WHERE key IN (SELECT ... ORDER BY expires_at
//! LIMIT n FOR UPDATE SKIP LOCKED)`), using the `expires_at` index, so its cost follows the
//! number of expired rows and concurrent GCs on several app servers do not block each other.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use super::columns::Columns;
use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

mod tls;

const KIND: &str = "postgres";

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = 1;

/// Settings of a [`PostgresStore`] beyond its URL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Schema of the tables (default `public`; created if missing).
    pub schema: String,
    /// Name of the sessions table (default `sessionkit_sessions`).
    pub table: String,
    /// Maximum pooled connections (default 16).
    pub pool_size: usize,
    /// Limit for connecting and for waiting on a pooled connection (default 2 s).
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            table: "sessionkit_sessions".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Session store on PostgreSQL (tokio-postgres with a deadpool pool).
///
/// ```no_run
/// # async fn f() -> sessionkit::Result<()> {
/// use sessionkit::store::postgres::PostgresStore;
/// let store = PostgresStore::open("postgres://postgres@127.0.0.1/test?schema=myapp").await?;
/// # Ok(()) }
/// ```
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    sql: Sql,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// The statements, with the qualified table name filled in once.
struct Sql {
    table: String,
    load: String,
    create: String,
    save: String,
    touch: String,
    retire: String,
    make_alias: String,
    insert_new: String,
    destroy: String,
    gc: String,
    len: String,
    expired: String,
    scan: String,
    sessions_of: String,
    destroy_user: String,
}

const COLUMNS: &str =
    "key, version, expires_at, last_access, absolute_expires_at, created, user_name, alias, payload";

/// One bound statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// A record's row bound as `$1` to `$8`: every [`COLUMNS`] entry but `alias` (a literal in the
/// statements, which only write live rows this way); statements add their own from `$9`.
fn row_params<'a>(c: &'a Columns<'a>) -> [Param<'a>; 8] {
    [
        &c.key,
        &c.version,
        &c.expires_at,
        &c.last_access,
        &c.absolute_expires_at,
        &c.created,
        &c.user,
        &c.payload,
    ]
}

impl Sql {
    fn new(schema: &str, table: &str) -> Self {
        let t = format!("\"{schema}\".\"{table}\"");
        let insert = format!(
            "INSERT INTO {t} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8) \
             ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, \
             expires_at = EXCLUDED.expires_at, last_access = EXCLUDED.last_access, \
             absolute_expires_at = EXCLUDED.absolute_expires_at, created = EXCLUDED.created, \
             user_name = EXCLUDED.user_name, alias = false, payload = EXCLUDED.payload \
             WHERE {t}.expires_at <= $9"
        );
        Self {
            load: format!(
                "SELECT expires_at, last_access, payload FROM {t} WHERE key = $1 AND expires_at > $2"
            ),
            create: insert.clone(),
            save: format!(
                "UPDATE {t} SET version = $2, expires_at = $3, last_access = $4, \
                 absolute_expires_at = $5, created = $6, user_name = $7, payload = $8 \
                 WHERE key = $1 AND version = $9 AND expires_at > $10 AND NOT alias"
            ),
            touch: format!(
                "UPDATE {t} SET last_access = $2, expires_at = LEAST($3, absolute_expires_at) \
                 WHERE key = $1 AND expires_at > $2"
            ),
            retire: format!(
                "DELETE FROM {t} WHERE key = $1 AND version = $2 AND expires_at > $3 AND NOT alias"
            ),
            make_alias: format!(
                "UPDATE {t} SET version = 0, expires_at = $4, last_access = $3, \
                 absolute_expires_at = $4, user_name = NULL, alias = true, payload = $5 \
                 WHERE key = $1 AND version = $2 AND expires_at > $3 AND NOT alias"
            ),
            insert_new: insert,
            destroy: format!(
                "DELETE FROM {t} WHERE key = $1 RETURNING expires_at, last_access, payload"
            ),
            gc: format!(
                "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            len: format!("SELECT count(*) FROM {t} WHERE expires_at > $1 AND NOT alias"),
            // Counts what `gc` would delete, rotation aliases included; `expires_at` is indexed.
            expired: format!("SELECT count(*) FROM {t} WHERE expires_at <= $1"),
            scan: format!(
                "SELECT key, expires_at, last_access, payload FROM {t} \
                 WHERE key > $1 AND expires_at > $2 AND NOT alias ORDER BY key LIMIT $3"
            ),
            sessions_of: format!(
                "SELECT key, expires_at, last_access, payload FROM {t} \
                 WHERE user_name = $1 AND expires_at > $2 AND NOT alias ORDER BY created, key"
            ),
            destroy_user: format!("DELETE FROM {t} WHERE user_name = $1"),
            table: t,
        }
    }
}

fn check_ident(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid postgres {what} name {name:?}: use 1-63 of a-z, 0-9, '_' (not starting with a digit)"
        )))
    }
}

/// `e` and its sources, joined by ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

fn backend(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::backend(KIND, op, e)
}

impl PostgresStore {
    /// Connects to `postgres://user@host:port/db[?schema=S][&table=T]` (other query parameters
    /// go to tokio-postgres), creating or checking the schema. Fails with a clear error if the
    /// server does not answer or holds a newer schema.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, PostgresOptions::default()).await
    }

    /// Like [`PostgresStore::open`] with explicit options; `?schema=`/`?table=` in the URL win.
    pub async fn open_with(url: &str, mut options: PostgresOptions) -> Result<Self> {
        let given = url;
        // The TLS settings are read from URL parameters (sslmode, sslrootcert and the file it
        // names), so what goes wrong there is the URL's.
        let url_error = |e: Error| match e {
            Error::Config(reason) => Error::bad_url(given, reason),
            e => e,
        };
        // sslmode is sessionkit's to read: tokio-postgres knows no verify-ca or verify-full.
        let (url, params) =
            super::url::take_params(url, &["schema", "table", "sslmode", "sslrootcert"]);
        let [schema, table, sslmode, sslrootcert]: [Option<String>; 4] =
            params.try_into().expect("four parameters");
        if let Some(s) = schema {
            options.schema = s;
        }
        if let Some(t) = table {
            options.table = t;
        }
        let tls = tls::Tls::from_params(sslmode.as_deref(), sslrootcert).map_err(url_error)?;
        check_ident("schema", &options.schema)?;
        check_ident("table", &options.table)?;
        let mut pg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| Error::bad_url(given, format!("postgres URL: {e}")))?;
        pg.connect_timeout(options.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("sessionkit");
        }
        let manager = tls
            .manager(
                pg,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            )
            .map_err(url_error)?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Config(format!("postgres pool: {e}")))?;
        let store = Self {
            pool,
            sql: Sql::new(&options.schema, &options.table),
            schema: options.schema.clone(),
        };
        store.migrate(&options.table).await?;
        Ok(store)
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn client(&self, op: &'static str) -> Result<Object> {
        // The pool's error hides the cause (a refused certificate, a wrong password) a few
        // sources down; an operator needs it in the message.
        self.pool
            .get()
            .await
            .map_err(|e| Error::backend(KIND, op, error_chain(&e)))
    }

    /// Creates the tables (or checks them) under an advisory lock; see the module docs.
    async fn migrate(&self, table: &str) -> Result<()> {
        let mut client = self.client("migrate").await?;
        let tx = client.transaction().await.map_err(backend("migrate"))?;
        // One lock for all sessionkit migrations in this database: creating a schema is not safe
        // to run concurrently even with IF NOT EXISTS.
        tx.execute("SELECT pg_advisory_xact_lock(7315046420561727589)", &[])
            .await
            .map_err(backend("migrate"))?;
        let s = &self.schema;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\";
             CREATE TABLE IF NOT EXISTS \"{s}\".sessionkit_meta (
                 name text PRIMARY KEY,
                 version integer NOT NULL
             );"
        ))
        .await
        .map_err(backend("migrate"))?;
        let row = tx
            .query_opt(
                &format!("SELECT version FROM \"{s}\".sessionkit_meta WHERE name = $1"),
                &[&table],
            )
            .await
            .map_err(backend("migrate"))?;
        let current: i32 = row.map(|r| r.get(0)).unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(Error::Config(format!(
                "postgres table {} has schema version {current}, newer than this sessionkit \
                 understands ({SCHEMA_VERSION}); upgrade sessionkit or use another table",
                self.sql.table
            )));
        }
        let t = &self.sql.table;
        for version in current + 1..=SCHEMA_VERSION {
            let step = match version {
                1 => format!(
                    "CREATE TABLE {t} (
                         key bytea PRIMARY KEY,
                         version bigint NOT NULL,
                         expires_at bigint NOT NULL,
                         last_access bigint NOT NULL,
                         absolute_expires_at bigint NOT NULL,
                         created bigint NOT NULL,
                         user_name text,
                         alias boolean NOT NULL DEFAULT false,
                         payload bytea NOT NULL
                     );
                     CREATE INDEX \"{table}_expires_at\" ON {t} (expires_at);
                     CREATE INDEX \"{table}_user_name\" ON {t} (user_name)
                         WHERE user_name IS NOT NULL;"
                ),
                _ => unreachable!("every version up to SCHEMA_VERSION has a step"),
            };
            tx.batch_execute(&step).await.map_err(backend("migrate"))?;
        }
        if current < SCHEMA_VERSION {
            tx.execute(
                &format!(
                    "INSERT INTO \"{s}\".sessionkit_meta (name, version) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version"
                ),
                &[&table, &SCHEMA_VERSION],
            )
            .await
            .map_err(backend("migrate"))?;
        }
        tx.commit().await.map_err(backend("migrate"))
    }

    /// Runs one statement and returns the number of rows it changed.
    async fn exec(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let client = self.client(op).await?;
        let stmt = client.prepare_cached(sql).await.map_err(backend(op))?;
        client.execute(&stmt, params).await.map_err(backend(op))
    }

    async fn query(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let client = self.client(op).await?;
        let stmt = client.prepare_cached(sql).await.map_err(backend(op))?;
        client.query(&stmt, params).await.map_err(backend(op))
    }

    /// A record from (expires_at, last_access, payload) at `at`; `None` if corrupt.
    fn decode(key: &Key, row: &Row, at: usize) -> Option<Record> {
        let payload: &[u8] = row.get(at + 2);
        match Record::decode(key, payload) {
            Ok(mut r) => {
                r.expires_at = row.get(at);
                r.last_access = row.get(at + 1);
                Some(r)
            }
            Err(err) => {
                tracing::warn!(store = KIND, key = %key.short(), error = %err, "corrupt session record ignored");
                None
            }
        }
    }

    /// Rows of (key, expires_at, last_access, payload) as records, skipping corrupt ones.
    fn decode_rows(rows: &[Row]) -> Vec<(Key, Record)> {
        rows.iter()
            .filter_map(|row| {
                let k: &[u8] = row.get(0);
                let key = Key(k.try_into().ok()?);
                Self::decode(&key, row, 1).map(|r| (key, r))
            })
            .collect()
    }
}

/// Writes `bytes` as the payload of `key` with every other column saying "live" (far-off
/// deadlines, no user): the conformance suite's hook for planting corrupt records.
#[cfg(feature = "testkit")]
#[async_trait]
impl super::RawAccess for PostgresStore {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let now = crate::record::now_millis();
        let far = now + 3_600_000;
        let sql = format!(
            "INSERT INTO {t} ({COLUMNS}) VALUES ($1, 1, $2, $3, $2, $3, NULL, false, $4) \
             ON CONFLICT (key) DO UPDATE SET version = 1, expires_at = $2, last_access = $3, \
             absolute_expires_at = $2, created = $3, user_name = NULL, alias = false, payload = $4",
            t = self.sql.table
        );
        self.exec("put_raw", &sql, &[&&key.0[..], &far, &now, &bytes])
            .await
            .map(drop)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let rows = self
            .query("load", &self.sql.load, &[&&key.0[..], &now])
            .await?;
        Ok(rows.first().and_then(|row| Self::decode(key, row, 0)))
    }

    async fn create(&self, key: &Key, r: &Record) -> Result<()> {
        let c = Columns::of(key, r);
        let n = self
            .exec(
                "create",
                &self.sql.create,
                &[&row_params(&c)[..], &[&c.last_access as Param]].concat(),
            )
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::Exists)
        }
    }

    async fn save(&self, key: &Key, r: &Record, expected_version: u64) -> Result<()> {
        let c = Columns::of(key, r);
        let expected = expected_version as i64;
        let n = self
            .exec(
                "save",
                &self.sql.save,
                &[&row_params(&c)[..], &[&expected as Param, &c.last_access]].concat(),
            )
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::Conflict)
        }
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let n = self
            .exec(
                "touch",
                &self.sql.touch,
                &[&&key.0[..], &last_access, &expires_at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        r: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        let now = r.last_access;
        let expected = expected_version as i64;
        let mut client = self.client("rotate").await?;
        let tx = client.transaction().await.map_err(backend("rotate"))?;
        // The old row first: its row lock orders concurrent rotations and saves of one session.
        let n = match alias {
            None => {
                let stmt = tx
                    .prepare_cached(&self.sql.retire)
                    .await
                    .map_err(backend("rotate"))?;
                tx.execute(&stmt, &[&&old.0[..], &expected, &now]).await
            }
            Some(alias) => {
                let (until, payload) = (alias.expires_at, alias.encode(old));
                let stmt = tx
                    .prepare_cached(&self.sql.make_alias)
                    .await
                    .map_err(backend("rotate"))?;
                tx.execute(&stmt, &[&&old.0[..], &expected, &now, &until, &payload])
                    .await
            }
        }
        .map_err(backend("rotate"))?;
        if n != 1 {
            // Dropping the transaction rolls it back.
            return Err(Error::Conflict);
        }
        let c = Columns::of(new, r);
        let stmt = tx
            .prepare_cached(&self.sql.insert_new)
            .await
            .map_err(backend("rotate"))?;
        let n = tx
            .execute(&stmt, &[&row_params(&c)[..], &[&now as Param]].concat())
            .await
            .map_err(backend("rotate"))?;
        if n != 1 {
            return Err(Error::Exists);
        }
        tx.commit().await.map_err(backend("rotate"))
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        let rows = self
            .query("destroy", &self.sql.destroy, &[&&key.0[..]])
            .await?;
        Ok(rows.first().and_then(|row| Self::decode(key, row, 0)))
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let limit = limit.min(i64::MAX as usize) as i64;
        Ok(self.exec("gc", &self.sql.gc, &[&now, &limit]).await? as usize)
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        let rows = self.query("len", &self.sql.len, &[&now]).await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64)
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        let rows = self.query("expired", &self.sql.expired, &[&now]).await?;
        Ok(Some(
            rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64,
        ))
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = super::key_cursor(cursor)?
            .map(|k| k.0.to_vec())
            .unwrap_or_default();
        let limit = limit.clamp(1, 1 << 20);
        let rows = self
            .query("scan", &self.sql.scan, &[&after, &now, &(limit as i64)])
            .await?;
        let full = rows.len() >= limit;
        // The cursor is the last row read, even if that row was corrupt and skipped.
        let last = rows.last().map(|r| r.get::<_, &[u8]>(0).to_vec());
        let records = Self::decode_rows(&rows);
        let next = if full {
            last.and_then(|k| Some(Key(k.try_into().ok()?).to_hex()))
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let rows = self
            .query("sessions_of", &self.sql.sessions_of, &[&user, &now])
            .await?;
        Ok(Self::decode_rows(&rows))
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        self.exec("destroy_user", &self.sql.destroy_user, &[&user])
            .await
    }

    async fn ping(&self) -> Result<()> {
        let client = self.client("ping").await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(backend("ping"))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(check_ident("schema", "sk_test_1").is_ok());
        assert!(check_ident("schema", "1abc").is_err());
        assert!(check_ident("schema", "a\"b").is_err());
        assert!(check_ident("schema", "").is_err());
        assert!(check_ident("table", &"a".repeat(64)).is_err());
    }
}
