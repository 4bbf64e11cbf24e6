//! From a raw record to queued deliveries: parse, route, register the offset, fan out.

use crate::dead_letter::{DeadLetters, Letter, Refusals};
use crate::engine::ConnectorHandle;
use crate::event::{Envelope, Event, Malformed, Origin};
use crate::offsets::Acker;
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
    max_event_bytes: usize,
    dead_letters: Option<Arc<dyn DeadLetters>>,
}

impl Dispatcher {
    pub fn new(
        router: Arc<Router>,
        connectors: Vec<Option<Reach>>,
        acker: Arc<Acker>,
        stats: Arc<SourceStats>,
        max_event_bytes: usize,
        dead_letters: Option<Arc<dyn DeadLetters>>,
    ) -> Self {
        Dispatcher {
            router,
            connectors,
            acker,
            stats,
            max_event_bytes,
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
        let (partition, offset) = (origin.partition, origin.offset);
        // Second handles (reference counts) for the dead-letter topic.
        let kept = (raw.clone(), envelope.clone());
        let event = match Event::parse_record(raw, envelope, origin.clone(), self.max_event_bytes) {
            Ok(e) => e,
            Err(bad) => {
                self.stats.count_malformed(bad.reason);
                tracing::warn!(
                    topic = %origin.topic,
                    partition = origin.kafka_partition,
                    offset,
                    reason = bad.reason.as_str(),
                    detail = %bad.detail,
                    "malformed record skipped"
                );
                self.dead_letter_malformed(kept, origin, &bad);
                return Accepted::Malformed(bad);
            }
        };
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
                tracing::error!(connector = %self.router.routes()[i.0 as usize].id, offset, "connector worker is not running; event left uncommitted");
            }
        }
        Accepted::Routed(targets)
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

    /// Without a dead-letter topic the record finishes at once; with one, when its letter is
    /// written.
    fn dead_letter_malformed(
        &self,
        (raw, envelope): (Bytes, Option<Arc<Envelope>>),
        origin: Origin,
        bad: &Malformed,
    ) {
        let (partition, offset) = (origin.partition, origin.offset);
        let Some(dlq) = &self.dead_letters else {
            // Finished with no targets: the watermark moves past it in order.
            let _ = self
                .acker
                .lock()
                .register(partition, offset, TargetSet::default());
            return;
        };
        let mut target = TargetSet::default();
        target.insert(TargetSet::DEAD_LETTER);
        if self
            .acker
            .lock()
            .register(partition, offset, target)
            .is_err()
        {
            return;
        }
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
                acker.complete_offset(TargetSet::DEAD_LETTER, partition, offset);
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
