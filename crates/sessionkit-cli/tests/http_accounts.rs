//! Accounts and hijacking defences over real HTTP: the sessions list, revoking other sessions,
//! periodic rotation with its read-only grace window, and signed cookies.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionkit::SessionId;
use support::*;

#[tokio::test]
async fn sessions_list_and_revoke_others() {
    let app = App::memory().await;
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

fn rotating_config(after_ms: u64, grace_ms: u64) -> sessionkit::Config {
    let mut c = demo_config();
    c.rotate_after = Some(Duration::from_millis(after_ms));
    c.rotation_grace = Duration::from_millis(grace_ms);
    c
}

#[tokio::test]
async fn previous_id_is_read_only_in_the_grace_window_then_dead() {
    let app = App::start(
        Arc::new(sessionkit::MemoryStore::new()),
        rotating_config(300, 600),
    )
    .await;
    let (anon, t) = new_session(app.addr).await;
    let old = login(app.addr, &anon, &t, "erin").await;
    assert_eq!(get(app.addr, "/count", Some(&old)).await.body.trim(), "2");
    let deadline_before = app.record(&old).await.unwrap().absolute_expires_at;
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Due for rotation: the next request gets a new ID transparently, data intact.
    let r = get(app.addr, "/count", Some(&old)).await;
    assert_eq!(r.body.trim(), "3");
    let new = r.cookie().expect("rotation issues a new cookie");
    assert_ne!(new, old);
    // Inside the grace window the old ID reads the session but cannot change it.
    let r = get(app.addr, "/whoami", Some(&old)).await;
    assert_eq!(r.body, "erin");
    assert_eq!(r.header("x-session-read-only"), Some("1"));
    assert!(r.headers_named("set-cookie").is_empty());
    let r = get(app.addr, "/count", Some(&old)).await;
    assert_eq!(r.header("x-session-read-only"), Some("1"));
    assert_eq!(app.record(&new).await.unwrap().data.get("count"), Some("3"));
    // Rotation never resets the absolute deadline.
    assert_eq!(
        app.record(&new).await.unwrap().absolute_expires_at,
        deadline_before
    );
    // After the window the old ID is dead.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(app.addr, "/whoami", Some(&old)).await.body, "");
    assert_eq!(get(app.addr, "/whoami", Some(&new)).await.body, "erin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_loses_no_request_and_no_data() {
    rotation_under_concurrency(Arc::new(sessionkit::MemoryStore::new())).await;
}

/// The same on every other store: rotation is a compare-and-set of its own there (one script
/// on Redis, two steps across hash slots on a Cluster, one transaction on SQLite, Postgres and
/// MySQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_on_every_durable_and_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let tag = SessionId::generate().unwrap().key().short();
    let redis = std::env::var("SESSIONKIT_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let postgres = std::env::var("SESSIONKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("rot_{tag}");
    let mut urls = vec![
        format!("sqlite://{}", dir.path().join("s.db").display()),
        format!("file://{}", dir.path().join("files").display()),
        format!("{redis}?prefix=rot{tag}:"),
        format!("{postgres}?schema={schema}"),
        format!("{}?table={schema}", mysql_url()),
    ];
    if let Ok(cluster) = std::env::var("SESSIONKIT_REDIS_CLUSTER") {
        urls.push(format!("{cluster}?prefix=rot{tag}:"));
    }
    let required = std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    for url in urls {
        let store = match sessionkit::store::open(&url).await {
            Ok(s) => s,
            Err(e) if required => panic!("{url} is required but unavailable: {e}"),
            Err(e) => {
                eprintln!("SKIPPED: {url}: {e}");
                continue;
            }
        };
        eprintln!("== {url}");
        rotation_under_concurrency(store).await;
        if url.starts_with("redis") {
            let redis = sessionkit::store::redis::RedisStore::open(&url)
                .await
                .unwrap();
            redis.purge_prefix().await.unwrap();
        }
    }
    // Best effort: leave no test schema or table behind.
    drop_mysql_table(&schema).await;
    let _ = std::process::Command::new("psql")
        .args([
            postgres.as_str(),
            "-qc",
            &format!("drop schema if exists {schema} cascade"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

async fn rotation_under_concurrency(store: Arc<dyn sessionkit::Store>) {
    // With the theft detector on: a browser that follows the protocol never trips it.
    let mut config = rotating_config(40, 2000);
    config.on_retired_id = sessionkit::RetiredIdPolicy::RevokeUser;
    let app = App::start(store, config).await;
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
                if r.header("x-session-read-only").is_none() {
                    written += 1;
                }
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
    // 1 visit before login + every write made with a current ID: nothing lost.
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

#[tokio::test]
async fn tampered_signed_cookies_never_reach_the_store() {
    let store = Arc::new(Switchable::default());
    let mut config = demo_config();
    config.signing_keys = vec![sessionkit::SigningKey::generate().unwrap()];
    let app = App::start(store.clone(), config).await;
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

/// Someone holding a previous ID inside its grace window (a copied cookie, a stale tab) can
/// read, but cannot end the user's sessions: both revoke endpoints answer 403, the alias is
/// never handed the live session's CSRF token, and every session survives.
#[tokio::test]
async fn a_grace_alias_cannot_log_the_user_out_anywhere() {
    let app = App::start(
        Arc::new(sessionkit::MemoryStore::new()),
        rotating_config(200, 5000),
    )
    .await;
    let (anon, t) = new_session(app.addr).await;
    let other = login(app.addr, &anon, &t, "gus").await;
    let (anon, t) = new_session(app.addr).await;
    let old = login(app.addr, &anon, &t, "gus").await;
    let live_csrf = get(app.addr, "/whoami", Some(&old)).await.csrf();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = get(app.addr, "/count", Some(&old)).await;
    let new = r.cookie().expect("rotated");
    let alias = get(app.addr, "/whoami", Some(&old)).await;
    assert_eq!(alias.body, "gus");
    assert!(alias.header("x-session-read-only").is_some());
    assert!(
        alias.header("x-csrf-token").is_none(),
        "no live token for an alias"
    );
    let handle = {
        let list = get(app.addr, "/sessions", Some(&new)).await.body;
        let at = list.find("\"handle\":\"").unwrap() + 10;
        list[at..at + list[at..].find('"').unwrap()].to_owned()
    };
    for (path, form) in [
        ("/sessions/revoke-others", format!("csrf_token={live_csrf}")),
        (
            "/sessions/revoke",
            format!("csrf_token={live_csrf}&handle={handle}"),
        ),
    ] {
        let r = post(app.addr, path, Some(&old), &form).await;
        assert_eq!(r.status, 403, "{path}");
    }
    assert_eq!(get(app.addr, "/whoami", Some(&new)).await.body, "gus");
    assert_eq!(get(app.addr, "/whoami", Some(&other)).await.body, "gus");
}

/// A session's handle is the same before and after its ID rotates, so "End" on the devices
/// page still ends it; a handle that names no session says so (404) instead of pretending.
#[tokio::test]
async fn device_handles_survive_rotation_and_unknown_ones_are_reported() {
    let app = App::start(
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

/// The demo's redirects carry their message: "Signed in as NAME" once after login (the next
/// page shows it, the one after does not), "Signed out" after logout.
#[tokio::test]
async fn login_and_logout_say_so_once_after_their_redirects() {
    let app = App::memory().await;
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

/// The devices page names what a user recognises: the browser and system from the User-Agent
/// and the network the session signed in from (here loopback's /24).
#[tokio::test]
async fn devices_show_the_browser_and_the_network() {
    let app = App::memory().await;
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

/// `X-Forwarded-For` names the network only with `--trust-forwarded-for` (any client can send
/// the header), and then its last entry (the one the proxy added); without it the peer address
/// is used.
#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    for trust in [false, true] {
        let app = App::start_with(
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

/// `serve --on-retired-id revoke-user`: a cookie copied before the real browser's ID rotated,
/// used after the grace window, logs the user out everywhere (the thief included).
#[tokio::test]
async fn a_copied_cookie_used_after_rotation_ends_the_users_sessions() {
    let server = Server::start(&[
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
