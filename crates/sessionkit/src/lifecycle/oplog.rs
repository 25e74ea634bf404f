//! The operation log of one request: what the handler changed, recorded so that it can be
//! replayed on a fresher copy of the record when another request saved first, plus the state
//! the lifecycle keeps between loading the session and finishing it.

use crate::error::Result;
use crate::id::{Key, SessionId};
use crate::record::{AuthInfo, Millis, Record};

/// A recorded change, replayable on a fresher copy of the record.
pub(crate) enum Op {
    Set(String, String),
    Remove(String),
    Update(String, UpdateFn),
    Clear,
    /// User, how they authenticated, and the reset absolute deadline (re-authentication).
    SetUser(Option<String>, Option<AuthInfo>, Option<Millis>),
    /// A CSRF token created on first use; an existing one wins (another request may have
    /// handed it out already).
    Csrf(String),
    /// A CSRF token replacing any existing one (privilege change).
    NewCsrf(String),
    /// Flash messages this request took (by id); the name goes when none is left.
    DropFlashes(Vec<u64>),
    Device(Option<String>, Option<String>),
    /// A change to the device binding (DBSC); a challenge it consumes is checked again on
    /// every replay, so a challenge is used once.
    #[cfg(feature = "dbsc")]
    Binding(crate::dbsc::BindingOp),
}

/// `f(key, current JSON)` → new JSON. Boxed, not shared: an operation is only ever replayed
/// by its own request. The key is passed in rather than captured, so a typical closure (which
/// captures nothing) needs no allocation at all.
pub(crate) type UpdateFn = Box<dyn Fn(&str, Option<&str>) -> Result<String> + Send + Sync>;

impl Op {
    /// Applies the operation to `record`. For `Csrf`, an existing token wins (another request may
    /// have handed it out already).
    pub(crate) fn apply(&self, record: &mut Record) -> Result<()> {
        match self {
            Op::Set(k, v) => record.data.set(k, v)?,
            Op::Remove(k) => {
                record.data.remove(k);
            }
            Op::Update(k, f) => {
                let new = f(k, record.data.get(k))?;
                record.data.set(k, &new)?;
            }
            Op::Clear => record.data.clear(),
            Op::SetUser(user, auth, absolute) => {
                record.user = user.clone();
                if let Some(deadline) = absolute {
                    record.absolute_expires_at = *deadline;
                }
                if auth.is_some() || record.extra.is_some() {
                    record.extra_mut().auth = auth.clone();
                }
            }
            Op::Csrf(token) => {
                record.csrf.get_or_insert_with(|| token.clone());
            }
            Op::NewCsrf(token) => record.csrf = Some(token.clone()),
            Op::DropFlashes(ids) => super::flash::without(record, ids)?,
            Op::Device(device, ip) => {
                let extra = record.extra_mut();
                extra.device = device.clone();
                extra.ip_prefix = ip.clone();
            }
            #[cfg(feature = "dbsc")]
            Op::Binding(op) => op.apply(record)?,
        }
        Ok(())
    }
}

/// The stored session this request resolved to.
pub(crate) struct Current {
    pub(crate) id: SessionId,
    pub(crate) key: Key,
    /// What `finish` needs of the record as loaded; the record itself became the view.
    pub(crate) base: Base,
    /// Reached through a rotation alias inside its grace window: `id` is the session's
    /// current ID, which the client does not have yet and must be given.
    pub(crate) moved: bool,
}

/// The loaded record's compare-and-set version and the fields that decide whether `finish`
/// touches or rotates. Kept instead of a second copy of the record: after a lost race the
/// operations are replayed on a freshly loaded record, never on this one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base {
    pub(crate) version: u64,
    pub(crate) last_access: Millis,
    pub(crate) id_issued: Millis,
    pub(crate) absolute_expires_at: Millis,
    pub(crate) signed_in: bool,
}

impl Base {
    pub(crate) fn of(record: &Record) -> Self {
        Self {
            version: record.version,
            last_access: record.last_access,
            id_issued: record.id_issued,
            absolute_expires_at: record.absolute_expires_at,
            signed_in: record.user.is_some(),
        }
    }
}

/// One request's session between `start` and `finish`.
pub(crate) struct State {
    /// The load was attempted (it happens once, on first use).
    pub(crate) loaded: bool,
    /// The load failed with this message: `finish` must not write anything.
    pub(crate) failed: Option<String>,
    /// The stored session the request resolved to, if any.
    pub(crate) current: Option<Current>,
    /// What this request sees: the loaded record plus its own operations.
    pub(crate) view: Record,
    pub(crate) ops: Vec<Op>,
    /// Give the session a new ID at the end (privilege change).
    pub(crate) cycle: bool,
    /// End the session at the end.
    pub(crate) destroy: bool,
    /// The request's clock, read once when it started.
    pub(crate) now: Millis,
    /// The session is device-bound and the request lacks a valid bound cookie: nothing may
    /// be read or written, and the request is refused.
    pub(crate) refused: bool,
    /// The registration challenge this request started (`Session::bind_device`), to be
    /// announced in the response once the session is saved.
    #[cfg(feature = "dbsc")]
    pub(crate) registration: Option<String>,
}

impl State {
    /// The state of a request that has not loaded its session yet; `blank` is what a new
    /// session would hold.
    pub(crate) fn unloaded(blank: Record, now: Millis) -> Self {
        Self {
            loaded: false,
            failed: None,
            current: None,
            view: blank,
            ops: Vec::new(),
            cycle: false,
            destroy: false,
            now,
            refused: false,
            #[cfg(feature = "dbsc")]
            registration: None,
        }
    }

    /// Applies `op` to the request's view at once (reads see their own writes) and logs it for
    /// the save.
    pub(crate) fn record(&mut self, op: Op) -> Result<()> {
        op.apply(&mut self.view)?;
        self.ops.push(op);
        Ok(())
    }
}
