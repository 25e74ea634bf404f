//! Sessions without a framework: plain hyper 1 and the framework-free API,
//! [`Manager::start`] (reads the cookie, no I/O) and [`Manager::finish`] (saves what the request
//! changed and returns the `Set-Cookie`/`Cache-Control` headers to send).
//!
//! ```text
//! cargo run -p sessionkit --example hyper_plain
//! curl -c jar -b jar http://127.0.0.1:3001/      # visits: 1, 2, 3, ...
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sessionkit::{Config, Manager, MemoryStore};

async fn handle(
    manager: Manager,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = manager.start(req.headers());
    let visits = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await;
    let mut resp = match visits {
        Ok(n) => Response::new(Full::new(Bytes::from(format!("visits: {n}\n")))),
        Err(e) => error(e),
    };
    // Always finish: this is where the session is written and the cookie produced.
    match manager.finish(&session).await {
        Ok(headers) => headers.apply_to(resp.headers_mut()),
        // Store down: answer 503 and send no cookie (the client keeps the one it has).
        Err(e) => resp = error(e),
    }
    Ok(resp)
}

fn error(e: sessionkit::Error) -> Response<Full<Bytes>> {
    let status = if e.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("{e}\n"))));
    *resp.status_mut() = status;
    resp
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default())
        .expect("default config is valid");
    manager.spawn_gc();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://127.0.0.1:3001");
    loop {
        let (stream, _) = listener.accept().await?;
        let manager = manager.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(manager.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
