//! Confirmation: for destinations that accept a request first and confirm later that they
//! stored its events (Splunk HEC's indexer acknowledgement), an accepted request's events wait
//! here under its [`Receipt`] instead of counting as delivered. A poller asks the destination
//! which receipts it confirms, in rounds, and settles those events as delivered through the
//! same step as a final answer. A receipt not confirmed within its timeout is given up on and
//! its events are sent again (counted: the destination may then store them twice).
//!
//! The table is bounded: a delivery reserves a place before it sends, so at the bound the
//! connector's deliveries wait, its request slots fill and its queue backs up into the
//! source's partition pauses. Nothing is dropped. Events whose partition was revoked are
//! dropped uncounted, as other in-flight work is. Events never confirmed are never finished:
//! their offsets stay uncommitted and are read again after a restart (at-least-once).

use super::Courier;
use crate::batch::Batch;
use crate::connector::{ConfirmSettings, Connector, Receipt};
use crate::event::Event;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

/// Receipts asked about in one request: HEC answers a list of any length, but one bounded
/// request keeps a slow round from timing out as a whole.
const PER_REQUEST: usize = 1000;

/// While the worker shuts down, confirmations are asked for at least this often, so that
/// the shutdown budget is spent on them rather than on waiting for the next round.
const CLOSING_INTERVAL: Duration = Duration::from_secs(1);

/// The events awaiting confirmation, by receipt.
pub(super) struct Unconfirmed {
    pub(super) settings: ConfirmSettings,
    /// One per place in the table: `max_pending` in all.
    places: Arc<Semaphore>,
    table: Mutex<HashMap<Receipt, Awaiting>>,
}

/// A place in the table, reserved before sending.
pub(super) type Place = OwnedSemaphorePermit;

struct Awaiting {
    events: Vec<Event>,
    since: Instant,
    /// Freed, with the entry, once the receipt is confirmed, given up on or revoked.
    _place: Place,
}

impl Unconfirmed {
    pub(super) fn new(settings: ConfirmSettings) -> Self {
        Unconfirmed {
            settings,
            places: Arc::new(Semaphore::new(settings.max_pending.max(1))),
            table: Mutex::default(),
        }
    }

    /// Waits for a free place: the bound's backpressure.
    pub(super) async fn reserve(&self) -> Option<Place> {
        // The semaphore is never closed.
        self.places.clone().acquire_owned().await.ok()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Receipt, Awaiting>> {
        // A panic while the table was held leaves whole entries: it is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn receipts(&self) -> Vec<Receipt> {
        let mut receipts: Vec<Receipt> = self.lock().keys().copied().collect();
        receipts.sort_unstable();
        receipts
    }

    /// Takes the entries of `receipts` out of the table, freeing their places: (entries
    /// taken, their events). A receipt not in the table is ignored.
    fn take(&self, receipts: &[Receipt]) -> (usize, Vec<Event>) {
        let mut table = self.lock();
        let taken: Vec<Awaiting> = receipts.iter().filter_map(|r| table.remove(r)).collect();
        (
            taken.len(),
            taken.into_iter().flat_map(|a| a.events).collect(),
        )
    }

    /// Takes out the entries older than the timeout: (receipts, their events).
    fn take_expired(&self, now: Instant) -> (usize, Vec<Event>) {
        let limit = self.settings.timeout;
        let table = self.lock();
        let expired: Vec<Receipt> = table
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.since) >= limit)
            .map(|(r, _)| *r)
            .collect();
        drop(table);
        self.take(&expired)
    }
}

