//! The registry's state: every node in memory with its liveness clock, the indexes that make assignment cheap
//! (nodes by level, children by parent), and the operations the API performs on them (register, heartbeat,
//! ask for a parent, deregister, expire).
//!
//! This module owns when state changes and what is written for it. The rules of choosing a parent live in
//! `assign`, the SQL in `db`, the HTTP shapes in `model` and `api`. Heartbeats that change nothing but
//! statistics are written in batches by `sweep`, not one row per heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::assign::{self, Candidate, Child, Priority, Reason, Refusal, Request};
use crate::db::{ChangeSet, Db, NewEvent};
use crate::error::{Error, RequestError};
use crate::metrics::Metrics;
use crate::model::{
    Assignment, Event, EventKind, HeartbeatStats, Labels, Level, Node, NodeState, TopologyView,
};
use crate::registration::Registration;
use crate::view;

/// How long nodes live without a heartbeat and how often they are told to heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A node silent for longer than this is expired.
    pub expiry: Duration,
    /// How often nodes should heartbeat; sent to them in every assignment.
    pub heartbeat_interval: Duration,
}

/// One node and the monotonic time it was last heard from.
#[derive(Debug)]
struct Entry {
    /// The node as served and stored.
    node: Node,
    /// When the node last registered or heartbeated (or, after a restart, when it was loaded), on the
    /// monotonic clock so that a wall-clock jump cannot expire everyone.
    last_seen: Instant,
}

/// The registry's state and its database.
#[derive(Debug)]
pub struct Topology {
    /// Every node by id.
    nodes: BTreeMap<String, Entry>,
    /// Node ids by level, so that candidates are found without scanning every node.
    by_level: BTreeMap<Level, BTreeSet<String>>,
    /// Child ids by the parent id they point to (whether or not that parent still exists), so that a
    /// candidate's load is a lookup.
    children_of: BTreeMap<String, BTreeSet<String>>,
    /// Nodes whose statistics changed since the last write.
    dirty: BTreeSet<String>,
    /// The database.
    db: Db,
    /// Expiry and heartbeat interval.
    timing: Timing,
    /// Counters bumped as things happen.
    metrics: Metrics,
}

impl Topology {
    /// Loads every node from `db`. Nodes that were alive stay alive for one expiry period from `now` (a grace
    /// period), so a restarted registry does not expire everyone before they have had a chance to heartbeat.
    pub fn load(db: Db, timing: Timing, metrics: Metrics, now: Instant) -> Result<Topology, Error> {
        let mut topology = Topology {
            nodes: BTreeMap::new(),
            by_level: BTreeMap::new(),
            children_of: BTreeMap::new(),
            dirty: BTreeSet::new(),
            db,
            timing,
            metrics,
        };
        for node in topology.db.load_nodes()? {
            topology.insert(Entry { node, last_seen: now });
        }
        Ok(topology)
    }

