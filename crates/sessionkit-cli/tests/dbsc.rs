//! Device Bound Session Credentials over real HTTP, driven by a client written from the W3C
//! draft (tests/support/dbsc.rs: its own device key, ring for the JWS): registration at
//! sign-in, the short-lived bound cookie, refresh by signed challenge, the copied-cookie
//! attack, hostile proofs, every store, two processes and periodic rotation.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sessionkit::SessionId;
use support::dbsc::*;
use support::*;

/// How long the bound cookie lives in these tests, and how long to wait for it to expire
/// (its lifetime plus the server's clock allowance of a tenth, plus margin).
const BOUND: &str = "1s";
const PAST_BOUND: Duration = Duration::from_millis(1_400);

fn user() -> String {
    format!("u{}", SessionId::generate().unwrap().key().short())
}

/// A GET with exactly the cookie line given (a client that is not the browser).
async fn get_as(addr: std::net::SocketAddr, path: &str, cookie_line: &str) -> Resp {
    raw(
        addr,
        &sessionkit_http1::request("GET", path, None, &[cookie_line], ""),
    )
    .await
    .expect("GET")
}

fn dbsc_server(fw: Framework, extra: &[&str]) -> Server {
    Server::start_on(
        fw,
        &[
            &[
                "--store",
                "memory://",
                "--dbsc",
                "--dbsc-bound-lifetime",
                BOUND,
            ],
            extra,
        ]
        .concat(),
    )
}

