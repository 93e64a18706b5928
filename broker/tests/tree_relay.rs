//! The whole tree as processes (registry, ROOT, L2, L3, POS, LOCAL): records published at ROOT reach LOCAL
//! with the same offsets and bytes and a TCP consumer on LOCAL gets them all; the registry shows the tree;
//! a graceful stop deregisters. And a child with a bad token or an impossible level is refused with a
//! clear error, on the wire and in the child broker's state and log.

mod tree;

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use protocol::TopicUid;
use protocol::frame::{ErrorCode, Frame, Hello, PROTOCOL_VERSION, Role, StartPosition, TopicStart};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tree::{BackgroundConsumer, DEADLINE, Tree, wait_until};

/// The tree's chain, each node with its expected parent.
const CHAIN: [(&str, &str, &str, &str); 4] = [
    ("l2-eu", "l2", "region=eu", "root"),
    ("l3-s12", "l3", "region=eu,store=s12", "l2-eu"),
    ("pos-1", "pos", "region=eu,store=s12,till=t1", "l3-s12"),
    ("local-1", "local", "region=eu,store=s12,till=t1", "pos-1"),
];

/// Follows the registry's tree from ROOT down the only child at each level.
fn chain_of(topology: &Value) -> Vec<String> {
    let mut chain = Vec::new();
    let mut node = &topology["roots"][0];
    while let Some(id) = node["id"].as_str() {
        chain.push(id.to_string());
        node = &node["children"][0];
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_tree_relays_every_record_verbatim() {
    let mut tree = Tree::new();
    tree.start_registry("registry.sqlite").await;
    tree.add_started("root", "root", &[]).await;
    for (id, level, labels, _) in CHAIN {
        tree.add_started(id, level, &["--labels", labels]).await;
    }
    for (id, _, _, parent) in CHAIN {
        tree.wait_streaming(id, Some(parent)).await;
    }
    // The consumer subscribes before the topic exists anywhere; it is announced and delivered as it comes.
    let consumer = BackgroundConsumer::start(tree.nodes["local-1"].tcp, "till-app", "prices").await;
    let started = Instant::now();
    for _ in 0..5 {
        tree.inject("root", "prices", 20_000, 100).await;
    }
    let injected = started.elapsed();
    let reference = tree.range("root", "prices").await;
    assert_eq!((reference.log_start, reference.end_offset), (0, 100_000));
    tree.wait_copy("local-1", "prices", &reference.uid, 100_000).await;
    let relayed = started.elapsed();
    let copy = consumer.wait_for(&reference.uid, 100_000).await;
    let consumed = started.elapsed();
    println!(
        "100000 records of 100 B: injected at ROOT in {injected:?}, stored at LOCAL (4 hops, durable) after \
         {relayed:?} ({:.0} records/s), consumed over TCP after {consumed:?} ({} build)",
        100_000.0 / relayed.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!("    root: {reference}");
    for (id, _, _, _) in CHAIN {
        tree.assert_same_copy(id, "prices", &reference).await;
    }
    assert_eq!((copy.n_records, copy.duplicates, copy.gaps), (100_000, 0, 0), "{copy:?}");

    // The registry shows the tree, with what each node reports in its heartbeats.
    let topology_url = format!("{}/api/v1/topology", tree.registry_url());
    wait_until("the registry shows the chain with every record at POS", || async {
        let Some(topology) = tree.get_url(&topology_url).await else { return false };
        let pos = topology["nodes"].as_array().unwrap().iter().find(|node| node["id"] == "pos-1").cloned();
        chain_of(&topology) == ["root", "l2-eu", "l3-s12", "pos-1", "local-1"]
            && pos.is_some_and(|pos| {
                pos["stats"]["parent"] == "l3-s12"
                    && pos["stats"]["topics"]["prices"]["end_offset"] == 100_000
                    && pos["stats"]["children"][0] == "local-1"
            })
    })
    .await;
    // Each parent reports its child's lag, zero once everything is acknowledged.
    let metrics_url = format!("http://{}/metrics", tree.http_of("root"));
    wait_until("ROOT reports zero lag for L2", || async {
        let text = tree.http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        text.contains("relay_child_lag{child=\"l2-eu\",topic=\"prices\"} 0")
    })
    .await;
    let cached = std::fs::read_to_string(tree.nodes["pos-1"].data_dir.join("topology.json")).unwrap();
    assert!(cached.contains("l3-s12"), "{cached}");

    // A graceful stop deregisters.
    drop(consumer);
    for id in ["local-1", "pos-1", "l3-s12", "l2-eu", "root"] {
        let status = tree.stop(id);
        assert!(status.success(), "{id} exited with {status}");
        let url = format!("{}/api/v1/nodes/{id}", tree.registry_url());
        assert!(tree.get_url(&url).await.is_none(), "{id} is still registered");
    }
}

/// A pipe HELLO from a raw client.
fn hello(level: u8, token: &str) -> Vec<u8> {
    let frame = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Pipe,
        level,
        client_id: "raw".into(),
        group: "raw".into(),
        token: token.into(),
        max_in_flight: 0,
        batch_max_records: 0,
        batch_max_bytes: 0,
        topics: vec![TopicStart {
            topic: "*".into(),
            uid: TopicUid::UNKNOWN,
            epoch: protocol::NO_EPOCH,
            start: StartPosition::Earliest,
        }],
    });
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    bytes
}

/// Sends one HELLO on a raw WebSocket and returns the ERROR that ends the connection.
async fn refusal(url: &str, hello: Vec<u8>) -> (ErrorCode, String) {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket.send(Message::Binary(hello.into())).await.unwrap();
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next()).await.unwrap().unwrap().unwrap();
        if let Message::Binary(bytes) = message
            && let Frame::Error(error) = Frame::decode(&bytes, 1 << 20).unwrap().unwrap().0
        {
            assert!(error.fatal);
            return (error.code, error.message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_with_a_bad_token_or_an_impossible_level_is_refused() {
    let mut tree = Tree::new();
    tree.add("root", "root", &["--token", "root-secret"]);
    tree.start("root").await;
    tree.inject("root", "prices", 10, 10).await;
    let root_url = format!("http://{}", tree.http_of("root"));
    let pipe_url = format!("ws://{}/api/v1/pipe", tree.http_of("root"));

    let (code, message) = refusal(&pipe_url, hello(1, "guess")).await;
    assert_eq!(code, ErrorCode::Unauthorized, "{message}");
    let (code, message) = refusal(&pipe_url, hello(2, "root-secret")).await;
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("level L3 cannot be a child of this ROOT node"), "{message}");

    tree.add("l2-bad-token", "l2", &["--parent-url", &root_url, "--parent-token", "guess"]);
    tree.add("l3-too-high", "l3", &["--parent-url", &root_url, "--parent-token", "root-secret"]);
    tree.add("l2-good", "l2", &["--parent-url", &root_url, "--token", "root-secret"]);
    for id in ["l2-bad-token", "l3-too-high", "l2-good"] {
        tree.start(id).await;
    }
    for (id, expected) in
        [("l2-bad-token", "UNAUTHORIZED"), ("l3-too-high", "level L3 cannot be a child of this ROOT node")]
    {
        wait_until(&format!("{id} reports the refusal"), || async {
            let Some(node) = tree.get(id, "/api/v1/node").await else { return false };
            node["pipe"]["state"] == "refused"
                && node["pipe"]["last_error"].as_str().is_some_and(|error| error.contains(expected))
        })
        .await;
        let log = tree.log_of(id);
        assert!(
            log.lines().any(|line| line.contains("the parent refused the pipe") && line.contains(expected)),
            "{id} logs no clear refusal:\n{log}"
        );
        // Refused and holding nothing, it is not ready; it stays up and keeps trying.
        let ready = tree.http.get(format!("http://{}/ready", tree.http_of(id))).send().await.unwrap();
        assert_eq!(ready.status(), 503);
    }
    // The same token as ROOT's, given with --token, is what a child presents by default.
    tree.wait_streaming("l2-good", None).await;
    let reference = tree.range("root", "prices").await;
    tree.wait_copy("l2-good", "prices", &reference.uid, 10).await;
    tree.assert_all_running();
    // A refused child still stops cleanly.
    let status = tree.stop("l2-bad-token");
    assert!(status.success(), "{status}");
}
