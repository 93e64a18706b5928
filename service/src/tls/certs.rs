//! Certificates for local deployments without a PKI: a CA (key and self-signed certificate) and, signed by
//! it, one certificate per node id, usable as server and as client certificate. Files are written
//! atomically and never overwritten, so the first start generates them and later starts reuse them.
//!
//! The files in the directory, all PEM:
//!
//! ```text
//! ca.pem  ca.key            the local CA (the `ca` bundle of every node)
//! <node-id>.pem  .key       a node's certificate (SANs: DNS <node-id>, DNS localhost, IP 127.0.0.1)
//! ```
//!
//! Knows nothing of what a node is; a node id is only a name here.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::{ClientAuth, TlsError, TlsSettings};

/// How long a generated CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);

/// How long a generated node certificate is valid.
const NODE_VALIDITY: Duration = Duration::days(825);

/// How far back validity starts, so that a clock slightly behind does not refuse a fresh certificate.
const BACKDATE: Duration = Duration::days(1);

/// The files [`generate`] wrote or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCerts {
    /// The CA certificate: the `ca` bundle of every node.
    pub ca_cert: PathBuf,
    /// The CA's private key, needed only to sign more node certificates.
    pub ca_key: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
}

impl LocalCerts {
    /// The settings of a node using these files.
    pub fn settings(&self, client_auth: ClientAuth) -> TlsSettings {
        TlsSettings {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ca: Some(self.ca_cert.clone()),
            client_auth,
        }
    }
}

/// The CA certificate's file in `dir`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The CA key's file in `dir`.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// The certificate file of `node_id` in `dir`.
pub fn node_cert_path(dir: &Path, node_id: &str) -> PathBuf {
    dir.join(format!("{node_id}.pem"))
}

/// The key file of `node_id` in `dir`.
pub fn node_key_path(dir: &Path, node_id: &str) -> PathBuf {
    dir.join(format!("{node_id}.key"))
}

/// Makes sure `dir` holds a local CA and a certificate for `node_id` signed by it, generating what is
/// missing (the directory too) and reusing what exists. The CA's key is needed only to sign a missing node
/// certificate; a node certificate without the CA's certificate is an error, as a new CA would not be the
/// one that signed it.
pub fn generate(dir: &Path, node_id: &str) -> Result<LocalCerts, TlsError> {
    let valid_name = !node_id.is_empty()
        && !node_id.starts_with('.')
        && node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name || node_id == "ca" {
        return Err(TlsError::BadNodeId { node_id: node_id.to_owned() });
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::WriteFile { path: dir.to_path_buf(), source })?;
    let files = LocalCerts {
        ca_cert: ca_cert_path(dir),
        ca_key: ca_key_path(dir),
        cert: node_cert_path(dir, node_id),
        key: node_key_path(dir, node_id),
    };
    let ca_pem = if files.ca_cert.exists() {
        read_text(&files.ca_cert, "CA certificate")?
    } else if files.cert.exists() {
        // A new CA would not be the one that signed the node's certificate.
        let source =
            std::io::Error::new(std::io::ErrorKind::NotFound, "the node certificate exists without it");
        return Err(TlsError::ReadFile { what: "CA certificate", path: files.ca_cert, source });
    } else {
        let ca_key = existing_or_new_key(&files.ca_key, "the CA key")?;
        let pem = ca_params().self_signed(&ca_key).map_err(generating("the CA certificate"))?.pem();
        write_atomically(&files.ca_cert, &pem, false)?;
        pem
    };
    if !files.cert.exists() {
        // The CA's key is needed only here: a node given its certificate and the CA's needs no CA key.
        let ca_key = read_key_pair(&files.ca_key)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|_| {
            TlsError::BadCertificate(format!("{} cannot sign certificates", files.ca_cert.display()))
        })?;
        let node_key = existing_or_new_key(&files.key, "the node key")?;
        let pem = node_params(node_id)?
            .signed_by(&node_key, &issuer)
            .map_err(generating(&format!("the certificate of {node_id}")))?
            .pem();
        write_atomically(&files.cert, &pem, false)?;
    }
    Ok(files)
}

