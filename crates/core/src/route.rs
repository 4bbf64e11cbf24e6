//! Which connectors an event goes to.

use crate::event::Event;
use crate::sample::{Decision, Sample};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Position of a connector in the router's table; at most [`TargetSet::CAPACITY`] connectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectorIndex(pub u8);

/// The connectors one event must reach, as a bit set: routing and acknowledgement never
/// allocate per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetSet(u64);

impl TargetSet {
    /// Connectors a router can hold; the last bit is the dead-letter writer's.
    pub const CAPACITY: usize = 63;

    /// Marks the dead-letter write of a malformed record (see `Dispatcher`).
    pub const DEAD_LETTER: ConnectorIndex = ConnectorIndex(63);

    pub fn insert(&mut self, i: ConnectorIndex) {
        self.0 |= 1 << i.0;
    }

    pub fn remove(&mut self, i: ConnectorIndex) -> bool {
        let had = self.contains(i);
        self.0 &= !(1 << i.0);
        had
    }

    pub fn contains(self, i: ConnectorIndex) -> bool {
        self.0 & (1 << i.0) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These targets but those of `other`.
    pub fn without(self, other: TargetSet) -> TargetSet {
        TargetSet(self.0 & !other.0)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = ConnectorIndex> {
        (0..64u8)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(ConnectorIndex)
    }
}

/// Include/exclude lists on `event.type` and `customer_code` (empty include = everything),
/// then sampling by session, if configured.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include_event_types: HashSet<String>,
    pub exclude_event_types: HashSet<String>,
    pub include_customers: HashSet<String>,
    pub exclude_customers: HashSet<String>,
    /// `sample_rate` / `sample_key`; None takes every session (and costs nothing).
    pub sample: Option<Sample>,
}

/// What a connector's [`Filter`] makes of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Taken,
    /// Left out by the include/exclude lists.
    Filtered,
    /// Left out by sampling: counted as `switchyard_events_sampled_out_total`.
    SampledOut,
}

impl Filter {
    pub fn accepts(&self, event: &Event) -> bool {
        self.admit(event) == Admit::Taken
    }

    /// Whether the connector takes `event`, and if not, why. The lists come first: they are
    /// cheap, and an event they leave out is not counted as sampled out.
    pub fn admit(&self, event: &Event) -> Admit {
        if !self.lists_accept(event) {
            return Admit::Filtered;
        }
        match &self.sample {
            Some(s) if s.decide(event.json()) == Decision::SampledOut => Admit::SampledOut,
            _ => Admit::Taken,
        }
    }

    fn lists_accept(&self, event: &Event) -> bool {
        fn pass(value: Option<&str>, include: &HashSet<String>, exclude: &HashSet<String>) -> bool {
            match value {
                Some(v) => (include.is_empty() || include.contains(v)) && !exclude.contains(v),
                None => include.is_empty(),
            }
        }
        pass(
            event.event_type(),
            &self.include_event_types,
            &self.exclude_event_types,
        ) && pass(
            event.customer_code(),
            &self.include_customers,
            &self.exclude_customers,
        )
    }
}

/// One configured connector as routing sees it.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
}

/// Maps an event's `connector_list` to the connectors it must reach.
pub struct Router {
    /// Route every event to the defaults, whatever its `connector_list` says (replay).
    ignore_lists: bool,
    routes: Vec<Route>,
    by_id: HashMap<String, ConnectorIndex>,
    defaults: TargetSet,
    unknown: Mutex<UnknownIds>,
    /// Events each route's sampling left out, by connector index.
    sampled_out: Box<[AtomicU64]>,
}

/// Counts connector ids that events name but the config lacks, and limits their log lines.
#[derive(Default)]
struct UnknownIds {
    counts: HashMap<String, (u64, Option<Instant>)>,
}

const UNKNOWN_LOG_EVERY: Duration = Duration::from_secs(60);

