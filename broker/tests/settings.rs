//! Topic settings over HTTP and down the tree, in-process: `PUT /api/v1/topics/{topic}` at ROOT creates a
//! topic with settings or replaces them, refuses bad input naming the field and refuses any node but
//! ROOT; a child broker's copy carries the same settings, including a change made while it streams, and
//! its retention applies them.

mod common;

use broker::config::Level;
use common::{TestBroker, wait_until};
use serde_json::{Value, json};

/// The `settings` of a topic as `node` shows it, or `Null` if it does not have the topic.
async fn settings_on(node: &TestBroker, topic: &str) -> Value {
    let (status, answer) = node.get(&format!("/api/v1/topics/{topic}")).await;
    if status == 404 { Value::Null } else { answer["settings"].clone() }
}

/// Waits until `node` shows `expected` as the settings of `topic`.
async fn wait_for_settings(node: &TestBroker, topic: &str, expected: &Value) {
    let what = format!("{} shows settings {expected} for {topic}", node.node.config.node_id);
    wait_until(&what, || async { settings_on(node, topic).await == *expected }).await;
}

#[tokio::test]
async fn put_at_root_creates_a_topic_with_settings_and_replaces_them_whole() {
    let root = TestBroker::start().await;
    let body = r#"{"cleanup": "compact", "retention_bytes": "256M", "retention_age": "7d", "tombstone_retention": "1d"}"#;
    let (status, created) = root.put("/api/v1/topics/prices", body).await;
    assert_eq!(status, 201, "{created}");
    let expected = json!({"explicit": true, "cleanup": "compact", "retention_bytes": 256u64 << 20,
        "retention_age_ms": 7 * 86_400_000u64, "tombstone_retention_ms": 86_400_000u64});
    assert_eq!(created["settings"], expected);
    assert_eq!((created["topic"].as_str(), created["end_offset"].as_u64()), (Some("prices"), Some(0)));
    let uid = created["uid"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 32);

    // Publishing keeps the uid and the settings; GET and the list show them.
    root.publish("prices", json!({"key": "k", "value": 1})).await;
    let (_, described) = root.get("/api/v1/topics/prices").await;
    assert_eq!((described["uid"].as_str(), &described["settings"]), (Some(uid.as_str()), &expected));
    let (_, list) = root.get("/api/v1/topics").await;
    assert_eq!(list["topics"][0]["settings"], expected);

    // Changing them replaces the whole: fields left out are no limit.
    let (status, changed) =
        root.put("/api/v1/topics/prices", r#"{"cleanup": "compact,delete", "retention_bytes": 1000}"#).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["uid"].as_str(), Some(uid.as_str()));
    assert_eq!(
        changed["settings"],
        json!({"explicit": true, "cleanup": "compact,delete", "retention_bytes": 1000,
            "retention_age_ms": null, "tombstone_retention_ms": null})
    );

    // An empty body (or {}) means the broker's defaults, shown as such; so does a topic a publish created.
    let (status, reset) = root.put("/api/v1/topics/prices", "").await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["settings"]["explicit"], false);
    assert_eq!(reset["settings"]["cleanup"], "delete");
    let (status, _) = root.put("/api/v1/topics/empty-object", "{}").await;
    assert_eq!(status, 201);
    root.publish("published", json!({"key": "k", "value": 1})).await;
    assert_eq!(settings_on(&root, "published").await["explicit"], false);
    assert_eq!(settings_on(&root, "empty-object").await["explicit"], false);

    // The settings survive a restart.
    root.put("/api/v1/topics/prices", body).await;
    let root = root.restart().await;
    assert_eq!(settings_on(&root, "prices").await, expected);
    root.stop().await;
}

