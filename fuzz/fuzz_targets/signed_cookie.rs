//! Signed tokens (`<id>.<mac>`, HMAC-SHA256) under key rotation: the manager signs with a new key
//! and still accepts an old one. Arbitrary bytes become Cookie header(s) (or, with the low bit of
//! the first byte set, the value of a single `id=` cookie), then a request's worth of session
//! calls on a `MemoryStore`.
//!
//! Placeholders: `$A` = a token signed with the old key, `$B` = one signed with the current key,
//! `$I` = B's bare ID (unsigned), `$M` = B's MAC. Checks: no panic; a token only ever verifies
//! if it is byte for byte one the test produced (a verified but unknown ID would mean a forged
//! MAC, reported as `unknown_id`); bad signatures are reported once per request, however many
//! forged cookies it carries; no token reaches the logs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit::{Config, Manager, SigningKey};
use sessionkit_fuzz as fz;

fn key(byte: u8) -> SigningKey {
    SigningKey::new(vec![byte; 32]).expect("32-byte key")
}

/// The values a server would see under the cookie name `id`, parsed independently of the
/// library: `;`-separated pairs, trimmed, optional surrounding quotes removed.
fn id_values(headers: &http::HeaderMap) -> Vec<Vec<u8>> {
    let trim = |s: &[u8]| -> Vec<u8> {
        let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
        let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
        match (start, end) {
            (Some(a), Some(b)) => s[a..=b].to_vec(),
            _ => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for h in headers.get_all(http::header::COOKIE) {
        for pair in h.as_bytes().split(|b| *b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != b"id" {
                continue;
            }
            let mut v = trim(&pair[eq + 1..]);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = v[1..v.len() - 1].to_vec();
            }
            out.push(v);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, ops, rest @ ..] = data else { return };
    fz::start_logs();
    let store = fz::memory_store();
    let old_only = Config::builder()
        .signing_keys(vec![key(0x0b)])
        .build()
        .expect("valid config");
    let rotated = Config::builder()
        .signing_keys(vec![key(0x0a), key(0x0b)])
        .build()
        .expect("valid config");
    let signer_old = Manager::new(store.clone(), old_only).expect("valid config");
    let manager = Manager::new(store, rotated).expect("valid config");
    fz::block_on(async {
        let a = fz::new_session(&signer_old).await;
        let b = fz::new_session(&manager).await;
        assert_eq!((a.len(), b.len()), (87, 87), "signed token shape");
        let (b_id, b_mac) = b.split_at(43);
        let b_mac = &b_mac[1..];
        let input = fz::substitute(
            rest,
            &[
                (b"$A", a.as_bytes()),
                (b"$B", b.as_bytes()),
                (b"$I", b_id.as_bytes()),
                (b"$M", b_mac.as_bytes()),
            ],
        );
        let input = if mode & 1 == 1 {
            let mut v = b"id=".to_vec();
            v.extend(input.iter().filter(|c| **c != b'\n'));
            v
        } else {
            input
        };
        let headers = fz::headers_from(&manager.config().transport, &input);

        let session = manager.start(&headers);
        let resolved = session.key().await.expect("memory store");
        if resolved.is_some() {
            let values = id_values(&headers);
            assert!(
                values
                    .iter()
                    .any(|v| v == a.as_bytes() || v == b.as_bytes()),
                "a session resolved from a token the test never produced: {values:?}"
            );
        }
        assert!(
            !fz::logs().contains("unknown_id"),
            "a token with a forged signature verified:\n{}",
            fz::logs()
        );
        assert!(
            fz::logs().matches("bad_signature").count() <= 1,
            "bad signatures are reported once per request"
        );
        let csrf = String::from_utf8_lossy(&input);
        let out = fz::exercise(&manager, &session, *ops, &csrf).await;
        let mut secrets = vec![a.clone(), b.clone(), b_id.to_owned()];
        if let Some(token) = fz::issued_token(&manager, &out).filter(|t| !t.is_empty()) {
            let next = manager.start(&fz::present(&manager, &token));
            assert!(next.key().await.expect("memory store").is_some());
            secrets.push(token);
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        fz::assert_not_logged(&refs);
    });
});
