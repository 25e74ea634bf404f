//! `sessionkit bench`: a bounded load, either HTTP against a running server (each virtual client
//! keeps its cookie and a keep-alive connection and requests `--path`, `/count` by default) or
//! store-level (create, load, save, touch on a store URL). Prints throughput and latency
//! percentiles. Every run is bounded by `--requests` and by `--duration`, whichever comes first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use sessionkit::{now_millis, Record, SessionId, Store};

use crate::admin::{open_store, AdminResult, Failure};
use crate::duration;

/// Arguments of `sessionkit bench`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["url", "store"]))]
pub struct BenchArgs {
    /// A running server's base URL, e.g. http://127.0.0.1:8080 (plain HTTP/1.1).
    #[arg(long)]
    pub url: Option<String>,
    /// A store URL: benchmark the store itself (create, load, save, touch).
    #[arg(long)]
    pub store: Option<String>,
    /// Path requested in HTTP mode.
    #[arg(long, default_value = "/count")]
    pub path: String,
    /// Total requests (HTTP) or session lifecycles (store: 4 calls each).
    #[arg(long, default_value_t = 10_000)]
    pub requests: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Stop after this long even if requests remain.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub duration: Duration,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Latency summary of one kind of operation.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    /// Operation name (`http` or a store call).
    pub op: String,
    /// Completed operations.
    pub count: u64,
    /// Operations per second over the whole run.
    pub per_sec: f64,
    /// Percentiles in microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// What `bench --json` prints.
#[derive(Serialize, Debug)]
pub struct Report {
    /// `http` or `store`.
    pub mode: &'static str,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Failed operations (HTTP status >= 400 or I/O errors; store errors).
    pub errors: u64,
    /// One entry per operation kind.
    pub ops: Vec<Latency>,
}

fn summarize(op: &str, mut us: Vec<u64>, secs: f64) -> Latency {
    us.sort_unstable();
    let pick = |q: f64| -> u64 {
        if us.is_empty() {
            0
        } else {
            us[((us.len() - 1) as f64 * q).round() as usize]
        }
    };
    Latency {
        op: op.to_owned(),
        count: us.len() as u64,
        per_sec: us.len() as f64 / secs.max(1e-9),
        p50_us: pick(0.50),
        p90_us: pick(0.90),
        p99_us: pick(0.99),
        max_us: us.last().copied().unwrap_or(0),
    }
}

/// `sessionkit bench`.
pub async fn bench(args: BenchArgs) -> AdminResult {
    if args.concurrency == 0 || args.requests == 0 {
        return Err(Failure::usage(
            "--concurrency and --requests must be at least 1",
        ));
    }
    let report = match (&args.url, &args.store) {
        (Some(url), None) => http(&args, url).await?,
        (None, Some(store)) => store_bench(&args, store).await?,
        _ => return Err(Failure::usage("give exactly one of --url or --store")),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("plain struct"));
    } else {
        println!(
            "{} bench: {:.2}s, {} error(s)",
            report.mode, report.seconds, report.errors
        );
        println!(
            "{:<8} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "per sec", "p50 µs", "p90 µs", "p99 µs", "max µs"
        );
        for l in &report.ops {
            println!(
                "{:<8} {:>9} {:>11.0} {:>9} {:>9} {:>9} {:>9}",
                l.op, l.count, l.per_sec, l.p50_us, l.p90_us, l.p99_us, l.max_us
            );
        }
    }
    if report.ops.iter().all(|l| l.count == 0) {
        return Err(Failure::runtime("no operation succeeded"));
    }
    Ok(())
}

/// `http://host:port[/prefix]` → (`host:port`, prefix).
fn parse_http_url(url: &str) -> AdminResult<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Failure::usage(format!(
            "bad --url {url:?}: expected http://HOST:PORT (plain HTTP; put TLS in front yourself)"
        ))
    })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(Failure::usage(format!("bad --url {url:?}: no host")));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, prefix.to_owned()))
}

/// Budget shared by the workers: hands out request slots until `requests` or the deadline.
struct Budget {
    left: AtomicU64,
    deadline: Instant,
}

impl Budget {
    fn take(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }
}

async fn http(args: &BenchArgs, url: &str) -> AdminResult<Report> {
    let (authority, prefix) = parse_http_url(url)?;
    let path = format!("{prefix}{}", args.path);
    // Fail fast with a clear message if nothing listens there.
    tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| Failure::runtime(format!("cannot connect to {authority}: {e}")))?;
    let budget = Arc::new(Budget {
        left: AtomicU64::new(args.requests),
        deadline: Instant::now() + args.duration,
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (budget, authority, path) = (budget.clone(), authority.clone(), path.clone());
        tasks.spawn(async move {
            let mut client = Client {
                authority,
                conn: None,
                cookie: None,
            };
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while budget.take() {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), client.get(&path)).await {
                    Ok(Ok(status)) if status < 400 => lat.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors += 1;
                        client.conn = None;
                    }
                }
            }
            (lat, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (lat, e) = r.map_err(|e| Failure::runtime(format!("bench task failed: {e}")))?;
        all.extend(lat);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Report {
        mode: "http",
        seconds: secs,
        errors,
        ops: vec![summarize("http", all, secs)],
    })
}

