//! The store conformance suite (`sessionkit::testkit`) against RedisStore on a Redis Cluster
//! (SESSIONKIT_REDIS_CLUSTER, e.g. from `scripts/redis-cluster.sh start`), each test under its
//! own key prefix, purged afterwards. Skips when unset or unreachable unless
//! SESSIONKIT_REQUIRE_SERVICES=1.
#![cfg(feature = "redis")]

mod shared_stores;

#[path = "shared_stores/redis_fixture.rs"]
mod redis_fixture;

sessionkit::conformance_tests!(redis_cluster, async {
    redis_fixture::fixture(
        std::env::var("SESSIONKIT_REDIS_CLUSTER").ok(),
        "redis cluster",
    )
    .await
});
