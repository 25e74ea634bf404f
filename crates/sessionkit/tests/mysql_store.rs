//! MySqlStore against a real MySQL/MariaDB (SESSIONKIT_MYSQL_URL, default
//! mysql://root@127.0.0.1:3306/test): the shared-store checks, the schema (versioned migration,
//! foreign and newer tables refused, InnoDB/utf8mb4, the indexes), URLs, and GC that does not
//! hold logins up. Every test works in its own table and drops it.
#![cfg(feature = "mysql")]

mod shared_stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Row;
use sessionkit::store::mysql::{MySqlStore, SCHEMA_VERSION};
use sessionkit::{now_millis, Error, Store};
use shared_stores::*;

/// A scratch table and an admin connection, the table dropped when the test ends (also on
/// panic).
struct Scratch {
    table: String,
    admin: mysql_async::Conn,
    _guard: MySqlCleanup,
}

impl Scratch {
    async fn new() -> Option<Self> {
        let opts = mysql_async::Opts::from_url(&mysql_url()).expect("SESSIONKIT_MYSQL_URL");
        let admin = match tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return unavailable("mysql", e),
            Err(_) => return unavailable("mysql", "connect timed out"),
        };
        let table = format!("sk_test_{}", token());
        Some(Self {
            _guard: drop_table(&table),
            table,
            admin,
        })
    }

    fn url(&self) -> String {
        with_param(&mysql_url(), "table", &self.table)
    }

    async fn open(&self) -> Arc<MySqlStore> {
        Arc::new(MySqlStore::open(&self.url()).await.unwrap())
    }

    /// The first column of the first row of `sql`, as `T`.
    async fn one<T: mysql_async::prelude::FromValue>(&mut self, sql: &str) -> T {
        let row: Row = self.admin.query_first(sql).await.unwrap().expect("a row");
        row.get(0).unwrap()
    }

    async fn run(&mut self, sql: &str) {
        self.admin.query_drop(sql).await.unwrap();
    }
}

macro_rules! my_test {
    ($name:ident, |$s:ident, $scratch:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            #[allow(unused_mut)]
            let Some(mut $scratch) = Scratch::new().await
            else {
                return;
            };
            let $s = $scratch.open().await;
            $body;
        }
    };
}

my_test!(my_crud, |s, _x| crud(&*s).await);
my_test!(my_expiry, |s, _x| expiry(&*s).await);
my_test!(my_rotation, |s, _x| rotation(&*s).await);
my_test!(my_listing_and_gc, |s, _x| listing_and_gc(&*s).await);
my_test!(my_user_index, |s, _x| user_index(&*s).await);
my_test!(my_manager, |s, _x| manager_flow(s.clone()).await);
my_test!(my_concurrent_cas, |s, x| {
    let other = x.open().await;
    concurrent_cas(vec![s.clone(), other]).await
});

my_test!(my_corrupt_rows_read_as_absent, |s, x| {
    let k = new_key();
    s.create(&k, &record(60_000)).await.unwrap();
    x.admin
        .exec_drop(
            format!(
                "UPDATE `{}` SET payload = X'00ff' WHERE session_key = ?",
                x.table
            ),
            (&k.0[..],),
        )
        .await
        .unwrap();
    assert!(s.load(&k, now_millis()).await.unwrap().is_none());
    let page = s.scan(None, 10, now_millis()).await.unwrap();
    assert!(page.records.is_empty());
});

my_test!(my_keys_at_rest_are_hashes, |s, x| {
    let id = sessionkit::SessionId::generate().unwrap();
    let text = id.to_string();
    let mut r = record(60_000);
    r.user = Some("ann".into());
    s.create(&id.key(), &r).await.unwrap();
    let stored: Vec<u8> = x
        .one(&format!("SELECT session_key FROM `{}`", x.table))
        .await;
    assert_eq!(stored, id.key().0.to_vec());
    assert_ne!(stored, text.as_bytes());
    let dump: Vec<u8> = x.one(&format!("SELECT payload FROM `{}`", x.table)).await;
    assert!(
        !dump.windows(text.len()).any(|w| w == text.as_bytes()),
        "the session ID is stored in the payload"
    );
});

my_test!(my_migration_is_versioned, |s, x| {
    // Opening again (another app server) finds the table in place.
    let again = x.open().await;
    again.ping().await.unwrap();
    let v: i32 = x
        .one(&format!(
            "SELECT version FROM sessionkit_meta WHERE name = '{}'",
            x.table
        ))
        .await;
    assert_eq!(v, SCHEMA_VERSION);
    let engine: String = x
        .one(&format!(
            "SELECT CAST(CONCAT(engine, ' ', table_collation) AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '{}'",
            x.table
        ))
        .await;
    assert_eq!(engine, "InnoDB utf8mb4_bin");
    // Indexes on expires_at and user_hash (besides the primary key).
    let indexes: i64 = x
        .one(&format!(
            "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = '{}' \
             AND column_name IN ('expires_at', 'user_hash')",
            x.table
        ))
        .await;
    assert_eq!(indexes, 2);
    // A newer schema is refused with a clear error.
    let t = x.table.clone();
    x.run(&format!(
        "UPDATE sessionkit_meta SET version = 99 WHERE name = '{t}'"
    ))
    .await;
    let e = MySqlStore::open(&x.url()).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("newer"), "{e}");
    // A recorded table that lost sessionkit's columns is refused too.
    x.run(&format!(
        "UPDATE sessionkit_meta SET version = 1 WHERE name = '{t}'"
    ))
    .await;
    x.run(&format!("ALTER TABLE `{t}` DROP COLUMN user_hash"))
        .await;
    let e = MySqlStore::open(&x.url()).await.unwrap_err();
    assert!(e.to_string().contains("lacks the columns user_hash"), "{e}");
    drop(s);
});

