//! Private redis-server processes for tests that need a server of their own: one standalone
//! server or a Cluster (masters, optionally with replicas), in plain text or TLS-only with a
//! throwaway CA and client certificate (made with the `openssl` command). Every node runs on a
//! free loopback port and is killed, by its own handle, when the `RedisNodes` is dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::shared_stores::unavailable;

/// What to start.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// TLS-only nodes (no plain-text port), requiring client certificates.
    pub tls: bool,
    /// Masters; 1 with no replicas is a standalone server, anything else a Cluster.
    pub masters: usize,
    /// Replicas per master (Cluster only).
    pub replicas: usize,
}

/// The running nodes and their files.
pub struct RedisNodes {
    pub plan: Plan,
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

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
        // Cluster nodes present it as clients of each other's bus too.
        && leaf(
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        && leaf("client", "extendedKeyUsage=clientAuth\n")
}

/// A free loopback port whose Cluster bus port (+10000) is free too, both below the kernel's
/// ephemeral range (32768 and up on Linux): a port the kernel hands out to some other socket
/// meanwhile (an outgoing connection's source port, a `bind(0)` listener of another test) would
/// make the node fail to start.
fn free_port_pair() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mixed =
            (seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let port = 12_000 + (mixed >> 40) as u16 % 10_700; // 12000..22700, bus 22000..32700
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl RedisNodes {
    /// Starts the nodes of `plan` and, for a Cluster, joins them and waits until every slot is
    /// served and every replica is in sync. `None` (a skip) or a panic (services required) when
    /// redis-server, openssl or the cluster set-up is missing.
    pub fn start(plan: Plan) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return unavailable("redis-server binary", "not installed");
        }
        // The certificates, made once and copied into each attempt's directory.
        let dir = tempfile::tempdir().unwrap();
        if plan.tls && !make_certificates(dir.path()) {
            return unavailable("openssl command", "missing or failed to make certificates");
        }
        // A port taken between choosing and binding it fails one attempt, not the test.
        let mut why = String::new();
        for _ in 0..3 {
            let mut nodes = Self {
                plan,
                ports: Vec::new(),
                dir: tempfile::tempdir().unwrap(),
                children: Vec::new(),
            };
            if plan.tls {
                for f in [
                    "ca.pem",
                    "other-ca.pem",
                    "server.pem",
                    "server.key",
                    "client.pem",
                    "client.key",
                ] {
                    std::fs::copy(dir.path().join(f), nodes.dir.path().join(f)).unwrap();
                }
            }
            match nodes.launch() {
                Ok(()) => return Some(nodes),
                Err(e) => why = e,
            }
        }
        unavailable("private redis nodes", why)
    }

    /// Starts the processes and, for a Cluster, joins them.
    fn launch(&mut self) -> Result<(), String> {
        let plan = self.plan;
        let cluster = plan.masters > 1 || plan.replicas > 0;
        for _ in 0..plan.masters * (1 + plan.replicas) {
            let port = free_port_pair();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            if plan.tls {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args([
                        "--tls-cert-file",
                        "server.pem",
                        "--tls-key-file",
                        "server.key",
                    ])
                    .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes"])
                    .args(["--tls-replication", "yes"]);
            } else {
                cmd.args(["--port", &port.to_string()]);
            }
            if cluster {
                let conf = format!("nodes-{port}.conf");
                cmd.args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &conf])
                    .args(["--cluster-node-timeout", "1000"]);
                if plan.tls {
                    cmd.args(["--tls-cluster", "yes"]);
                }
            }
            let child = cmd
                .current_dir(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            self.children.push(Some(child));
            self.ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A node that could not bind its port has exited, whoever answers there.
            let exited = self
                .children
                .iter_mut()
                .flatten()
                .any(|c| !matches!(c.try_wait(), Ok(None)));
            if exited {
                return Err(
                    "a redis-server exited at start (port taken, or no TLS support)".into(),
                );
            }
            if self.ports.iter().all(|p| answers(*p)) {
                break;
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if cluster {
            self.make_cluster()?;
        }
        Ok(())
    }

    /// `redis-cli` for these nodes (over TLS with the client certificate when they are TLS).
    pub fn cli(&self, port: u16) -> Command {
        let mut c = Command::new("redis-cli");
        if self.plan.tls {
            c.args([
                "--tls",
                "--cacert",
                "ca.pem",
                "--cert",
                "client.pem",
                "--key",
                "client.key",
            ]);
        }
        c.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(self.dir.path())
            .stderr(Stdio::null());
        c
    }

    /// What `redis-cli -p port args...` prints ("" on failure).
    pub fn cli_output(&self, port: u16, args: &[&str]) -> String {
        self.cli(port)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Joins the nodes into one Cluster and waits until it serves every slot with every replica
    /// attached.
    fn make_cluster(&self) -> Result<(), String> {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = self
            .cli(self.ports[0])
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &self.plan.replicas.to_string()])
            .arg("--cluster-yes")
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.cluster_ok(&self.ports) && self.replicas_in_sync() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the cluster was not ready with every replica in sync within 60 s".into())
    }

    /// True when every node of `ports` says the Cluster serves every slot.
    pub fn cluster_ok(&self, ports: &[u16]) -> bool {
        ports.iter().all(|p| {
            self.cli_output(*p, &["cluster", "info"])
                .contains("cluster_state:ok")
        })
    }

    /// True when every replica's link to its master is up and it has caught up.
    pub fn replicas_in_sync(&self) -> bool {
        let replicas: Vec<u16> = self
            .live_ports()
            .into_iter()
            .filter(|p| {
                self.cli_output(*p, &["info", "replication"])
                    .contains("role:slave")
            })
            .collect();
        replicas.len() == self.plan.masters * self.plan.replicas
            && replicas.iter().all(|p| {
                let info = self.cli_output(*p, &["info", "replication"]);
                info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
            })
    }

    /// True when every live master's replicas have acknowledged its whole replication stream,
    /// so a write acknowledged before now survives a failover.
    pub fn replicas_caught_up(&self) -> bool {
        self.masters().iter().all(|m| {
            let info = self.cli_output(*m, &["info", "replication"]);
            let Some(offset) = info.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("master_repl_offset:")?
                    .parse::<u64>()
                    .ok()
            }) else {
                return false;
            };
            // slave0:ip=127.0.0.1,port=7102,state=online,offset=4242,lag=0
            let replicas: Vec<u64> = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| {
                    l.trim()
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("offset=")?.parse().ok())
                })
                .collect();
            replicas.len() == self.plan.replicas && replicas.iter().all(|o| *o == offset)
        })
    }

    /// Ports of the nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|p| {
                self.cli_output(*p, &["info", "replication"])
                    .contains("role:master")
            })
            .collect()
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node's port");
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The path of one of the certificate files.
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A URL for these nodes; with TLS it trusts `ca` and presents the client certificate when
    /// `client`.
    pub fn url_with(&self, ca: &str, client: bool) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let cluster = if self.ports.len() > 1 { "+cluster" } else { "" };
        if !self.plan.tls {
            return format!("redis{cluster}://{}", hosts.join(","));
        }
        let mut url = format!("rediss{cluster}://{}?ca={}", hosts.join(","), self.file(ca));
        if client {
            url += &format!(
                "&cert={}&key={}",
                self.file("client.pem"),
                self.file("client.key")
            );
        }
        url
    }

    /// The URL a well-configured client uses.
    pub fn url(&self) -> String {
        self.url_with("ca.pem", true)
    }
}

impl Drop for RedisNodes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
