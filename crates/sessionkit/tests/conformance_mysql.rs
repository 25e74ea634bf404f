//! The store conformance suite (`sessionkit::testkit`) against MySqlStore (SESSIONKIT_MYSQL_URL,
//! default mysql://root@127.0.0.1:3306/test), each test in a table of its own, dropped
//! afterwards. Skips without a server unless SESSIONKIT_REQUIRE_SERVICES=1.
#![cfg(feature = "mysql")]

mod shared_stores;

#[path = "shared_stores/mysql_fixture.rs"]
mod mysql_fixture;

sessionkit::conformance_tests!(mysql, async {
    mysql_fixture::fixture(&shared_stores::mysql_url()).await
});
