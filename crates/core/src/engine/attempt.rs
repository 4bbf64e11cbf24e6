//! One attempt: encode the events, send the request within the request timeout, classify the
//! answer and time the call. What the answer means for the events is [`super::settle`]'s.

use super::settle::with_reason;
use super::timing::Stopwatch;
use super::{Courier, GroupEnd};
use crate::connector::{Connector, EncodeError, Outcome, SendError, Verdict};
use crate::event::Event;
use crate::fields::Shaped;
use crate::shipment::Shipment;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// What one attempt came to.
pub(super) enum Attempt {
    /// A request of `events` went out; `verdict` is what its answer, or the lack of one,
    /// means.
    Sent {
        events: Vec<Event>,
        verdict: Verdict,
    },
    /// Nothing was sent and the group is over: the encoder left every event out, could not
    /// encode them (they are rejected), or found the request too large (it is split).
    Ended(GroupEnd),
}

impl<C: Connector> Courier<C> {
    /// Encodes `pending` (rejecting what the encoder leaves out) and sends the request.
    pub(super) async fn attempt(&self, pending: Vec<Event>, watch: &mut Stopwatch) -> Attempt {
        let (events, request) = match self.encode(pending, watch) {
            Ok(encoded) => encoded,
            Err(end) => return Attempt::Ended(end),
        };
        if let Some(pace) = &self.pace {
            pace.wait(events.len()).await;
        }
        let verdict = self.call(&request, &events, watch).await;
        Attempt::Sent { events, verdict }
    }

    /// The request for the events the encoder keeps, and those events.
    fn encode(
        &self,
        mut pending: Vec<Event>,
        watch: &Stopwatch,
    ) -> Result<(Vec<Event>, C::Request), GroupEnd> {
        let records = self.records.latest();
        let mut shaped = None;
        if let Some(fields) = &self.settings.fields {
            let (kept, s, failed) = Shaped::build(fields, pending, records.as_deref());
            self.finish_rejected(failed, watch.status(), watch.attempts());
            if kept.is_empty() {
                return Err(GroupEnd::Done);
            }
            pending = kept;
            shaped = Some(s);
        }
        let shipment = match &shaped {
            Some(s) => Shipment::shaped(&pending, s),
            None => Shipment::new(&pending, records.as_deref()),
        };
        match self.connector.encode(shipment) {
            Ok(encoded) => {
                // The same events encode the same way again: count their changes once.
                if watch.attempts() == 0 {
                    self.report_fixes(&pending, &encoded.fixes);
                }
                pending = self.drop_rejected(pending, encoded.rejected, watch.attempts());
                if pending.is_empty() {
                    return Err(GroupEnd::Done);
                }
                Ok((pending, encoded.request))
            }
            Err(EncodeError::TooLarge { .. }) if pending.len() > 1 => Err(GroupEnd::Split(pending)),
            Err(e) => {
                let rejected = with_reason(pending, &e.to_string());
                self.finish_rejected(rejected, watch.status(), watch.attempts());
                Err(GroupEnd::Done)
            }
        }
    }

    /// Sends `request` with the request timeout, classifies the answer, times the call.
    async fn call(&self, request: &C::Request, events: &[Event], watch: &mut Stopwatch) -> Verdict {
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.in_flight_requests.fetch_add(1, Relaxed);
        let size = self.connector.request_size(request) as u64;
        let start = Instant::now();
        let limit = self.settings.request_timeout;
        let answer = timeout(limit, self.connector.send(request)).await;
        self.stats.in_flight_requests.fetch_sub(1, Relaxed);
        let verdict = match answer {
            Ok(Ok(response)) => {
                self.stats.bytes_sent.fetch_add(size, Relaxed);
                self.connector.classify(&response, events)
            }
            Ok(Err(e)) => unanswered(&e),
            Err(_) => timed_out(limit),
        };
        if !verdict.outcome.is_accepted() {
            self.stats.failed_requests.fetch_add(1, Relaxed);
        }
        if let Some(dropped) = &verdict.dropped {
            self.report_dropped(dropped);
        }
        watch.call_ended(start, verdict.status_code);
        verdict
    }
}

