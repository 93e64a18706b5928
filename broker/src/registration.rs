//! Where this node stands in the tree: registration with the registry, the parent candidates it knows
//! ([`Placement`]), the copy of them cached on disk (`topology.json`) for when the registry is down, and the
//! choice of a parent for the pipe ([`find_parent`]).
//!
//! - `client.rs`: the registry's HTTP API (register, heartbeat, parent lookup, deregister).
//! - `task.rs`: the background task that registers with backoff, heartbeats with statistics, registers
//!   again when the registry forgot this node, and deregisters on graceful shutdown.
//!
//! This module does not connect to parents (the pipe does) and never touches topic data.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, parent_host_port};
use crate::node::Node;
use protocol::now_ms;

mod client;
mod task;

pub use client::{
    Assignment, HeartbeatBody, ParentRef, RegisterBody, RegistryClient, RegistryNode, TopicHeartbeat,
};
pub use task::{heartbeat_body, run_registration};

/// The file name of the cached topology inside the data directory. Only [`topology_path`] spells it.
const TOPOLOGY_FILE_NAME: &str = "topology.json";

/// The path of the cached topology in a data directory.
pub fn topology_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOPOLOGY_FILE_NAME)
}

/// Where the current parent candidates came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementSource {
    /// Nothing is known yet.
    #[default]
    None,
    /// `--parent-url`: one fixed parent.
    Fixed,
    /// The registry's last answer.
    Registry,
    /// `topology.json`, written from an earlier registry answer.
    Cache,
}

/// What this node knows about its parent candidates and the registry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlacementState {
    /// The parent assigned (or fixed, or cached).
    pub parent: Option<ParentRef>,
    /// Other candidates, in the registry's order of preference.
    pub alternates: Vec<ParentRef>,
    /// Where `parent` and `alternates` came from.
    pub source: PlacementSource,
    /// Whether the registry has accepted this node's registration since it started.
    pub registered: bool,
    /// Whether the last registry call got an answer.
    pub registry_reachable: bool,
    /// The last registry failure, if the last call failed.
    pub registry_error: Option<String>,
    /// When `parent` or `alternates` last changed, in ms since the epoch.
    pub updated_ms: u64,
}

/// The shared, changing knowledge of where this node's parent is. Readers wait for changes through
/// [`Placement::subscribe`].
#[derive(Debug)]
pub struct Placement {
    /// The state.
    state: Mutex<PlacementState>,
    /// Bumped on every change of parent or alternates.
    version: watch::Sender<u64>,
}

/// The registry's answer as saved in `topology.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedTopology {
    /// The node the answer was for; a cache of another node is ignored.
    pub node_id: String,
    /// When it was saved, in ms since the epoch.
    pub saved_ms: u64,
    /// The assigned parent.
    pub parent: Option<ParentRef>,
    /// The alternates.
    pub alternates: Vec<ParentRef>,
}

