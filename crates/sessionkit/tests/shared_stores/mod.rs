//! Support for the shared-store tests (Redis, Redis Cluster, Postgres, MySQL): service discovery
//! with skip-or-fail, isolated prefixes/schemas/tables, and store checks written once for every backend.
//! These are focused checks of this crate's shared stores; the generic conformance suite
//! (`testkit`) runs on top of them separately.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use sessionkit::store::ScanPages;
use sessionkit::{now_millis, Config, Error, Key, Manager, Record, SessionId, Store};

/// True when a missing service must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Skips (prints and returns `None`) or panics, for a service that is not there.
pub fn unavailable<T>(what: &str, why: impl std::fmt::Display) -> Option<T> {
    if required() {
        panic!("{what} is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {why}");
    }
    eprintln!(
        "SKIPPED: {what} unavailable ({why}); set SESSIONKIT_REQUIRE_SERVICES=1 to fail instead"
    );
    None
}

/// A random lower-case token for prefixes and schema names.
pub fn token() -> String {
    SessionId::generate().unwrap().key().short()
}

pub fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_url() -> String {
    std::env::var("SESSIONKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("SESSIONKIT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

pub fn new_key() -> Key {
    SessionId::generate().unwrap().key()
}

/// A live record created now, expiring in `ttl_ms`.
pub fn record(ttl_ms: i64) -> Record {
    let now = now_millis();
    let mut r = Record::new(now, now + ttl_ms, now + 10 * ttl_ms);
    r.data.set("n", "0").unwrap();
    r
}

/// The next version of `r`, written now.
pub fn next(r: &Record, n: i64) -> Record {
    let mut r = r.clone();
    let now = now_millis();
    r.data.set("n", &n.to_string()).unwrap();
    r.version += 1;
    r.last_access = now.max(r.last_access);
    r
}

pub async fn crud(s: &dyn Store) {
    let now = now_millis();
    let k = new_key();
    assert!(s.load(&k, now).await.unwrap().is_none());
    let r = record(60_000);
    s.create(&k, &r).await.unwrap();
    assert_eq!(s.load(&k, now).await.unwrap().as_ref(), Some(&r));
    assert!(matches!(s.create(&k, &r).await, Err(Error::Exists)));

    // Compare-and-set: the right version wins once, a stale one loses.
    let r2 = next(&r, 1);
    s.save(&k, &r2, 1).await.unwrap();
    assert!(matches!(
        s.save(&k, &next(&r, 9), 1).await,
        Err(Error::Conflict)
    ));
    assert_eq!(
        s.load(&k, now).await.unwrap().unwrap().data.get("n"),
        Some("1")
    );
    assert_eq!(s.load(&k, now).await.unwrap().unwrap().version, 2);

    // Touch moves the deadline, not the data or version, and never past the absolute one.
    let later = now_millis() + 5;
    assert!(s.touch(&k, later, later + 90_000).await.unwrap());
    let t = s.load(&k, later).await.unwrap().unwrap();
    assert_eq!(
        (t.version, t.last_access, t.expires_at),
        (2, later, later + 90_000)
    );
    assert_eq!(t.data.get("n"), Some("1"));
    assert!(s
        .touch(&k, later, r.absolute_expires_at + 1_000_000)
        .await
        .unwrap());
    assert_eq!(
        s.load(&k, later).await.unwrap().unwrap().expires_at,
        r.absolute_expires_at
    );
    // A save after a touch still compares the version only.
    s.save(&k, &next(&t, 2), 2).await.unwrap();

    // Destroy: gone, and never re-created by a late save.
    assert!(s.destroy(&k).await.unwrap());
    assert!(!s.destroy(&k).await.unwrap());
    assert!(s.load(&k, now).await.unwrap().is_none());
    assert!(matches!(
        s.save(&k, &next(&r2, 3), 3).await,
        Err(Error::Conflict)
    ));
    assert!(!s.touch(&k, now, now + 1000).await.unwrap());
    assert!(s.load(&k, now).await.unwrap().is_none());
    s.ping().await.unwrap();
}

/// Expiry by the caller's clock (future `now`) and by the server's own clock (real time).
pub async fn expiry(s: &dyn Store) {
    let k = new_key();
    let r = record(60_000);
    s.create(&k, &r).await.unwrap();
    let after = r.expires_at;
    assert!(
        s.load(&k, after).await.unwrap().is_none(),
        "served at its deadline"
    );
    assert!(s.load(&k, after - 1).await.unwrap().is_some());
    // A save or touch judged at a time past the deadline must not revive it.
    let mut late = next(&r, 1);
    late.last_access = after + 1;
    late.expires_at = after + 60_000;
    assert!(matches!(s.save(&k, &late, 1).await, Err(Error::Conflict)));
    assert!(!s.touch(&k, after + 1, after + 60_000).await.unwrap());
    // An expired record does not block create.
    let mut fresh = Record::new(after + 1, after + 60_000, after + 120_000);
    fresh.data.set("fresh", "true").unwrap();
    s.create(&k, &fresh).await.unwrap();
    assert_eq!(
        s.load(&k, after + 2)
            .await
            .unwrap()
            .unwrap()
            .data
            .get("fresh"),
        Some("true")
    );
    s.destroy(&k).await.unwrap();

    // Real time: a record with a 300 ms life is gone once it passed.
    let short = new_key();
    let r = record(300);
    s.create(&short, &r).await.unwrap();
    assert!(s.load(&short, now_millis()).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(s.load(&short, now_millis()).await.unwrap().is_none());
    assert!(matches!(
        s.save(&short, &next(&r, 1), 1).await,
        Err(Error::Conflict)
    ));
}

pub async fn rotation(s: &dyn Store) {
    let now = now_millis();
    let (a, b, c) = (new_key(), new_key(), new_key());
    let mut r = record(60_000);
    r.user = Some(format!("rot-{}", token()));
    s.create(&a, &r).await.unwrap();
    let r2 = next(&r, 1);
    // Wrong version → Conflict, nothing moved.
    assert!(matches!(
        s.rotate(&a, 7, &b, &r2, None).await,
        Err(Error::Conflict)
    ));
    assert!(s.load(&b, now).await.unwrap().is_none());
    s.rotate(&a, 1, &b, &r2, None).await.unwrap();
    assert!(s.load(&a, now).await.unwrap().is_none());
    assert_eq!(
        s.load(&b, now).await.unwrap().unwrap().data.get("n"),
        Some("1")
    );
    let user = r.user.clone().unwrap();
    let of: Vec<Key> = s
        .sessions_of(&user, now)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(of, vec![b]);

    // With grace: the old key becomes a read-only alias naming the new one.
    let r3 = next(&r2, 2);
    let until = now_millis() + 30_000;
    s.rotate(&b, 2, &c, &r3, Some(&Record::alias(c, 2, until)))
        .await
        .unwrap();
    let alias = s.load(&b, now_millis()).await.unwrap().unwrap();
    assert_eq!(alias.successor(), Some(&c));
    assert!(alias.data.is_empty());
    assert!(matches!(
        s.save(&b, &next(&alias, 1), alias.version).await,
        Err(Error::Conflict)
    ));
    assert!(s.load(&b, until).await.unwrap().is_none());
    // Aliases are not sessions: len, scan and the user index leave them out.
    let of: Vec<Key> = s
        .sessions_of(&user, now_millis())
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(of, vec![c]);
    // Rotating onto a live key is refused.
    let d = new_key();
    s.create(&d, &record(60_000)).await.unwrap();
    assert!(matches!(
        s.rotate(&c, 3, &d, &next(&r3, 3), None).await,
        Err(Error::Exists)
    ));
    assert!(
        s.load(&c, now_millis()).await.unwrap().is_some(),
        "failed rotation lost the session"
    );
    for k in [b, c, d] {
        s.destroy(&k).await.unwrap();
    }
}

/// `len`, `scan` (paged, no duplicates, no aliases, no expired) and `gc` on a store that holds
/// only this test's data (a fresh prefix/schema).
pub async fn listing_and_gc(s: &dyn Store) {
    let now = now_millis();
    assert_eq!(s.len(now).await.unwrap(), 0, "store not isolated");
    let mut live = HashSet::new();
    for _ in 0..57 {
        let k = new_key();
        s.create(&k, &record(60_000)).await.unwrap();
        live.insert(k);
    }
    // Short-lived ones, and an alias.
    let mut short = Vec::new();
    for _ in 0..9 {
        let k = new_key();
        s.create(&k, &record(1_000)).await.unwrap();
        short.push(k);
    }
    let moved = *live.iter().next().unwrap();
    let target = new_key();
    let base = s.load(&moved, now).await.unwrap().unwrap();
    s.rotate(
        &moved,
        1,
        &target,
        &next(&base, 1),
        Some(&Record::alias(target, 1, now_millis() + 30_000)),
    )
    .await
    .unwrap();
    live.remove(&moved);
    live.insert(target);
    assert_eq!(s.len(now_millis()).await.unwrap(), 66);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let now = now_millis();
    assert_eq!(s.len(now).await.unwrap(), 57);

    for page_size in [1usize, 7, 57, 100] {
        let mut seen = HashSet::new();
        let mut scan = ScanPages::new(s, page_size);
        let mut pages = 0;
        while let Some(page) = scan.next(now).await.unwrap() {
            assert!(page.len() <= page_size);
            for (k, r) in page {
                assert!(r.successor().is_none(), "scan returned an alias");
                assert!(!r.is_expired(now));
                assert!(seen.insert(k), "scan returned a record twice");
            }
            pages += 1;
            assert!(pages <= 200, "scan does not end");
        }
        assert_eq!(seen, live, "page size {page_size}");
    }
    assert!(s.scan(Some("not a cursor"), 10, now).await.is_err());

    // GC: the short-lived ones (by TTL or by gc) are gone; bounded by the limit.
    let first = s.gc(now, 3).await.unwrap();
    assert!(first <= 3);
    let mut total = first;
    for _ in 0..20 {
        let n = s.gc(now, 3).await.unwrap();
        total += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(total, 9, "gc removed the wrong number of records");
    assert_eq!(s.gc(now, 100).await.unwrap(), 0);
    assert_eq!(s.len(now).await.unwrap(), 57);
    for k in &short {
        assert!(s.load(k, now).await.unwrap().is_none());
    }
    // GC by the caller's clock: everything is expired an hour from now.
    let later = now + 3_600_000;
    let mut removed = 0;
    for _ in 0..100 {
        let n = s.gc(later, 10).await.unwrap();
        assert!(n <= 10);
        removed += n;
        if n == 0 {
            break;
        }
    }
    // 57 sessions, plus the alias where the store keeps it as a row (Redis lets TTL take it).
    assert!((57..=58).contains(&removed), "removed {removed}");
    assert_eq!(s.len(now).await.unwrap(), 0);
    for k in &live {
        assert!(s.load(k, now).await.unwrap().is_none());
    }
}

pub async fn user_index(s: &dyn Store) {
    let now = now_millis();
    let (ann, bob) = (
        format!("ann-{}", token()),
        format!("bob {{}} ∆ {}", token()),
    );
    let mut keys = Vec::new();
    for i in 0..3 {
        let k = new_key();
        let mut r = record(60_000);
        r.created += i;
        r.user = Some(ann.clone());
        s.create(&k, &r).await.unwrap();
        keys.push(k);
    }
    let kb = new_key();
    let mut rb = record(60_000);
    rb.user = Some(bob.clone());
    s.create(&kb, &rb).await.unwrap();
    let anon = new_key();
    s.create(&anon, &record(60_000)).await.unwrap();

    let of = |u: String| async move {
        s.sessions_of(&u, now_millis())
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(ann.clone()).await, keys);
    assert_eq!(of(bob.clone()).await, vec![kb]);

    // Logout (user removed by save) and user change leave the index at once.
    let r0 = s.load(&keys[0], now).await.unwrap().unwrap();
    let mut out = next(&r0, 1);
    out.user = None;
    s.save(&keys[0], &out, 1).await.unwrap();
    let r1 = s.load(&keys[1], now).await.unwrap().unwrap();
    let mut switched = next(&r1, 1);
    switched.user = Some(bob.clone());
    s.save(&keys[1], &switched, 1).await.unwrap();
    assert_eq!(of(ann.clone()).await, vec![keys[2]]);
    let mut bobs = of(bob.clone()).await;
    bobs.sort();
    let mut want = vec![kb, keys[1]];
    want.sort();
    assert_eq!(bobs, want);

    assert_eq!(s.destroy_user(&bob).await.unwrap(), 2);
    assert!(of(bob.clone()).await.is_empty());
    assert!(s.load(&kb, now).await.unwrap().is_none());
    assert!(s.load(&anon, now).await.unwrap().is_some());
    assert!(s.load(&keys[2], now).await.unwrap().is_some());
    assert_eq!(s.destroy_user(&bob).await.unwrap(), 0);
    assert_eq!(s.destroy_user(&ann).await.unwrap(), 1);
    for k in [keys[0], anon] {
        s.destroy(&k).await.unwrap();
    }
}

/// Many writers with their own store handles (as separate processes would have) incrementing
/// one session by compare-and-set with reload on conflict: no update is lost.
pub async fn concurrent_cas(stores: Vec<Arc<dyn Store>>) {
    let k = new_key();
    stores[0].create(&k, &record(60_000)).await.unwrap();
    let per_task = 25;
    let tasks = 8;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let s = stores[t % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            let mut worst = 0u32;
            for _ in 0..per_task {
                let mut run = 0u32;
                loop {
                    let cur = s.load(&k, now_millis()).await.unwrap().unwrap();
                    let n: i64 = cur.data.get("n").unwrap().parse().unwrap();
                    match s.save(&k, &next(&cur, n + 1), cur.version).await {
                        Ok(()) => {
                            worst = worst.max(run);
                            break;
                        }
                        Err(Error::Conflict) => {
                            run += 1;
                            conflicts += 1;
                            assert!(conflicts < 100_000, "livelock");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            (conflicts, worst)
        }));
    }
    for h in handles {
        let (conflicts, worst) = h.await.unwrap();
        eprintln!("writer: {conflicts} conflicts, at most {worst} in a row");
    }
    let r = stores[0].load(&k, now_millis()).await.unwrap().unwrap();
    assert_eq!(r.data.get("n"), Some(&*(tasks * per_task).to_string()));
    assert_eq!(r.version, 1 + (tasks * per_task) as u64);
    stores[0].destroy(&k).await.unwrap();
}

/// The manager on this store: counting, login rotation, logout, replayed concurrent updates.
pub async fn manager_flow(store: Arc<dyn Store>) {
    let m = Manager::new(store.clone(), Config::default()).unwrap();

    let request = |cookie: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(c) = cookie {
            h.insert(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    };
    let cookie_of = |headers: &sessionkit::SessionHeaders| {
        headers
            .set_cookie()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
    };

    let s = m.start(&request(None));
    s.update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await
        .unwrap();
    let mut cookie = cookie_of(&m.finish(&s).await.unwrap()).expect("new session cookie");
    // Concurrent increments on one cookie are all kept.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let m = m.clone();
        let h = request(Some(&cookie));
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                let s = m.start(&h);
                s.update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                m.finish(&s).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let s = m.start(&request(Some(&cookie)));
    assert_eq!(s.get::<u64>("count").await.unwrap(), Some(81));
    // Login rotates the ID; the old one is dead.
    s.set_user(Some("mallory-free"), "password").await.unwrap();
    let old = cookie.clone();
    cookie = cookie_of(&m.finish(&s).await.unwrap()).expect("rotated cookie");
    assert_ne!(cookie, old);
    let s = m.start(&request(Some(&old)));
    assert_eq!(s.get::<u64>("count").await.unwrap(), None);
    let s = m.start(&request(Some(&cookie)));
    assert_eq!(s.get::<u64>("count").await.unwrap(), Some(81));
    assert_eq!(s.user().await.unwrap().as_deref(), Some("mallory-free"));
    m.finish(&s).await.unwrap();
    // Logout destroys it server side.
    let s = m.start(&request(Some(&cookie)));
    s.destroy().await.unwrap();
    m.finish(&s).await.unwrap();
    let s = m.start(&request(Some(&cookie)));
    assert_eq!(s.get::<u64>("count").await.unwrap(), None);
    m.ping().await.unwrap();
}

/// A manager for the fault tests: a store call longer than 1.5 s fails the request.
pub fn fault_manager(store: Arc<dyn Store>) -> Manager {
    let config = Config::builder()
        .store_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    Manager::new(store, config).unwrap()
}

/// Request headers carrying `cookie`, if any.
pub fn headers(cookie: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(c) = cookie {
        h.insert(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    h
}

/// One `/count`-like request through the manager: the count and the cookie issued, if any.
pub async fn count(m: &Manager, cookie: Option<&str>) -> Result<(u64, Option<String>), Error> {
    let s = m.start(&headers(cookie));
    let n = s
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    let out = m.finish(&s).await?;
    let cookie = out
        .set_cookie()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    Ok((n, cookie))
}

/// Drops a Postgres schema when dropped (also when the test panics), on a runtime of its own
/// since the test's runtime may be ending.
#[cfg(feature = "postgres")]
pub struct DropSchema(pub String);

#[cfg(feature = "postgres")]
impl Drop for DropSchema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        on_own_runtime(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await;
            }
        });
    }
}

/// Runs `f` to completion on a runtime of its own in another thread: for cleanup in `Drop`,
/// when the test's runtime may be ending.
fn on_own_runtime<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join();
}

/// Runs its MySQL statements (cleanup) when dropped, also when the test panics.
#[cfg(feature = "mysql")]
pub struct MySqlCleanup(pub Vec<String>);

/// Drops a MySQL table and its `sessionkit_meta` row at the end of the test.
#[cfg(feature = "mysql")]
pub fn drop_table(table: &str) -> MySqlCleanup {
    MySqlCleanup(vec![
        format!("DROP TABLE IF EXISTS `{table}`"),
        format!("DELETE FROM sessionkit_meta WHERE name = '{table}'"),
    ])
}

#[cfg(feature = "mysql")]
impl Drop for MySqlCleanup {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.0);
        on_own_runtime(async move {
            use mysql_async::prelude::Queryable;
            let Ok(opts) = mysql_async::Opts::from_url(&mysql_url()) else {
                return;
            };
            if let Ok(mut conn) = mysql_async::Conn::new(opts).await {
                for sql in statements {
                    let _ = conn.query_drop(sql).await;
                }
                let _ = conn.disconnect().await;
            }
        });
    }
}
