//! Flattening a QoE event into one Event API event, by New Relic's rules: dotted names for
//! nested objects (`event.metrics.stall_count`), arrays by index or as JSON, booleans as
//! strings or numbers, nulls dropped, an `eventType` and an integer epoch-ms `timestamp`.
//! Limits New Relic enforces by silently dropping events (254 attributes, 255-character names,
//! 4096-character values) are applied here, each adjustment counted by reason.

use crate::config::{Arrays, Booleans, NewRelicConfig, OnInvalid, TEMPLATE, check_event_type};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::io::Write;
use switchyard_core::Event;
use switchyard_core::compress::BodySink;

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
        body: &mut impl BodySink,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        // One buffer for the batch: each event with the timings spliced in, when there are.
        let mut spliced = Vec::new();
        let mut name = String::with_capacity(128);
        body.staged().push(b'[');
        let mut first = true;
        for (i, e) in events.iter().enumerate() {
            let out = body.staged();
            let start = out.len();
            if !first {
                out.push(b',');
            }
            let text = match observability {
                Some(records) => {
                    spliced.clear();
                    e.write_json(&mut spliced, Some(records));
                    &spliced[..]
                }
                None => e.json(),
            };
            let mut fixes = Vec::new();
            match self.write_event(e, text, out, &mut name, &mut fixes) {
                Ok(()) => {
                    first = false;
                    outcome.fixes.extend(fixes);
                }
                Err(reason) => {
                    out.truncate(start);
                    outcome.rejected.push((i, reason));
                }
            }
            body.commit();
        }
        body.staged().push(b']');
        outcome
    }

    /// Streams `text` (the event's JSON) into one flat Event API object: a single pass of
    /// the parser, no tree, strings borrowed unless they hold escapes.
    fn write_event(
        &self,
        e: &Event,
        text: &[u8],
        out: &mut Vec<u8>,
        name: &mut String,
        fixes: &mut Vec<&'static str>,
    ) -> Result<(), String> {
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("invalid: not an object".into());
        }
        out.extend_from_slice(b"{\"eventType\":");
        json(out, &self.event_type(e, fixes));
        let _ = write!(out, ",\"timestamp\":{}", e.timestamp_us().div_euclid(1000));
        name.clear();
        let mut w = Writer {
            out,
            f: self,
            fixes,
            name,
            attributes: 2,
            capped: false,
            rejected: None,
        };
        // One UTF-8 check for the whole event, rather than one per string.
        let text = std::str::from_utf8(text).map_err(|err| format!("invalid: {err}"))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = Leaf(&mut w).deserialize(&mut de).and_then(|()| de.end());
        if let Some(reason) = w.rejected.take() {
            return Err(reason);
        }
        parsed.map_err(|err| format!("invalid: {err}"))?;
        w.out.push(b'}');
        Ok(())
    }

    fn event_type<'e>(&'e self, e: &Event, fixes: &mut Vec<&'static str>) -> Cow<'e, str> {
        match &self.event_type {
            EventType::Fixed(t) => Cow::Borrowed(t),
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
                Cow::Owned(format!("{pre}{clean}{post}"))
            }
        }
    }
}

/// Writes one event's attributes, tracking the dotted name of the current leaf.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    f: &'a Flattener,
    fixes: &'a mut Vec<&'static str>,
    name: &'a mut String,
    attributes: usize,
    /// The attribute cap was hit (counted once per event).
    capped: bool,
    /// Why the event is rejected (`on_invalid = "reject"`); the parser stops at once.
    rejected: Option<String>,
}