impl Placement {
    /// The placement at start: the fixed parent, else the cached topology found in the data directory.
    /// Blocking (it may read a file).
    pub fn open(config: &Config) -> Placement {
        let mut state = PlacementState::default();
        if let Some(http_addr) = config.parent_url.as_deref().and_then(parent_host_port) {
            state.parent = Some(ParentRef { id: http_addr.to_string(), http_addr: http_addr.to_string() });
            state.source = PlacementSource::Fixed;
        } else if config.parent_level().is_some()
            && let Some(cached) = read_cache(&config.data_dir, &config.node_id)
        {
            tracing::info!(parent = ?cached.parent.as_ref().map(|p| &p.id), alternates = cached.alternates.len(),
                saved_ms = cached.saved_ms, "loaded the cached topology");
            state.parent = cached.parent;
            state.alternates = cached.alternates;
            state.source = PlacementSource::Cache;
        }
        Placement { state: Mutex::new(state), version: watch::Sender::new(0) }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> PlacementState {
        self.lock().clone()
    }

    /// A receiver bumped whenever the candidates change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes the parent and alternates of a registry answer, unless the parent is fixed. Returns the
    /// topology to cache if the candidates changed.
    ///
    /// An answer naming no candidate at all (a registry that just lost its state and has not heard from
    /// the parents yet, or every parent down) does not erase the ones known: retrying them is the best
    /// this node can do until the registry names another.
    pub fn apply(&self, node_id: &str, assignment: &Assignment) -> Option<CachedTopology> {
        let parent = assignment.parent.as_ref().map(RegistryNode::parent_ref);
        let alternates: Vec<ParentRef> = assignment.alternates.iter().map(RegistryNode::parent_ref).collect();
        let mut state = self.lock();
        state.registry_reachable = true;
        state.registry_error = None;
        if state.source == PlacementSource::Fixed || (parent.is_none() && alternates.is_empty()) {
            return None;
        }
        let changed = state.source != PlacementSource::Registry
            || state.parent != parent
            || state.alternates != alternates;
        state.source = PlacementSource::Registry;
        if !changed {
            return None;
        }
        state.parent = parent.clone();
        state.alternates = alternates.clone();
        state.updated_ms = now_ms();
        drop(state);
        self.version.send_modify(|version| *version += 1);
        Some(CachedTopology { node_id: node_id.to_string(), saved_ms: now_ms(), parent, alternates })
    }

    /// Records that the registry accepted this node.
    pub fn set_registered(&self, registered: bool) {
        self.lock().registered = registered;
    }

    /// Records a failed registry call.
    pub fn registry_failed(&self, error: &str) {
        let mut state = self.lock();
        state.registry_reachable = false;
        state.registry_error = Some(error.to_string());
    }

    /// The state, even after a panic elsewhere: every change is a plain field assignment.
    fn lock(&self) -> MutexGuard<'_, PlacementState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Chooses the parent the pipe should try next, skipping the ids in `failed` (parents this node could
/// not reach or stream from since its last good connection):
///
/// 1. a fixed `--parent-url` is always the answer;
/// 2. with a registry and earlier failures, the registry is asked for a parent excluding them;
/// 3. otherwise (or if the registry is down, or has no other candidate) the known candidates, assigned
///    parent first, then the alternates; when every one of them has failed, the list starts over.
///
/// `None` means no parent is known yet: wait for registration.
pub async fn find_parent(node: &Node, failed: &mut Vec<String>) -> Option<ParentRef> {
    let known = node.placement.snapshot();
    if known.source == PlacementSource::Fixed {
        return known.parent;
    }
    if let Some(registry) = &node.registry
        && !failed.is_empty()
        && known.registered
    {
        match registry.parent(failed).await {
            Ok(assignment) => {
                if let Some(parent) = assignment.parent.as_ref().map(RegistryNode::parent_ref) {
                    tracing::info!(parent = %parent.id, excluded = ?failed, "the registry named another parent");
                    save(node, node.placement.apply(&node.config.node_id, &assignment)).await;
                    return Some(parent);
                }
                tracing::info!(excluded = ?failed, "the registry knows no other parent; trying the known ones again");
            }
            Err(error) => {
                node.placement.registry_failed(&error.to_string());
                tracing::info!(%error, "cannot ask the registry for another parent; using the known candidates");
            }
        }
    }
    let known = node.placement.snapshot();
    let candidates: Vec<ParentRef> = known.parent.into_iter().chain(known.alternates).collect();
    if let Some(candidate) = candidates.iter().find(|candidate| !failed.contains(&candidate.id)) {
        return Some(candidate.clone());
    }
    failed.clear();
    candidates.into_iter().next()
}

/// Writes a changed topology to disk from a blocking thread; a failure is logged, since the cache only
/// matters when the registry is down.
pub async fn save(node: &Node, cached: Option<CachedTopology>) {
    let Some(cached) = cached else {
        return;
    };
    let data_dir = node.config.data_dir.clone();
    let written = tokio::task::spawn_blocking(move || write_cache(&data_dir, &cached)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot write the cached topology"),
        Err(error) => tracing::warn!(%error, "writing the cached topology failed"),
    }
}

/// Writes `topology.json` atomically: a temporary file, synced, renamed over the old one, and the
/// directory synced, so a crash leaves the old file or the new one, never a torn one. Blocking.
pub fn write_cache(data_dir: &Path, cached: &CachedTopology) -> std::io::Result<()> {
    let path = topology_path(data_dir);
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(cached).map_err(std::io::Error::other)?;
    let mut file = File::create(&temporary)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    File::open(data_dir)?.sync_all()
}

/// Reads `topology.json` if it exists, belongs to `node_id` and parses; otherwise `None` (logged).
/// Blocking.
pub fn read_cache(data_dir: &Path, node_id: &str) -> Option<CachedTopology> {
    let path = topology_path(data_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the cached topology");
            return None;
        }
    };
    match serde_json::from_slice::<CachedTopology>(&text) {
        Ok(cached) if cached.node_id == node_id => Some(cached),
        Ok(cached) => {
            tracing::warn!(path = %path.display(), cached_for = %cached.node_id, "ignoring the cached topology of another node");
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable cached topology");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(id: &str) -> ParentRef {
        ParentRef { id: id.to_string(), http_addr: format!("{id}:8080") }
    }

    #[test]
    fn the_cache_round_trips_and_belongs_to_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedTopology {
            node_id: "pos-1".to_string(),
            saved_ms: 5,
            parent: Some(parent("l3-a")),
            alternates: vec![parent("l3-b")],
        };
        write_cache(dir.path(), &cached).unwrap();
        assert_eq!(read_cache(dir.path(), "pos-1"), Some(cached.clone()));
        assert_eq!(read_cache(dir.path(), "pos-2"), None);
        std::fs::write(topology_path(dir.path()), b"{not json").unwrap();
        assert_eq!(read_cache(dir.path(), "pos-1"), None);
        // A leftover temporary file from a crash does not matter: the next write replaces it.
        std::fs::write(topology_path(dir.path()).with_extension("json.tmp"), b"torn").unwrap();
        write_cache(dir.path(), &cached).unwrap();
        assert_eq!(read_cache(dir.path(), "pos-1"), Some(cached));
    }

    #[test]
    fn a_fixed_parent_wins_and_the_cache_is_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().to_path_buf());
        config.level = crate::config::Level::Pos;
        config.node_id = "pos-1".to_string();
        let cached = CachedTopology {
            node_id: "pos-1".to_string(),
            saved_ms: 5,
            parent: Some(parent("l3-a")),
            alternates: vec![parent("l3-b")],
        };
        write_cache(dir.path(), &cached).unwrap();
        let placement = Placement::open(&config);
        let state = placement.snapshot();
        assert_eq!(state.source, PlacementSource::Cache);
        assert_eq!(state.parent, Some(parent("l3-a")));
        config.parent_url = Some("http://10.0.0.1:8080".to_string());
        let placement = Placement::open(&config);
        let state = placement.snapshot();
        assert_eq!(state.source, PlacementSource::Fixed);
        assert_eq!(state.parent.map(|p| p.http_addr), Some("10.0.0.1:8080".to_string()));
    }
}
