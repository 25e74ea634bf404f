//! The MySQL/MariaDB side of [`MySqlStore`](super::MySqlStore) that is not a store operation:
//! the statements (with the table name filled in once), table name checks, and the versioned
//! migration that creates the table or refuses one that is foreign or newer.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{backend, column, KIND};
use crate::error::{Error, Result};

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = 1;

/// The table that records, per sessions table, the schema version sessionkit created.
pub(super) const META_TABLE: &str = "sessionkit_meta";

/// Every column of the sessions table, in the order [`super::row_values`] binds them, with
/// `alias` (a literal in the statements that write rows) before `payload`.
pub(super) const COLUMNS: &str = "session_key, version, expires_at, last_access, \
     absolute_expires_at, created, user_name, user_hash, alias, payload";

/// The columns a sessionkit table of [`SCHEMA_VERSION`] has; `open` refuses a table without them.
const EXPECTED_COLUMNS: [&str; 10] = [
    "session_key",
    "version",
    "expires_at",
    "last_access",
    "absolute_expires_at",
    "created",
    "user_name",
    "user_hash",
    "alias",
    "payload",
];

/// The statements, with the quoted table name filled in once.
pub(super) struct Sql {
    /// The quoted table name.
    pub(super) table: String,
    pub(super) load: String,
    /// Insert if absent or expired (also the second step of `rotate`).
    pub(super) create: String,
    pub(super) save: String,
    pub(super) touch: String,
    /// Is the row live? (Tells "no row" from "row already had these values" after `touch`.)
    pub(super) live: String,
    /// Is the row live at this version? (The same for `save`.)
    pub(super) live_at: String,
    pub(super) retire: String,
    pub(super) make_alias: String,
    pub(super) destroy: String,
    pub(super) take: String,
    pub(super) gc: String,
    pub(super) len: String,
    pub(super) expired: String,
    pub(super) scan: String,
    pub(super) sessions_of: String,
    pub(super) destroy_user: String,
}

impl Sql {
    pub(super) fn new(table: &str) -> Self {
        let t = format!("`{table}`");
        // An existing row is replaced only if it has expired by the new row's `last_access`
        // (the caller's "now"). MySQL assigns left to right and later assignments see earlier
        // ones, so `expires_at`, which every condition reads, is assigned last. A live row is
        // left unchanged, which the server reports as 0 rows affected (1 for an insert, 2 for a
        // replaced row): `CLIENT_FOUND_ROWS` stays off for this.
        let replace_expired = |c: &str| {
            let new = if c == "alias" {
                "FALSE".to_owned()
            } else {
                format!("VALUES({c})")
            };
            format!("{c} = IF(expires_at <= VALUES(last_access), {new}, {c})")
        };
        let updates = EXPECTED_COLUMNS
            .iter()
            .filter(|c| !matches!(**c, "session_key" | "expires_at"))
            .chain(&["expires_at"])
            .map(|c| replace_expired(c))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            load: format!(
                "SELECT expires_at, last_access, payload FROM {t} \
                 WHERE session_key = ? AND expires_at > ?"
            ),
            create: format!(
                "INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, FALSE, ?) \
                 ON DUPLICATE KEY UPDATE {updates}"
            ),
            save: format!(
                "UPDATE {t} SET version = ?, expires_at = ?, last_access = ?, \
                 absolute_expires_at = ?, created = ?, user_name = ?, user_hash = ?, payload = ? \
                 WHERE session_key = ? AND version = ? AND expires_at > ? AND NOT alias"
            ),
            touch: format!(
                "UPDATE {t} SET last_access = ?, expires_at = LEAST(?, absolute_expires_at) \
                 WHERE session_key = ? AND expires_at > ?"
            ),
            live: format!("SELECT 1 FROM {t} WHERE session_key = ? AND expires_at > ?"),
            live_at: format!(
                "SELECT 1 FROM {t} \
                 WHERE session_key = ? AND version = ? AND expires_at > ? AND NOT alias"
            ),
            retire: format!(
                "DELETE FROM {t} \
                 WHERE session_key = ? AND version = ? AND expires_at > ? AND NOT alias"
            ),
            make_alias: format!(
                "UPDATE {t} SET version = 0, expires_at = ?, last_access = ?, \
                 absolute_expires_at = ?, user_name = NULL, user_hash = NULL, alias = TRUE, \
                 payload = ? WHERE session_key = ? AND version = ? AND expires_at > ? AND NOT alias"
            ),
            destroy: format!("DELETE FROM {t} WHERE session_key = ?"),
            // Locks the row for the `destroy` that follows in the same transaction (MySQL has no
            // `DELETE ... RETURNING`), so nothing can rotate it in between.
            take: format!(
                "SELECT expires_at, last_access, payload FROM {t} WHERE session_key = ? FOR UPDATE"
            ),
            // Under READ COMMITTED (set on every connection) this locks only the rows it
            // deletes: no gap locks, so logins inserting meanwhile never wait for it.
            gc: format!("DELETE FROM {t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"),
            len: format!("SELECT COUNT(*) FROM {t} WHERE expires_at > ? AND NOT alias"),
            // Counts what `gc` would delete, rotation aliases included; `expires_at` is indexed.
            expired: format!("SELECT COUNT(*) FROM {t} WHERE expires_at <= ?"),
            scan: format!(
                "SELECT session_key, expires_at, last_access, payload FROM {t} \
                 WHERE session_key > ? AND expires_at > ? AND NOT alias \
                 ORDER BY session_key LIMIT ?"
            ),
            sessions_of: format!(
                "SELECT session_key, expires_at, last_access, payload FROM {t} \
                 WHERE user_hash = ? AND user_name = ? AND expires_at > ? AND NOT alias \
                 ORDER BY created, session_key"
            ),
            destroy_user: format!("DELETE FROM {t} WHERE user_hash = ? AND user_name = ?"),
            table: t,
        }
    }
}

