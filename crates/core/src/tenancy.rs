//! Per-customer instances of a connector (docs/tenancy.md): which instance of a connector
//! an event's customer reaches, built on first use, replaced on reload, closed when idle.
//!
//! The only key is the exact `customer_code` the event carries. An instance is started from
//! one customer's settings alone, and nothing falls back from one customer's instance to
//! another's: the fallback is the connector's shared instance, or a refusal.

use crate::engine::ConnectorHandle;
use crate::event::Event;
use crate::route::{Admit, Filter};
use crate::stats::ConnectorStats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Starts one instance. Called on the consumer thread, so it must not wait: it returns a
/// handle at once (see [`ConnectorHandle::building`]).
pub type Start = Arc<dyn Fn() -> ConnectorHandle + Send + Sync>;

/// One instance of a connector, as configured: the connector's own (shared by every customer
/// without settings of its own), or one customer's.
#[derive(Clone)]
pub struct Instance {
    /// Its settings' fingerprint, secrets included: a reload replaces a running instance
    /// only when this changes.
    pub fingerprint: u64,
    /// Which of the events routed to the connector this instance takes.
    pub filter: Filter,
    pub start: Start,
}

/// What an event of a customer without settings for this connector gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The connector's shared instance (nothing, if the connector itself is disabled).
    Shared,
    /// A refusal: the event is dead-lettered for this connector with the reason `no_tenant`.
    Reject,
}

/// A connector's instances as of one load of the settings.
#[derive(Clone)]
pub struct Instances {
    /// The connector's own; None when it is disabled.
    pub shared: Option<Arc<Instance>>,
    pub fallback: Fallback,
    /// By `customer_code`; None where the customer turned the connector off.
    pub by_customer: HashMap<Arc<str>, Option<Arc<Instance>>>,
}

/// Which instance runs: the shared one, or a customer's.
type Key = Option<Arc<str>>;

/// Where one event goes for one connector.
#[derive(Clone)]
pub enum Resolved {
    /// This instance, under this key.
    To(Key, Arc<Instance>),
    /// Not this connector's to deliver: it counts as finished, as a filter's would.
    Skip,
    /// Refused, with the reason: it is dead-lettered for this connector.
    Reject(String),
}

/// A connector with per-customer instances.
pub struct PerCustomer {
    id: Arc<str>,
    /// Every instance's counters.
    stats: Arc<ConnectorStats>,
    instances: RwLock<Arc<Instances>>,
    running: Mutex<HashMap<Key, Running>>,
    /// Instances closed (idle, or replaced by a reload) that may still be finishing their
    /// in-flight deliveries: shutdown waits for them too.
    closing: Mutex<Vec<JoinHandle<()>>>,
    /// Events refused because their customer has no settings here.
    pub no_tenant: AtomicU64,
    /// Events routed to each customer's instance, for the first `label_limit` customers to
    /// send any (per-customer metric labels are opt-in, and capped); the rest count as one.
    routed: Mutex<RoutedByCustomer>,
    label_limit: usize,
}

#[derive(Default)]
struct RoutedByCustomer {
    labelled: HashMap<Arc<str>, u64>,
    others: u64,
}

struct Running {
    handle: ConnectorHandle,
    fingerprint: u64,
    last_event: Instant,
}

