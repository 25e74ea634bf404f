//! What the durable stores read back from disk, beyond `Record::decode` itself: a file store
//! record file and a SQLite row (payload plus the authoritative `version` / `last_access` /
//! `expires_at` columns and a key blob of any length), then served through the manager and
//! walked by `scan` (with an arbitrary cursor), `len`, `gc` and `sessions_of`.
//!
//! Input: `[mode, ops, v, t1, t2, cursor-length, cursor..., payload...]`. Bit 0 of `mode` picks
//! the store (file / SQLite); for SQLite, bit 1 stores the row under a key blob of a wrong length
//! and `v`, `t1`, `t2` perturb the columns. Stores live on /dev/shm (tmpfs) when it exists and are
//! opened once per process; every input starts from an emptied store.
//!
//! Checks: no panic; a session is served only if its bytes decode under its key (and, for
//! SQLite, the payload's version matches the column); no ID is logged.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sessionkit::store::{FileStore, SqliteStore};
use sessionkit::{now_millis, Config, Manager, Record, SessionId, Store};
use sessionkit_fuzz as fz;

struct Stores {
    dir: PathBuf,
    file: Arc<FileStore>,
    sqlite: Arc<SqliteStore>,
    db: PathBuf,
}

fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        // libFuzzer ends the process without running destructors, so each run removes the
        // scratch directories of earlier runs whose process is gone.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("sessionkit-fuzz-") {
                    if !std::path::Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = base.join(format!("sessionkit-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let db = dir.join("s.db");
        fz::block_on(async {
            let file = FileStore::open(&format!("file://{}", dir.join("files").display()))
                .await
                .expect("file store");
            let sqlite = SqliteStore::open(&format!("sqlite://{}", db.display()))
                .await
                .expect("sqlite store");
            Stores {
                dir,
                file: Arc::new(file),
                sqlite: Arc::new(sqlite),
                db,
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, ops, v, t1, t2, clen, rest @ ..] = data else {
        return;
    };
    let (cursor, payload) = rest.split_at((*clen as usize).min(rest.len()));
    let cursor = String::from_utf8_lossy(cursor).into_owned();
    let s = stores();
    let id = SessionId::parse(&"A".repeat(43)).expect("canonical ID");
    let key = id.key();
    let token = id.to_string();
    let now = now_millis();
    fz::start_logs();

    let (store, served_ok): (Arc<dyn Store>, bool) = if mode & 1 == 0 {
        let shard = s.dir.join("files").join("s").join(&key.to_hex()[..2]);
        std::fs::write(shard.join(key.to_hex()), payload).expect("write record file");
        (s.file.clone(), Record::decode(&key, payload).is_ok())
    } else {
        let conn = rusqlite::Connection::open(&s.db).expect("open db");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        let decoded = Record::decode(&key, payload).ok();
        // Columns near the record's own values (so the row can be live), moved by the input.
        let version = decoded.as_ref().map_or(1, |r| r.version as i64) + i64::from(*v as i8 % 2);
        let last = now + i64::from(*t1 as i8) * 60_000;
        let exp = now + i64::from(*t2 as i8) * 60_000;
        let key_blob: Vec<u8> = if mode & 2 == 2 {
            // Any length but the right one: a damaged row.
            let n = match *v as usize % 40 {
                32 => 33,
                n => n,
            };
            key.0.iter().copied().cycle().take(n).collect()
        } else {
            key.0.to_vec()
        };
        let user = decoded.as_ref().and_then(|r| r.user.clone());
        conn.execute(
            "INSERT OR REPLACE INTO sessions (key, version, created, last_access, expires_at,
                absolute_expires_at, user, alias, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
            rusqlite::params![key_blob, version, now, last, exp, exp, user, payload],
        )
        .expect("insert row");
        let ok = mode & 2 == 0 && decoded.is_some_and(|r| r.version as i64 == version);
        (s.sqlite.clone(), ok)
    };

    let manager = Manager::new(store.clone(), Config::default()).expect("valid config");
    fz::block_on(async {
        let session = manager.start(&fz::present(&manager, &token));
        if let Ok(Some(_)) = session.key().await {
            assert!(served_ok, "served a session from bytes that do not decode");
        }
        let out = fz::exercise(&manager, &session, ops & !64, "x").await;
        let _ = fz::issued_token(&manager, &out);
        let _ = store.scan(Some(&cursor), 8, now).await;
        let _ = store.scan(None, 8, now).await;
        let _ = store.len(now).await;
        let _ = store.sessions_of("fuzz", now).await;
        let _ = store.gc(now + 100 * 86_400_000, 64).await;
        fz::assert_not_logged(&[&token]);
        // Back to empty for the next input.
        let _ = store.destroy_user("fuzz").await;
        let _ = store.destroy(&key).await;
    });
    if mode & 1 == 1 {
        let conn = rusqlite::Connection::open(&s.db).expect("open db");
        conn.execute("DELETE FROM sessions", [])
            .expect("empty table");
    } else {
        let shard = s.dir.join("files").join("s").join(&key.to_hex()[..2]);
        let _ = std::fs::remove_file(shard.join(key.to_hex()));
    }
});