/// No answer came back: retried unless resending cannot help.
fn unanswered(e: &SendError) -> Verdict {
    let reason = e.to_string();
    let outcome = if e.is_retryable() {
        Outcome::Retry { reason }
    } else {
        Outcome::Reject { reason }
    };
    Verdict::new(0, outcome)
}

/// No answer came back within `limit`: the destination may be slow rather than gone.
fn timed_out(limit: Duration) -> Verdict {
    Verdict::new(
        0,
        Outcome::Retry {
            reason: format!("no answer within {limit:?}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Rig, Scripted};
    use super::super::timing::Clock;
    use super::*;

    #[test]
    fn transport_failures_retry_unless_resending_cannot_help() {
        let v = unanswered(&SendError::Connect("refused".into()));
        assert_eq!(v.status_code, 0);
        assert_eq!(
            v.outcome,
            Outcome::Retry {
                reason: "connection failed: refused".into()
            }
        );
        let v = unanswered(&SendError::Transport {
            message: "bad header".into(),
            retryable: false,
        });
        assert_eq!(
            v.outcome,
            Outcome::Reject {
                reason: "transport error: bad header".into()
            }
        );
        assert_eq!(
            timed_out(Duration::from_secs(5)).outcome,
            Outcome::Retry {
                reason: "no answer within 5s".into()
            }
        );
    }

    fn watch() -> Stopwatch {
        Stopwatch::start(Clock::new(Instant::now(), 0), 3)
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_sends_what_the_encoder_keeps_and_times_the_call() {
        let script = Scripted::answering(vec![Ok(Verdict::new(413, Outcome::Split))]);
        script.refuse(1);
        let r = Rig::new(script.clone(), None);
        let mut w = watch();
        let Attempt::Sent { events, verdict } = r.courier.attempt(r.events(3), &mut w).await else {
            panic!("nothing sent");
        };
        let offsets: Vec<i64> = events.iter().map(|e| e.origin().offset).collect();
        assert_eq!(offsets, [0, 2]);
        assert_eq!(verdict, Verdict::new(413, Outcome::Split));
        assert_eq!(*script.sent.lock().unwrap(), [vec![0, 2]]);
        assert_eq!((w.attempts(), w.status()), (1, 413));
        let s = r.courier.stats.snapshot();
        assert_eq!((s.requests, s.failed_requests, s.bytes_sent), (1, 1, 2));
        assert_eq!(r.letters.reasons(), [(1, "invalid: offset 1".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_with_no_answer_in_time_is_a_retry_with_status_0() {
        let script = Scripted::answering(vec![]);
        *script.hang.lock().unwrap() = true;
        let r = Rig::new(script, None);
        let mut w = watch();
        let Attempt::Sent { verdict, .. } = r.courier.attempt(r.events(1), &mut w).await else {
            panic!("nothing sent");
        };
        let limit = r.courier.settings.request_timeout;
        assert_eq!(verdict, timed_out(limit));
        assert_eq!((w.attempts(), w.status()), (1, 0));
        assert_eq!(w.failing_for(), limit);
        assert_eq!(r.courier.stats.snapshot().in_flight_requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_encoder_that_keeps_nothing_or_cannot_encode_ends_the_group_unsent() {
        let script = Scripted::answering(vec![]);
        script.refuse(0);
        let r = Rig::new(script.clone(), None);
        let ended = r.courier.attempt(r.events(1), &mut watch()).await;
        assert!(matches!(ended, Attempt::Ended(GroupEnd::Done)));

        *script.too_large.lock().unwrap() = true;
        let ended = r.courier.attempt(r.events(2), &mut watch()).await;
        assert!(matches!(ended, Attempt::Ended(GroupEnd::Split(e)) if e.len() == 2));
        let ended = r.courier.attempt(r.events(1), &mut watch()).await;
        assert!(matches!(ended, Attempt::Ended(GroupEnd::Done)));
        assert!(script.sent.lock().unwrap().is_empty());
        assert_eq!(
            r.letters.reasons(),
            [
                (0, "invalid: offset 0".to_string()),
                (
                    3,
                    "encoded request of 1 bytes is over the limit of 0".to_string()
                )
            ]
        );
    }
}
