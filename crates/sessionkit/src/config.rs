//! [`Config`]: everything a [`Manager`](crate::Manager) can be told, with secure defaults.

use std::time::Duration;

use http::HeaderName;

use crate::error::{Error, Result};

/// The `SameSite` attribute of the session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites, not on cross-site subrequests.
    #[default]
    Lax,
    /// Never sent on cross-site requests.
    Strict,
    /// Always sent (requires `Secure`).
    None,
}

/// Where the session token travels.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// A cookie (the default, for browsers).
    #[default]
    Cookie,
    /// A request header carries the token; new tokens come back in the same header.
    Header(HeaderName),
    /// `Authorization: Bearer <token>`; new tokens come back in the named response header.
    Bearer {
        /// The response header that carries a newly issued token.
        response_header: HeaderName,
    },
}

/// A secret key for signed tokens (at least 32 bytes). Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Wraps secret bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when shorter than 32 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() < 32 {
            return Err(Error::Config(format!(
                "signing keys need at least 32 bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }

    /// A fresh random key from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = vec![0u8; 32];
        crate::id::fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// What happens when a user signs in beyond [`Config::max_sessions_per_user`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UserLimitPolicy {
    /// End the user's least recently used sessions to make room (default).
    #[default]
    EvictOldest,
    /// Refuse the new sign-in with [`Error::TooManySessions`].
    Refuse,
}

/// What happens when an ID retired by periodic rotation is presented after its grace window.
///
/// A browser that follows the protocol switches to the new ID at once, so such a request most
/// likely carries a copied cookie: periodic rotation doubles as a theft detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetiredIdPolicy {
    /// Treat it as any unknown ID, silently; retired IDs are forgotten after the grace window.
    Ignore,
    /// Treat it as unknown and report a `grace_expired` event on `sessionkit::suspicious`
    /// (retired IDs are remembered for 15 minutes to tell them from unknown ones). The default.
    #[default]
    Log,
    /// Report it and end every session of the user the ID belonged to ("log out everywhere"):
    /// whoever holds the copy loses it, and so does the real user, who signs in again. Retired
    /// IDs are remembered for up to eight rotations, never past the session's absolute
    /// timeout.
    RevokeUser,
}

/// Cookie attributes. `HttpOnly` is always set: scripts never need the session token.
///
/// Usually set through [`ConfigBuilder`]; the fields stay public for reading and for changing
/// a default copy.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CookieConfig {
    /// Cookie name without prefix (default `id`).
    pub name: String,
    /// Prefix the name with `__Host-` (default on; requires `secure`, `path = "/"` and no
    /// `domain`): the browser then refuses the cookie from sibling subdomains and over plain
    /// HTTP (OWASP ASVS 3.4.4).
    pub host_prefix: bool,
    /// `Secure` attribute (default on).
    pub secure: bool,
    /// `SameSite` attribute (default `Lax`).
    pub same_site: SameSite,
    /// `Path` attribute (default `/`).
    pub path: String,
    /// `Domain` attribute (default none: host-only).
    pub domain: Option<String>,
    /// Persistent cookie with `Max-Age` equal to the absolute timeout (default); when false the
    /// cookie lasts for the browser session only. The server enforces both timeouts either way.
    pub persistent: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "id".into(),
            host_prefix: true,
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            persistent: true,
        }
    }
}

