//! [`RedisStore`]: sessions in Redis, standalone (`redis://`) or Cluster (`redis+cluster://`),
//! over TLS as `rediss://` and `rediss+cluster://` with the `redis-tls` feature.
//!
//! # Layout
//!
//! With key prefix `P` (default `sk:`), a session with key `K` (64 hex digits) lives in
//!
//! - `P{BB}r:K`, a HASH: `v` version, `e` expires_at (ms), `l` last_access (ms), `b` absolute
//!   deadline (ms), `u` user (absent when none), `a` = 1 on a rotation alias, `t` the TTL last
//!   set when it is not `e`, and `d` the payload, [`Record::encode`] of the record as last
//!   saved. A touch changes only `l` and `e` (and maybe `t`), which override the payload's
//!   copies when the record is read back.
//! - `P{BB}x`, a sorted set of the bucket's (non-alias) sessions scored by a lower bound of
//!   their `expires_at`: the deadline at create, moved by a write only when the deadline moves
//!   earlier, and corrected by `gc` when it comes due while the record lives on. That keeps
//!   the index off the hot write (a session in use moves its deadline later on every save) and
//!   gives `len` and `gc` their cost in records that came due rather than all records.
//! - `P{BB}k`, a sorted set of the bucket's sessions with equal scores, read in key order by
//!   `scan`, so a scan never returns a record twice.
//! - `Pu:{H}`, per user (H = hash of the user name), a sorted set of that user's session keys
//!   scored by their absolute deadline. It is a write-ahead hint that reads verify against the
//!   records; it carries a TTL equal to its latest entry and loses entries whose deadline passed
//!   on every write and read, so it stays bounded without any sweeper.
//!
//! `BB` is the key's first byte in hex: the record and its bucket's two sorted sets share one
//! hash tag, hence one Cluster hash slot, so `create`, `save`, `touch`, `destroy` and (in one
//! bucket) `rotate` are each a single Lua script, atomic on the server.
//!
//! # Expiry
//!
//! Records carry Redis' own TTL, never earlier than `expires_at` (which is already the earlier
//! of the idle and the absolute deadline) and never later than the absolute deadline: set at
//! the deadline on create, and moved, with as much slack again, only when a save or touch
//! moves the deadline past it (about once per idle period for a session in use). So an expired
//! session disappears without any sweeper, at most one idle period late. The scripts compare
//! against the caller's `now` and the exact deadline, so a record is never served past its
//! deadline even before Redis reclaims it. [`Store::gc`] only drops the index entries of records
//! that expired (and deletes records that are expired by the caller's clock but not yet by
//! Redis').
//!
//! # Cluster
//!
//! A rotation whose old and new key fall in different buckets touches two hash slots and cannot
//! be one script there. It runs as: create the new record (insert-if-absent), then
//! compare-and-delete the old one; if that loses (the session changed or vanished meanwhile) the
//! new record is deleted again and the rotation reports [`Error::Conflict`]. For that short moment
//! both keys hold the session; a crash in between leaves an orphan under the new key that nobody
//! holds an ID for and that expires by TTL. On a standalone server every rotation is one script.
//! `scan` walks buckets in key order in both modes, so within one scan a record is returned at
//! most once, also in a Cluster (resharding moves slots, not keys between buckets).
//!
//! # Costs
//!
//! `load` is one round trip (`HMGET`); `create`, `save`, `touch`, `destroy` one script call each.
//! A signed-in session adds one round trip to `create`/`save`/`rotate` (the write-ahead user index
//! entry) and to `destroy` (one `ZREM`); `touch` never touches the index, its score being the
//! absolute deadline. `len` and `gc` query the 256 buckets concurrently (the multiplexed
//! connections pipeline them: about one round trip per server); `scan` reads bucket by bucket.
//!
//! # Files
//!
//! This file holds the [`Store`] implementation and the key layout; `conn.rs` the connections
//! (standalone pool or Cluster), command plumbing and reply parsing; `scripts.rs` the Lua scripts
//! (one `.lua` file each beside it) and their arguments; `tls.rs` the `rediss://` settings.
//! This file stays over 700 lines on purpose: the `Store` calls and the key layout they all
//! build on (bucket, record and index names, the record read) read best side by side.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{Cmd, Value};
use sha2::{Digest, Sha256};

