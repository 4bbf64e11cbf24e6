//! The delivery engine: one worker per connector that batches its events, sends batches with
//! bounded concurrency, retries by the shared policy, records timings and acknowledges each
//! event exactly once, as delivered or rejected.

use crate::batch::{Batch, BatchLimits, Batcher, Push};
use crate::connector::{Connector, EncodeError, EventVerdict, Fix, Outcome, Verdict};
use crate::dead_letter::{DeadLetters, Letter};
use crate::event::Event;
use crate::isolation::Isolation;
use crate::offsets::Acker;
use crate::retry::RetryPolicy;
use crate::route::ConnectorIndex;
use crate::shipment::Shipment;
use crate::stats::{ConnectorStats, Health};
use crate::timings::{CallTiming, DeliveryTimings, TimingRecorder};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// How one connector instance batches, retries and limits concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
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
        let records_bound = if settings.append_observability {
            crate::timings::max_records_len(id) + crate::event::SPLICE_OVERHEAD
        } else {
            0
        };
        let shared = Arc::new(Shared {
            observability: std::sync::Mutex::new(None),
            records_bound,
            id: Arc::from(id),
            index,
            settings,
            acker: wiring.acker,
            timings: wiring.timings,
            dead_letters: wiring.dead_letters,
            role: wiring.isolation,
            stats: Arc::default(),
            notices: crate::log::Throttle::new(NOTICE_EVERY),
            connector,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            batcher: Batcher::new(limits),
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            tasks: JoinSet::new(),
            shared: shared.clone(),
        };
        if settings.health_check.enabled {
            tokio::spawn(check_health(shared.clone()));
        } else {
            shared.stats.set_health(Health::Unchecked);
        }
        ConnectorHandle {
            id: shared.id.clone(),
            index,
            stats: shared.stats.clone(),
            tx,
            task: tokio::spawn(worker.run(rx)),
        }
    }
}

struct Shared<C> {
    /// The latest completed delivery's records, serialized once: `{…},{…},…`.
    observability: std::sync::Mutex<Option<Arc<[u8]>>>,
    /// The most bytes those records can add to one event. Batches are sized with it, not
    /// with the records of the moment: the records an event gets are only known when its
    /// request is encoded, maybe after an outage changed them.
    records_bound: usize,
    id: Arc<str>,
    index: ConnectorIndex,
    settings: EngineSettings,
    acker: Arc<Acker>,
    timings: Arc<TimingRecorder>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    role: Option<Role>,
    stats: Arc<ConnectorStats>,
    /// Rate-limits the log lines about events changed or refused, per kind.
    notices: crate::log::Throttle,
    connector: C,
}

/// The reason class of a parked event (the text before the first colon).
pub const PARKED: &str = "parked";

/// A kind of notice about events is logged at most this often per connector.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

struct Worker<C> {
    batcher: Batcher,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Worker<C> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let deadline = self.batcher.deadline();
            tokio::select! {
                next = rx.recv() => match next {
                    Some(event) => self.accept(event).await,
                    None => break,
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush().await;
                }
            }
            // Under a steady trickle `recv` is always ready; linger must still be honoured.
            if self.batcher.deadline().is_some_and(|d| d <= Instant::now()) {
                self.flush().await;
            }
            while self.tasks.try_join_next().is_some() {}
        }
        self.flush().await;
        while self.tasks.join_next().await.is_some() {}
    }

    async fn accept(&mut self, event: Event) {
        let size = self.shared.connector.encoded_len(&event) + self.shared.records_bound;
        match self.batcher.push(event, size) {
            Push::Added => {}
            Push::Full(batch) | Push::Rolled(batch) => self.dispatch(batch).await,
            Push::TooLarge(event) => {
                let reason = format!(
                    "event encodes to {size} bytes, over this connector's max batch bytes {}",
                    self.batcher.limits().max_bytes
                );
                self.shared.finish_rejected(vec![(event, reason)], 0, 0);
            }
        }
    }

    async fn flush(&mut self) {
        if let Some(batch) = self.batcher.take() {
            self.dispatch(batch).await;
        }
    }

    /// Waits for a free request slot (this is where a slow destination pushes back on the
    /// worker), then delivers `batch` in the background. While the destination is detached or
    /// draining, the batch is parked instead, unless it is due as a probe.
    async fn dispatch(&mut self, batch: Batch) {
        let probe = match self.shared.parking() {
            Some((isolation, _)) if isolation.is_parking() => {
                if !isolation.take_probe() {
                    let reason = format!("{}: destination {}", PARKED, isolation.state());
                    // Never sent: the time it was first queued stands for the first attempt.
                    let never_sent = Answer {
                        status: 0,
                        attempts: 0,
                        first_attempt_ms: batch.opened_wall_ms,
                    };
                    self.shared.park(batch.events, &reason, never_sent);
                    return;
                }
                true
            }
            _ => false,
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            shared.deliver(batch, probe).await;
            drop(permit);
        });
    }
}

