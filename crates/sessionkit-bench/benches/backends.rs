//! Durable and shared stores, side by side with tower-sessions in one run (a plain binary, not
//! criterion): sessionkit's SQLite, file, Redis, Postgres and MySQL stores against
//! tower-sessions' SQLite, Postgres and MySQL stores (tower-sessions-sqlx-store) and its Redis store
//! (tower-sessions-redis-store). The tower-sessions side is the `tower-stores-bench` binary in
//! `crates/sessionkit-bench/tower` (a workspace of its own: its SQLite library cannot share a
//! build with sessionkit's); the driver builds it with cargo and runs it as a child process.
//!
//! Three passes, each subject in a fresh process, interleaved round by round so machine noise
//! spreads evenly over the subjects:
//!
//! 1. **Round trips** (Redis, Postgres, MySQL): each app talks to its store through a counting proxy
//!    ([`sessionkit_bench::rtt`]); one client makes a new session, then `SKB_RTT_REQS` count
//!    requests (a write) and as many peek requests (a read), one at a time.
//! 2. **Store operations**: load, save and touch, closed loop, at 1 and 2 workers, on
//!    `SKB_SESSIONS` sessions (default 1000); `SKB_ROUNDS` rounds (default 5), each op
//!    `SKB_SECS` seconds (default 2) after a 0.5 s warm-up. Medians of throughput, p50 and p99.
//! 3. **Count page over HTTP** with a session cookie: server pinned to core 0, load generator to
//!    core 1 (`SKB_CONNS` connections, default 32), `SKB_ROUNDS` runs of `SKB_SECS` + 1 s.
//!
//! `SKB_BACKENDS=sqlite,file,redis,cluster,postgres,mysql` picks the stores (`cluster`: sessionkit on
//! the Redis Cluster named by SESSIONKIT_REDIS_CLUSTER, when set; no tower-sessions side). Services: Redis at
//! `SKB_REDIS_ADDR` (default 127.0.0.1:6379, database 15), PostgreSQL at `SKB_POSTGRES_ADDR`
//! (default 127.0.0.1:5432, user postgres, database test, schemas `skbench_sk` and
//! `skbench_tower`, kept between runs), MySQL/MariaDB at `SKB_MYSQL_ADDR` (default
//! 127.0.0.1:3306, user root, database test, tables `skbench_sk` and `skbench_tower`, kept). A
//! store whose server is down is skipped with a note.
//!
//! `cargo bench -p sessionkit-bench --bench backends`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sessionkit_bench::loadgen::Cookies;
use sessionkit_bench::ops::{OpsOutcome, OpsPlan};
use sessionkit_bench::procs::{
    bench_args, can_pin, env_num, http_run, load_main, pinned, redis_cpu_seconds, HttpRun,
};
use sessionkit_bench::rtt::CountingProxy;
use sessionkit_bench::stats::{median, verdict_at_least, verdict_at_most};

mod sides;

use sides::OPS;

fn main() {
    let args = bench_args();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1]),
        Some("ops") => ops(&args[1], &args[2..]),
        Some("load") => load_main(&args[1..]),
        _ => driver(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: the sessionkit side.

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime")
}

/// `serve <url>`: the count and peek pages on the store at `url`; prints the port.
fn serve(url: &str) {
    runtime(1).block_on(async {
        let store = sessionkit::store::open(url).await.expect("open store");
        let app = sessionkit_bench::apps::sessionkit_count_on(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app).await.unwrap();
    });
}

