//! [`RedisStore`]: sessions in Redis, standalone (`redis://`) or Cluster (`redis+cluster://`),
//! over TLS as `rediss://` and `rediss+cluster://` with the `redis-tls` feature.
//!
//! # Layout
//!
//! With key prefix `P` (default `sk:`), a session with key `K` (64 hex digits) lives in
//!
//! - `P{BB}r:K`, a HASH: `v` version, `e` expires_at (ms), `l` last_access (ms), `b` absolute
//!   deadline (ms), `u` user (absent when none), `a` = 1 on a rotation alias, and `d` the payload,
//!   [`Record::encode`] of the record as last saved. A touch changes only `l` and `e`, which
//!   override the payload's copies when the record is read back.
//! - `P{BB}x`, a sorted set of the bucket's (non-alias) sessions scored by `expires_at`, which
//!   gives `len` and `gc` their cost in expired records rather than all records.
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
//! Records carry Redis' own TTL (`PEXPIREAT` at `expires_at`, which is already the earlier of the
//! idle and the absolute deadline), so an expired session disappears without any sweeper. The
//! scripts also compare against the caller's `now`, so a record is never served past its
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

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};
use sha2::{Digest, Sha256};

use super::{Page, Store};
use crate::error::{Error, Result};
use crate::id::Key;
use crate::record::{Millis, Record};

mod tls;

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

