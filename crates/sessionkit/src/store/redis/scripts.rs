//! The Lua scripts of a [`RedisStore`](super::RedisStore), one `.lua` file each beside this one,
//! hashed once per process, and the encoding of their arguments.
//!
//! Most scripts get the shared helpers (`prelude.lua`, `retire_fn.lua`) put in front of them;
//! the hot ones (save, touch) are self-contained. The `KEYS`/`ARGV` each script expects are
//! described above its constant.

use crate::id::Key;
use crate::record::{Millis, Record};

/// The record fields as script arguments: v, e, l, b, has-user, user, d.
pub(super) fn record_args(key: &Key, r: &Record) -> Vec<Vec<u8>> {
    vec![
        r.version.to_string().into_bytes(),
        r.expires_at.to_string().into_bytes(),
        r.last_access.to_string().into_bytes(),
        r.absolute_expires_at.to_string().into_bytes(),
        if r.user.is_some() {
            b"1".to_vec()
        } else {
            b"0".to_vec()
        },
        r.user.clone().unwrap_or_default().into_bytes(),
        r.encode(key),
    ]
}

/// The arguments of [`SAVE`] before the user-index ones: now, expected version, v, e, l, b,
/// has-user, d, TTL[, user]. The user goes last so that a save without one sends nothing for it.
pub(super) fn save_args(r: &Record, expected_version: u64, key: &Key) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(12);
    args.push(r.last_access.to_string().into_bytes());
    args.push(expected_version.to_string().into_bytes());
    args.push(r.version.to_string().into_bytes());
    args.push(r.expires_at.to_string().into_bytes());
    args.push(r.last_access.to_string().into_bytes());
    args.push(r.absolute_expires_at.to_string().into_bytes());
    args.push(if r.user.is_some() {
        b"1".to_vec()
    } else {
        b"0".to_vec()
    });
    args.push(r.encode(key));
    args.push(ttl_arg(r.last_access, r.expires_at, r.absolute_expires_at));
    if let Some(user) = &r.user {
        args.push(user.clone().into_bytes());
    }
    args
}

/// A deadline as a `PEXPIREAT` argument: clamped to what Redis accepts, like the scripts'
/// `pxat`, for the scripts that take it ready-made.
pub(super) fn expire_arg(at: Millis) -> Vec<u8> {
    at.clamp(1, 1_000_000_000_000_000).to_string().into_bytes()
}

/// The TTL a save or touch at `now` sets when the record's deadline `expires_at` has moved
/// past its current TTL: the deadline plus as long again (never past the absolute deadline,
/// never before the deadline). A session in use then moves its TTL about once per idle period
/// instead of on every write, which is a `PEXPIREAT` (and a Lua call) less per save. Reads
/// and scripts check the deadline itself (`e`), so a record is never served past it; on the
/// server it outlives it by at most that slack, until `gc` or the TTL removes it.
pub(super) fn ttl_arg(now: Millis, expires_at: Millis, absolute: Millis) -> Vec<u8> {
    let slack = expires_at.saturating_sub(now).max(0);
    expire_arg(
        expires_at
            .saturating_add(slack)
            .min(absolute)
            .max(expires_at),
    )
}

pub(super) struct Script {
    pub(super) code: String,
    pub(super) sha: String,
}

impl Script {
    /// A script with the shared helpers in front of `body`.
    fn new(body: &str) -> Self {
        Self::bare(&format!("{PRELUDE}\n{RETIRE_FN}\n{body}"))
    }

    /// A script of `code` alone. The hot scripts (save, touch) are written this way: defining
    /// the helper closures and formatting numbers in Lua is a measurable share of a short
    /// script's server time, which every request pays.
    fn bare(code: &str) -> Self {
        let code = code.to_owned();
        let sha = redis::Script::new(&code).get_hash().to_owned();
        Self { code, sha }
    }
}

