//! The admin subcommands, run as the real `sessionkit` binary against every store this build
//! knows. Durable stores are seeded in-process through the `Store` trait, then inspected and
//! changed by the binary; memory:// (one store per process) checks the plumbing and the errors.
//!
//! Stores whose scheme is not compiled in are skipped; stores whose server is down are skipped
//! too unless SESSIONKIT_REQUIRE_SERVICES=1.

mod support;

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sessionkit::{now_millis, Error, Key, Record, SessionId, Store};
use support::{get, DemoResponse, Framework, Server};

/// Runs `sessionkit ARGS` to completion (bounded by the command's own timeouts).
fn sk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionkit"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run sessionkit")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit code 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = sk(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "sessionkit {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn required() -> bool {
    std::env::var("SESSIONKIT_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A unique suffix so runs against shared servers never see each other's users.
fn unique() -> String {
    SessionId::generate().unwrap().key().short()
}

/// A durable store to test against: its URL and whether other tests may share it (then
/// counts are compared as deltas, under [`SHARED`]).
struct Target {
    url: String,
    shared: bool,
    _dir: Option<Arc<tempfile::TempDir>>,
    _purge: Option<RedisPurge>,
}

/// Deletes a private Redis prefix's keys when dropped, even after a failed assertion. The
/// session records expire on their own, but the per-slot index sets of a prefix have no TTL.
struct RedisPurge(String);

impl Drop for RedisPurge {
    fn drop(&mut self) {
        let url = self.0.clone();
        // Drop may run inside a runtime: purge on a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(store) = sessionkit::store::redis::RedisStore::open(&url).await {
                    let _ = store.purge_prefix().await;
                }
            });
        })
        .join();
    }
}

/// Serialises tests on shared servers (Redis, Postgres, MySQL) so count deltas are exact.
static SHARED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens `url` in-process: `None` (with a message) if the scheme is not compiled in or, unless
/// required, the server is down.
async fn try_open(url: &str) -> Option<Arc<dyn Store>> {
    match sessionkit::store::open(url).await {
        Ok(s) => match s.ping().await {
            Ok(()) => Some(s),
            Err(e) if !required() => {
                eprintln!("SKIPPED {url}: server unavailable: {e}");
                None
            }
            Err(e) => panic!("{url}: server unavailable (required): {e}"),
        },
        Err(Error::BadUrl { reason: msg, .. }) if not_in_build(&msg) => {
            eprintln!("SKIPPED {url}: scheme not in this build");
            None
        }
        Err(e) if !required() => {
            eprintln!("SKIPPED {url}: {e}");
            None
        }
        Err(e) => panic!("{url}: cannot open (required): {e}"),
    }
}

/// True for the error `store::open` gives for a scheme this build does not include.
fn not_in_build(msg: &str) -> bool {
    msg.contains("unknown store URL") || msg.contains("cargo feature")
}

