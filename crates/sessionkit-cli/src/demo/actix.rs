//! The demo on actix-web: the same routes as [`super::axum`], each wrapped in
//! [`SessionMiddleware`] and the CSRF middleware, with `/healthz`, `/metrics` and the default
//! service (404) outside them; one thin handler per page of [`pages`](super::pages).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{HttpServiceFactory, Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use metrics_exporter_prometheus::PrometheusHandle;
use sessionkit::{Manager, Session, SessionExt, SessionMiddleware};

use super::pages::{self, PageResult, Reply};
use super::DemoOptions;

/// Adds the demo's routes to an actix-web app: `App::new().configure(|c| configure(c, ..))`.
pub fn configure(cfg: &mut web::ServiceConfig, manager: &Manager, options: DemoOptions) {
    let page = |path: &str, route: actix_web::Route| with_session(manager, path, route);
    cfg.app_data(web::Data::new(manager.clone()))
        .app_data(web::Data::new(options))
        // Outside the session middleware: probes, scanners and typos never load or create a
        // session.
        .route("/healthz", web::get().to(healthz))
        .service(page("/", web::get().to(home)))
        .service(page("/count", web::get().to(count)))
        .service(page("/whoami", web::get().to(whoami)))
        .service(page("/login", web::post().to(login)))
        .service(page("/logout", web::post().to(logout)))
        .service(page("/sessions", web::get().to(sessions_json)))
        .service(page("/devices", web::get().to(devices)))
        .service(page("/sessions/revoke", web::post().to(revoke_one)))
        .service(page(
            "/sessions/revoke-others",
            web::post().to(revoke_others),
        ))
        .default_service(web::to(|| async { respond(pages::not_found()) }));
    if let Some(dbsc) = &manager.config().dbsc {
        // Inside the session middleware, which serves them (the handler never runs).
        for path in [&dbsc.register_path, &dbsc.refresh_path] {
            cfg.service(page(
                path,
                web::post().to(|| async { respond(pages::not_found()) }),
            ));
        }
    }
}

/// One page: the resource (its 405 for a wrong method included) inside the session and CSRF
/// middleware. Per resource rather than one scope, so that the default service stays outside.
fn with_session(manager: &Manager, path: &str, route: actix_web::Route) -> impl HttpServiceFactory {
    web::resource(path)
        .route(route)
        .wrap(from_fn(csrf))
        .wrap(SessionMiddleware::new(manager.clone()))
}

/// Adds `GET /metrics` (outside the session middleware).
pub fn metrics(cfg: &mut web::ServiceConfig, handle: PrometheusHandle) {
    cfg.route(
        "/metrics",
        web::get().to(move || {
            let handle = handle.clone();
            async move { respond(Reply::metrics(handle.render())) }
        }),
    );
}

/// The demo served on `listener` (metrics on the app's port when `metrics` is given), with no
/// signal handling of its own: stop it through its handle.
pub fn server(
    manager: Manager,
    options: DemoOptions,
    metrics_here: Option<PrometheusHandle>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        App::new().configure(|cfg| {
            configure(cfg, &manager, options);
            if let Some(handle) = &metrics_here {
                metrics(cfg, handle.clone());
            }
        })
    })
    .disable_signals()
    .listen(listener)?
    .run())
}

/// `/metrics` alone on `listener` (`serve --metrics-addr`).
pub fn metrics_server(
    handle: PrometheusHandle,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(
        HttpServer::new(move || App::new().configure(|cfg| metrics(cfg, handle.clone())))
            .disable_signals()
            .workers(1)
            .listen(listener)?
            .run(),
    )
}

/// A [`Reply`] as an actix-web response.
fn respond(reply: Reply) -> HttpResponse {
    let mut builder = HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    builder.content_type(reply.content_type);
    if let Some(location) = reply.location {
        builder.insert_header((header::LOCATION, location));
    }
    builder.body(reply.body)
}

