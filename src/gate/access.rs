//! The gate's credentials and the TLS configurations built from them.
//!
//! Owns [`GateAccess`] (a 32-byte token, a self-signed certificate and its key, the
//! certificate's SHA-256 pin), its one sealed file in the daemon's data directory, the client's
//! TLS configuration that accepts exactly the pinned certificate (no CA, no name check) and the
//! gate's server configuration (TLS 1.3 only). It must not print the token or the key: both
//! leave only as [`Secret`]s, `Debug` is redacted, errors name files, never values.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use sha2::Digest;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};
use zeroize::Zeroizing;

use super::protocol::TOKEN_LEN;
use super::GateError;
use crate::secret::Secret;
use crate::store::seal::Keyring;

/// The file's name in the daemon's data directory (`<data_dir>/gate.sealed`).
pub const FILE_NAME: &str = "gate.sealed";
/// The associated data the sealed file is bound to.
const SEAL_AD: &str = "gate";
/// The name in the gate's certificate (the client checks the pin, not the name).
pub const CERT_NAME: &str = "nexus-gate";

/// What a nexus daemon needs to reach its gates and what a gate needs to serve: a token, a
/// certificate with its key, and the certificate's pin. Cheap to share behind an `Arc`.
pub struct GateAccess {
    token: Zeroizing<[u8; TOKEN_LEN]>,
    cert_pem: String,
    key_pem: Secret,
    cert_der: CertificateDer<'static>,
    pin: [u8; 32],
    client: OnceLock<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for GateAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GateAccess(cert sha256 {}, token and key <redacted>)",
            self.fingerprint()
        )
    }
}

/// The sealed file's plaintext.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    token: String,
    cert_pem: String,
    key_pem: String,
}

impl Drop for Stored {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
        self.key_pem.zeroize();
    }
}

