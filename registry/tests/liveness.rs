//! Liveness over time: a silent parent expires and its child moves to an alternate; an excluded parent is
//! skipped; a restarted registry keeps its nodes and assignments.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, alternate_ids, parent_id, settings};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a test waits for something that should happen within a few expiry periods.
const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_silent_parent_expires_and_its_child_moves_to_the_alternate() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that the heartbeating nodes never lapse on a busy machine, short enough to keep the test quick.
    let mut settings = settings(&dir);
    settings.expiry = Duration::from_millis(1_000);
    let server = TestServer::start(settings).await;
    server.register("root", "ROOT", json!({})).await;
    server.register("l2-a", "L2", json!({})).await;
    server.register("l2-b", "L2", json!({})).await;
    let first = server.register("l3", "L3", json!({})).await;
    assert_eq!(parent_id(&first).as_deref(), Some("l2-a"));
    assert_eq!(alternate_ids(&first), vec!["l2-b"]);

    // Everyone but l2-a keeps heartbeating until the child is told to move.
    let started = Instant::now();
    let moved = loop {
        assert!(started.elapsed() < DEADLINE, "l3 was never reassigned");
        server.heartbeat("root", &json!({})).await;
        server.heartbeat("l2-b", &json!({})).await;
        let answer = server.heartbeat("l3", &json!({"parent": "l2-a"})).await;
        if parent_id(&answer).as_deref() == Some("l2-b") {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parent_id(&moved).as_deref(), Some("l2-b"));
    assert!(alternate_ids(&moved).is_empty(), "an expired node is never an alternate");

    let (_, l2_a) = server.get("/api/v1/nodes/l2-a").await;
    assert_eq!(l2_a["state"], "expired");
    let (_, l3) = server.get("/api/v1/nodes/l3").await;
    assert_eq!(l3["parent"], "l2-b");
    let (_, events) = server.get("/api/v1/topology/history?limit=50").await;
    let has = |kind: &str, node: &str| {
        events.as_array().unwrap().iter().any(|event| event["kind"] == kind && event["node"] == node)
    };
    assert!(has("expired", "l2-a"), "{events}");
    assert!(has("parent_changed", "l3"), "{events}");

    // The expired parent comes back: it is revived, and the child stays where it is.
    let revived = server.heartbeat("l2-a", &json!({})).await;
    assert_eq!(revived["node"]["state"], "alive");
    let (_, events) = server.get("/api/v1/topology/history?limit=1").await;
    assert_eq!(events[0]["kind"], "revived");
    let sticky = server.heartbeat("l3", &json!({"parent": "l2-b"})).await;
    assert_eq!(parent_id(&sticky).as_deref(), Some("l2-b"));
    assert_eq!(alternate_ids(&sticky), vec!["l2-a"]);
    server.stop().await;
}

#[tokio::test]
async fn an_excluded_parent_is_skipped_and_a_new_one_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    server.register("root", "ROOT", json!({})).await;
    for id in ["l2-a", "l2-b", "l2-c"] {
        server.register(id, "L2", json!({})).await;
    }
    let first = server.register("l3", "L3", json!({})).await;
    assert_eq!(parent_id(&first).as_deref(), Some("l2-a"));

    let (status, answer) = server.get("/api/v1/nodes/l3/parent?exclude=l2-a,l2-b").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(parent_id(&answer).as_deref(), Some("l2-c"));
    assert!(alternate_ids(&answer).is_empty());
    let (_, answer) = server.get("/api/v1/nodes/l3/parent").await;
    assert_eq!(parent_id(&answer).as_deref(), Some("l2-c"), "the new parent sticks");
    assert_eq!(alternate_ids(&answer), vec!["l2-a", "l2-b"]);

    let (_, none) = server.get("/api/v1/nodes/l3/parent?exclude=l2-a,l2-b,l2-c").await;
    assert_eq!(none["parent"], Value::Null, "no candidate left: the broker retries");
    let (status, body) = server.get("/api/v1/nodes/nobody/parent").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_node")));
    server.stop().await;
}

#[tokio::test]
async fn a_child_without_a_live_candidate_gets_null_then_a_parent_once_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    let orphan = server.register("pos-1", "POS", json!({"store": "12"})).await;
    assert_eq!(orphan["parent"], Value::Null);
    server.register("l3-other", "L3", json!({"store": "13"})).await;
    assert_eq!(server.heartbeat("pos-1", &json!({})).await["parent"], Value::Null, "labels must match");
    server.register("l3-12", "L3", json!({"store": "12"})).await;
    let adopted = server.heartbeat("pos-1", &json!({})).await;
    assert_eq!(parent_id(&adopted).as_deref(), Some("l3-12"));

    let (_, view) = server.get("/api/v1/topology").await;
    let tops: Vec<&str> =
        view["roots"].as_array().unwrap().iter().map(|tree| tree["id"].as_str().unwrap()).collect();
    assert_eq!(tops, vec!["l3-12", "l3-other"], "nodes without a parent are listed at the top");
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_registry_keeps_nodes_assignments_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&dir);
    let server = TestServer::start(settings.clone()).await;
    server.register("root", "ROOT", json!({})).await;
    server.register("l2-a", "L2", json!({"region": "eu"})).await;
    server.register("l2-b", "L2", json!({"region": "eu"})).await;
    // l3 prefers the second region node, so its assignment differs from what least-loaded would give.
    let mut body = common::node_body("l3", "L3", json!({"region": "eu"}));
    body["preferred_parent"] = json!("l2-b");
    let (status, answer) = server.post("/api/v1/nodes", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(parent_id(&answer).as_deref(), Some("l2-b"));
    server
        .heartbeat("l3", &json!({"state": "streaming", "topics": {"prices": {"end_offset": 9, "lag": 0}}}))
        .await;
    let (_, before) = server.get("/api/v1/topology").await;
    server.stop().await;

    let server = TestServer::start(settings).await;
    let (_, after) = server.get("/api/v1/topology").await;
    assert_eq!(after, before, "the topology survives a restart unchanged");
    let (_, l3) = server.get("/api/v1/nodes/l3").await;
    assert_eq!(l3["parent"], "l2-b");
    assert_eq!(l3["state"], "alive");
    assert_eq!(l3["stats"]["topics"]["prices"]["end_offset"], 9);
    let answer = server.heartbeat("l3", &json!({})).await;
    assert_eq!(parent_id(&answer).as_deref(), Some("l2-b"), "the assignment sticks across the restart");
    let (_, events) = server.get("/api/v1/topology/history?limit=100").await;
    assert!(events.as_array().unwrap().len() >= 7, "{events}");
    server.stop().await;
}
