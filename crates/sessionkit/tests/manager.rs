//! Manager behaviour below HTTP: lazy loading, header transports, the per-user session cap,
//! re-authentication, and the GC task's lifecycle.

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use sessionkit::{
    now_millis, Config, Error, Manager, MemoryStore, Record, Session, SessionId, Store, Transport,
    UserLimitPolicy,
};

fn manager(config: Config) -> (Manager, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Manager::new(store.clone(), config).unwrap(), store)
}

fn cookie_headers(m: &Manager, token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        HeaderValue::from_str(&format!("{}={token}", m.cookie_name())).unwrap(),
    );
    h
}

fn token_of(m: &Manager, headers: &sessionkit::SessionHeaders) -> String {
    let line = headers.set_cookie().unwrap().to_str().unwrap();
    let rest = line.strip_prefix(&format!("{}=", m.cookie_name())).unwrap();
    rest.split(';').next().unwrap().to_owned()
}

/// Periodic rotation after `after_ms`, with a grace window far longer than any test.
fn rotating(after_ms: u64) -> Config {
    Config::builder()
        .rotate_after(Duration::from_millis(after_ms))
        .rotation_grace(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Signs `user` in on a new session; returns its token.
async fn sign_in(m: &Manager, user: &str) -> Result<String, Error> {
    let s = m.start(&HeaderMap::new());
    s.set_user(Some(user), "password").await?;
    Ok(token_of(m, &m.finish(&s).await?))
}

#[tokio::test]
async fn an_untouched_session_costs_no_store_call_and_sends_nothing() {
    let (m, store) = manager(Config::default());
    let token = SessionId::generate().unwrap().to_string();
    let s = m.start(&cookie_headers(&m, &token));
    assert!(m.finish(&s).await.unwrap().is_empty());
    // A read-only look at an unknown session stores nothing and tells the client to forget it.
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.get::<u32>("x").await.unwrap(), None);
    let h = m.finish(&s).await.unwrap();
    assert!(h
        .set_cookie()
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(store.len(now_millis()).await.unwrap(), 0);
    // Writing then removing leaves an empty session: not stored either.
    let s = m.start(&HeaderMap::new());
    s.insert("k", 1).await.unwrap();
    s.remove("k").await.unwrap();
    assert!(m.finish(&s).await.unwrap().is_empty());
    assert_eq!(store.len(now_millis()).await.unwrap(), 0);
}

#[tokio::test]
async fn typed_values_round_trip_and_wrong_types_are_errors() {
    let (m, _) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    s.insert("list", vec![1, 2, 3]).await.unwrap();
    s.insert("name", "ann").await.unwrap();
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.get::<Vec<u8>>("list").await.unwrap(), Some(vec![1, 2, 3]));
    assert!(matches!(
        s.get::<u64>("name").await,
        Err(Error::Value { .. })
    ));
    s.clear().await.unwrap();
    assert_eq!(s.get::<String>("name").await.unwrap(), None);
}

#[tokio::test]
async fn bearer_and_header_transports_carry_the_token() {
    let (m, _) = manager(
        Config::builder()
            .transport(Transport::Bearer {
                response_header: HeaderName::from_static("x-session-token"),
            })
            .build()
            .unwrap(),
    );
    let s = m.start(&HeaderMap::new());
    s.insert("n", 1).await.unwrap();
    let h = m.finish(&s).await.unwrap();
    assert!(h.set_cookie().is_none());
    let (_, token) = h
        .iter()
        .find(|(n, _)| n.as_str() == "x-session-token")
        .unwrap();
    let mut req = HeaderMap::new();
    req.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", token.to_str().unwrap())).unwrap(),
    );
    assert_eq!(m.start(&req).get::<u32>("n").await.unwrap(), Some(1));

    let name = HeaderName::from_static("x-api-session");
    let (m, _) = manager(
        Config::builder()
            .transport(Transport::Header(name.clone()))
            .build()
            .unwrap(),
    );
    let s = m.start(&HeaderMap::new());
    s.insert("n", 2).await.unwrap();
    let h = m.finish(&s).await.unwrap();
    let (_, token) = h.iter().find(|(n, _)| **n == name).unwrap();
    let mut req = HeaderMap::new();
    req.insert(name, token.clone());
    assert_eq!(m.start(&req).get::<u32>("n").await.unwrap(), Some(2));
}

