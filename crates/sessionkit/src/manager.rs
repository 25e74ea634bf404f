//! [`Manager`]: turns requests into sessions and sessions back into stored records.
//!
//! The framework-free front door. `start` reads the token from the request with the token
//! codec (no I/O) and hands out a [`Session`] that loads lazily; `finish` lets the lifecycle
//! write what the request changed (compare-and-set, replay on conflict) and turns its outcome
//! into the response headers to send. It also owns the background GC task and the user-level
//! operations (list, revoke).

use std::sync::{Arc, Mutex, Weak};

use http::HeaderMap;

use crate::config::Config;
use crate::error::Result;
use crate::id::Key;
use crate::lifecycle::{same_session, Core, Outcome};
use crate::metrics;
use crate::record::{now_millis, Millis};
use crate::session::Session;
use crate::store::Store;
use crate::token::{SessionHeaders, TokenCodec};

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
    /// Shared with every session handle of this manager.
    core: Arc<Core>,
    codec: TokenCodec,
    gc: Mutex<Option<GcTask>>,
    /// The DBSC bound cookie's name as sent, when DBSC is on.
    #[cfg(feature = "dbsc")]
    bound_cookie: Option<String>,
}

struct GcTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.inner.core.store)
            .field("config", &self.inner.core.config)
            .finish()
    }
}