impl Router {
    /// `routes` in connector-index order; `defaults` are the ids used when an event has no
    /// `connector_list`.
    pub fn new(routes: Vec<Route>, defaults: &[String]) -> Self {
        assert!(routes.len() <= TargetSet::CAPACITY, "too many connectors");
        let routes_len = routes.len();
        let by_id = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), ConnectorIndex(i as u8)))
            .collect::<HashMap<_, _>>();
        let mut default_set = TargetSet::default();
        for id in defaults {
            if let Some(&i) = by_id.get(id) {
                default_set.insert(i);
            }
        }
        Router {
            ignore_lists: false,
            routes,
            by_id,
            defaults: default_set,
            unknown: Mutex::default(),
            sampled_out: (0..routes_len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// This router, sending every event to the default connectors only (for replaying a
    /// dead-letter topic to one connector).
    pub fn ignoring_connector_lists(mut self) -> Self {
        self.ignore_lists = true;
        self
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn index_of(&self, id: &str) -> Option<ConnectorIndex> {
        self.by_id.get(id).copied()
    }

    /// The enabled connectors this event must reach, after filters and sampling. An event a
    /// connector samples out is simply not its target: it finishes for that connector at
    /// once, as a filtered one does.
    pub fn route(&self, event: &Event) -> TargetSet {
        let named = match event.connector_list() {
            Some(list) if !self.ignore_lists => self.resolve(list, event),
            _ => self.defaults,
        };
        let mut out = TargetSet::default();
        for i in named.iter() {
            let r = &self.routes[i.0 as usize];
            if !r.enabled {
                continue;
            }
            match r.filter.admit(event) {
                Admit::Taken => out.insert(i),
                Admit::Filtered => {}
                Admit::SampledOut => {
                    self.sampled_out[i.0 as usize].fetch_add(1, Relaxed);
                }
            }
        }
        out
    }

    fn resolve(&self, list: &str, event: &Event) -> TargetSet {
        let mut set = TargetSet::default();
        for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match self.by_id.get(id) {
                Some(&i) => set.insert(i),
                None => self.note_unknown(id, event),
            }
        }
        set
    }

    fn note_unknown(&self, id: &str, event: &Event) {
        let Ok(mut unknown) = self.unknown.lock() else {
            return;
        };
        let entry = unknown.counts.entry(id.to_owned()).or_default();
        entry.0 += 1;
        let due = entry.1.is_none_or(|t| t.elapsed() >= UNKNOWN_LOG_EVERY);
        if due {
            entry.1 = Some(Instant::now());
            let o = event.origin();
            tracing::warn!(
                connector = id,
                topic = %o.topic,
                partition = o.kafka_partition,
                offset = o.offset,
                seen = entry.0,
                "event names a connector that is not configured; skipping that target (logged at most once a minute per id)"
            );
        }
    }

    /// How many events each sampling connector left out so far, by connector id.
    pub fn sampled_out_counts(&self) -> Vec<(String, u64)> {
        self.routes
            .iter()
            .zip(self.sampled_out.iter())
            .filter(|(r, _)| r.filter.sample.is_some())
            .map(|(r, n)| (r.id.clone(), n.load(Relaxed)))
            .collect()
    }

    /// How many events named each unknown connector id so far.
    pub fn unknown_counts(&self) -> Vec<(String, u64)> {
        let Ok(unknown) = self.unknown.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = unknown
            .counts
            .iter()
            .map(|(k, (n, _))| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;

    fn route(id: &str) -> Route {
        Route {
            id: id.into(),
            enabled: true,
            filter: Filter::default(),
        }
    }

    fn ev(list: Option<&str>, ty: &str, customer: &str) -> Event {
        let list = list
            .map(|l| format!(r#""connector_list":"{l}","#))
            .unwrap_or_default();
        event(&format!(
            r#"{{{list}"customer_code":"{customer}","event":{{"type":"{ty}","timestamp":1}}}}"#
        ))
    }

    fn ids(router: &Router, set: TargetSet) -> Vec<String> {
        set.iter()
            .map(|i| router.routes()[i.0 as usize].id.clone())
            .collect()
    }

    #[test]
    fn routes_to_every_configured_id_in_the_list() {
        let r = Router::new(vec![route("splunk"), route("dd"), route("nr")], &[]);
        let t = r.route(&ev(Some("splunk, nr,splunk"), "heartbeat", "c"));
        assert_eq!(ids(&r, t), ["splunk", "nr"]);
    }

    #[test]
    fn unknown_ids_are_counted_per_id() {
        let r = Router::new(vec![route("splunk")], &[]);
        for _ in 0..3 {
            r.route(&ev(Some("splunk,ghost,other"), "x", "c"));
        }
        assert_eq!(
            r.unknown_counts(),
            [("ghost".to_string(), 3), ("other".to_string(), 3)]
        );
    }

    #[test]
    fn disabled_connectors_and_defaults() {
        let mut off = route("dd");
        off.enabled = false;
        let r = Router::new(vec![route("splunk"), off], &["splunk".into(), "dd".into()]);
        assert_eq!(ids(&r, r.route(&ev(None, "x", "c"))), ["splunk"]);
        assert!(r.route(&ev(Some("dd"), "x", "c")).is_empty());
        assert!(r.route(&ev(Some(""), "x", "c")).is_empty());
    }

    #[test]
    fn ignoring_lists_sends_everything_to_the_defaults() {
        let r = Router::new(vec![route("splunk"), route("dd")], &["dd".into()])
            .ignoring_connector_lists();
        assert_eq!(ids(&r, r.route(&ev(Some("splunk"), "x", "c"))), ["dd"]);
        assert!(r.unknown_counts().is_empty());
    }

    #[test]
    fn filters_on_event_type_and_customer() {
        let mut only_stalls = route("splunk");
        only_stalls
            .filter
            .include_event_types
            .insert("stall_start".into());
        only_stalls
            .filter
            .exclude_customers
            .insert("blocked".into());
        let r = Router::new(vec![only_stalls], &[]);
        assert_eq!(r.route(&ev(Some("splunk"), "stall_start", "c")).len(), 1);
        assert!(r.route(&ev(Some("splunk"), "heartbeat", "c")).is_empty());
        assert!(
            r.route(&ev(Some("splunk"), "stall_start", "blocked"))
                .is_empty()
        );
    }

    #[test]
    fn a_sampling_connector_takes_whole_sessions_and_counts_the_rest() {
        let mut sampled = route("dd");
        sampled.filter.sample = Some(Sample::new(0.5, "sid").unwrap());
        let r = Router::new(vec![route("splunk"), sampled], &[]);
        let mut out = 0;
        for i in 0..400 {
            let session = format!("s{i}");
            let takes = Sample::new(0.5, "sid").unwrap().takes_session(&session);
            for ty in ["a", "b"] {
                let e = event(&format!(
                    r#"{{"connector_list":"splunk,dd","sid":"{session}","event":{{"type":"{ty}","timestamp":1}}}}"#
                ));
                let expected: &[&str] = if takes {
                    &["splunk", "dd"]
                } else {
                    &["splunk"]
                };
                assert_eq!(ids(&r, r.route(&e)), expected, "{session}");
                out += usize::from(!takes);
            }
        }
        assert!(out > 0 && out < 800);
        assert_eq!(r.sampled_out_counts(), [("dd".to_string(), out as u64)]);
    }

    #[test]
    fn filtered_events_are_not_counted_as_sampled_out() {
        let mut sampled = route("dd");
        sampled.filter.sample = Some(Sample::new(0.000_001, "sid").unwrap());
        sampled.filter.include_event_types.insert("only".into());
        let r = Router::new(vec![sampled], &[]);
        let e =
            event(r#"{"connector_list":"dd","sid":"x","event":{"type":"other","timestamp":1}}"#);
        assert!(r.route(&e).is_empty());
        assert_eq!(r.sampled_out_counts(), [("dd".to_string(), 0)]);
    }
}
