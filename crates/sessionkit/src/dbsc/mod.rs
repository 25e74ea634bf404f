//! Device Bound Session Credentials (DBSC, feature `dbsc`): a session bound to a key pair the
//! browser keeps on its device, so that a copied session cookie alone stops working within
//! minutes.
//!
//! This follows the W3C WebAppSec editor's draft "Device Bound Session Credentials"
//! (`w3c/webappsec-dbsc`, `spec.bs` at commit `004d31c`, late 2026: the `Secure-Session-*`
//! header names, the `key` claim, `Sec-Secure-Session-Id`), which is what Chrome 145+ (Windows)
//! and 147+ (macOS) speak; the `Sec-Session-*` names of the first origin trial are not
//! supported. A proof's key is also accepted under `jwk`, the claim's name in earlier drafts.
//!
//! The flow, every step served by the session layers once [`Config::dbsc`] is set:
//!
//! 1. Sign-in: the app calls [`Session::bind_device`]; the response carries
//!    `Secure-Session-Registration: (ES256 RS256);path="/dbsc/register";challenge="…"`.
//! 2. The browser makes a key pair and POSTs a proof (a `dbsc+jwt` JWS over the challenge,
//!    with its public key as a JWK) in `Secure-Session-Response` to the registration path. The
//!    layer verifies it, stores the key and a fresh DBSC session identifier in the record, sets
//!    the short-lived bound cookie and answers with the session instructions JSON.
//! 3. From then on a request of the session needs the bound cookie as well as the session
//!    cookie; without a valid one it is refused with 401 (and the session cookie cleared).
//! 4. Before the bound cookie expires the browser POSTs to the refresh path with
//!    `Sec-Secure-Session-Id`; the layer answers 403 with a one-time `Secure-Session-Challenge`,
//!    the browser signs it, and the layer verifies the proof against the stored key, consumes
//!    the challenge (a compare-and-set save, so a replay loses) and sets a new bound cookie.
//!
//! Modules: `jwt` (the proof: parsing and `ring` verification), `bound` (the bound
//! cookie's MAC), `sfv` (structured-field strings), `endpoint` (the two endpoints).
//!
//! [`Config::dbsc`]: crate::Config::dbsc
//! [`Session::bind_device`]: crate::Session::bind_device

pub(crate) mod bound;
pub(crate) mod endpoint;
pub(crate) mod jwt;
pub(crate) mod sfv;

use std::time::Duration;

use http::header::COOKIE;
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::{Config, SameSite};
use crate::error::{Error, Result};
use crate::lifecycle::millis;
use crate::record::{DeviceBinding, Millis, Record};

/// The registration header (response).
pub const REGISTRATION_HEADER: &str = "secure-session-registration";
/// The proof header (request).
pub const RESPONSE_HEADER: &str = "secure-session-response";
/// The challenge header (response).
pub const CHALLENGE_HEADER: &str = "secure-session-challenge";
/// The header naming the DBSC session on a refresh (request).
pub const SESSION_ID_HEADER: &str = "sec-secure-session-id";

/// Device Bound Session Credentials settings; [`DbscConfig::default`] is ready to use:
///
/// ```
/// use std::time::Duration;
/// use sessionkit::{Config, DbscConfig};
///
/// let mut dbsc = DbscConfig::default();
/// dbsc.bound_cookie_lifetime = Duration::from_secs(120);
/// let config = Config::builder().dbsc(dbsc).build().unwrap();
/// assert_eq!(config.dbsc.unwrap().refresh_path, "/dbsc/refresh");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbscConfig {
    /// The registration endpoint the layers serve (POST; default `/dbsc/register`).
    pub register_path: String,
    /// The refresh endpoint the layers serve (POST; default `/dbsc/refresh`).
    pub refresh_path: String,
    /// The bound cookie's name without prefix (default `dbsc`); it gets the `__Host-` prefix
    /// when the session cookie does, and the session cookie's `Path`, `Domain`, `Secure` and
    /// `SameSite`.
    pub cookie_name: String,
    /// How long a bound cookie is valid (default 5 minutes): how long a copied pair of cookies
    /// keeps working without the device's key, and how often the browser refreshes.
    pub bound_cookie_lifetime: Duration,
    /// How long a challenge may be answered (default 5 minutes).
    pub challenge_lifetime: Duration,
    /// End the session when a refresh proof fails verification (wrong key, a proof for
    /// another session, a swapped key). Default off: the proof is refused and reported on
    /// `sessionkit::suspicious`, and the session keeps running on the real device.
    pub end_session_on_failed_proof: bool,
}

