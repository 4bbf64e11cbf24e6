//! Where permanently refused records go: the contract between the engine (and the
//! dispatcher, for malformed input) and a dead-letter destination such as a Kafka topic.

use crate::event::{Envelope, Event, Origin};
use crate::log::Throttle;
use crate::offsets::Acker;
use crate::route::ConnectorIndex;
use crate::stats::ConnectorStats;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// A record that will not be delivered, with why.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The record exactly as read from Kafka.
    pub raw: Bytes,
    /// Its key and headers, to be written with it.
    pub envelope: Option<Arc<Envelope>>,
    pub origin: Origin,
    /// The connector that refused it, or `router` for malformed input.
    pub connector: Arc<str>,
    pub reason: String,
    /// The destination's last status (0 when there was none).
    pub status_code: u16,
    pub attempts: u32,
    /// When the first attempt to deliver it began, epoch ms; 0 when it was never sent.
    pub first_attempt_ms: u64,
}

/// A topic that takes letters: the dead-letter topic, or the parking topic of detached
/// destinations. `write` must call `done` once the letter is durably stored and must keep
/// trying until then: the record's offset is not committed before `done`, so an unavailable
/// topic holds the partition rather than losing the record.
pub trait DeadLetters: Send + Sync + 'static {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>);
}

/// The connector id used in letters for malformed input.
pub const ROUTER: &str = "router";

/// Refuses events for one connector outside its worker: those of a customer without settings
/// for it (`no_tenant`), or bound for an instance that could not be built. As a worker's
/// refusals are: counted, logged, and dead-lettered (without a dead-letter topic, finished),
/// each finishing for the connector once its letter is stored.
#[derive(Clone)]
pub struct Refusals {
    pub connector: Arc<str>,
    pub index: ConnectorIndex,
    pub acker: Arc<Acker>,
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    pub stats: Arc<ConnectorStats>,
    pub notices: Arc<Throttle>,
}

impl Refusals {
    pub fn refuse(&self, events: Vec<Event>, reason: &str) {
        let Some(first) = events.first() else {
            return;
        };
        let n = events.len() as u64;
        self.stats.rejected.fetch_add(n, Relaxed);
        self.stats.count_rejection(reason, n);
        if let Some(held_back) = self
            .notices
            .allow(reason.split(':').next().unwrap_or(reason))
        {
            let o = first.origin();
            tracing::warn!(
                connector = %self.connector,
                topic = %o.topic,
                partition = o.kafka_partition,
                offset = o.offset,
                reason = %crate::log::clip(reason),
                events = n,
                held_back,
                "events refused (logged at most once a minute per reason)"
            );
        }
        let Some(dlq) = &self.dead_letters else {
            self.acker.complete(self.index, &events);
            return;
        };
        for event in events {
            let letter = Letter {
                raw: event.raw().clone(),
                envelope: event.envelope().cloned(),
                origin: event.origin().clone(),
                connector: self.connector.clone(),
                reason: reason.to_owned(),
                status_code: 0,
                attempts: 0,
                first_attempt_ms: 0,
            };
            let (acker, stats, index) = (self.acker.clone(), self.stats.clone(), self.index);
            dlq.write(
                letter,
                Box::new(move || {
                    stats.dead_lettered.fetch_add(1, Relaxed);
                    acker.complete(index, &[event]);
                }),
            );
        }
    }
}
