//! The hand-written OpenAPI 3 document of the REST API, served at `/openapi.json`. It describes the
//! endpoints in `http/`; a test checks that every route the router serves is listed here.

use serde_json::{Value, json};

/// Paths the document lists, in the order the router declares them; kept beside the document so the
/// test can compare both ways.
pub const DOCUMENTED_PATHS: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/api/v1/topics",
    "/api/v1/topics/{topic}/messages",
    "/api/v1/topics/{topic}/messages/{offset}",
    "/api/v1/topics/{topic}/keys",
    "/api/v1/topics/{topic}/keys/{key}",
    "/api/v1/stats",
    "/api/v1/segments",
    "/api/v1/refresh",
    "/api/v1/dead-letters",
];

/// The OpenAPI document.
pub fn document() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let topic = json!({ "name": "topic", "in": "path", "required": true, "schema": { "type": "string" } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "consumer-app",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A durable local copy of relay topics, kept current by push from a broker. \
                            Queries answer from the last complete copy: during a full refresh, the old one."
        },
        "paths": {
            "/health": { "get": { "summary": "Liveness", "responses": { "200": { "description": "alive" } } } },
            "/ready": { "get": {
                "summary": "Readiness: after the first READY or once caught up with the broker",
                "responses": { "200": { "description": "ready" }, "503": { "description": "not yet" } }
            } },
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "responses": { "200": { "description": "text exposition format",
                    "content": { "application/openmetrics-text": {} } } }
            } },
            "/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3" } } } },
            "/api/v1/topics": { "get": {
                "summary": "Topics held locally",
                "responses": { "200": { "description": "topics", "content": { "application/json": { "schema": {
                    "type": "array", "items": { "$ref": "#/components/schemas/Topic" } } } } } }
            } },
            "/api/v1/topics/{topic}/messages": { "get": {
                "summary": "Records from an offset, in offset order",
                "parameters": [
                    topic,
                    { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0 },
                      "description": "first offset wanted; default the start of the copy" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
                ],
                "responses": {
                    "200": { "description": "a page", "content": { "application/json": { "schema": {
                        "$ref": "#/components/schemas/MessagePage" } } } },
                    "400": error, "404": error
                }
            } },
            "/api/v1/topics/{topic}/messages/{offset}": { "get": {
                "summary": "One record by offset",
                "parameters": [ topic, { "name": "offset", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } } ],
                "responses": {
                    "200": { "description": "the record", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Record" } } } },
                    "400": error, "404": error
                }
            } },
            "/api/v1/topics/{topic}/keys": { "get": {
                "summary": "The latest record of every live key (tombstoned keys left out), in byte order of the key, a page at a time",
                "parameters": [
                    topic,
                    { "name": "after", "in": "query", "schema": { "type": "string" },
                      "description": "list the keys above this one (exclusive); default from the first key" },
                    { "name": "after_base64", "in": "query", "schema": { "type": "string", "format": "byte" },
                      "description": "`after` in standard base64, for a key that is not UTF-8; not with `after`" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 },
                      "description": "the most keys on the page; fewer only on the last page" }
                ],
                "responses": {
                    "200": { "description": "a page", "content": { "application/json": { "schema": {
                        "$ref": "#/components/schemas/KeyPage" } } } },
                    "400": error, "404": error
                }
            } },
            "/api/v1/topics/{topic}/keys/{key}": { "get": {
                "summary": "The latest record with a key; 404 `deleted` (with the tombstone's offset) if a tombstone deleted it, 404 `unknown_key` if the copy holds no record with it",
                "parameters": [ topic, { "name": "key", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": {
                    "200": { "description": "the record", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Record" } } } },
                    "404": { "description": "`unknown_topic`, `unknown_key` or `deleted`", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error", "detail"], "properties": {
                            "error": { "type": "string", "enum": ["unknown_topic", "unknown_key", "deleted"] },
                            "detail": { "type": "string" },
                            "key": { "type": "string", "description": "the key asked for (`unknown_key`, `deleted`)" },
                            "offset": { "type": "integer", "description": "the offset of the tombstone (`deleted`)" } } } } } }
                }
            } },
            "/api/v1/stats": { "get": {
                "summary": "Per topic counts, offsets, lag and last refresh; connection, handler and dead-letter counts",
                "responses": { "200": { "description": "stats", "content": { "application/json": {} } } }
            } },
            "/api/v1/segments": { "get": {
                "summary": "Segment files of each topic's local copy",
                "responses": { "200": { "description": "segments", "content": { "application/json": {} } } }
            } },
            "/api/v1/refresh": { "post": {
                "summary": "Ask the broker for a full refresh of one topic, or of every topic",
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "topic": { "type": "string" } }, "additionalProperties": false } } } },
                "responses": {
                    "202": { "description": "requested", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "requested": { "type": "array", "items": { "type": "string" } } } } } } },
                    "400": error, "404": error
                }
            } },
            "/api/v1/dead-letters": { "get": {
                "summary": "Records a handler still failed on after its retries, oldest first",
                "parameters": [
                    { "name": "after", "in": "query", "schema": { "type": "integer", "default": 0 }, "description": "return ids above this" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
                ],
                "responses": { "200": { "description": "dead letters", "content": { "application/json": { "schema": {
                    "type": "array", "items": { "$ref": "#/components/schemas/DeadLetter" } } } } }, "400": error }
            } }
        },
        "components": {
            "responses": {
                "Error": { "description": "an error", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["error", "detail"],
                    "properties": { "error": { "type": "string" }, "detail": { "type": "string" } } } } } }
            },
            "schemas": {
                "Topic": { "type": "object", "properties": {
                    "topic": { "type": "string" }, "uid": { "type": "string" },
                    "first_offset": { "type": "integer" }, "next_offset": { "type": "integer" },
                    "records": { "type": "integer" }, "refreshing": { "type": "boolean" },
                    "settings": { "$ref": "#/components/schemas/TopicSettings" } } },
                "TopicSettings": { "type": "object",
                    "description": "the topic's settings as ROOT set them (explicit), or this copy's defaults (explicit false)",
                    "properties": {
                    "explicit": { "type": "boolean" },
                    "cleanup": { "type": "string", "enum": ["delete", "compact", "compact,delete"] },
                    "retention_bytes": { "type": "integer", "nullable": true },
                    "retention_age_ms": { "type": "integer", "nullable": true },
                    "tombstone_retention_ms": { "type": "integer", "nullable": true } } },
                "Record": { "type": "object", "required": ["offset", "timestamp_ms"], "properties": {
                    "offset": { "type": "integer" }, "timestamp_ms": { "type": "integer" },
                    "key": { "type": "string", "nullable": true }, "key_base64": { "type": "string" },
                    "value": {}, "value_text": { "type": "string" }, "value_base64": { "type": "string" },
                    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                    "tombstone": { "type": "boolean" } } },
                "MessagePage": { "type": "object", "properties": {
                    "topic": { "type": "string" }, "uid": { "type": "string" },
                    "messages": { "type": "array", "items": { "$ref": "#/components/schemas/Record" } },
                    "next": { "type": "integer", "nullable": true,
                              "description": "the `from` of the next page, or null at the end of the copy" } } },
                "KeyPage": { "type": "object", "properties": {
                    "topic": { "type": "string" },
                    "keys": { "type": "array", "items": { "$ref": "#/components/schemas/Record" } },
                    "next_after": { "type": "string", "nullable": true,
                                    "description": "the `after` of the next page (the page's last key), or null on the last page" },
                    "next_after_base64": { "type": "string",
                                           "description": "the `after_base64` of the next page, only when the page's last key is not UTF-8" } } },
                "DeadLetter": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "topic": { "type": "string" }, "offset": { "type": "integer" },
                    "key": { "type": "string" }, "error": { "type": "string" }, "attempts": { "type": "integer" },
                    "time_ms": { "type": "integer" } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_exactly_the_documented_paths() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        assert_eq!(paths.len(), DOCUMENTED_PATHS.len());
        for path in DOCUMENTED_PATHS {
            assert!(paths.contains_key(*path), "{path} is not documented");
        }
        assert_eq!(document["openapi"], "3.0.3");
    }
}