impl<C: Connector> Courier<C> {
    /// The destination accepted `events` under `receipt`: they wait for its confirmation in
    /// the place reserved for them. Without a place (the connector asks for no confirmation
    /// yet gave a receipt), the answer is taken as final, and said so.
    pub(super) fn await_confirmation(
        &self,
        receipt: Receipt,
        events: Vec<Event>,
        place: Option<Place>,
    ) {
        let (Some(unconfirmed), Some(place)) = (&self.unconfirmed, place) else {
            tracing::error!(connector = %self.id, receipt, "connector gave a receipt but asks for no confirmation; counting its events as delivered");
            self.finish_delivered(events);
            return;
        };
        self.answered();
        let entry = Awaiting {
            events,
            since: Instant::now(),
            _place: place,
        };
        let mut table = unconfirmed.lock();
        match table.get_mut(&receipt) {
            // A destination's receipts are unique while unconfirmed; if one comes twice,
            // both requests' events wait on it rather than one set being lost.
            Some(earlier) => {
                tracing::error!(connector = %self.id, receipt, "destination gave the same receipt twice; its events wait on it together");
                earlier.events.extend(entry.events);
            }
            None => {
                table.insert(receipt, entry);
                self.stats.awaiting_confirmation.fetch_add(1, Relaxed);
            }
        }
    }

    /// One round: drop what was revoked, ask which receipts are confirmed and finish their
    /// events, give up on the receipts past their timeout and send their events again (in
    /// `resends`, each with a request slot from `permits`).
    pub(super) async fn confirm_round(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        resends: &mut JoinSet<()>,
    ) {
        let Some(unconfirmed) = &self.unconfirmed else {
            return;
        };
        self.drop_revoked_unconfirmed(unconfirmed);
        let receipts = unconfirmed.receipts();
        for chunk in receipts.chunks(PER_REQUEST) {
            let limit = self.settings.request_timeout;
            let confirmed = match timeout(limit, self.connector.confirm(chunk)).await {
                Ok(Ok(confirmed)) => confirmed,
                Ok(Err(e)) => {
                    self.confirm_failed(&e.to_string());
                    continue;
                }
                Err(_) => {
                    self.confirm_failed(&format!("no answer within {limit:?}"));
                    continue;
                }
            };
            let (taken, events) = unconfirmed.take(&confirmed);
            self.stats
                .awaiting_confirmation
                .fetch_sub(taken as u64, Relaxed);
            let events = self.cancel_revoked(events);
            self.finish_delivered(events);
        }
        let (expired, events) = unconfirmed.take_expired(Instant::now());
        if expired == 0 {
            return;
        }
        self.stats
            .awaiting_confirmation
            .fetch_sub(expired as u64, Relaxed);
        self.stats
            .confirm_timeouts
            .fetch_add(expired as u64, Relaxed);
        let events = self.cancel_revoked(events);
        if events.is_empty() {
            return;
        }
        tracing::warn!(
            connector = %self.id,
            receipts = expired,
            events = events.len(),
            timeout = ?unconfirmed.settings.timeout,
            "destination never confirmed these requests; sending their events again (it may store them twice)"
        );
        self.stats.retried.fetch_add(events.len() as u64, Relaxed);
        let (courier, permits) = (self.clone(), permits.clone());
        resends.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return; // the semaphore is never closed
            };
            courier.deliver(resend_batch(events), false).await;
        });
    }

    /// Drops the waiting events of partitions this member no longer owns; an entry left
    /// with none is removed and its place freed.
    fn drop_revoked_unconfirmed(&self, unconfirmed: &Unconfirmed) {
        let mut emptied = 0;
        {
            let mut table = unconfirmed.lock();
            table.retain(|_, a| {
                let events = std::mem::take(&mut a.events);
                a.events = self.cancel_revoked(events);
                if a.events.is_empty() {
                    emptied += 1;
                }
                !a.events.is_empty()
            });
        }
        self.stats.awaiting_confirmation.fetch_sub(emptied, Relaxed);
    }

    fn confirm_failed(&self, error: &str) {
        if let Some(held_back) = self.notices.allow("confirm_failed") {
            tracing::warn!(connector = %self.id, error = %crate::log::clip(error), held_back, "asking for confirmations failed; asking again next round");
        }
    }
}

/// The events of a receipt given up on, as a batch opened now (their timings start again).
fn resend_batch(events: Vec<Event>) -> Batch {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Batch {
        bytes: events.iter().map(|e| e.raw().len()).sum(),
        events,
        opened_at: Instant::now(),
        opened_wall_ms: wall_ms,
    }
}

