//! Destination isolation: the state of one destination instance as its events flow, are
//! parked while it is down, and drain back once it answers (see docs/isolation.md).
//!
//! A destination whose delivery keeps failing for longer than `detach_after` holds back the
//! commit point of every partition it has events in, and soon pauses them all. Detaching it
//! parks its events instead (the parking topic is on the same Kafka cluster), so the commit
//! point moves on and the other destinations keep their pace. The main flow then probes it
//! now and then with a real batch, at a growing interval; the first delivery that goes
//! through starts the drain of the parked backlog, and once that backlog is empty the
//! destination is fed directly again.
//!
//! This module holds only the state machine. Parking itself is the engine's (it writes
//! [`Letter`](crate::Letter)s through a [`DeadLetters`](crate::DeadLetters) sink), the drain is a
//! consumer of the parking topic run by the binary.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// Where a destination's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Straight to the destination.
    Flowing,
    /// To the parking topic: the destination has been failing for too long. A probe batch
    /// goes to it now and then.
    Detached,
    /// Still to the parking topic, while the parked backlog is delivered at the
    /// destination's pace.
    Draining,
}

impl State {
    pub const ALL: [State; 3] = [State::Flowing, State::Detached, State::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Flowing => "flowing",
            State::Detached => "detached",
            State::Draining => "draining",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Detached,
            2 => State::Draining,
            _ => State::Flowing,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When to detach and how often to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationSettings {
    /// A delivery failing for this long detaches the destination.
    pub detach_after: Duration,
    /// The first probe's delay after detaching; each failed probe doubles it…
    pub probe_initial: Duration,
    /// …up to this.
    pub probe_max: Duration,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        IsolationSettings {
            detach_after: Duration::from_secs(30),
            probe_initial: Duration::from_secs(5),
            probe_max: Duration::from_secs(60),
        }
    }
}

/// One destination instance's isolation state, shared by its main engine (which detaches,
/// parks and probes) and its drain (which delivers the parked backlog).
#[derive(Debug)]
pub struct Isolation {
    id: String,
    settings: IsolationSettings,
    state: AtomicU8,
    probe: Mutex<Probe>,
    /// Events written to the parking topic, since start.
    parked: AtomicU64,
    /// Wall-clock ms of the oldest event parked since the backlog was last empty; 0: none.
    oldest_parked_ms: AtomicU64,
    /// State changes, since start.
    changes: AtomicU64,
}

#[derive(Debug)]
struct Probe {
    due: Instant,
    interval: Duration,
}

impl Isolation {
    pub fn new(id: &str, settings: IsolationSettings) -> Self {
        Isolation {
            id: id.to_owned(),
            settings,
            state: AtomicU8::new(State::Flowing as u8),
            probe: Mutex::new(Probe {
                due: Instant::now(),
                interval: settings.probe_initial,
            }),
            parked: AtomicU64::new(0),
            oldest_parked_ms: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    /// Whether new events for this destination go to the parking topic.
    pub fn is_parking(&self) -> bool {
        self.state() != State::Flowing
    }

    pub fn settings(&self) -> IsolationSettings {
        self.settings
    }

    /// A delivery has been failing for `failing_for` (the last failure: `why`). Detaches the
    /// destination once that is `detach_after` or more; true if its events are now parked.
    pub fn failing(&self, failing_for: Duration, why: &str) -> bool {
        if failing_for >= self.settings.detach_after && self.change(State::Flowing, State::Detached)
        {
            self.schedule_probe(self.settings.probe_initial);
            tracing::warn!(
                connector = %self.id,
                state = "detached",
                failing_for = ?failing_for,
                reason = %crate::log::clip(why),
                "destination detached: its events are parked until it answers again; the others go on"
            );
        }
        self.is_parking()
    }

    /// While detached: whether the batch at hand should go to the destination as a probe.
    /// At most one probe is due per interval: this claims it.
    pub fn take_probe(&self) -> bool {
        if self.state() != State::Detached {
            return false;
        }
        let Ok(mut p) = self.probe.lock() else {
            return false;
        };
        if Instant::now() < p.due {
            return false;
        }
        // Until this probe's outcome is known, no other.
        p.due = Instant::now() + self.settings.probe_max;
        true
    }

    /// A probe (or a drain delivery) failed: the next probe waits twice as long, up to the cap;
    /// a drain that fails goes back to detached.
    pub fn probe_failed(&self) {
        let next = self
            .probe
            .lock()
            .map(|p| (p.interval * 2).min(self.settings.probe_max))
            .unwrap_or(self.settings.probe_max);
        if self.change(State::Draining, State::Detached) {
            tracing::warn!(connector = %self.id, state = "detached", "destination failed again while draining: detached");
        }
        self.schedule_probe(next);
    }

    /// The destination accepted events: a detached one starts draining its backlog.
    pub fn answered(&self) {
        if self.change(State::Detached, State::Draining) {
            self.schedule_probe(self.settings.probe_initial);
            tracing::info!(connector = %self.id, state = "draining", "destination answers again: draining its parked events");
        }
    }

    /// The parked backlog is delivered: new events go straight to the destination again.
    pub fn backlog_empty(&self) {
        if self.change(State::Draining, State::Flowing) {
            self.oldest_parked_ms.store(0, Relaxed);
            tracing::info!(connector = %self.id, state = "flowing", "parked backlog delivered: events flow to the destination directly again");
        }
    }

    /// `n` events were written to the parking topic; the oldest was first tried at
    /// `first_attempt_ms`.
    pub fn note_parked(&self, n: u64, first_attempt_ms: u64) {
        self.parked.fetch_add(n, Relaxed);
        let _ = self.oldest_parked_ms.fetch_update(Relaxed, Relaxed, |old| {
            (old == 0 || first_attempt_ms < old).then_some(first_attempt_ms)
        });
    }

    /// Events parked since start.
    pub fn parked(&self) -> u64 {
        self.parked.load(Relaxed)
    }

    /// How old the oldest event parked since the backlog was last empty is, in seconds, as of
    /// `now_ms`; 0 when flowing.
    pub fn oldest_parked_age_secs(&self, now_ms: u64) -> u64 {
        match self.oldest_parked_ms.load(Relaxed) {
            0 => 0,
            t => now_ms.saturating_sub(t) / 1000,
        }
    }

    /// State changes since start.
    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    fn change(&self, from: State, to: State) -> bool {
        let changed = self
            .state
            .compare_exchange(from as u8, to as u8, Relaxed, Relaxed)
            .is_ok();
        if changed {
            self.changes.fetch_add(1, Relaxed);
        }
        changed
    }

    fn schedule_probe(&self, interval: Duration) {
        if let Ok(mut p) = self.probe.lock() {
            p.interval = interval;
            p.due = Instant::now() + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso() -> Isolation {
        Isolation::new(
            "d",
            IsolationSettings {
                detach_after: Duration::from_secs(30),
                probe_initial: Duration::from_secs(5),
                probe_max: Duration::from_secs(40),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn detaches_only_after_failing_for_the_bound() {
        let i = iso();
        assert!(!i.failing(Duration::from_secs(29), "503"));
        assert_eq!(i.state(), State::Flowing);
        assert!(i.failing(Duration::from_secs(30), "503"));
        assert_eq!(i.state(), State::Detached);
        assert_eq!(i.changes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_come_at_a_growing_interval_with_a_cap() {
        let i = iso();
        i.failing(Duration::from_secs(30), "503");
        let mut gaps = Vec::new();
        let mut last = Instant::now();
        for _ in 0..6 {
            while !i.take_probe() {
                tokio::time::advance(Duration::from_millis(500)).await;
            }
            gaps.push((Instant::now() - last).as_secs());
            last = Instant::now();
            assert!(!i.take_probe(), "one probe at a time");
            i.probe_failed();
        }
        assert_eq!(gaps, [5, 10, 20, 40, 40, 40]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_drains_and_an_empty_backlog_flows_again() {
        let i = iso();
        i.failing(Duration::from_secs(31), "503");
        i.note_parked(10, 1_000_000);
        i.note_parked(5, 900_000);
        assert_eq!(i.oldest_parked_age_secs(1_000_000), 100);
        i.backlog_empty();
        assert_eq!(i.state(), State::Detached, "not while detached");
        i.answered();
        assert_eq!(i.state(), State::Draining);
        assert!(i.is_parking(), "new events still parked while draining");
        i.probe_failed();
        assert_eq!(
            i.state(),
            State::Detached,
            "a failure while draining detaches"
        );
        i.answered();
        i.backlog_empty();
        assert_eq!(i.state(), State::Flowing);
        assert_eq!((i.parked(), i.oldest_parked_age_secs(2_000_000)), (15, 0));
        assert_eq!(i.changes(), 5);
    }
}
