//! The JSON form of records, shared by the broker's ingest API and the consumer-app's query API: what a
//! producer posts ([`IngestBody`] of [`IngestRecord`]s, turned into an [`OwnedRecord`]) and how a stored
//! record is shown ([`RecordJson`]).
//!
//! This module owns the mapping between JSON and a record's parts. It does not assign offsets or
//! timestamps (ROOT's storage does), knows nothing of HTTP, and does no I/O.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::WireError;
use crate::record::{ATTR_TOMBSTONE, NewRecord, RecordView, encode_headers};

/// One record as a producer posts it.
///
/// ```json
/// {"key": "AAPL", "value": {"price": 1.5}, "headers": {"source": "feed"}}
/// ```
///
/// At most one of `value` (any JSON, stored as its compact text), `value_text` (a string stored as its raw
/// UTF-8 bytes) and `value_base64` (standard base64 with padding, stored as the decoded bytes) may be set;
/// none means an empty value. Unknown fields are refused, so a misspelt `vlaue` is an error rather than an
/// empty record.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a record object")]
pub struct IngestRecord {
    /// The record's key; absent means an empty key.
    #[serde(default)]
    pub key: Option<String>,
    /// A JSON value, stored as its compact text. `"value": null` is set (it stores `null`), unlike an
    /// absent `value`. Object keys are stored in `serde_json`'s map order: sorted, unless some crate in
    /// the build turns on its `preserve_order` feature.
    #[serde(default, deserialize_with = "present_value")]
    pub value: Option<Value>,
    /// A string stored as its raw UTF-8 bytes, not as a JSON string literal.
    #[serde(default)]
    pub value_text: Option<String>,
    /// Bytes in standard base64 with padding.
    #[serde(default)]
    pub value_base64: Option<String>,
    /// Header names and string values.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Marks the record as a tombstone for its key; a tombstone has a key and no value.
    #[serde(default)]
    pub tombstone: bool,
}

/// A POST body: one record object, or an array of them.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestBody {
    /// A single record object.
    One(IngestRecord),
    /// An array of record objects (possibly empty; the caller decides whether that is an error).
    Many(Vec<IngestRecord>),
}

/// A record's producer-chosen parts in owned buffers, ready to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedRecord {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Headers encoded with [`encode_headers`].
    pub headers: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Attribute bits ([`ATTR_TOMBSTONE`]).
    pub attributes: u8,
}

/// A stored record as the query APIs show it.
///
/// ```json
/// {"offset": 7, "timestamp_ms": 1700000000000, "key": "AAPL", "value": {"price": 1.5},
///  "headers": {"source": "feed"}}
/// ```
///
/// `key` is the key as a string, or `null` if it is empty or not UTF-8; a non-UTF-8 key is also given as
/// `key_base64`. The value appears under exactly one of `value` (the bytes parse as JSON), `value_text`
/// (they are UTF-8 but not JSON; an empty value is `"value_text": ""`) or `value_base64` (anything else).
/// `headers` is omitted when there are none, and `tombstone` when false. Header names and values that are
/// not UTF-8 are shown with U+FFFD replacement characters, and of two headers with the same name the last
/// one is shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordJson {
    /// The record's offset.
    pub offset: u64,
    /// ROOT's timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The key if it is non-empty UTF-8, otherwise `null`.
    pub key: Option<String>,
    /// The key in standard base64, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value, under the field its bytes call for.
    #[serde(flatten)]
    pub value: ValueJson,
    /// The headers by name; omitted when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Whether the record is a tombstone; omitted when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
}

/// How a value's bytes appear in [`RecordJson`]; each variant is serialized as the field it is named for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ValueJson {
    /// `"value"`: the bytes parse as JSON (this is how a value posted as `value` comes back).
    #[serde(rename = "value")]
    Json(Value),
    /// `"value_text"`: UTF-8 that is not JSON.
    #[serde(rename = "value_text")]
    Text(String),
    /// `"value_base64"`: neither, in standard base64.
    #[serde(rename = "value_base64")]
    Base64(String),
}

