//! A closed-loop driver for store-level operations: `workers` tasks each call one operation
//! back to back for a fixed time, and the driver reports throughput and latency percentiles.
//!
//! Both sides of the durable/shared store benches (sessionkit here, tower-sessions in the
//! `tower` crate next to this one) run their operations through this one driver, so they are
//! timed by the same code. The run is bounded by time: a warm-up, then a measured window that
//! is stretched, up to [`MAX_STRETCH`], until every worker has completed an operation in it, so
//! a slow or busy machine gives a slow figure rather than an empty one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Rng;

/// How long and how wide to drive an operation.
#[derive(Clone, Copy, Debug)]
pub struct OpsPlan {
    /// Concurrent workers (tasks; the caller sizes the runtime).
    pub workers: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub measure: Duration,
}

impl OpsPlan {
    /// Parses the `<workers> <warmup-s> <secs> <sessions>` arguments that both sides' `ops`
    /// subcommands take; returns the plan and the session count.
    pub fn from_args(args: &[String]) -> Result<(Self, usize), String> {
        let num = |i: usize| -> Result<f64, String> {
            let a = args
                .get(i)
                .ok_or("expected <workers> <warmup-s> <secs> <sessions>")?;
            a.parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("not a non-negative number: {a:?}"))
        };
        let plan = Self {
            workers: num(0)? as usize,
            warmup: Duration::from_secs_f64(num(1)?),
            measure: Duration::from_secs_f64(num(2)?),
        };
        Ok((plan, num(3)? as usize))
    }
}

/// What a driven operation did in the measured window.
#[derive(Clone, Debug, Default)]
pub struct OpsOutcome {
    /// Operations completed.
    pub ops: u64,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency in microseconds.
    pub p99_us: f64,
    /// Operations that returned an error (any at all makes the run suspect).
    pub errors: u64,
}

impl OpsOutcome {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    /// One line: `<ops> <seconds> <p50_us> <p99_us> <errors>`, as the bench processes print it.
    pub fn to_line(&self) -> String {
        format!(
            "{} {:.6} {:.3} {:.3} {}",
            self.ops, self.seconds, self.p50_us, self.p99_us, self.errors
        )
    }

    /// Parses [`to_line`](Self::to_line)'s output.
    pub fn from_line(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 {
            return None;
        }
        Some(Self {
            ops: f[0].parse().ok()?,
            seconds: f[1].parse().ok()?,
            p50_us: f[2].parse().ok()?,
            p99_us: f[3].parse().ok()?,
            errors: f[4].parse().ok()?,
        })
    }
}

/// Latency samples kept per worker; beyond this the run still counts operations but stops
/// recording latencies, which bounds memory on a fast store.
const MAX_SAMPLES: usize = 1 << 20;

/// How far past its planned length a measured window may stretch while waiting for every worker
/// to complete an operation in it (a store that never answers still ends the run).
pub const MAX_STRETCH: Duration = Duration::from_secs(60);

/// Seed of the bench sessions' keys (sessionkit) and ids (tower-sessions), so both sides make
/// their sessions the same way, and of the drivers' random streams.
pub const SEED: u64 = 0x5e55_1017;

/// Drives `op(session)` from `plan.workers` tasks for the warm-up plus the measured window, over
/// `sessions` sessions numbered from 0. Worker *w* owns the sessions numbered ≡ *w* modulo the
/// worker count and picks one of them uniformly at random for each call, so two workers never
/// write the same session (compare-and-set never conflicts) and never share a random stream.
pub async fn drive<F, Fut>(plan: OpsPlan, sessions: usize, op: F) -> OpsOutcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let measuring = Arc::new(AtomicBool::new(false));
    // Workers that have completed an operation inside the measured window.
    let counted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = plan.workers.max(1);
    let sessions = sessions.max(1);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, measuring, stop) = (op.clone(), measuring.clone(), stop.clone());
        let counted = counted.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(SEED ^ 1 ^ (w as u64).wrapping_mul(0x9e37_79b9));
            let owned = (sessions / workers).max(1) as u64;
            let mut samples: Vec<u32> = Vec::new();
            let (mut ops, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let session = (w + workers * (rng.next_u64() % owned) as usize).min(sessions - 1);
                let start = Instant::now();
                let result = op(session).await;
                let took = start.elapsed();
                if measuring.load(Ordering::Relaxed) {
                    if ops == 0 {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    ops += 1;
                    if result.is_err() {
                        errors += 1;
                    }
                    if samples.len() < MAX_SAMPLES {
                        samples.push(took.as_nanos().min(u32::MAX as u128) as u32);
                    }
                }
                if let Err(e) = result {
                    // Print the first few so a broken run says why; then stop early so a dead
                    // store does not spin for the whole window.
                    if errors <= 3 {
                        eprintln!("worker {w}: {e}");
                    }
                    if errors > 100 {
                        break;
                    }
                }
            }
            (ops, errors, samples)
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(plan.measure).await;
    while counted.load(Ordering::Relaxed) < workers && start.elapsed() < plan.measure + MAX_STRETCH
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut out = OpsOutcome {
        seconds,
        ..Default::default()
    };
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        let (ops, errors, samples) = t.await.unwrap_or((0, 1, Vec::new()));
        out.ops += ops;
        out.errors += errors;
        all.extend(samples);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() - 1) as f64 * p).round() as usize;
        f64::from(all[i]) / 1000.0
    };
    out.p50_us = pct(0.50);
    out.p99_us = pct(0.99);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation slower than the whole planned window still gets measured, once per worker:
    /// a busy CI machine must give a slow figure, never "no operation completed".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn window_stretches_until_every_worker_completes_an_operation() {
        let plan = OpsPlan {
            workers: 3,
            warmup: Duration::ZERO,
            measure: Duration::from_millis(20),
        };
        let out = drive(plan, 6, |_| async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok(())
        })
        .await;
        assert!(out.ops >= 3, "{} operations measured", out.ops);
        assert_eq!(out.errors, 0);
        assert!(out.seconds >= 0.15, "window of {} s", out.seconds);
        assert!(out.p50_us >= 150_000.0 && out.p50_us <= out.p99_us);
    }

    #[test]
    fn outcome_line_round_trips() {
        let o = OpsOutcome {
            ops: 12,
            seconds: 1.5,
            p50_us: 3.25,
            p99_us: 9.5,
            errors: 1,
        };
        let back = OpsOutcome::from_line(&o.to_line()).unwrap();
        assert_eq!((back.ops, back.errors), (12, 1));
        assert_eq!((back.seconds, back.p50_us, back.p99_us), (1.5, 3.25, 9.5));
        assert!(OpsOutcome::from_line("1 2 3").is_none());
    }
}
