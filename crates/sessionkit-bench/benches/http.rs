//! HTTP load bench (a plain binary, not criterion): the count page served by sessionkit, by a
//! bare axum handler with an atomic counter, and by axum + tower-sessions `MemoryStore`, driven by
//! the crate's load generator over loopback.
//!
//! The driver (no arguments besides cargo's `--bench`) runs every scenario `SKB_RUNS` times
//! (default 5), round-robin so machine noise spreads evenly, each run on a fresh server process
//! pinned with `taskset -c 0` (a current-thread runtime: one core) and a load generator process
//! pinned with `taskset -c 1` (a current-thread runtime, `SKB_CONNS` keep-alive connections,
//! default 32). Each run warms up for 1 s and measures `SKB_SECS` seconds (default 3). It prints
//! the median req/s per scenario and the ratios of the targets.
//!
//! `cargo bench -p sessionkit-bench --bench http`

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use sessionkit_bench::loadgen::{run, Plan};
use sessionkit_bench::stats::{cpu_seconds, median, verdict_at_least};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `serve <scenario>`: prints the bound port, serves until killed by the driver.
fn serve(scenario: &str) {
    let (_, app, _) = common::http_scenarios()
        .into_iter()
        .find(|(n, _, _)| *n == scenario)
        .unwrap_or_else(|| panic!("unknown scenario {scenario}"));
    current_thread().block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app()).await.unwrap();
    });
}

/// `load <port> <cookie 0|1> <secs> <conns>`: prints `<requests> <seconds> <errors>`.
fn load(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let plan = Plan {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        path: "/count".into(),
        cookie: args[1] == "1",
        connections: args[3].parse().unwrap(),
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs_f64(args[2].parse().unwrap()),
    };
    let out = current_thread().block_on(run(&plan)).unwrap();
    println!(
        "{} {} {} {}",
        out.requests, out.seconds, out.errors, out.total
    );
}

fn pinned(core: &str, taskset: bool) -> Command {
    let exe = std::env::current_exe().unwrap();
    if taskset {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// One run of `scenario`: returns (req/s, requests per server CPU-second), NaN if the run had
/// errors. The second figure counts every request the server answered (warm-up included)
/// against the CPU time its process used, so other processes on the machine do not inflate it.
fn one_run(scenario: &str, cookie: bool, secs: f64, conns: u64, taskset: bool) -> (f64, f64) {
    let mut server = pinned("0", taskset)
        .args(["serve", scenario])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().to_owned();
    let out = pinned("1", taskset)
        .args([
            "load",
            &port,
            if cookie { "1" } else { "0" },
            &secs.to_string(),
            &conns.to_string(),
        ])
        .output()
        .expect("run load generator");
    let cpu = cpu_seconds(Some(server.id())).unwrap_or(f64::NAN);
    // Stop the server we started, by its own handle.
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if f.len() != 4 || f[2] > 0.0 {
        eprintln!("{scenario}: run failed or had errors: {text:?}");
        return (f64::NAN, f64::NAN);
    }
    (f[0] / f[1], f[3] / cpu)
}

fn driver() {
    let runs = env_num("SKB_RUNS", 5) as usize;
    let secs = env_num("SKB_SECS", 3) as f64;
    let conns = env_num("SKB_CONNS", 32);
    let taskset = Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "== HTTP count page: {runs} runs x {secs} s, {conns} connections, server {} ==",
        if taskset && cores >= 2 {
            "pinned to core 0, load generator to core 1"
        } else {
            "and load generator unpinned (no taskset or < 2 cores)"
        }
    );
    let taskset = taskset && cores >= 2;
    let scenarios = common::http_scenarios();
    let mut rates: Vec<Vec<f64>> = vec![vec![]; scenarios.len()];
    let mut per_cpu: Vec<Vec<f64>> = vec![vec![]; scenarios.len()];
    for round in 0..runs {
        for (i, (name, _, cookie)) in scenarios.iter().enumerate() {
            let (r, c) = one_run(name, *cookie, secs, conns, taskset);
            println!("round {round} {name:<20} {r:>10.0} req/s {c:>10.0} req per server CPU-s");
            rates[i].push(r);
            per_cpu[i].push(c);
        }
    }
    println!("\nmedians:");
    let mut med = std::collections::HashMap::new();
    for (i, (name, _, _)) in scenarios.iter().enumerate() {
        let m = median(&rates[i]);
        let all: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
        println!("{name:<20} {m:>10.0} req/s   (runs: {})", all.join(", "));
        med.insert(*name, m);
    }
    println!("\nrequests per server CPU-second (medians):");
    let mut cmed = std::collections::HashMap::new();
    for (i, (name, _, _)) in scenarios.iter().enumerate() {
        let m = median(&per_cpu[i]);
        println!("{name:<20} {m:>10.0}");
        cmed.insert(*name, m);
    }
    let rc = |a: &str, b: &str| cmed[a] / cmed[b];
    println!(
        "per CPU-second: cookie/bare {:.2}x, cookie/tower {:.2}x, no-cookie/tower {:.2}x",
        rc("sessionkit-cookie", "bare-atomic"),
        rc("sessionkit-cookie", "tower-cookie"),
        rc("sessionkit-nocookie", "tower-nocookie")
    );
    let r = |a: &str, b: &str| med[a] / med[b];
    println!("\nratios of medians:");
    println!(
        "cookie page vs bare atomic counter:    {}",
        verdict_at_least(r("sessionkit-cookie", "bare-atomic"), 0.85)
    );
    println!(
        "cookie page vs tower-sessions:         {}",
        verdict_at_least(r("sessionkit-cookie", "tower-cookie"), 1.2)
    );
    println!(
        "no-cookie page vs tower-sessions:      {}",
        verdict_at_least(r("sessionkit-nocookie", "tower-nocookie"), 1.2)
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1]),
        Some("load") => load(&args[1..]),
        _ => driver(),
    }
}
