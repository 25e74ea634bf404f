//! Shared plumbing for the sessionkit fuzz targets: one runtime per thread, a log capture that
//! lets targets assert what the library reported (and that it never logged a credential), and
//! helpers that turn fuzzer bytes into request headers.
//!
//! Fuzzer inputs may contain placeholders such as `$ID`; the targets replace them with tokens of
//! sessions that really exist in the store, so the fuzzer reaches the "valid session" paths
//! (load, write, rotate, destroy) and not only the rejection paths.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Once};

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use sessionkit::{Manager, MemoryStore, Session, SessionHeaders, Store, Transport};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    static LOGS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `fut` to completion on this thread's runtime (built once: building one per input would
/// dominate the run time).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(fut))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once) and clears this thread's log buffer.
pub fn start_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .without_time()
            .with_target(true)
            .with_writer(|| Capture)
            .finish();
        tracing_subscriber::util::SubscriberInitExt::init(subscriber);
    });
    LOGS.with(|l| l.borrow_mut().clear());
}

/// Everything logged on this thread since [`start_logs`].
pub fn logs() -> String {
    LOGS.with(|l| String::from_utf8_lossy(&l.borrow()).into_owned())
}

/// Panics if the log holds any of `secrets` (session tokens and IDs are credentials; the library
/// promises to log only a hash prefix of them).
pub fn assert_not_logged(secrets: &[&str]) {
    let log = logs();
    for s in secrets {
        assert!(
            s.is_empty() || !log.contains(s),
            "a session credential was logged: {s:?}\n{log}"
        );
    }
}

/// Replaces every occurrence of each placeholder in `input` with its value.
pub fn substitute(input: &[u8], subs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    'outer: while i < input.len() {
        for (from, to) in subs {
            if !from.is_empty() && input[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The header that carries the token for `transport` (the name the client sends).
pub fn request_header(transport: &Transport) -> HeaderName {
    match transport {
        Transport::Header(name) => name.clone(),
        Transport::Bearer { .. } => AUTHORIZATION,
        _ => COOKIE,
    }
}

/// Turns `input` into request headers: each line (split on `\n`) becomes one value of the
/// transport's header. Lines that are not valid header values are dropped, as an HTTP parser
/// would never hand them over.
pub fn headers_from(transport: &Transport, input: &[u8]) -> HeaderMap {
    let name = request_header(transport);
    let mut headers = HeaderMap::new();
    for line in input.split(|b| *b == b'\n').take(64) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(name.clone(), v);
        }
    }
    headers
}

/// The token a response hands to the client, if any (cookie value or token header).
pub fn issued_token(manager: &Manager, headers: &SessionHeaders) -> Option<String> {
    if let Some(line) = headers.set_cookie() {
        let line = line.to_str().expect("Set-Cookie is visible ASCII");
        let first = line.split(';').next().unwrap_or("");
        let (name, value) = first.split_once('=').expect("Set-Cookie has name=value");
        assert_eq!(name, manager.cookie_name(), "cookie name");
        return Some(value.to_owned());
    }
    let name = match &manager.config().transport {
        Transport::Header(name) => name.clone(),
        Transport::Bearer { response_header } => response_header.clone(),
        _ => return None,
    };
    headers
        .iter()
        .find(|(n, _)| **n == name)
        .map(|(_, v)| v.to_str().expect("token header is ASCII").to_owned())
}

/// How the client sends `token` back on the manager's transport.
pub fn present(manager: &Manager, token: &str) -> HeaderMap {
    let transport = &manager.config().transport;
    let value = match transport {
        Transport::Bearer { .. } => format!("Bearer {token}"),
        Transport::Header(_) => token.to_owned(),
        _ => format!("{}={token}", manager.cookie_name()),
    };
    headers_from(transport, value.as_bytes())
}

/// Creates a stored session holding `n = 1` through the public request cycle and returns the
/// token the client got for it.
pub async fn new_session(manager: &Manager) -> String {
    let session = manager.start(&HeaderMap::new());
    session.insert("n", 1u64).await.expect("insert");
    let headers = manager.finish(&session).await.expect("finish");
    issued_token(manager, &headers).expect("a new session hands out a token")
}

/// A fresh in-memory store.
pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// Runs a request's worth of session calls chosen by the bits of `ops`, ending with `finish`.
/// Errors from the session API are fine (they are answers); panics are not. A failed CSRF check
/// must have been reported. Call [`start_logs`] first. Returns the response headers.
pub async fn exercise(
    manager: &Manager,
    session: &Session,
    ops: u8,
    csrf_candidate: &str,
) -> SessionHeaders {
    let _ = session.get::<u64>("n").await;
    if ops & 1 != 0 {
        let _ = session
            .update("n", |n: Option<u64>| n.unwrap_or(0).wrapping_add(1))
            .await;
    }
    if ops & 2 != 0 {
        let _ = session.csrf_token().await;
    }
    if ops & 4 != 0 {
        if let Ok(false) = session.verify_csrf(csrf_candidate).await {
            assert!(logs().contains("csrf_failure"), "CSRF failure not reported");
        }
    }
    if ops & 8 != 0 {
        let _ = session.set_user(Some("fuzz"), "password").await;
    }
    if ops & 16 != 0 {
        let _ = session.cycle_id().await;
    }
    if ops & 32 != 0 {
        let _ = session.remove("n").await;
    }
    if ops & 64 != 0 {
        let _ = session.destroy().await;
    }
    let _ = session.is_new().await;
    let _ = session.auth_info().await;
    manager
        .finish(session)
        .await
        .expect("the memory store does not fail")
}
