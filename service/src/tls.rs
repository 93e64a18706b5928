//! TLS for every listener and every outbound connection, with rustls and its `ring` provider:
//!
//! - [`TlsSettings`] and [`ClientAuth`], the plain data a binary's configuration holds, and the rustls
//!   `ServerConfig` and `ClientConfig` built from their PEM files (`config`);
//! - [`peer_node_id`], the node id a verified client certificate names (`identity`);
//! - [`accept_tls`], which answers a plain-text client on a TLS port with one readable line, and
//!   [`connect_tls`] with [`diagnose_connect_error`], which name a plain-text server (`handshake`);
//! - [`generate`], a local CA and node certificates for deployments without a PKI (`certs`);
//! - [`TlsError`], one readable line naming the file and what is wrong with it (`error`).
//!
//! It owns PEM files, rustls configurations and handshakes; it knows nothing of what any binary serves or
//! of what a node id is for (authorising by it is the caller's business).

mod certs;
mod config;
mod error;
mod handshake;
mod identity;

pub use certs::{LocalCerts, ca_cert_path, ca_key_path, generate, node_cert_path, node_key_path};
pub use config::{client_config, server_config};
pub use error::TlsError;
pub use handshake::{
    HANDSHAKE_TIMEOUT, PLAIN_TEXT_LINE, PlainTextReply, accept_tls, connect_tls, diagnose_connect_error,
};
pub use identity::{PeerIdentity, peer_node_id};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The TLS files and policy of one binary: plain data, read from its configuration; the files are read
/// only when a rustls configuration is built from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The PEM certificate chain this binary presents, as a server and as a client; leaf first.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The PEM CA bundle trusted for outbound connections and for verifying client certificates.
    pub ca: Option<PathBuf>,
    /// Whether a listener asks its clients for a certificate.
    pub client_auth: ClientAuth,
}

/// Whether a TLS listener asks for, and verifies against `ca`, a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// A client may present a certificate, which must then verify; a client without one is served too.
    Optional,
    /// Every client must present a certificate that verifies.
    Required,
}

impl ClientAuth {
    /// The name it is written with in a configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Off => "off",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientAuth, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(ClientAuth::Off),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            _ => Err(format!("{text:?} is not a client-certificate policy: off, optional or required")),
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The clap value parser of a client-certificate policy: `off`, `optional` or `required`.
pub fn parse_client_auth(text: &str) -> Result<ClientAuth, String> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_parses_its_three_names_and_refuses_others_clearly() {
        assert_eq!(parse_client_auth("off"), Ok(ClientAuth::Off));
        assert_eq!(parse_client_auth("optional"), Ok(ClientAuth::Optional));
        assert_eq!(parse_client_auth(" Required "), Ok(ClientAuth::Required));
        assert_eq!(
            parse_client_auth("yes").unwrap_err(),
            "\"yes\" is not a client-certificate policy: off, optional or required"
        );
        for policy in [ClientAuth::Off, ClientAuth::Optional, ClientAuth::Required] {
            assert_eq!(parse_client_auth(&policy.to_string()), Ok(policy));
        }
        assert_eq!(TlsSettings::default().client_auth, ClientAuth::Off);
    }
}
