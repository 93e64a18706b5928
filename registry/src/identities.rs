//! Node identities from the registry's own configuration (`--nodes-file`): for each node id, the credential
//! that proves it, the level it may register at and, if given, the labels it carries. With identities, a
//! request that registers, heartbeats, asks for a parent or deregisters node X is accepted only with X's own
//! token, and a registration only at X's configured level and labels: no one can re-point another node's
//! address, take its place, or start a second ROOT by claiming to be one.
//!
//! The file is JSON: `{"nodes": [{"id": "root", "level": "ROOT", "token": "...", "labels": {"region":
//! "eu"}}, ...]}` (`labels` optional: without it the node's own labels are taken). This module owns the file's
//! shape, its checks and the two decisions (who is this request, may it register so); the handlers in `api`
//! ask.

use std::collections::HashMap;
use std::path::Path;

use axum::http::HeaderMap;
use serde::Deserialize;

use crate::auth::{constant_time_eq, presented_token};
use crate::error::RequestError;
use crate::model::{Labels, Level};
use crate::registration::{Registration, validate_id, validate_labels};

/// One node as the nodes file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's id.
    pub id: String,
    /// The only level it may register at.
    pub level: Level,
    /// The labels it must register with, if the file gives them.
    pub labels: Option<Labels>,
    /// The token that proves it.
    token: String,
}

/// Every node identity the registry knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identities {
    /// By node id.
    by_id: HashMap<String, NodeIdentity>,
}

/// The file's layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodesFile {
    /// The nodes.
    nodes: Vec<NodeEntry>,
}

/// One node in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    /// See [`NodeIdentity::id`].
    id: String,
    /// See [`NodeIdentity::level`], as ROOT, L2, L3, POS or LOCAL.
    level: String,
    /// See [`NodeIdentity::token`].
    token: String,
    /// See [`NodeIdentity::labels`].
    #[serde(default)]
    labels: Option<Labels>,
}

/// The shortest token a node may be given.
pub const MIN_TOKEN_LEN: usize = 16;

impl Identities {
    /// Reads and checks the nodes file; the error is one line naming the file and the problem.
    pub fn load(path: &Path) -> Result<Identities, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the nodes file {}: {error}", path.display()))?;
        Identities::parse(&text).map_err(|problem| format!("the nodes file {}: {problem}", path.display()))
    }

    /// Parses the nodes file's text.
    pub fn parse(text: &str) -> Result<Identities, String> {
        let file: NodesFile =
            serde_json::from_str(text).map_err(|error| format!("not a nodes file: {error}"))?;
        let mut by_id = HashMap::new();
        for (index, entry) in file.nodes.into_iter().enumerate() {
            let at = |problem: String| format!("node {index} ({:?}): {problem}", entry.id);
            validate_id(&entry.id).map_err(|bad| at(bad.0))?;
            let level = entry.level.parse::<Level>().map_err(|unknown| at(unknown.to_string()))?;
            if entry.token.len() < MIN_TOKEN_LEN {
                return Err(at(format!("the token must be at least {MIN_TOKEN_LEN} characters")));
            }
            if let Some(labels) = &entry.labels {
                validate_labels(labels).map_err(|bad| at(bad.0))?;
            }
            let identity =
                NodeIdentity { id: entry.id.clone(), level, labels: entry.labels, token: entry.token };
            if by_id.insert(entry.id.clone(), identity).is_some() {
                return Err(at("the id appears twice".to_string()));
            }
        }
        if by_id.is_empty() {
            return Err("it names no node".to_string());
        }
        Ok(Identities { by_id })
    }

    /// The identity that a request for node `id` proves: `Authorization: Bearer <token>` (or the body's
    /// `token` field) must be `id`'s own token. Any other token, including another node's, is
    /// [`RequestError::Unauthorized`], as is an id the file does not name.
    pub fn authenticate(
        &self,
        id: &str,
        headers: &HeaderMap,
        body_token: Option<&str>,
    ) -> Result<&NodeIdentity, RequestError> {
        let given = presented_token(headers, body_token).ok_or(RequestError::Unauthorized)?;
        match self.by_id.get(id) {
            Some(identity) if constant_time_eq(given.as_bytes(), identity.token.as_bytes()) => Ok(identity),
            _ => Err(RequestError::Unauthorized),
        }
    }

    /// Whether `registration` is what its node may register as: its configured level, and its configured
    /// labels when the file gives them.
    pub fn admit(identity: &NodeIdentity, registration: &Registration) -> Result<(), RequestError> {
        if registration.level != identity.level {
            return Err(RequestError::NotAllowed(format!(
                "node {:?} may register only as {}, not {}",
                identity.id, identity.level, registration.level
            )));
        }
        if let Some(labels) = &identity.labels
            && *labels != registration.labels
        {
            return Err(RequestError::NotAllowed(format!(
                "node {:?} must register with the labels the registry gives it ({labels:?}), not {:?}",
                identity.id, registration.labels
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    const FILE: &str = r#"{"nodes": [
        {"id": "root", "level": "ROOT", "token": "root-token-0123456789"},
        {"id": "l2-eu", "level": "l2", "token": "l2eu-token-0123456789", "labels": {"region": "eu"}}
    ]}"#;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        headers
    }

    #[test]
    fn a_node_is_proven_only_by_its_own_token() {
        let identities = Identities::parse(FILE).unwrap();
        assert_eq!(
            identities.authenticate("root", &bearer("root-token-0123456789"), None).unwrap().level,
            Level::Root
        );
        assert!(identities.authenticate("root", &HeaderMap::new(), Some("root-token-0123456789")).is_ok());
        for (id, token) in
            [("root", "l2eu-token-0123456789"), ("root", "wrong"), ("nobody", "root-token-0123456789")]
        {
            assert!(matches!(
                identities.authenticate(id, &bearer(token), None),
                Err(RequestError::Unauthorized)
            ));
        }
        assert!(matches!(
            identities.authenticate("root", &HeaderMap::new(), None),
            Err(RequestError::Unauthorized)
        ));
    }

    #[test]
    fn bad_files_are_refused_in_one_line() {
        let cases = [
            ("{}", "not a nodes file"),
            (r#"{"nodes": []}"#, "names no node"),
            (r#"{"nodes": [{"id": "a b", "level": "ROOT", "token": "0123456789abcdef"}]}"#, "contains ' '"),
            (r#"{"nodes": [{"id": "a", "level": "L9", "token": "0123456789abcdef"}]}"#, "L9"),
            (r#"{"nodes": [{"id": "a", "level": "ROOT", "token": "short"}]}"#, "at least 16"),
            (
                r#"{"nodes": [{"id": "a", "level": "ROOT", "token": "0123456789abcdef"},
                              {"id": "a", "level": "L2", "token": "0123456789abcdef"}]}"#,
                "twice",
            ),
        ];
        for (text, expected) in cases {
            let problem = Identities::parse(text).unwrap_err();
            assert!(problem.contains(expected) && !problem.contains('\n'), "{text}: {problem}");
        }
    }
}
