//! Proof that a loop is turning, for the liveness probe: the loop beats once per turn with a
//! time it has already read, and an observer asks how long it has been silent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds from `start` to the latest beat.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that beat just now.
    pub fn new() -> Self {
        Heartbeat {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// One turn of the loop, at `now` (taken from a clock read the loop makes anyway, so a
    /// turn costs one relaxed store).
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.start).as_millis() as u64;
        self.last_ms.store(ms, Relaxed);
    }

    /// How long since the latest beat.
    pub fn silent_for(&self) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Relaxed));
        Instant::now().saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_measured_from_the_latest_beat() {
        let h = Heartbeat::new();
        let later = Instant::now() + Duration::from_secs(3600);
        h.beat(later);
        assert_eq!(h.silent_for(), Duration::ZERO, "a beat in the future");
        let h = Heartbeat {
            start: Instant::now() - Duration::from_secs(100),
            last_ms: AtomicU64::new(0),
        };
        assert!(h.silent_for() >= Duration::from_secs(100));
        h.beat(Instant::now());
        assert!(h.silent_for() < Duration::from_secs(100));
    }
}
