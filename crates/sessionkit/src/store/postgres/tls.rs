//! TLS of a [`PostgresStore`](super::PostgresStore): the libpq `sslmode` and `sslrootcert` URL
//! parameters, turned into a connector for the pool.
//!
//! | `sslmode` | connection | server certificate |
//! | --- | --- | --- |
//! | absent, `disable` | plain text | — |
//! | `allow`, `prefer` | TLS if the server offers it, else plain text | not checked |
//! | `require` | TLS or no connection | not checked (checked as `verify-ca` when `sslrootcert` is given) |
//! | `verify-ca` | TLS or no connection | signed by `sslrootcert` (default: the system's trust store) |
//! | `verify-full` | TLS or no connection | as `verify-ca`, and issued for the host connected to |
//!
//! These are libpq's meanings, with one difference: without `sslmode` the connection is plain
//! text, where libpq would try TLS (`prefer`). Only `verify-full` defends against an attacker on
//! the network path; use it for anything not on loopback. Without the `postgres-tls` feature
//! every mode that needs TLS is a configuration error naming the feature, never plain text.

use deadpool_postgres::{Manager, ManagerConfig};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::error::{Error, Result};

/// How the connection is secured, parsed from `sslmode` and `sslrootcert`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tls {
    /// Plain text.
    Off,
    /// TLS when offered (`allow`, `prefer`), unverified.
    Opportunistic,
    /// TLS required; the certificate is checked per `verify` against `roots`.
    Required {
        verify: Verify,
        /// PEM bundle of trusted roots (`sslrootcert`); `None`: the system's trust store.
        roots: Option<String>,
    },
}

/// What a required TLS connection checks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing (libpq `require`): encryption against passive listeners only.
    Nothing,
    /// The chain up to a trusted root, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

impl Tls {
    /// Parses the URL's `sslmode` and `sslrootcert` values.
    pub(super) fn from_params(sslmode: Option<&str>, rootcert: Option<String>) -> Result<Self> {
        let tls = match sslmode.unwrap_or("disable") {
            "disable" => Tls::Off,
            "allow" | "prefer" => Tls::Opportunistic,
            "require" => Tls::Required {
                verify: if rootcert.is_some() {
                    Verify::Chain
                } else {
                    Verify::Nothing
                },
                roots: rootcert.clone(),
            },
            "verify-ca" => Tls::Required {
                verify: Verify::Chain,
                roots: rootcert.clone(),
            },
            "verify-full" => Tls::Required {
                verify: Verify::Full,
                roots: rootcert.clone(),
            },
            other => {
                return Err(Error::Config(format!(
                    "postgres URL: unknown sslmode {other:?} (expected disable, allow, prefer, \
                     require, verify-ca or verify-full)"
                )))
            }
        };
        if rootcert.is_some() && !matches!(tls, Tls::Required { .. }) {
            return Err(Error::Config(
                "postgres URL: sslrootcert needs sslmode=require, verify-ca or verify-full".into(),
            ));
        }
        Ok(tls)
    }

    /// The pool's connection manager for `pg`, with this TLS setting.
    pub(super) fn manager(
        &self,
        mut pg: tokio_postgres::Config,
        mc: ManagerConfig,
    ) -> Result<Manager> {
        match self {
            Tls::Off => {
                pg.ssl_mode(SslMode::Disable);
                Ok(Manager::from_config(pg, NoTls, mc))
            }
            Tls::Opportunistic => {
                pg.ssl_mode(SslMode::Prefer);
                Ok(Manager::from_config(
                    pg,
                    connector(Verify::Nothing, None)?,
                    mc,
                ))
            }
            Tls::Required { verify, roots } => {
                pg.ssl_mode(SslMode::Require);
                Ok(Manager::from_config(
                    pg,
                    connector(*verify, roots.as_deref())?,
                    mc,
                ))
            }
        }
    }
}

