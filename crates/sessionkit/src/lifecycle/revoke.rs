//! Ending a user's sessions: "log out everywhere", "end all other sessions", and the theft
//! detector's response to a retired ID used after its grace window.

use super::Core;
use crate::error::Result;
use crate::id::Key;
use crate::record::{now_millis, Record};

/// How many list-and-end rounds a revocation makes at most.
const REVOKE_PASSES: usize = 8;

/// How many rotations `end_chain` follows a session through. Each hop is one store call
/// against a full request's worth of work for every rotation it chases, so a session cannot
/// rotate this often while it is being ended; the bound is against a corrupt cycle of aliases.
const CHASE_HOPS: usize = 64;

impl Core {
    /// Ends every session of `user`; returns how many.
    pub(crate) async fn revoke_user(&self, user: &str) -> Result<u64> {
        let n = self
            .call("destroy_user", self.store.destroy_user(user))
            .await?;
        // A session that rotated while the store worked through the user's index can be left
        // under its new key: end what a listing still finds.
        Ok(n + self.end_listed(user, |_, _| true).await?)
    }

    /// Ends every listed session of `user` that `select` picks, listing again until a listing
    /// finds none left (at most `REVOKE_PASSES` rounds): a session that rotates between a
    /// listing and its deletion has moved to a key that listing did not have, and every store
    /// lists a rotating session under its old key or its new one, never neither (conformance
    /// suite). Pick by [`Record::handle`] rather than by key where a session must be told
    /// apart across its rotations. Returns how many live records it ended.
    pub(crate) async fn end_listed(
        &self,
        user: &str,
        select: impl Fn(&Key, &Record) -> bool,
    ) -> Result<u64> {
        let mut ended = 0;
        for _ in 0..REVOKE_PASSES {
            let list = self
                .call("sessions_of", self.store.sessions_of(user, now_millis()))
                .await?;
            let mut found = false;
            for (key, record) in list {
                if select(&key, &record) {
                    found = true;
                    ended += self.end_chain(key).await? as u64;
                }
            }
            if !found {
                break;
            }
        }
        Ok(ended)
    }
}

impl Core {
    /// Ends the session stored under `key`, wherever it has rotated to: each `take` is atomic,
    /// so what it removed is either the session (and no rotation from that key can succeed
    /// any more) or the alias a rotation left, naming the key to end next. True if a session
    /// (not only aliases) was ended.
    pub(crate) async fn end_chain(&self, mut key: Key) -> Result<bool> {
        for _ in 0..CHASE_HOPS {
            match self.call("destroy", self.store.take(&key)).await? {
                None => return Ok(false),
                Some(r) => match r.successor() {
                    Some(next) => key = *next,
                    None => return Ok(true),
                },
            }
        }
        tracing::warn!(key = %key.short(), "gave up following a session's rotations");
        Ok(false)
    }
}

/// Whether `record` (under `key`) is the session `keep` names: the same handle (which survives
/// rotation), or for a record without one, the same key.
pub(crate) fn same_session(key: &Key, record: &Record, keep: (&Key, u64)) -> bool {
    if keep.1 != 0 && record.handle != 0 {
        record.handle == keep.1
    } else {
        key == keep.0
    }
}
