//! Several `sessionkit serve` processes sharing one store (Redis, Redis Cluster, Postgres,
//! MySQL): a
//! client moving between nodes keeps its login and count, concurrent clients split across nodes
//! count exactly, and logout on one node is effective at once on the other. Also the fault
//! behaviour over HTTP with a real redis-server that is killed, stalled and restarted.
//!
//! Servers absent → the test prints SKIPPED, unless `SESSIONKIT_REQUIRE_SERVICES=1`.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionkit::SessionId;
use support::*;

fn required() -> bool {
    std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Opens `url` to check the service is there; skips (or fails when required) otherwise.
async fn service(what: &str, url: Option<String>) -> Option<String> {
    let why = match &url {
        None => "no URL configured".to_owned(),
        Some(u) => match sessionkit::store::open(u).await {
            Ok(store) => match store.ping().await {
                Ok(()) => return url,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        },
    };
    assert!(
        !required(),
        "{what} is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {why}"
    );
    eprintln!("SKIPPED: {what} unavailable ({why})");
    None
}

fn unique() -> String {
    SessionId::generate().unwrap().key().short()
}

fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn postgres_url() -> String {
    std::env::var("SESSIONKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

async fn two_nodes_share_sessions(store: &str) {
    let a = Server::start(&["--store", store]);
    let b = Server::start(&["--store", store]);
    let nodes = [a.addr, b.addr];

    // Alternating between nodes keeps the login and the count.
    let (anon, csrf) = new_session(nodes[0]).await;
    let cookie = login(nodes[1], &anon, &csrf, "lee").await;
    for i in 0..10 {
        let node = nodes[i % 2];
        assert_eq!(get(node, "/whoami", Some(&cookie)).await.body, "lee");
        let r = get(node, "/count", Some(&cookie)).await;
        assert_eq!(
            r.body.trim(),
            (i + 2).to_string(),
            "visit {i} on node {}",
            i % 2
        );
    }
    // The pre-login ID is dead on both nodes.
    for node in nodes {
        assert_eq!(get(node, "/whoami", Some(&anon)).await.body, "");
    }

    // 8 clients split across both nodes, pipelining on one cookie: exact final count.
    let (shared, _) = new_session(nodes[0]).await;
    let req = build("GET", "/count", Some(&shared), &[], "");
    let mut clients = Vec::new();
    for i in 0..8 {
        let (node, req) = (nodes[i % 2], req.clone());
        clients.push(tokio::spawn(async move {
            pipelined(node, &req, 25).await.unwrap()
        }));
    }
    for c in clients {
        for r in c.await.unwrap() {
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(
        get(nodes[1], "/count", Some(&shared)).await.body.trim(),
        "202"
    );

    // "End all other sessions" on one node is effective at once on the other.
    revoke_others_ends_the_other_browser(nodes[0], nodes[1]).await;

    // Logout on one node is effective at once on the other.
    let csrf = get(nodes[0], "/whoami", Some(&cookie)).await.csrf();
    let r = post(
        nodes[0],
        "/logout",
        Some(&cookie),
        &format!("csrf_token={csrf}"),
    )
    .await;
    assert!(r.status == 303 || r.status == 200);
    assert_eq!(get(nodes[1], "/whoami", Some(&cookie)).await.body, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis() {
    let url = with_param(&redis_url(), "prefix", &format!("mn{}:", unique()));
    if let Some(url) = service("redis", Some(url)).await {
        two_nodes_share_sessions(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_cluster() {
    let url = std::env::var("SESSIONKIT_REDIS_CLUSTER")
        .ok()
        .map(|u| with_param(&u, "prefix", &format!("mn{}:", unique())));
    if let Some(url) = service("redis cluster (SESSIONKIT_REDIS_CLUSTER)", url).await {
        two_nodes_share_sessions(&url).await;
    }
}

/// Two processes on one machine may share an embedded store too (a pre-fork deployment, or a
/// restart overlapping the old process): the same guarantees hold across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    two_nodes_share_sessions(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_file_store() {
    let dir = tempfile::tempdir().unwrap();
    two_nodes_share_sessions(&format!("file://{}", dir.path().join("sessions").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres() {
    let schema = format!("mn_{}", unique());
    let url = with_param(&postgres_url(), "schema", &schema);
    if let Some(url) = service("postgres", Some(url)).await {
        two_nodes_share_sessions(&url).await;
        // Best effort: leave no test schema behind.
        let _ = Command::new("psql")
            .args([
                postgres_url().as_str(),
                "-qc",
                &format!("drop schema if exists {schema} cascade"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_mysql() {
    let table = format!("mn_{}", unique());
    let url = with_param(&mysql_url(), "table", &table);
    if let Some(url) = service("mysql", Some(url)).await {
        two_nodes_share_sessions(&url).await;
        drop_mysql_table(&table).await;
    }
}

/// A redis-server of the test's own on a free loopback port, persisting every write so that a
/// SIGKILL loses nothing acknowledged. Killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start(port: u16, dir: tempfile::TempDir) -> Option<PrivateRedis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(PrivateRedis { child, port, dir })
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn all_503_without_cookies(node: SocketAddr, cookie: &str) {
    for (path, c) in [
        ("/count", Some(cookie)),
        ("/count", None),
        ("/whoami", Some(cookie)),
    ] {
        let start = Instant::now();
        let r = get(node, path, c).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(
            r.headers_named("set-cookie").is_empty(),
            "{path}: no cookie on failure"
        );
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{path} took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(get(node, "/healthz", None).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_and_the_app_recovers_when_it_returns() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!required(), "redis-server is required but not installed");
        eprintln!("SKIPPED: redis-server not installed");
        return;
    }
    let port = free_port();
    let redis =
        PrivateRedis::start(port, tempfile::tempdir().unwrap()).expect("private redis starts");
    let url = format!("redis://127.0.0.1:{port}");
    let node = Server::start(&["--store", &url, "--store-timeout", "1s"]);
    let (mine, _) = new_session(node.addr).await;
    let (other, _) = new_session(node.addr).await;
    assert_eq!(get(node.addr, "/count", Some(&mine)).await.body.trim(), "2");

    // Stalled (SIGSTOP): requests time out into 503s instead of hanging.
    redis.signal("-STOP");
    all_503_without_cookies(node.addr, &mine).await;
    redis.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(node.addr, "/healthz", None).await.status, 200);
    assert_eq!(get(node.addr, "/count", Some(&mine)).await.body.trim(), "3");

    // Killed while traffic flows: clear 503s, never a cookie, never a panic.
    let hammer = {
        let (addr, mine) = (node.addr, mine.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                let r = get(addr, "/count", Some(&mine)).await;
                if r.status != 200 {
                    assert!(r.headers_named("set-cookie").is_empty());
                }
                statuses.push(r.status);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let redis = redis.restart_after(|| all_503_without_cookies_blocking(node.addr, &mine));
    let statuses = hammer.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let redis = redis.expect("redis restarts");

    // Back: same app process, no restart. Sessions are intact and unmixed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(node.addr, "/healthz", None).await.status != 200 {
        assert!(Instant::now() < deadline, "the app did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let successes = statuses.iter().filter(|s| **s == 200).count() as u64;
    let n: u64 = get(node.addr, "/count", Some(&mine))
        .await
        .body
        .trim()
        .parse()
        .unwrap();
    // Every acknowledged count survived. A write the server applied just before it died may
    // have been answered with 503 (its reply was lost), so it may count too: never more than
    // the requests sent.
    let sent = statuses.len() as u64;
    assert!(
        n > 3 + successes && n <= 3 + sent + 1,
        "count {n}, acknowledged {successes} of {sent}"
    );
    assert_eq!(
        get(node.addr, "/count", Some(&other)).await.body.trim(),
        "2"
    );
    drop(redis);
}

fn all_503_without_cookies_blocking(node: SocketAddr, cookie: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(all_503_without_cookies(node, cookie));
}

impl PrivateRedis {
    /// Kills the server, runs `while_down` (on a plain thread: it blocks), then restarts it.
    fn restart_after(mut self, while_down: impl FnOnce() + Send) -> Option<PrivateRedis> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::scope(|s| {
            s.spawn(while_down).join().unwrap();
        });
        let (port, dir) = (
            self.port,
            std::mem::replace(&mut self.dir, tempfile::tempdir().ok()?),
        );
        Self::start(port, dir)
    }
}