/// Metadata of one session of a user, for a "your devices" page. Never contains the ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// An opaque handle for [`Manager::revoke`], the same for the session's whole life (it
    /// survives ID rotation).
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
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `config` contradicts itself (see [`Config::validate`]).
    pub fn new(store: Arc<dyn Store>, config: Config) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        let codec = TokenCodec::new(&config);
        #[cfg(feature = "dbsc")]
        let bound_cookie = config.dbsc.as_ref().map(|d| d.cookie_name_for(&config));
        Ok(Self {
            inner: Arc::new(ManagerInner {
                core: Arc::new(Core::new(store, config)),
                codec,
                gc: Mutex::new(None),
                #[cfg(feature = "dbsc")]
                bound_cookie,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.core.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.core.config
    }

    /// The cookie name as sent (with `__Host-` when enabled).
    pub fn cookie_name(&self) -> &str {
        self.inner.codec.cookie_name()
    }

    /// Starts the session of a request from its headers. Does no I/O.
    pub fn start(&self, headers: &HeaderMap) -> Session {
        self.start_request(headers, false)
    }

    /// [`Manager::start`]; `dbsc_endpoint` exempts the request from the bound-cookie check
    /// (the DBSC endpoints check proofs instead).
    #[cfg_attr(not(feature = "dbsc"), allow(unused_variables))]
    pub(crate) fn start_request(&self, headers: &HeaderMap, dbsc_endpoint: bool) -> Session {
        let (token, had_token) = self.inner.codec.read(headers);
        Session::new(
            self.inner.core.clone(),
            token,
            had_token,
            #[cfg(feature = "dbsc")]
            match &self.inner.bound_cookie {
                Some(name) => crate::dbsc::Presented {
                    exempt: dbsc_endpoint,
                    ..crate::dbsc::Presented::read(headers, name)
                },
                None => crate::dbsc::Presented::default(),
            },
        )
    }

    /// Headers that tell the client to forget its session token.
    pub(crate) fn removal_headers(&self) -> SessionHeaders {
        self.inner.codec.removal()
    }

    /// The bound cookie's name as sent, when DBSC is on.
    #[cfg(feature = "dbsc")]
    pub(crate) fn bound_cookie_name(&self) -> Option<&str> {
        self.inner.bound_cookie.as_deref()
    }

    /// Writes what the request changed and returns the headers to add to the response.
    ///
    /// # Errors
    ///
    /// A store failure or timeout ([`Error::is_unavailable`]), a value the request's own
    /// replayed update could not produce, or [`Error::Contention`] when the session could not
    /// be saved after `max_retries` lost races. On error nothing is sent to the client (the HTTP
    /// layer answers 503 without a cookie).
    pub async fn finish(&self, session: &Session) -> Result<SessionHeaders> {
        let codec = &self.inner.codec;
        let (outcome, private) = session.finish().await?;
        #[cfg(feature = "dbsc")]
        let registration = match (&self.config().dbsc, session.take_registration().await) {
            // Announced only for a session that is stored and stays: not for one forgotten.
            (Some(config), Some(challenge)) if private && !matches!(outcome, Outcome::Forget) => {
                Some(crate::dbsc::registration_value(config, &challenge))
            }
            _ => None,
        };
        let headers = match outcome {
            Outcome::Nothing => SessionHeaders::default(),
            Outcome::Forget => codec.removal(),
            Outcome::Issue {
                id,
                absolute_expires_at,
            } => codec.issue(&id, absolute_expires_at),
        };
        let headers = if private {
            codec.private(headers)
        } else {
            headers
        };
        #[cfg(feature = "dbsc")]
        let headers = match registration {
            Some(value) => headers.with_extra(
                http::HeaderName::from_static(crate::dbsc::REGISTRATION_HEADER),
                // Built from a validated path and a base64url challenge: valid header bytes.
                http::HeaderValue::try_from(value).expect("registration header is ASCII"),
            ),
            None => headers,
        };
        Ok(headers)
    }

    /// One full GC pass: removes every record expired at `now`, in batches; returns the count.
    ///
    /// # Errors
    ///
    /// The store's error or a timeout; batches removed before it stay removed.
    pub async fn gc_once(&self) -> Result<u64> {
        self.inner.core.gc_pass().await
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
        let interval = self.inner.core.config.gc_interval;
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
                let core = &inner.core;
                match core.gc_pass().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "session gc pass"),
                    Err(e) => tracing::warn!(error = %e, "session gc pass failed; will retry"),
                }
                if metrics::ENABLED {
                    if let Ok(n) = core.call("len", core.store.len(now_millis())).await {
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
            .inner
            .core
            .call("sessions_of", self.inner.core.store.sessions_of(user, now))
            .await?;
        Ok(list
            .into_iter()
            .filter(|(_, r)| self.inner.core.is_live(r, now))
            .map(|(key, r)| SessionInfo {
                handle: r.handle_text(&key),
                created: r.created,
                last_seen: r.last_access,
                expires_at: r.expires_at,
                device: r.extra.as_ref().and_then(|e| e.device.clone()),
                ip_prefix: r.extra.as_ref().and_then(|e| e.ip_prefix.clone()),
                current: Some(key) == mine,
            })
            .collect())
    }

    /// Ends the session with [`SessionInfo::handle`] `handle` of the user signed in on
    /// `asking`; true if one was ended.
    ///
    /// # Errors
    ///
    /// The store's error or a timeout.
    pub async fn revoke(&self, asking: &Session, handle: &str) -> Result<bool> {
        let Some(user) = asking.user().await? else {
            return Ok(false);
        };
        // Every key listed with that handle, again until none is listed: the session may
        // rotate meanwhile, and a listing may name it under its old key and its new one.
        let n = self
            .inner
            .core
            .end_listed(&user, |key, record| record.handle_text(key) == handle)
            .await?;
        metrics::destroyed(n);
        Ok(n > 0)
    }

    /// Ends every session of `user` ("log out everywhere"); returns how many.
    ///
    /// # Errors
    ///
    /// The store's error or a timeout.
    pub async fn revoke_all(&self, user: &str) -> Result<u64> {
        let core = &self.inner.core;
        let n = core.revoke_user(user).await?;
        metrics::destroyed(n);
        Ok(n)
    }

    /// Ends every other session of the user signed in on `keep` (the asking request's);
    /// returns how many.
    ///
    /// # Errors
    ///
    /// The store's error or a timeout.
    pub async fn revoke_all_except(&self, keep: &Session) -> Result<u64> {
        let Some(user) = keep.user().await? else {
            return Ok(0);
        };
        let Some((key, handle)) = keep.key_and_handle().await? else {
            // Not stored: every session of the user is another one.
            let n = self.inner.core.end_listed(&user, |_, _| true).await?;
            metrics::destroyed(n);
            return Ok(n);
        };
        // Kept by handle, which survives rotation: another tab of the asking browser may
        // rotate its ID while this runs, and it must not end itself.
        let n = self
            .inner
            .core
            .end_listed(&user, |k, r| !same_session(k, r, (&key, handle)))
            .await?;
        metrics::destroyed(n);
        Ok(n)
    }

    /// Checks that the store answers (for health endpoints).
    pub async fn ping(&self) -> Result<()> {
        self.inner
            .core
            .call("ping", self.inner.core.store.ping())
            .await
    }

    /// The key of a token (for tools); `None` if the token is malformed.
    pub fn key_of(&self, token: &str) -> Option<Key> {
        self.inner.codec.decode(token.as_bytes()).map(|id| id.key())
    }
}
