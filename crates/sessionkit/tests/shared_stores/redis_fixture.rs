//! A conformance fixture on Redis: a fresh key prefix per test, raw access for planting bad
//! bytes, and a guard that deletes the prefix's keys when the test ends.

use std::sync::Arc;

use sessionkit::store::redis::RedisStore;
use sessionkit::testkit::Fixture;

use super::shared_stores::{required, token};

/// Deletes the test's keys on drop, on a runtime of its own (the test's runtime is ending).
struct Purge {
    url: String,
    prefix: String,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(s) = RedisStore::open_with_prefix(&url, &prefix).await {
                    let _ = s.purge_prefix().await;
                }
            });
        })
        .join();
    }
}

/// The fixture for `url`, or a skipped one (a failure when services are required).
pub async fn fixture(url: Option<String>, what: &str) -> Fixture {
    let Some(url) = url else {
        return absent(what, "SESSIONKIT_REDIS_CLUSTER is not set");
    };
    let prefix = format!("skconf:{}:", token());
    match RedisStore::open_with_prefix(&url, &prefix).await {
        Ok(s) => {
            let s = Arc::new(s);
            Fixture::new(s.clone())
                .self_expiring(true)
                .with_raw(s)
                .keep(Purge { url, prefix })
        }
        Err(e) => absent(what, &e.to_string()),
    }
}

fn absent(what: &str, why: &str) -> Fixture {
    if required() {
        panic!("{what} is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {why}");
    }
    Fixture::skip(format!("{what} unavailable: {why}"))
}
