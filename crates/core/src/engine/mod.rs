//! The delivery engine: one worker per connector that batches its events, sends batches with
//! bounded concurrency, retries by the shared policy, records timings and acknowledges each
//! event exactly once, as delivered or rejected.
//!
//! The worker is two parts. The [`intake`] takes the connector's queue, forms batches and
//! hands each to a delivery task, at most `concurrency` at once. The [`Courier`] delivers a
//! batch, one step at a time, each step in its own module the way tower keeps retry, timeout
//! and concurrency apart:
//!
//! - [`attempt`]: encode the events, send them within the request timeout, classify the
//!   answer, time the call;
//! - [`settle`]: act on the answer: acknowledge what was delivered, reject (dead-letter) what
//!   was refused, split what was too large, park what a detached destination cannot take;
//! - [`backoff`]: after a failure, park, wait and try again, or give up;
//! - [`confirm`]: for destinations that confirm accepted requests later, the events waiting
//!   for that confirmation, and the poller that asks for it;
//! - [`timing`]: the delivery's `collector_observability` timings, and the records the next
//!   requests carry.

mod attempt;
mod backoff;
mod confirm;
mod health;
mod intake;
mod settle;
mod timing;

use crate::batch::{Batch, BatchLimits, Batcher};
use crate::connector::{Connector, Outcome};
use crate::dead_letter::DeadLetters;
use crate::event::Event;
use crate::isolation::Isolation;
use crate::offsets::Acker;
use crate::retry::RetryPolicy;
use crate::route::ConnectorIndex;
use crate::stats::{ConnectorStats, Health};
use crate::timings::TimingRecorder;
use attempt::Attempt;
use backoff::Next;
use settle::{Settled, with_reason};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use timing::{Clock, LatestRecords, Stopwatch};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How one connector instance batches, retries and limits concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub limits: BatchLimits,
    pub retry: RetryPolicy,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// One attempt's limit, from sending to the full answer.
    pub request_timeout: Duration,
    /// Append this connector's latest collector_observability records to each event sent.
    pub append_observability: bool,
    pub health_check: HealthCheck,
    /// The destination account's limit, for this instance alone; None: as fast as it takes.
    pub rate_limit: Option<crate::rate::RateLimit>,
    /// The `fields` table: the document this connector sends; None: the raw event.
    pub fields: Option<Arc<crate::fields::FieldSelection>>,
}

/// The destination's health check, for the readiness probe (docs/health.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthCheck {
    /// False: the destination is never asked and the connector counts as ready from the start.
    pub enabled: bool,
    /// Between checks while they fail; they stop once one passes or a delivery succeeds.
    pub interval: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            interval: Duration::from_secs(10),
        }
    }
}

/// The way into a running connector worker.
pub struct ConnectorHandle {
    pub id: Arc<str>,
    pub index: ConnectorIndex,
    pub stats: Arc<ConnectorStats>,
    tx: mpsc::UnboundedSender<Event>,
    task: JoinHandle<()>,
}

impl ConnectorHandle {
    /// Queues `event`. The queue is not bounded here: the source bounds it by pausing
    /// partitions once too many offsets are unfinished. False if the worker has stopped.
    pub fn send(&self, event: Event) -> bool {
        self.stats.queued.fetch_add(1, Relaxed);
        self.tx.send(event).is_ok()
    }

    /// Closes the queue: the worker flushes its open batch, finishes in-flight deliveries and
    /// ends. Await the returned handle to know when.
    pub fn close(self) -> JoinHandle<()> {
        drop(self.tx);
        self.task
    }

    /// A handle whose worker `build` is still starting on `runtime` (a customer's instance,
    /// built on its first event by the consumer thread, which must not wait). Events queue
    /// meanwhile and go to the worker once it runs. If it cannot be built, each queued event
    /// goes to `refuse` with the error as its reason: nothing is left unfinished.
    pub fn building(
        id: &str,
        index: ConnectorIndex,
        stats: Arc<ConnectorStats>,
        runtime: &tokio::runtime::Handle,
        build: BuildFuture,
        refuse: Refuse,
    ) -> ConnectorHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = runtime.spawn(forward_when_built(build, rx, refuse));
        ConnectorHandle {
            id: Arc::from(id),
            index,
            stats,
            tx,
            task,
        }
    }
}

