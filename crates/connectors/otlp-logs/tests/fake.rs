//! Encode, send and classify against the testkit's strict OTLP receiver.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::compress::Compression;
use switchyard_core::{Connector, Event, Outcome, Secret, Shipment, Verdict};
use switchyard_http::{ClientOptions, HttpBody, HttpTransport, Url};
use switchyard_otlp_logs::{BuildError, OtlpLogs, OtlpLogsConfig};
use switchyard_testkit::otlp::OtlpAnswer;
use switchyard_testkit::{FakeOtlp, event};

const KEY: &str = "k-123";
const SAMPLE: &str = include_str!("../../../testkit/data/sample-event.json");

fn config(fake: &FakeOtlp) -> OtlpLogsConfig {
    OtlpLogsConfig {
        endpoint: Some(fake.logs_url()),
        headers: BTreeMap::from([("x-api-key".into(), Secret::new(KEY))]),
        service_name: "qoe-router".into(),
        resource_attributes: BTreeMap::from([(
            "deployment.environment.name".into(),
            "test".into(),
        )]),
        compression: Compression::Gzip,
        compression_level: None,
    }
}

fn connector(cfg: &OtlpLogsConfig) -> OtlpLogs {
    OtlpLogs::new(cfg, &ClientOptions::default()).unwrap()
}

async fn deliver(c: &OtlpLogs, events: &[Event], observability: Option<&[u8]>) -> Verdict {
    let encoded = c.encode(Shipment::new(events, observability)).unwrap();
    assert!(encoded.rejected.is_empty() && encoded.fixes.is_empty());
    let response = c.send(&encoded.request).await.unwrap();
    c.classify(&response, events)
}

fn numbered(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(&format!(
                r#"{{"event":{{"type":"heartbeat","timestamp":{}.5}},"event_id":"e{i}"}}"#,
                1_712_167_312_000u64 + i as u64
            ))
        })
        .collect()
}

#[tokio::test]
async fn events_arrive_as_records_with_their_attributes_and_resource() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    let c = connector(&config(&fake));
    let sample = event(SAMPLE);
    let bare = event(r#"{"event":{"timestamp":1712167311343.687},"event_id":"bare"}"#);
    let records = br#"{"metric_name":"router_ms","value":3}"#;
    let v = deliver(&c, &[sample, bare], Some(records)).await;
    assert_eq!(v, Verdict::new(200, Outcome::Delivered));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());

    let got = fake.records();
    assert_eq!(got.len(), 2);
    let mut original: Value = serde_json::from_str(SAMPLE).unwrap();
    original["ops_metadata"]["collector_observability"]
        .as_array_mut()
        .unwrap()
        .push(json!({"metric_name": "router_ms", "value": 3}));
    assert_eq!(
        got[0].event, original,
        "the event, with our records spliced in"
    );
    assert_eq!(got[0].time_unix_nano, 1_712_167_312_284_000_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(now - got[0].observed_time_unix_nano < 60_000_000_000);
    assert_eq!(
        got[0].attributes,
        BTreeMap::from([
            ("customer_code".to_string(), "486...f".to_string()),
            ("event.type".to_string(), "rendition_change".to_string()),
            ("configuration_id".to_string(), "4a3...a".to_string()),
        ])
    );
    assert_eq!(
        got[0].resource,
        BTreeMap::from([
            ("service.name".to_string(), "qoe-router".to_string()),
            (
                "deployment.environment.name".to_string(),
                "test".to_string()
            ),
        ])
    );
    assert_eq!(got[0].scope, "switchyard");
    assert!(got[1].attributes.is_empty(), "absent fields are left out");
    assert_eq!(got[1].time_unix_nano, 1_712_167_311_343_687_000);
    assert!(fake.seen()[0].compressed);
}

#[tokio::test]
async fn uncompressed_bodies_are_accepted_too() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    let mut cfg = config(&fake);
    cfg.compression = Compression::None;
    let c = connector(&cfg);
    let events = numbered(3);
    let encoded = c.encode(Shipment::plain(&events)).unwrap();
    assert!(encoded.request.encoding.is_none());
    // Uncompressed, the body is the records the batcher counted plus the envelope that
    // hard_limits() leaves room for.
    let counted: usize = events.iter().map(|e| c.encoded_len(e)).sum();
    let envelope = switchyard_otlp_logs::config::MAX_REQUEST_BYTES - c.hard_limits().max_bytes;
    let size = c.request_size(&encoded.request);
    assert!(
        size > counted && size <= counted + envelope,
        "{size} {counted}"
    );
    let response = c.send(&encoded.request).await.unwrap();
    assert_eq!(c.classify(&response, &events).outcome, Outcome::Delivered);
    assert_eq!(fake.received_count(), 3);
    assert!(!fake.seen()[0].compressed);
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_rejected() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    let mut cfg = config(&fake);
    cfg.headers.clear();
    let v = deliver(&connector(&cfg), &numbered(1), None).await;
    assert_eq!(
        v.outcome,
        Outcome::Reject {
            reason: "OTLP 401: missing x-api-key".into()
        }
    );
    cfg.headers.insert("X-Api-Key".into(), Secret::new("wrong"));
    let v = deliver(&connector(&cfg), &numbered(1), None).await;
    assert_eq!(v.status_code, 403);
    assert!(matches!(v.outcome, Outcome::Reject { .. }));
    assert_eq!(fake.received_count(), 0);
}