use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

use conn::{as_bytes, as_i64, as_int, as_string, parse_scan, status_user, Conn};
use scripts::{expire_arg, record_args, save_args, scripts, ttl_arg, Scripts};

mod conn;
mod scripts;
mod tls;

/// Page size of the read-only walk over due expiry-index entries (`len`, the expired count).
const DUE_PAGE: usize = 512;

/// How often `sessions_of` lists again after meeting a dead index member (a rotation in
/// flight). Only a session rotating during the listing costs another pass, so the bound is
/// generous: 8 passes lost, once in CI, to a session rotating back to back (the conformance
/// suite's `sessions_of_never_misses_a_rotating_session`), and an empty listing is what lets a
/// session dodge a user-level revoke.
const LISTING_PASSES: usize = 64;
const KIND: &str = "redis";

/// Settings of a [`RedisStore`] beyond its URL.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key the store writes (default `sk:`). Must not contain `{`, `}` or
    /// whitespace.
    pub prefix: String,
    /// Limit for establishing a connection (default 2 s).
    pub connect_timeout: Duration,
    /// Limit for one command's answer (default 2 s); a stalled server gives an error, not a hang.
    pub response_timeout: Duration,
    /// Multiplexed connections to a standalone server, used in turn (default 2, 1..=64; URL:
    /// `?connections=N`). Each carries many requests at once; a second one keeps a busy
    /// client's requests from queueing behind one socket's reader. Cluster connections manage
    /// their own per-node sockets and ignore this.
    pub connections: usize,
    /// Replicas that must hold each write before the store reports it done (default 0; URL:
    /// `?wait_replicas=N`). With N > 0 every change to a record (and every user-index entry
    /// written ahead of one) is followed by `WAIT N` on the connection that sent it, bounded by
    /// half the response timeout; fewer acknowledgements make the write an error (the request
    /// fails) even though the master applied it. Removals from the user index are not waited
    /// for: the index is a hint that reads check against the records. Redis replicates
    /// asynchronously, so without this a failover can lose the last acknowledged writes, a
    /// logout among them. Costs a round trip plus the replication delay per write, and since
    /// `WAIT` holds the connection it runs on, calls multiplexed on that connection queue
    /// behind it (raise `connections` for many concurrent writers).
    pub wait_replicas: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "sk:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            connections: 2,
            wait_replicas: 0,
        }
    }
}

/// Session store on Redis or a Redis Cluster. See the module documentation for the layout.
///
/// ```no_run
/// # async fn f() -> sessionkit::Result<()> {
/// use sessionkit::store::redis::RedisStore;
/// let store = RedisStore::open("redis://127.0.0.1:6379/0?prefix=myapp:").await?;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    scripts: &'static Scripts,
    /// `WAIT` after every write: replicas required and the wait's limit in milliseconds.
    wait: Option<(usize, u64)>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > 128
        || prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Config(format!(
            "invalid redis key prefix {prefix:?}: at most 128 characters, no braces or whitespace"
        )));
    }
    Ok(())
}

