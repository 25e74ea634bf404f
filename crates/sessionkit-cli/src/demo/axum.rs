//! The demo on axum: the router, the CSRF middleware and one thin handler per page of
//! [`pages`](super::pages).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{ConnectInfo, FromRef, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sessionkit::{Manager, Session, SessionLayer};
use tower_layer::{Layer, Stack};
use tower_service::Service;

use super::pages::{self, PageResult, Reply};
use super::DemoOptions;

/// The demo app's routes, wrapped in the session layer, with default options.
pub fn app(manager: Manager) -> Router {
    app_with(manager, DemoOptions::default())
}

/// The demo app with `options`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the devices page can show the
/// client's network.
pub fn app_with(manager: Manager, options: DemoOptions) -> Router {
    let mut router = Router::new();
    if let Some(dbsc) = &manager.config().dbsc {
        // Routed so that the session layer sees them (it serves them; the handler never runs).
        for path in [&dbsc.register_path, &dbsc.refresh_path] {
            router = router.route(path, post(not_found));
        }
    }
    router
        .route("/", get(home))
        .route("/count", get(count))
        .route("/whoami", get(whoami))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions_json))
        .route("/devices", get(devices))
        .route("/sessions/revoke", post(revoke_one))
        .route("/sessions/revoke-others", post(revoke_others))
        // One layer of both (the CSRF guard inside the session layer): axum boxes each
        // `Router::layer` around every route again, a cost paid per request.
        .layer(Stack::new(CsrfLayer, SessionLayer::new(manager.clone())))
        // Added after the layers, so outside them: probes, scanners and typos never load or
        // create a session.
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(DemoState { manager, options })
}

/// What the demo's handlers share: the manager and the demo's own settings.
#[derive(Clone)]
struct DemoState {
    manager: Manager,
    options: DemoOptions,
}

impl FromRef<DemoState> for DemoOptions {
    fn from_ref(state: &DemoState) -> Self {
        state.options
    }
}

impl FromRef<DemoState> for Manager {
    fn from_ref(state: &DemoState) -> Self {
        state.manager.clone()
    }
}

/// `GET /metrics` alone (outside the session layer): merged into the app, or served on a
/// listener of its own.
pub fn metrics(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { respond(Reply::metrics(handle.render())) }
        }),
    )
}

/// A [`Reply`] as an axum response.
fn respond(reply: Reply) -> Response {
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        // From a static: a `&str` header value would be copied into a new buffer.
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        )],
        reply.body,
    )
        .into_response();
    if let Some(location) = reply.location {
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(location));
    }
    response
}

/// A page's result as a response: session errors through the library's `IntoResponse`.
fn page(result: PageResult) -> Response {
    result.map_or_else(IntoResponse::into_response, respond)
}

async fn not_found() -> Response {
    respond(pages::not_found())
}

/// The demo's guard inside the session layer: checks the CSRF token of every POST and adds
/// the session's page headers to every response, refusals (403, 413) included. Written as a
/// service rather than with `middleware::from_fn`, which boxes the inner service and its
/// future again on every request.
#[derive(Clone, Copy, Debug)]
struct CsrfLayer;

impl<S> Layer<S> for CsrfLayer {
    type Service = Csrf<S>;

    fn layer(&self, inner: S) -> Csrf<S> {
        Csrf { inner }
    }
}

/// The service made by [`CsrfLayer`].
#[derive(Clone, Debug)]
struct Csrf<S> {
    inner: S,
}

impl<S> Service<Request> for Csrf<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Always there: the session layer, outside this one, put it in.
        let session = req.extensions().get::<Session>().cloned();
        if req.method() != Method::POST {
            // Nothing to check first: the page is called now, on the service polled ready.
            let page = self.inner.call(req);
            return Box::pin(async move {
                let mut resp = page.await?;
                if let Some(session) = session {
                    add_session_headers(&session, &mut resp).await;
                }
                Ok(resp)
            });
        }
        // The body is read before the page runs: the clone polled ready serves it, the fresh
        // one waits for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // Fails closed: a POST with no session to check its token against is refused
            // (only a router built without the session layer could get here).
            let Some(session) = session else {
                return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            };
            let mut resp = match check_csrf(&session, req).await {
                Ok(req) => inner.call(req).await?,
                Err(resp) => resp,
            };
            add_session_headers(&session, &mut resp).await;
            Ok(resp)
        })
    }
}

