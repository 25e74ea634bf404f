//! PostgresStore over TLS (feature `postgres-tls`) against the machine's PostgreSQL, which must
//! have `ssl = on` (Debian's default, with its self-signed "snakeoil" certificate). The server's
//! own certificate serves as `sslrootcert`: the conformance suite runs over a chain-checked
//! connection, the server confirms the sessions' connections are encrypted, and every check that
//! must refuse a certificate does, promptly and clearly.
#![cfg(feature = "postgres-tls")]

mod shared_stores;

#[path = "shared_stores/postgres_fixture.rs"]
mod postgres_fixture;

use std::process::Command;
use std::time::Duration;

use sessionkit::store::postgres::PostgresStore;
use sessionkit::{Error, Store};
use shared_stores::{postgres_url, token, unavailable, with_param};

/// A plain admin connection to the test server.
async fn admin() -> Option<tokio_postgres::Client> {
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls),
    )
    .await;
    match connect {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Some(client)
        }
        Ok(Err(e)) => unavailable("postgres", e),
        Err(_) => unavailable("postgres", "connect timed out"),
    }
}

/// The server's certificate file, when it has TLS on and the file is readable here.
async fn server_certificate(admin: &tokio_postgres::Client) -> Option<String> {
    let show = |what: &'static str| async move {
        let row = admin.query_one(&format!("SHOW {what}"), &[]).await.ok()?;
        Some(row.get::<_, String>(0))
    };
    if show("ssl").await.as_deref() != Some("on") {
        return unavailable("postgres with ssl = on", "the server has TLS off");
    }
    let file = show("ssl_cert_file").await?;
    if std::fs::metadata(&file).is_err() {
        return unavailable(
            "the postgres server certificate",
            format!("{file} unreadable"),
        );
    }
    Some(file)
}

/// The test server's URL with TLS parameters.
fn url(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .fold(postgres_url(), |u, (k, v)| with_param(&u, k, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_a_chain_checked_connection() {
    let Some(admin) = admin().await else { return };
    let Some(cert) = server_certificate(&admin).await else {
        return;
    };
    let url = url(&[("sslmode", "verify-ca"), ("sslrootcert", &cert)]);
    for test in sessionkit::testkit::TESTS {
        eprintln!("postgres over TLS: {}", test.name);
        (test.run)(postgres_fixture::fixture(&url).await).await;
    }
}

/// The server's view: the store's connections are encrypted with `require`, and plain with
/// `disable` (so the check below can tell the two apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_encrypted_connections() {
    let Some(admin) = admin().await else { return };
    if server_certificate(&admin).await.is_none() {
        return;
    }
    for (mode, encrypted) in [("require", true), ("prefer", true), ("disable", false)] {
        let app = format!("sktls_{}", token());
        let schema = format!("sk_tls_{}", token());
        let _drop = shared_stores::DropSchema(schema.clone());
        let store = PostgresStore::open(&url(&[
            ("sslmode", mode),
            ("application_name", &app),
            ("schema", &schema),
        ]))
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        store.ping().await.unwrap();
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "sslmode={mode}: no connection seen");
        for r in rows {
            assert_eq!(r.get::<_, bool>(0), encrypted, "sslmode={mode}");
        }
    }
}

/// A certificate that fails the requested check is refused: no session store on an
/// unauthenticated server, and a prompt error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_fail_the_check_are_refused() {
    let Some(admin) = admin().await else { return };
    let Some(cert) = server_certificate(&admin).await else {
        return;
    };
    // Any other certificate than the server's: a throwaway one.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=sessionkit unrelated CA",
            "-keyout",
        ])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        unavailable::<()>("openssl command", "missing or failed");
        return;
    }
    let other = other.display().to_string();
    let names = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in", &cert])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let on_loopback = postgres_url().contains("@127.0.0.1");
    if on_loopback && !names.contains("IP Address:127.0.0.1") {
        // verify-full to 127.0.0.1: the chain is good, the name is not.
        let refused = url(&[("sslmode", "verify-full"), ("sslrootcert", &cert)]);
        expect_refused("a certificate for another host", &refused).await;
    }
    for (what, params) in [
        (
            "a root that did not sign the certificate",
            vec![("sslmode", "verify-ca"), ("sslrootcert", other.as_str())],
        ),
        (
            "require with a root that did not sign it",
            vec![("sslmode", "require"), ("sslrootcert", other.as_str())],
        ),
    ] {
        expect_refused(what, &url(&params)).await;
    }
    // And the positive case of verify-full where the certificate names the host we can use.
    if on_loopback && names.contains("DNS:localhost") {
        let full = url(&[("sslmode", "verify-full"), ("sslrootcert", &cert)])
            .replace("@127.0.0.1", "@localhost");
        let schema = format!("sk_tls_{}", token());
        let _drop = shared_stores::DropSchema(schema.clone());
        let store = PostgresStore::open(&with_param(&full, "schema", &schema))
            .await
            .unwrap_or_else(|e| panic!("verify-full to localhost: {e}"));
        store.ping().await.unwrap();
    } else {
        eprintln!("the server certificate does not name localhost: verify-full success not run");
    }
}

async fn expect_refused(what: &str, url: &str) {
    let opened = tokio::time::timeout(Duration::from_secs(15), PostgresStore::open(url))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 15 s"));
    match opened {
        Ok(_) => panic!("{what}: the store opened"),
        Err(e) => {
            let text = e.to_string();
            assert!(e.is_unavailable(), "{what}: {e:?}");
            assert!(text.contains("invalid peer certificate"), "{what}: {text}");
            eprintln!("{what}: {text}");
        }
    }
}

#[tokio::test]
async fn bad_tls_parameters_are_config_errors() {
    for (params, says) in [
        (vec![("sslmode", "verify_full")], "unknown sslmode"),
        (vec![("sslrootcert", "/tmp/ca.pem")], "sslrootcert needs"),
        (
            vec![
                ("sslmode", "verify-ca"),
                ("sslrootcert", "/nonexistent/ca.pem"),
            ],
            "cannot read sslrootcert",
        ),
    ] {
        match PostgresStore::open(&url(&params)).await {
            Err(Error::BadUrl { reason: m, .. }) => assert!(m.contains(says), "{params:?}: {m}"),
            other => panic!("{params:?}: expected a config error, got {:?}", other.err()),
        }
    }
}
