//! The request body: one protobuf `ExportLogsServiceRequest` holding one `ResourceLogs`
//! (`service.name` and the configured resource attributes) with one `ScopeLogs` (scope
//! `switchyard`) whose `LogRecord`s are the events, in order.
//!
//! Each record's body is the event's own JSON as a string `AnyValue`, with the
//! collector_observability records spliced in by [`Shipment::write_event`]: the event is copied,
//! never parsed into a tree or re-serialized. Its routing fields become attributes.
//!
//! The messages are the generated `opentelemetry-proto` types. Only the two outer levels are
//! framed here (a tag and a length each, computed by prost), so that each record can go to
//! the compressor as soon as it is encoded and the uncompressed body never exists whole.
//! `framing_is_what_prost_writes` checks the bytes against prost's own encoding.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len, message};
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_core::compress::BodySink;
use switchyard_core::{Event, Fix, Shipment};

use crate::config::OtlpLogsConfig;

/// The instrumentation scope every record is reported under.
pub const SCOPE_NAME: &str = "switchyard";

/// Attribute keys. `event.type` follows the semantic-convention style of dotted names; the
/// others keep the event's own field names so queries match the event body.
pub const CUSTOMER_CODE: &str = "customer_code";
pub const EVENT_TYPE: &str = "event.type";
pub const CONFIGURATION_ID: &str = "configuration_id";

/// The fix recorded when an event's bytes were not valid UTF-8 (the event scan does not
/// check strings it skips) and were replaced: protobuf strings must be UTF-8, and receivers
/// built on Go's protobuf refuse the whole request otherwise.
pub const FIX_UTF8: &str = "invalid_utf8_replaced";

/// The largest a length varint can be for any request we build (lengths fit in 32 bits).
const MAX_VARINT: usize = 5;

#[derive(Debug, Clone)]
pub struct LogEncoder {
    resource: Resource,
    scope: InstrumentationScope,
}

/// What the encoder changed in a batch.
#[derive(Debug, Default)]
pub struct EncodeReport {
    pub fixes: Vec<Fix>,
}

impl LogEncoder {
    pub fn new(cfg: &OtlpLogsConfig) -> Self {
        let mut attributes = vec![string_attr("service.name", &cfg.service_name)];
        attributes.extend(
            cfg.resource_attributes
                .iter()
                .map(|(k, v)| string_attr(k, v)),
        );
        LogEncoder {
            resource: Resource {
                attributes,
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: SCOPE_NAME.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
        }
    }

    /// Bytes of a request around its records, at most: what the batcher cannot count per
    /// event.
    pub fn envelope_len(&self) -> usize {
        // Two framed levels (ExportLogsServiceRequest.resource_logs and
        // ResourceLogs.scope_logs), each a one-byte tag and a varint, plus the resource and
        // the scope themselves.
        2 * (1 + MAX_VARINT)
            + message::encoded_len(1, &self.resource)
            + message::encoded_len(1, &self.scope)
    }

    /// Bytes `event`'s record adds to a request, without collector_observability records:
    /// exact, barring an event whose bytes need UTF-8 repair.
    pub fn record_len(&self, event: &Event) -> usize {
        let attrs = attributes(event)
            .map(|(k, v)| attr_len(k.len(), v.len()))
            .sum::<usize>();
        let len = record_len(event.json().len(), attrs);
        key_len(2) + encoded_len_varint(len as u64) + len
    }

    /// The exact size of the request [`Self::encode`] would write for `records`.
    pub fn request_len(&self, records: &[LogRecord]) -> usize {
        let (_, _, total) = self.lengths(records);
        total
    }

    /// Builds the records of `events`, each stamped observed now.
    pub fn records(&self, shipment: Shipment<'_>) -> (Vec<LogRecord>, EncodeReport) {
        let observed = now_unix_nano();
        let mut outcome = EncodeReport::default();
        let records = shipment
            .events()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (record, repaired) = log_record(e, &shipment, observed);
                if repaired {
                    outcome.fixes.push(Fix::new(i, FIX_UTF8));
                }
                record
            })
            .collect();
        (records, outcome)
    }

    /// Writes the request holding `records` to `body`, one record at a time.
    pub fn encode(&self, records: Vec<LogRecord>, body: &mut impl BodySink) {
        let (resource_logs, scope_logs, _) = self.lengths(&records);
        let out = body.staged();
        // ExportLogsServiceRequest.resource_logs (1) → ResourceLogs
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(resource_logs as u64, out);
        //   ResourceLogs.resource (1), then ResourceLogs.scope_logs (2) → ScopeLogs
        message::encode(1, &self.resource, out);
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(scope_logs as u64, out);
        //     ScopeLogs.scope (1), then ScopeLogs.log_records (2), each dropped once written
        message::encode(1, &self.scope, out);
        body.commit();
        for record in records {
            message::encode(2, &record, body.staged());
            body.commit();
        }
    }

    /// Lengths of the ResourceLogs and ScopeLogs messages, and of the whole request.
    fn lengths(&self, records: &[LogRecord]) -> (usize, usize, usize) {
        let scope_logs =
            message::encoded_len(1, &self.scope) + message::encoded_len_repeated(2, records);
        let resource_logs = message::encoded_len(1, &self.resource)
            + key_len(2)
            + encoded_len_varint(scope_logs as u64)
            + scope_logs;
        let total = key_len(1) + encoded_len_varint(resource_logs as u64) + resource_logs;
        (resource_logs, scope_logs, total)
    }
}

