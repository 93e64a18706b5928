//! A topic's settings over HTTP: `PUT /api/v1/topics/{topic}` at ROOT sets them (creating the topic, with a
//! new uid, if it does not exist), and every topic's JSON shows them (`settings`), explicit or the node's
//! effective defaults marked as such.
//!
//! The body is JSON with every field optional: `cleanup` (`delete`, `compact`, `compact,delete`),
//! `retention_bytes` (a number of bytes or a size such as `"256M"`), `retention_age` and
//! `tombstone_retention` (durations with a unit, such as `"7d"`; the CLI's words, `service::units`). A
//! body that is empty, `null` or `{}` means no explicit settings: the topic follows each node's own
//! defaults. Any field present makes the settings explicit, and then a limit left out is no limit.
//! Settings are replaced as a whole; a change reaches every node below through SETTINGS frames. This
//! module parses and answers; storage keeps the settings and applies them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::{Cleanup, TopicSettings, TopicUid};
use serde::Deserialize;
use serde_json::Value;
use service::units::{parse_duration, parse_size};
use service::{ApiJson, ApiPath};
use storage::Log;

use super::ingest::only_at_root;
use super::topics::TopicInfo;
use super::{AppState, checked_topic};
use crate::error::{ApiError, storage_api_error};
use crate::node::Node;

/// The body of `PUT /api/v1/topics/{topic}`. Values are read by hand rather than by serde's types, so
/// that every bad value gets an error naming its field and saying what was expected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// `delete`, `compact` or `compact,delete`.
    #[serde(default)]
    pub cleanup: Option<Value>,
    /// A number of bytes, or a size with a suffix.
    #[serde(default)]
    pub retention_bytes: Option<Value>,
    /// A duration with a unit.
    #[serde(default)]
    pub retention_age: Option<Value>,
    /// A duration with a unit.
    #[serde(default)]
    pub tombstone_retention: Option<Value>,
}

impl SettingsBody {
    /// The body from its JSON: an object (serde would also take an array as a struct's fields in order,
    /// which no one means here), or nothing. Unknown fields are a 400 `bad_settings` naming them.
    pub fn from_json(body: Option<Value>) -> Result<SettingsBody, ApiError> {
        match body {
            None | Some(Value::Null) => Ok(SettingsBody::default()),
            Some(object @ Value::Object(_)) => serde_json::from_value(object)
                .map_err(|error| ApiError::bad_request("bad_settings", error.to_string())),
            Some(other) => Err(ApiError::bad_json(format!(
                "the body is {}, not a JSON object of settings",
                json_kind(&other)
            ))),
        }
    }

    /// The explicit settings the body asks for, `None` if it names no field (the node's defaults), or a
    /// 400 `bad_settings` naming the field at fault.
    pub fn into_settings(self) -> Result<Option<TopicSettings>, ApiError> {
        let fields = [&self.cleanup, &self.retention_bytes, &self.retention_age, &self.tombstone_retention];
        if fields.iter().all(|field| field.as_ref().is_none_or(Value::is_null)) {
            return Ok(None);
        }
        let cleanup = match present(&self.cleanup) {
            None => Cleanup::Delete,
            Some(Value::String(word)) => word.parse::<Cleanup>().map_err(|reason| bad("cleanup", reason))?,
            Some(other) => {
                return Err(bad(
                    "cleanup",
                    format!("{other} is not one of \"delete\", \"compact\", \"compact,delete\""),
                ));
            }
        };
        Ok(Some(TopicSettings {
            cleanup,
            retention_bytes: size("retention_bytes", &self.retention_bytes)?,
            retention_age_ms: duration_ms("retention_age", &self.retention_age)?,
            tombstone_retention_ms: duration_ms("tombstone_retention", &self.tombstone_retention)?,
        }))
    }
}

/// `PUT /api/v1/topics/{topic}`: 201 with the topic's JSON if it was created, 200 if it existed (its
/// settings replaced as a whole). 409 `not_root` below ROOT.
pub async fn put(
    State(node): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Response, ApiError> {
    only_at_root(&node, "topic settings are set at the ROOT broker and carried down the tree")?;
    checked_topic(&topic)?;
    let settings = SettingsBody::from_json(body)?.into_settings()?;
    let blocking_node = Arc::clone(&node);
    let (log, created) = tokio::task::spawn_blocking(move || put_settings(&blocking_node, &topic, settings))
        .await?
        .map_err(storage_api_error)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(TopicInfo::of(&log))).into_response())
}

/// Creates the topic with `settings`, or replaces an existing topic's settings; answers the log and
/// whether it was created. Blocking.
fn put_settings(
    node: &Node,
    topic: &str,
    settings: Option<TopicSettings>,
) -> Result<(Arc<Log>, bool), storage::Error> {
    if node.store.topic(topic).is_none() {
        let uid = TopicUid(uuid::Uuid::new_v4().as_u128());
        match node.store.create_root_topic(topic, uid, settings) {
            Ok(log) => {
                tracing::info!(%topic, %uid, settings = ?settings, "created topic with settings");
                return Ok((log, true));
            }
            // A publish created it meanwhile: set its settings like any existing topic's.
            Err(storage::Error::TopicExists { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let log =
        node.store.topic(topic).ok_or_else(|| storage::Error::UnknownTopic { name: topic.to_string() })?;
    if node.store.set_settings(&log, settings)? {
        tracing::info!(%topic, settings = ?settings, "topic settings changed");
    }
    Ok((log, false))
}

/// What kind of JSON value this is, for errors.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value of a field, unless absent or `null`.
fn present(field: &Option<Value>) -> Option<&Value> {
    field.as_ref().filter(|value| !value.is_null())
}

/// A size field: a non-negative integer of bytes, or a string `service::units::parse_size` reads.
fn size(field: &'static str, value: &Option<Value>) -> Result<Option<u64>, ApiError> {
    match present(value) {
        None => Ok(None),
        Some(Value::String(text)) => parse_size(text).map(Some).map_err(|reason| bad(field, reason)),
        Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(|| {
            bad(
                field,
                format!(
                    "{number} is not a size: use a whole number of bytes from 0, or a string such as \"256M\""
                ),
            )
        }),
        Some(other) => Err(bad(field, format!("{other} is not a size such as 268435456 or \"256M\""))),
    }
}

/// A duration field: a string with a unit that `service::units::parse_duration` reads (a bare number is
/// refused: seconds or milliseconds cannot be told apart).
fn duration_ms(field: &'static str, value: &Option<Value>) -> Result<Option<u64>, ApiError> {
    match present(value) {
        None => Ok(None),
        Some(Value::String(text)) => parse_duration(text)
            .map(|duration| Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
            .map_err(|reason| bad(field, reason)),
        Some(other) => {
            Err(bad(field, format!("{other} is not a duration with a unit, such as \"7d\" or \"12h\"")))
        }
    }
}

/// A 400 `bad_settings` whose detail starts with the field's name.
fn bad(field: &'static str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("bad_settings", format!("{field}: {reason}"))
}
