//! The sessionkit side of the `backends` bench, shared with the smoke test: the store-operation
//! workload and the round-trip count of the count page. The tower-sessions side
//! (`crates/sessionkit-bench/tower`) mirrors the workload: same session count, same values, same
//! key choice per worker, same driver.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sessionkit::{now_millis, Key, Store};
use sessionkit_bench::loadgen::Client;
use sessionkit_bench::ops::{drive, OpsOutcome, OpsPlan, SEED};
use sessionkit_bench::rtt::CountingProxy;
use sessionkit_bench::{sk_record, Rng, IDLE_MS};

/// The operations, in the order both sides run and print them.
pub const OPS: [&str; 3] = ["load", "save", "touch"];

/// Makes sure `n` sessions exist in `store` (keys drawn from [`SEED`](sessionkit_bench::ops::SEED); an earlier run's are
/// reused while they have 20 minutes to live), then drives load, save and touch in turn with
/// `plan` ([`drive`] gives each worker sessions of its own, so compare-and-set saves never
/// conflict).
pub async fn store_ops(
    store: Arc<dyn Store>,
    plan: OpsPlan,
    n: usize,
) -> Vec<(&'static str, OpsOutcome)> {
    let n = n.max(1);
    let mut rng = Rng::new(SEED);
    let keys: Arc<Vec<Key>> = Arc::new((0..n).map(|_| Key(rng.bytes32())).collect());
    let mut versions = Vec::with_capacity(n);
    let soon = now_millis() + 20 * 60 * 1000;
    for key in keys.iter() {
        let fresh = sk_record(now_millis());
        let v = match store.load(key, now_millis()).await.expect("load") {
            Some(old) if old.expires_at > soon => old.version,
            Some(old) => {
                let mut r = fresh;
                r.version = old.version + 1;
                store.save(key, &r, old.version).await.expect("save");
                r.version
            }
            None => {
                store.create(key, &fresh).await.expect("create");
                fresh.version
            }
        };
        versions.push(AtomicU64::new(v));
    }
    let versions = Arc::new(versions);
    let base = Arc::new(sk_record(now_millis()));
    let mut results = Vec::new();
    for op in OPS {
        let (store, keys, versions, base) =
            (store.clone(), keys.clone(), versions.clone(), base.clone());
        let out = drive(plan, n, move |i| {
            let (store, keys, versions, base) =
                (store.clone(), keys.clone(), versions.clone(), base.clone());
            async move {
                let now = now_millis();
                match op {
                    "load" => match store.load(&keys[i], now).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(format!("session {i} missing")),
                        Err(e) => Err(e.to_string()),
                    },
                    "save" => {
                        // Each worker owns its sessions, so the version it read is current.
                        let v = versions[i].load(Relaxed);
                        let mut r = (*base).clone();
                        r.version = v + 1;
                        r.last_access = now;
                        r.expires_at = now + IDLE_MS;
                        store
                            .save(&keys[i], &r, v)
                            .await
                            .map_err(|e| e.to_string())?;
                        versions[i].store(v + 1, Relaxed);
                        Ok(())
                    }
                    _ => match store.touch(&keys[i], now, now + IDLE_MS).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(format!("session {i} missing on touch")),
                        Err(e) => Err(e.to_string()),
                    },
                }
            }
        })
        .await;
        results.push((op, out));
    }
    results
}

/// Round trips between the app at `app` and its store, counted by `proxy` (which the app's
/// store URL points at), one request at a time: returns (the first request, which makes the
/// session; a count request, which writes; a peek request, which only reads). The count and
/// peek figures are averages over `reqs` requests each, after as many unmeasured ones (so that
/// pool connections and prepared statements are warm).
pub async fn count_round_trips(
    proxy: &CountingProxy,
    app: SocketAddr,
    reqs: u64,
) -> Result<(f64, f64, f64), String> {
    let reqs = reqs.max(1);
    let mut c = Client::connect(app).await.map_err(|e| e.to_string())?;
    let t0 = proxy.round_trips();
    let (status, cookie) = c.get("/count", None).await.map_err(|e| e.to_string())?;
    let t1 = proxy.round_trips();
    let cookie = cookie.ok_or("no Set-Cookie on the first request")?;
    if status != 200 {
        return Err(format!("first request: status {status}"));
    }
    let mut figures = Vec::new();
    for path in ["/count", "/peek"] {
        for measured in [false, true] {
            let before = proxy.round_trips();
            for _ in 0..reqs {
                let (status, _) = c
                    .get(path, Some(&cookie))
                    .await
                    .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("{path}: status {status}"));
                }
            }
            if measured {
                figures.push((proxy.round_trips() - before) as f64 / reqs as f64);
            }
        }
    }
    Ok(((t1 - t0) as f64, figures[0], figures[1]))
}

/// Lost updates: `clients` connections share one session and each makes `each` count requests
/// at the same time; returns (increments acknowledged with 200, the count the session holds
/// afterwards). A store with compare-and-set gives equal figures; a last-writer-wins store
/// loses increments when two requests of one session overlap.
pub async fn shared_session_count(
    app: SocketAddr,
    clients: usize,
    each: usize,
) -> Result<(u64, u64), String> {
    let mut first = Client::connect(app).await.map_err(|e| e.to_string())?;
    let (status, cookie) = first.get("/count", None).await.map_err(|e| e.to_string())?;
    let cookie = cookie.ok_or("no Set-Cookie on the first request")?;
    if status != 200 {
        return Err(format!("first request: status {status}"));
    }
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(app).await.map_err(|e| e.to_string())?;
            let mut ok = 0u64;
            for _ in 0..each {
                let (status, _) = c
                    .get("/count", Some(&cookie))
                    .await
                    .map_err(|e| e.to_string())?;
                ok += u64::from(status == 200);
            }
            Ok::<u64, String>(ok)
        }));
    }
    let mut acknowledged = 1; // the first request
    for t in tasks {
        acknowledged += t.await.map_err(|e| e.to_string())??;
    }
    let (status, _, body) = first
        .fetch("/peek", Some(&cookie))
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("peek: status {status}"));
    }
    let held = body
        .trim()
        .parse()
        .map_err(|_| format!("peek answered {body:?}"))?;
    Ok((acknowledged, held))
}

/// Round trips of a count request on a signed-in session (sessionkit only: the page signs in at
/// `/login`), averaged over `reqs` requests after as many unmeasured ones.
pub async fn signed_in_write_round_trips(
    proxy: &CountingProxy,
    app: SocketAddr,
    reqs: u64,
) -> Result<f64, String> {
    let reqs = reqs.max(1);
    let mut c = Client::connect(app).await.map_err(|e| e.to_string())?;
    let (_, cookie) = c.get("/count", None).await.map_err(|e| e.to_string())?;
    let cookie = cookie.ok_or("no Set-Cookie on the first request")?;
    let (status, new) = c
        .get("/login", Some(&cookie))
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("login: status {status}"));
    }
    let cookie = new.ok_or("no new cookie after signing in")?;
    let mut figure = 0.0;
    for measured in [false, true] {
        let before = proxy.round_trips();
        for _ in 0..reqs {
            let (status, _) = c
                .get("/count", Some(&cookie))
                .await
                .map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("signed-in count: status {status}"));
            }
        }
        if measured {
            figure = (proxy.round_trips() - before) as f64 / reqs as f64;
        }
    }
    Ok(figure)
}
