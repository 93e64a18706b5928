//! The registry's HTTP API as the broker calls it: register, heartbeat, parent lookup and deregistration
//! (shapes in `docs/REGISTRY.md`). Every call carries `Authorization: Bearer <token>` when a token is
//! configured, and is bounded by a timeout. This module owns requests and answers only; when to call, and
//! what to do with the answer, is `task.rs`'s and the pipe's business.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, RegistryError};

/// How long one registry request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest error body kept in an error message.
const MAX_ERROR_BODY: usize = 300;

/// A candidate parent as the registry names it: an id and where its HTTP API (and so its pipe) is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent's node id.
    pub id: String,
    /// The parent's advertised HTTP address, `host:port`.
    pub http_addr: String,
}

/// A node in a registry answer; only the fields the broker uses.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryNode {
    /// The node's id.
    pub id: String,
    /// Its advertised HTTP address.
    pub http_addr: String,
}

impl RegistryNode {
    /// The node as a parent candidate.
    pub fn parent_ref(&self) -> ParentRef {
        ParentRef { id: self.id.clone(), http_addr: self.http_addr.clone() }
    }
}

/// The registry's answer to register, heartbeat and parent requests.
#[derive(Debug, Clone, Deserialize)]
pub struct Assignment {
    /// The assigned parent; `None` for ROOT and while no live candidate exists.
    pub parent: Option<RegistryNode>,
    /// Other usable parents, least loaded first.
    #[serde(default)]
    pub alternates: Vec<RegistryNode>,
    /// How often the registry wants heartbeats.
    pub heartbeat_interval_ms: u64,
}

/// The body of a registration.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterBody {
    /// This node's id.
    pub id: String,
    /// Its level name (`ROOT`, `L2`...).
    pub level: &'static str,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its advertised HTTP address.
    pub http_addr: String,
    /// Its advertised TCP consumer address.
    pub tcp_addr: Option<String>,
    /// The parent it would like.
    pub preferred_parent: Option<String>,
}

/// Where one topic stands, in a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct TopicHeartbeat {
    /// The offset the next record will get here.
    pub end_offset: u64,
    /// Records this node is behind its parent (zero at ROOT).
    pub lag: u64,
}

/// The body of a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatBody {
    /// The pipe's state, such as `streaming`, `connecting` or `root`.
    pub state: String,
    /// The parent the pipe is connected to right now.
    pub parent: Option<String>,
    /// Every topic this node carries.
    pub topics: BTreeMap<String, TopicHeartbeat>,
    /// The ids of the children connected to this node.
    pub children: Vec<String>,
    /// How many TCP consumers are connected.
    pub consumers: u64,
}

/// A client of one registry, for one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    /// The HTTP client (a connection pool inside).
    http: reqwest::Client,
    /// The registry's base URL, without a trailing `/`.
    base: String,
    /// The token, empty if none.
    token: String,
    /// This node's id.
    node_id: String,
}

impl RegistryClient {
    /// A client of the registry at `base_url`, for the node `node_id`.
    pub fn new(base_url: &str, token: &str, node_id: &str) -> Result<RegistryClient, Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(Error::RegistryClient)?;
        Ok(RegistryClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            node_id: node_id.to_string(),
        })
    }

    /// The registry's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/nodes`.
    pub async fn register(&self, body: &RegisterBody) -> Result<Assignment, RegistryError> {
        let url = format!("{}/api/v1/nodes", self.base);
        let request = self.authorized(self.http.post(&url)).json(body);
        self.assignment("register", &url, request).await
    }

    /// `POST /api/v1/nodes/{id}/heartbeat`; [`RegistryError::UnknownNode`] means: register again.
    pub async fn heartbeat(&self, body: &HeartbeatBody) -> Result<Assignment, RegistryError> {
        let url = format!("{}/api/v1/nodes/{}/heartbeat", self.base, self.node_id);
        let request = self.authorized(self.http.post(&url)).json(body);
        self.assignment("heartbeat", &url, request).await
    }

    /// `GET /api/v1/nodes/{id}/parent?exclude=...`: a parent other than the ones this node failed to reach.
    pub async fn parent(&self, exclude: &[String]) -> Result<Assignment, RegistryError> {
        let url = format!("{}/api/v1/nodes/{}/parent", self.base, self.node_id);
        let mut request = self.authorized(self.http.get(&url));
        if !exclude.is_empty() {
            request = request.query(&[("exclude", exclude.join(","))]);
        }
        self.assignment("parent lookup", &url, request).await
    }

    /// `DELETE /api/v1/nodes/{id}`: a graceful goodbye. A node the registry no longer knows is fine.
    pub async fn deregister(&self) -> Result<(), RegistryError> {
        let url = format!("{}/api/v1/nodes/{}", self.base, self.node_id);
        let response = self
            .authorized(self.http.delete(&url))
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable { url: url.clone(), source })?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            status => Err(refused("deregister", status, response).await),
        }
    }

    /// Adds the token header when a token is configured.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() { request } else { request.bearer_auth(&self.token) }
    }

    /// Sends a request whose answer is an [`Assignment`].
    async fn assignment(
        &self,
        what: &'static str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Assignment, RegistryError> {
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable { url: url.to_string(), source })?;
        match response.status().as_u16() {
            200 => response.json().await.map_err(|source| RegistryError::BadAnswer { what, source }),
            404 if what != "register" => Err(RegistryError::UnknownNode),
            status => Err(refused(what, status, response).await),
        }
    }
}

/// The error for a refused request, with the start of the answer's body.
async fn refused(what: &'static str, status: u16, response: reqwest::Response) -> RegistryError {
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    RegistryError::Refused { what, status, body }
}
