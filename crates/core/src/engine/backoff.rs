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
