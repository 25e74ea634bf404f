//! The token codec: reading the session token from request headers, signing it, and writing
//! the response headers that hand it out or take it back.
//!
//! Built from [`Config`] alone (transport, cookie attributes, signing keys), so it knows nothing
//! of stores or sessions. Parsing works on raw header bytes (a non-UTF-8 or oversized header is
//! just "no session") and never allocates per cookie. Exactly one `Set-Cookie` is produced per
//! response, and the removal cookie repeats the original's `Path`, `Domain`, `Secure` and
//! `SameSite`, or browsers would keep the old one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, CookieConfig, SameSite, SigningKey, Transport};
use crate::id::{SessionId, ID_LEN};
use crate::record::{now_millis, Millis};

/// Response headers produced by [`Manager::finish`](crate::Manager::finish): at most one
/// `Set-Cookie` (or token header), plus `Cache-Control: no-store` whenever a token is sent or
/// the response may show a stored session's data, so no shared cache keeps either, and then
/// `Vary` on the header that carries the token, so no cache answers one visitor with another's
/// page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionHeaders {
    // Fields rather than a vector: a response needs no allocation for three headers.
    /// The token header.
    token: Option<(HeaderName, HeaderValue)>,
    /// The header the token arrives in, when the response depends on the session.
    vary: Option<HeaderName>,
    /// One more header the session asks for (a DBSC registration).
    extra: Option<(HeaderName, HeaderValue)>,
}

static CACHE_CONTROL_NAME: HeaderName = CACHE_CONTROL;
static VARY_NAME: HeaderName = VARY;
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

impl SessionHeaders {
    /// True if there is nothing to add.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.vary.is_none() && self.extra.is_none()
    }

    /// True if the response depends on the session (it must not be cached or shared).
    pub fn is_private(&self) -> bool {
        !self.is_empty()
    }

    /// The headers to add.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let token = self.token.iter().map(|(n, v)| (n, v));
        let no_store = (!self.is_empty()).then_some((&CACHE_CONTROL_NAME, &NO_STORE));
        let vary = self
            .vary
            .as_ref()
            .map(|name| (&VARY_NAME, Self::vary_value(name)));
        let extra = self.extra.iter().map(|(n, v)| (n, v));
        token.chain(no_store).chain(vary).chain(extra)
    }

    /// Adds one more header (a DBSC registration) to the session's.
    #[cfg(feature = "dbsc")]
    pub(crate) fn with_extra(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.extra = Some((name, value));
        self
    }

    /// The `Vary` value for a token header (the common ones are static).
    fn vary_value(name: &HeaderName) -> &'static HeaderValue {
        static COOKIE_V: HeaderValue = HeaderValue::from_static("cookie");
        static AUTHORIZATION_V: HeaderValue = HeaderValue::from_static("authorization");
        if name == COOKIE {
            &COOKIE_V
        } else if name == AUTHORIZATION {
            &AUTHORIZATION_V
        } else {
            // A custom transport header: rare; `*` is the safe over-approximation.
            static ANY: HeaderValue = HeaderValue::from_static("*");
            &ANY
        }
    }

    /// The `Set-Cookie` value, if any.
    pub fn set_cookie(&self) -> Option<&HeaderValue> {
        self.token
            .as_ref()
            .filter(|(n, _)| n == SET_COOKIE)
            .map(|(_, v)| v)
    }

    /// Adds the headers to a response's header map (`Cache-Control` replaces the app's: a
    /// session-dependent page must not be stored, whatever the handler said).
    pub fn apply_to(self, headers: &mut HeaderMap) {
        crate::http::apply(&self, headers);
    }
}

/// Reads, verifies and issues tokens under one configuration.
#[derive(Clone, Debug)]
pub(crate) struct TokenCodec {
    /// The cookie name as sent (with `__Host-` when enabled), computed once.
    cookie_name: String,
    cookie: CookieConfig,
    transport: Transport,
    signing_keys: Vec<SigningKey>,
}

