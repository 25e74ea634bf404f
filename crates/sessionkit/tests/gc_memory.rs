//! GC at scale on the memory store: one pass over a million sessions removes exactly the expired
//! ones. Counts only; how long it takes belongs in the benchmarks.

use std::sync::Arc;

use sessionkit::{now_millis, Key, MemoryStore, Millis, Record, Store};

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

const TOTAL: u64 = 1_000_000;
const EXPIRED: u64 = 10_000;
const BATCH: usize = 1_000;
/// Writers filling the store in parallel (the shards lock independently).
const WRITERS: u64 = 4;

fn seed(writer: u64) -> u64 {
    0x5e55_104b_0000_0000 ^ writer.wrapping_mul(0x1234_5678_9abc_def1)
}

/// Writes this writer's share: every 100th record (by global index) is expired, so expired
/// records are spread over all shards and interleaved with live ones. Returns the expired keys.
async fn fill(store: Arc<dyn Store>, writer: u64, now: Millis) -> Vec<Key> {
    let live = Record::new(now, now + 3_600_000, now + 86_400_000);
    let mut dead = Record::new(now - 7_200_000, now - 3_600_000, now + 86_400_000);
    let mut keys = Keys(seed(writer));
    let mut expired = Vec::new();
    for i in (writer..TOTAL).step_by(WRITERS as usize) {
        let k = keys.key();
        if i % 100 == 0 {
            // Expired at different moments of the last 10 s, the first exactly at `now`.
            dead.expires_at = now - (i / 100) as i64;
            store.create(&k, &dead).await.unwrap();
            expired.push(k);
        } else {
            store.create(&k, &live).await.unwrap();
        }
    }
    expired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gc_pass_removes_exactly_the_expired_of_a_million() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let now = now_millis();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(fill(store.clone(), w, now)))
        .collect();
    let mut expired_keys = Vec::new();
    for w in writers {
        expired_keys.extend(w.await.unwrap());
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
    // A sample of live sessions survived (writer 0's keys, regenerated in the same order).
    let mut again = Keys(seed(0));
    let mut live_seen = 0;
    for i in (0..40_000u64).step_by(WRITERS as usize) {
        let k = again.key();
        if i % 100 != 0 {
            assert!(
                store.load(&k, now).await.unwrap().is_some(),
                "live #{i} lost"
            );
            live_seen += 1;
        }
    }
    assert_eq!(live_seen, 10_000 - 400);
}