my_test!(my_foreign_table_is_refused, |s, x| {
    let foreign = format!("{}_foreign", x.table);
    let _guard = drop_table(&foreign);
    x.run(&format!(
        "CREATE TABLE `{foreign}` (id INT PRIMARY KEY) ENGINE=InnoDB"
    ))
    .await;
    let url = with_param(&mysql_url(), "table", &foreign);
    let e = MySqlStore::open(&url).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("not created by sessionkit"), "{e}");
    // The foreign table is left as it was.
    let n: i64 = x.one(&format!("SELECT COUNT(*) FROM `{foreign}`")).await;
    assert_eq!(n, 0);
    drop(s);
});

my_test!(my_open_via_registry_with_table, |s, x| {
    let other_table = format!("{}_other", x.table);
    let _guard = drop_table(&other_table);
    let url = with_param(&mysql_url(), "table", &other_table);
    let other = sessionkit::store::open(&url).await.unwrap();
    assert_eq!(other.kind(), "mysql");
    let k = new_key();
    other.create(&k, &record(60_000)).await.unwrap();
    assert!(
        s.load(&k, now_millis()).await.unwrap().is_none(),
        "tables not separate"
    );
    assert!(other.load(&k, now_millis()).await.unwrap().is_some());
    drop(x);
});

#[tokio::test]
async fn my_bad_urls_are_clear_errors() {
    for (url, says) in [
        ("mysql://root@127.0.0.1:3306/test?table=Bad-Name", "table"),
        ("mysql://root@127.0.0.1:3306/test?table=x;drop", "table"),
        ("mysql://root@127.0.0.1:3306/test?nonsense=1", "nonsense"),
        ("mysql://root@127.0.0.1:3306", "no database"),
        ("mysql://root@127.0.0.1:3306/", "no database"),
        ("mysql://root:hunter2@[::1", "mysql URL"),
    ] {
        match MySqlStore::open(url).await {
            Err(e @ Error::BadUrl { .. }) => {
                let text = e.to_string();
                assert!(text.contains(says), "{url}: {text}");
                assert!(!text.contains("hunter2"), "password in the error: {text}");
            }
            other => panic!("{url}: expected a BadUrl error, got {other:?}"),
        }
    }
    let e = MySqlStore::open("mysql://root:hunter2@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

// GC holds locks only on the rows it deletes: while a GC batch's transaction is open (as a
// slow batch would be), logins insert rows on both sides of the deleted range without waiting.
// The batch runs on an admin connection at the isolation level the store sets on its own.
my_test!(my_gc_does_not_block_logins, |s, x| {
    let now = now_millis();
    for _ in 0..20 {
        s.create(&new_key(), &record(60_000)).await.unwrap();
    }
    let mut dead = Vec::new();
    for _ in 0..20 {
        let k = new_key();
        let mut r = record(60_000);
        r.expires_at = now - 1_000;
        r.last_access = now - 2_000;
        r.created = now - 3_000;
        s.create(&k, &r).await.unwrap();
        dead.push(k);
    }
    x.run("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await;
    x.run("SET SESSION innodb_lock_wait_timeout = 1").await;
    let t = x.table.clone();
    x.run("START TRANSACTION").await;
    x.run(&format!(
        "DELETE FROM `{t}` WHERE expires_at <= {now} ORDER BY expires_at LIMIT 10"
    ))
    .await;
    // New sessions: ones expiring soon (inside the gap a next-key lock would cover) and late.
    let started = Instant::now();
    for ttl in [1_000, 2_000, 60_000, 3_600_000] {
        for _ in 0..5 {
            tokio::time::timeout(Duration::from_secs(3), s.create(&new_key(), &record(ttl)))
                .await
                .expect("a login waited for the GC batch")
                .unwrap();
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The store's own GC skips nothing: it waits for (or fails on) the locked rows only.
    x.run("COMMIT").await;
    let mut removed = 0;
    for _ in 0..10 {
        let n = s.gc(now, 4).await.unwrap();
        assert!(n <= 4);
        removed += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(removed, 10);
    for k in &dead {
        assert!(s.load(k, now - 5_000).await.unwrap().is_none());
    }
    assert_eq!(s.len(now).await.unwrap(), 40);
});