enum Conn {
    /// Connections to one server and the turn counter that spreads calls over them.
    Single(Vec<ConnectionManager>, std::sync::atomic::AtomicUsize),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The standalone connection for the next call.
    fn next(
        pool: &[ConnectionManager],
        turn: &std::sync::atomic::AtomicUsize,
    ) -> ConnectionManager {
        let i = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len();
        pool[i].clone()
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

fn backend(op: &'static str) -> impl FnOnce(RedisError) -> Error {
    move |e| Error::backend(KIND, op, e)
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
                    Error::Config(format!(
                        "redis URL: wait_replicas must be a number from 0 to 64, got {n:?}"
                    ))
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
                    Error::Config(format!(
                        "redis URL: connections must be a number from 1 to 64, got {n:?}"
                    ))
                })?,
            None => options.connections.clamp(1, 64),
        };
        let prefix = prefix.unwrap_or(options.prefix);
        check_prefix(&prefix)?;
        let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => {
                return Err(Error::Config(format!(
                    "not a redis URL: {url:?} (expected redis://, rediss://, redis+cluster:// or \
                     rediss+cluster://)"
                )))
            }
        };
        let certs = tls::certificates(tls, ca, cert, key)?;
        let conn = if cluster {
            let node_scheme = if tls { "rediss" } else { "redis" };
            let builder = ClusterClientBuilder::new(cluster_nodes(node_scheme, rest)?)
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout)
                .retries(2)
                .min_retry_wait(20)
                .max_retry_wait(200);
            let client = tls::cluster_certs(builder, certs)
                .build()
                .map_err(|e| Error::Config(format!("redis cluster URL {url:?}: {e}")))?;
            let c = client
                .get_async_connection()
                .await
                .map_err(backend("connect"))?;
            Conn::Cluster(c)
        } else {
            let client = tls::client(&url, certs)
                .map_err(|e| Error::Config(format!("redis URL {url:?}: {e}")))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.response_timeout))
                // Few, quick reconnection attempts: while the server is down, calls should fail
                // fast (the next call triggers a fresh attempt) rather than queue up.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200));
            let mut pool = Vec::with_capacity(connections);
            for _ in 0..connections {
                pool.push(
                    ConnectionManager::new_with_config(client.clone(), config.clone())
                        .await
                        .map_err(backend("connect"))?,
                );
            }
            Conn::Single(pool, Default::default())
        };
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

    /// Writes `bytes` as the payload of `key` with every other field saying "live" (far-off
    /// deadlines, indexed, no user): the conformance suite's hook for planting corrupt records.
    #[cfg(feature = "testkit")]
    pub async fn put_raw(&self, key: &Key, bytes: &[u8]) -> Result<()> {
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

    async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let v = self
            .query(redis::cmd("CLUSTER").arg("SLOTS"), "purge")
            .await?;
        let mut out = Vec::new();
        if let Value::Array(ranges) = v {
            for r in ranges {
                if let Value::Array(parts) = r {
                    if let Some(Value::Array(node)) = parts.get(2) {
                        if let (Some(h), Some(Value::Int(p))) = (node.first(), node.get(1)) {
                            let host = as_string(h.clone()).unwrap_or_default();
                            let a = (host, *p as u16);
                            if !out.contains(&a) {
                                out.push(a);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn query_at(
        &self,
        cmd: &Cmd,
        node: Option<&(String, u16)>,
        op: &'static str,
    ) -> Result<Value> {
        match (&self.conn, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let mut c = c.clone();
                c.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await
                .map_err(backend(op))
            }
            _ => self.query(cmd, op).await,
        }
    }

    async fn query(&self, cmd: &Cmd, op: &'static str) -> Result<Value> {
        let r = match &self.conn {
            Conn::Single(pool, turn) => cmd.query_async::<Value>(&mut Conn::next(pool, turn)).await,
            Conn::Cluster(c) => cmd.query_async::<Value>(&mut c.clone()).await,
        };
        r.map_err(backend(op))
    }

    /// Runs a script by hash, loading it first if the server lost it (e.g. after a restart).
    async fn eval(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
        op: &'static str,
    ) -> Result<Value> {
        let build = |verb: &str, body: &str| {
            let mut c = redis::cmd(verb);
            c.arg(body).arg(keys.len()).arg(keys).arg(args);
            c
        };
        // Every script writes. The fallback and the WAIT go on the connection that ran it:
        // WAIT counts the replication of that connection's own writes.
        let (mut single, mut cluster) = match &self.conn {
            Conn::Single(pool, turn) => (Some(Conn::next(pool, turn)), None),
            Conn::Cluster(c) => (None, Some(c.clone())),
        };
        let mut run = async |cmd: Cmd| match (&mut single, &mut cluster) {
            (Some(c), _) => cmd.query_async::<Value>(c).await,
            (_, Some(c)) => cmd.query_async::<Value>(c).await,
            _ => unreachable!("one connection"),
        };
        let value = match run(build("EVALSHA", &script.sha)).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                run(build("EVAL", &script.code)).await
            }
            r => r,
        }
        .map_err(backend(op))?;
        let Some((replicas, ms)) = self.wait else {
            return Ok(value);
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(ms);
        let acked = match (&mut single, &mut cluster) {
            (Some(c), _) => wait.query_async::<Value>(c).await,
            (_, Some(c)) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(keys[0].as_bytes(), SlotAddr::Master);
                c.route_command(
                    wait,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
            _ => unreachable!("one connection"),
        }
        .map_err(backend(op))?;
        let acked = as_int(acked).max(0) as usize;
        if acked < replicas {
            return Err(Error::backend(
                KIND,
                op,
                format!(
                    "written on the master, but {acked} of the {replicas} replicas required \
                     (wait_replicas) acknowledged it within {ms} ms"
                ),
            ));
        }
        Ok(value)
    }

    fn bucket(&self, key: &Key) -> String {
        format!("{}{{{:02x}}}", self.prefix, key.0[0])
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

    /// Runs independent commands concurrently (the connections multiplex them, so this costs
    /// about one round trip per server involved).
    async fn many(&self, cmds: Vec<Cmd>, op: &'static str) -> Result<Vec<Value>> {
        let futs = cmds.iter().map(|c| self.query(c, op));
        join_all(futs).await.into_iter().collect()
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

fn cluster_nodes(scheme: &str, rest: &str) -> Result<Vec<String>> {
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{userinfo}{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(Error::Config(
            "redis cluster URL names no node (expected redis+cluster://host:port,host:port)".into(),
        ));
    }
    Ok(nodes)
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

fn as_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn as_string(v: Value) -> Option<String> {
    as_bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn as_i64(v: Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i),
        v => as_string(v)?.parse().ok(),
    }
}

fn as_int(v: Value) -> i64 {
    as_i64(v).unwrap_or(0)
}

/// A script reply `{status, user}`.
fn status_user(v: Value, op: &'static str) -> Result<(i64, Option<String>)> {
    match v {
        Value::Array(a) => {
            let mut a = a.into_iter();
            let status = a.next().and_then(as_i64).ok_or_else(|| bad_reply(op))?;
            Ok((status, a.next().and_then(as_string)))
        }
        Value::Int(i) => Ok((i, None)),
        _ => Err(bad_reply(op)),
    }
}

fn bad_reply(op: &'static str) -> Error {
    Error::backend(KIND, op, "unexpected reply from redis")
}

fn parse_scan(v: Value) -> Result<(u64, Vec<Vec<u8>>)> {
    let Value::Array(a) = v else {
        return Err(bad_reply("scan"));
    };
    let mut a = a.into_iter();
    let next = a.next().and_then(as_i64).ok_or_else(|| bad_reply("scan"))? as u64;
    let keys = match a.next() {
        Some(Value::Array(k)) => k.into_iter().filter_map(as_bytes).collect(),
        _ => Vec::new(),
    };
    Ok((next, keys))
}

/// The record fields as script arguments: v, e, l, b, has-user, user, d.
fn record_args(key: &Key, r: &Record) -> Vec<Vec<u8>> {
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

/// A session's score in its user's index: the absolute deadline bounds the session's life; the
/// max guards against a record whose `expires_at` was set past it.
fn index_score(record: &Record) -> Millis {
    record.absolute_expires_at.max(record.expires_at)
}

/// A deadline as a `PEXPIREAT` argument: clamped to what Redis accepts, like the scripts'
/// `pxat`, for the scripts that take it ready-made.
fn expire_arg(at: Millis) -> Vec<u8> {
    at.clamp(1, 1_000_000_000_000_000).to_string().into_bytes()
}

fn alias_record(old: &Key, new: &Key, now: Millis, until: Millis) -> Vec<u8> {
    let mut alias = Record::new(now, until, until);
    alias.extra_mut().successor = Some(*new);
    alias.encode(old)
}

struct Script {
    code: String,
    sha: String,
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
fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

struct Scripts {
    create: Script,
    save: Script,
    touch: Script,
    rotate: Script,
    retire: Script,
    destroy: Script,
    destroy_if_user: Script,
    gc_one: Script,
    index_add: Script,
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
const PRELUDE: &str = r#"
local function pxat(e)
  local n = tonumber(e)
  if n < 1 then n = 1 elseif n > 1e15 then n = 1e15 end
  return string.format('%.0f', n)
end
local function live(e, now)
  return e and tonumber(e) > tonumber(now)
end
-- Writes a record hash from ARGV[i..i+6] = v, e, l, b, has-user, user, d.
local function put(k, i)
  redis.call('DEL', k)
  redis.call('HSET', k, 'v', ARGV[i], 'e', ARGV[i+1], 'l', ARGV[i+2], 'b', ARGV[i+3], 'd', ARGV[i+6])
  if ARGV[i+4] == '1' then redis.call('HSET', k, 'u', ARGV[i+5]) end
  redis.call('PEXPIREAT', k, pxat(ARGV[i+1]))
end
"#;

// KEYS: rec, x, k. ARGV: member, now, record fields (3..9).
const CREATE: &str = r#"
if live(redis.call('HGET', KEYS[1], 'e'), ARGV[2]) then return {0} end
put(KEYS[1], 3)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return {1}
"#;

// KEYS: rec, x, k[, user index]. ARGV: member, now, expected version, record fields (4..10),
// the record's PEXPIREAT time (11, clamped by the caller)[, the user-index score (12) and its
// PEXPIREAT time (13)]. The user index is passed only on a standalone server, where one script
// may touch any key: there the index entry is written with the record, atomically, and a
// signed-in session's save stays one round trip. (A cluster keeps the index in another slot
// and writes it first, in a call of its own.)
// The record is live and no alias, so its hash holds exactly v, e, l, b, d and maybe u, and
// its key-order entry (k) exists since create: overwrite in place (no DEL and re-create) and
// leave k alone. Self-contained (no prelude): this is the hot write.
const SAVE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[2]) or cur[3] or cur[1] ~= ARGV[3] then return {0} end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10], 'u', ARGV[9])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10])
  if cur[4] then redis.call('HDEL', KEYS[1], 'u') end
end
redis.call('PEXPIREAT', KEYS[1], ARGV[11])
if ARGV[5] ~= cur[2] then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1]) end
if KEYS[4] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[12], ARGV[1])
  if redis.call('PEXPIRETIME', KEYS[4]) < tonumber(ARGV[13]) then
    redis.call('PEXPIREAT', KEYS[4], ARGV[13])
  end
end
return {1, cur[4]}
"#;

// KEYS: rec, x. ARGV: member, now (last access), wanted expires_at (clamped by the caller).
// Self-contained (no prelude): touches run on every request that only reads.
const TOUCH: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'e', 'b', 'a')
if not cur[1] or tonumber(cur[1]) <= tonumber(ARGV[2]) then return 0 end
local e = ARGV[3]
if cur[2] and tonumber(cur[2]) < tonumber(e) then e = cur[2] end
redis.call('HSET', KEYS[1], 'l', ARGV[2], 'e', e)
redis.call('PEXPIREAT', KEYS[1], e)
if not cur[3] then redis.call('ZADD', KEYS[2], e, ARGV[1]) end
return 1
"#;

// Leaves the old key: deleted, or replaced by an alias until the grace deadline.
// KEYS: old rec, old x, old k. Uses ARGV[g] = grace ('' for none), ARGV[g+1] = alias payload.
const RETIRE_FN: &str = r#"
local function retire(g, now)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  if ARGV[g] ~= '' then
    redis.call('HSET', KEYS[1], 'v', '1', 'e', ARGV[g], 'l', now, 'b', ARGV[g], 'a', '1', 'd', ARGV[g+1])
    redis.call('PEXPIREAT', KEYS[1], pxat(ARGV[g]))
  end
end
"#;

// KEYS: old rec, old x, old k, new rec, new x, new k.
// ARGV: old member, new member, now, expected, record fields (5..11), grace (12), alias (13).
// Returns {0} conflict, {2} new key taken, {1, old user} done.
const ROTATE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not live(cur[2], ARGV[3]) or cur[3] or cur[1] ~= ARGV[4] then return {0} end
if live(redis.call('HGET', KEYS[4], 'e'), ARGV[3]) then return {2} end
put(KEYS[4], 5)
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
redis.call('ZADD', KEYS[6], 0, ARGV[2])
retire(12, ARGV[3])
return {1, cur[4]}
"#;

// The second step of a cross-slot rotation. KEYS: old rec, old x, old k.
// ARGV: old member, now, expected, grace (4), alias (5).
const RETIRE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not live(cur[2], ARGV[2]) or cur[3] or cur[1] ~= ARGV[3] then return {0} end
retire(4, ARGV[2])
return {1, cur[4]}
"#;

// KEYS: rec, x, k. ARGV: member.
const DESTROY: &str = r#"
local u = redis.call('HGET', KEYS[1], 'u')
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {n, u}
"#;

// KEYS: rec, x, k. ARGV: member, user.
const DESTROY_IF_USER: &str = r#"
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

// KEYS: rec, x, k. ARGV: member, now. Returns {1, user} when the entry was dropped, {0} when
// the record turned out to be live (its index score is corrected).
const GC_ONE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'e', 'a', 'u')
if live(cur[1], ARGV[2]) and not cur[2] then
  redis.call('ZADD', KEYS[2], cur[1], ARGV[1])
  return {0}
end
if cur[1] and not cur[2] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {1, cur[3]}
"#;

// KEYS: user index. ARGV: member, absolute deadline, now.
const INDEX_ADD: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[1], pxat(ARGV[2]))
end
return 1
"#;

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
        let mut keys = self.keys3(key).to_vec();
        let mut args = vec![
            key.to_hex().into_bytes(),
            record.last_access.to_string().into_bytes(),
            expected_version.to_string().into_bytes(),
        ];
        args.extend(record_args(key, record));
        args.push(expire_arg(record.expires_at));
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
                    key.to_hex().into_bytes(),
                    last_access.to_string().into_bytes(),
                    expire_arg(expires_at),
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
        grace_until: Option<Millis>,
    ) -> Result<()> {
        let now = record.last_access;
        let grace = grace_until
            .map(|g| g.to_string().into_bytes())
            .unwrap_or_default();
        let alias = grace_until
            .map(|g| alias_record(old, new, now, g))
            .unwrap_or_default();
        let old_user = if !self.is_cluster() || old.0[0] == new.0[0] {
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
                (2, _) => return Err(Error::Exists),
                _ => return Err(Error::Conflict),
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

    async fn destroy(&self, key: &Key) -> Result<bool> {
        let v = self
            .eval(
                &self.scripts.destroy,
                &self.keys3(key),
                &[key.to_hex().into_bytes()],
                "destroy",
            )
            .await?;
        let (n, user) = status_user(v, "destroy")?;
        if let Some(u) = user {
            self.index_remove(&u, key).await?;
        }
        Ok(n > 0)
    }

    async fn gc(&self, now: Millis, limit: usize) -> Result<usize> {
        if limit == 0 {
            return Ok(0);
        }
        // Due entries of every bucket, then at most `limit` of them in bucket order.
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
            if let Value::Array(members) = v {
                for m in members.into_iter().filter_map(as_string) {
                    if let Some(k) = Key::from_hex(&m) {
                        due.push(k);
                    }
                }
            }
            if due.len() >= limit {
                break;
            }
        }
        due.truncate(limit);
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

    async fn len(&self, now: Millis) -> Result<u64> {
        self.count_expiry_index(format!("({now}"), "+inf".to_owned(), "len")
            .await
    }

    /// Entries of the expiry index that are due: their hashes may already be gone (Redis' own
    /// TTL), but the index entries are what a `gc` pass removes and counts.
    async fn expired_awaiting_gc(&self, now: Millis) -> Result<Option<u64>> {
        self.count_expiry_index("-inf".to_owned(), now.to_string(), "expired")
            .await
            .map(Some)
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize, now: Millis) -> Result<Page> {
        let mut after = super::key_cursor(cursor)?;
        let limit = limit.max(1);
        let mut bucket = after.map(|k| k.0[0] as usize).unwrap_or(0);
        let mut records = Vec::new();
        while bucket < 256 && records.len() < limit {
            let (_, k) = self.bucket_keys(bucket as u8);
            let min = match after.filter(|a| a.0[0] as usize == bucket) {
                Some(a) => format!("({}", a.to_hex()),
                None => "-".to_owned(),
            };
            let want = limit - records.len();
            let mut cmd = redis::cmd("ZRANGEBYLEX");
            cmd.arg(&k).arg(&min).arg("+").arg("LIMIT").arg(0).arg(want);
            let members: Vec<Key> = match self.query(&cmd, "scan").await? {
                Value::Array(a) => a
                    .into_iter()
                    .filter_map(as_string)
                    .filter_map(|m| Key::from_hex(&m))
                    .collect(),
                _ => Vec::new(),
            };
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
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(&ukey).arg(format!("({now}")).arg("+inf");
        let members: Vec<Key> = match self.query(&cmd, "sessions_of").await? {
            Value::Array(a) => a
                .into_iter()
                .filter_map(as_string)
                .filter_map(|m| Key::from_hex(&m))
                .collect(),
            _ => Vec::new(),
        };
        let values = self
            .many(
                members.iter().map(|m| self.hmget(m)).collect(),
                "sessions_of",
            )
            .await?;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (m, v) in members.iter().zip(values) {
            match Self::read_record(m, v, now) {
                Some((r, false, Some(u))) if u == user => out.push((*m, r)),
                _ => dead.push(m.to_hex()),
            }
        }
        // Prune what the read proved dead, plus everything past its absolute deadline.
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(&ukey).arg("-inf").arg(now);
        let mut cmds = vec![prune];
        if !dead.is_empty() {
            let mut c = redis::cmd("ZREM");
            c.arg(&ukey).arg(&dead);
            cmds.push(c);
        }
        self.many(cmds, "sessions_of").await?;
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
        for r in results {
            n += status_user(r?, "destroy_user")?.0.max(0) as u64;
        }
        // Remove exactly the entries handled: a session created meanwhile keeps its entry.
        if !members.is_empty() {
            let mut c = redis::cmd("ZREM");
            c.arg(&ukey).arg(&members);
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

    #[test]
    fn cluster_urls_split_into_nodes() {
        assert_eq!(
            cluster_nodes("redis", "a:1,b:2/?prefix=x").unwrap(),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            cluster_nodes("redis", ":pw@a:1,b:2").unwrap(),
            vec!["redis://:pw@a:1", "redis://:pw@b:2"]
        );
        assert!(cluster_nodes("redis", "").is_err());
    }
}
