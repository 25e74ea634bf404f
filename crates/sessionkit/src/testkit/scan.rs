//! Contract tests of `scan`: every live record once, also while other tasks write.

use std::collections::{HashMap, HashSet};

use super::helpers::*;
use super::Fixture;
use crate::id::Key;
use crate::record::{now_millis, Millis, Record};
use crate::store::ScanPages;

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
        .rotate(
            &k0,
            r0.version,
            &k1,
            &moved,
            Some(&Record::alias(k1, now, now + MIN)),
        )
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
    let mut pages = ScanPages::new(&*store, limit);
    let mut round = 0usize;
    while let Some(page) = pages.next(now).await.expect("scan") {
        assert!(page.len() <= limit);
        seen.extend(page);
        if pages.is_done() {
            break;
        }
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
