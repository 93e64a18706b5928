//! The errors of TLS setup and handshakes: each is one line naming the file or peer and what is wrong.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong reading TLS files, building a rustls configuration, generating certificates, or in a
/// handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting a configuration needs is not given.
    #[error("TLS needs {setting}: {why}")]
    MissingSetting {
        /// The setting's name (`cert`, `key`, `ca`).
        setting: &'static str,
        /// What it is needed for.
        why: &'static str,
    },
    /// A file cannot be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{} is not a PEM {what} file: {source}", path.display())]
    NotPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{} holds no certificate (no -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file holds no private key.
    #[error("{} holds no private key (no -----BEGIN PRIVATE KEY----- block)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{} holds a certificate that cannot be trusted as a CA: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the key {} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate and key (an unsupported key type, say).
    #[error("cannot use the certificate {} with the key {}: {source}", cert.display(), key.display())]
    BadCertificateOrKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// rustls refused the configuration for another reason.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
    /// A certificate cannot be parsed as X.509.
    #[error("not an X.509 certificate: {0}")]
    BadCertificate(String),
    /// A node id that cannot name a certificate (and its files).
    #[error("{node_id:?} cannot name a certificate: a node id is letters, digits, '-', '_' and '.'")]
    BadNodeId {
        /// The node id.
        node_id: String,
    },
    /// rcgen cannot generate a key or a certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// rcgen's complaint.
        source: rcgen::Error,
    },
    /// A generated file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A client sent plain text to a TLS port; it was told so.
    #[error("{peer} sent plain text to this TLS port (told it to use TLS)")]
    PlainTextClient {
        /// The client.
        peer: SocketAddr,
    },
    /// The handshake did not finish in time.
    #[error("the TLS handshake with {peer} did not finish within {}", crate::units::format_duration(*timeout))]
    HandshakeTimeout {
        /// The other side.
        peer: String,
        /// How long it had.
        timeout: Duration,
    },
    /// The handshake failed (a certificate refused either way, a connection reset).
    #[error("the TLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The other side.
        peer: String,
        /// Why.
        source: io::Error,
    },
    /// A TLS client reached a server that answers in plain text.
    #[error("the server at {addr} does not speak TLS (plain text?)")]
    ServerNotTls {
        /// The server.
        addr: String,
        /// What rustls made of its answer.
        source: io::Error,
    },
}