/// A Redis URL with a key prefix of its own: a private store on the shared server (its keys
/// carry TTLs, so what a run leaves behind disappears).
fn private_redis_url() -> String {
    let base = std::env::var("SESSIONKIT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    with_param(&base, &format!("prefix=skadm-{}:", unique()))
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// Every durable store of this build (fresh, private ones for embedded stores).
async fn durable_targets() -> Vec<(Target, Arc<dyn Store>)> {
    let mut out = Vec::new();
    let candidates: Vec<(String, bool, Option<Arc<tempfile::TempDir>>)> = {
        let d1 = Arc::new(tempfile::tempdir().unwrap());
        let d2 = Arc::new(tempfile::tempdir().unwrap());
        vec![
            (
                format!("sqlite://{}", d1.path().join("s.db").display()),
                false,
                Some(d1),
            ),
            (
                format!("file://{}", d2.path().join("files").display()),
                false,
                Some(d2),
            ),
            (private_redis_url(), false, None),
            // One fixed table (tests share it under SHARED): no table per run left behind.
            (
                with_param(
                    &std::env::var("SESSIONKIT_POSTGRES_URL")
                        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
                    "table=sessionkit_admin_test",
                ),
                true,
                None,
            ),
            (
                with_param(
                    &std::env::var("SESSIONKIT_MYSQL_URL")
                        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
                    "table=sessionkit_admin_test",
                ),
                true,
                None,
            ),
        ]
    };
    // Redis Cluster only where one is set up (scripts/redis-cluster.sh prints its URL).
    let mut candidates = candidates;
    if let Ok(cluster) = std::env::var("SESSIONKIT_REDIS_CLUSTER") {
        candidates.push((
            with_param(&cluster, &format!("prefix=skadm-{}:", unique())),
            false,
            None,
        ));
    }
    for (url, shared, dir) in candidates {
        if let Some(store) = try_open(&url).await {
            let purge = url.starts_with("redis").then(|| RedisPurge(url.clone()));
            out.push((
                Target {
                    url,
                    shared,
                    _dir: dir,
                    _purge: purge,
                },
                store,
            ));
        }
    }
    out
}

/// A record as the manager would write it, with a visit count and optionally a user.
fn record(user: Option<&str>, count: u64, ttl_ms: i64) -> Record {
    let now = now_millis();
    let mut r = Record::new(now, now + ttl_ms, now + 12 * 3_600_000);
    r.data.set("count", &count.to_string()).unwrap();
    r.user = user.map(str::to_owned);
    r
}

async fn seed(store: &dyn Store, user: Option<&str>, count: u64, ttl_ms: i64) -> SessionId {
    let id = SessionId::generate().unwrap();
    store
        .create(&id.key(), &record(user, count, ttl_ms))
        .await
        .unwrap();
    id
}

fn stats(url: &str) -> serde_json::Value {
    json(&["stats", "--store", url, "--json"])
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_gc_revoke_on_every_durable_store() {
    for (target, store) in durable_targets().await {
        let _guard = if target.shared {
            Some(SHARED.lock().await)
        } else {
            None
        };
        let url = target.url.as_str();
        eprintln!("== {url}");
        let (alice, bob) = (format!("alice-{}", unique()), format!("bob-{}", unique()));
        let before = stats(url);
        let mut ids = vec![
            seed(&*store, Some(&alice), 1, 600_000).await,
            seed(&*store, Some(&alice), 2, 600_000).await,
            seed(&*store, Some(&bob), 3, 600_000).await,
            seed(&*store, None, 4, 600_000).await,
            seed(&*store, None, 5, 600_000).await,
        ];
        // Two that expire almost at once: GC material.
        ids.push(seed(&*store, None, 6, 300).await);
        ids.push(seed(&*store, Some(&bob), 7, 300).await);
        tokio::time::sleep(Duration::from_millis(600)).await;

        let after = stats(url);
        assert_eq!(
            n(&after, "sessions") - n(&before, "sessions"),
            5,
            "{url}: {after}"
        );
        assert_eq!(
            n(&after, "authenticated") - n(&before, "authenticated"),
            3,
            "{url}: {after}"
        );
        let text = ok(&["stats", "--store", url]);
        assert!(text.contains("live sessions:"), "{text}");

        // list: metadata only, never an ID.
        let all = ok(&["list", "--store", url, "--limit", "0", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(all.trim()).unwrap();
        assert!(rows.len() as u64 >= 5, "{url}: {} rows", rows.len());
        let table = ok(&["list", "--store", url, "--limit", "0"]);
        for id in &ids {
            let id = id.to_string();
            assert!(
                !all.contains(&id) && !table.contains(&id),
                "{url}: list leaked an ID"
            );
        }
        let mine = json(&["list", "--store", url, "--user", &alice, "--json"]);
        let mine = mine.as_array().unwrap();
        assert_eq!(mine.len(), 2, "{url}: {mine:?}");
        let handles: Vec<String> = ids[..2].iter().map(|i| i.key().short()).collect();
        for row in mine {
            assert_eq!(row["user"], alice.as_str());
            assert!(handles.contains(&row["key"].as_str().unwrap().to_owned()));
            assert!(n(row, "expires") > n(row, "last_seen"));
        }
        let limited = json(&["list", "--store", url, "--limit", "2", "--json"]);
        assert_eq!(limited.as_array().unwrap().len(), 2);
        assert!(ok(&["list", "--store", url, "--user", &bob]).contains("1 session(s)"));

        // gc: what the store said was awaiting GC is what one pass removes.
        let pending = after["expired_awaiting_gc"].as_u64();
        let removed = n(&json(&["gc", "--store", url, "--json"]), "removed");
        if let Some(p) = pending {
            if !target.shared {
                assert_eq!(removed, p, "{url}: gc removed {removed}, stats said {p}");
            }
            assert_eq!(stats(url)["expired_awaiting_gc"].as_u64(), Some(0), "{url}");
        }
        assert!(ok(&["gc", "--store", url]).contains("removed 0 expired"));

        // revoke: alice's two sessions end, nobody else's.
        let r = json(&["revoke", "--store", url, "--user", &alice, "--json"]);
        assert_eq!(n(&r, "revoked"), 2, "{url}: {r}");
        for id in &ids[..2] {
            assert!(store.load(&id.key(), now_millis()).await.unwrap().is_none());
        }
        assert!(store
            .load(&ids[2].key(), now_millis())
            .await
            .unwrap()
            .is_some());
        assert!(ok(&["revoke", "--store", url, "--user", &alice]).contains("ended 0 session(s)"));
        let last = stats(url);
        assert_eq!(n(&last, "sessions") - n(&before, "sessions"), 3, "{url}");
        // Leave shared servers as found.
        for id in &ids {
            let _ = store.destroy(&id.key()).await;
        }
    }
}

#[test]
fn memory_store_commands_run_and_report_empty() {
    let s = json(&["stats", "--store", "memory://", "--json"]);
    assert_eq!((n(&s, "sessions"), n(&s, "authenticated")), (0, 0));
    assert_eq!(s["store"], "memory");
    assert_eq!(s["expired_awaiting_gc"], 0);
    assert!(ok(&["list", "--store", "memory://"]).contains("0 session(s)"));
    assert_eq!(
        json(&["list", "--store", "memory://", "--json"]),
        serde_json::json!([])
    );
    assert_eq!(
        n(&json(&["gc", "--store", "memory://", "--json"]), "removed"),
        0
    );
    let r = json(&["revoke", "--store", "memory://", "--user", "x", "--json"]);
    assert_eq!(n(&r, "revoked"), 0);
}

#[test]
fn errors_have_clear_messages_and_exit_codes() {
    // Usage errors: exit 2.
    for args in [
        &["stats", "--store", "nonsense"][..],
        &["stats", "--store", "nosuch://x"],
        &["list", "--store", "memory://", "--limit", "many"],
        &["stats"],
        &["frobnicate"],
        &["migrate", "--from", "memory://", "--to", "memory://"],
        &["migrate", "--from", "memory://", "--to", "nosuch://y"],
        &["revoke", "--store", "memory://", "--user", ""],
        &["bench", "--url", "https://127.0.0.1:1"],
        &["bench"],
    ] {
        let o = sk(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).trim().is_empty(), "{args:?}: no message");
    }
    let o = sk(&["stats", "--store", "nosuch://x"]);
    assert!(stderr(&o).contains("bad store URL"), "{}", stderr(&o));
    assert!(stderr(&o).contains("memory://"), "names the known schemes");
    // A file that is not a sessionkit database (wrong schema): a store error, exit 1.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    std::fs::write(&foreign, b"not a database at all, just some text").unwrap();
    let o = sk(&[
        "stats",
        "--store",
        &format!("sqlite://{}", foreign.display()),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a sessionkit"), "{}", stderr(&o));
    // Runtime errors: exit 1 (nothing listens on port 1).
    let o = sk(&["bench", "--url", "http://127.0.0.1:1", "--requests", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
}

#[tokio::test]
async fn unreachable_servers_are_runtime_errors() {
    // Ports where nothing listens; only meaningful when the scheme is compiled in.
    for url in [
        "redis://127.0.0.1:1",
        "postgres://postgres@127.0.0.1:1/test",
        "mysql://root@127.0.0.1:1/test",
    ] {
        match sessionkit::store::open(url).await {
            Err(Error::BadUrl { reason: m, .. }) if not_in_build(&m) => {
                eprintln!("SKIPPED {url}: scheme not in this build");
                continue;
            }
            _ => {}
        }
        let o = sk(&["stats", "--store", url]);
        assert_eq!(o.status.code(), Some(1), "{url}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("unreachable") || stderr(&o).contains("cannot open"),
            "{url}: {}",
            stderr(&o)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_store_and_a_running_server() {
    let r = json(&[
        "bench",
        "--store",
        "memory://",
        "--requests",
        "500",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert_eq!(n(&r, "errors"), 0, "{r}");
    let ops = r["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 5);
    for op in ops {
        assert_eq!(n(op, "count"), 500, "{op}");
    }
    let text = ok(&["bench", "--store", "memory://", "--requests", "50"]);
    assert!(text.contains("p99"), "{text}");

    let server = Server::start(&["--store", "memory://"]);
    let url = format!("http://{}", server.addr);
    let r = json(&[
        "bench",
        "--url",
        &url,
        "--requests",
        "400",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert_eq!(n(&r, "errors"), 0, "{r}");
    let http = &r["ops"][0];
    assert_eq!(n(http, "count"), 400);
    assert!(http["per_sec"].as_f64().unwrap() > 0.0);
    assert!(n(http, "p50_us") <= n(http, "p99_us"));
    // Each client kept its cookie: one session per client, every later request found it.
    let metrics = get(server.addr, "/metrics", None).await.body;
    let created = metric(&metrics, "sessionkit_sessions_created_total");
    let loaded = metric(&metrics, "sessionkit_sessions_loaded_total");
    assert!((1.0..=4.0).contains(&created), "{metrics}");
    assert_eq!(created + loaded, 400.0, "{metrics}");
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `serve --workers 1` runs on a single-threaded runtime (the default on a one-CPU machine or
/// container, as under the benches' `taskset`): the same contract there, on both frameworks,
/// with concurrent writers to one session all counted and the CSRF check still enforced.
#[tokio::test]
async fn serve_on_one_worker_keeps_the_contract() {
    for fw in [Framework::Axum, Framework::Actix] {
        let server = Server::start_on(fw, &["--store", "memory://", "--workers", "1"]);
        let addr = server.addr;
        let (cookie, csrf) = support::new_session(addr).await;
        let hits: Vec<_> = (0..16)
            .map(|_| {
                let cookie = cookie.clone();
                tokio::spawn(async move { get(addr, "/count", Some(&cookie)).await })
            })
            .collect();
        for hit in hits {
            let r = hit.await.unwrap();
            assert_eq!(r.status, 200, "{fw:?}");
            assert!(r.header("x-csrf-token").is_some(), "{fw:?}");
        }
        let r = get(addr, "/count", Some(&cookie)).await;
        assert_eq!(
            r.body.trim(),
            "18",
            "{fw:?}: every concurrent write counted"
        );
        let refused = support::post(addr, "/login", Some(&cookie), "username=kim").await;
        assert_eq!(refused.status, 403, "{fw:?}: a POST without the token");
        let signed_in = support::login(addr, &cookie, &csrf, "kim").await;
        assert_eq!(get(addr, "/whoami", Some(&signed_in)).await.body, "kim");
    }
}

/// `--metrics-addr` moves /metrics to a listener of its own: the app's port answers 404.
#[tokio::test]
async fn metrics_can_live_on_their_own_listener() {
    let mut server = Server::start(&["--store", "memory://", "--metrics-addr", "127.0.0.1:0"]);
    let line = server.next_line();
    let metrics: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address printed: {line:?}"));
    assert_ne!(metrics, server.addr);
    assert_eq!(get(server.addr, "/count", None).await.status, 200);
    assert_eq!(get(server.addr, "/metrics", None).await.status, 404);
    let m = get(metrics, "/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(
        metric(&m.body, "sessionkit_sessions_created_total") >= 1.0,
        "{}",
        m.body
    );
}

#[tokio::test]
async fn metrics_endpoint_counts_sessions() {
    let server = Server::start(&["--store", "memory://"]);
    let r = get(server.addr, "/count", None).await;
    assert_eq!(r.status, 200);
    let cookie = r.cookie().unwrap();
    for _ in 0..3 {
        assert_eq!(get(server.addr, "/count", Some(&cookie)).await.status, 200);
    }
    let m = get(server.addr, "/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    // /metrics lives outside the session layer: no cookie, no session.
    assert!(m.headers_named("set-cookie").is_empty());
    assert!(
        metric(&m.body, "sessionkit_sessions_created_total") > 0.0,
        "{}",
        m.body
    );
    assert_eq!(metric(&m.body, "sessionkit_sessions_loaded_total"), 3.0);
    assert_eq!(metric(&m.body, "sessionkit_sessions_saved_total"), 3.0);
    assert!(m
        .body
        .contains("sessionkit_store_call_seconds_bucket{store=\"memory\",op=\"save\""));
    assert!(m
        .body
        .contains("# TYPE sessionkit_sessions_created_total counter"));
}

/// Copies `from` → `to` with the binary; returns the summary.
fn migrate(from: &str, to: &str, batch: &str) -> serde_json::Value {
    json(&[
        "migrate", "--from", from, "--to", to, "--batch", batch, "--json", "--quiet",
    ])
}

/// Every live record of `store`, by key.
async fn snapshot(store: &dyn Store) -> HashMap<Key, Record> {
    sessionkit::store::scan_all(store, 1000, now_millis())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn same(a: &Record, b: &Record) -> bool {
    a.data == b.data
        && a.user == b.user
        && a.version == b.version
        && a.created == b.created
        && a.expires_at == b.expires_at
        && a.absolute_expires_at == b.absolute_expires_at
        && a.csrf == b.csrf
}

/// Every ordered pair of private durable stores (SQLite, files, Redis under its own prefix): copy, re-run (idempotent), and the
/// copied sessions keep working in a server on the destination, while a server on the source
/// keeps serving during the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_between_private_stores() {
    let targets: Vec<_> = durable_targets()
        .await
        .into_iter()
        .filter(|(t, _)| !t.shared)
        .collect();
    if targets.len() < 2 {
        eprintln!("SKIPPED migrate_between_private_stores: fewer than two private stores");
        return;
    }
    for (from, src) in &targets {
        for (to, dst) in &targets {
            if from.url == to.url {
                continue;
            }
            // Fresh destination each time: wipe what an earlier pair left.
            for key in snapshot(&**dst).await.keys() {
                dst.destroy(key).await.unwrap();
            }
            for key in snapshot(&**src).await.keys() {
                src.destroy(key).await.unwrap();
            }
            let user = format!("mig-{}", unique());
            let mut ids = Vec::new();
            for i in 0..1000u64 {
                let u = (i % 3 == 0).then_some(user.as_str());
                ids.push(seed(&**src, u, i, 600_000).await);
            }
            // Bump some versions: a copy must keep them.
            for id in &ids[..10] {
                let mut r = src.load(&id.key(), now_millis()).await.unwrap().unwrap();
                let v = r.version;
                r.version += 1;
                src.save(&id.key(), &r, v).await.unwrap();
            }
            let server = Server::start(&["--store", &from.url]);
            let hammer = {
                let (addr, cookie) = (server.addr, ids[0].to_string());
                tokio::spawn(async move {
                    for _ in 0..200 {
                        assert_eq!(get(addr, "/count", Some(&cookie)).await.status, 200);
                    }
                })
            };
            let s = migrate(&from.url, &to.url, "128");
            hammer.await.unwrap();
            drop(server);
            assert_eq!(n(&s, "copied"), 1000, "{} -> {}: {s}", from.url, to.url);
            assert_eq!(n(&s, "skipped"), 0);
            assert_eq!(n(&s, "destination_sessions"), 1000);
            // Re-run: nothing new to copy, nothing lost.
            let again = migrate(&from.url, &to.url, "1000");
            assert_eq!(
                (n(&again, "copied"), n(&again, "skipped")),
                (0, 1000),
                "{again}"
            );
            let (a, b) = (snapshot(&**src).await, snapshot(&**dst).await);
            assert_eq!(a.len(), b.len());
            // ids[0] took traffic during the copy; every other record is exact.
            for (k, r) in &a {
                if *k != ids[0].key() {
                    assert!(same(r, &b[k]), "{} -> {}: record differs", from.url, to.url);
                }
            }
            assert_eq!(
                json(&["list", "--store", &to.url, "--user", &user, "--limit", "0", "--json"])
                    .as_array()
                    .unwrap()
                    .len(),
                334,
                "user index at the destination"
            );
            // The sessions keep working on the destination.
            let server = Server::start(&["--store", &to.url]);
            let r = get(server.addr, "/count", Some(&ids[500].to_string())).await;
            assert_eq!(r.body.trim(), "501", "{} -> {}", from.url, to.url);
            assert!(r.headers_named("set-cookie").is_empty(), "same ID kept");
        }
    }
}

/// 100k sessions SQLite → Redis → SQLite: nothing lost (data, user, version, deadlines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_100k_sqlite_to_redis_and_back() {
    let dir = tempfile::tempdir().unwrap();
    // synchronous=normal: the same code path with one fsync per checkpoint rather than per
    // commit, so 200k single-row commits take seconds, not minutes.
    let (a_url, c_url) = (
        format!(
            "sqlite://{}?synchronous=normal",
            dir.path().join("a.db").display()
        ),
        format!(
            "sqlite://{}?synchronous=normal",
            dir.path().join("c.db").display()
        ),
    );
    let redis_url = private_redis_url();
    let _purge = RedisPurge(redis_url.clone());
    let redis_url = redis_url.as_str();
    let Some(a) = try_open(&a_url).await else {
        return;
    };
    let Some(redis) = try_open(redis_url).await else {
        return;
    };
    let Some(c) = try_open(&c_url).await else {
        return;
    };
    let user = format!("big-{}", unique());
    let t = std::time::Instant::now();
    // Seed 100k with 8 concurrent writers.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (a, user) = (a.clone(), user.clone());
        tasks.spawn(async move {
            let mut keys = Vec::new();
            for i in (w..100_000).step_by(8) {
                let mut r = record((i % 10 == 0).then_some(user.as_str()), i, 3_600_000);
                r.version = 1 + i % 5;
                let id = SessionId::generate().unwrap();
                a.create(&id.key(), &r).await.unwrap();
                keys.push(id.key());
            }
            keys
        });
    }
    let mut keys = Vec::new();
    while let Some(k) = tasks.join_next().await {
        keys.extend(k.unwrap());
    }
    let original = snapshot(&*a).await;
    assert_eq!(original.len(), 100_000);
    eprintln!("seeded 100k in SQLite: {:.1?}", t.elapsed());
    let t = std::time::Instant::now();

    let s1 = migrate(&a_url, redis_url, "2000");
    assert_eq!(n(&s1, "copied") + n(&s1, "skipped"), 100_000, "{s1}");
    eprintln!("SQLite -> Redis: {:.1?}", t.elapsed());
    let t = std::time::Instant::now();
    let s2 = migrate(redis_url, &c_url, "2000");
    eprintln!("Redis -> SQLite: {:.1?}", t.elapsed());
    assert_eq!(n(&s2, "copied"), 100_000, "{s2}");
    let back = snapshot(&*c).await;
    for k in &keys {
        let got = back.get(k).expect("session lost on the way");
        assert!(same(&original[k], got), "record changed on the way");
    }
    assert_eq!(
        c.sessions_of(&user, now_millis()).await.unwrap().len(),
        10_000,
        "user index rebuilt at the destination"
    );
    // Leave Redis as found.
    for k in &keys {
        let _ = redis.destroy(k).await;
    }
}

/// `migrate` reports progress: plain lines with count, rate and ETA when stderr is not a
/// terminal, and an indicatif bar when it is (run under `script`, which gives it a pty).
#[tokio::test]
async fn migrate_shows_progress_as_lines_or_a_bar() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("from.db").display());
    let src = sessionkit::store::open(&from).await.unwrap();
    for i in 0..500 {
        seed(&*src, None, i, 3_600_000).await;
    }
    drop(src);
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let o = sk(&["migrate", "--from", &from, "--to", &to, "--batch", "50"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = stderr(&o);
    assert!(lines.lines().count() >= 10, "a line per ~10%: {lines}");
    assert!(lines.contains("100% 500/500 (500 copied"), "{lines}");
    assert!(lines.contains("/s ETA "), "rate and ETA: {lines}");
    // On a terminal: the bar.
    let to2 = format!("sqlite://{}", dir.path().join("to2.db").display());
    let cmd = format!(
        "{} migrate --from {from} --to {to2} --batch 50",
        env!("CARGO_BIN_EXE_sessionkit")
    );
    let Ok(o) = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
    else {
        eprintln!("SKIPPED the terminal half: no `script` command");
        return;
    };
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let tty = stdout(&o);
    assert!(tty.contains("sessions"), "the bar's template: {tty}");
    assert!(tty.contains("500 copied"), "{tty}");
}