/// Manager settings, with secure defaults. Build them with [`Config::builder`], which checks
/// them at [`ConfigBuilder::build`]:
///
/// ```
/// use std::time::Duration;
/// let config = sessionkit::Config::builder()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .rotate_after(Duration::from_secs(15 * 60))
///     .build()
///     .unwrap();
/// assert_eq!(config.idle_timeout, Duration::from_secs(15 * 60));
/// ```
///
/// The fields are public for reading (and for changing a copy); `Manager::new` validates
/// again, so a contradictory config never reaches a request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Cookie attributes.
    pub cookie: CookieConfig,
    /// Where the token travels (default: cookie).
    pub transport: Transport,
    /// A session unused for this long expires (sliding; default 30 min).
    pub idle_timeout: Duration,
    /// A session expires this long after creation, however active (default 12 h).
    pub absolute_timeout: Duration,
    /// A read-only request refreshes the idle deadline only if the last refresh is older than
    /// this, so reads rarely cost a write. `None` (default) follows the idle timeout: a tenth
    /// of it, at most 60 s.
    pub touch_interval: Option<Duration>,
    /// Give signed-in sessions a new ID once their current one is this old (default: never).
    pub rotate_after: Option<Duration>,
    /// How long the previous ID keeps working after a periodic rotation (30 s): a request
    /// through it is the session, and is handed the current ID.
    pub rotation_grace: Duration,
    /// Every store call fails with a timeout error after this long (default 5 s).
    pub store_timeout: Duration,
    /// How often the background GC runs (default 60 s).
    pub gc_interval: Duration,
    /// How many records one GC call may remove before yielding (default 1,000).
    pub gc_batch: usize,
    /// How often a save that lost a compare-and-set is reloaded and replayed (default 32).
    pub max_retries: u32,
    /// Sign tokens with HMAC-SHA256 (`<id>.<mac>`): forged tokens are rejected without a store
    /// lookup. The first key signs; every key verifies, so keys can be rotated without logging
    /// anyone out. Empty (default): unsigned tokens.
    pub signing_keys: Vec<SigningKey>,
    /// At most this many live sessions per signed-in user (default: no limit).
    pub max_sessions_per_user: Option<usize>,
    /// What to do when a sign-in would exceed `max_sessions_per_user`.
    pub user_limit_policy: UserLimitPolicy,
    /// What to do when an ID retired by periodic rotation is used after its grace window
    /// (default: log it).
    pub on_retired_id: RetiredIdPolicy,
    /// Device Bound Session Credentials (feature `dbsc`; default: off). When set, the session
    /// layers serve the registration and refresh endpoints, `Session::bind_device` asks the
    /// browser to bind the session to a key on its device, and a bound session's requests need
    /// the short-lived bound cookie besides the session cookie.
    #[cfg(feature = "dbsc")]
    pub dbsc: Option<crate::dbsc::DbscConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let idle = Duration::from_secs(30 * 60);
        Self {
            cookie: CookieConfig::default(),
            transport: Transport::Cookie,
            idle_timeout: idle,
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: None,
            rotate_after: None,
            rotation_grace: Duration::from_secs(30),
            store_timeout: Duration::from_secs(5),
            gc_interval: Duration::from_secs(60),
            gc_batch: 1000,
            max_retries: 32,
            signing_keys: Vec::new(),
            max_sessions_per_user: None,
            user_limit_policy: UserLimitPolicy::EvictOldest,
            on_retired_id: RetiredIdPolicy::Log,
            #[cfg(feature = "dbsc")]
            dbsc: None,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
            plain_http: false,
        }
    }

    /// The touch interval in force: the one set, or a tenth of the idle timeout capped at 60 s.
    pub(crate) fn effective_touch_interval(&self) -> Duration {
        self.touch_interval
            .unwrap_or_else(|| (self.idle_timeout / 10).min(Duration::from_secs(60)))
    }

    /// The cookie name as sent, including the `__Host-` prefix when enabled.
    pub fn cookie_name(&self) -> String {
        if self.cookie.host_prefix {
            format!("__Host-{}", self.cookie.name)
        } else {
            self.cookie.name.clone()
        }
    }

    /// Checks the settings for contradictions (called by `Manager::new` and
    /// [`ConfigBuilder::build`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the contradiction, e.g. the `__Host-` prefix without `Secure`.
    pub fn validate(&self) -> Result<()> {
        let c = &self.cookie;
        let bad = |m: &str| Err(Error::Config(format!("invalid session config: {m}")));
        if c.name.is_empty()
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad("cookie name must be non-empty ASCII letters, digits, '-', '_' or '.'");
        }
        if c.host_prefix && (!c.secure || c.path != "/" || c.domain.is_some()) {
            return bad("the __Host- prefix requires Secure, Path=/ and no Domain \
                 (for local development over plain HTTP use ConfigBuilder::plain_http_dev)");
        }
        if c.same_site == SameSite::None && !c.secure {
            return bad("SameSite=None requires Secure");
        }
        let attr_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !attr_ok(&c.path) || c.domain.as_deref().is_some_and(|d| !attr_ok(d)) {
            return bad("cookie path and domain must be printable ASCII without ';'");
        }
        if self.idle_timeout.is_zero() || self.absolute_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if self.rotate_after.is_some_and(|d| d.is_zero()) {
            return bad("rotate_after must be positive (a zero interval rotates on every request)");
        }
        if self.max_sessions_per_user == Some(0) {
            return bad("max_sessions_per_user must be at least 1");
        }
        if self.store_timeout.is_zero() || self.gc_interval.is_zero() || self.gc_batch == 0 {
            return bad("store timeout, GC interval and GC batch must be positive");
        }
        #[cfg(feature = "dbsc")]
        if let Some(d) = &self.dbsc {
            d.validate(self)
                .map_err(|m| Error::Config(format!("invalid session config: {m}")))?;
        }
        Ok(())
    }
}

