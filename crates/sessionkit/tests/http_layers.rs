//! The HTTP integrations over real HTTP: the tower layer (on axum) and the actix-web middleware
//! run the same test bodies. Lazy load (a handler that never touches the session costs no store
//! call), 503 with no cookie when the store fails, at most one `Set-Cookie`, exact concurrent
//! increments on one cookie, and a clear 500 when the middleware is missing.

use std::net::SocketAddr;
use std::sync::Arc;

use sessionkit::{Config, Manager, Session, SessionId, SessionLayer, SessionMiddleware};
use sessionkit_http1::{request, Connection, Response};

#[derive(Clone, Copy, Debug)]
enum Framework {
    Axum,
    Actix,
}

const BOTH: [Framework; 2] = [Framework::Axum, Framework::Actix];

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}"))
}

async fn login(session: Session) -> Result<String, sessionkit::Error> {
    session.insert("before", 1).await?;
    // A new ID: the old cookie is replaced, in one Set-Cookie.
    session.set_user(Some("ann"), "test").await?;
    Ok("ok".to_owned())
}

async fn plain() -> &'static str {
    "no session here"
}

/// A server on a free port: `/count`, `/login`, `/plain` behind the session middleware, and
/// `/unwrapped` (which asks for a session) outside it.
struct Server {
    addr: SocketAddr,
    actix: Option<actix_web::dev::ServerHandle>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        match &self.actix {
            Some(handle) => drop(handle.stop(false)),
            None => self.task.abort(),
        }
    }
}

async fn serve(fw: Framework, manager: Manager) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match fw {
        Framework::Axum => {
            use axum::routing::{get, post};
            let app = axum::Router::new()
                .route("/count", get(count))
                .route("/login", post(login))
                .route("/plain", get(plain))
                .layer(SessionLayer::new(manager))
                .route("/unwrapped", get(count));
            let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Server {
                addr,
                actix: None,
                task,
            }
        }
        Framework::Actix => {
            use actix_web::{web, App, HttpServer};
            let server = HttpServer::new(move || {
                App::new()
                    .service(
                        web::scope("/s")
                            .route("/count", web::get().to(count))
                            .route("/login", web::post().to(login))
                            .route("/plain", web::get().to(plain))
                            .wrap(SessionMiddleware::new(manager.clone())),
                    )
                    .route("/unwrapped", web::get().to(count))
            })
            .disable_signals()
            .workers(2)
            .listen(listener.into_std().unwrap())
            .unwrap()
            .run();
            let handle = server.handle();
            let task = tokio::spawn(async move { server.await.unwrap() });
            Server {
                addr,
                actix: Some(handle),
                task,
            }
        }
    }
}

