//! A Device Bound Session Credentials client written from the W3C editor's draft
//! (`w3c/webappsec-dbsc`, the `Secure-Session-*` headers): what a browser does, over raw
//! HTTP/1.1, with its own device key (P-256 by default, RSA for RS256) and JWS signing through
//! ring. It shares no code with the library's verifier.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::{raw, Resp};

/// The session cookie's and the bound cookie's names in the demo (`__Host-` prefixed).
pub const SESSION_COOKIE: &str = "__Host-id";
pub const BOUND_COOKIE: &str = "__Host-dbsc";

/// A device key: what the browser would keep in its TPM.
pub enum DeviceKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl DeviceKey {
    /// A fresh P-256 key.
    pub fn p256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    /// A fresh 2048-bit RSA key (ring cannot generate RSA keys; `openssl` does), or `None`
    /// when there is no `openssl` on the machine.
    pub fn rsa() -> Option<Self> {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-outform",
                "DER",
            ])
            .output()
            .ok()?;
        out.status.success().then_some(())?;
        Some(Self::Rsa(RsaKeyPair::from_pkcs8(&out.stdout).ok()?))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ec(_) => "ES256",
            Self::Rsa(_) => "RS256",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match self {
            Self::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-256", "x": b(&p[1..33]), "y": b(&p[33..65]) })
            }
            Self::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({ "kty": "RSA", "n": b(&c.n), "e": b(&c.e) })
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// A compact JWS of `header` and `payload` signed with this key.
    pub fn jws(&self, header: &Value, payload: &Value) -> String {
        let b = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b(header), b(payload));
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A DBSC proof: `typ: dbsc+jwt`, the challenge as `jti`, `aud` the URL it goes to, the
    /// public key as `key`, and for refreshes the session identifier as `sub`.
    pub fn proof(&self, aud: &str, challenge: &str, sub: Option<&str>) -> String {
        self.proof_claiming(aud, challenge, sub, self.jwk())
    }

    /// A proof as Chromium makes it (2026 releases): the key, if any, in the JWS header's
    /// `jwk`, and a payload of `jti` alone (no `aud`, `iat`, `sub` or `key`).
    pub fn chromium_proof(&self, challenge: &str, with_key: bool) -> String {
        let mut header = json!({ "alg": self.alg(), "typ": "dbsc+jwt" });
        if with_key {
            header["jwk"] = self.jwk();
        }
        self.jws(&header, &json!({ "jti": challenge }))
    }

    /// A proof signed with this key that names `key` as its public key (a key swap).
    pub fn proof_claiming(
        &self,
        aud: &str,
        challenge: &str,
        sub: Option<&str>,
        key: Value,
    ) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut payload = json!({ "aud": aud, "jti": challenge, "iat": iat, "key": key });
        if let Some(sub) = sub {
            payload["sub"] = json!(sub);
        }
        self.jws(&json!({ "alg": self.alg(), "typ": "dbsc+jwt" }), &payload)
    }
}

/// An `sf-string` header value.
pub fn sf_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The string of an `sf-string` item with parameters, and the parameter `name`'s string.
fn sf_item_param(value: &str, name: &str) -> (String, Option<String>) {
    let mut parts = value.split(';');
    let item = parts
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_owned();
    let param = parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_owned())
    });
    (item, param)
}

/// A `Secure-Session-Registration` header: the algorithms, the path and the challenge.
#[derive(Debug)]
pub struct Registration {
    pub algorithms: Vec<String>,
    pub path: String,
    pub challenge: String,
}

impl Registration {
    pub fn parse(value: &str) -> Registration {
        let (list, params) = value.split_once(')').expect("an inner list");
        let algorithms = list
            .trim_start_matches('(')
            .split(' ')
            .map(str::to_owned)
            .collect();
        let param = |name: &str| {
            params
                .split(';')
                .find_map(|p| {
                    let (k, v) = p.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_owned())
                })
                .unwrap_or_else(|| panic!("no {name} in {value}"))
        };
        Registration {
            algorithms,
            path: param("path"),
            challenge: param("challenge"),
        }
    }
}

/// The value a response sets for cookie `name`, if it sets it.
pub fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.headers_named("set-cookie").into_iter().find_map(|line| {
        let (n, rest) = line.split_once('=')?;
        (n == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
    })
}

/// The URL a proof for `path` on the demo names as its audience: the request's Host header
/// is `127.0.0.1` (the test client's), and the demo runs over plain HTTP.
pub fn aud(path: &str) -> String {
    format!("http://127.0.0.1{path}")
}

/// A browser as far as DBSC is concerned: its cookies, its device key and what the server
/// told it (the DBSC session identifier, the refresh URL, the cached challenge).
pub struct Browser {
    pub addr: SocketAddr,
    pub session: String,
    pub bound: Option<String>,
    pub key: DeviceKey,
    pub dbsc_id: Option<String>,
    pub refresh_path: Option<String>,
    pub challenge: Option<String>,
    /// Make proofs as Chromium does rather than as the draft describes them.
    pub chromium_layout: bool,
}

