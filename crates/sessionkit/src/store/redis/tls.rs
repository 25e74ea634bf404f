//! TLS settings of a [`RedisStore`](super::RedisStore): `rediss://` URLs and their `ca`, `cert`
//! and `key` parameters, turned into the client's certificates.
//!
//! Without the `redis-tls` feature a TLS URL is a configuration error that names the feature,
//! never a silent plain-text connection.

use redis::cluster::ClusterClientBuilder;

use crate::error::{Error, Result};

#[cfg(feature = "redis-tls")]
pub(super) type Certificates = Option<redis::TlsCertificates>;
/// Without TLS support there are never certificates.
#[cfg(not(feature = "redis-tls"))]
pub(super) type Certificates = Option<std::convert::Infallible>;

/// The certificates for a connection: `None` (the system's trust store, or plain text when
/// `tls` is false) unless the URL named a CA bundle or a client certificate.
#[cfg(feature = "redis-tls")]
pub(super) fn certificates(
    url: &str,
    tls: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<Certificates> {
    if !tls {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err(Error::bad_url(
                url,
                "redis URL: ca, cert and key need a TLS URL (rediss:// or rediss+cluster://)",
            ));
        }
        return Ok(None);
    }
    // rustls needs a process-wide crypto provider once more than one is compiled in (another
    // crate of the application may enable aws-lc-rs); install ring unless one is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| {
            Error::bad_url(
                url,
                format!("redis URL: cannot read {what} file {path:?}: {e}"),
            )
        })
    };
    let client_tls = match (cert, key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read("cert", &c)?,
            client_key: read("key", &k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::bad_url(
                url,
                "redis URL: cert and key go together (a client certificate and its key)",
            ))
        }
    };
    let root_cert = ca.map(|p| read("ca", &p)).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

#[cfg(not(feature = "redis-tls"))]
pub(super) fn certificates(
    url: &str,
    tls: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<Certificates> {
    if tls || ca.is_some() || cert.is_some() || key.is_some() {
        return Err(Error::bad_url(
            url,
            "redis TLS (rediss://, ca, cert, key) needs sessionkit's `redis-tls` feature",
        ));
    }
    Ok(None)
}

/// A standalone client for `url` with `certs`.
pub(super) fn client(url: &str, certs: Certificates) -> redis::RedisResult<redis::Client> {
    match certs {
        #[cfg(feature = "redis-tls")]
        Some(certs) => redis::Client::build_with_tls(url, certs),
        #[cfg(not(feature = "redis-tls"))]
        Some(never) => match never {},
        None => redis::Client::open(url),
    }
}

/// `builder` with `certs` (TLS itself follows the nodes' `rediss://` scheme).
pub(super) fn cluster_certs(
    builder: ClusterClientBuilder,
    certs: Certificates,
) -> ClusterClientBuilder {
    match certs {
        #[cfg(feature = "redis-tls")]
        Some(certs) => builder.certs(certs),
        #[cfg(not(feature = "redis-tls"))]
        Some(never) => match never {},
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(r: Result<Certificates>) -> String {
        match r {
            Err(Error::BadUrl { reason, .. }) => reason,
            other => panic!("expected a bad-URL error, got {other:?}"),
        }
    }

    #[test]
    fn plain_urls_take_no_tls_parameters() {
        assert!(certificates("redis://h", false, None, None, None)
            .unwrap()
            .is_none());
        let m = config_error(certificates(
            "redis://h",
            false,
            Some("ca.pem".into()),
            None,
            None,
        ));
        assert!(m.contains("rediss://"), "{m}");
    }

    /// Built without TLS, a TLS URL is refused (naming the feature), never sent in plain text.
    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn tls_urls_need_the_feature() {
        let m = config_error(certificates("rediss://h", true, None, None, None));
        assert!(m.contains("redis-tls"), "{m}");
    }
}
