//! The short-lived bound cookie: proof, without a store round trip of its own, that the
//! request comes from the browser that last answered a challenge of this session.
//!
//! Its value is `base64url(expires ‖ mac)`: the expiry in milliseconds (8 bytes, little
//! endian) and HMAC-SHA256 over a domain label, the DBSC session identifier and the expiry,
//! keyed by the binding's per-session secret (kept in the record, fresh at every
//! registration). It carries nothing about the session ID, and a bound cookie of one session
//! never verifies under another's secret. It is checked against the record the request loads
//! anyway, so it costs a MAC, not a store call.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::{DeviceBinding, Millis};

const LABEL: &[u8] = b"sessionkit dbsc bound cookie v1\0";
const LEN: usize = 8 + 32;

fn mac(binding: &DeviceBinding, expires: Millis) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&binding.secret).expect("any key length");
    mac.update(LABEL);
    mac.update(&(binding.session_id.len() as u32).to_le_bytes());
    mac.update(binding.session_id.as_bytes());
    mac.update(&expires.to_le_bytes());
    mac
}

/// A bound cookie value for `binding` that expires at `expires`.
pub(crate) fn issue(binding: &DeviceBinding, expires: Millis) -> String {
    let mut raw = [0u8; LEN];
    raw[..8].copy_from_slice(&expires.to_le_bytes());
    raw[8..].copy_from_slice(&mac(binding, expires).finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// True if `value` is a bound cookie of `binding` still valid at `now` (with `slack` for the
/// time between the browser's clock and ours).
pub(crate) fn verify(binding: &DeviceBinding, value: &str, now: Millis, slack: Millis) -> bool {
    if value.len() > 64 {
        return false;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(value) else {
        return false;
    };
    let Ok(raw) = <[u8; LEN]>::try_from(raw.as_slice()) else {
        return false;
    };
    let expires = Millis::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    // verify_slice compares in constant time.
    mac(binding, expires).verify_slice(&raw[8..]).is_ok() && expires.saturating_add(slack) > now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(secret: u8) -> DeviceBinding {
        DeviceBinding {
            session_id: "s1".into(),
            jwk: "{}".into(),
            secret: [secret; 32],
            ..Default::default()
        }
    }

    #[test]
    fn verifies_until_it_expires_and_only_for_its_session() {
        let a = binding(1);
        let cookie = issue(&a, 10_000);
        assert!(verify(&a, &cookie, 9_999, 0));
        assert!(!verify(&a, &cookie, 10_000, 0));
        assert!(verify(&a, &cookie, 10_000, 1));
        assert!(!verify(&binding(2), &cookie, 1, 0));
        let mut renamed = a.clone();
        renamed.session_id = "s2".into();
        assert!(!verify(&renamed, &cookie, 1, 0));
    }

    #[test]
    fn a_moved_expiry_or_junk_does_not_verify() {
        let a = binding(1);
        let cookie = issue(&a, 10_000);
        let mut raw = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        raw[..8].copy_from_slice(&20_000i64.to_le_bytes());
        assert!(!verify(&a, &URL_SAFE_NO_PAD.encode(raw), 1, 0));
        for junk in ["", "x", "%%%", &"A".repeat(500)] {
            assert!(!verify(&a, junk, 1, 0));
        }
    }
}
