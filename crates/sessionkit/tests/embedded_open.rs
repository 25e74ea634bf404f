//! `store::open` picks the embedded stores by URL, and refuses what is not theirs clearly.
#![cfg(all(feature = "sqlite", feature = "file"))]

use sessionkit::{now_millis, store, Error, Record, SessionId};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sessionkit-open-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn urls_open_the_embedded_stores_and_data_survives_reopen() {
    let dir = temp_dir("ok");
    let urls = [
        format!(
            "sqlite://{}?synchronous=normal&pool=2",
            dir.join("a.db").display()
        ),
        format!("file://{}", dir.join("files").display()),
    ];
    for (url, kind) in urls.iter().zip(["sqlite", "file"]) {
        let key = SessionId::generate().unwrap().key();
        let now = now_millis();
        let mut r = Record::new(now, now + 60_000, now + 60_000);
        r.data.set("n", "1").unwrap();
        {
            let s = store::open(url).await.unwrap();
            assert_eq!(s.kind(), kind);
            s.ping().await.unwrap();
            s.create(&key, &r).await.unwrap();
        }
        let s = store::open(url).await.unwrap();
        assert_eq!(s.load(&key, now).await.unwrap(), Some(r), "{url}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn wrong_targets_are_clear_config_errors() {
    let dir = temp_dir("bad");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "just some notes\n".repeat(100)).unwrap();
    let cases = [
        "sqlite://".to_string(),
        "sqlite://x.db?pool=none".to_string(),
        format!("sqlite://{}", text.display()),
        format!("sqlite://{}", dir.join("no/such/dir/s.db").display()),
        "file://".to_string(),
        format!("file://{}", text.display()),
        // A directory with other files in it is never taken over.
        format!("file://{}", dir.display()),
    ];
    for url in &cases {
        match store::open(url).await {
            Err(Error::Config(msg) | Error::BadUrl { reason: msg, .. }) => {
                assert!(!msg.is_empty())
            }
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }
    // The text file is untouched.
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "just some notes\n".repeat(100)
    );
    let err = store::open("nosuch://x").await.unwrap_err().to_string();
    assert!(
        err.contains("sqlite://") && err.contains("file://"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