/// Checks a table name: 1-64 of `a-z`, `0-9`, `_`, not starting with a digit (so it needs no
/// quoting beyond backticks and means the same on every server, whatever its case rules).
pub(super) fn check_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok && name != META_TABLE {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid mysql table name {name:?}: use 1-64 of a-z, 0-9, '_' (not starting with a \
             digit, and not {META_TABLE})"
        )))
    }
}

/// Creates the table (or checks it) under a named lock, so that app servers starting together
/// do not race; see the module docs of [`super`]. The lock is released whatever happens, since
/// the connection goes back to the pool.
pub(super) async fn migrate(conn: &mut Conn, table: &str, sql: &Sql) -> Result<()> {
    let got: Option<Row> = conn
        .query_first("SELECT GET_LOCK(CONCAT('sessionkit_migrate:', DATABASE()), 30)")
        .await
        .map_err(backend("migrate"))?;
    let got: Option<i64> = got.map(|r| column(&r, 0, "migrate")).transpose()?.flatten();
    if got != Some(1) {
        return Err(Error::backend(
            KIND,
            "migrate",
            "timed out waiting 30 s for another app server's migration (GET_LOCK)",
        ));
    }
    let result = migrate_locked(conn, table, sql).await;
    let released = conn
        .query_drop("DO RELEASE_LOCK(CONCAT('sessionkit_migrate:', DATABASE()))")
        .await
        .map_err(backend("migrate"));
    result.and(released)
}

async fn migrate_locked(conn: &mut Conn, table: &str, sql: &Sql) -> Result<()> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (
             name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
             version INT NOT NULL
         ) ENGINE=InnoDB"
    ))
    .await
    .map_err(backend("migrate"))?;
    let current: i32 = conn
        .exec_first::<Row, _, _>(
            format!("SELECT version FROM {META_TABLE} WHERE name = ?"),
            (table,),
        )
        .await
        .map_err(|e| {
            Error::Config(format!(
                "mysql table {META_TABLE} exists but is not sessionkit's ({e}); \
                 use another database"
            ))
        })?
        .map(|row| column(&row, 0, "migrate"))
        .transpose()?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(Error::Config(format!(
            "mysql table {} has schema version {current}, newer than this sessionkit \
             understands ({SCHEMA_VERSION}); upgrade sessionkit or use another table",
            sql.table
        )));
    }
    let columns = table_columns(conn, table).await?;
    if current == 0 && !columns.is_empty() {
        return Err(Error::Config(format!(
            "mysql table {} exists but was not created by sessionkit (no row in {META_TABLE}); \
             choose another one with ?table=",
            sql.table
        )));
    }
    let t = &sql.table;
    for version in current + 1..=SCHEMA_VERSION {
        let step = match version {
            1 => format!(
                "CREATE TABLE {t} (
                     session_key BINARY(32) NOT NULL PRIMARY KEY,
                     version BIGINT NOT NULL,
                     expires_at BIGINT NOT NULL,
                     last_access BIGINT NOT NULL,
                     absolute_expires_at BIGINT NOT NULL,
                     created BIGINT NOT NULL,
                     user_name TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                     user_hash BINARY(32) NULL,
                     alias BOOLEAN NOT NULL DEFAULT FALSE,
                     payload LONGBLOB NOT NULL,
                     KEY expires_at (expires_at),
                     KEY user_hash (user_hash)
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            _ => unreachable!("every version up to SCHEMA_VERSION has a step"),
        };
        conn.query_drop(step).await.map_err(backend("migrate"))?;
    }
    if current < SCHEMA_VERSION {
        conn.exec_drop(
            format!(
                "INSERT INTO {META_TABLE} (name, version) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE version = VALUES(version)"
            ),
            (table, SCHEMA_VERSION),
        )
        .await
        .map_err(backend("migrate"))?;
        return Ok(());
    }
    let missing: Vec<&str> = EXPECTED_COLUMNS
        .into_iter()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "mysql table {t} is recorded in {META_TABLE} at schema version {current} but {}; \
             it is not a sessionkit table (or was changed by hand)",
            if columns.is_empty() {
                "does not exist".to_owned()
            } else {
                format!("lacks the columns {}", missing.join(", "))
            }
        )));
    }
    Ok(())
}

/// The column names of `table` in the current database (none if it does not exist).
async fn table_columns(conn: &mut Conn, table: &str) -> Result<Vec<String>> {
    let rows: Vec<Row> = conn
        .exec(
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?",
            (table,),
        )
        .await
        .map_err(backend("migrate"))?;
    rows.iter().map(|r| column(r, 0, "migrate")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(check_table("sessionkit_sessions").is_ok());
        assert!(check_table("_x9").is_ok());
        for bad in ["", "1abc", "a`b", "Sessions", "a-b", META_TABLE] {
            assert!(check_table(bad).is_err(), "{bad:?}");
        }
        assert!(check_table(&"a".repeat(64)).is_ok());
        assert!(check_table(&"a".repeat(65)).is_err());
    }

    #[test]
    fn create_assigns_expires_at_last() {
        let sql = Sql::new("t");
        // The last assignment (the IF conditions read the old `expires_at`, so it must go last).
        let last = sql.create.rfind(" = IF(").unwrap();
        assert!(
            sql.create[..last].ends_with(" expires_at"),
            "{}",
            sql.create
        );
        assert!(!sql.create.contains("session_key = IF"));
        assert!(sql
            .create
            .contains("alias = IF(expires_at <= VALUES(last_access), FALSE, alias)"));
    }
}