    /// The timing nodes are told to keep.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Registers or re-registers a node and assigns its parent, a usable preferred parent first.
    pub fn register(&mut self, registration: Registration, now: Instant) -> Result<Assignment, RequestError> {
        let id = registration.id.clone();
        let existing = self.nodes.get(&id).map(|entry| (entry.node.level, entry.node.state));
        if let Some((level, NodeState::Alive)) = existing
            && level != registration.level
        {
            return Err(RequestError::LevelConflict(format!(
                "node {id:?} is registered as {level} and is alive; it cannot re-register as {}",
                registration.level
            )));
        }
        if let Some(preferred) = &registration.preferred_parent {
            let preferred_level = self.nodes.get(preferred).map(|entry| entry.node.level);
            assign::check_preferred(&id, registration.level, preferred, preferred_level).map_err(refusal)?;
        }

        let time_ms = now_ms();
        let mut changes = ChangeSet::default();
        let (kind, detail) = match existing {
            None => (EventKind::Registered, format!("registered as {}", registration.level)),
            Some((_, NodeState::Alive)) => (EventKind::Registered, "re-registered".to_owned()),
            Some((_, NodeState::Expired)) => {
                (EventKind::Revived, format!("re-registered as {}", registration.level))
            }
        };
        changes.events.push(NewEvent { time_ms, kind, node: id.clone(), detail });

        let mut node = match self.remove(&id) {
            Some(entry) => entry.node,
            None => Node {
                id: id.clone(),
                level: registration.level,
                labels: Labels::new(),
                http_addr: String::new(),
                tcp_addr: None,
                preferred_parent: None,
                parent: None,
                state: NodeState::Alive,
                registered_ms: time_ms,
                last_heartbeat_ms: time_ms,
                stats: HeartbeatStats::default(),
            },
        };
        if node.level != registration.level {
            // A node that comes back at another level keeps nothing of its old place in the tree.
            node.parent = None;
            node.stats = HeartbeatStats::default();
        }
        node.level = registration.level;
        node.labels = registration.labels;
        node.http_addr = registration.http_addr;
        node.tcp_addr = registration.tcp_addr;
        node.preferred_parent = registration.preferred_parent;
        node.state = NodeState::Alive;
        node.last_heartbeat_ms = time_ms;
        self.insert(Entry { node, last_seen: now });

        let assignment = self.assign(&id, None, &[], Priority::PreferredFirst, time_ms, &mut changes)?;
        self.commit(&id, changes)?;
        self.metrics.registrations.inc();
        Ok(assignment)
    }

    /// Records a heartbeat, revives an expired node, and re-checks its parent. A parent the node reports being
    /// connected to is adopted when it is usable, so that a child that failed over on its own is not told to
    /// move back.
    pub fn heartbeat(
        &mut self,
        id: &str,
        stats: HeartbeatStats,
        now: Instant,
    ) -> Result<Assignment, RequestError> {
        let time_ms = now_ms();
        let mut changes = ChangeSet::default();
        let entry = self.nodes.get_mut(id).ok_or_else(|| RequestError::UnknownNode(id.to_owned()))?;
        entry.last_seen = now;
        entry.node.last_heartbeat_ms = time_ms;
        entry.node.stats = stats;
        if entry.node.state == NodeState::Expired {
            entry.node.state = NodeState::Alive;
            changes.events.push(NewEvent {
                time_ms,
                kind: EventKind::Revived,
                node: id.to_owned(),
                detail: "heartbeat after expiry".to_owned(),
            });
        }
        let reported =
            entry.node.stats.parent.clone().filter(|reported| Some(reported) != entry.node.parent.as_ref());
        let reported = reported.filter(|reported| self.usable_parent(id, reported));
        let assignment =
            self.assign(id, reported.as_deref(), &[], Priority::CurrentFirst, time_ms, &mut changes)?;
        if changes.is_empty() {
            self.dirty.insert(id.to_owned());
        } else {
            self.commit(id, changes)?;
        }
        self.metrics.heartbeats.inc();
        Ok(assignment)
    }

    /// Answers a node's "who is my parent?", skipping the parents in `exclude` this time. If the current parent
    /// is excluded, another is assigned.
    pub fn parent_for(&mut self, id: &str, exclude: &[String]) -> Result<Assignment, RequestError> {
        if !self.nodes.contains_key(id) {
            return Err(RequestError::UnknownNode(id.to_owned()));
        }
        let mut changes = ChangeSet::default();
        let assignment = self.assign(id, None, exclude, Priority::CurrentFirst, now_ms(), &mut changes)?;
        if !changes.is_empty() {
            self.commit(id, changes)?;
        }
        Ok(assignment)
    }

