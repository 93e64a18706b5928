//! Builds the tree served at `GET /api/v1/topology` from a flat list of nodes.
//!
//! This module owns only the shape of that view. It follows an edge only when the parent exists and is exactly
//! one level up, so a stale or hand-edited parent pointer can never make a loop; such nodes are listed at the
//! top as unattached. It does not decide assignments.

use std::collections::BTreeMap;

use crate::model::{Level, Node, TopologyView, TreeNode};

/// Arranges `nodes` into trees: every ROOT node with its subtree, then every other node whose parent is missing,
/// unknown or not one level up, with its own subtree. Nodes and children are ordered by id.
pub fn build(mut nodes: Vec<Node>) -> TopologyView {
    nodes.sort_by(|left, right| left.id.cmp(&right.id));
    let levels: BTreeMap<&str, Level> = nodes.iter().map(|node| (node.id.as_str(), node.level)).collect();
    let attached_parent = |node: &Node| -> Option<String> {
        let parent = node.parent.as_deref()?;
        let parent_level = levels.get(parent)?;
        (Some(*parent_level) == node.level.parent()).then(|| parent.to_owned())
    };

    let mut children_of: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
    let mut tops: Vec<&Node> = Vec::new();
    for node in &nodes {
        match attached_parent(node) {
            Some(parent) => children_of.entry(parent).or_default().push(node),
            None => tops.push(node),
        }
    }
    // ROOT nodes first, then the unattached nodes from the top of the tree down.
    tops.sort_by(|left, right| left.level.cmp(&right.level).then_with(|| left.id.cmp(&right.id)));
    let roots = tops.into_iter().map(|node| subtree(node, &children_of)).collect();
    TopologyView { nodes, roots }
}

/// The subtree under `node`. Depth is bounded by the five levels, because every edge goes one level down.
fn subtree(node: &Node, children_of: &BTreeMap<String, Vec<&Node>>) -> TreeNode {
    let children = children_of
        .get(&node.id)
        .map(|children| children.iter().map(|child| subtree(child, children_of)).collect())
        .unwrap_or_default();
    TreeNode { node: node.clone(), children }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeartbeatStats, NodeState};

    fn node(id: &str, level: Level, parent: Option<&str>) -> Node {
        Node {
            id: id.to_owned(),
            level,
            labels: Default::default(),
            http_addr: "127.0.0.1:1".into(),
            tcp_addr: None,
            preferred_parent: None,
            parent: parent.map(str::to_owned),
            state: NodeState::Alive,
            registered_ms: 0,
            last_heartbeat_ms: 0,
            stats: HeartbeatStats::default(),
        }
    }

    fn ids(trees: &[TreeNode]) -> Vec<&str> {
        trees.iter().map(|tree| tree.node.id.as_str()).collect()
    }

    #[test]
    fn a_chain_becomes_one_tree() {
        let view = build(vec![
            node("local", Level::Local, Some("pos")),
            node("pos", Level::Pos, Some("l3")),
            node("root", Level::Root, None),
            node("l3", Level::L3, Some("l2")),
            node("l2", Level::L2, Some("root")),
        ]);
        assert_eq!(view.nodes.len(), 5);
        assert_eq!(ids(&view.roots), vec!["root"]);
        let mut tree = &view.roots[0];
        for expected in ["l2", "l3", "pos", "local"] {
            assert_eq!(ids(&tree.children), vec![expected]);
            tree = &tree.children[0];
        }
        assert!(tree.children.is_empty());
    }

    #[test]
    fn unattached_and_inconsistent_nodes_are_listed_at_the_top() {
        let view = build(vec![
            node("root", Level::Root, None),
            node("orphan", Level::L3, None),
            node("dangling", Level::L2, Some("gone")),
            node("skipper", Level::Pos, Some("root")),
            node("loop-a", Level::L3, Some("loop-b")),
            node("loop-b", Level::L2, Some("loop-a")),
        ]);
        assert_eq!(ids(&view.roots), vec!["root", "dangling", "loop-b", "orphan", "skipper"]);
        let loop_b = &view.roots[2];
        assert_eq!(ids(&loop_b.children), vec!["loop-a"]);
    }
}