impl Writer<'_> {
    /// Appends `.segment` (or `segment` at the top) to the current name; returns the length
    /// to truncate back to.
    fn enter(&mut self, segment: &str) -> usize {
        let len = self.name.len();
        if len > 0 {
            self.name.push('.');
        }
        self.name.push_str(segment);
        len
    }

    /// A string value. `verbatim`: it had no escape sequence in the input, so it holds no
    /// character JSON requires escaping and is copied as it is.
    fn string(&mut self, s: &str, verbatim: bool) -> Result<(), String> {
        // A character is at least a byte: only a long string can be over the limit.
        let s = match (s.len() > MAX_VALUE_CHARS)
            .then(|| s.char_indices().nth(MAX_VALUE_CHARS))
            .flatten()
        {
            None => s,
            Some((cut, _)) => {
                self.problem("value_truncated", |name| {
                    format!("invalid: attribute {name} is longer than 4096 characters")
                })?;
                &s[..cut]
            }
        };
        if self.admit()? {
            if verbatim {
                self.out.push(b'"');
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(b'"');
            } else {
                json(self.out, s);
            }
        }
        Ok(())
    }

    fn raw(&mut self, text: &[u8]) -> Result<(), String> {
        if self.admit()? {
            self.out.extend_from_slice(text);
        }
        Ok(())
    }

    /// A number as serde_json writes it (the parser never yields NaN or infinity).
    fn number(&mut self, n: impl serde::Serialize) -> Result<(), String> {
        if self.admit()? {
            let _ = serde_json::to_writer(&mut *self.out, &n);
        }
        Ok(())
    }

    /// Appends `.index` for an array element.
    fn enter_index(&mut self, i: usize) -> usize {
        let len = self.name.len();
        let _ = write!(self.name, ".{i}");
        len
    }

    /// Writes the attribute's name if New Relic would keep it; false to skip the value.
    fn admit(&mut self) -> Result<bool, String> {
        if RESERVED.contains(&self.name.as_str()) {
            self.fixes.push("reserved_attribute");
            return Ok(false);
        }
        if self.name.len() > MAX_NAME_CHARS && self.name.chars().count() > MAX_NAME_CHARS {
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
        json(self.out, self.name);
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
            OnInvalid::Reject => Err(reason(self.name)),
        }
    }

    /// Turns a rejection into a parser error that stops the walk, keeping the reason.
    fn check<E: de::Error>(&mut self, r: Result<(), String>) -> Result<(), E> {
        r.map_err(|reason| {
            let e = E::custom(&reason);
            self.rejected = Some(reason);
            e
        })
    }
}

/// The value at the writer's current name: objects and (flattened) arrays recurse, leaves
/// are written.
struct Leaf<'w, 'a>(&'w mut Writer<'a>);

impl<'de> DeserializeSeed<'de> for Leaf<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaf<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(back) = map.next_key_seed(Segment(self.0))? {
            map.next_value_seed(Leaf(self.0))?;
            self.0.name.truncate(back);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.0.f.arrays == Arrays::Json {
            let mut text = Vec::new();
            Compact(&mut text).visit_seq(seq)?;
            let text = String::from_utf8_lossy(&text);
            let r = self.0.string(&text, false);
            return self.0.check(r);
        }
        for i in 0usize.. {
            let back = self.0.enter_index(i);
            let more = seq.next_element_seed(Leaf(self.0))?;
            self.0.name.truncate(back);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    // New Relic does not store nulls.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        let r = match self.0.f.booleans {
            Booleans::String => self.0.string(if b { "true" } else { "false" }, true),
            Booleans::Number => self.0.raw(if b { b"1" } else { b"0" }),
        };
        self.0.check(r)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        let r = self.0.number(n);
        self.0.check(r)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        let r = self.0.number(n);
        self.0.check(r)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        let r = self.0.number(n);
        self.0.check(r)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<(), E> {
        let r = self.0.string(s, true);
        self.0.check(r)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let r = self.0.string(s, false);
        self.0.check(r)
    }
}

/// An object key: appended to the writer's name (borrowed from the input when it can be).
struct Segment<'w, 'a>(&'w mut Writer<'a>);

impl<'de> DeserializeSeed<'de> for Segment<'_, '_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Segment<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
        Ok(self.0.enter(s))
    }
}

/// Re-writes a value as compact JSON (`arrays = "json"`).
struct Compact<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        let mut first = true;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if !std::mem::take(&mut first) {
                self.0.push(b',');
            }
            json(self.0, &k);
            self.0.push(b':');
            map.next_value_seed(Compact(self.0))?;
        }
        self.0.push(b'}');
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Compact(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.0.extend_from_slice(if b { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &n);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &n);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &n);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        json(self.0, s);
        Ok(())
    }
}

fn json(out: &mut Vec<u8>, s: &str) {
    // Names are short and almost never need escaping: check before the general writer.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use serde_json::{Map, Value};
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
    fn escaped_names_and_values_survive_and_plain_ones_are_copied() {
        let (events, _) = flatten(
            &config(),
            &[event(
                r#"{"event":{"timestamp":5},"q\"k":{"t\tab":"a\"b\\c\n"},"u":"é\u00e9","p":"plain é"}"#,
            )],
        );
        assert_eq!(events[0]["q\"k.t\tab"], "a\"b\\c\n");
        assert_eq!(events[0]["u"], "éé");
        assert_eq!(events[0]["p"], "plain é");
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
