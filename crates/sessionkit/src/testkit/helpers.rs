//! Helpers shared by the contract tests: keys, records in typical states, and checked wrappers
//! around the store calls that name the failing call.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::{Key, SessionId};
use crate::record::{now_millis, AuthInfo, Millis, Record};
use crate::store::{ScanPages, Store};

pub(super) const SEC: Millis = 1_000;
pub(super) const MIN: Millis = 60 * SEC;
pub(super) const HOUR: Millis = 60 * MIN;
pub(super) const DAY: Millis = 24 * HOUR;

pub(super) fn key() -> Key {
    SessionId::generate()
        .expect("OS random number generator")
        .key()
}

/// A key next to `k` (same leading bytes, last byte differs): stores that partition or order by
/// key put it beside `k`, where bookkeeping mistakes show.
pub(super) fn sibling(k: &Key, n: u8) -> Key {
    let mut b = k.0;
    b[31] ^= n.max(1);
    Key(b)
}

/// A user name no other test (or test run) uses.
pub(super) fn unique_user(tag: &str) -> String {
    format!("{tag}-{}", key().short())
}

/// A live record: idle deadline in an hour, absolute in a day, one value.
pub(super) fn live(now: Millis) -> Record {
    let mut r = Record::new(now, now + HOUR, now + DAY);
    r.data.set("n", "0").unwrap();
    r
}

/// A record whose idle deadline passed an hour ago.
pub(super) fn expired(now: Millis) -> Record {
    let mut r = Record::new(now - 2 * HOUR, now - HOUR, now + DAY);
    r.data.set("n", "0").unwrap();
    r
}

pub(super) fn with_user(mut r: Record, user: &str) -> Record {
    r.user = Some(user.to_owned());
    r
}

/// A record with every field set, to check that stores keep all of it.
pub(super) fn rich(now: Millis) -> Record {
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
    // The extension block of the encoding (a device binding): a store must keep it as well.
    r.extra_mut().binding = Some(crate::record::DeviceBinding {
        session_id: "dbsc-session".into(),
        alg: "ES256".into(),
        jwk: r#"{"crv":"P-256","kty":"EC","x":"AA","y":"AA"}"#.into(),
        secret: [0xa5; 32],
        challenge: "challenge".into(),
        challenge_issued: now - 2 * SEC,
    });
    r.version = 7;
    r
}

/// The next version of `r` as the manager would write it at `now`.
pub(super) fn next(r: &Record, now: Millis) -> Record {
    let mut n = r.clone();
    n.version = r.version + 1;
    n.last_access = now;
    n.expires_at = (now + HOUR).min(n.absolute_expires_at);
    n
}

pub(super) fn set(mut r: Record, k: &str, v: &str) -> Record {
    r.data.set(k, v).unwrap();
    r
}

#[track_caller]
pub(super) fn expect_conflict(r: Result<()>, what: &str) {
    match r {
        Err(Error::Conflict) => {}
        other => panic!("{what}: expected Err(Conflict), got {other:?}"),
    }
}

pub(super) async fn load(store: &Arc<dyn Store>, key: &Key, now: Millis) -> Option<Record> {
    store
        .load(key, now)
        .await
        .unwrap_or_else(|e| panic!("load {key:?}: {e}"))
}

pub(super) async fn len(store: &Arc<dyn Store>, now: Millis) -> u64 {
    store.len(now).await.expect("len")
}

pub(super) async fn assert_empty_store(store: &Arc<dyn Store>) {
    assert_eq!(
        len(store, now_millis()).await,
        0,
        "the fixture's store must start empty and isolated from other tests"
    );
}

pub(super) async fn keys_of(store: &Arc<dyn Store>, user: &str, now: Millis) -> Vec<Key> {
    let list = store
        .sessions_of(user, now)
        .await
        .unwrap_or_else(|e| panic!("sessions_of {user:?}: {e}"));
    list.into_iter().map(|(k, _)| k).collect()
}

/// Every page of a full scan, checking page bounds and termination.
pub(super) async fn scan_pages(
    store: &Arc<dyn Store>,
    limit: usize,
    now: Millis,
) -> Vec<Vec<(Key, Record)>> {
    let mut pages = Vec::new();
    let mut scan = ScanPages::new(&**store, limit);
    for _ in 0..100_000 {
        let page = scan
            .next(now)
            .await
            .unwrap_or_else(|e| panic!("scan (limit {limit}): {e}"));
        let Some(page) = page else { return pages };
        assert!(
            page.len() <= limit,
            "scan returned {} records for limit {limit}",
            page.len()
        );
        pages.push(page);
    }
    panic!("scan did not finish after 100,000 pages");
}

pub(super) fn count_keys<'a>(
    records: impl IntoIterator<Item = &'a (Key, Record)>,
) -> HashMap<Key, usize> {
    let mut seen = HashMap::new();
    for (k, _) in records {
        *seen.entry(*k).or_insert(0) += 1;
    }
    seen
}

/// Runs `gc(now, limit)` until a call removes fewer than `limit`; returns the total removed.
pub(super) async fn gc_all(store: &Arc<dyn Store>, now: Millis, limit: usize) -> usize {
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

pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

pub(super) async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(v) => out.push(v),
            Err(e) => panic!("a concurrent task failed: {}", panic_message(e)),
        }
    }
    out
}