impl RedisStore {
    /// Connects to `redis://host:port[/db][?prefix=P][&connections=N]` or
    /// `redis+cluster://host1:port1,host2:port2,...[?prefix=P]` with default options
    /// (`rediss://`, `rediss+cluster://`: see [`RedisStore::open_with`]).
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, RedisOptions::default()).await
    }

    /// Like [`RedisStore::open`] with an explicit key prefix (a `prefix` in the URL wins).
    pub async fn open_with_prefix(url: &str, prefix: &str) -> Result<Self> {
        Self::open_with(
            url,
            RedisOptions {
                prefix: prefix.to_owned(),
                ..RedisOptions::default()
            },
        )
        .await
    }

    /// Connects with explicit [`RedisOptions`]; a `prefix` or `connections` parameter in the
    /// URL overrides the option. Fails with a clear error if the server does not answer.
    ///
    /// With the `redis-tls` feature, `rediss://` and `rediss+cluster://` connect over TLS and
    /// check the server against the system's trust store, or only against the PEM bundle named
    /// by `?ca=PATH`; `?cert=PATH&key=PATH` present a client certificate.
    pub async fn open_with(url: &str, options: RedisOptions) -> Result<Self> {
        let (url, params) = super::url::take_params(
            url,
            &[
                "prefix",
                "connections",
                "ca",
                "cert",
                "key",
                "wait_replicas",
            ],
        );
        let [prefix, connections, ca, cert, key, wait_replicas]: [Option<String>; 6] =
            params.try_into().expect("six parameters");
        let wait_replicas = match wait_replicas {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 64)
                .ok_or_else(|| {
                    Error::bad_url(
                        &url,
                        format!(
                            "redis URL: wait_replicas must be a number from 0 to 64, got {n:?}"
                        ),
                    )
                })?,
            None => options.wait_replicas,
        };
        let wait = (wait_replicas > 0).then(|| {
            let ms = (options.response_timeout.as_millis() / 2).clamp(1, u64::MAX as u128);
            (wait_replicas, ms as u64)
        });
        let connections = match connections {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    Error::bad_url(
                        &url,
                        format!("redis URL: connections must be a number from 1 to 64, got {n:?}"),
                    )
                })?,
            None => options.connections.clamp(1, 64),
        };
        let prefix = prefix.unwrap_or_else(|| options.prefix.clone());
        check_prefix(&prefix)?;
        let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => {
                return Err(Error::bad_url(
                    &url,
                    "not a redis URL (expected redis://, rediss://, redis+cluster:// or \
                     rediss+cluster://)",
                ))
            }
        };
        let certs = tls::certificates(&url, tls, ca, cert, key)?;
        let conn = conn::connect(&url, rest, tls, cluster, certs, &options, connections).await?;
        Ok(Self {
            conn,
            prefix,
            wait,
            scripts: scripts(),
        })
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under this store's prefix (for tests and tools; uses `SCAN`, so it
    /// visits the whole keyspace). Returns how many keys it deleted.
    pub async fn purge_prefix(&self) -> Result<u64> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut n = 0;
        let nodes: Vec<Option<(String, u16)>> = match &self.conn {
            Conn::Single(..) => vec![None],
            Conn::Cluster(_) => self.masters().await?.into_iter().map(Some).collect(),
        };
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let v = self.query_at(&cmd, node.as_ref(), "purge").await?;
                let (next, keys) = parse_scan(v)?;
                let dels = keys
                    .iter()
                    .map(|k| {
                        let mut c = redis::cmd("DEL");
                        c.arg(k);
                        c
                    })
                    .collect();
                for v in self.many(dels, "purge").await? {
                    n += as_int(v).max(0) as u64;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(n)
    }

    fn bucket(&self, key: &Key) -> String {
        format!("{}{{{:02x}}}", self.prefix, key.shard())
    }

    fn rec_key(&self, key: &Key) -> String {
        format!("{}r:{}", self.bucket(key), key.to_hex())
    }

    /// The record, expiry-index and key-index names of `key`, in that order.
    fn keys3(&self, key: &Key) -> [String; 3] {
        let b = self.bucket(key);
        [
            format!("{b}r:{}", key.to_hex()),
            format!("{b}x"),
            format!("{b}k"),
        ]
    }

    fn bucket_keys(&self, bucket: u8) -> (String, String) {
        let b = format!("{}{{{bucket:02x}}}", self.prefix);
        (format!("{b}x"), format!("{b}k"))
    }

    /// Up to `limit` due expiry-index entries (score at or before `now`), in bucket order.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<Key>> {
        let cmds = (0..=255u8)
            .map(|b| {
                let mut c = redis::cmd("ZRANGEBYSCORE");
                c.arg(self.bucket_keys(b).0)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
                c
            })
            .collect();
        let mut due = Vec::new();
        for v in self.many(cmds, "gc").await? {
            due.extend(member_keys(v));
            if due.len() >= limit {
                break;
            }
        }
        due.truncate(limit);
        Ok(due)
    }

    /// Runs `gc_one` on each of `due`; returns how many were removed (the rest were live and
    /// had their score corrected).
    async fn gc_keys(&self, due: &[Key], now: Millis) -> Result<usize> {
        let results = join_all(due.iter().map(|k| async move {
            let args = [k.to_hex().into_bytes(), now.to_string().into_bytes()];
            self.eval(&self.scripts.gc_one, &self.keys3(k), &args, "gc")
                .await
        }))
        .await;
        let mut removed = 0;
        let mut unindex = Vec::new();
        for (k, r) in due.iter().zip(results) {
            if let (1, user) = status_user(r?, "gc")? {
                removed += 1;
                if let Some(u) = user {
                    let mut c = redis::cmd("ZREM");
                    c.arg(self.user_key(&u)).arg(k.to_hex());
                    unindex.push(c);
                }
            }
        }
        self.many(unindex, "gc").await?;
        Ok(removed)
    }

    /// The due expiry-index entries at `now`, split into (live records, the rest), read in
    /// pages of [`DUE_PAGE`] per bucket without changing anything.
    async fn due_split(&self, now: Millis, op: &'static str) -> Result<(u64, u64)> {
        let per_bucket = join_all((0..=255u8).map(|b| async move {
            let (x, _) = self.bucket_keys(b);
            let (mut live, mut dead, mut offset) = (0u64, 0u64, 0usize);
            loop {
                let mut c = redis::cmd("ZRANGEBYSCORE");
                c.arg(&x)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(DUE_PAGE);
                let members = member_keys(self.query(&c, op).await?);
                let cmds = members
                    .iter()
                    .map(|k| {
                        let mut c = redis::cmd("HMGET");
                        c.arg(self.rec_key(k)).arg("e").arg("a");
                        c
                    })
                    .collect();
                for v in self.many(cmds, op).await? {
                    let (e, alias) = match v {
                        Value::Array(f) => {
                            let mut f = f.into_iter();
                            let e = f.next().and_then(as_i64);
                            (e, !matches!(f.next(), Some(Value::Nil) | None))
                        }
                        _ => (None, false),
                    };
                    match e {
                        Some(e) if e > now && !alias => live += 1,
                        _ => dead += 1,
                    }
                }
                if members.len() < DUE_PAGE {
                    return Ok::<_, Error>((live, dead));
                }
                offset += members.len();
            }
        }))
        .await;
        let mut total = (0, 0);
        for r in per_bucket {
            let (live, dead) = r?;
            total.0 += live;
            total.1 += dead;
        }
        Ok(total)
    }

    /// Sum over every bucket of the expiry-index entries scored in `min..=max` (ZCOUNT syntax).
    async fn count_expiry_index(&self, min: String, max: String, op: &'static str) -> Result<u64> {
        let cmds = (0..=255u8)
            .map(|b| {
                let mut c = redis::cmd("ZCOUNT");
                c.arg(self.bucket_keys(b).0).arg(&min).arg(&max);
                c
            })
            .collect();
        Ok(self
            .many(cmds, op)
            .await?
            .into_iter()
            .map(|v| as_int(v).max(0) as u64)
            .sum())
    }

    fn user_key(&self, user: &str) -> String {
        let h = Sha256::digest(user.as_bytes());
        let mut hex = String::with_capacity(32);
        for b in &h[..16] {
            hex.push_str(&format!("{b:02x}"));
        }
        format!("{}u:{{{hex}}}", self.prefix)
    }

    /// Write-ahead user index entry: added before the record is written, so the index never
    /// misses a session (an entry without a matching record is dropped when read).
    async fn index_add(&self, user: Option<&str>, key: &Key, record: &Record) -> Result<()> {
        let Some(user) = user else { return Ok(()) };
        self.eval(
            &self.scripts.index_add,
            &[self.user_key(user)],
            &[
                key.to_hex().into_bytes(),
                index_score(record).to_string().into_bytes(),
                record.last_access.to_string().into_bytes(),
            ],
            "index",
        )
        .await
        .map(drop)
    }

    async fn index_remove(&self, user: &str, key: &Key) -> Result<()> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.user_key(user)).arg(key.to_hex());
        self.query(&cmd, "index").await.map(drop)
    }

    /// Reads one record (HMGET); `Ok(None)` if absent, expired at `now` or corrupt.
    fn read_record(key: &Key, v: Value, now: Millis) -> Option<(Record, bool, Option<String>)> {
        let Value::Array(f) = v else { return None };
        let mut f = f.into_iter();
        let e = as_i64(f.next()?)?;
        let l = as_i64(f.next()?)?;
        let d = as_bytes(f.next()?)?;
        let alias = !matches!(f.next(), Some(Value::Nil) | None);
        let user = f.next().and_then(as_string);
        if e <= now {
            return None;
        }
        match Record::decode(key, &d) {
            Ok(mut r) => {
                r.last_access = l;
                r.expires_at = e;
                Some((r, alias, user))
            }
            Err(err) => {
                tracing::warn!(store = KIND, key = %key.short(), error = %err, "corrupt session record ignored");
                None
            }
        }
    }

    fn hmget(&self, key: &Key) -> Cmd {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.rec_key(key))
            .arg("e")
            .arg("l")
            .arg("d")
            .arg("a")
            .arg("u");
        cmd
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A session's score in its user's index: the absolute deadline bounds the session's life; the
/// max guards against a record whose `expires_at` was set past it.
/// The keys named by a sorted-set range reply (members that are not keys are skipped).
fn member_keys(reply: Value) -> Vec<Key> {
    match reply {
        Value::Array(a) => a
            .into_iter()
            .filter_map(as_string)
            .filter_map(|m| Key::from_hex(&m))
            .collect(),
        _ => Vec::new(),
    }
}