/// The local CA: may sign certificates, nothing below it may.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let now = OffsetDateTime::now_utc();
    // A name of its own, so that a certificate of another deployment's CA is refused as signed by an unknown
    // CA rather than as one with a bad signature.
    let name = format!("relay local CA {}", now.unix_timestamp_nanos());
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = (now - BACKDATE, now + CA_VALIDITY);
    params
}

/// A node's certificate: named by its id (CN and first DNS name), reachable as `localhost` and
/// `127.0.0.1`, for server and client authentication.
fn node_params(node_id: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let dns = |name: &str| {
        name.try_into().map(SanType::DnsName).map_err(|_| TlsError::BadNodeId { node_id: node_id.to_owned() })
    };
    params.subject_alt_names =
        vec![dns(node_id)?, dns("localhost")?, SanType::IpAddress([127, 0, 0, 1].into())];
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    (params.not_before, params.not_after) = (now - BACKDATE, now + NODE_VALIDITY);
    Ok(params)
}

/// The key in `path`, or a new one written there.
fn existing_or_new_key(path: &Path, what: &str) -> Result<KeyPair, TlsError> {
    if path.exists() {
        return read_key_pair(path);
    }
    let key = KeyPair::generate().map_err(generating(what))?;
    write_atomically(path, &key.serialize_pem(), true)?;
    Ok(key)
}

/// The key in `path`, which must exist.
fn read_key_pair(path: &Path) -> Result<KeyPair, TlsError> {
    let pem = read_text(path, "private key")?;
    KeyPair::from_pem(&pem).map_err(|_| TlsError::NoKey { path: path.to_path_buf() })
}

/// A file's text, or an error naming it.
fn read_text(path: &Path, what: &'static str) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The error maker of a failed generation of `what`.
fn generating(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError {
    let what = what.to_owned();
    move |source| TlsError::Generate { what, source }
}

/// Writes `text` to `path` through a temporary file renamed into place, so that a crash never leaves a
/// half-written file that a later start would reuse; a `secret` is readable by its owner only.
fn write_atomically(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let error = |source| TlsError::WriteFile { path: path.to_path_buf(), source };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(&temporary).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_generates_and_later_calls_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), "node-a").unwrap();
        let ca = std::fs::read(&first.ca_cert).unwrap();
        let cert = std::fs::read(&first.cert).unwrap();
        let again = generate(dir.path(), "node-a").unwrap();
        assert_eq!(first, again);
        assert_eq!(std::fs::read(&again.ca_cert).unwrap(), ca, "the CA is reused");
        assert_eq!(std::fs::read(&again.cert).unwrap(), cert, "the node certificate is reused");
        let other = generate(dir.path(), "node-b").unwrap();
        assert_eq!(std::fs::read(&other.ca_cert).unwrap(), ca, "a second node shares the CA");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&first.key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "keys are private");
        std::fs::remove_file(&first.ca_key).unwrap();
        assert_eq!(generate(dir.path(), "node-a").unwrap(), first, "an existing node needs no CA key");
        let error = generate(dir.path(), "node-c").unwrap_err().to_string();
        assert!(error.starts_with("cannot read the private key file"), "{error}");
        std::fs::remove_file(&first.ca_cert).unwrap();
        let error = generate(dir.path(), "node-a").unwrap_err().to_string();
        assert!(error.starts_with("cannot read the CA certificate file"), "{error}");
    }

    #[test]
    fn a_node_id_that_cannot_be_a_file_or_dns_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "ca", "node a"] {
            assert!(matches!(generate(dir.path(), bad), Err(TlsError::BadNodeId { .. })), "{bad:?}");
        }
    }
}
