//! Field selection per connector (docs/payloads.md): the document a connector sends, shaped by
//! `include`, `exclude`, `rename` and `add`, in that order.
//!
//! Only a connector that configures it pays: its events are parsed into a tree once per
//! attempt, edited, and serialized, with the connector's `collector_observability` records
//! added to the *output's* `ops_metadata.collector_observability`. Every other connector keeps
//! embedding the raw bytes ([`crate::Shipment`] borrows them).

use crate::event::Event;
use serde::{Deserialize, de};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Why a field selection cannot be used; `key` is where in the `fields` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("{key}: must be a dotted path of non-empty field names, not {path:?}")]
    Path { key: String, path: String },
    #[error("{key}: {path:?} is written by {other} too; each output field may be written once")]
    Conflict {
        key: String,
        path: String,
        other: String,
    },
}

impl FieldsError {
    /// Where in the `fields` table the problem is (`include[2]`, `rename."a.b"`, …).
    pub fn key(&self) -> &str {
        match self {
            FieldsError::Path { key, .. } | FieldsError::Conflict { key, .. } => key,
        }
    }
}

/// A dotted path, split once.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<String>);

impl Path {
    fn parse(key: String, text: &str) -> Result<Path, FieldsError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(FieldsError::Path {
                key,
                path: text.to_owned(),
            });
        }
        Ok(Path(segments))
    }

    /// Whether one path is the other or lies inside it: writing both would overwrite.
    fn overlaps(&self, other: &Path) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a == b)
    }

    /// The most bytes writing this path can add around a value: each segment's key, quotes,
    /// colon, comma and braces.
    fn written_len(&self) -> usize {
        self.0.iter().map(|s| s.len() + 6).sum()
    }
}

/// A connector's `fields` table, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelection {
    include: Vec<Path>,
    exclude: Vec<Path>,
    rename: Vec<(Path, Path)>,
    add: Vec<(Path, Value)>,
    growth: usize,
}

