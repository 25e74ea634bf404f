//! [`MemoryStore`]: the in-process store.
//!
//! The classic memory provider, made concurrent and bounded: 256 shards chosen by the first byte
//! of the (already uniformly random) key, each a hash table plus an expiry index ordered by
//! deadline, so a GC pass visits only entries that are due. Locks are plain `RwLock`s that are
//! never held across an `.await` (only `gc` awaits, between lock holds). Because shards split
//! the key space by prefix, a scan in key order needs no global index.
//!
//! The expiry index is lazy: each session has exactly one index entry, filed under a *lower
//! bound* of its deadline. A save or touch that moves the deadline later (nearly all of them)
//! leaves the index alone, so the hot path never touches the B-tree; one that moves it earlier
//! re-files it at once. GC pops entries that are due and re-files those whose session is still
//! live under their real deadline, which costs at most one B-tree operation per session per idle
//! timeout instead of two per save. Everything that counts (`len`, `expired_awaiting_gc`) checks
//! the record itself, so the counts stay exact.
//!
//! (A little over 700 lines: the lazy expiry index, the store and the tests that pin the
//! index's invariants belong together.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, RwLock, RwLockWriteGuard};

use async_trait::async_trait;
use hashbrown::hash_table::{HashTable, OccupiedEntry};

use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

/// How often `sessions_of` copies the user index again after meeting a key that moved.
const LISTING_PASSES: usize = 8;
const SHARDS: usize = Key::PARTS;
const USER_SHARDS: usize = 64;
/// Index entries a GC batch handles per hold of a shard's write lock.
const GC_LOCK_SPAN: usize = 1024;

/// In-memory session store. Fast, and gone when the process exits.
///
/// ```
/// use std::sync::Arc;
/// use sessionkit::{Config, Manager, MemoryStore};
///
/// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
/// # let _ = manager;
/// ```
pub struct MemoryStore {
    shards: Box<[RwLock<Shard>]>,
    users: Box<[Mutex<UserIndex>]>,
}

#[derive(Default)]
struct Shard {
    map: Records,
    // Exactly one `(filed, key)` for every entry of `map`, where `filed` is that entry's
    // `Stored::filed` (at or before the record's deadline).
    expiry: BTreeSet<(Millis, Key)>,
    aliases: usize,
}

/// A record with its key and where the expiry index files it.
struct Stored {
    key: Key,
    record: Record,
    // At or before `record.expires_at`; the index entry is `(filed, key)`. Keeping it here
    // lets a removal find the entry without a search.
    filed: Millis,
}

/// One shard's records: a hash table of boxes that carry their own key.
///
/// A hash table runs 45-90% full. With the key in the box, a slot is one pointer (8 bytes)
/// instead of key + pointer (40), which saves about 65 B per session at 1M sessions for 32 more
/// bytes in each box. A lookup still reads one slot and then one box, as before. A save
/// reuses the box.
#[derive(Default)]
struct Records(HashTable<Box<Stored>>);

/// The keys are SHA-256 outputs: any 8 of their bytes are already a good hash (bytes 0.. pick
/// the shard, so take 8..16).
fn key_hash(key: &Key) -> u64 {
    u64::from_le_bytes(key.0[8..16].try_into().expect("8 bytes"))
}

impl Records {
    fn get(&self, key: &Key) -> Option<&Stored> {
        self.0.find(key_hash(key), |s| s.key == *key).map(|b| &**b)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Stored> {
        self.0
            .find_mut(key_hash(key), |s| s.key == *key)
            .map(|b| &mut **b)
    }

    fn entry(&mut self, key: &Key) -> Option<OccupiedEntry<'_, Box<Stored>>> {
        self.0.find_entry(key_hash(key), |s| s.key == *key).ok()
    }

    fn remove(&mut self, key: &Key) -> Option<Box<Stored>> {
        self.entry(key).map(|e| e.remove().0)
    }

    /// Adds a record under a key that is not in the table.
    fn insert_new(&mut self, stored: Box<Stored>) {
        self.0
            .insert_unique(key_hash(&stored.key), stored, |s| key_hash(&s.key));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.0.iter().map(|b| &**b)
    }
}

/// The keys are SHA-256 outputs: any 8 of their bytes are already a good hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Key` hashes as its 32-byte array: take bytes 8..16 (bytes 0.. pick the shard).
        if bytes.len() >= 16 {
            self.0 = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
    }
}

type KeyHash = BuildHasherDefault<KeyHasher>;