impl TokenCodec {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            cookie_name: config.cookie_name(),
            cookie: config.cookie.clone(),
            transport: config.transport.clone(),
            signing_keys: config.signing_keys.clone(),
        }
    }

    /// The cookie name as sent.
    pub(crate) fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The first syntactically valid token the request carries, and whether it carried any value
    /// under the session's name at all.
    pub(crate) fn read(&self, headers: &HeaderMap) -> (Option<SessionId>, bool) {
        let (id, seen, bad) = self.scan_token(headers);
        // Reported once per request: a request stuffed with thousands of forged cookies must not
        // turn into thousands of log lines.
        report_bad_signatures(bad);
        (id, seen)
    }

    /// [`TokenCodec::read`] without the report; the third value counts tokens whose signature failed.
    fn scan_token(&self, headers: &HeaderMap) -> (Option<SessionId>, bool, u32) {
        let mut bad = 0;
        match &self.transport {
            Transport::Cookie => {
                let name = self.cookie_name().as_bytes();
                let mut seen = false;
                for header in headers.get_all(COOKIE) {
                    for pair in header.as_bytes().split(|b| *b == b';') {
                        let pair = trim(pair);
                        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                            continue;
                        };
                        if trim(&pair[..eq]) != name {
                            continue;
                        }
                        seen = true;
                        let mut value = trim(&pair[eq + 1..]);
                        if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                            value = &value[1..value.len() - 1];
                        }
                        if let Some(id) = self.verify_token(value, &mut bad) {
                            return (Some(id), true, bad);
                        }
                    }
                }
                (None, seen, bad)
            }
            Transport::Header(name) => match headers.get(name) {
                Some(v) => (self.verify_token(trim(v.as_bytes()), &mut bad), true, bad),
                None => (None, false, bad),
            },
            Transport::Bearer { .. } => match headers.get(AUTHORIZATION) {
                Some(v) => {
                    let v = trim(v.as_bytes());
                    let token = v
                        .get(..7)
                        .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
                        .map(|_| trim(&v[7..]));
                    let id = token.and_then(|t| self.verify_token(t, &mut bad));
                    (id, token.is_some(), bad)
                }
                None => (None, false, bad),
            },
        }
    }

    /// The token a client holds: the ID, or `<id>.<mac>` when signing keys are configured.
    #[cfg(test)]
    fn encode_token(&self, id: &SessionId) -> String {
        self.token_into(id, &mut [0; TOKEN_MAX + 1]).to_owned()
    }

    /// The token a client holds (the ID, or `<id>.<mac>` when signing keys are configured), written
    /// into a stack buffer: the per-response path allocates only the header value.
    fn token_into<'a>(&self, id: &SessionId, buf: &'a mut [u8; TOKEN_MAX + 1]) -> &'a str {
        let mut text = [0u8; ID_LEN + 1];
        let text = id.encode_into(&mut text).as_bytes();
        buf[..ID_LEN].copy_from_slice(text);
        let len = match self.signing_keys.first() {
            None => ID_LEN,
            Some(key) => {
                let mut mac =
                    HmacSha256::new_from_slice(key.bytes()).expect("HMAC takes any key size");
                mac.update(text);
                buf[ID_LEN] = b'.';
                let n = URL_SAFE_NO_PAD
                    .encode_slice(mac.finalize().into_bytes(), &mut buf[ID_LEN + 1..])
                    .expect("a 32-byte tag is 43 characters");
                ID_LEN + 1 + n
            }
        };
        std::str::from_utf8(&buf[..len]).expect("base64url and '.' are ASCII")
    }

    /// One token on its own, outside a request (tools, tests): nothing is logged.
    pub(crate) fn decode(&self, token: &[u8]) -> Option<SessionId> {
        self.verify_token(token, &mut 0)
    }

    /// Parses a token strictly; with signing keys, the MAC must verify under one of them (checked
    /// in constant time) before the ID is believed, so forged tokens never reach the store. A
    /// rejected signature bumps `bad` (the caller reports the count once per request).
    fn verify_token(&self, token: &[u8], bad: &mut u32) -> Option<SessionId> {
        let keys = &self.signing_keys;
        if keys.is_empty() {
            return SessionId::parse_bytes(token);
        }
        let mut tampered = || {
            *bad = bad.saturating_add(1);
            None
        };
        if token.len() != TOKEN_MAX || token[ID_LEN] != b'.' {
            return tampered();
        }
        let (id_text, tag_text) = (&token[..ID_LEN], &token[ID_LEN + 1..]);
        let mut tag = [0u8; 33];
        let Ok(32) = URL_SAFE_NO_PAD.decode_slice(tag_text, &mut tag) else {
            return tampered();
        };
        let verified = keys.iter().any(|key| {
            let mut mac = HmacSha256::new_from_slice(key.bytes()).expect("HMAC takes any key size");
            mac.update(id_text);
            mac.verify_slice(&tag[..32]).is_ok()
        });
        if !verified {
            return tampered();
        }
        SessionId::parse_bytes(id_text)
    }

    /// Headers that hand `id` to the client.
    pub(crate) fn issue(&self, id: &SessionId, absolute_expires_at: Millis) -> SessionHeaders {
        let mut buf = [0; TOKEN_MAX + 1];
        let token = self.token_into(id, &mut buf);
        let header = match &self.transport {
            Transport::Cookie => {
                let max_age = self
                    .cookie
                    .persistent
                    .then(|| ((absolute_expires_at - now_millis()) / 1000).max(1));
                (SET_COOKIE, self.cookie_line(token, max_age))
            }
            Transport::Header(name) => (name.clone(), token.to_owned()),
            Transport::Bearer { response_header } => (response_header.clone(), token.to_owned()),
        };
        with_no_store(header)
    }

    /// Marks `headers` as belonging to a response that depends on the session.
    pub(crate) fn private(&self, mut headers: SessionHeaders) -> SessionHeaders {
        headers.vary = Some(match &self.transport {
            Transport::Cookie => COOKIE,
            Transport::Header(name) => name.clone(),
            Transport::Bearer { .. } => AUTHORIZATION,
        });
        headers
    }

    /// Headers that tell the client to forget its token.
    pub(crate) fn removal(&self) -> SessionHeaders {
        let header = match &self.transport {
            Transport::Cookie => (SET_COOKIE, self.cookie_line("", Some(0))),
            Transport::Header(name) => (name.clone(), String::new()),
            Transport::Bearer { response_header } => (response_header.clone(), String::new()),
        };
        with_no_store(header)
    }

    fn cookie_line(&self, value: &str, max_age: Option<i64>) -> String {
        let c = &self.cookie;
        // Plain appends: `write!` goes through the formatting machinery, which cost about half of
        // this function on every new session.
        let mut s = String::with_capacity(128);
        for part in [self.cookie_name(), "=", value, "; Path=", &c.path] {
            s.push_str(part);
        }
        if let Some(d) = &c.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(age) = max_age {
            s.push_str("; Max-Age=");
            push_int(&mut s, age);
            if age == 0 {
                s.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
            }
        }
        s.push_str("; HttpOnly");
        if c.secure {
            s.push_str("; Secure");
        }
        s.push_str(match c.same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        s
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Longest token: 43 characters of ID, a dot and 43 of MAC tag.
const TOKEN_MAX: usize = ID_LEN + 1 + 43;

fn report_bad_signatures(count: u32) {
    if count > 0 {
        tracing::warn!(target: "sessionkit::suspicious", event = "bad_signature", count,
            "session token with a missing or invalid signature");
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn with_no_store((name, value): (HeaderName, String)) -> SessionHeaders {
    // Values are built from validated config and base64url tokens: always valid header bytes.
    // Handing over the string's buffer (as `Bytes`) checks it without copying it.
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        .expect("cookie line is visible ASCII");
    SessionHeaders {
        token: Some((name, value)),
        vary: None,
        extra: None,
    }
}

/// Appends the decimal form of `n`.
fn push_int(s: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(config: Config) -> TokenCodec {
        TokenCodec::new(&config)
    }

    fn headers(cookies: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let m = codec(Config::default());
        let id = SessionId::generate().unwrap();
        let line = format!("a=1; __Host-id=\"{id}\"; b=2");
        assert_eq!(
            m.read(&headers(&[line.as_bytes()])),
            (Some(id.clone()), true)
        );
        let line = format!("__Host-id=bogus; __Host-id={id}");
        assert_eq!(m.read(&headers(&[line.as_bytes()])), (Some(id), true));
        assert_eq!(m.read(&headers(&[b"__Host-id="])), (None, true));
        assert_eq!(m.read(&headers(&[b"id=1; __Host-idx=2"])), (None, false));
        assert_eq!(
            m.read(&headers(&[b"\xff\xfe=\x80; __Host-id=\xc3"])),
            (None, true)
        );
    }

    #[test]
    fn integers_print_as_display_does() {
        for n in [0, 1, 9, 10, 86_399, -1, -10, i64::MAX, i64::MIN] {
            let mut s = String::new();
            push_int(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn cookie_lines_carry_secure_defaults() {
        let mut config = Config::default();
        config.cookie.host_prefix = true;
        let m = codec(config);
        let id = SessionId::generate().unwrap();
        let h = m.issue(&id, now_millis() + 3_600_000);
        let line = h.set_cookie().unwrap().to_str().unwrap().to_owned();
        assert!(line.starts_with(&format!("__Host-id={id}; Path=/; Max-Age=")));
        assert!(line.ends_with("; HttpOnly; Secure; SameSite=Lax"));
        let gone = m.removal();
        let line = gone.set_cookie().unwrap().to_str().unwrap();
        assert!(line.starts_with("__Host-id=; Path=/; Max-Age=0; Expires="));
        assert!(line.ends_with("; HttpOnly; Secure; SameSite=Lax"));
        assert_eq!(gone.iter().count(), 2);
    }

    #[test]
    fn signed_tokens_verify_under_any_configured_key() {
        let old = crate::SigningKey::generate().unwrap();
        let new = crate::SigningKey::generate().unwrap();
        let signer_old = codec(Config {
            signing_keys: vec![old.clone()],
            ..Config::default()
        });
        let rotated = codec(Config {
            signing_keys: vec![new.clone(), old],
            ..Config::default()
        });
        let only_new = codec(Config {
            signing_keys: vec![new],
            ..Config::default()
        });
        let id = SessionId::generate().unwrap();
        let token = signer_old.encode_token(&id);
        assert_eq!(token.len(), 87);
        assert_eq!(signer_old.decode(token.as_bytes()), Some(id.clone()));
        assert_eq!(rotated.decode(token.as_bytes()), Some(id.clone()));
        assert_eq!(only_new.decode(token.as_bytes()), None);
        // Unsigned, truncated, or altered in either half: rejected.
        let bytes = token.as_bytes();
        assert_eq!(signer_old.decode(id.to_string().as_bytes()), None);
        assert_eq!(signer_old.decode(&bytes[..86]), None);
        for i in [0, 20, 42, 43, 50, 86] {
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(signer_old.decode(&b), None, "flip at {i}");
        }
    }

    #[test]
    fn forged_cookies_are_counted_for_one_report_per_request() {
        let m = codec(Config {
            signing_keys: vec![crate::SigningKey::generate().unwrap()],
            ..Config::default()
        });
        let forged = vec!["__Host-id=x"; 1000].join("; ");
        let good = m.encode_token(&SessionId::generate().unwrap());
        // `read_token` reports the count once; what matters is that every forged cookie is
        // counted, none is lost, and a verified token is not.
        assert_eq!(
            m.scan_token(&headers(&[forged.as_bytes()])),
            (None, true, 1000)
        );
        let mixed = format!("{forged}; __Host-id={good}");
        let (id, seen, bad) = m.scan_token(&headers(&[mixed.as_bytes()]));
        assert!(id.is_some() && seen);
        assert_eq!(bad, 1000);
        let alone = format!("__Host-id={good}");
        assert_eq!(m.scan_token(&headers(&[alone.as_bytes()])).2, 0);
    }

    #[test]
    fn bearer_and_header_transports() {
        let m = codec(Config {
            transport: Transport::Bearer {
                response_header: HeaderName::from_static("x-session-token"),
            },
            ..Config::default()
        });
        let id = SessionId::generate().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {id}")).unwrap(),
        );
        assert_eq!(m.read(&h), (Some(id), true));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(m.read(&h), (None, false));
    }
}
