//! Accounts and hijacking defences over real HTTP: the sessions list, revoking other sessions,
//! periodic rotation with its read-only grace window, and signed cookies.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionkit::SessionId;
use support::*;

on_both_frameworks! {
#[tokio::test]
async fn sessions_list_and_revoke_others(fw) {
    let app = App::memory(fw).await;
    // Two browsers sign in as the same user.
    let (a0, t) = new_session(app.addr).await;
    let a = login(app.addr, &a0, &t, "carol").await;
    let (b0, t) = new_session(app.addr).await;
    let b = login(app.addr, &b0, &t, "carol").await;
    let (c0, t) = new_session(app.addr).await;
    let _other_user = login(app.addr, &c0, &t, "dave").await;

    assert_eq!(get(app.addr, "/sessions", None).await.status, 401);
    let r = get(app.addr, "/sessions", Some(&a)).await;
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    for s in list {
        assert!(s["created"].as_i64().unwrap() > 0);
        assert!(s["last_seen"].as_i64().unwrap() > 0);
        // Metadata only: never the token.
        assert!(!s.to_string().contains(&a) && !s.to_string().contains(&b));
    }

    // revoke-others from A is CSRF-checked like every POST.
    assert_eq!(
        post(app.addr, "/sessions/revoke-others", Some(&a), "")
            .await
            .status,
        403
    );
    let csrf = get(app.addr, "/whoami", Some(&a)).await.csrf();
    let r = post(
        app.addr,
        "/sessions/revoke-others",
        Some(&a),
        &format!("csrf_token={csrf}"),
    )
    .await;
    assert!(r.status == 303 || r.status == 200, "{}", r.status);
    // B is anonymous on its very next request; A and the other user are untouched.
    assert_eq!(get(app.addr, "/whoami", Some(&b)).await.body, "");
    assert_eq!(get(app.addr, "/whoami", Some(&a)).await.body, "carol");
    let list: serde_json::Value =
        serde_json::from_str(&get(app.addr, "/sessions", Some(&a)).await.body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        app.manager.sessions_of("dave", None).await.unwrap().len(),
        1
    );
}
}

fn rotating_config(after_ms: u64, grace_ms: u64) -> sessionkit::Config {
    let mut c = demo_config();
    c.rotate_after = Some(Duration::from_millis(after_ms));
    c.rotation_grace = Duration::from_millis(grace_ms);
    c
}

on_both_frameworks! {
/// A browser that applied an older rotation's Set-Cookie last holds a previous ID: inside its
/// grace window that ID is the session (reads and writes) and the response leads it to the
/// current ID; after the window it is dead.
#[tokio::test]
async fn previous_id_in_its_window_is_the_session_and_leads_to_the_current_id(fw) {
    let app = App::start(
        fw,
        Arc::new(sessionkit::MemoryStore::new()),
        rotating_config(300, 1000),
    )
    .await;
    let (anon, t) = new_session(app.addr).await;
    let first = login(app.addr, &anon, &t, "erin").await;
    assert_eq!(get(app.addr, "/count", Some(&first)).await.body.trim(), "2");
    let deadline_before = app.record(&first).await.unwrap().absolute_expires_at;
    // Rotate twice: first → middle → current.
    let mut ids = vec![first];
    for expect in ["3", "4"] {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let r = get(app.addr, "/count", Some(ids.last().unwrap())).await;
        assert_eq!(r.body.trim(), expect);
        ids.push(r.cookie().expect("rotation issues a new cookie"));
    }
    let (middle, current) = (ids[1].clone(), ids[2].clone());
    assert_ne!(middle, current);
    // The middle ID inside its window: the same user, led to the current ID.
    let r = get(app.addr, "/whoami", Some(&middle)).await;
    assert_eq!(r.body, "erin");
    assert_eq!(r.cookie().as_deref(), Some(current.as_str()));
    // Its writes are kept, and it is led to the current ID again.
    let r = get(app.addr, "/count", Some(&middle)).await;
    assert_eq!(r.body.trim(), "5");
    assert_eq!(r.cookie().as_deref(), Some(current.as_str()));
    assert_eq!(get(app.addr, "/count", Some(&current)).await.body.trim(), "6");
    // Rotation never resets the absolute deadline.
    assert_eq!(
        app.record(&current).await.unwrap().absolute_expires_at,
        deadline_before
    );
    // After the window the middle ID is dead, the current one lives.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(app.addr, "/whoami", Some(&middle)).await;
    assert_eq!(r.body, "");
    assert_ne!(r.cookie().as_deref(), Some(current.as_str()));
    assert_eq!(get(app.addr, "/whoami", Some(&current)).await.body, "erin");
}
}