#[tokio::test]
async fn overload_is_retried_after_the_servers_delay() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    fake.script_otlp([OtlpAnswer::fail(503, "collector busy", Some(7))]);
    let c = connector(&config(&fake));
    let events = numbered(2);
    let encoded = c.encode(Shipment::plain(&events)).unwrap();
    let v = c.classify(&c.send(&encoded.request).await.unwrap(), &events);
    assert_eq!(
        v.outcome,
        Outcome::Retry {
            reason: "OTLP 503: collector busy".into()
        }
    );
    assert_eq!(v.retry_after, Some(Duration::from_secs(7)));
    // The same request, sent again once the receiver recovers.
    let v = c.classify(&c.send(&encoded.request).await.unwrap(), &events);
    assert_eq!(v.outcome, Outcome::Delivered);
    assert_eq!(fake.received_count(), 2);

    fake.fail_randomly(1000);
    let v = deliver(&c, &events, None).await;
    assert_eq!(v.status_code, 503);
    assert!(matches!(v.outcome, Outcome::Retry { .. }));
}

#[tokio::test]
async fn a_partial_success_is_delivered_with_the_drop_counted() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    fake.script_otlp([OtlpAnswer::partial(2, "2 records over the attribute limit")]);
    let c = connector(&config(&fake));
    let v = deliver(&c, &numbered(5), None).await;
    assert_eq!(v.outcome, Outcome::Delivered, "the spec forbids a retry");
    let dropped = v.dropped.unwrap();
    assert_eq!(dropped.count, 2);
    assert_eq!(dropped.reason, "2 records over the attribute limit");
    assert_eq!(fake.received_count(), 3);
}

#[tokio::test]
async fn a_request_over_the_receivers_limit_is_split() {
    let fake = FakeOtlp::start_with(KEY, 1000, true).await.unwrap();
    let v = deliver(&connector(&config(&fake)), &numbered(20), None).await;
    assert_eq!((v.status_code, v.outcome), (413, Outcome::Split));
}

/// The fake would catch an encoder that got the protocol or the timestamps wrong.
#[tokio::test]
async fn the_fake_refuses_what_a_wrong_encoder_would_send() {
    let fake = FakeOtlp::start(KEY).await.unwrap();
    let c = connector(&config(&fake));
    let transport = HttpTransport::new(
        Url::parse(&fake.logs_url()).unwrap(),
        &ClientOptions::default(),
    )
    .unwrap()
    .header("x-api-key", KEY)
    .unwrap();
    let record = |time_unix_nano: u64, body: &str| LogRecord {
        time_unix_nano,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let request = |r: LogRecord| HttpBody {
        bytes: ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![r],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into(),
        encoding: None,
    };
    let json_event = r#"{"event":{"timestamp":1712167312284}}"#;
    // Milliseconds where nanoseconds belong.
    let r = transport
        .clone()
        .content_type("application/x-protobuf")
        .post(&request(record(1_712_167_312_284, json_event)))
        .await
        .unwrap();
    let v = c.classify(&r.into(), &[]);
    assert_eq!(v.status_code, 400);
    let Outcome::Reject { reason } = v.outcome else {
        panic!("{v:?}")
    };
    assert!(reason.contains("time_unix_nano"), "{reason}");
    // A body that is not the event's JSON.
    let r = transport
        .clone()
        .content_type("application/x-protobuf")
        .post(&request(record(1, "stall_start")))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    // JSON's content type on a protobuf body.
    let r = transport
        .post(&request(record(1_712_167_312_284_000_000, json_event)))
        .await
        .unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(fake.received_count(), 0);
    let violations = fake.violations().join("\n");
    for what in [
        "time_unix_nano",
        "not a JSON object",
        "content-type",
        "service.name",
    ] {
        assert!(violations.contains(what), "{what}: {violations}");
    }
}

#[test]
fn a_bad_endpoint_or_header_fails_the_build_without_showing_secrets() {
    let mut cfg = OtlpLogsConfig {
        endpoint: Some("localhost:4318".into()),
        headers: BTreeMap::from([("authorization".into(), Secret::new("Bearer s3cr3t\n"))]),
        service_name: "s".into(),
        resource_attributes: BTreeMap::new(),
        compression: Compression::Gzip,
        compression_level: None,
    };
    let err = OtlpLogs::new(&cfg, &ClientOptions::default()).unwrap_err();
    assert!(matches!(err, BuildError::Url(_)), "{err}");
    cfg.endpoint = Some("http://127.0.0.1:4318/v1/logs".into());
    let err = OtlpLogs::new(&cfg, &ClientOptions::default()).unwrap_err();
    assert!(matches!(err, BuildError::Header(_)), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    cfg.headers = BTreeMap::from([("authorization".into(), Secret::new("Bearer s3cr3t"))]);
    let c = OtlpLogs::new(&cfg, &ClientOptions::default()).unwrap();
    assert!(!format!("{c:?} {cfg:?}").contains("s3cr3t"));
}
