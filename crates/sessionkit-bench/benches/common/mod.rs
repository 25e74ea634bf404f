//! The store-level subjects compared by the benches, behind one trait so every scenario runs the
//! same code against each: sessionkit's `MemoryStore`, tower-sessions' `MemoryStore`, and a bare
//! `DashMap<[u8; 32], Record>` doing the same work (expiry check on load, version check on save).
//! Also the tower-sessions count page for the HTTP bench, and the scenario drivers (mixed
//! workload, GC pass) used by criterion, the heap binary and the smoke test.

#![allow(dead_code)]

use sessionkit_bench::loadgen::Cookies;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use dashmap::DashMap;
use sessionkit::{now_millis, Key, Millis, Record, Store};
use sessionkit_bench::Rng;
use tower_sessions::session::{Id, Record as TsRecord};
use tower_sessions::SessionStore;

/// One store under test, holding `n` sessions under `keys()`.
pub trait Subject: Send + Sync + Sized + 'static {
    /// Short name used in bench ids and reports.
    const NAME: &'static str;
    /// Per-worker state (a record to write, the versions this worker has written).
    type Local: Send + 'static;

    /// A subject holding `n` live sessions with three small values each.
    fn build(n: usize, seed: u64) -> impl Future<Output = Self>;
    /// Number of sessions built.
    fn n(&self) -> usize;
    /// Fresh per-worker state.
    fn local(&self) -> Self::Local;
    /// Loads session `i` (must exist).
    fn load(&self, i: usize) -> impl Future<Output = ()> + Send;
    /// Writes session `i` (data unchanged, version bumped where the store has versions).
    fn save(&self, l: &mut Self::Local, i: usize) -> impl Future<Output = ()> + Send;
    /// Extends the deadline of session `i`.
    fn touch(&self, i: usize) -> impl Future<Output = ()> + Send;
    /// Creates one new session with a random key.
    fn create(&self, l: &mut Self::Local, rng: &mut Rng) -> impl Future<Output = ()> + Send;
}

pub use sessionkit_bench::{sk_record, IDLE_MS, VALUES};

/// A tower-sessions record with the same three values.
pub fn ts_record(id: Id) -> TsRecord {
    let mut data = HashMap::new();
    for (k, v) in VALUES {
        data.insert(k.to_owned(), serde_json::from_str(v).expect("valid JSON"));
    }
    TsRecord {
        id,
        data,
        expiry_date: time_now() + time::Duration::minutes(30),
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ts_id(rng: &mut Rng) -> Id {
    Id((u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) as i128)
}

// ---------------------------------------------------------------------------------------------

/// sessionkit's `MemoryStore`, called through the `Store` trait as the manager does.
pub struct Sk {
    /// The store.
    pub store: sessionkit::MemoryStore,
    /// Keys of the built sessions.
    pub keys: Vec<Key>,
    versions: Vec<AtomicU64>,
}

/// Per-worker state for [`Sk`] and [`Dm`]: the record it writes.
pub struct SkLocal {
    record: Record,
}

/// The version each session is at. A session is only ever written by one worker at a time (its
/// owner), so relaxed atomics suffice; they let versions survive from one run to the next.
fn versions(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(1)).collect()
}

impl Subject for Sk {
    const NAME: &'static str = "sessionkit";
    type Local = SkLocal;

    async fn build(n: usize, seed: u64) -> Self {
        let store = sessionkit::MemoryStore::new();
        let mut rng = Rng::new(seed);
        let rec = sk_record(now_millis());
        let keys: Vec<Key> = (0..n).map(|_| Key(rng.bytes32())).collect();
        for k in &keys {
            store.create(k, &rec).await.expect("create");
        }
        Self {
            store,
            versions: versions(n),
            keys,
        }
    }

    fn n(&self) -> usize {
        self.keys.len()
    }

    fn local(&self) -> SkLocal {
        SkLocal {
            record: sk_record(now_millis()),
        }
    }

    async fn load(&self, i: usize) {
        let r = self.store.load(&self.keys[i], now_millis()).await;
        std::hint::black_box(r.expect("load").expect("present"));
    }

    async fn save(&self, l: &mut SkLocal, i: usize) {
        let v = self.versions[i].load(Relaxed);
        let now = now_millis();
        l.record.version = v + 1;
        l.record.last_access = now;
        l.record.expires_at = now + IDLE_MS;
        self.store
            .save(&self.keys[i], &l.record, v)
            .await
            .expect("save (each worker owns its keys)");
        self.versions[i].store(v + 1, Relaxed);
    }

    async fn touch(&self, i: usize) {
        let now = now_millis();
        let ok = self.store.touch(&self.keys[i], now, now + IDLE_MS).await;
        std::hint::black_box(ok.expect("touch"));
    }

    async fn create(&self, l: &mut SkLocal, rng: &mut Rng) {
        self.store
            .create(&Key(rng.bytes32()), &l.record)
            .await
            .expect("create");
    }
}

// ---------------------------------------------------------------------------------------------

/// tower-sessions' `MemoryStore`, through its `SessionStore` trait.
pub struct Ts {
    /// The store.
    pub store: tower_sessions::MemoryStore,
    /// Ids of the built sessions.
    pub ids: Vec<Id>,
}

impl Subject for Ts {
    const NAME: &'static str = "tower-sessions";
    type Local = TsRecord;

    async fn build(n: usize, seed: u64) -> Self {
        let store = tower_sessions::MemoryStore::default();
        let mut rng = Rng::new(seed);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = ts_record(ts_id(&mut rng));
            store.create(&mut r).await.expect("create");
            ids.push(r.id);
        }
        Self { store, ids }
    }

    fn n(&self) -> usize {
        self.ids.len()
    }

    fn local(&self) -> TsRecord {
        ts_record(Id(0))
    }

    async fn load(&self, i: usize) {
        let r = self.store.load(&self.ids[i]).await;
        std::hint::black_box(r.expect("load").expect("present"));
    }

    async fn save(&self, l: &mut TsRecord, i: usize) {
        l.id = self.ids[i];
        self.store.save(l).await.expect("save");
    }

    async fn touch(&self, i: usize) {
        // tower-sessions has no touch: extending a deadline rewrites the record.
        let mut r = ts_record(self.ids[i]);
        r.expiry_date = time_now() + time::Duration::minutes(30);
        self.store.save(&r).await.expect("save");
    }

    async fn create(&self, l: &mut TsRecord, rng: &mut Rng) {
        l.id = ts_id(rng);
        self.store.create(l).await.expect("create");
    }
}

