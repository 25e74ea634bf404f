//! The demo web app behind `sessionkit serve`: a visit counter, login/logout, "who am I", and
//! the user's active sessions, all on one [`Manager`]. Its HTTP contract is written down in
//! `docs/HTTP.md` at the repository root (the tests depend on it): every response of a session
//! carries `X-CSRF-Token`, refusals included; a POST without the matching token (form field
//! `csrf_token` or header `X-CSRF-Token`) is refused with 403; probes and 404s are outside the
//! session layer and never create a session.

use axum::body::{to_bytes, Body};
use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sessionkit::{FlashLevel, Manager, Session, SessionLayer};

/// Largest POST body the demo reads (forms here are tiny).
const MAX_FORM: usize = 16 * 1024;

/// Settings of the demo beyond the manager's.
#[derive(Clone, Copy, Debug, Default)]
pub struct DemoOptions {
    /// Take the client's address from the last `X-Forwarded-For` entry, the one the proxy in
    /// front appended (behind a proxy that sets it); otherwise the peer address is used and
    /// the header ignored, since any client can send it.
    pub trust_forwarded_for: bool,
}

/// The demo app's routes, wrapped in the session layer, with default options.
pub fn app(manager: Manager) -> Router {
    app_with(manager, DemoOptions::default())
}

/// The demo app with `options`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the devices page can show the
/// client's network.
pub fn app_with(manager: Manager, options: DemoOptions) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/count", get(count))
        .route("/whoami", get(whoami))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions_json))
        .route("/devices", get(devices_page))
        .route("/sessions/revoke", post(revoke_one))
        .route("/sessions/revoke-others", post(revoke_others))
        .layer(middleware::from_fn(csrf))
        .layer(SessionLayer::new(manager.clone()))
        .layer(axum::Extension(options))
        // Added after the layers, so outside them: probes, scanners and typos never load or
        // create a session.
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(manager)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Checks the CSRF token of every POST and adds `X-CSRF-Token` to every response, refusals
/// (403, 413) included: a client refused for a missing token learns the right one.
async fn csrf(session: Session, req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::POST {
        match check_csrf(&session, req).await {
            Ok(req) => next.run(req).await,
            Err(resp) => resp,
        }
    } else {
        next.run(req).await
    };
    // A wrong method on a real route (a probe's GET /login) is as good as a 404: it must not
    // mint a token, which would store a session.
    let refused = matches!(
        resp.status(),
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND
    );
    // A store failure here is reported by the session layer (503); the header is just omitted.
    if !refused {
        if let Ok(token) = csrf_for_page(&session).await {
            if let Ok(v) = HeaderValue::from_str(&token) {
                if !token.is_empty() {
                    resp.headers_mut().insert("x-csrf-token", v);
                }
            }
        }
    }
    resp
}

/// The CSRF token for a page's forms.
async fn csrf_for_page(session: &Session) -> Result<String, sessionkit::Error> {
    session.csrf_token().await
}

async fn check_csrf(session: &Session, req: Request) -> Result<Request, Response> {
    let header_token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let form_token = form_urlencoded_field(&bytes, "csrf_token");
    let candidate = header_token.or(form_token).unwrap_or_default();
    match session.verify_csrf(&candidate).await {
        Ok(true) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(false) => Err((StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response()),
        Err(e) => Err(e.into_response()),
    }
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn count(session: Session) -> Result<String, sessionkit::Error> {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{n}\n"))
}

async fn whoami(session: Session) -> Result<String, sessionkit::Error> {
    Ok(session.user().await?.unwrap_or_default())
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
}

/// What the devices page shows of a client: the browser and system its User-Agent names, and
/// its coarse network.
struct Client {
    label: Option<String>,
    network: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let trust = parts
            .extensions
            .get::<DemoOptions>()
            .is_some_and(|o| o.trust_forwarded_for);
        let forwarded = trust
            .then(|| parts.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            // The last entry is the one the trusted proxy added; those before it are whatever
            // the client sent.
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        Ok(Client {
            label: ua.and_then(device_label),
            network: forwarded.or(peer).map(network_of),
        })
    }
}

/// "Firefox on Linux" from a User-Agent, or `None` when it names no known browser.
fn device_label(ua: &str) -> Option<String> {
    let r = woothee::parser::Parser::new().parse(ua)?;
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    match (known(r.name), known(r.os)) {
        (true, true) => Some(format!("{} on {}", r.name, r.os)),
        (true, false) => Some(r.name.to_owned()),
        (false, true) => Some(format!("a browser on {}", r.os)),
        (false, false) => None,
    }
}

/// The /24 (IPv4) or /48 (IPv6) a client is in: enough to recognise "my home network",
/// not a tracking identifier.
fn network_of(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

async fn login(session: Session, client: Client, Form(form): Form<LoginForm>) -> Response {
    let name = form.username.trim();
    if !valid_username(name) {
        return (
            StatusCode::BAD_REQUEST,
            "username: 1 to 64 characters, visible, without control, format or separator \
             characters (spaces inside are fine)",
        )
            .into_response();
    }
    // set_user also gives the session a new ID (privilege change).
    let signed_in = async {
        session.set_user(Some(name), "demo").await?;
        session
            .set_device(client.label.as_deref(), client.network.as_deref())
            .await?;
        session
            .flash(FlashLevel::Success, format!("Signed in as {name}"))
            .await
    };
    match signed_in.await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => e.into_response(),
    }
}

/// A name shown to other people must look like what it is: no control characters, no
/// invisible format characters (zero-width, bidi overrides that reverse what follows), no line
/// or paragraph separators and no space other than U+0020, and at least one visible character.
fn valid_username(name: &str) -> bool {
    let count = name.chars().count();
    (1..=64).contains(&count)
        && name.chars().any(|c| !c.is_whitespace())
        && name.chars().all(|c| {
            !c.is_control() && !is_format(c) && !is_invisible(c) && (c == ' ' || !c.is_whitespace())
        })
}

/// Characters that draw nothing but are not format characters: the Hangul fillers (letters),
/// the variation selectors and the combining grapheme joiner (marks). "admin" followed by one
/// of them looks like "admin".
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x034F | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180D | 0x3164 | 0xFE00..=0xFE0F
        | 0xFFA0 | 0xE0100..=0xE01EF)
}