/// A worker being built: the connector's own construction, then [`Engine::spawn`].
pub type BuildFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<ConnectorHandle, String>> + Send>>;

/// Where the events of an instance that could not be built go, with the reason.
pub type Refuse = Arc<dyn Fn(Vec<Event>, &str) + Send + Sync>;

async fn forward_when_built(
    build: BuildFuture,
    mut rx: mpsc::UnboundedReceiver<Event>,
    refuse: Refuse,
) {
    const AT_ONCE: usize = 256;
    let mut events = Vec::with_capacity(AT_ONCE);
    let worker = match build.await {
        Ok(worker) => worker,
        Err(e) => {
            let reason = format!("instance: {e}");
            tracing::error!(reason = %reason, "connector instance could not be built; its events are refused");
            while rx.recv_many(&mut events, AT_ONCE).await > 0 {
                refuse(std::mem::take(&mut events), &reason);
            }
            return;
        }
    };
    // Counted as queued once, by this handle's `send`. A worker that stopped (it panicked)
    // takes nothing more: what it would have had is refused, not dropped.
    let mut running = true;
    while rx.recv_many(&mut events, AT_ONCE).await > 0 {
        let mut unsent = Vec::new();
        for event in events.drain(..) {
            if !running {
                unsent.push(event);
            } else if let Err(e) = worker.tx.send(event) {
                running = false;
                unsent.push(e.0);
            }
        }
        if !unsent.is_empty() {
            refuse(unsent, "instance: worker stopped");
        }
    }
    let _ = worker.close().await;
}

/// What every connector worker shares with the rest of the pipeline.
#[derive(Clone)]
pub struct Wiring {
    pub acker: Arc<Acker>,
    pub timings: Arc<TimingRecorder>,
    /// Where rejected events go; without one they are logged, counted and acknowledged.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// This worker's part in isolating its destination; None: it never detaches.
    pub isolation: Option<Role>,
    /// The counters of the connector this worker is one instance of (a customer's): shared
    /// with its other instances, whose health the connector's own instance alone reports.
    /// None: the worker's own, health included.
    pub stats: Option<Arc<ConnectorStats>>,
}

/// A worker's part in its destination's [`Isolation`].
#[derive(Clone)]
pub enum Role {
    /// The main flow: detaches the destination when a delivery fails for too long, parks its
    /// events in `parking` while it is detached or draining, and probes it.
    Main {
        isolation: Arc<Isolation>,
        parking: Arc<dyn DeadLetters>,
    },
    /// The drain of the parking topic: its deliveries tell whether the destination answers.
    Drain(Arc<Isolation>),
}

impl Role {
    fn isolation(&self) -> &Arc<Isolation> {
        match self {
            Role::Main { isolation, .. } | Role::Drain(isolation) => isolation,
        }
    }
}

pub struct Engine;

impl Engine {
    /// Starts the worker for `connector` on the current tokio runtime.
    pub fn spawn<C: Connector>(
        connector: C,
        id: &str,
        index: ConnectorIndex,
        settings: EngineSettings,
        wiring: Wiring,
    ) -> ConnectorHandle {
        let limits = settings.limits.clamp_to(connector.hard_limits());
        let (concurrency, check_health) = (settings.concurrency, settings.health_check.enabled);
        let courier = Arc::new(Courier::new(connector, id, index, settings, wiring));
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let confirmer = courier.unconfirmed.is_some().then(|| {
            courier.stats.confirming.store(true, Relaxed);
            let (closing, closed) = watch::channel(false);
            let poller = tokio::spawn(confirm::poll(courier.clone(), permits.clone(), closed));
            (closing, intake::Poller(poller))
        });
        let intake = intake::Intake {
            batcher: Batcher::new(limits),
            permits,
            tasks: JoinSet::new(),
            courier: courier.clone(),
            confirmer,
        };
        if check_health {
            tokio::spawn(health::check_health(courier.clone()));
        } else if courier.owns_health {
            courier.stats.set_health(Health::Unchecked);
        }
        ConnectorHandle {
            id: courier.id.clone(),
            index,
            stats: courier.stats.clone(),
            tx,
            task: tokio::spawn(intake.run(rx)),
        }
    }
}

