//! The tower middleware: starts a session per request, puts it in the request extensions, and
//! finishes it after the inner service answered. A store failure turns the response into a 503
//! with no session headers, so a client never receives a cookie for data that was not saved.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::manager::Manager;

/// Tower layer that gives every request a [`Session`](crate::Session).
///
/// ```
/// # use std::sync::Arc;
/// # use sessionkit::{Config, Manager, MemoryStore, SessionLayer};
/// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
/// let layer = SessionLayer::new(manager);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct SessionLayer {
    manager: Manager,
}

impl SessionLayer {
    /// A layer backed by `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    manager: Manager,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: super::LayerBody + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        #[cfg(feature = "dbsc")]
        if let Some(endpoint) = self.manager.dbsc_endpoint(req.method(), req.uri().path()) {
            // Served here, for every app behind the layer: the inner service never sees it.
            let manager = self.manager.clone();
            let headers = std::mem::take(req.headers_mut());
            return Box::pin(async move {
                let reply = manager.serve_dbsc(endpoint, &headers).await;
                let mut response = Response::new(ResBody::from(reply.body));
                *response.status_mut() = reply.status;
                for (name, value) in reply.headers {
                    response.headers_mut().append(name, value);
                }
                Ok(response)
            });
        }
        let session = self.manager.start(req.headers());
        req.extensions_mut().insert(session.clone());
        let manager = self.manager.clone();
        // Called now, on the service that was polled ready: the request needs nothing async
        // before the app sees it, so no clone of the inner service is made (with axum, a clone
        // is an allocation per route layer).
        let app = self.inner.call(req);
        Box::pin(async move {
            let mut response = app.await?;
            match manager.finish(&session).await {
                Ok(headers) => super::apply(&headers, response.headers_mut()),
                Err(e) => response = failed(&super::Failure::of(&manager, &e)),
            }
            Ok(response)
        })
    }
}

/// The response that replaces the app's when the session could not be finished.
fn failed<B: super::LayerBody>(failure: &super::Failure) -> Response<B> {
    let mut r = Response::new(failure.body());
    *r.status_mut() = failure.status;
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    super::apply(&failure.headers, r.headers_mut());
    r
}
