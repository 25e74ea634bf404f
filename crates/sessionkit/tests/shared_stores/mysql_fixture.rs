//! A conformance fixture on MySQL/MariaDB: a table of its own per test (dropped when the test
//! ends) and raw access for planting bad bytes.

use std::sync::Arc;

use sessionkit::store::mysql::MySqlStore;
use sessionkit::testkit::Fixture;

use super::shared_stores::{drop_table, required, token, with_param};

/// The fixture on the server of `url` (a fresh table is added to it), or a skipped one (a
/// failure when services are required).
pub async fn fixture(url: &str) -> Fixture {
    let table = format!("sk_conf_{}", token());
    match MySqlStore::open(&with_param(url, "table", &table)).await {
        Ok(s) => {
            let s = Arc::new(s);
            Fixture::new(s.clone()).with_raw(s).keep(drop_table(&table))
        }
        Err(e) if required() => {
            panic!("mysql is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {e}")
        }
        Err(e) => Fixture::skip(format!("mysql unavailable: {e}")),
    }
}
