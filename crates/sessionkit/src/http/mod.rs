//! HTTP integration: a tower [`SessionLayer`], (feature `axum`) an axum extractor and (feature
//! `actix`) an actix-web [`SessionMiddleware`] with its extractor, all over the framework-free
//! pair [`Manager::start`](crate::Manager::start) / [`Manager::finish`](crate::Manager::finish).
//!
//! Every integration follows the same rules, kept once in this module: the session loads
//! lazily (a request that never touches it costs no store call); `finish` saves with
//! compare-and-set and replay; a store failure answers 503 with `Cache-Control: no-store` and no
//! `Set-Cookie`; a response gets at most one `Set-Cookie`, and `Cache-Control: no-store` plus
//! `Vary` whenever it depends on the session. With DBSC on (feature `dbsc`, `Config::dbsc`)
//! both serve the registration and refresh endpoints themselves (`dbsc::endpoint`), and a
//! device-bound session's request without its bound cookie is answered 401 (`Failure`).

use http::{HeaderName, HeaderValue, StatusCode};

use crate::error::Error;

mod layer;

#[cfg(feature = "axum")]
mod axum;

#[cfg(feature = "actix")]
mod actix;

pub use crate::token::SessionHeaders;
#[cfg(feature = "actix")]
pub use actix::{SessionExt, SessionMiddleware, SessionMiddlewareService};
pub use layer::{SessionLayer, SessionService};

/// A response's header map as the session headers see it: the tower layer's `http` map and
/// actix-web's own map both take them through [`apply`].
pub(crate) trait HeaderSink {
    /// Adds a value, keeping those already there.
    fn append(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Replaces every value of `name`.
    fn replace(&mut self, name: &HeaderName, value: &HeaderValue);
}

impl HeaderSink for http::HeaderMap {
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        http::HeaderMap::append(self, name.clone(), value.clone());
    }

    fn replace(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }
}

/// Adds the session's headers to a response: the token header (`Set-Cookie`, at most one) and
/// `Vary` are added to the app's; `Cache-Control` replaces the app's, since a page that depends
/// on the session must not be stored, whatever the handler said.
pub(crate) fn apply(headers: &SessionHeaders, to: &mut impl HeaderSink) {
    for (name, value) in headers.iter() {
        if name == http::header::CACHE_CONTROL {
            to.replace(name, value);
        } else {
            to.append(name, value);
        }
    }
}

/// Logs why a request's session could not be saved; the caller then answers
/// [`UNSAVED_STATUS`] with only `Cache-Control: no-store`.
pub(crate) fn report_unsaved(e: &Error) {
    tracing::warn!(error = %e, "session could not be saved; answering 503");
}

/// What a layer answers instead of the app's response when `finish` failed: a device-bound
/// session's refusal is 401 with its reason and the session cookie cleared (the browser falls
/// back to signed out); anything else is [`UNSAVED_STATUS`] with only `Cache-Control: no-store`.
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) headers: SessionHeaders,
    // Read by the actix middleware, and by the tower layer with `dbsc` (whose bodies carry
    // text); a build with neither has only empty bodies.
    #[cfg_attr(not(any(feature = "dbsc", feature = "actix")), allow(dead_code))]
    pub(crate) body: String,
}

impl Failure {
    pub(crate) fn of(manager: &crate::Manager, e: &Error) -> Self {
        if e.is_refusal() {
            return Self {
                status: StatusCode::UNAUTHORIZED,
                headers: manager.removal_headers(),
                body: format!("{e}\n"),
            };
        }
        report_unsaved(e);
        Self {
            status: UNSAVED_STATUS,
            headers: SessionHeaders::default(),
            body: String::new(),
        }
    }
}

/// The response bodies the tower layer can answer with by itself: any `Default` body, and
/// with the `dbsc` feature (whose endpoints answer with JSON and text) one that is also
/// `From<String>`, as axum's `Body` and `http_body_util::Full` are.
#[cfg(feature = "dbsc")]
pub trait LayerBody: Default + From<String> {}
#[cfg(feature = "dbsc")]
impl<T: Default + From<String>> LayerBody for T {}
/// The response bodies the tower layer can answer with by itself: any `Default` body (with
/// the `dbsc` feature, one that is also `From<String>`).
#[cfg(not(feature = "dbsc"))]
pub trait LayerBody: Default {}
#[cfg(not(feature = "dbsc"))]
impl<T: Default> LayerBody for T {}

impl Failure {
    /// The body, for a layer whose body type can carry text.
    #[cfg(feature = "dbsc")]
    pub(crate) fn body<B: LayerBody>(&self) -> B {
        B::from(self.body.clone())
    }

    /// The body, for a layer whose body type can carry text.
    #[cfg(not(feature = "dbsc"))]
    pub(crate) fn body<B: LayerBody>(&self) -> B {
        B::default()
    }
}

/// The status of a response whose session could not be saved: the client gets no cookie for
/// data that was not stored.
pub(crate) const UNSAVED_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// The status a handler's session error answers with: store trouble is 503; a stored value of
/// an unexpected type or a lost race is 409; a device-bound session's refusal 401; anything
/// else 500.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn error_status(e: &Error) -> StatusCode {
    if e.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if e.is_refusal() {
        StatusCode::UNAUTHORIZED
    } else if matches!(e, Error::Value { .. } | Error::Conflict) {
        StatusCode::CONFLICT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// [`error_status`], with the error logged: the response body names none of it
/// ([`ERROR_BODY`]).
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn report_error(e: &Error) -> StatusCode {
    tracing::warn!(error = %e, "session error");
    error_status(e)
}

/// The body of a session error response: no store internals for the client.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) const ERROR_BODY: &str = "session unavailable";

/// The rejection of a `Session` extractor on a route the integration does not wrap: a
/// programming error, answered 500 with a message that says what is missing.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn missing_layer(layer: &'static str) -> String {
    format!("sessionkit: {layer} is missing from this route")
}
