//! [`FileStore`]: one file per session in a directory (`file:///var/lib/app/sessions`).
//!
//! The classic file provider, made crash safe and safe across processes. Layout under the root:
//!
//! ```text
//! SESSIONKIT                 marker: "sessionkit file store 1\n" (format version)
//! s/<2 hex>/<64 hex>         a session: Record::encode bytes, named by the hex Key
//! s/<2 hex>/.lock            the shard's lock file (flock)
//! s/<2 hex>/.tmp.*           a write in progress (or left by a crash; GC removes old ones)
//! u/<2 hex>/<64 hex>/<64 hex>  user index: u/<sha256(user)>/<session key>, empty link files
//! ```
//!
//! - Names come from the [`Key`] (SHA-256 of the ID), never from client input, so a cookie can
//!   never name a path. Sessions are sharded into 256 subdirectories by the key's first byte.
//! - Writes are atomic and durable: the bytes go to a temp file in the same directory, which is
//!   fsynced, renamed over the record and the directory fsynced. A reader (or a crash) sees the
//!   old record or the new one, never a mix. Reads take no lock.
//! - Every read-modify-write (`create`, `save`, `touch`, `rotate`, `destroy`, GC deletions) holds
//!   the shard's lock: an in-process mutex plus an exclusive `flock` on the shard's `.lock` file,
//!   so compare-and-set holds across processes. `rotate` locks its two shards in index order.
//! - Expiry index: each record file's modification time is set to its `expires_at` before the
//!   rename. GC, `len` and `scan` learn expiry from a directory listing plus `stat`, without
//!   reading contents; GC reads only the files whose mtime says they are due (and re-checks the
//!   decoded deadline under the lock before deleting, so a wrong mtime can delay collection but
//!   never delete a live session). GC walks shards round-robin from where the last call stopped
//!   and stops after `limit` deletions.
//! - User index: an empty link file per (user, session) under `u/`. Links are written (and
//!   fsynced) before the record that names the user, and removed after the record stops naming
//!   them, so after a crash the index may hold stale links but never misses a session. Stale links
//!   are pruned lazily by `sessions_of`, `destroy_user` and GC; answers are always checked
//!   against the record itself.
//! - Directories are created owner-only (0700) and files owner read/write (0600).
//! - `touch` rewrites the record file with the new times (the data bytes are unchanged).
//! - `len` and `scan` read the files of live sessions (to leave out rotation aliases): they are
//!   admin operations, linear in the number of sessions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

mod disk;
mod ops;

use disk::*;

use super::{IntegrityReport, Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

const KIND: &str = "file";
const SHARDS: usize = Key::PARTS;
const MARKER: &str = "SESSIONKIT";
const FORMAT: u32 = 1;
const MARKER_PREFIX: &str = "sessionkit file store ";
/// Temp files older than this are leftovers of a crashed writer.
const STALE_TEMP: Duration = Duration::from_secs(3600);
/// Blocking file operations in flight at once.
const MAX_BLOCKING: usize = 16;

/// A session store in a directory, one file per session. See the module documentation.
///
/// ```no_run
/// # async fn demo() -> sessionkit::Result<()> {
/// let store = sessionkit::store::FileStore::open("file:///var/lib/myapp/sessions").await?;
/// # let _ = store; Ok(()) }
/// ```
///
/// Clones share the same handle.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    locks: Box<[Mutex<Option<File>>]>,
    gc_shard: AtomicUsize,
    temp_counter: AtomicU64,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (creating if needed) the store directory named by a `file://` URL. A directory
    /// that holds other files, or a store of a newer format, is refused with [`Error::Config`].
    pub async fn open(url: &str) -> Result<Self> {
        let root = parse_url(url)?;
        let root = tokio::task::spawn_blocking(move || prepare(&root).map(|()| root))
            .await
            .map_err(|e| Error::backend(KIND, "open", e))??;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                locks: (0..SHARDS).map(|_| Mutex::new(None)).collect(),
                gc_shard: AtomicUsize::new(0),
                temp_counter: AtomicU64::new(0),
                permits: Arc::new(Semaphore::new(MAX_BLOCKING)),
            }),
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking file work off the async executor threads.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::backend(KIND, op, e))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&inner)
        })
        .await
        .map_err(|e| Error::backend(KIND, op, e))?
    }

    /// Decodes every record file and reports the unreadable ones. Reads everything; meant for
    /// admin tools and tests.
    pub async fn verify(&self) -> Result<IntegrityReport> {
        self.run("verify", |s| s.verify()).await
    }
}

