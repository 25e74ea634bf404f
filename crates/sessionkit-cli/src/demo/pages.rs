//! The demo's pages, written once for both frameworks: what every route answers, the CSRF rule
//! of every POST and the headers of every session response. The adapters (`super::axum`,
//! `super::actix`) only turn requests into these functions' arguments and [`Reply`]s into
//! responses; session errors are returned as they are, for the library's own error responses
//! of each framework.

use std::net::IpAddr;

use sessionkit::{FlashLevel, Manager, Session};

/// Largest POST body the demo reads (forms here are tiny).
pub const MAX_FORM: usize = 16 * 1024;

/// A page's outcome result: a reply, or a session error for the framework's error response.
pub type PageResult = Result<Reply, sessionkit::Error>;

/// A framework-neutral response: status, content type, body, and the `Location` of a redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` (every reply has a body, if only an empty one).
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The `Location` header of a redirect.
    pub location: Option<&'static str>,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    /// A plain-text reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.into(),
            location: None,
        }
    }

    /// A 200 HTML page.
    fn html(body: String) -> Self {
        Self {
            content_type: "text/html; charset=utf-8",
            ..Self::text(200, body)
        }
    }

    /// A 200 JSON document.
    fn json(body: String) -> Self {
        Self {
            content_type: "application/json",
            ..Self::text(200, body)
        }
    }

    /// 303 See Other to `location`, with `body` as its text.
    fn see_other(location: &'static str, body: impl Into<String>) -> Self {
        Self {
            location: Some(location),
            ..Self::text(303, body)
        }
    }

    /// The Prometheus text exposition of `/metrics`.
    pub fn metrics(text: String) -> Self {
        Self {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Self::text(200, text)
        }
    }
}

/// 404 for anything that is not a page (outside the session layer).
pub fn not_found() -> Reply {
    Reply::text(404, "not found\n")
}

/// 413 for a POST body over [`MAX_FORM`] (the session's headers still follow).
pub fn too_large() -> Reply {
    Reply::text(413, "form too large")
}

/// What a POST needs before its handler runs: the token from the `X-CSRF-Token` header or the
/// form's `csrf_token` field must match the session's. `None` to go on, or the refusal (403).
pub async fn refuse_without_csrf(
    session: &Session,
    header_token: Option<&str>,
    body: &[u8],
) -> Result<Option<Reply>, sessionkit::Error> {
    let form_token = form_urlencoded_field(body, "csrf_token");
    let candidate = header_token
        .map(str::to_owned)
        .or(form_token)
        .unwrap_or_default();
    Ok((!session.verify_csrf(&candidate).await?)
        .then(|| Reply::text(403, "missing or wrong CSRF token")))
}

/// The header every response of a session carries besides the library's, given its status:
/// `X-CSRF-Token` (refusals included, so a client refused for a missing token learns the right
/// one).
pub async fn session_header(session: &Session, status: u16) -> Option<(&'static str, String)> {
    // A wrong method on a real route (a probe's GET /login) is as good as a 404: it must not
    // mint a token, which would store a session.
    if matches!(status, 404 | 405) {
        return None;
    }
    // A store failure here is reported by the session layer (503); the header is just omitted.
    let token = csrf_for_page(session).await.ok()?;
    (!token.is_empty()).then_some(("x-csrf-token", token))
}

/// The CSRF token for a page's forms.
async fn csrf_for_page(session: &Session) -> Result<String, sessionkit::Error> {
    session.csrf_token().await
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A POST's form, as a form extractor reads it: `application/x-www-form-urlencoded` (else
/// 415) with every field in `names` (else 422), in that order.
pub fn form_fields<const N: usize>(
    content_type: Option<&str>,
    body: &[u8],
    names: [&str; N],
) -> Result<[String; N], Reply> {
    let is_form = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Reply::text(
            415,
            "Expected request with `Content-Type: application/x-www-form-urlencoded`",
        ));
    }
    let mut fields = names.map(|_| None);
    for (key, value) in form_urlencoded::parse(body) {
        if let Some(i) = names.iter().position(|n| *n == key) {
            fields[i].get_or_insert_with(|| value.into_owned());
        }
    }
    if let Some(i) = fields.iter().position(Option::is_none) {
        return Err(Reply::text(
            422,
            format!(
                "Failed to deserialize form body: missing field `{}`",
                names[i]
            ),
        ));
    }
    Ok(fields.map(Option::unwrap_or_default))
}

/// `GET /count`.
pub async fn count(session: &Session) -> PageResult {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(Reply::text(200, format!("{n}\n")))
}

/// `GET /whoami`.
pub async fn whoami(session: &Session) -> PageResult {
    Ok(Reply::text(200, session.user().await?.unwrap_or_default()))
}

/// What the devices page shows of a client: the browser and system its User-Agent names, and
/// its coarse network.
pub struct Client {
    label: Option<String>,
    network: Option<String>,
}

