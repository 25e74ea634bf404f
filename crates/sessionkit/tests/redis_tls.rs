//! RedisStore over TLS (`rediss://`, feature `redis-tls`): a private redis-server started here on
//! a free loopback port with a throwaway CA, server and client certificate (made with the
//! `openssl` command), requiring client certificates, and a three-master Cluster whose bus is TLS
//! too. The whole conformance suite runs over both; a connection the server or the client must
//! refuse is a prompt, clear error.
#![cfg(feature = "redis-tls")]

mod shared_stores;

#[path = "shared_stores/redis_fixture.rs"]
mod redis_fixture;

#[path = "shared_stores/redis_nodes.rs"]
mod redis_nodes;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis_nodes::{Plan, RedisNodes};
use sessionkit::store::redis::{RedisOptions, RedisStore};
use sessionkit::Error;

const STANDALONE: Plan = Plan {
    tls: true,
    masters: 1,
    replicas: 0,
};

fn quick() -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    }
}

/// Every conformance test on `servers` (they have no plain-text port: all of it is TLS).
async fn conformance(servers: &RedisNodes, what: &str) {
    let url = servers.url();
    for test in sessionkit::testkit::TESTS {
        eprintln!("{what}: {}", test.name);
        let fx = redis_fixture::fixture(Some(url.clone()), what).await;
        (test.run)(fx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_tls_with_client_certificates() {
    if let Some(server) = RedisNodes::start(STANDALONE) {
        conformance(&server, "redis over TLS").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_a_tls_cluster() {
    let plan = Plan {
        masters: 3,
        ..STANDALONE
    };
    if let Some(cluster) = RedisNodes::start(plan) {
        assert!(RedisStore::open(&cluster.url()).await.unwrap().is_cluster());
        conformance(&cluster, "redis cluster over TLS").await;
    }
}

/// Refused connections end promptly with an error that says what failed, never a hang or a
/// plain-text fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tls_connections_are_prompt_clear_errors() {
    let Some(server) = RedisNodes::start(STANDALONE) else {
        return;
    };
    let cases = [
        ("no client certificate", server.url_with("ca.pem", false)),
        (
            "server signed by an untrusted CA",
            server.url_with("other-ca.pem", true),
        ),
        (
            // No `ca`: the system's trust store, which does not hold the test CA.
            "server signed by a CA outside the system's trust store",
            format!(
                "rediss://127.0.0.1:{}?cert={}&key={}",
                server.ports[0],
                server.file("client.pem"),
                server.file("client.key")
            ),
        ),
        (
            "plain text to the TLS port",
            format!("redis://127.0.0.1:{}", server.ports[0]),
        ),
    ];
    for (what, url) in cases {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            let store = RedisStore::open_with(&url, quick()).await?;
            sessionkit::Store::ping(&store).await
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 15 s"));
        let err = outcome.expect_err(what);
        assert!(err.is_unavailable(), "{what}: {err:?}");
        eprintln!("{what}: {err} ({:.1?})", started.elapsed());
    }
}

/// Misconfigured TLS parameters are configuration errors naming the problem, before any
/// connection is tried.
#[tokio::test]
async fn bad_tls_parameters_are_config_errors() {
    let missing = PathBuf::from("/nonexistent/sessionkit-ca.pem");
    for (url, says) in [
        (
            format!("rediss://127.0.0.1:1?ca={}", missing.display()),
            "cannot read ca file",
        ),
        (
            "rediss://127.0.0.1:1?cert=/tmp/c.pem".to_owned(),
            "cert and key go together",
        ),
        (
            "redis://127.0.0.1:1?ca=/tmp/ca.pem".to_owned(),
            "need a TLS URL",
        ),
        (
            "rediss+cluster://?ca=/tmp/ca.pem".to_owned(),
            "cannot read ca file",
        ),
        ("redisss://127.0.0.1:1".to_owned(), "not a redis URL"),
    ] {
        match RedisStore::open(&url).await {
            Err(Error::BadUrl { reason: m, .. }) => assert!(m.contains(says), "{url}: {m}"),
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }
}
