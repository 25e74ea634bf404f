//! Heap and allocation measurements (a plain binary, not criterion), under a counting global
//! allocator:
//!
//! 1. heap bytes per session, sessionkit vs tower-sessions `MemoryStore`, sessions with three
//!    small values, at 10k → 1M sessions (requested bytes as counted by the allocator, plus the
//!    resident-set growth, which includes malloc's own overhead);
//! 2. GC pass time at the same sizes with 1% expired (sessionkit's indexed pass, and the full
//!    `retain` scans the DashMap baseline and the tower-sessions layout would need; the
//!    tower-sessions store itself never deletes expired sessions);
//! 3. allocations per store operation and per HTTP request (the count page, driven in-process
//!    through the axum router, so hyper's own parsing is not included);
//! 4. the worst case of the memory store's lazy expiry index: a GC pass that finds every live
//!    session's index entry due (each was saved with a later deadline since it was filed) and
//!    re-files them all, next to the same pass when the entries are exact.
//!
//! `cargo bench -p sessionkit-bench --bench heap`; writes `bench-results/scaling.csv` (in the
//! crate directory) for `scripts/plot.py`. `SKB_QUICK=1` stops at 100k sessions.

mod common;

use std::io::Write;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use common::*;
use sessionkit::{now_millis, Key, Store};
use sessionkit_bench::alloc::{allocations, live_bytes, Counting};
use sessionkit_bench::loadgen::Cookies;
use sessionkit_bench::stats::{median, verdict_at_most};
use sessionkit_bench::Rng;
use tower_service::Service;
use tower_sessions::SessionStore;

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// (counted bytes per session, RSS growth per session) for a sessionkit store of `n` sessions.
async fn sk_bytes(n: usize) -> (f64, f64) {
    let (b0, r0) = (live_bytes(), rss_bytes());
    let store = sessionkit::MemoryStore::new();
    let rec = sk_record(now_millis());
    let mut rng = Rng::new(11);
    for _ in 0..n {
        store.create(&Key(rng.bytes32()), &rec).await.unwrap();
    }
    let (b1, r1) = (live_bytes(), rss_bytes());
    drop(store);
    (
        (b1 - b0) as f64 / n as f64,
        (r1.saturating_sub(r0)) as f64 / n as f64,
    )
}

async fn ts_bytes(n: usize) -> (f64, f64) {
    let mut rng = Rng::new(11);
    // Records are built outside the measured window's live set: only what the store keeps counts.
    let (b0, r0) = (live_bytes(), rss_bytes());
    let store = tower_sessions::MemoryStore::default();
    for _ in 0..n {
        let id =
            tower_sessions::session::Id(rng.next_u64() as i128 | (rng.next_u64() as i128) << 64);
        let mut r = ts_record(id);
        store.create(&mut r).await.unwrap();
    }
    let (b1, r1) = (live_bytes(), rss_bytes());
    drop(store);
    (
        (b1 - b0) as f64 / n as f64,
        (r1.saturating_sub(r0)) as f64 / n as f64,
    )
}

/// Median GC pass time in ms at `n` sessions with 1% expired: (sessionkit, dashmap, tower layout).
async fn gc_times(n: usize, rounds: usize) -> (f64, f64, f64) {
    let expired = n / 100;
    let mut rng = Rng::new(12);
    let sk = Sk::build(n - expired, 13).await;
    let mut t = vec![];
    for _ in 0..rounds {
        let now = now_millis();
        add_expired(&sk.store, expired, now, &mut rng).await;
        let start = Instant::now();
        let removed = sk_gc(&sk.store, now).await;
        t.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(removed, expired);
    }
    drop(sk);
    let skt = median(&t);
    let dm = Dm::build(n - expired, 13).await;
    let mut t = vec![];
    for _ in 0..rounds {
        let now = now_millis();
        dm_add_expired(&dm.map, expired, now, &mut rng);
        let start = Instant::now();
        dm_gc(&dm.map, now);
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    drop(dm);
    let dmt = median(&t);
    let ts = ts_map(n - expired, 0, &mut rng);
    let mut t = vec![];
    for _ in 0..rounds {
        ts_add(&mut ts.lock().unwrap(), expired, true, &mut rng);
        let start = Instant::now();
        ts_gc(&ts);
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (skt, dmt, median(&t))
}

/// Average allocations of the expression `e` over `reps` evaluations (after one warm-up).
macro_rules! allocs_per {
    ($reps:expr, $e:expr) => {{
        $e;
        let a0 = allocations();
        for _ in 0..$reps {
            $e;
        }
        (allocations() - a0) as f64 / $reps as f64
    }};
}

/// `app` as `axum::serve` runs it: `with_state` turns each handler into its route once, where
/// a router called directly (as here) would rebuild the route on every request.
fn as_served(app: Router) -> Router {
    app.with_state(())
}

/// Allocations per request of `app` at `/count`, with the cookie from a first request when
/// `cookie` is set. Request building is outside the count; reading the body is inside.
async fn allocs_per_request(app: Router, cookie: bool, reps: u64) -> f64 {
    let mut app = as_served(app);
    let first = app
        .call(Request::get("/count").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie_line = first
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let mut total = 0u64;
    for _ in 0..reps + 1 {
        let mut req = Request::get("/count");
        if cookie {
            req = req.header(header::COOKIE, cookie_line.as_deref().expect("cookie"));
        }
        let req = req.body(Body::empty()).unwrap();
        let a0 = allocations();
        let resp = app.call(req).await.unwrap();
        assert!(resp.status().is_success());
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        std::hint::black_box(body);
        total += allocations() - a0;
    }
    total as f64 / (reps + 1) as f64
}

/// Runs one memory measurement in a fresh process, so that memory freed by an earlier one
/// (and kept by malloc) does not hide the next one's resident-set growth.
fn in_child(which: &str, n: usize) -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["mem", which, &n.to_string()])
        .output()
        .expect("run child");
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "child output {out:?}");
    (v[0], v[1])
}

