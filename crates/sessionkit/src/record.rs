//! The stored form of a session.
//!
//! A [`Record`] is what a store keeps under a [`Key`]: the key/value data, the timestamps that
//! drive expiry, the optional user, and the version that makes `save` a compare-and-set.
//! [`Record::encode`] / [`Record::decode`] give every byte-oriented store (file, SQLite, Redis,
//! Postgres) one shared, checksummed format, so corrupt or foreign bytes are detected in one place
//! and a record filed under the wrong key is never served.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::id::Key;

/// Milliseconds since the Unix epoch. All record times use it.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Session data: keys mapped to JSON text, packed in one buffer.
///
/// Sessions hold a handful of small values, so a packed buffer (one allocation, linear lookup)
/// beats a map on both memory and speed; values stay JSON so any serde type fits.
#[derive(Default, PartialEq, Eq)]
pub struct Data {
    // Entries as (u16 key length, key bytes, u32 value length, value bytes), in insertion order.
    buf: Vec<u8>,
}

// By hand for `clone_from`: the memory store copies each save into the stored record, and
// reusing its buffer saves an allocation and a free per save.
impl Clone for Data {
    fn clone(&self) -> Self {
        Self {
            buf: self.buf.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.buf.clone_from(&source.buf);
    }
}

impl Data {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The JSON text stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        // Compare raw key bytes; only the matching value is turned into `&str` (this runs on
        // every session read, and UTF-8 checks of every entry showed up in profiles).
        let mut at = 0;
        while at < self.buf.len() {
            let (k, v, next) = raw_entry_at(&self.buf, at);
            if k == key.as_bytes() {
                return Some(std::str::from_utf8(v).unwrap_or("null"));
            }
            at = next;
        }
        None
    }

    /// Sets `key` to the JSON text `value`. Keys longer than 65,535 bytes are rejected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if key.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
            return Err(Error::Config(format!(
                "session key or value too large ({} / {} bytes)",
                key.len(),
                value.len()
            )));
        }
        self.remove(key);
        self.buf.reserve(2 + key.len() + 4 + value.len());
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let mut at = 0;
        while at < self.buf.len() {
            let (k, _, next) = raw_entry_at(&self.buf, at);
            if k == key.as_bytes() {
                self.buf.drain(at..next);
                return true;
            }
            at = next;
        }
        false
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The entries as (key, JSON text), in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.buf.len() {
                return None;
            }
            let (k, v, next) = entry_at(&self.buf, at);
            at = next;
            Some((k, v))
        })
    }

    /// Rebuilds from packed bytes, validating the layout, UTF-8 and that no name repeats.
    fn from_packed(buf: Vec<u8>) -> Result<Self> {
        let mut at = 0;
        // `set` never writes a name twice. A repeated one would make `remove` (which drops the
        // first) resurrect the older value, e.g. a user id the app just cleared.
        let mut names: Vec<&[u8]> = Vec::new();
        while at < buf.len() {
            let klen = read_u16(&buf, at).ok_or_else(|| corrupt("data key length"))? as usize;
            let kend = at + 2 + klen;
            let key = buf.get(at + 2..kend).ok_or_else(|| corrupt("data key"))?;
            std::str::from_utf8(key).map_err(|_| corrupt("data key utf-8"))?;
            names.push(key);
            let vlen = read_u32(&buf, kend).ok_or_else(|| corrupt("data value length"))? as usize;
            let vend = (kend + 4)
                .checked_add(vlen)
                .ok_or_else(|| corrupt("data value length"))?;
            let value = buf
                .get(kend + 4..vend)
                .ok_or_else(|| corrupt("data value"))?;
            std::str::from_utf8(value).map_err(|_| corrupt("data value utf-8"))?;
            at = vend;
        }
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(corrupt("data name repeated"));
        }
        drop(names);
        Ok(Self { buf })
    }
}