/// [`pages::session_header`] on an axum response.
async fn add_session_headers(session: &Session, resp: &mut Response) {
    if let Some((name, value)) = pages::session_header(session, resp.status().as_u16()).await {
        if let Ok(value) = HeaderValue::try_from(value) {
            resp.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
}

/// Reads the body (at most [`pages::MAX_FORM`]) and lets the request through if its token
/// matches, with the body put back for the handler.
async fn check_csrf(session: &Session, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, pages::MAX_FORM)
        .await
        .map_err(|_| respond(pages::too_large()))?;
    let header_token = header_str(&parts.headers, "x-csrf-token");
    match pages::refuse_without_csrf(session, header_token, &bytes).await {
        Ok(None) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Some(refused)) => Err(respond(refused)),
        Err(e) => Err(e.into_response()),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's form `names`, or the refusal (415, 422).
fn form<const N: usize>(
    headers: &HeaderMap,
    body: &Bytes,
    names: [&str; N],
) -> Result<[String; N], Reply> {
    pages::form_fields(header_str(headers, "content-type"), body, names)
}

async fn count(session: Session) -> Response {
    page(pages::count(&session).await)
}

async fn whoami(session: Session) -> Response {
    page(pages::whoami(&session).await)
}

async fn login(
    State(options): State<DemoOptions>,
    session: Session,
    parts: Parts,
    body: Bytes,
) -> Response {
    let headers = &parts.headers;
    let [username] = match form(headers, &body, ["username"]) {
        Ok(fields) => fields,
        Err(refused) => return respond(refused),
    };
    let trust = options.trust_forwarded_for;
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client = pages::Client::new(
        trust,
        header_str(headers, "x-forwarded-for"),
        peer,
        header_str(headers, "user-agent"),
    );
    page(pages::login(&session, &client, &username).await)
}

async fn logout(session: Session) -> Response {
    page(pages::logout(&session).await)
}

async fn healthz(State(manager): State<Manager>) -> Response {
    respond(pages::healthz(&manager).await)
}

async fn sessions_json(State(manager): State<Manager>, session: Session) -> Response {
    page(pages::sessions_json(&manager, &session).await)
}

async fn revoke_one(
    State(manager): State<Manager>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match form(&headers, &body, ["handle"]) {
        Ok([handle]) => page(pages::revoke_one(&manager, &session, &handle).await),
        Err(refused) => respond(refused),
    }
}

async fn revoke_others(State(manager): State<Manager>, session: Session) -> Response {
    page(pages::revoke_others(&manager, &session).await)
}

async fn home(session: Session, RawQuery(query): RawQuery) -> Response {
    page(pages::home(&session, query.as_deref()).await)
}

async fn devices(State(manager): State<Manager>, session: Session) -> Response {
    page(pages::devices(&manager, &session).await)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// The CSRF guard fails closed: a POST that reaches it with no session (a router built
    /// without the session layer) is refused and the page never runs.
    #[tokio::test]
    async fn a_post_without_a_session_is_refused() {
        let ran = Arc::new(AtomicBool::new(false));
        let page_ran = ran.clone();
        let mut app: Router = Router::new()
            .route(
                "/login",
                post(move || async move {
                    page_ran.store(true, Ordering::SeqCst);
                    "signed in"
                }),
            )
            .layer(CsrfLayer);
        let req = Request::post("/login")
            .body(Body::from("username=kim"))
            .unwrap();
        let resp = Service::call(&mut app, req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!ran.load(Ordering::SeqCst));
    }
}