/// Unicode general category Cf (format), per Unicode 15.1: invisible characters that change
/// how the text around them is shown.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

async fn logout(session: Session) -> Response {
    match session.destroy().await {
        // The session is gone, so the message cannot wait in it: the redirect carries it.
        Ok(()) => Redirect::to("/?signed-out").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn healthz(State(manager): State<Manager>) -> Response {
    match manager.ping().await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => {
            // The details are for the operator's log, not for whoever probes the port.
            tracing::warn!(error = %e, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

#[derive(serde::Serialize)]
struct SessionView {
    handle: String,
    created: i64,
    last_seen: i64,
    current: bool,
    device: Option<String>,
}

async fn sessions_json(State(manager): State<Manager>, session: Session) -> Response {
    let user = match session.user().await {
        Ok(Some(u)) => u,
        Ok(None) => return (StatusCode::UNAUTHORIZED, "log in first").into_response(),
        Err(e) => return e.into_response(),
    };
    match manager.sessions_of(&user, Some(&session)).await {
        Ok(list) => Json(
            list.into_iter()
                .map(|s| SessionView {
                    handle: s.handle,
                    created: s.created,
                    last_seen: s.last_seen,
                    current: s.current,
                    device: s.device,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    handle: String,
}

async fn revoke_one(
    State(manager): State<Manager>,
    session: Session,
    Form(form): Form<RevokeForm>,
) -> Response {
    match session.user().await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::UNAUTHORIZED, "log in first").into_response(),
        Err(e) => return e.into_response(),
    };
    match manager.revoke(&session, &form.handle).await {
        Ok(true) => Redirect::to("/devices").into_response(),
        // Say so rather than pretend: the page the user saw may be stale.
        Ok(false) => (StatusCode::NOT_FOUND, "no such session\n").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_others(State(manager): State<Manager>, session: Session) -> Response {
    match session.user().await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::UNAUTHORIZED, "log in first").into_response(),
        Err(e) => return e.into_response(),
    };
    match manager.revoke_all_except(&session).await {
        Ok(n) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/devices")],
            format!("ended {n} other sessions\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · sessionkit demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.4rem; }} .card {{ border: 1px solid #ddd; border-radius: 8px; padding: 1rem; margin: 1rem 0; }}
button {{ padding: .4rem .9rem; border-radius: 6px; border: 1px solid #888; background: #f4f4f4; cursor: pointer; }}
input {{ padding: .4rem; border-radius: 6px; border: 1px solid #aaa; }} table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .3rem; border-bottom: 1px solid #eee; }} nav a {{ margin-right: 1rem; }}
.flash {{ padding: .5rem .8rem; border-radius: 6px; background: #eef6ee; }} .flash.info {{ background: #eef2f8; }}
</style></head>
<body><nav><a href="/">Home</a><a href="/devices">Your sessions</a></nav>
<h1>{title}</h1>
{body}
</body></html>"#
    ))
}

async fn home(
    session: Session,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Html<String>, sessionkit::Error> {
    let mut notes = String::new();
    for f in session.take_flashes().await? {
        let level = match f.level {
            FlashLevel::Info => "info",
            FlashLevel::Success => "success",
            FlashLevel::Warning => "warning",
            FlashLevel::Error => "error",
        };
        notes.push_str(&format!(
            "<p class=\"flash {level}\" role=\"status\">{}</p>\n",
            escape(&f.text)
        ));
    }
    if query.as_deref() == Some("signed-out") {
        notes.push_str("<p class=\"flash info\" role=\"status\">Signed out</p>\n");
    }
    let count: u64 = session.get("count").await?.unwrap_or(0);
    let token = escape(&csrf_for_page(&session).await?);
    let user = session.user().await?;
    let who = match &user {
        Some(u) => format!(
            r#"<p>Signed in as <strong id="user">{}</strong>.</p>
<form method="post" action="/logout"><input type="hidden" name="csrf_token" value="{token}">
<button id="logout">Log out</button></form>"#,
            escape(u)
        ),
        None => format!(
            r#"<p id="user-anon">You are not signed in.</p>
<form method="post" action="/login"><input type="hidden" name="csrf_token" value="{token}">
<label>Name <input name="username" id="username" required maxlength="64"></label>
<button id="login">Log in</button></form>"#
        ),
    };
    Ok(page(
        "sessionkit demo",
        &format!(
            r#"{notes}<div class="card"><p>Visits counted in this session: <strong id="count">{count}</strong></p>
<p><a href="/count" id="count-link">Count a visit</a> (plain text)</p></div>
<div class="card">{who}</div>"#
        ),
    ))
}

async fn devices_page(State(manager): State<Manager>, session: Session) -> Response {
    let result = async {
        let token = escape(&csrf_for_page(&session).await?);
        let Some(user) = session.user().await? else {
            return Ok(page("Your sessions", "<p>Log in to see your sessions.</p>"));
        };
        let mut rows = String::new();
        for s in manager.sessions_of(&user, Some(&session)).await? {
            let action = if s.current {
                "this session".to_owned()
            } else {
                format!(
                    r#"<form method="post" action="/sessions/revoke"><input type="hidden" name="csrf_token" value="{token}">
<input type="hidden" name="handle" value="{}"><button>End</button></form>"#,
                    escape(&s.handle)
                )
            };
            rows.push_str(&format!(
                "<tr class=\"session\"><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>\n",
                escape(&match (&s.device, &s.ip_prefix) {
                    (Some(d), Some(n)) => format!("{d} · {n}"),
                    (Some(d), None) => d.clone(),
                    (None, Some(n)) => format!("unknown device · {n}"),
                    (None, None) => "unknown device".to_owned(),
                }),
                fmt_time(s.created),
                fmt_time(s.last_seen),
            ));
        }
        Ok::<_, sessionkit::Error>(page(
            "Your sessions",
            &format!(
                r#"<table><tr><th>Device</th><th>Started</th><th>Last seen</th><th></th></tr>
{rows}</table>
<form method="post" action="/sessions/revoke-others"><input type="hidden" name="csrf_token" value="{token}">
<button id="revoke-others">End all other sessions</button></form>"#
            ),
        ))
    }
    .await;
    match result {
        Ok(html) => html.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix milliseconds (civil-from-days, no date crate needed).
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_764_000_000_000), "2025-11-24 16:00:00 UTC");
    }

    #[test]
    fn usernames_must_look_like_what_they_are() {
        let long_but_ok = "é".repeat(64);
        for ok in [
            "frank",
            "Zoë",
            "Ana María",
            "李小龙",
            "o'brien",
            &long_but_ok,
        ] {
            assert!(valid_username(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "\u{200B}",
            "ad\u{200B}min",
            "\u{202E}nimda",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\u{00A0}b",
            "a\u{3000}b",
            "\u{FEFF}x",
            "a\tb",
            "a\u{7f}",
            "\u{3164}",
            "admin\u{FE0F}",
            "ad\u{034F}min",
            &"x".repeat(65),
            &"é".repeat(65),
        ] {
            assert!(!valid_username(bad), "{bad:?}");
        }
    }

    #[test]
    fn devices_are_labelled_by_browser_system_and_network() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device_label(firefox).as_deref(), Some("Firefox on Linux"));
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        assert!(device_label(chrome)
            .unwrap()
            .starts_with("Chrome on Windows"));
        assert_eq!(device_label("curl-ish nonsense"), None);
        assert_eq!(
            network_of("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            network_of("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::/48"
        );
        assert_eq!(
            network_of("::ffff:198.51.100.9".parse().unwrap()),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn reads_form_fields() {
        assert_eq!(
            form_urlencoded_field(b"a=1&csrf_token=x%2By&b=2", "csrf_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(form_urlencoded_field(b"\xff", "csrf_token"), None);
        assert_eq!(
            form_urlencoded_field(b"csrf_token", "csrf_token").as_deref(),
            Some("")
        );
    }
}