impl Browser {
    pub fn new(addr: SocketAddr, key: DeviceKey) -> Browser {
        Browser {
            addr,
            session: String::new(),
            bound: None,
            key,
            dbsc_id: None,
            refresh_path: None,
            challenge: None,
            chromium_layout: false,
        }
    }

    /// The `Cookie` header line of this browser.
    pub fn cookie_line(&self) -> String {
        let mut line = format!("Cookie: {SESSION_COOKIE}={}", self.session);
        if let Some(b) = &self.bound {
            line.push_str(&format!("; {BOUND_COOKIE}={b}"));
        }
        line
    }

    /// Sends a request with this browser's cookies and `extra` header lines; takes any
    /// session or bound cookie the response sets (a removal of the session cookie included).
    pub async fn send(&mut self, method: &str, path: &str, extra: &[&str], body: &str) -> Resp {
        let cookie = self.cookie_line();
        let mut lines = vec![cookie.as_str()];
        lines.extend_from_slice(extra);
        let r = raw(
            self.addr,
            &sessionkit_http1::request(method, path, None, &lines, body),
        )
        .await
        .expect("request");
        if let Some(s) = set_cookie(&r, SESSION_COOKIE) {
            self.session = s;
        }
        if let Some(b) = set_cookie(&r, BOUND_COOKIE) {
            self.bound = Some(b);
        }
        if let Some(c) = r.header("secure-session-challenge") {
            let (challenge, id) = sf_item_param(c, "id");
            if id.is_none() || id == self.dbsc_id {
                self.challenge = Some(challenge);
            }
        }
        r
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, &[], "").await
    }

    /// Visits, signs in as `user` and registers the device key as the login response asks.
    /// Returns the registration response.
    pub async fn sign_in_and_register(&mut self, user: &str) -> Resp {
        let first = self.get("/count").await;
        assert_eq!(first.status, 200);
        let csrf = first.header("x-csrf-token").unwrap().to_owned();
        let login = self
            .send(
                "POST",
                "/login",
                &[],
                &format!("username={user}&csrf_token={csrf}"),
            )
            .await;
        assert!(matches!(login.status, 200 | 303), "login: {}", login.status);
        let header = login
            .header("secure-session-registration")
            .expect("the login response asks for a registration");
        let reg = Registration::parse(header);
        assert!(
            reg.algorithms.iter().any(|a| a == self.key.alg()),
            "{reg:?}"
        );
        self.register(&reg).await
    }

    /// Registers the device key as `reg` asks; takes the session instructions.
    pub async fn register(&mut self, reg: &Registration) -> Resp {
        let proof = match self.chromium_layout {
            true => self.key.chromium_proof(&reg.challenge, true),
            false => self.key.proof(&aud(&reg.path), &reg.challenge, None),
        };
        let header = format!("Secure-Session-Response: {}", sf_string(&proof));
        let r = self.send("POST", &reg.path, &[&header], "").await;
        if r.status == 200 {
            let instructions: Value = serde_json::from_str(&r.body).expect("instructions JSON");
            self.dbsc_id = instructions["session_identifier"]
                .as_str()
                .map(str::to_owned);
            self.refresh_path = instructions["refresh_url"].as_str().map(str::to_owned);
            // The challenge that came with it belongs to the session just named.
            if let Some(c) = r.header("secure-session-challenge") {
                self.challenge = Some(sf_item_param(c, "id").0);
            }
        }
        r
    }

    /// One refresh request as the draft's "send a request" algorithm makes it: with a proof
    /// over the cached challenge if there is one.
    pub async fn refresh_once(&mut self) -> Resp {
        let path = self.refresh_path.clone().expect("registered");
        let id = self.dbsc_id.clone().expect("registered");
        let id_line = format!("Sec-Secure-Session-Id: {}", sf_string(&id));
        match self.challenge.take() {
            None => self.send("POST", &path, &[&id_line], "").await,
            Some(challenge) => {
                let proof = match self.chromium_layout {
                    true => self.key.chromium_proof(&challenge, false),
                    false => self.key.proof(&aud(&path), &challenge, Some(&id)),
                };
                let proof_line = format!("Secure-Session-Response: {}", sf_string(&proof));
                self.send("POST", &path, &[&id_line, &proof_line], "").await
            }
        }
    }

    /// A full refresh: on 403 the request is made again with the challenge it brought.
    pub async fn refresh(&mut self) -> Resp {
        let mut r = self.refresh_once().await;
        for _ in 0..2 {
            if r.status != 403 {
                break;
            }
            r = self.refresh_once().await;
        }
        r
    }
}
