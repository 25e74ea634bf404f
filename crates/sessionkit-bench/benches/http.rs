//! HTTP load bench (a plain binary, not criterion): the count page served by sessionkit, by a
//! bare axum handler with an atomic counter, and by axum + tower-sessions `MemoryStore`, driven by
//! the crate's load generator over loopback.
//!
//! Scenarios: one session per connection (`-cookie`), a new session per request (`-nocookie`),
//! and one hot session written by every connection (`-hot`, whose lost updates are counted).
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

use sessionkit_bench::loadgen::Cookies;
use sessionkit_bench::procs::{bench_args, can_pin, env_num, http_run, load_main, pinned, HttpRun};
use sessionkit_bench::stats::{median, verdict_at_least};

/// `serve <scenario>`: prints the bound port, serves until killed by the driver.
fn serve(scenario: &str) {
    let (_, app, _) = common::http_scenarios()
        .into_iter()
        .find(|(n, _, _)| *n == scenario)
        .unwrap_or_else(|| panic!("unknown scenario {scenario}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app()).await.unwrap();
    });
}

/// The demo runs: the real `sessionkit serve --store memory://` (metrics on, as shipped, and
/// off), against 64 sessions shared by the connections, like `tower-spread64`.
const DEMO: [(&str, &[&str]); 2] = [
    ("demo-spread64", &[]),
    ("demo-nometrics-spread64", &["--no-metrics"]),
];

/// The release `sessionkit` binary beside this bench's (`cargo build --release -p
/// sessionkit-cli` makes it), or `SKB_DEMO_BIN`.
fn demo_bin() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("SKB_DEMO_BIN") {
        Some(p) => p.into(),
        None => std::env::current_exe()
            .ok()?
            .parent()?
            .parent()?
            .join("sessionkit"),
    };
    path.exists().then_some(path)
}

/// One run of `scenario`.
fn one_run(scenario: &str, cookies: Cookies, secs: f64, conns: u64, pin: bool) -> HttpRun {
    let server = match DEMO.iter().find(|(n, _)| *n == scenario) {
        Some((_, extra)) => {
            let mut server = pinned(0, pin, &demo_bin().expect("demo binary"));
            server
                .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory://"])
                .args(*extra)
                .env("RUST_LOG", "warn")
                .stderr(std::process::Stdio::null());
            server
        }
        None => {
            let exe = std::env::current_exe().expect("current exe");
            let mut server = pinned(0, pin, &exe);
            server.args(["serve", scenario]);
            server
        }
    };
    http_run(scenario, server, cookies, secs, conns, pin)
}

fn driver() {
    let runs = env_num("SKB_RUNS", 5) as usize;
    let secs = env_num("SKB_SECS", 3) as f64;
    let conns = env_num("SKB_CONNS", 32);
    let taskset = can_pin();
    println!(
        "== HTTP count page: {runs} runs x {secs} s, {conns} connections, server {} ==",
        if taskset {
            "pinned to core 0, load generator to core 1"
        } else {
            "and load generator unpinned (no taskset or < 2 cores)"
        }
    );
    let mut scenarios: Vec<(&str, Cookies)> = common::http_scenarios()
        .into_iter()
        .map(|(n, _, c)| (n, c))
        .collect();
    match demo_bin() {
        Some(bin) => {
            println!("demo binary: {}", bin.display());
            scenarios.extend(DEMO.iter().map(|(n, _)| (*n, Cookies::Shared(64))));
        }
        None => {
            println!("no demo binary (cargo build --release -p sessionkit-cli): demo runs skipped")
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![vec![]; scenarios.len()];
    let mut per_cpu: Vec<Vec<f64>> = vec![vec![]; scenarios.len()];
    for round in 0..runs {
        for (i, (name, cookies)) in scenarios.iter().enumerate() {
            let run = one_run(name, *cookies, secs, conns, taskset);
            let lost = match run.lost {
                0 => String::new(),
                n => format!("  {n} updates lost"),
            };
            println!(
                "round {round} {name:<20} {:>10.0} req/s {:>10.0} req per server CPU-s{lost}",
                run.rate, run.per_cpu
            );
            rates[i].push(run.rate);
            per_cpu[i].push(run.per_cpu);
        }
    }
    println!("\nmedians:");
    let mut med = std::collections::HashMap::new();
    for (i, (name, _)) in scenarios.iter().enumerate() {
        let m = median(&rates[i]);
        let all: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
        println!("{name:<20} {m:>10.0} req/s   (runs: {})", all.join(", "));
        med.insert(*name, m);
    }
    println!("\nrequests per server CPU-second (medians):");
    let mut cmed = std::collections::HashMap::new();
    for (i, (name, _)) in scenarios.iter().enumerate() {
        let m = median(&per_cpu[i]);
        println!("{name:<20} {m:>10.0}");
        cmed.insert(*name, m);
    }
    let rc = |a: &str, b: &str| cmed[a] / cmed[b];
    println!(
        "per CPU-second: cookie/bare {:.2}x, cookie/tower {:.2}x, no-cookie/tower {:.2}x, hot/tower {:.2}x",
        rc("sessionkit-cookie", "bare-atomic"),
        rc("sessionkit-cookie", "tower-cookie"),
        rc("sessionkit-nocookie", "tower-nocookie"),
        rc("sessionkit-hot", "tower-hot")
    );
    if med.contains_key("demo-spread64") {
        println!(
            "per CPU-second: demo/tower {:.2}x, demo metrics on/off {:.3}x",
            rc("demo-spread64", "tower-spread64"),
            rc("demo-spread64", "demo-nometrics-spread64")
        );
    }
    let r = |a: &str, b: &str| med[a] / med[b];
    println!("\nratios of medians:");
    println!(
        "cookie page vs bare atomic counter:    {}",
        verdict_at_least(r("sessionkit-cookie", "bare-atomic"), 0.85)
    );
    println!(
        "cookie page vs tower-sessions:         {}",
        verdict_at_least(r("sessionkit-cookie", "tower-cookie"), 1.35)
    );
    println!(
        "no-cookie page vs tower-sessions:      {}",
        verdict_at_least(r("sessionkit-nocookie", "tower-nocookie"), 1.3)
    );
    println!(
        "hot session vs tower-sessions:         {}",
        verdict_at_least(r("sessionkit-hot", "tower-hot"), 0.5)
    );
    if med.contains_key("demo-spread64") {
        println!(
            "demo (memory://) vs tower-sessions:    {}",
            verdict_at_least(r("demo-spread64", "tower-spread64"), 1.2)
        );
        println!(
            "demo metrics on vs off:                {}",
            verdict_at_least(r("demo-spread64", "demo-nometrics-spread64"), 0.97)
        );
    }
}

fn main() {
    let args = bench_args();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1]),
        Some("load") => load_main(&args[1..]),
        _ => driver(),
    }
}
