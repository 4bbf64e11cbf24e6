//! Acting on an answer: acknowledge what was delivered, reject (and dead-letter) what was
//! refused, split what was too large, park what a detached destination cannot take, and hand
//! back what must be sent again. Every event ends here exactly once, unless its partition was
//! revoked, in which case it is dropped uncounted for its next owner to deliver.

use super::Courier;
use crate::connector::{Connector, EventVerdict, Fix, Outcome};
use crate::dead_letter::{DeadLetters, Letter};
use crate::event::Event;
use crate::stats::ConnectorStats;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// What is left of a request once its answer is acted on.
#[derive(Debug)]
pub(super) enum Settled {
    /// Every event is finished.
    Done,
    /// The request was too large: deliver these events in smaller requests.
    Split(Vec<Event>),
    /// These events must be sent again; `reason` is why they failed.
    Retry { events: Vec<Event>, reason: String },
}

impl<C: Connector> Courier<C> {
    /// Acts on what the destination said of `events`: finishes those it settled and returns
    /// the rest. `status` and `attempts` describe the answer, for dead letters.
    pub(super) fn settle(
        &self,
        events: Vec<Event>,
        outcome: Outcome,
        status: u16,
        attempts: u32,
    ) -> Settled {
        match outcome {
            Outcome::Delivered => {
                self.finish_delivered(events);
                Settled::Done
            }
            // A delivery hands accepted events to `await_confirmation` before settling; one
            // that gets here has no place to wait in, which that step reports.
            Outcome::Accepted(receipt) => {
                self.await_confirmation(receipt, events, None);
                Settled::Done
            }
            Outcome::Reject { reason } => {
                self.finish_rejected(with_reason(events, &reason), status, attempts);
                Settled::Done
            }
            Outcome::Split if events.len() > 1 => Settled::Split(events),
            Outcome::Split => {
                let reason = format!(
                    "destination refused a request of this one event as too large (status {status})"
                );
                self.finish_rejected(with_reason(events, &reason), status, attempts);
                Settled::Done
            }
            Outcome::Retry { reason } => Settled::Retry { events, reason },
            Outcome::Partial(verdicts) => {
                let events = self.settle_partial(events, verdicts, status, attempts);
                if events.is_empty() {
                    return Settled::Done;
                }
                let reason = format!(
                    "{} events of the request to retry (status {status})",
                    events.len()
                );
                Settled::Retry { events, reason }
            }
        }
    }

    /// Drops the events of partitions this member no longer owns: not delivered, not
    /// acknowledged, not dead-lettered or parked. The partition's next owner reads them again
    /// from its last committed offset.
    pub(super) fn cancel_revoked(&self, events: Vec<Event>) -> Vec<Event> {
        self.cancel_revoked_by(events, |e| e)
    }

    /// [`Courier::cancel_revoked`] for items that hold an event.
    fn cancel_revoked_by<T>(&self, items: Vec<T>, event: impl Fn(&T) -> &Event) -> Vec<T> {
        let (kept, cancelled) = self.acker.retain_owned(items, event);
        if cancelled > 0 {
            self.stats.cancelled.fetch_add(cancelled as u64, Relaxed);
            tracing::debug!(connector = %self.id, cancelled, "events of revoked partitions dropped");
        }
        kept
    }