fn index_score(record: &Record) -> Millis {
    record.absolute_expires_at.max(record.expires_at)
}

/// Writes `bytes` as the payload of `key` with every other field saying "live" (far-off
/// deadlines, indexed, no user): the conformance suite's hook for planting corrupt records.
#[cfg(feature = "testkit")]
#[async_trait]
impl super::RawAccess for RedisStore {
    async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let far: Millis = crate::record::now_millis() + 3_600_000;
        let [rec, x, k] = self.keys3(key);
        let member = key.to_hex();
        let mut cmds = Vec::new();
        let mut c = redis::cmd("DEL");
        c.arg(&rec);
        cmds.push(c);
        let mut c = redis::cmd("HSET");
        c.arg(&rec)
            .arg("v")
            .arg(1)
            .arg("e")
            .arg(far)
            .arg("l")
            .arg(far - 3_600_000)
            .arg("b")
            .arg(far)
            .arg("d")
            .arg(bytes);
        cmds.push(c);
        let mut c = redis::cmd("PEXPIREAT");
        c.arg(&rec).arg(far);
        cmds.push(c);
        let mut c = redis::cmd("ZADD");
        c.arg(&x).arg(far).arg(&member);
        cmds.push(c);
        let mut c = redis::cmd("ZADD");
        c.arg(&k).arg(0).arg(&member);
        cmds.push(c);
        for c in cmds {
            self.query(&c, "put_raw").await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn load(&self, key: &Key, now: Millis) -> Result<Option<Record>> {
        let v = self.query(&self.hmget(key), "load").await?;
        Ok(Self::read_record(key, v, now).map(|(r, _, _)| r))
    }

    async fn create(&self, key: &Key, record: &Record) -> Result<()> {
        self.index_add(record.user.as_deref(), key, record).await?;
        let mut args = vec![
            key.to_hex().into_bytes(),
            record.last_access.to_string().into_bytes(),
        ];
        args.extend(record_args(key, record));
        let v = self
            .eval(&self.scripts.create, &self.keys3(key), &args, "create")
            .await?;
        match status_user(v, "create")?.0 {
            1 => Ok(()),
            _ => Err(Error::Exists),
        }
    }

    async fn save(&self, key: &Key, record: &Record, expected_version: u64) -> Result<()> {
        let [rec, x, _] = self.keys3(key);
        let mut keys = vec![rec, x];
        let mut args = save_args(record, expected_version, key);
        match record.user.as_deref() {
            Some(user) if !self.is_cluster() => {
                let score = index_score(record);
                keys.push(self.user_key(user));
                args.push(score.to_string().into_bytes());
                args.push(expire_arg(score));
            }
            user => self.index_add(user, key, record).await?,
        }
        let v = self.eval(&self.scripts.save, &keys, &args, "save").await?;
        match status_user(v, "save")? {
            (1, old) => {
                if let Some(old) = old.filter(|o| Some(o) != record.user.as_ref()) {
                    self.index_remove(&old, key).await?;
                }
                Ok(())
            }
            _ => Err(Error::Conflict),
        }
    }

    async fn touch(&self, key: &Key, last_access: Millis, expires_at: Millis) -> Result<bool> {
        let [rec, x, _] = self.keys3(key);
        let v = self
            .eval(
                &self.scripts.touch,
                &[rec, x],
                &[
                    last_access.to_string().into_bytes(),
                    expire_arg(expires_at),
                    ttl_arg(last_access, expires_at, Millis::MAX),
                ],
                "touch",
            )
            .await?;
        Ok(status_user(v, "touch")?.0 == 1)
    }

    async fn rotate(
        &self,
        old: &Key,
        expected_version: u64,
        new: &Key,
        record: &Record,
        alias: Option<&Record>,
    ) -> Result<()> {
        let now = record.last_access;
        let grace = alias
            .map(|a| a.expires_at.to_string().into_bytes())
            .unwrap_or_default();
        let alias = alias.map(|a| a.encode(old)).unwrap_or_default();
        let old_user = if !self.is_cluster() || old.shard() == new.shard() {
            self.index_add(record.user.as_deref(), new, record).await?;
            let mut keys = self.keys3(old).to_vec();
            keys.extend(self.keys3(new));
            let mut args = vec![
                old.to_hex().into_bytes(),
                new.to_hex().into_bytes(),
                now.to_string().into_bytes(),
                expected_version.to_string().into_bytes(),
            ];
            args.extend(record_args(new, record));
            args.push(grace);
            args.push(alias);
            let v = self
                .eval(&self.scripts.rotate, &keys, &args, "rotate")
                .await?;
            match status_user(v, "rotate")? {
                (1, u) => u,
                lost => {
                    // Nothing moved: take back the write-ahead index entry of the new key, or
                    // every lost rotation would leave one behind until its deadline.
                    if let Some(u) = record.user.as_deref() {
                        self.index_remove(u, new).await?;
                    }
                    return Err(if lost.0 == 2 {
                        Error::Exists
                    } else {
                        Error::Conflict
                    });
                }
            }
        } else {
            // Two hash slots: create the new record, then compare-and-retire the old one, undoing
            // the first step if the second loses (see the module documentation). `create` also
            // writes the user index entry ahead.
            self.create(new, record).await?;
            let args = vec![
                old.to_hex().into_bytes(),
                now.to_string().into_bytes(),
                expected_version.to_string().into_bytes(),
                grace,
                alias,
            ];
            let outcome = self
                .eval(&self.scripts.retire, &self.keys3(old), &args, "rotate")
                .await
                .and_then(|v| status_user(v, "rotate"));
            match outcome {
                Ok((1, u)) => u,
                Ok(_) => {
                    self.destroy(new).await?;
                    return Err(Error::Conflict);
                }
                Err(e) => {
                    if let Err(undo) = self.destroy(new).await {
                        tracing::warn!(store = KIND, key = %new.short(), error = %undo,
                            "could not undo the first step of a failed rotation; the new key expires by TTL");
                    }
                    return Err(e);
                }
            }
        };
        if let Some(u) = old_user {
            self.index_remove(&u, old).await?;
        }
        Ok(())
    }

    async fn take(&self, key: &Key) -> Result<Option<Record>> {
        let v = self
            .eval(
                &self.scripts.destroy,
                &self.keys3(key),
                &[key.to_hex().into_bytes()],
                "destroy",
            )
            .await?;
        // {deleted, user, e, l, d}: the fields `read_record` decodes follow the status.
        let Value::Array(mut reply) = v else {
            return Err(conn::bad_reply("destroy"));
        };
        let mut fields = reply.split_off(reply.len().min(2));
        let (n, user) = status_user(Value::Array(reply), "destroy")?;
        if let Some(u) = user {
            self.index_remove(&u, key).await?;
        }
        if n == 0 {
            return Ok(None);
        }
        // Expired records are returned too: `Millis::MIN` as "now".
        fields.extend([Value::Nil, Value::Nil]);
        Ok(Self::read_record(key, Value::Array(fields), Millis::MIN).map(|(r, _, _)| r))
    }

    /// Drops the index entries (and any hash left) of records expired at `now`, at most
    /// `limit`. Expiry-index scores are lower bounds (a save that moves a deadline later leaves
    /// the score alone), so some due entries belong to live records: those get their score
    /// corrected instead, which moves them out of the due range, and the pass reads on until it
    /// removed `limit` or nothing is due.
    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut removed = 0;
        while removed < limit {
            let due = self.due(now, limit - removed).await?;
            if due.is_empty() {
                break;
            }
            removed += self.gc_keys(&due, now).await?;
        }
        Ok(removed)
    }