/// One shard of the user index: user name → keys of their sessions.
type UserIndex = HashMap<String, HashSet<Key, KeyHash>>;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            users: (0..USER_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, key: &Key) -> &RwLock<Shard> {
        &self.shards[key.shard()]
    }

    fn write(&self, key: &Key) -> RwLockWriteGuard<'_, Shard> {
        // A panic elsewhere while holding the lock cannot leave a shard half-updated in a way
        // that matters more than losing the whole store, so poisoning is ignored.
        self.shard(key).write().unwrap_or_else(|e| e.into_inner())
    }

    fn user_shard(&self, user: &str) -> &Mutex<UserIndex> {
        let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.users[(h % USER_SHARDS as u64) as usize]
    }

    fn index_user(&self, user: Option<&str>, key: &Key, add: bool) {
        let Some(user) = user else { return };
        let mut users = self
            .user_shard(user)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if add {
            users.entry(user.to_owned()).or_default().insert(*key);
        } else if let Some(set) = users.get_mut(user) {
            set.remove(key);
            if set.is_empty() {
                users.remove(user);
            }
        }
    }

    /// One hold of `shard`'s write lock during GC: pops due index entries, removes expired
    /// records into `gone` (freed by the caller after the lock is released) and re-files live
    /// ones under their real deadline. Re-filed entries do not count against `limit` (the
    /// contract counts removals), so the lock is also given up after `GC_LOCK_SPAN` entries of
    /// either kind. Returns true if entries may still be due.
    // The boxes are moved out of the table as they are (a pointer each) and freed by the caller
    // after the lock is released; unboxing them here would copy each record under the lock.
    #[allow(clippy::vec_box)]
    fn gc_span(
        &self,
        shard: &RwLock<Shard>,
        now: Millis,
        limit: usize,
        removed: &mut usize,
        gone: &mut Vec<Box<Stored>>,
    ) -> bool {
        let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
        let Shard {
            map,
            expiry,
            aliases,
        } = &mut *s;
        for _ in 0..GC_LOCK_SPAN {
            if *removed >= limit {
                return false;
            }
            match expiry.first() {
                Some(&(t, _)) if t <= now => {}
                _ => return false,
            }
            let (_, key) = expiry.pop_first().expect("just seen");
            match map.entry(&key) {
                Some(e) if e.get().record.is_expired(now) => {
                    let (old, _) = e.remove();
                    *aliases -= old.record.successor().is_some() as usize;
                    gone.push(old);
                    *removed += 1;
                }
                Some(mut e) => {
                    // Still live: its deadline moved on since it was filed. The new entry lies
                    // after `now`, so this pass does not meet it again.
                    let stored = e.get_mut();
                    stored.filed = stored.record.expires_at;
                    expiry.insert((stored.filed, key));
                }
                None => debug_assert!(false, "expiry index names a missing record"),
            }
        }
        true
    }

    // The memory store never waits, so its load, create, save and touch are plain functions: the
    // `Store` methods and their `_ready` fast paths (no boxed future per call) share them.

    fn load_now(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        Ok(shard.live(key, now).cloned())
    }

    fn create_now(&self, key: &Key, record: &Record) -> Result<()> {
        let mut shard = self.write(key);
        if shard.live(key, record.last_access).is_some() {
            return Err(Error::Exists);
        }
        if let Some(old) = shard.put(*key, record.clone()) {
            self.index_user(old.user.as_deref(), key, false);
        }
        self.index_user(record.user.as_deref(), key, true);
        Ok(())
    }

    fn save_now(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let mut shard = self.write(key);
        match shard.live(key, record.last_access) {
            Some(cur) if cur.version == expected_version && cur.successor().is_none() => {}
            _ => return Err(Error::Conflict),
        }
        // Copy into the stored record's own buffers: no allocation when the data did not grow.
        if let Some(old_user) = shard.overwrite(key, record) {
            self.index_user(old_user.as_deref(), key, false);
            self.index_user(record.user.as_deref(), key, true);
        }
        Ok(())
    }

    fn touch_now(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let mut shard = self.write(key);
        let Shard { map, expiry, .. } = &mut *shard;
        let Some(stored) = map
            .get_mut(key)
            .filter(|s| !s.record.is_expired(last_access))
        else {
            return Ok(false);
        };
        let rec = &mut stored.record;
        rec.last_access = last_access;
        rec.expires_at = expires_at.min(rec.absolute_expires_at);
        // A later deadline keeps the index entry (a lower bound); only an earlier one re-files.
        if rec.expires_at < stored.filed {
            expiry.remove(&(stored.filed, *key));
            stored.filed = rec.expires_at;
            expiry.insert((stored.filed, *key));
        }
        Ok(true)
    }
}

