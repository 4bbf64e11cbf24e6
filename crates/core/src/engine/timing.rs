//! What a delivery cost, as its attempts happen, and the `collector_observability` records the
//! connector's next requests carry.

use super::Courier;
use super::settle::LastAnswer;
use crate::connector::Connector;
use crate::timings::{CallTiming, DeliveryTimings};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Maps monotonic instants of one batch to wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    opened_at: Instant,
    opened_ms: u64,
}

impl Clock {
    /// `opened_ms`: the wall-clock time of `opened_at`, epoch ms.
    pub(super) fn new(opened_at: Instant, opened_ms: u64) -> Self {
        Clock {
            opened_at,
            opened_ms,
        }
    }

    fn wall(self, at: Instant) -> u64 {
        self.opened_ms + ms(at.saturating_duration_since(self.opened_at))
    }
}

/// The timings of one group's delivery, from its first attempt to its end.
pub(super) struct Stopwatch {
    clock: Clock,
    events: usize,
    send_start: Instant,
    send_start_ms: u64,
    calls: Vec<CallTiming>,
}

impl Stopwatch {
    /// The first attempt of `events` events starts now.
    pub(super) fn start(clock: Clock, events: usize) -> Self {
        let send_start = Instant::now();
        Stopwatch {
            clock,
            events,
            send_start,
            send_start_ms: clock.wall(send_start),
            calls: Vec::new(),
        }
    }

    /// Calls made so far.
    pub(super) fn attempts(&self) -> u32 {
        self.calls.len() as u32
    }

    /// The last call's status; 0 before the first, or when it got no answer.
    pub(super) fn status(&self) -> u16 {
        self.calls.last().map_or(0, |c| c.status_code)
    }

    /// How long the delivery has been failing: since its first attempt.
    pub(super) fn failing_for(&self) -> Duration {
        self.send_start.elapsed()
    }

    /// What the destination last said, for letters.
    pub(super) fn last_answer(&self) -> LastAnswer {
        LastAnswer {
            status: self.status(),
            attempts: self.attempts(),
            first_attempt_ms: self.send_start_ms,
        }
    }

    /// A call that started at `started` has ended with `status`.
    pub(super) fn call_ended(&mut self, started: Instant, status: u16) {
        self.calls.push(CallTiming {
            start_ms: self.clock.wall(started),
            duration_ms: ms(started.elapsed()),
            attempt: self.attempts() + 1,
            status_code: status,
        });
    }

    /// The delivery is over.
    pub(super) fn finish(self, target: &Arc<str>) -> DeliveryTimings {
        let done = Instant::now();
        // Whole milliseconds, with process defined as queue + send (as in the sample) so the
        // records add up exactly rather than off by a rounding.
        let queue_ms = ms(self.send_start - self.clock.opened_at);
        let send_ms = ms(done - self.send_start);
        DeliveryTimings {
            target: target.clone(),
            events: self.events,
            enqueued_ms: self.clock.opened_ms,
            queue_ms,
            send_start_ms: self.send_start_ms,
            send_ms,
            process_ms: queue_ms + send_ms,
            attempt_count: self.attempts(),
            status_code: self.status(),
            calls: self.calls,
        }
    }
}

/// The latest completed delivery's records, serialized once (`{…},{…},…`, no brackets), for
/// the connector's next requests to carry, when it appends them.
pub(super) struct LatestRecords {
    enabled: bool,
    latest: Mutex<Option<Arc<[u8]>>>,
    /// The most bytes the records can add to one event. Batches are sized with it, not with
    /// the records of the moment: the records an event gets are only known when its request
    /// is encoded, maybe after an outage changed them.
    bound: usize,
}

