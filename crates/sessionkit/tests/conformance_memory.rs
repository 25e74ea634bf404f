//! The store conformance suite (`sessionkit::testkit`) against [`MemoryStore`]. The `testkit`
//! feature is switched on for this crate's tests by its self dev-dependency.

use std::sync::Arc;

use sessionkit::MemoryStore;

// One #[test] per contract rule, each on a fresh store.
sessionkit::conformance_tests!(memory, async { Arc::new(MemoryStore::new()) });

/// The function form runs the same suite in one test (and checks that it is callable from an
/// ordinary tokio test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_for_memory() {
    sessionkit::testkit::run_all(|| async { Arc::new(MemoryStore::new()) }).await;
}