    /// Writes `events` to the parking topic; each finishes for this connector once its write
    /// is acknowledged, as a dead letter does, so the commit point moves on.
    pub(super) fn park(&self, events: Vec<Event>, reason: &str, last: LastAnswer) {
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

    /// Counts events the destination dropped after accepting them, and logs its reason at
    /// most once a minute: nothing else can be done, since it did not say which.
    pub(super) fn report_dropped(&self, dropped: &crate::connector::Dropped) {
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
    pub(super) fn report_fixes(&self, events: &[Event], fixes: &[Fix]) {
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
    pub(super) fn drop_rejected(
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

    pub(super) fn finish_delivered(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.answered();
        self.stats.delivered.fetch_add(events.len() as u64, Relaxed);
        self.acker.complete(self.index, &events);
    }

    /// The destination took a request: it is healthy, and answers again if it was detached.
    pub(super) fn answered(&self) {
        if self.owns_health {
            self.stats.mark_healthy();
        }
        if let Some(role) = &self.role {
            role.isolation().answered();
        }
    }

    /// A permanent refusal: logged with where the event came from, counted, and acknowledged
    /// so its offset can move on.
    /// `status` and `attempts` describe the last answer, for the dead-letter headers.
    pub(super) fn finish_rejected(
        &self,
        rejected: Vec<(Event, String)>,
        status: u16,
        attempts: u32,
    ) {
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
        let last = LastAnswer {
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
        last: LastAnswer,
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
pub(super) struct LastAnswer {
    pub(super) status: u16,
    pub(super) attempts: u32,
    /// Epoch ms; 0 when they were never sent.
    pub(super) first_attempt_ms: u64,
}

pub(super) fn with_reason(events: Vec<Event>, reason: &str) -> Vec<(Event, String)> {
    events.into_iter().map(|e| (e, reason.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{P, Rig, Scripted};
    use super::super::{PARKED, Role};
    use super::*;
    use crate::isolation::{Isolation, IsolationSettings};
    use crate::stats::Health;

    fn rig() -> Rig {
        Rig::new(Scripted::answering(vec![]), None)
    }

    fn offsets(events: &[Event]) -> Vec<i64> {
        events.iter().map(|e| e.origin().offset).collect()
    }

    #[test]
    fn delivered_events_are_acknowledged_and_show_the_destination_healthy() {
        let r = rig();
        let settled = r.courier.settle(r.events(3), Outcome::Delivered, 200, 1);
        assert!(matches!(settled, Settled::Done));
        assert_eq!(r.unfinished(), 0);
        assert_eq!(r.courier.stats.snapshot().delivered, 3);
        assert_eq!(r.courier.stats.health(), Health::Healthy);
        assert!(r.letters.reasons().is_empty());
    }

    #[test]
    fn refused_events_are_dead_lettered_with_the_last_answer() {
        let r = rig();
        let refused = Outcome::Reject {
            reason: "invalid: token".into(),
        };
        assert!(matches!(
            r.courier.settle(r.events(2), refused, 403, 2),
            Settled::Done
        ));
        assert_eq!(r.unfinished(), 0, "acknowledged once written");
        let letters = r.letters.0.lock().unwrap();
        assert_eq!(letters.len(), 2);
        assert_eq!(
            (
                letters[1].status_code,
                letters[1].attempts,
                &*letters[1].reason
            ),
            (403, 2, "invalid: token")
        );
        drop(letters);
        let s = r.courier.stats.snapshot();
        assert_eq!((s.rejected, s.dead_lettered), (2, 2));
        assert_eq!(r.courier.stats.rejections().get("invalid"), Some(&2));
    }

    #[test]
    fn too_large_splits_a_group_and_rejects_a_single_event() {
        let r = rig();
        match r.courier.settle(r.events(4), Outcome::Split, 413, 1) {
            Settled::Split(events) => assert_eq!(offsets(&events), [0, 1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.unfinished(), 4, "nothing settled yet");
        assert!(matches!(
            r.courier.settle(r.events(1), Outcome::Split, 413, 1),
            Settled::Done
        ));
        assert_eq!(
            r.letters.reasons(),
            [(
                4,
                "destination refused a request of this one event as too large (status 413)".into()
            )]
        );
    }

    #[test]
    fn a_retryable_answer_hands_every_event_back_with_its_reason() {
        let r = rig();
        let retry = Outcome::Retry {
            reason: "503 down".into(),
        };
        match r.courier.settle(r.events(2), retry, 503, 1) {
            Settled::Retry { events, reason } => {
                assert_eq!((offsets(&events), &*reason), (vec![0, 1], "503 down"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.unfinished(), 2);
    }

    #[test]
    fn a_partial_answer_settles_each_event_and_hands_back_the_retries() {
        let r = rig();
        let partial = Outcome::Partial(vec![
            EventVerdict::Delivered,
            EventVerdict::Retry,
            EventVerdict::Reject {
                reason: "invalid: field".into(),
            },
            EventVerdict::Retry,
        ]);
        match r.courier.settle(r.events(4), partial, 207, 1) {
            Settled::Retry { events, reason } => {
                assert_eq!(offsets(&events), [1, 3]);
                assert_eq!(reason, "2 events of the request to retry (status 207)");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.courier.stats.snapshot().delivered, 1);
        assert_eq!(r.letters.reasons(), [(2, "invalid: field".into())]);
        assert_eq!(r.unfinished(), 2);

        let all = Outcome::Partial(vec![EventVerdict::Delivered; 2]);
        assert!(matches!(
            r.courier.settle(r.events(2), all, 207, 1),
            Settled::Done
        ));
    }

    #[test]
    fn a_partial_answer_of_the_wrong_length_retries_every_event() {
        let r = rig();
        let short = Outcome::Partial(vec![EventVerdict::Delivered]);
        match r.courier.settle(r.events(3), short, 207, 1) {
            Settled::Retry { events, .. } => assert_eq!(offsets(&events), [0, 1, 2]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.courier.stats.snapshot().delivered, 0);
    }

    #[test]
    fn events_of_a_revoked_partition_are_neither_counted_nor_dead_lettered() {
        let r = rig();
        let events = r.events(2);
        r.acker.lock().revoke(P);
        let refused = Outcome::Reject {
            reason: "invalid: x".into(),
        };
        r.courier.settle(events, refused, 400, 1);
        assert!(r.letters.reasons().is_empty());
        let s = r.courier.stats.snapshot();
        assert_eq!((s.rejected, s.cancelled), (0, 2));
    }

    #[test]
    fn parked_events_go_to_the_parking_topic_and_count_for_the_isolation() {
        let isolation = Arc::new(Isolation::new("stub", IsolationSettings::default()));
        let parking = Arc::new(super::super::testing::Letters::default());
        let role = Role::Main {
            isolation: isolation.clone(),
            parking: parking.clone(),
        };
        let r = Rig::new(Scripted::answering(vec![]), Some(role));
        let last = LastAnswer {
            status: 503,
            attempts: 4,
            first_attempt_ms: 1_000,
        };
        r.courier
            .park(r.events(2), &format!("{PARKED}: 503 down"), last);
        assert_eq!(
            parking.reasons(),
            [
                (0, "parked: 503 down".into()),
                (1, "parked: 503 down".into())
            ]
        );
        assert!(r.letters.reasons().is_empty(), "not dead letters");
        assert_eq!(r.courier.stats.snapshot().parked, 2);
        assert_eq!(isolation.parked(), 2);
        assert_eq!(r.unfinished(), 0);
    }
}
