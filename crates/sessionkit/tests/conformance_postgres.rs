//! The store conformance suite (`sessionkit::testkit`) against PostgresStore
//! (SESSIONKIT_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test), each test in a
//! schema of its own, dropped afterwards. Skips without a server unless
//! SESSIONKIT_REQUIRE_SERVICES=1.
#![cfg(feature = "postgres")]

mod shared_stores;

#[path = "shared_stores/postgres_fixture.rs"]
mod postgres_fixture;

sessionkit::conformance_tests!(postgres, async {
    postgres_fixture::fixture(&shared_stores::postgres_url()).await
});
