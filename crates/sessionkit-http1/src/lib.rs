//! A minimal HTTP/1.1 client: one connection, requests written as raw bytes, responses read
//! with `Content-Length` framing.
//!
//! sessionkit's HTTP tests, its load generator and `sessionkit bench` all need to send exact
//! bytes (a forged cookie, a pipelined burst, a request a full client would "fix") and to read
//! what the server really sent, including every `Set-Cookie`. A full client hides exactly
//! that, so this one is deliberately small: no redirects, no chunked bodies (the demo never
//! sends them; they are an error here, not a silent misread), no TLS.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mut conn = sessionkit_http1::Connection::connect("127.0.0.1:8080").await?;
//! let r = conn.send(&sessionkit_http1::get("/count", None)).await?;
//! assert_eq!(r.status, 200);
//! let cookie = r.set_cookie_pair(); // `name=value` of the session cookie, if one was set
//! # let _ = cookie;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{Error, ErrorKind, Result};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Longest response head accepted; a server that sends more is broken or hostile.
const MAX_HEAD: usize = 64 * 1024;

/// One response as the server sent it.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values in order, values trimmed, repeats kept.
    pub headers: Vec<(String, String)>,
    /// The body (lossily decoded: the demo's pages are UTF-8).
    pub body: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `name=value` part of the first `Set-Cookie`, if any.
    pub fn set_cookie_pair(&self) -> Option<&str> {
        self.header("set-cookie")
            .and_then(|v| v.split(';').next())
            .map(str::trim)
    }

    /// True if the server will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A keep-alive connection; responses are read in order, so pipelining works.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read past the last response (the start of the next one).
    buf: Vec<u8>,
}

impl Connection {
    /// Connects (with `TCP_NODELAY`: every request is one small write waiting for its answer).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes `request` (raw bytes) and reads one response.
    pub async fn send(&mut self, request: &[u8]) -> Result<Response> {
        self.write(request).await?;
        self.read_response().await
    }

    /// Writes raw bytes without reading (for pipelining).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads the next response.
    pub async fn read_response(&mut self) -> Result<Response> {
        let bad = |m: &str| Error::new(ErrorKind::InvalidData, m.to_owned());
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])
                    .map_err(|_| bad("non-UTF-8 response head"))?;
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad status line"))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let mut len = 0usize;
                for (name, value) in &headers {
                    if name.eq_ignore_ascii_case("content-length") {
                        len = value.parse().map_err(|_| bad("bad content-length"))?;
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(bad("chunked responses are not supported"));
                    }
                }
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.read_more().await?;
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..total]).into_owned();
                self.buf.drain(..total);
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too large"));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// A request: `method path`, `Host: 127.0.0.1`, a `Cookie` header with `cookie` (a whole
/// `name=value` pair) if given, the `extra` header lines, and for POST a form body.
pub fn request(
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut r = String::with_capacity(128 + body.len());
    for part in [method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
        r.push_str(part);
    }
    if let Some(c) = cookie {
        for part in ["Cookie: ", c, "\r\n"] {
            r.push_str(part);
        }
    }
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if method == "POST" {
        r.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// `GET path` with an optional `name=value` cookie.
pub fn get(path: &str, cookie: Option<&str>) -> Vec<u8> {
    request("GET", path, cookie, &[], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `answer` (raw bytes) to the first connection and returns its address.
    async fn server(answer: &'static [u8]) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            s.write_all(answer).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn reads_pipelined_responses_and_every_set_cookie() {
        let addr = server(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: id=a; Path=/\r\nset-cookie: x=1\r\nContent-Length: 2\r\n\r\nhi\
              HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let mut c = Connection::connect(addr).await.unwrap();
        let r = c.send(&get("/", None)).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hi"));
        assert_eq!(r.set_cookie_pair(), Some("id=a"));
        assert_eq!(r.headers_named("Set-Cookie").len(), 2);
        let r = c.read_response().await.unwrap();
        assert_eq!(r.status, 403);
        assert!(r.closes());
        assert_eq!(
            c.read_response().await.unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn chunked_and_garbage_are_errors_not_misreads() {
        let addr = server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
        let mut c = Connection::connect(addr).await.unwrap();
        assert!(c.send(&get("/", None)).await.is_err());
        let addr = server(b"garbage\r\n\r\n").await;
        let mut c = Connection::connect(addr).await.unwrap();
        assert!(c.send(&get("/", None)).await.is_err());
    }

    #[test]
    fn builds_posts_with_a_form_body() {
        let r = request("POST", "/login", Some("id=x"), &["X-CSRF-Token: t"], "a=1");
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: id=x\r\n"));
        assert!(r.contains("X-CSRF-Token: t\r\n"));
        assert!(r.ends_with("Content-Length: 3\r\n\r\na=1"));
    }
}