#[async_trait]
impl Store for FileStore {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let key = *key;
        self.run("load", move |s| s.load(&key, now)).await
    }

    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.run("create", move |s| s.create(&key, &record)).await
    }

    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.run("save", move |s| s.save(&key, &record, expected_version))
            .await
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let key = *key;
        self.run("touch", move |s| s.touch(&key, last_access, expires_at))
            .await
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        let (old, new, record, alias) = (*old, *new, record.clone(), alias.cloned());
        self.run("rotate", move |s| {
            s.rotate(&old, expected_version, &new, &record, alias.as_ref())
        })
        .await
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        let key = *key;
        self.run("destroy", move |s| s.take(&key)).await
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        self.run("gc", move |s| s.gc(now, limit)).await
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        self.run("len", move |s| s.len(now)).await
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        self.run("expired", move |s| s.expired_awaiting_gc(now))
            .await
            .map(Some)
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let cursor = cursor.map(str::to_owned);
        self.run("scan", move |s| s.scan(cursor.as_deref(), limit, now))
            .await
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let user = user.to_owned();
        self.run("sessions_of", move |s| s.sessions_of(&user, now))
            .await
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.run("destroy_user", move |s| s.destroy_user(&user))
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.run("ping", |s| {
            fs::metadata(s.root.join(MARKER))
                .map(drop)
                .map_err(io_err("ping"))
        })
        .await
    }
}

