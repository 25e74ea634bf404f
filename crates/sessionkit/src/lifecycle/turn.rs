//! Write turns: writers to one session in this process take turns, and the writer whose turn
//! it is saves for the ones queued behind it (write combining).
//!
//! A queued writer loaded its record before it waited, so the writes ahead of it made that
//! record stale: its compare-and-set would fail and it would reload what this process just
//! wrote. Two things avoid that. The holder of a turn hands the record it wrote down the queue
//! (`last`), so the next writer replays on it without a reload. And a writer that finds the
//! turn taken leaves its operation log in the turn (`pending`): the holder replays those
//! operations after its own, saves once for all of them, and answers each waiter with the
//! saved record. On a hot session (a page firing parallel requests) the writes then cost one
//! store round trip per batch instead of one each, and every update is still applied exactly
//! once under the store's compare-and-set. (A batch that loses to another process goes back to
//! its writers, which then save one by one, each replaying on what won.)
//!
//! A combined save runs in a task of its own, so a holder whose client goes away mid-save
//! (its future is dropped) cannot take the waiters' operations with it: the task finishes
//! the save and answers them whatever becomes of the holder.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::Op;
use crate::error::Error;
use crate::id::Key;
use crate::record::Record;

/// One stripe of write turns: the lock writers queue on, what the last of them wrote when
/// others were queued behind it, and the operations of the waiters.
pub(crate) struct WriteTurn {
    /// Writers waiting for `last` (the lock), so the holder knows whether to keep a copy.
    waiting: AtomicUsize,
    last: tokio::sync::Mutex<Option<(Key, Record)>>,
    /// Operation logs left by waiting writers, for the holder to save with its own.
    pending: Mutex<Vec<Job>>,
    next_job: AtomicU64,
}

/// A waiting writer's operations, left for the holder of the turn.
pub(crate) struct Job {
    id: u64,
    key: Key,
    pub(crate) ops: Vec<Op>,
    reply: oneshot::Sender<Reply>,
}

/// What became of a [`Job`].
pub(crate) enum Reply {
    /// Saved with the holder's write: the record as saved.
    Saved(Record),
    /// Not saved (a lost compare-and-set, or an operation that failed on the holder's
    /// record): the operations come back, and the writer saves them itself.
    Retry(Vec<Op>),
    /// The combined save failed; it may or may not have reached the store, as with a
    /// writer's own save that fails.
    Failed(Error),
}

impl Job {
    /// Answers the waiter (gone already if its request was dropped meanwhile).
    pub(crate) fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }

    /// Answers the waiter with the outcome of the combined save of `saved` (a store of
    /// `kind`): saved, back to it after a lost compare-and-set, or failed.
    pub(crate) fn answer_save(
        mut self,
        result: &crate::error::Result<()>,
        saved: &Record,
        kind: &'static str,
    ) {
        let reply = match result {
            Ok(()) => Reply::Saved(saved.clone()),
            Err(Error::Conflict) => Reply::Retry(std::mem::take(&mut self.ops)),
            &Err(Error::Timeout { store, op, after }) => {
                Reply::Failed(Error::Timeout { store, op, after })
            }
            // Each waiter gets its own copy of the error; the source becomes its message.
            Err(Error::Backend { store, op, source }) => {
                Reply::Failed(Error::backend(store, op, source.to_string()))
            }
            Err(e) => Reply::Failed(Error::backend(kind, "save", e.to_string())),
        };
        self.answer(reply);
    }

    /// The waiter's request was dropped while it waited: its operations are not saved.
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// How a writer's wait for its turn ended.
pub(crate) enum Turned<'a> {
    /// The turn is this writer's: it saves (its operations are in place).
    Held(tokio::sync::MutexGuard<'a, Option<(Key, Record)>>),
    /// The holder ahead saved this writer's operations.
    Saved(Record),
    /// The holder ahead tried to save them and failed.
    Failed(Error),
}