    /// Live sessions: those whose expiry-index score is still ahead, and the due entries whose
    /// record is live after all (their score lags a later deadline until `gc` corrects it).
    async fn len(&self, now: Millis) -> Result<u64> {
        let ahead = self
            .count_expiry_index(format!("({now}"), "+inf".to_owned(), "len")
            .await?;
        let (live, _) = self.due_split(now, "len").await?;
        Ok(ahead + live)
    }

    /// Due entries of the expiry index whose record is not live: their hashes may already be
    /// gone (Redis' own TTL), but the entries are what a `gc` pass removes and counts.
    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        let (_, dead) = self.due_split(now, "expired").await?;
        Ok(Some(dead))
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let mut after = super::key_cursor(cursor)?;
        let limit = limit.max(1);
        let mut bucket = after.map(|k| k.shard()).unwrap_or(0);
        let mut records = Vec::new();
        while bucket < 256 && records.len() < limit {
            let (_, k) = self.bucket_keys(bucket as u8);
            let min = match after.filter(|a| a.shard() == bucket) {
                Some(a) => format!("({}", a.to_hex()),
                None => "-".to_owned(),
            };
            let want = limit - records.len();
            let mut cmd = redis::cmd("ZRANGEBYLEX");
            cmd.arg(&k).arg(&min).arg("+").arg("LIMIT").arg(0).arg(want);
            let members = member_keys(self.query(&cmd, "scan").await?);
            let full = members.len() >= want;
            let values = self
                .many(members.iter().map(|m| self.hmget(m)).collect(), "scan")
                .await?;
            for (m, v) in members.iter().zip(values) {
                if let Some((r, false, _)) = Self::read_record(m, v, now) {
                    records.push((*m, r));
                }
            }
            if full {
                // This bucket may hold more; continue after its last member.
                after = members.last().copied();
            } else {
                bucket += 1;
                after = None;
            }
        }
        let next = if records.len() >= limit {
            records.last().map(|(k, _)| k.to_hex())
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn sessions_of(&self, user: &str, now: Millis) -> Result<Vec<(Key, Record)>> {
        let ukey = self.user_key(user);
        let mut out = Vec::new();
        // The index read and the record reads are two round trips: a session rotating between
        // them is listed under its old key and read after it moved. Its new key joined the
        // index before the old record was retired, so a pass that met a dead member lists
        // again; a pass that met none missed nothing (revocation depends on it).
        for pass in 0..LISTING_PASSES {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(&ukey).arg(format!("({now}")).arg("+inf");
            let members = member_keys(self.query(&cmd, "sessions_of").await?);
            let values = self
                .many(
                    members.iter().map(|m| self.hmget(m)).collect(),
                    "sessions_of",
                )
                .await?;
            let mut dead = Vec::new();
            let mut absent = false;
            for (m, v) in members.iter().zip(values) {
                // No record: the write-ahead entry of a create or rotation in flight, a key a
                // rotation just deleted, or a session that expired by TTL. It stays (its score
                // expires it, with the session's absolute deadline): only what a read proved
                // dead goes. But the record reads are not one snapshot, so an absent key may be
                // a rotation's old home read after the move while its new home was read before
                // it: such a pass lists again.
                if matches!(&v, Value::Array(f) if matches!(f.first(), Some(Value::Nil) | None)) {
                    out.retain(|(k, _)| k != m);
                    absent = true;
                    continue;
                }
                match Self::read_record(m, v, now) {
                    // A later pass may meet a session again: keep the fresher read.
                    Some((r, false, Some(u))) if u == user => {
                        match out.iter_mut().find(|(k, _)| k == m) {
                            Some(seen) => seen.1 = r,
                            None => out.push((*m, r)),
                        }
                    }
                    _ => {
                        if pass > 0 {
                            out.retain(|(k, _)| k != m);
                        }
                        dead.push(m.to_hex());
                    }
                }
            }
            // Prune what the read proved dead, plus everything past its absolute deadline.
            let mut prune = redis::cmd("ZREMRANGEBYSCORE");
            prune.arg(&ukey).arg("-inf").arg(now);
            let mut cmds = vec![prune];
            let clean = dead.is_empty() && !absent;
            if !dead.is_empty() {
                let mut c = redis::cmd("ZREM");
                c.arg(&ukey).arg(&dead);
                cmds.push(c);
            }
            self.many(cmds, "sessions_of").await?;
            if clean {
                break;
            }
        }
        out.sort_by_key(|(_, r)| r.created);
        Ok(out)
    }

    async fn destroy_user(&self, user: &str) -> Result<u64> {
        let ukey = self.user_key(user);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&ukey).arg(0).arg(-1);
        let members: Vec<String> = match self.query(&cmd, "destroy_user").await? {
            Value::Array(a) => a.into_iter().filter_map(as_string).collect(),
            _ => Vec::new(),
        };
        let keys: Vec<Key> = members.iter().filter_map(|m| Key::from_hex(m)).collect();
        let results = join_all(keys.iter().map(|k| async move {
            let args = [k.to_hex().into_bytes(), user.as_bytes().to_vec()];
            self.eval(
                &self.scripts.destroy_if_user,
                &self.keys3(k),
                &args,
                "destroy_user",
            )
            .await
        }))
        .await;
        let mut n = 0;
        let mut handled = Vec::new();
        for (m, r) in members.iter().zip(results) {
            match status_user(r?, "destroy_user")?.0 {
                1 => {
                    n += 1;
                    handled.push(m);
                }
                // No record (yet): the write-ahead entry of a create or rotation in flight keeps
                // its place, or that session would be missing from the index for good.
                0 => {}
                _ => handled.push(m),
            }
        }
        // Remove exactly the entries handled: a session created meanwhile keeps its entry.
        if !handled.is_empty() {
            let mut c = redis::cmd("ZREM");
            c.arg(&ukey).arg(&handled);
            self.query(&c, "destroy_user").await?;
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<()> {
        self.query(&redis::cmd("PING"), "ping").await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("app:{x}").is_err());
        assert!(check_prefix("app: x").is_err());
        assert!(check_prefix("app:").is_ok());
    }
}