/// Plants raw bytes as a record file (for the conformance suite's corrupt-record test), with a
/// file time that says "live".
#[cfg(feature = "testkit")]
#[async_trait]
impl super::RawAccess for FileStore {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let (key, bytes) = (*key, bytes.to_vec());
        self.run("put_raw", move |s| {
            let _g = s.lock(key.shard())?;
            s.write_bytes(&key, &bytes, MAX_MTIME, "put_raw")
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sessionkit-file-unit-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn url(path: &Path) -> String {
        format!("file://{}", path.display())
    }

    fn key() -> Key {
        SessionId::generate().unwrap().key()
    }

    #[test]
    fn url_parsing() {
        assert_eq!(parse_url("file:///var/x").unwrap(), PathBuf::from("/var/x"));
        assert_eq!(parse_url("file://rel/x").unwrap(), PathBuf::from("rel/x"));
        assert!(parse_url("file://").is_err());
        assert!(parse_url("file:///x?a=b").is_err());
    }

    #[tokio::test]
    async fn bad_files_read_as_absent_and_never_leak() {
        let root = temp_root("bad");
        let store = FileStore::open(&url(&root)).await.unwrap();
        let keys: Vec<Key> = (0..5).map(|_| key()).collect();
        for k in &keys {
            let mut r = Record::new(1_000, 10_000, 20_000);
            r.data.set("who", &format!("\"{}\"", k.short())).unwrap();
            r.user = Some("ann".into());
            store.create(k, &r).await.unwrap();
        }
        let path = |k: &Key| store.inner.record_path(k);
        let good = fs::read(path(&keys[0])).unwrap();
        // truncated, zeroed, garbage, another session's bytes, a directory in place of the file.
        fs::write(path(&keys[0]), &good[..good.len() / 2]).unwrap();
        fs::write(path(&keys[1]), vec![0u8; good.len()]).unwrap();
        fs::write(path(&keys[2]), b"garbage \xff\xfe not a record").unwrap();
        fs::copy(path(&keys[4]), path(&keys[3])).unwrap();
        fs::remove_file(path(&keys[4])).unwrap();
        fs::create_dir(path(&keys[4])).unwrap();
        for k in &keys[..4] {
            assert_eq!(store.load(k, 2_000).await.unwrap(), None);
            assert!(matches!(
                store.save(k, &Record::new(2_000, 10_000, 20_000), 1).await,
                Err(Error::Conflict)
            ));
        }
        // A directory where a file should be is an I/O error, not a panic or someone's data.
        assert!(store.load(&keys[4], 2_000).await.is_err());
        fs::remove_dir(path(&keys[4])).unwrap();
        assert!(store
            .scan(None, 100, 2_000)
            .await
            .unwrap()
            .records
            .is_empty());
        assert_eq!(store.len(2_000).await.unwrap(), 0);
        assert!(store.sessions_of("ann", 2_000).await.unwrap().is_empty());
        let report = store.verify().await.unwrap();
        assert_eq!(report.problems.len(), 4, "{report:?}");
        // Corrupt files are collected once their file time (here: when they were written) is past.
        let later = crate::record::now_millis() + 1_000;
        assert_eq!(store.gc(later, 100).await.unwrap(), 4);
        assert!(store.verify().await.unwrap().is_clean());
        // Stray files with other names are ignored.
        fs::write(root.join("s/00/notes.txt"), b"hello").unwrap();
        assert_eq!(store.gc(later, 100).await.unwrap(), 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn foreign_and_newer_directories_are_refused() {
        let root = temp_root("foreign");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("important.txt"), b"do not touch").unwrap();
        let err = FileStore::open(&url(&root)).await.unwrap_err();
        assert!(err.to_string().contains("not a sessionkit"), "{err}");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);

        let root = temp_root("newer");
        drop(FileStore::open(&url(&root)).await.unwrap());
        fs::write(root.join(MARKER), "sessionkit file store 7\n").unwrap();
        let err = FileStore::open(&url(&root)).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");

        fs::write(root.join(MARKER), b"\x00\x00\x00").unwrap();
        assert!(FileStore::open(&url(&root)).await.is_err());

        let file = temp_root("plainfile");
        fs::write(&file, b"x").unwrap();
        assert!(FileStore::open(&url(&file)).await.is_err());
        for p in [&root, &file] {
            let _ = fs::remove_dir_all(p);
            let _ = fs::remove_file(p);
        }
    }

    #[tokio::test]
    async fn user_index_and_mtime_expiry_survive_reopen() {
        let root = temp_root("reopen");
        let (a, b) = (key(), key());
        {
            let store = FileStore::open(&url(&root)).await.unwrap();
            let mut r = Record::new(1_000, 10_000, 20_000);
            r.user = Some("ann".into());
            store.create(&a, &r).await.unwrap();
            let mut r2 = Record::new(1_000, 5_000, 20_000);
            r2.user = Some("ann".into());
            store.create(&b, &r2).await.unwrap();
            // Moving b to another user leaves no stale answer.
            r2.user = Some("bob".into());
            r2.version = 2;
            store.save(&b, &r2, 1).await.unwrap();
            assert!(store.touch(&a, 3_000, 15_000).await.unwrap());
        }
        let store = FileStore::open(&url(&root)).await.unwrap();
        let ann = store.sessions_of("ann", 3_500).await.unwrap();
        assert_eq!(ann.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![a]);
        assert_eq!(ann[0].1.expires_at, 15_000);
        assert_eq!(store.sessions_of("bob", 3_500).await.unwrap().len(), 1);
        let mtime = to_millis(
            fs::metadata(store.inner.record_path(&a))
                .unwrap()
                .modified()
                .unwrap(),
        );
        assert_eq!(mtime, 15_000);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.inner.record_path(&a)), 0o600);
            assert_eq!(mode(&store.inner.shard_dir(a.shard())), 0o700);
            assert_eq!(mode(&root), 0o700);
        }
        // GC at 6_000 takes b (expired at 5_000) only, and its user link with it.
        assert_eq!(store.gc(6_000, 10).await.unwrap(), 1);
        assert!(!store.inner.user_dir("bob").exists());
        assert_eq!(store.len(6_000).await.unwrap(), 1);
        assert_eq!(store.destroy_user("ann").await.unwrap(), 1);
        assert_eq!(store.len(6_000).await.unwrap(), 0);
        let _ = fs::remove_dir_all(&root);
    }
}
