//! The `backends` bench, run tiny so CI notices when it breaks, plus the one claim of it that is
//! not a timing: the count page costs one store round trip for a read and two for a write on
//! Redis and Postgres (counted by the bench's proxy, sessionkit in-process). Redis and Postgres
//! parts skip without a server unless SESSIONKIT_REQUIRE_SERVICES=1. Nothing here is timed.

#[path = "../benches/sides/mod.rs"]
mod sides;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sessionkit_bench::loadgen::Client;
use sessionkit_bench::ops::{OpsOutcome, OpsPlan};
use sessionkit_bench::rtt::CountingProxy;

fn required() -> bool {
    std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The service's address if it answers; otherwise skips (None) or, when required, fails.
fn service(var: &str, default: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .parse()
        .expect("host:port");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Some(addr);
    }
    assert!(
        !required(),
        "{addr} is required (SESSIONKIT_REQUIRE_SERVICES=1) but does not answer"
    );
    eprintln!("SKIPPED: nothing at {addr}");
    None
}

fn tiny() -> OpsPlan {
    OpsPlan {
        workers: 2,
        warmup: Duration::ZERO,
        measure: Duration::from_millis(100),
    }
}

fn check(results: &[(&str, OpsOutcome)]) {
    let ops: Vec<&str> = results.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, sides::OPS);
    for (op, o) in results {
        assert!(o.ops > 0, "{op}: no operation completed");
        assert_eq!(o.errors, 0, "{op}: {} errors", o.errors);
        assert!(o.p50_us <= o.p99_us, "{op}: p50 above p99");
    }
}

/// A unique name part, so overlapping runs never share data.
fn token() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        sessionkit::now_millis() % 1_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_ops_run_on_the_embedded_stores() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite://{}/sk.db", dir.path().display()),
        format!("file://{}/files", dir.path().display()),
    ] {
        let store = sessionkit::store::open(&url).await.unwrap();
        check(&sides::store_ops(store.clone(), tiny(), 40).await);
        // A second run reuses the sessions the first one made.
        check(&sides::store_ops(store, tiny(), 40).await);
        // The lost-update pass: with compare-and-set every acknowledged increment is held.
        let app = serve(&url).await;
        let (acked, held) = sides::shared_session_count(app, 4, 10).await.unwrap();
        assert_eq!((acked, held), (41, 41), "{url}");
    }
}

/// Serves the sessionkit count page on `url` in-process; returns its address.
async fn serve(url: &str) -> SocketAddr {
    let store = sessionkit::store::open(url).await.unwrap();
    let app = sessionkit_bench::apps::sessionkit_count_on(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_round_trip_to_read_two_to_write() {
    let Some(server) = service("SKB_REDIS_ADDR", "127.0.0.1:6379") else {
        return;
    };
    let proxy = CountingProxy::start(server).await.unwrap();
    let url = format!("redis://{}/15?prefix=skbench-{}:", proxy.addr(), token());
    // Signed in, a save also keeps the user index: still one script, one round trip.
    assert_round_trips(&proxy, serve(&url).await).await;
    let store = sessionkit::store::open(&url).await.unwrap();
    check(&sides::store_ops(store, tiny(), 40).await);
    let redis = sessionkit::store::redis::RedisStore::open(&url)
        .await
        .unwrap();
    redis.purge_prefix().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_round_trip_to_read_two_to_write() {
    let Some(server) = service("SKB_POSTGRES_ADDR", "127.0.0.1:5432") else {
        return;
    };
    let schema = format!("skbench_{}", token());
    let proxy = CountingProxy::start(server).await.unwrap();
    let url = format!("postgres://postgres@{}/test?schema={schema}", proxy.addr());
    let app = serve(&url).await;
    let outcome = sides::count_round_trips(&proxy, app, 20).await;
    let signed_in = sides::signed_in_write_round_trips(&proxy, app, 20).await;
    let ops = async {
        let store = sessionkit::store::open(&url).await.unwrap();
        sides::store_ops(store, tiny(), 40).await
    }
    .await;
    // Drop the schema before judging, so a failure leaves nothing behind.
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=postgres dbname=test",
            server.ip(),
            server.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
    let (new, write, read) = outcome.unwrap();
    assert_eq!((write, read), (2.0, 1.0), "count and peek round trips");
    assert!(new <= 2.0, "a new session took {new} round trips");
    assert_eq!(signed_in.unwrap(), 2.0, "signed-in count round trips");
    check(&ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_one_round_trip_to_read_two_to_write() {
    let Some(server) = service("SKB_MYSQL_ADDR", "127.0.0.1:3306") else {
        return;
    };
    let proxy = CountingProxy::start(server).await.unwrap();
    // `prefer_socket=false`: mysql_async would otherwise move a loopback connection to the
    // server's Unix socket, past the proxy (which then counted nothing).
    let url = format!(
        "mysql://root@{}/test?table=skbench_rtt&prefer_socket=false",
        proxy.addr()
    );
    assert_round_trips(&proxy, serve(&url).await).await;
}

/// The count page at `app`, whose store is reached through `proxy`: 1 round trip to read, 2
/// to write (signed in too), at most 2 for a new session.
async fn assert_round_trips(proxy: &CountingProxy, app: SocketAddr) {
    let (new, write, read) = sides::count_round_trips(proxy, app, 20).await.unwrap();
    assert_eq!((write, read), (2.0, 1.0), "count and peek round trips");
    assert!(new <= 2.0, "a new session took {new} round trips");
    let signed_in = sides::signed_in_write_round_trips(proxy, app, 20)
        .await
        .unwrap();
    assert_eq!(signed_in, 2.0, "signed-in count round trips");
}

/// The tower-sessions side builds (it is its own workspace) and runs its SQLite subject.
#[test]
fn tower_side_builds_and_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tower");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        // Its own target dir whatever CARGO_TARGET_DIR says, since the binary is run from there.
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building crates/sessionkit-bench/tower failed"
    );
    let bin = dir.join("target/debug/tower-stores-bench");
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ts.db", tmp.path().display());
    let out = Command::new(&bin)
        .args(["ops", "sqlite", &url, "2", "0", "0.1", "20"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<(&str, OpsOutcome)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(op, rest)| (op, OpsOutcome::from_line(rest).expect("an ops line")))
        .collect();
    check(&results);
    // Its count page answers and counts.
    let mut server = Command::new(&bin);
    server.args(["serve", "sqlite", &url]);
    let (mut child, port) = sessionkit_bench::procs::start_server(server).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = rt.block_on(async {
        let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let (s1, cookie) = c.get("/count", None).await.unwrap();
        let (s2, _) = c.get("/count", cookie.as_deref()).await.unwrap();
        (s1, s2, cookie.is_some())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answers, (200, 200, true));
}
