//! [`MemoryStore`]: the in-process store.
//!
//! The classic memory provider, made concurrent and bounded: 256 shards chosen by the first byte
//! of the (already uniformly random) key, each a hash map plus an expiry index ordered by
//! deadline, so a GC pass visits only expired entries. Locks are plain `RwLock`s that are never
//! held across an `.await` (no method here awaits). Because shards split the key space by prefix,
//! a scan in key order needs no global index.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, RwLock, RwLockWriteGuard};

use async_trait::async_trait;

use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

const SHARDS: usize = 256;
const USER_SHARDS: usize = 64;

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
    // Boxed: a hash table runs 45-90% full, and an empty slot of 32 + 8 bytes wastes far less
    // than one of 32 + 128 (about 110 B per session at 1M sessions). A save reuses the box.
    map: HashMap<Key, Box<Record>, KeyHash>,
    // (deadline, key) for every record in `map`; kept in step with `map` on every write.
    expiry: BTreeSet<(Millis, Key)>,
    aliases: usize,
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
        &self.shards[key.0[0] as usize]
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
    grace_until: Option<Millis>,
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
    if let Some(until) = grace_until {
        let mut alias = Record::new(now, until, until);
        alias.extra_mut().successor = Some(*new);
        old_shard.put(*old, alias);
    }
    Ok(prev)
}

