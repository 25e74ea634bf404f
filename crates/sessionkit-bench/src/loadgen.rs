//! A bounded HTTP/1.1 load generator for loopback servers.
//!
//! Each connection is a keep-alive loop of `GET path` requests, one in flight at a time. In
//! cookie mode every connection first asks without a cookie, keeps the session cookie it is
//! given, and sends it from then on (one session per connection); otherwise no cookie is ever
//! sent, so a session-creating page makes a new session per request. The run is bounded by time:
//! a warm-up, then a measured window; requests completing in the window are counted.

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
    /// Keep and send the session cookie (one session per connection).
    pub cookie: bool,
    /// Concurrent connections.
    pub connections: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub measure: Duration,
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
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let (plan, stop, ok, bad) = (plan.clone(), stop.clone(), ok.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(_e) = connection(&plan, &stop, &ok).await {
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
    Ok(Outcome {
        requests,
        errors: bad.load(Ordering::Relaxed),
        seconds,
        total: ok.load(Ordering::Relaxed),
    })
}

async fn connection(plan: &Plan, stop: &AtomicBool, ok: &AtomicU64) -> std::io::Result<()> {
    let mut conn = Connection::connect(plan.addr).await?;
    let mut request = sessionkit_http1::get(&plan.path, None);
    let mut have_cookie = false;
    while !stop.load(Ordering::Relaxed) {
        let r = conn.send(&request).await?;
        if r.status != 200 {
            return Err(std::io::Error::other(format!("status {}", r.status)));
        }
        ok.fetch_add(1, Ordering::Relaxed);
        if plan.cookie && !have_cookie {
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
