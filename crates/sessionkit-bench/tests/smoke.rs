//! Runs every benchmark scenario once with tiny sizes, so CI notices when a bench breaks without
//! paying for a measurement. Nothing here is timed.

#[path = "../benches/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sessionkit::now_millis;
use sessionkit_bench::loadgen::{run, Cookies, Plan};
use sessionkit_bench::Rng;

async fn exercise<S: Subject>() {
    let s = Arc::new(S::build(1_000, 1).await);
    let mut local = s.local();
    let mut rng = Rng::new(2);
    for i in 0..100 {
        s.load(i).await;
        s.save(&mut local, i).await;
        s.touch(i).await;
        s.create(&mut local, &mut rng).await;
    }
    mixed(&s, 2, 2_000).await;
    mixed(&s, 1, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_scenarios_run() {
    exercise::<Sk>().await;
    exercise::<Ts>().await;
    exercise::<Dm>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_scenarios_remove_exactly_the_expired() {
    let mut rng = Rng::new(3);
    let now = now_millis();
    let sk = Sk::build(2_000, 4).await;
    add_expired(&sk.store, 20, now, &mut rng).await;
    assert_eq!(sk_gc(&sk.store, now).await, 20);
    assert_eq!(sk_gc(&sk.store, now).await, 0);
    let dm = Dm::build(2_000, 4).await;
    dm_add_expired(&dm.map, 20, now, &mut rng);
    assert_eq!(dm_gc(&dm.map, now), 20);
    let ts = ts_map(2_000, 20, &mut rng);
    assert_eq!(ts_gc(&ts), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_scenarios_serve_the_load_generator() {
    for (name, app, cookie) in http_scenarios() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app()).await });
        let plan = Plan {
            addr,
            path: "/count".into(),
            cookies: cookie,
            connections: 2,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(150),
        };
        let out = run(&plan).await.unwrap();
        server.abort();
        assert_eq!(out.errors, 0, "{name}: errors");
        assert!(out.requests > 0, "{name}: no requests answered");
        if name.starts_with("sessionkit") {
            assert_eq!(out.lost, 0, "{name}: lost updates");
        }
    }
}

#[test]
fn the_load_generator_refuses_non_loopback_targets() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = Plan {
        addr: SocketAddr::from(([192, 0, 2, 1], 80)),
        path: "/".into(),
        cookies: Cookies::None,
        connections: 1,
        warmup: Duration::ZERO,
        measure: Duration::ZERO,
    };
    assert!(rt.block_on(run(&plan)).is_err());
}