on_both_frameworks! {
/// The whole protocol: sign in → register → use → the bound cookie expires → refused →
/// refresh (403 with a challenge, then a signed proof) → use again.
#[tokio::test]
async fn register_use_expire_refresh_use(fw) {
    let server = dbsc_server(fw, &[]);
    let mut browser = Browser::new(server.addr, DeviceKey::p256());
    let name = user();
    let reg = browser.sign_in_and_register(&name).await;
    assert_eq!(reg.status, 200, "{}", reg.body);
    let instructions: Value = serde_json::from_str(&reg.body).unwrap();
    assert_eq!(instructions["refresh_url"], "/dbsc/refresh");
    assert_eq!(instructions["scope"]["include_site"], false);
    assert_eq!(
        instructions["scope"]["scope_specification"],
        json!([{ "type": "exclude", "domain": "*", "path": "/dbsc/register" }])
    );
    assert_eq!(instructions["session_identifier"], json!(browser.dbsc_id.clone().unwrap()));
    let cred = &instructions["credentials"][0];
    assert_eq!(cred["type"], "cookie");
    assert_eq!(cred["name"], BOUND_COOKIE);
    assert_eq!(
        cred["attributes"],
        "Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    let sid = browser.dbsc_id.clone().unwrap();
    assert!(!sid.is_empty());
    assert!(browser.bound.is_some(), "registration sets the bound cookie");
    // The bound cookie's Set-Cookie carries the attributes the instructions state.
    let line = reg
        .headers_named("set-cookie")
        .into_iter()
        .find(|l| l.starts_with(BOUND_COOKIE))
        .unwrap()
        .to_owned();
    assert!(line.ends_with("; Max-Age=1; Path=/; Secure; HttpOnly; SameSite=Lax"), "{line}");
    // Neither cookie nor instructions name the session ID.
    assert!(!reg.body.contains(&browser.session));
    assert!(!browser.bound.as_ref().unwrap().contains(&browser.session));

    assert_eq!(browser.get("/whoami").await.body, name);
    // The session cookie alone is refused while the session is bound.
    let alone = get_as(server.addr, "/whoami", &format!("Cookie: {SESSION_COOKIE}={}", browser.session)).await;
    assert_eq!(alone.status, 401, "{}", alone.body);
    assert!(alone.body.contains("bound cookie"), "{}", alone.body);

    tokio::time::sleep(PAST_BOUND).await;
    let stale = get_as(server.addr, "/whoami", &browser.cookie_line()).await;
    assert_eq!(stale.status, 401, "an expired bound cookie is refused");

    // The draft's refresh: no cached challenge → 403 with one → the signed proof → 200.
    browser.challenge = None;
    let first = browser.refresh_once().await;
    assert_eq!(first.status, 403, "{}", first.body);
    let challenge = first.header("secure-session-challenge").unwrap();
    assert!(challenge.ends_with(&format!(";id=\"{sid}\"")), "{challenge}");
    let old_bound = browser.bound.clone();
    let done = browser.refresh_once().await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_ne!(browser.bound, old_bound, "a new bound cookie");
    assert_eq!(browser.get("/whoami").await.body, name);

    // The challenge handed out with the refresh is used at once next time (no 403 round).
    tokio::time::sleep(PAST_BOUND).await;
    assert!(browser.challenge.is_some());
    assert_eq!(browser.refresh_once().await.status, 200);
    assert_eq!(browser.get("/whoami").await.body, name);
}
}

on_both_frameworks! {
/// Proofs laid out as Chromium makes them (the key in the JWS header, a payload of `jti`
/// alone, no `aud` or `sub`) register and refresh too, in ES256 and RS256.
#[tokio::test]
async fn chromium_layout_proofs_register_and_refresh(fw) {
    let server = dbsc_server(fw, &[]);
    for key in std::iter::once(DeviceKey::p256()).chain(DeviceKey::rsa()) {
        let mut browser = Browser::new(server.addr, key);
        browser.chromium_layout = true;
        let name = user();
        let r = browser.sign_in_and_register(&name).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(PAST_BOUND).await;
        assert_eq!(get_as(server.addr, "/whoami", &browser.cookie_line()).await.status, 401);
        browser.challenge = None;
        let r = browser.refresh().await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(browser.get("/whoami").await.body, name);
    }
}
}

on_both_frameworks! {
/// An RS256 device key works as well as ES256 (when `openssl` can make one).
#[tokio::test]
async fn rs256_keys_register_and_refresh(fw) {
    let Some(key) = DeviceKey::rsa() else {
        eprintln!("SKIPPED: no openssl to make an RSA key");
        return;
    };
    let server = dbsc_server(fw, &[]);
    let mut browser = Browser::new(server.addr, key);
    let name = user();
    assert_eq!(browser.sign_in_and_register(&name).await.status, 200);
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(browser.refresh().await.status, 200);
    assert_eq!(browser.get("/whoami").await.body, name);
}
}

on_both_frameworks! {
/// A browser without DBSC ignores the registration header: its session works as any other.
#[tokio::test]
async fn browsers_without_dbsc_are_unaffected(fw) {
    let server = dbsc_server(fw, &[]);
    let (cookie, csrf) = new_session(server.addr).await;
    let name = user();
    let cookie = login(server.addr, &cookie, &csrf, &name).await;
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(get(server.addr, "/whoami", Some(&cookie)).await.body, name);
}
}

on_both_frameworks! {
/// The attack DBSC exists for: malware copies both cookies to another machine. They work
/// until the bound cookie expires; then the copy is refused, and without the device key it
/// cannot refresh, while the real browser refreshes and carries on.
#[tokio::test]
async fn copied_cookies_are_refused_once_the_bound_cookie_expires(fw) {
    let server = dbsc_server(fw, &[]);
    let mut victim = Browser::new(server.addr, DeviceKey::p256());
    let name = user();
    assert_eq!(victim.sign_in_and_register(&name).await.status, 200);

    let mut thief = Browser::new(server.addr, DeviceKey::p256());
    thief.session = victim.session.clone();
    thief.bound = victim.bound.clone();
    thief.dbsc_id = victim.dbsc_id.clone();
    thief.refresh_path = victim.refresh_path.clone();
    assert_eq!(
        get_as(server.addr, "/whoami", &thief.cookie_line()).await.body,
        name,
        "the copy works while the bound cookie lives"
    );
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(get_as(server.addr, "/whoami", &thief.cookie_line()).await.status, 401);
    // The thief asks for a challenge (it gets one: challenges are worthless without the
    // key) and signs it with a key of its own.
    let r = thief.refresh().await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("key"), "{}", r.body);
    assert_eq!(get_as(server.addr, "/whoami", &thief.cookie_line()).await.status, 401);

    // The real device is unaffected.
    assert_eq!(victim.refresh().await.status, 200);
    assert_eq!(victim.get("/whoami").await.body, name);
}
}

