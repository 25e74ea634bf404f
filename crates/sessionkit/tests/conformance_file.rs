//! The store conformance suite (`sessionkit::testkit`) against [`FileStore`], each test on a
//! fresh store directory, with the raw-bytes hook so corrupt records are checked too. The `testkit`
//! and `file` features are switched on for this crate's tests by its self dev-dependency.
#![cfg(all(feature = "testkit", feature = "file"))]

use sessionkit::store::FileStore;
use sessionkit::testkit::Fixture;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&format!("file://{}", dir.path().join("store").display()))
        .await
        .unwrap();
    Fixture::new(std::sync::Arc::new(store.clone()))
        .with_raw(store)
        .keep(dir)
}

sessionkit::conformance_tests!(file, fixture());