impl GateAccess {
    /// Fresh credentials: a token from the OS CSPRNG and a new self-signed certificate.
    pub fn generate() -> Result<Self, GateError> {
        let mut token = Zeroizing::new([0u8; TOKEN_LEN]);
        getrandom::fill(token.as_mut()).map_err(|e| GateError::Credentials(e.to_string()))?;
        let ck = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])
            .map_err(|e| GateError::Credentials(format!("certificate: {e}")))?;
        let key_pem = Zeroizing::new(ck.signing_key.serialize_pem());
        Self::from_parts(
            Zeroizing::new(hex::encode(*token)).as_bytes(),
            ck.cert.pem().as_bytes(),
            key_pem.as_bytes(),
        )
    }

    /// Credentials from the three files a gate is given: the token file (64 hex digits, a
    /// trailing newline allowed), the certificate PEM and the key PEM. Errors never quote them.
    pub fn from_parts(
        token_file: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, GateError> {
        let text = std::str::from_utf8(token_file)
            .map_err(|_| GateError::Credentials("the token is not text".into()))?
            .trim();
        let mut token = Zeroizing::new([0u8; TOKEN_LEN]);
        if text.len() != TOKEN_LEN * 2 || hex::decode_to_slice(text, token.as_mut()).is_err() {
            return Err(GateError::Credentials(format!(
                "the token is not {} hex digits",
                TOKEN_LEN * 2
            )));
        }
        let cert_der = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| GateError::Credentials(format!("certificate PEM: {e}")))?;
        // The key's parse error is not quoted: it could echo key bytes.
        PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| GateError::Credentials("no usable private key in the key PEM".into()))?;
        let key_pem = std::str::from_utf8(key_pem)
            .map_err(|_| GateError::Credentials("the key PEM is not text".into()))?;
        let cert_pem = std::str::from_utf8(cert_pem)
            .map_err(|_| GateError::Credentials("the certificate PEM is not text".into()))?;
        let pin = sha2::Sha256::digest(cert_der.as_ref()).into();
        Ok(Self {
            token,
            cert_pem: cert_pem.to_owned(),
            key_pem: Secret::new(key_pem),
            cert_der,
            pin,
            client: OnceLock::new(),
        })
    }

    /// The credentials sealed in `path` (under `keyring`, bound to `"gate"`), created there
    /// (mode 0600, written atomically) when the file does not exist. A file others can read is
    /// refused; one sealed under a previous key is sealed again under the current one.
    pub fn load_or_create(path: &Path, keyring: &Keyring) -> Result<Self, GateError> {
        let io = |e: std::io::Error| GateError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(GateError::File {
                        path: path.to_owned(),
                        reason: "not a regular file".into(),
                    });
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(GateError::File {
                        path: path.to_owned(),
                        reason: format!(
                            "can be read or written by other users (mode {mode:04o}): run `chmod 600 {}`",
                            path.display()
                        ),
                    });
                }
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
                let plain = keyring
                    .open(text.trim(), SEAL_AD)
                    .map_err(|e| GateError::File {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                let stored: Stored =
                    serde_json::from_slice(&plain).map_err(|_| GateError::File {
                        path: path.to_owned(),
                        reason: "the sealed credentials are not in the expected form".into(),
                    })?;
                let access = Self::from_parts(
                    stored.token.as_bytes(),
                    stored.cert_pem.as_bytes(),
                    stored.key_pem.as_bytes(),
                )?;
                if keyring.needs_reseal(text.trim()) {
                    access.save(path, keyring)?;
                }
                Ok(access)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let access = Self::generate()?;
                access.save(path, keyring)?;
                tracing::info!(path = %path.display(), cert_sha256 = %access.fingerprint(),
                    "generated the gates' credentials");
                Ok(access)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals these credentials into `path`: a temporary file of mode 0600 beside it, renamed.
    fn save(&self, path: &Path, keyring: &Keyring) -> Result<(), GateError> {
        let io = |e: std::io::Error| GateError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let stored = Stored {
            token: hex::encode(*self.token),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.expose().to_owned(),
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&stored).map_err(|e| GateError::Credentials(e.to_string()))?,
        );
        let sealed = keyring.seal(&plain, SEAL_AD).map_err(|e| GateError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(sealed.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The token file a gate is given (64 hex digits and a newline).
    pub fn token_file(&self) -> Secret {
        Secret::new(format!(
            "{}\n",
            Zeroizing::new(hex::encode(*self.token)).as_str()
        ))
    }

    /// The gate's certificate, PEM.
    pub fn cert_pem(&self) -> Secret {
        Secret::new(self.cert_pem.clone())
    }

    /// The gate's private key, PEM.
    pub fn key_pem(&self) -> Secret {
        self.key_pem.clone()
    }

    /// Hex SHA-256 of the certificate's DER: the pin, safe to log.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.pin)
    }

    pub(crate) fn token(&self) -> &[u8; TOKEN_LEN] {
        &self.token
    }

    /// The client configuration: TLS 1.3, accepting exactly the pinned certificate.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, GateError> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinVerifier {
            pin: self.pin,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| GateError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(self.client.get_or_init(|| Arc::new(config)).clone())
    }

    /// The gate's server configuration: TLS 1.3 only, this certificate and key.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, GateError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
            .map_err(|_| GateError::Credentials("no usable private key in the key PEM".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| GateError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .map_err(|e| GateError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// The server name a client presents (the verifier ignores it).
    pub(crate) fn server_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(CERT_NAME)
                .expect("a constant, valid DNS name")
                .to_owned(),
        )
    }
}

/// Accepts exactly one certificate: the one whose DER hashes to the pin. The handshake
/// signature is still verified with that certificate's key, so only its holder passes.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if super::constant_time_eq(&got, &self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only: a 1.2 handshake never gets this far.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nexus-gate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn credentials_persist_sealed_and_never_print() {
        let dir = tmp("persist");
        let path = dir.join("gate.sealed");
        let ring = Keyring::generate().unwrap();
        let a = GateAccess::load_or_create(&path, &ring).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(on_disk.starts_with("sealed:v1:"));
        let token = a.token_file();
        assert!(!on_disk.contains(token.expose().trim()));
        assert!(!on_disk.contains("PRIVATE KEY"));
        let b = GateAccess::load_or_create(&path, &ring).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.token_file(), b.token_file());
        assert_eq!(a.fingerprint().len(), 64);
        let shown = format!("{a:?}");
        assert!(shown.contains(&a.fingerprint()), "{shown}");
        assert!(!shown.contains(token.expose().trim()), "{shown}");
        assert_eq!(format!("{:?}", a.key_pem()), "Secret(<redacted>)");
        // Another keyring does not open it; a readable file is refused.
        let other = Keyring::generate().unwrap();
        assert!(GateAccess::load_or_create(&path, &other).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = GateAccess::load_or_create(&path, &ring).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // A rotated keyring opens it and seals it again under the new key.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let rotated = ring
            .rotated_to(crate::store::seal::SealKey::generate().unwrap())
            .unwrap();
        let c = GateAccess::load_or_create(&path, &rotated).unwrap();
        assert_eq!(c.fingerprint(), a.fingerprint());
        let resealed = std::fs::read_to_string(&path).unwrap();
        assert!(!rotated.needs_reseal(resealed.trim()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parts_are_checked() {
        let a = GateAccess::generate().unwrap();
        let cert = a.cert_pem();
        let key = a.key_pem();
        let ok = GateAccess::from_parts(
            a.token_file().expose().as_bytes(),
            cert.expose().as_bytes(),
            key.expose().as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.fingerprint(), a.fingerprint());
        for bad_token in [&b"abc"[..], &[b'g'; 64][..], &[0xff; 64][..]] {
            assert!(GateAccess::from_parts(
                bad_token,
                cert.expose().as_bytes(),
                key.expose().as_bytes()
            )
            .is_err());
        }
        let err = GateAccess::from_parts(
            a.token_file().expose().as_bytes(),
            cert.expose().as_bytes(),
            b"junk",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("junk"));
    }

    #[test]
    fn the_pin_accepts_exactly_its_certificate() {
        let a = GateAccess::generate().unwrap();
        let b = GateAccess::generate().unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let v = PinVerifier {
            pin: a.pin,
            provider,
        };
        let name = GateAccess::server_name();
        let now = UnixTime::now();
        assert!(v
            .verify_server_cert(&a.cert_der, &[], &name, &[], now)
            .is_ok());
        assert!(v
            .verify_server_cert(&b.cert_der, &[], &name, &[], now)
            .is_err());
        // A chain that carries the pinned certificate second does not pass either.
        assert!(v
            .verify_server_cert(
                &b.cert_der,
                std::slice::from_ref(&a.cert_der),
                &name,
                &[],
                now
            )
            .is_err());
    }
}