/// The body of [`MemoryStore::rotate`], on locked shards (`new_shard` is `None` when both keys
/// fall in the same shard). Returns the record that left `old`.
fn move_record(
    old_shard: &mut Shard,
    new_shard: Option<&mut Shard>,
    old: &Key,
    expected_version: u64,
    new: &Key,
    record: &Record,
    alias: Option<&Record>,
) -> Result<Record> {
    let now = record.last_access;
    match old_shard.live(old, now) {
        Some(cur) if cur.version == expected_version && cur.successor().is_none() => {}
        _ => return Err(Error::Conflict),
    }
    let target = match new_shard {
        Some(s) => s,
        None => &mut *old_shard,
    };
    if target.live(new, now).is_some() {
        return Err(Error::Exists);
    }
    target.put(*new, record.clone());
    let prev = old_shard.take(old).expect("checked above");
    if let Some(alias) = alias {
        old_shard.put(*old, alias.clone());
    }
    Ok(prev)
}

impl Shard {
    /// Inserts or replaces, keeping the expiry index and alias count in step.
    /// Returns the previous record.
    fn put(&mut self, key: Key, record: Record) -> Option<Record> {
        self.aliases += record.successor().is_some() as usize;
        let deadline = record.expires_at;
        let old = match self.map.get_mut(&key) {
            Some(stored) => {
                let old = std::mem::replace(&mut stored.record, record);
                if deadline < stored.filed {
                    self.expiry.remove(&(stored.filed, key));
                    self.expiry.insert((deadline, key));
                    stored.filed = deadline;
                }
                Some(old)
            }
            None => {
                self.map.insert_new(Box::new(Stored {
                    key,
                    record,
                    filed: deadline,
                }));
                self.expiry.insert((deadline, key));
                None
            }
        };
        if let Some(old) = &old {
            self.aliases -= old.successor().is_some() as usize;
        }
        old
    }

    /// Overwrites the live record under `key` with a copy of `record`, reusing its buffers.
    /// Returns the previous user if it changed (the caller fixes the user index).
    fn overwrite(&mut self, key: &Key, record: &Record) -> Option<Option<String>> {
        let stored = self.map.get_mut(key)?;
        let was_alias = stored.record.successor().is_some();
        let old_user = (stored.record.user != record.user).then(|| stored.record.user.take());
        stored.record.clone_from(record);
        let deadline = record.expires_at;
        if deadline < stored.filed {
            self.expiry.remove(&(stored.filed, *key));
            self.expiry.insert((deadline, *key));
            stored.filed = deadline;
        }
        self.aliases -= was_alias as usize;
        self.aliases += record.successor().is_some() as usize;
        old_user
    }

    fn take(&mut self, key: &Key) -> Option<Record> {
        let old = self.map.remove(key)?;
        self.expiry.remove(&(old.filed, *key));
        self.aliases -= old.record.successor().is_some() as usize;
        Some(old.record)
    }

    fn live(&self, key: &Key, now: Millis) -> Option<&Record> {
        self.map
            .get(key)
            .map(|s| &s.record)
            .filter(|r| !r.is_expired(now))
    }

