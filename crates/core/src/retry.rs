//! The retry schedule every destination shares: exponential backoff with full jitter, capped by
//! attempts and elapsed time, and a destination's `Retry-After` taking precedence within
//! `[initial_backoff, max_backoff]`.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (with `DeadLetter`).
    pub max_attempts: u32,
    /// No new attempt starts this long after the first one started (with `DeadLetter`).
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub on_exhausted: OnExhausted,
}

/// What happens to retryable failures once `max_attempts` or `max_elapsed` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Keep retrying (at most `max_backoff` apart) and hold the partition: for a destination
    /// that is merely down, waiting loses nothing.
    #[default]
    Block,
    /// Give up: the events are rejected with the reason (and go to the dead-letter topic when
    /// one is configured).
    DeadLetter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(300),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            on_exhausted: OnExhausted::Block,
        }
    }
}

impl RetryPolicy {
    pub fn schedule(&self) -> Schedule {
        // backon gives the capped exponential ceiling. Its own jitter adds up to 100% on top
        // of the delay; full jitter (AWS's name) instead draws the whole delay from
        // [0, ceiling], which spreads a thundering herd of retries best, so it is drawn here.
        let ceiling = ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Schedule {
            policy: *self,
            ceiling,
            rng: fastrand::Rng::new(),
        }
    }
}

/// The delays of one delivery's retries.
pub struct Schedule {
    policy: RetryPolicy,
    ceiling: ExponentialBackoff,
    rng: fastrand::Rng,
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Attempts(u32),
    Elapsed(Duration),
}

impl Schedule {
    /// The wait before attempt `attempts_made + 1`, or why there is none. `elapsed` is the time
    /// since the first attempt started; `retry_after` is the destination's own request.
    pub fn next_delay(
        &mut self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Result<Duration, Exhausted> {
        let block = self.policy.on_exhausted == OnExhausted::Block;
        if attempts_made >= self.policy.max_attempts && !block {
            return Err(Exhausted::Attempts(attempts_made));
        }
        let ceiling = self.ceiling.next().unwrap_or(self.policy.max_backoff);
        let delay = match retry_after {
            Some(asked) => self.honoured(asked),
            None => ceiling.mul_f64(self.rng.f64()),
        };
        if block {
            return Ok(delay);
        }
        if elapsed + delay >= self.policy.max_elapsed {
            return Err(Exhausted::Elapsed(elapsed));
        }
        Ok(delay)
    }

    /// The wait a destination's `Retry-After` gets. Capped by `max_backoff`: a server saying
    /// "retry in a day" must not silently hold a partition for a day (an early retry costs one
    /// more refused request). Floored at `initial_backoff`: `Retry-After: 0` or a date already
    /// past must not turn retries into a busy loop.
    pub fn honoured(&self, asked: Duration) -> Duration {
        asked.clamp(self.policy.initial_backoff, self.policy.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(3600),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            on_exhausted: OnExhausted::DeadLetter,
        }
    }

    #[test]
    fn block_never_exhausts_and_stays_capped() {
        let mut s = RetryPolicy {
            on_exhausted: OnExhausted::Block,
            max_elapsed: Duration::from_secs(1),
            ..policy()
        }
        .schedule();
        for attempt in 1..100 {
            let d = s
                .next_delay(attempt, Duration::from_secs(3600), None)
                .unwrap();
            assert!(d <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling() {
        let ceilings = [100u64, 200, 400, 800, 1000];
        for _ in 0..200 {
            let mut s = policy().schedule();
            for (i, c) in ceilings.iter().enumerate() {
                let d = s.next_delay(i as u32 + 1, Duration::ZERO, None).unwrap();
                assert!(d <= Duration::from_millis(*c), "attempt {i}: {d:?} > {c}ms");
            }
        }
    }

    #[test]
    fn jitter_is_full_not_additive() {
        // Full jitter draws from [0, ceiling]: some delays must fall well below half of it.
        let mut low = 0;
        for _ in 0..200 {
            let mut s = policy().schedule();
            if s.next_delay(1, Duration::ZERO, None).unwrap() < Duration::from_millis(50) {
                low += 1;
            }
        }
        assert!(low > 20, "only {low}/200 delays under half the ceiling");
    }

    #[test]
    fn stops_after_max_attempts() {
        let mut s = policy().schedule();
        assert!(s.next_delay(5, Duration::ZERO, None).is_ok());
        assert_eq!(
            s.next_delay(6, Duration::ZERO, None),
            Err(Exhausted::Attempts(6))
        );
    }

    #[test]
    fn stops_when_elapsed_budget_is_spent() {
        let mut s = RetryPolicy {
            max_elapsed: Duration::from_secs(10),
            ..policy()
        }
        .schedule();
        let r = s.next_delay(1, Duration::from_secs(10), None);
        assert_eq!(r, Err(Exhausted::Elapsed(Duration::from_secs(10))));
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let mut s = policy().schedule();
        let d = s
            .next_delay(1, Duration::ZERO, Some(Duration::from_millis(700)))
            .unwrap();
        assert_eq!(d, Duration::from_millis(700));
    }

    #[test]
    fn retry_after_is_capped_by_max_backoff_and_floored_by_initial_backoff() {
        let mut s = policy().schedule();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            s.next_delay(1, Duration::ZERO, Some(day)),
            Ok(policy().max_backoff)
        );
        assert_eq!(
            s.next_delay(2, Duration::ZERO, Some(Duration::ZERO)),
            Ok(policy().initial_backoff)
        );
    }
}
