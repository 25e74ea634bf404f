//! Arbitrary bytes as the request's token header(s) (Cookie by default; also the `__Host-`
//! cookie, a named header and `Authorization: Bearer`), through `Manager::start`, a request's
//! worth of session calls on a `MemoryStore`, and `Manager::finish`.
//!
//! Input: `[config, ops, header bytes...]`; header lines are split on `\n`, and `$ID` is
//! replaced by the token of a session that exists, so the fuzzer also drives the load / write /
//! rotate / destroy paths. Checks: no panic; only the existing session can be resolved; a token
//! handed out in the response works on the next request; no token ever reaches the logs.
#![no_main]

use http::HeaderName;
use libfuzzer_sys::fuzz_target;
use sessionkit::{Config, Manager, SameSite, Transport};
use sessionkit_fuzz as fz;

fn config(mode: u8) -> Config {
    let mut c = Config::default();
    match mode & 3 {
        0 => {}
        1 => {
            c.cookie.name = "sid".into();
            c.cookie.host_prefix = true;
            c.cookie.same_site = SameSite::Strict;
            c.cookie.persistent = false;
        }
        2 => c.transport = Transport::Header(HeaderName::from_static("x-session-token")),
        _ => {
            c.transport = Transport::Bearer {
                response_header: HeaderName::from_static("x-session-token"),
            }
        }
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let [mode, ops, rest @ ..] = data else { return };
    fz::start_logs();
    let manager = Manager::new(fz::memory_store(), config(*mode)).expect("valid config");
    fz::block_on(async {
        let live = fz::new_session(&manager).await;
        let live_key = manager.key_of(&live).expect("issued tokens parse");
        let input = fz::substitute(rest, &[(b"$ID", live.as_bytes())]);
        let headers = fz::headers_from(&manager.config().transport, &input);

        let session = manager.start(&headers);
        if let Ok(Some(key)) = session.key().await {
            assert_eq!(key, live_key, "resolved a session that was never issued");
        }
        let csrf = String::from_utf8_lossy(&input);
        let out = fz::exercise(&manager, &session, *ops, &csrf).await;
        let mut secrets = vec![live.clone()];

        if let Some(token) = fz::issued_token(&manager, &out).filter(|t| !t.is_empty()) {
            // Whatever we hand out must come back as the same, stored session.
            let next = manager.start(&fz::present(&manager, &token));
            assert!(
                next.key().await.expect("memory store").is_some(),
                "issued token {token:?} does not resolve"
            );
            secrets.push(token);
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        fz::assert_not_logged(&refs);
    });
});