impl PerCustomer {
    /// Starts the shared instance at once, so that its health is checked from the start;
    /// customers' instances start on their first event.
    /// `label_limit`: how many customers get metric series of their own (0: none).
    pub fn new(
        id: &str,
        stats: Arc<ConnectorStats>,
        instances: Instances,
        label_limit: usize,
    ) -> Self {
        let this = PerCustomer {
            id: Arc::from(id),
            stats,
            instances: RwLock::new(Arc::new(instances)),
            running: Mutex::default(),
            closing: Mutex::default(),
            no_tenant: AtomicU64::new(0),
            routed: Mutex::default(),
            label_limit,
        };
        this.start_shared();
        this
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn stats(&self) -> &Arc<ConnectorStats> {
        &self.stats
    }

    /// Where `event` goes for this connector, under the instances as they are now.
    pub fn resolve(&self, event: &Event) -> Resolved {
        // Read in place: a reload waits for this lookup, and no reference count moves.
        let instances = self
            .instances
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let code = event.customer_code();
        let (key, instance) = match code.and_then(|c| instances.by_customer.get_key_value(c)) {
            Some((code, Some(own))) => (Some(code.clone()), own),
            Some((_, None)) => return Resolved::Skip,
            None => match (&instances.fallback, &instances.shared) {
                (Fallback::Shared, Some(shared)) => (None, shared),
                (Fallback::Shared, None) => return Resolved::Skip,
                (Fallback::Reject, _) => {
                    return Resolved::Reject(format!(
                        "no_tenant: customer {} has no settings for this connector",
                        code.unwrap_or("(none)")
                    ));
                }
            },
        };
        match instance.filter.admit(event) {
            Admit::Taken => Resolved::To(key, instance.clone()),
            Admit::Filtered => Resolved::Skip,
            Admit::SampledOut => {
                self.stats.sampled_out.fetch_add(1, Relaxed);
                Resolved::Skip
            }
        }
    }

    /// Queues `event` where `to` says, starting that instance if it is not running (or runs
    /// older settings). False if its worker has stopped, or `to` is not an instance.
    pub fn send(&self, to: &Resolved, event: Event) -> bool {
        let Resolved::To(key, instance) = to else {
            return false;
        };
        if let Some(code) = key
            && self.label_limit > 0
        {
            self.count_routed(code);
        }
        let mut running = self.running();
        let runs =
            |r: Option<&Running>, i: &Instance| r.is_some_and(|r| r.fingerprint == i.fingerprint);
        if !runs(running.get(key), instance) {
            // Resolved just before a reload: the customer's instance as it is now, never one
            // from settings already replaced (and never another customer's: same key).
            let latest = self.latest(key).unwrap_or_else(|| instance.clone());
            if !runs(running.get(key), &latest)
                && let Some(stale) = running.insert(key.clone(), start(&latest))
            {
                self.retire(stale);
            }
        }
        running.get_mut(key).is_some_and(|r| {
            r.last_event = Instant::now();
            r.handle.send(event)
        })
    }

    /// Takes a new version of the instances. A running instance whose settings changed, or
    /// that is no longer configured, is closed: its in-flight deliveries finish on it, and the
    /// next event starts the new one. Returns how many were closed.
    pub fn replace(&self, instances: Instances) -> usize {
        let instances = Arc::new(instances);
        // Swapped while no event can start an instance, so that each running one is either
        // closed here or already of the new settings.
        let mut running = self.running();
        *self
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner) = instances.clone();
        let closed = take_where(&mut running, |key, r| {
            of(&instances, key).is_none_or(|i| i.fingerprint != r.fingerprint)
        });
        drop(running);
        let n = closed.len();
        closed.into_iter().for_each(|r| self.retire(r));
        self.start_shared();
        n
    }

    /// Closes the customers' instances that have had no event for `idle`; returns how many.
    /// The shared instance stays: it is the connector's, and its health is checked.
    pub fn close_idle(&self, idle: Duration) -> usize {
        self.close_where(|key, r| key.is_some() && r.last_event.elapsed() >= idle)
    }

    /// Events routed to customers' instances: per labelled customer, and all the others'.
    pub fn routed_by_customer(&self) -> (Vec<(Arc<str>, u64)>, u64) {
        let routed = lock(&self.routed);
        let mut labelled: Vec<_> = routed
            .labelled
            .iter()
            .map(|(c, n)| (c.clone(), *n))
            .collect();
        labelled.sort();
        (labelled, routed.others)
    }

