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

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::backend(KIND, op, e)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Latest file time written: file systems cap timestamps (ext4 at year 2446), and a deadline
/// this far out (year 2381) is "never" for GC purposes anyway.
const MAX_MTIME: Millis = 13_000_000_000_000;

fn to_system_time(t: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t.clamp(0, MAX_MTIME) as u64)
}

fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as Millis,
        Err(_) => 0,
    }
}

/// Creates directories (and missing parents) readable by the owner only: session data is
/// private to the service.
fn private_dir_all(path: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// Options for a new private file (owner read/write only).
fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// fsync of a directory, making renames and unlinks in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Parses `file:///abs/dir` or `file://relative/dir`.
fn parse_url(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("file://")
        .ok_or_else(|| Error::bad_url(url, "not a file:// URL"))?;
    if rest.contains('?') || rest.contains('#') {
        return Err(Error::bad_url(
            url,
            "file store URL: no query parameters are supported",
        ));
    }
    if rest.is_empty() {
        return Err(Error::bad_url(
            url,
            "file store URL names no directory; use file:///abs/dir or file://relative/dir",
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Checks or creates the store layout under `root`.
fn prepare(root: &Path) -> Result<()> {
    let not_ours = |why: String| {
        Error::Config(format!(
            "{} is not a sessionkit file store: {why}",
            root.display()
        ))
    };
    match fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err(not_ours("not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_dir_all(root).map_err(io_err("open"))?;
        }
        Err(e) => return Err(io_err("open")(e)),
    }
    let marker = root.join(MARKER);
    match fs::read(&marker) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let version = text
                .strip_prefix(MARKER_PREFIX)
                .and_then(|v| v.trim_end().parse::<u32>().ok())
                .ok_or_else(|| not_ours(format!("unrecognised {MARKER} file")))?;
            if version > FORMAT {
                return Err(Error::Config(format!(
                    "{} has sessionkit file store format {version}, newer than this build \
                     understands ({FORMAT}); upgrade sessionkit",
                    root.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Refuse to scatter files into a directory that holds something else.
            for entry in fs::read_dir(root).map_err(io_err("open"))? {
                let name = entry.map_err(io_err("open"))?.file_name();
                let name = name.to_string_lossy();
                if !(name == "s" || name == "u" || name.starts_with(".SESSIONKIT")) {
                    return Err(not_ours(format!(
                        "the directory is not empty (found {name:?}) and has no {MARKER} file"
                    )));
                }
            }
            let tmp = root.join(format!(".{MARKER}.tmp.{}", std::process::id()));
            let write = || -> io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(format!("{MARKER_PREFIX}{FORMAT}\n").as_bytes())?;
                f.sync_all()?;
                fs::rename(&tmp, &marker)?;
                sync_dir(root)
            };
            write().map_err(io_err("open"))?;
        }
        Err(e) => return Err(io_err("open")(e)),
    }
    let mut created = false;
    for dir in ["s", "u"] {
        created |= create_dir(&root.join(dir))?;
    }
    for shard in 0..SHARDS {
        created |= create_dir(&root.join("s").join(format!("{shard:02x}")))?;
    }
    if created {
        sync_dir(&root.join("s")).map_err(io_err("open"))?;
        sync_dir(root).map_err(io_err("open"))?;
    }
    Ok(())
}

/// Creates a directory if missing; true if it did.
fn create_dir(path: &Path) -> Result<bool> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Ok(false)
            } else {
                Err(Error::Config(format!(
                    "{} should be a directory of the file store",
                    path.display()
                )))
            }
        }
        Err(e) => Err(io_err("open")(e)),
    }
}

/// Holds a shard locked (in this process and, through flock, across processes).
struct ShardGuard<'a> {
    file: MutexGuard<'a, Option<File>>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.file.as_ref() {
            let _ = f.unlock();
        }
    }
}

/// What reading a record file found.
enum Read {
    Absent,
    Corrupt,
    Found(Record),
}

impl Read {
    fn record(self) -> Option<Record> {
        match self {
            Read::Found(r) => Some(r),
            _ => None,
        }
    }
}

