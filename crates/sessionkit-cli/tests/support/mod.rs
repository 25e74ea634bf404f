//! Test support: a raw HTTP/1.1 client (so tests can send bytes no well-behaved client would,
//! and pipeline requests), an in-process demo server on a free loopback port, a handle on the
//! real `sessionkit` binary, and the MySQL tests' URL and cleanup.

#![allow(dead_code)]

pub mod dbsc;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use sessionkit::{Config, Key, Manager, Millis, Page, Record, Result, Store};

/// A parsed HTTP response (the workspace's one HTTP/1 client).
pub use sessionkit_http1::Response as Resp;

/// What the demo's tests read off a response beyond the generic client.
pub trait DemoResponse {
    /// The session cookie value set by this response (`Some("")` for a removal).
    fn cookie(&self) -> Option<String>;
    /// The `X-CSRF-Token` header (every demo response carries one).
    fn csrf(&self) -> String;
}

impl DemoResponse for Resp {
    fn cookie(&self) -> Option<String> {
        let sc = self.headers_named("set-cookie");
        assert!(sc.len() <= 1, "more than one Set-Cookie: {sc:?}");
        let line = sc.first()?;
        let (_, rest) = line.split_once('=')?;
        Some(rest.split(';').next().unwrap_or("").to_owned())
    }

    fn csrf(&self) -> String {
        self.header("x-csrf-token")
            .expect("X-CSRF-Token header")
            .to_owned()
    }
}

/// Builds a request. `cookie` is the session cookie value; `extra` are raw header lines.
pub fn build(
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[&str],
    body: &str,
) -> Vec<u8> {
    let pair = cookie.map(|c| format!("__Host-id={c}"));
    sessionkit_http1::request(method, path, pair.as_deref(), extra, body)
}

/// Sends raw bytes on a fresh connection and reads one response (10 s limit).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Resp> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut c = sessionkit_http1::Connection::connect(addr).await?;
        c.send(bytes).await
    })
    .await
    .map_err(|_| std::io::Error::other("timed out waiting for a response"))?
}

pub async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Resp {
    raw(addr, &build("GET", path, cookie, &[], ""))
        .await
        .expect("GET")
}

pub async fn post(addr: SocketAddr, path: &str, cookie: Option<&str>, form: &str) -> Resp {
    raw(addr, &build("POST", path, cookie, &[], form))
        .await
        .expect("POST")
}

/// Sends `n` requests back to back on one connection, then reads the `n` responses.
pub async fn pipelined(addr: SocketAddr, request: &[u8], n: usize) -> std::io::Result<Vec<Resp>> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut c = sessionkit_http1::Connection::connect(addr).await?;
        c.write(&request.repeat(n)).await?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(c.read_response().await?);
        }
        Ok(out)
    })
    .await
    .map_err(|_| std::io::Error::other("timed out waiting for pipelined responses"))?
}

/// A session that has a cookie and a CSRF token: starts with one `GET /count`.
pub async fn new_session(addr: SocketAddr) -> (String, String) {
    let r = get(addr, "/count", None).await;
    assert_eq!(r.status, 200);
    (r.cookie().expect("new session cookie"), r.csrf())
}

/// Logs `cookie` in as `name`; returns the new cookie.
pub async fn login(addr: SocketAddr, cookie: &str, csrf: &str, name: &str) -> String {
    let r = post(
        addr,
        "/login",
        Some(cookie),
        &format!("username={name}&csrf_token={csrf}"),
    )
    .await;
    assert!(
        r.status == 303 || r.status == 200,
        "login status {}",
        r.status
    );
    r.cookie().expect("login issues a new cookie")
}

/// Two browsers sign in as one user (on `first` and `second`, which may be different app
/// processes); the first ends all its other sessions; the second is anonymous on its very next
/// request while the first stays signed in.
pub async fn revoke_others_ends_the_other_browser(first: SocketAddr, second: SocketAddr) {
    let user = format!(
        "u{}",
        sessionkit::SessionId::generate().unwrap().key().short()
    );
    let (a0, t) = new_session(first).await;
    let a = login(first, &a0, &t, &user).await;
    let (b0, t) = new_session(second).await;
    let b = login(second, &b0, &t, &user).await;
    assert_eq!(get(second, "/whoami", Some(&b)).await.body, user);
    let list = get(second, "/sessions", Some(&b)).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body.matches("\"current\"").count(), 2, "{}", list.body);
    let csrf = get(first, "/whoami", Some(&a)).await.csrf();
    let r = post(
        first,
        "/sessions/revoke-others",
        Some(&a),
        &format!("csrf_token={csrf}"),
    )
    .await;
    assert!(
        r.status == 303 || r.status == 200,
        "revoke-others: {}",
        r.status
    );
    assert_eq!(get(second, "/whoami", Some(&b)).await.body, "");
    assert_eq!(get(first, "/whoami", Some(&a)).await.body, user);
}

