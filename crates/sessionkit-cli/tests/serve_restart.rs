//! The real `sessionkit serve` binary on durable stores (SQLite, file, MySQL): log in,
//! `kill -9` the server, start it again on the same store, and the login and the count are
//! still there.

mod support;

use support::*;

async fn survives_kill_9(store: &str) {
    let mut server = Server::start(&["--store", store]);
    let (anon, csrf) = new_session(server.addr).await;
    let cookie = login(server.addr, &anon, &csrf, "kim").await;
    for n in 2..=5 {
        assert_eq!(
            get(server.addr, "/count", Some(&cookie)).await.body.trim(),
            n.to_string()
        );
    }
    server.kill(); // SIGKILL: no shutdown hook runs.

    let server = Server::start(&["--store", store]);
    assert_eq!(get(server.addr, "/whoami", Some(&cookie)).await.body, "kim");
    assert_eq!(
        get(server.addr, "/count", Some(&cookie)).await.body.trim(),
        "6"
    );
    // The pre-login ID stayed dead across the restart too.
    assert_eq!(get(server.addr, "/whoami", Some(&anon)).await.body, "");
    // The user index survived the restart: "end all other sessions" works on this store.
    revoke_others_ends_the_other_browser(server.addr, server.addr).await;
}

#[tokio::test]
async fn default_sqlite_store_keeps_a_login_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    survives_kill_9(&url).await;
}

#[tokio::test]
async fn file_store_keeps_a_login_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("sessions").display());
    survives_kill_9(&url).await;
}

/// MySQL/MariaDB (SESSIONKIT_MYSQL_URL), in a table of the test's own: every acknowledged write
/// is committed before the response, so a `kill -9` loses none of them.
#[tokio::test]
async fn mysql_store_keeps_a_login_across_kill_9() {
    let table = format!(
        "restart_{}",
        sessionkit::SessionId::generate().unwrap().key().short()
    );
    let url = format!("{}?table={table}", mysql_url());
    if let Err(e) = sessionkit::store::open(&url).await {
        assert!(
            !std::env::var("SESSIONKIT_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
            "mysql is required (SESSIONKIT_REQUIRE_SERVICES=1) but unavailable: {e}"
        );
        eprintln!("SKIPPED: mysql unavailable ({e})");
        return;
    }
    survives_kill_9(&url).await;
    drop_mysql_table(&table).await;
}

#[tokio::test]
async fn serve_without_store_flag_uses_sqlite_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessionkit"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (cookie, _) = new_session(addr).await;
    assert!(!cookie.is_empty());
    let _ = child.kill();
    let _ = child.wait();
    assert!(dir.path().join("sessionkit.db").exists());
}

#[tokio::test]
async fn a_bad_store_url_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessionkit"))
        .args(["serve", "--addr", "127.0.0.1:0", "--store", "nosuch://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown store URL") && err.contains("sqlite://"),
        "{err}"
    );
}
