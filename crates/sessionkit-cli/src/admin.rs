//! The admin subcommands of `sessionkit`: `stats`, `list`, `gc`, `revoke`, `migrate`. They work
//! on any store URL that [`sessionkit::store::open`] knows, through the [`Store`] trait only, so
//! a new backend gets them for free.
//!
//! Errors carry an exit code ([`Failure::code`]): [`EXIT_USAGE`] for what the caller got wrong
//! (a bad or unknown URL, contradictory flags), [`EXIT_RUNTIME`] for what went wrong on the way
//! (an unreachable store, a wrong schema, a failed call, a count check that did not add up).

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use sessionkit::store::ScanPages;
use sessionkit::{now_millis, Config, Error, Key, Manager, Millis, Record, Store};

use crate::demo::fmt_time;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime or store error (unreachable store, failed call, failed check).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: a usage error (bad arguments, bad or unknown store URL).
pub const EXIT_USAGE: u8 = 2;

/// How long one store call may take before the command gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of an admin command, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// [`EXIT_USAGE`] or [`EXIT_RUNTIME`].
    pub code: u8,
    /// The message printed after `error: `.
    pub message: String,
}

impl Failure {
    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// A runtime error (exit code 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_RUNTIME,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Result of an admin command.
pub type AdminResult<T = ()> = Result<T, Failure>;

/// `url` with any password replaced by `***`, for messages: the library's
/// [`redact_url`](sessionkit::store::redact_url), so the CLI and the library's errors agree.
pub fn redact(url: &str) -> String {
    sessionkit::store::redact_url(url)
}

/// Opens the store at `url` and checks that it answers.
///
/// A malformed or unknown URL is a usage error; a store that cannot be opened or does not answer
/// (down, wrong credentials, wrong schema) is a runtime error.
pub async fn open_store(url: &str) -> AdminResult<Arc<dyn Store>> {
    let shown = redact(url);
    if !url.contains("://") {
        return Err(Failure::usage(format!(
            "bad store URL {shown:?}: expected SCHEME://..., e.g. {}",
            known_schemes()
        )));
    }
    let store = match tokio::time::timeout(CALL_TIMEOUT, sessionkit::store::open(url)).await {
        Err(_) => {
            return Err(Failure::runtime(format!(
                "store {shown} did not answer within {CALL_TIMEOUT:?}"
            )))
        }
        // Errors about the URL (syntax, parameters, scheme) are the caller's; configuration
        // errors (a foreign database, a newer schema) are about the store.
        Ok(Err(Error::BadUrl { reason, .. })) => {
            return Err(Failure::usage(format!("bad store URL {shown}: {reason}")))
        }
        Ok(Err(Error::Config(msg))) => {
            return Err(Failure::runtime(format!("cannot use store {shown}: {msg}")))
        }
        Ok(Err(e)) => return Err(Failure::runtime(format!("cannot open store {shown}: {e}"))),
        Ok(Ok(s)) => s,
    };
    match tokio::time::timeout(CALL_TIMEOUT, store.ping()).await {
        Err(_) => Err(Failure::runtime(format!(
            "store {shown} is unreachable: no answer within {CALL_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(Failure::runtime(format!(
            "store {shown} is unreachable: {e}"
        ))),
        Ok(Ok(())) => Ok(store),
    }
}

fn known_schemes() -> String {
    sessionkit::store::SCHEMES
        .iter()
        .map(|(s, _)| *s)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one store call with the command's timeout; `what` names it in the error.
async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = sessionkit::Result<T>>,
) -> AdminResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::runtime(format!("{what}: {e}"))),
        Err(_) => Err(Failure::runtime(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// A manager over `store` with default settings, for the commands that go through one.
fn manager(store: Arc<dyn Store>) -> AdminResult<Manager> {
    let config = Config {
        store_timeout: CALL_TIMEOUT,
        ..Config::default()
    };
    Manager::new(store, config).map_err(|e| Failure::runtime(e.to_string()))
}

/// Visits every live record of `store` page by page.
async fn for_each_record(
    store: &dyn Store,
    batch: usize,
    now: Millis,
    mut f: impl FnMut(&Key, &Record) -> bool,
) -> AdminResult<()> {
    let mut pages = ScanPages::new(store, batch);
    while let Some(page) = call("scan", pages.next(now)).await? {
        for (key, record) in &page {
            if !f(key, record) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Arguments of `sessionkit stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `stats --json` prints.
#[derive(Serialize, Debug)]
pub struct Stats {
    /// Store kind, e.g. `"sqlite"`.
    pub store: &'static str,
    /// Live sessions as the store counts them (`Store::len`).
    pub sessions: u64,
    /// Live sessions with a signed-in user.
    pub authenticated: u64,
    /// Live sessions without a user.
    pub anonymous: u64,
    /// Distinct signed-in users.
    pub users: u64,
    /// Expired records still stored, when the store can tell.
    pub expired_awaiting_gc: Option<u64>,
    /// Total bytes of session data values (keys and values) over live sessions.
    pub data_bytes: u64,
}

/// `sessionkit stats`.
pub async fn stats(args: StatsArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let now = now_millis();
    let sessions = call("len", store.len(now)).await?;
    let expired_awaiting_gc = call("expired count", store.expired_awaiting_gc(now)).await?;
    let (mut authenticated, mut anonymous, mut data_bytes) = (0u64, 0u64, 0u64);
    let mut users = std::collections::HashSet::new();
    for_each_record(&*store, 1000, now, |_, r| {
        match &r.user {
            Some(u) => {
                authenticated += 1;
                if !users.contains(u.as_str()) {
                    users.insert(u.clone());
                }
            }
            None => anonymous += 1,
        }
        data_bytes += r
            .data
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        true
    })
    .await?;
    let s = Stats {
        store: store.kind(),
        sessions,
        authenticated,
        anonymous,
        users: users.len() as u64,
        expired_awaiting_gc,
        data_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&s).expect("plain struct"));
    } else {
        println!("store:               {} ({})", s.store, redact(&args.store));
        println!("live sessions:       {}", s.sessions);
        println!("  authenticated:     {}", s.authenticated);
        println!("  anonymous:         {}", s.anonymous);
        println!("distinct users:      {}", s.users);
        match s.expired_awaiting_gc {
            Some(n) => println!("expired awaiting GC: {n}"),
            None => println!(
                "expired awaiting GC: unknown (the {} store cannot tell)",
                s.store
            ),
        }
        println!("session data bytes:  {}", s.data_bytes);
    }
    Ok(())
}

/// Arguments of `sessionkit list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Only the sessions of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many sessions (0 = all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of `list` (metadata only: never the session ID, which the store does not have).
#[derive(Serialize, Debug)]
pub struct Row {
    /// The first 16 hex digits of the key hash (what `Manager::revoke` calls a handle).
    pub key: String,
    /// The signed-in user, if any.
    pub user: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created: Millis,
    /// Last use, Unix milliseconds.
    pub last_seen: Millis,
    /// Idle expiry, Unix milliseconds.
    pub expires: Millis,
    /// Record version (number of saves).
    pub version: u64,
    /// Number of data values.
    pub values: usize,
}

impl Row {
    fn of(key: &Key, r: &Record) -> Self {
        Row {
            key: key.short(),
            user: r.user.clone(),
            created: r.created,
            last_seen: r.last_access,
            expires: r.expires_at,
            version: r.version,
            values: r.data.len(),
        }
    }
}

/// `sessionkit list`.
pub async fn list(args: ListArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let now = now_millis();
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let mut rows = Vec::new();
    match &args.user {
        Some(user) => {
            let mut list = call("sessions_of", store.sessions_of(user, now)).await?;
            list.sort_by_key(|(_, r)| r.created);
            rows.extend(list.iter().take(limit).map(|(k, r)| Row::of(k, r)));
        }
        None => {
            for_each_record(&*store, limit.min(1000), now, |k, r| {
                rows.push(Row::of(k, r));
                rows.len() < limit
            })
            .await?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&rows).expect("plain struct"));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16}  {:<20}  {:<23}  {:<23}  {:<23}",
        "KEY", "USER", "CREATED", "LAST SEEN", "EXPIRES"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<16}  {:<20}  {:<23}  {:<23}  {:<23}",
            r.key,
            r.user.as_deref().unwrap_or("-"),
            fmt_time(r.created),
            fmt_time(r.last_seen),
            fmt_time(r.expires)
        );
    }
    let _ = writeln!(out, "{} session(s)", rows.len());
    Ok(())
}

/// Arguments of `sessionkit gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Print `{"removed": N}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sessionkit gc`: one full pass.
pub async fn gc(args: GcArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let removed = manager(store)?
        .gc_once()
        .await
        .map_err(|e| Failure::runtime(format!("gc: {e}")))?;
    if args.json {
        println!("{}", serde_json::json!({ "removed": removed }));
    } else {
        println!("removed {removed} expired record(s)");
    }
    Ok(())
}

/// Arguments of `sessionkit revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// End every session of this user.
    #[arg(long)]
    pub user: String,
    /// Print `{"user": ..., "revoked": N}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sessionkit revoke --user NAME`.
pub async fn revoke(args: RevokeArgs) -> AdminResult {
    if args.user.is_empty() {
        return Err(Failure::usage("--user must not be empty"));
    }
    let store = open_store(&args.store).await?;
    let n = manager(store)?
        .revoke_all(&args.user)
        .await
        .map_err(|e| Failure::runtime(format!("revoke: {e}")))?;
    if args.json {
        println!("{}", serde_json::json!({ "user": args.user, "revoked": n }));
    } else {
        println!("ended {n} session(s) of {}", args.user);
    }
    Ok(())
}

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
                 outlive it (e.g. sqlite://, file://, redis://, postgres://)"
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

/// A one-line progress report on stderr: redrawn in place on a terminal, one line per ~10%
/// otherwise (logs and tests).
struct Progress {
    total: u64,
    on: bool,
    tty: bool,
    last_tenth: u64,
}

impl Progress {
    fn new(total: u64, on: bool) -> Self {
        Self {
            total,
            on,
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn line(&self, s: &MigrateSummary) -> String {
        let done = s.copied + s.skipped + s.expired;
        let total = self.total.max(done).max(1);
        let pct = done * 100 / total;
        let filled = (pct / 4) as usize;
        format!(
            "[{}{}] {pct:>3}% {done}/{total} ({} copied, {} already there, {} expired)",
            "#".repeat(filled),
            "-".repeat(25 - filled.min(25)),
            s.copied,
            s.skipped,
            s.expired
        )
    }

    fn update(&mut self, s: &MigrateSummary) {
        if !self.on {
            return;
        }
        if self.tty {
            eprint!("\r{}", self.line(s));
        } else {
            let done = s.copied + s.skipped + s.expired;
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                eprintln!("{}", self.line(s));
            }
        }
    }

    fn finish(&self, s: &MigrateSummary, took: Duration) {
        if self.on {
            if self.tty {
                eprintln!();
            }
            eprintln!("{} in {:.1}s", self.line(s), took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("postgres://u:pw@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[tokio::test]
    async fn bad_urls_are_usage_errors() {
        for url in ["nonsense", "nosuch://x", ""] {
            let err = open_store(url).await.unwrap_err();
            assert_eq!(err.code, EXIT_USAGE, "{url}: {err}");
        }
        assert!(open_store("memory://").await.is_ok());
    }
}
