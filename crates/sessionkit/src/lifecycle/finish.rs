//! The end of a request: turn what the handler did into store calls.
//!
//! [`Core::finish`] picks one of four paths: nothing to do, [create a new
//! session](Core::create_new), [refresh the idle deadline](Core::touch_if_due), or [save with
//! compare-and-set, replaying the request's operations on the winner's record after a lost
//! race](Core::save_with_replay). Each returns an [`Outcome`] that says what the client must be
//! told; turning that into headers is the token codec's job, not this module's.

use std::time::Duration;

use super::turn::{Job, Reply, Turned};
use super::{millis, timed, Core, Current, State, ALIAS_LINGER, CHASE_LINGER, TOMBSTONE_ROTATIONS};
use crate::config::RetiredIdPolicy;
use crate::error::{Error, Result};
use crate::id::{Key, SessionId};
use crate::metrics;
use crate::record::{now_millis, Millis, Record};
use tracing::Instrument;

/// Why a device-bound session's request without a valid bound cookie is refused.
pub(crate) const REFUSED: &str =
    "this session is bound to a device and the request lacks a valid bound cookie";

/// What the client must be told at the end of a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing: its token (if any) is still right.
    Nothing,
    /// Hand it this ID (a new session or a rotation); the cookie lives until the absolute
    /// deadline.
    Issue {
        id: SessionId,
        absolute_expires_at: Millis,
    },
    /// Tell it to forget the token it sent.
    Forget,
}

impl Core {
    /// Writes what the request changed; on error nothing may be sent to the client (the HTTP
    /// layer answers 503 without a cookie).
    pub(crate) async fn finish(&self, st: &mut State, had_token: bool) -> Result<Outcome> {
        if !st.loaded {
            // The handler never looked at the session: no store call at all.
            return Ok(Outcome::Nothing);
        }
        if let Some(msg) = &st.failed {
            return Err(Error::backend(self.store.kind(), "load", msg.clone()));
        }
        if st.refused {
            return Err(Error::DeviceBound(REFUSED));
        }
        let now = now_millis();
        let forget = if had_token {
            Outcome::Forget
        } else {
            Outcome::Nothing
        };
        let Some(current) = st.current.take() else {
            return self.create_new(st, now, forget).await;
        };
        if st.destroy {
            // A concurrent request may have rotated the session since it was loaded: then the
            // loaded key holds an alias, and the session lives on under its successor. It is
            // ended there too, or a logout racing a rotation would leave the user signed in.
            if self.end_chain(current.key).await? {
                metrics::destroyed(1);
            }
            return Ok(forget);
        }

        let periodic = self.config.rotate_after.is_some_and(|after| {
            current.base.signed_in && now.saturating_sub(current.base.id_issued) >= millis(after)
        });
        if st.ops.is_empty() && !st.cycle && !periodic {
            self.touch_if_due(&current, now).await?;
            // Reached through a previous ID: hand over the current one.
            return Ok(match current.moved {
                true => Outcome::Issue {
                    id: current.id,
                    absolute_expires_at: current.base.absolute_expires_at,
                },
                false => Outcome::Nothing,
            });
        }
        self.save_with_replay(st, current, periodic, now).await
    }

