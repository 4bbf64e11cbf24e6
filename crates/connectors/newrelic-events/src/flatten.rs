//! Flattening a QoE event into one Event API event, by New Relic's rules: dotted names for
//! nested objects (`event.metrics.stall_count`), arrays by index or as JSON, booleans as
//! strings or numbers, nulls dropped, an `eventType` and an integer epoch-ms `timestamp`.
//! Limits New Relic enforces by silently dropping events (254 attributes, 255-character names,
//! 4096-character values) are applied here, each adjustment counted by reason.

use crate::config::{Arrays, Booleans, NewRelicConfig, OnInvalid, TEMPLATE, check_event_type};
use serde_json::{Map, Value};
use std::io::Write;
use switchyard_core::Event;

pub const MAX_ATTRIBUTES: usize = 254;
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_VALUE_CHARS: usize = 4096;

/// Names New Relic owns: ours (`eventType`, `timestamp`), ones it drops or handles in
/// undefined ways.
const RESERVED: [&str; 6] = [
    "eventType",
    "timestamp",
    "accountId",
    "entity.guid",
    "entity.name",
    "entity.type",
];

#[derive(Debug, Clone)]
enum EventType {
    Fixed(String),
    /// Text before and after `{event.type}`.
    Template(String, String),
}

#[derive(Debug, Clone)]
pub struct Flattener {
    event_type: EventType,
    arrays: Arrays,
    booleans: Booleans,
    on_invalid: OnInvalid,
}

/// Events left out and adjustments made while encoding.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: Vec<(usize, String)>,
    pub fixes: Vec<&'static str>,
}

impl Flattener {
    pub fn new(cfg: &NewRelicConfig) -> Result<Self, String> {
        check_event_type(&cfg.event_type.replace(TEMPLATE, "X"))
            .map_err(|e| format!("event_type: {e}"))?;
        let event_type = match cfg.event_type.split_once(TEMPLATE) {
            Some((pre, post)) => EventType::Template(pre.into(), post.into()),
            None => EventType::Fixed(cfg.event_type.clone()),
        };
        Ok(Flattener {
            event_type,
            arrays: cfg.arrays,
            booleans: cfg.booleans,
            on_invalid: cfg.on_invalid,
        })
    }

    /// Flattened events are larger than the raw JSON (every name carries its full path);
    /// this is the batcher's estimate, the compressed size is checked exactly.
    pub fn estimated_len(&self, event: &Event) -> usize {
        event.raw().len() * 3 / 2 + 64
    }

    /// Appends `[event,event,…]` to `out`.
    pub fn encode(
        &self,
        events: &[Event],
        observability: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        out.push(b'[');
        let mut first = true;
        for (i, e) in events.iter().enumerate() {
            let start = out.len();
            if !first {
                out.push(b',');
            }
            let mut fixes = Vec::new();
            match self.write_event(e, observability, out, &mut fixes) {
                Ok(()) => {
                    first = false;
                    outcome.fixes.extend(fixes);
                }
                Err(reason) => {
                    out.truncate(start);
                    outcome.rejected.push((i, reason));
                }
            }
        }
        out.push(b']');
        outcome
    }

    fn write_event(
        &self,
        e: &Event,
        observability: Option<&[u8]>,
        out: &mut Vec<u8>,
        fixes: &mut Vec<&'static str>,
    ) -> Result<(), String> {
        // The one full parse in switchyard: the Event API needs every leaf.
        let spliced;
        let text = match observability {
            Some(records) => {
                let mut buf = Vec::with_capacity(e.json().len() + records.len() + 64);
                e.write_json(&mut buf, Some(records));
                spliced = buf;
                &spliced[..]
            }
            None => e.json(),
        };
        let value: Value = serde_json::from_slice(text).map_err(|err| format!("invalid: {err}"))?;
        let Value::Object(top) = value else {
            return Err("invalid: not an object".into());
        };
        out.extend_from_slice(b"{\"eventType\":");
        json(out, &self.event_type(e, fixes));
        let _ = write!(out, ",\"timestamp\":{}", e.timestamp_us().div_euclid(1000));
        let mut w = Writer {
            out,
            f: self,
            fixes,
            name: String::with_capacity(64),
            attributes: 2,
            capped: false,
        };
        w.object(&top)?;
        w.out.push(b'}');
        Ok(())
    }

    fn event_type(&self, e: &Event, fixes: &mut Vec<&'static str>) -> String {
        match &self.event_type {
            EventType::Fixed(t) => t.clone(),
            EventType::Template(pre, post) => {
                let raw = e.event_type().unwrap_or("unknown");
                let clean: String = raw
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if clean != raw {
                    fixes.push("event_type_sanitized");
                }
                format!("{pre}{clean}{post}")
            }
        }
    }
}