on_both_frameworks! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_loses_no_request_and_no_data(fw) {
    rotation_under_concurrency(fw, Arc::new(sessionkit::MemoryStore::new())).await;
}
}

on_both_frameworks! {
/// The same on every other store: rotation is a compare-and-set of its own there (one script
/// on Redis, two steps across hash slots on a Cluster, one transaction on SQLite, Postgres and
/// MySQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_on_every_durable_and_shared_store(fw) {
    let dir = tempfile::tempdir().unwrap();
    let tag = SessionId::generate().unwrap().key().short();
    let tag = format!("rot{tag}");
    for (url, store) in shared_stores(dir.path(), &tag).await {
        eprintln!("== {url}");
        rotation_under_concurrency(fw, store).await;
    }
    drop_shared(&tag).await;
}
}

async fn rotation_under_concurrency(fw: Framework, store: Arc<dyn sessionkit::Store>) {
    // With the theft detector on: a browser that follows the protocol never trips it.
    let mut config = rotating_config(40, 2000);
    config.on_retired_id = sessionkit::RetiredIdPolicy::RevokeUser;
    let app = App::start(fw, store, config).await;
    let (anon, t) = new_session(app.addr).await;
    let first = login(app.addr, &anon, &t, "frank").await;
    // Shared cookie jar: every client switches to the newest cookie it has seen.
    let jar = Arc::new(Mutex::new(first.clone()));
    let issued = Arc::new(Mutex::new(std::collections::HashSet::from([first])));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (addr, jar, issued) = (app.addr, jar.clone(), issued.clone());
        clients.push(tokio::spawn(async move {
            let mut written = 0u64;
            for _ in 0..40 {
                let cookie = jar.lock().unwrap().clone();
                let r = get(addr, "/count", Some(&cookie)).await;
                assert_eq!(r.status, 200, "every request is answered");
                assert!(!r.body.trim().is_empty());
                // Every answered write counts, also one through a previous ID.
                written += 1;
                if let Some(c) = r.cookie() {
                    assert!(!c.is_empty(), "nobody is logged out by rotation");
                    issued.lock().unwrap().insert(c.clone());
                    *jar.lock().unwrap() = c;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            written
        }));
    }
    let mut written = 0;
    for c in clients {
        written += c.await.unwrap();
    }
    let cookie = jar.lock().unwrap().clone();
    assert_eq!(get(app.addr, "/whoami", Some(&cookie)).await.body, "frank");
    // Responses on different connections can arrive out of order, so the jar may hold an
    // earlier ID (a grace-window alias, as a browser would): follow it to the live record.
    let mut rec = app.record(&cookie).await.unwrap();
    while let Some(next) = rec.successor().copied() {
        let store = app.manager.store();
        rec = store
            .load(&next, sessionkit::now_millis())
            .await
            .unwrap()
            .unwrap();
    }
    // 1 visit before login + every write: nothing lost.
    assert_eq!(
        rec.data.get("count"),
        Some((1 + written).to_string().as_str())
    );
    assert!(written > 0);
    let rotations = issued.lock().unwrap().len() - 1;
    assert!(
        rotations >= 2,
        "the test must actually rotate (saw {rotations})"
    );
}

on_both_frameworks! {
#[tokio::test]
async fn tampered_signed_cookies_never_reach_the_store(fw) {
    let store = Arc::new(Switchable::default());
    let mut config = demo_config();
    config.signing_keys = vec![sessionkit::SigningKey::generate().unwrap()];
    let app = App::start(fw, store.clone(), config).await;
    let (cookie, _) = new_session(app.addr).await;
    assert_eq!(cookie.len(), 87, "signed cookie is <id>.<mac>");
    assert_eq!(
        get(app.addr, "/count", Some(&cookie)).await.body.trim(),
        "2"
    );

    let (id, mac) = cookie.split_once('.').unwrap();
    let other = SessionId::generate().unwrap().to_string();
    let flipped_mac = format!(
        "{id}.{}{}",
        if mac.starts_with('A') { "B" } else { "A" },
        &mac[1..]
    );
    let forged = [
        id.to_owned(),
        format!("{other}.{mac}"),
        flipped_mac,
        format!("{id}."),
        format!("{id}.{mac}x"),
    ];
    for f in &forged {
        // /whoami only reads: a forged token must not cost a single store call.
        let before = store.calls.load(Ordering::SeqCst);
        let r = get(app.addr, "/whoami", Some(f)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "");
        // The response stores a new session (the CSRF token) but never looks up the forgery.
        let after = store.calls.load(Ordering::SeqCst);
        assert_eq!(after - before, 1, "only the new session's create: {f}");
    }
    assert_eq!(
        get(app.addr, "/count", Some(&cookie)).await.body.trim(),
        "3"
    );
}
}

on_both_frameworks! {
/// "End all other sessions" cannot be dodged by a session that keeps changing its ID: an
/// attacker session signs in again and again (each a new ID) while the victim ends the
/// others; the attacker's session is ended and its user told so, on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_others_ends_a_session_that_keeps_signing_in(fw) {
    revoke_races_sign_ins(fw, Arc::new(sessionkit::MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let tag = SessionId::generate().unwrap().key().short();
    let tag = format!("rev{tag}");
    for (url, store) in shared_stores(dir.path(), &tag).await {
        eprintln!("== {url}");
        revoke_races_sign_ins(fw, store).await;
    }
    drop_shared(&tag).await;
}
}

async fn revoke_races_sign_ins(fw: Framework, store: Arc<dyn sessionkit::Store>) {
    let app = App::start(fw, store, demo_config()).await;
    for round in 0..5 {
        let user = format!(
            "rae{round}x{}",
            SessionId::generate().unwrap().key().short()
        );
        let (anon, t) = new_session(app.addr).await;
        let victim = login(app.addr, &anon, &t, &user).await;
        let (anon, t) = new_session(app.addr).await;
        let attacker = login(app.addr, &anon, &t, &user).await;
        let stop = Arc::new(AtomicBool::new(false));
        let logins = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let task = {
            let (addr, user, stop, logins) = (app.addr, user.clone(), stop.clone(), logins.clone());
            tokio::spawn(async move {
                let mut cookie = attacker;
                let mut csrf = get(addr, "/whoami", Some(&cookie)).await.csrf();
                for _ in 0..2000 {
                    let r = post(
                        addr,
                        "/login",
                        Some(&cookie),
                        &format!("username={user}&csrf_token={csrf}"),
                    )
                    .await;
                    if r.status == 403 {
                        // Its session is gone: the token it holds is no one's.
                        break;
                    }
                    assert_eq!(r.status, 303, "login");
                    if let Some(c) = r.cookie() {
                        cookie = c;
                    }
                    csrf = r.csrf();
                    logins.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                cookie
            })
        };
        while logins.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let csrf = get(app.addr, "/whoami", Some(&victim)).await.csrf();
        let r = post(
            app.addr,
            "/sessions/revoke-others",
            Some(&victim),
            &format!("csrf_token={csrf}"),
        )
        .await;
        assert_eq!(r.status, 303, "revoke-others");
        stop.store(true, Ordering::Relaxed);
        let last = task.await.unwrap();
        assert_eq!(
            get(app.addr, "/whoami", Some(&last)).await.body,
            "",
            "round {round}: the attacker's session survived"
        );
        assert_eq!(get(app.addr, "/whoami", Some(&victim)).await.body, user);
        assert_eq!(app.manager.sessions_of(&user, None).await.unwrap().len(), 1);
    }
}

on_both_frameworks! {
/// A session's handle is the same before and after its ID rotates, so "End" on the devices
/// page still ends it; a handle that names no session says so (404) instead of pretending.
#[tokio::test]
async fn device_handles_survive_rotation_and_unknown_ones_are_reported(fw) {
    let app = App::start(
        fw,
        Arc::new(sessionkit::MemoryStore::new()),
        rotating_config(150, 100),
    )
    .await;
    let handle_of = |body: &str, current: bool| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"].as_bool() == Some(current))
            .map(|s| s["handle"].as_str().unwrap().to_owned())
    };
    let (anon, t) = new_session(app.addr).await;
    let me = login(app.addr, &anon, &t, "hana").await;
    let (anon, t) = new_session(app.addr).await;
    let other = login(app.addr, &anon, &t, "hana").await;
    let list = get(app.addr, "/sessions", Some(&me)).await.body;
    let other_handle = handle_of(&list, false).unwrap();
    // The other browser's ID rotates; its handle does not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = get(app.addr, "/count", Some(&other)).await;
    let other = r.cookie().expect("rotated");
    let me = get(app.addr, "/count", Some(&me))
        .await
        .cookie()
        .expect("rotated too");
    let list = get(app.addr, "/sessions", Some(&me)).await.body;
    assert_eq!(
        handle_of(&list, false).as_deref(),
        Some(other_handle.as_str())
    );
    let csrf = get(app.addr, "/whoami", Some(&me)).await.csrf();
    let gone = post(
        app.addr,
        "/sessions/revoke",
        Some(&me),
        &format!("csrf_token={csrf}&handle=ffffffffffffffff"),
    )
    .await;
    assert_eq!(gone.status, 404, "an unknown handle is reported");
    let ended = post(
        app.addr,
        "/sessions/revoke",
        Some(&me),
        &format!("csrf_token={csrf}&handle={other_handle}"),
    )
    .await;
    assert_eq!(ended.status, 303);
    assert_eq!(get(app.addr, "/whoami", Some(&other)).await.body, "");
    assert_eq!(get(app.addr, "/whoami", Some(&me)).await.body, "hana");
}
}

on_both_frameworks! {
/// The demo's redirects carry their message: "Signed in as NAME" once after login (the next
/// page shows it, the one after does not), "Signed out" after logout.
#[tokio::test]
async fn login_and_logout_say_so_once_after_their_redirects(fw) {
    let app = App::memory(fw).await;
    let (anon, t) = new_session(app.addr).await;
    let me = login(app.addr, &anon, &t, "ida").await;
    let home = get(app.addr, "/", Some(&me)).await;
    assert!(
        home.body.contains("Signed in as <strong"),
        "the page itself"
    );
    assert!(home.body.contains(">Signed in as ida</p>"), "{}", home.body);
    let again = get(app.addr, "/", Some(&me)).await;
    assert!(!again.body.contains("class=\"flash"), "shown once");
    let csrf = again.csrf();
    let out = post(
        app.addr,
        "/logout",
        Some(&me),
        &format!("csrf_token={csrf}"),
    )
    .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/?signed-out"));
    let page = get(app.addr, "/?signed-out", None).await;
    assert!(page.body.contains(">Signed out</p>"));
}
}

on_both_frameworks! {
/// The devices page names what a user recognises: the browser and system from the User-Agent
/// and the network the session signed in from (here loopback's /24).
#[tokio::test]
async fn devices_show_the_browser_and_the_network(fw) {
    let app = App::memory(fw).await;
    let (anon, t) = new_session(app.addr).await;
    let firefox =
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let r = raw(
        app.addr,
        &build(
            "POST",
            "/login",
            Some(&anon),
            &[firefox],
            &format!("username=jan&csrf_token={t}"),
        ),
    )
    .await
    .unwrap();
    let me = r.cookie().expect("signed in");
    let page = get(app.addr, "/devices", Some(&me)).await.body;
    assert!(page.contains("Firefox on Linux · 127.0.0.0/24"), "{page}");
    let list = get(app.addr, "/sessions", Some(&me)).await.body;
    assert!(list.contains("\"device\":\"Firefox on Linux\""), "{list}");
}
}

on_both_frameworks! {
/// `X-Forwarded-For` names the network only with `--trust-forwarded-for` (any client can send
/// the header), and then its last entry (the one the proxy added); without it the peer address
/// is used.
#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted(fw) {
    for trust in [false, true] {
        let app = App::start_with(
            fw,
            Arc::new(sessionkit::MemoryStore::new()),
            demo_config(),
            sessionkit_cli::demo::DemoOptions {
                trust_forwarded_for: trust,
            },
        )
        .await;
        let (anon, t) = new_session(app.addr).await;
        let r = raw(
            app.addr,
            &build(
                "POST",
                "/login",
                Some(&anon),
                // The client wrote the first entry; the proxy appended the last one.
                &["X-Forwarded-For: 203.0.113.9, 198.51.100.7"],
                &format!("username=kai&csrf_token={t}"),
            ),
        )
        .await
        .unwrap();
        let me = r.cookie().expect("signed in");
        let page = get(app.addr, "/devices", Some(&me)).await.body;
        let expected = if trust {
            "198.51.100.0/24"
        } else {
            "127.0.0.0/24"
        };
        assert!(page.contains(expected), "trust={trust}: {page}");
    }
}
}

on_both_frameworks! {
/// `serve --on-retired-id revoke-user`: a cookie copied before the real browser's ID rotated,
/// used after the grace window, logs the user out everywhere (the thief included).
#[tokio::test]
async fn a_copied_cookie_used_after_rotation_ends_the_users_sessions(fw) {
    let server = Server::start_on(fw, &[
        "--store",
        "memory://",
        "--rotate-after",
        "300ms",
        "--rotation-grace",
        "100ms",
        "--on-retired-id",
        "revoke-user",
    ]);
    let addr = server.addr;
    let (anon, t) = new_session(addr).await;
    let copied = login(addr, &anon, &t, "lia").await;
    let (anon, t) = new_session(addr).await;
    let laptop = login(addr, &anon, &t, "lia").await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let browser = get(addr, "/count", Some(&copied))
        .await
        .cookie()
        .expect("rotated");
    assert_eq!(get(addr, "/whoami", Some(&browser)).await.body, "lia");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        get(addr, "/whoami", Some(&copied)).await.body,
        "",
        "the copy is dead"
    );
    assert_eq!(
        get(addr, "/whoami", Some(&browser)).await.body,
        "",
        "and ended the user's sessions"
    );
    assert_eq!(get(addr, "/whoami", Some(&laptop)).await.body, "");
}
}