/// What delivers one connector's batches to its destination: the connector and everything
/// a delivery settles with. Every delivery task of the connector shares it.
struct Courier<C> {
    /// The records the next requests carry, and the most bytes they can add to an event.
    records: LatestRecords,
    id: Arc<str>,
    index: ConnectorIndex,
    settings: EngineSettings,
    acker: Arc<Acker>,
    timings: Arc<TimingRecorder>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    role: Option<Role>,
    stats: Arc<ConnectorStats>,
    /// Whether this worker reports its connector's health (false for a customer's instance).
    owns_health: bool,
    pace: Option<crate::rate::Pace>,
    /// Rate-limits the log lines about events changed or refused, per kind.
    notices: crate::log::Throttle,
    /// Events of accepted requests awaiting the destination's confirmation; None when its
    /// answers are final.
    unconfirmed: Option<confirm::Unconfirmed>,
    connector: C,
}

/// The reason class of a parked event (the text before the first colon).
pub const PARKED: &str = "parked";

/// A kind of notice about events is logged at most this often per connector.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

/// How one group of events ended.
#[derive(Debug)]
enum GroupEnd {
    Done,
    /// The destination found the request too large: deliver these in two halves.
    Split(Vec<Event>),
}

impl<C: Connector> Courier<C> {
    fn new(
        connector: C,
        id: &str,
        index: ConnectorIndex,
        settings: EngineSettings,
        wiring: Wiring,
    ) -> Self {
        let pace = settings.rate_limit.map(crate::rate::Pace::new);
        let owns_health = wiring.stats.is_none() || settings.health_check.enabled;
        Courier {
            records: LatestRecords::new(id, settings.append_observability),
            id: Arc::from(id),
            index,
            settings,
            acker: wiring.acker,
            timings: wiring.timings,
            dead_letters: wiring.dead_letters,
            role: wiring.isolation,
            owns_health,
            pace,
            stats: wiring.stats.unwrap_or_default(),
            notices: crate::log::Throttle::new(NOTICE_EVERY),
            unconfirmed: connector.confirmation().map(confirm::Unconfirmed::new),
            connector,
        }
    }

    /// `probe`: sent to a detached destination to see whether it answers again.
    async fn deliver(&self, batch: Batch, probe: bool) {
        // Subscribed before the first check, so that no revocation after it goes unseen.
        let mut revoked = self.acker.revocations();
        // Every `time` is the batch's wall-clock open time plus a monotonic offset, so the
        // records add up exactly (send.time = queue.time + queue) whatever the clock does.
        let clock = Clock::new(batch.opened_at, batch.opened_wall_ms);
        let mut groups = vec![batch.events];
        while let Some(events) = groups.pop() {
            let events = self.cancel_revoked(events);
            if events.is_empty() {
                continue;
            }
            if let GroupEnd::Split(mut left) =
                self.deliver_group(events, clock, probe, &mut revoked).await
            {
                let right = left.split_off(left.len() / 2);
                groups.push(right);
                groups.push(left);
            }
        }
    }

    /// Sends `events` until each is delivered or rejected, retrying by the policy, or until
    /// their partitions are revoked: attempt, settle, back off, again.
    async fn deliver_group(
        &self,
        events: Vec<Event>,
        clock: Clock,
        probe: bool,
        revoked: &mut watch::Receiver<u64>,
    ) -> GroupEnd {
        // A place among the requests awaiting confirmation, reserved before sending: at the
        // bound this waits, and the connector sends nothing more until places free up.
        let mut place = match &self.unconfirmed {
            Some(unconfirmed) => unconfirmed.reserve().await,
            None => None,
        };
        let mut watch = Stopwatch::start(clock, events.len());
        let mut schedule = self.settings.retry.schedule();
        let mut pending = events;
        let end = loop {
            let (sent, verdict) = match self.attempt(pending, &mut watch).await {
                Attempt::Sent { events, verdict } => (events, verdict),
                Attempt::Ended(end) => break end,
            };
            if let Outcome::Accepted(receipt) = verdict.outcome {
                self.await_confirmation(receipt, sent, place.take());
                break GroupEnd::Done;
            }
            let retry_after = verdict.retry_after;
            let settled = self.settle(sent, verdict.outcome, watch.status(), watch.attempts());
            let (failed, reason) = match settled {
                Settled::Done => break GroupEnd::Done,
                Settled::Split(events) => break GroupEnd::Split(events),
                Settled::Retry { events, reason } => (events, reason),
            };
            match self.after_failure(
                &reason,
                retry_after,
                failed.len(),
                probe,
                &watch,
                &mut schedule,
            ) {
                Next::Wait(delay) => {
                    pending = self.back_off(delay, failed, revoked).await;
                    if pending.is_empty() {
                        break GroupEnd::Done;
                    }
                }
                Next::Park(reason) => {
                    self.park(failed, &reason, watch.last_answer());
                    break GroupEnd::Done;
                }
                Next::GiveUp(reason) => {
                    let rejected = with_reason(failed, &reason);
                    self.finish_rejected(rejected, watch.status(), watch.attempts());
                    break GroupEnd::Done;
                }
            }
        };
        self.record(watch.finish(&self.id));
        end
    }

