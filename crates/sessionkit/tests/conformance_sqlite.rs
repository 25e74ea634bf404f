//! The store conformance suite (`sessionkit::testkit`) against [`SqliteStore`], each test on a
//! fresh database file, with the raw-bytes hook so corrupt records are checked too. The `testkit`
//! and `sqlite` features are switched on for this crate's tests by its self dev-dependency.
#![cfg(all(feature = "testkit", feature = "sqlite"))]

use sessionkit::store::SqliteStore;
use sessionkit::testkit::Fixture;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    Fixture::new(std::sync::Arc::new(store.clone()))
        .with_raw(store)
        .keep(dir)
}

sessionkit::conformance_tests!(sqlite, fixture());