impl Shard {
    /// Inserts or replaces, keeping the expiry index and alias count in step.
    /// Returns the previous record.
    fn put(&mut self, key: Key, record: Record) -> Option<Record> {
        self.expiry.insert((record.expires_at, key));
        self.aliases += record.successor().is_some() as usize;
        let old = match self.map.entry(key) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut **e.get_mut(), record)),
            Entry::Vacant(e) => {
                e.insert(Box::new(record));
                None
            }
        };
        if let Some(old) = &old {
            self.forget(&key, old);
        }
        old
    }

    fn take(&mut self, key: &Key) -> Option<Record> {
        let old = *self.map.remove(key)?;
        self.forget(key, &old);
        Some(old)
    }

    fn forget(&mut self, key: &Key, old: &Record) {
        // The new entry may share the old deadline; only drop the index entry if the map no
        // longer points at a record with that deadline.
        if self.map.get(key).map(|r| r.expires_at) != Some(old.expires_at) {
            self.expiry.remove(&(old.expires_at, *key));
        }
        self.aliases -= old.successor().is_some() as usize;
    }

    fn live(&self, key: &Key, now: Millis) -> Option<&Record> {
        self.map
            .get(key)
            .map(|r| &**r)
            .filter(|r| !r.is_expired(now))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        Ok(shard.live(key, now).cloned())
    }

    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        let mut shard = self.write(key);
        if shard
            .map
            .get(key)
            .is_some_and(|r| !r.is_expired(record.last_access))
        {
            return Err(Error::Exists);
        }
        if let Some(old) = shard.put(*key, record.clone()) {
            self.index_user(old.user.as_deref(), key, false);
        }
        self.index_user(record.user.as_deref(), key, true);
        Ok(())
    }

    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let mut shard = self.write(key);
        match shard.live(key, record.last_access) {
            Some(cur) if cur.version == expected_version && cur.successor().is_none() => {}
            _ => return Err(Error::Conflict),
        }
        let old = shard.put(*key, record.clone()).expect("checked above");
        if old.user != record.user {
            self.index_user(old.user.as_deref(), key, false);
            self.index_user(record.user.as_deref(), key, true);
        }
        Ok(())
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let mut shard = self.write(key);
        let Some(rec) = shard
            .map
            .get_mut(key)
            .filter(|r| !r.is_expired(last_access))
        else {
            return Ok(false);
        };
        let old_deadline = rec.expires_at;
        rec.last_access = last_access;
        rec.expires_at = expires_at.min(rec.absolute_expires_at);
        let new_deadline = rec.expires_at;
        if old_deadline != new_deadline {
            shard.expiry.remove(&(old_deadline, *key));
            shard.expiry.insert((new_deadline, *key));
        }
        Ok(true)
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        grace_until: Option<Millis>,
    ) -> Result<()> {
        let (a, b) = (old.0[0] as usize, new.0[0] as usize);
        // Lock both shards (in index order, so two rotations cannot deadlock) to make the move
        // one step: nobody sees both keys live or neither with data.
        let mut low = self.shards[a.min(b)]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut high = (a != b).then(|| {
            self.shards[a.max(b)]
                .write()
                .unwrap_or_else(|e| e.into_inner())
        });
        let prev = match high.as_mut() {
            None => move_record(
                &mut low,
                None,
                old,
                expected_version,
                new,
                record,
                grace_until,
            ),
            Some(h) if a < b => move_record(
                &mut low,
                Some(h),
                old,
                expected_version,
                new,
                record,
                grace_until,
            ),
            Some(h) => move_record(
                h,
                Some(&mut low),
                old,
                expected_version,
                new,
                record,
                grace_until,
            ),
        }?;
        drop(high);
        drop(low);
        self.index_user(prev.user.as_deref(), old, false);
        self.index_user(record.user.as_deref(), new, true);
        Ok(())
    }

    async fn destroy(&self, key: &Key) -> Result<bool> {
        let old = self.write(key).take(key);
        if let Some(old) = &old {
            self.index_user(old.user.as_deref(), key, false);
        }
        Ok(old.is_some())
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut removed = 0;
        // Removed records are dropped after the shard lock is released (freeing is the larger
        // part of a removal), so requests on that shard wait only for the unlinking.
        let mut gone: Vec<(Key, Box<Record>)> = Vec::new();
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
            let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
            while removed < limit {
                match s.expiry.first() {
                    Some(&(t, _)) if t <= now => {
                        // Popping the index entry directly saves the second B-tree search that
                        // `take` would make; the map entry it names carries that same deadline.
                        let (_, key) = s.expiry.pop_first().expect("just seen");
                        if let Some(old) = s.map.remove(&key) {
                            s.aliases -= old.successor().is_some() as usize;
                            gone.push((key, old));
                        }
                        removed += 1;
                    }
                    _ => break,
                }
            }
            drop(s);
            for (key, old) in gone.drain(..) {
                self.index_user(old.user.as_deref(), &key, false);
            }
        }
        Ok(removed)
    }

    async fn len(&self, now: Millis) -> Result<u64> {
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            // Expired aliases are already left out by `aliases`: count only expired sessions.
            let expired = s
                .expiry
                .range(..=(now, Key([0xff; 32])))
                .filter(|(_, k)| s.map.get(k).is_some_and(|r| r.successor().is_none()))
                .count();
            n += (s.map.len() - s.aliases).saturating_sub(expired) as u64;
        }
        Ok(n)
    }

    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            n += s.expiry.range(..(now + 1, Key([0; 32]))).count() as u64;
        }
        Ok(Some(n))
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let after = super::key_cursor(cursor)?;
        let limit = limit.max(1);
        let start = after.map(|k| k.0[0] as usize).unwrap_or(0);
        let mut records = Vec::new();
        for shard in &self.shards[start..] {
            let s = shard.read().unwrap_or_else(|e| e.into_inner());
            let mut keys: Vec<&Key> = s
                .map
                .iter()
                .filter(|(k, r)| {
                    after.is_none_or(|a| **k > a) && !r.is_expired(now) && r.successor().is_none()
                })
                .map(|(k, _)| k)
                .collect();
            keys.sort_unstable();
            for k in keys.into_iter().take(limit - records.len()) {
                records.push((*k, Record::clone(&s.map[k])));
            }
            if records.len() >= limit {
                break;
            }
        }
        let next = (records.len() >= limit).then(|| records.last().unwrap().0.to_hex());
        Ok(Page { records, next })
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
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
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let s = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = s
                .live(&key, now)
                .filter(|r| r.user.as_deref() == Some(user))
            {
                out.push((key, r.clone()));
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
                .is_some_and(|r| r.user.as_deref() == Some(user))
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
