//! From a raw record to queued deliveries: parse, route, register the offset, fan out.

use crate::dead_letter::{DeadLetters, Letter, Refusals};
use crate::engine::ConnectorHandle;
use crate::event::{Envelope, Event, Malformed, Origin};
use crate::offsets::Acker;
use crate::record::{self, Limits, Member, Record};
use crate::route::{ConnectorIndex, Router, TargetSet};
use crate::stats::{ConnectorStats, SourceStats};
use crate::tenancy::{PerCustomer, Resolved};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::task::JoinHandle;

/// What became of one record.
#[derive(Debug)]
pub enum Accepted {
    /// Queued for these connectors (possibly none: the offset then finishes at once).
    Routed(TargetSet),
    /// Not an event; logged, counted, and its offset finished.
    Malformed(Malformed),
    /// An array record: its events queued (each to its own connectors), and its malformed
    /// members logged, counted and dead-lettered alone.
    Array { events: usize, malformed: usize },
    /// This offset was already registered (a redelivery within one assignment): skipped.
    Duplicate,
}

/// How the dispatcher reaches one connector.
pub enum Reach {
    /// One instance for every customer.
    One(ConnectorHandle),
    /// An instance per customer (docs/tenancy.md), and where its refusals go.
    PerCustomer {
        connector: Arc<PerCustomer>,
        refusals: Refusals,
    },
}

impl Reach {
    /// The counters of every instance of the connector.
    pub fn stats(&self) -> &Arc<ConnectorStats> {
        match self {
            Reach::One(h) => &h.stats,
            Reach::PerCustomer { connector, .. } => connector.stats(),
        }
    }

    fn close(self) -> Vec<JoinHandle<()>> {
        match self {
            Reach::One(h) => vec![h.close()],
            Reach::PerCustomer { connector, .. } => connector.close(),
        }
    }
}

/// Owns the connector queues. The Kafka source feeds it records; dropping it (or
/// [`Dispatcher::close`]) closes every queue.
pub struct Dispatcher {
    router: Arc<Router>,
    /// Indexed by `ConnectorIndex`; `None` for disabled connectors.
    connectors: Vec<Option<Reach>>,
    acker: Arc<Acker>,
    stats: Arc<SourceStats>,
    limits: Limits,
    dead_letters: Option<Arc<dyn DeadLetters>>,
}

impl Dispatcher {
    pub fn new(
        router: Arc<Router>,
        connectors: Vec<Option<Reach>>,
        acker: Arc<Acker>,
        stats: Arc<SourceStats>,
        limits: Limits,
        dead_letters: Option<Arc<dyn DeadLetters>>,
    ) -> Self {
        Dispatcher {
            router,
            connectors,
            acker,
            stats,
            limits,
            dead_letters,
        }
    }

    pub fn acker(&self) -> &Arc<Acker> {
        &self.acker
    }

    pub fn stats(&self) -> &Arc<SourceStats> {
        &self.stats
    }

    /// Takes one record: its value, and its key and headers if it had any.
    pub fn accept(&self, raw: Bytes, envelope: Option<Arc<Envelope>>, origin: Origin) -> Accepted {
        self.stats.consumed.fetch_add(1, Relaxed);
        // Second handles (reference counts) for the dead-letter topic.
        let kept = (raw.clone(), envelope.clone());
        match record::parse(raw, envelope, origin.clone(), self.limits) {
            Ok(Record::One(event)) => self.accept_event(event),
            Ok(Record::Array(members)) => self.accept_members(members, kept, &origin),
            Err(bad) => {
                self.note_malformed(&origin, &bad);
                let (partition, offset) = (origin.partition, origin.offset);
                let target = self.malformed_target();
                if self
                    .acker
                    .lock()
                    .register(partition, offset, target)
                    .is_ok()
                {
                    self.dead_letter_malformed(kept, origin, &bad);
                }
                Accepted::Malformed(bad)
            }
        }
    }

    /// A record that is one event: the common case.
    fn accept_event(&self, event: Event) -> Accepted {
        let origin = event.origin();
        let (partition, offset) = (origin.partition, origin.offset);
        let (targets, resolved) = self.resolve(&event);
        let bytes = event.raw().len();
        if let Err(e) = self
            .acker
            .lock()
            .register_sized(partition, offset, targets, bytes)
        {
            tracing::debug!(partition = origin.kafka_partition, offset, error = %e, "record not tracked");
            return Accepted::Duplicate;
        }
        self.fan_out(&event, targets, &resolved);
        Accepted::Routed(targets)
    }