impl IngestRecord {
    /// Checks the record and turns it into the parts to append.
    ///
    /// Refuses two value fields at once ("value and value_text are mutually exclusive"), bad base64, a
    /// tombstone with a value or without a key, and anything [`NewRecord::validate`] refuses (a key or
    /// headers over 65,535 bytes, a record over the maximum size).
    pub fn into_owned_record(self) -> Result<OwnedRecord, WireError> {
        let set: Vec<&'static str> = [
            ("value", self.value.is_some()),
            ("value_text", self.value_text.is_some()),
            ("value_base64", self.value_base64.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        if let [first, second, ..] = set[..] {
            return Err(WireError::ExclusiveValueFields { first, second });
        }
        let key = self.key.unwrap_or_default().into_bytes();
        if self.tombstone && !set.is_empty() {
            return Err(WireError::TombstoneWithValue);
        }
        if self.tombstone && key.is_empty() {
            return Err(WireError::TombstoneWithoutKey);
        }
        let value = match (self.value, self.value_text, self.value_base64) {
            (Some(json), _, _) => json.to_string().into_bytes(),
            (_, Some(text), _) => text.into_bytes(),
            (_, _, Some(encoded)) => BASE64.decode(encoded.as_bytes()).map_err(|source| {
                WireError::BadBase64 { field: "value_base64", reason: source.to_string() }
            })?,
            (None, None, None) => Vec::new(),
        };
        let headers = match &self.headers {
            Some(headers) => {
                encode_headers(headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())))?
            }
            None => Vec::new(),
        };
        let record =
            OwnedRecord { key, headers, value, attributes: if self.tombstone { ATTR_TOMBSTONE } else { 0 } };
        record.as_new_record().validate()?;
        Ok(record)
    }
}

impl IngestBody {
    /// The records, in the order posted.
    pub fn into_records(self) -> Vec<IngestRecord> {
        match self {
            IngestBody::One(record) => vec![record],
            IngestBody::Many(records) => records,
        }
    }
}

impl OwnedRecord {
    /// Borrows the parts as a [`NewRecord`] for encoding or appending.
    pub fn as_new_record(&self) -> NewRecord<'_> {
        NewRecord { key: &self.key, headers: &self.headers, value: &self.value, attributes: self.attributes }
    }
}

impl RecordJson {
    /// The JSON form of a stored record. Fails only on header bytes that do not parse as header entries,
    /// which a record can hold only if its producer wrote them so.
    pub fn from_view(view: &RecordView<'_>) -> Result<RecordJson, WireError> {
        let (key, key_base64) = match std::str::from_utf8(view.key()) {
            Ok("") => (None, None),
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(BASE64.encode(view.key()))),
        };
        let mut headers = BTreeMap::new();
        for header in view.headers() {
            let (name, value) = header?;
            headers.insert(
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
        Ok(RecordJson {
            offset: view.offset(),
            timestamp_ms: view.timestamp_ms(),
            key,
            key_base64,
            value: ValueJson::from_bytes(view.value()),
            headers,
            tombstone: view.is_tombstone(),
        })
    }
}

impl ValueJson {
    /// Chooses the form for a value's bytes: JSON if they parse, else text if UTF-8, else base64.
    pub fn from_bytes(bytes: &[u8]) -> ValueJson {
        if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
            return ValueJson::Json(json);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => ValueJson::Text(text.to_string()),
            Err(_) => ValueJson::Base64(BASE64.encode(bytes)),
        }
    }
}

/// Reads `value` so that an explicit `null` is `Some(Value::Null)`; only an absent field is `None`.
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Accepts an object or an array and nothing else, so that the error for anything else says what is
/// expected, and errors inside a record (an unknown field, a wrong type) keep their own precise message,
/// which `#[serde(untagged)]` would replace with a generic one.
impl<'de> Deserialize<'de> for IngestBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IngestBodyVisitor)
    }
}

