//! An event as read from Kafka: its raw bytes, kept intact for destinations that embed them,
//! and the few fields routing needs, found by one scan without building a DOM.

use bytes::Bytes;
use serde::Deserialize;
use serde::de;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Identifies one assignment of one Kafka partition. A partition that is revoked and assigned
/// again gets a new id, so late acknowledgements for the old assignment are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u32);

/// Where an event came from: enough to acknowledge it and to name it in a log line.
#[derive(Debug, Clone)]
pub struct Origin {
    pub partition: PartitionId,
    pub topic: Arc<str>,
    pub kafka_partition: i32,
    pub offset: i64,
    /// Which event of an array record, from 0 (see [`crate::record`]); None when the record
    /// was one event object.
    pub member: Option<u32>,
}

/// What the producer sent with the value: its key and headers, kept as they were so that a
/// dead-lettered record can be keyed, partitioned and traced like the original.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub key: Option<Bytes>,
    /// In the record's order; a header may have no value.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Envelope {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.headers.is_empty()
    }
}

/// Why a record could not become an [`Event`]. Each is counted under its `as_str` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedReason {
    Empty,
    NotJson,
    NotObject,
    MissingTimestamp,
    InvalidField,
    Oversize,
    /// An array record with more members than `router.max_array_members`.
    TooManyMembers,
}

impl MalformedReason {
    pub const ALL: [MalformedReason; 7] = [
        Self::Empty,
        Self::NotJson,
        Self::NotObject,
        Self::MissingTimestamp,
        Self::InvalidField,
        Self::Oversize,
        Self::TooManyMembers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotJson => "not_json",
            Self::NotObject => "not_object",
            Self::MissingTimestamp => "missing_timestamp",
            Self::InvalidField => "invalid_field",
            Self::Oversize => "oversize",
            Self::TooManyMembers => "too_many_members",
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: the reason, and serde's description of the spot for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Malformed {
    pub reason: MalformedReason,
    pub detail: String,
}

/// A QoE event. Cloning is one reference-count increment, so fan-out never copies bytes.
#[derive(Clone)]
pub struct Event {
    inner: Arc<Inner>,
}

struct Inner {
    raw: Bytes,
    /// None when the record had neither key nor headers: no allocation for the usual case.
    envelope: Option<Arc<Envelope>>,
    origin: Origin,
    /// Where the router's own collector_observability records go, if anywhere.
    splice: Option<Splice>,
    connector_list: Text,
    customer_code: Text,
    configuration_id: Text,
    event_id: Text,
    event_type: Text,
    timestamp_us: i64,
}

/// A string field: a range of the raw bytes when the JSON had no escapes (the usual case, no
/// allocation), an owned copy otherwise.
enum Text {
    Absent,
    Span(Range<u32>),
    Owned(Box<str>),
}

impl Text {
    fn from_cow(raw: &[u8], value: Option<Str<'_>>) -> Self {
        match value.map(|s| s.0) {
            None => Text::Absent,
            Some(Cow::Borrowed(s)) => {
                let start = s.as_ptr() as usize - raw.as_ptr() as usize;
                Text::Span(start as u32..(start + s.len()) as u32)
            }
            Some(Cow::Owned(s)) => Text::Owned(s.into_boxed_str()),
        }
    }

    fn get<'a>(&'a self, raw: &'a [u8]) -> Option<&'a str> {
        match self {
            Text::Absent => None,
            // The span was cut from a &str that serde borrowed from these same bytes.
            Text::Span(r) => std::str::from_utf8(&raw[r.start as usize..r.end as usize]).ok(),
            Text::Owned(s) => Some(s),
        }
    }
}

/// The most bytes [`Event::write_json`] adds around the records it splices in: a new
/// `ops_metadata` object holding the list.
pub(crate) const SPLICE_OVERHEAD: usize = OPS_BEFORE.len() + OPS_AFTER.len();
const OPS_BEFORE: &[u8] = b",\"ops_metadata\":{\"collector_observability\":[";
const OPS_AFTER: &[u8] = b"]}";

/// Where records are inserted into `ops_metadata.collector_observability`, as a byte offset
/// into the raw event and what must be written around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Splice {
    /// Before the array's `]`; `empty` when it has no elements yet.
    Array { at: u32, empty: bool },
    /// Before `ops_metadata`'s `}`: the key is added.
    Ops { at: u32, empty: bool },
    /// Before the event's final `}`: `ops_metadata` is added.
    Event { at: u32 },
}

