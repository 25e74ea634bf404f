//! The demo's HTTP contract and the core guarantees, over real HTTP against the real app:
//! fixation, rotation on login, logout (also racing with traffic), exact counts under pipelined
//! concurrency, timeouts, hostile input, CSRF, and store failure.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessionkit::SessionId;
use support::*;

on_both_frameworks! {
#[tokio::test]
async fn first_visit_counts_one_and_sets_a_secure_cookie(fw) {
    let app = App::memory(fw).await;
    let r = get(app.addr, "/count", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), "1");
    let sc = r.headers_named("set-cookie");
    assert_eq!(sc.len(), 1);
    for attr in [
        "__Host-id=",
        "Path=/",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Max-Age=",
    ] {
        assert!(sc[0].contains(attr), "{attr} missing in {}", sc[0]);
    }
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let cookie = r.cookie().unwrap();
    assert!(SessionId::parse(&cookie).is_some());
    // The second visit reuses the cookie and sends no new one.
    let r2 = get(app.addr, "/count", Some(&cookie)).await;
    assert_eq!(r2.body.trim(), "2");
    assert!(r2.headers_named("set-cookie").is_empty());
    // The store files it under the hash, never the ID.
    let rec = app.record(&cookie).await.unwrap();
    assert_eq!(rec.data.get("count"), Some("2"));
}
}

on_both_frameworks! {
#[tokio::test]
async fn made_up_cookies_are_never_adopted(fw) {
    let app = App::memory(fw).await;
    let made_up = SessionId::generate().unwrap().to_string();
    for _ in 0..3 {
        let r = get(app.addr, "/count", Some(&made_up)).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body.trim(),
            "1",
            "a made-up ID must start a fresh session"
        );
        let issued = r.cookie().unwrap();
        assert_ne!(issued, made_up);
        assert!(SessionId::parse(&issued).is_some());
    }
    assert!(app.record(&made_up).await.is_none());
    assert_eq!(
        app.manager
            .store()
            .len(sessionkit::now_millis())
            .await
            .unwrap(),
        3
    );
}
}

on_both_frameworks! {
#[tokio::test]
async fn login_rotates_the_id_and_kills_the_old_one(fw) {
    let app = App::memory(fw).await;
    let (anon, csrf) = new_session(app.addr).await;
    let authed = login(app.addr, &anon, &csrf, "alice").await;
    assert_ne!(authed, anon);
    assert_eq!(get(app.addr, "/whoami", Some(&authed)).await.body, "alice");
    // Data survives the rotation; the pre-login ID is dead: its key holds at most the
    // unsealed alias revocation follows, carrying no data and no way to the new ID.
    assert_eq!(
        get(app.addr, "/count", Some(&authed)).await.body.trim(),
        "2"
    );
    if let Some(alias) = app.record(&anon).await {
        assert_eq!(alias.successor(), app.manager.key_of(&authed).as_ref());
        assert!(alias.sealed_successor().is_none());
        assert!(alias.data.is_empty() && alias.user.is_none());
    }
    assert_eq!(get(app.addr, "/whoami", Some(&anon)).await.body, "");
    assert_eq!(get(app.addr, "/count", Some(&anon)).await.body.trim(), "1");
}
}

on_both_frameworks! {
#[tokio::test]
async fn logout_destroys_the_session_and_clears_the_cookie(fw) {
    let app = App::memory(fw).await;
    let (anon, csrf) = new_session(app.addr).await;
    let authed = login(app.addr, &anon, &csrf, "bob").await;
    let csrf = get(app.addr, "/whoami", Some(&authed)).await.csrf();
    let r = post(
        app.addr,
        "/logout",
        Some(&authed),
        &format!("csrf_token={csrf}"),
    )
    .await;
    assert!(r.status == 303 || r.status == 200);
    let sc = r.headers_named("set-cookie");
    assert_eq!(sc.len(), 1);
    assert!(
        sc[0].starts_with("__Host-id=;") && sc[0].contains("Max-Age=0"),
        "{}",
        sc[0]
    );
    assert!(sc[0].contains("Path=/") && sc[0].contains("Secure"));
    assert!(app.record(&authed).await.is_none());
    assert_eq!(get(app.addr, "/whoami", Some(&authed)).await.body, "");
}
}

