//! Flattening a QoE event into one Event API event, by New Relic's rules: dotted names for
//! nested objects (`event.metrics.stall_count`), arrays by index or as JSON, booleans as
//! strings or numbers, nulls dropped, an `eventType` and an integer epoch-ms `timestamp`.
//! Limits New Relic enforces by silently dropping events (254 attributes, 255-character names,
//! 4096-character values) are applied here, each adjustment counted by reason.

use crate::config::{
    Arrays, Booleans, IDENTIFYING_ATTRIBUTES, MAX_SKEW, NewRelicConfig, OnInvalid, TEMPLATE,
    check_event_type,
};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::io::Write;
use switchyard_core::age::{ORIGINAL_TIMESTAMP, Stamp, Window};
use switchyard_core::compress::BodySink;
use switchyard_core::timings::now_ms;
use switchyard_core::{Event, Fix, Shipment};

pub const MAX_ATTRIBUTES: usize = 254;
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_VALUE_CHARS: usize = 4096;

/// Names New Relic owns: ours (`eventType`, `timestamp`, `original_timestamp`), ones it
/// drops or handles in undefined ways.
const RESERVED: [&str; 7] = [
    "eventType",
    "timestamp",
    ORIGINAL_TIMESTAMP,
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
    /// Kept first when attributes must go: the identifying ones, then `keep_attributes`.
    priority: Vec<String>,
    window: Window,
}

/// Events left out and adjustments made while encoding.
#[derive(Debug, Default)]
pub struct EncodeReport {
    pub rejected: Vec<(usize, String)>,
    pub fixes: Vec<Fix>,
}

