//! A destination account's rate limit, kept per instance: Datadog and New Relic limit each
//! account (so each customer) in events or requests per second. The limiter is `governor`'s
//! GCRA, not one of our own.

use governor::{DefaultDirectRateLimiter, Quota};
use std::num::NonZeroU32;

/// At most this many per second, with bursts of up to one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    EventsPerSec(NonZeroU32),
    RequestsPerSec(NonZeroU32),
}

/// One instance's limiter: a request waits here until the limit lets it go.
pub struct Pace {
    limit: RateLimit,
    limiter: DefaultDirectRateLimiter,
}

impl Pace {
    pub fn new(limit: RateLimit) -> Self {
        let per_sec = match limit {
            RateLimit::EventsPerSec(n) | RateLimit::RequestsPerSec(n) => n,
        };
        Pace {
            limit,
            limiter: DefaultDirectRateLimiter::direct(Quota::per_second(per_sec)),
        }
    }

    /// Waits until a request of `events` events may go.
    pub async fn wait(&self, events: usize) {
        match self.limit {
            RateLimit::RequestsPerSec(_) => self.limiter.until_ready().await,
            RateLimit::EventsPerSec(burst) => {
                // A request larger than one second's worth takes its cells a burst at a time.
                let mut left = u32::try_from(events).unwrap_or(u32::MAX);
                while let Some(n) = NonZeroU32::new(left.min(burst.get())) {
                    // Cannot fail: `n` is at most the burst size.
                    let _ = self.limiter.until_n_ready(n).await;
                    left -= n.get();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    // Lower bounds only: a limiter must make a request wait at least this long, and a loaded
    // machine can only make it longer.

    #[tokio::test]
    async fn events_past_the_burst_wait_for_the_rate() {
        let pace = Pace::new(RateLimit::EventsPerSec(nz(200)));
        let start = Instant::now();
        // One second's burst, then 100 more: half a second at 200 a second.
        pace.wait(200).await;
        pace.wait(100).await;
        assert!(start.elapsed() >= Duration::from_millis(450));
    }

    #[tokio::test]
    async fn a_request_larger_than_the_burst_is_paced_not_refused() {
        let pace = Pace::new(RateLimit::EventsPerSec(nz(100)));
        let start = Instant::now();
        pace.wait(250).await;
        assert!(start.elapsed() >= Duration::from_millis(1400));
    }

    #[tokio::test]
    async fn requests_per_second_count_requests_not_events() {
        let pace = Pace::new(RateLimit::RequestsPerSec(nz(10)));
        let start = Instant::now();
        // Ten requests of 1,000 events: one second's burst of requests. Counted as events at
        // 10 a second they would take over 15 minutes.
        for _ in 0..10 {
            pace.wait(1000).await;
        }
        pace.wait(1).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(90), "{took:?}");
        assert!(took < Duration::from_secs(60), "{took:?}");
    }
}
