//! Contract tests of `save` as compare-and-set on the record version: stale, destroyed and
//! expired records conflict.

use super::helpers::*;
use super::Fixture;
use crate::error::Error;
use crate::record::now_millis;

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

/// A store's synchronous fast paths (`load_ready`, `create_ready`, `save_ready`,
/// `touch_ready`), where it has them, answer exactly as `load`, `create`, `save` and `touch`:
/// the same record, insert-if-absent, compare-and-set on the version, nothing for an unknown
/// key or after the deadline. A store without them passes trivially.
pub async fn ready_paths_answer_as_the_async_calls(fx: Fixture) {
    let store = fx.store.clone();
    let now = now_millis();
    let k = key();
    let r1 = rich(now);
    match store.create_ready(&k, &r1) {
        Some(created) => created.expect("create_ready"),
        None => store.create(&k, &r1).await.expect("create"),
    }
    if let Some(again) = store.create_ready(&k, &live(now)) {
        assert!(
            matches!(again, Err(Error::Exists)),
            "create_ready on a live key: {again:?}"
        );
        assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r1));
    }
    if let Some(got) = store.load_ready(&k, now) {
        assert_eq!(got.expect("load_ready").as_ref(), Some(&r1), "load_ready");
    }
    if let Some(got) = store.load_ready(&key(), now) {
        assert_eq!(
            got.expect("load_ready"),
            None,
            "load_ready of an unknown key"
        );
    }
    let r2 = set(next(&r1, now), "n", "ready");
    if let Some(stale) = store.save_ready(&k, &r2, r1.version + 5) {
        expect_conflict(stale, "save_ready at a wrong version");
        assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r1));
    }
    match store.save_ready(&k, &r2, r1.version) {
        Some(saved) => saved.expect("save_ready at the stored version"),
        None => store.save(&k, &r2, r1.version).await.expect("save"),
    }
    assert_eq!(load(&store, &k, now).await.as_ref(), Some(&r2));
    let later = now + 5_000;
    if let Some(touched) = store.touch_ready(&k, later, later + 60_000) {
        assert!(
            touched.expect("touch_ready"),
            "touch_ready of a live record"
        );
        let t = load(&store, &k, later).await.expect("still there");
        assert_eq!((t.last_access, t.version), (later, r2.version));
    }
    if let Some(touched) = store.touch_ready(&key(), later, later + 60_000) {
        assert!(
            !touched.expect("touch_ready"),
            "touch_ready of an unknown key"
        );
    }
    if let Some(got) = store.load_ready(&k, r2.expires_at + 1) {
        assert_eq!(
            got.expect("load_ready"),
            None,
            "load_ready after the deadline"
        );
    }
}