/// The same health-check failure is logged at WARN at most this often.
const HEALTH_WARN_EVERY: Duration = Duration::from_secs(300);

/// Runs the connector's health check every `health_check.interval` until it passes, or until
/// a delivery succeeds (which shows more than any probe), for the readiness probe. A check
/// gets the request timeout to answer, so a destination that never answers reads as failing,
/// not pending. The destination's answer is clipped and the same failure is warned about once
/// per [`HEALTH_WARN_EVERY`], not every retry.
async fn check_health<C: Connector>(shared: Arc<Shared<C>>) {
    let warnings = crate::log::Throttle::new(HEALTH_WARN_EVERY);
    let interval = shared.settings.health_check.interval;
    let limit = shared.settings.request_timeout;
    loop {
        if shared.stats.health() == Health::Healthy {
            return;
        }
        let answer = timeout(limit, shared.connector.health())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        match answer {
            Ok(()) => {
                shared.stats.set_health(Health::Healthy);
                return;
            }
            Err(e) => {
                let error = crate::log::clip(&e);
                if !shared.stats.mark_failing(error.clone()) {
                    return;
                }
                match warnings.allow(&error) {
                    Some(held_back) => {
                        tracing::warn!(connector = %shared.id, %error, held_back, retry_every = ?interval, "health check failed; retrying (a successful delivery also counts as healthy)")
                    }
                    None => tracing::debug!(connector = %shared.id, %error, "health check failed"),
                }
            }
        }
        sleep(interval).await;
    }
}

/// How one group of events ended.
enum GroupEnd {
    Done,
    /// The destination found the request too large: deliver these in two halves.
    Split(Vec<Event>),
}

impl<C: Connector> Shared<C> {
    /// `probe`: sent to a detached destination to see whether it answers again.
    async fn deliver(&self, batch: Batch, probe: bool) {
        // Subscribed before the first check, so that no revocation after it goes unseen.
        let mut revoked = self.acker.revocations();
        let mut groups = vec![batch.events];
        while let Some(events) = groups.pop() {
            let events = self.cancel_revoked(events);
            if events.is_empty() {
                continue;
            }
            if let GroupEnd::Split(mut left) = self
                .deliver_group(
                    events,
                    batch.opened_at,
                    batch.opened_wall_ms,
                    probe,
                    &mut revoked,
                )
                .await
            {
                let right = left.split_off(left.len() / 2);
                groups.push(right);
                groups.push(left);
            }
        }
    }