/// The path of a wrapped route (the actix app keeps them in a scope).
fn path(fw: Framework, route: &str) -> String {
    match fw {
        Framework::Axum => route.to_owned(),
        Framework::Actix => format!("/s{route}"),
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, cookie: Option<&str>) -> Response {
    let pair = cookie.map(pair);
    let mut c = Connection::connect(addr).await.unwrap();
    c.send(&request(method, path, pair.as_deref(), &[], ""))
        .await
        .unwrap()
}

/// The `name=value` pair of a cookie value, under the default cookie name.
fn pair(value: &str) -> String {
    format!("{}={value}", Config::default().cookie_name())
}

fn cookie_of(r: &Response) -> String {
    let set = r.headers_named("set-cookie");
    assert_eq!(set.len(), 1, "exactly one Set-Cookie: {set:?}");
    let (_, rest) = set[0].split_once('=').unwrap();
    rest.split(';').next().unwrap().to_owned()
}

fn memory_manager() -> Manager {
    Manager::new(Arc::new(sessionkit::MemoryStore::new()), Config::default()).unwrap()
}

/// A file store whose directory has been replaced by a plain file: every call fails for real.
async fn broken_manager(dir: &tempfile::TempDir) -> Manager {
    let root = dir.path().join("sessions");
    let store = sessionkit::store::open(&format!("file://{}", root.display()))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(&root, b"not a directory").unwrap();
    Manager::new(store, Config::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_touches_the_session_costs_no_store_call() {
    for fw in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let manager = broken_manager(&dir).await;
        assert!(manager.ping().await.is_err() || manager.store().len(0).await.is_err());
        let server = serve(fw, manager).await;
        let made_up = SessionId::generate().unwrap().to_string();
        for cookie in [None, Some(made_up.as_str())] {
            // The store fails every call, so any call would have turned this into a 503.
            let r = send(server.addr, "GET", &path(fw, "/plain"), cookie).await;
            assert_eq!(r.status, 200, "{fw:?} {cookie:?}");
            assert_eq!(r.body, "no session here");
            assert!(r.headers_named("set-cookie").is_empty(), "{fw:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_answers_503_with_no_cookie() {
    for fw in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(fw, broken_manager(&dir).await).await;
        for (method, route) in [("GET", "/count"), ("POST", "/login")] {
            let r = send(server.addr, method, &path(fw, route), None).await;
            assert_eq!(r.status, 503, "{fw:?} {route}");
            assert!(r.headers_named("set-cookie").is_empty(), "{fw:?} {route}");
            assert_eq!(r.header("cache-control"), Some("no-store"), "{fw:?}");
            assert!(!r.body.contains("not a directory"), "{fw:?}: {}", r.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_one_set_cookie_and_are_private() {
    for fw in BOTH {
        let server = serve(fw, memory_manager()).await;
        let first = send(server.addr, "GET", &path(fw, "/count"), None).await;
        assert_eq!(first.body, "1", "{fw:?}");
        let cookie = cookie_of(&first);
        assert_eq!(first.header("cache-control"), Some("no-store"));
        assert_eq!(first.header("vary"), Some("cookie"));
        let again = send(server.addr, "GET", &path(fw, "/count"), Some(&cookie)).await;
        assert_eq!(again.body, "2", "{fw:?}");
        assert!(again.headers_named("set-cookie").is_empty(), "{fw:?}");
        assert_eq!(again.header("cache-control"), Some("no-store"));
        // Writing and changing the ID in one request still sends one cookie: the new one.
        let login = send(server.addr, "POST", &path(fw, "/login"), Some(&cookie)).await;
        assert_eq!(login.status, 200, "{fw:?}");
        let rotated = cookie_of(&login);
        assert_ne!(rotated, cookie);
        let after = send(server.addr, "GET", &path(fw, "/count"), Some(&rotated)).await;
        assert_eq!(after.body, "3", "{fw:?}: the data followed the new ID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_on_one_cookie_are_exact() {
    for fw in BOTH {
        let manager = memory_manager();
        let server = serve(fw, manager.clone()).await;
        let cookie = cookie_of(&send(server.addr, "GET", &path(fw, "/count"), None).await);
        let req = request("GET", &path(fw, "/count"), Some(&pair(&cookie)), &[], "");
        let mut conns = Vec::new();
        for _ in 0..8 {
            let (addr, req) = (server.addr, req.clone());
            conns.push(tokio::spawn(async move {
                let mut c = Connection::connect(addr).await.unwrap();
                c.write(&req.repeat(25)).await.unwrap();
                for _ in 0..25 {
                    assert_eq!(c.read_response().await.unwrap().status, 200);
                }
            }));
        }
        for c in conns {
            c.await.unwrap();
        }
        let last = send(server.addr, "GET", &path(fw, "/count"), Some(&cookie)).await;
        assert_eq!(last.body, "202", "{fw:?}: 1 + 8 × 25 + 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_the_middleware_says_so() {
    for (fw, name) in [
        (Framework::Axum, "SessionLayer"),
        (Framework::Actix, "SessionMiddleware"),
    ] {
        let server = serve(fw, memory_manager()).await;
        let r = send(server.addr, "GET", "/unwrapped", None).await;
        assert_eq!(r.status, 500, "{fw:?}");
        assert_eq!(
            r.body,
            format!("sessionkit: {name} is missing from this route"),
            "{fw:?}"
        );
        assert!(r.headers_named("set-cookie").is_empty());
    }
}
