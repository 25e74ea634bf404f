//! Session IDs and the keys stores file them under.
//!
//! A [`SessionId`] is the bearer token the browser holds: 256 bits from a per-thread ChaCha12
//! CSPRNG keyed and re-keyed from the OS CSPRNG (`fill_random`), written as 43 characters of
//! unpadded base64url. Stores never see it: they see a [`Key`], the SHA-256 of the ID, so that a
//! leaked store dump contains no live token and a cookie can never name a path or a row
//! directly.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Length of the textual form of a [`SessionId`].
pub const ID_LEN: usize = 43;

/// A session ID: 32 random bytes, shown as unpadded base64url.
///
/// ```
/// use sessionkit::SessionId;
///
/// let id = SessionId::generate().unwrap();
/// let text = id.to_string();
/// assert_eq!(text.len(), 43);
/// assert_eq!(SessionId::parse(&text), Some(id));
/// assert_eq!(SessionId::parse("made-up"), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// Draws a new ID from a CSPRNG (a per-thread ChaCha12 stream keyed from the operating
    /// system's, and re-keyed from it every 64 KiB).
    ///
    /// Fails (rather than falling back to anything weaker) when the OS cannot supply randomness.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Parses the textual form strictly: exactly 43 base64url characters that decode to 32 bytes
    /// and re-encode to the same text. Anything else is `None` ("no session").
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Like [`SessionId::parse`], for raw header bytes (which may not be UTF-8).
    pub fn parse_bytes(text: &[u8]) -> Option<Self> {
        if text.len() != ID_LEN {
            return None;
        }
        if !text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        let mut out = [0u8; 33];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut out).ok()?;
        if n != 32 {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&out[..32]);
        // The last character carries spare bits that must be zero so one ID has one spelling:
        // the engine already rejects them (`decode_allow_trailing_bits` is off in
        // `URL_SAFE_NO_PAD`), so no re-encoding is needed on this per-request path; the
        // parser test pins it.
        Some(Self(bytes))
    }

    /// The key a store files this session under: SHA-256 of the raw ID bytes.
    pub fn key(&self) -> Key {
        Key(Sha256::digest(self.0).into())
    }

    /// Seals `successor` under this (retired) ID for a rotation alias: the store keeps only
    /// hashes of IDs, so what it holds cannot be opened without the retired ID itself, which
    /// only its holder presents. The pad is HMAC-SHA-256 keyed with this ID's 256 random bits,
    /// used for this one successor only (an ID retires once).
    ///
    /// ```
    /// use sessionkit::SessionId;
    ///
    /// let (old, new) = (SessionId::generate()?, SessionId::generate()?);
    /// let sealed = old.seal_successor(&new);
    /// assert_eq!(old.open_successor(&sealed, &new.key()), Some(new.clone()));
    /// // Another ID cannot open it.
    /// assert_eq!(new.open_successor(&sealed, &new.key()), None);
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn seal_successor(&self, successor: &SessionId) -> [u8; 32] {
        let mut out = self.seal_pad();
        for (o, b) in out.iter_mut().zip(successor.0) {
            *o ^= b;
        }
        out
    }

    /// Opens what [`SessionId::seal_successor`] sealed under this ID, if it names the session
    /// filed under `expected` (so a wrong ID or altered bytes give `None`, never another ID).
    pub fn open_successor(&self, sealed: &[u8; 32], expected: &Key) -> Option<SessionId> {
        let mut bytes = self.seal_pad();
        for (o, b) in bytes.iter_mut().zip(sealed) {
            *o ^= b;
        }
        let id = SessionId(bytes);
        let key = id.key();
        bool::from(key.0.ct_eq(&expected.0)).then_some(id)
    }

    fn seal_pad(&self) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"sessionkit successor seal v1");
        mac.finalize().into_bytes().into()
    }

    /// The textual form, written into `buf` without allocating.
    pub(crate) fn encode_into<'a>(&self, buf: &'a mut [u8; ID_LEN + 1]) -> &'a str {
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf[..])
            .expect("43 bytes of output fit in 44");
        std::str::from_utf8(&buf[..n]).expect("base64 output is ASCII")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_LEN + 1];
        f.write_str(self.encode_into(&mut buf))
    }
}

impl fmt::Debug for SessionId {
    // The ID is a credential: debug output shows only its key's prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(key {})", self.key().short())
    }
}

