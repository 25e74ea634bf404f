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
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{Key, SessionId};
use crate::manager::Manager;
use crate::record::{now_millis, AuthInfo, Millis, Record};
use crate::store::Store;

/// The attribute for implementing [`RawAccess`] (re-exported so stores need no direct
/// dependency on `async-trait`).
pub use async_trait::async_trait;

/// A boxed, sendable future, as returned by the entries of [`TESTS`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Direct access to a store's bytes at rest, for planting corrupt or foreign records.
///
/// Only stores that keep bytes (file, SQLite, Redis, Postgres) implement it; the memory store has
/// no bytes to corrupt.
#[async_trait]
pub trait RawAccess: Send + Sync + fmt::Debug + 'static {
    /// Stores `bytes` as the record of `key`, replacing anything there, such that everything the
    /// store keeps beside the bytes says "live" (e.g. an expiry column far in the future, no
    /// user). The store must then read the record as absent.
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()>;
}

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

macro_rules! catalogue {
    ($($name:ident),* $(,)?) => {
        /// Every contract test, in the order [`run_all`] runs them.
        pub const TESTS: &[Test] = &[
            $(Test { name: stringify!($name), run: |fx| Box::pin($name(fx)) },)*
        ];
    };
}

catalogue!(
    create_is_insert_if_absent,
    load_never_returns_expired_or_unknown,
    save_is_compare_and_set,
    save_after_destroy_never_resurrects,
    save_on_expired_record_conflicts,
    touch_moves_deadline_keeps_data_and_version,
    deadlines_follow_save_and_touch,
    rotate_without_grace_kills_old_key,
    rotate_with_grace_leaves_alias,
    rotate_conflicts_move_nothing,
    destroy_removes_the_record,
    gc_removes_expired_in_bounded_batches,
    len_counts_live_sessions_only,
    scan_visits_every_live_record_once,
    scan_is_stable_under_concurrent_changes,
    user_index_follows_every_write,
    destroy_user_removes_all_and_counts,
    corrupt_records_read_as_absent,
    extreme_times_never_panic,
    concurrent_updates_through_manager_are_exact,
    writer_in_flight_during_destroy_never_resurrects,
);

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

/// Checks that the macro lists exactly the tests of [`TESTS`].
#[doc(hidden)]
pub fn __check_complete(listed: &[&str]) {
    let all: Vec<&str> = TESTS.iter().map(|t| t.name).collect();
    assert_eq!(
        listed, all,
        "conformance_tests! and testkit::TESTS disagree (a sessionkit bug)"
    );
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
            $crate::__conformance_tests_each!(
                $make;
                create_is_insert_if_absent,
                load_never_returns_expired_or_unknown,
                save_is_compare_and_set,
                save_after_destroy_never_resurrects,
                save_on_expired_record_conflicts,
                touch_moves_deadline_keeps_data_and_version,
                deadlines_follow_save_and_touch,
                rotate_without_grace_kills_old_key,
                rotate_with_grace_leaves_alias,
                rotate_conflicts_move_nothing,
                destroy_removes_the_record,
                gc_removes_expired_in_bounded_batches,
                len_counts_live_sessions_only,
                scan_visits_every_live_record_once,
                scan_is_stable_under_concurrent_changes,
                user_index_follows_every_write,
                destroy_user_removes_all_and_counts,
                corrupt_records_read_as_absent,
                extreme_times_never_panic,
                concurrent_updates_through_manager_are_exact,
                writer_in_flight_during_destroy_never_resurrects,
            );
        }
    };
}

/// Implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_each {
    ($make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::testkit::__block_on($crate::testkit::run_one(
                    ::core::stringify!($test),
                    || $make,
                ));
            }
        )*

        #[test]
        fn suite_is_complete() {
            $crate::testkit::__check_complete(&[$(::core::stringify!($test)),*]);
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const SEC: Millis = 1_000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;
const DAY: Millis = 24 * HOUR;

fn key() -> Key {
    SessionId::generate()
        .expect("OS random number generator")
        .key()
}

/// A key next to `k` (same leading bytes, last byte differs): stores that partition or order by
/// key put it beside `k`, where bookkeeping mistakes show.
fn sibling(k: &Key, n: u8) -> Key {
    let mut b = k.0;
    b[31] ^= n.max(1);
    Key(b)
}

/// A user name no other test (or test run) uses.
fn unique_user(tag: &str) -> String {
    format!("{tag}-{}", key().short())
}

/// A live record: idle deadline in an hour, absolute in a day, one value.
fn live(now: Millis) -> Record {
    let mut r = Record::new(now, now + HOUR, now + DAY);
    r.data.set("n", "0").unwrap();
    r
}

/// A record whose idle deadline passed an hour ago.
fn expired(now: Millis) -> Record {
    let mut r = Record::new(now - 2 * HOUR, now - HOUR, now + DAY);
    r.data.set("n", "0").unwrap();
    r
}

fn with_user(mut r: Record, user: &str) -> Record {
    r.user = Some(user.to_owned());
    r
}

/// A record with every field set, to check that stores keep all of it.
fn rich(now: Millis) -> Record {
    let mut r = Record::new(now - 5 * SEC, now + HOUR, now + DAY);
    r.last_access = now - SEC;
    r.id_issued = now - 3 * SEC;
    r.data.set("n", "41").unwrap();
    r.data
        .set("name", "\"Zoë \\\"the\\\" ünïcode 🦀\"")
        .unwrap();
    r.data
        .set("cart", "{\"items\":[1,2,3],\"total\":12.5}")
        .unwrap();
    r.data.set("", "null").unwrap();
    r.user = Some(unique_user("rich"));
    r.csrf = Some("csrf-token-value".into());
    r.extra_mut().auth = Some(AuthInfo {
        at: now - 4 * SEC,
        method: "password".into(),
    });
    r.extra_mut().device = Some("Firefox on Linux".into());
    r.extra_mut().ip_prefix = Some("203.0.113.0/24".into());
    r.version = 7;
    r
}

/// The next version of `r` as the manager would write it at `now`.
fn next(r: &Record, now: Millis) -> Record {
    let mut n = r.clone();
    n.version = r.version + 1;
    n.last_access = now;
    n.expires_at = (now + HOUR).min(n.absolute_expires_at);
    n
}

fn set(mut r: Record, k: &str, v: &str) -> Record {
    r.data.set(k, v).unwrap();
    r
}

#[track_caller]
fn expect_conflict(r: Result<()>, what: &str) {
    match r {
        Err(Error::Conflict) => {}
        other => panic!("{what}: expected Err(Conflict), got {other:?}"),
    }
}

async fn load(store: &Arc<dyn Store>, key: &Key, now: Millis) -> Option<Record> {
    store
        .load(key, now)
        .await
        .unwrap_or_else(|e| panic!("load {key:?}: {e}"))
}

async fn len(store: &Arc<dyn Store>, now: Millis) -> u64 {
    store.len(now).await.expect("len")
}

async fn assert_empty_store(store: &Arc<dyn Store>) {
    assert_eq!(
        len(store, now_millis()).await,
        0,
        "the fixture's store must start empty and isolated from other tests"
    );
}

async fn keys_of(store: &Arc<dyn Store>, user: &str, now: Millis) -> Vec<Key> {
    let list = store
        .sessions_of(user, now)
        .await
        .unwrap_or_else(|e| panic!("sessions_of {user:?}: {e}"));
    list.into_iter().map(|(k, _)| k).collect()
}

/// Every page of a full scan, checking page bounds and termination.
async fn scan_pages(store: &Arc<dyn Store>, limit: usize, now: Millis) -> Vec<Vec<(Key, Record)>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100_000 {
        let page = store
            .scan(cursor.as_deref(), limit, now)
            .await
            .unwrap_or_else(|e| panic!("scan (limit {limit}): {e}"));
        assert!(
            page.records.len() <= limit,
            "scan returned {} records for limit {limit}",
            page.records.len()
        );
        pages.push(page.records);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
    }
    panic!("scan did not finish after 100,000 pages");
}