// ---------------------------------------------------------------------------------------------

/// The baseline: a bare `DashMap<[u8; 32], Record>` (default hasher) doing the same checks.
pub struct Dm {
    /// The map.
    pub map: DashMap<[u8; 32], Record>,
    /// Keys of the built sessions.
    pub keys: Vec<[u8; 32]>,
    versions: Vec<AtomicU64>,
}

impl Subject for Dm {
    const NAME: &'static str = "dashmap";
    type Local = SkLocal;

    async fn build(n: usize, seed: u64) -> Self {
        let map = DashMap::new();
        let mut rng = Rng::new(seed);
        let rec = sk_record(now_millis());
        let keys: Vec<[u8; 32]> = (0..n).map(|_| rng.bytes32()).collect();
        for k in &keys {
            map.insert(*k, rec.clone());
        }
        Self {
            map,
            versions: versions(n),
            keys,
        }
    }

    fn n(&self) -> usize {
        self.keys.len()
    }

    fn local(&self) -> SkLocal {
        SkLocal {
            record: sk_record(now_millis()),
        }
    }

    async fn load(&self, i: usize) {
        let now = now_millis();
        let r = self
            .map
            .get(&self.keys[i])
            .filter(|r| !r.is_expired(now))
            .map(|r| r.clone());
        std::hint::black_box(r.expect("present"));
    }

    async fn save(&self, l: &mut SkLocal, i: usize) {
        let v = self.versions[i].load(Relaxed);
        let now = now_millis();
        l.record.version = v + 1;
        l.record.last_access = now;
        l.record.expires_at = now + IDLE_MS;
        let mut slot = self.map.get_mut(&self.keys[i]).expect("present");
        assert!(slot.version == v && !slot.is_expired(now), "conflict");
        *slot = l.record.clone();
        drop(slot);
        self.versions[i].store(v + 1, Relaxed);
    }

    async fn touch(&self, i: usize) {
        let now = now_millis();
        if let Some(mut r) = self.map.get_mut(&self.keys[i]) {
            if !r.is_expired(now) {
                r.last_access = now;
                r.expires_at = (now + IDLE_MS).min(r.absolute_expires_at);
            }
        }
    }

