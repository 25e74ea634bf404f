//! The DBSC proof: a compact JWS (`header.payload.signature`) the browser signs with the
//! session's key, parsed strictly and verified with `ring` (no signature math of our own).
//!
//! Parsing never trusts the token: it is size-limited before anything is decoded, the header
//! must say `typ: dbsc+jwt` and `alg` `ES256` or `RS256` (so `alg: none` and every other
//! algorithm is refused before any key is looked at), and the key a registration proof carries
//! must be of the type its `alg` names. Every failure is a [`ProofError`] whose text says what
//! was wrong, for the refusal's body and the `sessionkit::suspicious` log.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// The largest proof accepted, in bytes: an RS256 proof with a 4096-bit key in its payload
/// is under 3 KiB; anything much larger is not a browser's proof.
pub(crate) const MAX_PROOF: usize = 8 * 1024;

/// The JWS algorithms the draft allows, and the only ones accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    /// ECDSA on P-256 with SHA-256, signature as `r ‖ s` (64 bytes).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 8192 bits.
    Rs256,
}

impl Alg {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The JWS name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// A public key from a JWK, reduced to what verification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// A P-256 point.
    Ec { x: [u8; 32], y: [u8; 32] },
    /// An RSA modulus and exponent (big-endian, as the JWK has them).
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    /// The key of a JWK object: `kty` `EC` with `crv` `P-256`, or `kty` `RSA`.
    pub(crate) fn from_jwk(jwk: &Value) -> Result<Self, ProofError> {
        let jwk = jwk
            .as_object()
            .ok_or(ProofError("the key is not a JWK object"))?;
        let field = |name: &'static str| -> Result<Vec<u8>, ProofError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(ProofError("a JWK member is missing or not a string"))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| ProofError("a JWK member is not base64url"))
        };
        match jwk.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(ProofError("only the P-256 curve is supported"));
                }
                let coord = |v: Vec<u8>| -> Result<[u8; 32], ProofError> {
                    v.try_into()
                        .map_err(|_| ProofError("a P-256 coordinate is not 32 bytes"))
                };
                Ok(Self::Ec {
                    x: coord(field("x")?)?,
                    y: coord(field("y")?)?,
                })
            }
            Some("RSA") => {
                let n = field("n")?;
                let e = field("e")?;
                // ring enforces 2048..=8192 bits at verification; refuse absurd sizes early.
                if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
                    return Err(ProofError("the RSA key size is not supported"));
                }
                Ok(Self::Rsa { n, e })
            }
            _ => Err(ProofError("the JWK kty is neither EC nor RSA")),
        }
    }

    /// The key as a JWK of its required members only, in the order of RFC 7638 (so two
    /// encodings of one key compare equal).
    pub(crate) fn to_jwk(&self) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match self {
            Self::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b(x),
                b(y)
            ),
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b(e), b(n)),
        }
    }

    /// The algorithm this key signs with.
    pub(crate) fn alg(&self) -> Alg {
        match self {
            Self::Ec { .. } => Alg::Es256,
            Self::Rsa { .. } => Alg::Rs256,
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Ec { x, y } => {
                let mut point = [0u8; 65];
                point[0] = 4;
                point[1..33].copy_from_slice(x);
                point[33..].copy_from_slice(y);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Self::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        }
    }
}