    fn count_routed(&self, code: &Arc<str>) {
        let mut routed = lock(&self.routed);
        let room = routed.labelled.len() < self.label_limit;
        match routed.labelled.get_mut(code) {
            Some(n) => *n += 1,
            None if room => {
                routed.labelled.insert(code.clone(), 1);
            }
            None => routed.others += 1,
        }
    }

    /// Customers' instances running now (the shared one not counted).
    pub fn customers_running(&self) -> usize {
        self.running().keys().filter(|k| k.is_some()).count()
    }

    /// Closes every instance; the handles finish when each has settled what it holds. Events
    /// sent after this start new instances, so call it once nothing sends any more.
    pub fn close(&self) -> Vec<JoinHandle<()>> {
        let running = std::mem::take(&mut *self.running());
        let mut closing = std::mem::take(&mut *lock(&self.closing));
        closing.extend(running.into_values().map(|r| r.handle.close()));
        closing
    }

    fn current(&self) -> Arc<Instances> {
        self.instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn start_shared(&self) {
        if let Some(shared) = &self.current().shared {
            self.running().entry(None).or_insert_with(|| start(shared));
        }
    }

    fn close_where(&self, close: impl Fn(&Key, &Running) -> bool) -> usize {
        let closed = take_where(&mut self.running(), close);
        let n = closed.len();
        closed.into_iter().for_each(|r| self.retire(r));
        n
    }

    /// The instance `key` names in the settings as they are now.
    fn latest(&self, key: &Key) -> Option<Arc<Instance>> {
        let instances = self.current();
        match key {
            None => instances.shared.clone(),
            Some(code) => instances.by_customer.get(code).cloned().flatten(),
        }
    }

    fn retire(&self, r: Running) {
        let mut closing = lock(&self.closing);
        closing.retain(|h| !h.is_finished());
        closing.push(r.handle.close());
    }

    fn running(&self) -> MutexGuard<'_, HashMap<Key, Running>> {
        lock(&self.running)
    }
}

/// The instance `key` names in `instances`.
fn of<'a>(instances: &'a Instances, key: &Key) -> Option<&'a Instance> {
    match key {
        None => instances.shared.as_deref(),
        Some(code) => instances.by_customer.get(code).and_then(Option::as_deref),
    }
}

/// Removes from `running` the instances `close` picks.
fn take_where(
    running: &mut HashMap<Key, Running>,
    close: impl Fn(&Key, &Running) -> bool,
) -> Vec<Running> {
    let keys: Vec<Key> = running
        .iter()
        .filter(|(key, r)| close(key, r))
        .map(|(key, _)| key.clone())
        .collect();
    keys.iter().filter_map(|k| running.remove(k)).collect()
}

fn start(instance: &Instance) -> Running {
    Running {
        handle: (instance.start)(),
        fingerprint: instance.fingerprint,
        last_event: Instant::now(),
    }
}

