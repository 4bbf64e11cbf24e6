//! The logs body: a JSON array in which each log is the QoE event's own top-level fields (its
//! bytes copied as received) followed by Datadog's reserved fields. The event is never
//! re-serialized: its closing brace is replaced by the extra fields.
//!
//! Because the router's fields come after the event's, they win if an event already has a
//! top-level `message`, `timestamp`, `ddtags`, `service` or `ddsource`.

use crate::config::{DatadogConfig, MAX_AGE, MAX_LOG_BYTES, Oversize, TagField};
use std::io::Write;
use switchyard_core::age::{ORIGINAL_TIMESTAMP, Stamp, Window};
use switchyard_core::compress::BodySink;
use switchyard_core::timings::now_ms;
use switchyard_core::{Event, Fix, Shipment};

#[derive(Debug, Clone)]
pub struct LogEncoder {
    /// `,"ddsource":…,"service":…[,"hostname":…]`, the same for every log.
    fixed: Vec<u8>,
    static_tags: String,
    tag_fields: Vec<TagField>,
    oversize: Oversize,
    window: Window,
}

/// Events left out and adjustments made while encoding.
#[derive(Debug, Default)]
pub struct EncodeReport {
    pub rejected: Vec<(usize, String)>,
    pub fixes: Vec<Fix>,
}

/// `,"ddtags":""` (12) + `,"message":""` (13) + `,"timestamp":` (13) + up to 20 digits +
/// `,"original_timestamp":` (22) + up to 20 digits + `}` (1), rounded up.
const PER_LOG: usize = 104;

impl LogEncoder {
    pub fn new(cfg: &DatadogConfig) -> Self {
        let mut fixed = Vec::new();
        push_field(&mut fixed, "ddsource", &cfg.ddsource);
        push_field(&mut fixed, "service", &cfg.service);
        if let Some(h) = &cfg.hostname {
            push_field(&mut fixed, "hostname", h);
        }
        LogEncoder {
            fixed,
            static_tags: cfg.tags.join(","),
            tag_fields: cfg.tag_fields.clone(),
            oversize: cfg.oversize,
            window: Window {
                destination: "Datadog",
                max_age: MAX_AGE,
                max_ahead: None,
                action: cfg.out_of_window,
            },
        }
    }

    /// Bytes of `event`'s log (exact unless its tag values need JSON escapes).
    pub fn log_len(&self, event: &Event) -> usize {
        event.json().len() + self.fields_len(event)
    }

    /// [`LogEncoder::log_len`] of `event` as `shipment` writes it: the records spliced into
    /// each log count towards Datadog's 1 MB per log.
    fn shipped_log_len(&self, shipment: Shipment<'_>, event: &Event) -> usize {
        shipment.event_json_len(event) + self.fields_len(event)
    }

    /// What the log adds to the event's JSON.
    fn fields_len(&self, event: &Event) -> usize {
        let tags: usize = self.static_tags.len()
            + self
                .tag_fields
                .iter()
                .map(|f| tag_value(event, *f).map_or(0, |v| f.name().len() + v.len() + 2))
                .sum::<usize>();
        self.fixed.len() + tags + message(event).len() + PER_LOG
    }

    /// An upper bound of the bytes of the shipment's body (unless tag values need escapes).
    pub fn body_len(&self, shipment: Shipment<'_>) -> usize {
        let logs: usize = shipment
            .events()
            .iter()
            .map(|e| self.shipped_log_len(shipment, e) + 1)
            .sum();
        2 + logs
    }

    /// Appends `[log,log,…]` to `out`.
    pub fn encode(&self, shipment: Shipment<'_>, body: &mut impl BodySink) -> EncodeReport {
        let mut report = EncodeReport::default();
        let now = now_ms() as i64;
        body.staged().push(b'[');
        let mut first = true;
        for (i, e) in shipment.events().iter().enumerate() {
            let len = self.shipped_log_len(shipment, e);
            if len > MAX_LOG_BYTES {
                match self.oversize {
                    Oversize::Reject => {
                        report.rejected.push((
                            i,
                            format!("oversize: a log of {len} bytes is over Datadog's 1 MB per log, which Datadog would truncate"),
                        ));
                        continue;
                    }
                    Oversize::Truncate => report.fixes.push(Fix::new(i, "sent_for_truncation")),
                }
            }
            let stamp = match self.window.stamp(e, i, now) {
                Ok((stamp, fix)) => {
                    report.fixes.extend(fix);
                    stamp
                }
                Err(reason) => {
                    report.rejected.push((i, reason));
                    continue;
                }
            };
            let out = body.staged();
            if !first {
                out.push(b',');
            }
            first = false;
            self.write_log(shipment, e, stamp, out);
            body.commit();
        }
        body.staged().push(b']');
        report
    }

