//! The actix-web integration (feature `actix`): [`SessionMiddleware`], the [`Session`]
//! extractor, [`SessionExt`] for other middleware, and error responses for [`Error`].
//!
//! The middleware gives the same guarantees as the tower [`SessionLayer`](crate::SessionLayer),
//! because it is the same [`Manager::start`] / [`Manager::finish`] pair underneath: the
//! session loads lazily, saves with compare-and-set and replay, a store failure answers 503
//! with no `Set-Cookie`, and a response carries at most one `Set-Cookie`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use actix_web::{web, App, HttpServer};
//! use sessionkit::{Config, Manager, MemoryStore, Session, SessionMiddleware};
//!
//! async fn count(session: Session) -> Result<String, sessionkit::Error> {
//!     let n: u64 = session.update("count", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("{n}\n"))
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
//!     manager.spawn_gc();
//!     HttpServer::new(move || {
//!         App::new()
//!             .route("/count", web::get().to(count))
//!             .wrap(SessionMiddleware::new(manager.clone()))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! ```

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self as actix_header, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::error::Error;
use crate::manager::Manager;
use crate::session::Session;

/// actix-web middleware that gives every request a [`Session`]: wrap an `App`, a `Scope` or a
/// `Resource` with it, and take the session in handlers as an extractor.
///
/// Routes it does not wrap (health probes, the default service) never read, create or extend a
/// session.
///
/// ```
/// # use std::sync::Arc;
/// # use sessionkit::{Config, Manager, MemoryStore, SessionMiddleware};
/// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
/// let app = actix_web::App::new().wrap(SessionMiddleware::new(manager));
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
pub struct SessionMiddleware {
    manager: Manager,
}

impl SessionMiddleware {
    /// A middleware backed by `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            manager: self.manager.clone(),
        }))
    }
}

/// The service made by [`SessionMiddleware`].
#[derive(Debug)]
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    manager: Manager,
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        #[cfg(feature = "dbsc")]
        if let Some(endpoint) = http::Method::from_bytes(req.method().as_str().as_bytes())
            .ok()
            .and_then(|m| self.manager.dbsc_endpoint(&m, req.path()))
        {
            // Served here, for every app behind the middleware: the inner service never sees it.
            let manager = self.manager.clone();
            let headers = request_headers(req.headers());
            return Box::pin(async move {
                let reply = manager.serve_dbsc(endpoint, &headers).await;
                let mut response = HttpResponse::build(status(reply.status)).body(reply.body);
                let mut sink = Sink(response.headers_mut());
                for (name, value) in &reply.headers {
                    super::HeaderSink::append(&mut sink, name, value);
                }
                Ok(req.into_response(response).map_into_right_body())
            });
        }
        let session = self.manager.start(&request_headers(req.headers()));
        req.extensions_mut().insert(session.clone());
        let manager = self.manager.clone();
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            // An error the inner service did not turn into a response yet (actix-web renders
            // it further out) is passed on as is, and the session is not saved: as with the
            // tower layer, nothing is sent for a request that did not complete.
            let response = service.call(req).await?;
            match manager.finish(&session).await {
                Ok(headers) => {
                    let mut response = response.map_into_left_body();
                    super::apply(&headers, &mut Sink(response.headers_mut()));
                    Ok(response)
                }
                Err(e) => {
                    let failure = super::Failure::of(&manager, &e);
                    let mut replaced = HttpResponse::build(status(failure.status))
                        .insert_header((actix_header::CACHE_CONTROL, "no-store"))
                        .body(failure.body.clone());
                    super::apply(&failure.headers, &mut Sink(replaced.headers_mut()));
                    Ok(response.into_response(replaced).map_into_right_body())
                }
            }
        })
    }
}

/// The request's headers as the manager reads them (actix-web has its own header types). Every
/// header is copied, so whatever the configured transport reads is there; a header `http`
/// refuses cannot carry a token and is left out.
fn request_headers(from: &HeaderMap) -> http::HeaderMap {
    let mut to = http::HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            to.append(name, value);
        }
    }
    to
}

/// An actix-web response's headers, taking the session's.
struct Sink<'a>(&'a mut HeaderMap);

impl Sink<'_> {
    fn convert(
        name: &http::HeaderName,
        value: &http::HeaderValue,
    ) -> Option<(actix_header::HeaderName, actix_header::HeaderValue)> {
        let converted = actix_header::HeaderName::from_bytes(name.as_str().as_bytes())
            .ok()
            .zip(actix_header::HeaderValue::from_bytes(value.as_bytes()).ok());
        if converted.is_none() {
            // Both sides accept the same bytes; this would be a bug in one of them.
            tracing::error!(header = %name, "session header not representable in actix-web");
        }
        converted
    }
}

impl super::HeaderSink for Sink<'_> {
    fn append(&mut self, name: &http::HeaderName, value: &http::HeaderValue) {
        if let Some((name, value)) = Self::convert(name, value) {
            self.0.append(name, value);
        }
    }

    fn replace(&mut self, name: &http::HeaderName, value: &http::HeaderValue) {
        if let Some((name, value)) = Self::convert(name, value) {
            self.0.insert(name, value);
        }
    }
}

/// actix-web's status code for an `http` one (the same number).
fn status(code: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The request's session, for middleware and guards that see the request rather than taking
/// extractors: `None` when [`SessionMiddleware`] does not wrap the route.
///
/// ```
/// use actix_web::HttpRequest;
/// use sessionkit::SessionExt;
///
/// async fn is_signed_in(req: &HttpRequest) -> bool {
///     match req.session() {
///         Some(session) => session.user().await.ok().flatten().is_some(),
///         None => false,
///     }
/// }
/// # let _ = is_signed_in;
/// ```
pub trait SessionExt {
    /// The session [`SessionMiddleware`] started for this request, if it wraps the route.
    fn session(&self) -> Option<Session>;
}

impl SessionExt for HttpRequest {
    fn session(&self) -> Option<Session> {
        self.extensions().get::<Session>().cloned()
    }
}

impl SessionExt for ServiceRequest {
    fn session(&self) -> Option<Session> {
        self.extensions().get::<Session>().cloned()
    }
}

/// The extractor: on a route [`SessionMiddleware`] does not wrap it answers 500 with
/// `sessionkit: SessionMiddleware is missing from this route`.
impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.session().ok_or_else(|| {
            actix_web::error::ErrorInternalServerError(super::missing_layer("SessionMiddleware"))
        }))
    }
}

/// Handlers can return `Result<_, sessionkit::Error>`: store trouble is 503; a stored value of
/// an unexpected type or a lost race is 409; anything else 500. The body names none of the cause (it goes to the log).
impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        status(super::error_status(self))
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(status(super::report_error(self)))
            .content_type("text/plain; charset=utf-8")
            .body(super::ERROR_BODY)
    }
}