impl FieldSelection {
    /// `rename` as (from, to) pairs and `add` as (path, value), in the file's order. Every
    /// problem is returned, each with its key in the table.
    pub fn new(
        include: &[String],
        exclude: &[String],
        rename: &[(String, String)],
        add: &[(String, Value)],
    ) -> Result<FieldSelection, Vec<FieldsError>> {
        let mut problems = Vec::new();
        let mut paths = |name: &str, list: &[String]| -> Vec<Path> {
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    Path::parse(format!("{name}[{i}]"), p)
                        .map_err(|e| problems.push(e))
                        .ok()
                })
                .collect()
        };
        let mut include = paths("include", include);
        // Outer paths first: `event.type` after `event` finds it already kept, whereas the
        // other way round `event` would replace what `event.type` kept.
        include.sort_by_key(|p| p.0.len());
        let exclude = paths("exclude", exclude);
        let mut renamed = Vec::new();
        for (from, to) in rename {
            let key = format!("rename.{from:?}");
            match (Path::parse(key.clone(), from), Path::parse(key, to)) {
                (Ok(f), Ok(t)) => renamed.push((f, t)),
                (f, t) => problems.extend(f.err().into_iter().chain(t.err())),
            }
        }
        let mut added = Vec::new();
        for (path, value) in add {
            match Path::parse(format!("add.{path:?}"), path) {
                Ok(p) => added.push((p, value.clone())),
                Err(e) => problems.push(e),
            }
        }
        // Rename targets and added fields are written after the sources are taken out: two
        // of them at one place, or one inside another, would make one silently win.
        let written: Vec<(String, &Path, &str)> = renamed
            .iter()
            .map(|(f, t)| (format!("rename.{:?}", f.0.join(".")), t, "rename"))
            .chain(
                added
                    .iter()
                    .map(|(p, _)| (format!("add.{:?}", p.0.join(".")), p, "add")),
            )
            .collect();
        for (i, (key, path, _)) in written.iter().enumerate() {
            if let Some((other, _, _)) = written[..i].iter().find(|(_, p, _)| p.overlaps(path)) {
                problems.push(FieldsError::Conflict {
                    key: key.clone(),
                    path: path.0.join("."),
                    other: other.clone(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let growth = renamed.iter().map(|(_, t)| t.written_len()).sum::<usize>()
            + added
                .iter()
                .map(|(p, v)| p.written_len() + v.to_string().len())
                .sum::<usize>();
        Ok(FieldSelection {
            include,
            exclude,
            rename: renamed,
            add: added,
            growth,
        })
    }

    /// The most bytes renaming and adding can add to an event, for sizing batches before the
    /// events are shaped. Re-writing an opened object's keys never lengthens them, but the
    /// re-parsed records list may write a number longer than the producer did (`1E5` →
    /// `100000.0`): a batch that comes out too large is split by the engine as any other.
    pub fn max_growth(&self) -> usize {
        self.growth
    }

    /// The shaped document of `json`, with `records` appended to its
    /// `ops_metadata.collector_observability`, written to `out`.
    ///
    /// Objects are opened one level at a time, only where a path reaches into them; every
    /// other value (kept, dropped or moved whole) stays borrowed bytes, written as it came.
    pub fn apply(
        &self,
        json: &[u8],
        records: &[Value],
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        let mut doc: Doc<'_> = serde_json::from_slice(json)?;
        if !self.include.is_empty() {
            let mut kept = Doc::default();
            for p in &self.include {
                if let Some(v) = doc.take(&p.0)? {
                    kept.put(&p.0, v)?;
                }
            }
            doc = kept;
        }
        for p in &self.exclude {
            doc.take(&p.0)?;
        }
        // Every source is taken out before any target is written: `a → b, b → c` moves both.
        let mut moved = Vec::with_capacity(self.rename.len());
        for (from, to) in &self.rename {
            moved.push((to, doc.take(&from.0)?));
        }
        for (to, value) in moved {
            if let Some(v) = value {
                doc.put(&to.0, v)?;
            }
        }
        for (p, v) in &self.add {
            doc.put(&p.0, Node::Value(v.clone()))?;
        }
        if !records.is_empty() {
            doc.append_records(records)?;
        }
        doc.write(out)
    }
}

/// A member's value: its bytes as they came, an object opened into its members (each kept as
/// bytes until a path reaches into it), or a value the selection wrote.
enum Node<'a> {
    Raw(&'a RawValue),
    Obj(Doc<'a>),
    Value(Value),
}

impl<'a> Node<'a> {
    /// This value as an object to reach into, opened one level now if it was bytes; None
    /// when it is not an object.
    fn object(&mut self) -> Result<Option<&mut Doc<'a>>, serde_json::Error> {
        match self {
            Node::Raw(raw) if raw.get().starts_with('{') => {
                *self = Node::Obj(serde_json::from_str(raw.get())?);
            }
            Node::Value(Value::Object(map)) => {
                let members = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k, Node::Value(v)))
                    .collect();
                *self = Node::Obj(Doc { members });
            }
            Node::Raw(_) | Node::Value(_) | Node::Obj(_) => {}
        }
        Ok(match self {
            Node::Obj(doc) => Some(doc),
            Node::Raw(_) | Node::Value(_) => None,
        })
    }

    /// [`Node::object`], replacing what is not an object by an empty one: the configured
    /// shape wins.
    fn object_or_new(&mut self) -> Result<&mut Doc<'a>, serde_json::Error> {
        if self.object()?.is_none() {
            *self = Node::Obj(Doc::default());
        }
        match self {
            Node::Obj(doc) => Ok(doc),
            Node::Raw(_) | Node::Value(_) => Err(de::Error::custom("not an object")),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Node::Raw(raw) => {
                out.extend_from_slice(raw.get().as_bytes());
                Ok(())
            }
            Node::Obj(doc) => doc.write(out),
            Node::Value(v) => serde_json::to_writer(out, v),
        }
    }
}