    /// An array record: every member is resolved first, so that the record is registered
    /// once with what each member owes, before any member can finish.
    fn accept_members(
        &self,
        members: Vec<Member>,
        (raw, envelope): (Bytes, Option<Arc<Envelope>>),
        origin: &Origin,
    ) -> Accepted {
        self.stats.array_records.fetch_add(1, Relaxed);
        self.stats
            .array_members
            .fetch_add(members.len() as u64, Relaxed);
        let mut owed = Vec::with_capacity(members.len());
        let mut routed = Vec::with_capacity(members.len());
        for member in members {
            match member {
                Ok(event) => {
                    let (targets, resolved) = self.resolve(&event);
                    owed.push(targets);
                    routed.push(Ok((event, targets, resolved)));
                }
                Err(bad) => {
                    self.note_malformed(&bad.origin, &bad.malformed);
                    owed.push(self.malformed_target());
                    routed.push(Err(bad));
                }
            }
        }
        let (partition, offset) = (origin.partition, origin.offset);
        if let Err(e) = self
            .acker
            .lock()
            .register_members(partition, offset, owed, raw.len())
        {
            tracing::debug!(partition = origin.kafka_partition, offset, error = %e, "record not tracked");
            return Accepted::Duplicate;
        }
        let (mut events, mut malformed) = (0, 0);
        for member in routed {
            match member {
                Ok((event, targets, resolved)) => {
                    events += 1;
                    self.fan_out(&event, targets, &resolved);
                }
                Err(bad) => {
                    malformed += 1;
                    self.dead_letter_malformed(
                        (bad.raw, envelope.clone()),
                        bad.origin,
                        &bad.malformed,
                    );
                }
            }
        }
        Accepted::Array { events, malformed }
    }

    /// Hands `event` to each connector of `targets`, whose offset (or member) is registered.
    fn fan_out(&self, event: &Event, targets: TargetSet, resolved: &[(ConnectorIndex, Resolved)]) {
        if targets.is_empty() {
            self.stats.unrouted.fetch_add(1, Relaxed);
        }
        for i in targets.iter() {
            let sent = match &self.connectors[i.0 as usize] {
                Some(Reach::One(handle)) => handle.send(event.clone()),
                Some(Reach::PerCustomer {
                    connector,
                    refusals,
                }) => match resolved.iter().find(|(j, _)| *j == i) {
                    Some((_, Resolved::Reject(reason))) => {
                        connector.no_tenant.fetch_add(1, Relaxed);
                        refusals.refuse(vec![event.clone()], reason);
                        true
                    }
                    Some((_, to)) => connector.send(to, event.clone()),
                    None => false,
                },
                None => false,
            };
            if !sent {
                // Left unfinished on purpose: its offset is never committed, so it is
                // redelivered after a restart rather than lost.
                tracing::error!(connector = %self.router.routes()[i.0 as usize].id, offset = event.origin().offset, "connector worker is not running; event left uncommitted");
            }
        }
    }

    fn note_malformed(&self, origin: &Origin, bad: &Malformed) {
        self.stats.count_malformed(bad.reason);
        tracing::warn!(
            topic = %origin.topic,
            partition = origin.kafka_partition,
            offset = origin.offset,
            member = origin.member,
            reason = bad.reason.as_str(),
            detail = %bad.detail,
            "malformed record skipped"
        );
    }

    /// What a malformed record (or member) owes: its dead letter, or nothing without a
    /// dead-letter topic.
    fn malformed_target(&self) -> TargetSet {
        let mut target = TargetSet::default();
        if self.dead_letters.is_some() {
            target.insert(TargetSet::DEAD_LETTER);
        }
        target
    }

    /// The connectors `event` goes to, and for those with per-customer instances, which
    /// instance (or a refusal). A customer that turned a connector off, or whose filter
    /// refuses the event, does not have it as a target at all. Resolved once, before the
    /// offset is registered, so a reload in between cannot leave a target that nothing
    /// finishes.
    fn resolve(&self, event: &Event) -> (TargetSet, Vec<(ConnectorIndex, Resolved)>) {
        let routed = self.router.route(event);
        let mut skipped = TargetSet::default();
        let mut resolved = Vec::new();
        for i in routed.iter() {
            if let Some(Reach::PerCustomer { connector, .. }) = &self.connectors[i.0 as usize] {
                match connector.resolve(event) {
                    Resolved::Skip => skipped.insert(i),
                    to => resolved.push((i, to)),
                }
            }
        }
        (routed.without(skipped), resolved)
    }

    /// Passes over a record on purpose (a replay's header filter): its offset finishes at
    /// once, in order.
    pub fn skip(&self, origin: &Origin) {
        let _ = self
            .acker
            .lock()
            .register(origin.partition, origin.offset, TargetSet::default());
    }

    /// Writes the letter of a malformed record (or member) whose offset is registered as
    /// owing it ([`Dispatcher::malformed_target`]); it finishes once the letter is stored.
    fn dead_letter_malformed(
        &self,
        (raw, envelope): (Bytes, Option<Arc<Envelope>>),
        origin: Origin,
        bad: &Malformed,
    ) {
        let Some(dlq) = &self.dead_letters else {
            return;
        };
        let done_origin = origin.clone();
        let letter = Letter {
            raw,
            envelope,
            origin,
            connector: Arc::from(crate::dead_letter::ROUTER),
            reason: format!("malformed: {}: {}", bad.reason, bad.detail),
            status_code: 0,
            attempts: 0,
            first_attempt_ms: 0,
        };
        let (acker, stats) = (self.acker.clone(), self.stats.clone());
        dlq.write(
            letter,
            Box::new(move || {
                stats.malformed_dead_lettered.fetch_add(1, Relaxed);
                acker.complete_origin(TargetSet::DEAD_LETTER, &done_origin);
            }),
        );
    }

    /// Closes every connector queue; the returned handles finish when each worker has
    /// flushed and settled its in-flight deliveries.
    pub fn close(self) -> Vec<JoinHandle<()>> {
        self.connectors
            .into_iter()
            .flatten()
            .flat_map(Reach::close)
            .collect()
    }
}