fn count_keys<'a>(records: impl IntoIterator<Item = &'a (Key, Record)>) -> HashMap<Key, usize> {
    let mut seen = HashMap::new();
    for (k, _) in records {
        *seen.entry(*k).or_insert(0) += 1;
    }
    seen
}

/// Runs `gc(now, limit)` until a call removes fewer than `limit`; returns the total removed.
async fn gc_all(store: &Arc<dyn Store>, now: Millis, limit: usize) -> usize {
    let mut total = 0;
    for _ in 0..100_000 {
        let n = store.gc(now, limit).await.expect("gc");
        assert!(n <= limit, "gc(limit {limit}) removed {n}");
        total += n;
        if n < limit {
            return total;
        }
    }
    panic!("gc kept removing {limit} records per call for 100,000 calls");
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(v) => out.push(v),
            Err(e) => panic!("a concurrent task failed: {}", panic_message(e)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The contract tests.

/// `create` stores every field, refuses a live key ([`Error::Exists`], record untouched, exactly
/// one winner among concurrent creators) and may reuse the key of an expired record.
pub async fn create_is_insert_if_absent(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();

    let k = key();
    let r = rich(now);
    store.create(&k, &r).await.expect("create");
    assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r), "round trip");

    let other = with_user(live(now), &unique_user("intruder"));
    match store.create(&k, &other).await {
        Err(Error::Exists) => {}
        x => panic!("create on a live key: expected Err(Exists), got {x:?}"),
    }
    assert_eq!(
        load(&store, &k, now).await.as_ref(),
        Some(&r),
        "a refused create must not change the record"
    );
    assert!(keys_of(&store, other.user.as_deref().unwrap(), now)
        .await
        .is_empty());

    // Concurrent creators of one key: exactly one wins.
    let k2 = key();
    let tasks = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = set(live(now), "who", &i.to_string());
                (i, store.create(&k2, &r).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, res) in join_all(tasks).await {
        match res {
            Ok(()) => winners.push(i),
            Err(Error::Exists) => {}
            Err(e) => panic!("concurrent create: unexpected error {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "concurrent creates of one key: winners {winners:?}"
    );
    let stored = load(&store, &k2, now).await.expect("the winner's record");
    assert_eq!(
        stored.data.get("who"),
        Some(winners[0].to_string().as_str())
    );

    // An expired record does not block its key; the user index follows the replacement.
    let (old_user, new_user) = (unique_user("old"), unique_user("new"));
    let k3 = key();
    store
        .create(&k3, &with_user(expired(now), &old_user))
        .await
        .expect("create an expired record");
    let fresh = with_user(live(now), &new_user);
    store
        .create(&k3, &fresh)
        .await
        .expect("create over an expired record must succeed");
    assert_eq!(load(&store, &k3, now).await, Some(fresh));
    assert!(keys_of(&store, &old_user, now).await.is_empty());
    assert_eq!(keys_of(&store, &new_user, now).await, vec![k3]);
}

/// `load` returns `None` for unknown keys and for records expired at `now` (a record expires at
/// `expires_at` exactly), and never creates anything.
pub async fn load_never_returns_expired_or_unknown(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();

    let unknown = key();
    assert_eq!(load(&store, &unknown, now).await, None);
    assert_eq!(len(&store, now).await, 0, "load must never create");

    let k = key();
    let mut r = live(now);
    r.expires_at = now + 5 * SEC;
    store.create(&k, &r).await.expect("create");
    assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r));
    assert_eq!(load(&store, &k, now + 5 * SEC - 1).await.as_ref(), Some(&r));
    assert_eq!(
        load(&store, &k, now + 5 * SEC).await,
        None,
        "a record is expired at its expires_at"
    );
    assert_eq!(load(&store, &k, now + HOUR).await, None);

    let gone = key();
    store.create(&gone, &expired(now)).await.expect("create");
    assert_eq!(load(&store, &gone, now).await, None);

    // The unknown key was never created: it is still free.
    store
        .create(&unknown, &live(now))
        .await
        .expect("a key that was only loaded must be free");
    assert_eq!(len(&store, now).await, 2);
}