/// The at-rest name of a session: SHA-256 of its [`SessionId`].
///
/// Knowing a key does not let anyone use the session; it is safe to log in short form and to
/// show as a handle (see [`Key::short`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Lower-case hex of all 32 bytes (file names, SQL text keys, Redis keys).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// Parses the form written by [`Key::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let t = text.as_bytes();
        if t.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in t.chunks_exact(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(Self(out))
    }

    /// The first 16 hex digits: enough to tell sessions apart in logs and lists.
    pub fn short(&self) -> String {
        self.to_hex()[..16].to_owned()
    }

    /// Number of values [`Key::shard`] and [`Key::stripe`] take.
    pub const PARTS: usize = 256;

    /// The store shard (or Redis bucket) of this key, `0..Key::PARTS`: its first byte.
    ///
    /// The key is a hash of a random ID, so any of its bytes is uniform and the shards fill
    /// evenly without hashing again. It is the *first* byte so that shards are ranges of the key
    /// order: a store that scans shard by shard in order returns keys in key order, which the
    /// scan cursors (the last key returned) rely on.
    pub fn shard(&self) -> usize {
        self.0[0] as usize
    }

    /// The write turn (a lock stripe of the session manager) of this key, `0..Key::PARTS`: its
    /// second byte.
    ///
    /// Uniform for the same reason as [`Key::shard`], but a different byte, so that keys which
    /// share a store shard do not also share a write turn: the two kinds of contention stay
    /// independent.
    pub fn stripe(&self) -> usize {
        self.0[1] as usize
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Output of one thread's generator before it is keyed afresh from the OS.
const RESEED_AFTER: usize = 64 * 1024;

/// Fills `buf` from a cryptographically secure generator: a per-thread ChaCha12 stream keyed
/// from the OS CSPRNG and re-keyed from it after every [`RESEED_AFTER`] bytes (what `rand`'s
/// thread generator does). A new session then costs no system call, where reading the OS for
/// every ID did; the output is as unpredictable as the OS key it is drawn from. A failure to
/// key it is [`Error::Random`], never a weaker fallback.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha12Rng;
    use std::cell::RefCell;

    thread_local! {
        static RNG: RefCell<Option<(ChaCha12Rng, usize)>> = const { RefCell::new(None) };
    }
    let os = |buf: &mut [u8]| getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()));
    let drawn = RNG.try_with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let rng = match slot.as_mut() {
            Some((rng, used)) if *used < RESEED_AFTER => {
                *used += buf.len();
                rng
            }
            _ => {
                let mut seed = [0u8; 32];
                os(&mut seed)?;
                let (rng, _) = slot.insert((ChaCha12Rng::from_seed(seed), buf.len()));
                seed.fill(0);
                rng
            }
        };
        rng.fill_bytes(buf);
        Ok(())
    });
    match drawn {
        Ok(result) => result,
        // The thread is being torn down and its generator is gone: ask the OS.
        Err(_) => os(buf),
    }
}

/// A fresh random token (32 bytes, base64url), for CSRF tokens.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ten_thousand_ids_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = SessionId::generate().unwrap();
            let text = id.to_string();
            assert_eq!(text.len(), ID_LEN);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(SessionId::parse(&text).as_ref(), Some(&id));
            assert!(seen.insert(text));
        }
    }

    #[test]
    fn threads_draw_different_streams_and_keep_them_after_a_reseed() {
        // 10,000 IDs above crossed the re-key point several times; here: each thread's stream
        // is its own (a generator shared by accident, or keyed alike, would repeat IDs).
        let draw = || {
            (0..3 * RESEED_AFTER / 32)
                .map(|_| SessionId::generate().unwrap().0)
                .collect::<Vec<_>>()
        };
        let a = std::thread::spawn(draw).join().unwrap();
        let b = std::thread::spawn(draw).join().unwrap();
        let all: HashSet<[u8; 32]> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), a.len() + b.len());
    }

    #[test]
    fn parser_rejects_malformed_ids() {
        let good = SessionId::generate().unwrap().to_string();
        let mut cases: Vec<String> = vec![
            String::new(),
            "a".into(),
            good[..42].into(),
            format!("{good}A"),
            format!("{good}="),
            good.replace(|_| true, "A")
                .chars()
                .take(43)
                .collect::<String>()
                + "==",
            format!(" {}", &good[1..]),
            format!("{}+", &good[..42]),
            format!("{}/", &good[..42]),
            format!("{}.", &good[..42]),
            format!("{}é", &good[..41]),
            "\0".repeat(43),
        ];
        // Non-canonical final character: 'B' leaves a spare bit set after 'A'-based padding.
        cases.push(format!("{}B", "A".repeat(42)));
        for c in &cases {
            assert_eq!(SessionId::parse(c), None, "accepted {c:?}");
        }
        assert!(SessionId::parse(&"A".repeat(43)).is_some());
        assert_eq!(SessionId::parse_bytes(&[0xff; 43]), None);
    }

    #[test]
    fn key_is_sha256_and_hex_round_trips() {
        let id = SessionId::generate().unwrap();
        let key = id.key();
        assert_ne!(key.0, id.0);
        assert_eq!(Key::from_hex(&key.to_hex()), Some(key));
        assert_eq!(Key::from_hex("zz"), None);
        assert_eq!(key.short().len(), 16);
        assert!(!format!("{id:?}").contains(&id.to_string()));
    }
}