impl LatestRecords {
    pub(super) fn new(id: &str, enabled: bool) -> Self {
        let bound = if enabled {
            crate::timings::max_records_len(id) + crate::event::SPLICE_OVERHEAD
        } else {
            0
        };
        LatestRecords {
            enabled,
            latest: Mutex::new(None),
            bound,
        }
    }

    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// The records to splice into the next request; None when disabled or before the first
    /// delivery.
    pub(super) fn latest(&self) -> Option<Arc<[u8]>> {
        if !self.enabled {
            return None;
        }
        // A panic elsewhere while holding the lock left a whole value: keep using it.
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps the records of `t` for the next requests, unless it never reached the
    /// destination (nothing was measured).
    fn update(&self, t: &DeliveryTimings) {
        if !self.enabled || t.attempt_count == 0 {
            return;
        }
        let list = match serde_json::to_vec(&t.records()) {
            Ok(list) => list,
            Err(e) => {
                // Not expected of plain structs; the previous records stay.
                tracing::warn!(connector = %t.target, error = %e, "collector_observability records could not be serialized");
                return;
            }
        };
        // Without the brackets: the records join the event's own list.
        if let Some(inner) = list.get(1..list.len().saturating_sub(1)) {
            *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::from(inner));
        }
    }
}

impl<C: Connector> Courier<C> {
    /// Keeps a finished delivery's timings: for the next requests' records, the metrics and
    /// the recent deliveries.
    pub(super) fn record(&self, timings: DeliveryTimings) {
        self.records.update(&timings);
        self.timings.record_metrics(
            &self.id,
            timings.queue_ms,
            timings.send_ms,
            timings.process_ms,
            timings.status_code,
            &timings.calls,
        );
        self.timings.record(timings);
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const OPENED_MS: u64 = 1_712_167_312_000;

    #[tokio::test(start_paused = true)]
    async fn timings_add_up_from_the_batch_open_time() {
        let clock = Clock::new(Instant::now(), OPENED_MS);
        advance(Duration::from_millis(5)).await;
        let mut watch = Stopwatch::start(clock, 3);
        assert_eq!((watch.attempts(), watch.status()), (0, 0));

        let first = Instant::now();
        advance(Duration::from_millis(30)).await;
        watch.call_ended(first, 503);
        advance(Duration::from_millis(100)).await;
        assert_eq!(watch.failing_for(), Duration::from_millis(130));
        let second = Instant::now();
        advance(Duration::from_millis(20)).await;
        watch.call_ended(second, 200);
        let answer = watch.last_answer();
        assert_eq!(
            (answer.status, answer.attempts, answer.first_attempt_ms),
            (200, 2, OPENED_MS + 5)
        );

        let t = watch.finish(&Arc::from("hec"));
        assert_eq!(&*t.target, "hec");
        assert_eq!(
            (t.events, t.enqueued_ms, t.send_start_ms),
            (3, OPENED_MS, OPENED_MS + 5)
        );
        assert_eq!((t.queue_ms, t.send_ms, t.process_ms), (5, 150, 155));
        assert_eq!((t.attempt_count, t.status_code), (2, 200));
        assert_eq!(
            t.calls,
            [
                CallTiming {
                    start_ms: OPENED_MS + 5,
                    duration_ms: 30,
                    attempt: 1,
                    status_code: 503
                },
                CallTiming {
                    start_ms: OPENED_MS + 135,
                    duration_ms: 20,
                    attempt: 2,
                    status_code: 200
                },
            ]
        );
    }

    fn delivered(attempts: u32) -> DeliveryTimings {
        let mut watch = Stopwatch::start(Clock::new(Instant::now(), OPENED_MS), 1);
        for _ in 0..attempts {
            watch.call_ended(Instant::now(), 200);
        }
        watch.finish(&Arc::from("hec"))
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_records_are_kept_without_brackets_within_the_bound() {
        let records = LatestRecords::new("hec", true);
        assert_eq!(records.latest(), None, "none before the first delivery");
        let t = delivered(1);
        records.update(&t);
        let latest = records.latest().unwrap();
        let list: serde_json::Value =
            serde_json::from_slice(&[b"[", &latest[..], b"]"].concat()).unwrap();
        assert_eq!(list, serde_json::to_value(t.records()).unwrap());
        assert!(latest.len() + crate::event::SPLICE_OVERHEAD <= records.bound());

        records.update(&delivered(0));
        assert_eq!(
            records.latest(),
            Some(latest),
            "a delivery never sent measures nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_records_are_neither_kept_nor_counted() {
        let records = LatestRecords::new("hec", false);
        records.update(&delivered(1));
        assert_eq!((records.latest(), records.bound()), (None, 0));
    }
}