/// A keep-alive client that keeps the session cookie it is given.
struct Client {
    authority: String,
    conn: Option<sessionkit_http1::Connection>,
    cookie: Option<String>,
}

impl Client {
    async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        if self.conn.is_none() {
            self.conn = Some(sessionkit_http1::Connection::connect(&self.authority).await?);
        }
        let conn = self.conn.as_mut().expect("just set");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.authority);
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        req.push_str("\r\n");
        let r = conn.send(req.as_bytes()).await?;
        if let Some(c) = r.set_cookie_pair() {
            // `name=value` of the session cookie; an empty value is a removal.
            match c.split_once('=') {
                Some((_, "")) | None => self.cookie = None,
                Some(_) => self.cookie = Some(c.to_owned()),
            }
        }
        if r.closes() {
            self.conn = None;
        }
        Ok(r.status)
    }
}

const STORE_OPS: [&str; 5] = ["create", "load", "save", "touch", "destroy"];

async fn store_bench(args: &BenchArgs, url: &str) -> AdminResult<Report> {
    let store = open_store(url).await?;
    let budget = Arc::new(Budget {
        left: AtomicU64::new(args.requests),
        deadline: Instant::now() + args.duration,
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (budget, store) = (budget.clone(), store.clone());
        tasks.spawn(async move { lifecycles(&*store, &budget).await });
    }
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); STORE_OPS.len()];
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r.map_err(|e| Failure::runtime(format!("bench task failed: {e}")))?;
        for (all, mine) in lat.iter_mut().zip(l) {
            all.extend(mine);
        }
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Report {
        mode: "store",
        seconds: secs,
        errors,
        ops: STORE_OPS
            .iter()
            .zip(lat)
            .map(|(op, l)| summarize(op, l, secs))
            .collect(),
    })
}

/// One worker: create, load, save, touch and destroy fresh sessions (so the bench leaves the
/// store as it found it).
async fn lifecycles(store: &dyn Store, budget: &Budget) -> (Vec<Vec<u64>>, u64) {
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); STORE_OPS.len()];
    let mut errors = 0;
    let timed = |i: usize, t: Instant, ok: bool, lat: &mut Vec<Vec<u64>>, errors: &mut u64| {
        if ok {
            lat[i].push(t.elapsed().as_micros() as u64);
        } else {
            *errors += 1;
        }
        ok
    };
    while budget.take() {
        let Ok(id) = SessionId::generate() else {
            errors += 1;
            continue;
        };
        let key = id.key();
        let now = now_millis();
        let mut record = Record::new(now, now + 60_000, now + 3_600_000);
        if record.data.set("count", "1").is_err() {
            errors += 1;
            continue;
        }
        let t = Instant::now();
        if !timed(
            0,
            t,
            store.create(&key, &record).await.is_ok(),
            &mut lat,
            &mut errors,
        ) {
            continue;
        }
        let t = Instant::now();
        let loaded = store.load(&key, now).await;
        timed(1, t, matches!(loaded, Ok(Some(_))), &mut lat, &mut errors);
        record.version += 1;
        let _ = record.data.set("count", "2");
        let t = Instant::now();
        let saved = store.save(&key, &record, record.version - 1).await.is_ok();
        timed(2, t, saved, &mut lat, &mut errors);
        let t = Instant::now();
        let touched = matches!(store.touch(&key, now + 1, now + 60_001).await, Ok(true));
        timed(3, t, touched, &mut lat, &mut errors);
        let t = Instant::now();
        let gone = matches!(store.destroy(&key).await, Ok(true));
        timed(4, t, gone, &mut lat, &mut errors);
    }
    (lat, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), "".into())
        );
        assert_eq!(
            parse_http_url("http://localhost/app/").unwrap(),
            ("localhost:80".into(), "/app".into())
        );
        assert!(parse_http_url("https://x").is_err());
        assert!(parse_http_url("http://").is_err());
    }

    #[test]
    fn percentiles() {
        let l = summarize("x", (1..=100).collect(), 1.0);
        assert_eq!((l.p50_us, l.p99_us, l.max_us, l.count), (51, 99, 100, 100));
        assert_eq!(summarize("x", vec![], 1.0).p99_us, 0);
    }
}
