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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let mut stream = TcpStream::connect(plan.addr).await?;
    stream.set_nodelay(true)?;
    let bare = format!("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", plan.path);
    let mut request = bare.clone().into_bytes();
    let mut buf = Vec::with_capacity(4096);
    let mut have_cookie = false;
    while !stop.load(Ordering::Relaxed) {
        stream.write_all(&request).await?;
        let (status, set_cookie, _) = read_response(&mut stream, &mut buf).await?;
        if status != 200 {
            return Err(std::io::Error::other(format!("status {status}")));
        }
        ok.fetch_add(1, Ordering::Relaxed);
        if plan.cookie && !have_cookie {
            let Some(cookie) = set_cookie else {
                return Err(std::io::Error::other("no Set-Cookie on the first answer"));
            };
            request = format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n",
                plan.path
            )
            .into_bytes();
            have_cookie = true;
        }
    }
    Ok(())
}

/// One keep-alive connection sending one request at a time, for scripted sequences (such as
/// counting store round trips per request) rather than load.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (loopback only).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::other("the client only targets loopback"));
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
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
        let request = match cookie {
            Some(c) => format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {c}\r\n\r\n"),
            None => format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        };
        self.stream.write_all(request.as_bytes()).await?;
        read_response(&mut self.stream, &mut self.buf).await
    }
}

/// Reads one response; returns its status, the `name=value` part of its `Set-Cookie` and its
/// body.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, Option<String>, String)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| std::io::Error::other("non-UTF-8 response head"))?;
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut len = 0usize;
            let mut cookie = None;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("set-cookie") {
                    cookie = value.trim().split(';').next().map(str::to_owned);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(std::io::Error::other("chunked answers are not supported"));
                }
            }
            let total = end + 4 + len;
            while buf.len() < total {
                read_more(stream, buf).await?;
            }
            let body = String::from_utf8_lossy(&buf[end + 4..total]).into_owned();
            buf.drain(..total);
            return Ok((status, cookie, body));
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
