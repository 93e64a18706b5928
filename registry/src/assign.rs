//! Parent assignment as pure functions: which nodes may parent a child, which one it gets, which are its
//! alternates, and which preferred parents are refused.
//!
//! This module owns the rules only. It keeps no state, reads no clock and touches no database; `topology`
//! gathers the candidates and applies the choice.

use crate::model::{Labels, Level};

/// The most alternates returned with an assignment.
pub const MAX_ALTERNATES: usize = 5;

/// The node that needs a parent.
#[derive(Debug, Clone, Copy)]
pub struct Child<'a> {
    /// The child's id.
    pub id: &'a str,
    /// The child's level.
    pub level: Level,
    /// The child's labels.
    pub labels: &'a Labels,
}

/// A node that might parent the child. Callers may pass any nodes; `choose` filters them.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The candidate's id.
    pub id: &'a str,
    /// The candidate's level.
    pub level: Level,
    /// The candidate's labels.
    pub labels: &'a Labels,
    /// Whether the candidate is alive.
    pub alive: bool,
    /// How many children are currently assigned to the candidate.
    pub load: usize,
}

/// Which of the current and the preferred parent wins when both are usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A registration re-states the node's preference, so a usable preferred parent wins over the current one.
    PreferredFirst,
    /// Heartbeats and parent requests keep the current parent while it is usable, so that a child is never
    /// moved away from a working connection.
    CurrentFirst,
}

/// What the child has now and what it asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The parent currently assigned (or that the child reports being connected to).
    pub current: Option<&'a str>,
    /// The parent the child asked for at registration.
    pub preferred: Option<&'a str>,
    /// Parents the child failed to reach; they are skipped this time.
    pub exclude: &'a [String],
    /// Which of `current` and `preferred` wins.
    pub priority: Priority,
}

/// Why the parent was chosen; recorded in the history's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// ROOT has no parent.
    IsRoot,
    /// The current parent is still usable.
    Sticky,
    /// The preferred parent is usable.
    Preferred,
    /// The candidate with the fewest children was chosen.
    LeastLoaded,
    /// No live, label-compatible, non-excluded candidate exists.
    NoCandidate,
}

impl Reason {
    /// A short phrase for the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IsRoot => "root",
            Reason::Sticky => "sticky",
            Reason::Preferred => "preferred",
            Reason::LeastLoaded => "least loaded",
            Reason::NoCandidate => "no live candidate",
        }
    }
}

/// The outcome of `choose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The parent's id, if any candidate is usable.
    pub parent: Option<String>,
    /// The other usable candidates, least loaded first, at most `MAX_ALTERNATES`.
    pub alternates: Vec<String>,
    /// Why `parent` was chosen.
    pub reason: Reason,
}

/// Why a preferred parent is refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The preferred parent is the node itself or below it.
    Cycle(String),
    /// The preferred parent is on the node's own level.
    SameLevel(String),
    /// The preferred parent is two or more levels up.
    SkipsLevel(String),
    /// The node is ROOT, which never has a parent.
    RootHasNoParent(String),
}

impl Refusal {
    /// The human-readable explanation returned to the client.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Cycle(text)
            | Refusal::SameLevel(text)
            | Refusal::SkipsLevel(text)
            | Refusal::RootHasNoParent(text) => text,
        }
    }
}

/// Whether `candidate` may parent `child` by labels: every label key the candidate has that the child also has
/// must carry the same value. Keys only one side has do not matter, so a region node can parent every store of
/// its region.
pub fn labels_compatible(candidate: &Labels, child: &Labels) -> bool {
    candidate.iter().all(|(key, value)| child.get(key).is_none_or(|child_value| child_value == value))
}

/// Whether `candidate` is usable as `child`'s parent this time: alive, exactly one level up, label-compatible,
/// not the child itself and not excluded.
pub fn is_usable(child: &Child<'_>, candidate: &Candidate<'_>, exclude: &[String]) -> bool {
    candidate.alive
        && candidate.id != child.id
        && Some(candidate.level) == child.level.parent()
        && labels_compatible(candidate.labels, child.labels)
        && !exclude.iter().any(|excluded| excluded == candidate.id)
}

