//! The one error type of the crate.
//!
//! Store errors keep their source (`std::error::Error::source`) and name the store and the
//! operation, so a log line says what failed where. [`Error::is_unavailable`] tells the HTTP
//! layer which errors mean "the store is down or slow" (503) rather than a bug.

use std::time::Duration;

/// A boxed error from a backend (driver, file system, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across sessionkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sessionkit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A compare-and-set lost: the session changed (or vanished) since it was loaded.
    #[error("session changed or vanished since it was loaded (version conflict)")]
    Conflict,
    /// `create` found a session under the same key.
    #[error("a session with this key already exists")]
    Exists,
    /// The backend failed (I/O, connection, driver error).
    #[error("{store} store: {op} failed: {source}")]
    Backend {
        /// Store kind, e.g. `"sqlite"`.
        store: &'static str,
        /// Operation, e.g. `"load"`.
        op: &'static str,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },
    /// A store call took longer than the configured store timeout.
    #[error("{store} store: {op} timed out after {after:?}")]
    Timeout {
        /// Store kind.
        store: &'static str,
        /// Operation.
        op: &'static str,
        /// The configured limit.
        after: Duration,
    },
    /// A stored record could not be decoded. Stores log it and treat the record as absent; the
    /// variant exists for the decoding functions and for tools that inspect raw data.
    #[error("corrupt session record: {0}")]
    Corrupt(String),
    /// The OS random number generator failed; no ID is issued.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    /// A session value could not be serialized or deserialized as the requested type.
    #[error("session value {key:?}: {source}")]
    Value {
        /// The session key of the value.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Conflicting writers kept winning; the request's changes were not saved.
    #[error("gave up saving the session after {0} conflicting attempts")]
    Contention(u32),
    /// A sign-in would exceed the per-user session limit (policy `Refuse`).
    #[error("user {user:?} already has the maximum of {limit} sessions")]
    TooManySessions {
        /// The user.
        user: String,
        /// The configured limit.
        limit: usize,
    },
    /// A store URL that cannot be used as written: unknown scheme, missing cargo feature, bad
    /// syntax or parameter. Tells a caller's mistake in the URL apart from a store that cannot
    /// be used ([`Error::Config`]).
    #[error("store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL with any password replaced by `***` ([`redact_url`](crate::store::redact_url)),
        /// so the error is safe to log.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bad configuration, or a store that cannot be used (a foreign or newer database ...).
    #[error("{0}")]
    Config(String),
    /// A device-bound session (DBSC, feature `dbsc`) refused the request: the session is bound
    /// to a key on the browser's device and the request lacks a valid bound cookie, or a proof
    /// lost to a concurrent one. The HTTP layers answer 401 (see [`Error::is_refusal`]).
    #[error("device-bound session: {0}")]
    DeviceBound(&'static str),
}

impl Error {
    /// Wraps a backend error with the store and operation names.
    pub fn backend(store: &'static str, op: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            store,
            op,
            source: source.into(),
        }
    }

    /// An [`Error::BadUrl`] for `url`, redacted here so that no caller can forget to.
    pub fn bad_url(url: &str, reason: impl Into<String>) -> Self {
        Error::BadUrl {
            url: crate::store::redact_url(url),
            reason: reason.into(),
        }
    }

    /// True when the error is a device-bound session's refusal ([`Error::DeviceBound`]): the
    /// request is answered 401, never 5xx.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::DeviceBound(_))
    }

    /// True when the error means the store is unreachable, failing or slow: the HTTP layer
    /// answers 503 Service Unavailable for these.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Backend { .. } | Error::Timeout { .. } | Error::Contention(_) | Error::Random(_)
        )
    }
}