/// Dropped attribute names listed in a fix's detail; the rest are counted.
const NAMES_LISTED: usize = 30;

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
            priority: IDENTIFYING_ATTRIBUTES
                .iter()
                .map(|n| n.to_string())
                .chain(cfg.keep_attributes.iter().cloned())
                .collect(),
            window: Window {
                destination: "New Relic",
                max_age: MAX_SKEW,
                max_ahead: Some(MAX_SKEW),
                action: cfg.out_of_window,
            },
        })
    }

    /// Flattened events are larger than the raw JSON (every name carries its full path);
    /// this is the batcher's estimate, the compressed size is checked exactly.
    pub fn estimated_len(&self, event: &Event) -> usize {
        event.raw().len() * 3 / 2 + 64
    }

    /// Appends `[event,event,…]` to `out`.
    pub fn encode(&self, shipment: Shipment<'_>, body: &mut impl BodySink) -> EncodeReport {
        let mut report = EncodeReport::default();
        let now = now_ms() as i64;
        // One buffer for the batch: each event with the timings spliced in, when there are.
        let mut spliced = Vec::new();
        let mut name = String::with_capacity(128);
        body.staged().push(b'[');
        let mut first = true;
        for (i, e) in shipment.events().iter().enumerate() {
            let out = body.staged();
            let start = out.len();
            if !first {
                out.push(b',');
            }
            let text = shipment.event_json(e, &mut spliced);
            let mut fixes = Vec::new();
            let event = Current {
                event: e,
                index: i,
                now,
            };
            match self.write_event(event, text, out, &mut name, &mut fixes) {
                Ok(()) => {
                    first = false;
                    report.fixes.extend(fixes);
                }
                Err(reason) => {
                    out.truncate(start);
                    report.rejected.push((i, reason));
                }
            }
            body.commit();
        }
        body.staged().push(b']');
        report
    }

    /// Streams `text` (the event's JSON) into one flat Event API object: a single pass of
    /// the parser, no tree, strings borrowed unless they hold escapes. Only an event with
    /// more attributes than New Relic keeps is walked twice (see [`Flattener::keep_by_priority`]).
    fn write_event(
        &self,
        current: Current<'_>,
        text: &[u8],
        out: &mut Vec<u8>,
        name: &mut String,
        fixes: &mut Vec<Fix>,
    ) -> Result<(), String> {
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("invalid: not an object".into());
        }
        let e = current.event;
        let (stamp, fix) = self.window.stamp(e, current.index, current.now)?;
        fixes.extend(fix);
        out.extend_from_slice(b"{\"eventType\":");
        json(out, &self.event_type(current, fixes));
        let ours = match stamp {
            Stamp::Own(ms) => {
                let _ = write!(out, ",\"timestamp\":{ms}");
                2
            }
            Stamp::Restamped { now, original } => {
                let _ = write!(
                    out,
                    ",\"timestamp\":{now},\"{ORIGINAL_TIMESTAMP}\":{original}"
                );
                3
            }
        };
        // One UTF-8 check for the whole event, rather than one per string.
        let text = std::str::from_utf8(text).map_err(|err| format!("invalid: {err}"))?;
        let attributes_start = out.len();
        let fixes_start = fixes.len();
        let capped = self.walk(current.index, text, out, name, fixes, ours, None)?;
        if capped {
            out.truncate(attributes_start);
            fixes.truncate(fixes_start);
            self.keep_by_priority(current.index, text, out, name, fixes, ours)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// Writes every attribute of `text`, after `ours` of the router's; true if some were left
    /// out for the cap. With `spans`, none are left out: each one's name and start in `out`
    /// are recorded instead.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        index: usize,
        text: &str,
        out: &mut Vec<u8>,
        name: &mut String,
        fixes: &mut Vec<Fix>,
        ours: usize,
        spans: Option<&mut Vec<(String, usize)>>,
    ) -> Result<bool, String> {
        name.clear();
        let mut w = Writer {
            out,
            f: self,
            index,
            fixes,
            name,
            attributes: ours,
            capped: false,
            spans,
            rejected: None,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = Leaf(&mut w).deserialize(&mut de).and_then(|()| de.end());
        if let Some(reason) = w.rejected.take() {
            return Err(reason);
        }
        parsed.map_err(|err| format!("invalid: {err}"))?;
        Ok(w.capped)
    }

    /// Over the cap, New Relic would keep attributes in whatever order they came, and the
    /// last ones (often `event_id`) would go. Instead every attribute is written, then the
    /// identifying ones and `keep_attributes` are kept first and the rest in document order
    /// while room is left; the names dropped go into the fix, for the log.
    fn keep_by_priority(
        &self,
        index: usize,
        text: &str,
        out: &mut Vec<u8>,
        name: &mut String,
        fixes: &mut Vec<Fix>,
        ours: usize,
    ) -> Result<(), String> {
        let start = out.len();
        let mut spans = Vec::new();
        self.walk(index, text, out, name, fixes, ours, Some(&mut spans))?;
        let all = out.split_off(start);
        let room = MAX_ATTRIBUTES - ours;
        let mut keep = vec![false; spans.len()];
        let mut kept = 0;
        for wanted in &self.priority {
            if let Some(i) = spans.iter().position(|(n, _)| n == wanted)
                && !keep[i]
                && kept < room
            {
                keep[i] = true;
                kept += 1;
            }
        }
        for k in keep.iter_mut().filter(|k| !**k) {
            if kept == room {
                break;
            }
            *k = true;
            kept += 1;
        }
        let mut dropped = Vec::new();
        for (i, (attr, from)) in spans.iter().enumerate() {
            let to = spans
                .get(i + 1)
                .map_or(start + all.len(), |(_, next)| *next);
            if keep[i] {
                out.extend_from_slice(&all[from - start..to - start]);
            } else {
                dropped.push(attr.as_str());
            }
        }
        let mut detail = format!(
            "{} of {} attributes dropped (New Relic keeps {MAX_ATTRIBUTES}): {}",
            dropped.len(),
            spans.len() + ours,
            dropped[..dropped.len().min(NAMES_LISTED)].join(", ")
        );
        if dropped.len() > NAMES_LISTED {
            let _ = write!(detail, " and {} more", dropped.len() - NAMES_LISTED);
        }
        fixes.push(Fix::new(index, "too_many_attributes").with_detail(detail));
        Ok(())
    }

    fn event_type<'e>(&'e self, current: Current<'_>, fixes: &mut Vec<Fix>) -> Cow<'e, str> {
        let e = current.event;
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
                    fixes.push(Fix::new(current.index, "event_type_sanitized"));
                }
                Cow::Owned(format!("{pre}{clean}{post}"))
            }
        }
    }
}

/// The event being flattened, where it is in the batch, and the time of encoding.
#[derive(Clone, Copy)]
struct Current<'e> {
    event: &'e Event,
    index: usize,
    now: i64,
}

