//! Contract tests through the [`Manager`]: concurrent requests lose no update, and a write in
//! flight never resurrects a destroyed session.

use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::helpers::*;
use super::Fixture;
use crate::config::Config;
use crate::id::Key;
use crate::manager::Manager;
use crate::record::now_millis;
use crate::store::Store;

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

/// A hot session written from two managers at once (two app servers on one store), 16
/// requests each, all in flight together: each manager's queue is saved in batches (write
/// combining) and the batches race the other manager's under compare-and-set, so some lose
/// and are replayed. Every increment lands exactly once.
pub async fn combined_writes_from_two_managers_are_exact(fx: Fixture) {
    const EACH: u64 = 16;
    let store = fx.store.clone();
    assert_empty_store(&store).await;
    let (first, headers, key) = session_with(&store, &[("n", 0)]).await;
    let second = Manager::new(store.clone(), Config::default()).expect("manager");
    let mut sessions = Vec::new();
    for manager in [&first, &second] {
        for _ in 0..EACH {
            let s = manager.start(&headers);
            s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .expect("update");
            sessions.push((manager.clone(), s));
        }
    }
    let tasks = sessions
        .into_iter()
        .map(|(manager, s)| tokio::spawn(async move { manager.finish(&s).await.map(drop) }))
        .collect();
    for (i, r) in join_all(tasks).await.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("writer {i}: {e}"));
    }
    let s = first.start(&headers);
    assert_eq!(
        s.get::<u64>("n").await.expect("get"),
        Some(2 * EACH),
        "every increment once"
    );
    assert_eq!(s.key().await.expect("key"), Some(key));
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

/// Rotation as a theft detector: with [`RetiredIdPolicy::RevokeUser`](crate::RetiredIdPolicy::RevokeUser), an ID retired by
/// periodic rotation and presented after its grace window (a copied cookie) ends every session
/// of its user; with the default policy the same request only reads as "no session".
pub async fn a_retired_id_used_late_ends_its_users_sessions(fx: Fixture) {
    use crate::config::RetiredIdPolicy;
    use std::time::Duration;
    for policy in [RetiredIdPolicy::Log, RetiredIdPolicy::RevokeUser] {
        let config = Config::builder()
            .rotate_after(Duration::from_millis(100))
            .rotation_grace(Duration::from_millis(50))
            .on_retired_id(policy)
            .build()
            .expect("config");
        let manager = Manager::new(fx.store.clone(), config).expect("manager");
        let user = unique_user("stolen");
        let sign_in = |headers: HeaderMap| {
            let (manager, user) = (manager.clone(), user.clone());
            async move {
                let s = manager.start(&headers);
                s.set_user(Some(&user), "test").await.expect("set_user");
                cookie_of(&manager, &manager.finish(&s).await.expect("finish"))
            }
        };
        let copied = sign_in(HeaderMap::new()).await;
        let other = sign_in(HeaderMap::new()).await;
        tokio::time::sleep(Duration::from_millis(130)).await;
        // The real browser's next write rotates its ID; it moves on to the new one.
        let s = manager.start(&copied);
        s.insert("x", 1u8).await.expect("insert");
        let rotated = cookie_of(&manager, &manager.finish(&s).await.expect("finish"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        // The copy comes back after the grace window.
        let thief = manager.start(&copied);
        assert_eq!(
            thief.user().await.expect("user"),
            None,
            "{policy:?}: a dead ID"
        );
        manager.finish(&thief).await.expect("finish");
        let alive = |headers: HeaderMap| {
            let manager = manager.clone();
            async move {
                let s = manager.start(&headers);
                s.user().await.expect("user").is_some()
            }
        };
        let expect = policy == RetiredIdPolicy::Log;
        assert_eq!(
            alive(rotated).await,
            expect,
            "{policy:?}: the rotated session"
        );
        assert_eq!(
            alive(other).await,
            expect,
            "{policy:?}: the user's other session"
        );
        manager.revoke_all(&user).await.expect("clean up");
    }
}

/// The request headers that send the cookie `out` sets.
fn cookie_of(_manager: &Manager, out: &crate::SessionHeaders) -> HeaderMap {
    let line = out
        .set_cookie()
        .expect("a cookie")
        .to_str()
        .expect("ASCII")
        .to_owned();
    let pair = line.split(';').next().unwrap().trim().to_owned();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&pair).expect("header value"));
    h
}

/// Revocation cannot be dodged by rotating: while two sessions of a user change their ID on
/// every request (one signs in again each time, a privilege change; one writes with periodic
/// rotation due each time), "end all other sessions" from a third ends both, and neither
/// comes back. Before revocation followed rotations through their aliases, a session that
/// rotated between the listing and the delete survived, and the user was told it was ended.
pub async fn revocation_ends_a_session_that_keeps_rotating(fx: Fixture) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    let config = Config::builder()
        .rotate_after(Duration::from_millis(1))
        .rotation_grace(Duration::from_millis(500))
        .build()
        .expect("config");
    let manager = Manager::new(fx.store.clone(), config).expect("manager");
    for round in 0..4 {
        let user = unique_user("dodger");
        let keep = signed_in(&manager, &user).await;
        let rotations = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let dodgers: Vec<_> = [true, false]
            .into_iter()
            .map(|sign_in_again| {
                let (manager, user, rotations) = (manager.clone(), user.clone(), rotations.clone());
                let mine = sign_in_again as usize;
                tokio::spawn(async move {
                    let mut headers = signed_in(&manager, &user).await;
                    for _ in 0..20_000 {
                        let s = manager.start(&headers);
                        if s.user().await.expect("user").is_none() {
                            return true;
                        }
                        if sign_in_again {
                            s.set_user(Some(&user), "again").await.expect("set_user");
                        } else {
                            s.insert("w", 1u8).await.expect("insert");
                        }
                        let out = manager.finish(&s).await.expect("finish");
                        if out.set_cookie().is_some() {
                            headers = cookie_of(&manager, &out);
                            rotations[mine].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    false
                })
            })
            .collect();
        // Revoke while both are rotating.
        for _ in 0..2000 {
            if rotations.iter().all(|r| r.load(Ordering::Relaxed) >= 3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let asking = manager.start(&keep);
        let ended = manager
            .revoke_all_except(&asking)
            .await
            .expect("revoke_all_except");
        assert!(
            ended >= 2,
            "round {round}: told {ended} sessions were ended"
        );
        for d in join_all(dodgers).await {
            assert!(d, "round {round}: a rotating session survived revocation");
        }
        let left = manager
            .sessions_of(&user, Some(&asking))
            .await
            .expect("list");
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        assert!(
            left[0].current,
            "round {round}: only the asking session is left"
        );
        manager.revoke_all(&user).await.expect("clean up");
    }
}

/// Signs `user` in on a new session; the request headers that carry it.
async fn signed_in(manager: &Manager, user: &str) -> HeaderMap {
    let s = manager.start(&HeaderMap::new());
    s.set_user(Some(user), "test").await.expect("set_user");
    cookie_of(manager, &manager.finish(&s).await.expect("finish"))
}