/// A registered browser on an in-process demo with DBSC on (bound cookie `bound`).
async fn registered(app: &App, key: DeviceKey) -> Browser {
    let mut browser = Browser::new(app.addr, key);
    let r = browser.sign_in_and_register(&user()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    browser
}

fn dbsc_config(bound: Duration) -> sessionkit::Config {
    let mut dbsc = sessionkit::DbscConfig::default();
    dbsc.bound_cookie_lifetime = bound;
    let mut config = demo_config();
    config.dbsc = Some(dbsc);
    config
}

/// A refresh request with `proof` as the `Secure-Session-Response` (raw header value).
async fn refresh_with(browser: &mut Browser, proof_value: &str) -> Resp {
    let id = browser.dbsc_id.clone().unwrap();
    browser
        .send(
            "POST",
            "/dbsc/refresh",
            &[
                &format!("Sec-Secure-Session-Id: {}", sf_string(&id)),
                &format!("Secure-Session-Response: {proof_value}"),
            ],
            "",
        )
        .await
}

/// A current challenge for `browser` (from a 403).
async fn fresh_challenge(browser: &mut Browser) -> String {
    browser.challenge = None;
    assert_eq!(browser.refresh_once().await.status, 403);
    browser.challenge.clone().unwrap()
}

on_both_frameworks! {
/// Hostile and broken proofs each get a 4xx with a reason, never a 5xx, and none of them
/// yields a bound cookie.
#[tokio::test]
async fn bad_proofs_are_refused_with_a_reason(fw) {
    let app = App::start(fw, Arc::new(sessionkit::MemoryStore::new()), dbsc_config(Duration::from_secs(60))).await;
    let mut browser = registered(&app, DeviceKey::p256()).await;
    let id = browser.dbsc_id.clone().unwrap();
    let refresh_aud = aud("/dbsc/refresh");
    let key = &DeviceKey::p256();
    let c = fresh_challenge(&mut browser).await;
    let good_payload = json!({ "aud": refresh_aud, "jti": c, "sub": id, "iat": 1 });
    let unsigned = |header: Value| {
        let b = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
        format!("{}.{}.", b(&header), b(&good_payload))
    };
    // (what, the header value, the status, what the refusal must say: each case trips its own
    // check, not an earlier one)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not a JWS", sf_string("not-a-jwt"), 400, "three dot-separated parts"),
        ("not an sf-string", "eyJ.eyJ.sig".to_owned(), 400, "structured-field string"),
        ("alg none", sf_string(&unsigned(json!({ "alg": "none", "typ": "dbsc+jwt" }))), 400, "not ES256 or RS256"),
        ("wrong typ", sf_string(&browser.key.jws(&json!({ "alg": "ES256", "typ": "JWT" }), &good_payload)), 400, "typ is not dbsc+jwt"),
        ("HS256", sf_string(&browser.key.jws(&json!({ "alg": "HS256", "typ": "dbsc+jwt" }), &good_payload)), 400, "not ES256 or RS256"),
        ("oversized", sf_string(&"A".repeat(9_000)), 400, "too large"),
        ("another key, no key claim", sf_string(&key.jws(&json!({ "alg": "ES256", "typ": "dbsc+jwt" }), &good_payload)), 401, "does not verify"),
        ("another key, claimed", sf_string(&key.proof(&refresh_aud, &c, Some(&id))), 401, "a key other than the session's"),
        // Signed by the session's key, but claiming another: refused, not a way to re-key.
        ("key swap", sf_string(&browser.key.proof_claiming(&refresh_aud, &c, Some(&id), key.jwk())), 401, "a key other than the session's"),
        ("another session", sf_string(&browser.key.proof(&refresh_aud, &c, Some("someone-else"))), 401, "sub"),
        ("key swap in the header", sf_string(&browser.key.jws(&json!({ "alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk() }), &json!({ "jti": c }))), 401, "a key other than the session's"),
        ("two keys", sf_string(&browser.key.jws(&json!({ "alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk() }), &json!({ "jti": c, "key": browser.key.jwk() }))), 400, "two different keys"),
        ("wrong audience", sf_string(&browser.key.proof(&aud("/elsewhere"), &c, Some(&id))), 401, "aud"),
        ("stale challenge", sf_string(&browser.key.proof(&refresh_aud, "old-challenge", Some(&id))), 403, "sign the challenge"),
    ];
    for (what, value, status, says) in cases {
        browser.bound = None;
        let r = refresh_with(&mut browser, &value).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(r.body.starts_with("device-bound session: "), "{what}: {}", r.body);
        assert!(r.body.contains(says), "{what}: {}", r.body);
        assert!(browser.bound.is_none(), "{what} got a bound cookie");
    }
    // Another session's identifier in Sec-Secure-Session-Id is refused before any proof.
    let r = browser
        .send("POST", "/dbsc/refresh", &["Sec-Secure-Session-Id: \"someone-else\""], "")
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A header far beyond any proof is refused too (by the framework's header limit or by
    // the endpoint), never with a 5xx.
    let huge = refresh_with(&mut browser, &sf_string(&"A".repeat(64 * 1024))).await;
    assert!((400..500).contains(&huge.status), "huge header: {}", huge.status);
    // Registration: the same checks, and a registration proof must carry its key.
    let bad_reg = browser
        .send("POST", "/dbsc/register", &["Secure-Session-Response: \"x.y.z\""], "")
        .await;
    assert_eq!(bad_reg.status, 400, "{}", bad_reg.body);
    let no_proof = browser.send("POST", "/dbsc/register", &[], "").await;
    assert_eq!(no_proof.status, 400, "{}", no_proof.body);
    let unsolicited = browser.key.proof(&aud("/dbsc/register"), "made-up", None);
    let r = browser
        .send("POST", "/dbsc/register", &[&format!("Secure-Session-Response: {}", sf_string(&unsolicited))], "")
        .await;
    assert_eq!(r.status, 401, "a registration nobody asked for: {}", r.body);

    // After all that, the real proof still works, once: its replay is refused.
    let proof = sf_string(&browser.key.proof(&refresh_aud, &c, Some(&id)));
    assert_eq!(refresh_with(&mut browser, &proof).await.status, 200);
    let bound = browser.bound.take();
    let replay = refresh_with(&mut browser, &proof).await;
    assert_eq!(replay.status, 403, "a replayed proof: {}", replay.body);
    assert!(browser.bound.is_none());
    browser.bound = bound;
    assert_eq!(browser.get("/count").await.status, 200);
}
}

on_both_frameworks! {
/// Two refreshes racing with one proof: the challenge is consumed by a compare-and-set save,
/// so exactly one of them gets a bound cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_answered_twice_at_once_wins_once(fw) {
    let app = App::start(fw, Arc::new(sessionkit::MemoryStore::new()), dbsc_config(Duration::from_secs(60))).await;
    let mut browser = registered(&app, DeviceKey::p256()).await;
    let id = browser.dbsc_id.clone().unwrap();
    let c = fresh_challenge(&mut browser).await;
    let proof = sf_string(&browser.key.proof(&aud("/dbsc/refresh"), &c, Some(&id)));
    let request = sessionkit_http1::request(
        "POST",
        "/dbsc/refresh",
        None,
        &[
            &browser.cookie_line(),
            &format!("Sec-Secure-Session-Id: {}", sf_string(&id)),
            &format!("Secure-Session-Response: {proof}"),
        ],
        "",
    );
    let addr = app.addr;
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move { raw(addr, &request).await.unwrap().status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 403), "{statuses:?}");
}
}

on_both_frameworks! {
/// With `--dbsc-end-on-failed-proof`, a proof with the wrong key ends the session.
#[tokio::test]
async fn a_failed_proof_can_end_the_session(fw) {
    let server = dbsc_server(fw, &["--dbsc-end-on-failed-proof"]);
    let mut victim = Browser::new(server.addr, DeviceKey::p256());
    assert_eq!(victim.sign_in_and_register(&user()).await.status, 200);
    let mut thief = Browser::new(server.addr, DeviceKey::p256());
    thief.session = victim.session.clone();
    thief.dbsc_id = victim.dbsc_id.clone();
    thief.refresh_path = victim.refresh_path.clone();
    assert_eq!(thief.refresh().await.status, 401);
    // The session is gone: the real browser's refresh is refused too, and it must sign in.
    let r = victim.refresh().await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(victim.get("/whoami").await.body, "");
}
}

/// Register, use, expire, refresh, use, with the binding checked in the stored record.
async fn protocol_on(fw: Framework, store: Arc<dyn sessionkit::Store>) {
    let app = App::start(fw, store, dbsc_config(Duration::from_secs(1))).await;
    let mut browser = registered(&app, DeviceKey::p256()).await;
    let record = app.record(&browser.session).await.expect("stored");
    let binding = record
        .extra
        .as_ref()
        .and_then(|e| e.binding.clone())
        .expect("bound");
    assert_eq!(binding.alg, "ES256");
    assert_eq!(Some(&binding.session_id), browser.dbsc_id.as_ref());
    assert_eq!(browser.get("/count").await.status, 200);
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(
        get_as(app.addr, "/count", &browser.cookie_line())
            .await
            .status,
        401
    );
    assert_eq!(browser.refresh().await.status, 200);
    assert_eq!(browser.get("/count").await.status, 200);
    // The user index sees the bound session, binding included.
    let user = record.user.clone().unwrap();
    let listed = app
        .manager
        .store()
        .sessions_of(&user, sessionkit::now_millis())
        .await
        .unwrap();
    assert!(listed
        .iter()
        .any(|(_, r)| r.extra.as_ref().is_some_and(|e| e.binding.is_some())));
}

on_both_frameworks! {
/// The binding lives in the record: the protocol works on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_works_on_every_store(fw) {
    eprintln!("== memory://");
    protocol_on(fw, Arc::new(sessionkit::MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("dbsc{}", SessionId::generate().unwrap().key().short());
    for (url, store) in shared_stores(dir.path(), &tag).await {
        eprintln!("== {url}");
        protocol_on(fw, store).await;
    }
    drop_shared(&tag).await;
}
}

on_both_frameworks! {
/// Two app processes on one store: registered on one, used and refreshed on the other, and
/// used on the first again.
#[tokio::test]
async fn two_processes_share_the_binding(fw) {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let args = ["--store", store.as_str(), "--dbsc", "--dbsc-bound-lifetime", BOUND];
    let a = Server::start_on(fw, &args);
    let b = Server::start_on(fw, &args);
    let mut browser = Browser::new(a.addr, DeviceKey::p256());
    let name = user();
    assert_eq!(browser.sign_in_and_register(&name).await.status, 200);
    browser.addr = b.addr;
    assert_eq!(browser.get("/whoami").await.body, name);
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(browser.refresh().await.status, 200);
    browser.addr = a.addr;
    assert_eq!(browser.get("/whoami").await.body, name);
    // A challenge handed out by one process is answered on the other.
    tokio::time::sleep(PAST_BOUND).await;
    browser.challenge = None;
    assert_eq!(browser.refresh_once().await.status, 403);
    browser.addr = b.addr;
    assert_eq!(browser.refresh_once().await.status, 200);
    assert_eq!(browser.get("/whoami").await.body, name);
}
}

on_both_frameworks! {
/// With periodic rotation on, the session's ID changes under the binding: the bound cookie
/// stays valid across the rotation and the refresh works under the new ID.
#[tokio::test]
async fn the_binding_survives_periodic_rotation(fw) {
    let server = Server::start_on(
        fw,
        &["--store", "memory://", "--dbsc", "--dbsc-bound-lifetime", "3s",
          "--rotate-after", "1s", "--rotation-grace", "500ms"],
    );
    let mut browser = Browser::new(server.addr, DeviceKey::p256());
    let name = user();
    assert_eq!(browser.sign_in_and_register(&name).await.status, 200);
    let before = browser.session.clone();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(browser.get("/whoami").await.body, name);
    assert_ne!(browser.session, before, "the session rotated");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(get_as(server.addr, "/whoami", &browser.cookie_line()).await.status, 401);
    let r = browser.refresh().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(browser.get("/whoami").await.body, name);
}
}

/// `sessionkit migrate` carries the binding: registered on one store, the session is used and
/// refreshed with the same device key on the copy.
#[tokio::test]
async fn migrate_carries_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("from.db").display());
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let args = |store: &str| {
        vec![
            "--store".to_owned(),
            store.to_owned(),
            "--dbsc".to_owned(),
            "--dbsc-bound-lifetime".to_owned(),
            BOUND.to_owned(),
        ]
    };
    let mut old = Server::start(&args(&from).iter().map(String::as_str).collect::<Vec<_>>());
    let mut browser = Browser::new(old.addr, DeviceKey::p256());
    let name = user();
    assert_eq!(browser.sign_in_and_register(&name).await.status, 200);
    old.kill();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessionkit"))
        .args(["migrate", "--from", &from, "--to", &to, "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = Server::start(&args(&to).iter().map(String::as_str).collect::<Vec<_>>());
    browser.addr = new.addr;
    assert_eq!(browser.get("/whoami").await.body, name);
    tokio::time::sleep(PAST_BOUND).await;
    assert_eq!(
        get_as(new.addr, "/whoami", &browser.cookie_line())
            .await
            .status,
        401
    );
    assert_eq!(browser.refresh().await.status, 200);
    assert_eq!(browser.get("/whoami").await.body, name);
}
