//! What a registration must contain: the checks on ids, labels and addresses that clients send, and the
//! validated `Registration` that `topology` accepts.
//!
//! This module owns input rules only. It keeps no state and decides no parents.

use crate::error::RequestError;
use crate::model::{Labels, Level, RegisterRequest};

/// The longest node id accepted.
pub const MAX_ID_LEN: usize = 128;
/// The most labels one node may carry.
pub const MAX_LABELS: usize = 32;
/// The longest label key or value accepted.
pub const MAX_LABEL_LEN: usize = 128;
/// The longest advertised address accepted.
pub const MAX_ADDR_LEN: usize = 256;

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node's id.
    pub id: String,
    /// The node's level.
    pub level: Level,
    /// The node's labels.
    pub labels: Labels,
    /// The node's HTTP address.
    pub http_addr: String,
    /// The node's TCP consumer address, if any.
    pub tcp_addr: Option<String>,
    /// The parent the node asks for, if any.
    pub preferred_parent: Option<String>,
}

impl Registration {
    /// Checks every field of `request`, answering the first problem found.
    pub fn parse(request: RegisterRequest) -> Result<Registration, RequestError> {
        validate_id(&request.id).map_err(|bad| RequestError::BadField(bad.0))?;
        let level = request
            .level
            .parse::<Level>()
            .map_err(|unknown| RequestError::UnknownLevel(unknown.to_string()))?;
        validate_labels(&request.labels).map_err(|bad| RequestError::BadField(bad.0))?;
        validate_addr("http_addr", &request.http_addr).map_err(|bad| RequestError::BadField(bad.0))?;
        if let Some(tcp_addr) = &request.tcp_addr {
            validate_addr("tcp_addr", tcp_addr).map_err(|bad| RequestError::BadField(bad.0))?;
        }
        let preferred_parent = request.preferred_parent.filter(|preferred| !preferred.is_empty());
        if let Some(preferred) = &preferred_parent {
            validate_id(preferred)
                .map_err(|bad| RequestError::BadField(format!("preferred_parent: {}", bad.0)))?;
        }
        Ok(Registration {
            id: request.id,
            level,
            labels: request.labels,
            http_addr: request.http_addr,
            tcp_addr: request.tcp_addr,
            preferred_parent,
        })
    }
}

/// Why a name sent by a client was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

/// Checks a node id: 1 to 128 characters of ASCII letters, digits, `.`, `_` and `-`. Ids appear in URLs, log
/// lines and SQL parameters, so anything else is refused rather than escaped everywhere.
pub fn validate_id(id: &str) -> Result<(), BadName> {
    if id.is_empty() {
        return Err(BadName("the node id is empty".to_owned()));
    }
    if id.len() > MAX_ID_LEN {
        return Err(BadName(format!("the node id is {} bytes long; the limit is {MAX_ID_LEN}", id.len())));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(BadName(format!(
            "the node id {id:?} contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Checks labels: at most 32, keys and values non-empty (keys) and at most 128 bytes, no control characters.
pub fn validate_labels(labels: &Labels) -> Result<(), BadName> {
    if labels.len() > MAX_LABELS {
        return Err(BadName(format!("{} labels given; the limit is {MAX_LABELS}", labels.len())));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_LEN || value.len() > MAX_LABEL_LEN {
            return Err(BadName(format!(
                "label {key:?} must have a key of 1 to {MAX_LABEL_LEN} bytes and a value of at most \
                 {MAX_LABEL_LEN} bytes"
            )));
        }
        if key.chars().chain(value.chars()).any(char::is_control) {
            return Err(BadName(format!("label {key:?} contains a control character")));
        }
    }
    Ok(())
}

/// Checks an advertised address: non-empty, at most 256 bytes, no whitespace or control characters. The
/// registry does not resolve it; brokers may advertise names that only their children can resolve.
pub fn validate_addr(field: &str, addr: &str) -> Result<(), BadName> {
    if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return Err(BadName(format!("{field} must be 1 to {MAX_ADDR_LEN} bytes long")));
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BadName(format!("{field} {addr:?} contains whitespace or a control character")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("l3-a.store_12").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id(&"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(validate_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id("é").is_err());
    }

    fn request(id: &str, level: &str) -> RegisterRequest {
        RegisterRequest {
            id: id.to_owned(),
            level: level.to_owned(),
            labels: Labels::new(),
            http_addr: "127.0.0.1:8081".to_owned(),
            tcp_addr: None,
            preferred_parent: None,
            token: None,
        }
    }

    #[test]
    fn registrations_are_parsed_and_checked_field_by_field() {
        let parsed = Registration::parse(request("l3-a", "l3")).unwrap();
        assert_eq!(parsed.level, Level::L3);
        assert!(matches!(Registration::parse(request("l3-a", "L7")), Err(RequestError::UnknownLevel(_))));
        assert!(matches!(Registration::parse(request("", "L3")), Err(RequestError::BadField(_))));
        let mut no_addr = request("l3-a", "L3");
        no_addr.http_addr = String::new();
        assert!(matches!(Registration::parse(no_addr), Err(RequestError::BadField(_))));
        let mut many_labels = request("l3-a", "L3");
        many_labels.labels = (0..=MAX_LABELS).map(|index| (format!("k{index}"), "v".to_owned())).collect();
        assert!(matches!(Registration::parse(many_labels), Err(RequestError::BadField(_))));
        let mut empty_preference = request("l3-a", "L3");
        empty_preference.preferred_parent = Some(String::new());
        assert_eq!(Registration::parse(empty_preference).unwrap().preferred_parent, None);
    }
}
