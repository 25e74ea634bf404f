//! Contract tests of `rotate`: the old key dies or holds the alias it was given until the
//! alias expires, and a lost compare-and-set moves nothing.

use super::helpers::*;
use super::Fixture;
use crate::error::Error;
use crate::id::Key;
use crate::record::{now_millis, Record};

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
        .rotate(
            &old,
            r.version,
            &new,
            &moved,
            Some(&Record::alias(new, now, grace)),
        )
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

    for alias in [None, Some(Record::alias(new, now, now + 30 * SEC))] {
        expect_conflict(
            store
                .rotate(&old, 1, &new, &next(&r2, now), alias.as_ref())
                .await,
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
