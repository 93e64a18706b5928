//! The REST API over a local copy filled directly: queries, pagination, keys, stats, refresh requests,
//! and the JSON 400/404 answers to bad requests.

mod common;

use axum::http::StatusCode;
use common::{FIVE, call, five_records, get, offsets, open_copy, records, router};
use consumer_app::sync::SyncCommand;
use protocol::TopicUid;

const UID: TopicUid = TopicUid(0xA1);

#[tokio::test]
async fn five_records_in_order_by_key_and_in_stats() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &five_records(), |_| {}).unwrap();
    let (router, _status, _commands) = router(copy);

    let (status, page) = get(&router, "/api/v1/topics/prices/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(offsets(&page), vec![0, 1, 2, 3, 4]);
    let keys: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, FIVE);
    assert_eq!(page["next"], serde_json::Value::Null);
    assert_eq!(page["uid"], UID.to_string());

    let (status, record) = get(&router, "/api/v1/topics/prices/keys/AAPL").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["value"]["symbol"], "AAPL");
    assert_eq!(record["value"]["price"], 100);

    let (status, record) = get(&router, "/api/v1/topics/prices/messages/3").await;
    assert_eq!((status, record["key"].as_str()), (StatusCode::OK, Some("TSLA")));

    let (status, stats) = get(&router, "/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    let prices = &stats["topics"]["prices"];
    assert_eq!((prices["records"].as_u64(), prices["position"].as_u64()), (Some(5), Some(5)));
    assert_eq!((prices["first_offset"].as_u64(), prices["last_offset"].as_u64()), (Some(0), Some(4)));
    assert!(prices["bytes"].as_u64().unwrap() > 0);

    let (status, topics) = get(&router, "/api/v1/topics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(topics[0]["topic"], "prices");
    assert_eq!(topics[0]["records"], 5);

    let (status, segments) = get(&router, "/api/v1/segments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(segments[0]["segments"][0]["base_offset"], 0);
}

#[tokio::test]
async fn pages_follow_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append(
        "prices",
        UID,
        &records(0..250, |offset| (format!("k{offset}"), format!("{offset}"))),
        |_| {},
    )
    .unwrap();
    let (router, _status, _commands) = router(copy);

    let (_, first) = get(&router, "/api/v1/topics/prices/messages").await;
    assert_eq!(offsets(&first).len(), 100, "the default limit is 100");
    let mut all = Vec::new();
    let mut uri = "/api/v1/topics/prices/messages?limit=70".to_string();
    for _ in 0..10 {
        let (status, page) = get(&router, &uri).await;
        assert_eq!(status, StatusCode::OK);
        all.extend(offsets(&page));
        match page["next"].as_u64() {
            Some(next) => uri = format!("/api/v1/topics/prices/messages?limit=70&from={next}"),
            None => break,
        }
    }
    assert_eq!(all, (0..250).collect::<Vec<_>>());
    let (_, last) = get(&router, "/api/v1/topics/prices/messages?from=250").await;
    assert!(offsets(&last).is_empty());
    assert_eq!(last["next"], serde_json::Value::Null);
    let (_, max) = get(&router, "/api/v1/topics/prices/messages?limit=1000").await;
    assert_eq!(offsets(&max).len(), 250);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &five_records(), |_| {}).unwrap();
    copy.append("prices", UID, &common::tombstone(5, "AAPL"), |_| {}).unwrap();
    let (router, _status, _commands) = router(copy);

    let cases = [
        ("/api/v1/topics/nope/messages", StatusCode::NOT_FOUND, "unknown_topic"),
        ("/api/v1/topics/nope/messages/0", StatusCode::NOT_FOUND, "unknown_topic"),
        ("/api/v1/topics/nope/keys/AAPL", StatusCode::NOT_FOUND, "unknown_topic"),
        ("/api/v1/topics/prices/messages/abc", StatusCode::BAD_REQUEST, "bad_offset"),
        ("/api/v1/topics/prices/messages/-1", StatusCode::BAD_REQUEST, "bad_offset"),
        ("/api/v1/topics/prices/messages/99", StatusCode::NOT_FOUND, "no_such_offset"),
        ("/api/v1/topics/prices/messages?from=x", StatusCode::BAD_REQUEST, "bad_offset"),
        ("/api/v1/topics/prices/messages?from=99", StatusCode::BAD_REQUEST, "bad_offset"),
        ("/api/v1/topics/prices/messages?limit=1001", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/api/v1/topics/prices/messages?limit=0", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/api/v1/topics/prices/keys/UNKNOWN", StatusCode::NOT_FOUND, "unknown_key"),
        ("/api/v1/topics/prices/keys/AAPL", StatusCode::NOT_FOUND, "deleted"),
        ("/api/v1/topics/nope/keys", StatusCode::NOT_FOUND, "unknown_topic"),
        ("/api/v1/topics/prices/keys?limit=0", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/api/v1/topics/prices/keys?limit=1001", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/api/v1/topics/prices/keys?limit=ten", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/api/v1/topics/prices/keys?after_base64=%21%21", StatusCode::BAD_REQUEST, "bad_query"),
        ("/api/v1/topics/prices/keys?after=A&after_base64=QQ%3D%3D", StatusCode::BAD_REQUEST, "bad_query"),
        ("/api/v1/dead-letters?limit=5000", StatusCode::BAD_REQUEST, "bad_limit"),
        ("/no/such/route", StatusCode::NOT_FOUND, "no_such_route"),
    ];
    for (uri, expected_status, expected_error) in cases {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, expected_status, "{uri}: {body}");
        assert_eq!(body["error"], expected_error, "{uri}: {body}");
        assert!(body["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{uri}: {body}");
    }
    // The 404s name the key, and `deleted` gives the tombstone's offset.
    let (_, deleted) = get(&router, "/api/v1/topics/prices/keys/AAPL").await;
    assert_eq!((deleted["key"].as_str(), deleted["offset"].as_u64()), (Some("AAPL"), Some(5)));
    let (_, unknown) = get(&router, "/api/v1/topics/prices/keys/UNKNOWN").await;
    assert_eq!((unknown["key"].as_str(), unknown.get("offset")), (Some("UNKNOWN"), None));
    // GOOGL is still there after AAPL's tombstone.
    assert_eq!(get(&router, "/api/v1/topics/prices/keys/GOOGL").await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_requests_are_remembered_and_sent_to_the_sync_loop() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &five_records(), |_| {}).unwrap();
    copy.append("catalog", UID, &five_records(), |_| {}).unwrap();
    let (router, _status, mut commands) = router(copy.clone());

    let (status, body) = call(&router, "POST", "/api/v1/refresh", r#"{"topic":"nope"}"#).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_topic")));
    let (status, body) = call(&router, "POST", "/api/v1/refresh", r#"{"topic":"#).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_json")));
    let (status, body) = call(&router, "POST", "/api/v1/refresh", r#"{"topik":"prices"}"#).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_json")));
    let (status, body) = call(&router, "GET", "/api/v1/refresh", "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let too_big = format!(r#"{{"topic":"{}"}}"#, "x".repeat(100_000));
    let (status, body) = call(&router, "POST", "/api/v1/refresh", &too_big).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));

    let (status, body) = call(&router, "POST", "/api/v1/refresh", r#"{"topic":"prices"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["requested"], serde_json::json!(["prices"]));
    assert_eq!(commands.try_recv().unwrap(), SyncCommand::Refresh(vec!["prices".into()]));
    assert_eq!(copy.db().pending_refreshes().unwrap(), vec!["prices".to_string()]);

    let (status, _) = call(&router, "POST", "/api/v1/refresh", "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(commands.try_recv().unwrap(), SyncCommand::Refresh(vec!["catalog".into(), "prices".into()]));
    assert_eq!(copy.db().pending_refreshes().unwrap().len(), 2);
}

#[tokio::test]
async fn health_ready_metrics_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let (router, status, _commands) = router(open_copy(dir.path()));
    assert_eq!(get(&router, "/health").await.0, StatusCode::OK);
    let (code, body) = get(&router, "/ready").await;
    assert_eq!((code, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")));
    status.set_ready();
    assert_eq!(get(&router, "/ready").await.0, StatusCode::OK);
    let (code, document) = get(&router, "/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    for path in consumer_app::http::openapi::DOCUMENTED_PATHS {
        assert!(document["paths"].get(*path).is_some(), "{path}");
    }
    let request = axum::http::Request::builder().uri("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("consumer_app_end_to_end_latency_seconds"), "{text}");
    let (code, letters) = get(&router, "/api/v1/dead-letters").await;
    assert_eq!((code, letters), (StatusCode::OK, serde_json::json!([])));
}

#[tokio::test]
async fn keys_that_are_not_text_page_by_base64_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    let mut bytes = Vec::new();
    for (offset, key) in [b"b".as_slice(), b"\xff\x00", b"a", b"\xfe"].into_iter().enumerate() {
        protocol::NewRecord::new(key, b"1").encode_to_vec(offset as u64, 1_700_000_000_000, &mut bytes);
    }
    copy.append("raw", UID, &bytes, |_| {}).unwrap();
    copy.append("raw", UID, &common::tombstone(4, "b"), |_| {}).unwrap();
    let (router, _status, _commands) = router(copy);

    let (status, page) = get(&router, "/api/v1/topics/raw/keys?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (page["keys"][0]["key"].as_str(), page["keys"][1]["key_base64"].as_str()),
        (Some("a"), Some("/g=="))
    );
    assert_eq!(
        (&page["next_after"], page["next_after_base64"].as_str()),
        (&serde_json::Value::Null, Some("/g=="))
    );
    let (status, page) = get(&router, "/api/v1/topics/raw/keys?limit=2&after_base64=%2Fg%3D%3D").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["keys"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(
        (page["keys"][0]["key_base64"].as_str(), page["keys"][0]["offset"].as_u64()),
        (Some("/wA="), Some(1))
    );
    assert_eq!(page["next_after"], serde_json::Value::Null);
    assert!(page.get("next_after_base64").is_none(), "{page}");
}
