//! The store conformance suite (`sessionkit::testkit`) against RedisStore on a standalone server
//! (SESSIONKIT_REDIS_URL, default redis://127.0.0.1:6379), each test under its own key prefix,
//! purged afterwards. Skips without a server unless SESSIONKIT_REQUIRE_SERVICES=1.
#![cfg(feature = "redis")]

mod shared_stores;

#[path = "shared_stores/redis_fixture.rs"]
mod redis_fixture;

sessionkit::conformance_tests!(redis, async {
    redis_fixture::fixture(Some(shared_stores::redis_url()), "redis").await
});