/// One event's record: the per-event write path. The shipment splices this connector's
/// collector_observability records into the body.
pub fn log_record(
    event: &Event,
    shipment: &Shipment<'_>,
    observed_unix_nano: u64,
) -> (LogRecord, bool) {
    let mut json = Vec::with_capacity(shipment.event_json_len(event));
    shipment.write_event(event, &mut json);
    let (body, repaired) = match String::from_utf8(json) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    };
    let record = LogRecord {
        // Event timestamps are non-negative (checked at parse), in microseconds.
        time_unix_nano: event.timestamp_us().max(0) as u64 * 1000,
        observed_time_unix_nano: observed_unix_nano,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: attributes(event).map(|(k, v)| string_attr(k, v)).collect(),
        ..Default::default()
    };
    (record, repaired)
}

/// The event's routing fields that become attributes; absent ones are left out.
fn attributes(event: &Event) -> impl Iterator<Item = (&'static str, &str)> {
    [
        (CUSTOMER_CODE, event.customer_code()),
        (EVENT_TYPE, event.event_type()),
        (CONFIGURATION_ID, event.configuration_id()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Bytes of a LogRecord with two fixed64 timestamps, a string body of `body` bytes and
/// attributes of `attrs` bytes (already framed).
fn record_len(body: usize, attrs: usize) -> usize {
    let any_value = string_field_len(body);
    let fixed64 = key_len(1) + 8;
    2 * fixed64 + key_len(5) + encoded_len_varint(any_value as u64) + any_value + attrs
}

/// Bytes of a length-delimited string field with a one-byte tag.
fn string_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of a string attribute as a framed `LogRecord.attributes` (6) KeyValue, from the
/// key and value lengths alone.
fn attr_len(key: usize, value: usize) -> usize {
    let any_value = string_field_len(value);
    let kv = string_field_len(key) + 1 + encoded_len_varint(any_value as u64) + any_value;
    1 + encoded_len_varint(kv as u64) + kv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use prost::Message;
    use switchyard_testkit::event;

    const SAMPLE: &str = include_str!("../../../testkit/data/sample-event.json");

    fn text(v: &Option<AnyValue>) -> &str {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn attrs(r: &LogRecord) -> Vec<(&str, &str)> {
        r.attributes
            .iter()
            .map(|kv| (kv.key.as_str(), text(&kv.value)))
            .collect()
    }

    #[test]
    fn each_event_becomes_a_record_with_its_json_and_routing_fields() {
        let sample = event(SAMPLE);
        let (record, repaired) = log_record(&sample, &Shipment::plain(&[]), 42);
        assert!(!repaired);
        assert_eq!(record.time_unix_nano, 1_712_167_312_284_000_000);
        assert_eq!(record.observed_time_unix_nano, 42);
        assert_eq!(text(&record.body), SAMPLE.trim_end());
        assert_eq!(
            attrs(&record),
            [
                ("customer_code", "486...f"),
                ("event.type", "rendition_change"),
                ("configuration_id", "4a3...a")
            ]
        );
        let bare = event(r#"{"event":{"timestamp":1.5}}"#);
        let (record, _) = log_record(&bare, &Shipment::plain(&[]), 42);
        assert!(record.attributes.is_empty(), "absent fields are left out");
        assert_eq!(record.time_unix_nano, 1_500_000);
    }

    #[test]
    fn observability_records_are_spliced_into_the_body() {
        let e = event(r#"{"event":{"timestamp":1}}"#);
        let (record, _) = log_record(&e, &Shipment::new(&[], Some(br#"{"r":1}"#)), 1);
        let body: serde_json::Value = serde_json::from_str(text(&record.body)).unwrap();
        assert_eq!(
            body["ops_metadata"]["collector_observability"],
            serde_json::json!([{"r": 1}])
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        // The routing scan skips strings it does not need without checking them.
        let raw = b"{\"event\":{\"timestamp\":1},\"x\":\"\xff\"}".to_vec();
        let origin = switchyard_core::Origin {
            partition: switchyard_core::PartitionId(0),
            topic: "qoe".into(),
            kafka_partition: 0,
            offset: 0,
            member: None,
        };
        let e = Event::parse(raw.into(), origin, 1 << 20).expect("the scan skips the string");
        let (records, outcome) =
            LogEncoder::new(&config("http://h/v1/logs")).records(Shipment::plain(&[e]));
        assert_eq!(outcome.fixes, [Fix::new(0, FIX_UTF8)]);
        assert!(text(&records[0].body).contains('\u{fffd}'));
    }

    #[test]
    fn record_len_is_exact_without_observability() {
        let enc = LogEncoder::new(&config("http://h/v1/logs"));
        let long = format!(
            r#"{{"event":{{"timestamp":2,"type":"a\"b"}},"customer_code":"{}"}}"#,
            "c".repeat(300)
        );
        for json in [SAMPLE, r#"{"event":{"timestamp":1}}"#, long.as_str()] {
            let e = event(json);
            let (record, _) = log_record(&e, &Shipment::plain(&[]), 1);
            assert_eq!(
                enc.record_len(&e),
                message::encoded_len_repeated(2, &[record]),
                "{json}"
            );
        }
    }

    #[test]
    fn framing_is_what_prost_writes() {
        let mut cfg = config("http://h/v1/logs");
        cfg.resource_attributes = [("deployment.environment.name".into(), "prod".into())].into();
        let enc = LogEncoder::new(&cfg);
        let events = [event(SAMPLE), event(r#"{"event":{"timestamp":1}}"#)];
        let (records, _) = enc.records(Shipment::new(&events, Some(br#"{"r":1}"#)));
        let whole = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(enc.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(enc.scope.clone()),
                    log_records: records.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut out = Vec::new();
        assert_eq!(enc.request_len(&records), whole.encoded_len());
        enc.encode(records, &mut out);
        assert_eq!(out, whole.encode_to_vec());
        let back = ExportLogsServiceRequest::decode(&out[..]).unwrap();
        let resource = back.resource_logs[0].resource.as_ref().unwrap();
        let keys: Vec<_> = resource
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["service.name", "deployment.environment.name"]);
        assert_eq!(
            back.resource_logs[0].scope_logs[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            SCOPE_NAME
        );
        // The envelope estimate bounds what the records do not count.
        let (empty, _) = enc.records(Shipment::plain(&[]));
        assert!(enc.request_len(&empty) <= enc.envelope_len());
    }
}
