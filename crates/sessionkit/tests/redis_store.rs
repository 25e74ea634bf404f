//! RedisStore against a real Redis (SESSIONKIT_REDIS_URL, default 127.0.0.1:6379) and a real
//! Redis Cluster (SESSIONKIT_REDIS_CLUSTER, e.g. started by scripts/redis-cluster.sh). Every test
//! uses its own random key prefix and deletes its keys afterwards.
#![cfg(feature = "redis")]

mod shared_stores;

use std::sync::Arc;

use sessionkit::store::redis::RedisStore;
use sessionkit::{now_millis, Store};
use shared_stores::*;

async fn open(url: Option<String>, what: &str) -> Option<Arc<RedisStore>> {
    let url = match url {
        Some(u) => u,
        None => return unavailable(what, "SESSIONKIT_REDIS_CLUSTER is not set"),
    };
    let prefix = format!("sktest:{}:", token());
    match RedisStore::open_with_prefix(&url, &prefix).await {
        Ok(s) => {
            if let Err(e) = s.ping().await {
                return unavailable(what, e);
            }
            Some(Arc::new(s))
        }
        Err(e) => unavailable(what, e),
    }
}

async fn standalone() -> Option<Arc<RedisStore>> {
    open(Some(redis_url()), "redis").await
}

async fn cluster() -> Option<Arc<RedisStore>> {
    let s = open(
        std::env::var("SESSIONKIT_REDIS_CLUSTER").ok(),
        "redis cluster",
    )
    .await?;
    assert!(s.is_cluster());
    Some(s)
}

/// Runs `check` on a standalone and on a cluster store, each under a fresh prefix.
macro_rules! both {
    ($name:ident, $cluster_name:ident, |$s:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($s) = standalone().await else { return };
            $body;
            $s.purge_prefix().await.unwrap();
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster_name() {
            let Some($s) = cluster().await else { return };
            $body;
            $s.purge_prefix().await.unwrap();
        }
    };
}

both!(crud_standalone, crud_cluster, |s| crud(&*s).await);
both!(expiry_standalone, expiry_cluster, |s| expiry(&*s).await);
both!(rotation_standalone, rotation_cluster, |s| rotation(&*s)
    .await);
both!(listing_standalone, listing_cluster, |s| listing_and_gc(&*s)
    .await);
both!(users_standalone, users_cluster, |s| user_index(&*s).await);
both!(manager_standalone, manager_cluster, |s| manager_flow(
    s.clone()
)
.await);
both!(layout_standalone, layout_cluster, |s| layout(&s).await);

/// Two store handles (two connections, as two app servers would have) on one prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_across_handles() {
    for url in [
        Some(redis_url()),
        std::env::var("SESSIONKIT_REDIS_CLUSTER").ok(),
    ] {
        let what = if url.as_deref() == Some(&redis_url()) {
            "redis"
        } else {
            "redis cluster"
        };
        let Some(a) = open(url.clone(), what).await else {
            continue;
        };
        let b = RedisStore::open_with_prefix(url.as_deref().unwrap(), a.prefix())
            .await
            .unwrap();
        concurrent_cas(vec![a.clone(), Arc::new(b)]).await;
        a.purge_prefix().await.unwrap();
    }
}

/// The server-side shape: TTLs on records, the prefix honoured, corrupt payloads read as absent.
async fn layout(s: &RedisStore) {
    let client = raw(s).await;
    let mut c = client;
    let k = new_key();
    let mut r = record(60_000);
    r.user = Some("layout".into());
    s.create(&k, &r).await.unwrap();
    let rec_key = format!("{}{{{:02x}}}r:{}", s.prefix(), k.shard(), k.to_hex());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&rec_key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "record TTL {ttl}");
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&rec_key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(at, r.expires_at);
    // A touch that moves the deadline past the TTL moves the TTL, with as much slack again,
    // never past the absolute deadline; one that stays within the TTL leaves it alone.
    let later = now_millis();
    s.touch(&k, later, later + 120_000).await.unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&rec_key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(at, (later + 240_000).min(r.absolute_expires_at));
    s.touch(&k, later + 1, later + 120_001).await.unwrap();
    let unmoved: i64 = redis::cmd("PEXPIRETIME")
        .arg(&rec_key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(unmoved, at);
    assert_eq!(
        s.load(&k, later + 120_000)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        later + 120_001,
        "the deadline itself is exact"
    );
    assert!(s.load(&k, later + 120_001).await.unwrap().is_none());
    // Every key this store wrote carries its prefix: the session ID never appears.
    let v: String = redis::cmd("HGET")
        .arg(&rec_key)
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "1");
    // Damage the payload: read as absent, not an error, and not listed.
    let _: () = redis::cmd("HSET")
        .arg(&rec_key)
        .arg("d")
        .arg(b"SKR\x01garbage".as_slice())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(s.load(&k, now_millis()).await.unwrap().is_none());
    let page = s.scan(None, 100, now_millis()).await.unwrap();
    assert!(page.records.iter().all(|(key, _)| *key != k));
    assert!(s
        .sessions_of("layout", now_millis())
        .await
        .unwrap()
        .is_empty());
    // Opening through the registry with a URL prefix reaches the same data.
    let url = if s.is_cluster() {
        std::env::var("SESSIONKIT_REDIS_CLUSTER").unwrap()
    } else {
        redis_url()
    };
    let via = sessionkit::store::open(&with_param(&url, "prefix", s.prefix()))
        .await
        .unwrap();
    assert_eq!(via.kind(), "redis");
    let k2 = new_key();
    via.create(&k2, &record(60_000)).await.unwrap();
    assert!(s.load(&k2, now_millis()).await.unwrap().is_some());
}

/// A plain connection for inspecting what the store wrote.
async fn raw(s: &RedisStore) -> RawConn {
    if s.is_cluster() {
        let url = std::env::var("SESSIONKIT_REDIS_CLUSTER").unwrap();
        let nodes: Vec<String> = url
            .trim_start_matches("redis+cluster://")
            .split(['/', '?'])
            .next()
            .unwrap()
            .split(',')
            .map(|h| format!("redis://{h}"))
            .collect();
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        RawConn::Cluster(client.get_async_connection().await.unwrap())
    } else {
        let client = redis::Client::open(redis_url()).unwrap();
        RawConn::Single(client.get_multiplexed_async_connection().await.unwrap())
    }
}

enum RawConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RawConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RawConn::Single(c) => c.req_packed_command(cmd),
            RawConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RawConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RawConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        0
    }
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    for url in [
        "redis+cluster://",
        "redis://127.0.0.1:6379?prefix=a{b}",
        "redis://127.0.0.1:6379?prefix=a%20b",
        "redis://127.0.0.1:6379?connections=0",
        "redis://127.0.0.1:6379?connections=65",
        "redis://127.0.0.1:6379?connections=two",
    ] {
        let e = RedisStore::open(url).await.unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    // The connections parameter is taken by the store, not passed on to the client.
    if standalone().await.is_some() {
        let url = with_param(&redis_url(), "connections", "3");
        let store = RedisStore::open(&url).await.unwrap();
        store.ping().await.unwrap();
    }
    // Nothing listens on port 1: a clear, prompt backend error.
    let e = RedisStore::open("redis://127.0.0.1:1").await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}
