//! Who is delivering which (group, topic) right now, and the live connections.
//!
//! Every group on a topic gets every record; within one group no record goes to two members. The rule that
//! keeps it so: the newest connection that asks for a (group, topic) takes it over, and the older owner's
//! [`Claim`] is marked superseded, which its session notices at once (through its wake-up) and answers
//! with ERROR SUPERSEDED. The same rule makes a quick reconnect work before the broker has noticed that
//! the old socket died. This module owns the ownership table and per-claim signals (superseded, operator
//! refresh); it does not deliver anything or touch the committed offsets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The signals one session's claim on one (group, topic) can receive from elsewhere in the broker.
#[derive(Debug)]
pub struct ClaimSignals {
    /// Set when a newer connection took the (group, topic) over.
    superseded: AtomicBool,
    /// Set when an operator asked for a full refresh of the (group, topic).
    refresh: AtomicBool,
    /// The owning session's wake-up, shared by all its claims.
    wake: Arc<Notify>,
}

impl ClaimSignals {
    /// Whether a newer connection took this claim over.
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Takes (and clears) an operator refresh request.
    pub fn take_refresh(&self) -> bool {
        self.refresh.swap(false, Ordering::AcqRel)
    }
}

/// A session's ownership of one (group, topic).
#[derive(Debug, Clone)]
pub struct Claim {
    /// The connection holding it.
    pub connection_id: u64,
    /// Its signals.
    pub signals: Arc<ClaimSignals>,
}

/// What the broker shows about one live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The broker-local connection id.
    pub connection_id: u64,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// `consumer` or `pipe`.
    pub kind: &'static str,
    /// The client id from HELLO (empty before HELLO).
    pub client_id: String,
    /// The group from HELLO (empty before HELLO).
    pub group: String,
}

/// The ownership table and the live connections.
#[derive(Debug, Default)]
pub struct Members {
    /// (group, topic) -> the claim in force.
    owners: Mutex<HashMap<(String, String), Claim>>,
    /// Live connections by id.
    connections: Mutex<HashMap<u64, ConnectionInfo>>,
    /// The last connection id handed out.
    last_connection_id: AtomicU64,
}

impl Members {
    /// An empty table.
    pub fn new() -> Members {
        Members::default()
    }

    /// Registers a new connection and returns its id; [`Members::disconnect`] undoes it.
    pub fn connect(&self, peer: Option<SocketAddr>, kind: &'static str) -> u64 {
        let connection_id = self.last_connection_id.fetch_add(1, Ordering::Relaxed) + 1;
        let info =
            ConnectionInfo { connection_id, peer, kind, client_id: String::new(), group: String::new() };
        lock(&self.connections).insert(connection_id, info);
        connection_id
    }

    /// Records the names a connection gave in HELLO.
    pub fn identify(&self, connection_id: u64, client_id: &str, group: &str) {
        if let Some(info) = lock(&self.connections).get_mut(&connection_id) {
            info.client_id = client_id.to_string();
            info.group = group.to_string();
        }
    }

    /// Forgets a connection and releases every claim it still holds.
    pub fn disconnect(&self, connection_id: u64) {
        lock(&self.connections).remove(&connection_id);
        lock(&self.owners).retain(|_, claim| claim.connection_id != connection_id);
    }

    /// The live connections, ordered by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut connections: Vec<_> = lock(&self.connections).values().cloned().collect();
        connections.sort_by_key(|info| info.connection_id);
        connections
    }

    /// Makes `connection_id` the owner of (group, topic), superseding any other owner, and returns the new
    /// claim. `wake` is the claiming session's wake-up.
    pub fn claim(&self, group: &str, topic: &str, connection_id: u64, wake: &Arc<Notify>) -> Claim {
        let claim = Claim {
            connection_id,
            signals: Arc::new(ClaimSignals {
                superseded: AtomicBool::new(false),
                refresh: AtomicBool::new(false),
                wake: Arc::clone(wake),
            }),
        };
        let previous = lock(&self.owners).insert((group.to_string(), topic.to_string()), claim.clone());
        if let Some(previous) = previous
            && previous.connection_id != connection_id
        {
            previous.signals.superseded.store(true, Ordering::Release);
            previous.signals.wake.notify_one();
        }
        claim
    }

    /// Gives up (group, topic) if `connection_id` still owns it.
    pub fn release(&self, group: &str, topic: &str, connection_id: u64) {
        let mut owners = lock(&self.owners);
        let key = (group.to_string(), topic.to_string());
        if owners.get(&key).is_some_and(|claim| claim.connection_id == connection_id) {
            owners.remove(&key);
        }
    }

    /// Signals an operator refresh to the live owners of the group's topics (all of them, or just
    /// `topic`) and returns the topics signalled.
    pub fn request_refresh(&self, group: &str, topic: Option<&str>) -> Vec<String> {
        let owners = lock(&self.owners);
        let mut signalled = Vec::new();
        for ((owner_group, owner_topic), claim) in owners.iter() {
            if owner_group == group && topic.is_none_or(|topic| topic == owner_topic) {
                claim.signals.refresh.store(true, Ordering::Release);
                claim.signals.wake.notify_one();
                signalled.push(owner_topic.clone());
            }
        }
        signalled.sort();
        signalled
    }

    /// The topics the group currently has a live owner for.
    pub fn topics_of(&self, group: &str) -> Vec<String> {
        let mut topics: Vec<_> =
            lock(&self.owners).keys().filter(|(g, _)| g == group).map(|(_, topic)| topic.clone()).collect();
        topics.sort();
        topics
    }
}

/// Locks a table; each operation on these maps is a single insert or removal, so a poisoned lock holds
/// consistent data and is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_claim_supersedes_older() {
        let members = Members::new();
        let wake_a = Arc::new(Notify::new());
        let wake_b = Arc::new(Notify::new());
        let a = members.connect(None, "consumer");
        let b = members.connect(None, "consumer");
        let claim_a = members.claim("g", "prices", a, &wake_a);
        assert!(!claim_a.signals.is_superseded());
        let claim_b = members.claim("g", "prices", b, &wake_b);
        assert!(claim_a.signals.is_superseded());
        assert!(!claim_b.signals.is_superseded());
        // Another group is independent.
        let claim_other = members.claim("h", "prices", a, &wake_a);
        assert!(!claim_other.signals.is_superseded());
        // A stale release by the older connection does not drop the newer owner.
        members.release("g", "prices", a);
        assert_eq!(members.topics_of("g"), vec!["prices".to_string()]);
        assert_eq!(members.request_refresh("g", None), vec!["prices".to_string()]);
        assert!(claim_b.signals.take_refresh());
        assert!(!claim_b.signals.take_refresh());
        members.disconnect(b);
        assert!(members.topics_of("g").is_empty());
        assert_eq!(members.connections().len(), 1);
    }
}