/// `save` replaces the record only at the expected version; stale or future versions and
/// unknown keys give [`Error::Conflict`] and change nothing; among concurrent savers at one
/// version exactly one wins.
pub async fn save_is_compare_and_set(fx: Fixture) {
    let store = fx.store.clone();
    let now = now_millis();
    let k = key();
    let r1 = live(now);
    store.create(&k, &r1).await.expect("create");

    let r2 = set(next(&r1, now), "n", "1");
    store.save(&k, &r2, 1).await.expect("save at version 1");
    assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r2));

    let stale = set(next(&r1, now), "n", "stale");
    expect_conflict(store.save(&k, &stale, 1).await, "save at a stale version");
    expect_conflict(
        store.save(&k, &set(next(&r2, now), "n", "x"), 3).await,
        "save at a future version",
    );
    assert_eq!(
        load(&store, &k, now).await.as_ref(),
        Some(&r2),
        "a conflicting save must change nothing"
    );

    let unknown = key();
    expect_conflict(store.save(&unknown, &r2, 1).await, "save on an unknown key");
    assert_eq!(
        load(&store, &unknown, now).await,
        None,
        "save must never insert"
    );

    // Concurrent savers at one version: exactly one wins, and its record is what is stored.
    let tasks = (0..16)
        .map(|i| {
            let store = store.clone();
            let r = set(next(&r2, now), "who", &i.to_string());
            tokio::spawn(async move { (i, store.save(&k, &r, 2).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, res) in join_all(tasks).await {
        match res {
            Ok(()) => winners.push(i),
            Err(Error::Conflict) => {}
            Err(e) => panic!("concurrent save: unexpected error {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "concurrent saves at one version: winners {winners:?}"
    );
    let stored = load(&store, &k, now).await.expect("record");
    assert_eq!(stored.version, 3);
    assert_eq!(
        stored.data.get("who"),
        Some(winners[0].to_string().as_str())
    );
    assert_eq!(len(&store, now).await, 1);
}

/// A save after `destroy` is a [`Error::Conflict`] and never brings the session back.
pub async fn save_after_destroy_never_resurrects(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let user = unique_user("gone");
    let k = key();
    let r = with_user(live(now), &user);
    store.create(&k, &r).await.expect("create");
    assert!(store.destroy(&k).await.expect("destroy"));
    expect_conflict(
        store.save(&k, &next(&r, now), 1).await,
        "save after destroy",
    );
    assert_eq!(
        load(&store, &k, now).await,
        None,
        "destroyed session came back"
    );
    assert_eq!(len(&store, now).await, 0);
    assert!(keys_of(&store, &user, now).await.is_empty());
    assert!(
        !store.touch(&k, now, now + HOUR).await.expect("touch"),
        "touch after destroy"
    );
    assert_eq!(
        load(&store, &k, now).await,
        None,
        "touch revived the session"
    );
    // The key is free again.
    store
        .create(&k, &live(now))
        .await
        .expect("create after destroy");
}

/// A save on a record that expired meanwhile is a [`Error::Conflict`] and does not revive it.
pub async fn save_on_expired_record_conflicts(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let user = unique_user("late");
    let k = key();
    let old = with_user(expired(now), &user);
    store.create(&k, &old).await.expect("create");
    expect_conflict(
        store.save(&k, &next(&old, now), old.version).await,
        "save on an expired record",
    );
    assert_eq!(
        load(&store, &k, now).await,
        None,
        "expired session came back"
    );
    assert_eq!(len(&store, now).await, 0);
    assert!(keys_of(&store, &user, now).await.is_empty());
}

/// `touch` moves `last_access` and `expires_at` (never past `absolute_expires_at`), keeps data
/// and version, and is `false` for unknown or expired records, which it does not revive.
pub async fn touch_moves_deadline_keeps_data_and_version(fx: Fixture) {
    let store = fx.store.clone();
    let now = now_millis();
    let k = key();
    let mut r = rich(now);
    r.expires_at = now + MIN;
    r.absolute_expires_at = now + 10 * MIN;
    store.create(&k, &r).await.expect("create");

    assert!(store
        .touch(&k, now + SEC, now + 2 * MIN)
        .await
        .expect("touch"));
    let mut want = r.clone();
    want.last_access = now + SEC;
    want.expires_at = now + 2 * MIN;
    assert_eq!(
        load(&store, &k, now + SEC).await,
        Some(want.clone()),
        "touch must change last_access and expires_at only"
    );

    assert!(store
        .touch(&k, now + 2 * SEC, now + DAY)
        .await
        .expect("touch"));
    want.last_access = now + 2 * SEC;
    want.expires_at = r.absolute_expires_at;
    assert_eq!(
        load(&store, &k, now + 2 * SEC).await,
        Some(want.clone()),
        "touch never moves expires_at beyond absolute_expires_at"
    );

    // The version did not move: a save at the loaded version still succeeds.
    let saved = next(&want, now + 3 * SEC);
    store
        .save(&k, &saved, r.version)
        .await
        .expect("save after touch at the same version");

    let unknown = key();
    assert!(!store.touch(&unknown, now, now + HOUR).await.expect("touch"));
    assert_eq!(
        load(&store, &unknown, now).await,
        None,
        "touch must never create"
    );

    let dead = key();
    store.create(&dead, &expired(now)).await.expect("create");
    assert!(
        !store.touch(&dead, now, now + HOUR).await.expect("touch"),
        "touch on an expired record"
    );
    assert_eq!(
        load(&store, &dead, now).await,
        None,
        "touch revived an expired record"
    );
}

/// The expiry seen by `load`, `gc` and `len` follows deadlines moved by `save` and `touch`, in
/// both directions.
pub async fn deadlines_follow_save_and_touch(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let later = now + 10 * SEC;
    let soon = |r: Record| Record {
        expires_at: now + SEC,
        ..r
    };
    let (a, b, c, d) = (key(), key(), key(), key());
    let ra = soon(live(now));
    let rb = soon(live(now));
    let rc = live(now);
    let rd = live(now);
    for (k, r) in [(&a, &ra), (&b, &rb), (&c, &rc), (&d, &rd)] {
        store.create(k, r).await.expect("create");
    }
    // Extended: a by touch, b by save. Shortened: c by touch, d by save.
    assert!(store.touch(&a, now, now + HOUR).await.expect("touch"));
    let mut rb2 = next(&rb, now);
    rb2.expires_at = now + HOUR;
    store.save(&b, &rb2, rb.version).await.expect("save");
    assert!(store.touch(&c, now, now + 2 * SEC).await.expect("touch"));
    let mut rd2 = next(&rd, now);
    rd2.expires_at = now + 2 * SEC;
    store.save(&d, &rd2, rd.version).await.expect("save");

    assert!(load(&store, &a, later).await.is_some(), "touch extended a");
    assert!(load(&store, &b, later).await.is_some(), "save extended b");
    assert_eq!(load(&store, &c, later).await, None, "touch shortened c");
    assert_eq!(load(&store, &d, later).await, None, "save shortened d");
    assert_eq!(len(&store, later).await, 2);

    let removed = gc_all(&store, later, 100).await;
    if fx.self_expiring {
        assert!(removed <= 2, "gc removed {removed}, only 2 were expired");
    } else {
        assert_eq!(
            removed, 2,
            "gc must remove exactly the 2 records expired at that time"
        );
    }
    assert!(
        load(&store, &a, later).await.is_some(),
        "gc removed a live record"
    );
    assert!(
        load(&store, &b, later).await.is_some(),
        "gc removed a live record"
    );
    assert_eq!(len(&store, later).await, 2);
}

/// `rotate` without grace moves the session in one step: the old key is dead for load, save and
/// the user index; the new key holds the given record.
pub async fn rotate_without_grace_kills_old_key(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let user = unique_user("rot");
    let (old, new) = (key(), key());
    let r = with_user(rich(now), &user);
    store.create(&old, &r).await.expect("create");
    let mut moved = set(next(&r, now), "n", "42");
    moved.id_issued = now;
    store
        .rotate(&old, r.version, &new, &moved, None)
        .await
        .expect("rotate");

    assert_eq!(
        load(&store, &old, now).await,
        None,
        "old key alive after rotate"
    );
    assert_eq!(load(&store, &new, now).await.as_ref(), Some(&moved));
    expect_conflict(
        store.save(&old, &next(&r, now), r.version).await,
        "save on the old key after rotate",
    );
    assert_eq!(load(&store, &old, now).await, None);
    assert_eq!(len(&store, now).await, 1);
    assert_eq!(keys_of(&store, &user, now).await, vec![new]);
    let scanned: Vec<Key> = scan_pages(&store, 10, now)
        .await
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scanned, vec![new]);
    // The new key is an ordinary session.
    store
        .save(&new, &next(&moved, now), moved.version)
        .await
        .expect("save on the new key");
}

/// `rotate` with a grace deadline leaves a data-less alias at the old key whose `successor()` is
/// the new key, until the deadline; aliases are not sessions (`len`, `scan`, `sessions_of`) and
/// cannot be saved or rotated.
pub async fn rotate_with_grace_leaves_alias(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let grace = now + 30 * SEC;
    let user = unique_user("grace");
    let (old, new) = (key(), key());
    let r = with_user(live(now), &user);
    store.create(&old, &r).await.expect("create");
    let moved = set(next(&r, now), "n", "1");
    store
        .rotate(&old, r.version, &new, &moved, Some(grace))
        .await
        .expect("rotate with grace");
    // A live session right beside the alias.
    let beside = sibling(&old, 1);
    let rb = live(now);
    store.create(&beside, &rb).await.expect("create");

    let alias = load(&store, &old, now)
        .await
        .expect("the old key must load as an alias inside the grace window");
    assert_eq!(
        alias.successor(),
        Some(&new),
        "alias must point at the new key"
    );
    assert!(alias.data.is_empty(), "an alias carries no data: {alias:?}");
    assert!(
        alias.expires_at <= grace,
        "alias outlives its grace deadline"
    );
    assert_eq!(load(&store, &new, now).await.as_ref(), Some(&moved));

    assert_eq!(len(&store, now).await, 2, "len must not count the alias");
    let mut scanned: Vec<Key> = scan_pages(&store, 10, now)
        .await
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    scanned.sort();
    let mut want = vec![new, beside];
    want.sort();
    assert_eq!(scanned, want, "scan must skip the alias");
    assert_eq!(keys_of(&store, &user, now).await, vec![new]);

    expect_conflict(
        store.save(&old, &next(&r, now), r.version).await,
        "save on an alias (at the old version)",
    );
    expect_conflict(
        store.save(&old, &next(&r, now), alias.version).await,
        "save on an alias (at the alias version)",
    );
    let elsewhere = key();
    match store
        .rotate(&old, alias.version, &elsewhere, &next(&r, now), None)
        .await
    {
        Err(Error::Conflict) => {}
        x => panic!("rotate from an alias: expected Err(Conflict), got {x:?}"),
    }
    assert_eq!(load(&store, &elsewhere, now).await, None);
    assert_eq!(
        load(&store, &old, now)
            .await
            .and_then(|a| a.successor().copied()),
        Some(new),
        "refused writes must leave the alias in place"
    );

    // After the grace deadline the alias is gone for load and len, and gc collects it.
    let after = grace + SEC;
    assert_eq!(
        load(&store, &old, after).await,
        None,
        "alias outlived its grace window"
    );
    assert_eq!(len(&store, after).await, 2, "len after the alias expired");
    let removed = gc_all(&store, after, 100).await;
    if !fx.self_expiring {
        assert_eq!(removed, 1, "gc must remove the expired alias");
    }
    assert_eq!(load(&store, &new, after).await.as_ref(), Some(&moved));
    assert_eq!(load(&store, &beside, after).await.as_ref(), Some(&rb));
    assert_eq!(len(&store, after).await, 2);
}

/// A refused `rotate` (stale version, unknown or expired source, occupied target) moves nothing,
/// and among concurrent rotations of one session exactly one wins.
pub async fn rotate_conflicts_move_nothing(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let (old, new) = (key(), key());
    let r = live(now);
    store.create(&old, &r).await.expect("create");
    let r2 = next(&r, now);
    store.save(&old, &r2, 1).await.expect("save");

    for grace in [None, Some(now + 30 * SEC)] {
        expect_conflict(
            store.rotate(&old, 1, &new, &next(&r2, now), grace).await,
            "rotate at a stale version",
        );
        assert_eq!(
            load(&store, &old, now).await.as_ref(),
            Some(&r2),
            "old moved"
        );
        assert_eq!(
            load(&store, &new, now).await,
            None,
            "new key filled by a refused rotate"
        );
    }

    let unknown = key();
    expect_conflict(
        store.rotate(&unknown, 1, &new, &r2, None).await,
        "rotate from an unknown key",
    );
    let dead = key();
    store.create(&dead, &expired(now)).await.expect("create");
    expect_conflict(
        store.rotate(&dead, 1, &new, &next(&r2, now), None).await,
        "rotate from an expired record",
    );
    assert_eq!(load(&store, &new, now).await, None);
    assert_eq!(
        load(&store, &dead, now).await,
        None,
        "rotate revived an expired record"
    );

    // The target is taken by a live session: refused, both untouched.
    let taken = key();
    let rt = set(live(now), "owner", "\"other\"");
    store.create(&taken, &rt).await.expect("create");
    match store.rotate(&old, 2, &taken, &next(&r2, now), None).await {
        Err(Error::Conflict) | Err(Error::Exists) => {}
        x => panic!("rotate onto a live key: expected Err(Exists or Conflict), got {x:?}"),
    }
    assert_eq!(load(&store, &taken, now).await.as_ref(), Some(&rt));
    assert_eq!(load(&store, &old, now).await.as_ref(), Some(&r2));
    assert_eq!(len(&store, now).await, 2);

    // Concurrent rotations from one version: one winner, the old key gone, one new key alive.
    let targets: Vec<Key> = (0..8).map(|_| key()).collect();
    let tasks = targets
        .iter()
        .map(|t| {
            let (store, t, rec) = (store.clone(), *t, next(&r2, now));
            tokio::spawn(async move { store.rotate(&old, 2, &t, &rec, None).await })
        })
        .collect();
    let results = join_all(tasks).await;
    let mut winners = 0;
    for res in &results {
        match res {
            Ok(()) => winners += 1,
            Err(Error::Conflict) => {}
            Err(e) => panic!("concurrent rotate: unexpected error {e:?}"),
        }
    }
    assert_eq!(winners, 1, "concurrent rotations of one session");
    assert_eq!(load(&store, &old, now).await, None);
    let mut alive = 0;
    for (t, res) in targets.iter().zip(&results) {
        let there = load(&store, t, now).await.is_some();
        assert_eq!(there, res.is_ok(), "a losing rotation left a record behind");
        alive += there as usize;
    }
    assert_eq!(alive, 1);
    assert_eq!(len(&store, now).await, 2);
}

/// `destroy` is true exactly when a record was there, removes it (aliases too) and leaves other
/// records alone.
pub async fn destroy_removes_the_record(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    assert!(!store.destroy(&key()).await.expect("destroy unknown"));

    let (k, bystander) = (key(), key());
    let rb = live(now);
    store.create(&k, &live(now)).await.expect("create");
    store.create(&bystander, &rb).await.expect("create");
    assert!(store.destroy(&k).await.expect("destroy"));
    assert_eq!(load(&store, &k, now).await, None);
    assert!(!store.destroy(&k).await.expect("destroy again"));
    assert_eq!(load(&store, &bystander, now).await.as_ref(), Some(&rb));
    assert_eq!(len(&store, now).await, 1);

    // Destroying an alias leaves the session it points at.
    let new = key();
    store
        .rotate(
            &bystander,
            rb.version,
            &new,
            &next(&rb, now),
            Some(now + MIN),
        )
        .await
        .expect("rotate");
    assert!(store.destroy(&bystander).await.expect("destroy alias"));
    assert_eq!(load(&store, &bystander, now).await, None);
    assert!(load(&store, &new, now).await.is_some());
    assert_eq!(len(&store, now).await, 1);
}

/// `gc(now, limit)` removes at most `limit` records per call; calling it until it returns less
/// than `limit` removes exactly the expired records and no live one.
pub async fn gc_removes_expired_in_bounded_batches(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let user = unique_user("gc");
    let mut live_keys = Vec::new();
    let mut dead_keys = Vec::new();
    for i in 0..25 {
        let k = key();
        let mut r = expired(now);
        if i % 3 == 0 {
            r.user = Some(user.clone());
        }
        // Spread the deadlines, including exactly `now`.
        r.expires_at = now - i * SEC;
        store.create(&k, &r).await.expect("create expired");
        dead_keys.push(k);
    }
    for i in 0..10 {
        let k = key();
        let mut r = with_user(live(now), &user);
        // Just after `now`, except where the backend's own clock would expire the record
        // before the checks below run (e.g. Redis TTLs).
        let edge = if fx.self_expiring { SEC } else { 1 };
        r.expires_at = now + edge + i * SEC;
        store.create(&k, &r).await.expect("create live");
        live_keys.push(k);
    }

    // A store that can count what awaits GC must count exactly what the passes below remove.
    let pending = store
        .expired_awaiting_gc(now)
        .await
        .expect("expired_awaiting_gc");
    if let Some(p) = pending {
        if fx.self_expiring {
            assert!(p <= 25, "{p} awaiting GC, only 25 were expired");
        } else {
            assert_eq!(p, 25, "records awaiting GC");
        }
    }
    assert_eq!(
        store.gc(now, 0).await.expect("gc limit 0"),
        0,
        "gc(limit 0)"
    );
    let first = store.gc(now, 1).await.expect("gc limit 1");
    if !fx.self_expiring {
        assert_eq!(first, 1, "gc(limit 1) with expired records must remove one");
    }
    let mut total = first;
    let mut calls = 0;
    loop {
        let n = store.gc(now, 7).await.expect("gc");
        assert!(n <= 7, "gc(limit 7) removed {n}");
        total += n;
        calls += 1;
        if n < 7 {
            break;
        }
        assert!(calls < 100, "gc never finished");
    }
    if fx.self_expiring {
        assert!(
            total <= 25,
            "gc removed {total} records, only 25 were expired"
        );
    } else {
        assert_eq!(total, 25, "gc must remove exactly the expired records");
        assert!(calls >= 4, "24 records at 7 per call need at least 4 calls");
    }
    assert_eq!(store.gc(now, 7).await.expect("gc"), 0, "second gc pass");
    if let Some(p) = pending {
        assert_eq!(
            p as usize, total,
            "gc removed other than what was awaiting it"
        );
        assert_eq!(
            store
                .expired_awaiting_gc(now)
                .await
                .expect("expired_awaiting_gc"),
            Some(0),
            "records awaiting GC after the passes"
        );
    }
    for k in &live_keys {
        assert!(
            load(&store, k, now).await.is_some(),
            "gc removed a live record"
        );
    }
    for k in &dead_keys {
        assert_eq!(load(&store, k, now).await, None);
    }
    assert_eq!(len(&store, now).await, 10);
    let mut listed = keys_of(&store, &user, now).await;
    listed.sort();
    live_keys.sort();
    assert_eq!(listed, live_keys, "user index after gc");
    assert_eq!(
        store.destroy_user(&user).await.expect("destroy_user"),
        10,
        "destroy_user after gc counts only the live sessions"
    );
}

/// `len` counts live sessions: not expired records, not rotation aliases (live or expired).
pub async fn len_counts_live_sessions_only(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let mut keys = Vec::new();
    for i in 0..6 {
        let k = key();
        let mut r = live(now);
        // Two of them expire after 10 s.
        if i < 2 {
            r.expires_at = now + 10 * SEC;
        }
        store.create(&k, &r).await.expect("create");
        keys.push((k, r));
    }
    for _ in 0..3 {
        store.create(&key(), &expired(now)).await.expect("create");
    }
    assert_eq!(len(&store, now).await, 6);

    // A rotation with grace: one session, one alias. Live and expired records sit next to
    // the alias (see `sibling`) so that miscounting it shows.
    let (k5, r5) = keys[5].clone();
    store
        .rotate(
            &k5,
            r5.version,
            &key(),
            &next(&r5, now),
            Some(now + 20 * SEC),
        )
        .await
        .expect("rotate");
    for n in 1..4 {
        store
            .create(&sibling(&k5, n), &live(now))
            .await
            .expect("create");
    }
    store
        .create(&sibling(&k5, 4), &expired(now))
        .await
        .expect("create");
    assert_eq!(len(&store, now).await, 9, "the alias is not a session");

    assert!(store.destroy(&keys[4].0).await.expect("destroy"));
    assert_eq!(len(&store, now).await, 8);
    assert_eq!(len(&store, now + 15 * SEC).await, 6, "two records expired");
    assert_eq!(
        len(&store, now + 25 * SEC).await,
        6,
        "an expired alias is neither a session nor subtracted twice"
    );
}

/// A paged `scan` returns every live record exactly once with its data, never an expired record
/// or an alias, whatever the page size.
pub async fn scan_visits_every_live_record_once(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let mut want: HashMap<Key, Record> = HashMap::new();
    for i in 0..53 {
        let k = key();
        let r = set(live(now), "i", &i.to_string());
        store.create(&k, &r).await.expect("create");
        want.insert(k, r);
    }
    for _ in 0..6 {
        store.create(&key(), &expired(now)).await.expect("create");
    }
    // Neighbours in key order, where cursor mistakes show: live ones, and expired ones.
    let some: Vec<Key> = want.keys().take(8).copied().collect();
    for (i, k) in some.iter().enumerate() {
        let s = sibling(k, 1);
        if i % 2 == 0 {
            let r = set(live(now), "sibling", "true");
            store.create(&s, &r).await.expect("create");
            want.insert(s, r);
        } else {
            store.create(&s, &expired(now)).await.expect("create");
        }
    }
    // Rotate one with grace: the new key is live, the alias is not a session.
    let (&k0, r0) = want.iter().next().map(|(k, r)| (k, r.clone())).unwrap();
    let moved = next(&r0, now);
    let k1 = key();
    store
        .rotate(&k0, r0.version, &k1, &moved, Some(now + MIN))
        .await
        .expect("rotate");
    want.remove(&k0);
    want.insert(k1, moved);

    assert_eq!(want.len(), 57);
    for limit in [1, 10, 57, 1000] {
        let pages = scan_pages(&store, limit, now).await;
        let all: Vec<(Key, Record)> = pages.into_iter().flatten().collect();
        let seen = count_keys(&all);
        for (k, n) in &seen {
            assert_eq!(*n, 1, "scan (limit {limit}) returned {k:?} {n} times");
        }
        for (k, r) in &all {
            assert_eq!(
                want.get(k),
                Some(r),
                "scan (limit {limit}) returned a record that is not a live session (or altered)"
            );
        }
        assert_eq!(
            seen.len(),
            want.len(),
            "scan (limit {limit}) missed records"
        );
    }

    // A malformed cursor is an error or an empty page, never a panic.
    let _ = store.scan(Some("not a cursor \u{0}"), 10, now).await;
    let _ = store.scan(Some(""), 10, now).await;
}

/// While a scan pages through, records are created, destroyed, saved, touched and rotated
/// between pages: each record present for the whole scan appears exactly once, no key appears
/// twice, and records destroyed before the scan never appear.
pub async fn scan_is_stable_under_concurrent_changes(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let mut stable: Vec<(Key, Record)> = Vec::new();
    let mut doomed: Vec<(Key, Record)> = Vec::new();
    for i in 0..150 {
        let (k, r) = (key(), set(live(now), "i", &i.to_string()));
        store.create(&k, &r).await.expect("create");
        if i % 3 == 0 {
            doomed.push((k, r));
        } else {
            stable.push((k, r));
        }
    }
    let mut gone_before: HashSet<Key> = HashSet::new();
    for (k, _) in doomed.drain(..10) {
        assert!(store.destroy(&k).await.expect("destroy"));
        gone_before.insert(k);
    }
    let mut known: HashSet<Key> = stable.iter().chain(&doomed).map(|(k, _)| *k).collect();

    let limit = 7;
    let mut seen: Vec<(Key, Record)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0usize;
    loop {
        let page = store
            .scan(cursor.as_deref(), limit, now)
            .await
            .expect("scan");
        assert!(page.records.len() <= limit);
        seen.extend(page.records);
        let Some(c) = page.next else { break };
        cursor = Some(c);
        round += 1;
        assert!(round < 10_000, "scan did not finish");

        // Churn between pages.
        for _ in 0..2 {
            if let Some((k, _)) = doomed.pop() {
                store.destroy(&k).await.expect("destroy");
            }
        }
        if let Some((k, r)) = doomed.pop() {
            let to = key();
            known.insert(to);
            store
                .rotate(&k, r.version, &to, &next(&r, now), None)
                .await
                .expect("rotate");
        }
        for _ in 0..3 {
            let k = key();
            known.insert(k);
            store.create(&k, &live(now)).await.expect("create");
        }
        let i = (round * 5) % stable.len();
        let (k, r) = stable[i].clone();
        let r2 = set(next(&r, now + round as Millis), "round", &round.to_string());
        store.save(&k, &r2, r.version).await.expect("save");
        stable[i].1 = r2;
        let (k, _) = &stable[(round * 5 + 2) % stable.len()];
        assert!(store
            .touch(k, now + round as Millis, now + 2 * HOUR)
            .await
            .expect("touch"));
    }

    let counts = count_keys(&seen);
    for (k, n) in &counts {
        assert_eq!(
            *n, 1,
            "scan returned {k:?} {n} times under concurrent changes"
        );
        assert!(
            !gone_before.contains(k),
            "scan returned a record destroyed before it began"
        );
        assert!(known.contains(k), "scan returned a key nobody wrote");
    }
    for (k, _) in &stable {
        assert_eq!(
            counts.get(k),
            Some(&1),
            "a record present for the whole scan was missed"
        );
    }
    assert!(round >= 10, "the scan should have taken many pages");
}

/// `sessions_of` lists exactly the live, non-alias records of a user, oldest first, and follows
/// `create`, `save` (changing the user), `rotate`, `destroy` and `gc`.
pub async fn user_index_follows_every_write(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let ua = unique_user("ann");
    let ub = unique_user("bob \"; DROP TABLE sessions; -- ünï/cøde:*?");
    let aged = |user: Option<&str>, age: Millis| {
        let mut r = live(now);
        r.created = now - age;
        r.user = user.map(str::to_owned);
        r
    };
    let (k1, k2, k3, k4, k5) = (key(), key(), key(), key(), key());
    let r1 = aged(Some(&ua), 50);
    let r2 = aged(Some(&ua), 40);
    let r3 = aged(Some(&ub), 30);
    let r4 = aged(None, 20);
    let r5 = with_user(expired(now), &ua);
    for (k, r) in [(&k1, &r1), (&k2, &r2), (&k3, &r3), (&k4, &r4), (&k5, &r5)] {
        store.create(k, r).await.expect("create");
    }
    assert_eq!(
        keys_of(&store, &ua, now).await,
        vec![k1, k2],
        "oldest first"
    );
    let listed = store.sessions_of(&ua, now).await.expect("sessions_of");
    assert_eq!(listed[0].1, r1, "sessions_of returns the stored records");
    assert_eq!(keys_of(&store, &ub, now).await, vec![k3]);
    assert!(keys_of(&store, &unique_user("nobody"), now)
        .await
        .is_empty());
    assert!(keys_of(&store, "", now).await.is_empty());

    // save moves sessions between users.
    let mut r2b = next(&r2, now);
    r2b.user = Some(ub.clone());
    store.save(&k2, &r2b, r2.version).await.expect("save");
    let mut r4a = next(&r4, now);
    r4a.user = Some(ua.clone());
    store.save(&k4, &r4a, r4.version).await.expect("save");
    let mut r1none = next(&r1, now);
    r1none.user = None;
    store.save(&k1, &r1none, r1.version).await.expect("save");
    assert_eq!(keys_of(&store, &ua, now).await, vec![k4]);
    assert_eq!(keys_of(&store, &ub, now).await, vec![k2, k3]);

    // rotate (without and with grace) moves the entry to the new key.
    let k6 = key();
    store
        .rotate(&k4, r4a.version, &k6, &next(&r4a, now), None)
        .await
        .expect("rotate");
    let k7 = key();
    store
        .rotate(&k3, r3.version, &k7, &next(&r3, now), Some(now + MIN))
        .await
        .expect("rotate with grace");
    assert_eq!(keys_of(&store, &ua, now).await, vec![k6]);
    assert_eq!(keys_of(&store, &ub, now).await, vec![k2, k7]);

    // destroy removes.
    assert!(store.destroy(&k2).await.expect("destroy"));
    assert_eq!(keys_of(&store, &ub, now).await, vec![k7]);

    // gc removes (k5, expired, of ua): destroy_user then counts only k6.
    gc_all(&store, now, 100).await;
    assert_eq!(keys_of(&store, &ua, now).await, vec![k6]);
    assert_eq!(store.destroy_user(&ua).await.expect("destroy_user"), 1);
    assert!(keys_of(&store, &ua, now).await.is_empty());
    assert_eq!(load(&store, &k6, now).await, None);
    assert_eq!(
        keys_of(&store, &ub, now).await,
        vec![k7],
        "other users untouched"
    );
    assert!(
        load(&store, &k1, now).await.is_some(),
        "a signed-out session untouched"
    );
}

/// `destroy_user` removes every session of the user, returns how many, and touches no one else.
pub async fn destroy_user_removes_all_and_counts(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    let (u, v) = (unique_user("many"), unique_user("other"));
    let mut mine = Vec::new();
    for _ in 0..30 {
        let k = key();
        store
            .create(&k, &with_user(live(now), &u))
            .await
            .expect("create");
        mine.push(k);
    }
    let mut theirs = Vec::new();
    for _ in 0..5 {
        let k = key();
        store
            .create(&k, &with_user(live(now), &v))
            .await
            .expect("create");
        theirs.push(k);
    }
    // A prefix of the name is another user.
    let prefix = u[..u.len() - 1].to_owned();
    let kp = key();
    store
        .create(&kp, &with_user(live(now), &prefix))
        .await
        .expect("create");

    assert_eq!(store.destroy_user(&u).await.expect("destroy_user"), 30);
    for k in &mine {
        assert_eq!(load(&store, k, now).await, None);
    }
    assert!(keys_of(&store, &u, now).await.is_empty());
    assert_eq!(store.destroy_user(&u).await.expect("destroy_user"), 0);
    assert_eq!(len(&store, now).await, 6);
    assert_eq!(keys_of(&store, &v, now).await.len(), 5);
    assert_eq!(keys_of(&store, &prefix, now).await, vec![kp]);
    assert_eq!(
        store
            .destroy_user(&unique_user("nobody"))
            .await
            .expect("destroy_user"),
        0
    );
}

/// Records whose bytes are truncated, zeroed, garbage, altered or copied from another key read
/// as absent: no error, no panic, never another session's data. Needs [`Fixture::with_raw`];
/// skipped (with a note on stderr) for stores without bytes at rest.
pub async fn corrupt_records_read_as_absent(fx: Fixture) {
    let Some(raw) = fx.raw.clone() else {
        eprintln!(
            "sessionkit conformance: corrupt_records_read_as_absent skipped: the {} store has no \
             bytes at rest to corrupt (no Fixture::with_raw)",
            fx.store.kind()
        );
        return;
    };
    let store = fx.store.clone();
    let now = now_millis();
    let neighbour = key();
    let rn = with_user(rich(now), &unique_user("neighbour"));
    store.create(&neighbour, &rn).await.expect("create");

    let victim = key();
    let mut secret = with_user(rich(now), &unique_user("victim"));
    secret.data.set("secret", "\"do not leak\"").unwrap();
    let good_for = |k: &Key| secret.encode(k);

    let mut cases: Vec<(&str, Key, Vec<u8>)> = Vec::new();
    let mut add = |what: &'static str, make: &dyn Fn(&Key) -> Vec<u8>| {
        let k = key();
        let bytes = make(&k);
        cases.push((what, k, bytes));
    };
    // Every shape of damage, each under a key of its own.
    add("empty", &|_| Vec::new());
    add("truncated", &|k| {
        let b = good_for(k);
        b[..b.len() / 2].to_vec()
    });
    add("last byte cut", &|k| {
        let b = good_for(k);
        b[..b.len() - 1].to_vec()
    });
    add("zeroed", &|k| vec![0; good_for(k).len()]);
    add("garbage", &|_| {
        (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    });
    add("json", &|_| br#"{"user":"admin","n":1}"#.to_vec());
    add("flipped byte", &|k| {
        let mut b = good_for(k);
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        b
    });
    add("another key's record", &|_| good_for(&victim));

    // First check the hook itself: intact bytes planted with it must load, or every case
    // below would pass without testing anything.
    let planted = key();
    let mut good = live(now);
    good.data.set("planted", "true").unwrap();
    raw.put_raw(&planted, &good.encode(&planted))
        .await
        .expect("put_raw (intact record)");
    let back = load(&store, &planted, now)
        .await
        .expect("an intact record planted with put_raw must load: the RawAccess hook writes where the store does not read");
    assert_eq!(back.data, good.data);
    assert_eq!(back.version, good.version);
    assert!(store.destroy(&planted).await.expect("destroy planted"));

    for (what, k, bytes) in &cases {
        raw.put_raw(k, bytes)
            .await
            .unwrap_or_else(|e| panic!("put_raw ({what}): {e}"));
        match store.load(k, now).await {
            Ok(None) => {}
            Ok(Some(r)) => panic!("{what} bytes loaded as a record: {r:?}"),
            Err(e) => panic!("{what} bytes: load must read as absent, got error {e}"),
        }
    }

    let all: Vec<(Key, Record)> = scan_pages(&store, 3, now)
        .await
        .into_iter()
        .flatten()
        .collect();
    for (k, r) in &all {
        assert!(
            *k == neighbour && *r == rn,
            "scan returned a corrupt or foreign record under {k:?}: {r:?}"
        );
    }
    assert!(
        keys_of(&store, secret.user.as_deref().unwrap(), now)
            .await
            .is_empty(),
        "a foreign record leaked into the user index"
    );
    store.len(now).await.expect("len with corrupt records");
    gc_all(&store, now, 100).await;
    for (what, k, _) in &cases {
        store
            .destroy(k)
            .await
            .unwrap_or_else(|e| panic!("destroy ({what}): {e}"));
        assert_eq!(load(&store, k, now).await, None);
        let fresh = live(now);
        store
            .create(k, &fresh)
            .await
            .unwrap_or_else(|e| panic!("create after destroying {what} bytes: {e}"));
        assert_eq!(load(&store, k, now).await, Some(fresh));
    }
    assert_eq!(load(&store, &victim, now).await, None);
    assert_eq!(
        load(&store, &neighbour, now).await,
        Some(rn),
        "neighbour damaged"
    );
}

/// Timestamps at the ends of the `i64` range (a clock gone wrong, a huge timeout) give a result
/// or an error, never a panic or an overflow; a deadline at `i64::MAX` means "never expires".
pub async fn extreme_times_never_panic(fx: Fixture) {
    let store = fx.store.clone();
    let now = now_millis();
    let forever = key();
    let mut r = live(now);
    r.expires_at = Millis::MAX;
    r.absolute_expires_at = Millis::MAX;
    store
        .create(&forever, &r)
        .await
        .expect("create with deadline i64::MAX");
    assert_eq!(load(&store, &forever, now).await.as_ref(), Some(&r));
    assert!(store
        .touch(&forever, now, Millis::MAX)
        .await
        .expect("touch to i64::MAX"));
    let k = key();
    store.create(&k, &live(now)).await.expect("create");
    for t in [Millis::MIN, -1, 0, Millis::MAX - 1, Millis::MAX] {
        let _ = store.load(&k, t).await;
        let _ = store.len(t).await;
        let _ = store.gc(t, 0).await;
        let _ = store.scan(None, 10, t).await;
        let _ = store.sessions_of("nobody", t).await;
    }
    let scratch = key();
    store.create(&scratch, &live(now)).await.expect("create");
    let _ = store.touch(&scratch, Millis::MAX, Millis::MAX).await;
    let _ = store.touch(&scratch, Millis::MIN, Millis::MIN).await;
    let _ = store.destroy(&scratch).await;
    assert!(
        load(&store, &forever, now).await.is_some(),
        "a never-expiring record expired"
    );
    assert_eq!(len(&store, now).await, 2);
    assert_eq!(
        load(&store, &forever, Millis::MAX).await,
        None,
        "expired at its deadline"
    );
}

/// A manager over the fixture's store, and the request headers of a stored session holding
/// `values`.
async fn session_with(store: &Arc<dyn Store>, values: &[(&str, u64)]) -> (Manager, HeaderMap, Key) {
    let manager = Manager::new(store.clone(), Config::default()).expect("manager");
    let s = manager.start(&HeaderMap::new());
    for (k, v) in values {
        s.insert(k, v).await.expect("insert");
    }
    let out = manager.finish(&s).await.expect("finish");
    let line = out
        .set_cookie()
        .expect("a new session sets a cookie")
        .to_str()
        .expect("ASCII cookie")
        .to_owned();
    let pair = line.split(';').next().unwrap().trim().to_owned();
    let token = pair.split_once('=').expect("name=value").1;
    let key = manager.key_of(token).expect("a valid token");
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&pair).expect("header value"));
    (manager, headers, key)
}

/// Fifty requests (five in flight at a time) each doing `update("n", +1)` on one session through
/// [`Manager::start`]/[`Manager::finish`] leave exactly `n = 50`: compare-and-set plus replay
/// loses no update.
pub async fn concurrent_updates_through_manager_are_exact(fx: Fixture) {
    const N: u64 = 50;
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let (manager, headers, key) = session_with(&store, &[("n", 0)]).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(5));
    let tasks = (0..N)
        .map(|_| {
            let (manager, headers, gate) = (manager.clone(), headers.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                let s = manager.start(&headers);
                let seen: u64 = s
                    .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .expect("update");
                // Let the others interleave between load and save.
                tokio::task::yield_now().await;
                manager.finish(&s).await.expect("finish");
                seen
            })
        })
        .collect();
    let seen = join_all(tasks).await;
    assert!(seen.iter().all(|n| (1..=N).contains(n)));

    let s = manager.start(&headers);
    assert_eq!(
        s.get::<u64>("n").await.expect("get"),
        Some(N),
        "{N} concurrent increments"
    );
    assert_eq!(s.key().await.expect("key"), Some(key));
    assert_eq!(len(&store, now_millis()).await, 1, "exactly one session");
}

/// Requests in flight while the session is destroyed (one updating, one rotating its ID) end
/// without bringing it back under any key; so do racing writers on a multi-threaded runtime.
pub async fn writer_in_flight_during_destroy_never_resurrects(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;

    // Deterministic: both writers loaded the session before the logout finished.
    let (manager, headers, key) = session_with(&store, &[("n", 0), ("origin", 1)]).await;
    let writer = manager.start(&headers);
    assert_eq!(writer.get::<u64>("n").await.expect("get"), Some(0));
    let rotator = manager.start(&headers);
    rotator.cycle_id().await.expect("cycle_id");
    rotator.insert("x", 1u64).await.expect("insert");
    let logout = manager.start(&headers);
    logout.destroy().await.expect("destroy");
    manager.finish(&logout).await.expect("finish logout");
    writer
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await
        .expect("update");
    manager.finish(&writer).await.expect("finish writer");
    manager.finish(&rotator).await.expect("finish rotator");
    assert_eq!(
        load(&store, &key, now_millis()).await,
        None,
        "session resurrected"
    );
    assert_eq!(
        len(&store, now_millis()).await,
        0,
        "a writer in flight during destroy stored a session"
    );
    assert!(manager.start(&headers).is_new().await.expect("is_new"));

    // Racing: writers and a logout at once, many rounds. Writers that start after the logout
    // may create a fresh session (without "origin"); none may continue the old one. (No writer
    // rotates here: a rotation that wins before the logout legitimately moves the session out
    // of the logout's reach.)
    for round in 0..10 {
        let (manager, headers, key) = session_with(&store, &[("n", 0), ("origin", 1)]).await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (manager, headers) = (manager.clone(), headers.clone());
            tasks.push(tokio::spawn(async move {
                let s = manager.start(&headers);
                s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
                tokio::task::yield_now().await;
                manager.finish(&s).await.map(drop)
            }));
        }
        let (m, h) = (manager.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let s = m.start(&h);
            s.destroy().await?;
            m.finish(&s).await.map(drop)
        }));
        for res in join_all(tasks).await {
            res.unwrap_or_else(|e| panic!("round {round}: request failed: {e}"));
        }
        let now = now_millis();
        assert_eq!(
            load(&store, &key, now).await,
            None,
            "round {round}: resurrected"
        );
        for (k, r) in scan_pages(&store, 100, now).await.into_iter().flatten() {
            assert!(
                r.data.get("origin").is_none(),
                "round {round}: the destroyed session lives on under {k:?}"
            );
        }
    }
}