on_both_frameworks! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_racing_with_traffic_never_resurrects_the_session(fw) {
    let app = App::memory(fw).await;
    for round in 0..20 {
        let (anon, csrf) = new_session(app.addr).await;
        let cookie = login(app.addr, &anon, &csrf, &format!("racer{round}")).await;
        let csrf = get(app.addr, "/whoami", Some(&cookie)).await.csrf();
        let stop = Arc::new(AtomicBool::new(false));
        let mut hammers = Vec::new();
        for _ in 0..8 {
            let (addr, cookie, stop) = (app.addr, cookie.clone(), stop.clone());
            hammers.push(tokio::spawn(async move {
                let req = build("GET", "/count", Some(&cookie), &[], "");
                // Bounded: at most 40 batches of 5 pipelined requests per connection.
                for _ in 0..40 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    for r in pipelined(addr, &req, 5).await.unwrap() {
                        assert!(r.status == 200, "status {}", r.status);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(5 + round * 2)).await;
        let r = post(
            app.addr,
            "/logout",
            Some(&cookie),
            &format!("csrf_token={csrf}"),
        )
        .await;
        assert!(r.status == 303 || r.status == 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, Ordering::Relaxed);
        for h in hammers {
            h.await.unwrap();
        }
        assert!(
            app.record(&cookie).await.is_none(),
            "round {round}: session came back"
        );
        assert_eq!(get(app.addr, "/whoami", Some(&cookie)).await.body, "");
        assert_eq!(
            get(app.addr, "/count", Some(&cookie)).await.body.trim(),
            "1"
        );
    }
}
}

on_both_frameworks! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_concurrent_counts_are_exact(fw) {
    let app = App::memory(fw).await;
    for round in 0..10 {
        let (cookie, _) = new_session(app.addr).await;
        let req = build("GET", "/count", Some(&cookie), &[], "");
        let mut conns = Vec::new();
        for _ in 0..8 {
            let (addr, req) = (app.addr, req.clone());
            conns.push(tokio::spawn(async move {
                pipelined(addr, &req, 50).await.unwrap()
            }));
        }
        for c in conns {
            for r in c.await.unwrap() {
                assert_eq!(r.status, 200);
                assert!(r.headers_named("set-cookie").is_empty());
            }
        }
        let rec = app.record(&cookie).await.unwrap();
        assert_eq!(rec.data.get("count"), Some("401"), "round {round}");
    }
}
}

on_both_frameworks! {
#[tokio::test]
async fn idle_timeout_is_enforced(fw) {
    let mut config = demo_config();
    config.idle_timeout = Duration::from_millis(400);
    config.touch_interval = Some(Duration::from_millis(40));
    let app = App::start(fw, Arc::new(sessionkit::MemoryStore::new()), config).await;
    let (cookie, _) = new_session(app.addr).await;
    // Activity within the idle window keeps it alive (touches slide the deadline).
    for n in 2..=4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            get(app.addr, "/count", Some(&cookie)).await.body.trim(),
            n.to_string()
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = get(app.addr, "/count", Some(&cookie)).await;
    assert_eq!(r.body.trim(), "1", "idle session must expire");
    assert_ne!(r.cookie().unwrap(), cookie);
}
}

on_both_frameworks! {
#[tokio::test]
async fn absolute_timeout_is_enforced_despite_activity(fw) {
    let mut config = demo_config();
    config.idle_timeout = Duration::from_secs(60);
    config.absolute_timeout = Duration::from_millis(700);
    let app = App::start(fw, Arc::new(sessionkit::MemoryStore::new()), config).await;
    let (cookie, _) = new_session(app.addr).await;
    let mut last = 1;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = get(app.addr, "/count", Some(&cookie))
            .await
            .body
            .trim()
            .parse()
            .unwrap();
    }
    assert!(last >= 5, "still alive before the deadline: {last}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(app.addr, "/count", Some(&cookie)).await.body.trim(),
        "1"
    );
    assert!(app.record(&cookie).await.is_none());
}
}

on_both_frameworks! {
#[tokio::test]
async fn hostile_cookie_headers_never_cause_5xx_or_hangs(fw) {
    let app = App::memory(fw).await;
    let valid = new_session(app.addr).await.0;
    let big10 = format!("Cookie: x={}", "a".repeat(10 * 1024));
    let big64 = format!("Cookie: __Host-id={}", "b".repeat(64 * 1024));
    let many = format!(
        "Cookie: {}",
        (0..100)
            .map(|i| format!("c{i}=v{i}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let dup = format!(
        "Cookie: __Host-id={valid}; __Host-id={}",
        SessionId::generate().unwrap()
    );
    let dup2 = format!("Cookie: __Host-id=zzz; __Host-id={valid}");
    let cases: Vec<Vec<u8>> = vec![
        build("GET", "/count", None, &[&big10], ""),
        build("GET", "/count", None, &[&big64], ""),
        build("GET", "/count", None, &[&many], ""),
        build("GET", "/count", None, &[&dup], ""),
        build("GET", "/count", None, &[&dup2], ""),
        build(
            "GET",
            "/count",
            None,
            &["Cookie: __Host-id=\"quoted;=\"\"; a=\"b"],
            "",
        ),
        build("GET", "/count", None, &["Cookie: __Host-id="], ""),
        build("GET", "/count", None, &["Cookie: ;;;==;=;"], ""),
        build("GET", "/count", None, &["Cookie: __Host-id"], ""),
        [&b"GET /count HTTP/1.1\r\nHost: x\r\nCookie: __Host-id=\xff\xfe\x80\x81\r\n\r\n"[..]]
            .concat(),
        [&b"GET /count HTTP/1.1\r\nHost: x\r\nCookie: \xc3\x28=\xa0\xa1\r\n\r\n"[..]].concat(),
        build(
            "GET",
            "/whoami",
            None,
            &["Cookie: __Host-id=../../../etc/passwd"],
            "",
        ),
        build(
            "POST",
            "/login",
            None,
            &["Cookie: __Host-id=%00%00"],
            "username=x&csrf_token=",
        ),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage_cases = Vec::new();
    for _ in 0..40 {
        let mut g = Vec::new();
        for _ in 0..(seed % 300) as usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Header-legal bytes only (no CR/LF), to reach the cookie parser.
            let b = (seed % 256) as u8;
            if b != b'\r' && b != b'\n' && b != 0 {
                g.push(b);
            }
        }
        let mut req = b"GET /count HTTP/1.1\r\nHost: x\r\nCookie: __Host-id=".to_vec();
        req.extend_from_slice(&g);
        req.extend_from_slice(b"\r\n\r\n");
        garbage_cases.push(req);
    }
    for (i, req) in cases.iter().chain(garbage_cases.iter()).enumerate() {
        match raw(app.addr, req).await {
            Ok(r) => assert!(
                (200..500).contains(&r.status),
                "case {i}: status {} body {:?}",
                r.status,
                r.body
            ),
            // The HTTP server may refuse oversized or malformed heads by closing: fine, as long as
            // it answers promptly (raw() times out after 10 s) and keeps serving.
            Err(e) => assert!(!e.to_string().contains("timed out"), "case {i}: {e}"),
        }
    }
    // Still serving, and the valid session was neither lost nor mixed up.
    let r = get(app.addr, "/count", Some(&valid)).await;
    assert_eq!(r.status, 200);
    let n: u64 = r.body.trim().parse().unwrap();
    assert!(n >= 2, "the valid session kept its count ({n})");
}
}

on_both_frameworks! {
#[tokio::test]
async fn posts_without_the_right_csrf_token_are_refused(fw) {
    let app = App::memory(fw).await;
    let (mine, my_token) = new_session(app.addr).await;
    let (_, other_token) = new_session(app.addr).await;
    let bad = [
        "username=eve".to_owned(),
        "username=eve&csrf_token=".to_owned(),
        "username=eve&csrf_token=wrong".to_owned(),
        format!("username=eve&csrf_token={other_token}"),
        format!(
            "username=eve&csrf_token={}",
            &my_token[..my_token.len() - 1]
        ),
    ];
    for form in &bad {
        let r = post(app.addr, "/login", Some(&mine), form).await;
        assert_eq!(r.status, 403, "{form}");
        assert!(r.headers_named("set-cookie").is_empty());
    }
    let r = raw(
        app.addr,
        &build(
            "POST",
            "/logout",
            Some(&mine),
            &[&format!("X-CSRF-Token: {other_token}")],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    // Nothing changed: same session, no user.
    assert_eq!(get(app.addr, "/whoami", Some(&mine)).await.body, "");
    assert_eq!(get(app.addr, "/count", Some(&mine)).await.body.trim(), "2");
    // A POST with no session at all is refused too.
    assert_eq!(
        post(app.addr, "/login", None, "username=eve&csrf_token=x")
            .await
            .status,
        403
    );
    // The header form of the right token works.
    let r = raw(
        app.addr,
        &build(
            "POST",
            "/login",
            Some(&mine),
            &[&format!("X-CSRF-Token: {my_token}")],
            "username=ann",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 303);
}
}

on_both_frameworks! {
#[tokio::test]
async fn every_response_carries_a_csrf_token_and_health_is_ok(fw) {
    let app = App::memory(fw).await;
    let r = get(app.addr, "/", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("csrf_token"));
    assert!(!r.csrf().is_empty());
    // The health probe is outside the session layer (issue 14): no token, no session.
    let h = get(app.addr, "/healthz", None).await;
    assert_eq!(h.status, 200);
    assert!(h.header("x-csrf-token").is_none());
}
}

on_both_frameworks! {
/// Probes, scanners and typos create no session: health checks, 404s and 405s store nothing,
/// and send no cookie (before, each one stored a session).
#[tokio::test]
async fn health_checks_and_unknown_paths_create_no_session(fw) {
    let app = App::memory(fw).await;
    for i in 0..750 {
        let h = get(app.addr, "/healthz", None).await;
        assert_eq!(h.status, 200);
        assert!(h.headers_named("set-cookie").is_empty());
        let n = get(app.addr, &format!("/no-such-page-{i}"), None).await;
        assert_eq!(n.status, 404);
        assert!(n.headers_named("set-cookie").is_empty());
        // A wrong method on a real route is a probe too.
        let m = get(app.addr, "/login", None).await;
        assert_eq!(m.status, 405);
        assert!(m.headers_named("set-cookie").is_empty());
    }
    let stored = app
        .manager
        .store()
        .len(sessionkit::now_millis())
        .await
        .unwrap();
    assert_eq!(stored, 0);
}
}

on_both_frameworks! {
/// Refusals carry the CSRF token too, so a client refused for a missing token (even on its
/// very first request, a POST) learns the right one: 403 and 413 both.
#[tokio::test]
async fn refused_posts_carry_the_csrf_token(fw) {
    let app = App::memory(fw).await;
    let first = post(app.addr, "/login", None, "username=ann").await;
    assert_eq!(first.status, 403);
    let token = first.csrf();
    let cookie = first.cookie().expect("the token's session is handed out");
    let wrong = post(
        app.addr,
        "/login",
        Some(&cookie),
        "username=ann&csrf_token=x",
    )
    .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.csrf(), token);
    let big = format!("username=ann&csrf_token={token}&pad={}", "x".repeat(20_000));
    let too_big = post(app.addr, "/login", Some(&cookie), &big).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.csrf(), token);
    // And the token it learned works.
    let ok = post(
        app.addr,
        "/login",
        Some(&cookie),
        &format!("username=ann&csrf_token={token}"),
    )
    .await;
    assert_eq!(ok.status, 303);
}
}

on_both_frameworks! {
/// Every page that shows the session says `Cache-Control: no-store` and `Vary: Cookie`, on
/// requests that send no cookie back as well.
#[tokio::test]
async fn per_user_pages_are_never_cacheable(fw) {
    let app = App::memory(fw).await;
    let (anon, t) = new_session(app.addr).await;
    let cookie = login(app.addr, &anon, &t, "bo").await;
    for path in ["/", "/whoami", "/sessions", "/devices", "/count"] {
        let r = get(app.addr, path, Some(&cookie)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(
            r.header("vary").map(str::to_ascii_lowercase).as_deref(),
            Some("cookie"),
            "{path}"
        );
    }
}
}

on_both_frameworks! {
/// A user name must look like what it is: invisible, bidi-control and separator characters are
/// refused with 400.
#[tokio::test]
async fn user_names_with_invisible_characters_are_refused(fw) {
    let app = App::memory(fw).await;
    for name in [
        "%E2%80%8B",
        "ad%E2%80%8Bmin",
        "%E2%80%AEnimda",
        "a%E2%80%A8b",
        "%20%20",
    ] {
        let (cookie, t) = new_session(app.addr).await;
        let r = post(
            app.addr,
            "/login",
            Some(&cookie),
            &format!("username={name}&csrf_token={t}"),
        )
        .await;
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(
            get(app.addr, "/whoami", Some(&cookie)).await.body,
            "",
            "{name}"
        );
    }
}
}

on_both_frameworks! {
#[tokio::test]
async fn a_failing_store_gives_503_without_cookies_then_recovers(fw) {
    let store = Arc::new(Switchable::default());
    let app = App::start(fw, store.clone(), demo_config()).await;
    let (cookie, _) = new_session(app.addr).await;
    store.down.store(true, Ordering::SeqCst);
    for c in [None, Some(cookie.as_str())] {
        for path in ["/count", "/whoami", "/", "/healthz"] {
            let r = get(app.addr, path, c).await;
            assert_eq!(r.status, 503, "{path} with cookie {c:?}");
            assert!(r.headers_named("set-cookie").is_empty(), "{path}");
        }
    }
    // A failing probe says so without the store's internals (they go to the log).
    let h = get(app.addr, "/healthz", None).await;
    assert_eq!(h.body, "store unavailable\n");
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(get(app.addr, "/healthz", None).await.status, 200);
    assert_eq!(
        get(app.addr, "/count", Some(&cookie)).await.body.trim(),
        "2"
    );
}
}
