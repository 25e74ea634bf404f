//! The registration and refresh endpoints, framework-free: the tower layer and the actix-web
//! middleware both route a matching request here and send back the [`Reply`].
//!
//! Each endpoint is an ordinary request of the session (it loads the record, records
//! operations and finishes with compare-and-set), exempt from the bound-cookie check it exists
//! to satisfy. Refusals are 4xx with a plain-text reason, never 5xx (a store failure is 503,
//! as everywhere); proofs that fail verification are reported on `sessionkit::suspicious`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::jwt::{self, PublicKey};
use super::{
    new_challenge, same, sfv, BindingOp, DbscConfig, CHALLENGE_HEADER, RESPONSE_HEADER,
    SESSION_ID_HEADER,
};
use crate::error::{Error, Result};
use crate::lifecycle::millis;
use crate::manager::Manager;
use crate::record::{now_millis, DeviceBinding, Millis};
use crate::session::Session;

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Register,
    Refresh,
}

/// An endpoint's response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: String,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            headers: vec![
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        }
    }

    /// A refusal with its reason as the body.
    fn refuse(status: StatusCode, reason: &str) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            format!("device-bound session: {reason}\n"),
        )
    }

    fn header(mut self, name: HeaderName, value: String) -> Self {
        // Every value here is built from validated config, base64url and JSON-free ASCII.
        if let Ok(v) = HeaderValue::try_from(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl Manager {
    /// The DBSC endpoint a request is for, if DBSC is on and it is one (POST to a configured
    /// path; the query string is ignored).
    pub(crate) fn dbsc_endpoint(&self, method: &Method, path: &str) -> Option<Endpoint> {
        let config = self.config().dbsc.as_ref()?;
        if method != Method::POST {
            return None;
        }
        if path == config.register_path {
            Some(Endpoint::Register)
        } else if path == config.refresh_path {
            Some(Endpoint::Refresh)
        } else {
            None
        }
    }

    /// Serves a DBSC endpoint: runs it as a request of the session and finishes the session.
    pub(crate) async fn serve_dbsc(&self, endpoint: Endpoint, headers: &HeaderMap) -> Reply {
        let session = self.start_request(headers, true);
        let Some(config) = self.config().dbsc.clone() else {
            return Reply::refuse(StatusCode::NOT_FOUND, "not enabled");
        };
        let ctx = Ctx {
            manager: self,
            config: &config,
            session: &session,
            headers,
            now: now_millis(),
        };
        let reply = match endpoint {
            Endpoint::Register => ctx.register().await,
            Endpoint::Refresh => ctx.refresh().await,
        };
        let mut reply = match reply {
            Ok(reply) => reply,
            Err(e) => return failure(&e),
        };
        match self.finish(&session).await {
            Ok(session_headers) => {
                for (name, value) in session_headers.iter() {
                    if name != CACHE_CONTROL {
                        reply.headers.push((name.clone(), value.clone()));
                    }
                }
                reply
            }
            Err(e) => failure(&e),
        }
    }
}

/// The reply for an error of the session itself: a lost challenge race is 403 (the browser
/// then retries with the challenge the winner handed out), store trouble 503.
fn failure(e: &Error) -> Reply {
    if e.is_refusal() {
        tracing::warn!(target: "sessionkit::suspicious", event = "challenge_replayed",
            "a DBSC challenge was answered twice; the second answer is refused");
        Reply::refuse(StatusCode::FORBIDDEN, "the challenge was already used")
    } else {
        tracing::warn!(error = %e, "DBSC endpoint: session unavailable");
        Reply::refuse(StatusCode::SERVICE_UNAVAILABLE, "session unavailable")
    }
}

/// One endpoint request.
struct Ctx<'a> {
    manager: &'a Manager,
    config: &'a DbscConfig,
    session: &'a Session,
    headers: &'a HeaderMap,
    now: Millis,
}

/// What a header holds as far as DBSC is concerned.
enum Field {
    Absent,
    Bad(&'static str),
    Value(String),
}

impl Ctx<'_> {
    /// The `sf-string` of a request header: absent, malformed (non-ASCII, not a string,
    /// repeated, oversized) or its value.
    fn field(&self, name: &'static str) -> Field {
        let mut all = self.headers.get_all(name).iter();
        let Some(value) = all.next() else {
            return Field::Absent;
        };
        if all.next().is_some() {
            return Field::Bad("the header is repeated");
        }
        if value.len() > jwt::MAX_PROOF + 2 {
            return Field::Bad("the header is too large");
        }
        match sfv::string_item(value.as_bytes()) {
            Some(s) => Field::Value(s),
            None => Field::Bad("the header is not a structured-field string"),
        }
    }

    fn suspicious(&self, event: &'static str, detail: &str) {
        tracing::warn!(target: "sessionkit::suspicious", event, detail,
            "DBSC proof refused");
    }

    /// True if `aud` names this endpoint on the host the request was sent to, or is absent.
    ///
    /// The draft asks for `aud` (and for `sub` on refreshes); Chromium sends neither (its
    /// proofs hold only `jti`). Neither is needed for safety here: the challenge a proof signs
    /// is a one-time 256-bit value this server issued to this one session's record and
    /// consumes with a compare-and-set, so a proof over it, signed with the session's key,
    /// cannot be meant for another server or session. A claim that is present must match:
    /// a client naming another target is confused or hostile.
    fn audience_ok(&self, aud: Option<&str>, path: &str) -> bool {
        let Some(aud) = aud else {
            return true;
        };
        let Some(rest) = aud
            .strip_prefix("https://")
            .or_else(|| aud.strip_prefix("http://"))
        else {
            return false;
        };
        let (authority, aud_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let aud_path = aud_path.split(['?', '#']).next().unwrap_or("");
        let host = self.headers.get(HOST).and_then(|h| h.to_str().ok());
        aud_path == path && host.is_none_or(|h| h.eq_ignore_ascii_case(authority))
    }

    fn expired(&self, issued: Millis) -> bool {
        self.now.saturating_sub(issued) > millis(self.config.challenge_lifetime)
    }

    /// The `Set-Cookie` line of a new bound cookie for `binding`.
    fn bound_cookie(&self, binding: &DeviceBinding) -> String {
        let config = self.manager.config();
        let lifetime = millis(self.config.bound_cookie_lifetime);
        let value = super::bound::issue(binding, self.now.saturating_add(lifetime));
        format!(
            "{}={value}; Max-Age={}; {}",
            self.manager.bound_cookie_name().unwrap_or("dbsc"),
            (lifetime / 1000).max(1),
            DbscConfig::cookie_attributes(config)
        )
    }

    /// The `Secure-Session-Challenge` value for `challenge` of the DBSC session `id`.
    fn challenge_value(challenge: &str, id: &str) -> String {
        format!("{};id={}", sfv::string(challenge), sfv::string(id))
    }

    /// The registration endpoint: verifies the proof with the key it carries, checks that it
    /// signs this session's registration challenge, and binds the session to that key.
    async fn register(&self) -> Result<Reply> {
        let text = match self.field(RESPONSE_HEADER) {
            Field::Value(text) => text,
            Field::Absent => {
                return Ok(Reply::refuse(
                    StatusCode::BAD_REQUEST,
                    "the registration carries no Secure-Session-Response proof",
                ))
            }
            Field::Bad(why) => return Ok(Reply::refuse(StatusCode::BAD_REQUEST, why)),
        };
        let unverified = match jwt::parse(&text) {
            Ok(u) => u,
            Err(e) => {
                self.suspicious("malformed_proof", e.0);
                return Ok(Reply::refuse(StatusCode::BAD_REQUEST, e.0));
            }
        };
        let key = match unverified.embedded_key() {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Ok(Reply::refuse(
                    StatusCode::BAD_REQUEST,
                    "the registration proof carries no key",
                ))
            }
            Err(e) => return Ok(Reply::refuse(StatusCode::BAD_REQUEST, e.0)),
        };
        let proof = match unverified.verify(&key) {
            Ok(p) => p,
            Err(e) => {
                self.suspicious("bad_registration_proof", e.0);
                return Ok(Reply::refuse(StatusCode::UNAUTHORIZED, e.0));
            }
        };
        let pending = self.session.device_binding().await?;
        let Some(pending) = pending.filter(|b| !b.is_bound()) else {
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "no registration is pending for this session",
            ));
        };
        if !same(&pending.challenge, &proof.jti) {
            self.suspicious("wrong_registration_challenge", "jti");
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "the proof does not sign this session's registration challenge",
            ));
        }
        if self.expired(pending.challenge_issued) {
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "the registration challenge expired; sign in again",
            ));
        }
        if !self.audience_ok(proof.aud.as_deref(), &self.config.register_path) {
            self.suspicious("wrong_audience", "aud");
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "the proof's aud is not this registration endpoint",
            ));
        }
        let mut secret = [0u8; 32];
        crate::id::fill_random(&mut secret)?;
        let binding = DeviceBinding {
            session_id: crate::id::random_token()?,
            alg: key.alg().name().to_owned(),
            jwk: key.to_jwk(),
            secret,
            challenge: new_challenge()?,
            challenge_issued: self.now,
        };
        self.session
            .binding_op(BindingOp::Register {
                expected: proof.jti,
                binding: binding.clone(),
            })
            .await?;
        let instructions = serde_json::json!({
            "session_identifier": binding.session_id,
            "refresh_url": self.config.refresh_path,
            "scope": {
                "include_site": false,
                "scope_specification": [
                    // The registration path needs no bound cookie (the refresh path is out
                    // of scope by definition); `*` is the draft's default, spelled out.
                    { "type": "exclude", "domain": "*", "path": self.config.register_path },
                ],
            },
            "credentials": [{
                "type": "cookie",
                "name": self.manager.bound_cookie_name().unwrap_or("dbsc"),
                "attributes": DbscConfig::cookie_attributes(self.manager.config()),
            }],
            "allowed_refresh_initiators": [],
        });
        tracing::info!(alg = %binding.alg, "DBSC session registered");
        Ok(
            Reply::new(StatusCode::OK, "application/json", instructions.to_string())
                .header(SET_COOKIE, self.bound_cookie(&binding))
                .header(
                    HeaderName::from_static(CHALLENGE_HEADER),
                    Self::challenge_value(&binding.challenge, &binding.session_id),
                ),
        )
    }

    /// A proof failed verification: refused (401, which also ends the browser's DBSC session),
    /// reported, and the session ended if the policy says so.
    async fn failed_proof(&self, event: &'static str, reason: &'static str) -> Result<Reply> {
        self.suspicious(event, reason);
        if self.config.end_session_on_failed_proof {
            self.session.destroy().await?;
        }
        Ok(Reply::refuse(StatusCode::UNAUTHORIZED, reason))
    }

    /// 403 with a challenge to sign: the current one while it is fresh, else a new one.
    async fn challenge(&self, binding: &DeviceBinding) -> Result<Reply> {
        let challenge = if !binding.challenge.is_empty() && !self.expired(binding.challenge_issued)
        {
            binding.challenge.clone()
        } else {
            let challenge = new_challenge()?;
            self.session
                .binding_op(BindingOp::Challenge {
                    challenge: challenge.clone(),
                    now: self.now,
                })
                .await?;
            challenge
        };
        Ok(Reply::refuse(
            StatusCode::FORBIDDEN,
            "sign the challenge in Secure-Session-Challenge",
        )
        .header(
            HeaderName::from_static(CHALLENGE_HEADER),
            Self::challenge_value(&challenge, &binding.session_id),
        ))
    }

    /// The refresh endpoint: without a proof, a challenge; with one, verification against
    /// the stored key and a new bound cookie.
    async fn refresh(&self) -> Result<Reply> {
        let binding = self.session.device_binding().await?;
        let Some(binding) = binding.filter(DeviceBinding::is_bound) else {
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "this session is not device-bound (or has ended)",
            ));
        };
        match self.field(SESSION_ID_HEADER) {
            Field::Value(id) if id != binding.session_id => {
                return self
                    .failed_proof(
                        "wrong_session",
                        "Sec-Secure-Session-Id names another session",
                    )
                    .await
            }
            Field::Bad(why) => return Ok(Reply::refuse(StatusCode::BAD_REQUEST, why)),
            _ => {}
        }
        let text = match self.field(RESPONSE_HEADER) {
            Field::Absent => return self.challenge(&binding).await,
            Field::Bad(why) => return Ok(Reply::refuse(StatusCode::BAD_REQUEST, why)),
            Field::Value(text) => text,
        };
        let unverified = match jwt::parse(&text) {
            Ok(u) => u,
            Err(e) => {
                self.suspicious("malformed_proof", e.0);
                return Ok(Reply::refuse(StatusCode::BAD_REQUEST, e.0));
            }
        };
        let stored = serde_json::from_str(&binding.jwk)
            .map_err(|_| ())
            .and_then(|v| PublicKey::from_jwk(&v).map_err(|_| ()));
        let Ok(stored) = stored else {
            tracing::warn!("DBSC: the stored key does not parse; the session cannot refresh");
            return Ok(Reply::refuse(
                StatusCode::UNAUTHORIZED,
                "the session's key is unusable",
            ));
        };
        match unverified.embedded_key() {
            Ok(Some(key)) if key != stored => {
                return self
                    .failed_proof(
                        "key_swap",
                        "the proof carries a key other than the session's",
                    )
                    .await
            }
            Err(e) => return Ok(Reply::refuse(StatusCode::BAD_REQUEST, e.0)),
            _ => {}
        }
        let proof = match unverified.verify(&stored) {
            Ok(p) => p,
            Err(e) => return self.failed_proof("bad_proof", e.0).await,
        };
        // Absent (Chromium) is fine for the reason given at `audience_ok`.
        if proof
            .sub
            .as_deref()
            .is_some_and(|sub| sub != binding.session_id)
        {
            return self
                .failed_proof("wrong_session", "the proof's sub is not this DBSC session")
                .await;
        }
        if !self.audience_ok(proof.aud.as_deref(), &self.config.refresh_path) {
            return self
                .failed_proof(
                    "wrong_audience",
                    "the proof's aud is not this refresh endpoint",
                )
                .await;
        }
        if !same(&binding.challenge, &proof.jti) || self.expired(binding.challenge_issued) {
            // An old or replayed answer: not proof of the key's absence (the draft expects
            // late answers after a new challenge), so the browser is given one to sign.
            self.suspicious(
                "stale_challenge",
                "the proof signs a challenge that is not current",
            );
            return self.challenge(&binding).await;
        }
        let next = new_challenge()?;
        self.session
            .binding_op(BindingOp::Refreshed {
                expected: proof.jti,
                next: next.clone(),
                now: self.now,
            })
            .await?;
        Ok(
            Reply::new(StatusCode::OK, "text/plain; charset=utf-8", String::new())
                .header(SET_COOKIE, self.bound_cookie(&binding))
                .header(
                    HeaderName::from_static(CHALLENGE_HEADER),
                    Self::challenge_value(&next, &binding.session_id),
                ),
        )
    }
}