#[cfg(not(feature = "postgres-tls"))]
fn connector(_: Verify, _: Option<&str>) -> Result<NoTls> {
    Err(Error::Config(
        "postgres TLS (sslmode other than disable, sslrootcert) needs sessionkit's \
         `postgres-tls` feature"
            .into(),
    ))
}

#[cfg(feature = "postgres-tls")]
fn connector(
    verify: Verify,
    roots: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        checked::client_config(verify, roots)?,
    ))
}

#[cfg(feature = "postgres-tls")]
mod checked {
    //! The rustls client configurations behind each [`Verify`] level.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };

    use super::Verify;
    use crate::error::{Error, Result};

    /// The trusted roots: the PEM bundle at `path`, or the system's trust store.
    fn roots(path: Option<&str>) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match path {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::Config(format!(
                            "postgres URL: cannot read sslrootcert {path:?}: {e}"
                        ))
                    })?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::Config(format!(
                        "postgres URL: sslrootcert {path:?} holds no usable certificate"
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
            }
        }
        Ok(store)
    }

    pub(super) fn client_config(verify: Verify, roots_path: Option<&str>) -> Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("postgres TLS: {e}")))?;
        if verify == Verify::Full {
            return Ok(builder
                .with_root_certificates(roots(roots_path)?)
                .with_no_client_auth());
        }
        let chain = match verify {
            Verify::Chain => Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(roots_path)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| Error::Config(format!("postgres TLS: {e}")))?,
            ),
            _ => None,
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Partial { chain, provider }))
            .with_no_client_auth())
    }

    /// The checks below `verify-full`: with `chain` (`verify-ca`) the full WebPKI check except
    /// that a certificate for another name passes; without (libpq's `require` and `prefer`) any
    /// certificate. Either way the handshake itself is verified: the server proves it holds the
    /// key of the certificate it sent.
    #[derive(Debug)]
    struct Partial {
        chain: Option<Arc<WebPkiServerVerifier>>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Partial {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            let Some(chain) = &self.chain else {
                return Ok(ServerCertVerified::assertion());
            };
            match chain.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_parse_like_libpq() {
        let t = |m: Option<&str>, r: Option<&str>| Tls::from_params(m, r.map(str::to_owned));
        assert_eq!(t(None, None).unwrap(), Tls::Off);
        assert_eq!(t(Some("disable"), None).unwrap(), Tls::Off);
        assert_eq!(t(Some("prefer"), None).unwrap(), Tls::Opportunistic);
        assert_eq!(
            t(Some("require"), None).unwrap(),
            Tls::Required {
                verify: Verify::Nothing,
                roots: None
            }
        );
        // libpq: require with a root certificate behaves as verify-ca.
        assert_eq!(
            t(Some("require"), Some("ca.pem")).unwrap(),
            Tls::Required {
                verify: Verify::Chain,
                roots: Some("ca.pem".into())
            }
        );
        assert_eq!(
            t(Some("verify-full"), None).unwrap(),
            Tls::Required {
                verify: Verify::Full,
                roots: None
            }
        );
        for bad in [
            t(Some("verify_full"), None),
            t(None, Some("ca.pem")),
            t(Some("prefer"), Some("ca.pem")),
        ] {
            assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
        }
    }

    /// Built without TLS, a mode that needs it is refused (naming the feature), never plain.
    #[cfg(not(feature = "postgres-tls"))]
    #[test]
    fn tls_modes_need_the_feature() {
        let pg = tokio_postgres::Config::new();
        let mc = || ManagerConfig::default();
        assert!(Tls::Off.manager(pg.clone(), mc()).is_ok());
        for mode in ["prefer", "require", "verify-full"] {
            let tls = Tls::from_params(Some(mode), None).unwrap();
            match tls.manager(pg.clone(), mc()) {
                Err(Error::Config(m)) => assert!(m.contains("postgres-tls"), "{m}"),
                other => panic!("{mode}: {:?}", other.map(|_| ())),
            }
        }
    }
}