/// A page's result as a response: session errors through the library's `ResponseError`.
fn page(result: PageResult) -> HttpResponse {
    match result {
        Ok(reply) => respond(reply),
        Err(e) => e.error_response(),
    }
}

/// Checks the CSRF token of every POST and adds the session's page headers to every response,
/// refusals (403, 413) included.
async fn csrf(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(session) = req.session() else {
        // `with_session` always puts SessionMiddleware outside this one.
        return Ok(
            req.error_response(actix_web::error::ErrorInternalServerError(
                "sessionkit: SessionMiddleware is missing from this route",
            )),
        );
    };
    let mut res = if req.method() == Method::POST {
        match check_csrf(&session, &mut req).await {
            None => next.call(req).await?.map_into_boxed_body(),
            Some(refused) => req.into_response(refused),
        }
    } else {
        next.call(req).await?.map_into_boxed_body()
    };
    if let Some((name, value)) = pages::session_header(&session, res.status().as_u16()).await {
        if let Ok(value) = HeaderValue::try_from(value) {
            res.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    Ok(res)
}

/// Reads the body (at most [`pages::MAX_FORM`]) and puts it back for the handler; the refusal
/// if it is too large or its token does not match.
async fn check_csrf(session: &Session, req: &mut ServiceRequest) -> Option<HttpResponse> {
    let Ok(payload) = req.extract::<web::Payload>().await else {
        return Some(respond(pages::too_large()));
    };
    let bytes = match payload.to_bytes_limited(pages::MAX_FORM).await {
        Ok(Ok(bytes)) => bytes,
        _ => return Some(respond(pages::too_large())),
    };
    let header_token = header_str(req.request(), "x-csrf-token");
    let verdict = pages::refuse_without_csrf(session, header_token, &bytes).await;
    req.set_payload(Payload::from(bytes));
    match verdict {
        Ok(None) => None,
        Ok(Some(refused)) => Some(respond(refused)),
        Err(e) => Some(e.error_response()),
    }
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The request's form `names`, or the refusal (415, 422).
fn form<const N: usize>(
    req: &HttpRequest,
    body: &[u8],
    names: [&str; N],
) -> Result<[String; N], Reply> {
    pages::form_fields(header_str(req, "content-type"), body, names)
}

async fn healthz(manager: web::Data<Manager>) -> HttpResponse {
    respond(pages::healthz(&manager).await)
}

async fn count(session: Session) -> HttpResponse {
    page(pages::count(&session).await)
}

async fn whoami(session: Session) -> HttpResponse {
    page(pages::whoami(&session).await)
}

async fn login(
    session: Session,
    options: web::Data<DemoOptions>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let [username] = match form(&req, &body, ["username"]) {
        Ok(fields) => fields,
        Err(refused) => return respond(refused),
    };
    let client = pages::Client::new(
        options.trust_forwarded_for,
        header_str(&req, "x-forwarded-for"),
        req.peer_addr().map(|addr| addr.ip()),
        header_str(&req, "user-agent"),
    );
    page(pages::login(&session, &client, &username).await)
}

async fn logout(session: Session) -> HttpResponse {
    page(pages::logout(&session).await)
}

async fn sessions_json(manager: web::Data<Manager>, session: Session) -> HttpResponse {
    page(pages::sessions_json(&manager, &session).await)
}

async fn revoke_one(
    manager: web::Data<Manager>,
    session: Session,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    match form(&req, &body, ["handle"]) {
        Ok([handle]) => page(pages::revoke_one(&manager, &session, &handle).await),
        Err(refused) => respond(refused),
    }
}

async fn revoke_others(manager: web::Data<Manager>, session: Session) -> HttpResponse {
    page(pages::revoke_others(&manager, &session).await)
}

async fn home(session: Session, req: HttpRequest) -> HttpResponse {
    let query = Some(req.query_string()).filter(|q| !q.is_empty());
    page(pages::home(&session, query).await)
}

async fn devices(manager: web::Data<Manager>, session: Session) -> HttpResponse {
    page(pages::devices(&manager, &session).await)
}
