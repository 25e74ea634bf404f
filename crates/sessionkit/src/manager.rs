//! [`Manager`]: turns requests into sessions and sessions back into stored records.
//!
//! `start` reads the token from the request (no I/O); the [`Session`] loads lazily; `finish`
//! writes what the request changed with compare-and-set, replaying the request's operations on
//! fresh data when another request won the race, and returns the response headers to send. It
//! also owns the background GC task and the user-level operations (list, revoke).

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use http::HeaderMap;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::cookie::{self, SessionHeaders};
use crate::id::{Key, SessionId};
use crate::metrics;
use crate::record::{now_millis, Millis, Record};
use crate::session::{Base, Current, Inner, Session, State};
use crate::store::Store;

/// The session manager: built once, cloned freely (it is an `Arc` inside).
///
/// ```
/// use std::sync::Arc;
/// use sessionkit::{Config, Manager, MemoryStore};
///
/// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
/// let session = manager.start(&http::HeaderMap::new());
/// # let _ = session;
/// ```
#[derive(Clone)]
pub struct Manager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    store: Arc<dyn Store>,
    config: Config,
    cookie_name: String,
    gc: Mutex<Option<GcTask>>,
    /// Writers to one session in this process take turns (see `finish`).
    write_turns: Box<[tokio::sync::Mutex<()>]>,
}

/// Number of write-turn stripes; sessions share a stripe by key, so this bounds memory, not
/// the number of sessions.
const WRITE_TURNS: usize = 256;

struct GcTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Metadata of one session of a user, for a "your devices" page. Never contains the ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// An opaque handle for [`Manager::revoke`] (a prefix of the at-rest key hash).
    pub handle: String,
    /// When the session was created.
    pub created: Millis,
    /// When it was last used.
    pub last_seen: Millis,
    /// When it expires unless used.
    pub expires_at: Millis,
    /// Device label recorded by the app, if any.
    pub device: Option<String>,
    /// Network prefix recorded by the app, if any.
    pub ip_prefix: Option<String>,
    /// True for the session of the request that asked.
    pub current: bool,
}