#[tokio::test]
async fn session_cap_evicts_the_least_recently_used() {
    let (m, _) = manager(Config::builder().max_sessions_per_user(2).build().unwrap());
    let first = sign_in(&m, "gina").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = sign_in(&m, "gina").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = sign_in(&m, "gina").await.unwrap();
    assert_eq!(m.sessions_of("gina", None).await.unwrap().len(), 2);
    let user_of = |t: String| {
        let m = m.clone();
        async move { m.start(&cookie_headers(&m, &t)).user().await.unwrap() }
    };
    assert_eq!(user_of(first).await, None, "the oldest was evicted");
    assert_eq!(user_of(second).await.as_deref(), Some("gina"));
    assert_eq!(user_of(third).await.as_deref(), Some("gina"));
}

#[tokio::test]
async fn session_cap_can_refuse_instead() {
    let (m, _) = manager(
        Config::builder()
            .max_sessions_per_user(1)
            .user_limit_policy(UserLimitPolicy::Refuse)
            .build()
            .unwrap(),
    );
    sign_in(&m, "hal").await.unwrap();
    assert!(matches!(
        sign_in(&m, "hal").await,
        Err(Error::TooManySessions { limit: 1, .. })
    ));
    assert_eq!(m.sessions_of("hal", None).await.unwrap().len(), 1);
    sign_in(&m, "ida").await.unwrap();
}

#[tokio::test]
async fn reauthentication_restarts_the_absolute_timeout_and_records_how() {
    let (m, store) = manager(
        Config::builder()
            .absolute_timeout(Duration::from_millis(400))
            .build()
            .unwrap(),
    );
    let token = sign_in(&m, "jo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Re-authenticate (e.g. "confirm your password" before a sensitive action).
    let s = m.start(&cookie_headers(&m, &token));
    let before = s.auth_info().await.unwrap().unwrap();
    assert_eq!(before.method, "password");
    s.set_user(Some("jo"), "webauthn").await.unwrap();
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    // 500 ms after creation, but only 250 ms after re-authentication: still alive.
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.user().await.unwrap().as_deref(), Some("jo"));
    let auth = s.auth_info().await.unwrap().unwrap();
    assert_eq!(auth.method, "webauthn");
    assert!(auth.at > before.at);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.user().await.unwrap(), None);
    assert_eq!(store.len(now_millis()).await.unwrap(), 0);
}

#[tokio::test]
async fn concurrent_writers_to_different_keys_both_persist() {
    let (m, _) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    s.insert("init", true).await.unwrap();
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    // Both load the same version; both write; the second replays on top of the first.
    let a = m.start(&cookie_headers(&m, &token));
    let b = m.start(&cookie_headers(&m, &token));
    a.insert("a", 1).await.unwrap();
    b.insert("b", 2).await.unwrap();
    m.finish(&a).await.unwrap();
    m.finish(&b).await.unwrap();
    let s: Session = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.get::<u32>("a").await.unwrap(), Some(1));
    assert_eq!(s.get::<u32>("b").await.unwrap(), Some(2));
}