/// Writes one event's attributes, tracking the dotted name of the current leaf.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    f: &'a Flattener,
    fixes: &'a mut Vec<&'static str>,
    name: String,
    attributes: usize,
    /// The attribute cap was hit (counted once per event).
    capped: bool,
}

impl Writer<'_> {
    fn object(&mut self, m: &Map<String, Value>) -> Result<(), String> {
        for (k, v) in m {
            self.nested(k, v)?;
        }
        Ok(())
    }

    fn nested(&mut self, segment: &str, v: &Value) -> Result<(), String> {
        let len = self.name.len();
        if len > 0 {
            self.name.push('.');
        }
        self.name.push_str(segment);
        let result = self.value(v);
        self.name.truncate(len);
        result
    }

    fn value(&mut self, v: &Value) -> Result<(), String> {
        match v {
            Value::Object(m) => self.object(m),
            Value::Array(items) => match self.f.arrays {
                Arrays::Flatten => {
                    for (i, x) in items.iter().enumerate() {
                        self.nested(&i.to_string(), x)?;
                    }
                    Ok(())
                }
                Arrays::Json => self.string(&Value::Array(items.clone()).to_string()),
            },
            // New Relic does not store nulls.
            Value::Null => Ok(()),
            Value::Bool(b) => match self.f.booleans {
                Booleans::String => self.string(if *b { "true" } else { "false" }),
                Booleans::Number => self.raw(if *b { "1" } else { "0" }),
            },
            Value::Number(n) => self.raw(&n.to_string()),
            Value::String(s) => self.string(s),
        }
    }

    fn string(&mut self, s: &str) -> Result<(), String> {
        let s = match s.char_indices().nth(MAX_VALUE_CHARS) {
            None => s,
            Some((cut, _)) => {
                self.problem("value_truncated", |name| {
                    format!("invalid: attribute {name} is longer than 4096 characters")
                })?;
                &s[..cut]
            }
        };
        if self.admit()? {
            json(self.out, s);
        }
        Ok(())
    }

    fn raw(&mut self, text: &str) -> Result<(), String> {
        if self.admit()? {
            self.out.extend_from_slice(text.as_bytes());
        }
        Ok(())
    }

    /// Writes the attribute's name if New Relic would keep it; false to skip the value.
    fn admit(&mut self) -> Result<bool, String> {
        if RESERVED.contains(&self.name.as_str()) {
            self.fixes.push("reserved_attribute");
            return Ok(false);
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            self.problem("name_too_long", |name| {
                let start: String = name.chars().take(40).collect();
                format!("invalid: an attribute name is longer than 255 characters ({start}…)")
            })?;
            return Ok(false);
        }
        if self.attributes >= MAX_ATTRIBUTES {
            if !self.capped {
                self.problem("too_many_attributes", |_| {
                    "invalid: more than 254 attributes".into()
                })?;
                self.capped = true;
            }
            return Ok(false);
        }
        self.attributes += 1;
        self.out.push(b',');
        json(self.out, &self.name);
        self.out.push(b':');
        Ok(true)
    }

    /// Counts `fix` when truncating; fails the event when rejecting (`reason` gets the
    /// attribute's name).
    fn problem(
        &mut self,
        fix: &'static str,
        reason: impl FnOnce(&str) -> String,
    ) -> Result<(), String> {
        match self.f.on_invalid {
            OnInvalid::Truncate => {
                self.fixes.push(fix);
                Ok(())
            }
            OnInvalid::Reject => Err(reason(&self.name)),
        }
    }
}