// Only called on buffers built by `set` or validated by `from_packed`.
fn raw_entry_at(buf: &[u8], at: usize) -> (&[u8], &[u8], usize) {
    let klen = u16::from_le_bytes([buf[at], buf[at + 1]]) as usize;
    let kend = at + 2 + klen;
    let vlen = u32::from_le_bytes(buf[kend..kend + 4].try_into().unwrap()) as usize;
    let vend = kend + 4 + vlen;
    (&buf[at + 2..kend], &buf[kend + 4..vend], vend)
}

fn entry_at(buf: &[u8], at: usize) -> (&str, &str, usize) {
    let (k, v, next) = raw_entry_at(buf, at);
    // Layout and UTF-8 were checked when the bytes entered the buffer; the fallbacks never run.
    let k = std::str::from_utf8(k).unwrap_or("");
    let v = std::str::from_utf8(v).unwrap_or("null");
    (k, v, next)
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// How and when the user last proved who they are (see `Session::set_user`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInfo {
    /// When the user authenticated.
    pub at: Millis,
    /// How, in the app's words (e.g. `"password"`, `"webauthn"`).
    pub method: String,
}

/// Optional descriptive fields, kept out of line because most sessions never set them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// Authentication details of the current user.
    pub auth: Option<AuthInfo>,
    /// A device label the app chose to record (e.g. a shortened user agent).
    pub device: Option<String>,
    /// A network prefix the app chose to record (e.g. `"203.0.113.0/24"`).
    pub ip_prefix: Option<String>,
    /// Set on the short-lived alias a rotation leaves under the old key: the key of the
    /// session's new home. Such a record carries no data of its own.
    pub successor: Option<Key>,
    /// On an alias a request may still use (a periodic rotation's grace window): the
    /// successor's ID sealed under the retired ID ([`SessionId::seal_successor`]), so that a
    /// request presenting the retired ID is led to the current one while the store, which
    /// never sees a raw ID, cannot open it. An alias without it (a privilege change's) leads
    /// revocation to the session but serves no request.
    ///
    /// [`SessionId::seal_successor`]: crate::SessionId::seal_successor
    pub sealed_successor: Option<[u8; 32]>,
    /// Device Bound Session Credentials state (feature `dbsc`): the registration or refresh
    /// challenge, and once the browser registered, its public key and the DBSC session
    /// identifier. Kept in the record so that it lives wherever the session lives: every store
    /// persists it, and rotation, migration and the user index carry it along. It is part of
    /// the record in every build (a process built without `dbsc` keeps it intact on save).
    pub binding: Option<DeviceBinding>,
}

/// A session's device binding (DBSC), as stored in its [`Record`].
///
/// Nothing here is a credential on its own: the public key is public, the DBSC session
/// identifier is a random name unrelated to the session ID, a challenge is only useful with the
/// private key that never leaves the browser's device, and `secret` only MACs the short-lived
/// bound cookie of this one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceBinding {
    /// The DBSC session identifier the browser names the session by (`Sec-Secure-Session-Id`):
    /// random, never the session ID. Empty until the browser registered.
    pub session_id: String,
    /// The registered key's JWS algorithm (`ES256` or `RS256`); empty until registered.
    pub alg: String,
    /// The registered public key as a JWK (compact JSON, only the key's own members); empty
    /// until registered.
    pub jwk: String,
    /// The key of the bound cookie's MAC, fresh for every registration.
    pub secret: [u8; 32],
    /// The one challenge the next proof must sign (empty: none outstanding).
    pub challenge: String,
    /// When `challenge` was issued.
    pub challenge_issued: Millis,
}

impl DeviceBinding {
    /// True once the browser registered a key: requests then need the bound cookie.
    pub fn is_bound(&self) -> bool {
        !self.jwk.is_empty()
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(BINDING_VERSION);
        for s in [&self.session_id, &self.alg, &self.jwk] {
            put_str(out, s);
        }
        out.extend_from_slice(&self.secret);
        put_str(out, &self.challenge);
        out.extend_from_slice(&self.challenge_issued.to_le_bytes());
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        if r.take(1)?[0] != BINDING_VERSION {
            return Err(corrupt("unknown device binding version"));
        }
        let session_id = r.string()?;
        let alg = r.string()?;
        let jwk = r.string()?;
        let secret = r.take(32)?.try_into().unwrap();
        let challenge = r.string()?;
        let challenge_issued = r.i64()?;
        Ok(Self {
            session_id,
            alg,
            jwk,
            secret,
            challenge,
            challenge_issued,
        })
    }
}

