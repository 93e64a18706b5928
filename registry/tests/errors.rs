//! Bad input gets the documented 4xx status and a JSON body `{"error", "detail"}`, never axum's plain text;
//! a configured token is enforced.

mod common;

use common::{TestServer, node_body, settings};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Asserts the status and the error name, and that the detail says something.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, error: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    assert!(!answer.1["detail"].as_str().unwrap_or_default().is_empty(), "{}", answer.1);
}

fn detail(answer: &(StatusCode, Value)) -> String {
    answer.1["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    let raw = |body: &'static str| {
        server.client.post(server.url("/api/v1/nodes")).header("content-type", "application/json").body(body)
    };
    assert_error(&server.send(raw("{not json")).await, StatusCode::BAD_REQUEST, "bad_json");
    assert_error(&server.send(raw("[]")).await, StatusCode::BAD_REQUEST, "bad_json");
    let missing = server.send(raw(r#"{"level": "L2", "http_addr": "h:1"}"#)).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "bad_json");
    assert!(detail(&missing).contains("id"), "{}", detail(&missing));
    let wrong_type = server.send(raw(r#"{"id": "a", "level": 2, "http_addr": "h:1"}"#)).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "bad_json");

    let big = json!({"id": "a", "level": "L2", "http_addr": "h:1", "labels": {"k": "v".repeat(70 * 1024)}});
    assert_error(&server.post("/api/v1/nodes", &big).await, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    server.register("root", "ROOT", json!({})).await;
    let bad_heartbeat = server.post("/api/v1/nodes/root/heartbeat", &json!({"consumers": "many"})).await;
    assert_error(&bad_heartbeat, StatusCode::BAD_REQUEST, "bad_json");
    server.stop().await;
}

#[tokio::test]
async fn bad_fields_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    let unknown_level = server.post("/api/v1/nodes", &node_body("a", "L9", json!({}))).await;
    assert_error(&unknown_level, StatusCode::BAD_REQUEST, "unknown_level");
    assert!(detail(&unknown_level).contains("L9"));
    for id in ["", "a/b", "white space", "ümlaut"] {
        let answer = server.post("/api/v1/nodes", &node_body(id, "L2", json!({}))).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_field");
    }
    let long = "x".repeat(129);
    assert_error(
        &server.post("/api/v1/nodes", &node_body(&long, "L2", json!({}))).await,
        StatusCode::BAD_REQUEST,
        "bad_field",
    );
    server.register(&"x".repeat(128), "L2", json!({})).await;
    let mut no_address = node_body("a", "L2", json!({}));
    no_address["http_addr"] = json!("");
    assert_error(&server.post("/api/v1/nodes", &no_address).await, StatusCode::BAD_REQUEST, "bad_field");
    server.stop().await;
}

#[tokio::test]
async fn registrations_that_would_break_the_tree_are_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    server.register("root", "ROOT", json!({})).await;
    server.register("l2", "L2", json!({})).await;
    server.register("l3", "L3", json!({})).await;
    server.register("pos", "POS", json!({})).await;

    let relevel = server.post("/api/v1/nodes", &node_body("l2", "L3", json!({}))).await;
    assert_error(&relevel, StatusCode::CONFLICT, "level_conflict");

    let with_preferred = |id: &str, level: &str, preferred: &str| {
        let mut body = node_body(id, level, json!({}));
        body["preferred_parent"] = json!(preferred);
        body
    };
    let itself = server.post("/api/v1/nodes", &with_preferred("l3", "L3", "l3")).await;
    assert_error(&itself, StatusCode::CONFLICT, "cycle");
    assert!(detail(&itself).contains("would make a cycle"));
    let below = server.post("/api/v1/nodes", &with_preferred("l3", "L3", "pos")).await;
    assert_error(&below, StatusCode::CONFLICT, "cycle");
    assert!(detail(&below).contains("would make a cycle"));
    let skip = server.post("/api/v1/nodes", &with_preferred("pos", "POS", "l2")).await;
    assert_error(&skip, StatusCode::CONFLICT, "skips_level");
    assert!(detail(&skip).contains("would skip a level"));
    let unregistered = server.post("/api/v1/nodes", &with_preferred("l3", "L3", "l3-other-not-yet")).await;
    assert_eq!(
        unregistered.0,
        StatusCode::OK,
        "an unregistered preferred parent cannot be judged: {}",
        unregistered.1
    );
    server.register("l3-b", "L3", json!({})).await;
    let sibling = server.post("/api/v1/nodes", &with_preferred("l3", "L3", "l3-b")).await;
    assert_error(&sibling, StatusCode::CONFLICT, "wrong_level");
    server.stop().await;
}

#[tokio::test]
async fn unknown_nodes_paths_methods_and_queries_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(&dir)).await;
    assert_error(
        &server.post("/api/v1/nodes/ghost/heartbeat", &json!({})).await,
        StatusCode::NOT_FOUND,
        "unknown_node",
    );
    assert_error(&server.get("/api/v1/nodes/ghost").await, StatusCode::NOT_FOUND, "unknown_node");
    let delete = server.send(server.client.delete(server.url("/api/v1/nodes/ghost"))).await;
    assert_error(&delete, StatusCode::NOT_FOUND, "unknown_node");
    assert_error(&server.get("/api/v2/nothing").await, StatusCode::NOT_FOUND, "no_such_route");
    let put = server.send(server.client.put(server.url("/api/v1/nodes"))).await;
    assert_error(&put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_error(
        &server.get("/api/v1/topology/history?limit=lots").await,
        StatusCode::BAD_REQUEST,
        "bad_query",
    );
    let many = vec!["x"; 65].join(",");
    assert_error(
        &server.get(&format!("/api/v1/nodes/ghost/parent?exclude={many}")).await,
        StatusCode::BAD_REQUEST,
        "bad_query",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_required_for_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&dir);
    settings.token = Some("s3cret".to_owned());
    let server = TestServer::start(settings).await;
    let body = node_body("root", "ROOT", json!({}));

    assert_error(&server.post("/api/v1/nodes", &body).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong =
        server.send(server.client.post(server.url("/api/v1/nodes")).bearer_auth("guess").json(&body)).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let mut with_field = body.clone();
    with_field["token"] = json!("s3cret");
    assert_eq!(server.post("/api/v1/nodes", &with_field).await.0, StatusCode::OK);

    let heartbeat = server.url("/api/v1/nodes/root/heartbeat");
    let unauthenticated = server.send(server.client.post(&heartbeat).json(&json!({}))).await;
    assert_error(&unauthenticated, StatusCode::UNAUTHORIZED, "unauthorized");
    let authenticated =
        server.send(server.client.post(&heartbeat).bearer_auth("s3cret").json(&json!({}))).await;
    assert_eq!(authenticated.0, StatusCode::OK, "{}", authenticated.1);

    let parent = server.url("/api/v1/nodes/root/parent");
    assert_error(&server.send(server.client.get(&parent)).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(server.send(server.client.get(&parent).bearer_auth("s3cret")).await.0, StatusCode::OK);

    let node = server.url("/api/v1/nodes/root");
    assert_error(&server.send(server.client.delete(&node)).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(server.get("/api/v1/topology").await.0, StatusCode::OK, "reading needs no token");
    assert_eq!(
        server.send(server.client.delete(&node).bearer_auth("s3cret")).await.0,
        StatusCode::NO_CONTENT
    );
    server.stop().await;
}
