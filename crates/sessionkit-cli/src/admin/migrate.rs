//! `sessionkit migrate --from URL --to URL`: copies every live session to another store, never
//! overwriting, with a progress line and a final count check.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use sessionkit::store::ScanPages;
use sessionkit::{now_millis, Error, Millis, Store};

use super::{call, open_store, redact, AdminResult, Failure, CALL_TIMEOUT};

/// Arguments of `sessionkit migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Source store URL (left unchanged).
    #[arg(long)]
    pub from: String,
    /// Destination store URL.
    #[arg(long)]
    pub to: String,
    /// Records per scan page.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent writers at the destination.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `migrate` did.
#[derive(Serialize, Debug, Default, Clone, Copy)]
pub struct MigrateSummary {
    /// Live records read from the source.
    pub scanned: u64,
    /// Records written to the destination.
    pub copied: u64,
    /// Records already at the destination (an earlier run, or the app writing there).
    pub skipped: u64,
    /// Records that expired before they could be copied.
    pub expired: u64,
    /// Live sessions at the destination after the copy.
    pub destination_sessions: u64,
}

/// `sessionkit migrate --from URL --to URL`: copies every live session (data, user, version,
/// deadlines) with `create`, so it never overwrites what is already at the destination and a
/// re-run picks up where an interrupted one stopped. The source is only read.
pub async fn migrate(args: MigrateArgs) -> AdminResult {
    if args.from == args.to {
        return Err(Failure::usage("--from and --to are the same store"));
    }
    for url in [&args.from, &args.to] {
        if url.starts_with("memory:") {
            return Err(Failure::usage(format!(
                "{url}: a memory store lives inside one process; migrate needs stores that \
                 outlive it (e.g. sqlite://, file://, redis://, postgres://, mysql://)"
            )));
        }
    }
    if args.batch == 0 || args.jobs == 0 {
        return Err(Failure::usage("--batch and --jobs must be at least 1"));
    }
    let from = open_store(&args.from).await?;
    let to = open_store(&args.to).await?;
    let summary = copy_all(&from, &to, args.batch, args.jobs, !args.quiet).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary).expect("plain struct"));
    } else {
        println!(
            "migrated {} -> {}: {} copied, {} already there, {} expired on the way; {} live at the destination",
            redact(&args.from),
            redact(&args.to),
            summary.copied,
            summary.skipped,
            summary.expired,
            summary.destination_sessions
        );
    }
    Ok(())
}

/// The copy behind `migrate`, usable in-process.
pub async fn copy_all(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    batch: usize,
    jobs: usize,
    progress: bool,
) -> AdminResult<MigrateSummary> {
    let started = Instant::now();
    let total = call("source len", from.len(now_millis())).await?;
    let mut bar = Progress::new(total, progress);
    let mut sum = MigrateSummary::default();
    // Deadlines of every record that is at the destination after this run, for the final check.
    let mut deadlines: Vec<Millis> = Vec::with_capacity(total.min(10_000_000) as usize);
    let mut pages = ScanPages::new(&**from, batch);
    while let Some(page) = call("source scan", pages.next(now_millis())).await? {
        sum.scanned += page.len() as u64;
        let records = Arc::new(page);
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..jobs.min(records.len().max(1)) {
            let (records, to) = (records.clone(), to.clone());
            tasks.spawn(async move {
                let mut out = (MigrateSummary::default(), Vec::new());
                for (key, record) in records.iter().skip(j).step_by(jobs) {
                    if record.is_expired(now_millis()) {
                        out.0.expired += 1;
                        continue;
                    }
                    match tokio::time::timeout(CALL_TIMEOUT, to.create(key, record)).await {
                        Ok(Ok(())) => out.0.copied += 1,
                        Ok(Err(Error::Exists)) => out.0.skipped += 1,
                        Ok(Err(e)) => {
                            return Err(Failure::runtime(format!(
                                "destination create (key {}): {e}",
                                key.short()
                            )))
                        }
                        Err(_) => {
                            return Err(Failure::runtime(format!(
                                "destination create: no answer within {CALL_TIMEOUT:?}"
                            )))
                        }
                    }
                    out.1.push(record.expires_at);
                }
                Ok(out)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (part, mut dl) =
                joined.map_err(|e| Failure::runtime(format!("copy task failed: {e}")))??;
            sum.copied += part.copied;
            sum.skipped += part.skipped;
            sum.expired += part.expired;
            deadlines.append(&mut dl);
        }
        bar.update(&sum);
    }
    bar.finish(&sum, started.elapsed());
    // Count check: everything copied or found that has not expired since must be live there.
    let now = now_millis();
    let expected = deadlines.iter().filter(|&&d| d > now).count() as u64;
    sum.destination_sessions = call("destination len", to.len(now)).await?;
    if sum.destination_sessions < expected {
        return Err(Failure::runtime(format!(
            "count check failed: {expected} migrated sessions should be live at the destination, \
             it counts {}",
            sum.destination_sessions
        )));
    }
    Ok(sum)
}

/// Progress on stderr: an indicatif bar (count, rate, ETA) on a terminal; plain lines every
/// ~10% otherwise (logs, CI and tests), with the same count, rate and ETA.
struct Progress {
    total: u64,
    on: bool,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_tenth: u64,
}

impl Progress {
    fn new(total: u64, on: bool) -> Self {
        let bar = (on && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} sessions  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("a valid template");
            bar.set_style(style);
            bar
        });
        Self {
            total,
            on,
            bar,
            started: Instant::now(),
            last_tenth: 0,
        }
    }

    fn counts(s: &MigrateSummary) -> String {
        format!(
            "{} copied, {} already there, {} expired",
            s.copied, s.skipped, s.expired
        )
    }

    /// The plain line: `42% 4200/10000 (…) 3100/s ETA 2s`.
    fn line(&self, s: &MigrateSummary) -> String {
        let done = s.copied + s.skipped + s.expired;
        let total = self.total.max(done).max(1);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0}s", (total - done) as f64 / rate)
        } else {
            "?".to_owned()
        };
        format!(
            "{:>3}% {done}/{total} ({}) {rate:.0}/s ETA {eta}",
            done * 100 / total,
            Self::counts(s)
        )
    }

    fn update(&mut self, s: &MigrateSummary) {
        if !self.on {
            return;
        }
        let done = s.copied + s.skipped + s.expired;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(Self::counts(s));
            return;
        }
        let tenth = done * 10 / self.total.max(1);
        if tenth > self.last_tenth {
            self.last_tenth = tenth;
            eprintln!("{}", self.line(s));
        }
    }

    fn finish(&self, s: &MigrateSummary, took: Duration) {
        if !self.on {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{} in {:.1}s", self.line(s), took.as_secs_f64());
    }
}
