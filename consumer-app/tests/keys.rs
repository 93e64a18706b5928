//! The queries by key through the real consumer-app binary syncing from a real broker: a key deleted by a
//! tombstone, a key never seen and a key published again after its tombstone; and the list of live keys,
//! paged with several limits, and while a full refresh runs, and checked key by key against a model of what
//! was published.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::{AppProcess, start_broker};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_deletes_its_key_until_the_key_is_published_again() {
    let broker = start_broker().await;
    let data = tempfile::tempdir().unwrap();
    broker
        .publish(
            "prices",
            json!([
                { "key": "AAPL", "value": { "price": 100 } },
                { "key": "MSFT", "value": { "price": 200 } },
                { "key": "AAPL", "tombstone": true },
                { "key": "GHOST", "tombstone": true },
                { "key": SENTINEL, "value": SENTINEL },
            ]),
        )
        .await;
    let app = AppProcess::start(broker.consumers, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    wait_until_indexed(&app, "prices").await;

    let (status, body) = app.get("/api/v1/topics/prices/keys/AAPL").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("deleted")), "{body}");
    assert_eq!((body["key"].as_str(), body["offset"].as_u64()), (Some("AAPL"), Some(2)), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("offset 2"), "{body}");
    // A key whose only record is a tombstone was deleted too.
    let (status, body) = app.get("/api/v1/topics/prices/keys/GHOST").await;
    assert_eq!((status, body["error"].as_str(), body["offset"].as_u64()), (404, Some("deleted"), Some(3)));
    let (status, body) = app.get("/api/v1/topics/prices/keys/NEVER").await;
    assert_eq!(
        (status, body["error"].as_str(), body["key"].as_str()),
        (404, Some("unknown_key"), Some("NEVER"))
    );
    assert!(body.get("offset").is_none(), "{body}");
    let (status, body) = app.get("/api/v1/topics/nope/keys/AAPL").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_topic")));
    let (status, msft) = app.get("/api/v1/topics/prices/keys/MSFT").await;
    assert_eq!((status, msft["offset"].as_u64(), &msft["value"]), (200, Some(1), &json!({ "price": 200 })));

    let (status, page) = app.get("/api/v1/topics/prices/keys").await;
    assert_eq!(status, 200);
    let sentinel = (SENTINEL.to_string(), 4, json!(SENTINEL));
    assert_eq!(listed(&page), vec![("MSFT".to_string(), 1, json!({ "price": 200 })), sentinel]);
    assert_eq!((page["topic"].as_str(), &page["next_after"]), (Some("prices"), &Value::Null));

    broker.publish("prices", json!({ "key": "AAPL", "value": { "price": 101 } })).await;
    let aapl = app.wait_for("/api/v1/topics/prices/keys/AAPL", "AAPL published again", |_| true).await;
    assert_eq!((aapl["offset"].as_u64(), &aapl["value"]), (Some(5), &json!({ "price": 101 })));
    assert!(aapl.get("tombstone").is_none(), "{aapl}");
    let (_, page) = app.get("/api/v1/topics/prices/keys").await;
    let keys: Vec<String> = listed(&page).into_iter().map(|(key, _, _)| key).collect();
    assert_eq!(keys, ["AAPL", "MSFT", SENTINEL]);

    app.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keys_page_in_byte_order_with_their_latest_values() {
    const RECORDS: u64 = 2_500;
    const KEYS: u64 = 700;
    let broker = start_broker().await;
    let data = tempfile::tempdir().unwrap();
    // What the copy must answer: each key's latest record, `None` once a tombstone deleted it.
    let mut model: BTreeMap<Vec<u8>, Option<(u64, Value)>> = BTreeMap::new();
    let mut random = Lcg(0x5eed);
    let mut published = 0;
    while published < RECORDS {
        let mut batch = Vec::new();
        let mut changes = Vec::new();
        for n in published..(published + 250).min(RECORDS) {
            let key = key_name(random.next_u64() % KEYS);
            if random.next_u64() % 100 < 12 {
                batch.push(json!({ "key": key, "tombstone": true }));
                changes.push((key, None));
            } else {
                let value = json!({ "n": n, "key": key });
                batch.push(json!({ "key": key, "value": value }));
                changes.push((key, Some(value)));
            }
        }
        let answer = broker.publish("catalog", Value::Array(batch)).await;
        let first = answer["first_offset"].as_u64().unwrap();
        for (offset, (key, value)) in (first..).zip(changes) {
            model.insert(key.into_bytes(), value.map(|value| (offset, value)));
        }
        published = answer["last_offset"].as_u64().unwrap() + 1;
    }
    let answer = broker.publish("catalog", json!({ "key": SENTINEL, "value": SENTINEL })).await;
    model.insert(
        SENTINEL.as_bytes().to_vec(),
        Some((answer["first_offset"].as_u64().unwrap(), json!(SENTINEL))),
    );
    let live: Vec<(String, u64, Value)> = model
        .iter()
        .filter_map(|(key, latest)| {
            latest.clone().map(|(offset, value)| (String::from_utf8(key.clone()).unwrap(), offset, value))
        })
        .collect();
    let deleted = model.len() - live.len();
    assert!(model.len() > 600 && deleted > 30 && deleted < model.len() / 4, "{deleted} of {}", model.len());

    let app = AppProcess::start(broker.consumers, data.path(), &[("CONSUMER_TOPICS", "catalog")]).await;
    wait_until_indexed(&app, "catalog").await;

    for limit in [None, Some(1), Some(7), Some(333), Some(1000)] {
        let pages = page_through(&app, "catalog", limit, None).await;
        assert_eq!(pages.concat(), live, "limit {limit:?}");
        let full = limit.unwrap_or(100);
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), full, "only the last page may be short (limit {limit:?})");
        }
    }
    // A cursor on a deleted key, on a key never published and on the last live key.
    let deleted_key = model.iter().find(|(_, latest)| latest.is_none()).unwrap().0.clone();
    let after_cursors =
        [String::from_utf8(deleted_key).unwrap(), "key-0500x".to_string(), live.last().unwrap().0.clone()];
    for after in after_cursors {
        let expected: Vec<(String, u64, Value)> = model
            .range::<[u8], _>((Bound::Excluded(after.as_bytes()), Bound::Unbounded))
            .filter_map(|(key, latest)| {
                latest.clone().map(|(offset, value)| (String::from_utf8(key.clone()).unwrap(), offset, value))
            })
            .collect();
        let pages = page_through(&app, "catalog", Some(50), Some(&after)).await;
        assert_eq!(pages.concat(), expected, "after {after:?}");
    }

    // A full refresh builds the same keys in a new generation: pages read while it runs and swaps come from
    // one copy or the other, never from a mix, so every pass through the pages still matches the model.
    let refreshes_before = completed_refreshes(&app.get("/api/v1/stats").await.1);
    let (status, body) = app.post("/api/v1/refresh", r#"{"topic": "catalog"}"#).await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let pages = page_through(&app, "catalog", Some(97), None).await;
        assert_eq!(pages.concat(), live, "during a refresh");
        let (_, stats) = app.get("/api/v1/stats").await;
        if completed_refreshes(&stats) > refreshes_before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refresh did not complete: {stats}");
    }
    let pages = page_through(&app, "catalog", Some(97), None).await;
    assert_eq!(pages.concat(), live, "after a refresh");

    for (query, error) in [
        ("?limit=0", "bad_limit"),
        ("?limit=1001", "bad_limit"),
        ("?limit=lots", "bad_limit"),
        ("?limit=-1", "bad_limit"),
        ("?after_base64=***", "bad_query"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/topics/catalog/keys{query}")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{query}: {body}");
        assert!(body["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{query}: {body}");
    }
    let (status, body) = app.get("/api/v1/topics/nope/keys").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_topic")), "{body}");

    app.stop().await;
    broker.stop().await;
}