impl Default for DbscConfig {
    fn default() -> Self {
        Self {
            register_path: "/dbsc/register".into(),
            refresh_path: "/dbsc/refresh".into(),
            cookie_name: "dbsc".into(),
            bound_cookie_lifetime: Duration::from_secs(5 * 60),
            challenge_lifetime: Duration::from_secs(5 * 60),
            end_session_on_failed_proof: false,
        }
    }
}

impl DbscConfig {
    /// Checks the settings against the rest of `config`; the message names the problem.
    pub(crate) fn validate(&self, config: &Config) -> std::result::Result<(), String> {
        let path_ok = |p: &str| {
            p.starts_with('/')
                && p.len() < 256
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && !b";\"\\?#,".contains(&b))
        };
        if !path_ok(&self.register_path) || !path_ok(&self.refresh_path) {
            return Err(
                "DBSC paths must start with '/' and be printable ASCII without ; \" \\ ? # ,"
                    .into(),
            );
        }
        if self.register_path == self.refresh_path {
            return Err("the DBSC registration and refresh paths must differ".into());
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(
                "the DBSC cookie name must be ASCII letters, digits, '-', '_' or '.'".into(),
            );
        }
        if self.cookie_name == config.cookie.name {
            return Err("the DBSC cookie name must differ from the session cookie's".into());
        }
        if self.bound_cookie_lifetime < Duration::from_secs(1)
            || self.challenge_lifetime < Duration::from_secs(1)
        {
            return Err("DBSC lifetimes must be at least one second".into());
        }
        if self.bound_cookie_lifetime >= config.absolute_timeout {
            return Err("the bound cookie must be shorter-lived than the session".into());
        }
        if !matches!(config.transport, crate::config::Transport::Cookie) {
            return Err("DBSC binds cookies: it needs the cookie transport".into());
        }
        Ok(())
    }

    /// The bound cookie's name as sent.
    pub(crate) fn cookie_name_for(&self, config: &Config) -> String {
        if config.cookie.host_prefix {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        }
    }

    /// The bound cookie's attributes as the session instructions state them (and as its
    /// `Set-Cookie` line carries them, after `Max-Age`).
    pub(crate) fn cookie_attributes(config: &Config) -> String {
        let c = &config.cookie;
        let mut s = format!("Path={}", c.path);
        if let Some(d) = &c.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if c.secure {
            s.push_str("; Secure");
        }
        s.push_str("; HttpOnly");
        s.push_str(match c.same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        s
    }

    /// The allowance for the browser's clock, on the bound cookie's expiry: a tenth of its
    /// lifetime, at most 10 s (the browser drops the cookie by `Max-Age`, counted from when the
    /// response arrived, a little after we stamped the expiry).
    fn slack(&self) -> Millis {
        millis(self.bound_cookie_lifetime / 10).min(10_000)
    }
}

/// What a request brings for a device-bound session's check, read once at `start`.
#[derive(Debug, Default)]
pub(crate) struct Presented {
    /// The bound cookie's value, if the request carried one.
    pub(crate) cookie: Option<String>,
    /// The request is for a DBSC endpoint, which does its own checks.
    pub(crate) exempt: bool,
}

impl Presented {
    /// Reads the bound cookie of `headers` (the first one of that name; oversized values are
    /// ignored).
    pub(crate) fn read(headers: &HeaderMap, name: &str) -> Self {
        let mut cookie = None;
        'headers: for value in headers.get_all(COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for pair in text.split(';') {
                let Some((n, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if n == name && v.len() <= 128 {
                    cookie = Some(v.to_owned());
                    break 'headers;
                }
            }
        }
        Self {
            cookie,
            exempt: false,
        }
    }
}

/// True if a request bringing `presented` may use `record` under `config` at `now`: the record
/// is not bound, or the request is for a DBSC endpoint, or its bound cookie verifies.
pub(crate) fn satisfied(
    config: &DbscConfig,
    record: &Record,
    presented: &Presented,
    now: Millis,
) -> bool {
    let Some(binding) = record.extra.as_ref().and_then(|e| e.binding.as_ref()) else {
        return true;
    };
    if !binding.is_bound() || presented.exempt {
        return true;
    }
    presented
        .cookie
        .as_deref()
        .is_some_and(|c| bound::verify(binding, c, now, config.slack()))
}

/// A change to a session's device binding, replayable like every recorded operation. The
/// ones that consume a challenge check it again on the record they are applied to, so when
/// two requests answer one challenge, the one that saves second fails its replay: a challenge
/// is used at most once, across processes too (the save is a compare-and-set).
#[derive(Debug)]
pub(crate) enum BindingOp {
    /// Start over with a registration challenge (sign-in): any earlier binding is dropped.
    Begin { challenge: String, now: Millis },
    /// Register the key that answered `expected`.
    Register {
        expected: String,
        binding: DeviceBinding,
    },
    /// A new challenge for the bound session (a refresh without, or with a stale, proof).
    Challenge { challenge: String, now: Millis },
    /// The refresh proof answered `expected`: replace it with `next`.
    Refreshed {
        expected: String,
        next: String,
        now: Millis,
    },
}

