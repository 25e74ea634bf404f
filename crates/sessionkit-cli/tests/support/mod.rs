//! Test support: a raw HTTP/1.1 client (so tests can send bytes no well-behaved client would,
//! and pipeline requests), an in-process demo server on a free loopback port, and a handle on
//! the real `sessionkit` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use sessionkit::{Config, Key, Manager, Millis, Page, Record, Result, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The session cookie value set by this response (`Some("")` for a removal).
    pub fn cookie(&self) -> Option<String> {
        let sc = self.headers_named("set-cookie");
        assert!(sc.len() <= 1, "more than one Set-Cookie: {sc:?}");
        let line = sc.first()?;
        let (_, rest) = line.split_once('=')?;
        Some(rest.split(';').next().unwrap_or("").to_owned())
    }

    pub fn csrf(&self) -> String {
        self.header("x-csrf-token")
            .expect("X-CSRF-Token header")
            .to_owned()
    }
}

/// Reads one response from `stream`, using `buf` for bytes already read past earlier responses.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Resp> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("connection closed mid-body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..total]).to_string();
            buf.drain(..total);
            return Ok(Resp {
                status,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builds a request. `cookie` is the session cookie value; `extra` are raw header lines.
pub fn build(
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(c) = cookie {
        r.push_str(&format!("Cookie: __Host-id={c}\r\n"));
    }
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if method == "POST" {
        r.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Sends raw bytes on a fresh connection and reads one response (10 s limit).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Resp> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(bytes).await?;
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf).await
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
        let mut s = TcpStream::connect(addr).await?;
        let all: Vec<u8> = request.repeat(n);
        s.write_all(&all).await?;
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(read_response(&mut s, &mut buf).await?);
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

/// The demo app served in-process on a free loopback port.
pub struct App {
    pub addr: SocketAddr,
    pub manager: Manager,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn start(store: Arc<dyn Store>, config: Config) -> App {
        let manager = Manager::new(store, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = sessionkit_cli::demo::app(manager.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        App {
            addr,
            manager,
            task,
        }
    }

    pub async fn memory() -> App {
        Self::start(Arc::new(sessionkit::MemoryStore::new()), demo_config()).await
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
        self.task.abort();
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
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("server did not print its address: {line:?}"));
        Server { child, addr }
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
    async fn rotate(&self, o: &Key, v: u64, n: &Key, r: &Record, g: Option<Millis>) -> Result<()> {
        self.check()?;
        self.inner.rotate(o, v, n, r, g).await
    }
    async fn destroy(&self, key: &Key) -> Result<bool> {
        self.check()?;
        self.inner.destroy(key).await
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
