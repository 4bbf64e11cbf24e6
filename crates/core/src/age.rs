//! Events outside the time window a destination keeps. Datadog does not index logs more than
//! 18 h old and New Relic drops events more than 24 h from its clock, yet both answer 2xx: a
//! replay of yesterday's dead letters would "succeed" into nothing. An encoder asks its
//! [`Window`] about each event and either sends it as it is, restamps it, or refuses it.

use crate::connector::Fix;
use crate::event::Event;
use serde::Deserialize;
use std::time::Duration;

/// What to do with an event outside the destination's window (`out_of_window` in a
/// connector's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutOfWindow {
    /// Send it stamped with the time of sending, its own time kept as `original_timestamp`:
    /// it stays findable, and a dead letter could never be replayed into the window anyway.
    #[default]
    Restamp,
    /// Refuse it with the reason (dead-lettered when a dead-letter topic is configured).
    DeadLetter,
    /// Send it unchanged, for a destination known to keep it (a proxy, a relaxed account);
    /// still counted and logged.
    SendAsIs,
}

/// The attribute that keeps a restamped event's own time, epoch milliseconds.
pub const ORIGINAL_TIMESTAMP: &str = "original_timestamp";

/// The times a destination keeps, relative to its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The destination's name, for reasons and logs.
    pub destination: &'static str,
    pub max_age: Duration,
    /// How far ahead of the destination's clock an event may be; None: not documented.
    pub max_ahead: Option<Duration>,
    pub action: OutOfWindow,
}

/// The timestamp an event is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Its own, epoch milliseconds.
    Own(i64),
    /// The time of sending; `original` is its own.
    Restamped { now: i64, original: i64 },
}

impl Window {
    /// How `event` (at index `i` of the batch) is stamped at `now_ms`, with the fix to report
    /// when it was restamped; `Err(reason)` when it is refused.
    pub fn stamp(
        &self,
        event: &Event,
        i: usize,
        now_ms: i64,
    ) -> Result<(Stamp, Option<Fix>), String> {
        let own = event.timestamp_us().div_euclid(1000);
        let (class, off_ms, limit) = if own < now_ms.saturating_sub(ms(self.max_age)) {
            ("too_old", now_ms - own, self.max_age)
        } else if let Some(ahead) = self.max_ahead.filter(|a| own > now_ms + ms(*a)) {
            ("too_new", own - now_ms, ahead)
        } else {
            return Ok((Stamp::Own(own), None));
        };
        let side = if class == "too_old" { "old" } else { "ahead" };
        let why = format!(
            "event.timestamp {own} is {} {side}; {} keeps events within {}",
            hours(off_ms),
            self.destination,
            hours(ms(limit))
        );
        match self.action {
            OutOfWindow::DeadLetter => Err(format!("{class}: {why}")),
            OutOfWindow::SendAsIs => Ok((
                Stamp::Own(own),
                Some(Fix::new(i, "sent_out_of_window").with_detail(format!("{why}; sent as is"))),
            )),
            OutOfWindow::Restamp => Ok((
                Stamp::Restamped {
                    now: now_ms,
                    original: own,
                },
                Some(Fix::new(i, "restamped").with_detail(format!(
                    "{why}; sent stamped now, with {ORIGINAL_TIMESTAMP}"
                ))),
            )),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn hours(ms: i64) -> String {
    format!("{:.1} h", ms as f64 / 3_600_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;

    const HOUR: i64 = 3_600_000;
    const NOW: i64 = 1_764_600_000_000;

    fn window(action: OutOfWindow) -> Window {
        Window {
            destination: "Datadog",
            max_age: Duration::from_secs(18 * 3600),
            max_ahead: Some(Duration::from_secs(2 * 3600)),
            action,
        }
    }

    fn at(ms: i64) -> Event {
        event(&format!(r#"{{"event":{{"timestamp":{ms}}}}}"#))
    }

    #[test]
    fn events_inside_the_window_keep_their_time() {
        let w = window(OutOfWindow::DeadLetter);
        for t in [NOW, NOW - 17 * HOUR, NOW + HOUR] {
            assert_eq!(w.stamp(&at(t), 0, NOW), Ok((Stamp::Own(t), None)));
        }
    }

    #[test]
    fn an_old_event_is_restamped_and_reported() {
        let (stamp, fix) = window(OutOfWindow::Restamp)
            .stamp(&at(NOW - 25 * HOUR), 3, NOW)
            .unwrap();
        assert_eq!(
            stamp,
            Stamp::Restamped {
                now: NOW,
                original: NOW - 25 * HOUR
            }
        );
        let fix = fix.unwrap();
        assert_eq!((fix.event, fix.kind), (3, "restamped"));
        assert!(
            fix.detail
                .unwrap()
                .contains("25.0 h old; Datadog keeps events within 18.0 h")
        );
    }

    #[test]
    fn an_old_or_far_ahead_event_is_refused_with_the_reason() {
        let w = window(OutOfWindow::DeadLetter);
        let old = w.stamp(&at(NOW - 19 * HOUR), 0, NOW).unwrap_err();
        assert!(old.starts_with("too_old: event.timestamp"), "{old}");
        let ahead = w.stamp(&at(NOW + 3 * HOUR), 0, NOW).unwrap_err();
        assert!(ahead.starts_with("too_new: "), "{ahead}");
        let no_future_limit = Window {
            max_ahead: None,
            ..w
        };
        assert!(no_future_limit.stamp(&at(NOW + 30 * HOUR), 0, NOW).is_ok());
    }

    #[test]
    fn sent_as_is_is_still_reported() {
        let t = NOW - 20 * HOUR;
        let (stamp, fix) = window(OutOfWindow::SendAsIs).stamp(&at(t), 1, NOW).unwrap();
        assert_eq!(stamp, Stamp::Own(t));
        assert_eq!(fix.unwrap().kind, "sent_out_of_window");
    }
}
