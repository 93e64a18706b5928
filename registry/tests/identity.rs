//! Node identities (`--nodes-file`) through the real `registry` binary: every node proves itself with its own
//! token, so the hijack of ROOT's entry, an impostor with a sibling's token, a second ROOT, an anonymous
//! DELETE and a node claiming another level are refused with a clear error and change nothing; and a bad
//! nodes file stops the registry at start with one line.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;

use common::{ProcessGuard, listening_address};

const BINARY: &str = env!("CARGO_BIN_EXE_registry");

const ROOT_TOKEN: &str = "root-secret-0123456789";
const L2_TOKEN: &str = "l2-secret-0123456789ab";

/// Starts the binary with `nodes_file` and answers it with its address.
fn start(dir: &tempfile::TempDir, nodes_file: &std::path::Path) -> (ProcessGuard, String) {
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-json", "--db"])
        .arg(dir.path().join("registry.sqlite"))
        .arg("--nodes-file")
        .arg(nodes_file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the registry");
    let address = listening_address(&mut child);
    (ProcessGuard(child), address)
}

/// Sends a request and answers the status and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn node(id: &str, level: &str, http_addr: &str) -> Value {
    json!({"id": id, "level": level, "labels": {"region": "eu"}, "http_addr": http_addr, "tcp_addr": "127.0.0.1:9091"})
}

#[tokio::test]
async fn only_a_node_itself_may_register_heartbeat_or_delete_it_and_only_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let nodes_file = dir.path().join("nodes.json");
    std::fs::write(
        &nodes_file,
        json!({"nodes": [
            {"id": "root", "level": "ROOT", "token": ROOT_TOKEN},
            {"id": "l2", "level": "L2", "token": L2_TOKEN, "labels": {"region": "eu"}},
        ]})
        .to_string(),
    )
    .unwrap();
    let (_guard, address) = start(&dir, &nodes_file);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{address}{path}");

    // The real nodes register with their own tokens.
    let (status, body) = send(http.post(url("/api/v1/nodes")).bearer_auth(ROOT_TOKEN).json(&node(
        "root",
        "ROOT",
        "10.0.0.1:8080",
    )))
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        send(http.post(url("/api/v1/nodes")).bearer_auth(L2_TOKEN).json(&node("l2", "L2", "10.0.0.2:8080")))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["parent"], "root", "{body}");

    // The hijack: re-registering ROOT with an attacker's address, anonymously or with a sibling's token.
    let hijack = node("root", "ROOT", "6.6.6.6:8080");
    for request in [
        http.post(url("/api/v1/nodes")).json(&hijack),
        http.post(url("/api/v1/nodes")).bearer_auth(L2_TOKEN).json(&hijack),
        http.post(url("/api/v1/nodes")).bearer_auth("root-secret-012345678X").json(&hijack),
    ] {
        let (status, body) = send(request).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    }
    // A second ROOT, a node claiming another level, an impostor of a sibling, an id nobody configured.
    let (status, body) = send(http.post(url("/api/v1/nodes")).bearer_auth(L2_TOKEN).json(&node(
        "l2",
        "ROOT",
        "10.0.0.2:8080",
    )))
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("not_allowed")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("only as L2"), "{body}");
    let relabelled =
        json!({"id": "l2", "level": "L2", "labels": {"region": "us"}, "http_addr": "10.0.0.2:8080"});
    let (status, body) = send(http.post(url("/api/v1/nodes")).bearer_auth(L2_TOKEN).json(&relabelled)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("not_allowed")), "{body}");
    let (status, _) = send(http.post(url("/api/v1/nodes")).bearer_auth(L2_TOKEN).json(&node(
        "root2",
        "ROOT",
        "6.6.6.6:8080",
    )))
    .await;
    assert_eq!(status, 401);
    // Heartbeats and the parent query of another node, and anonymous or foreign DELETEs.
    let (status, _) =
        send(http.post(url("/api/v1/nodes/root/heartbeat")).bearer_auth(L2_TOKEN).json(&json!({}))).await;
    assert_eq!(status, 401);
    let (status, _) = send(http.get(url("/api/v1/nodes/l2/parent")).bearer_auth(ROOT_TOKEN)).await;
    assert_eq!(status, 401);
    for request in
        [http.delete(url("/api/v1/nodes/root")), http.delete(url("/api/v1/nodes/root")).bearer_auth(L2_TOKEN)]
    {
        let (status, body) = send(request).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    }

    // Nothing changed: ROOT is still where it was, the only ROOT, and L2 still follows it.
    let (_, nodes) = send(http.get(url("/api/v1/nodes"))).await;
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let root = nodes.iter().find(|node| node["id"] == "root").unwrap();
    assert_eq!((root["http_addr"].as_str(), root["level"].as_str()), (Some("10.0.0.1:8080"), Some("ROOT")));
    let (status, parent) = send(http.get(url("/api/v1/nodes/l2/parent")).bearer_auth(L2_TOKEN)).await;
    assert_eq!((status, parent["parent"]["http_addr"].as_str()), (200, Some("10.0.0.1:8080")), "{parent}");
    // Each node's own calls still work, DELETE included.
    let (status, _) =
        send(http.post(url("/api/v1/nodes/root/heartbeat")).bearer_auth(ROOT_TOKEN).json(&json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = send(http.delete(url("/api/v1/nodes/l2")).bearer_auth(L2_TOKEN)).await;
    assert_eq!(status, 204);
}

#[test]
fn a_bad_nodes_file_stops_the_registry_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let nodes_file = dir.path().join("nodes.json");
    for (text, expected) in [
        ("not json", "not a nodes file"),
        (r#"{"nodes": [{"id": "root", "level": "ROOT", "token": "short"}]}"#, "at least 16"),
    ] {
        std::fs::write(&nodes_file, text).unwrap();
        let output = Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("registry.sqlite"))
            .arg("--nodes-file")
            .arg(&nodes_file)
            .output()
            .expect("run the registry");
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("registry: the nodes file") && stderr.contains(expected), "{stderr}");
    }
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--nodes-file"])
        .arg(dir.path().join("missing.json"))
        .output()
        .expect("run the registry");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the nodes file"));
}
