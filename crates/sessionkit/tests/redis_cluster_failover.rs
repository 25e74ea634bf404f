//! A Redis Cluster master dies (SIGKILL) while sessions live on it: a private six-node Cluster
//! (three masters, one replica each) started here on free loopback ports. While the master is
//! gone, calls for its slots end promptly with an "unavailable" error and never return another
//! session's data; once its replica has taken over, the same store object serves every session
//! again, with the data acknowledged before the crash, and saves go through.
#![cfg(feature = "redis")]

mod shared_stores;

#[path = "shared_stores/redis_nodes.rs"]
mod redis_nodes;

use std::time::{Duration, Instant};

use redis_nodes::{Plan, RedisNodes};
use sessionkit::store::redis::{RedisOptions, RedisStore};
use sessionkit::{now_millis, Key, Record, Store};
use shared_stores::{new_key, next, record};

/// One load, bounded: a call that does not end in 10 s is a hang and fails the test.
async fn load(store: &RedisStore, k: &Key) -> sessionkit::Result<Option<Record>> {
    tokio::time::timeout(Duration::from_secs(10), store.load(k, now_millis()))
        .await
        .expect("a load on a cluster with a dead master hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_gives_prompt_errors_then_its_replica_serves_every_session() {
    let plan = Plan {
        tls: false,
        masters: 3,
        replicas: 1,
    };
    let Some(mut nodes) = RedisNodes::start(plan) else {
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
    // so what this test checks is the store's recovery, not that window.
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
