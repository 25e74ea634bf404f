//! The request lifecycle, below HTTP and above the store: load a session, decide whether it
//! is live, and at the end write what the request changed.
//!
//! Everything flows one way. The session handle ([`crate::Session`]) logs the handler's
//! operations in a [`State`] and asks [`Core::load`] for the record on first use; at the end
//! [`Core::finish`] turns the state into store calls and returns an [`Outcome`], which the
//! manager hands to the token codec to become response headers. Nothing here knows about
//! headers, cookies or the HTTP layer.
//!
//! - [`oplog`]: the operation log and the per-request state.
//! - [`finish`](mod@finish): the steps of the end of a request (create, touch, save with replay).
//! - [`flash`]: flash messages, taken by exactly one request.
//! - `revoke`: ending a user's sessions (also the theft detector's response).
//! - `turn`: the write turns writers to one session queue on, and write combining.

mod finish;
pub(crate) mod flash;
mod oplog;
mod revoke;
mod turn;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tracing::Instrument;

use crate::config::{Config, RetiredIdPolicy};
use crate::error::{Error, Result};
use crate::id::{Key, SessionId};
use crate::metrics;
use crate::record::{now_millis, Millis, Record};
use crate::store::Store;

pub(crate) use finish::{Outcome, REFUSED};
pub(crate) use oplog::{Base, Current, Op, State, UpdateFn};
pub(crate) use revoke::same_session;
use turn::WriteTurn;

/// What every request of one manager shares: the store, the settings, and the write turns.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    /// Writers to one session in this process take turns (see `finish`).
    write_turns: Box<[WriteTurn]>,
    /// The per-request metrics, registered once.
    pub(crate) metrics: metrics::Handles,
}

/// Number of write-turn stripes; sessions share a stripe by key, so this bounds memory, not
/// the number of sessions.
const WRITE_TURNS: usize = 256;

/// How many retired IDs a session keeps at most under [`RetiredIdPolicy::RevokeUser`].
const TOMBSTONE_ROTATIONS: i64 = 8;

/// How many rotation aliases are followed to the live record (one more than a session keeps).
const MAX_SUCCESSOR_HOPS: usize = TOMBSTONE_ROTATIONS as usize + 1;

/// How long a privilege change's alias is kept: only revocation and logout follow it, and
/// they are done within a few store calls; a minute covers slow stores and retries.
const CHASE_LINGER: Millis = 60 * 1000;

/// How long a rotation alias outlives its grace window, so that late use of the previous ID can
/// be reported as possible hijacking rather than look like any unknown ID.
const ALIAS_LINGER: Millis = 15 * 60 * 1000;