/// An object's members, in order.
#[derive(Default)]
struct Doc<'a> {
    members: Vec<(String, Node<'a>)>,
}

impl<'a> Doc<'a> {
    fn position(&self, key: &str) -> Option<usize> {
        self.members.iter().position(|(k, _)| k == key)
    }

    /// The member `key`'s place, added as `empty()` if missing.
    fn place(&mut self, key: &str, empty: impl FnOnce() -> Node<'a>) -> usize {
        match self.position(key) {
            Some(i) => i,
            None => {
                self.members.push((key.to_owned(), empty()));
                self.members.len() - 1
            }
        }
    }

    /// Removes and returns the value at `path`; None (and nothing changed) if there is none.
    /// The other members keep their order, so the output reads like the input.
    fn take(&mut self, path: &[String]) -> Result<Option<Node<'a>>, serde_json::Error> {
        let Some((first, rest)) = path.split_first() else {
            return Ok(None);
        };
        let Some(i) = self.position(first) else {
            return Ok(None);
        };
        if rest.is_empty() {
            return Ok(Some(self.members.remove(i).1));
        }
        match self.members[i].1.object()? {
            Some(doc) => doc.take(rest),
            None => Ok(None),
        }
    }

    /// Writes `value` at `path`, creating the objects on the way; a value on the way that is
    /// not an object is replaced by one.
    fn put(&mut self, path: &[String], value: Node<'a>) -> Result<(), serde_json::Error> {
        let Some((first, rest)) = path.split_first() else {
            return Ok(());
        };
        if rest.is_empty() {
            match self.position(first) {
                Some(i) => self.members[i].1 = value,
                None => self.members.push((first.clone(), value)),
            }
            return Ok(());
        }
        let i = self.place(first, || Node::Obj(Doc::default()));
        self.members[i].1.object_or_new()?.put(rest, value)
    }

    /// The records go where they go in raw events (`Event::write_json`): after the event's
    /// own in `ops_metadata.collector_observability`, both made if missing; left out when
    /// `ops_metadata` is not an object or its `collector_observability` not an array.
    fn append_records(&mut self, records: &[Value]) -> Result<(), serde_json::Error> {
        let i = self.place("ops_metadata", || Node::Obj(Doc::default()));
        let Some(ops) = self.members[i].1.object()? else {
            return Ok(());
        };
        let j = ops.place("collector_observability", || {
            Node::Value(Value::Array(Vec::new()))
        });
        let list = &mut ops.members[j].1;
        if let Node::Raw(raw) = list {
            *list = Node::Value(serde_json::from_str(raw.get())?);
        }
        if let Node::Value(Value::Array(list)) = list {
            list.extend(records.iter().cloned());
        }
        Ok(())
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.push(b'{');
        for (i, (key, node)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, key)?;
            out.push(b':');
            node.write(out)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Reads the top-level object, keeping each member's bytes; a repeated key keeps its first
/// place and its last value, as a parsed tree would.
impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Doc<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
                let mut doc = Doc::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value = Node::Raw(map.next_value::<&'de RawValue>()?);
                    match doc.position(&key) {
                        Some(i) => doc.members[i].1 = value,
                        None => doc.members.push((key, value)),
                    }
                }
                Ok(doc)
            }
        }
        d.deserialize_map(V)
    }
}

