//! A conformance fixture on PostgreSQL: a schema of its own per test (dropped when the test
//! ends) and raw access for planting bad bytes.

use std::sync::Arc;

use sessionkit::store::postgres::PostgresStore;
use sessionkit::testkit::Fixture;

use super::shared_stores::{required, token, with_param, DropSchema};

/// The fixture on the server of `url` (a fresh schema is added to it), or a skipped one (a
/// failure when services are required).
pub async fn fixture(url: &str) -> Fixture {
    let schema = format!("sk_conf_{}", token());
    match PostgresStore::open(&with_param(url, "schema", &schema)).await {
        Ok(s) => {
            let s = Arc::new(s);
            Fixture::new(s.clone()).with_raw(s).keep(DropSchema(schema))
        }
        Err(e) if required() => {
            panic!("postgres is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {e}")
        }
        Err(e) => Fixture::skip(format!("postgres unavailable: {e}")),
    }
}
