//! rustls configurations from [`TlsSettings`]: the PEM files read, checked (a key that does not match its
//! certificate is refused here, not at the first handshake) and turned into a `ServerConfig` or a
//! `ClientConfig` on the `ring` provider. Knows nothing of sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ClientAuth, TlsError, TlsSettings};

/// The server configuration of a listener: `cert` and `key` presented to clients, client certificates
/// asked for per `client_auth` and verified against `ca`, ALPN `http/1.1`.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = own_paths(settings, "a listener presents a certificate")?;
    let certs = read_certificates(cert_path, "certificate")?;
    let key = read_key(key_path)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let builder = match settings.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let ca = settings.ca.as_deref().ok_or(TlsError::MissingSetting {
                setting: "ca",
                why: "client certificates are verified against it",
            })?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider());
            let verifier = if settings.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|error| TlsError::Config(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|source| key_error(cert_path, key_path, source))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration of outbound connections: servers verified against `ca`, and `cert` with
/// `key` presented as the client certificate when both are given. No ALPN is offered.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = settings.ca.as_deref().ok_or(TlsError::MissingSetting {
        setting: "ca",
        why: "servers' certificates are verified against it",
    })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_root_certificates(read_roots(ca)?);
    let config = match (&settings.cert, &settings.key) {
        (None, None) => builder.with_no_client_auth(),
        _ => {
            let (cert_path, key_path) = own_paths(settings, "a client certificate needs both")?;
            let certs = read_certificates(cert_path, "certificate")?;
            let key = read_key(key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| key_error(cert_path, key_path, source))?
        }
    };
    Ok(Arc::new(config))
}

/// The one crypto provider: `ring`.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `cert` and `key`, both required.
fn own_paths<'a>(settings: &'a TlsSettings, why: &'static str) -> Result<(&'a Path, &'a Path), TlsError> {
    let cert = settings.cert.as_deref().ok_or(TlsError::MissingSetting { setting: "cert", why })?;
    let key = settings.key.as_deref().ok_or(TlsError::MissingSetting { setting: "key", why })?;
    Ok((cert, key))
}

/// A file's bytes, or an error naming it.
fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile { what, path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file, at least one.
pub(super) fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::NotPem { what, path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_path_buf() },
        source => TlsError::NotPem { what: "private key", path: path.to_path_buf(), source },
    })
}

/// The trust anchors of a CA bundle.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::BadCa { path: path.to_path_buf(), source })?;
    }
    Ok(roots)
}

/// rustls's refusal of a certificate and key, a mismatch named as such.
fn key_error(cert: &Path, key: &Path, source: rustls::Error) -> TlsError {
    let (cert, key): (PathBuf, PathBuf) = (cert.to_path_buf(), key.to_path_buf());
    match source {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch { cert, key },
        source => TlsError::BadCertificateOrKey { cert, key, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_a_key_that_is_not_pem_and_a_foreign_key_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let node = super::super::generate(dir.path(), "node-a").unwrap();
        let other = super::super::generate(dir.path(), "node-b").unwrap();
        let error = |settings: &TlsSettings| server_config(settings).unwrap_err().to_string();
        let missing = dir.path().join("missing.pem");
        let settings = TlsSettings { cert: Some(missing.clone()), ..node.settings(ClientAuth::Off) };
        assert_eq!(
            error(&settings),
            format!(
                "cannot read the certificate file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let not_pem = dir.path().join("not-pem.key");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let settings = TlsSettings { key: Some(not_pem.clone()), ..node.settings(ClientAuth::Off) };
        assert_eq!(
            error(&settings),
            format!("{} holds no private key (no -----BEGIN PRIVATE KEY----- block)", not_pem.display())
        );
        std::fs::write(&not_pem, "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(
            error(&settings).starts_with(&format!("{} is not a PEM private key file", not_pem.display()))
        );
        let settings = TlsSettings { key: Some(other.key.clone()), ..node.settings(ClientAuth::Off) };
        assert_eq!(
            error(&settings),
            format!("the key {} does not match the certificate {}", other.key.display(), node.cert.display())
        );
        let settings = TlsSettings { cert: Some(node.key.clone()), ..node.settings(ClientAuth::Off) };
        assert_eq!(
            error(&settings),
            format!("{} holds no certificate (no -----BEGIN CERTIFICATE----- block)", node.key.display())
        );
        let settings = TlsSettings { ca: None, ..node.settings(ClientAuth::Required) };
        assert_eq!(error(&settings), "TLS needs ca: client certificates are verified against it");
        assert!(server_config(&node.settings(ClientAuth::Required)).is_ok());
        assert!(client_config(&node.settings(ClientAuth::Off)).is_ok());
        assert_eq!(
            client_config(&TlsSettings::default()).unwrap_err().to_string(),
            "TLS needs ca: servers' certificates are verified against it"
        );
    }
}
