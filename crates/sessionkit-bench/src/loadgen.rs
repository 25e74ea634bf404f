//! A bounded HTTP/1.1 load generator for loopback servers.
//!
//! Each connection is a keep-alive loop of `GET path` requests, one in flight at a time. What
//! cookies it sends is the [`Cookies`] mode: none (a session-creating page makes a new session
//! per request), one session per connection, or a few sessions shared by all connections (one
//! hot session when it is one: a page firing parallel requests). The run is bounded by time: a
//! warm-up, then a measured window; requests completing in the window are counted. Shared
//! sessions are read back at the end, so a count page's lost updates are counted too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkit_http1::Connection;

/// What to send.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Server address (must be loopback).
    pub addr: SocketAddr,
    /// Request path, e.g. `/count`.
    pub path: String,
    /// Which session cookies to send.
    pub cookies: Cookies,
    /// Concurrent connections.
    pub connections: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub measure: Duration,
}

/// Which session cookies the connections send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookies {
    /// None: every request is a new visitor.
    None,
    /// Each connection keeps the cookie of its first answer (one session per connection).
    PerConnection,
    /// This many sessions, made before the run, shared round-robin by the connections (1: one
    /// hot session with every connection on it).
    Shared(usize),
}

impl Cookies {
    /// The mode as a command-line word: `none`, `conn`, or `shared<N>`.
    pub fn arg(self) -> String {
        match self {
            Self::None => "none".into(),
            Self::PerConnection => "conn".into(),
            Self::Shared(n) => format!("shared{n}"),
        }
    }

    /// Parses [`Cookies::arg`]'s words (and `0`/`1` for none/per connection).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" | "0" => Some(Self::None),
            "conn" | "1" => Some(Self::PerConnection),
            _ => s
                .strip_prefix("shared")?
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Self::Shared),
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Requests answered with 200 inside the measured window.
    pub requests: u64,
    /// Non-200 answers or broken connections (any at all makes the run suspect).
    pub errors: u64,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Requests answered with 200 over the whole run, warm-up included.
    pub total: u64,
    /// In [`Cookies::Shared`] mode on a count page: increments the server lost (answered
    /// requests minus what the sessions' counts show at the end); 0 otherwise.
    pub lost: u64,
}

impl Outcome {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs `plan` on the current tokio runtime and returns the counts.
pub async fn run(plan: &Plan) -> std::io::Result<Outcome> {
    if !plan.addr.ip().is_loopback() {
        return Err(std::io::Error::other(
            "the load generator only targets loopback",
        ));
    }
    // Shared sessions are made first, each by one request (which counts 1 on a count page).
    let shared: Vec<Arc<(String, AtomicU64)>> = match plan.cookies {
        Cookies::Shared(n) => {
            let mut client = Client::connect(plan.addr).await?;
            let mut cookies = Vec::with_capacity(n);
            for _ in 0..n {
                let (status, cookie) = client.get(&plan.path, None).await?;
                let cookie = cookie.filter(|_| status == 200).ok_or_else(|| {
                    std::io::Error::other("no session cookie for a shared session")
                })?;
                cookies.push(Arc::new((cookie, AtomicU64::new(1))));
            }
            cookies
        }
        _ => Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..plan.connections.max(1) {
        let (plan, stop, ok, bad) = (plan.clone(), stop.clone(), ok.clone(), bad.clone());
        let session = (!shared.is_empty()).then(|| shared[i % shared.len()].clone());
        tasks.push(tokio::spawn(async move {
            if let Err(_e) = connection(&plan, session.as_deref(), &stop, &ok).await {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    let before = ok.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(plan.measure).await;
    let requests = ok.load(Ordering::Relaxed) - before;
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Read each shared session's count back (this request counts one more).
    let mut lost = 0;
    if !shared.is_empty() {
        let mut client = Client::connect(plan.addr).await?;
        for session in &shared {
            let (status, _, body) = client.fetch(&plan.path, Some(&session.0)).await?;
            let shown: Option<u64> = body.trim().parse().ok();
            let answered = session.1.load(Ordering::Relaxed) + 1;
            match shown {
                Some(shown) if status == 200 => lost += answered.saturating_sub(shown),
                _ => {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(Outcome {
        requests,
        errors: bad.load(Ordering::Relaxed),
        seconds,
        total: ok.load(Ordering::Relaxed),
        lost,
    })
}

/// One connection's loop; `shared` is its shared session (cookie, answers counted) if any.
async fn connection(
    plan: &Plan,
    shared: Option<&(String, AtomicU64)>,
    stop: &AtomicBool,
    ok: &AtomicU64,
) -> std::io::Result<()> {
    let mut conn = Connection::connect(plan.addr).await?;
    let mut request = sessionkit_http1::get(&plan.path, shared.map(|s| s.0.as_str()));
    let mut have_cookie = false;
    while !stop.load(Ordering::Relaxed) {
        let r = conn.send(&request).await?;
        if r.status != 200 {
            return Err(std::io::Error::other(format!("status {}", r.status)));
        }
        ok.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = shared {
            s.1.fetch_add(1, Ordering::Relaxed);
        }
        if plan.cookies == Cookies::PerConnection && !have_cookie {
            let Some(cookie) = r.set_cookie_pair() else {
                return Err(std::io::Error::other("no Set-Cookie on the first answer"));
            };
            request = sessionkit_http1::get(&plan.path, Some(cookie));
            have_cookie = true;
        }
    }
    Ok(())
}

/// One keep-alive connection sending one request at a time, for scripted sequences (such as
/// counting store round trips per request) rather than load.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
}

impl Client {
    /// Connects to `addr` (loopback only).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::other("the client only targets loopback"));
        }
        Ok(Self {
            conn: Connection::connect(addr).await?,
        })
    }

    /// `GET path`, with `cookie` (a `name=value` pair) if given; returns the status and the
    /// `name=value` part of the answer's `Set-Cookie`, if any.
    pub async fn get(
        &mut self,
        path: &str,
        cookie: Option<&str>,
    ) -> std::io::Result<(u16, Option<String>)> {
        self.fetch(path, cookie).await.map(|(s, c, _)| (s, c))
    }

    /// [`get`](Self::get), also returning the body (lossily decoded as UTF-8).
    pub async fn fetch(
        &mut self,
        path: &str,
        cookie: Option<&str>,
    ) -> std::io::Result<(u16, Option<String>, String)> {
        let r = self.conn.send(&sessionkit_http1::get(path, cookie)).await?;
        let cookie = r.set_cookie_pair().map(str::to_owned);
        Ok((r.status, cookie, r.body))
    }
}