/// Checks a preferred parent against the child's level. `preferred_level` is `None` when the preferred parent
/// has not registered yet; such a preference cannot be judged and is accepted (it is honoured once the parent
/// appears and the child has no usable current parent).
pub fn check_preferred(
    child_id: &str,
    child_level: Level,
    preferred_id: &str,
    preferred_level: Option<Level>,
) -> Result<(), Refusal> {
    if preferred_id == child_id {
        return Err(Refusal::Cycle(format!(
            "preferred parent {preferred_id:?} is the node itself; that would make a cycle"
        )));
    }
    let Some(parent_level) = child_level.parent() else {
        return Err(Refusal::RootHasNoParent(format!(
            "{child_id:?} is ROOT, which never has a parent; drop preferred_parent {preferred_id:?}"
        )));
    };
    let Some(preferred_level) = preferred_level else {
        return Ok(());
    };
    if preferred_level > child_level {
        return Err(Refusal::Cycle(format!(
            "preferred parent {preferred_id:?} is {preferred_level}, below {child_id:?} ({child_level}); \
             that would make a cycle"
        )));
    }
    if preferred_level == child_level {
        return Err(Refusal::SameLevel(format!(
            "preferred parent {preferred_id:?} is {preferred_level}, the same level as {child_id:?}; \
             a parent must be {parent_level}"
        )));
    }
    if preferred_level < parent_level {
        return Err(Refusal::SkipsLevel(format!(
            "preferred parent {preferred_id:?} is {preferred_level}, but {child_id:?} is {child_level}; \
             that would skip a level (a parent must be {parent_level})"
        )));
    }
    Ok(())
}