/// The poller of one worker: a round every poll interval (more often once the worker is
/// closing), until `closing` is set and nothing awaits confirmation or a resend any more.
pub(super) async fn poll<C: Connector>(
    courier: Arc<Courier<C>>,
    permits: Arc<Semaphore>,
    mut closing: watch::Receiver<bool>,
) {
    let Some(unconfirmed) = &courier.unconfirmed else {
        return;
    };
    let interval = unconfirmed.settings.poll_interval;
    let mut resends = JoinSet::new();
    let mut shutting = false;
    loop {
        if shutting && unconfirmed.len() == 0 && resends.is_empty() {
            break;
        }
        let wait = if shutting {
            interval.min(CLOSING_INTERVAL)
        } else {
            interval
        };
        tokio::select! {
            _ = sleep(wait) => {}
            // Set once the intake has finished its deliveries. (A worker stopped at the
            // shutdown deadline aborts this task with it.)
            changed = closing.changed(), if !shutting => {
                if changed.is_err() {
                    return;
                }
                shutting = *closing.borrow();
                continue;
            }
        }
        courier.confirm_round(&permits, &mut resends).await;
        while resends.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{P, Rig, Scripted};
    use super::*;
    use crate::connector::{Outcome, Verdict};

    const TIMEOUT: Duration = Duration::from_secs(300);

    /// A rig whose destination answers the requests with `answers` (then 200 Delivered) and
    /// confirms accepted ones later.
    fn rig(answers: Vec<Outcome>, max_pending: usize) -> (Rig, Arc<Scripted>) {
        let script = Scripted::answering(
            answers
                .into_iter()
                .map(|o| Ok(Verdict::new(200, o)))
                .collect(),
        );
        *script.confirming.lock().unwrap() = Some(ConfirmSettings {
            poll_interval: Duration::from_secs(10),
            max_pending,
            timeout: TIMEOUT,
        });
        (Rig::new(script.clone(), None), script)
    }

    async fn round(r: &Rig) -> JoinSet<()> {
        let mut resends = JoinSet::new();
        r.courier
            .confirm_round(&Arc::new(Semaphore::new(1)), &mut resends)
            .await;
        resends
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_events_are_delivered_only_once_confirmed() {
        let (r, script) = rig(vec![Outcome::Accepted(7)], 10);
        r.courier.deliver(resend_batch(r.events(3)), false).await;
        let s = r.courier.stats.snapshot();
        assert_eq!((s.delivered, s.awaiting_confirmation), (0, 1));
        assert_eq!(s.failed_requests, 0, "an accepted request did not fail");
        assert_eq!(r.unfinished(), 3, "accepted is not delivered");

        round(&r).await;
        assert_eq!(*script.asked.lock().unwrap(), [vec![7]]);
        assert_eq!(r.unfinished(), 3, "not confirmed yet");

        script.confirms.lock().unwrap().push(7);
        round(&r).await;
        let s = r.courier.stats.snapshot();
        assert_eq!((s.delivered, s.awaiting_confirmation), (3, 0));
        assert_eq!(r.unfinished(), 0);
        assert_eq!(r.courier.unconfirmed.as_ref().unwrap().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_never_confirmed_is_given_up_on_and_its_events_sent_again() {
        let (r, script) = rig(vec![Outcome::Accepted(1), Outcome::Accepted(2)], 10);
        r.courier.deliver(resend_batch(r.events(2)), false).await;
        tokio::time::advance(TIMEOUT - Duration::from_secs(1)).await;
        let resends = round(&r).await;
        assert!(resends.is_empty(), "not timed out yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut resends = round(&r).await;
        while resends.join_next().await.is_some() {}
        let s = r.courier.stats.snapshot();
        assert_eq!((s.confirm_timeouts, s.retried), (1, 2));
        assert_eq!(*script.sent.lock().unwrap(), [vec![0, 1], vec![0, 1]]);
        assert_eq!(r.unfinished(), 2, "the resend awaits its own confirmation");
        assert_eq!(s.awaiting_confirmation, 1);

        script.confirms.lock().unwrap().push(2);
        round(&r).await;
        assert_eq!(r.unfinished(), 0);
        assert_eq!(r.courier.stats.snapshot().delivered, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_nothing_more_is_sent_until_a_receipt_is_confirmed() {
        let (r, script) = rig(vec![Outcome::Accepted(1), Outcome::Accepted(2)], 1);
        r.courier.deliver(resend_batch(r.events(1)), false).await;
        let second = r.courier.clone();
        let events = r.events(1);
        let mut waiting = tokio::spawn(async move {
            second.deliver(resend_batch(events), false).await;
        });
        // The paused clock only moves once every task is idle: the delivery is blocked.
        let blocked = tokio::time::timeout(Duration::from_secs(3600), &mut waiting).await;
        assert!(blocked.is_err(), "a second request went out at the bound");
        assert_eq!(script.sent.lock().unwrap().len(), 1);

        script.confirms.lock().unwrap().push(1);
        round(&r).await;
        waiting.await.unwrap();
        assert_eq!(*script.sent.lock().unwrap(), [vec![0], vec![1]]);
        assert_eq!(r.unfinished(), 1, "the second awaits confirmation");
    }

    #[tokio::test(start_paused = true)]
    async fn events_of_a_revoked_partition_stop_waiting_uncounted() {
        let (r, _script) = rig(vec![Outcome::Accepted(1)], 1);
        r.courier.deliver(resend_batch(r.events(2)), false).await;
        r.acker.lock().revoke(P);
        round(&r).await;
        let s = r.courier.stats.snapshot();
        assert_eq!(
            (s.delivered, s.cancelled, s.awaiting_confirmation),
            (0, 2, 0)
        );
        assert!(
            r.courier
                .unconfirmed
                .as_ref()
                .unwrap()
                .reserve()
                .await
                .is_some(),
            "its place is free again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_from_a_destination_that_confirms_nothing_counts_as_delivered() {
        let r = Rig::new(
            Scripted::answering(vec![Ok(Verdict::new(200, Outcome::Accepted(3)))]),
            None,
        );
        r.courier.deliver(resend_batch(r.events(1)), false).await;
        assert_eq!(r.unfinished(), 0);
        assert_eq!(r.courier.stats.snapshot().delivered, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_confirmation_and_a_stopped_worker_leaves_the_rest_unfinished() {
        use super::super::testing::{Stub, settings};
        use super::super::{Engine, Wiring};
        let (r, script) = rig(vec![Outcome::Accepted(1), Outcome::Accepted(2)], 10);
        let spawn = || {
            let wiring = Wiring {
                acker: r.acker.clone(),
                timings: crate::timings::TimingRecorder::new(10),
                dead_letters: None,
                isolation: None,
                stats: None,
            };
            Engine::spawn(
                Stub(script.clone()),
                "stub",
                crate::route::ConnectorIndex(0),
                settings(),
                wiring,
            )
        };
        let handle = spawn();
        let stats = handle.stats.clone();
        for e in r.events(2) {
            handle.send(e);
        }
        let mut closing = handle.close();
        let budget = tokio::time::timeout(Duration::from_secs(60), &mut closing).await;
        assert!(
            budget.is_err(),
            "the worker ends only once its events are confirmed"
        );
        assert_eq!((r.unfinished(), stats.snapshot().delivered), (2, 0));
        let polls = script.asked.lock().unwrap().len();
        assert!(polls >= 10, "closing asks at least every second: {polls}");
        script.confirms.lock().unwrap().push(1);
        closing.await.unwrap();
        assert_eq!((r.unfinished(), stats.snapshot().delivered), (0, 2));

        // The pipeline stops a worker whose budget ran out: what was never confirmed stays
        // unfinished (uncommitted, read again), and nobody asks about it any more.
        let handle = spawn();
        for e in r.events(1) {
            handle.send(e);
        }
        let closing = handle.close();
        let stop = closing.abort_handle();
        let mut closing = closing;
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut closing)
                .await
                .is_err()
        );
        stop.abort();
        let _ = closing.await;
        let asked = script.asked.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            script.asked.lock().unwrap().len(),
            asked,
            "the poller stopped too"
        );
        assert_eq!(r.unfinished(), 1);
        assert_eq!(stats.snapshot().delivered, 2);
    }
}
