//! The store conformance suite (`sessionkit::testkit`) against [`SqliteStore`], each test on a
//! fresh database file, with the raw-bytes hook so corrupt records are checked too. The `testkit`
//! and `sqlite` features are switched on for this crate's tests by its self dev-dependency.
#![cfg(all(feature = "testkit", feature = "sqlite"))]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sessionkit::store::SqliteStore;
use sessionkit::testkit::Fixture;

/// A temporary directory removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fixture() -> Fixture {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sessionkit-conformance-sqlite-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("s.db").display()))
        .await
        .unwrap();
    Fixture::new(std::sync::Arc::new(store.clone()))
        .with_raw(store)
        .keep(TempDir(dir))
}

sessionkit::conformance_tests!(sqlite, fixture());
