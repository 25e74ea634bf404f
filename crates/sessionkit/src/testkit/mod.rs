//! The store conformance suite: one set of generic async tests that pins the whole [`Store`]
//! contract (see the [`store`](crate::store) module), run against every store of this crate and
//! available to third-party stores behind the `testkit` cargo feature.
//!
//! Each test gets a fresh, isolated store from a factory you supply (a new temporary directory,
//! key prefix or schema: tests assume they see only their own records, e.g. `len` starts at 0)
//! wrapped in a [`Fixture`]. Keys are random and user names unique, so the backend itself may be
//! shared as long as each store instance sees only its own records.
//!
//! The easy way is the [`conformance_tests!`](crate::conformance_tests) macro, which expands to a
//! module with one `#[test]` per contract test, so a failure names the broken rule:
//!
//! ```
//! use std::sync::Arc;
//! use sessionkit::MemoryStore;
//!
//! // In tests/conformance_mystore.rs of your crate, with
//! // `sessionkit = { version = "...", features = ["testkit"] }` in [dev-dependencies]:
//! sessionkit::conformance_tests!(memory_store, async { Arc::new(MemoryStore::new()) });
//! # fn main() {}
//! ```
//!
//! A store that holds bytes at rest should also let the suite plant corrupt bytes, so the
//! "corrupt records read as absent" rule is checked (it is skipped otherwise). Build the
//! [`Fixture`] yourself for that, and to keep a temporary directory alive with [`Fixture::keep`]
//! (`MemoryStore` stands in for your store below; the suite first checks that an intact record
//! planted through the hook loads, so a hook that writes nowhere fails loudly):
//!
//! ```
//! use std::sync::Arc;
//! use sessionkit::testkit::{async_trait, Fixture, RawAccess};
//! use sessionkit::{Key, MemoryStore};
//!
//! #[derive(Debug)]
//! struct Planter; // e.g. holds the directory or connection of the store under test
//!
//! #[async_trait]
//! impl RawAccess for Planter {
//!     async fn put_raw(&self, key: &Key, bytes: &[u8]) -> sessionkit::Result<()> {
//!         // Write `bytes` where the store keeps the record of `key`, looking live otherwise.
//!         # let _ = (key, bytes);
//!         Ok(())
//!     }
//! }
//!
//! sessionkit::conformance_tests!(my_store, async {
//!     Fixture::new(Arc::new(MemoryStore::new())).with_raw(Planter)
//! });
//! # fn main() {}
//! ```
//!
//! Or, from any async test, [`run_all`] runs every test in turn and reports all failures by name:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! sessionkit::testkit::run_all(|| async { Arc::new(sessionkit::MemoryStore::new()) }).await;
//! # });
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::store::Store;
use helpers::panic_message;

mod cas;
mod corruption;
mod crud;
mod expiry;
mod helpers;
mod manager;
mod rotation;
mod scan;
mod users;

/// The attribute for implementing [`RawAccess`] (re-exported so stores need no direct
/// dependency on `async-trait`).
pub use async_trait::async_trait;

/// A boxed, sendable future, as returned by the entries of [`TESTS`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The raw-bytes hook of [`Fixture::with_raw`]; it lives in [`store`](crate::store) and is
/// re-exported here for fixtures.
pub use crate::store::RawAccess;