/// The layout version of an encoded [`DeviceBinding`].
const BINDING_VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A stored session.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// The key/value data.
    pub data: Data,
    /// When the session was created.
    pub created: Millis,
    /// When the session was last used (updated by saves and throttled touches).
    pub last_access: Millis,
    /// When the session expires: the earlier of the idle and the absolute deadline.
    pub expires_at: Millis,
    /// The absolute deadline; touching never moves it.
    pub absolute_expires_at: Millis,
    /// When the current ID was issued (for periodic rotation).
    pub id_issued: Millis,
    /// The signed-in user, if any. Stores index sessions by it.
    pub user: Option<String>,
    /// The CSRF token of this session, once one was asked for.
    pub csrf: Option<String>,
    /// Compare-and-set version: 1 on create, +1 on every save.
    pub version: u64,
    /// A stable, non-secret name of the session for "your devices" pages and revocation,
    /// kept across ID rotation (0: none, for records written before handles existed).
    pub handle: u64,
    /// Rarely set fields.
    pub extra: Option<Box<Extra>>,
}

// By hand for `clone_from`, which reuses the data buffer and strings of the target (see `Data`).
impl Clone for Record {
    fn clone(&self) -> Self {
        Self {
            data: self.data.clone(),
            created: self.created,
            last_access: self.last_access,
            expires_at: self.expires_at,
            absolute_expires_at: self.absolute_expires_at,
            id_issued: self.id_issued,
            user: self.user.clone(),
            csrf: self.csrf.clone(),
            version: self.version,
            handle: self.handle,
            extra: self.extra.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            data,
            created,
            last_access,
            expires_at,
            absolute_expires_at,
            id_issued,
            user,
            csrf,
            version,
            handle,
            extra,
        } = source;
        self.data.clone_from(data);
        self.created = *created;
        self.last_access = *last_access;
        self.expires_at = *expires_at;
        self.absolute_expires_at = *absolute_expires_at;
        self.id_issued = *id_issued;
        self.user.clone_from(user);
        self.csrf.clone_from(csrf);
        self.version = *version;
        self.handle = *handle;
        self.extra.clone_from(extra);
    }
}

impl Record {
    /// A new, empty record created at `now` with the given deadlines.
    pub fn new(now: Millis, expires_at: Millis, absolute_expires_at: Millis) -> Self {
        Self {
            data: Data::new(),
            created: now,
            last_access: now,
            expires_at: expires_at.min(absolute_expires_at),
            absolute_expires_at,
            id_issued: now,
            user: None,
            csrf: None,
            version: 1,
            handle: 0,
            extra: None,
        }
    }