    /// Removes a node. Its children keep pointing at it until they next heartbeat or ask, when they are
    /// reassigned, exactly as if it had expired.
    pub fn deregister(&mut self, id: &str) -> Result<(), RequestError> {
        if self.remove(id).is_none() {
            return Err(RequestError::UnknownNode(id.to_owned()));
        }
        self.dirty.remove(id);
        let changes = ChangeSet {
            upserts: Vec::new(),
            deletes: vec![id.to_owned()],
            events: vec![NewEvent {
                time_ms: now_ms(),
                kind: EventKind::Deregistered,
                node: id.to_owned(),
                detail: "graceful shutdown".to_owned(),
            }],
        };
        self.db.apply(&changes)?;
        Ok(())
    }

    /// Expires every alive node silent for longer than the expiry time, and writes the statistics of
    /// heartbeats since the last sweep, all in one transaction. Answers how many nodes expired.
    pub fn sweep(&mut self, now: Instant) -> Result<usize, Error> {
        let time_ms = now_ms();
        let expiry = self.timing.expiry;
        let mut changes = ChangeSet::default();
        for (id, entry) in &mut self.nodes {
            let silent = now.saturating_duration_since(entry.last_seen);
            if entry.node.state == NodeState::Alive && silent > expiry {
                entry.node.state = NodeState::Expired;
                changes.events.push(NewEvent {
                    time_ms,
                    kind: EventKind::Expired,
                    node: id.clone(),
                    detail: format!("no heartbeat for {} ms", silent.as_millis()),
                });
                self.dirty.insert(id.clone());
            }
        }
        let expired = changes.events.len();
        for id in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.nodes.get(&id) {
                changes.upserts.push(entry.node.clone());
            }
        }
        self.db.apply(&changes)?;
        self.metrics.expiries.inc_by(u64::try_from(expired).unwrap_or(u64::MAX));
        for event in &changes.events {
            tracing::info!(node = %event.node, detail = %event.detail, "node expired");
        }
        Ok(expired)
    }

    /// Writes any statistics not yet written; called at shutdown.
    pub fn flush(&mut self) -> Result<(), Error> {
        let mut changes = ChangeSet::default();
        for id in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.nodes.get(&id) {
                changes.upserts.push(entry.node.clone());
            }
        }
        self.db.apply(&changes)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<Node> {
        self.nodes.get(id).map(|entry| entry.node.clone())
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.values().map(|entry| entry.node.clone()).collect()
    }

    /// The whole tree.
    pub fn view(&self) -> TopologyView {
        view::build(self.nodes())
    }

    /// The newest `limit` history events, newest first.
    pub fn history(&self, limit: u64) -> Result<Vec<Event>, Error> {
        self.db.history(limit)
    }

    /// How many nodes there are by level and state.
    pub fn counts(&self) -> Vec<(Level, NodeState, u64)> {
        let mut counts: BTreeMap<(Level, &'static str), (NodeState, u64)> = BTreeMap::new();
        for entry in self.nodes.values() {
            let key = (entry.node.level, entry.node.state.as_str());
            counts.entry(key).or_insert((entry.node.state, 0)).1 += 1;
        }
        counts.into_iter().map(|((level, _), (state, count))| (level, state, count)).collect()
    }

    /// Checks that the database answers.
    pub fn ping(&self) -> Result<(), Error> {
        self.db.ping()
    }

    /// Chooses `id`'s parent and records any change in `changes`. `reported` overrides the stored parent as
    /// the current one (the caller has checked that it is usable).
    fn assign(
        &mut self,
        id: &str,
        reported: Option<&str>,
        exclude: &[String],
        priority: Priority,
        time_ms: u64,
        changes: &mut ChangeSet,
    ) -> Result<Assignment, RequestError> {
        let entry = self.nodes.get(id).ok_or_else(|| RequestError::UnknownNode(id.to_owned()))?;
        let node = &entry.node;
        let child = Child { id, level: node.level, labels: &node.labels };
        let candidates = self.candidates(node.level);
        let request = Request {
            current: reported.or(node.parent.as_deref()),
            preferred: node.preferred_parent.as_deref(),
            exclude,
            priority,
        };
        let choice = assign::choose(&child, &candidates, &request);
        let old_parent = node.parent.clone();
        if choice.parent != old_parent {
            self.set_parent(id, choice.parent.clone(), choice.reason, time_ms, old_parent, changes);
        }
        let lookup = |candidate: &String| self.nodes.get(candidate).map(|entry| entry.node.clone());
        Ok(Assignment {
            node: self.node(id).ok_or_else(|| RequestError::UnknownNode(id.to_owned()))?,
            parent: choice.parent.as_ref().and_then(lookup),
            alternates: choice.alternates.iter().filter_map(lookup).collect(),
            heartbeat_interval_ms: duration_ms(self.timing.heartbeat_interval),
            expiry_ms: duration_ms(self.timing.expiry),
        })
    }

    /// Every node one level above `level`, with its load.
    fn candidates(&self, level: Level) -> Vec<Candidate<'_>> {
        let Some(parent_level) = level.parent() else {
            return Vec::new();
        };
        self.by_level
            .get(&parent_level)
            .into_iter()
            .flatten()
            .filter_map(|candidate_id| self.nodes.get(candidate_id))
            .map(|entry| Candidate {
                id: &entry.node.id,
                level: entry.node.level,
                labels: &entry.node.labels,
                alive: entry.node.state == NodeState::Alive,
                load: self.children_of.get(&entry.node.id).map_or(0, BTreeSet::len),
            })
            .collect()
    }

    /// Whether `parent_id` could parent `child_id` right now.
    fn usable_parent(&self, child_id: &str, parent_id: &str) -> bool {
        let (Some(child), Some(parent)) = (self.nodes.get(child_id), self.nodes.get(parent_id)) else {
            return false;
        };
        let child = Child { id: child_id, level: child.node.level, labels: &child.node.labels };
        let candidate = Candidate {
            id: parent_id,
            level: parent.node.level,
            labels: &parent.node.labels,
            alive: parent.node.state == NodeState::Alive,
            load: 0,
        };
        assign::is_usable(&child, &candidate, &[])
    }

    /// Points `id` at `new_parent`, keeping the index right, and records the event.
    fn set_parent(
        &mut self,
        id: &str,
        new_parent: Option<String>,
        reason: Reason,
        time_ms: u64,
        old_parent: Option<String>,
        changes: &mut ChangeSet,
    ) {
        if let Some(old) = &old_parent {
            self.unlink_child(old, id);
        }
        if let Some(new) = &new_parent {
            self.children_of.entry(new.clone()).or_default().insert(id.to_owned());
        }
        if let Some(entry) = self.nodes.get_mut(id) {
            entry.node.parent = new_parent.clone();
        }
        let (kind, detail) = match (&old_parent, &new_parent) {
            (None, Some(new)) => (EventKind::ParentAssigned, format!("parent {new} ({})", reason.as_str())),
            (Some(old), Some(new)) => {
                (EventKind::ParentChanged, format!("parent {old} -> {new} ({})", reason.as_str()))
            }
            (Some(old), None) => {
                (EventKind::ParentChanged, format!("parent {old} -> none ({})", reason.as_str()))
            }
            (None, None) => return,
        };
        tracing::info!(node = %id, %detail, "parent assignment");
        changes.events.push(NewEvent { time_ms, kind, node: id.to_owned(), detail });
        self.metrics.parent_changes.inc();
    }

    /// Writes `changes` plus the current state of `id`.
    fn commit(&mut self, id: &str, mut changes: ChangeSet) -> Result<(), RequestError> {
        if let Some(entry) = self.nodes.get(id) {
            changes.upserts.push(entry.node.clone());
        }
        self.dirty.remove(id);
        self.db.apply(&changes)?;
        Ok(())
    }

    /// Adds an entry and indexes it.
    fn insert(&mut self, entry: Entry) {
        let id = entry.node.id.clone();
        self.by_level.entry(entry.node.level).or_default().insert(id.clone());
        if let Some(parent) = &entry.node.parent {
            self.children_of.entry(parent.clone()).or_default().insert(id.clone());
        }
        self.nodes.insert(id, entry);
    }

    /// Removes an entry and its index entries, except the children that point at it: they still do.
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.nodes.remove(id)?;
        if let Some(ids) = self.by_level.get_mut(&entry.node.level) {
            ids.remove(id);
        }
        if let Some(parent) = &entry.node.parent {
            self.unlink_child(parent, id);
        }
        Some(entry)
    }

    fn unlink_child(&mut self, parent: &str, child: &str) {
        if let Some(children) = self.children_of.get_mut(parent) {
            children.remove(child);
            if children.is_empty() {
                self.children_of.remove(parent);
            }
        }
    }
}