/// Why a proof was refused; the text is safe to show (it names no secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProofError(pub(crate) &'static str);

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A proof whose shape is valid and whose signature is not checked yet.
#[derive(Debug)]
pub(crate) struct Unverified {
    alg: Alg,
    /// The key the JWS header carries (`jwk`), if any.
    header_jwk: Option<Value>,
    /// `header.payload`, the bytes the signature covers.
    signing_input: String,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

/// The claims of a verified proof that the endpoints check.
#[derive(Debug)]
pub(crate) struct Proof {
    /// The challenge the proof signs.
    pub(crate) jti: String,
    /// The URL the proof was made for, if it says (the draft asks for it; Chromium, as of
    /// its 2026 releases, sends only `jti`).
    pub(crate) aud: Option<String>,
    /// The DBSC session identifier, if it says (refresh proofs; as `aud`).
    pub(crate) sub: Option<String>,
}

/// Parses a compact JWS as a DBSC proof, without verifying its signature.
pub(crate) fn parse(token: &str) -> Result<Unverified, ProofError> {
    if token.len() > MAX_PROOF {
        return Err(ProofError("the proof is too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError(
            "the proof is not a compact JWS (three dot-separated parts)",
        ));
    };
    let json = |part: &str| -> Result<Map<String, Value>, ProofError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| ProofError("a proof part is not base64url"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(ProofError("a proof part is not a JSON object")),
        }
    };
    let header = json(h)?;
    if header.get("typ").and_then(Value::as_str) != Some("dbsc+jwt") {
        return Err(ProofError("the proof's typ is not dbsc+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .ok_or(ProofError("the proof's alg is not ES256 or RS256"))?;
    // A header that asks for something verification would not do is refused, not ignored.
    if header.contains_key("crit") {
        return Err(ProofError("the proof's header has critical extensions"));
    }
    let claims = json(p)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ProofError("the signature is not base64url"))?;
    if signature.is_empty() {
        return Err(ProofError("the proof is unsigned"));
    }
    Ok(Unverified {
        alg,
        header_jwk: header.get("jwk").cloned(),
        signing_input: format!("{h}.{p}"),
        signature,
        claims,
    })
}

impl Unverified {
    /// The key the proof carries, if any: where the draft puts it (the payload's `key`
    /// claim), where Chromium puts it (the JWS header's `jwk`, RFC 7515 section 4.1.3), or
    /// where earlier drafts did (the payload's `jwk`). A proof that carries two different
    /// keys is refused.
    pub(crate) fn embedded_key(&self) -> Result<Option<PublicKey>, ProofError> {
        let mut found: Option<PublicKey> = None;
        for jwk in [
            self.claims.get("key"),
            self.header_jwk.as_ref(),
            self.claims.get("jwk"),
        ]
        .into_iter()
        .flatten()
        {
            let key = PublicKey::from_jwk(jwk)?;
            match &found {
                Some(other) if *other != key => {
                    return Err(ProofError("the proof carries two different keys"))
                }
                _ => found = Some(key),
            }
        }
        Ok(found)
    }

    /// Verifies the signature with `key` and returns the claims.
    pub(crate) fn verify(self, key: &PublicKey) -> Result<Proof, ProofError> {
        if key.alg() != self.alg {
            return Err(ProofError("the proof's alg does not match the key"));
        }
        if !key.verify(self.signing_input.as_bytes(), &self.signature) {
            return Err(ProofError(
                "the signature does not verify with the session's key",
            ));
        }
        let text = |name: &str| {
            self.claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let jti = text("jti").ok_or(ProofError("the proof has no jti (challenge)"))?;
        Ok(Proof {
            jti,
            aud: text("aud"),
            sub: text("sub"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn public(kp: &EcdsaKeyPair) -> PublicKey {
        let p = kp.public_key().as_ref();
        PublicKey::Ec {
            x: p[1..33].try_into().unwrap(),
            y: p[33..].try_into().unwrap(),
        }
    }

    fn sign(kp: &EcdsaKeyPair, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    const HEADER: &str = r#"{"alg":"ES256","typ":"dbsc+jwt"}"#;

    fn payload(kp: &EcdsaKeyPair) -> String {
        format!(
            r#"{{"aud":"https://e.example/dbsc/register","jti":"c1","iat":1,"key":{}}}"#,
            public(kp).to_jwk()
        )
    }

    #[test]
    fn a_signed_proof_verifies_with_its_key_and_only_with_it() {
        let kp = key_pair();
        let token = sign(&kp, HEADER, &payload(&kp));
        let proof = parse(&token).unwrap();
        let key = proof.embedded_key().unwrap().unwrap();
        assert_eq!(key, public(&kp));
        let claims = proof.verify(&key).unwrap();
        assert_eq!(claims.jti, "c1");
        let other = public(&key_pair());
        assert!(parse(&token).unwrap().verify(&other).is_err());
    }

    #[test]
    fn chromiums_layout_key_in_the_header_and_only_jti_verifies() {
        let kp = key_pair();
        let jwk: Value = serde_json::from_str(&public(&kp).to_jwk()).unwrap();
        let header = serde_json::json!({ "alg": "ES256", "typ": "dbsc+jwt", "jwk": jwk });
        let token = sign(&kp, &header.to_string(), r#"{"jti":"c1"}"#);
        let proof = parse(&token).unwrap();
        let key = proof.embedded_key().unwrap().unwrap();
        let claims = proof.verify(&key).unwrap();
        assert_eq!(
            (claims.jti.as_str(), claims.aud, claims.sub),
            ("c1", None, None)
        );
        // Two different keys in one proof: refused.
        let other: Value = serde_json::from_str(&public(&key_pair()).to_jwk()).unwrap();
        let payload = serde_json::json!({ "jti": "c1", "key": other });
        let token = sign(&kp, &header.to_string(), &payload.to_string());
        assert_eq!(
            parse(&token).unwrap().embedded_key().unwrap_err(),
            ProofError("the proof carries two different keys")
        );
    }

    #[test]
    fn the_jwk_round_trips_through_its_canonical_form() {
        let key = public(&key_pair());
        let again: Value = serde_json::from_str(&key.to_jwk()).unwrap();
        assert_eq!(PublicKey::from_jwk(&again).unwrap(), key);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            &format!("{}.{}.", b64(HEADER.as_bytes()), b64(b"{}")),
            &format!("{}.{}.AAAA", b64(b"[1]"), b64(b"{}")),
            &format!("{}.{}.AAAA", b64(HEADER.as_bytes()), b64(b"not json")),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let kp = key_pair();
        for header in [
            r#"{"alg":"none","typ":"dbsc+jwt"}"#,
            r#"{"alg":"HS256","typ":"dbsc+jwt"}"#,
            r#"{"alg":"ES384","typ":"dbsc+jwt"}"#,
            r#"{"typ":"dbsc+jwt"}"#,
        ] {
            let token = sign(&kp, header, &payload(&kp));
            assert_eq!(
                parse(&token).unwrap_err(),
                ProofError("the proof's alg is not ES256 or RS256"),
                "{header}"
            );
        }
        // `alg: none` with an empty signature, the classic forgery.
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"dbsc+jwt"}"#),
            b64(payload(&kp).as_bytes())
        );
        assert!(parse(&unsigned).is_err());
    }

    #[test]
    fn a_wrong_typ_is_refused() {
        let kp = key_pair();
        for header in [
            r#"{"alg":"ES256","typ":"JWT"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"ES256","typ":"dbsc+jwt","crit":["x"]}"#,
        ] {
            assert!(
                parse(&sign(&kp, header, &payload(&kp))).is_err(),
                "{header}"
            );
        }
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let huge = "a".repeat(MAX_PROOF + 1);
        assert_eq!(
            parse(&huge).unwrap_err(),
            ProofError("the proof is too large")
        );
    }

    #[test]
    fn an_es256_proof_cannot_claim_an_rsa_key_or_a_bad_curve() {
        let kp = key_pair();
        let token = sign(&kp, HEADER, &payload(&kp));
        let rsa = PublicKey::Rsa {
            n: vec![0xc5; 256],
            e: vec![1, 0, 1],
        };
        assert_eq!(
            parse(&token).unwrap().verify(&rsa).unwrap_err(),
            ProofError("the proof's alg does not match the key")
        );
        for jwk in [
            r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
            r#"{"kty":"oct","k":"AA"}"#,
            r#""string""#,
        ] {
            let v: Value = serde_json::from_str(jwk).unwrap();
            assert!(PublicKey::from_jwk(&v).is_err(), "{jwk}");
        }
    }
}
