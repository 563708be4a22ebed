//! TLS for the delegator's listener: the acceptor, from a PEM certificate chain and key.
//!
//! Owns reading and checking the PEM files and the server configuration (ring's provider, the
//! safe protocol versions, ALPN `h2` then `http/1.1`). It must not quote key bytes in an error.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use super::DelegatorError;

/// Builds a TLS acceptor (HTTP/2 and HTTP/1.1 by ALPN) from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_acceptor_from_pem_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<TlsAcceptor, DelegatorError> {
    let read = |what: &'static str, p: &Path| {
        std::fs::read(p).map_err(|e| DelegatorError::TlsFile {
            what,
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cert = read("certificate", cert_path)?;
    let key = read("private key", key_path)?;
    tls_acceptor_from_pem(&cert, &key)
}

/// Like [`tls_acceptor_from_pem_files`], from PEM bytes.
pub fn tls_acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<TlsAcceptor, DelegatorError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| DelegatorError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(DelegatorError::Tls("no certificate in the PEM".into()));
    }
    // The key's parse error is not quoted: it could echo key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| DelegatorError::Tls("no usable private key in the key PEM".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DelegatorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| DelegatorError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_from_rcgen_pem() {
        let ck = rcgen::generate_simple_self_signed(vec!["nexus.test".into()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.signing_key.serialize_pem();
        assert!(tls_acceptor_from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
        assert!(tls_acceptor_from_pem(b"", key.as_bytes()).is_err());
        let Err(err) = tls_acceptor_from_pem(cert.as_bytes(), b"junk") else {
            panic!("a junk key was accepted");
        };
        assert!(!err.to_string().contains("junk"));
    }
}