/// One store under test, with the optional hooks the suite can use.
pub struct Fixture {
    store: Arc<dyn Store>,
    raw: Option<Arc<dyn RawAccess>>,
    self_expiring: bool,
    // Why the backend is absent: the test is reported as skipped and passes.
    skip: Option<String>,
    // Temporary directories, connections etc. that must outlive the test.
    guards: Vec<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .field("raw", &self.raw)
            .field("self_expiring", &self.self_expiring)
            .field("skip", &self.skip)
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl Fixture {
    /// A fixture for `store`, which must be empty and see no other test's records.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            raw: None,
            self_expiring: false,
            skip: None,
            guards: Vec::new(),
        }
    }

    /// A fixture for a backend that is not there (e.g. no server on this machine): the test
    /// prints that it is skipped, with `reason`, and passes. Deciding when absence is acceptable
    /// (and failing instead, e.g. on CI) is up to the factory.
    pub fn skip(reason: impl Into<String>) -> Self {
        let mut fx = Self::new(Arc::new(crate::store::MemoryStore::new()));
        fx.skip = Some(reason.into());
        fx
    }

    /// Lets the suite plant bad bytes (enables the corrupt-record test).
    pub fn with_raw(mut self, raw: impl RawAccess) -> Self {
        self.raw = Some(Arc::new(raw));
        self
    }

    /// Declares that the backend drops expired records by itself (e.g. Redis key TTLs), so
    /// `gc` may find fewer expired records than were written. Everything else stays strict.
    pub fn self_expiring(mut self, yes: bool) -> Self {
        self.self_expiring = yes;
        self
    }

    /// Keeps `guard` (a temporary directory, a server handle ...) alive until the test ends.
    pub fn keep(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl From<Arc<dyn Store>> for Fixture {
    fn from(store: Arc<dyn Store>) -> Self {
        Self::new(store)
    }
}

impl<S: Store> From<Arc<S>> for Fixture {
    fn from(store: Arc<S>) -> Self {
        Self::new(store)
    }
}

/// One contract test: its name and its body.
#[derive(Clone, Copy)]
pub struct Test {
    /// The test's name (also the name of its function in this module).
    pub name: &'static str,
    /// Runs the test on a fixture; panics on failure.
    pub run: fn(Fixture) -> BoxFuture<()>,
}

impl fmt::Debug for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The list of contract tests, written once: in the order [`run_all`] runs them, each with the
/// module that holds it. It hands the list to [`__conformance_expand!`](crate::__conformance_expand),
/// which turns it into [`TESTS`] and the re-exports here, or into the `#[test]` functions of
/// [`conformance_tests!`](crate::conformance_tests) in the caller's crate. Adding a test means
/// adding one line here.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($mode:ident $($args:tt)*) => {
        $crate::__conformance_expand!($mode [$($args)*]
            crud::create_is_insert_if_absent,
            crud::load_never_returns_expired_or_unknown,
            cas::save_is_compare_and_set,
            cas::save_after_destroy_never_resurrects,
            cas::save_on_expired_record_conflicts,
            cas::ready_paths_answer_as_the_async_calls,
            expiry::touch_moves_deadline_keeps_data_and_version,
            expiry::deadlines_follow_save_and_touch,
            rotation::rotate_without_grace_kills_old_key,
            rotation::rotate_with_grace_leaves_alias,
            rotation::rotate_conflicts_move_nothing,
            crud::destroy_removes_the_record,
            crud::take_returns_what_it_removed,
            expiry::gc_removes_expired_in_bounded_batches,
            expiry::len_counts_live_sessions_only,
            scan::scan_visits_every_live_record_once,
            scan::scan_is_stable_under_concurrent_changes,
            users::user_index_follows_every_write,
            users::destroy_user_removes_all_and_counts,
            users::sessions_of_never_misses_a_rotating_session,
            corruption::corrupt_records_read_as_absent,
            expiry::extreme_times_never_panic,
            manager::concurrent_updates_through_manager_are_exact,
            manager::combined_writes_from_two_managers_are_exact,
            manager::writer_in_flight_during_destroy_never_resurrects,
            manager::a_retired_id_used_late_ends_its_users_sessions,
            manager::revocation_ends_a_session_that_keeps_rotating,
        );
    };
}

/// Implementation detail of [`conformance_tests!`]: what the list becomes, by mode.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (catalogue [] $($module:ident :: $test:ident),* $(,)?) => {
        $(pub use self::$module::$test;)*

        /// Every contract test, in the order [`run_all`] runs them.
        pub const TESTS: &[Test] = &[
            $(Test { name: ::core::stringify!($test), run: |fx| Box::pin($module::$test(fx)) },)*
        ];
    };
    (tests [$make:expr] $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::testkit::__block_on($crate::testkit::run_one(
                    ::core::stringify!($test),
                    || $make,
                ));
            }
        )*
    };
}

__conformance_list!(catalogue);

/// Runs every test of [`TESTS`], each on a fresh fixture from `make`, and panics at the end
/// listing every failed test by name. Must run inside a tokio runtime; use a multi-threaded one so
/// the concurrency tests race for real.
pub async fn run_all<F, Fut, X>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = X>,
    X: Into<Fixture>,
{
    let mut failed = Vec::new();
    for test in TESTS {
        let fixture: Fixture = make().await.into();
        if let Some(reason) = &fixture.skip {
            eprintln!(
                "sessionkit conformance: {} ... SKIPPED ({reason})",
                test.name
            );
            continue;
        }
        // A task of its own, so a panic is caught and reported with the test's name.
        match tokio::spawn((test.run)(fixture)).await {
            Ok(()) => eprintln!("sessionkit conformance: {} ... ok", test.name),
            Err(e) => {
                eprintln!("sessionkit conformance: {} ... FAILED", test.name);
                failed.push(format!("{}: {}", test.name, panic_message(e)));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} store conformance tests failed:\n{}",
        failed.len(),
        TESTS.len(),
        failed.join("\n")
    );
}

/// Runs the test of [`TESTS`] called `name` on a fresh fixture from `make` (used by
/// [`conformance_tests!`](crate::conformance_tests)). Panics if the test fails or is unknown.
pub async fn run_one<F, Fut, X>(name: &str, make: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = X>,
    X: Into<Fixture>,
{
    let test = TESTS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no store conformance test named {name:?}"));
    let fixture: Fixture = make().await.into();
    if let Some(reason) = &fixture.skip {
        eprintln!("sessionkit conformance: {name} ... SKIPPED ({reason})");
        return;
    }
    (test.run)(fixture).await
}

/// Runs `fut` to completion on a new two-worker tokio runtime (the macro's tests use it, so the
/// concurrency tests run in parallel and the caller needs no tokio macros).
#[doc(hidden)]
pub fn __block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(fut)
}

/// Expands to a module `$name` with one `#[test]` per store conformance test, each running on a
/// fresh store from the async expression `$make` (evaluated once per test; it yields an
/// `Arc<YourStore>`, an `Arc<dyn Store>` or a [`testkit::Fixture`](crate::testkit::Fixture)).
/// Items of the enclosing module are in scope inside `$make`.
///
/// ```
/// # use std::sync::Arc;
/// sessionkit::conformance_tests!(memory, async { Arc::new(sessionkit::MemoryStore::new()) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $make:expr $(,)?) => {
        #[cfg(test)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_list!(tests $make);
        }
    };
}