fn json(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use switchyard_testkit::event;

    const SAMPLE: &str = include_str!("../../../testkit/data/sample-event.json");

    fn flatten(cfg: &NewRelicConfig, events: &[Event]) -> (Vec<Map<String, Value>>, Outcome) {
        let mut out = Vec::new();
        let o = Flattener::new(cfg).unwrap().encode(events, None, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let list = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_object().unwrap().clone())
            .collect();
        (list, o)
    }

    /// Every leaf of `v` under its dotted name, as the Event API should receive it.
    fn leaves(v: &Value, name: &str, out: &mut Vec<(String, Value)>) {
        let join = |k: &str| {
            if name.is_empty() {
                k.to_string()
            } else {
                format!("{name}.{k}")
            }
        };
        match v {
            Value::Object(m) => m.iter().for_each(|(k, x)| leaves(x, &join(k), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| leaves(x, &join(&i.to_string()), out)),
            Value::Null => {}
            Value::Bool(b) => out.push((name.into(), Value::String(b.to_string()))),
            other => out.push((name.into(), other.clone())),
        }
    }

    #[test]
    fn the_sample_event_flattens_attribute_by_attribute() {
        let (events, o) = flatten(&config(), &[event(SAMPLE)]);
        assert!(o.rejected.is_empty() && o.fixes.is_empty(), "{o:?}");
        let got = &events[0];
        let mut want = Vec::new();
        leaves(&serde_json::from_str(SAMPLE).unwrap(), "", &mut want);
        assert_eq!(want.len(), 157);
        for (name, value) in &want {
            assert_eq!(got.get(name), Some(value), "attribute {name}");
        }
        assert_eq!(
            got.len(),
            want.len() + 2,
            "only eventType and timestamp are added"
        );
        assert_eq!(got["eventType"], "QoeEvent");
        assert_eq!(got["timestamp"], 1712167312284i64);
        // Spot checks of the rules themselves.
        assert_eq!(got["event.metrics.stall_count"], 0);
        assert_eq!(got["player.autostart"], "true");
        assert_eq!(got["geo_location.latitude"], 51.5074);
        assert_eq!(
            got["custom.webRTCStats.audio.inbounds.0.mimeType"],
            "audio/opus"
        );
        assert!(!got.contains_key("event.metrics"), "no nested objects");
        assert!(
            got.values().all(|v| v.is_string() || v.is_number()),
            "only strings and numbers"
        );
    }

    #[test]
    fn arrays_as_json_and_booleans_as_numbers() {
        let mut cfg = config();
        cfg.arrays = Arrays::Json;
        cfg.booleans = Booleans::Number;
        let (events, _) = flatten(
            &cfg,
            &[event(
                r#"{"event":{"timestamp":5},"a":[1,{"b":2}],"t":true,"n":null}"#,
            )],
        );
        assert_eq!(events[0]["a"], r#"[1,{"b":2}]"#);
        assert_eq!(events[0]["t"], 1);
        assert!(!events[0].contains_key("n"));
    }

    #[test]
    fn event_type_template_is_filled_and_sanitized() {
        let mut cfg = config();
        cfg.event_type = "Qoe_{event.type}".into();
        let (events, o) = flatten(
            &cfg,
            &[
                event(r#"{"event":{"timestamp":5,"type":"stall-start.v2"}}"#),
                event(r#"{"event":{"timestamp":5}}"#),
            ],
        );
        assert_eq!(events[0]["eventType"], "Qoe_stall_start_v2");
        assert_eq!(events[1]["eventType"], "Qoe_unknown");
        assert_eq!(o.fixes, ["event_type_sanitized"]);
    }

    fn oversized() -> Event {
        let mut attrs: Vec<String> = (0..300).map(|i| format!(r#""a{i}":{i}"#)).collect();
        attrs.push(format!(r#""long":"{}""#, "é".repeat(5000)));
        attrs.push(format!(r#""{}":1"#, "k".repeat(300)));
        attrs.push(r#""accountId":7"#.into());
        event(&format!(
            r#"{{"event":{{"timestamp":5}},"long0":"{}",{}}}"#,
            "x".repeat(4097),
            attrs.join(",")
        ))
    }

    #[test]
    fn limits_are_applied_and_counted_when_truncating() {
        let (events, o) = flatten(&config(), &[oversized()]);
        let e = &events[0];
        assert_eq!(e.len(), MAX_ATTRIBUTES);
        assert_eq!(e["long0"].as_str().unwrap().chars().count(), 4096);
        assert!(!e.contains_key("accountId"));
        let mut fixes = o.fixes.clone();
        fixes.sort();
        assert_eq!(
            fixes,
            [
                "name_too_long",
                "reserved_attribute",
                "too_many_attributes",
                "value_truncated",
                "value_truncated"
            ]
        );
        assert!(e.keys().all(|k| k.chars().count() <= MAX_NAME_CHARS));
    }

    #[test]
    fn limits_reject_the_event_when_configured() {
        let mut cfg = config();
        cfg.on_invalid = OnInvalid::Reject;
        let good = event(r#"{"event":{"timestamp":5}}"#);
        let (events, o) = flatten(&cfg, &[good.clone(), oversized(), good]);
        assert_eq!(events.len(), 2);
        assert_eq!(o.rejected.len(), 1);
        assert_eq!(o.rejected[0].0, 1);
        assert!(o.rejected[0].1.contains("4096"), "{}", o.rejected[0].1);
    }
}