    /// No stored session: store a new one only if the request put something in it.
    async fn create_new(&self, st: &State, now: Millis, forget: Outcome) -> Result<Outcome> {
        if st.destroy || st.ops.is_empty() {
            return Ok(forget);
        }
        let mut record = self.blank_record(now);
        for op in &st.ops {
            op.apply(&mut record)?;
        }
        if record.data.is_empty() && record.user.is_none() && record.csrf.is_none() {
            return Ok(forget);
        }
        for _ in 0..4 {
            let id = SessionId::generate()?;
            let key = id.key();
            record.handle = handle_for(&key);
            match self.create_record(&key, &record).await {
                Ok(()) => {
                    self.metrics.created();
                    return Ok(Outcome::Issue {
                        id,
                        absolute_expires_at: record.absolute_expires_at,
                    });
                }
                // 2^-256 odds; try another ID rather than fail.
                Err(Error::Exists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contention(4))
    }

    /// A request that changed nothing refreshes the idle deadline, but only once per touch
    /// interval, so reads rarely cost a write.
    async fn touch_if_due(&self, current: &Current, now: Millis) -> Result<()> {
        let c = &self.config;
        if now.saturating_sub(current.base.last_access) < millis(c.effective_touch_interval()) {
            return Ok(());
        }
        let expires = now
            .saturating_add(millis(c.idle_timeout))
            .min(current.base.absolute_expires_at);
        self.touch_record(&current.key, now, expires)
            .await
            .map(drop)
    }

    /// Saves the request's changes with compare-and-set (rotating the ID when due), and after a
    /// lost race replays its operations on what the winner wrote, following the session to its
    /// new ID if the winner rotated it.
    async fn save_with_replay(
        &self,
        st: &mut State,
        current: Current,
        periodic: bool,
        now: Millis,
    ) -> Result<Outcome> {
        let c = &self.config;
        let store = &self.store;
        let mut rotate = st.cycle || periodic;
        // A periodic rotation leaves the old ID readable for a grace window; a privilege change
        // (cycle_id, set_user) kills it at once.
        let mut grace = (periodic && !st.cycle).then(|| self.retired_until(&st.view, now));
        let mut key = current.key;
        // The ID of `key` while this request knows it, and whether the client lacks it (it
        // came through a previous ID, or the session moved under it and was followed).
        let mut id = Some(current.id);
        let mut hand_over = current.moved;
        let mut version = current.base.version;
        // The record that won the last lost race, once there was one.
        let mut fresh: Option<Record> = None;
        // Writers to the same session in this process queue here, so compare-and-set conflicts
        // come only from other processes. Without it, on a store with real round trips, a
        // loser backing off keeps losing to fresh requests that never wait (starvation).
        // A plain save waiting for its turn leaves its operations for the holder, which saves
        // them with its own (see `turn`); a rotation waits for the turn as such.
        let mut turn = if rotate {
            self.turn(&key).take().await
        } else {
            match self
                .turn(&key)
                .take_or_combine(key, &mut st.ops, store.kind())
                .await
            {
                Turned::Held(turn) => turn,
                Turned::Saved(record) => {
                    st.view = record;
                    self.metrics.saved();
                    return Ok(match (hand_over, id) {
                        (true, Some(id)) => Outcome::Issue {
                            id,
                            absolute_expires_at: st.view.absolute_expires_at,
                        },
                        _ => Outcome::Nothing,
                    });
                }
                Turned::Failed(e) => return Err(e),
            }
        };
        if let Some((_, ahead)) = turn
            .take()
            .filter(|(k, r)| *k == key && r.version > version)
        {
            // A writer queued ahead of this one wrote since this request loaded: replay on
            // what it wrote rather than lose a compare-and-set and reload it.
            version = ahead.version;
            fresh = Some(ahead);
        }
        for attempt in 0..c.max_retries {
            // The request's view is the loaded record with its operations already applied (each
            // was applied as it was recorded), so the first attempt saves it as is; after a lost
            // race the operations are replayed on the winner's record. The saved record becomes
            // the view again below.
            let mut record = match &fresh {
                None => std::mem::replace(&mut st.view, Record::new(0, 0, 0)),
                Some(base) => {
                    let mut record = base.clone();
                    for op in &st.ops {
                        op.apply(&mut record)?;
                    }
                    record
                }
            };
            record.version = version + 1;
            record.last_access = now;
            record.expires_at = now
                .saturating_add(millis(c.idle_timeout))
                .min(record.absolute_expires_at);
            let outcome = if rotate {
                record.id_issued = now;
                // Boxed, as the combined save and the backoff below: rare paths whose state
                // would otherwise make every request's future larger.
                Box::pin(self.rotate_now(&key, version, &record, grace, id.as_ref(), now)).await
            } else {
                let jobs = self.turn(&key).take_jobs(&key);
                let saved = if jobs.is_empty() {
                    self.save_record(&key, &record, version).await
                } else {
                    Box::pin(self.save_combined(key, &mut record, version, jobs, now)).await
                };
                saved.map(|()| match (hand_over, &id) {
                    (true, Some(id)) => Outcome::Issue {
                        id: id.clone(),
                        absolute_expires_at: record.absolute_expires_at,
                    },
                    _ => Outcome::Nothing,
                })
            };
            st.view = record;
            match outcome {
                Ok(outcome) => {
                    // Hand the written record to the writers queued behind (see `WriteTurn`).
                    // After a rotation they find the old key's alias and follow it instead.
                    if !rotate && self.turn(&key).contended() {
                        *turn = Some((key, st.view.clone()));
                    }
                    if matches!(outcome, Outcome::Issue { .. }) {
                        self.metrics.rotated();
                    } else {
                        self.metrics.saved();
                    }
                    return Ok(outcome);
                }
                Err(Error::Conflict) | Err(Error::Exists) => self.metrics.conflict_retried(),
                Err(e) => return Err(e),
            }
            // Lost the race: reload and replay on what the winner wrote. (The reloads are
            // boxed: each holds a loaded record in the future of every request otherwise.)
            let Some(winner) = Box::pin(self.load_record(&key, now)).await? else {
                // Destroyed (logout) or rotated away by a privilege change meanwhile: never bring
                // it back, and send no cookie either: a removal here could arrive after the
                // login response and wipe the browser's new session.
                return Ok(Outcome::Nothing);
            };
            let Some(next) = winner.successor().copied() else {
                version = winner.version;
                fresh = Some(winner);
                Box::pin(backoff(attempt)).await;
                continue;
            };
            let Some(sealed) = winner.sealed_successor() else {
                // A privilege change by a concurrent request (sign-in, cycle_id): what this
                // request wrote was meant for the session before it and is not carried over.
                return Ok(Outcome::Nothing);
            };
            // Periodically rotated by a concurrent request while this one was in flight:
            // follow the session to its new key so these writes are not lost, and hand the
            // new ID over too if it opens (the concurrent response carries it as well). The
            // rotation is already done (the winner's); a privilege change still rotates the
            // new key.
            rotate = st.cycle;
            grace = None;
            id = id.and_then(|id| id.open_successor(sealed, &next));
            hand_over = id.is_some();
            key = next;
            // Queue behind the new key's writers: keeping the old key's turn would leave this
            // request racing them un-queued while it backs off, and on a store with slow writes
            // it lost every round (a livelock that ended in `Contention`). Release first: two
            // keys can share a stripe, and holding two turns could deadlock.
            drop(turn);
            turn = self.turn(&key).take().await;
            // Loaded once the turn is ours, so the writers it waited for are in the base, and
            // the retry follows at once.
            let Some(base) = Box::pin(self.load_record(&key, now)).await? else {
                return Ok(Outcome::Nothing);
            };
            version = base.version;
            fresh = Some(base);
        }
        Err(Error::Contention(c.max_retries))
    }
}

impl Core {
    /// Writes `record` under a new ID in place of `key` (compare-and-set against `version`).
    /// The old key keeps an alias: revocation follows it either way; only a periodic
    /// rotation's alias (`grace`: until when) serves requests, and only it carries the new ID,
    /// sealed under the old one (`old_id`).
    async fn rotate_now(
        &self,
        key: &Key,
        version: u64,
        record: &Record,
        grace: Option<Millis>,
        old_id: Option<&SessionId>,
        now: Millis,
    ) -> Result<Outcome> {
        let new_id = SessionId::generate()?;
        let new_key = new_id.key();
        let alias = match (grace, old_id) {
            (Some(until), Some(old_id)) => {
                let mut alias = Record::alias(new_key, now, until);
                alias.extra_mut().sealed_successor = Some(old_id.seal_successor(&new_id));
                alias
            }
            _ => Record::alias(new_key, now, now.saturating_add(CHASE_LINGER)),
        };
        let store = &self.store;
        self.call(
            "rotate",
            store.rotate(key, version, &new_key, record, Some(&alias)),
        )
        .await
        .map(|()| Outcome::Issue {
            id: new_id,
            absolute_expires_at: record.absolute_expires_at,
        })
    }

    /// Saves `record` (the holder's write) with the operations of the writers queued behind
    /// it (`jobs`, oldest first) replayed on top, in one compare-and-set against `version`,
    /// and answers each of them. A job whose operations fail on the combined record is handed
    /// back to save alone (and meet the failure itself). The store call runs in a task of its
    /// own, so the waiters are answered even if this request is dropped meanwhile.
    async fn save_combined(
        &self,
        key: Key,
        record: &mut Record,
        version: u64,
        jobs: Vec<Job>,
        now: Millis,
    ) -> Result<()> {
        let mut taken = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            let mut trial = record.clone();
            // A waiter's `update` closure runs here, in this request: a panic in it is caught
            // and the job handed back, so it panics in its own request, as it would saving
            // alone, and the rest of the queue is still saved.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.ops.iter().try_for_each(|op| op.apply(&mut trial))
            }));
            if let Ok(Ok(())) = applied {
                *record = trial;
                taken.push(job);
            } else {
                let ops = std::mem::take(&mut job.ops);
                job.answer(Reply::Retry(ops));
            }
        }
        // The deadline rule of a solo save, whatever the waiters' operations changed.
        record.expires_at = now
            .saturating_add(millis(self.config.idle_timeout))
            .min(record.absolute_expires_at);
        let store = self.store.clone();
        let kind = store.kind();
        let after = self.config.store_timeout;
        let saved = record.clone();
        let started = metrics::ENABLED.then(std::time::Instant::now);
        let save = async move {
            let result = timed(
                kind,
                "save",
                after,
                started,
                store.save(&key, &saved, version),
            )
            .await;
            for job in taken {
                job.answer_save(&result, &saved, kind);
            }
            result
        }
        .in_current_span();
        let result = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.spawn(save).await.unwrap_or_else(|e| {
                Err(Error::backend(
                    kind,
                    "save",
                    format!("combined save task: {e}"),
                ))
            }),
            // Outside a tokio runtime nothing can run detached; save in line.
            Err(_) => save.await,
        };
        if let Some(started) = started {
            let ok = matches!(result, Ok(()) | Err(Error::Conflict));
            self.metrics.store_call("save", started.elapsed(), ok);
        }
        result
    }

    /// Until when the ID retired by a periodic rotation of `record` at `now` is kept: the
    /// grace window, plus as long as the retired-ID policy needs to recognise it later.
    fn retired_until(&self, record: &Record, now: Millis) -> Millis {
        let c = &self.config;
        let grace_end = now.saturating_add(millis(c.rotation_grace));
        match c.on_retired_id {
            RetiredIdPolicy::Ignore => grace_end,
            RetiredIdPolicy::Log => grace_end.saturating_add(ALIAS_LINGER),
            // Long enough to catch a copy used much later, bounded so that a session keeps at
            // most this many retired IDs, and never past the session's own end.
            _ => {
                let every = millis(c.rotate_after.unwrap_or_default());
                grace_end
                    .saturating_add(ALIAS_LINGER.max(every.saturating_mul(TOMBSTONE_ROTATIONS)))
                    .min(record.absolute_expires_at.max(grace_end))
            }
        }
    }
}

/// The pause before retrying after a lost race with another process.
async fn backoff(attempt: u32) {
    if attempt == 0 {
        tokio::task::yield_now().await;
        return;
    }
    // Many writers on one session: back off for a random share of a growing window
    // (randomised, or the losers would all retry in lockstep and lose again).
    let window = 100u64 << attempt.min(9);
    let mut r = [0u8; 8];
    let _ = crate::id::fill_random(&mut r);
    let pause = u64::from_le_bytes(r) % window;
    tokio::time::sleep(Duration::from_micros(pause)).await;
}

/// The stable handle of a session created under `id`: bytes of its first key (a hash of the
/// ID, not a credential), so it costs no extra randomness. Rotation copies the record, handle
/// included, so the handle outlives every ID the session will have.
fn handle_for(key: &Key) -> u64 {
    let bytes: [u8; 8] = key.0[16..24].try_into().expect("8 bytes");
    // 0 means "no handle" in the record; 2^-64 odds, but never ambiguous.
    u64::from_le_bytes(bytes).max(1)
}