/// What [`Event::write_json`] inserts into the event's JSON, and where.
struct Insertion<'r> {
    at: usize,
    before: &'static [u8],
    records: &'r [u8],
    after: &'static [u8],
}

/// `ops_metadata`, borrowed whole: only its `collector_observability` matters, and only its
/// position.
#[derive(Deserialize)]
struct ScanOps<'a> {
    #[serde(borrow, default)]
    collector_observability: Option<&'a serde_json::value::RawValue>,
}

/// Only the routing fields: serde's derive skips every other key without allocating.
#[derive(Deserialize)]
struct Scan<'a> {
    #[serde(borrow, default)]
    ops_metadata: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    connector_list: Option<Str<'a>>,
    #[serde(borrow, default)]
    customer_code: Option<Str<'a>>,
    #[serde(borrow, default)]
    configuration_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    event_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    event: Option<ScanEvent<'a>>,
}

#[derive(Deserialize)]
struct ScanEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(default)]
    timestamp: Option<Millis>,
}

/// A JSON string, borrowed from the input unless it had escapes. (serde's own `Cow<str>`
/// always allocates when wrapped in `Option`.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `event.timestamp`: epoch milliseconds, integer or fractional.
struct Millis(f64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("epoch milliseconds as a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
                Ok(Millis(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                Ok(Millis(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Millis, E> {
                Ok(Millis(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Event {
    /// Scans `raw` once for the routing fields. The bytes are kept as they are.
    pub fn parse(raw: Bytes, origin: Origin, max_bytes: usize) -> Result<Event, Malformed> {
        Self::parse_record(raw, None, origin, max_bytes)
    }

    /// [`Event::parse`], keeping the record's key and headers with the event.
    pub fn parse_record(
        raw: Bytes,
        envelope: Option<Arc<Envelope>>,
        origin: Origin,
        max_bytes: usize,
    ) -> Result<Event, Malformed> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(Malformed {
                reason: MalformedReason::Empty,
                detail: "record has no payload".into(),
            });
        }
        if raw.len() > max_bytes {
            return Err(Malformed {
                reason: MalformedReason::Oversize,
                detail: format!("{} bytes is over max_event_bytes {}", raw.len(), max_bytes),
            });
        }
        if first_byte(&raw) != Some(b'{') {
            // Checked before the scan: serde would read a struct from an array too.
            return Err(not_an_object(&raw));
        }
        let scan: Scan<'_> = serde_json::from_slice(&raw).map_err(|e| classify(&raw, e))?;
        let event = scan
            .event
            .ok_or_else(|| missing_timestamp("no `event` object"))?;
        let ts = event
            .timestamp
            .ok_or_else(|| missing_timestamp("no `event.timestamp`"))?;
        if !ts.0.is_finite() || ts.0 < 0.0 {
            return Err(Malformed {
                reason: MalformedReason::InvalidField,
                detail: "`event.timestamp` is not a non-negative number".into(),
            });
        }
        let splice = splice_point(&raw, scan.ops_metadata);
        let inner = Inner {
            splice,
            connector_list: Text::from_cow(&raw, scan.connector_list),
            customer_code: Text::from_cow(&raw, scan.customer_code),
            configuration_id: Text::from_cow(&raw, scan.configuration_id),
            event_id: Text::from_cow(&raw, scan.event_id),
            event_type: Text::from_cow(&raw, event.kind),
            timestamp_us: (ts.0 * 1000.0).round() as i64,
            origin,
            envelope,
            raw,
        };
        Ok(Event {
            inner: Arc::new(inner),
        })
    }

    /// The record exactly as it was read from Kafka.
    pub fn raw(&self) -> &Bytes {
        &self.inner.raw
    }

    /// The record without trailing whitespace: the JSON object itself, ending in `}`, for
    /// encoders that embed it or splice fields into it.
    pub fn json(&self) -> &[u8] {
        let raw = &self.inner.raw;
        let end = raw
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &raw[..end]
    }

    /// Appends [`Event::json`] to `out`, with `records` (a comma-separated list of JSON
    /// objects, no brackets) appended to `ops_metadata.collector_observability`. The event is
    /// copied around the insertion point, never re-serialized. Without records, or when the
    /// event's `ops_metadata` is not an object (or its `collector_observability` not an
    /// array), the event is written unchanged. Connectors reach it through
    /// [`crate::Shipment`], which decides the records.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>, records: Option<&[u8]>) {
        let json = self.json();
        let Some(i) = self.insertion(records) else {
            out.extend_from_slice(json);
            return;
        };
        out.extend_from_slice(&json[..i.at]);
        out.extend_from_slice(i.before);
        out.extend_from_slice(i.records);
        out.extend_from_slice(i.after);
        out.extend_from_slice(&json[i.at..]);
    }

    /// The exact length of what [`Event::write_json`] writes.
    pub(crate) fn json_len(&self, records: Option<&[u8]>) -> usize {
        let json = self.json().len();
        match self.insertion(records) {
            None => json,
            Some(i) => json + i.before.len() + i.records.len() + i.after.len(),
        }
    }

    /// Where `records` go into [`Event::json`] and what surrounds them, or None when the
    /// event is written unchanged.
    fn insertion<'r>(&self, records: Option<&'r [u8]>) -> Option<Insertion<'r>> {
        let records = records.filter(|r| !r.is_empty())?;
        let (at, before, after): (u32, &[u8], &[u8]) = match self.inner.splice? {
            Splice::Array { at, empty } => (at, if empty { b"" } else { b"," }, b""),
            Splice::Ops { at, empty } => (
                at,
                if empty {
                    b"\"collector_observability\":["
                } else {
                    b",\"collector_observability\":["
                },
                b"]",
            ),
            Splice::Event { at } => (at, OPS_BEFORE, OPS_AFTER),
        };
        Some(Insertion {
            at: at as usize,
            before,
            after,
            records,
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// The record's key and headers, when it had any.
    pub fn envelope(&self) -> Option<&Arc<Envelope>> {
        self.inner.envelope.as_ref()
    }

    /// `event_id`: what finds and de-duplicates the event at a destination.
    pub fn event_id(&self) -> Option<&str> {
        self.inner.event_id.get(&self.inner.raw)
    }

    /// `connector_list` as written: comma-separated connector ids.
    pub fn connector_list(&self) -> Option<&str> {
        self.inner.connector_list.get(&self.inner.raw)
    }

    pub fn customer_code(&self) -> Option<&str> {
        self.inner.customer_code.get(&self.inner.raw)
    }

    /// `configuration_id`: the collector configuration that produced the event, which
    /// destinations that index attributes (OTLP) carry beside `customer_code`.
    pub fn configuration_id(&self) -> Option<&str> {
        self.inner.configuration_id.get(&self.inner.raw)
    }

    /// `event.type`, e.g. `rendition_change`.
    pub fn event_type(&self) -> Option<&str> {
        self.inner.event_type.get(&self.inner.raw)
    }

    /// `event.timestamp` in microseconds since the epoch.
    pub fn timestamp_us(&self) -> i64 {
        self.inner.timestamp_us
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.inner.origin;
        write!(
            f,
            "Event({}/{}@{}, {} bytes)",
            o.topic,
            o.kafka_partition,
            o.offset,
            self.inner.raw.len()
        )
    }
}

/// Finds where collector_observability records can be inserted (see [`Splice`]).
fn splice_point(raw: &[u8], ops: Option<&serde_json::value::RawValue>) -> Option<Splice> {
    let offset = |s: &str| s.as_ptr() as usize - raw.as_ptr() as usize;
    let last_byte = |s: &str, b: u8| {
        s.bytes()
            .rposition(|x| x == b)
            .map(|i| (offset(s) + i) as u32)
    };
    let Some(ops) = ops else {
        let end = raw.iter().rposition(|b| *b == b'}')?;
        return Some(Splice::Event { at: end as u32 });
    };
    let text = ops.get();
    if !text.starts_with('{') {
        return None;
    }
    let scan: ScanOps<'_> = serde_json::from_str(text).ok()?;
    match scan.collector_observability {
        Some(list) => {
            let l = list.get();
            if !l.starts_with('[') {
                return None;
            }
            let empty = l[1..l.len() - 1].trim().is_empty();
            Some(Splice::Array {
                at: last_byte(l, b']')?,
                empty,
            })
        }
        None => {
            let empty = text[1..text.len() - 1].trim().is_empty();
            Some(Splice::Ops {
                at: last_byte(text, b'}')?,
                empty,
            })
        }
    }
}

fn missing_timestamp(detail: &str) -> Malformed {
    Malformed {
        reason: MalformedReason::MissingTimestamp,
        detail: detail.into(),
    }
}

fn first_byte(raw: &[u8]) -> Option<u8> {
    raw.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

/// A record that does not start as an object: valid JSON of another type, or not JSON.
fn not_an_object(raw: &[u8]) -> Malformed {
    if let Err(e) = serde_json::from_slice::<de::IgnoredAny>(raw) {
        return not_json(e);
    }
    let what = match first_byte(raw) {
        // A record that is an array is unpacked before this scan: this is a nested one.
        Some(b'[') => "a JSON array, not an event object (arrays of events do not nest)",
        Some(b'"') => "a JSON string, not an event object",
        Some(b'n') => "JSON null, not an event object",
        Some(b't' | b'f') => "a JSON boolean, not an event object",
        _ => "a JSON number, not an event object",
    };
    Malformed {
        reason: MalformedReason::NotObject,
        detail: format!("the record is {what}"),
    }
}

fn not_json(e: serde_json::Error) -> Malformed {
    Malformed {
        reason: MalformedReason::NotJson,
        detail: format!("not valid JSON: {e}"),
    }
}

/// A failed scan of an object. Only on this path is the scan run again with the key path
/// tracked, to name the field in plain words; the fast path pays nothing for it.
fn classify(raw: &[u8], e: serde_json::Error) -> Malformed {
    if e.classify() != serde_json::error::Category::Data {
        return not_json(e);
    }
    let mut de = serde_json::Deserializer::from_slice(raw);
    let detail = match serde_path_to_error::deserialize::<_, Scan<'_>>(&mut de) {
        Err(e) => field_problem(&e.path().to_string(), &e.inner().to_string()),
        Ok(_) => e.to_string(),
    };
    Malformed {
        reason: MalformedReason::InvalidField,
        detail,
    }
}

/// "invalid type: integer `5`, expected a string at line 1 column 9" on `connector_list`
/// becomes "`connector_list` should be a string, not integer `5`".
fn field_problem(path: &str, serde_message: &str) -> String {
    let message = serde_message
        .rsplit_once(" at line ")
        .map_or(serde_message, |(m, _)| m);
    match message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        Some((found, expected)) => format!("`{path}` should be {expected}, not {found}"),
        None => format!("`{path}`: {message}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn origin(offset: i64) -> Origin {
        Origin {
            partition: PartitionId(0),
            topic: Arc::from("qoe"),
            kafka_partition: 0,
            offset,
            member: None,
        }
    }

    pub fn event(json: &str) -> Event {
        Event::parse(Bytes::from(json.to_owned()), origin(0), 1 << 20).unwrap()
    }

    fn reason(json: &str) -> MalformedReason {
        Event::parse(Bytes::from(json.to_owned()), origin(0), 1 << 20)
            .unwrap_err()
            .reason
    }

    #[test]
    fn finds_routing_fields_without_copying() {
        let e = event(
            r#"{"event":{"metrics":{"a":[1,2,{"b":null}]},"type":"stall_start","timestamp":1712167312284},
               "connector_list":"a,b","customer_code":"c1","other":"x"}"#,
        );
        assert_eq!(e.connector_list(), Some("a,b"));
        assert_eq!(e.customer_code(), Some("c1"));
        assert_eq!(e.event_type(), Some("stall_start"));
        assert_eq!(e.timestamp_us(), 1_712_167_312_284_000);
        assert!(matches!(e.inner.connector_list, Text::Span(_)));
    }

    #[test]
    fn configuration_id_is_found_in_the_same_scan() {
        let e = event(r#"{"configuration_id":"cfg-1","event":{"timestamp":1}}"#);
        assert_eq!(e.configuration_id(), Some("cfg-1"));
        assert!(matches!(e.inner.configuration_id, Text::Span(_)));
        assert_eq!(
            event(r#"{"event":{"timestamp":1}}"#).configuration_id(),
            None
        );
        let e = event(r#"{"configuration_id":"a\u0062","event":{"timestamp":1}}"#);
        assert_eq!(e.configuration_id(), Some("ab"));
        let sample = event(include_str!("../../testkit/data/sample-event.json"));
        assert_eq!(sample.configuration_id(), Some("4a3...a"));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let e = event(r#"{"event":{"timestamp":1,"type":"a\u0062"},"customer_code":"x\"y"}"#);
        assert_eq!(e.event_type(), Some("ab"));
        assert_eq!(e.customer_code(), Some("x\"y"));
    }

    #[test]
    fn fractional_timestamps_keep_microseconds() {
        let e = event(r#"{"event":{"timestamp":1712167311343.687}}"#);
        assert_eq!(e.timestamp_us(), 1_712_167_311_343_687);
    }

    #[test]
    fn sample_event_parses() {
        let raw = include_str!("../../testkit/data/sample-event.json");
        let e = event(raw);
        assert_eq!(
            e.connector_list(),
            Some("dz-connector-splunk,dz-connector-kinesis-firehose,dz-connector-datadog")
        );
        assert_eq!(e.event_type(), Some("rendition_change"));
    }

    fn spliced(json: &str) -> serde_json::Value {
        let mut out = Vec::new();
        let records = Some(&br#"{"r":1},{"r":2}"#[..]);
        let e = event(json);
        e.write_json(&mut out, records);
        assert_eq!(e.json_len(records), out.len(), "exact length of {json}");
        assert!(out.len() <= e.json().len() + records.map_or(0, <[u8]>::len) + SPLICE_OVERHEAD);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn observability_records_are_spliced_in_every_shape() {
        let r = serde_json::json!([{"r": 1}, {"r": 2}]);
        let v = spliced(
            r#"{"event":{"timestamp":1},"ops_metadata":{"a":1,"collector_observability":[{"x":0}] } }"#,
        );
        assert_eq!(
            v["ops_metadata"]["collector_observability"],
            serde_json::json!([{"x": 0}, {"r": 1}, {"r": 2}])
        );
        assert_eq!(v["ops_metadata"]["a"], 1);
        let v =
            spliced(r#"{"event":{"timestamp":1},"ops_metadata":{"collector_observability":[ ]}}"#);
        assert_eq!(v["ops_metadata"]["collector_observability"], r);
        let v = spliced(r#"{"event":{"timestamp":1},"ops_metadata":{"a":[1]}}"#);
        assert_eq!(v["ops_metadata"]["collector_observability"], r);
        assert_eq!(v["ops_metadata"]["a"], serde_json::json!([1]));
        let v = spliced(r#"{"event":{"timestamp":1},"ops_metadata":{}}"#);
        assert_eq!(v["ops_metadata"]["collector_observability"], r);
        let v = spliced(r#"{"event":{"timestamp":1}}"#);
        assert_eq!(v["ops_metadata"]["collector_observability"], r);
        // Not an object / not an array: left alone rather than broken.
        let v = spliced(r#"{"event":{"timestamp":1},"ops_metadata":"n/a"}"#);
        assert_eq!(v["ops_metadata"], "n/a");
        let v =
            spliced(r#"{"event":{"timestamp":1},"ops_metadata":{"collector_observability":7}}"#);
        assert_eq!(v["ops_metadata"]["collector_observability"], 7);
    }

    #[test]
    fn the_sample_keeps_its_own_records_first() {
        let sample = include_str!("../../testkit/data/sample-event.json");
        let v = spliced(sample);
        let list = v["ops_metadata"]["collector_observability"]
            .as_array()
            .unwrap();
        assert_eq!(list.len(), 6);
        assert_eq!(list[0]["metric_name"], "process_duration_ms");
        assert_eq!(list[5], serde_json::json!({"r": 2}));
        let mut plain = Vec::new();
        event(sample).write_json(&mut plain, None);
        assert_eq!(plain, sample.trim_end().as_bytes());
        assert_eq!(event(sample).json_len(None), plain.len());
        assert_eq!(event(sample).json_len(Some(b"")), plain.len());
    }

    fn detail(json: &str) -> String {
        Event::parse(Bytes::from(json.to_owned()), origin(0), 1 << 20)
            .unwrap_err()
            .detail
    }

    #[test]
    fn bad_input_is_described_in_plain_words() {
        assert_eq!(
            detail("[1,2,3]"),
            "the record is a JSON array, not an event object (arrays of events do not nest)"
        );
        assert_eq!(
            detail("null"),
            "the record is JSON null, not an event object"
        );
        assert_eq!(
            detail(r#"[{"event":{"timestamp":1}}]"#),
            detail("[1,2,3]"),
            "an array of events says it is an array"
        );
        assert_eq!(detail("[null,null,null,null,null]"), detail("[1,2,3]"));
        assert_eq!(
            detail(r#"{"event":{"timestamp":1},"connector_list":5}"#),
            "`connector_list` should be a string, not integer `5`"
        );
        assert_eq!(
            detail(r#"{"event":{"timestamp":"yesterday","type":"x"}}"#),
            "`event.timestamp` should be epoch milliseconds as a number, not string \"yesterday\""
        );
        assert!(
            detail("{oops").starts_with("not valid JSON: "),
            "{}",
            detail("{oops")
        );
    }

    #[test]
    fn event_id_and_envelope_are_kept() {
        let envelope = Arc::new(Envelope {
            key: Some(Bytes::from_static(b"session-7")),
            headers: vec![
                ("trace".into(), Some(Bytes::from_static(b"abc"))),
                ("empty".into(), None),
            ],
        });
        let e = Event::parse_record(
            Bytes::from_static(br#"{"event":{"timestamp":1},"event_id":"e-1"}"#),
            Some(envelope.clone()),
            origin(0),
            1 << 20,
        )
        .unwrap();
        assert_eq!(e.event_id(), Some("e-1"));
        assert_eq!(e.envelope(), Some(&envelope));
    }

    #[test]
    fn bad_input_is_classified() {
        assert_eq!(reason(""), MalformedReason::Empty);
        assert_eq!(reason("  \n"), MalformedReason::Empty);
        assert_eq!(reason("not json"), MalformedReason::NotJson);
        assert_eq!(
            reason(r#"{"event":{"timestamp":1}"#),
            MalformedReason::NotJson
        );
        assert_eq!(
            reason(r#"{"event":{"timestamp":1}} trailing"#),
            MalformedReason::NotJson
        );
        assert_eq!(reason("[1,2]"), MalformedReason::NotObject);
        assert_eq!(reason("42"), MalformedReason::NotObject);
        assert_eq!(reason(r#"{"event":{}}"#), MalformedReason::MissingTimestamp);
        assert_eq!(reason(r#"{"a":1}"#), MalformedReason::MissingTimestamp);
        assert_eq!(
            reason(r#"{"event":{"timestamp":"yesterday"}}"#),
            MalformedReason::InvalidField
        );
        assert_eq!(
            reason(r#"{"event":{"timestamp":1},"connector_list":5}"#),
            MalformedReason::InvalidField
        );
        let big = format!(
            r#"{{"event":{{"timestamp":1}},"pad":"{}"}}"#,
            "x".repeat(100)
        );
        let err = Event::parse(Bytes::from(big), origin(0), 64).unwrap_err();
        assert_eq!(err.reason, MalformedReason::Oversize);
    }
}
