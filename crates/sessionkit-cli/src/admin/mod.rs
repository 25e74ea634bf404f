//! The admin subcommands of `sessionkit`: `stats`, `list`, `gc`, `revoke`, `migrate`. They work
//! on any store URL that [`sessionkit::store::open`] knows, through the [`Store`] trait only, so
//! a new backend gets them for free.
//!
//! Errors carry an exit code ([`Failure::code`]): [`EXIT_USAGE`] for what the caller got wrong
//! (a bad or unknown URL, contradictory flags), [`EXIT_RUNTIME`] for what went wrong on the way
//! (an unreachable store, a wrong schema, a failed call, a count check that did not add up).
//!
//! This file holds what the commands share (opening a store, timeouts, errors, walking the
//! records); each command has a file of its own.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sessionkit::store::ScanPages;
use sessionkit::{Config, Error, Key, Manager, Millis, Record, Store};

mod gc;
mod list;
mod migrate;
mod revoke;
mod stats;

pub use gc::{gc, GcArgs};
pub use list::{list, ListArgs, Row};
pub use migrate::{copy_all, migrate, MigrateArgs, MigrateSummary};
pub use revoke::{revoke, RevokeArgs};
pub use stats::{stats, Stats, StatsArgs};

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
    let config = Config::builder()
        .store_timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_usage_errors() {
        for url in ["nonsense", "nosuch://x", ""] {
            let err = open_store(url).await.unwrap_err();
            assert_eq!(err.code, EXIT_USAGE, "{url}: {err}");
        }
        assert!(open_store("memory://").await.is_ok());
    }
}