/// `ops <url> <workers> <warmup-s> <secs> <sessions>`: same protocol as the tower binary.
fn ops(url: &str, args: &[String]) {
    let (plan, n) = OpsPlan::from_args(args).expect("ops arguments");
    runtime(plan.workers.max(2)).block_on(async {
        let store = sessionkit::store::open(url).await.expect("open store");
        for (op, out) in sides::store_ops(store, plan, n).await {
            println!("{op} {}", out.to_line());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The driver.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Sessionkit,
    Tower,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Sessionkit => "sessionkit",
            Side::Tower => "tower-sessions",
        }
    }
}

/// One store kind and how each side reaches it.
struct Backend {
    name: &'static str,
    /// The store server's address, for the round-trip proxy (None: embedded store).
    server: Option<SocketAddr>,
    /// URL for a side, given the address to connect to (the server's or the proxy's).
    url: fn(Side, Option<SocketAddr>, &Path) -> Option<String>,
}

fn backends() -> Vec<Backend> {
    let addr = |var: &str, default: &str| -> SocketAddr {
        std::env::var(var)
            .unwrap_or_else(|_| default.to_owned())
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be host:port"))
    };
    let all = vec![
        Backend {
            name: "sqlite",
            server: None,
            url: |side, _, dir| {
                Some(match side {
                    Side::Sessionkit => format!("sqlite://{}/sk.db", dir.display()),
                    Side::Tower => format!("sqlite://{}/ts.db", dir.display()),
                })
            },
        },
        Backend {
            name: "file",
            server: None,
            url: |side, _, dir| {
                (side == Side::Sessionkit).then(|| format!("file://{}/files", dir.display()))
            },
        },
        Backend {
            name: "redis",
            server: Some(addr("SKB_REDIS_ADDR", "127.0.0.1:6379")),
            url: |side, a, _| {
                let a = a?;
                Some(match side {
                    Side::Sessionkit => format!("redis://{a}/15?prefix=skbench:"),
                    Side::Tower => format!("redis://{a}/15"),
                })
            },
        },
        Backend {
            // sessionkit only (tower-sessions' Redis store has no cluster mode), and only where
            // a cluster is set up: SESSIONKIT_REDIS_CLUSTER, as scripts/redis-cluster.sh prints.
            // No round-trip count: a cluster client talks to every master directly.
            name: "cluster",
            server: None,
            url: |side, _, _| {
                let nodes = std::env::var("SESSIONKIT_REDIS_CLUSTER").ok()?;
                (side == Side::Sessionkit).then(|| format!("{nodes}?prefix=skbench:"))
            },
        },
        Backend {
            name: "postgres",
            server: Some(addr("SKB_POSTGRES_ADDR", "127.0.0.1:5432")),
            url: |side, a, _| {
                let a = a?;
                Some(match side {
                    Side::Sessionkit => format!("postgres://postgres@{a}/test?schema=skbench_sk"),
                    // The tower binary sets its schema itself.
                    Side::Tower => format!("postgres://postgres@{a}/test"),
                })
            },
        },
        Backend {
            name: "mysql",
            server: Some(addr("SKB_MYSQL_ADDR", "127.0.0.1:3306")),
            url: |side, a, _| {
                let a = a?;
                Some(match side {
                    // mysql_async switches a loopback TCP connection to the server's Unix
                    // socket unless told not to: both sides go over TCP (and through the
                    // round-trip proxy), as tower-sessions' sqlx does.
                    Side::Sessionkit => {
                        format!("mysql://root@{a}/test?table=skbench_sk&prefer_socket=false")
                    }
                    // The tower binary sets its table itself.
                    Side::Tower => format!("mysql://root@{a}/test"),
                })
            },
        },
    ];
    let wanted = std::env::var("SKB_BACKENDS").unwrap_or_default();
    all.into_iter()
        .filter(|b| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == b.name))
        .collect()
}

/// Builds the tower-sessions binary (release) and returns its path.
fn tower_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SKB_TOWER_BIN") {
        return p.into();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tower");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        // Its own target dir whatever CARGO_TARGET_DIR says, since the binary is run from there.
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the tower-sessions bench failed");
    dir.join("target/release/tower-stores-bench")
}

/// The program and leading arguments that run `side`'s subcommand `sub` for backend `b`.
fn side_command(
    side: Side,
    sub: &str,
    b: &str,
    core: Option<u8>,
    pin: bool,
    tower: &Path,
) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let program = match side {
        Side::Sessionkit => exe,
        Side::Tower => tower.to_owned(),
    };
    let mut c = match core {
        Some(core) => pinned(core, pin, &program),
        None => Command::new(&program),
    };
    c.arg(sub);
    if side == Side::Tower {
        c.arg(b);
    }
    c
}