#[tokio::test]
async fn bad_settings_get_a_400_naming_the_field() {
    let root = TestBroker::start().await;
    let cases = [
        (r#"{"cleanup": "shred"}"#, "cleanup"),
        (r#"{"cleanup": 1}"#, "cleanup"),
        (r#"{"retention_bytes": -1}"#, "retention_bytes"),
        (r#"{"retention_bytes": 1.5}"#, "retention_bytes"),
        (r#"{"retention_bytes": "12 parsecs"}"#, "retention_bytes"),
        (r#"{"retention_age": 3600}"#, "retention_age"),
        (r#"{"retention_age": "3600"}"#, "retention_age"),
        (r#"{"retention_age": "-7d"}"#, "retention_age"),
        (r#"{"tombstone_retention": "soon"}"#, "tombstone_retention"),
        (r#"{"retention": "7d"}"#, "retention"),
        (r#"{"cleanup": "compact""#, "EOF"),
        (r#"["compact"]"#, "not a JSON object"),
        (r#""compact""#, "not a JSON object"),
    ];
    for (body, field) in cases {
        let (status, answer) = root.put("/api/v1/topics/t", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{body}: {detail:?} should name {field}");
        assert!(!detail.contains('\n'), "one line: {detail:?}");
    }
    let (status, answer) = root.put("/api/v1/topics/bad%20name", "{}").await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_topic_name")));
    // Nothing was created by the refused requests.
    let (_, list) = root.get("/api/v1/topics").await;
    assert_eq!(list["topics"], json!([]));
    root.stop().await;
}

#[tokio::test]
async fn settings_set_at_root_reach_a_child_and_follow_changes_while_it_streams() {
    let root = TestBroker::start().await;
    let compact = r#"{"cleanup": "compact", "tombstone_retention": "1d"}"#;
    let (status, _) = root.put("/api/v1/topics/made", compact).await;
    assert_eq!(status, 201);
    root.publish("plain", json!({"key": "k", "value": 1})).await;
    let child = TestBroker::start_child(&root, Level::L2, "l2-settings").await;

    // A child refuses PUT: settings are set at ROOT.
    let (status, answer) = child.put("/api/v1/topics/made", compact).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("not_root")), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("not ROOT"), "{answer}");

    let expected = json!({"explicit": true, "cleanup": "compact", "retention_bytes": null,
        "retention_age_ms": null, "tombstone_retention_ms": 86_400_000u64});
    wait_for_settings(&child, "made", &expected).await;
    wait_until("the child holds plain", || async { settings_on(&child, "plain").await["explicit"] == false })
        .await;

    // A change at ROOT while the child streams reaches it, without a refresh.
    let uid = child.node.store.topic("plain").unwrap().uid();
    root.publish("plain", json!({"key": "k", "value": 2})).await;
    let (status, _) = root.put("/api/v1/topics/plain", r#"{"retention_age": "12h"}"#).await;
    assert_eq!(status, 200);
    let changed = json!({"explicit": true, "cleanup": "delete", "retention_bytes": null,
        "retention_age_ms": 12 * 3_600_000u64, "tombstone_retention_ms": null});
    wait_for_settings(&child, "plain", &changed).await;
    // A topic created by PUT after the child connected arrives with its settings.
    root.put("/api/v1/topics/later", r#"{"cleanup": "compact,delete", "retention_bytes": "1K"}"#).await;
    let later = json!({"explicit": true, "cleanup": "compact,delete", "retention_bytes": 1024,
        "retention_age_ms": null, "tombstone_retention_ms": null});
    wait_for_settings(&child, "later", &later).await;
    // The child's retention applies them: its own limits are the topic's, whatever its configuration.
    assert_eq!(child.node.store.topic("later").unwrap().retention_limits(), (Some(1024), None));
    assert_eq!(child.node.store.topic("made").unwrap().retention_limits(), (None, None), "compact keeps all");
    // And back to defaults.
    root.put("/api/v1/topics/made", "").await;
    wait_until("the child's made is back to defaults", || async {
        settings_on(&child, "made").await["explicit"] == false
    })
    .await;
    let plain = child.node.store.topic("plain").unwrap();
    assert_eq!(plain.uid(), uid, "the copy was kept, not refreshed");
    wait_until("the child holds both records", || async { plain.readable_offset() == 2 }).await;

    // A full refresh of the child's copy (an operator refresh of its group) carries them into the new copy.
    let (status, answer) = root.post("/api/v1/groups/l2-settings/refresh", &json!({"topic": "plain"})).await;
    assert_eq!(status, 200, "{answer}");
    wait_until("the child's plain is a new copy", || async {
        child
            .node
            .store
            .topic("plain")
            .is_some_and(|log| !std::sync::Arc::ptr_eq(&log, &plain) && log.readable_offset() == 2)
    })
    .await;
    assert_eq!(settings_on(&child, "plain").await, changed);

    // The child keeps them across its own restart, before its parent says anything.
    let root_dir = root.stop().await;
    let child = child.restart().await;
    assert_eq!(settings_on(&child, "plain").await, changed);
    assert_eq!(settings_on(&child, "later").await, later);
    child.stop().await;
    drop(root_dir);
}