    /// True if the record is expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at <= now
    }

    /// The session's handle as shown to users (16 hex digits), or `fallback` for a record
    /// written before handles existed.
    pub(crate) fn handle_text(&self, fallback: &Key) -> String {
        if self.handle == 0 {
            fallback.short()
        } else {
            format!("{:016x}", self.handle)
        }
    }

    /// The grace-window alias target, if this record is one.
    pub fn successor(&self) -> Option<&Key> {
        self.extra.as_ref().and_then(|e| e.successor.as_ref())
    }

    /// The alias a rotation leaves under the old key: created at `now`, pointing at
    /// `successor`, and dead at `until` (idle and absolute deadline alike). Requests never use
    /// it as a session; revocation and logout follow it, so a session that rotates while it is
    /// being ended is ended under its new key too. Aliases have version 0, which no
    /// compare-and-set ever expects.
    ///
    /// ```
    /// use sessionkit::{Key, Record};
    ///
    /// let alias = Record::alias(Key([7; 32]), 1_000, 31_000);
    /// assert_eq!(alias.successor(), Some(&Key([7; 32])));
    /// assert!(alias.data.is_empty() && alias.user.is_none());
    /// ```
    pub fn alias(successor: Key, now: Millis, until: Millis) -> Self {
        let mut alias = Self::new(now, until, until);
        alias.version = 0;
        alias.extra_mut().successor = Some(successor);
        alias
    }

    /// The sealed successor ID of an alias a request may follow (see
    /// [`Extra::sealed_successor`]).
    pub fn sealed_successor(&self) -> Option<&[u8; 32]> {
        self.extra
            .as_ref()
            .and_then(|e| e.sealed_successor.as_ref())
    }

    /// Mutable access to the out-of-line fields, creating them on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Encodes the record for a byte-oriented store. The key is embedded so that a record copied
    /// under another key is rejected by [`Record::decode`].
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.data.buf.len());
        let binding = self.extra.as_deref().and_then(|e| e.binding.as_ref());
        // Records without an extension keep the first layout, which every release reads.
        out.extend_from_slice(if binding.is_some() { MAGIC_EXT } else { MAGIC });
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        for t in [
            self.created,
            self.last_access,
            self.expires_at,
            self.absolute_expires_at,
            self.id_issued,
        ] {
            out.extend_from_slice(&t.to_le_bytes());
        }
        let extra = self.extra.as_deref();
        let auth = extra.and_then(|e| e.auth.as_ref());
        let successor = extra.and_then(|e| e.successor.as_ref());
        let flags = (self.user.is_some() as u8)
            | (self.csrf.is_some() as u8) << 1
            | (auth.is_some() as u8) << 2
            | (extra.and_then(|e| e.device.as_ref()).is_some() as u8) << 3
            | (extra.and_then(|e| e.ip_prefix.as_ref()).is_some() as u8) << 4
            | (successor.is_some() as u8) << 5
            | ((self.handle != 0) as u8) << 6
            | (extra.and_then(|e| e.sealed_successor.as_ref()).is_some() as u8) << 7;
        out.push(flags);
        if let Some(u) = &self.user {
            put_str(&mut out, u);
        }
        if let Some(c) = &self.csrf {
            put_str(&mut out, c);
        }
        if let Some(a) = auth {
            out.extend_from_slice(&a.at.to_le_bytes());
            put_str(&mut out, &a.method);
        }
        if let Some(d) = extra.and_then(|e| e.device.as_ref()) {
            put_str(&mut out, d);
        }
        if let Some(ip) = extra.and_then(|e| e.ip_prefix.as_ref()) {
            put_str(&mut out, ip);
        }
        if let Some(s) = successor {
            out.extend_from_slice(&s.0);
        }
        if self.handle != 0 {
            out.extend_from_slice(&self.handle.to_le_bytes());
        }
        if let Some(sealed) = extra.and_then(|e| e.sealed_successor.as_ref()) {
            out.extend_from_slice(sealed);
        }
        if let Some(b) = binding {
            // The extension block: its length, then the binding (the only extension so far).
            let mut ext = Vec::with_capacity(128 + b.jwk.len());
            b.encode_into(&mut ext);
            out.extend_from_slice(&(ext.len() as u32).to_le_bytes());
            out.extend_from_slice(&ext);
        }
        out.extend_from_slice(&(self.data.buf.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data.buf);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes bytes written by [`Record::encode`] for `key`. Truncated, altered, foreign or
    /// misfiled bytes give [`Error::Corrupt`]; this never panics.
    pub fn decode(key: &Key, bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MAGIC.len() + 32 + 8 + 40 + 1 + 4 + 4 {
            return Err(corrupt("too short"));
        }
        let extended = match &bytes[..4] {
            m if m == MAGIC => false,
            m if m == MAGIC_EXT => true,
            _ => return Err(corrupt("not a sessionkit record (bad magic)")),
        };
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader { buf: body, at: 4 };
        if r.take(32)? != key.0 {
            return Err(corrupt("record belongs to another key"));
        }
        let version = r.u64()?;
        let created = r.i64()?;
        let last_access = r.i64()?;
        let expires_at = r.i64()?;
        let absolute_expires_at = r.i64()?;
        let id_issued = r.i64()?;
        // Every bit is taken: new optional fields go in the extension block (`MAGIC_EXT`).
        let flags = r.take(1)?[0];
        let user = if flags & 1 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let csrf = if flags & 2 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let mut extra = Extra::default();
        if flags & 4 != 0 {
            let at = r.i64()?;
            extra.auth = Some(AuthInfo {
                at,
                method: r.string()?,
            });
        }
        if flags & 8 != 0 {
            extra.device = Some(r.string()?);
        }
        if flags & 16 != 0 {
            extra.ip_prefix = Some(r.string()?);
        }
        if flags & 32 != 0 {
            extra.successor = Some(Key(r.take(32)?.try_into().unwrap()));
        }
        let handle = if flags & 64 != 0 {
            match r.u64()? {
                // Written only when set: a zero here was not written by `encode`.
                0 => return Err(corrupt("zero handle")),
                h => h,
            }
        } else {
            0
        };
        if flags & 128 != 0 {
            extra.sealed_successor = Some(r.take(32)?.try_into().unwrap());
        }
        if extended {
            let len = r.u32()? as usize;
            let mut ext = Reader {
                buf: r.take(len)?,
                at: 0,
            };
            extra.binding = Some(DeviceBinding::decode_from(&mut ext)?);
            if ext.at != ext.buf.len() {
                return Err(corrupt("trailing bytes in the extension block"));
            }
        }
        let dlen = r.u32()? as usize;
        let data = Data::from_packed(r.take(dlen)?.to_vec())?;
        if r.at != body.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Record {
            data,
            created,
            last_access,
            expires_at,
            absolute_expires_at,
            id_issued,
            user,
            csrf,
            version,
            handle,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
        })
    }
}

