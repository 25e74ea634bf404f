//! Crash durability of the embedded stores with real processes.
//!
//! The test binary doubles as the writer: run with the ignored test `child` and
//! `SESSIONKIT_CHILD=writer`, it saves sessions as fast as it can and prints `ACK <key> <version>`
//! after each acknowledged write. The tests kill it with SIGKILL at random moments, reopen the
//! store (no repair step) and check that every acknowledged write is there, intact, and that
//! nothing in the store is corrupt and the user index still lists exactly the sessions of each
//! user. The same child with `SESSIONKIT_CHILD=incr` runs
//! compare-and-set increments, to show that two processes on one store never lose an update.
#![cfg(any(feature = "sqlite", feature = "file"))]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessionkit::store::{self, Store};
use sessionkit::{now_millis, Error, Key, Record, SessionId};

const ROUNDS: usize = 20;
const HOUR: i64 = 3_600_000;

fn random(below: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() % below
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sessionkit-durability-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The padding a record at `version` carries: its integrity is checked after every crash.
fn pad(key: &Key, version: u64) -> String {
    format!("\"{}\"", key.short().repeat(1 + (version % 7) as usize))
}

fn stamp(key: &Key, r: &mut Record) {
    r.data.set("n", &r.version.to_string()).unwrap();
    r.data.set("pad", &pad(key, r.version)).unwrap();
}

fn intact(key: &Key, r: &Record) -> bool {
    r.data.get("n") == Some(r.version.to_string().as_str())
        && r.data.get("pad") == Some(pad(key, r.version).as_str())
}

fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

async fn all_records(store: &dyn Store) -> Vec<(Key, Record)> {
    store::scan_all(store, 500, now_millis()).await.unwrap()
}

/// The writer: resumes the sessions already in the store, then creates and saves as fast as it
/// can (bounded, in case nobody kills it).
async fn writer(url: &str) {
    let store = store::open(url).await.unwrap();
    let mut sessions = all_records(&*store).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0u64..1_000_000 {
        if Instant::now() > deadline {
            break;
        }
        let now = now_millis();
        if sessions.len() < 30 || i % 8 == 0 {
            let key = SessionId::generate().unwrap().key();
            let mut r = Record::new(now, now + HOUR, now + 2 * HOUR);
            if i % 3 == 0 {
                r.user = Some(format!("user{}", i % 4));
            }
            stamp(&key, &mut r);
            store.create(&key, &r).await.unwrap();
            ack(format!("ACK {} {}\n", key.to_hex(), r.version));
            sessions.push((key, r));
        } else if i % 5 == 1 {
            // Touches rewrite records too (the file store rewrites the whole file).
            let (key, r) = &sessions[(i as usize * 11) % sessions.len()];
            assert!(store.touch(key, now, now + HOUR).await.unwrap(), "{r:?}");
        } else {
            let at = (i as usize * 7) % sessions.len();
            let (key, r) = &mut sessions[at];
            let expected = r.version;
            r.version += 1;
            r.last_access = now;
            r.expires_at = now + HOUR;
            stamp(key, r);
            store.save(key, r, expected).await.unwrap();
            ack(format!("ACK {} {}\n", key.to_hex(), r.version));
        }
    }
}

/// Compare-and-set increments of one counter, retrying on conflict.
async fn incrementer(url: &str, key: Key, times: u64) {
    let store = store::open(url).await.unwrap();
    for _ in 0..times {
        for attempt in 0.. {
            assert!(attempt < 10_000, "no progress");
            let mut r = store.load(&key, now_millis()).await.unwrap().unwrap();
            let n: u64 = r.data.get("count").unwrap().parse().unwrap();
            let expected = r.version;
            r.version += 1;
            r.data.set("count", &(n + 1).to_string()).unwrap();
            match store.save(&key, &r, expected).await {
                Ok(()) => break,
                Err(Error::Conflict) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
    ack("DONE\n".into());
}

/// Entry point of the child processes; does nothing unless started by a test below.
#[test]
#[ignore = "helper: run as a separate process by the durability tests"]
fn child() {
    let Ok(mode) = std::env::var("SESSIONKIT_CHILD") else {
        return;
    };
    let url = std::env::var("SESSIONKIT_CHILD_URL").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "writer" => rt.block_on(writer(&url)),
        "incr" => {
            let key = Key::from_hex(&std::env::var("SESSIONKIT_CHILD_KEY").unwrap()).unwrap();
            rt.block_on(incrementer(&url, key, 200));
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_child(mode: &str, url: &str, key: Option<&Key>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SESSIONKIT_CHILD", mode)
    .env("SESSIONKIT_CHILD_URL", url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(k) = key {
        cmd.env("SESSIONKIT_CHILD_KEY", k.to_hex());
    }
    cmd.spawn().unwrap()
}

/// Complete `ACK` lines from the child's stdout; a line cut by the kill is not an ack.
fn read_acks(stdout: std::process::ChildStdout, tx: mpsc::Sender<(Key, u64)>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        // The test harness may print "test child ... " on the same line before the first ack.
        let Some(at) = text.find("ACK ") else {
            continue;
        };
        let mut parts = text[at + 4..].trim_end().split(' ');
        let key = Key::from_hex(parts.next().unwrap()).unwrap();
        let version = parts.next().unwrap().parse().unwrap();
        if tx.send((key, version)).is_err() {
            return;
        }
    }
}

/// A full integrity check of the store at `url` (every record decoded, backend checks).
async fn verify(url: &str) -> Vec<String> {
    #[cfg(feature = "sqlite")]
    if url.starts_with("sqlite://") {
        let s = sessionkit::store::SqliteStore::open(url).await.unwrap();
        return s.verify().await.unwrap().problems;
    }
    #[cfg(feature = "file")]
    if url.starts_with("file://") {
        let s = sessionkit::store::FileStore::open(url).await.unwrap();
        return s.verify().await.unwrap().problems;
    }
    panic!("no verifier for {url}")
}

async fn crash_loop(url: &str) {
    let mut acked: HashMap<Key, u64> = HashMap::new();
    let mut total = 0usize;
    for round in 0..ROUNDS {
        let mut child = spawn_child("writer", url, None);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || read_acks(stdout, tx));
        // Kill only once it is writing, at a random moment within its stride.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer acknowledged nothing");
        std::thread::sleep(Duration::from_millis(random(150)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: writer was not killed but exited on its own: {status}"
        );
        reader.join().unwrap();
        let mut this_round = 0;
        for (key, version) in std::iter::once(first).chain(rx.try_iter()) {
            let v = acked.entry(key).or_insert(0);
            *v = (*v).max(version);
            this_round += 1;
        }
        total += this_round;

        let store = store::open(url)
            .await
            .unwrap_or_else(|e| panic!("round {round}: store does not reopen after SIGKILL: {e}"));
        let now = now_millis();
        for (key, version) in &acked {
            let r =
                store.load(key, now).await.unwrap().unwrap_or_else(|| {
                    panic!("round {round}: acknowledged {key:?} v{version} lost")
                });
            assert!(
                r.version >= *version,
                "round {round}: {key:?} at v{} < acknowledged v{version}",
                r.version
            );
            assert!(intact(key, &r), "round {round}: {key:?} damaged: {r:?}");
        }
        let problems = verify(url).await;
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        // The store may hold a write whose ack the kill cut off, but every record is whole.
        let all = all_records(&*store).await;
        assert!(all.len() >= acked.len());
        assert_eq!(store.len(now).await.unwrap() as usize, all.len());
        let mut by_user: HashMap<String, Vec<Key>> = HashMap::new();
        for (key, r) in &all {
            assert!(intact(key, r), "round {round}: {key:?} damaged: {r:?}");
            if let Some(u) = &r.user {
                by_user.entry(u.clone()).or_default().push(*key);
            }
        }
        // The user index survived the crash: exactly the sessions naming each user.
        for (user, mut keys) in by_user {
            let mut listed: Vec<Key> = store
                .sessions_of(&user, now)
                .await
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            listed.sort();
            assert_eq!(listed, keys, "round {round}: user index of {user}");
        }
        eprintln!(
            "round {round}: {this_round} acks, {} sessions, all present",
            acked.len()
        );
    }
    assert!(total >= ROUNDS, "too few writes to mean anything");
}

/// Two processes increment one counter with compare-and-set: no update may be lost.
async fn two_process_increments(url: &str) {
    let store = store::open(url).await.unwrap();
    let key = SessionId::generate().unwrap().key();
    let now = now_millis();
    let mut r = Record::new(now, now + HOUR, now + HOUR);
    r.data.set("count", "0").unwrap();
    store.create(&key, &r).await.unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| spawn_child("incr", url, Some(&key)))
        .collect();
    for mut c in children {
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(c.wait().unwrap().success(), "incrementer failed: {out}");
        assert!(out.contains("DONE"), "incrementer did not finish: {out}");
    }
    let r = store.load(&key, now_millis()).await.unwrap().unwrap();
    assert_eq!(r.data.get("count"), Some("400"));
    assert_eq!(r.version, 401);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_sigkill() {
    let dir = temp_dir("sqlite");
    let url = format!("sqlite://{}", dir.join("s.db").display());
    crash_loop(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_acknowledged_writes_survive_sigkill() {
    let dir = temp_dir("file");
    let url = format!("file://{}", dir.join("store").display());
    crash_loop(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_compare_and_set_holds_across_processes() {
    let dir = temp_dir("sqlite-cas");
    two_process_increments(&format!("sqlite://{}", dir.join("s.db").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_compare_and_set_holds_across_processes() {
    let dir = temp_dir("file-cas");
    two_process_increments(&format!("file://{}", dir.join("store").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}