/// Whether the store server answers at all (a TCP connect).
fn reachable(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

type Cell = (&'static str, Side, &'static str, usize); // backend, side, op, workers
/// Per (backend, side): req/s of each run, requests per server CPU-second of each run.
/// Per (store, traffic shape, side): req/s, req per server CPU-second and (Redis) µs of Redis
/// CPU per request of each round, and the updates lost over all rounds.
type HttpRuns = BTreeMap<(&'static str, &'static str, Side), (Vec<f64>, Vec<f64>, u64, Vec<f64>)>;

/// The HTTP traffic shapes: one session per connection, and one hot session written by every
/// connection (with the target ratio each must reach).
const SHAPES: [(&str, Cookies, f64); 2] = [
    ("sessions", Cookies::PerConnection, 1.2),
    ("hot", Cookies::Shared(1), 0.5),
];

fn driver() {
    let rounds = env_num("SKB_ROUNDS", 5) as usize;
    let secs = env_num("SKB_SECS", 2) as f64;
    let conns = env_num("SKB_CONNS", 32);
    let sessions = env_num("SKB_SESSIONS", 1000);
    let reqs = env_num("SKB_RTT_REQS", 50);
    let pin = can_pin();
    let tower = tower_binary();
    let dir = std::env::temp_dir().join(format!("skbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut live = Vec::new();
    for b in backends() {
        match b.server {
            Some(a) if !reachable(a) => println!("skipping {}: no server at {a}", b.name),
            _ => live.push(b),
        }
    }
    let sides = |b: &Backend| -> Vec<(Side, String)> {
        [Side::Sessionkit, Side::Tower]
            .into_iter()
            .filter_map(|s| (b.url)(s, b.server, &dir).map(|u| (s, u)))
            .collect()
    };

    println!("== round trips per request (one client, one request at a time) ==");
    for b in live.iter().filter(|b| b.server.is_some()) {
        for (side, _) in sides(b) {
            match round_trips(b, side, &dir, &tower, reqs) {
                Ok((new, write, read, signed_in)) => println!(
                    "{:<9} {:<15} new session {new:>4.1}   count (write) {write:>4.2}   peek (read) {read:>4.2}{}",
                    b.name,
                    side.name(),
                    signed_in.map_or(String::new(), |s| format!("   signed-in count {s:>4.2}"))
                ),
                Err(e) => println!("{:<9} {:<15} failed: {e}", b.name, side.name()),
            }
        }
    }

    println!("\n== lost updates: 8 connections x 50 count requests on one session ==");
    for b in &live {
        for (side, url) in sides(b) {
            match shared_count(side, b.name, &url, &tower) {
                Ok((acked, held)) => println!(
                    "{:<9} {:<15} acknowledged {acked:>4}  count held {held:>4}  lost {:>4}",
                    b.name,
                    side.name(),
                    acked.saturating_sub(held)
                ),
                Err(e) => println!("{:<9} {:<15} failed: {e}", b.name, side.name()),
            }
        }
    }

    println!(
        "\n== store operations: {rounds} rounds x {secs} s per op, {sessions} sessions, 1 and 2 workers =="
    );
    let mut cells: BTreeMap<Cell, Vec<OpsOutcome>> = BTreeMap::new();
    for round in 0..rounds {
        for b in &live {
            for workers in [1usize, 2] {
                for (side, url) in sides(b) {
                    let out = side_command(side, "ops", b.name, None, pin, &tower)
                        .args([
                            url.as_str(),
                            &workers.to_string(),
                            "0.5",
                            &secs.to_string(),
                            &sessions.to_string(),
                        ])
                        .output()
                        .expect("run ops process");
                    let text = String::from_utf8_lossy(&out.stdout);
                    if !out.status.success() {
                        eprintln!(
                            "{} {} ops failed: {}",
                            b.name,
                            side.name(),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    for line in text.lines() {
                        let Some((op, rest)) = line.split_once(' ') else {
                            continue;
                        };
                        let Some(op) = OPS.iter().find(|o| **o == op) else {
                            continue;
                        };
                        if let Some(o) = OpsOutcome::from_line(rest) {
                            println!(
                                "round {round} {:<9} {:<15} {op:<5} w{workers} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us{}",
                                b.name,
                                side.name(),
                                o.rate(),
                                o.p50_us,
                                o.p99_us,
                                if o.errors > 0 { "  ERRORS" } else { "" }
                            );
                            cells
                                .entry((b.name, side, op, workers))
                                .or_default()
                                .push(o);
                        }
                    }
                }
            }
        }
    }

    println!("\n== count page over HTTP with a session cookie: {rounds} runs x {secs} s, {conns} connections ==");
    let mut http: HttpRuns = BTreeMap::new();
    for round in 0..rounds {
        for b in &live {
            for (shape, cookies, _) in SHAPES {
                for (side, url) in sides(b) {
                    let mut server = side_command(side, "serve", b.name, Some(0), pin, &tower);
                    server.arg(&url);
                    let label = format!("{} {shape} {}", b.name, side.name());
                    // Redis' own CPU per request: the figure that decides how many app
                    // servers one Redis node carries.
                    let redis = b.server.filter(|_| b.name == "redis");
                    let before = redis.and_then(redis_cpu_seconds);
                    let HttpRun {
                        rate,
                        per_cpu,
                        lost,
                        total,
                    } = http_run(&label, server, cookies, secs, conns, pin);
                    let redis_us = match (before, redis.and_then(redis_cpu_seconds)) {
                        (Some(a), Some(b)) if total > 0 => (b - a) * 1e6 / total as f64,
                        _ => f64::NAN,
                    };
                    let redis_note = if redis_us.is_nan() {
                        String::new()
                    } else {
                        format!("  Redis CPU {redis_us:.1} us/req")
                    };
                    println!("round {round} {label:<30} {rate:>9.0} req/s {per_cpu:>9.0} req per server CPU-s  {lost} updates lost{redis_note}");
                    let e = http.entry((b.name, shape, side)).or_default();
                    e.0.push(rate);
                    e.1.push(per_cpu);
                    e.2 += lost;
                    e.3.push(redis_us);
                }
            }
        }
    }

    report(&cells, &http);
    cleanup(&live, &dir);
}

/// Medians per cell and the sessionkit / tower-sessions ratios.
fn report(cells: &BTreeMap<Cell, Vec<OpsOutcome>>, http: &HttpRuns) {
    let med = |v: &[OpsOutcome], f: fn(&OpsOutcome) -> f64| -> f64 {
        median(&v.iter().map(f).collect::<Vec<_>>())
    };
    println!("\n== medians: store operations ==");
    println!(
        "{:<9} {:<5} {:>3} {:>15} {:>10} {:>10} {:>15} {:>10} {:>10} {:>8}",
        "store",
        "op",
        "w",
        "sessionkit/s",
        "p50 us",
        "p99 us",
        "tower/s",
        "p50 us",
        "p99 us",
        "ratio"
    );
    let keys: std::collections::BTreeSet<(&str, &str, usize)> =
        cells.keys().map(|(b, _, o, w)| (*b, *o, *w)).collect();
    for (b, op, w) in keys {
        let sk = cells.get(&(b, Side::Sessionkit, op, w));
        let ts = cells.get(&(b, Side::Tower, op, w));
        let fig = |c: Option<&Vec<OpsOutcome>>| match c {
            Some(v) => (
                med(v, OpsOutcome::rate),
                med(v, |o| o.p50_us),
                med(v, |o| o.p99_us),
            ),
            None => (f64::NAN, f64::NAN, f64::NAN),
        };
        let (a, a50, a99) = fig(sk);
        let (t, t50, t99) = fig(ts);
        let ratio = if ts.is_some() {
            format!("{:.2}x", a / t)
        } else {
            "-".into()
        };
        println!(
            "{b:<9} {op:<5} {w:>3} {a:>15.0} {a50:>10.1} {a99:>10.1} {t:>15.0} {t50:>10.1} {t99:>10.1} {ratio:>8}"
        );
    }
    println!("\n== medians: count page over HTTP ==");
    let names: std::collections::BTreeSet<(&str, &str)> =
        http.keys().map(|(b, shape, _)| (*b, *shape)).collect();
    for (b, shape) in names {
        let target = SHAPES.iter().find(|s| s.0 == shape).map_or(1.2, |s| s.2);
        let sk = http.get(&(b, shape, Side::Sessionkit));
        let ts = http.get(&(b, shape, Side::Tower));
        let (sr, sc, sl, su) = sk.map_or((f64::NAN, f64::NAN, 0, f64::NAN), |v| {
            (median(&v.0), median(&v.1), v.2, median(&v.3))
        });
        match ts {
            Some(v) => {
                let (tr, tc, tu) = (median(&v.0), median(&v.1), median(&v.3));
                println!(
                    "{b:<9} {shape:<8} sessionkit {sr:>8.0} req/s ({sc:>6.0}/CPU-s, {sl} lost)  tower-sessions {tr:>8.0} req/s ({tc:>6.0}/CPU-s, {} lost)  {}  per CPU {:.2}x",
                    v.2,
                    verdict_at_least(sr / tr, target),
                    sc / tc
                );
                if !su.is_nan() {
                    println!(
                        "{b:<9} {shape:<8} Redis CPU per request: sessionkit {su:.1} us, tower-sessions {tu:.1} us  {}",
                        verdict_at_most(su / tu, 2.0)
                    );
                }
            }
            None => println!(
                "{b:<9} {shape:<8} sessionkit {sr:>8.0} req/s ({sc:>6.0}/CPU-s, {sl} lost)  (no tower-sessions store)"
            ),
        }
    }
}

/// Round trips per request for one side on one server-backed store: returns (first request,
/// which makes the session; count request; peek request).
fn round_trips(
    b: &Backend,
    side: Side,
    dir: &Path,
    tower: &Path,
    reqs: u64,
) -> Result<(f64, f64, f64, Option<f64>), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server_addr = b.server.ok_or("embedded store")?;
    let proxy = rt
        .block_on(CountingProxy::start(server_addr))
        .map_err(|e| e.to_string())?;
    let url = (b.url)(side, Some(proxy.addr()), dir).ok_or("no such store on this side")?;
    let mut cmd = side_command(side, "serve", b.name, None, false, tower);
    cmd.arg(&url);
    let (mut child, port) =
        sessionkit_bench::procs::start_server(cmd).map_err(|e| e.to_string())?;
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    let result = rt.block_on(async {
        let (new, write, read) = sides::count_round_trips(&proxy, app, reqs).await?;
        // Only sessionkit's page can sign in.
        let signed_in = match side {
            Side::Sessionkit => Some(sides::signed_in_write_round_trips(&proxy, app, reqs).await?),
            Side::Tower => None,
        };
        Ok((new, write, read, signed_in))
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(proxy);
    result
}

/// Runs [`sides::shared_session_count`] against `side`'s server on `url` (unpinned).
fn shared_count(side: Side, b: &str, url: &str, tower: &Path) -> Result<(u64, u64), String> {
    let mut cmd = side_command(side, "serve", b, None, false, tower);
    cmd.arg(url);
    let (mut child, port) =
        sessionkit_bench::procs::start_server(cmd).map_err(|e| e.to_string())?;
    let result = runtime(2).block_on(sides::shared_session_count(
        SocketAddr::from(([127, 0, 0, 1], port)),
        8,
        50,
    ));
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Removes the bench directory and sessionkit's Redis keys; the Postgres schemas and MySQL
/// tables stay for the next run (their rows expire and are reused).
fn cleanup(live: &[Backend], dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    for b in live
        .iter()
        .filter(|b| b.name == "redis" || b.name == "cluster")
    {
        let Some(url) = (b.url)(Side::Sessionkit, b.server, dir) else {
            continue;
        };
        runtime(1).block_on(async {
            if let Ok(store) = sessionkit::store::redis::RedisStore::open(&url).await {
                let _ = store.purge_prefix().await;
            }
        });
    }
}
