//! The test endpoints: bulk injection, loading a SQLite table, and the path check.

mod common;

use common::TestBroker;
use protocol::RecordIter;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_100k_of_1k_and_read_back() {
    let broker = TestBroker::start().await;
    let answer = broker.inject("bulk", 100_000, 1024).await;
    assert_eq!((answer["count"].as_u64(), answer["first_offset"].as_u64()), (Some(100_000), Some(0)));
    assert_eq!(answer["last_offset"], 99_999);
    assert!(answer["elapsed_ms"].is_u64());

    // Read everything back through the raw fetch endpoint.
    let mut next = 0u64;
    let mut requests = 0;
    while next < 100_000 {
        requests += 1;
        assert!(requests < 1_000, "fetch does not advance");
        let response = broker
            .client
            .get(
                broker
                    .url(&format!("/api/v1/topics/bulk/records?from={next}&max_bytes=4194304&limit=100000")),
            )
            .header("accept", "application/octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let header_next: u64 = response.headers()["x-next-offset"].to_str().unwrap().parse().unwrap();
        let bytes = response.bytes().await.unwrap();
        for record in RecordIter::new(&bytes) {
            let record = record.unwrap();
            assert_eq!(record.offset(), next);
            assert_eq!(record.value().len(), 1024);
            assert!(record.value().starts_with(next.to_string().as_bytes()));
            assert_eq!(record.key(), format!("key-{next}").as_bytes());
            next += 1;
        }
        assert_eq!(header_next, next);
    }
    let (_, stats) = broker.get("/test/stats").await;
    assert_eq!(stats["topics"][0]["end_offset"], 100_000);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_from_sqlite_inside_the_allowed_directory_only() {
    let fixtures = tempfile::tempdir().unwrap();
    let allowed = fixtures.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let db = rusqlite::Connection::open(allowed.join("catalog.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT, price REAL, stock INTEGER, photo BLOB);
         INSERT INTO products VALUES ('A-1', 'apple', 0.5, 10, NULL);
         INSERT INTO products VALUES ('B-2', 'bread', 2.25, 3, x'0102');
         INSERT INTO products VALUES ('C-3', 'cheese', 7.0, 0, NULL);",
    )
    .unwrap();
    drop(db);
    std::fs::copy(allowed.join("catalog.sqlite"), fixtures.path().join("outside.sqlite")).unwrap();
    let allowed_dir = allowed.clone();
    let broker = TestBroker::start_with(move |config| config.test_data_dir = Some(allowed_dir)).await;

    let request =
        json!({"path": "catalog.sqlite", "table": "products", "topic": "catalog", "key_column": "sku"});
    let (status, answer) = broker.post("/test/load-from-sqlite", &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["count"].as_u64(), answer["last_offset"].as_u64()), (Some(3), Some(2)));
    let (_, page) = broker.get("/api/v1/topics/catalog/records?from=0").await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[1]["key"], "B-2");
    assert_eq!(
        records[1]["value"],
        json!({"sku": "B-2", "name": "bread", "price": 2.25, "stock": 3, "photo": "AQI="})
    );
    assert_eq!(records[0]["value"]["photo"], serde_json::Value::Null);

    let outside = fixtures.path().join("outside.sqlite");
    for (path, expected) in [
        (outside.to_str().unwrap().to_string(), 403),
        ("../outside.sqlite".to_string(), 403),
        ("/etc/passwd".to_string(), 403),
        ("missing.sqlite".to_string(), 404),
    ] {
        let request = json!({"path": path, "table": "products", "topic": "catalog", "key_column": "sku"});
        let (status, body) = broker.post("/test/load-from-sqlite", &request).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    let bad_table = json!({"path": "catalog.sqlite", "table": "products; DROP TABLE x", "topic": "c", "key_column": "sku"});
    assert_eq!(broker.post("/test/load-from-sqlite", &bad_table).await.0, 400);
    let no_table = json!({"path": "catalog.sqlite", "table": "nothing", "topic": "c", "key_column": "sku"});
    assert_eq!(broker.post("/test/load-from-sqlite", &no_table).await.0, 404);
    let no_column =
        json!({"path": "catalog.sqlite", "table": "products", "topic": "c", "key_column": "nope"});
    assert_eq!(broker.post("/test/load-from-sqlite", &no_column).await.0, 400);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_endpoints_are_off_by_default() {
    let broker = TestBroker::start_with(|config| config.test_endpoints = false).await;
    let (status, _) = broker.get("/test/stats").await;
    assert_eq!(status, 404);
    broker.stop().await;
}
