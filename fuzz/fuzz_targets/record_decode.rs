//! `Record::decode`, the one binary format every byte-oriented store (file, SQLite, Redis,
//! Postgres) reads back, on arbitrary bytes.
//!
//! Input: `[mode, bytes...]`. With bit 0 of `mode` clear the bytes are decoded as they are;
//! with it set they are first framed as a record would be (magic, this key, the bytes, a valid
//! CRC), so the fuzzer gets past the checksum and explores the field parser; bit 2 then picks
//! the extended layout's magic (the one with an extension block: a device binding). With bit 1 set a
//! record that decodes is also put in a `MemoryStore` and served through the manager.
//!
//! Checks: decode never panics; when it succeeds, encoding gives back the same bytes (one
//! spelling per record), decode(encode(r)) == r, the record is refused under any other key,
//! its data has no duplicate names, and a manager serving it does not panic.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use sessionkit::{Config, Manager, Record, SessionId};
use sessionkit_fuzz as fz;

fn frame(key: &sessionkit::Key, body: &[u8], extended: bool) -> Vec<u8> {
    // The magic is whatever the library writes first; take it from a real encoding so this
    // harness follows format changes.
    let mut sample = Record::new(0, 0, 0);
    if extended {
        sample.extra_mut().binding = Some(Default::default());
    }
    let magic = &sample.encode(key)[..4];
    let mut out = magic.to_vec();
    out.extend_from_slice(&key.0);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    // All-zero ID: a fixed, valid ID whose token the harness can present.
    let id = SessionId::parse(&"A".repeat(43)).expect("canonical ID");
    let key = id.key();
    let bytes = if mode & 1 == 1 {
        frame(&key, rest, mode & 4 == 4)
    } else {
        rest.to_vec()
    };
    let Ok(record) = Record::decode(&key, &bytes) else {
        return;
    };
    let encoded = record.encode(&key);
    assert_eq!(encoded, bytes, "a decoded record re-encodes differently");
    assert_eq!(Record::decode(&key, &encoded).ok().as_ref(), Some(&record));
    let other = SessionId::parse(&format!("{}E", "A".repeat(42)))
        .expect("canonical ID")
        .key();
    assert!(
        Record::decode(&other, &encoded).is_err(),
        "misfiled record accepted"
    );
    let mut names = HashSet::new();
    for (name, value) in record.data.iter() {
        assert!(names.insert(name), "duplicate data name {name:?}");
        assert_eq!(record.data.get(name), Some(value));
    }

    if mode & 2 == 2 {
        fz::start_logs();
        let store = fz::memory_store();
        let manager = Manager::new(store.clone(), Config::default()).expect("valid config");
        fz::block_on(async {
            store.create(&key, &record).await.expect("empty store");
            let token = id.to_string();
            let session = manager.start(&fz::present(&manager, &token));
            let out = fz::exercise(&manager, &session, mode >> 2, "x").await;
            let _ = fz::issued_token(&manager, &out);
            fz::assert_not_logged(&[&token]);
        });
    }
});
