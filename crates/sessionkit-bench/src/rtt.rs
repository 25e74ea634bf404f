//! A loopback TCP proxy that counts round trips between an app and its store server.
//!
//! The benches point an app (sessionkit or tower-sessions) at the proxy instead of at Redis or
//! PostgreSQL and read the counter around a series of sequential requests. A round trip is
//! counted each time the client starts sending after the server last spoke (or at the start):
//! several writes in a row, such as a pipelined or extended-protocol batch, count once, which
//! is what a round trip costs in latency. This needs no knowledge of either wire protocol, so
//! both libraries are counted by the same rule. It is only exact for one request in flight at a
//! time, which is how the benches use it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    round_trips: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding every connection to `target` (loopback only).
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        if !target.ip().is_loopback() {
            return Err(std::io::Error::other("the proxy only forwards to loopback"));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            round_trips,
            accept,
        })
    }

    /// The address apps should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Round trips counted so far, over all connections.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies both ways until either side closes. `client_spoke` is true while the client has sent
/// since the server last answered: a client read that finds it false opens a new round trip.
async fn relay(client: TcpStream, server: TcpStream, counter: Arc<AtomicU64>) {
    let client_spoke = Arc::new(AtomicBool::new(false));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = {
        let spoke = client_spoke.clone();
        pump(cr, sw, move || {
            if !spoke.swap(true, Ordering::SeqCst) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let down = pump(sr, cw, move || client_spoke.store(false, Ordering::SeqCst));
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut on_data: impl FnMut()) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                on_data();
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