    /// Sends `events` until each is delivered or rejected, retrying by the policy, or until
    /// their partitions are revoked.
    async fn deliver_group(
        &self,
        events: Vec<Event>,
        opened_at: Instant,
        opened_ms: u64,
        probe: bool,
        revoked: &mut watch::Receiver<u64>,
    ) -> GroupEnd {
        let count = events.len();
        let mut pending = events;
        let mut schedule = self.settings.retry.schedule();
        // Every `time` is the batch's wall-clock open time plus a monotonic offset, so the
        // records add up exactly (send.time = queue.time + queue) whatever the clock does.
        let clock = Clock {
            opened_at,
            opened_ms,
        };
        let send_start = Instant::now();
        let send_start_ms = clock.wall(send_start);
        let mut calls = Vec::new();
        let mut status = 0;
        let mut end = GroupEnd::Done;
        loop {
            let attempt = calls.len() as u32 + 1;
            let observability = self.observability();
            let shipment = Shipment::new(&pending, observability.as_deref());
            let request = match self.connector.encode(shipment) {
                Ok(encoded) => {
                    if attempt == 1 {
                        self.report_fixes(&pending, &encoded.fixes);
                    }
                    pending = self.drop_rejected(pending, encoded.rejected, calls.len() as u32);
                    if pending.is_empty() {
                        break;
                    }
                    encoded.request
                }
                Err(EncodeError::TooLarge { .. }) if pending.len() > 1 => {
                    end = GroupEnd::Split(pending);
                    break;
                }
                Err(e) => {
                    self.finish_rejected(
                        with_reason(pending, &e.to_string()),
                        status,
                        calls.len() as u32,
                    );
                    break;
                }
            };
            let verdict = self
                .call(&request, &pending, attempt, clock, &mut calls)
                .await;
            status = verdict.status_code;
            let reason = match verdict.outcome {
                Outcome::Delivered => {
                    self.finish_delivered(std::mem::take(&mut pending));
                    break;
                }
                Outcome::Reject { reason } => {
                    self.finish_rejected(with_reason(pending, &reason), status, calls.len() as u32);
                    break;
                }
                Outcome::Split if pending.len() > 1 => {
                    end = GroupEnd::Split(pending);
                    break;
                }
                Outcome::Split => {
                    let reason = format!(
                        "destination refused a request of this one event as too large (status {status})"
                    );
                    self.finish_rejected(with_reason(pending, &reason), status, calls.len() as u32);
                    break;
                }
                Outcome::Retry { reason } => reason,
                Outcome::Partial(verdicts) => {
                    pending = self.settle_partial(pending, verdicts, status, attempt);
                    if pending.is_empty() {
                        break;
                    }
                    format!(
                        "{} events of the request to retry (status {status})",
                        pending.len()
                    )
                }
            };
            if self.detaches(probe, send_start.elapsed(), &reason) {
                let reason = format!("{PARKED}: {reason}");
                let last = Answer {
                    status,
                    attempts: calls.len() as u32,
                    first_attempt_ms: send_start_ms,
                };
                self.park(std::mem::take(&mut pending), &reason, last);
                break;
            }
            self.stats.retried.fetch_add(pending.len() as u64, Relaxed);
            match schedule.next_delay(attempt, send_start.elapsed(), verdict.retry_after) {
                Ok(delay) => {
                    if let Some(asked) = verdict.retry_after.filter(|asked| *asked > delay) {
                        tracing::debug!(connector = %self.id, ?asked, ?delay, "Retry-After is longer than retry.max_backoff_ms; retrying sooner");
                    }
                    let policy = self.settings.retry;
                    if policy.on_exhausted == crate::retry::OnExhausted::Block
                        && attempt.is_multiple_of(policy.max_attempts.max(1))
                    {
                        tracing::warn!(connector = %self.id, attempt, reason = %crate::log::clip(&reason), "still failing; holding these events and their partitions until the destination recovers (on_exhausted = block)");
                    }
                    tracing::debug!(connector = %self.id, attempt, status, ?delay, %reason, "retrying");
                    pending = self.back_off(delay, pending, revoked).await;
                    if pending.is_empty() {
                        break;
                    }
                }
                Err(exhausted) => {
                    self.stats.retried.fetch_sub(pending.len() as u64, Relaxed);
                    let reason =
                        format!("retries exhausted ({exhausted:?}); last failure: {reason}");
                    self.finish_rejected(with_reason(pending, &reason), status, calls.len() as u32);
                    break;
                }
            }
        }
        let done = Instant::now();
        // Whole milliseconds, with process defined as queue + send (as in the sample) so the
        // records add up exactly rather than off by a rounding.
        let (queue_ms, send_ms) = (ms(send_start - opened_at), ms(done - send_start));
        let timings = DeliveryTimings {
            target: self.id.clone(),
            events: count,
            enqueued_ms: opened_ms,
            queue_ms,
            send_start_ms,
            send_ms,
            process_ms: queue_ms + send_ms,
            attempt_count: calls.len() as u32,
            status_code: status,
            calls,
        };
        if self.settings.append_observability && timings.attempt_count > 0 {
            self.set_observability(&timings);
        }
        self.timings.record_metrics(
            &self.id,
            timings.queue_ms,
            timings.send_ms,
            timings.process_ms,
            status,
            &timings.calls,
        );
        self.timings.record(timings);
        end
    }