/// Chooses `child`'s parent among `candidates` and lists the alternates.
///
/// Order: the current or the preferred parent (as `request.priority` says) when usable, then the other of
/// the two, then the usable candidate with the fewest children, ties broken by id so that the answer is
/// deterministic.
pub fn choose(child: &Child<'_>, candidates: &[Candidate<'_>], request: &Request<'_>) -> Choice {
    if child.level.parent().is_none() {
        return Choice { parent: None, alternates: Vec::new(), reason: Reason::IsRoot };
    }
    let mut usable: Vec<&Candidate<'_>> =
        candidates.iter().filter(|candidate| is_usable(child, candidate, request.exclude)).collect();
    usable.sort_by(|left, right| left.load.cmp(&right.load).then_with(|| left.id.cmp(right.id)));
    usable.dedup_by(|left, right| left.id == right.id);

    let find = |id: Option<&str>| id.and_then(|id| usable.iter().find(|candidate| candidate.id == id));
    let ordered = match request.priority {
        Priority::PreferredFirst => {
            [(find(request.preferred), Reason::Preferred), (find(request.current), Reason::Sticky)]
        }
        Priority::CurrentFirst => {
            [(find(request.current), Reason::Sticky), (find(request.preferred), Reason::Preferred)]
        }
    };
    let chosen = ordered
        .into_iter()
        .find_map(|(candidate, reason)| candidate.map(|candidate| (candidate.id, reason)))
        .or_else(|| usable.first().map(|candidate| (candidate.id, Reason::LeastLoaded)));

    match chosen {
        None => Choice { parent: None, alternates: Vec::new(), reason: Reason::NoCandidate },
        Some((parent, reason)) => Choice {
            parent: Some(parent.to_owned()),
            alternates: usable
                .iter()
                .filter(|candidate| candidate.id != parent)
                .take(MAX_ALTERNATES)
                .map(|candidate| candidate.id.to_owned())
                .collect(),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    fn candidate<'a>(id: &'a str, level: Level, labels: &'a Labels, load: usize) -> Candidate<'a> {
        Candidate { id, level, labels, alive: true, load }
    }

    fn request<'a>(
        current: Option<&'a str>,
        preferred: Option<&'a str>,
        exclude: &'a [String],
    ) -> Request<'a> {
        Request { current, preferred, exclude, priority: Priority::CurrentFirst }
    }

    #[test]
    fn labels_must_agree_on_shared_keys_only() {
        let store_eu = labels(&[("region", "eu"), ("store", "12")]);
        assert!(labels_compatible(&labels(&[("region", "eu")]), &store_eu));
        assert!(!labels_compatible(&labels(&[("region", "us")]), &store_eu));
        assert!(labels_compatible(&Labels::new(), &store_eu));
        assert!(labels_compatible(&labels(&[("zone", "a")]), &store_eu));
        assert!(!labels_compatible(&labels(&[("region", "eu"), ("store", "13")]), &store_eu));
    }

    #[test]
    fn root_never_gets_a_parent() {
        let none = Labels::new();
        let child = Child { id: "root", level: Level::Root, labels: &none };
        let choice = choose(&child, &[candidate("root-2", Level::Root, &none, 0)], &request(None, None, &[]));
        assert_eq!(choice, Choice { parent: None, alternates: vec![], reason: Reason::IsRoot });
    }

    #[test]
    fn only_live_compatible_nodes_one_level_up_are_candidates() {
        let child_labels = labels(&[("region", "eu"), ("store", "12")]);
        let eu = labels(&[("region", "eu")]);
        let us = labels(&[("region", "us")]);
        let child = Child { id: "l3-a", level: Level::L3, labels: &child_labels };
        let mut dead = candidate("l2-dead", Level::L2, &eu, 0);
        dead.alive = false;
        let candidates = [
            candidate("root", Level::Root, &eu, 0),
            candidate("l2-us", Level::L2, &us, 0),
            dead,
            candidate("l3-b", Level::L3, &eu, 0),
            candidate("l2-eu", Level::L2, &eu, 7),
        ];
        let choice = choose(&child, &candidates, &request(None, None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("l2-eu"));
        assert_eq!(choice.reason, Reason::LeastLoaded);
        assert!(choice.alternates.is_empty());
    }

    #[test]
    fn least_loaded_wins_and_ties_go_by_id() {
        let none = Labels::new();
        let child = Child { id: "pos-1", level: Level::Pos, labels: &none };
        let candidates = [
            candidate("l3-c", Level::L3, &none, 1),
            candidate("l3-b", Level::L3, &none, 0),
            candidate("l3-a", Level::L3, &none, 2),
            candidate("l3-d", Level::L3, &none, 0),
        ];
        let choice = choose(&child, &candidates, &request(None, None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("l3-b"));
        assert_eq!(choice.alternates, vec!["l3-d", "l3-c", "l3-a"]);
    }

    #[test]
    fn alternates_are_capped() {
        let none = Labels::new();
        let child = Child { id: "local-1", level: Level::Local, labels: &none };
        let ids: Vec<String> = (0..10).map(|index| format!("pos-{index}")).collect();
        let candidates: Vec<Candidate<'_>> =
            ids.iter().map(|id| candidate(id, Level::Pos, &none, 0)).collect();
        let choice = choose(&child, &candidates, &request(None, None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("pos-0"));
        assert_eq!(choice.alternates.len(), MAX_ALTERNATES);
        assert_eq!(choice.alternates[0], "pos-1");
    }

    #[test]
    fn the_current_parent_sticks_while_usable() {
        let none = Labels::new();
        let child = Child { id: "l2-a", level: Level::L2, labels: &none };
        let candidates =
            [candidate("root-a", Level::Root, &none, 9), candidate("root-b", Level::Root, &none, 0)];
        let choice = choose(&child, &candidates, &request(Some("root-a"), None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("root-a"));
        assert_eq!(choice.reason, Reason::Sticky);
        assert_eq!(choice.alternates, vec!["root-b"]);

        let mut dead = candidate("root-a", Level::Root, &none, 9);
        dead.alive = false;
        let choice = choose(&child, &[dead, candidates[1]], &request(Some("root-a"), None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("root-b"));
        assert_eq!(choice.reason, Reason::LeastLoaded);
    }

    #[test]
    fn the_current_parent_is_dropped_when_its_labels_no_longer_match() {
        let child_labels = labels(&[("region", "us")]);
        let eu = labels(&[("region", "eu")]);
        let us = labels(&[("region", "us")]);
        let child = Child { id: "l3-a", level: Level::L3, labels: &child_labels };
        let candidates = [candidate("l2-eu", Level::L2, &eu, 0), candidate("l2-us", Level::L2, &us, 3)];
        let choice = choose(&child, &candidates, &request(Some("l2-eu"), None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("l2-us"));
    }

    #[test]
    fn excluded_parents_are_skipped_even_when_current() {
        let none = Labels::new();
        let child = Child { id: "pos-1", level: Level::Pos, labels: &none };
        let candidates = [
            candidate("l3-a", Level::L3, &none, 0),
            candidate("l3-b", Level::L3, &none, 1),
            candidate("l3-c", Level::L3, &none, 2),
        ];
        let exclude = vec!["l3-a".to_owned(), "l3-b".to_owned()];
        let choice = choose(&child, &candidates, &request(Some("l3-a"), None, &exclude));
        assert_eq!(choice.parent.as_deref(), Some("l3-c"));
        assert!(choice.alternates.is_empty());

        let everything = vec!["l3-a".to_owned(), "l3-b".to_owned(), "l3-c".to_owned()];
        let choice = choose(&child, &candidates, &request(Some("l3-a"), None, &everything));
        assert_eq!(choice, Choice { parent: None, alternates: vec![], reason: Reason::NoCandidate });
    }

    #[test]
    fn preferred_parent_is_honoured_when_usable() {
        let none = Labels::new();
        let eu = labels(&[("region", "eu")]);
        let us = labels(&[("region", "us")]);
        let child = Child { id: "l3-a", level: Level::L3, labels: &eu };
        let candidates = [
            candidate("l2-a", Level::L2, &none, 0),
            candidate("l2-b", Level::L2, &none, 5),
            candidate("l2-us", Level::L2, &us, 0),
        ];
        let mut registering = request(Some("l2-a"), Some("l2-b"), &[]);
        registering.priority = Priority::PreferredFirst;
        let choice = choose(&child, &candidates, &registering);
        assert_eq!((choice.parent.as_deref(), choice.reason), (Some("l2-b"), Reason::Preferred));

        let heartbeat = request(Some("l2-a"), Some("l2-b"), &[]);
        assert_eq!(choose(&child, &candidates, &heartbeat).parent.as_deref(), Some("l2-a"));

        let heartbeat_without_parent = request(None, Some("l2-b"), &[]);
        assert_eq!(choose(&child, &candidates, &heartbeat_without_parent).parent.as_deref(), Some("l2-b"));

        let incompatible = request(None, Some("l2-us"), &[]);
        let choice = choose(&child, &candidates, &incompatible);
        assert_eq!((choice.parent.as_deref(), choice.reason), (Some("l2-a"), Reason::LeastLoaded));
    }

    #[test]
    fn a_child_never_parents_itself_even_with_duplicate_input() {
        let none = Labels::new();
        let child = Child { id: "l2-a", level: Level::L2, labels: &none };
        let candidates = [candidate("root", Level::Root, &none, 0), candidate("root", Level::Root, &none, 0)];
        let choice = choose(&child, &candidates, &request(None, None, &[]));
        assert_eq!(choice.parent.as_deref(), Some("root"));
        assert!(choice.alternates.is_empty());
    }

    #[test]
    fn preferred_parents_that_break_the_tree_are_refused() {
        assert!(matches!(check_preferred("l3-a", Level::L3, "l3-a", None), Err(Refusal::Cycle(_))));
        let below = check_preferred("l3-a", Level::L3, "pos-1", Some(Level::Pos));
        assert!(matches!(&below, Err(Refusal::Cycle(message)) if message.contains("would make a cycle")));
        let skip = check_preferred("l3-a", Level::L3, "root", Some(Level::Root));
        assert!(matches!(&skip, Err(Refusal::SkipsLevel(message)) if message.contains("would skip a level")));
        let same = check_preferred("l3-a", Level::L3, "l3-b", Some(Level::L3));
        assert!(matches!(same, Err(Refusal::SameLevel(_))));
        let root = check_preferred("root", Level::Root, "other", None);
        assert!(matches!(root, Err(Refusal::RootHasNoParent(_))));
        assert_eq!(check_preferred("l3-a", Level::L3, "l2-eu", Some(Level::L2)), Ok(()));
        assert_eq!(check_preferred("l3-a", Level::L3, "not-yet-registered", None), Ok(()));
    }
}