pub use sessionkit_cli::demo::Framework;

/// One test body, run on both frameworks: `on_both_frameworks! { #[tokio::test] async fn
/// name(fw) { .. } }` makes the tests `name::axum` and `name::actix`, each with `fw` set.
#[macro_export]
macro_rules! on_both_frameworks {
    ($(#[$attr:meta])* async fn $name:ident($fw:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn axum() {
                let $fw = Framework::Axum;
                $body
            }

            $(#[$attr])*
            async fn actix() {
                let $fw = Framework::Actix;
                $body
            }
        }
    };
}

/// The demo app served in-process on a free loopback port, on one of the frameworks.
pub struct App {
    pub addr: SocketAddr,
    pub manager: Manager,
    task: tokio::task::JoinHandle<()>,
    /// Stops the actix-web server (its workers are threads of their own).
    actix: Option<actix_web::dev::ServerHandle>,
}

impl App {
    pub async fn start(fw: Framework, store: Arc<dyn Store>, config: Config) -> App {
        Self::start_with(fw, store, config, Default::default()).await
    }

    pub async fn start_with(
        fw: Framework,
        store: Arc<dyn Store>,
        config: Config,
        options: sessionkit_cli::demo::DemoOptions,
    ) -> App {
        let manager = Manager::new(store, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (task, actix) = match fw {
            Framework::Axum => {
                let app = sessionkit_cli::demo::app_with(manager.clone(), options);
                let task = tokio::spawn(async move {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    axum::serve(listener, app).await.unwrap();
                });
                (task, None)
            }
            Framework::Actix => {
                let server = sessionkit_cli::demo::actix::server(
                    manager.clone(),
                    options,
                    None,
                    listener.into_std().unwrap(),
                )
                .unwrap();
                let handle = server.handle();
                let task = tokio::spawn(async move { server.await.unwrap() });
                (task, Some(handle))
            }
        };
        App {
            addr,
            manager,
            task,
            actix,
        }
    }

    pub async fn memory(fw: Framework) -> App {
        Self::start(fw, Arc::new(sessionkit::MemoryStore::new()), demo_config()).await
    }

    /// The stored record of a cookie value, if any.
    pub async fn record(&self, cookie: &str) -> Option<sessionkit::Record> {
        let key = self.manager.key_of(cookie)?;
        self.manager
            .store()
            .load(&key, sessionkit::now_millis())
            .await
            .unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        match &self.actix {
            // The stop command is sent at once; the server task then winds the workers down.
            Some(handle) => drop(handle.stop(false)),
            None => self.task.abort(),
        }
    }
}

/// The configuration `sessionkit serve` uses.
pub fn demo_config() -> Config {
    let mut c = Config::default();
    c.cookie.host_prefix = true;
    c
}

/// The real `sessionkit` binary running `serve`; killed (SIGKILL) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The rest of the server's standard output.
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessionkit"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            // SESSIONKIT_TEST_SERVER_LOGS=1 shows the servers' logs when debugging a test.
            .stderr(
                if std::env::var_os("SESSIONKIT_TEST_SERVER_LOGS").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                },
            )
            .spawn()
            .expect("spawn sessionkit serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("server did not print its address: {line:?}"));
        Server {
            child,
            addr,
            stdout,
        }
    }

    /// `serve` on `fw` with `args`.
    pub fn start_on(fw: Framework, args: &[&str]) -> Server {
        let fw = match fw {
            Framework::Axum => "axum",
            Framework::Actix => "actix",
        };
        Server::start(&[&["--framework", fw], args].concat())
    }

    /// The next line the server prints.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real MemoryStore behind a switch that makes every call fail, as a dead backend would.
#[derive(Debug, Default)]
pub struct Switchable {
    pub inner: sessionkit::MemoryStore,
    pub down: AtomicBool,
    /// How many calls reached the store.
    pub calls: AtomicU64,
}

