//! [`Session`]: the per-request handle.
//!
//! The handle is lazy: nothing touches the store until a handler reads or writes. Reads see the
//! request's own writes at once; the writes themselves are recorded as operations and applied by
//! the manager when the request finishes, with compare-and-set and replay on conflict, so two
//! requests on one session never lose each other's changes.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::id::{Key, SessionId};
use crate::lifecycle::flash::{Flash, FlashLevel};
use crate::lifecycle::{Core, Op, Outcome, State, UpdateFn};
use crate::record::{AuthInfo, Millis};

struct Inner {
    core: Arc<Core>,
    /// The syntactically valid token the request carried, if any.
    token: Option<SessionId>,
    /// The request carried something under the session cookie name (valid or not).
    had_token: bool,
    state: tokio::sync::Mutex<State>,
    /// The bound cookie the request carried (DBSC).
    #[cfg(feature = "dbsc")]
    presented: crate::dbsc::Presented,
}

/// The session of one request. Cheap to clone; clones share state.
///
/// Get it from the axum extractor or [`Manager::start`](crate::Manager::start). Every method that may need the stored
/// record is async (the first one loads it).
///
/// ```
/// # use std::sync::Arc;
/// # use sessionkit::{Config, Manager, MemoryStore};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
/// let session = manager.start(&http::HeaderMap::new());
/// let n: u64 = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await.unwrap();
/// assert_eq!(n, 1);
/// let headers = manager.finish(&session).await.unwrap();
/// assert!(headers.set_cookie().is_some());
/// # });
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.inner.token)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        core: Arc<Core>,
        token: Option<SessionId>,
        had_token: bool,
        #[cfg(feature = "dbsc")] presented: crate::dbsc::Presented,
    ) -> Self {
        let now = crate::record::now_millis();
        let state = State::unloaded(core.blank_record(now), now);
        Self {
            inner: Arc::new(Inner {
                core,
                token,
                had_token,
                state: tokio::sync::Mutex::new(state),
                #[cfg(feature = "dbsc")]
                presented,
            }),
        }
    }

    /// Ends the request's part: writes what it changed (see [`Core::finish`]). The flag is
    /// true when the response may show the session's data (it resolved to a stored session or
    /// created one), so that no cache may keep or share it.
    pub(crate) async fn finish(&self) -> Result<(Outcome, bool)> {
        let mut st = self.inner.state.lock().await;
        let existed = st.loaded && st.current.is_some();
        let outcome = self
            .inner
            .core
            .finish(&mut st, self.inner.had_token)
            .await?;
        let private = existed || matches!(outcome, Outcome::Issue { .. });
        Ok((outcome, private))
    }

    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let mut st = self.inner.state.lock().await;
        if !st.loaded {
            st.loaded = true;
            if let Err(e) = self
                .inner
                .core
                .load(self.inner.token.as_ref(), &mut st)
                .await
            {
                st.failed = Some(e.to_string());
                return Err(e);
            }
            #[cfg(feature = "dbsc")]
            self.check_binding(&mut st);
        }
        if let Some(msg) = &st.failed {
            return Err(Error::backend("session", "load", msg.clone()));
        }
        if st.refused {
            return Err(Error::DeviceBound(crate::lifecycle::REFUSED));
        }
        Ok(st)
    }

    /// Refuses the request if its session is device-bound and it lacks a valid bound cookie.
    #[cfg(feature = "dbsc")]
    fn check_binding(&self, st: &mut State) {
        let Some(config) = &self.inner.core.config.dbsc else {
            return;
        };
        if st.current.is_none()
            || crate::dbsc::satisfied(config, &st.view, &self.inner.presented, st.now)
        {
            return;
        }
        st.refused = true;
        let key = st.current.as_ref().map(|c| c.key.short());
        tracing::warn!(target: "sessionkit::suspicious", event = "bound_cookie_missing",
            key = key.as_deref().unwrap_or("none"),
            "device-bound session used without a valid bound cookie: refused");
    }

    /// Asks the browser to bind this session to a key pair on its device (Device Bound
    /// Session Credentials; feature `dbsc`): the response carries a
    /// `Secure-Session-Registration` header with a one-time challenge, and a browser that
    /// supports DBSC registers a key at the configured registration path. Call it on sign-in;
    /// any earlier binding of the session is dropped (the new sign-in binds anew). Browsers
    /// without DBSC ignore the header and the session works as any other.
    ///
    /// Returns false (and does nothing) when [`Config::dbsc`](crate::Config::dbsc) is not set.
    ///
    /// # Errors
    ///
    /// Store errors as for any load; [`Error::Random`] if the OS RNG fails.
    #[cfg(feature = "dbsc")]
    pub async fn bind_device(&self) -> Result<bool> {
        if self.inner.core.config.dbsc.is_none() {
            return Ok(false);
        }
        let mut st = self.state().await?;
        let challenge = crate::dbsc::new_challenge()?;
        let now = st.now;
        Self::record(
            &mut st,
            Op::Binding(crate::dbsc::BindingOp::Begin {
                challenge: challenge.clone(),
                now,
            }),
        )?;
        st.registration = Some(challenge);
        Ok(true)
    }

    /// True once the browser registered a device key for this session (DBSC).
    #[cfg(feature = "dbsc")]
    pub async fn is_device_bound(&self) -> Result<bool> {
        Ok(self.device_binding().await?.is_some_and(|b| b.is_bound()))
    }

    /// The session's device binding as this request sees it (`None` without a stored session).
    #[cfg(feature = "dbsc")]
    pub(crate) async fn device_binding(&self) -> Result<Option<crate::record::DeviceBinding>> {
        let st = self.state().await?;
        if st.current.is_none() {
            return Ok(None);
        }
        Ok(st.view.extra.as_ref().and_then(|e| e.binding.clone()))
    }

    /// Records a change to the device binding.
    #[cfg(feature = "dbsc")]
    pub(crate) async fn binding_op(&self, op: crate::dbsc::BindingOp) -> Result<()> {
        let mut st = self.state().await?;
        Self::record(&mut st, Op::Binding(op))
    }

    /// The registration challenge this request started, once (for the response header).
    #[cfg(feature = "dbsc")]
    pub(crate) async fn take_registration(&self) -> Option<String> {
        self.inner.state.lock().await.registration.take()
    }

    fn record(st: &mut State, op: Op) -> Result<()> {
        st.record(op)
    }

    /// The value under `key`, deserialized as `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the stored value is not a `T`; a store error or timeout when the
    /// session cannot be loaded (the first call on a handle loads it; see
    /// [`Error::is_unavailable`]). The same store errors apply to every method below.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let st = self.state().await?;
        st.view
            .data
            .get(key)
            .map(|v| serde_json::from_str(v).map_err(|e| value_err(key, e)))
            .transpose()
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `value` cannot be serialized; store errors as for [`Session::get`].
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<()> {
        let json = serde_json::to_string(&value).map_err(|e| value_err(key, e))?;
        let mut st = self.state().await?;
        Self::record(&mut st, Op::Set(key.to_owned(), json))
    }

    /// Removes `key`; true if it was present.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        let mut st = self.state().await?;
        let had = st.view.data.get(key).is_some();
        Self::record(&mut st, Op::Remove(key.to_owned()))?;
        Ok(had)
    }

    /// Replaces the value under `key` with `f(current)` and returns the new value.
    ///
    /// `f` may run again at the end of the request on fresher data if another request changed
    /// the session meanwhile, so `update("n", |n| n.unwrap_or(0) + 1)` counts exactly.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the stored value is not a `T`; store errors as for
    /// [`Session::get`].
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let func: UpdateFn = Box::new(move |name: &str, cur: Option<&str>| {
            let old = cur
                .map(serde_json::from_str::<T>)
                .transpose()
                .map_err(|e| value_err(name, e))?;
            serde_json::to_string(&f(old)).map_err(|e| value_err(name, e))
        });
        let mut st = self.state().await?;
        Self::record(&mut st, Op::Update(key.to_owned(), func))?;
        let v = st.view.data.get(key).unwrap_or("null");
        serde_json::from_str(v).map_err(|e| value_err(key, e))
    }

    /// Removes every value (the user and CSRF token stay; see [`Session::destroy`]).
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.state().await?;
        Self::record(&mut st, Op::Clear)
    }

    /// The signed-in user.
    pub async fn user(&self) -> Result<Option<String>> {
        Ok(self.state().await?.view.user.clone())
    }

    /// Signs `user` in (or out with `None`), recording when and how they authenticated, and
    /// gives the session a new ID at the end of the request (privilege change: see
    /// [`Session::cycle_id`]). Signing in (re-authentication included) restarts both the idle
    /// and the absolute timeout.
    ///
    /// With [`Config::max_sessions_per_user`](crate::Config::max_sessions_per_user) set, signing
    /// in beyond the limit either ends the user's least recently used sessions or fails with
    /// [`Error::TooManySessions`], as the policy says.
    pub async fn set_user(&self, user: Option<&str>, method: &str) -> Result<()> {
        let mut st = self.state().await?;
        let core = &self.inner.core;
        if let Some(name) = user {
            let mine = st.current.as_ref().map(|c| c.key);
            core.make_room_for(name, mine.as_ref()).await?;
        }
        let now = st.now;
        let auth = user.map(|_| AuthInfo {
            at: now,
            method: method.to_owned(),
        });
        let absolute = user.map(|_| core.blank_record(now).absolute_expires_at);
        Self::record(
            &mut st,
            Op::SetUser(user.map(str::to_owned), auth, absolute),
        )?;
        Self::privilege_change(&mut st)
    }

    /// Leaves a message for the next page this session shows (after a redirect, typically):
    /// "Signed in as ann". Kept in the session until [`Session::take_flashes`] takes it.
    pub async fn flash(&self, level: FlashLevel, text: impl Into<String>) -> Result<()> {
        let mut st = self.state().await?;
        let op = crate::lifecycle::flash::add_op(level, text.into())?;
        Self::record(&mut st, op)
    }

    /// Takes every flash message waiting in the session, oldest first. Each is taken by
    /// exactly one request: concurrent requests never both get it, and a request through a
    /// previous ID (grace window) gets none. Unlike other changes this writes at once (one
    /// compare-and-set) when stored messages are waiting, because the page that shows them is
    /// sent before the request ends.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use sessionkit::{Config, FlashLevel, Manager, MemoryStore};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = Manager::new(Arc::new(MemoryStore::new()), Config::default()).unwrap();
    /// let s = manager.start(&http::HeaderMap::new());
    /// s.flash(FlashLevel::Success, "Signed in").await.unwrap();
    /// let shown = s.take_flashes().await.unwrap();
    /// assert_eq!(shown[0].text, "Signed in");
    /// assert!(s.take_flashes().await.unwrap().is_empty());
    /// # });
    /// ```
    pub async fn take_flashes(&self) -> Result<Vec<Flash>> {
        let mut st = self.state().await?;
        self.inner.core.take_flashes(&mut st).await
    }

    /// How and when the user last authenticated (for "confirm your password" checks).
    pub async fn auth_info(&self) -> Result<Option<AuthInfo>> {
        let st = self.state().await?;
        Ok(st.view.extra.as_ref().and_then(|e| e.auth.clone()))
    }

    /// Records a device label and network prefix for the "your sessions" list.
    pub async fn set_device(&self, device: Option<&str>, ip_prefix: Option<&str>) -> Result<()> {
        let mut st = self.state().await?;
        let op = Op::Device(device.map(str::to_owned), ip_prefix.map(str::to_owned));
        Self::record(&mut st, op)
    }

    /// Issues a new ID at the end of the request: same data, the old ID dead at once. Call it on
    /// every privilege change (login, sudo mode).
    ///
    /// A CSRF token handed out before is renewed too: a token seen by whoever held the session
    /// before the change must not be valid after it.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.state().await?;
        Self::privilege_change(&mut st)
    }

    /// A new ID at the end of the request, and a new CSRF token now. Recorded whether or not
    /// the request saw a token: a concurrent request may hand one out before this one saves,
    /// and the replay must replace that one too.
    fn privilege_change(st: &mut State) -> Result<()> {
        st.cycle = true;
        let token = crate::id::random_token()?;
        Self::record(st, Op::NewCsrf(token))
    }

    /// Ends the session: the stored record is deleted at the end of the request and the client
    /// is told to forget its token.
    pub async fn destroy(&self) -> Result<()> {
        let mut st = self.state().await?;
        st.destroy = true;
        Ok(())
    }

    /// The session's CSRF token, created on first use (which makes a new session worth storing).
    ///
    /// # Errors
    ///
    /// Store errors as for any load.
    pub async fn csrf_token(&self) -> Result<String> {
        let mut st = self.state().await?;
        if let Some(t) = &st.view.csrf {
            return Ok(t.clone());
        }
        let token = crate::id::random_token()?;
        Self::record(&mut st, Op::Csrf(token.clone()))?;
        Ok(token)
    }

    /// Checks `candidate` against the session's CSRF token in constant time. A session without a
    /// token accepts nothing. A failure is reported as a `csrf_failure` event on the
    /// `sessionkit::suspicious` target (with the session's key prefix, never the ID or token).
    /// A request through a previous ID (grace window) accepts nothing: it cannot change state.
    pub async fn verify_csrf(&self, candidate: &str) -> Result<bool> {
        let st = self.state().await?;
        let ok = match st.view.csrf.as_ref() {
            Some(t) => {
                t.len() == candidate.len() && bool::from(t.as_bytes().ct_eq(candidate.as_bytes()))
            }
            None => false,
        };
        if !ok {
            let key = st.current.as_ref().map(|c| c.key.short());
            tracing::warn!(target: "sessionkit::suspicious", event = "csrf_failure",
                key = key.as_deref().unwrap_or("none"), "CSRF token missing or wrong");
        }
        Ok(ok)
    }

    /// The current ID, once loaded; `None` for a session not stored yet. The ID is a credential:
    /// do not log it.
    pub async fn id(&self) -> Result<Option<SessionId>> {
        let st = self.state().await?;
        Ok(st.current.as_ref().map(|c| c.id.clone()))
    }

    /// True if this request resolved to no stored session (yet).
    pub async fn is_new(&self) -> Result<bool> {
        Ok(self.state().await?.current.is_none())
    }

    /// When the session was created (for a new session: this request's time).
    pub async fn created(&self) -> Result<Millis> {
        Ok(self.state().await?.view.created)
    }

    /// The stored session's key and handle (for telling it apart across rotations).
    pub(crate) async fn key_and_handle(&self) -> Result<Option<(Key, u64)>> {
        let st = self.state().await?;
        Ok(st.current.as_ref().map(|c| (c.key, st.view.handle)))
    }

    /// The at-rest key of the stored session (a hash, not a credential).
    pub async fn key(&self) -> Result<Option<Key>> {
        Ok(self.state().await?.current.as_ref().map(|c| c.key))
    }
}

fn value_err(key: &str, source: serde_json::Error) -> Error {
    Error::Value {
        key: key.to_owned(),
        source,
    }
}
