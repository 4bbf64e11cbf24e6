//! After a failed attempt: park the events if the destination is (or just became) detached,
//! else wait by the retry schedule and try again, or give up once it is exhausted.

use super::timing::Stopwatch;
use super::{Courier, PARKED, Role};
use crate::connector::Connector;
use crate::event::Event;
use crate::retry::{OnExhausted, Schedule};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// What follows a failed attempt.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// Wait this long, then send the events again.
    Wait(Duration),
    /// The destination is detached: write the events to the parking topic, with this reason.
    Park(String),
    /// No attempt is left: reject the events, with this reason.
    GiveUp(String),
}

impl<C: Connector> Courier<C> {
    /// Decides what follows an attempt that failed for `reason` with `events` events still to
    /// deliver. `retry_after`: the destination's own request; `probe`: the attempt was a probe
    /// of a detached destination.
    pub(super) fn after_failure(
        &self,
        reason: &str,
        retry_after: Option<Duration>,
        events: usize,
        probe: bool,
        watch: &Stopwatch,
        schedule: &mut Schedule,
    ) -> Next {
        if self.detaches(probe, watch.failing_for(), reason) {
            return Next::Park(format!("{PARKED}: {reason}"));
        }
        let attempt = watch.attempts();
        let delay = match schedule.next_delay(attempt, watch.failing_for(), retry_after) {
            Ok(delay) => delay,
            Err(exhausted) => {
                return Next::GiveUp(format!(
                    "retries exhausted ({exhausted:?}); last failure: {reason}"
                ));
            }
        };
        self.stats.retried.fetch_add(events as u64, Relaxed);
        if let Some(asked) = retry_after.filter(|asked| *asked > delay) {
            tracing::debug!(connector = %self.id, ?asked, ?delay, "Retry-After is longer than retry.max_backoff_ms; retrying sooner");
        }
        let policy = self.settings.retry;
        if policy.on_exhausted == OnExhausted::Block
            && attempt.is_multiple_of(policy.max_attempts.max(1))
        {
            tracing::warn!(connector = %self.id, attempt, reason = %crate::log::clip(reason), "still failing; holding these events and their partitions until the destination recovers (on_exhausted = block)");
        }
        tracing::debug!(connector = %self.id, attempt, status = watch.status(), ?delay, %reason, "retrying");
        Next::Wait(delay)
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

    /// Waits `delay` before the next attempt. Events whose partition is revoked meanwhile
    /// are dropped at once, so that an outage does not hold them (and their memory) after
    /// the source stopped counting them; returns the rest.
    pub(super) async fn back_off(
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Letters, P, Rig, Scripted};
    use super::super::timing::Clock;
    use super::*;
    use crate::isolation::{Isolation, IsolationSettings, State};
    use std::sync::Arc;
    use tokio::time::advance;

    /// A stopwatch with `attempts` calls made, all answered 503.
    fn failed(attempts: u32) -> Stopwatch {
        let mut watch = Stopwatch::start(Clock::new(Instant::now(), 0), 2);
        for _ in 0..attempts {
            watch.call_ended(Instant::now(), 503);
        }
        watch
    }

    fn next(r: &Rig, watch: &Stopwatch, retry_after: Option<Duration>) -> Next {
        let mut schedule = r.courier.settings.retry.schedule();
        r.courier
            .after_failure("503 down", retry_after, 2, false, watch, &mut schedule)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_with_attempts_left_waits_by_the_schedule_or_the_destination() {
        let r = Rig::new(Scripted::answering(vec![]), None);
        let retry = r.courier.settings.retry;
        match next(&r, &failed(1), None) {
            Next::Wait(delay) => assert!(delay <= retry.initial_backoff, "{delay:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.courier.stats.snapshot().retried, 2);
        let a_day = Some(Duration::from_secs(86_400));
        assert_eq!(next(&r, &failed(1), a_day), Next::Wait(retry.max_backoff));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_gives_up_with_the_last_failure() {
        let r = Rig::new(Scripted::answering(vec![]), None);
        assert_eq!(
            next(&r, &failed(3), None),
            Next::GiveUp("retries exhausted (Attempts(3)); last failure: 503 down".into())
        );
        assert_eq!(r.courier.stats.snapshot().retried, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_failing_past_the_bound_detaches_and_parks() {
        let isolation = Arc::new(Isolation::new("stub", IsolationSettings::default()));
        let role = Role::Main {
            isolation: isolation.clone(),
            parking: Arc::new(Letters::default()),
        };
        let r = Rig::new(Scripted::answering(vec![]), Some(role));
        let watch = failed(1);
        assert!(matches!(next(&r, &watch, None), Next::Wait(_)));
        assert_eq!(isolation.state(), State::Flowing);
        advance(IsolationSettings::default().detach_after).await;
        assert_eq!(
            next(&r, &watch, None),
            Next::Park("parked: 503 down".into())
        );
        assert_eq!(isolation.state(), State::Detached);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_fails_detaches_again_but_retries_its_own_events() {
        let isolation = Arc::new(Isolation::new("stub", IsolationSettings::default()));
        isolation.failing(Duration::MAX, "down");
        isolation.answered();
        assert_eq!(isolation.state(), State::Draining);
        let r = Rig::new(
            Scripted::answering(vec![]),
            Some(Role::Drain(isolation.clone())),
        );
        advance(Duration::from_secs(3600)).await;
        assert!(matches!(next(&r, &failed(1), None), Next::Wait(_)));
        assert_eq!(isolation.state(), State::Detached);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_ends_the_wait_at_once_for_its_events() {
        let r = Rig::new(Scripted::answering(vec![]), None);
        let events = r.events(2);
        let mut revoked = r.acker.revocations();
        let wait = Duration::from_secs(30);
        let started = Instant::now();
        let (left, ()) = tokio::join!(r.courier.back_off(wait, events, &mut revoked), async {
            advance(Duration::from_secs(1)).await;
            r.acker.lock().revoke(P);
        });
        assert!(left.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(r.courier.stats.snapshot().cancelled, 2);

        let r = Rig::new(Scripted::answering(vec![]), None);
        let mut revoked = r.acker.revocations();
        let left = r.courier.back_off(wait, r.events(2), &mut revoked).await;
        assert_eq!(left.len(), 2, "owned events wait the whole delay");
    }
}