/// The scripts, hashed once per process.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) save: Script,
    pub(super) touch: Script,
    pub(super) rotate: Script,
    pub(super) retire: Script,
    pub(super) destroy: Script,
    pub(super) destroy_if_user: Script,
    pub(super) gc_one: Script,
    pub(super) index_add: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create: Script::new(CREATE),
            save: Script::bare(SAVE),
            touch: Script::bare(TOUCH),
            rotate: Script::new(ROTATE),
            retire: Script::new(RETIRE),
            destroy: Script::new(DESTROY),
            destroy_if_user: Script::new(DESTROY_IF_USER),
            gc_one: Script::new(GC_ONE),
            index_add: Script::new(INDEX_ADD),
        }
    }
}

// Shared helpers. Times travel as decimal strings and are compared with tonumber (exact below
// 2^53 ms); versions are compared as strings, so no precision is lost.
const PRELUDE: &str = include_str!("prelude.lua");

// KEYS: rec, x, k. ARGV: member, now, record fields (3..9).
const CREATE: &str = include_str!("create.lua");

// KEYS: rec, x[, user index]. ARGV: now, expected version, v, e, l, b, has-user, d, the
// record's TTL should the deadline pass its current one (9, `ttl_arg`)[, user (10)][, the
// user-index score (11) and its PEXPIREAT time (12)] (`save_args`). The user index is passed
// only on a standalone server, where one script may touch any key: there the index entry is
// written with the record, atomically, when the record's user changes, and a signed-in
// session's save stays one round trip. (A cluster keeps the index in another slot and writes
// it first, in a call of its own.)
// The record is live and no alias, so its hash holds exactly v, e, l, b, d, maybe t (the TTL
// last set, when it is not e) and maybe u, and its key-order entry (k) exists since create:
// overwrite in place (no DEL and re-create) and leave k alone. The TTL moves only when the
// deadline passes it, and the expiry index (x) only when the deadline moves earlier: its
// score is a lower bound of the deadline, which `gc` corrects when it comes due (see
// `RedisStore::gc`). The member is the record key's last 64 characters (its hex key).
// Self-contained (no prelude) and lean: this is the hot write, and on Redis 7 a script's cost
// is mostly per-call overhead: each argument (~60 ns), each `redis.call` (~1 µs) and each
// `tonumber` of a 13-digit time (~140 ns), so each time is converted once and the member is
// not sent (it is needed only when the deadline moves earlier).
const SAVE: &str = include_str!("save.lua");

// KEYS: rec, x. ARGV: now (last access), wanted expires_at (clamped by the caller), the TTL
// should the deadline pass the current one (`ttl_arg` of the wanted deadline; the script caps
// it at the record's absolute deadline). TTL and expiry index move as in SAVE, and the member
// comes from the record key as there. Self-contained (no prelude): touches run on every
// request that only reads.
const TOUCH: &str = include_str!("touch.lua");

// Leaves the old key: deleted, or replaced by an alias until the grace deadline.
// KEYS: old rec, old x, old k. Uses ARGV[g] = grace ('' for none), ARGV[g+1] = alias payload.
const RETIRE_FN: &str = include_str!("retire_fn.lua");

// KEYS: old rec, old x, old k, new rec, new x, new k.
// ARGV: old member, new member, now, expected, record fields (5..11), grace (12), alias (13).
// Returns {0} conflict, {2} new key taken, {1, old user} done.
const ROTATE: &str = include_str!("rotate.lua");

// The second step of a cross-slot rotation. KEYS: old rec, old x, old k.
// ARGV: old member, now, expected, grace (4), alias (5).
const RETIRE: &str = include_str!("retire.lua");

// KEYS: rec, x, k. ARGV: member.
const DESTROY: &str = include_str!("destroy.lua");

// KEYS: rec, x, k. ARGV: member, user.
const DESTROY_IF_USER: &str = include_str!("destroy_if_user.lua");

// KEYS: rec, x, k. ARGV: member, now. Returns {1, user} when the entry was dropped, {0} when
// the record turned out to be live (its index score is corrected).
const GC_ONE: &str = include_str!("gc_one.lua");

// KEYS: user index. ARGV: member, absolute deadline, now.
const INDEX_ADD: &str = include_str!("index_add.lua");
