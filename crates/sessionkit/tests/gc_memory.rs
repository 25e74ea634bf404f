//! GC at scale on the memory store: one pass over a million sessions removes exactly the expired
//! ones. Counts only; how long it takes belongs in the benchmarks.

use std::sync::Arc;

use sessionkit::{now_millis, Key, MemoryStore, Record, Store};

/// Keys for the test without a million calls into the OS random generator: SplitMix64 output
/// is uniform enough for the store's sharding and hashing, which is all that matters here.
struct Keys(u64);

impl Keys {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn key(&mut self) -> Key {
        let mut k = [0u8; 32];
        for chunk in k.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Key(k)
    }
}

const SEED: u64 = 0x5e55_104b;

#[tokio::test]
async fn one_gc_pass_removes_exactly_the_expired_of_a_million() {
    const TOTAL: u64 = 1_000_000;
    const EXPIRED: u64 = 10_000;
    const BATCH: usize = 1_000;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let now = now_millis();
    let live = Record::new(now, now + 3_600_000, now + 86_400_000);
    // Expired at different moments of the last 10 s, the first exactly at `now`.
    let mut dead = Record::new(now - 7_200_000, now - 3_600_000, now + 86_400_000);
    let mut keys = Keys(SEED);
    let mut expired_keys = Vec::with_capacity(EXPIRED as usize);
    for i in 0..TOTAL {
        let k = keys.key();
        // Every 100th record is expired, so they are spread over all shards and interleaved
        // with live ones in insertion order.
        if i % 100 == 0 {
            dead.expires_at = now - (i / 100) as i64;
            store.create(&k, &dead).await.unwrap();
            expired_keys.push(k);
        } else {
            store.create(&k, &live).await.unwrap();
        }
    }
    assert_eq!(expired_keys.len() as u64, EXPIRED);
    assert_eq!(store.len(now).await.unwrap(), TOTAL - EXPIRED);

    // One pass, as the manager runs it: batches until one comes back short.
    let mut removed = 0u64;
    let mut batches = 0;
    loop {
        let n = store.gc(now, BATCH).await.unwrap();
        assert!(n <= BATCH);
        removed += n as u64;
        batches += 1;
        assert!(batches <= 1_000, "gc did not converge");
        if n < BATCH {
            break;
        }
    }
    assert_eq!(
        removed, EXPIRED,
        "one pass removes exactly the expired sessions"
    );
    assert_eq!(batches, 11, "10 full batches and one short one");
    assert_eq!(store.len(now).await.unwrap(), TOTAL - EXPIRED);
    assert_eq!(
        store.gc(now, BATCH).await.unwrap(),
        0,
        "nothing left to collect"
    );
    for k in expired_keys.iter().step_by(97) {
        assert!(store.load(k, now).await.unwrap().is_none());
    }
    // A sample of live sessions survived (every key is regenerated in the same order).
    let mut again = Keys(SEED);
    let mut live_seen = 0;
    for i in 0..10_000u64 {
        let k = again.key();
        if i % 100 != 0 {
            assert!(
                store.load(&k, now).await.unwrap().is_some(),
                "live #{i} lost"
            );
            live_seen += 1;
        }
    }
    assert_eq!(live_seen, 9_900);
}
