//! Contract tests of the user index: `sessions_of` and `destroy_user` follow every write.

use super::helpers::*;
use super::Fixture;
use crate::record::{now_millis, Millis, Record};

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
        .rotate(
            &k3,
            r3.version,
            &k7,
            &next(&r3, now),
            Some(&Record::alias(k7, now, now + MIN)),
        )
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

/// While a signed-in session rotates (with and without a grace alias), every `sessions_of`
/// listing shows it: under its old key or its new one (for a moment both), never neither. User-level
/// revocation relies on this: it lists, ends what it found, and lists again until nothing is
/// left, so a listing that missed a session mid-rotation would let it dodge the revoke.
pub async fn sessions_of_never_misses_a_rotating_session(fx: Fixture) {
    let store = fx.store.clone();
    let user = unique_user("rotating");
    let now = now_millis();
    let first = key();
    store
        .create(&first, &with_user(live(now), &user))
        .await
        .expect("create");
    let rotator = {
        let (store, user) = (store.clone(), user.clone());
        tokio::spawn(async move {
            let (mut at, mut record) = (first, with_user(live(now), &user));
            for i in 0..150u32 {
                let now = now_millis();
                let new = key();
                let moved = next(&record, now);
                let alias = (i % 2 == 0).then(|| Record::alias(new, now, now + MIN));
                store
                    .rotate(&at, record.version, &new, &moved, alias.as_ref())
                    .await
                    .expect("rotate");
                (at, record) = (new, moved);
            }
        })
    };
    let mut listings = 0u32;
    while !rotator.is_finished() {
        let found = store
            .sessions_of(&user, now_millis())
            .await
            .expect("sessions_of");
        // Under more than one key for a moment is allowed (a store may write the new home
        // before it retires the old one, or list again after meeting a retired key); under
        // none never is.
        assert!(
            !found.is_empty(),
            "listing {listings}: a rotating session must be listed, found {}",
            found.len()
        );
        listings += 1;
        tokio::task::yield_now().await;
    }
    rotator.await.expect("rotator");
    assert_eq!(keys_of(&store, &user, now_millis()).await.len(), 1);
}