    fn write_log(&self, shipment: Shipment<'_>, e: &Event, stamp: Stamp, out: &mut Vec<u8>) {
        // The event is a JSON object (parsing checked), so it ends in `}` and is not empty:
        // it has at least `event.timestamp`. Its closing brace makes way for our fields.
        shipment.write_event(e, out);
        out.pop();
        out.extend_from_slice(&self.fixed);
        out.extend_from_slice(b",\"ddtags\":");
        json_string(out, &self.tags(e));
        out.extend_from_slice(b",\"message\":");
        json_string(out, message(e));
        // Epoch milliseconds: Datadog's date remapper reads `timestamp`.
        let _ = match stamp {
            Stamp::Own(ms) => write!(out, ",\"timestamp\":{ms}}}"),
            Stamp::Restamped { now, original } => write!(
                out,
                ",\"timestamp\":{now},\"{ORIGINAL_TIMESTAMP}\":{original}}}"
            ),
        };
    }

    fn tags(&self, e: &Event) -> String {
        let mut tags = self.static_tags.clone();
        for f in &self.tag_fields {
            if let Some(v) = tag_value(e, *f) {
                if !tags.is_empty() {
                    tags.push(',');
                }
                tags.push_str(f.name());
                tags.push(':');
                tags.push_str(v);
            }
        }
        tags
    }
}

impl TagField {
    fn name(self) -> &'static str {
        match self {
            TagField::CustomerCode => "customer_code",
            TagField::EventType => "event_type",
        }
    }
}

fn tag_value(e: &Event, f: TagField) -> Option<&str> {
    match f {
        TagField::CustomerCode => e.customer_code(),
        TagField::EventType => e.event_type(),
    }
}

/// The log line Datadog shows: the event type.
fn message(e: &Event) -> &str {
    e.event_type().unwrap_or("qoe event")
}

