//! A whole tree registers; the topology, node list, history, page and metrics show it.

mod common;

use common::{TestServer, alternate_ids, parent_id, settings};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// ROOT, two L2 regions, and below the EU region one store with a till and an on-device broker.
async fn five_levels(server: &TestServer) {
    server.register("root", "ROOT", json!({})).await;
    server.register("l2-eu", "L2", json!({"region": "eu"})).await;
    server.register("l2-us", "l2", json!({"region": "us"})).await;
    server.register("l3-a", "L3", json!({"region": "eu", "store": "12"})).await;
    server.register("pos-1", "POS", json!({"region": "eu", "store": "12"})).await;
    server.register("local-1", "local", json!({"store": "12"})).await;
}

fn child_ids(tree: &Value) -> Vec<&str> {
    tree["children"].as_array().unwrap().iter().map(|child| child["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_five_level_tree_registers_and_the_topology_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    five_levels(&server).await;

    let (status, view) = server.get("/api/v1/topology").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["nodes"].as_array().unwrap().len(), 6);
    let roots = view["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{view}");
    let root = &roots[0];
    assert_eq!(root["id"], "root");
    assert_eq!(child_ids(root), vec!["l2-eu", "l2-us"]);
    let l2_eu = &root["children"][0];
    assert_eq!(child_ids(l2_eu), vec!["l3-a"]);
    assert!(child_ids(&root["children"][1]).is_empty(), "the US region gets no EU store");
    let l3 = &l2_eu["children"][0];
    assert_eq!(child_ids(l3), vec!["pos-1"]);
    let pos = &l3["children"][0];
    assert_eq!(child_ids(pos), vec!["local-1"]);
    assert_eq!(pos["children"][0]["level"], "LOCAL");
    assert_eq!(pos["children"][0]["state"], "alive");
    server.stop().await;
}

#[tokio::test]
async fn the_register_answer_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    let root = server.register("root", "ROOT", json!({})).await;
    assert_eq!(root["parent"], Value::Null);
    assert_eq!(root["heartbeat_interval_ms"], 100);
    assert_eq!(root["expiry_ms"], 30_000);
    server.register("l2-b", "L2", json!({})).await;
    server.register("l2-a", "L2", json!({})).await;
    let l3 = server.register("l3", "L3", json!({"store": "1"})).await;
    assert_eq!(parent_id(&l3).as_deref(), Some("l2-a"), "ties go by id");
    assert_eq!(alternate_ids(&l3), vec!["l2-b"]);
    let node = &l3["node"];
    for field in ["id", "level", "labels", "http_addr", "tcp_addr", "parent", "state", "registered_ms"] {
        assert!(node.get(field).is_some(), "node lacks {field}: {node}");
    }
    assert_eq!(node["parent"], "l2-a");
    assert_eq!(node["labels"]["store"], "1");

    let l3_second = server.register("l3-2", "L3", json!({})).await;
    assert_eq!(parent_id(&l3_second).as_deref(), Some("l2-b"), "least loaded wins");

    let again = server.register("l3", "L3", json!({"store": "1"})).await;
    assert_eq!(parent_id(&again).as_deref(), Some("l2-a"), "re-registering keeps the parent");
    assert_eq!(again["node"]["registered_ms"], node["registered_ms"]);
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_are_stored_and_nodes_can_be_listed_read_and_deregistered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    server.register("root", "ROOT", json!({})).await;
    server.register("l2", "L2", json!({})).await;
    let stats = json!({"state": "streaming", "parent": "root", "topics": {"prices": {"end_offset": 123, "lag": 4}},
                       "children": [], "consumers": 2});
    let answer = server.heartbeat("l2", &stats).await;
    assert_eq!(parent_id(&answer).as_deref(), Some("root"));
    assert_eq!(answer["node"]["stats"]["topics"]["prices"]["end_offset"], 123);

    let (status, node) = server.get("/api/v1/nodes/l2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["stats"]["consumers"], 2);
    let (status, nodes) = server.get("/api/v1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes.as_array().unwrap().len(), 2);

    let empty = server.send(server.client.post(server.url("/api/v1/nodes/root/heartbeat"))).await;
    assert_eq!(empty.0, StatusCode::OK, "an empty heartbeat body is accepted: {}", empty.1);

    let (status, body) = server.send(server.client.delete(server.url("/api/v1/nodes/l2"))).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = server.get("/api/v1/nodes/l2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_node");
    let (status, body) = server.post("/api/v1/nodes/l2/heartbeat", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a deregistered node must re-register: {body}");
    server.stop().await;
}

#[tokio::test]
async fn history_records_registrations_and_assignments_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    server.register("root", "ROOT", json!({})).await;
    server.register("l2", "L2", json!({})).await;
    let (status, events) = server.get("/api/v1/topology/history?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| (event["kind"].as_str().unwrap(), event["node"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("parent_assigned", "l2"), ("registered", "l2"), ("registered", "root")]);
    assert!(events[0]["time_ms"].as_u64().unwrap() > 0);
    assert!(events[0]["detail"].as_str().unwrap().contains("root"));
    let (_, one) = server.get("/api/v1/topology/history?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_page_draws_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    five_levels(&server).await;
    server.heartbeat("l3-a", &json!({"topics": {"prices": {"end_offset": 77, "lag": 3}}})).await;
    let response = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    for id in ["root", "l2-eu", "l2-us", "l3-a", "pos-1", "local-1"] {
        assert!(html.contains(&format!("<b class=\"id\">{id}</b>")), "page lacks {id}");
    }
    assert!(html.contains("<td>prices</td><td>77</td><td>3</td>"));
    assert!(html.contains("api/v1/topology"), "the page refreshes from the topology API");
    server.stop().await;
}

#[tokio::test]
async fn metrics_health_and_readiness_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    five_levels(&server).await;
    server.heartbeat("root", &json!({})).await;
    assert_eq!(server.get("/health").await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(server.get("/ready").await, (StatusCode::OK, json!({"status": "ready"})));

    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "registry_nodes{level=\"L2\",state=\"alive\"} 2",
        "registry_nodes{level=\"LOCAL\",state=\"alive\"} 1",
        "registry_nodes{level=\"POS\",state=\"expired\"} 0",
        "registry_registrations_total 6",
        "registry_heartbeats_total 1",
        "registry_expiries_total 0",
        "registry_parent_changes_total 5",
        "registry_http_requests_total{method=\"POST\",route=\"/api/v1/nodes\",status=\"200\"} 6",
        "registry_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    server.stop().await;
}