impl Manager {
    /// A manager over `store` with `config` (validated).
    pub fn new(store: Arc<dyn Store>, config: Config) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        let cookie_name = config.cookie_name();
        Ok(Self {
            inner: Arc::new(ManagerInner {
                store,
                config,
                cookie_name,
                gc: Mutex::new(None),
                write_turns: (0..WRITE_TURNS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The cookie name as sent (with `__Host-` when enabled).
    pub fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    /// Starts the session of a request from its headers. Does no I/O.
    pub fn start(&self, headers: &HeaderMap) -> Session {
        let (token, had_token) = cookie::read_token(self, headers);
        Session::new(self.clone(), token, had_token)
    }

    /// A fresh record as a new session at `now` would get it.
    pub(crate) fn blank_record(&self, now: Millis) -> Record {
        let c = &self.inner.config;
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
        let after = self.inner.config.store_timeout;
        let store = self.inner.store.kind();
        let span = tracing::debug_span!("store_call", store, op);
        // Without the `metrics` feature nobody reads the latency, so the clock is not read.
        let started = metrics::ENABLED.then(std::time::Instant::now);
        let mut fut = std::pin::pin!(fut.instrument(span));
        // Poll once before arming the timer: the memory store (and any answer that needs no
        // I/O) is ready at once, and then the timer's clock read and runtime-handle lookup are
        // pure overhead on every request. A store that is not ready gets the timeout as before;
        // a first poll cannot be interrupted by a timer anyway, so no deadline is lost.
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        let result = match first {
            Poll::Ready(r) => r,
            Poll::Pending => {
                // Count the first poll against the budget when its start time is known.
                let left = started.map_or(after, |s| after.saturating_sub(s.elapsed()));
                match tokio::time::timeout(left, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout { store, op, after }),
                }
            }
        };
        // Conflict and Exists are answers, not failures.
        let ok = matches!(result, Ok(_) | Err(Error::Conflict) | Err(Error::Exists));
        if let Some(started) = started {
            metrics::store_call(store, op, started.elapsed(), ok);
        }
        result
    }

    /// True if `record` is still valid under this manager's timeouts at `now` (the store only
    /// knows the deadline written at save time; a shortened timeout applies at once).
    fn is_live(&self, record: &Record, now: Millis) -> bool {
        let c = &self.inner.config;
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
        let c = &self.inner.config;
        let Some(limit) = c.max_sessions_per_user else {
            return Ok(());
        };
        let now = now_millis();
        let store = &self.inner.store;
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
            self.call("destroy", store.destroy(&key)).await?;
        }
        Ok(())
    }

    /// Loads the stored session of a request into its state (called once, lazily).
    pub(crate) async fn load_into(&self, inner: &Inner, st: &mut State) -> Result<()> {
        let Some(id) = &inner.token else {
            return Ok(());
        };
        let now = st.now;
        let store = &self.inner.store;
        let key = id.key();
        let Some(record) = self.call("load", store.load(&key, now)).await? else {
            tracing::info!(target: "sessionkit::suspicious", event = "unknown_id", key = %key.short(),
                "unknown or expired session id");
            return Ok(());
        };
        if let Some(next) = record.successor().copied() {
            // A rotation alias: the request was in flight when the ID changed. Inside the grace
            // window it may read the session's new home, never write to it; after it, the alias
            // lingers only so that late use can be reported.
            if now
                >= record
                    .created
                    .saturating_add(millis(self.inner.config.rotation_grace))
            {
                tracing::warn!(target: "sessionkit::suspicious", event = "grace_expired",
                    key = %key.short(), "previous session id used after its grace window: possible hijacking");
                return Ok(());
            }
            let Some(target) = self.call("load", store.load(&next, now)).await? else {
                return Ok(());
            };
            if !self.is_live(&target, now) {
                return Ok(());
            }
            tracing::debug!(key = %key.short(), "request used the previous id inside its grace window");
            st.current = Some(Current {
                id: id.clone(),
                key: next,
                base: Base::of(&target),
                read_only: true,
            });
            st.view = target;
            return Ok(());
        }
        if !self.is_live(&record, now) {
            return Ok(());
        }
        metrics::loaded();
        st.current = Some(Current {
            id: id.clone(),
            key,
            base: Base::of(&record),
            read_only: false,
        });
        st.view = record;
        Ok(())
    }

    /// Writes what the request changed and returns the headers to add to the response.
    ///
    /// On error nothing is sent to the client (the HTTP layer answers 503 without a cookie).
    pub async fn finish(&self, session: &Session) -> Result<SessionHeaders> {
        let inner = &session.inner;
        let mut st = inner.state.lock().await;
        if !st.loaded {
            // The handler never looked at the session: no store call at all.
            return Ok(SessionHeaders::default());
        }
        if let Some(msg) = &st.failed {
            return Err(Error::backend(self.inner.store.kind(), "load", msg.clone()));
        }
        let now = now_millis();
        let store = &self.inner.store;
        let forget = || {
            if inner.had_token {
                cookie::removal(self)
            } else {
                SessionHeaders::default()
            }
        };

        let Some(current) = st.current.take() else {
            // No stored session. Store a new one only if the request put something in it.
            if st.destroy || st.ops.is_empty() {
                return Ok(forget());
            }
            let mut record = self.blank_record(now);
            for op in &st.ops {
                op.apply(&mut record)?;
            }
            if record.data.is_empty() && record.user.is_none() && record.csrf.is_none() {
                return Ok(forget());
            }
            for _ in 0..4 {
                let id = SessionId::generate()?;
                match self.call("create", store.create(&id.key(), &record)).await {
                    Ok(()) => {
                        metrics::created();
                        return Ok(cookie::issue(self, &id, &record));
                    }
                    // 2^-256 odds; try another ID rather than fail.
                    Err(Error::Exists) => continue,
                    Err(e) => return Err(e),
                }
            }
            return Err(Error::Contention(4));
        };

        if current.read_only {
            if !st.ops.is_empty() || st.cycle || st.destroy {
                tracing::warn!(target: "sessionkit::suspicious", event = "grace_write",
                    key = %current.key.short(), "write through a previous (grace window) id ignored");
            }
            return Ok(SessionHeaders::default());
        }
        if st.destroy {
            if self.call("destroy", store.destroy(&current.key)).await? {
                metrics::destroyed(1);
            }
            return Ok(forget());
        }

        let c = &self.inner.config;
        let periodic = c.rotate_after.is_some_and(|after| {
            current.base.signed_in && now.saturating_sub(current.base.id_issued) >= millis(after)
        });
        if st.ops.is_empty() && !st.cycle && !periodic {
            if now.saturating_sub(current.base.last_access) >= millis(c.touch_interval) {
                let expires = now
                    .saturating_add(millis(c.idle_timeout))
                    .min(current.base.absolute_expires_at);
                self.call("touch", store.touch(&current.key, now, expires))
                    .await?;
            }
            return Ok(SessionHeaders::default());
        }

        let mut rotate = st.cycle || periodic;
        // A periodic rotation leaves the old ID readable for a grace window; a privilege change
        // (cycle_id, set_user) kills it at once.
        let mut grace = (periodic && !st.cycle).then(|| {
            now.saturating_add(millis(c.rotation_grace))
                .saturating_add(ALIAS_LINGER)
        });
        let mut key = current.key;
        let mut version = current.base.version;
        // The record that won the last lost race, once there was one.
        let mut fresh: Option<Record> = None;
        // Writers to the same session in this process queue here, so compare-and-set conflicts
        // come only from other processes. Without it, on a store with real round trips, a
        // loser backing off keeps losing to fresh requests that never wait (starvation).
        let _turn = self.inner.write_turns[key.0[1] as usize].lock().await;
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
                let id = SessionId::generate()?;
                self.call(
                    "rotate",
                    store.rotate(&key, version, &id.key(), &record, grace),
                )
                .await
                .map(|()| Some(id))
            } else {
                self.call("save", store.save(&key, &record, version))
                    .await
                    .map(|()| None)
            };
            let issued = match &outcome {
                Ok(Some(id)) => Some(cookie::issue(self, id, &record)),
                _ => None,
            };
            st.view = record;
            match outcome {
                Ok(Some(_)) => {
                    metrics::rotated();
                    return Ok(issued.unwrap_or_default());
                }
                Ok(None) => {
                    metrics::saved();
                    return Ok(SessionHeaders::default());
                }
                Err(Error::Conflict) | Err(Error::Exists) => metrics::conflict_retried(),
                Err(e) => return Err(e),
            }
            // Lost the race: reload and replay on what the winner wrote.
            let Some(winner) = self.call("load", store.load(&key, now)).await? else {
                // Destroyed (logout) or rotated away by a privilege change meanwhile: never bring
                // it back, and send no cookie either: a removal here could arrive after the
                // login response and wipe the browser's new session.
                return Ok(SessionHeaders::default());
            };
            let base = if let Some(next) = winner.successor().copied() {
                // Rotated by a concurrent request while this one was in flight: follow the
                // session to its new key so these writes are not lost. A periodic rotation is
                // already done (the winner's); a privilege change still rotates the new key.
                rotate = st.cycle;
                grace = None;
                key = next;
                match self.call("load", store.load(&key, now)).await? {
                    Some(r) => r,
                    None => return Ok(SessionHeaders::default()),
                }
            } else {
                winner
            };
            version = base.version;
            fresh = Some(base);
            if attempt == 0 {
                tokio::task::yield_now().await;
            } else {
                // Many writers on one session: back off for a random share of a growing window
                // (randomised, or the losers would all retry in lockstep and lose again).
                let window = 100u64 << attempt.min(9);
                let mut r = [0u8; 8];
                let _ = crate::id::fill_random(&mut r);
                let pause = u64::from_le_bytes(r) % window;
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
        }
        Err(Error::Contention(c.max_retries))
    }

    /// One full GC pass: removes every record expired at `now`, in batches; returns the count.
    pub async fn gc_once(&self) -> Result<u64> {
        run_gc(&self.inner.store, &self.inner.config).await
    }

    /// Starts the background GC task (idempotent). It runs every `gc_interval`, survives store
    /// errors (logged) and stops on [`Manager::shutdown`] or when the last `Manager` clone is
    /// dropped. Must be called inside a tokio runtime.
    pub fn spawn_gc(&self) {
        let mut gc = self.inner.gc.lock().unwrap_or_else(|e| e.into_inner());
        if gc.is_some() {
            return;
        }
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let weak: Weak<ManagerInner> = Arc::downgrade(&self.inner);
        let interval = self.inner.config.gc_interval;
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                match run_gc(&inner.store, &inner.config).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "session gc pass"),
                    Err(e) => tracing::warn!(error = %e, "session gc pass failed; will retry"),
                }
                if metrics::ENABLED {
                    if let Ok(Ok(n)) = tokio::time::timeout(
                        inner.config.store_timeout,
                        inner.store.len(now_millis()),
                    )
                    .await
                    {
                        metrics::live(n);
                    }
                }
            }
        });
        *gc = Some(GcTask { stop, handle });
    }

    /// Stops the background GC task and waits for it to finish.
    pub async fn shutdown(&self) {
        let task = self
            .inner
            .gc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.stop.send(true);
            let _ = task.handle.await;
        }
    }

    /// The live sessions of `user` (metadata only), oldest first. `current` marks the session
    /// of the asking request.
    pub async fn sessions_of(
        &self,
        user: &str,
        current: Option<&Session>,
    ) -> Result<Vec<SessionInfo>> {
        let now = now_millis();
        let mine = match current {
            Some(s) => s.key().await?,
            None => None,
        };
        let list = self
            .call("sessions_of", self.inner.store.sessions_of(user, now))
            .await?;
        Ok(list
            .into_iter()
            .filter(|(_, r)| self.is_live(r, now))
            .map(|(key, r)| SessionInfo {
                handle: key.short(),
                created: r.created,
                last_seen: r.last_access,
                expires_at: r.expires_at,
                device: r.extra.as_ref().and_then(|e| e.device.clone()),
                ip_prefix: r.extra.as_ref().and_then(|e| e.ip_prefix.clone()),
                current: Some(key) == mine,
            })
            .collect())
    }

    /// Ends the session of `user` whose [`SessionInfo::handle`] is `handle`; true if found.
    pub async fn revoke(&self, user: &str, handle: &str) -> Result<bool> {
        let now = now_millis();
        let list = self
            .call("sessions_of", self.inner.store.sessions_of(user, now))
            .await?;
        for (key, _) in list {
            if key.short() == handle {
                let ended = self.call("destroy", self.inner.store.destroy(&key)).await?;
                if ended {
                    metrics::destroyed(1);
                }
                return Ok(ended);
            }
        }
        Ok(false)
    }

    /// Ends every session of `user` ("log out everywhere"); returns how many.
    pub async fn revoke_all(&self, user: &str) -> Result<u64> {
        let n = self
            .call("destroy_user", self.inner.store.destroy_user(user))
            .await?;
        metrics::destroyed(n);
        Ok(n)
    }

    /// Ends every session of `user` except `keep` (the asking request's); returns how many.
    pub async fn revoke_all_except(&self, user: &str, keep: &Session) -> Result<u64> {
        let keep = keep.key().await?;
        let now = now_millis();
        let list = self
            .call("sessions_of", self.inner.store.sessions_of(user, now))
            .await?;
        let mut n = 0;
        for (key, _) in list {
            if Some(key) != keep && self.call("destroy", self.inner.store.destroy(&key)).await? {
                n += 1;
            }
        }
        metrics::destroyed(n);
        Ok(n)
    }

    /// Checks that the store answers (for health endpoints).
    pub async fn ping(&self) -> Result<()> {
        self.call("ping", self.inner.store.ping()).await
    }

    /// The key of a token (for tools); `None` if the token is malformed.
    pub fn key_of(&self, token: &str) -> Option<Key> {
        cookie::decode_token(self, token.as_bytes()).map(|id| id.key())
    }
}

async fn run_gc(store: &Arc<dyn Store>, config: &Config) -> Result<u64> {
    let now = now_millis();
    let mut total = 0u64;
    loop {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(config.store_timeout, store.gc(now, config.gc_batch))
            .instrument(tracing::debug_span!(
                "store_call",
                store = store.kind(),
                op = "gc"
            ))
            .await;
        metrics::store_call(
            store.kind(),
            "gc",
            started.elapsed(),
            matches!(result, Ok(Ok(_))),
        );
        let n = match result {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    store: store.kind(),
                    op: "gc",
                    after: config.store_timeout,
                })
            }
        };
        total += n as u64;
        metrics::gc_removed(n as u64);
        if n < config.gc_batch {
            return Ok(total);
        }
        // Let request traffic in between batches.
        tokio::task::yield_now().await;
    }
}

/// How long a rotation alias outlives its grace window, so that late use of the previous ID can
/// be reported as possible hijacking rather than look like any unknown ID.
const ALIAS_LINGER: Millis = 15 * 60 * 1000;

pub(crate) fn millis(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}
