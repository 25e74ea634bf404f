//! Contract tests of `create`, `load` and `destroy`: insert-if-absent, never serving expired or
//! unknown keys, and deletion.

use super::helpers::*;
use super::Fixture;
use crate::error::Error;
use crate::record::{now_millis, Record};

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
            Some(&Record::alias(new, now, now + MIN)),
        )
        .await
        .expect("rotate");
    assert!(store.destroy(&bystander).await.expect("destroy alias"));
    assert_eq!(load(&store, &bystander, now).await, None);
    assert!(load(&store, &new, now).await.is_some());
    assert_eq!(len(&store, now).await, 1);
}

/// `take` deletes and returns in one step: the whole record (user index updated), an alias with
/// its successor and sealed successor (so revocation can follow a rotation), `None` for nothing.
pub async fn take_returns_what_it_removed(fx: Fixture) {
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let now = now_millis();
    assert_eq!(store.take(&key()).await.expect("take unknown"), None);

    let k = key();
    let mut r = rich(now);
    r.handle = 0x5eed;
    let user = r.user.clone().expect("rich has a user");
    store.create(&k, &r).await.expect("create");
    assert_eq!(store.take(&k).await.expect("take").as_ref(), Some(&r));
    assert_eq!(load(&store, &k, now).await, None);
    assert!(
        keys_of(&store, &user, now).await.is_empty(),
        "index entry left"
    );
    assert_eq!(store.take(&k).await.expect("take again"), None);

    // An alias comes back whole: the successor and the sealed ID it carries.
    let (old, new) = (key(), key());
    let r = live(now);
    store.create(&old, &r).await.expect("create");
    let mut alias = Record::alias(new, now, now + MIN);
    alias.extra_mut().sealed_successor = Some([0xa5; 32]);
    store
        .rotate(&old, r.version, &new, &next(&r, now), Some(&alias))
        .await
        .expect("rotate");
    let stored = load(&store, &old, now).await.expect("the alias loads");
    assert_eq!(stored.sealed_successor(), Some(&[0xa5; 32]));
    let taken = store
        .take(&old)
        .await
        .expect("take alias")
        .expect("an alias");
    assert_eq!(taken.successor(), Some(&new));
    assert_eq!(taken.sealed_successor(), Some(&[0xa5; 32]));
    assert!(load(&store, &new, now).await.is_some(), "the session stays");
    assert_eq!(len(&store, now).await, 1);
}
