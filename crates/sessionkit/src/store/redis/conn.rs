//! The connections of a [`RedisStore`]: a pool of multiplexed connections to one server or a
//! Cluster connection, sending commands and scripts over them (with `WAIT` for replicas), and
//! reading Redis' replies.

use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::scripts::Script;
use super::{tls, RedisOptions, RedisStore, KIND};
use crate::error::{Error, Result};

pub(super) enum Conn {
    /// Connections to one server and the turn counter that spreads calls over them.
    Single(Vec<ConnectionManager>, std::sync::atomic::AtomicUsize),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The standalone connection for the next call.
    pub(super) fn next(
        pool: &[ConnectionManager],
        turn: &std::sync::atomic::AtomicUsize,
    ) -> ConnectionManager {
        let i = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len();
        pool[i].clone()
    }
}

pub(super) fn backend(op: &'static str) -> impl FnOnce(RedisError) -> Error {
    move |e| Error::backend(KIND, op, e)
}

/// Connects to the server (or the Cluster whose nodes `rest` lists) of `url`.
pub(super) async fn connect(
    url: &str,
    rest: &str,
    tls: bool,
    cluster: bool,
    certs: tls::Certificates,
    options: &RedisOptions,
    connections: usize,
) -> Result<Conn> {
    Ok(if cluster {
        let node_scheme = if tls { "rediss" } else { "redis" };
        let builder = ClusterClientBuilder::new(cluster_nodes(url, node_scheme, rest)?)
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.response_timeout)
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(200);
        let client = tls::cluster_certs(builder, certs)
            .build()
            .map_err(|e| Error::bad_url(url, format!("redis cluster URL: {e}")))?;
        let c = client
            .get_async_connection()
            .await
            .map_err(backend("connect"))?;
        Conn::Cluster(c)
    } else {
        let client =
            tls::client(url, certs).map_err(|e| Error::bad_url(url, format!("redis URL: {e}")))?;
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
    })
}

impl RedisStore {
    pub(super) async fn masters(&self) -> Result<Vec<(String, u16)>> {
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

    pub(super) async fn query_at(
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

    pub(super) async fn query(&self, cmd: &Cmd, op: &'static str) -> Result<Value> {
        let r = match &self.conn {
            Conn::Single(pool, turn) => cmd.query_async::<Value>(&mut Conn::next(pool, turn)).await,
            Conn::Cluster(c) => cmd.query_async::<Value>(&mut c.clone()).await,
        };
        r.map_err(backend(op))
    }

    /// Runs a script by hash, loading it first if the server lost it (e.g. after a restart).
    pub(super) async fn eval(
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

    /// Runs independent commands concurrently (the connections multiplex them, so this costs
    /// about one round trip per server involved).
    pub(super) async fn many(&self, cmds: Vec<Cmd>, op: &'static str) -> Result<Vec<Value>> {
        let futs = cmds.iter().map(|c| self.query(c, op));
        join_all(futs).await.into_iter().collect()
    }
}

pub(super) fn cluster_nodes(url: &str, scheme: &str, rest: &str) -> Result<Vec<String>> {
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
        return Err(Error::bad_url(
            url,
            "redis cluster URL names no node (expected redis+cluster://host:port,host:port)",
        ));
    }
    Ok(nodes)
}

pub(super) fn as_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn as_string(v: Value) -> Option<String> {
    as_bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn as_i64(v: Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i),
        v => as_string(v)?.parse().ok(),
    }
}

pub(super) fn as_int(v: Value) -> i64 {
    as_i64(v).unwrap_or(0)
}

/// A script reply `{status, user}`.
pub(super) fn status_user(v: Value, op: &'static str) -> Result<(i64, Option<String>)> {
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

pub(super) fn bad_reply(op: &'static str) -> Error {
    Error::backend(KIND, op, "unexpected reply from redis")
}

pub(super) fn parse_scan(v: Value) -> Result<(u64, Vec<Vec<u8>>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_split_into_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://", "redis", "a:1,b:2/?prefix=x").unwrap(),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://", "redis", ":pw@a:1,b:2").unwrap(),
            vec!["redis://:pw@a:1", "redis://:pw@b:2"]
        );
        assert!(cluster_nodes("redis+cluster://", "redis", "").is_err());
    }
}