    /// Waits `delay` before the next attempt. Events whose partition is revoked meanwhile
    /// are dropped at once, so that an outage does not hold them (and their memory) after
    /// the source stopped counting them; returns the rest.
    async fn back_off(
        &self,
        delay: Duration,
        mut pending: Vec<Event>,
        revoked: &mut watch::Receiver<u64>,
    ) -> Vec<Event> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return self.cancel_revoked(pending),
                Ok(()) = revoked.changed() => {
                    pending = self.cancel_revoked(pending);
                    if pending.is_empty() {
                        return pending;
                    }
                }
            }
        }
    }

    /// Drops the events of partitions this member no longer owns: not delivered, not
    /// acknowledged, not dead-lettered or parked. The partition's next owner reads them again
    /// from its last committed offset.
    fn cancel_revoked(&self, events: Vec<Event>) -> Vec<Event> {
        self.cancel_revoked_by(events, |e| e)
    }

    /// [`Shared::cancel_revoked`] for items that hold an event.
    fn cancel_revoked_by<T>(&self, items: Vec<T>, event: impl Fn(&T) -> &Event) -> Vec<T> {
        let (kept, cancelled) = self.acker.retain_owned(items, event);
        if cancelled > 0 {
            self.stats.cancelled.fetch_add(cancelled as u64, Relaxed);
            tracing::debug!(connector = %self.id, cancelled, "events of revoked partitions dropped");
        }
        kept
    }

    /// The isolation state and the parking sink, for the main flow only.
    fn parking(&self) -> Option<(&Arc<Isolation>, &Arc<dyn DeadLetters>)> {
        match &self.role {
            Some(Role::Main { isolation, parking }) => Some((isolation, parking)),
            _ => None,
        }
    }

    /// After a failed attempt: tells the isolation state, and says whether the events must now
    /// be parked rather than retried (the destination is, or just became, detached).
    fn detaches(&self, probe: bool, failing_for: Duration, reason: &str) -> bool {
        match &self.role {
            None => false,
            Some(Role::Drain(isolation)) => {
                isolation.probe_failed();
                false
            }
            Some(Role::Main { isolation, .. }) => {
                if probe {
                    isolation.probe_failed();
                }
                isolation.failing(failing_for, reason)
            }
        }
    }

    /// Writes `events` to the parking topic; each finishes for this connector once its write
    /// is acknowledged, as a dead letter does, so the commit point moves on.
    fn park(&self, events: Vec<Event>, reason: &str, last: Answer) {
        let Some((isolation, parking)) = self.parking() else {
            return;
        };
        let events = self.cancel_revoked(events);
        if events.is_empty() {
            return;
        }
        isolation.note_parked(events.len() as u64, last.first_attempt_ms);
        let events = events.into_iter().map(|e| (e, reason.to_owned()));
        self.write_letters(parking, events, last, |s| &s.parked);
    }

    fn observability(&self) -> Option<Arc<[u8]>> {
        if !self.settings.append_observability {
            return None;
        }
        self.observability.lock().ok().and_then(|o| o.clone())
    }

    fn set_observability(&self, t: &DeliveryTimings) {
        // Serializing plain structs into a Vec cannot fail.
        let list = serde_json::to_vec(&t.records()).unwrap_or_default();
        if list.len() >= 2
            && let Ok(mut slot) = self.observability.lock()
        {
            // Without the brackets: the records join the event's own list.
            *slot = Some(Arc::from(&list[1..list.len() - 1]));
        }
    }

    /// One attempt: send with the request timeout, classify, time it.
    async fn call(
        &self,
        request: &C::Request,
        events: &[Event],
        attempt: u32,
        clock: Clock,
        calls: &mut Vec<CallTiming>,
    ) -> Verdict {
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.in_flight_requests.fetch_add(1, Relaxed);
        let size = self.connector.request_size(request) as u64;
        let start = Instant::now();
        let start_ms = clock.wall(start);
        let answer = timeout(self.settings.request_timeout, self.connector.send(request)).await;
        self.stats.in_flight_requests.fetch_sub(1, Relaxed);
        let verdict = match answer {
            Ok(Ok(response)) => {
                self.stats.bytes_sent.fetch_add(size, Relaxed);
                self.connector.classify(&response, events)
            }
            Ok(Err(e)) if e.is_retryable() => Verdict::new(
                0,
                Outcome::Retry {
                    reason: e.to_string(),
                },
            ),
            Ok(Err(e)) => Verdict::new(
                0,
                Outcome::Reject {
                    reason: e.to_string(),
                },
            ),
            Err(_) => Verdict::new(
                0,
                Outcome::Retry {
                    reason: format!("no answer within {:?}", self.settings.request_timeout),
                },
            ),
        };
        if verdict.outcome != Outcome::Delivered {
            self.stats.failed_requests.fetch_add(1, Relaxed);
        }
        if let Some(dropped) = &verdict.dropped {
            self.report_dropped(dropped);
        }
        calls.push(CallTiming {
            start_ms,
            duration_ms: ms(start.elapsed()),
            attempt,
            status_code: verdict.status_code,
        });
        verdict
    }

    /// Counts events the destination dropped after accepting them, and logs its reason at
    /// most once a minute: nothing else can be done, since it did not say which.
    fn report_dropped(&self, dropped: &crate::connector::Dropped) {
        self.stats
            .dropped_by_destination
            .fetch_add(dropped.count, Relaxed);
        if let Some(held_back) = self.notices.allow("dropped_by_destination") {
            tracing::warn!(
                connector = %self.id,
                dropped = dropped.count,
                reason = %crate::log::clip(&dropped.reason),
                held_back,
                "destination accepted the request but dropped some of its events"
            );
        }
    }

    /// Counts the adjustments an encoder made, and logs each kind at most once a minute with
    /// the event's id, so a changed event can be found.
    fn report_fixes(&self, events: &[Event], fixes: &[Fix]) {
        self.stats.count_fixes(fixes);
        for fix in fixes {
            let Some(held_back) = self.notices.allow(fix.kind) else {
                continue;
            };
            let event_id = events.get(fix.event).and_then(Event::event_id);
            tracing::warn!(
                connector = %self.id,
                fix = fix.kind,
                event_id = event_id.unwrap_or("(none)"),
                detail = fix.detail.as_deref().unwrap_or(""),
                held_back,
                "event changed to fit the destination"
            );
        }
    }

    /// Rejects the events an encoder left out; returns the rest, in order.
    fn drop_rejected(
        &self,
        events: Vec<Event>,
        mut rejected: Vec<(usize, String)>,
        attempts: u32,
    ) -> Vec<Event> {
        if rejected.is_empty() {
            return events;
        }
        rejected.sort_by_key(|(i, _)| *i);
        let mut reasons = rejected.into_iter().peekable();
        let mut kept = Vec::with_capacity(events.len());
        let mut out = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            match reasons.next_if(|(j, _)| *j == i) {
                Some((_, reason)) => out.push((event, reason)),
                None => kept.push(event),
            }
        }
        self.finish_rejected(out, 0, attempts);
        kept
    }

    /// Acknowledges what a partial answer settled; returns the events to send again.
    fn settle_partial(
        &self,
        events: Vec<Event>,
        verdicts: Vec<EventVerdict>,
        status: u16,
        attempts: u32,
    ) -> Vec<Event> {
        if verdicts.len() != events.len() {
            tracing::error!(
                connector = %self.id,
                events = events.len(),
                verdicts = verdicts.len(),
                "connector classified a different number of events than were sent; retrying them all"
            );
            return events;
        }
        let mut delivered = Vec::new();
        let mut rejected = Vec::new();
        let mut retry = Vec::new();
        for (event, verdict) in events.into_iter().zip(verdicts) {
            match verdict {
                EventVerdict::Delivered => delivered.push(event),
                EventVerdict::Retry => retry.push(event),
                EventVerdict::Reject { reason } => rejected.push((event, reason)),
            }
        }
        self.finish_delivered(delivered);
        self.finish_rejected(rejected, status, attempts);
        retry
    }

    fn finish_delivered(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.stats.mark_healthy();
        if let Some(role) = &self.role {
            role.isolation().answered();
        }
        self.stats.delivered.fetch_add(events.len() as u64, Relaxed);
        self.acker.complete(self.index, &events);
    }

    /// A permanent refusal: logged with where the event came from, counted, and acknowledged
    /// so its offset can move on.
    /// `status` and `attempts` describe the last answer, for the dead-letter headers.
    fn finish_rejected(&self, rejected: Vec<(Event, String)>, status: u16, attempts: u32) {
        if rejected.is_empty() {
            return;
        }
        // Nor dead-lettered: the partition's next owner delivers (or refuses) them again.
        let rejected = self.cancel_revoked_by(rejected, |(e, _)| e);
        if rejected.is_empty() {
            return;
        }
        const LOGGED: usize = 20;
        for (event, reason) in rejected.iter().take(LOGGED) {
            let o = event.origin();
            tracing::warn!(
                connector = %self.id,
                topic = %o.topic,
                partition = o.kafka_partition,
                offset = o.offset,
                event_id = event.event_id().unwrap_or("(none)"),
                reason = %crate::log::clip(reason),
                "event rejected"
            );
        }
        if rejected.len() > LOGGED {
            tracing::warn!(connector = %self.id, more = rejected.len() - LOGGED, "more events of the same request rejected");
        }
        self.stats
            .rejected
            .fetch_add(rejected.len() as u64, Relaxed);
        for (_, reason) in &rejected {
            self.stats.count_rejection(reason, 1);
        }
        let Some(dlq) = &self.dead_letters else {
            let events: Vec<Event> = rejected.into_iter().map(|(e, _)| e).collect();
            self.acker.complete(self.index, &events);
            return;
        };
        let last = Answer {
            status,
            attempts,
            first_attempt_ms: 0,
        };
        self.write_letters(dlq, rejected, last, |s| &s.dead_lettered);
    }

    /// Writes each event to a letter topic (dead letters, parking) with its reason. Its offset
    /// finishes for this connector, and `written` of the stats counts it, only once the
    /// letter is durably stored.
    fn write_letters(
        &self,
        sink: &Arc<dyn DeadLetters>,
        events: impl IntoIterator<Item = (Event, String)>,
        last: Answer,
        written: fn(&ConnectorStats) -> &std::sync::atomic::AtomicU64,
    ) {
        for (event, reason) in events {
            let letter = Letter {
                raw: event.raw().clone(),
                envelope: event.envelope().cloned(),
                origin: event.origin().clone(),
                connector: self.id.clone(),
                reason,
                status_code: last.status,
                attempts: last.attempts,
                first_attempt_ms: last.first_attempt_ms,
            };
            let (acker, stats, index) = (self.acker.clone(), self.stats.clone(), self.index);
            sink.write(
                letter,
                Box::new(move || {
                    written(&stats).fetch_add(1, Relaxed);
                    acker.complete(index, &[event]);
                }),
            );
        }
    }
}

/// What the destination last said of events written to a letter topic.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    attempts: u32,
    /// Epoch ms; 0 when they were never sent.
    first_attempt_ms: u64,
}

/// Maps monotonic instants of one batch to wall-clock milliseconds.
#[derive(Clone, Copy)]
struct Clock {
    opened_at: Instant,
    opened_ms: u64,
}

impl Clock {
    fn wall(self, at: Instant) -> u64 {
        self.opened_ms + ms(at.saturating_duration_since(self.opened_at))
    }
}

fn with_reason(events: Vec<Event>, reason: &str) -> Vec<(Event, String)> {
    events.into_iter().map(|e| (e, reason.to_owned())).collect()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