/// A poisoned lock still guards consistent data here: every critical section is a map or
/// vector operation that cannot stop halfway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Instances {
    /// No instance at all: every event is skipped.
    pub fn none() -> Self {
        Instances {
            shared: None,
            fallback: Fallback::Shared,
            by_customer: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;
    use crate::route::ConnectorIndex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::Relaxed;

    /// An instance that counts its starts; its worker is never built (a handle that only
    /// queues), which is all resolution and replacement look at.
    fn instance(fingerprint: u64, starts: &Arc<AtomicUsize>) -> Arc<Instance> {
        let starts = starts.clone();
        Arc::new(Instance {
            fingerprint,
            filter: Filter::default(),
            start: Arc::new(move || {
                starts.fetch_add(1, Relaxed);
                ConnectorHandle::building(
                    "c",
                    ConnectorIndex(0),
                    Arc::default(),
                    &tokio::runtime::Handle::current(),
                    Box::pin(std::future::pending()),
                    Arc::new(|_, _| {}),
                )
            }),
        })
    }

    fn of(customer: Option<&str>) -> Event {
        match customer {
            Some(c) => event(&format!(
                r#"{{"customer_code":"{c}","event":{{"type":"x","timestamp":1}}}}"#
            )),
            None => event(r#"{"event":{"type":"x","timestamp":1}}"#),
        }
    }

    fn key(r: &Resolved) -> Option<Option<&str>> {
        match r {
            Resolved::To(key, _) => Some(key.as_deref()),
            _ => None,
        }
    }

    fn instances(fallback: Fallback, starts: &Arc<AtomicUsize>) -> Instances {
        Instances {
            shared: Some(instance(1, starts)),
            fallback,
            by_customer: HashMap::from([
                (Arc::from("acme"), Some(instance(2, starts))),
                (Arc::from("globex"), None),
            ]),
        }
    }

    #[tokio::test]
    async fn a_customer_reaches_its_own_instance_and_no_other() {
        let starts = Arc::default();
        let c = PerCustomer::new("c", Arc::default(), instances(Fallback::Shared, &starts), 0);
        assert_eq!(key(&c.resolve(&of(Some("acme")))), Some(Some("acme")));
        // Codes are exact: no case folding, no prefixes.
        assert_eq!(key(&c.resolve(&of(Some("ACME")))), Some(None));
        assert_eq!(key(&c.resolve(&of(Some("acme2")))), Some(None));
        assert_eq!(key(&c.resolve(&of(None))), Some(None));
        assert!(matches!(c.resolve(&of(Some("globex"))), Resolved::Skip));
    }

    #[tokio::test]
    async fn without_a_fallback_an_unknown_customer_is_refused_with_its_code() {
        let starts = Arc::default();
        let c = PerCustomer::new("c", Arc::default(), instances(Fallback::Reject, &starts), 0);
        let Resolved::Reject(reason) = c.resolve(&of(Some("initech"))) else {
            panic!("not refused");
        };
        assert!(
            reason.starts_with("no_tenant:") && reason.contains("initech"),
            "{reason}"
        );
        assert!(matches!(c.resolve(&of(None)), Resolved::Reject(_)));
        assert_eq!(key(&c.resolve(&of(Some("acme")))), Some(Some("acme")));
        // A connector that is off, with the shared fallback: skipped, not refused.
        let off = PerCustomer::new(
            "c",
            Arc::default(),
            Instances {
                shared: None,
                ..instances(Fallback::Shared, &starts)
            },
            0,
        );
        assert!(matches!(off.resolve(&of(Some("initech"))), Resolved::Skip));
    }

    #[tokio::test]
    async fn a_customers_filter_applies_to_its_instance_only() {
        let starts = Arc::default();
        let mut own = (*instance(2, &starts)).clone();
        own.filter.include_event_types.insert("stall".into());
        let c = PerCustomer::new(
            "c",
            Arc::default(),
            Instances {
                by_customer: HashMap::from([(Arc::from("acme"), Some(Arc::new(own)))]),
                ..instances(Fallback::Shared, &starts)
            },
            0,
        );
        assert!(matches!(c.resolve(&of(Some("acme"))), Resolved::Skip));
        assert_eq!(key(&c.resolve(&of(Some("other")))), Some(None));
    }

    #[tokio::test]
    async fn a_customers_sampling_skips_its_left_out_sessions_and_counts_them() {
        let starts = Arc::default();
        let mut own = (*instance(2, &starts)).clone();
        let sample = crate::sample::Sample::new(0.5, "sid").unwrap();
        own.filter.sample = Some(sample.clone());
        let stats = Arc::new(ConnectorStats::default());
        let c = PerCustomer::new(
            "c",
            stats.clone(),
            Instances {
                by_customer: HashMap::from([(Arc::from("acme"), Some(Arc::new(own)))]),
                ..instances(Fallback::Shared, &starts)
            },
            0,
        );
        let mut left_out = 0;
        for i in 0..100 {
            let sid = format!("s{i}");
            let acme = event(&format!(
                r#"{{"customer_code":"acme","sid":"{sid}","event":{{"type":"x","timestamp":1}}}}"#
            ));
            let other = event(&format!(
                r#"{{"customer_code":"other","sid":"{sid}","event":{{"type":"x","timestamp":1}}}}"#
            ));
            if sample.takes_session(&sid) {
                assert_eq!(key(&c.resolve(&acme)), Some(Some("acme")));
            } else {
                assert!(matches!(c.resolve(&acme), Resolved::Skip));
                left_out += 1;
            }
            // The shared instance has no sampling of its own.
            assert_eq!(key(&c.resolve(&other)), Some(None));
        }
        assert!(left_out > 0);
        assert_eq!(stats.sampled_out.load(Relaxed), left_out);
    }

    #[tokio::test]
    async fn instances_start_on_first_use_and_a_reload_replaces_only_what_changed() {
        let starts = Arc::new(AtomicUsize::new(0));
        let c = PerCustomer::new("c", Arc::default(), instances(Fallback::Shared, &starts), 0);
        // The shared one at once; a customer's on its first event, once.
        assert_eq!(starts.load(Relaxed), 1);
        for _ in 0..3 {
            let e = of(Some("acme"));
            assert!(c.send(&c.resolve(&e), e));
        }
        assert_eq!((starts.load(Relaxed), c.customers_running()), (2, 1));

        // The same settings again: nothing closes.
        assert_eq!(c.replace(instances(Fallback::Shared, &starts)), 0);
        // acme's settings change: its instance closes; the shared one stays.
        let mut changed = instances(Fallback::Shared, &starts);
        changed
            .by_customer
            .insert(Arc::from("acme"), Some(instance(3, &starts)));
        assert_eq!(c.replace(changed), 1);
        assert_eq!(c.customers_running(), 0);
        let e = of(Some("acme"));
        assert!(c.send(&c.resolve(&e), e));
        assert_eq!(c.customers_running(), 1);
        // A decision made just before the reload goes to the customer's instance as it is
        // now: nothing restarts the replaced settings.
        let stale = Resolved::To(Some(Arc::from("acme")), instance(2, &starts));
        assert!(c.send(&stale, of(Some("acme"))));
        assert_eq!(c.customers_running(), 1);
    }

    #[tokio::test]
    async fn idle_customers_instances_close_and_the_shared_one_stays() {
        let starts = Arc::new(AtomicUsize::new(0));
        let c = PerCustomer::new("c", Arc::default(), instances(Fallback::Shared, &starts), 0);
        let e = of(Some("acme"));
        assert!(c.send(&c.resolve(&e), e));
        assert_eq!(c.close_idle(Duration::from_secs(3600)), 0);
        assert_eq!(c.close_idle(Duration::ZERO), 1);
        assert_eq!(c.customers_running(), 0);
        // The shared one is still there to take events.
        let e = of(Some("other"));
        assert!(c.send(&c.resolve(&e), e));
        assert_eq!(starts.load(Relaxed), 2, "no new shared instance was needed");
        assert_eq!(
            c.close().len(),
            2,
            "the shared one and the closed one to wait for"
        );
    }

    #[tokio::test]
    async fn per_customer_counts_are_capped_at_the_label_limit() {
        let starts = Arc::default();
        let mut instances = instances(Fallback::Shared, &starts);
        for code in ["a", "b", "c"] {
            instances
                .by_customer
                .insert(Arc::from(code), Some(instance(9, &starts)));
        }
        let c = PerCustomer::new("c", Arc::default(), instances, 2);
        for code in ["b", "a", "b", "c", "c", "other"] {
            let e = of(Some(code));
            assert!(c.send(&c.resolve(&e), e));
        }
        // The first two customers to send have series of their own; "c" counts among the
        // others; "other" has no instance of its own and counts nowhere here.
        let (labelled, others) = c.routed_by_customer();
        assert_eq!(labelled, vec![(Arc::from("a"), 1), (Arc::from("b"), 2)]);
        assert_eq!(others, 2);
    }
}