/// The visitor behind `IngestBody`'s `Deserialize`.
struct IngestBodyVisitor;

impl<'de> Visitor<'de> for IngestBodyVisitor {
    type Value = IngestBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record object or an array of record objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IngestBody, A::Error> {
        IngestRecord::deserialize(MapAccessDeserializer::new(map)).map(IngestBody::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<IngestBody, A::Error> {
        Vec::<IngestRecord>::deserialize(SeqAccessDeserializer::new(seq)).map(IngestBody::Many)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ingest(body: &str) -> Result<OwnedRecord, String> {
        let record: IngestRecord = serde_json::from_str(body).map_err(|error| error.to_string())?;
        record.into_owned_record().map_err(|error| error.to_string())
    }

    fn stored(record: &OwnedRecord, offset: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        record.as_new_record().encode_to_vec(offset, 1_700_000_000_000, &mut bytes);
        bytes
    }

    fn shown(bytes: &[u8]) -> Value {
        let (view, _) = RecordView::decode(bytes).unwrap().unwrap();
        serde_json::to_value(RecordJson::from_view(&view).unwrap()).unwrap()
    }

    #[test]
    fn json_value_is_stored_as_compact_text() {
        let record = ingest(r#"{"key": "AAPL", "value": { "price" : 1.5, "ccy": [ "USD" ] }}"#).unwrap();
        assert_eq!(record.key, b"AAPL");
        assert!(!record.value.contains(&b' '), "{:?}", String::from_utf8_lossy(&record.value));
        let stored: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(stored, json!({"price": 1.5, "ccy": ["USD"]}));
        assert_eq!(record.attributes, 0);
        assert!(record.headers.is_empty());
    }

    #[test]
    fn the_three_value_forms_and_none() {
        assert_eq!(ingest(r#"{"value_text": "plain \"text\""}"#).unwrap().value, br#"plain "text""#);
        assert_eq!(ingest(r#"{"value_base64": "AP8Q"}"#).unwrap().value, [0x00, 0xff, 0x10]);
        assert_eq!(ingest(r#"{"value": null}"#).unwrap().value, b"null");
        assert_eq!(ingest(r#"{"value": "s"}"#).unwrap().value, br#""s""#);
        assert_eq!(
            ingest(r#"{"key": "k"}"#).unwrap(),
            OwnedRecord { key: b"k".to_vec(), ..Default::default() }
        );
    }

    #[test]
    fn headers_are_encoded() {
        let record = ingest(r#"{"value": 1, "headers": {"source": "feed", "a": ""}}"#).unwrap();
        let expected = encode_headers([("a", &b""[..]), ("source", &b"feed"[..])]).unwrap();
        assert_eq!(record.headers, expected);
    }

    #[test]
    fn ingest_errors_name_the_problem() {
        let cases = [
            (r#"{"value": 1, "value_text": "x"}"#, "value and value_text are mutually exclusive"),
            (
                r#"{"value_text": "x", "value_base64": "eA=="}"#,
                "value_text and value_base64 are mutually exclusive",
            ),
            (r#"{"value_base64": "not base64!"}"#, "value_base64 is not valid base64"),
            (r#"{"key": "k", "value": 1, "tombstone": true}"#, "a tombstone carries no value"),
            (r#"{"tombstone": true}"#, "a tombstone needs a key"),
            (r#"{"vlaue": 1}"#, "unknown field `vlaue`"),
            (r#"{"key": 5}"#, "invalid type: integer `5`, expected a string"),
            (r#"{"headers": {"h": 1}}"#, "invalid type: integer `1`, expected a string"),
        ];
        for (body, message) in cases {
            let error = ingest(body).unwrap_err();
            assert!(error.contains(message), "{body}: got {error:?}, expected {message:?}");
        }
        let long_key = format!(r#"{{"key": "{}"}}"#, "k".repeat(70_000));
        assert_eq!(ingest(&long_key).unwrap_err(), "key of 70000 bytes exceeds the maximum of 65535 bytes");
    }

    #[test]
    fn tombstone_sets_the_attribute() {
        let record = ingest(r#"{"key": "AAPL", "tombstone": true}"#).unwrap();
        assert_eq!(record.attributes, ATTR_TOMBSTONE);
        assert!(record.value.is_empty());
    }

    #[test]
    fn body_is_one_object_or_an_array() {
        let one: IngestBody = serde_json::from_str(r#"{"key": "a"}"#).unwrap();
        assert_eq!(one.into_records().len(), 1);
        let many: IngestBody = serde_json::from_str(r#"[{"key": "a"}, {"value": 2}, {}]"#).unwrap();
        let records = many.into_records();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].value, Some(json!(2)));
        for bad in ["5", r#""text""#, "null", "true"] {
            let error = serde_json::from_str::<IngestBody>(bad).unwrap_err().to_string();
            assert!(
                error.contains("expected a record object or an array of record objects"),
                "{bad}: {error}"
            );
        }
        let error = serde_json::from_str::<IngestBody>(r#"[{"key": "a"}, 7]"#).unwrap_err().to_string();
        assert!(error.contains("expected a record object"), "{error}");
        let error =
            serde_json::from_str::<IngestBody>(r#"[{"key": "a", "valu": 1}]"#).unwrap_err().to_string();
        assert!(error.contains("unknown field `valu`"), "{error}");
    }

    #[test]
    fn record_json_shows_each_value_form() {
        let record =
            ingest(r#"{"key": "AAPL", "value": {"price": 1.5}, "headers": {"source": "feed"}}"#).unwrap();
        assert_eq!(
            shown(&stored(&record, 7)),
            json!({"offset": 7, "timestamp_ms": 1_700_000_000_000u64, "key": "AAPL",
                   "value": {"price": 1.5}, "headers": {"source": "feed"}})
        );
        let text = OwnedRecord { value: b"not json".to_vec(), ..Default::default() };
        assert_eq!(
            shown(&stored(&text, 1)),
            json!({"offset": 1, "timestamp_ms": 1_700_000_000_000u64, "key": null, "value_text": "not json"})
        );
        let binary =
            OwnedRecord { key: vec![0xff, 0x00], value: vec![0x00, 0xff, 0x10], ..Default::default() };
        assert_eq!(
            shown(&stored(&binary, 2)),
            json!({"offset": 2, "timestamp_ms": 1_700_000_000_000u64, "key": null, "key_base64": "/wA=",
                   "value_base64": "AP8Q"})
        );
        let tombstone = ingest(r#"{"key": "AAPL", "tombstone": true}"#).unwrap();
        assert_eq!(
            shown(&stored(&tombstone, 3)),
            json!({"offset": 3, "timestamp_ms": 1_700_000_000_000u64, "key": "AAPL", "value_text": "",
                   "tombstone": true})
        );
    }

    #[test]
    fn posted_values_come_back_in_the_same_form() {
        for body in [
            json!({"key": "k", "value": {"a": [1, 2, {"b": null}]}}),
            json!({"key": "k", "value": null}),
            json!({"key": "k", "value_text": "free text"}),
            json!({"key": "k", "value_base64": "AP8Q"}),
        ] {
            let record: IngestRecord = serde_json::from_value(body.clone()).unwrap();
            let mut back = shown(&stored(&record.into_owned_record().unwrap(), 0));
            let object = back.as_object_mut().unwrap();
            object.remove("offset");
            object.remove("timestamp_ms");
            assert_eq!(back, body);
        }
    }

    #[test]
    fn malformed_headers_are_reported() {
        let record = OwnedRecord { headers: vec![5, 0, b'a'], value: b"1".to_vec(), ..Default::default() };
        let bytes = stored(&record, 0);
        let (view, _) = RecordView::decode(&bytes).unwrap().unwrap();
        assert_eq!(RecordJson::from_view(&view), Err(WireError::MalformedHeaders));
    }
}