/// Builds a [`Config`]; every setter has the default documented on the field it sets.
///
/// ```
/// let config = sessionkit::Config::builder()
///     .cookie_name("sid")
///     .plain_http_dev() // local development only: no `Secure`, no `__Host-`
///     .build()
///     .unwrap();
/// assert_eq!(config.cookie_name(), "sid");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    plain_http: bool,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $($field:ident).+ $(= $wrap:ident)?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$($field).+ = setters!(@wrap value $($wrap)?);
                self
            }
        )*
    };
    (@wrap $v:ident) => { $v };
    (@wrap $v:ident Some) => { Some($v) };
}

impl ConfigBuilder {
    setters! {
        /// See [`Config::transport`].
        transport: Transport => transport;
        /// See [`Config::idle_timeout`]. The touch interval follows it unless set.
        idle_timeout: Duration => idle_timeout;
        /// See [`Config::absolute_timeout`].
        absolute_timeout: Duration => absolute_timeout;
        /// See [`Config::touch_interval`].
        touch_interval: Duration => touch_interval = Some;
        /// See [`Config::rotate_after`].
        rotate_after: Duration => rotate_after = Some;
        /// See [`Config::rotation_grace`].
        rotation_grace: Duration => rotation_grace;
        /// See [`Config::store_timeout`].
        store_timeout: Duration => store_timeout;
        /// See [`Config::gc_interval`].
        gc_interval: Duration => gc_interval;
        /// See [`Config::gc_batch`].
        gc_batch: usize => gc_batch;
        /// See [`Config::max_retries`].
        max_retries: u32 => max_retries;
        /// See [`Config::signing_keys`].
        signing_keys: Vec<SigningKey> => signing_keys;
        /// See [`Config::max_sessions_per_user`].
        max_sessions_per_user: usize => max_sessions_per_user = Some;
        /// See [`Config::user_limit_policy`].
        user_limit_policy: UserLimitPolicy => user_limit_policy;
        /// See [`Config::on_retired_id`].
        on_retired_id: RetiredIdPolicy => on_retired_id;
        /// See [`Config::cookie`].
        cookie: CookieConfig => cookie;
        /// See [`CookieConfig::same_site`].
        same_site: SameSite => cookie.same_site;
        /// See [`CookieConfig::persistent`].
        persistent_cookie: bool => cookie.persistent;
        /// See [`CookieConfig::secure`].
        secure_cookie: bool => cookie.secure;
        /// See [`CookieConfig::host_prefix`].
        host_prefix: bool => cookie.host_prefix;
    }

    /// Turns on Device Bound Session Credentials with `dbsc` (see [`Config::dbsc`]).
    #[cfg(feature = "dbsc")]
    pub fn dbsc(mut self, dbsc: crate::dbsc::DbscConfig) -> Self {
        self.config.dbsc = Some(dbsc);
        self
    }

    /// See [`CookieConfig::name`].
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie.name = name.into();
        self
    }

    /// See [`CookieConfig::path`].
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.config.cookie.path = path.into();
        self
    }

    /// See [`CookieConfig::domain`].
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie.domain = Some(domain.into());
        self
    }

    /// For local development over plain `http://`: no `Secure` attribute and no `__Host-`
    /// prefix (a browser refuses both over plain HTTP). Never use it in production: the cookie
    /// then travels in clear text. [`build`](Self::build) logs a warning.
    pub fn plain_http_dev(mut self) -> Self {
        self.config.cookie.secure = false;
        self.config.cookie.host_prefix = false;
        self.plain_http = true;
        self
    }

    /// The checked config.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] as [`Config::validate`] reports it.
    pub fn build(self) -> Result<Config> {
        self.config.validate()?;
        if self.plain_http {
            tracing::warn!(
                "session cookies are set without Secure and without the __Host- prefix \
                 (plain_http_dev): for local development only"
            );
        }
        Ok(self.config)
    }
}