fn push_field(out: &mut Vec<u8>, key: &str, value: &str) {
    let _ = write!(out, ",\"{key}\":");
    json_string(out, value);
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use serde_json::Value;
    use switchyard_testkit::event;

    const SAMPLE: &str = include_str!("../../../testkit/data/sample-event.json");

    #[test]
    fn each_log_keeps_the_event_fields_and_adds_datadogs() {
        let mut cfg = config();
        cfg.tags = vec!["env:prod".into()];
        cfg.hostname = Some("router-1".into());
        let enc = LogEncoder::new(&cfg);
        let mut out = Vec::new();
        let sample = event(SAMPLE);
        let events = [sample.clone(), sample.clone()];
        let o = enc.encode(Shipment::plain(&events), &mut out);
        assert!(o.rejected.is_empty());
        let logs: Value = serde_json::from_slice(&out).unwrap();
        let logs = logs.as_array().unwrap();
        assert_eq!(logs.len(), 2);
        let original: Value = serde_json::from_str(SAMPLE).unwrap();
        let log = logs[0].as_object().unwrap();
        for (k, v) in original.as_object().unwrap() {
            assert_eq!(&log[k], v, "attribute {k} kept as is");
        }
        assert_eq!(log["ddsource"], "qoe");
        assert_eq!(log["service"], "video-qoe");
        assert_eq!(log["hostname"], "router-1");
        assert_eq!(
            log["ddtags"],
            "env:prod,customer_code:486...f,event_type:rendition_change"
        );
        assert_eq!(log["message"], "rendition_change");
        // The sample is from 2024, long past what Datadog indexes: sent stamped now.
        assert_eq!(log["original_timestamp"], 1712167312284u64);
        let restamped = log["timestamp"].as_u64().unwrap();
        assert!(restamped.abs_diff(now_ms()) < 60_000, "{restamped}");
        assert_eq!(o.fixes.len(), 2);
        assert!(o.fixes.iter().all(|f| f.kind == "restamped"));
        assert!(out.len() <= 2 + 2 * (enc.log_len(&sample) + 1));
        assert!(out.len() <= enc.body_len(Shipment::plain(&events)));
    }

    #[test]
    fn an_event_over_one_megabyte_is_rejected_or_sent_for_truncation() {
        let big = event(&format!(
            r#"{{"event":{{"timestamp":1}},"pad":"{}"}}"#,
            "x".repeat(MAX_LOG_BYTES)
        ));
        let small = event(r#"{"event":{"timestamp":2,"type":"heartbeat"}}"#);
        let mut out = Vec::new();
        let events = [big.clone(), small.clone()];
        let o = LogEncoder::new(&config()).encode(Shipment::plain(&events), &mut out);
        assert_eq!(o.rejected.len(), 1);
        assert_eq!(o.rejected[0].0, 0);
        assert!(o.rejected[0].1.starts_with("oversize"));
        let logs: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            logs.as_array().unwrap().len(),
            1,
            "only the small log is sent"
        );

        let mut cfg = config();
        cfg.oversize = Oversize::Truncate;
        let mut out = Vec::new();
        let o = LogEncoder::new(&cfg).encode(Shipment::plain(&[big, small]), &mut out);
        assert!(o.rejected.is_empty());
        assert_eq!(o.fixes[0], Fix::new(0, "sent_for_truncation"));
    }

    fn at(age_ms: u64, id: &str) -> Event {
        event(&format!(
            r#"{{"event":{{"timestamp":{},"type":"x"}},"event_id":"{id}"}}"#,
            now_ms() - age_ms
        ))
    }

    #[test]
    fn an_event_too_old_to_index_is_restamped_or_refused() {
        const HOUR: u64 = 3_600_000;
        let (fresh, old) = (at(17 * HOUR, "fresh"), at(19 * HOUR, "old"));
        let mut out = Vec::new();
        let events = [fresh.clone(), old.clone()];
        let o = LogEncoder::new(&config()).encode(Shipment::plain(&events), &mut out);
        let logs: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(logs[0]["timestamp"], fresh.timestamp_us() / 1000);
        assert!(logs[0].get("original_timestamp").is_none());
        assert_eq!(logs[1]["original_timestamp"], old.timestamp_us() / 1000);
        assert!(logs[1]["timestamp"].as_i64().unwrap() > now_ms() as i64 - 60_000);
        assert_eq!(o.fixes.len(), 1);
        assert_eq!((o.fixes[0].event, o.fixes[0].kind), (1, "restamped"));
        assert!(o.fixes[0].detail.as_ref().unwrap().contains("19.0 h old"));

        let mut cfg = config();
        cfg.out_of_window = switchyard_core::age::OutOfWindow::DeadLetter;
        let mut out = Vec::new();
        let o = LogEncoder::new(&cfg).encode(Shipment::plain(&[fresh, old]), &mut out);
        assert_eq!(o.rejected.len(), 1);
        assert_eq!(o.rejected[0].0, 1);
        assert!(
            o.rejected[0].1.starts_with("too_old: "),
            "{}",
            o.rejected[0].1
        );
        let logs: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(logs.as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_appended_records_count_towards_the_one_megabyte_per_log() {
        let enc = LogEncoder::new(&config());
        let probe = at(0, "big");
        let pad = MAX_LOG_BYTES - enc.log_len(&probe) - 100;
        let big = event(&format!(
            r#"{{"event":{{"timestamp":{},"type":"x"}},"event_id":"big","pad":"{}"}}"#,
            now_ms(),
            "x".repeat(pad)
        ));
        assert!(enc.log_len(&big) <= MAX_LOG_BYTES);
        let records = format!(r#"{{"pad":"{}"}}"#, "r".repeat(200));
        let mut out = Vec::new();
        let events = [big];
        let o = enc.encode(Shipment::new(&events, Some(records.as_bytes())), &mut out);
        assert_eq!(o.rejected.len(), 1, "with its records the log is over 1 MB");
        let mut out = Vec::new();
        let o = enc.encode(Shipment::plain(&events), &mut out);
        assert!(o.rejected.is_empty(), "without them it fits");
    }

    #[test]
    fn tag_values_are_escaped() {
        let e = event(r#"{"event":{"timestamp":1,"type":"a\"b"},"customer_code":"c"}"#);
        let mut out = Vec::new();
        LogEncoder::new(&config()).encode(Shipment::plain(&[e]), &mut out);
        let logs: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(logs[0]["ddtags"], "customer_code:c,event_type:a\"b");
    }
}