/// GC pass time in ms over `n` sessions with 1% expired, when every live session was saved
/// once with a later deadline after it was filed (`stale`) or filed under its real deadline.
async fn gc_refile_pass(n: usize, stale: bool) -> f64 {
    let store = sessionkit::MemoryStore::new();
    let now = now_millis();
    let mut rng = Rng::new(21);
    let keys: Vec<Key> = (0..n).map(|_| Key(rng.bytes32())).collect();
    let (filed, real) = (now + 1_000, now + 5_000);
    let gc_at = now + 2_000;
    for (i, k) in keys.iter().enumerate() {
        let mut r = sk_record(now);
        r.expires_at = if i % 100 == 0 {
            now + 500
        } else if stale {
            filed
        } else {
            real
        };
        store.create(k, &r).await.unwrap();
    }
    if stale {
        for (i, k) in keys.iter().enumerate() {
            if i % 100 != 0 {
                let mut r = sk_record(now);
                r.version = 2;
                r.expires_at = real;
                store.save(k, &r, 1).await.unwrap();
            }
        }
    }
    let batch = sessionkit::Config::default().gc_batch;
    let start = Instant::now();
    while store.gc(gc_at, batch).await.unwrap() == batch {}
    start.elapsed().as_secs_f64() * 1e3
}

/// The count page requests that `profile` mode repeats (run it under callgrind with
/// `--toggle-collect='*profile_loop*'` to get instructions per request).
async fn profile_loop(app: &mut Router, cookie: Option<&str>, reps: u64) {
    for _ in 0..reps {
        let mut req = Request::get("/count");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let resp = app.call(req.body(Body::empty()).unwrap()).await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        std::hint::black_box(body);
    }
}