/// Maps a refused preferred parent to its HTTP error.
fn refusal(refusal: Refusal) -> RequestError {
    match refusal {
        Refusal::Cycle(message) => RequestError::Cycle(message),
        Refusal::SkipsLevel(message) => RequestError::SkipsLevel(message),
        Refusal::SameLevel(message) | Refusal::RootHasNoParent(message) => RequestError::WrongLevel(message),
    }
}

/// The wall-clock time, for display and history only; liveness uses the monotonic clock.
pub use protocol::now_ms;

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_millis(1_000);

    fn open(dir: &tempfile::TempDir, now: Instant) -> Topology {
        let db = Db::open(&dir.path().join("registry.sqlite"), 1_000).unwrap();
        let timing = Timing { expiry: EXPIRY, heartbeat_interval: Duration::from_millis(100) };
        Topology::load(db, timing, Metrics::new(), now).unwrap()
    }

    fn registration(id: &str, level: Level, preferred: Option<&str>) -> Registration {
        Registration {
            id: id.to_owned(),
            level,
            labels: Labels::new(),
            http_addr: "127.0.0.1:1".to_owned(),
            tcp_addr: None,
            preferred_parent: preferred.map(str::to_owned),
        }
    }

    fn parent_of(assignment: &Assignment) -> Option<&str> {
        assignment.parent.as_ref().map(|parent| parent.id.as_str())
    }

    #[test]
    fn an_expired_parent_is_replaced_at_the_next_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let mut topology = open(&dir, start);
        topology.register(registration("root-a", Level::Root, None), start).unwrap();
        let child = topology.register(registration("l2", Level::L2, None), start).unwrap();
        assert_eq!(parent_of(&child), Some("root-a"));
        topology.register(registration("root-b", Level::Root, None), start).unwrap();

        // root-b keeps heartbeating; root-a and the child fall silent past the expiry.
        let later = start + EXPIRY + Duration::from_millis(1);
        topology.heartbeat("root-b", HeartbeatStats::default(), later).unwrap();
        assert_eq!(topology.sweep(later + Duration::from_millis(1)).unwrap(), 2);
        assert_eq!(topology.node("root-a").unwrap().state, NodeState::Expired);

        let again = topology.heartbeat("l2", HeartbeatStats::default(), later).unwrap();
        assert_eq!(parent_of(&again), Some("root-b"));
        assert_eq!(again.node.state, NodeState::Alive);
        let kinds: Vec<EventKind> = topology.history(10).unwrap().iter().map(|event| event.kind).collect();
        assert_eq!(kinds[..2], [EventKind::ParentChanged, EventKind::Revived]);
    }

    #[test]
    fn a_live_node_cannot_change_level_but_an_expired_one_can() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let mut topology = open(&dir, start);
        topology.register(registration("x", Level::L2, None), start).unwrap();
        let refused = topology.register(registration("x", Level::L3, None), start);
        assert!(matches!(refused, Err(RequestError::LevelConflict(_))));
        topology.sweep(start + EXPIRY * 2).unwrap();
        let moved = topology.register(registration("x", Level::L3, None), start + EXPIRY * 2).unwrap();
        assert_eq!(moved.node.level, Level::L3);
        assert_eq!(moved.node.state, NodeState::Alive);
    }

    #[test]
    fn preferred_parents_are_checked_against_registered_levels() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut topology = open(&dir, now);
        topology.register(registration("root", Level::Root, None), now).unwrap();
        topology.register(registration("l2-a", Level::L2, None), now).unwrap();
        topology.register(registration("l2-b", Level::L2, None), now).unwrap();
        let skip = topology.register(registration("l3", Level::L3, Some("root")), now);
        assert!(matches!(skip, Err(RequestError::SkipsLevel(_))));
        let same = topology.register(registration("l3", Level::L3, Some("l3")), now);
        assert!(matches!(same, Err(RequestError::Cycle(_))));
        let preferred = topology.register(registration("l3", Level::L3, Some("l2-b")), now).unwrap();
        assert_eq!(parent_of(&preferred), Some("l2-b"));
        assert_eq!(preferred.alternates.iter().map(|node| node.id.as_str()).collect::<Vec<_>>(), ["l2-a"]);
        let below = topology.register(registration("l2-c", Level::L2, Some("l3")), now);
        assert!(matches!(below, Err(RequestError::Cycle(_))));
    }

    #[test]
    fn a_reported_parent_is_adopted_when_usable() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut topology = open(&dir, now);
        topology.register(registration("root-a", Level::Root, None), now).unwrap();
        topology.register(registration("root-b", Level::Root, None), now).unwrap();
        let child = topology.register(registration("l2", Level::L2, None), now).unwrap();
        assert_eq!(parent_of(&child), Some("root-a"));
        let stats = HeartbeatStats { parent: Some("root-b".into()), ..HeartbeatStats::default() };
        let adopted = topology.heartbeat("l2", stats, now).unwrap();
        assert_eq!(parent_of(&adopted), Some("root-b"));
        let bogus = HeartbeatStats { parent: Some("nobody".into()), ..HeartbeatStats::default() };
        assert_eq!(parent_of(&topology.heartbeat("l2", bogus, now).unwrap()), Some("root-b"));
    }

    #[test]
    fn excluding_the_current_parent_reassigns_and_deregistered_nodes_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut topology = open(&dir, now);
        topology.register(registration("root-a", Level::Root, None), now).unwrap();
        topology.register(registration("root-b", Level::Root, None), now).unwrap();
        topology.register(registration("l2", Level::L2, None), now).unwrap();
        let moved = topology.parent_for("l2", &["root-a".to_owned()]).unwrap();
        assert_eq!(parent_of(&moved), Some("root-b"));
        assert!(moved.alternates.is_empty());
        topology.deregister("root-b").unwrap();
        assert!(matches!(
            topology.heartbeat("root-b", HeartbeatStats::default(), now),
            Err(RequestError::UnknownNode(_))
        ));
        assert!(matches!(topology.deregister("root-b"), Err(RequestError::UnknownNode(_))));
        assert_eq!(parent_of(&topology.parent_for("l2", &[]).unwrap()), Some("root-a"));
    }

    #[test]
    fn reloading_keeps_assignments_and_grants_a_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        {
            let mut topology = open(&dir, start);
            topology.register(registration("root", Level::Root, None), start).unwrap();
            topology.register(registration("l2", Level::L2, None), start).unwrap();
            let stats = HeartbeatStats { state: Some("streaming".into()), ..HeartbeatStats::default() };
            topology.heartbeat("l2", stats, start).unwrap();
            topology.flush().unwrap();
        }
        let reload = start + EXPIRY * 10;
        let mut topology = open(&dir, reload);
        let l2 = topology.node("l2").unwrap();
        assert_eq!((l2.parent.as_deref(), l2.state), (Some("root"), NodeState::Alive));
        assert_eq!(l2.stats.state.as_deref(), Some("streaming"));
        assert_eq!(topology.sweep(reload + EXPIRY / 2).unwrap(), 0, "nobody expires within the grace period");
        assert_eq!(topology.sweep(reload + EXPIRY * 2).unwrap(), 2);
    }
}