#[tokio::test]
async fn gc_task_removes_expired_sessions_and_stops_on_shutdown() {
    let (m, store) = manager(
        Config::builder()
            .gc_interval(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let now = now_millis();
    for i in 0..10 {
        let key = SessionId::generate().unwrap().key();
        let deadline = if i < 4 { now - 1 } else { now + 60_000 };
        store
            .create(&key, &Record::new(now - 10, deadline, now + 60_000))
            .await
            .unwrap();
    }
    m.spawn_gc();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .scan(None, 100, now_millis())
            .await
            .unwrap()
            .records
            .len(),
        6
    );
    assert_eq!(
        store.gc(now_millis(), 100).await.unwrap(),
        0,
        "the task already removed them"
    );
    tokio::time::timeout(Duration::from_secs(2), m.shutdown())
        .await
        .expect("GC task stops");
}

/// Periodic rotation while 32 clients share one cookie jar, on the file store (each write an
/// fsync, so a write that waits outside the queue loses every round). A request that lost the
/// race to a rotation follows the session to its new ID; it must then queue with that ID's
/// writers rather than back off beside them. Before it did, some requests gave up with
/// `Contention` (a 503 to the user) and their writes were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_that_follow_a_rotation_queue_behind_the_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store: Arc<dyn Store> = Arc::new(sessionkit::store::FileStore::open(&url).await.unwrap());
    let config = Config::builder()
        .rotate_after(Duration::from_millis(40))
        .rotation_grace(Duration::from_secs(2))
        .build()
        .unwrap();
    let m = Manager::new(store, config).unwrap();
    let first = sign_in(&m, "frank").await.unwrap();
    let jar = Arc::new(std::sync::Mutex::new(first));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (m, jar) = (m.clone(), jar.clone());
        clients.push(tokio::spawn(async move {
            let mut written = 0u64;
            for _ in 0..40 {
                let token = jar.lock().unwrap().clone();
                let s = m.start(&cookie_headers(&m, &token));
                s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                // Every write counts: one through a previous ID (the jar is shared, so many
                // are) is the session's too.
                let headers = m.finish(&s).await.expect("every write is saved");
                written += 1;
                if headers.set_cookie().is_some() {
                    *jar.lock().unwrap() = token_of(&m, &headers);
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
    let token = jar.lock().unwrap().clone();
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(
        s.get::<u64>("n").await.unwrap(),
        Some(written),
        "no write lost"
    );
}

/// A response that shows a stored session must not be cached or shared: `Cache-Control:
/// no-store` and `Vary: Cookie` on every such response, also when no cookie is sent; a request
/// that resolved to no session and stored none gets nothing.
#[tokio::test]
async fn session_dependent_responses_are_never_cacheable() {
    let (m, _) = manager(Config::default());
    let token = sign_in(&m, "kim").await.unwrap();
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.user().await.unwrap().as_deref(), Some("kim"));
    let h = m.finish(&s).await.unwrap();
    assert!(h.set_cookie().is_none(), "a plain read sends no cookie");
    let mut map = HeaderMap::new();
    h.apply_to(&mut map);
    assert_eq!(map.get("cache-control").unwrap(), "no-store");
    assert_eq!(map.get("vary").unwrap(), "cookie");
    // Anonymous and nothing stored: the page is the same for everyone.
    let s = m.start(&HeaderMap::new());
    assert_eq!(s.user().await.unwrap(), None);
    assert!(m.finish(&s).await.unwrap().is_empty());
}

/// A CSRF token seen before a privilege change is dead after it (sign-in, sign-out, cycle_id).
#[tokio::test]
async fn csrf_tokens_are_renewed_at_every_privilege_change() {
    let (m, _) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    let before = s.csrf_token().await.unwrap();
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    let s = m.start(&cookie_headers(&m, &token));
    assert!(s.verify_csrf(&before).await.unwrap());
    s.set_user(Some("lee"), "password").await.unwrap();
    let after_login = s.csrf_token().await.unwrap();
    assert_ne!(after_login, before);
    assert!(!s.verify_csrf(&before).await.unwrap());
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    let s = m.start(&cookie_headers(&m, &token));
    assert!(
        !s.verify_csrf(&before).await.unwrap(),
        "stored, not only in the view"
    );
    assert!(s.verify_csrf(&after_login).await.unwrap());
    s.cycle_id().await.unwrap();
    assert!(!s.verify_csrf(&after_login).await.unwrap());
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    let s = m.start(&cookie_headers(&m, &token));
    assert!(!s.verify_csrf(&after_login).await.unwrap());
}

/// A previous ID inside its grace window is the session (a browser that applied an older
/// rotation's Set-Cookie last must not be logged out): it reads and writes, and is handed the
/// current ID, so the browser converges. After the window it is dead.
#[tokio::test]
async fn a_previous_id_in_its_window_is_the_session_and_is_led_to_the_current_id() {
    let config = Config::builder()
        .rotate_after(Duration::from_millis(50))
        .rotation_grace(Duration::from_millis(400))
        .build()
        .unwrap();
    let (m, _) = manager(config);
    let old = sign_in(&m, "max").await.unwrap();
    let s = m.start(&cookie_headers(&m, &old));
    let csrf = s.csrf_token().await.unwrap();
    m.finish(&s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    // A write after rotate_after rotates the ID; the old one becomes a grace alias.
    let s = m.start(&cookie_headers(&m, &old));
    s.insert("x", 1).await.unwrap();
    let new = token_of(&m, &m.finish(&s).await.unwrap());
    assert_ne!(new, old);

    // A read through the old ID: the same session, and the current ID comes back.
    let late = m.start(&cookie_headers(&m, &old));
    assert_eq!(late.user().await.unwrap().as_deref(), Some("max"));
    assert!(late.verify_csrf(&csrf).await.unwrap());
    assert_eq!(token_of(&m, &m.finish(&late).await.unwrap()), new);
    // A write through it is kept, and leads to the current ID as well.
    let late = m.start(&cookie_headers(&m, &old));
    late.insert("y", 2).await.unwrap();
    assert_eq!(token_of(&m, &m.finish(&late).await.unwrap()), new);
    let s = m.start(&cookie_headers(&m, &new));
    assert_eq!(s.get::<u32>("y").await.unwrap(), Some(2));
    assert!(m.finish(&s).await.unwrap().set_cookie().is_none());
    // After the window the old ID names nothing.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let dead = m.start(&cookie_headers(&m, &old));
    assert_eq!(dead.user().await.unwrap(), None);
}

/// An ID retired by a privilege change (sign-in, cycle_id) leads nowhere, though its alias is
/// kept for revocation to follow: the holder of a pre-login ID (session fixation) gets nothing.
#[tokio::test]
async fn an_id_retired_by_sign_in_leads_nowhere() {
    let (m, store) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    s.insert("pre", 1).await.unwrap();
    let planted = token_of(&m, &m.finish(&s).await.unwrap());
    let s = m.start(&cookie_headers(&m, &planted));
    s.set_user(Some("vic"), "password").await.unwrap();
    let signed_in = token_of(&m, &m.finish(&s).await.unwrap());
    assert_ne!(planted, signed_in);
    let alias = store
        .load(&m.key_of(&planted).unwrap(), sessionkit::now_millis())
        .await
        .unwrap()
        .expect("the alias revocation follows");
    assert_eq!(alias.successor(), Some(&m.key_of(&signed_in).unwrap()));
    assert!(alias.sealed_successor().is_none());
    let attacker = m.start(&cookie_headers(&m, &planted));
    assert_eq!(attacker.user().await.unwrap(), None);
    assert_eq!(attacker.get::<u32>("pre").await.unwrap(), None);
    attacker.insert("planted", 1).await.unwrap();
    let fresh = token_of(&m, &m.finish(&attacker).await.unwrap());
    assert_ne!(
        fresh, signed_in,
        "a new anonymous session, not the victim's"
    );
    let victim = m.start(&cookie_headers(&m, &signed_in));
    assert_eq!(victim.get::<u32>("planted").await.unwrap(), None);
}

/// Rotating more often than the grace window chains aliases (A → B → C): a request through A
/// inside its window must still reach the live session, not B's empty alias record, and be
/// handed C.
#[tokio::test]
async fn a_previous_id_follows_a_chain_of_rotations_to_the_live_record() {
    let (m, _) = manager(rotating(50));
    let a = sign_in(&m, "ned").await.unwrap();
    let mut latest = a.clone();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        let s = m.start(&cookie_headers(&m, &latest));
        s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .unwrap();
        latest = token_of(&m, &m.finish(&s).await.unwrap());
    }
    assert_ne!(latest, a);
    let through_a = m.start(&cookie_headers(&m, &a));
    assert_eq!(through_a.user().await.unwrap().as_deref(), Some("ned"));
    assert_eq!(through_a.get::<u64>("n").await.unwrap(), Some(2));
    assert_eq!(token_of(&m, &m.finish(&through_a).await.unwrap()), latest);
    assert!(Config::builder()
        .rotate_after(Duration::ZERO)
        .build()
        .is_err());
}

/// A flash is shown once: of many concurrent requests, exactly one takes each message, and a
/// message added while others are being taken is kept for a later request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_flash_is_taken_by_exactly_one_request() {
    use sessionkit::FlashLevel;
    let (m, _) = manager(Config::default());
    let token = sign_in(&m, "ola").await.unwrap();
    for round in 0..20 {
        let s = m.start(&cookie_headers(&m, &token));
        s.flash(FlashLevel::Success, format!("round {round}"))
            .await
            .unwrap();
        m.finish(&s).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (m, token) = (m.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let s = m.start(&cookie_headers(&m, &token));
                if i == 0 {
                    s.flash(FlashLevel::Info, "later").await.unwrap();
                }
                s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                let got = s.take_flashes().await.unwrap();
                m.finish(&s).await.unwrap();
                got.into_iter()
                    .filter(|f| f.text.starts_with("round"))
                    .count()
            }));
        }
        let mut shown = 0;
        for t in tasks {
            shown += t.await.unwrap();
        }
        assert_eq!(shown, 1, "round {round}: the flash was shown {shown} times");
        // Task 0's own "later" flash was taken by task 0 itself (it added and took it in one
        // request), so nothing is left; and no update was lost to the eager saves.
        let s = m.start(&cookie_headers(&m, &token));
        assert!(s.take_flashes().await.unwrap().is_empty());
        assert_eq!(s.get::<u64>("n").await.unwrap(), Some(8 * (round + 1)));
        m.finish(&s).await.unwrap();
    }
}

