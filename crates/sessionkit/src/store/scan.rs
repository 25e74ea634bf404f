//! Walking a whole [`Store::scan`], page after page: the one copy of the cursor loop that tools,
//! tests and the conformance suite share.

use super::Store;
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

/// The pages of a full scan of a store, one [`ScanPages::next`] call per page.
///
/// If the store hands back the cursor it was just given (a broken scan, which would return the
/// same page forever), that page is still returned and the call after it is an error.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use sessionkit::store::{MemoryStore, ScanPages};
/// let store = MemoryStore::new();
/// let mut pages = ScanPages::new(&store, 100);
/// while let Some(page) = pages.next(sessionkit::now_millis()).await.unwrap() {
///     for (key, record) in page {
///         let _ = (key, record);
///     }
/// }
/// # });
/// ```
#[derive(Debug)]
pub struct ScanPages<'a> {
    store: &'a dyn Store,
    limit: usize,
    cursor: Option<String>,
    done: bool,
    repeated: bool,
}

impl<'a> ScanPages<'a> {
    /// A scan of `store` from the start, `limit` records per page at most.
    pub fn new(store: &'a dyn Store, limit: usize) -> Self {
        Self {
            store,
            limit,
            cursor: None,
            done: false,
            repeated: false,
        }
    }

    /// True once the last page has been returned (the next call gives `None`).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next page of live records at `now`, or `None` once the scan is complete. `now` may
    /// differ from call to call (a long copy asks with the current time each page).
    pub async fn next(&mut self, now: Millis) -> Result<Option<Vec<(Key, Record)>>> {
        if self.done {
            return Ok(None);
        }
        if self.repeated {
            self.done = true;
            return Err(Error::backend(
                self.store.kind(),
                "scan",
                "scan returned the same cursor twice; the store's scan is broken",
            ));
        }
        let page = self
            .store
            .scan(self.cursor.as_deref(), self.limit, now)
            .await?;
        match page.next {
            Some(next) if Some(&next) == self.cursor.as_ref() => self.repeated = true,
            Some(next) => self.cursor = Some(next),
            None => self.done = true,
        }
        Ok(Some(page.records))
    }
}

/// Every live record of `store` at `now`, read `limit` per page (see [`ScanPages`]).
pub async fn scan_all(store: &dyn Store, limit: usize, now: Millis) -> Result<Vec<(Key, Record)>> {
    let mut out = Vec::new();
    let mut pages = ScanPages::new(store, limit);
    while let Some(page) = pages.next(now).await? {
        out.extend(page);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Page};
    use async_trait::async_trait;

    /// A store whose scan always answers with the cursor it was given.
    #[derive(Debug)]
    struct Stuck(MemoryStore);

    #[async_trait]
    impl Store for Stuck {
        fn kind(&self) -> &'static str {
            "stuck"
        }
        async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
            self.0.load(key, now).await
        }
        async fn create(&self, key: &Key, record: &Record) -> Result<()> {
            self.0.create(key, record).await
        }
        async fn save(&self, key: &Key, record: &Record, expected: u64) -> Result<()> {
            self.0.save(key, record, expected).await
        }
        async fn touch(&self, key: &Key, last: Millis, expires: Millis) -> Result<bool> {
            self.0.touch(key, last, expires).await
        }
        async fn rotate(
            &self,
            old: &Key,
            expected: u64,
            new: &Key,
            record: &Record,
            alias: Option<&Record>,
        ) -> Result<()> {
            self.0.rotate(old, expected, new, record, alias).await
        }
        async fn take(&self, key: &Key) -> Result<Option<Record>> {
            self.0.take(key).await
        }
        async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
            self.0.gc(now, limit).await
        }
        async fn len(&self, now: Millis) -> Result<u64> {
            self.0.len(now).await
        }
        async fn scan(&self, cursor: Option<&str>, _: usize, _: Millis) -> Result<Page> {
            Ok(Page {
                records: Vec::new(),
                next: Some(cursor.unwrap_or("c").to_owned()),
            })
        }
        async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
            self.0.sessions_of(user, now).await
        }
        async fn destroy_user(&self, user: &str) -> Result<u64> {
            self.0.destroy_user(user).await
        }
        async fn ping(&self) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn walks_every_page_and_stops_on_a_repeated_cursor() {
        let store = MemoryStore::new();
        let now = crate::record::now_millis();
        for _ in 0..25 {
            let key = crate::id::SessionId::generate().unwrap().key();
            store
                .create(&key, &Record::new(now, now + 60_000, now + 60_000))
                .await
                .unwrap();
        }
        assert_eq!(scan_all(&store, 7, now).await.unwrap().len(), 25);

        let err = scan_all(&Stuck(MemoryStore::new()), 7, now)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("same cursor twice"), "{err}");
    }
}
