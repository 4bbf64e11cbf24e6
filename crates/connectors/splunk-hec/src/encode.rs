//! The HEC event-protocol body: one envelope object per event, concatenated (not a JSON
//! array). The event is embedded from its raw bytes, never re-serialized; only `time` varies
//! per event, so the rest of the envelope is rendered once.

use crate::config::HecConfig;
use std::io::Write;
use switchyard_core::compress::BodySink;
use switchyard_core::{Event, Shipment};

#[derive(Debug, Clone)]
pub struct HecEnvelope {
    /// `,"host":…,"source":…,"sourcetype":…,"index":…,"event":` for the configured fields.
    middle: Vec<u8>,
}

/// `{"time":` + the longest time we write (`18446744073709.551615`) + `}`.
const FIXED_LEN: usize = 8 + 21 + 1;

impl HecEnvelope {
    pub fn new(cfg: &HecConfig) -> Self {
        let mut middle = Vec::new();
        for (key, value) in [
            ("host", &cfg.host),
            ("source", &cfg.source),
            ("sourcetype", &cfg.sourcetype),
            ("index", &cfg.index),
        ] {
            if let Some(v) = value {
                // Serializing a &str into a Vec cannot fail.
                let quoted = serde_json::to_string(v).unwrap_or_default();
                let _ = write!(middle, ",\"{key}\":{quoted}");
            }
        }
        middle.extend_from_slice(b",\"event\":");
        HecEnvelope { middle }
    }

    /// An upper bound of the bytes `event` adds to a body.
    pub fn encoded_len(&self, event: &Event) -> usize {
        FIXED_LEN + self.middle.len() + event.raw().len()
    }

    /// An upper bound of the bytes of the shipment's body.
    pub fn body_len(&self, shipment: Shipment<'_>) -> usize {
        let events = shipment.events();
        let json: usize = events.iter().map(|e| shipment.event_json_len(e)).sum();
        json + events.len() * (FIXED_LEN + self.middle.len())
    }

    /// Appends one envelope per event of the shipment.
    pub fn encode(&self, shipment: Shipment<'_>, body: &mut impl BodySink) {
        for e in shipment.events() {
            let out = body.staged();
            out.extend_from_slice(b"{\"time\":");
            write_epoch_seconds(out, e.timestamp_us());
            out.extend_from_slice(&self.middle);
            shipment.write_event(e, out);
            out.push(b'}');
            body.commit();
        }
    }
}

/// Epoch seconds with a fraction: milliseconds when that is exact, else microseconds
/// (Splunk keeps `_time` to the microsecond).
fn write_epoch_seconds(out: &mut Vec<u8>, us: i64) {
    let (secs, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let _ = if frac % 1000 == 0 {
        write!(out, "{secs}.{:03}", frac / 1000)
    } else {
        write!(out, "{secs}.{frac:06}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use switchyard_core::compress::Compression;
    use switchyard_testkit::event;

    fn envelope(index: Option<&str>) -> HecEnvelope {
        HecEnvelope::new(&HecConfig {
            endpoint: "http://x".into(),
            token: None,
            index: index.map(Into::into),
            source: Some("switchyard".into()),
            sourcetype: Some("_json".into()),
            host: Some("router-\"1\"".into()),
            compression: Compression::Gzip,
            compression_level: None,
            ack: false,
            ack_poll_interval_secs: 10,
            ack_max_pending: 1000,
            ack_timeout_secs: 300,
        })
    }

    #[test]
    fn body_is_concatenated_envelopes_with_raw_event() {
        let raw1 = r#"{"event":{"type":"play","timestamp":1712167312284},"n":1}"#;
        let raw2 = "{\"event\":{\"timestamp\":1712167311343.687} ,\"n\":2}\n";
        let mut out = Vec::new();
        let env = envelope(Some("qoe"));
        let events = [event(raw1), event(raw2)];
        env.encode(Shipment::plain(&events), &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("{\"time\":1712167312.284,"));
        assert!(text.contains(r#""event":{"event":{"type":"play","timestamp":1712167312284},"n":1}}{"time":1712167311.343687,"#));
        assert!(
            text.contains(r#""event":{"event":{"timestamp":1712167311343.687} ,"n":2}}"#),
            "raw bytes embedded as-is"
        );

        let objs: Vec<Value> = serde_json::Deserializer::from_slice(&out)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["host"], "router-\"1\"");
        assert_eq!(objs[0]["index"], "qoe");
        assert_eq!(objs[0]["sourcetype"], "_json");
        assert_eq!(objs[0]["source"], "switchyard");
        assert_eq!(objs[1]["event"]["n"], 2);
        assert!(out.len() <= env.encoded_len(&event(raw1)) + env.encoded_len(&event(raw2)));
        assert!(out.len() <= env.body_len(Shipment::plain(&events)));
    }

    #[test]
    fn each_event_carries_the_records_and_the_body_length_bounds_it() {
        let events = [
            event(r#"{"event":{"timestamp":1000}}"#),
            event(
                r#"{"event":{"timestamp":2000},"ops_metadata":{"collector_observability":[{"x":0}]}}"#,
            ),
        ];
        let shipment = Shipment::new(&events, Some(br#"{"r":1}"#));
        let env = envelope(Some("qoe"));
        let mut out = Vec::new();
        env.encode(shipment, &mut out);
        let objs: Vec<Value> = serde_json::Deserializer::from_slice(&out)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap();
        let records =
            |i: usize| objs[i]["event"]["ops_metadata"]["collector_observability"].clone();
        assert_eq!(records(0), serde_json::json!([{"r": 1}]));
        assert_eq!(records(1), serde_json::json!([{"x": 0}, {"r": 1}]));
        assert!(out.len() <= env.body_len(shipment));
    }

    #[test]
    fn unset_fields_are_left_to_the_token_defaults() {
        let mut out = Vec::new();
        let events = [event(r#"{"event":{"timestamp":1000}}"#)];
        envelope(None).encode(Shipment::plain(&events), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("index").is_none());
        assert_eq!(v["time"].as_f64(), Some(1.0));
    }
}