impl Core {
    /// A core over `store` with `config` (already validated).
    pub(crate) fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self {
            config,
            write_turns: (0..WRITE_TURNS).map(|_| WriteTurn::new()).collect(),
            metrics: metrics::Handles::new(store.kind()),
            store,
        }
    }

    /// The write turn of `key` in this process.
    fn turn(&self, key: &Key) -> &WriteTurn {
        &self.write_turns[key.stripe() % WRITE_TURNS]
    }

    /// A fresh record as a new session at `now` would get it.
    pub(crate) fn blank_record(&self, now: Millis) -> Record {
        let c = &self.config;
        Record::new(
            now,
            now.saturating_add(millis(c.idle_timeout)),
            now.saturating_add(millis(c.absolute_timeout)),
        )
    }

    /// Runs one store call under the configured timeout.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.call_or_ready(op, || None, || fut).await
    }

    /// [`Core::call`] for a store call with a synchronous fast path (`Store::*_ready`): its
    /// answer when `ready` has one, else the `slow` future under the timeout. Counted in the
    /// metrics alike, so a dashboard does not see the memory store's calls vanish.
    async fn call_or_ready<T, F>(
        &self,
        op: &'static str,
        ready: impl FnOnce() -> Option<Result<T>>,
        slow: impl FnOnce() -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        // Without the `metrics` feature nobody reads the latency, so the clock is not read.
        let started = metrics::ENABLED.then(std::time::Instant::now);
        let result = match ready() {
            Some(result) => result,
            None => {
                let (store, after) = (self.store.kind(), self.config.store_timeout);
                // Boxed: the timer and the span live only in a call that waits, so the futures
                // of every caller up to the request stay small for a store that answers at once
                // (they are moved, and boxed by the frameworks, on every request).
                Box::pin(timed(store, op, after, started, slow())).await
            }
        };
        // Conflict and Exists are answers, not failures.
        let ok = matches!(result, Ok(_) | Err(Error::Conflict) | Err(Error::Exists));
        if let Some(started) = started {
            self.metrics.store_call(op, started.elapsed(), ok);
        }
        result
    }

    /// The store's `load`, through its fast path when it has one.
    pub(crate) async fn load_record(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let store = &*self.store;
        self.call_or_ready(
            "load",
            || store.load_ready(key, now),
            || store.load(key, now),
        )
        .await
    }

    /// The store's `create`, through its fast path when it has one.
    pub(crate) async fn create_record(&self, key: &Key, record: &Record) -> Result<()> {
        let store = &*self.store;
        self.call_or_ready(
            "create",
            || store.create_ready(key, record),
            || store.create(key, record),
        )
        .await
    }

    /// The store's `save`, through its fast path when it has one.
    pub(crate) async fn save_record(&self, key: &Key, record: &Record, version: u64) -> Result<()> {
        let store = &*self.store;
        self.call_or_ready(
            "save",
            || store.save_ready(key, record, version),
            || store.save(key, record, version),
        )
        .await
    }

    /// The store's `touch`, through its fast path when it has one.
    pub(crate) async fn touch_record(
        &self,
        key: &Key,
        at: Millis,
        expires: Millis,
    ) -> Result<bool> {
        let store = &*self.store;
        self.call_or_ready(
            "touch",
            || store.touch_ready(key, at, expires),
            || store.touch(key, at, expires),
        )
        .await
    }

    /// True if `record` is still valid under this manager's timeouts at `now` (the store only
    /// knows the deadline written at save time; a shortened timeout applies at once).
    pub(crate) fn is_live(&self, record: &Record, now: Millis) -> bool {
        let c = &self.config;
        // Re-authentication restarts the absolute timeout, so it counts from the later of
        // creation and the last sign-in.
        let auth_at = record
            .extra
            .as_ref()
            .and_then(|e| e.auth.as_ref())
            .map(|a| a.at);
        let start = record.created.max(auth_at.unwrap_or(i64::MIN));
        !record.is_expired(now)
            && record.absolute_expires_at > now
            && start.saturating_add(millis(c.absolute_timeout)) > now
            && record.last_access.saturating_add(millis(c.idle_timeout)) > now
    }

    /// Enforces `max_sessions_per_user` before `user` signs in on the session `mine`.
    pub(crate) async fn make_room_for(&self, user: &str, mine: Option<&Key>) -> Result<()> {
        let c = &self.config;
        let Some(limit) = c.max_sessions_per_user else {
            return Ok(());
        };
        let now = now_millis();
        let store = &self.store;
        let mut others: Vec<(Key, Record)> = self
            .call("sessions_of", store.sessions_of(user, now))
            .await?
            .into_iter()
            .filter(|(k, r)| Some(k) != mine && self.is_live(r, now))
            .collect();
        if others.len() < limit {
            return Ok(());
        }
        if c.user_limit_policy == crate::config::UserLimitPolicy::Refuse {
            return Err(Error::TooManySessions {
                user: user.to_owned(),
                limit,
            });
        }
        others.sort_by_key(|(_, r)| r.last_access);
        let excess = others.len() + 1 - limit;
        for (key, _) in others.into_iter().take(excess) {
            self.end_chain(key).await?;
        }
        Ok(())
    }

    /// Loads the stored session of a request carrying `token` into its state (called once,
    /// lazily, by the session handle).
    pub(crate) async fn load(&self, token: Option<&SessionId>, st: &mut State) -> Result<()> {
        let Some(id) = token else {
            return Ok(());
        };
        let now = st.now;
        let key = id.key();
        let Some(record) = self.load_record(&key, now).await? else {
            tracing::info!(target: "sessionkit::suspicious", event = "unknown_id", key = %key.short(),
                "unknown or expired session id");
            return Ok(());
        };
        if let Some(next) = record.successor().copied() {
            let Some(sealed) = record.sealed_successor() else {
                // A privilege change's alias: it only leads revocation to the session. The
                // holder of the ID from before the change gets nothing (session fixation).
                tracing::info!(target: "sessionkit::suspicious", event = "unknown_id", key = %key.short(),
                    "session id retired by a privilege change");
                return Ok(());
            };
            // A periodic rotation's alias: the request was in flight when the ID changed, or
            // the browser applied an older Set-Cookie last. Inside the grace window it is the
            // session (reads and writes) and is handed the current ID; after it, the alias
            // lingers only so that late use can be reported.
            if now
                >= record
                    .created
                    .saturating_add(millis(self.config.rotation_grace))
            {
                // Boxed, as the chain below: rare paths whose state would otherwise be carried
                // by every request's future.
                Box::pin(self.retired_id_used(&key, next)).await?;
                return Ok(());
            }
            let Some((current_id, next, target)) =
                Box::pin(self.open_chain(id, next, sealed, now)).await?
            else {
                return Ok(());
            };
            tracing::debug!(key = %key.short(), "request used the previous id inside its grace window");
            st.current = Some(Current {
                id: current_id,
                key: next,
                base: Base::of(&target),
                moved: true,
            });
            st.view = target;
            return Ok(());
        }
        if !self.is_live(&record, now) {
            return Ok(());
        }
        self.metrics.loaded();
        st.current = Some(Current {
            id: id.clone(),
            key,
            base: Base::of(&record),
            moved: false,
        });
        st.view = record;
        Ok(())
    }

    /// The session a periodic rotation's alias leads to: its current ID (each alias opened with
    /// the ID before it), key and record. The new home may itself have rotated since; the chain
    /// is followed boundedly, and not through a privilege change's alias, which holds no sealed
    /// ID: what was signed in after the holder's ID retired is not the holder's.
    async fn open_chain(
        &self,
        id: &SessionId,
        mut next: Key,
        sealed: &[u8; 32],
        now: Millis,
    ) -> Result<Option<(SessionId, Key, Record)>> {
        let Some(mut id) = id.open_successor(sealed, &next) else {
            tracing::warn!(key = %id.key().short(), "rotation alias with a sealed successor that does not open");
            return Ok(None);
        };
        for _ in 0..MAX_SUCCESSOR_HOPS {
            let Some(r) = self.load_record(&next, now).await? else {
                return Ok(None);
            };
            let Some(further) = r.successor().copied() else {
                return Ok(self.is_live(&r, now).then_some((id, next, r)));
            };
            match r
                .sealed_successor()
                .and_then(|s| id.open_successor(s, &further))
            {
                Some(opened) => (id, next) = (opened, further),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The live record a chain of rotation aliases starting at `next` leads to, and its key.
    pub(super) async fn follow(&self, mut next: Key, now: Millis) -> Result<Option<(Key, Record)>> {
        for _ in 0..MAX_SUCCESSOR_HOPS {
            let Some(r) = self.load_record(&next, now).await? else {
                return Ok(None);
            };
            match r.successor().copied() {
                Some(further) => next = further,
                None => return Ok(self.is_live(&r, now).then_some((next, r))),
            }
        }
        Ok(None)
    }

    /// A retired ID (`key`, whose session moved on to `next`) came back after its grace
    /// window: act as the retired-ID policy says.
    async fn retired_id_used(&self, key: &Key, next: Key) -> Result<()> {
        match self.config.on_retired_id {
            RetiredIdPolicy::Ignore => {}
            RetiredIdPolicy::Log => {
                tracing::warn!(target: "sessionkit::suspicious", event = "grace_expired",
                    key = %key.short(), "previous session id used after its grace window: possible hijacking");
            }
            _ => {
                let user = match self.follow(next, now_millis()).await? {
                    Some((_, r)) => r.user,
                    None => None,
                };
                let ended = match &user {
                    Some(u) => self.revoke_user(u).await?,
                    None => 0,
                };
                metrics::destroyed(ended);
                tracing::warn!(target: "sessionkit::suspicious", event = "retired_id_revoked",
                    key = %key.short(), ended,
                    "previous session id used after its grace window: ended every session of its user");
            }
        }
        Ok(())
    }

    /// One full GC pass: removes every record expired at `now`, in batches, each batch through
    /// the same timed call as any other store call; returns the count.
    pub(crate) async fn gc_pass(&self) -> Result<u64> {
        let now = now_millis();
        let batch = self.config.gc_batch;
        let mut total = 0u64;
        loop {
            let n = self.call("gc", self.store.gc(now, batch)).await?;
            total += n as u64;
            metrics::gc_removed(n as u64);
            if n < batch {
                return Ok(total);
            }
            // Let request traffic in between batches.
            tokio::task::yield_now().await;
        }
    }
}

pub(crate) fn millis(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// Runs the store call `fut` (operation `op` on a store of kind `store`) in its tracing span,
/// failing it with [`Error::Timeout`] after `after` (counted from `started` when the caller
/// read the clock anyway).
pub(crate) async fn timed<T>(
    store: &'static str,
    op: &'static str,
    after: Duration,
    started: Option<std::time::Instant>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    // The span only when a subscriber wants it: entering and leaving even a disabled span
    // costs on every poll (more so with tracing's `log` feature, which actix and others turn
    // on), and the request path makes two store calls.
    if tracing::span_enabled!(tracing::Level::DEBUG) {
        let span = tracing::debug_span!("store_call", store, op);
        first_poll_then_timeout(store, op, after, started, fut.instrument(span)).await
    } else {
        first_poll_then_timeout(store, op, after, started, fut).await
    }
}

async fn first_poll_then_timeout<T>(
    store: &'static str,
    op: &'static str,
    after: Duration,
    started: Option<std::time::Instant>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    // Poll once before arming the timer: an answer that needs no I/O is ready at once, and
    // then the timer's clock read and runtime-handle lookup are pure overhead. A store that is
    // not ready gets the timeout as before; a first poll cannot be interrupted by a timer
    // anyway, so no deadline is lost.
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(r) => r,
        Poll::Pending => {
            // Count the first poll against the budget when its start time is known.
            let left = started.map_or(after, |s| after.saturating_sub(s.elapsed()));
            match tokio::time::timeout(left, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout { store, op, after }),
            }
        }
    }
}