/// The first layout: every field up to the sealed successor, then the data.
const MAGIC: &[u8; 4] = b"SKR\x01";
/// The first layout plus an extension block (a `u32` length and its bytes) before the data,
/// written only when an extension field (the device binding) is set, so records without one
/// stay readable by releases that predate it. The 8 flag bits of the first layout are all
/// taken; this is where new optional fields go.
const MAGIC_EXT: &[u8; 4] = b"SKR\x02";

fn corrupt(what: &str) -> Error {
    Error::Corrupt(what.to_owned())
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(|| corrupt("length"))?;
        let s = self
            .buf
            .get(self.at..end)
            .ok_or_else(|| corrupt("truncated"))?;
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| corrupt("utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    fn sample() -> (Key, Record) {
        let key = SessionId::generate().unwrap().key();
        let mut r = Record::new(1_000, 2_000, 3_000);
        r.data.set("count", "7").unwrap();
        r.data.set("name", "\"ann\"").unwrap();
        r.user = Some("ann".into());
        r.csrf = Some("tok".into());
        r.extra_mut().auth = Some(AuthInfo {
            at: 5,
            method: "password".into(),
        });
        r.extra_mut().device = Some("Firefox".into());
        r.version = 9;
        r.handle = 0x0123_4567_89ab_cdef;
        (key, r)
    }

    #[test]
    fn handles_round_trip_and_zero_is_not_written() {
        let (key, r) = sample();
        assert_eq!(
            Record::decode(&key, &r.encode(&key)).unwrap().handle,
            r.handle
        );
        assert_eq!(r.handle_text(&key), "0123456789abcdef");
        let mut legacy = r.clone();
        legacy.handle = 0;
        let bytes = legacy.encode(&key);
        assert_eq!(
            bytes.len() + 8,
            r.encode(&key).len(),
            "no bytes for no handle"
        );
        assert_eq!(Record::decode(&key, &bytes).unwrap().handle, 0);
        assert_eq!(legacy.handle_text(&key), key.short());
    }

    #[test]
    fn data_set_get_remove() {
        let mut d = Data::new();
        d.set("a", "1").unwrap();
        d.set("b", "2").unwrap();
        d.set("a", "3").unwrap();
        assert_eq!(d.get("a"), Some("3"));
        assert_eq!(d.get("b"), Some("2"));
        assert_eq!(d.len(), 2);
        assert!(d.remove("b"));
        assert!(!d.remove("b"));
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![("a", "3")]);
        d.clear();
        assert!(d.is_empty());
    }

    #[test]
    fn encode_decode_round_trip() {
        let (key, r) = sample();
        let bytes = r.encode(&key);
        assert_eq!(Record::decode(&key, &bytes).unwrap(), r);
        let plain = Record::new(1, 2, 3);
        assert_eq!(Record::decode(&key, &plain.encode(&key)).unwrap(), plain);
    }

    /// Every truncation of `bytes` and every single-bit flip in them fails to decode.
    pub(super) fn assert_truncations_and_flips_refused(key: &Key, bytes: &[u8]) {
        for n in 0..bytes.len() {
            assert!(
                Record::decode(key, &bytes[..n]).is_err(),
                "truncated at {n}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x40;
            assert!(Record::decode(key, &b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn decode_rejects_every_truncation_flip_and_foreign_key() {
        let (key, r) = sample();
        let bytes = r.encode(&key);
        assert_truncations_and_flips_refused(&key, &bytes);
        let other = SessionId::generate().unwrap().key();
        assert!(Record::decode(&other, &bytes).is_err());
        assert!(Record::decode(&key, &vec![0; bytes.len()]).is_err());
        assert!(Record::decode(&key, b"{\"json\":true}").is_err());
    }

    #[test]
    fn decode_rejects_repeated_data_names() {
        // Caught by the record_decode fuzz harness's uniqueness check: a checksummed record whose
        // data named the same key twice decoded, and `remove` then uncovered the older value.
        let key = SessionId::generate().unwrap().key();
        let mut r = Record::new(1, 2, 3);
        r.data.set("user_id", "7").unwrap();
        let entry = r.data.buf.clone();
        r.data.buf.extend_from_slice(&entry);
        assert!(matches!(
            Record::decode(&key, &r.encode(&key)),
            Err(Error::Corrupt(m)) if m.contains("repeated")
        ));
        r.data.buf.truncate(entry.len());
        r.data.set("other", "1").unwrap();
        assert_eq!(Record::decode(&key, &r.encode(&key)).unwrap(), r);
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    fn bound(mut r: Record) -> Record {
        r.extra_mut().binding = Some(DeviceBinding {
            session_id: "sid".into(),
            alg: "ES256".into(),
            jwk: r#"{"kty":"EC"}"#.into(),
            secret: [9; 32],
            challenge: "c".into(),
            challenge_issued: 42,
        });
        r
    }

    /// A record as releases before the extension block wrote it (user `ann`, `n = 1`).
    const OLD_LAYOUT: &str = "534b520107070707070707070707070707070707070707070707070707070707070707070100000000000000e803000000000000e803000000000000d007000000000000b80b000000000000e8030000000000000103000000616e6e0800000001006e010000003169234aea";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn records_written_before_the_extension_block_still_decode_and_encode_the_same() {
        let key = Key([7; 32]);
        let old = unhex(OLD_LAYOUT);
        let r = Record::decode(&key, &old).unwrap();
        assert_eq!(r.user.as_deref(), Some("ann"));
        assert_eq!(r.data.get("n"), Some("1"));
        assert!(r.extra.is_none());
        // Without an extension the first layout is written, byte for byte.
        assert_eq!(r.encode(&key), old);
    }

    #[test]
    fn a_device_binding_round_trips_in_the_extension_block() {
        let key = Key([7; 32]);
        let r = bound(Record::decode(&key, &unhex(OLD_LAYOUT)).unwrap());
        let bytes = r.encode(&key);
        assert_eq!(&bytes[..4], MAGIC_EXT);
        assert_eq!(Record::decode(&key, &bytes).unwrap(), r);
        super::tests::assert_truncations_and_flips_refused(&key, &bytes);
        // A first-layout magic on extended bytes is refused (the checksum covers the magic).
        let mut relabelled = bytes.clone();
        relabelled[..4].copy_from_slice(MAGIC);
        assert!(Record::decode(&key, &relabelled).is_err());
        // Cloning (as rotation does) carries it.
        let mut copy = Record::new(0, 0, 0);
        copy.clone_from(&r);
        assert_eq!(copy, r);
    }
}
