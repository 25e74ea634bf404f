//! A Redis Cluster master dies (SIGKILL) while sessions live on it: a private six-node Cluster
//! (three masters, one replica each) started here on free loopback ports. While the master is
//! gone, calls for its slots end promptly with an "unavailable" error and never return another
//! session's data; once its replica has taken over, the same store object serves every session
//! again, with the data acknowledged before the crash, and saves go through. With
//! `wait_replicas=1` nothing acknowledged is lost even when the crash follows the writes at once.
#![cfg(feature = "redis")]

mod shared_stores;

#[path = "shared_stores/redis_nodes.rs"]
mod redis_nodes;

use std::time::{Duration, Instant};

use redis_nodes::{Plan, RedisNodes};
use sessionkit::store::redis::{RedisOptions, RedisStore};
use sessionkit::{now_millis, Key, Record, Store};
use shared_stores::{new_key, next, record};

/// Three masters with one replica each.
const WITH_REPLICAS: Plan = Plan {
    tls: false,
    masters: 3,
    replicas: 1,
};

/// One load, bounded: a call that does not end in 10 s is a hang and fails the test.
async fn load(store: &RedisStore, k: &Key) -> sessionkit::Result<Option<Record>> {
    tokio::time::timeout(Duration::from_secs(10), store.load(k, now_millis()))
        .await
        .expect("a load on a cluster with a dead master hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_gives_prompt_errors_then_its_replica_serves_every_session() {
    let Some(mut nodes) = RedisNodes::start(WITH_REPLICAS) else {
        return;
    };
    let options = RedisOptions {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    };
    let store = RedisStore::open_with(&nodes.url(), options).await.unwrap();
    assert!(store.is_cluster());

    // 64 sessions over random buckets: all but certainly some on every master.
    let mut sessions = Vec::new();
    for i in 0..64 {
        let (k, r) = (new_key(), next(&record(600_000), i));
        store.create(&k, &r).await.unwrap();
        sessions.push((k, r));
    }
    // Replication is asynchronous: Redis may lose a write acknowledged just before a master
    // dies (documented in its Cluster specification). Wait until the replicas hold everything,
    // so what this test checks is the store's recovery, not that window (`wait_replicas`
    // closes it; see the next test).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.replicas_caught_up() {
        assert!(Instant::now() < deadline, "replicas did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let victim = nodes.masters()[0];
    nodes.kill(victim);
    let (mut served, mut refused) = (0, 0);
    for (k, r) in &sessions {
        match load(&store, k).await {
            Ok(got) => {
                assert_eq!(got.as_ref(), Some(r), "wrong data while a master is down");
                served += 1;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "not an unavailable error: {e:?}");
                refused += 1;
            }
        }
    }
    eprintln!("master on {victim} down: {served} sessions served, {refused} refused");
    assert!(refused > 0, "no session lived on the dead master?");
    assert!(
        served > 0,
        "the live masters' sessions must still be served"
    );

    // The replica is promoted after the node timeout (1 s) and an election.
    let started = Instant::now();
    loop {
        let mut all = true;
        for (k, r) in &sessions {
            match load(&store, k).await {
                Ok(got) => assert_eq!(got.as_ref(), Some(r), "wrong data during failover"),
                Err(e) => {
                    assert!(e.is_unavailable(), "not an unavailable error: {e:?}");
                    all = false;
                }
            }
        }
        if all {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the store did not recover within 60 s of the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "every session served again {:.1?} after the kill",
        started.elapsed()
    );
    assert!(nodes.cluster_ok(&nodes.live_ports()));
    assert_eq!(
        nodes.masters().len(),
        3,
        "a replica took the dead master's place"
    );

    // Writes go through again: a compare-and-set save of every session, then a stale one loses.
    let now = now_millis();
    for (i, (k, r)) in sessions.iter_mut().enumerate() {
        let newer = next(r, 1000 + i as i64);
        store.save(k, &newer, r.version).await.unwrap();
        assert!(
            matches!(
                store.save(k, &newer, r.version).await,
                Err(sessionkit::Error::Conflict)
            ),
            "a stale save won"
        );
        *r = newer;
    }
    for (k, r) in &sessions {
        assert_eq!(store.load(k, now).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.len(now_millis()).await.unwrap(), 64);
}

/// With `wait_replicas=1` a write is reported done only once a replica holds it, so a failover
/// right after it loses nothing: neither a save nor a logout (no resurrected session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_acknowledged_writes_and_logouts_survive_a_failover() {
    let Some(mut nodes) = RedisNodes::start(WITH_REPLICAS) else {
        return;
    };
    let url = format!("{}?wait_replicas=1", nodes.url());
    let store = RedisStore::open(&url).await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..64 {
        let (k, r) = (new_key(), next(&record(600_000), i));
        store.create(&k, &r).await.unwrap();
        sessions.push((k, r));
    }
    // A save of every even session and a logout of every odd one, then at once the crash: no
    // waiting for the replicas beyond what each write waited for itself.
    for (i, (k, r)) in sessions.iter_mut().enumerate() {
        if i % 2 == 0 {
            let newer = next(r, 500 + i as i64);
            store.save(k, &newer, r.version).await.unwrap();
            *r = newer;
        } else {
            assert!(store.destroy(k).await.unwrap());
        }
    }
    let victim = nodes.masters()[0];
    nodes.kill(victim);

    let started = Instant::now();
    'recovery: loop {
        let mut seen = Vec::new();
        for (k, _) in &sessions {
            match load(&store, k).await {
                Ok(got) => seen.push(got),
                Err(e) => {
                    assert!(e.is_unavailable(), "not an unavailable error: {e:?}");
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the store did not recover within 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'recovery;
                }
            }
        }
        for (i, ((_, r), got)) in sessions.iter().zip(seen).enumerate() {
            if i % 2 == 0 {
                assert_eq!(
                    got.as_ref(),
                    Some(r),
                    "session {i}: an acknowledged save was lost"
                );
            } else {
                assert_eq!(got, None, "session {i}: a logged-out session came back");
            }
        }
        break;
    }
    eprintln!(
        "recovered {:.1?} after the kill, nothing lost",
        started.elapsed()
    );
}

/// Without enough replicas a write is not acknowledged: a prompt error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_without_replicas_is_a_prompt_clear_error() {
    let plan = Plan {
        tls: false,
        masters: 1,
        replicas: 0,
    };
    let Some(node) = RedisNodes::start(plan) else {
        return;
    };
    let options = RedisOptions {
        response_timeout: Duration::from_millis(400),
        ..RedisOptions::default()
    };
    let url = format!("{}?wait_replicas=1", node.url());
    let store = RedisStore::open_with(&url, options).await.unwrap();
    let k = new_key();
    let started = Instant::now();
    let err = store.create(&k, &record(60_000)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains("0 of the 1 replicas"),
        "the error must say why: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The same URL without the requirement writes normally.
    let plain = RedisStore::open(&node.url()).await.unwrap();
    plain.create(&new_key(), &record(60_000)).await.unwrap();
    assert!(matches!(
        RedisStore::open(&format!("{}?wait_replicas=x", node.url())).await,
        Err(sessionkit::Error::BadUrl { .. })
    ));
}