impl Switchable {
    fn check(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(sessionkit::Error::backend(
                "switchable",
                "call",
                "backend is down",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Switchable {
    fn kind(&self) -> &'static str {
        "switchable"
    }
    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        self.check()?;
        self.inner.load(key, now).await
    }
    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        self.check()?;
        self.inner.create(key, record).await
    }
    async fn save(&self, key: &Key, record: &Record, v: u64) -> Result<()> {
        self.check()?;
        self.inner.save(key, record, v).await
    }
    async fn touch(&self, key: &Key, at: Millis, exp: Millis) -> Result<bool> {
        self.check()?;
        self.inner.touch(key, at, exp).await
    }
    async fn rotate(&self, o: &Key, v: u64, n: &Key, r: &Record, a: Option<&Record>) -> Result<()> {
        self.check()?;
        self.inner.rotate(o, v, n, r, a).await
    }
    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        self.check()?;
        self.inner.take(key).await
    }
    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        self.check()?;
        self.inner.gc(now, limit).await
    }
    async fn len(&self, now: Millis) -> Result<u64> {
        self.check()?;
        self.inner.len(now).await
    }
    async fn scan(&self, c: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        self.check()?;
        self.inner.scan(c, limit, now).await
    }
    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        self.check()?;
        self.inner.sessions_of(user, now).await
    }
    async fn destroy_user(&self, user: &str) -> Result<u64> {
        self.check()?;
        self.inner.destroy_user(user).await
    }
    async fn ping(&self) -> Result<()> {
        self.check()
    }
}

/// Every durable and shared store the machine offers, each in a namespace of its own named by
/// `tag` (SQLite and files under `dir`); a missing server is skipped unless
/// SESSIONKIT_REQUIRE_SERVICES=1.
pub async fn shared_stores(
    dir: &std::path::Path,
    tag: &str,
) -> Vec<(String, Arc<dyn sessionkit::Store>)> {
    let redis = std::env::var("SESSIONKIT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let postgres = std::env::var("SESSIONKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut urls = vec![
        format!("sqlite://{}", dir.join("s.db").display()),
        format!("file://{}", dir.join("files").display()),
        format!("{redis}?prefix={tag}:"),
        format!("{postgres}?schema={tag}"),
        format!("{}?table={tag}", mysql_url()),
    ];
    if let Ok(cluster) = std::env::var("SESSIONKIT_REDIS_CLUSTER") {
        urls.push(format!("{cluster}?prefix={tag}:"));
    }
    let required = std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let mut stores = Vec::new();
    for url in urls {
        match sessionkit::store::open(&url).await {
            Ok(s) => stores.push((url, s)),
            Err(e) if required => panic!("{url} is required but unavailable: {e}"),
            Err(e) => eprintln!("SKIPPED: {url}: {e}"),
        }
    }
    stores
}

/// Removes what [`shared_stores`] made for `tag` on the servers (best effort).
pub async fn drop_shared(tag: &str) {
    let redis = std::env::var("SESSIONKIT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cluster = std::env::var("SESSIONKIT_REDIS_CLUSTER").ok();
    for base in std::iter::once(redis).chain(cluster) {
        let url = format!("{base}?prefix={tag}:");
        if let Ok(redis) = sessionkit::store::redis::RedisStore::open(&url).await {
            let _ = redis.purge_prefix().await;
        }
    }
    drop_mysql_table(tag).await;
    let postgres = std::env::var("SESSIONKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let _ = std::process::Command::new("psql")
        .args([
            postgres.as_str(),
            "-qc",
            &format!("drop schema if exists {tag} cascade"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The MySQL/MariaDB server of the tests (SESSIONKIT_MYSQL_URL).
pub fn mysql_url() -> String {
    std::env::var("SESSIONKIT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Best effort: drops a test's MySQL table and its `sessionkit_meta` row.
pub async fn drop_mysql_table(table: &str) {
    use mysql_async::prelude::Queryable;
    let Ok(opts) = mysql_async::Opts::from_url(&mysql_url()) else {
        return;
    };
    if let Ok(mut conn) = mysql_async::Conn::new(opts).await {
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS `{table}`"))
            .await;
        let _ = conn
            .exec_drop("DELETE FROM sessionkit_meta WHERE name = ?", (table,))
            .await;
        let _ = conn.disconnect().await;
    }
}
