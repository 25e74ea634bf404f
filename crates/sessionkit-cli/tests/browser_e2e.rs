//! The demo in a real browser: runs `e2e/browser.mjs` (headless Debian Chromium driven by
//! playwright-core) against the real `sessionkit serve` binary. Skipped, with a message, when
//! Chromium, node or e2e/node_modules is missing, unless SESSIONKIT_REQUIRE_SERVICES=1
//! (`scripts/install-browser.sh` installs all three).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::Server;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    p.exists().then_some(p)
}

fn node_works() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn demo_works_in_headless_chromium() {
    let root = repo_root();
    let script = root.join("e2e/browser.mjs");
    let mut missing = Vec::new();
    let chromium = chromium();
    if chromium.is_none() {
        missing.push("chromium (/usr/bin/chromium or $CHROMIUM)");
    }
    if !node_works() {
        missing.push("node");
    }
    if !root.join("e2e/node_modules/playwright-core").is_dir() {
        missing.push("e2e/node_modules/playwright-core");
    }
    if !missing.is_empty() {
        let msg = format!(
            "browser e2e: missing {}; run scripts/install-browser.sh",
            missing.join(", ")
        );
        if std::env::var("SESSIONKIT_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{msg} (required: SESSIONKIT_REQUIRE_SERVICES=1)");
        }
        eprintln!("SKIPPED {msg}");
        return;
    }
    let server = Server::start(&["--store", "memory://"]);
    // localhost, not 127.0.0.1: a secure context, so Chromium keeps the Secure __Host- cookie.
    let base = format!("http://localhost:{}", server.addr.port());
    // SESSIONKIT_SCREENSHOT=e2e/screenshot.png refreshes the committed picture.
    let shot = std::env::var("SESSIONKIT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-screenshot.png"));
    let _ = std::fs::remove_file(&shot);
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&shot)
        .env("CHROMIUM", chromium.unwrap())
        .current_dir(root.join("e2e"))
        .spawn()
        .expect("spawn node");
    // Bounded: the script's own steps time out after 15 s each; this is the backstop.
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("browser e2e did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "browser e2e failed: {status}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "screenshot is not a PNG"
    );
    drop(server);
}
