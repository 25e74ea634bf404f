//! Contract tests of deadlines: `touch`, how `save` and `touch` move deadlines, `gc` in bounded
//! batches, `len` of live sessions, and times at the edges of the range.

use super::helpers::*;
use super::Fixture;
use crate::record::{now_millis, Millis, Record};

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
    // What awaits GC is the two shortened records, not the extended ones (a store whose
    // expiry index lags a moved deadline must not count them).
    let awaiting = store
        .expired_awaiting_gc(later)
        .await
        .expect("expired_awaiting_gc");
    if let Some(n) = awaiting {
        assert!(n <= 2, "{n} records counted as awaiting GC, 2 expired");
        if !fx.self_expiring {
            assert_eq!(n, 2, "the 2 expired records await GC");
        }
    }

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
    let k5_new = key();
    store
        .rotate(
            &k5,
            r5.version,
            &k5_new,
            &next(&r5, now),
            Some(&Record::alias(k5_new, now, now + 20 * SEC)),
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
