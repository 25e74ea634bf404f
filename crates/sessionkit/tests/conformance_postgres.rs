//! The store conformance suite (`sessionkit::testkit`) against PostgresStore
//! (SESSIONKIT_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test), each test in a
//! schema of its own, dropped afterwards. Skips without a server unless
//! SESSIONKIT_REQUIRE_SERVICES=1.
#![cfg(feature = "postgres")]

mod shared_stores;

use std::sync::Arc;

use sessionkit::store::postgres::PostgresStore;
use sessionkit::testkit::{async_trait, Fixture, RawAccess};
use sessionkit::Key;
use shared_stores::{postgres_url, required, token, with_param, DropSchema};

#[derive(Debug)]
struct Raw(Arc<PostgresStore>);

#[async_trait]
impl RawAccess for Raw {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> sessionkit::Result<()> {
        self.0.put_raw(key, bytes).await
    }
}

async fn fixture() -> Fixture {
    let schema = format!("sk_conf_{}", token());
    let url = with_param(&postgres_url(), "schema", &schema);
    match PostgresStore::open(&url).await {
        Ok(s) => {
            let s = Arc::new(s);
            Fixture::new(s.clone())
                .with_raw(Raw(s))
                .keep(DropSchema(schema))
        }
        Err(e) if required() => {
            panic!("postgres is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {e}")
        }
        Err(e) => Fixture::skip(format!("postgres unavailable: {e}")),
    }
}

sessionkit::conformance_tests!(postgres, async { fixture().await });