fn child(args: &[String]) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("mem") => {
            let n: usize = args[2].parse().unwrap();
            let (b, r) = rt.block_on(async {
                if args[1] == "sk" {
                    sk_bytes(n).await
                } else {
                    ts_bytes(n).await
                }
            });
            println!("{b} {r}");
            true
        }
        Some("profile") => {
            let (_, app, cookie) = http_scenarios()
                .into_iter()
                .find(|(name, _, _)| *name == args[1])
                .expect("scenario");
            let reps: u64 = args[2].parse().unwrap();
            rt.block_on(async {
                let mut app = as_served(app());
                let first = app
                    .call(Request::get("/count").body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let line = first
                    .headers()
                    .get(header::SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(str::to_owned);
                let c = if cookie != Cookies::None {
                    line.as_deref()
                } else {
                    None
                };
                profile_loop(&mut app, c, 10).await;
                profile_loop(&mut app, c, reps).await;
            });
            true
        }
        Some("profile-store") => {
            // One worker of the mixed workload; callgrind: --toggle-collect='*mixed*'.
            let ops: u64 = args[2].parse().unwrap();
            rt.block_on(async {
                match args[1].as_str() {
                    "sk" => {
                        mixed(&std::sync::Arc::new(Sk::build(100_000, 1).await), 1, ops).await;
                    }
                    "ts" => {
                        mixed(&std::sync::Arc::new(Ts::build(100_000, 1).await), 1, ops).await;
                    }
                    _ => {
                        mixed(&std::sync::Arc::new(Dm::build(100_000, 1).await), 1, ops).await;
                    }
                }
            });
            true
        }
        _ => false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if child(&args) {
        return;
    }
    let quick = std::env::var_os("SKB_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sizes: &[usize] = if quick {
            &[10_000, 100_000]
        } else {
            &[10_000, 30_000, 100_000, 300_000, 1_000_000]
        };
        let rounds = if quick { 3 } else { 7 };
        let mut csv = String::from(
            "sessions,sk_bytes,sk_rss,ts_bytes,ts_rss,sk_gc_ms,dashmap_gc_ms,tower_layout_gc_ms\n",
        );
        println!("== heap bytes per session (3 small values) and GC pass (1% expired) ==");
        println!(
            "{:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "sessions", "sk B", "sk RSS", "tower B", "tower RSS", "sk gc ms", "dm gc ms", "tw gc ms"
        );
        let mut last = None;
        for &n in sizes {
            let (skb, skr) = in_child("sk", n);
            let (tsb, tsr) = in_child("ts", n);
            let (skg, dmg, tsg) = gc_times(n, rounds).await;
            println!(
                "{n:>9} {skb:>10.1} {skr:>10.1} {tsb:>10.1} {tsr:>10.1} {skg:>10.3} {dmg:>10.3} {tsg:>10.3}"
            );
            csv.push_str(&format!(
                "{n},{skb:.1},{skr:.1},{tsb:.1},{tsr:.1},{skg:.4},{dmg:.4},{tsg:.4}\n"
            ));
            last = Some((skb, skr, tsb, tsr));
        }
        if let Some((skb, skr, tsb, tsr)) = last {
            println!(
                "bytes/session at {} sessions: sessionkit {skb:.0} B counted ({skr:.0} B RSS), \
                 tower-sessions {tsb:.0} B counted ({tsr:.0} B RSS); ratio counted {}, RSS {:.2}x",
                sizes[sizes.len() - 1],
                verdict_at_most(skb / tsb, 0.8),
                skr / tsr
            );
        }
        let dir = std::path::Path::new("bench-results");
        let _ = std::fs::create_dir_all(dir);
        if !quick {
            let mut f = std::fs::File::create(dir.join("scaling.csv")).unwrap();
            f.write_all(csv.as_bytes()).unwrap();
            println!("wrote {}", dir.join("scaling.csv").display());
        }

        println!("\n== lazy expiry index, worst case: every live session re-filed in one pass ==");
        for &n in sizes.iter().filter(|&&n| n == 100_000 || n == 1_000_000) {
            let exact = gc_refile_pass(n, false).await;
            let stale = gc_refile_pass(n, true).await;
            println!(
                "{n:>9} sessions, 1% expired: pass {exact:.2} ms with exact entries, \
                 {stale:.2} ms when all {} live ones are due and re-filed",
                n - n / 100
            );
        }

        println!("\n== allocations per operation (100k sessions) ==");
        let n = 100_000;
        let sk = std::sync::Arc::new(Sk::build(n, 1).await);
        let ts = std::sync::Arc::new(Ts::build(n, 1).await);
        let dm = std::sync::Arc::new(Dm::build(n, 1).await);
        let mut rng = Rng::new(3);
        let reps = 10_000;
        let a = allocs_per!(reps, sk.load(rng.below(n)).await);
        let b = allocs_per!(reps, ts.load(rng.below(n)).await);
        let c = allocs_per!(reps, dm.load(rng.below(n)).await);
        println!("load:  sessionkit {a:.2}, tower-sessions {b:.2}, dashmap {c:.2}");
        let mut skl = sk.local();
        let mut tsl = ts.local();
        let mut dml = dm.local();
        let a = allocs_per!(reps, sk.save(&mut skl, rng.below(n)).await);
        let b = allocs_per!(reps, ts.save(&mut tsl, rng.below(n)).await);
        let c = allocs_per!(reps, dm.save(&mut dml, rng.below(n)).await);
        println!("save:  sessionkit {a:.2}, tower-sessions {b:.2}, dashmap {c:.2}");
        let a = allocs_per!(reps, sk.touch(rng.below(n)).await);
        let b = allocs_per!(reps, ts.touch(rng.below(n)).await);
        let c = allocs_per!(reps, dm.touch(rng.below(n)).await);
        println!("touch: sessionkit {a:.2}, tower-sessions {b:.2} (a save), dashmap {c:.2}");

        println!("\n== allocations per HTTP request (in-process router call + body) ==");
        let reps = 2_000;
        for (name, app, cookie) in http_scenarios() {
            let a = allocs_per_request(app(), cookie != Cookies::None, reps).await;
            println!("{name:<20} {a:.1}");
        }
    });
}