/// One line for `validate`: what the connector's document is made of (no values: an added
/// field could be anything).
impl std::fmt::Display for FieldSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |paths: &mut dyn Iterator<Item = &Path>| {
            paths.map(|p| p.0.join(".")).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if !self.include.is_empty() {
            parts.push(format!("include [{}]", join(&mut self.include.iter())));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("exclude [{}]", join(&mut self.exclude.iter())));
        }
        if !self.rename.is_empty() {
            let pairs: Vec<String> = self
                .rename
                .iter()
                .map(|(a, b)| format!("{} -> {}", a.0.join("."), b.0.join(".")))
                .collect();
            parts.push(format!("rename [{}]", pairs.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!(
                "add [{}]",
                join(&mut self.add.iter().map(|(p, _)| p))
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A shipment's events as one connector's field selection shapes them, each written once per
/// attempt, with that attempt's records. Built by the engine; read through
/// [`crate::Shipment`].
#[derive(Debug)]
pub struct Shaped {
    fields: Arc<FieldSelection>,
    records: Vec<Value>,
    /// By the shipment's event index.
    json: Vec<Vec<u8>>,
}

impl Shaped {
    /// Shapes `events`; returns those shaped (in order), their documents, and those that
    /// could not be, with the reason (JSON the routing scan accepted but a tree cannot hold,
    /// such as a number out of range).
    pub fn build(
        fields: &Arc<FieldSelection>,
        events: Vec<Event>,
        records: Option<&[u8]>,
    ) -> (Vec<Event>, Shaped, Vec<(Event, String)>) {
        let records = match records.filter(|r| !r.is_empty()).map(parse_records) {
            None => Vec::new(),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                // Serialized by the engine itself: not expected. The events go without them.
                tracing::warn!(error = %e, "collector_observability records could not be read back; events are sent without them");
                Vec::new()
            }
        };
        let mut shaped = Shaped {
            fields: fields.clone(),
            records,
            json: Vec::with_capacity(events.len()),
        };
        let mut kept = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for e in events {
            let mut out = Vec::with_capacity(e.json().len() + fields.max_growth());
            match fields.apply(e.json(), &shaped.records, &mut out) {
                Ok(()) => {
                    shaped.json.push(out);
                    kept.push(e);
                }
                Err(err) => failed.push((e, format!("field selection: {err}"))),
            }
        }
        (kept, shaped, failed)
    }

    /// The document of the `i`th event of the shipment it was built for.
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        self.json.get(i).map(Vec::as_slice)
    }

    /// Shapes an event that is not one of the shipment's (not expected of an encoder): the
    /// same selection and records, written now. None if it cannot be shaped.
    pub(crate) fn shape(&self, event: &Event) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.fields.apply(event.json(), &self.records, &mut out) {
            Ok(()) => Some(out),
            Err(e) => {
                tracing::error!(error = %e, "an event outside the shipment could not be shaped; it is written as an empty object rather than unshaped");
                None
            }
        }
    }
}

fn parse_records(records: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
    let mut list = Vec::with_capacity(records.len() + 2);
    list.push(b'[');
    list.extend_from_slice(records);
    list.push(b']');
    serde_json::from_slice(&list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;
    use crate::shipment::Shipment;
    use serde_json::json;

    const SAMPLE: &str = include_str!("../../testkit/data/sample-event.json");

    fn selection(
        include: &[&str],
        exclude: &[&str],
        rename: &[(&str, &str)],
        add: &[(&str, Value)],
    ) -> FieldSelection {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let rename: Vec<(String, String)> = rename
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let add: Vec<(String, Value)> = add
            .iter()
            .map(|(a, v)| (a.to_string(), v.clone()))
            .collect();
        FieldSelection::new(&s(include), &s(exclude), &rename, &add).unwrap()
    }

    fn shape(f: &FieldSelection, json: &str, records: &[Value]) -> Value {
        let mut out = Vec::new();
        f.apply(json.as_bytes(), records, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    const DOC: &str = r#"{"a":1,"b":{"c":2,"d":{"e":3},"f":"x"},"g":[1,2]}"#;

    #[test]
    fn include_keeps_only_the_paths_nested_or_not() {
        let f = selection(&["b.d.e", "g", "missing", "a.not_an_object"], &[], &[], &[]);
        assert_eq!(shape(&f, DOC, &[]), json!({"b":{"d":{"e":3}},"g":[1,2]}));
        // An outer path keeps everything under it, whatever the order written.
        let f = selection(&["b.c", "b"], &[], &[], &[]);
        assert_eq!(
            shape(&f, DOC, &[]),
            json!({"b":{"c":2,"d":{"e":3},"f":"x"}})
        );
    }

    #[test]
    fn exclude_removes_the_paths_and_keeps_the_order_of_the_rest() {
        let f = selection(&[], &["b.d", "a", "missing.x", "g.0"], &[], &[]);
        let mut out = Vec::new();
        f.apply(DOC.as_bytes(), &[], &mut out).unwrap();
        assert_eq!(out, br#"{"b":{"c":2,"f":"x"},"g":[1,2]}"#);
    }

    #[test]
    fn members_no_path_reaches_into_are_written_as_they_came() {
        let f = selection(&[], &["a", "b.c"], &[("g", "h")], &[]);
        let mut out = Vec::new();
        f.apply(
            br#"{ "a" : 1, "b" : { "c" : 2, "d" : 3 }, "g" : [ 1e2, "\u0041" ], "k" : 1.50 }"#,
            &[],
            &mut out,
        )
        .unwrap();
        // `b` was reached into (re-written compact); `g` moved whole and `k` untouched keep
        // their bytes, number spellings and escapes included.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":{"d":3},"k":1.50,"h":[ 1e2, "\u0041" ]}"#
        );
    }

    #[test]
    fn rename_moves_values_at_once_creating_objects_and_skips_missing_sources() {
        let f = selection(
            &[],
            &[],
            &[
                ("a", "b.c"),
                ("b.c", "top"),
                ("b.d.e", "n.m.e"),
                ("nope", "z"),
            ],
            &[],
        );
        assert_eq!(
            shape(&f, DOC, &[]),
            json!({"b":{"c":1,"d":{},"f":"x"},"g":[1,2],"top":2,"n":{"m":{"e":3}}})
        );
    }

    #[test]
    fn add_sets_static_values_over_what_is_there() {
        let f = selection(
            &[],
            &[],
            &[],
            &[
                ("env", json!("prod")),
                ("b.f", json!({"k": [1]})),
                ("g.h", json!(true)),
            ],
        );
        assert_eq!(
            shape(&f, DOC, &[]),
            json!({"a":1,"b":{"c":2,"d":{"e":3},"f":{"k":[1]}},"g":{"h":true},"env":"prod"})
        );
    }

    #[test]
    fn operations_apply_in_order_include_exclude_rename_add() {
        let f = selection(&["b"], &["b.d"], &[("b.c", "c")], &[("a", json!("added"))]);
        assert_eq!(
            shape(&f, DOC, &[]),
            json!({"b":{"f":"x"},"c":2,"a":"added"})
        );
    }

    #[test]
    fn records_land_in_the_outputs_ops_metadata_after_the_events_own() {
        let records = [json!({"r": 1})];
        let own = r#"{"a":1,"ops_metadata":{"x":1,"collector_observability":[{"o":0}]}}"#;
        let f = selection(&[], &["a"], &[], &[]);
        assert_eq!(
            shape(&f, own, &records),
            json!({"ops_metadata":{"x":1,"collector_observability":[{"o":0},{"r":1}]}})
        );
        // ops_metadata left out or moved away: made anew where the records belong.
        for f in [
            selection(&["a"], &[], &[], &[]),
            selection(&[], &["ops_metadata"], &[], &[]),
            selection(&[], &[], &[("ops_metadata", "ops")], &[]),
        ] {
            let out = shape(&f, own, &records);
            assert_eq!(
                out["ops_metadata"],
                json!({"collector_observability":[{"r":1}]}),
                "{f:?}"
            );
        }
        // As for raw events: not an object (or not an array) is left as it is.
        let f = selection(&[], &[], &[], &[("ops_metadata", json!("s"))]);
        assert_eq!(shape(&f, own, &records)["ops_metadata"], json!("s"));
    }

    #[test]
    fn bad_paths_and_conflicting_targets_are_refused_with_their_keys() {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let errors = FieldSelection::new(
            &s(&["ok", "a..b"]),
            &s(&[""]),
            &[
                ("x".into(), "t".into()),
                ("y".into(), "t.u".into()),
                ("z".into(), ".bad".into()),
            ],
            &[("t".into(), json!(1)), ("fine".into(), json!(2))],
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(FieldsError::key).collect();
        assert_eq!(
            keys,
            [
                "include[1]",
                "exclude[0]",
                "rename.\"z\"",
                "rename.\"y\"",
                "add.\"t\""
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn the_sample_is_shaped_with_its_records_and_measured_exactly() {
        let e = event(SAMPLE);
        let fields = Arc::new(selection(
            &["event", "user_details", "ops_metadata", "customer_code"],
            &["user_details.client_ip"],
            &[("event.type", "event_type")],
            &[("env", json!("prod"))],
        ));
        let (kept, shaped, failed) = Shaped::build(&fields, vec![e.clone()], Some(br#"{"r":1}"#));
        assert!(failed.is_empty());
        let shipment = Shipment::shaped(&kept, &shaped);
        let mut out = Vec::new();
        shipment.write_event(&kept[0], &mut out);
        assert_eq!(shipment.event_json_len(&kept[0]), out.len());
        let mut scratch = Vec::new();
        assert_eq!(shipment.event_json(&kept[0], &mut scratch), &out[..]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let raw: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(v["event_type"], raw["event"]["type"]);
        assert!(v["event"].get("type").is_none());
        assert!(v["user_details"].get("client_ip").is_none());
        assert_eq!(
            v["user_details"]["content_session_id"],
            raw["user_details"]["content_session_id"]
        );
        assert!(v.get("device").is_none());
        assert_eq!(v["env"], "prod");
        let list = v["ops_metadata"]["collector_observability"]
            .as_array()
            .unwrap();
        let own = raw["ops_metadata"]["collector_observability"]
            .as_array()
            .unwrap();
        assert_eq!(list.len(), own.len() + 1);
        assert_eq!(list.last().unwrap(), &json!({"r":1}));
        // An event that is not one of the shipment's is shaped all the same, never raw.
        let stray = event(SAMPLE);
        let mut again = Vec::new();
        shipment.write_event(&stray, &mut again);
        assert_eq!(again, out);
        assert_eq!(shipment.event_json_len(&stray), out.len());
        // Renaming and adding never outgrow the bound batches are sized with.
        assert!(out.len() <= e.json().len() + fields.max_growth() + br#"{"r":1}"#.len());
    }

    #[test]
    fn an_event_a_tree_cannot_hold_is_rejected_with_a_reason_and_the_rest_kept() {
        // Only the records' list is ever parsed whole, to append to it; elsewhere such a
        // number is carried as the bytes it is.
        let fields = Arc::new(selection(&[], &["a.b"], &[], &[]));
        let ok = event(r#"{"a":{"b":1,"c":1e999},"event":{"timestamp":1}}"#);
        let huge = event(
            r#"{"event":{"timestamp":1},"ops_metadata":{"collector_observability":[{"v":1e999}]}}"#,
        );
        let (kept, shaped, failed) =
            Shaped::build(&fields, vec![huge, ok.clone()], Some(br#"{"r":1}"#));
        assert_eq!(kept.len(), 1);
        assert_eq!(
            shaped.get(0),
            Some(
                &br#"{"a":{"c":1e999},"event":{"timestamp":1},"ops_metadata":{"collector_observability":[{"r":1}]}}"#[..]
            )
        );
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].1.starts_with("field selection:"),
            "{}",
            failed[0].1
        );
    }
}
