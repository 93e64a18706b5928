//! Who a verified client certificate names: the node id a later change authorises by. Knows nothing of
//! what a node may do.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::TlsError;

/// The node id of the peer of a TLS connection, put into every request's extensions by the HTTPS server:
/// `None` when the client presented no certificate (client authentication off or optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<String>);

/// The node id a certificate names: its first DNS subjectAltName or, failing that, its subject's common
/// name; `None` when it has neither. The certificate is only parsed here: verify it first (rustls does,
/// during the handshake).
pub fn peer_node_id(cert: &CertificateDer<'_>) -> Result<Option<String>, TlsError> {
    let (_rest, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|error| TlsError::BadCertificate(error.to_string()))?;
    let alt_names =
        cert.subject_alternative_name().map_err(|error| TlsError::BadCertificate(error.to_string()))?;
    let first_dns = alt_names.and_then(|alt_names| {
        alt_names.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
    });
    if first_dns.is_some() {
        return Ok(first_dns);
    }
    Ok(cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok()).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn certificate(alt_names: Vec<SanType>, common_name: Option<&str>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = alt_names;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(common_name) = common_name {
            params.distinguished_name.push(DnType::CommonName, common_name);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_first_dns_alt_name_wins_over_the_common_name() {
        let ip = SanType::IpAddress([127, 0, 0, 1].into());
        let dns = |name: &str| SanType::DnsName(name.try_into().unwrap());
        let cert = certificate(vec![ip.clone(), dns("node-a"), dns("localhost")], Some("other"));
        assert_eq!(peer_node_id(&cert).unwrap().as_deref(), Some("node-a"));
        let cert = certificate(vec![ip], Some("node-b"));
        assert_eq!(peer_node_id(&cert).unwrap().as_deref(), Some("node-b"), "no DNS name: the CN");
        let cert = certificate(Vec::new(), None);
        assert_eq!(peer_node_id(&cert).unwrap(), None);
    }

    #[test]
    fn a_non_certificate_is_an_error() {
        let error = peer_node_id(&CertificateDer::from(vec![1, 2, 3])).unwrap_err();
        assert!(error.to_string().starts_with("not an X.509 certificate"), "{error}");
    }
}