/// The request's next write rotates `token`'s session (periodic rotation is due); returns the
/// new token.
async fn rotate_by_writing(m: &Manager, token: &str) -> String {
    let s = m.start(&cookie_headers(m, token));
    s.update("w", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await
        .unwrap();
    token_of(m, &m.finish(&s).await.unwrap())
}

/// "End all other sessions" keeps the asking session even when another tab of the same
/// browser rotates its ID while the revocation runs (kept by handle, not by key).
#[tokio::test]
async fn revoke_all_except_keeps_the_asker_across_its_own_rotation() {
    let (m, _) = manager(rotating(50));
    let mine = sign_in(&m, "pia").await.unwrap();
    let other = sign_in(&m, "pia").await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let asking = m.start(&cookie_headers(&m, &mine));
    assert_eq!(asking.user().await.unwrap().as_deref(), Some("pia"));
    let rotated = rotate_by_writing(&m, &mine).await;
    assert_eq!(m.revoke_all_except(&asking).await.unwrap(), 1);
    let s = m.start(&cookie_headers(&m, &rotated));
    assert_eq!(
        s.user().await.unwrap().as_deref(),
        Some("pia"),
        "the asker stays"
    );
    let s = m.start(&cookie_headers(&m, &other));
    assert_eq!(s.user().await.unwrap(), None, "the other one ended");
}

/// A logout that loaded the session before a concurrent request rotated it ends the session
/// under its new ID too.
#[tokio::test]
async fn a_logout_racing_a_rotation_still_ends_the_session() {
    let (m, _) = manager(rotating(50));
    let token = sign_in(&m, "quin").await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let logout = m.start(&cookie_headers(&m, &token));
    logout.destroy().await.unwrap();
    let rotated = rotate_by_writing(&m, &token).await;
    m.finish(&logout).await.unwrap();
    let s = m.start(&cookie_headers(&m, &rotated));
    assert_eq!(s.user().await.unwrap(), None);
}

/// A CSRF token handed out by a concurrent request while a sign-in was in flight is replaced
/// by the sign-in too (the renewal is replayed, not decided from a stale view).
#[tokio::test]
async fn csrf_renewal_at_sign_in_survives_a_concurrent_token() {
    let (m, _) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    s.insert("k", 1).await.unwrap();
    let token = token_of(&m, &m.finish(&s).await.unwrap());
    let login = m.start(&cookie_headers(&m, &token));
    assert_eq!(login.user().await.unwrap(), None);
    let other = m.start(&cookie_headers(&m, &token));
    let early = other.csrf_token().await.unwrap();
    m.finish(&other).await.unwrap();
    login.set_user(Some("rae"), "password").await.unwrap();
    let signed_in = token_of(&m, &m.finish(&login).await.unwrap());
    let s = m.start(&cookie_headers(&m, &signed_in));
    assert_eq!(s.user().await.unwrap().as_deref(), Some("rae"));
    assert!(!s.verify_csrf(&early).await.unwrap());
}

/// A flash added and taken in one anonymous request leaves nothing worth storing.
#[tokio::test]
async fn a_flash_taken_in_its_own_request_stores_no_session() {
    let (m, store) = manager(Config::default());
    let s = m.start(&HeaderMap::new());
    s.flash(sessionkit::FlashLevel::Info, "hi").await.unwrap();
    assert_eq!(s.take_flashes().await.unwrap().len(), 1);
    assert!(m.finish(&s).await.unwrap().is_empty());
    assert_eq!(store.len(now_millis()).await.unwrap(), 0);
}

/// A memory store whose saves take a store round trip's time, and that counts them: so the
/// queue of writers on one hot session forms as it does against Redis or Postgres. Each save
/// also takes a permit of `gate` once counted, so a test can hold saves in flight.
#[derive(Debug)]
struct SlowSaves {
    inner: MemoryStore,
    saves: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl SlowSaves {
    fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            saves: Default::default(),
            gate: tokio::sync::Semaphore::new(permits),
        })
    }

    fn saves(&self) -> usize {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` saves have started.
    async fn wait_for_saves(&self, n: usize) {
        for _ in 0..2000 {
            if self.saves() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("saves never reached {n}");
    }
}

/// Finishes `s` in a task of its own, as a request would.
fn finish_in_task(
    m: &Manager,
    s: sessionkit::Session,
) -> tokio::task::JoinHandle<sessionkit::Result<()>> {
    let m = m.clone();
    tokio::spawn(async move { m.finish(&s).await.map(drop) })
}

#[async_trait::async_trait]
impl Store for SlowSaves {
    fn kind(&self) -> &'static str {
        "slow-saves"
    }
    async fn load(
        &self,
        key: &sessionkit::Key,
        now: sessionkit::Millis,
    ) -> sessionkit::Result<Option<Record>> {
        self.inner.load(key, now).await
    }
    async fn create(&self, key: &sessionkit::Key, record: &Record) -> sessionkit::Result<()> {
        self.inner.create(key, record).await
    }
    async fn save(
        &self,
        key: &sessionkit::Key,
        record: &Record,
        expected: u64,
    ) -> sessionkit::Result<()> {
        self.saves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.gate.acquire().await.expect("gate open").forget();
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.inner.save(key, record, expected).await
    }
    async fn touch(
        &self,
        key: &sessionkit::Key,
        at: sessionkit::Millis,
        until: sessionkit::Millis,
    ) -> sessionkit::Result<bool> {
        self.inner.touch(key, at, until).await
    }
    async fn rotate(
        &self,
        old: &sessionkit::Key,
        expected: u64,
        new: &sessionkit::Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> sessionkit::Result<()> {
        self.inner.rotate(old, expected, new, record, alias).await
    }
    async fn take(&self, key: &sessionkit::Key) -> sessionkit::Result<Option<Record>> {
        self.inner.take(key).await
    }
    async fn gc(&self, now: sessionkit::Millis, limit: usize) -> sessionkit::Result<usize> {
        self.inner.gc(now, limit).await
    }
    async fn len(&self, now: sessionkit::Millis) -> sessionkit::Result<u64> {
        self.inner.len(now).await
    }
    async fn scan(
        &self,
        cursor: Option<&str>,
        limit: usize,
        now: sessionkit::Millis,
    ) -> sessionkit::Result<sessionkit::Page> {
        self.inner.scan(cursor, limit, now).await
    }
    async fn sessions_of(
        &self,
        user: &str,
        now: sessionkit::Millis,
    ) -> sessionkit::Result<Vec<(sessionkit::Key, Record)>> {
        self.inner.sessions_of(user, now).await
    }
    async fn destroy_user(&self, user: &str) -> sessionkit::Result<u64> {
        self.inner.destroy_user(user).await
    }
    async fn ping(&self) -> sessionkit::Result<()> {
        self.inner.ping().await
    }
}

/// A session with `n` at 0, and `writers` requests that each loaded it and incremented `n`.
async fn hot_session(m: &Manager, writers: u64) -> (String, Vec<sessionkit::Session>) {
    let s = m.start(&HeaderMap::new());
    s.insert("n", 0u64).await.unwrap();
    let token = token_of(m, &m.finish(&s).await.unwrap());
    let mut sessions = Vec::new();
    for _ in 0..writers {
        let s = m.start(&cookie_headers(m, &token));
        s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .unwrap();
        sessions.push(s);
    }
    (token, sessions)
}

#[tokio::test]
async fn writers_queued_on_a_hot_session_share_one_save() {
    let store = SlowSaves::new(usize::MAX >> 4);
    let m = Manager::new(store.clone(), Config::default()).unwrap();
    // Every writer loads the same version, then all finish at once: each one queued behind
    // the others would lose its compare-and-set and reload, unless the queue hands the
    // written record down; and each would cost a save of its own, unless the writer whose
    // turn it is saves for the ones waiting.
    const WRITERS: u64 = 16;
    let (token, sessions) = hot_session(&m, WRITERS).await;
    let mut finishes = tokio::task::JoinSet::new();
    for s in sessions {
        let m = m.clone();
        finishes.spawn(async move { m.finish(&s).await.map(drop) });
    }
    while let Some(out) = finishes.join_next().await {
        out.unwrap().unwrap();
    }
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(
        s.get::<u64>("n").await.unwrap(),
        Some(WRITERS),
        "no update lost, none applied twice"
    );
    // The first writer saves alone (nobody waits yet); the 15 queue behind it, and the first
    // of them saves for all. (Without combining: 16 saves; without handing the record down:
    // 31, each queued writer losing a compare-and-set first.)
    assert_eq!(
        store.saves(),
        2,
        "one save for the writer alone, one for the queue"
    );
}

/// The writer saving for the queue goes away (its client disconnects) mid-save: the save
/// finishes anyway and every queued writer gets its answer, each update applied once.
#[tokio::test]
async fn a_combined_save_outlives_the_request_that_started_it() {
    // No permits: every save waits for the test to let it through.
    let store = SlowSaves::new(0);
    let m = Manager::new(store.clone(), Config::default()).unwrap();
    let (token, mut sessions) = hot_session(&m, 4).await;
    let finish = |s| finish_in_task(&m, s);
    // The first writer's save is in flight; the second queues first, so the turn passes to
    // it, and the last two queue behind it. (The pauses only order the queue.)
    let first = finish(sessions.remove(0));
    store.wait_for_saves(1).await;
    let holder = finish(sessions.remove(0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let queued: Vec<_> = sessions.into_iter().map(finish).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.gate.add_permits(1);
    first.await.unwrap().unwrap();
    // The holder's combined save is in flight (counted, waiting for a permit): drop it.
    store.wait_for_saves(2).await;
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    store.gate.add_permits(8);
    for out in queued {
        out.await.unwrap().expect("answered by the combined save");
    }
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(
        s.get::<u64>("n").await.unwrap(),
        Some(4),
        "each update once"
    );
    assert_eq!(
        store.saves(),
        2,
        "the queued writers were saved with the holder"
    );
}

/// A writer whose request goes away while it waits for its turn (its client disconnected) is
/// not saved by the holder that comes after: its operations leave the queue with it.
#[tokio::test]
async fn a_writer_dropped_while_queued_is_not_saved() {
    let store = SlowSaves::new(0);
    let m = Manager::new(store.clone(), Config::default()).unwrap();
    let (token, mut sessions) = hot_session(&m, 3).await;
    let finish = |s| finish_in_task(&m, s);
    let first = finish(sessions.remove(0));
    store.wait_for_saves(1).await;
    let dropped = finish(sessions.remove(0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = finish(sessions.remove(0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());
    store.gate.add_permits(8);
    first.await.unwrap().unwrap();
    last.await.unwrap().unwrap();
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(
        s.get::<u64>("n").await.unwrap(),
        Some(2),
        "the dropped writer's update is gone"
    );
}

/// A queued writer whose `update` closure panics on the record the holder is saving panics in
/// its own request, as it would saving alone; the holder and the rest of the queue are saved.
#[tokio::test]
async fn a_queued_writer_that_panics_on_the_combined_record_panics_alone() {
    let store = SlowSaves::new(0);
    let m = Manager::new(store.clone(), Config::default()).unwrap();
    let (token, mut sessions) = hot_session(&m, 2).await;
    let (first, last) = (sessions.remove(0), sessions.remove(0));
    let holder = m.start(&cookie_headers(&m, &token));
    holder.insert("n", 10u64).await.unwrap();
    let picky = m.start(&cookie_headers(&m, &token));
    picky
        .update("n", |n: Option<u64>| {
            let n = n.unwrap_or(0);
            assert!(n < 10, "this writer refuses n >= 10");
            n + 1
        })
        .await
        .unwrap();
    let finish = |s| finish_in_task(&m, s);
    // `first` saves alone; `holder` gets the turn next and saves for `picky` and `last`.
    let first = finish(first);
    store.wait_for_saves(1).await;
    let holder = finish(holder);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let picky = finish(picky);
    let last = finish(last);
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.gate.add_permits(8);
    first.await.unwrap().unwrap();
    holder.await.unwrap().expect("the holder is saved");
    last.await.unwrap().expect("the rest of the queue is saved");
    assert!(
        picky.await.unwrap_err().is_panic(),
        "the picky writer panics itself"
    );
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(s.get::<u64>("n").await.unwrap(), Some(11));
}

/// A queued writer whose operation no longer applies on the record the holder is saving
/// (another writer changed the value's type) is handed back, saves alone, and meets the
/// error itself; the others are saved.
#[tokio::test]
async fn a_queued_writer_that_fails_on_the_combined_record_fails_alone() {
    let store = SlowSaves::new(usize::MAX >> 4);
    let m = Manager::new(store.clone(), Config::default()).unwrap();
    let (token, mut sessions) = hot_session(&m, 2).await;
    // A third writer makes `n` a string; the update queued behind it cannot apply.
    let s = m.start(&cookie_headers(&m, &token));
    s.insert("n", "not a number").await.unwrap();
    let (first, after) = (sessions.remove(0), sessions.remove(0));
    let mut order = tokio::task::JoinSet::new();
    for (i, s) in [first, s, after].into_iter().enumerate() {
        let m = m.clone();
        order.spawn(async move { (i, m.finish(&s).await.map(drop)) });
        tokio::task::yield_now().await;
    }
    let mut results = [None, None, None];
    while let Some(out) = order.join_next().await {
        let (i, r) = out.unwrap();
        results[i] = Some(r.is_ok());
    }
    assert_eq!(results, [Some(true), Some(true), Some(false)]);
    let s = m.start(&cookie_headers(&m, &token));
    assert_eq!(
        s.get::<String>("n").await.unwrap().as_deref(),
        Some("not a number")
    );
}