impl Inner {
    fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join("s").join(format!("{shard:02x}"))
    }

    fn record_path(&self, key: &Key) -> PathBuf {
        self.shard_dir(key.shard()).join(key.to_hex())
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        let h = hex(&Sha256::digest(user.as_bytes()));
        self.root.join("u").join(&h[..2]).join(h)
    }

    fn lock(&self, shard: usize) -> Result<ShardGuard<'_>> {
        let mut file = self.locks[shard].lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.shard_dir(shard).join(".lock"))
                .map_err(io_err("lock"))?;
            *file = Some(f);
        }
        file.as_ref()
            .expect("opened above")
            .lock()
            .map_err(io_err("lock"))?;
        Ok(ShardGuard { file })
    }

    fn read(&self, key: &Key, op: &'static str) -> Result<Read> {
        let path = self.record_path(key);
        match fs::read(&path) {
            Ok(bytes) => match Record::decode(key, &bytes) {
                Ok(r) => Ok(Read::Found(r)),
                Err(e) => {
                    tracing::warn!(store = KIND, key = %key.short(), error = %e, "corrupt session file; treated as absent");
                    Ok(Read::Corrupt)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Read::Absent),
            Err(e) => Err(Error::backend(
                KIND,
                op,
                io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            )),
        }
    }

    fn write(&self, key: &Key, record: &Record, op: &'static str) -> Result<()> {
        // The mtime is the expiry index (see the module doc).
        self.write_bytes(key, &record.encode(key), record.expires_at, op)
    }

    /// Atomically replaces the file of `key` with `bytes`, its mtime set to `expires_at`.
    fn write_bytes(
        &self,
        key: &Key,
        bytes: &[u8],
        expires_at: Millis,
        op: &'static str,
    ) -> Result<()> {
        let dir = self.shard_dir(key.shard());
        let tmp = dir.join(format!(
            ".tmp.{}.{}.{}",
            key.short(),
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> io::Result<()> {
            let create = || private_file().open(&tmp);
            let mut f = match create() {
                // Our pid and counter make the name unique among live writers: a file already
                // there is the leftover of a crashed process that had the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    fs::remove_file(&tmp)?;
                    create()?
                }
                other => other?,
            };
            f.write_all(bytes)?;
            f.set_modified(to_system_time(expires_at))?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, dir.join(key.to_hex()))?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err(op))
    }

    /// Removes the record file; true if it was there.
    fn remove(&self, key: &Key, op: &'static str) -> Result<bool> {
        let dir = self.shard_dir(key.shard());
        match fs::remove_file(dir.join(key.to_hex())) {
            Ok(()) => {
                sync_dir(&dir).map_err(io_err(op))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(op)(e)),
        }
    }

    /// Adds the user-index link for (`user`, `key`), durably, before a record names the user.
    fn link(&self, user: &str, key: &Key, op: &'static str) -> Result<()> {
        let dir = self.user_dir(user);
        let link = dir.join(key.to_hex());
        if link.exists() {
            return Ok(());
        }
        // A concurrent unlink may remove an emptied user directory between our create_dir_all
        // and the create; a few attempts settle it.
        let mut last = None;
        for _ in 0..5 {
            let fresh_dir = !dir.exists();
            let attempt = private_dir_all(&dir).and_then(|()| match private_file().open(&link) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other.map(drop),
            });
            match attempt {
                Ok(()) => {
                    // A new user directory is durable only once its parents are synced too.
                    let mut synced = sync_dir(&dir);
                    if fresh_dir {
                        let bucket = dir.parent().expect("u/xx");
                        synced = synced
                            .and_then(|()| sync_dir(bucket))
                            .and_then(|()| sync_dir(bucket.parent().expect("u")));
                    }
                    return synced.map_err(io_err(op));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
                Err(e) => return Err(io_err(op)(e)),
            }
        }
        Err(io_err(op)(last.expect("looped")))
    }

    /// Removes the user-index link (after the record stopped naming the user). Stale links are
    /// harmless, so failures are only logged.
    fn unlink(&self, user: &str, key: &Key) {
        let dir = self.user_dir(user);
        match fs::remove_file(dir.join(key.to_hex())) {
            Ok(()) => {
                // Fails (harmlessly) while the user has other sessions.
                let _ = fs::remove_dir(&dir);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(store = KIND, key = %key.short(), error = %e, "could not remove a user index link")
            }
        }
    }

    /// Keys named in a directory (record files or user links), ignoring everything else.
    fn keys_in(dir: &Path, op: &'static str) -> Result<Vec<(Key, fs::DirEntry)>> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(op)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(op))?;
            if let Some(key) = entry.file_name().to_str().and_then(Key::from_hex) {
                out.push((key, entry));
            }
        }
        Ok(out)
    }

    /// The expiry recorded in a file's mtime, if it can be read.
    fn mtime(entry: &fs::DirEntry) -> Option<Millis> {
        entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .map(to_millis)
    }

    /// Live, non-alias records of one shard with keys after `after`, in key order.
    fn live_in_shard(&self, shard: usize, after: Option<&Key>, now: Millis) -> Result<Vec<Key>> {
        let mut keys: Vec<Key> = Self::keys_in(&self.shard_dir(shard), "scan")?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k > a))
            // mtime == expires_at: expired files are skipped without being read.
            .filter(|(_, e)| Self::mtime(e).is_none_or(|t| t > now))
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        Ok(self
            .read(key, "load")?
            .record()
            .filter(|r| !r.is_expired(now)))
    }

    fn create(&self, key: &Key, record: &Record) -> Result<()> {
        let _g = self.lock(key.shard())?;
        let cur = self.read(key, "create")?.record();
        if cur
            .as_ref()
            .is_some_and(|r| !r.is_expired(record.last_access))
        {
            return Err(Error::Exists);
        }
        if let Some(u) = &record.user {
            self.link(u, key, "create")?;
        }
        self.write(key, record, "create")?;
        if let Some(old) = cur.and_then(|r| r.user) {
            if record.user.as_ref() != Some(&old) {
                self.unlink(&old, key);
            }
        }
        Ok(())
    }

    fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let _g = self.lock(key.shard())?;
        let cur = match self.read(key, "save")?.record() {
            Some(r)
                if !r.is_expired(record.last_access)
                    && r.version == expected_version
                    && r.successor().is_none() =>
            {
                r
            }
            _ => return Err(Error::Conflict),
        };
        if let Some(u) = &record.user {
            if cur.user.as_ref() != Some(u) {
                self.link(u, key, "save")?;
            }
        }
        self.write(key, record, "save")?;
        if let Some(old) = &cur.user {
            if record.user.as_ref() != Some(old) {
                self.unlink(old, key);
            }
        }
        Ok(())
    }

    fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let _g = self.lock(key.shard())?;
        let Some(mut r) = self
            .read(key, "touch")?
            .record()
            .filter(|r| !r.is_expired(last_access))
        else {
            return Ok(false);
        };
        r.last_access = last_access;
        r.expires_at = expires_at.min(r.absolute_expires_at);
        self.write(key, &r, "touch")?;
        Ok(true)
    }

    fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        grace_until: Option<Millis>,
    ) -> Result<()> {
        // Both shards, in index order, so two rotations (in any processes) cannot deadlock.
        let _locks = super::shards::lock_two(old.shard(), new.shard(), |i| self.lock(i))?;
        let now = record.last_access;
        let prev = match self.read(old, "rotate")?.record() {
            Some(r)
                if !r.is_expired(now)
                    && r.version == expected_version
                    && r.successor().is_none() =>
            {
                r
            }
            _ => return Err(Error::Conflict),
        };
        if self
            .read(new, "rotate")?
            .record()
            .is_some_and(|r| !r.is_expired(now))
        {
            return Err(Error::Exists);
        }
        // New home first: a crash after this line leaves the session reachable under both keys
        // (same data), never under neither.
        if let Some(u) = &record.user {
            self.link(u, new, "rotate")?;
        }
        self.write(new, record, "rotate")?;
        match grace_until {
            Some(until) => {
                self.write(old, &Record::alias(*new, now, until), "rotate")?;
            }
            None => {
                self.remove(old, "rotate")?;
            }
        }
        if let Some(u) = &prev.user {
            self.unlink(u, old);
        }
        Ok(())
    }

    fn destroy(&self, key: &Key) -> Result<bool> {
        let _g = self.lock(key.shard())?;
        let cur = self.read(key, "destroy")?;
        let was = self.remove(key, "destroy")?;
        if let Read::Found(Record { user: Some(u), .. }) = &cur {
            self.unlink(u, key);
        }
        Ok(was)
    }

    fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut removed = 0;
        let start = self.gc_shard.load(Ordering::Relaxed) % SHARDS;
        for i in 0..SHARDS {
            if removed >= limit {
                break;
            }
            let shard = (start + i) % SHARDS;
            self.gc_shard.store(shard, Ordering::Relaxed);
            let dir = self.shard_dir(shard);
            let mut due = Vec::new();
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("gc")(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("gc"))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(key) = Key::from_hex(name) {
                    if Self::mtime(&entry).is_some_and(|t| t <= now) {
                        due.push(key);
                    }
                } else if name.starts_with(".tmp.") {
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_TEMP);
                    if stale {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            if due.is_empty() {
                continue;
            }
            let _g = self.lock(shard)?;
            for key in due {
                if removed >= limit {
                    break;
                }
                match self.read(&key, "gc")? {
                    Read::Absent => {}
                    Read::Found(r) if !r.is_expired(now) => {}
                    Read::Found(r) => {
                        if self.remove(&key, "gc")? {
                            removed += 1;
                        }
                        if let Some(u) = &r.user {
                            self.unlink(u, &key);
                        }
                    }
                    // Unreadable and past its deadline by the file time: nothing can ever load it.
                    Read::Corrupt => {
                        if self.remove(&key, "gc")? {
                            removed += 1;
                        }
                    }
                }
            }
        }
        if removed < limit {
            // A full round found less than a batch: start the next one where this one began.
            self.gc_shard.store(start, Ordering::Relaxed);
        }
        Ok(removed)
    }

    fn len(&self, now: Millis) -> Result<u64> {
        let mut n = 0;
        for shard in 0..SHARDS {
            for key in self.live_in_shard(shard, None, now)? {
                if self
                    .load(&key, now)?
                    .is_some_and(|r| r.successor().is_none())
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// What a full GC pass at `now` would remove: files due by their mtime whose record is
    /// expired or unreadable (a directory walk, like `len`, reading only the due files).
    fn expired_awaiting_gc(&self, now: Millis) -> Result<u64> {
        let mut n = 0;
        for shard in 0..SHARDS {
            for (key, entry) in Self::keys_in(&self.shard_dir(shard), "expired")? {
                if Self::mtime(&entry).is_some_and(|t| t <= now) {
                    n += match self.read(&key, "expired")? {
                        Read::Found(r) => u64::from(r.is_expired(now)),
                        Read::Corrupt => 1,
                        Read::Absent => 0,
                    };
                }
            }
        }
        Ok(n)
    }

    fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = super::key_cursor(cursor)?;
        let limit = limit.max(1);
        let start = after.map(|k| k.shard()).unwrap_or(0);
        let mut records = Vec::new();
        let mut last = None;
        'shards: for shard in start..SHARDS {
            for key in self.live_in_shard(shard, after.as_ref(), now)? {
                last = Some(key);
                if let Some(r) = self.load(&key, now)?.filter(|r| r.successor().is_none()) {
                    records.push((key, r));
                    if records.len() >= limit {
                        break 'shards;
                    }
                }
            }
        }
        let next = (records.len() >= limit)
            .then_some(last)
            .flatten()
            .map(|k| k.to_hex());
        Ok(Page { records, next })
    }

    /// Drops the link (user, key) if the record no longer names `user`, under the shard lock.
    fn prune_link(&self, user: &str, key: &Key) -> Result<()> {
        let _g = self.lock(key.shard())?;
        let still = self
            .read(key, "sessions_of")?
            .record()
            .is_some_and(|r| r.user.as_deref() == Some(user));
        if !still {
            self.unlink(user, key);
        }
        Ok(())
    }

    fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let mut out = Vec::new();
        for (key, _) in Self::keys_in(&self.user_dir(user), "sessions_of")? {
            match self.read(&key, "sessions_of")? {
                Read::Found(r) if r.user.as_deref() == Some(user) => {
                    if !r.is_expired(now) && r.successor().is_none() {
                        out.push((key, r));
                    }
                }
                _ => self.prune_link(user, &key)?,
            }
        }
        out.sort_by_key(|(_, r)| r.created);
        Ok(out)
    }

    fn destroy_user(&self, user: &str) -> Result<u64> {
        let mut n = 0;
        for (key, _) in Self::keys_in(&self.user_dir(user), "destroy_user")? {
            let _g = self.lock(key.shard())?;
            if let Read::Found(r) = self.read(&key, "destroy_user")? {
                if r.user.as_deref() == Some(user) && self.remove(&key, "destroy_user")? {
                    n += 1;
                }
            }
            self.unlink(user, &key);
        }
        Ok(n)
    }

    fn verify(&self) -> Result<IntegrityReport> {
        let mut report = IntegrityReport::default();
        for shard in 0..SHARDS {
            for (key, _) in Self::keys_in(&self.shard_dir(shard), "verify")? {
                match self.read(&key, "verify")? {
                    Read::Found(_) => report.records += 1,
                    Read::Corrupt => report
                        .problems
                        .push(format!("corrupt file {}", key.to_hex())),
                    Read::Absent => {}
                }
            }
        }
        Ok(report)
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
        grace_until: Option<Millis>,
    ) -> Result<()> {
        let (old, new, record) = (*old, *new, record.clone());
        self.run("rotate", move |s| {
            s.rotate(&old, expected_version, &new, &record, grace_until)
        })
        .await
    }

    async fn destroy(&self, key: &Key) -> Result<bool> {
        let key = *key;
        self.run("destroy", move |s| s.destroy(&key)).await
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
