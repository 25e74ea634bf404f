//! [`RawAccess`], the test hook through which the conformance suite plants bytes at rest (corrupt
//! or foreign records) in a store, so it can check that such records read as absent.
//!
//! It lives with the stores rather than in `testkit` so that a store implements it without
//! depending on the test suite; it is still compiled only with the `testkit` feature, since
//! production code has no business writing unchecked bytes.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::Key;

/// Direct access to a store's bytes at rest, for planting corrupt or foreign records.
///
/// Every store of this crate that keeps bytes implements it (file, SQLite, Redis, Postgres,
/// MySQL); the memory store keeps decoded records, so it has no bytes to corrupt.
#[async_trait]
pub trait RawAccess: Send + Sync + fmt::Debug + 'static {
    /// Stores `bytes` as the record of `key`, replacing anything there, such that everything the
    /// store keeps beside the bytes says "live" (e.g. an expiry column far in the future, no
    /// user). The store must then read the record as absent.
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()>;
}

/// A shared store plants through the store itself, so a fixture can hand the suite the same
/// `Arc` it tests.
#[async_trait]
impl<T: RawAccess + ?Sized> RawAccess for Arc<T> {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        (**self).put_raw(key, bytes).await
    }
}