impl WriteTurn {
    pub(crate) fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            last: tokio::sync::Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            next_job: AtomicU64::new(0),
        }
    }

    /// Waits for the turn.
    pub(crate) async fn take(&self) -> tokio::sync::MutexGuard<'_, Option<(Key, Record)>> {
        if let Ok(guard) = self.last.try_lock() {
            return guard;
        }
        let _queued = Queued::new(&self.waiting);
        self.last.lock().await
    }

    /// Waits for the turn, leaving `ops` (the writer's operations on `key`) for the holder to
    /// save meanwhile. `ops` is put back when the turn comes to this writer first or the
    /// holder hands them back.
    pub(crate) async fn take_or_combine(
        &self,
        key: Key,
        ops: &mut Vec<Op>,
        kind: &'static str,
    ) -> Turned<'_> {
        if let Ok(guard) = self.last.try_lock() {
            return Turned::Held(guard);
        }
        // Boxed: the wait is the rare case, and its state (two lock futures, a channel, the
        // reply) would otherwise be carried by every request's future.
        Box::pin(self.wait_or_combine(key, ops, kind)).await
    }

    /// [`WriteTurn::take_or_combine`] once the turn was found taken.
    async fn wait_or_combine(&self, key: Key, ops: &mut Vec<Op>, kind: &'static str) -> Turned<'_> {
        let _queued = Queued::new(&self.waiting);
        let id = self.next_job.fetch_add(1, Relaxed);
        let (reply, mut answer) = oneshot::channel();
        self.lock_pending().push(Job {
            id,
            key,
            ops: std::mem::take(ops),
            reply,
        });
        // Dropped with this future (the request went away): the operations are withdrawn
        // if no holder took them yet.
        let left = Withdraw { turn: self, id };
        let reply = tokio::select! {
            biased;
            reply = &mut answer => reply,
            guard = self.last.lock() => match self.withdraw(id) {
                Some(job) => {
                    *ops = job.ops;
                    return Turned::Held(guard);
                }
                // Taken by a holder just before it released the turn: its answer follows
                // (from the save's own task, so this writer does not hold the turn for it).
                None => {
                    drop(guard);
                    (&mut answer).await
                }
            },
        };
        drop(left);
        match reply {
            Ok(Reply::Saved(record)) => Turned::Saved(record),
            Ok(Reply::Failed(e)) => Turned::Failed(e),
            Ok(Reply::Retry(back)) => {
                *ops = back;
                Turned::Held(self.last.lock().await)
            }
            // The save's task ended without an answer (a panic, or the runtime shutting
            // down): whether the operations were saved is unknown.
            Err(_) => Turned::Failed(Error::backend(
                kind,
                "save",
                "the combined save ended without an answer",
            )),
        }
    }

    /// Takes the operation logs waiting on `key` (the holder calls this, turn in hand),
    /// oldest first. Waiters whose request was dropped are left out and forgotten.
    pub(crate) fn take_jobs(&self, key: &Key) -> Vec<Job> {
        let mut pending = self.lock_pending();
        if pending.is_empty() {
            return Vec::new();
        }
        pending
            .extract_if(.., |job| job.key == *key || job.abandoned())
            .filter(|job| !job.abandoned())
            .collect()
    }

    /// Whether writers are queued for this turn (a hint: one may arrive just after).
    pub(crate) fn contended(&self) -> bool {
        self.waiting.load(Relaxed) > 0
    }

    fn withdraw(&self, id: u64) -> Option<Job> {
        let mut pending = self.lock_pending();
        let at = pending.iter().position(|j| j.id == id)?;
        Some(pending.remove(at))
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts a waiter in, and out on drop, so a request cancelled while it waits is not counted
/// forever.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Relaxed);
        Self(waiting)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Withdraws a waiter's job on drop, if it is still pending.
struct Withdraw<'a> {
    turn: &'a WriteTurn,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.turn.withdraw(self.id);
    }
}
