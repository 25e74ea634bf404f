//! PostgresStore against a real PostgreSQL (SESSIONKIT_POSTGRES_URL, default
//! postgres://postgres@127.0.0.1:5432/test). Every test works in its own schema and drops it.
#![cfg(feature = "postgres")]

mod shared_stores;

use std::sync::Arc;
use std::time::Duration;

use sessionkit::store::postgres::PostgresStore;
use sessionkit::{now_millis, Store};
use shared_stores::*;

/// A scratch schema, dropped when the test ends (also on panic).
struct Scratch {
    schema: String,
    admin: tokio_postgres::Client,
    _guard: DropSchema,
}

impl Scratch {
    async fn new() -> Option<Self> {
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls),
        )
        .await;
        let (admin, conn) = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return unavailable("postgres", e),
            Err(_) => return unavailable("postgres", "connect timed out"),
        };
        tokio::spawn(conn);
        let schema = format!("sk_test_{}", token());
        Some(Self {
            _guard: DropSchema(schema.clone()),
            schema,
            admin,
        })
    }

    fn url(&self) -> String {
        with_param(&postgres_url(), "schema", &self.schema)
    }

    async fn open(&self) -> Arc<PostgresStore> {
        Arc::new(PostgresStore::open(&self.url()).await.unwrap())
    }

    async fn drop_schema(&self) {
        self.admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .unwrap();
    }
}

macro_rules! pg_test {
    ($name:ident, |$s:ident, $scratch:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($scratch) = Scratch::new().await else {
                return;
            };
            let $s = $scratch.open().await;
            $body;
            $scratch.drop_schema().await;
        }
    };
}

pg_test!(pg_crud, |s, _x| crud(&*s).await);
pg_test!(pg_expiry, |s, _x| expiry(&*s).await);
pg_test!(pg_rotation, |s, _x| rotation(&*s).await);
pg_test!(pg_listing_and_gc, |s, _x| listing_and_gc(&*s).await);
pg_test!(pg_user_index, |s, _x| user_index(&*s).await);
pg_test!(pg_manager, |s, _x| manager_flow(s.clone()).await);
pg_test!(pg_concurrent_cas, |s, x| {
    let other = x.open().await;
    concurrent_cas(vec![s.clone(), other]).await
});

pg_test!(pg_corrupt_rows_read_as_absent, |s, x| {
    let k = new_key();
    s.create(&k, &record(60_000)).await.unwrap();
    x.admin
        .execute(
            &format!(
                "UPDATE \"{}\".sessionkit_sessions SET payload = '\\x00ff'::bytea WHERE key = $1",
                x.schema
            ),
            &[&&k.0[..]],
        )
        .await
        .unwrap();
    assert!(s.load(&k, now_millis()).await.unwrap().is_none());
    let page = s.scan(None, 10, now_millis()).await.unwrap();
    assert!(page.records.is_empty());
});

pg_test!(pg_migration_is_versioned, |s, x| {
    // Opening again (another app server) finds the schema in place.
    let again = x.open().await;
    again.ping().await.unwrap();
    let v: i32 = x
        .admin
        .query_one(
            &format!(
                "SELECT version FROM \"{}\".sessionkit_meta WHERE name = 'sessionkit_sessions'",
                x.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, sessionkit::store::postgres::SCHEMA_VERSION);
    // Indexes on expires_at and user_name exist.
    let n: i64 = x
        .admin
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexdef ~ '(expires_at|user_name)'",
            &[&x.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // A newer schema is refused with a clear error.
    x.admin
        .execute(
            &format!("UPDATE \"{}\".sessionkit_meta SET version = 99", x.schema),
            &[],
        )
        .await
        .unwrap();
    let e = PostgresStore::open(&x.url()).await.unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    drop(s);
});

pg_test!(pg_open_via_registry_with_table, |s, x| {
    let url = format!("{}&table=other_sessions", x.url());
    let other = sessionkit::store::open(&url).await.unwrap();
    assert_eq!(other.kind(), "postgres");
    let k = new_key();
    other.create(&k, &record(60_000)).await.unwrap();
    assert!(
        s.load(&k, now_millis()).await.unwrap().is_none(),
        "tables not separate"
    );
    assert!(other.load(&k, now_millis()).await.unwrap().is_some());
});

#[tokio::test]
async fn pg_bad_urls_are_clear_errors() {
    for url in [
        "postgres://postgres@127.0.0.1/test?schema=Bad-Name",
        "postgres://postgres@127.0.0.1/test?table=x;drop",
        "postgres://postgres@127.0.0.1/test?nonsense=1",
    ] {
        let e = PostgresStore::open(url).await.unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    let e = PostgresStore::open("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

/// The server kills every connection of the store's pool (as a failover or restart would):
/// calls fail with an unavailable error at worst, and the same store recovers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_connection_loss_recovers() {
    let Some(x) = Scratch::new().await else {
        return;
    };
    let app = format!("sk_fault_{}", token());
    let url = with_param(&x.url(), "application_name", &app);
    let s = Arc::new(PostgresStore::open(&url).await.unwrap());
    let k = new_key();
    s.create(&k, &record(60_000)).await.unwrap();
    // Warm several pooled connections with overlapping calls.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.len(now_millis()).await })
        })
        .collect();
    for h in warm {
        h.await.unwrap().unwrap();
    }
    let killed: i64 = x
        .admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "no pool connection found to kill");
    let mut failures = 0;
    let mut recovered = false;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), s.load(&k, now_millis())).await {
            Ok(Ok(r)) => {
                assert!(r.is_some(), "the row survives a connection loss");
                recovered = true;
                break;
            }
            Ok(Err(e)) => {
                assert!(e.is_unavailable(), "{e}");
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => panic!("load hung after the connections were killed"),
        }
    }
    assert!(recovered, "store did not recover ({failures} failures)");
    // Every operation works again on the same store object.
    crud(&*s).await;
    x.drop_schema().await;
}
