//! Faults: a private redis-server (started here on a free loopback port) is killed while
//! requests flow, then restarted; and frozen (SIGSTOP) to act as a stalled store. Every
//! operation must end promptly with an "unavailable" error, and the same store object and
//! manager must work again once the server is back.
#![cfg(feature = "redis")]

mod shared_stores;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkit::store::redis::{RedisOptions, RedisStore};
use sessionkit::{now_millis, Error, Store};
use shared_stores::*;

/// A redis-server child process on a private port; killed on drop.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return unavailable("redis-server binary", "not installed");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("sessionkit-fault-{}", token()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self {
            port,
            dir,
            child: None,
        };
        s.launch();
        Some(s)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A frozen server would ignore SIGTERM; wake it before killing.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options() -> RedisOptions {
    RedisOptions {
        prefix: format!("skfault:{}:", token()),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(800),
        ..RedisOptions::default()
    }
}

/// Runs `fut`, failing the test if it takes longer than `limit` (a hang).
async fn prompt<T>(what: &str, limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung for more than {limit:?}"),
    }
}

fn expect_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(e) if e.is_unavailable() => {}
        other => panic!("{what}: expected an unavailable error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::open_with(&server.url(), options())
            .await
            .unwrap(),
    );
    let m = fault_manager(store.clone());
    let (n, cookie) = count(&m, None).await.unwrap();
    assert_eq!(n, 1);
    let cookie = cookie.unwrap();

    // Requests flow on one session while the server goes away.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let (m, cookie, stop) = (m.clone(), cookie.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut down, mut last) = (0u32, 0u32, 0u64);
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = prompt(
                    "a request",
                    Duration::from_secs(5),
                    count(&m, Some(&cookie)),
                )
                .await;
                match r {
                    Ok((n, set)) => {
                        // Before the outage the count climbs; no other session's data appears.
                        assert!(set.is_none() || n == 1, "unexpected new cookie mid-session");
                        if set.is_none() {
                            assert!(
                                n > last || last == 0 || n == 1,
                                "count went back: {last} -> {n}"
                            );
                            last = n;
                        }
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(e.is_unavailable(), "not an unavailable error: {e}");
                        down += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (ok, down)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // While down: every kind of call fails promptly and clearly.
    let limit = Duration::from_secs(5);
    let k = new_key();
    expect_unavailable(
        "load",
        prompt("load", limit, store.load(&k, now_millis())).await,
    );
    expect_unavailable(
        "create",
        prompt("create", limit, store.create(&k, &record(60_000))).await,
    );
    expect_unavailable(
        "save",
        prompt("save", limit, store.save(&k, &record(60_000), 1)).await,
    );
    expect_unavailable("len", prompt("len", limit, store.len(now_millis())).await);
    expect_unavailable("gc", prompt("gc", limit, store.gc(now_millis(), 10)).await);
    expect_unavailable("ping", prompt("ping", limit, store.ping()).await);
    expect_unavailable("manager ping", prompt("ping", limit, m.ping()).await);
    expect_unavailable(
        "request",
        prompt("request", limit, count(&m, Some(&cookie))).await,
    );
    let s = m.start(&headers(Some(&cookie)));
    expect_unavailable(
        "session read",
        prompt("read", limit, s.get::<u64>("count")).await,
    );
    expect_unavailable("finish", prompt("finish", limit, m.finish(&s)).await);

    // Back again (empty: the server keeps nothing across restarts): the same objects recover.
    server.launch();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m.ping().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (ok, down) = flow.await.unwrap();
    assert!(ok > 0 && down > 0, "flow saw ok={ok} down={down}");
    // The old session died with the server's memory: a fresh one starts, and counts.
    let (n, fresh) = count(&m, Some(&cookie)).await.unwrap();
    assert_eq!(n, 1);
    let fresh = fresh.expect("a new cookie");
    assert_eq!(count(&m, Some(&fresh)).await.unwrap().0, 2);
    let k = new_key();
    store.create(&k, &record(60_000)).await.unwrap();
    assert!(store.load(&k, now_millis()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_times_out_then_recovers() {
    let Some(server) = Server::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::open_with(&server.url(), options())
            .await
            .unwrap(),
    );
    let m = fault_manager(store.clone());
    let (_, cookie) = count(&m, None).await.unwrap();
    let cookie = cookie.unwrap();

    server.signal("-STOP");
    let limit = Duration::from_secs(5);
    // The store's own response timeout ends the call...
    expect_unavailable(
        "load",
        prompt("load", limit, store.load(&new_key(), now_millis())).await,
    );
    // ...and the manager's store timeout bounds every request.
    let r = prompt("request", limit, count(&m, Some(&cookie))).await;
    expect_unavailable("request", r);
    server.signal("-CONT");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match count(&m, Some(&cookie)).await {
            Ok((n, None)) => {
                assert!(n >= 2);
                break;
            }
            Ok((_, Some(_))) => panic!("session lost after a stall"),
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "no recovery after the stall: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Total commands the server has processed (INFO counts itself after answering).
async fn commands_processed(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// On a private server nothing else talks: a read costs exactly one command (one round trip),
/// and an unchanged session with a fresh touch costs no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_one_command() {
    let Some(server) = Server::start() else {
        return;
    };
    let store = Arc::new(
        RedisStore::open_with(&server.url(), options())
            .await
            .unwrap(),
    );
    let k = new_key();
    store.create(&k, &record(60_000)).await.unwrap();
    let before = commands_processed(&server.url()).await;
    for _ in 0..10 {
        assert!(store.load(&k, now_millis()).await.unwrap().is_some());
    }
    let after = commands_processed(&server.url()).await;
    // 10 loads + the first INFO (counted once it has answered).
    assert_eq!(after - before, 11);
    // Through the manager: a read-only request on a recently touched session is one command.
    let m = fault_manager(store.clone());
    let (_, cookie) = count(&m, None).await.unwrap();
    let cookie = cookie.unwrap();
    let before = commands_processed(&server.url()).await;
    let s = m.start(&headers(Some(&cookie)));
    assert_eq!(s.get::<u64>("count").await.unwrap(), Some(1));
    m.finish(&s).await.unwrap();
    let after = commands_processed(&server.url()).await;
    assert_eq!(
        after - before,
        2,
        "a read-only request cost more than one command"
    );
}