    /// The isolation state and the parking sink, for the main flow only.
    fn parking(&self) -> Option<(&Arc<Isolation>, &Arc<dyn DeadLetters>)> {
        match &self.role {
            Some(Role::Main { isolation, parking }) => Some((isolation, parking)),
            _ => None,
        }
    }
}

/// A courier around a scripted connector, for the steps' own tests.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::connector::{EncodeError, Encoded, SendError, Verdict};
    use crate::dead_letter::Letter;
    use crate::event::{Origin, PartitionId};
    use crate::route::TargetSet;
    use crate::shipment::Shipment;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    pub(super) const P: PartitionId = PartitionId(0);

    /// What the connector answers, and what it was asked.
    #[derive(Default)]
    pub(super) struct Scripted {
        /// Answers in turn; then 200 Delivered.
        pub(super) answers: Mutex<VecDeque<Result<Verdict, SendError>>>,
        /// The offsets of each request sent.
        pub(super) sent: Mutex<Vec<Vec<i64>>>,
        /// Offsets the encoder leaves out as invalid.
        pub(super) refused: Mutex<Vec<i64>>,
        /// Every request fails to encode as too large.
        pub(super) too_large: Mutex<bool>,
        /// No request is ever answered.
        pub(super) hang: Mutex<bool>,
        /// Set before the rig is built: the destination confirms accepted requests later.
        pub(super) confirming: Mutex<Option<crate::connector::ConfirmSettings>>,
        /// Receipts the destination confirms when next asked (then forgets, as HEC does).
        pub(super) confirms: Mutex<Vec<crate::connector::Receipt>>,
        /// The receipts of each confirmation request.
        pub(super) asked: Mutex<Vec<Vec<crate::connector::Receipt>>>,
    }

    impl Scripted {
        pub(super) fn answering(answers: Vec<Result<Verdict, SendError>>) -> Arc<Self> {
            Arc::new(Scripted {
                answers: Mutex::new(answers.into()),
                ..Default::default()
            })
        }

        pub(super) fn refuse(&self, offset: i64) {
            self.refused.lock().unwrap().push(offset);
        }
    }

    pub(super) struct Stub(pub(super) Arc<Scripted>);

    impl Connector for Stub {
        type Request = Vec<i64>;
        type Response = Verdict;

        fn hard_limits(&self) -> BatchLimits {
            BatchLimits {
                max_events: 1000,
                max_bytes: 1 << 20,
                max_linger: Duration::from_secs(1),
            }
        }
        fn encoded_len(&self, event: &Event) -> usize {
            event.raw().len()
        }
        fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<Vec<i64>>, EncodeError> {
            let events = shipment.events();
            if *self.0.too_large.lock().unwrap() {
                return Err(EncodeError::TooLarge {
                    size: events.len(),
                    limit: 0,
                });
            }
            let refused = self.0.refused.lock().unwrap();
            let mut encoded = Encoded::all(Vec::new());
            for (i, e) in events.iter().enumerate() {
                let o = e.origin().offset;
                if refused.contains(&o) {
                    encoded.rejected.push((i, format!("invalid: offset {o}")));
                } else {
                    encoded.request.push(o);
                }
            }
            Ok(encoded)
        }
        fn request_size(&self, request: &Vec<i64>) -> usize {
            request.len()
        }
        async fn send(&self, request: &Vec<i64>) -> Result<Verdict, SendError> {
            self.0.sent.lock().unwrap().push(request.clone());
            if *self.0.hang.lock().unwrap() {
                std::future::pending::<()>().await;
            }
            let next = self.0.answers.lock().unwrap().pop_front();
            next.unwrap_or_else(|| Ok(Verdict::new(200, crate::Outcome::Delivered)))
        }
        fn classify(&self, response: &Verdict, _events: &[Event]) -> Verdict {
            response.clone()
        }
        fn confirmation(&self) -> Option<crate::connector::ConfirmSettings> {
            *self.0.confirming.lock().unwrap()
        }
        async fn confirm(
            &self,
            receipts: &[crate::connector::Receipt],
        ) -> Result<Vec<crate::connector::Receipt>, crate::connector::ConfirmError> {
            self.0.asked.lock().unwrap().push(receipts.to_vec());
            let mut confirms = self.0.confirms.lock().unwrap();
            let (yes, no) = confirms.iter().partition(|r| receipts.contains(r));
            *confirms = no;
            Ok(yes)
        }
    }

    /// A letter topic that stores every letter at once.
    #[derive(Default)]
    pub(super) struct Letters(pub(super) Mutex<Vec<Letter>>);

    impl DeadLetters for Letters {
        fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>) {
            self.0.lock().unwrap().push(letter);
            done();
        }
    }

    impl Letters {
        pub(super) fn reasons(&self) -> Vec<(i64, String)> {
            let letters = self.0.lock().unwrap();
            letters
                .iter()
                .map(|l| (l.origin.offset, l.reason.clone()))
                .collect()
        }
    }

    pub(super) fn settings() -> EngineSettings {
        EngineSettings {
            limits: BatchLimits {
                max_events: 100,
                max_bytes: 1 << 20,
                max_linger: Duration::from_millis(10),
            },
            retry: RetryPolicy {
                max_attempts: 3,
                max_elapsed: Duration::from_secs(600),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                on_exhausted: crate::retry::OnExhausted::DeadLetter,
            },
            concurrency: 1,
            request_timeout: Duration::from_secs(5),
            append_observability: false,
            health_check: HealthCheck::default(),
            rate_limit: None,
            fields: None,
        }
    }

    /// A courier on partition [`P`], with a dead-letter topic and the given isolation role.
    pub(super) struct Rig {
        pub(super) courier: Arc<Courier<Stub>>,
        pub(super) acker: Arc<Acker>,
        pub(super) letters: Arc<Letters>,
        next_offset: std::cell::Cell<i64>,
    }

    impl Rig {
        pub(super) fn new(script: Arc<Scripted>, role: Option<Role>) -> Self {
            let acker = Arc::new(Acker::new());
            acker.lock().assign(P);
            let letters = Arc::new(Letters::default());
            let wiring = Wiring {
                acker: acker.clone(),
                timings: TimingRecorder::new(10),
                dead_letters: Some(letters.clone()),
                isolation: role,
                stats: None,
            };
            let courier = Arc::new(Courier::new(
                Stub(script),
                "stub",
                ConnectorIndex(0),
                settings(),
                wiring,
            ));
            Rig {
                courier,
                acker,
                letters,
                next_offset: std::cell::Cell::new(0),
            }
        }

        /// `n` new events, offsets from 0 on, each owed by this connector.
        pub(super) fn events(&self, n: i64) -> Vec<Event> {
            let mut targets = TargetSet::default();
            targets.insert(ConnectorIndex(0));
            let from = self.next_offset.replace(self.next_offset.get() + n);
            (from..from + n)
                .map(|offset| {
                    self.acker.lock().register(P, offset, targets).unwrap();
                    let origin = Origin {
                        offset,
                        member: None,
                        ..crate::event::tests::origin(0)
                    };
                    let raw = format!(r#"{{"event":{{"timestamp":{offset}}}}}"#);
                    Event::parse(bytes::Bytes::from(raw), origin, 1 << 20).unwrap()
                })
                .collect()
        }

        /// Offsets this connector still owes.
        pub(super) fn unfinished(&self) -> usize {
            self.acker.lock().unfinished(P)
        }
    }
}
