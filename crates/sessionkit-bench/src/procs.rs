//! Process plumbing for the HTTP benches: each measured server runs in a fresh process pinned
//! to core 0 and the load generator in another pinned to core 1, so neither steals the other's
//! core and the server's own CPU time can be read from `/proc`. The bench binaries re-execute
//! themselves with a subcommand (`serve ...`, `load ...`) for the child processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::loadgen::{run, Cookies, Plan};
use crate::stats::cpu_seconds;

/// The bench binary's arguments without the program name and the `--bench` flag cargo adds.
pub fn bench_args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// An integer from the environment, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Whether servers and load generators can be pinned to separate cores (`taskset` works and
/// there are at least two cores).
pub fn can_pin() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores >= 2
        && Command::new("taskset")
            .args(["-c", "0", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// A command running `program` on `core` when `pin` is set.
pub fn pinned(core: u8, pin: bool, program: &std::path::Path) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Starts a server command that prints its port as its first line of output, alone or at the
/// end of an address (`sessionkit serve` prints `... listening on http://127.0.0.1:PORT`).
pub fn start_server(mut cmd: Command) -> std::io::Result<(Child, u16)> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    let port = line.trim().rsplit(':').next().unwrap_or("").parse();
    match port {
        Ok(port) => Ok((child, port)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::other(format!(
                "server did not print a port (got {line:?})"
            )))
        }
    }
}

/// The `load <port> <cookies> <secs> <conns>` subcommand (cookies as [`Cookies::arg`]): runs
/// the load generator on a current-thread runtime against `/count` and prints `<requests>
/// <seconds> <errors> <total> <lost>`.
pub fn load_main(args: &[String]) {
    let port: u16 = args[0].parse().expect("port");
    let plan = Plan {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        path: "/count".into(),
        cookies: Cookies::parse(&args[1]).expect("cookies: none, conn or shared<N>"),
        connections: args[3].parse().expect("connections"),
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs_f64(args[2].parse().expect("seconds")),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = rt.block_on(run(&plan)).expect("load generator");
    println!(
        "{} {} {} {} {}",
        out.requests, out.seconds, out.errors, out.total, out.lost
    );
}

/// One measured HTTP run: starts `server` (pinned to core 0 by the caller), drives it from this
/// executable's `load` subcommand on core 1, stops the server by its handle. The second figure
/// counts every request answered (warm-up included) against the CPU time the server process
/// used, so other processes on the machine do not inflate it.
pub fn http_run(
    label: &str,
    server: Command,
    cookies: Cookies,
    secs: f64,
    conns: u64,
    pin: bool,
) -> HttpRun {
    let failed = HttpRun {
        rate: f64::NAN,
        per_cpu: f64::NAN,
        lost: 0,
        total: 0,
    };
    let (mut child, port) = match start_server(server) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{label}: {e}");
            return failed;
        }
    };
    let exe = std::env::current_exe().expect("current exe");
    let out = pinned(1, pin, &exe)
        .args([
            "load",
            &port.to_string(),
            &cookies.arg(),
            &secs.to_string(),
            &conns.to_string(),
        ])
        .output();
    let cpu = cpu_seconds(Some(child.id())).unwrap_or(f64::NAN);
    let _ = child.kill();
    let _ = child.wait();
    let Ok(out) = out else {
        eprintln!("{label}: could not run the load generator");
        return failed;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if f.len() != 5 || f[2] > 0.0 {
        eprintln!("{label}: run failed or had errors: {text:?}");
        return failed;
    }
    HttpRun {
        rate: f[0] / f[1],
        per_cpu: f[3] / cpu,
        lost: f[4] as u64,
        total: f[3] as u64,
    }
}

/// What one [`http_run`] measured; NaN rates if anything failed or any request had an error.
#[derive(Clone, Copy, Debug)]
pub struct HttpRun {
    /// Requests per second in the measured window.
    pub rate: f64,
    /// Requests answered per server CPU-second.
    pub per_cpu: f64,
    /// Lost updates on shared sessions (see [`crate::loadgen::Outcome::lost`]).
    pub lost: u64,
    /// Requests answered over the whole run, warm-up included.
    pub total: u64,
}

/// Seconds of CPU the Redis server at `addr` has used (`INFO cpu`: `used_cpu_user` +
/// `used_cpu_sys`, the whole server process: command execution, scripts, and the network I/O
/// that `INFO commandstats` leaves out); `None` if `redis-cli` is missing or fails.
pub fn redis_cpu_seconds(addr: SocketAddr) -> Option<f64> {
    let out = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["INFO", "cpu"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))?
            .parse()
            .ok()
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}