impl Client {
    /// From the request: its `X-Forwarded-For` header (used only when `trust_forwarded_for`),
    /// the peer address of its connection and its `User-Agent`.
    pub fn new(
        trust_forwarded_for: bool,
        forwarded_for: Option<&str>,
        peer: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Self {
        let forwarded = forwarded_for
            .filter(|_| trust_forwarded_for)
            // The last entry is the one the trusted proxy added; those before it are whatever
            // the client sent.
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        Client {
            label: user_agent.and_then(device_label),
            network: forwarded.or(peer).map(network_of),
        }
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
fn network_of(ip: IpAddr) -> String {
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

/// `POST /login` with the form's `username`.
pub async fn login(session: &Session, client: &Client, username: &str) -> PageResult {
    let name = username.trim();
    if !valid_username(name) {
        return Ok(Reply::text(
            400,
            "username: 1 to 64 characters, visible, without control, format or separator \
             characters (spaces inside are fine)",
        ));
    }
    // set_user also gives the session a new ID (privilege change).
    session.set_user(Some(name), "demo").await?;
    // With `serve --dbsc`: ask the browser to bind the new session to a key on its device
    // (a no-op otherwise; browsers without DBSC ignore the header).
    session.bind_device().await?;
    session
        .set_device(client.label.as_deref(), client.network.as_deref())
        .await?;
    session
        .flash(FlashLevel::Success, format!("Signed in as {name}"))
        .await?;
    Ok(Reply::see_other("/", ""))
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

/// `POST /logout`.
pub async fn logout(session: &Session) -> PageResult {
    session.destroy().await?;
    // The session is gone, so the message cannot wait in it: the redirect carries it.
    Ok(Reply::see_other("/?signed-out", ""))
}

/// `GET /healthz` (outside the session layer).
pub async fn healthz(manager: &Manager) -> Reply {
    match manager.ping().await {
        Ok(()) => Reply::text(200, "ok\n"),
        Err(e) => {
            // The details are for the operator's log, not for whoever probes the port.
            tracing::warn!(error = %e, "health check: store unavailable");
            Reply::text(503, "store unavailable\n")
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

/// The signed-in user, or the 401 reply for a page that needs one.
async fn signed_in(session: &Session) -> Result<Result<String, Reply>, sessionkit::Error> {
    Ok(session
        .user()
        .await?
        .ok_or_else(|| Reply::text(401, "log in first")))
}

/// `GET /sessions`: the user's live sessions as JSON.
pub async fn sessions_json(manager: &Manager, session: &Session) -> PageResult {
    let user = match signed_in(session).await? {
        Ok(user) => user,
        Err(refused) => return Ok(refused),
    };
    let list: Vec<SessionView> = manager
        .sessions_of(&user, Some(session))
        .await?
        .into_iter()
        .map(|s| SessionView {
            handle: s.handle,
            created: s.created,
            last_seen: s.last_seen,
            current: s.current,
            device: s.device,
        })
        .collect();
    // A list of plain values always serialises.
    Ok(Reply::json(
        serde_json::to_string(&list).unwrap_or_default(),
    ))
}

/// `POST /sessions/revoke` with the form's `handle`.
pub async fn revoke_one(manager: &Manager, session: &Session, handle: &str) -> PageResult {
    if let Err(refused) = signed_in(session).await? {
        return Ok(refused);
    }
    Ok(if manager.revoke(session, handle).await? {
        Reply::see_other("/devices", "")
    } else {
        // Say so rather than pretend: the page the user saw may be stale.
        Reply::text(404, "no such session\n")
    })
}

/// `POST /sessions/revoke-others`.
pub async fn revoke_others(manager: &Manager, session: &Session) -> PageResult {
    if let Err(refused) = signed_in(session).await? {
        return Ok(refused);
    }
    let n = manager.revoke_all_except(session).await?;
    Ok(Reply::see_other(
        "/devices",
        format!("ended {n} other sessions\n"),
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Reply {
    Reply::html(format!(
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

/// `GET /` with the request's raw query (`signed-out` after a logout).
pub async fn home(session: &Session, query: Option<&str>) -> PageResult {
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
    if query == Some("signed-out") {
        notes.push_str("<p class=\"flash info\" role=\"status\">Signed out</p>\n");
    }
    let count: u64 = session.get("count").await?.unwrap_or(0);
    let token = escape(&csrf_for_page(session).await?);
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

/// `GET /devices`: the sessions list as a page with "End" buttons.
pub async fn devices(manager: &Manager, session: &Session) -> PageResult {
    let token = escape(&csrf_for_page(session).await?);
    let Some(user) = session.user().await? else {
        return Ok(page("Your sessions", "<p>Log in to see your sessions.</p>"));
    };
    let mut rows = String::new();
    for s in manager.sessions_of(&user, Some(session)).await? {
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
    Ok(page(
        "Your sessions",
        &format!(
            r#"<table><tr><th>Device</th><th>Started</th><th>Last seen</th><th></th></tr>
{rows}</table>
<form method="post" action="/sessions/revoke-others"><input type="hidden" name="csrf_token" value="{token}">
<button id="revoke-others">End all other sessions</button></form>"#
        ),
    ))
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