/// Writes one event's attributes, tracking the dotted name of the current leaf.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    f: &'a Flattener,
    /// The event's index in the batch, for its fixes.
    index: usize,
    fixes: &'a mut Vec<Fix>,
    name: &'a mut String,
    attributes: usize,
    /// The attribute cap was hit.
    capped: bool,
    /// Set to write every attribute and record where each starts (see `keep_by_priority`).
    spans: Option<&'a mut Vec<(String, usize)>>,
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
            self.fixes.push(Fix::new(self.index, "reserved_attribute"));
            return Ok(false);
        }
        if self.name.len() > MAX_NAME_CHARS && self.name.chars().count() > MAX_NAME_CHARS {
            self.problem("name_too_long", |name| {
                let start: String = name.chars().take(40).collect();
                format!("invalid: an attribute name is longer than 255 characters ({start}…)")
            })?;
            return Ok(false);
        }
        if let Some(spans) = &mut self.spans {
            spans.push((self.name.clone(), self.out.len()));
        } else if self.attributes >= MAX_ATTRIBUTES {
            if !self.capped {
                if self.f.on_invalid == OnInvalid::Reject {
                    return Err("invalid: more than 254 attributes".into());
                }
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
                self.fixes.push(Fix::new(self.index, fix));
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

    fn flatten(cfg: &NewRelicConfig, events: &[Event]) -> (Vec<Map<String, Value>>, EncodeReport) {
        let mut out = Vec::new();
        let o = Flattener::new(cfg)
            .unwrap()
            .encode(Shipment::plain(events), &mut out);
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

    /// The kinds of fix made, sorted, less the test events' age (they are from 2024).
    fn kinds(o: &EncodeReport) -> Vec<&'static str> {
        let mut k: Vec<_> = o
            .fixes
            .iter()
            .map(|f| f.kind)
            .filter(|k| *k != "sent_out_of_window")
            .collect();
        k.sort();
        k
    }

    #[test]
    fn the_sample_event_flattens_attribute_by_attribute() {
        let (events, o) = flatten(&config(), &[event(SAMPLE)]);
        assert!(o.rejected.is_empty() && kinds(&o).is_empty(), "{o:?}");
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
        assert_eq!(kinds(&o), ["event_type_sanitized"]);
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
        assert_eq!(
            kinds(&o),
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

    /// An event whose identifying attributes all come after `filler` others.
    fn crowded(filler: usize) -> Event {
        let attrs: Vec<String> = (0..filler).map(|i| format!(r#""a{i}":{i}"#)).collect();
        event(&format!(
            r#"{{{},"event":{{"type":"stall_start","timestamp":{}}},"customer_code":"c1",
                "configuration_id":"cfg","user_details":{{"content_session_id":"s1",
                "app_session_id":"app1"}},"device":{{"device_id":"d1"}},"event_id":"e-400"}}"#,
            attrs.join(","),
            now_ms()
        ))
    }

    #[test]
    fn an_event_with_400_attributes_keeps_the_ones_that_identify_it() {
        let e = crowded(393);
        let (events, o) = flatten(&config(), &[e]);
        let got = &events[0];
        assert_eq!(got.len(), MAX_ATTRIBUTES);
        for (name, value) in [
            ("event_id", "e-400"),
            ("customer_code", "c1"),
            ("configuration_id", "cfg"),
            ("event.type", "stall_start"),
            ("user_details.content_session_id", "s1"),
            ("user_details.app_session_id", "app1"),
            ("device.device_id", "d1"),
        ] {
            assert_eq!(got[name], value, "{name} kept");
        }
        assert!(got["event.timestamp"].is_number());
        // The rest in document order while room is left: 254 less eventType, timestamp and
        // the 8 kept first leaves 244 of the filler.
        assert!(got.contains_key("a243") && !got.contains_key("a244"));
        assert_eq!(kinds(&o), ["too_many_attributes"]);
        let detail = o.fixes[0].detail.as_deref().unwrap();
        assert!(
            detail.starts_with("149 of 403 attributes dropped (New Relic keeps 254): a244, a245,"),
            "{detail}"
        );
        assert!(detail.ends_with(" and 119 more"), "{detail}");
        assert_eq!(o.fixes[0].event, 0);
    }

    #[test]
    fn an_event_under_the_cap_is_written_in_one_pass_unchanged() {
        let (events, o) = flatten(&config(), &[crowded(100)]);
        assert_eq!(events[0].len(), 100 + 8 + 2);
        assert!(kinds(&o).is_empty());
    }

    #[test]
    fn an_event_out_of_new_relics_window_is_restamped_or_refused() {
        let old = event(&format!(
            r#"{{"event":{{"timestamp":{}}},"event_id":"old"}}"#,
            now_ms() - 25 * 3_600_000
        ));
        let mut cfg = config();
        cfg.out_of_window = switchyard_core::age::OutOfWindow::Restamp;
        let (events, o) = flatten(&cfg, std::slice::from_ref(&old));
        assert_eq!(events[0]["original_timestamp"], old.timestamp_us() / 1000);
        let ts = events[0]["timestamp"].as_u64().unwrap();
        assert!(ts.abs_diff(now_ms()) < 60_000);
        assert_eq!(o.fixes[0].kind, "restamped");

        cfg.out_of_window = switchyard_core::age::OutOfWindow::DeadLetter;
        let (events, o) = flatten(&cfg, &[old]);
        assert!(events.is_empty());
        assert!(o.rejected[0].1.starts_with("too_old: "), "{:?}", o.rejected);
    }
}