    /// The record under `key` if it is expired at `now` (what GC would remove).
    fn expired(&self, key: &Key, now: Millis) -> Option<&Record> {
        self.map
            .get(key)
            .map(|s| &s.record)
            .filter(|r| r.is_expired(now))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        self.load_now(key, now)
    }

    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        self.create_now(key, record)
    }

    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        self.save_now(key, record, expected_version)
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        self.touch_now(key, last_access, expires_at)
    }

    fn load_ready(&self, key: &Key, now: Millis) -> Option<Result<Option<Record>>> {
        Some(self.load_now(key, now))
    }

    fn create_ready(&self, key: &Key, record: &Record) -> Option<Result<()>> {
        Some(self.create_now(key, record))
    }

    fn save_ready(&self, key: &Key, record: &Record, expected_version: u64) -> Option<Result<()>> {
        Some(self.save_now(key, record, expected_version))
    }

    fn touch_ready(
        &self,
        key: &Key,
        last_access: Millis,
        expires_at: Millis,
    ) -> Option<Result<bool>> {
        Some(self.touch_now(key, last_access, expires_at))
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        // The user index learns the new key first, so a `sessions_of` meanwhile finds the
        // session under one key or the other, never neither (revocation relies on it).
        self.index_user(record.user.as_deref(), new, true);
        // Both shards at once make the move one step: nobody sees both keys live or neither
        // with data.
        let (mut from, mut to) = super::shards::lock_two(old.shard(), new.shard(), |i| {
            Ok::<_, std::convert::Infallible>(
                self.shards[i].write().unwrap_or_else(|e| e.into_inner()),
            )
        })
        .unwrap_or_else(|never| match never {});
        let moved = move_record(
            &mut from,
            to.as_deref_mut(),
            old,
            expected_version,
            new,
            record,
            alias,
        );
        drop(to);
        drop(from);
        match moved {
            Ok(prev) => {
                self.index_user(prev.user.as_deref(), old, false);
                Ok(())
            }
            Err(e) => {
                // Nothing moved: the new key names no session of this user.
                if !matches!(e, Error::Exists) {
                    self.index_user(record.user.as_deref(), new, false);
                }
                Err(e)
            }
        }
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        let old = self.write(key).take(key);
        if let Some(old) = &old {
            self.index_user(old.user.as_deref(), key, false);
        }
        Ok(old)
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut removed = 0;
        // Removed records are dropped after the shard lock is released (freeing is the larger
        // part of a removal), so requests on that shard wait only for the unlinking.
        let mut gone: Vec<Box<Stored>> = Vec::new();
        for shard in self.shards.iter() {
            if removed >= limit {
                break;
            }
            // A read lock first: most shards have nothing due, and readers keep going.
            let due = {
                let s = shard.read().unwrap_or_else(|e| e.into_inner());
                s.expiry.first().is_some_and(|(t, _)| *t <= now)
            };
            if !due {
                continue;
            }
            let mut more = true;
            while more && removed < limit {
                more = self.gc_span(shard, now, limit, &mut removed, &mut gone);
                for old in gone.drain(..) {
                    self.index_user(old.record.user.as_deref(), &old.key, false);
                }
                if more {
                    // A long run of due entries (a burst of expiries, or many live sessions
                    // re-filed at once): let other tasks on this thread run between spans.
                    tokio::task::yield_now().await;
                }
            }
        }
        Ok(removed)
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            // Every expired record is filed at or before `now` (entries are lower bounds), but
            // so are live ones whose deadline moved on: check each record. Expired aliases are
            // already left out by `aliases`: count only expired sessions.
            let expired = s
                .expiry
                .range(..=(now, Key([0xff; 32])))
                .filter(|(_, k)| s.expired(k, now).is_some_and(|r| r.successor().is_none()))
                .count();
            n += (s.map.len() - s.aliases).saturating_sub(expired) as u64;
        }
        Ok(n)
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            n += s
                .expiry
                .range(..=(now, Key([0xff; 32])))
                .filter(|(_, k)| s.expired(k, now).is_some())
                .count() as u64;
        }
        Ok(Some(n))
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = super::key_cursor(cursor)?;
        let limit = limit.max(1);
        let start = after.map(|k| k.shard()).unwrap_or(0);
        let mut records = Vec::new();
        for shard in &self.shards[start..] {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            let mut found: Vec<&Stored> = s
                .map
                .iter()
                .filter(|s| {
                    after.is_none_or(|a| s.key > a)
                        && !s.record.is_expired(now)
                        && s.record.successor().is_none()
                })
                .collect();
            found.sort_unstable_by_key(|s| s.key);
            for s in found.into_iter().take(limit - records.len()) {
                records.push((s.key, s.record.clone()));
            }
            if records.len() >= limit {
                break;
            }
        }
        let next = (records.len() >= limit).then(|| records.last().unwrap().0.to_hex());
        Ok(Page { records, next })
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let mut out: Vec<(Key, Record)> = Vec::new();
        // The index copy and the record reads are separate lock holds: a session that rotates
        // between them is listed under a key it has left. Its new key joined the index first,
        // so a pass that met a key without its record copies the index again, keeping what
        // earlier passes found (revocation depends on never missing a session).
        for _ in 0..LISTING_PASSES {
            let keys: Vec<Key> = {
                let users = self
                    .user_shard(user)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                users
                    .get(user)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default()
            };
            let mut stale = false;
            for key in keys {
                out.retain(|(k, _)| *k != key);
                let s = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
                match s.live(&key, now) {
                    Some(r) if r.user.as_deref() == Some(user) => out.push((key, r.clone())),
                    _ => stale = true,
                }
            }
            if !stale {
                break;
            }
        }
        out.sort_by_key(|(_, r)| r.created);
        Ok(out)
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        let keys: Vec<Key> = {
            let mut users = self
                .user_shard(user)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            users
                .remove(user)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default()
        };
        let mut n = 0;
        for key in keys {
            let mut s = self.write(&key);
            if s.map
                .get(&key)
                .is_some_and(|s| s.record.user.as_deref() == Some(user))
            {
                s.take(&key);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The lazy expiry index: entries are lower bounds, and nothing that counts may notice.
    use super::*;

    fn key(n: u8, shard: u8) -> Key {
        let mut k = [n; 32];
        k[0] = shard;
        Key(k)
    }

    fn entries(store: &MemoryStore, key: &Key) -> Vec<Millis> {
        let s = store.shard(key).read().unwrap();
        s.expiry
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(t, _)| *t)
            .collect()
    }

    #[tokio::test]
    async fn later_deadlines_keep_the_entry_and_gc_refiles_live_sessions() {
        let store = MemoryStore::new();
        let k = key(1, 7);
        let mut r = Record::new(0, 100, 10_000);
        store.create(&k, &r).await.unwrap();
        // A save and a touch that move the deadline later leave the index alone.
        r.last_access = 50;
        r.expires_at = 200;
        store.save(&k, &r, 1).await.unwrap();
        assert!(store.touch(&k, 60, 300).await.unwrap());
        assert_eq!(entries(&store, &k), vec![100]);

        // Past the filed deadline but before the real one: the session is live everywhere.
        assert_eq!(store.len(150).await.unwrap(), 1);
        assert_eq!(store.expired_awaiting_gc(150).await.unwrap(), Some(0));
        assert_eq!(store.gc(150, 10).await.unwrap(), 0, "nothing expired");
        assert_eq!(
            entries(&store, &k),
            vec![300],
            "re-filed under the real deadline"
        );
        assert!(store.load(&k, 150).await.unwrap().is_some());

        assert_eq!(store.len(300).await.unwrap(), 0);
        assert_eq!(store.expired_awaiting_gc(300).await.unwrap(), Some(1));
        assert_eq!(store.gc(300, 10).await.unwrap(), 1);
        assert!(entries(&store, &k).is_empty());
        assert_eq!(store.expired_awaiting_gc(300).await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn earlier_deadlines_refile_at_once() {
        let store = MemoryStore::new();
        let k = key(2, 9);
        let mut r = Record::new(0, 1_000, 10_000);
        store.create(&k, &r).await.unwrap();
        r.expires_at = 400;
        store.save(&k, &r, 1).await.unwrap();
        assert_eq!(entries(&store, &k), vec![400]);
        assert!(store.touch(&k, 10, 300).await.unwrap());
        assert_eq!(entries(&store, &k), vec![300]);
        assert_eq!(store.gc(300, 10).await.unwrap(), 1);
        assert!(store.load(&k, 0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn removals_take_the_entry_wherever_it_is_filed() {
        let store = MemoryStore::new();
        let (a, b) = (key(3, 5), key(4, 6));
        let mut r = Record::new(0, 100, 10_000);
        store.create(&a, &r).await.unwrap();
        r.expires_at = 500;
        r.version = 2;
        store.save(&a, &r, 1).await.unwrap();
        assert_eq!(entries(&store, &a), vec![100]);
        // Rotation moves the session and files the new key under its own deadline.
        r.version = 3;
        store.rotate(&a, 2, &b, &r, None).await.unwrap();
        assert!(entries(&store, &a).is_empty());
        assert_eq!(entries(&store, &b), vec![500]);
        assert!(store.destroy(&b).await.unwrap());
        assert!(entries(&store, &b).is_empty());
        assert_eq!(store.len(0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn gc_gives_up_the_lock_but_not_the_pass_when_many_entries_are_stale() {
        let store = MemoryStore::new();
        // One shard, more stale live entries than a lock span, then expired ones behind them.
        let n = GC_LOCK_SPAN + 10;
        for i in 0..n {
            let mut k = key(0, 3);
            k.0[1..9].copy_from_slice(&(i as u64).to_le_bytes());
            let mut r = Record::new(0, 100, 10_000);
            store.create(&k, &r).await.unwrap();
            r.expires_at = if i % 2 == 0 { 1_000 } else { 150 };
            store.save(&k, &r, 1).await.unwrap();
        }
        let removed = store.gc(200, 1_000_000).await.unwrap();
        assert_eq!(removed, n / 2);
        assert_eq!(store.len(200).await.unwrap(), (n - n / 2) as u64);
        assert_eq!(store.gc(200, 1_000_000).await.unwrap(), 0);
    }
}
