//! Faults on the shared MySQL/MariaDB server (SESSIONKIT_MYSQL_URL), without disturbing other
//! tests: the store works in a database of its own, so its pool's connections are exactly the
//! server's connections to that database. They are killed (`KILL <id>`, as a server restart or
//! failover would), and the table is stalled (`LOCK TABLES ... WRITE` held by another
//! connection). Every request through the manager must end promptly with an "unavailable" error
//! (a 503 over HTTP), and the same store and manager must work again afterwards, with nothing
//! acknowledged lost.
#![cfg(feature = "mysql")]

mod shared_stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use sessionkit::store::mysql::{MySqlOptions, MySqlStore};
use sessionkit::{now_millis, Error, Manager, Store};
use shared_stores::*;

/// A database of the test's own and an admin connection; the database is dropped at the end
/// (also on panic).
struct Scratch {
    db: String,
    admin: mysql_async::Conn,
    _guard: MySqlCleanup,
}

impl Scratch {
    async fn new() -> Option<Self> {
        let opts = mysql_async::Opts::from_url(&mysql_url()).expect("SESSIONKIT_MYSQL_URL");
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(5),
            mysql_async::Conn::new(opts),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return unavailable("mysql", e),
            Err(_) => return unavailable("mysql", "connect timed out"),
        };
        let db = format!("sk_fault_{}", token());
        admin
            .query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .unwrap();
        Some(Self {
            _guard: MySqlCleanup(vec![format!("DROP DATABASE IF EXISTS `{db}`")]),
            db,
            admin,
        })
    }

    /// The server URL with this test's database in place of the configured one.
    fn url(&self) -> String {
        let base = mysql_url();
        let (server, _) = base
            .rsplit_once('/')
            .expect("a database in SESSIONKIT_MYSQL_URL");
        format!("{server}/{}", self.db)
    }

    /// Kills every connection to this test's database; returns how many.
    async fn kill_store_connections(&mut self) -> usize {
        let ids: Vec<u64> = self
            .admin
            .exec(
                "SELECT id FROM information_schema.processlist \
                 WHERE db = ? AND id <> CONNECTION_ID()",
                (&self.db,),
            )
            .await
            .unwrap();
        for id in &ids {
            // A connection may close by itself meanwhile.
            let _ = self.admin.query_drop(format!("KILL {id}")).await;
        }
        ids.len()
    }

    async fn lock_table(&mut self) {
        let sql = format!("LOCK TABLES `{}`.sessionkit_sessions WRITE", self.db);
        self.admin.query_drop(sql).await.unwrap();
    }

    async fn unlock_tables(&mut self) {
        self.admin.query_drop("UNLOCK TABLES").await.unwrap();
    }
}

/// `count` that must end within 5 s (a hang fails the test).
async fn prompt_count(m: &Manager, cookie: &str) -> Result<(u64, Option<String>), Error> {
    tokio::time::timeout(Duration::from_secs(5), count(m, Some(cookie)))
        .await
        .expect("a request hung")
}

/// Requests on `cookie` until one succeeds (every failure must be "unavailable"); returns the
/// count it saw. The session must survive: no new cookie.
async fn recover(m: &Manager, cookie: &str) -> (u64, u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match prompt_count(m, cookie).await {
            Ok((n, None)) => return (n, failures),
            Ok((_, Some(_))) => panic!("the session was lost"),
            Err(e) => {
                assert!(e.is_unavailable(), "not an unavailable error: {e}");
                failures += 1;
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_give_unavailable_then_recover() {
    let Some(mut x) = Scratch::new().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MySqlStore::open(&x.url()).await.unwrap());
    let m = fault_manager(store.clone());
    let (n, cookie) = count(&m, None).await.unwrap();
    assert_eq!(n, 1);
    let cookie = cookie.unwrap();
    let mut expected = 1;
    for round in 0..3 {
        // Warm several pooled connections with overlapping requests.
        let warm: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.len(now_millis()).await })
            })
            .collect();
        for h in warm {
            h.await.unwrap().unwrap();
        }
        let killed = x.kill_store_connections().await;
        if killed == 0 {
            let all: Vec<(u64, Option<String>)> = x
                .admin
                .query("SELECT id, db FROM information_schema.processlist")
                .await
                .unwrap();
            panic!("round {round}: no store connection found to kill in {all:?}");
        }
        let (n, failures) = recover(&m, &cookie).await;
        // Each failed request changed nothing; the one that succeeded counted once.
        expected += 1;
        assert_eq!(
            n, expected,
            "round {round}: count after {failures} failures"
        );
        eprintln!("round {round}: killed {killed} connections, {failures} failed requests");
    }
    // A connection killed in the middle of a statement (held up by a table lock here): the
    // request fails at once with the store's error, well before the manager's timeout.
    x.lock_table().await;
    let request = {
        let (m, cookie) = (m.clone(), cookie.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (prompt_count(&m, &cookie).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(x.kill_store_connections().await >= 1);
    let (r, took) = request.await.unwrap();
    match r {
        Err(e @ Error::Backend { .. }) => assert!(e.is_unavailable()),
        other => panic!("expected the store's error, got {other:?} after {took:?}"),
    }
    assert!(took < Duration::from_millis(1400), "{took:?}");
    x.unlock_tables().await;
    let (n, failures) = recover(&m, &cookie).await;
    assert_eq!(n, expected + 1, "after {failures} failures");
    // Every operation works again on the same store object.
    crud(&*store).await;
    m.ping().await.unwrap();
}

/// A table stalled longer than the manager's store timeout (the server's lock wait is longer
/// still): requests fail promptly as unavailable; once the lock goes, the same manager serves
/// the session again with its count intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_table_times_out_then_recovers() {
    let Some(mut x) = Scratch::new().await else {
        return;
    };
    let options = MySqlOptions {
        lock_wait_timeout: Duration::from_secs(30),
        ..MySqlOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(MySqlStore::open_with(&x.url(), options).await.unwrap());
    let m = fault_manager(store.clone());
    let (_, cookie) = count(&m, None).await.unwrap();
    let cookie = cookie.unwrap();
    assert_eq!(count(&m, Some(&cookie)).await.unwrap().0, 2);

    x.lock_table().await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = prompt_count(&m, &cookie).await;
        assert!(matches!(r, Err(ref e) if e.is_unavailable()), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
    x.unlock_tables().await;

    let (n, failures) = recover(&m, &cookie).await;
    assert_eq!(n, 3, "after {failures} failures");
    crud(&*store).await;
}

/// The server's own lock wait ends a blocked statement first (here 1 s, before the manager's
/// 1.5 s): a clear unavailable error from the store itself, and recovery once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lock_wait_timeout_is_unavailable() {
    let Some(mut x) = Scratch::new().await else {
        return;
    };
    let options = MySqlOptions {
        lock_wait_timeout: Duration::from_secs(1),
        ..MySqlOptions::default()
    };
    let store = Arc::new(MySqlStore::open_with(&x.url(), options).await.unwrap());
    let k = new_key();
    store.create(&k, &record(60_000)).await.unwrap();
    x.lock_table().await;
    let started = Instant::now();
    let e = store.load(&k, now_millis()).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    x.unlock_tables().await;
    assert!(store.load(&k, now_millis()).await.unwrap().is_some());
}