impl BindingOp {
    pub(crate) fn apply(&self, record: &mut Record) -> Result<()> {
        let current = record.extra.as_mut().and_then(|e| e.binding.as_mut());
        match (self, current) {
            (Self::Begin { challenge, now }, _) => {
                record.extra_mut().binding = Some(DeviceBinding {
                    challenge: challenge.clone(),
                    challenge_issued: *now,
                    ..DeviceBinding::default()
                });
            }
            (Self::Register { expected, binding }, Some(b)) if same(&b.challenge, expected) => {
                *b = binding.clone();
            }
            (Self::Challenge { challenge, now }, Some(b)) if b.is_bound() => {
                b.challenge = challenge.clone();
                b.challenge_issued = *now;
            }
            (
                Self::Refreshed {
                    expected,
                    next,
                    now,
                },
                Some(b),
            ) if b.is_bound() && same(&b.challenge, expected) => {
                b.challenge = next.clone();
                b.challenge_issued = *now;
            }
            _ => {
                return Err(Error::DeviceBound(
                    "the challenge was already used or replaced",
                ))
            }
        }
        Ok(())
    }
}

/// Constant-time equality of a stored challenge and a presented one; an empty stored
/// challenge (none outstanding) matches nothing.
pub(crate) fn same(stored: &str, presented: &str) -> bool {
    !stored.is_empty()
        && stored.len() == presented.len()
        && bool::from(stored.as_bytes().ct_eq(presented.as_bytes()))
}

/// A fresh challenge: 256 bits, base64url.
pub(crate) fn new_challenge() -> Result<String> {
    crate::id::random_token()
}

/// The `Secure-Session-Registration` value for a registration challenge.
pub(crate) fn registration_value(config: &DbscConfig, challenge: &str) -> String {
    format!(
        "(ES256 RS256);path={};challenge={}",
        sfv::string(&config.register_path),
        sfv::string(challenge)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Manager, MemoryStore};

    /// A manager with DBSC on, and the request headers of a session bound to challenge `c1`.
    async fn bound_session() -> (Manager, HeaderMap) {
        let config = Config {
            dbsc: Some(DbscConfig::default()),
            ..Config::default()
        };
        let m = Manager::new(Arc::new(MemoryStore::new()), config).unwrap();
        let s = m.start(&HeaderMap::new());
        s.insert("x", 1).await.unwrap();
        let begin = BindingOp::Begin {
            challenge: "c0".into(),
            now: 1,
        };
        s.binding_op(begin).await.unwrap();
        let binding = DeviceBinding {
            session_id: "s".into(),
            alg: "ES256".into(),
            jwk: "{}".into(),
            challenge: "c1".into(),
            ..Default::default()
        };
        let register = BindingOp::Register {
            expected: "c0".into(),
            binding,
        };
        s.binding_op(register).await.unwrap();
        let issued = m.finish(&s).await.unwrap();
        let line = issued.set_cookie().unwrap().to_str().unwrap();
        let pair = line.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, pair.parse().unwrap());
        (m, headers)
    }

    #[tokio::test]
    async fn racing_answers_to_one_challenge_save_once() {
        let (m, headers) = bound_session().await;
        // Both requests load the session (and see `c1`) before either saves.
        let a = m.start_request(&headers, true);
        let b = m.start_request(&headers, true);
        for (s, next) in [(&a, "a"), (&b, "b")] {
            let op = BindingOp::Refreshed {
                expected: "c1".into(),
                next: next.into(),
                now: 2,
            };
            s.binding_op(op).await.unwrap();
        }
        m.finish(&a).await.unwrap();
        let lost = m.finish(&b).await.unwrap_err();
        assert!(lost.is_refusal(), "{lost}");
        let after = m.start_request(&headers, true);
        assert_eq!(
            after.device_binding().await.unwrap().unwrap().challenge,
            "a"
        );
    }

    #[tokio::test]
    async fn a_bound_session_needs_its_bound_cookie_outside_the_endpoints() {
        let (m, headers) = bound_session().await;
        let s = m.start(&headers);
        assert!(s.get::<u64>("x").await.unwrap_err().is_refusal());
        assert!(m.finish(&s).await.unwrap_err().is_refusal());
        let endpoint = m.start_request(&headers, true);
        assert_eq!(endpoint.get::<u64>("x").await.unwrap(), Some(1));
    }
}