/// The key of the record each test publishes last. Records reach the key index in offset order, so once
/// this key is found every record before it is indexed too (the stats' position says only that the records
/// are durable in the log, which comes first).
const SENTINEL: &str = "~last";

/// Waits until the copy of `topic` answers the [`SENTINEL`] key.
async fn wait_until_indexed(app: &AppProcess, topic: &str) {
    app.wait_for(&format!("/api/v1/topics/{topic}/keys/{SENTINEL}"), "the last record indexed", |_| true)
        .await;
}

/// Every page of `GET /api/v1/topics/{topic}/keys` from `after`, following `next_after`; checks that each
/// page's `next_after` is its last key, and `null` only on the last page.
async fn page_through(
    app: &AppProcess,
    topic: &str,
    limit: Option<usize>,
    after: Option<&str>,
) -> Vec<Vec<(String, u64, Value)>> {
    let mut pages = Vec::new();
    let mut after = after.map(str::to_string);
    loop {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(after) = &after {
            query.push(format!("after={}", percent_encode(after)));
        }
        let (status, page) = app.get(&format!("/api/v1/topics/{topic}/keys?{}", query.join("&"))).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["topic"].as_str(), Some(topic));
        let entries = listed(&page);
        let next = page["next_after"].as_str().map(str::to_string);
        match &next {
            Some(next) => assert_eq!(Some(next), entries.last().map(|entry| &entry.0), "{page}"),
            None => assert_eq!(page["next_after"], Value::Null, "{page}"),
        }
        pages.push(entries);
        match next {
            Some(next) => after = Some(next),
            None => return pages,
        }
        assert!(pages.len() <= 1_000, "the pages never end");
    }
}

/// How many refreshes the stats list as completed.
fn completed_refreshes(stats: &Value) -> usize {
    let refreshes = stats["recent_refreshes"].as_array().unwrap_or_else(|| panic!("no refreshes in {stats}"));
    refreshes.iter().filter(|refresh| refresh["outcome"] == "completed").count()
}

/// The `(key, offset, value)` of each entry of a key page; checks that none is a tombstone.
fn listed(page: &Value) -> Vec<(String, u64, Value)> {
    page["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {page}"))
        .iter()
        .map(|entry| {
            assert!(entry.get("tombstone").is_none(), "{entry}");
            assert!(entry["timestamp_ms"].as_u64().is_some(), "{entry}");
            (
                entry["key"].as_str().unwrap().to_string(),
                entry["offset"].as_u64().unwrap(),
                entry["value"].clone(),
            )
        })
        .collect()
}

/// Key number `n`: names whose byte order differs from their numeric order (`key-10` < `key-9`), some
/// with upper case and some with a character of two bytes in UTF-8, which sorts after every ASCII one.
fn key_name(n: u64) -> String {
    match n % 5 {
        0 => format!("Key-{n}"),
        1 => format!("kéy-{n}"),
        _ => format!("key-{n}"),
    }
}

/// Percent-encodes every byte of `text` but ASCII letters and digits.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(
            |byte| {
                if byte.is_ascii_alphanumeric() { (byte as char).to_string() } else { format!("%{byte:02X}") }
            },
        )
        .collect()
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    /// The next number.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}
