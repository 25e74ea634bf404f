//! The file store's synchronous operations, run on blocking threads: each read-modify-write
//! under its shard's lock (in-process mutex plus `flock`), atomic writes through a temp file,
//! the mtime expiry index and the user index. See the parent module for the layout.

use super::*;

/// How often `sessions_of` lists again after meeting a stale link (a rotation in flight).
const LISTING_PASSES: usize = 8;

/// Holds a shard locked (in this process and, through flock, across processes).
pub(super) struct ShardGuard<'a> {
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
pub(super) enum Read {
    Absent,
    Corrupt,
    Found(Record),
}

impl Read {
    pub(super) fn record(self) -> Option<Record> {
        match self {
            Read::Found(r) => Some(r),
            _ => None,
        }
    }
}

impl Inner {
    pub(super) fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join("s").join(format!("{shard:02x}"))
    }

    pub(super) fn record_path(&self, key: &Key) -> PathBuf {
        self.shard_dir(key.shard()).join(key.to_hex())
    }

    pub(super) fn user_dir(&self, user: &str) -> PathBuf {
        let h = hex(&Sha256::digest(user.as_bytes()));
        self.root.join("u").join(&h[..2]).join(h)
    }

    pub(super) fn lock(&self, shard: usize) -> Result<ShardGuard<'_>> {
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

    pub(super) fn read(&self, key: &Key, op: &'static str) -> Result<Read> {
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

    pub(super) fn write(&self, key: &Key, record: &Record, op: &'static str) -> Result<()> {
        // The mtime is the expiry index (see the module doc).
        self.write_bytes(key, &record.encode(key), record.expires_at, op)
    }

    /// Atomically replaces the file of `key` with `bytes`, its mtime set to `expires_at`.
    pub(super) fn write_bytes(
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
    pub(super) fn remove(&self, key: &Key, op: &'static str) -> Result<bool> {
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
    pub(super) fn link(&self, user: &str, key: &Key, op: &'static str) -> Result<()> {
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
    pub(super) fn unlink(&self, user: &str, key: &Key) {
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
    pub(super) fn keys_in(dir: &Path, op: &'static str) -> Result<Vec<(Key, fs::DirEntry)>> {
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
    pub(super) fn mtime(entry: &fs::DirEntry) -> Option<Millis> {
        entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .map(to_millis)
    }

    /// Live, non-alias records of one shard with keys after `after`, in key order.
    pub(super) fn live_in_shard(
        &self,
        shard: usize,
        after: Option<&Key>,
        now: Millis,
    ) -> Result<Vec<Key>> {
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

    pub(super) fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        Ok(self
            .read(key, "load")?
            .record()
            .filter(|r| !r.is_expired(now)))
    }

    pub(super) fn create(&self, key: &Key, record: &Record) -> Result<()> {
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

    pub(super) fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
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

    pub(super) fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
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

    pub(super) fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        // Both shards, in index order, so two rotations (in any processes) cannot deadlock.
        let _locks = crate::store::shards::lock_two(old.shard(), new.shard(), |i| self.lock(i))?;
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
        match alias {
            Some(alias) => {
                self.write(old, alias, "rotate")?;
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

    pub(super) fn take(&self, key: &Key) -> Result<Option<Record>> {
        let _g = self.lock(key.shard())?;
        let cur = self.read(key, "destroy")?.record();
        self.remove(key, "destroy")?;
        if let Some(Record { user: Some(u), .. }) = &cur {
            self.unlink(u, key);
        }
        Ok(cur)
    }

    pub(super) fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
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

    pub(super) fn len(&self, now: Millis) -> Result<u64> {
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
    pub(super) fn expired_awaiting_gc(&self, now: Millis) -> Result<u64> {
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

    pub(super) fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = crate::store::key_cursor(cursor)?;
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
    pub(super) fn prune_link(&self, user: &str, key: &Key) -> Result<()> {
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

    /// The user's live sessions. The directory listing and the reads are not one snapshot: a
    /// session rotating meanwhile can be listed under its old key and read after it moved. A
    /// rotation links the new key before it retires the old one, so a pass that met a stale
    /// link lists again, keeping what earlier passes found (a session that moved on is listed
    /// under both keys rather than under neither). (Revocation
    /// depends on a listing never missing a session; see the conformance suite.)
    pub(super) fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let mut out = Vec::new();
        for _ in 0..LISTING_PASSES {
            let mut stale = false;
            for (key, _) in Self::keys_in(&self.user_dir(user), "sessions_of")? {
                // A later pass may meet a session again: the fresher read wins.
                out.retain(|(k, _): &(Key, Record)| *k != key);
                match self.read(&key, "sessions_of")? {
                    Read::Found(r) if r.user.as_deref() == Some(user) => {
                        if !r.is_expired(now) && r.successor().is_none() {
                            out.push((key, r));
                        }
                    }
                    _ => {
                        stale = true;
                        self.prune_link(user, &key)?;
                    }
                }
            }
            if !stale {
                break;
            }
        }
        out.sort_by_key(|(_, r)| r.created);
        Ok(out)
    }

    pub(super) fn destroy_user(&self, user: &str) -> Result<u64> {
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

    pub(super) fn verify(&self) -> Result<IntegrityReport> {
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
