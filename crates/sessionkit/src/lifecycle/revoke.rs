//! Ending a user's sessions: "log out everywhere", "end all other sessions", and the theft
//! detector's response to a retired ID used after its grace window.

use super::Core;
use crate::error::Result;
use crate::id::Key;
use crate::record::now_millis;

/// How many list-and-end rounds a revocation makes at most.
const REVOKE_PASSES: usize = 8;

impl Core {
    /// Ends every session of `user`; returns how many.
    pub(crate) async fn revoke_user(&self, user: &str) -> Result<u64> {
        let n = self
            .call("destroy_user", self.store.destroy_user(user))
            .await?;
        // A session that rotated while the store worked through the user's index can be left
        // under its new key: end what a listing still finds.
        Ok(n + self.end_listed(user, None).await?)
    }

    /// Ends every listed session of `user` but `keep`, listing again until a listing finds
    /// nothing left (at most `REVOKE_PASSES` rounds): a session that rotates between a listing
    /// and its deletion has moved to a key that listing did not have, and every store lists a
    /// rotating session under its old key or its new one, never neither (conformance suite).
    pub(crate) async fn end_listed(&self, user: &str, keep: Option<Key>) -> Result<u64> {
        let mut ended = 0;
        for _ in 0..REVOKE_PASSES {
            let list = self
                .call("sessions_of", self.store.sessions_of(user, now_millis()))
                .await?;
            let mut found = false;
            for (key, _) in list {
                if Some(key) != keep {
                    found = true;
                    if self.call("destroy", self.store.destroy(&key)).await? {
                        ended += 1;
                    }
                }
            }
            if !found {
                break;
            }
        }
        Ok(ended)
    }
}
