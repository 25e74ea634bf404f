//! RedisStore over TLS (`rediss://`, feature `redis-tls`): a private redis-server started here on
//! a free loopback port with a throwaway CA, server and client certificate (made with the
//! `openssl` command), requiring client certificates, and a three-master Cluster whose bus is TLS
//! too. The whole conformance suite runs over both; a connection the server or the client must
//! refuse is a prompt, clear error.
#![cfg(feature = "redis-tls")]

mod shared_stores;

#[path = "shared_stores/redis_fixture.rs"]
mod redis_fixture;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionkit::store::redis::{RedisOptions, RedisStore};
use sessionkit::Error;
use shared_stores::unavailable;

/// Runs `openssl` with `args` in `dir`; false when it is missing or fails.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA (`ca.pem`), a leaf for 127.0.0.1 (`server.pem`/`server.key`), a client leaf
/// (`client.pem`/`client.key`) and a second CA nobody used (`other-ca.pem`), all in `dir`.
fn make_certificates(dir: &Path) -> bool {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = |name: &str| {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let subject = format!("/CN=sessionkit test {name}");
        let mut a = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem]);
        openssl(dir, &a)
    };
    let leaf = |name: &str, ext: &str| {
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut a = vec![
            "req",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &csr,
        ];
        a.extend(ec);
        openssl(dir, &a)
            && openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &pem,
                    "-extfile",
                    &extfile,
                ],
            )
    };
    ca("ca")
        && ca("other-ca")
        && leaf(
            "server",
            // Cluster nodes present it as clients of each other's bus too.
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        && leaf("client", "extendedKeyUsage=clientAuth\n")
}

/// The certificates and the TLS-only redis-server children (one, or a three-master Cluster)
/// started on them; the children are killed on drop.
struct TlsServers {
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

/// A loopback port that is free, and whose Cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl TlsServers {
    /// One standalone server, or with `cluster` three Cluster masters with TLS on the bus too.
    fn start(cluster: bool) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return unavailable("redis-server binary", "not installed");
        }
        let dir = tempfile::tempdir().unwrap();
        if !make_certificates(dir.path()) {
            return unavailable("openssl command", "missing or failed to make certificates");
        }
        let mut servers = Self {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        for _ in 0..if cluster { 3 } else { 1 } {
            let port = free_port_pair();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args([
                    "--tls-cert-file",
                    "server.pem",
                    "--tls-key-file",
                    "server.key",
                ])
                .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes"]);
            if cluster {
                let conf = format!("nodes-{port}.conf");
                cmd.args(["--cluster-enabled", "yes", "--tls-cluster", "yes"])
                    .args(["--cluster-config-file", &conf])
                    .args(["--cluster-node-timeout", "2000"]);
            }
            let child = cmd
                .current_dir(servers.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            servers.children.push(child);
            servers.ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !servers.ports.iter().all(|p| answers(*p)) {
            if Instant::now() > deadline {
                return unavailable(
                    "redis-server with TLS",
                    "did not start (built without TLS?)",
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if cluster && !servers.make_cluster() {
            return unavailable(
                "redis cluster over TLS",
                "redis-cli --cluster create failed",
            );
        }
        Some(servers)
    }

    /// `redis-cli` over TLS with the client certificate.
    fn cli(&self) -> Command {
        let mut c = Command::new("redis-cli");
        c.args([
            "--tls",
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
        ])
        .current_dir(self.dir.path())
        .stderr(Stdio::null());
        c
    }

    /// Joins the nodes into one Cluster and waits until it serves every slot.
    fn make_cluster(&self) -> bool {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = self
            .cli()
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while created && Instant::now() < deadline {
            let ready = self.ports.iter().all(|p| {
                self.cli()
                    .args(["-h", "127.0.0.1", "-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A TLS URL for these servers trusting `ca`, with the client certificate when `client`.
    fn url(&self, ca: &str, client: bool) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.ports.len() > 1 {
            "rediss+cluster"
        } else {
            "rediss"
        };
        let mut url = format!("{scheme}://{}?ca={}", hosts.join(","), self.file(ca));
        if client {
            url += &format!(
                "&cert={}&key={}",
                self.file("client.pem"),
                self.file("client.key")
            );
        }
        url
    }
}

impl Drop for TlsServers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn quick() -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    }
}

/// Every conformance test on `servers` (they have no plain-text port: all of it is TLS).
async fn conformance(servers: &TlsServers, what: &str) {
    let url = servers.url("ca.pem", true);
    for test in sessionkit::testkit::TESTS {
        eprintln!("{what}: {}", test.name);
        let fx = redis_fixture::fixture(Some(url.clone()), what).await;
        (test.run)(fx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_tls_with_client_certificates() {
    if let Some(server) = TlsServers::start(false) {
        conformance(&server, "redis over TLS").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_a_tls_cluster() {
    if let Some(cluster) = TlsServers::start(true) {
        assert!(RedisStore::open(&cluster.url("ca.pem", true))
            .await
            .unwrap()
            .is_cluster());
        conformance(&cluster, "redis cluster over TLS").await;
    }
}

/// Refused connections end promptly with an error that says what failed, never a hang or a
/// plain-text fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tls_connections_are_prompt_clear_errors() {
    let Some(server) = TlsServers::start(false) else {
        return;
    };
    let cases = [
        ("no client certificate", server.url("ca.pem", false)),
        (
            "server signed by an untrusted CA",
            server.url("other-ca.pem", true),
        ),
        (
            "plain text to the TLS port",
            format!("redis://127.0.0.1:{}", server.ports[0]),
        ),
    ];
    for (what, url) in cases {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            let store = RedisStore::open_with(&url, quick()).await?;
            sessionkit::Store::ping(&store).await
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 15 s"));
        let err = outcome.expect_err(what);
        assert!(err.is_unavailable(), "{what}: {err:?}");
        eprintln!("{what}: {err} ({:.1?})", started.elapsed());
    }
}

/// Misconfigured TLS parameters are configuration errors naming the problem, before any
/// connection is tried.
#[tokio::test]
async fn bad_tls_parameters_are_config_errors() {
    let missing = PathBuf::from("/nonexistent/sessionkit-ca.pem");
    for (url, says) in [
        (
            format!("rediss://127.0.0.1:1?ca={}", missing.display()),
            "cannot read ca file",
        ),
        (
            "rediss://127.0.0.1:1?cert=/tmp/c.pem".to_owned(),
            "cert and key go together",
        ),
        (
            "redis://127.0.0.1:1?ca=/tmp/ca.pem".to_owned(),
            "need a TLS URL",
        ),
        (
            "rediss+cluster://?ca=/tmp/ca.pem".to_owned(),
            "cannot read ca file",
        ),
        ("redisss://127.0.0.1:1".to_owned(), "not a redis URL"),
    ] {
        match RedisStore::open(&url).await {
            Err(Error::Config(m)) => assert!(m.contains(says), "{url}: {m}"),
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }
}