    async fn create(&self, l: &mut SkLocal, rng: &mut Rng) {
        let now = now_millis();
        match self.map.entry(rng.bytes32()) {
            dashmap::Entry::Occupied(mut e) => {
                assert!(e.get().is_expired(now), "exists");
                e.insert(l.record.clone());
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(l.record.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A multi-thread tokio runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The mixed workload: `ops` operations split over `workers` tasks, each 90% load / 10% save of
/// a uniformly random session among those it owns (worker w owns indices ≡ w mod workers, so
/// saves never conflict and every subject does the same work). Returns the wall time.
pub async fn mixed<S: Subject>(s: &Arc<S>, workers: usize, ops: u64) -> Duration {
    let per = (ops / workers as u64).max(1);
    // Every store call here completes without ever returning Pending, so a task would run to
    // its end without giving its worker thread back; then one worker can end up running all
    // tasks in turn while the other idles. The barrier and the periodic yield make the tasks
    // spread over the workers and actually run in parallel.
    let barrier = Arc::new(tokio::sync::Barrier::new(workers));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let s = s.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut local = s.local();
                let mut rng = Rng::new(0x5eed + w as u64);
                let owned = s.n() / workers;
                barrier.wait().await;
                for op in 0..per {
                    if op % 256 == 255 {
                        tokio::task::yield_now().await;
                    }
                    let r = rng.next_u64();
                    let i = w + workers * ((r >> 8) as usize % owned);
                    if r % 10 == 0 {
                        s.save(&mut local, i).await;
                    } else {
                        s.load(i).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// GC: sessionkit's store-level pass versus the full scans the other designs need.

/// Creates `count` records in `store` that are already expired at `now` (keys from `rng`).
pub async fn add_expired(
    store: &sessionkit::MemoryStore,
    count: usize,
    now: Millis,
    rng: &mut Rng,
) {
    let t0 = now - 60_000;
    let mut rec = sk_record(t0);
    rec.expires_at = now - 1;
    for _ in 0..count {
        store
            .create(&Key(rng.bytes32()), &rec)
            .await
            .expect("create");
    }
}

/// One GC pass as `Manager::gc_once` runs it: batches of `Config::default().gc_batch`.
pub async fn sk_gc(store: &sessionkit::MemoryStore, now: Millis) -> usize {
    let batch = sessionkit::Config::default().gc_batch;
    let mut total = 0;
    loop {
        let n = store.gc(now, batch).await.expect("gc");
        total += n;
        if n < batch {
            return total;
        }
    }
}

/// A `HashMap<Id, tower Record>` under a mutex: the layout of tower-sessions' `MemoryStore`,
/// which itself has no expired-session deletion at all. `ts_gc` is the `retain` pass such a
/// store would need.
pub type TsMap = std::sync::Mutex<HashMap<Id, TsRecord>>;

/// Builds a [`TsMap`] with `live` live records and `expired` expired ones.
pub fn ts_map(live: usize, expired: usize, rng: &mut Rng) -> TsMap {
    let mut m = HashMap::new();
    ts_add(&mut m, live, false, rng);
    ts_add(&mut m, expired, true, rng);
    std::sync::Mutex::new(m)
}

/// Adds `count` records, expired or live.
pub fn ts_add(m: &mut HashMap<Id, TsRecord>, count: usize, expired: bool, rng: &mut Rng) {
    for _ in 0..count {
        let mut r = ts_record(ts_id(rng));
        if expired {
            r.expiry_date = time_now() - time::Duration::minutes(1);
        }
        m.insert(r.id, r);
    }
}

/// Full-scan GC over a [`TsMap`].
pub fn ts_gc(m: &TsMap) -> usize {
    let now = time_now();
    let mut m = m.lock().unwrap();
    let before = m.len();
    m.retain(|_, r| r.expiry_date > now);
    before - m.len()
}

/// Adds `count` expired records to a [`Dm`] map.
pub fn dm_add_expired(map: &DashMap<[u8; 32], Record>, count: usize, now: Millis, rng: &mut Rng) {
    let mut rec = sk_record(now - 60_000);
    rec.expires_at = now - 1;
    for _ in 0..count {
        map.insert(rng.bytes32(), rec.clone());
    }
}

/// Full-scan GC over the DashMap baseline.
pub fn dm_gc(map: &DashMap<[u8; 32], Record>, now: Millis) -> usize {
    let before = map.len();
    map.retain(|_, r| !r.is_expired(now));
    before - map.len()
}

// ---------------------------------------------------------------------------------------------

/// axum + tower-sessions `MemoryStore`: the same count page.
pub fn tower_count() -> Router {
    let layer = tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
        .with_secure(false);
    Router::new().route("/count", get(ts_count)).layer(layer)
}

async fn ts_count(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("count")
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .unwrap_or(0)
        + 1;
    session
        .insert("count", n)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(format!("{n}\n"))
}

/// One HTTP scenario: name, app, which cookies the load generator sends.
pub type Scenario = (&'static str, fn() -> Router, Cookies);

/// The HTTP scenarios: one session per connection, a new session per request, one hot session
/// that every connection writes (a page firing parallel requests), and (for the demo
/// comparison) 64 sessions shared by the connections.
pub fn http_scenarios() -> Vec<Scenario> {
    let sk = sessionkit_bench::apps::sessionkit_count as fn() -> Router;
    vec![
        ("sessionkit-cookie", sk, Cookies::PerConnection),
        ("sessionkit-nocookie", sk, Cookies::None),
        ("sessionkit-hot", sk, Cookies::Shared(1)),
        (
            "bare-atomic",
            sessionkit_bench::apps::bare_count,
            Cookies::None,
        ),
        ("tower-cookie", tower_count, Cookies::PerConnection),
        ("tower-nocookie", tower_count, Cookies::None),
        ("tower-hot", tower_count, Cookies::Shared(1)),
        ("tower-spread64", tower_count, Cookies::Shared(64)),
    ]
}
