//! Contract test of corrupt bytes at rest: they read as absent. Needs the fixture's
//! [`RawAccess`](super::RawAccess) hook; skipped without it.

use super::helpers::*;
use super::Fixture;
use crate::id::Key;
use crate::record::{now_millis, Record};

/// Records whose bytes are truncated, zeroed, garbage, altered or copied from another key read
/// as absent: no error, no panic, never another session's data. Needs [`Fixture::with_raw`];
/// skipped (with a note on stderr) for stores without bytes at rest.
pub async fn corrupt_records_read_as_absent(fx: Fixture) {
    let Some(raw) = fx.raw.clone() else {
        eprintln!(
            "sessionkit conformance: corrupt_records_read_as_absent skipped: the {} store has no \
             bytes at rest to corrupt (no Fixture::with_raw)",
            fx.store.kind()
        );
        return;
    };
    let store = fx.store.clone();
    let now = now_millis();
    let neighbour = key();
    let rn = with_user(rich(now), &unique_user("neighbour"));
    store.create(&neighbour, &rn).await.expect("create");

    let victim = key();
    let mut secret = with_user(rich(now), &unique_user("victim"));
    secret.data.set("secret", "\"do not leak\"").unwrap();
    let good_for = |k: &Key| secret.encode(k);

    let mut cases: Vec<(&str, Key, Vec<u8>)> = Vec::new();
    let mut add = |what: &'static str, make: &dyn Fn(&Key) -> Vec<u8>| {
        let k = key();
        let bytes = make(&k);
        cases.push((what, k, bytes));
    };
    // Every shape of damage, each under a key of its own.
    add("empty", &|_| Vec::new());
    add("truncated", &|k| {
        let b = good_for(k);
        b[..b.len() / 2].to_vec()
    });
    add("last byte cut", &|k| {
        let b = good_for(k);
        b[..b.len() - 1].to_vec()
    });
    add("zeroed", &|k| vec![0; good_for(k).len()]);
    add("garbage", &|_| {
        (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    });
    add("json", &|_| br#"{"user":"admin","n":1}"#.to_vec());
    add("flipped byte", &|k| {
        let mut b = good_for(k);
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        b
    });
    add("another key's record", &|_| good_for(&victim));

    // First check the hook itself: intact bytes planted with it must load, or every case
    // below would pass without testing anything.
    let planted = key();
    let mut good = live(now);
    good.data.set("planted", "true").unwrap();
    raw.put_raw(&planted, &good.encode(&planted))
        .await
        .expect("put_raw (intact record)");
    let back = load(&store, &planted, now)
        .await
        .expect("an intact record planted with put_raw must load: the RawAccess hook writes where the store does not read");
    assert_eq!(back.data, good.data);
    assert_eq!(back.version, good.version);
    assert!(store.destroy(&planted).await.expect("destroy planted"));

    for (what, k, bytes) in &cases {
        raw.put_raw(k, bytes)
            .await
            .unwrap_or_else(|e| panic!("put_raw ({what}): {e}"));
        match store.load(k, now).await {
            Ok(None) => {}
            Ok(Some(r)) => panic!("{what} bytes loaded as a record: {r:?}"),
            Err(e) => panic!("{what} bytes: load must read as absent, got error {e}"),
        }
    }

    let all: Vec<(Key, Record)> = scan_pages(&store, 3, now)
        .await
        .into_iter()
        .flatten()
        .collect();
    for (k, r) in &all {
        assert!(
            *k == neighbour && *r == rn,
            "scan returned a corrupt or foreign record under {k:?}: {r:?}"
        );
    }
    assert!(
        keys_of(&store, secret.user.as_deref().unwrap(), now)
            .await
            .is_empty(),
        "a foreign record leaked into the user index"
    );
    store.len(now).await.expect("len with corrupt records");
    gc_all(&store, now, 100).await;
    for (what, k, _) in &cases {
        store
            .destroy(k)
            .await
            .unwrap_or_else(|e| panic!("destroy ({what}): {e}"));
        assert_eq!(load(&store, k, now).await, None);
        let fresh = live(now);
        store
            .create(k, &fresh)
            .await
            .unwrap_or_else(|e| panic!("create after destroying {what} bytes: {e}"));
        assert_eq!(load(&store, k, now).await, Some(fresh));
    }
    assert_eq!(load(&store, &victim, now).await, None);
    assert_eq!(
        load(&store, &neighbour, now).await,
        Some(rn),
        "neighbour damaged"
    );
}
