//! Batch limits and the batcher that applies them.

use crate::event::Event;
use std::time::Duration;
use tokio::time::Instant;

/// When a batch is closed: whichever limit is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    /// Encoded (uncompressed) body size, as the destination counts it.
    pub max_bytes: usize,
    pub max_linger: Duration,
}

impl BatchLimits {
    /// These limits, tightened to what the destination's API allows.
    pub fn clamp_to(self, hard: BatchLimits) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events.min(hard.max_events).max(1),
            max_bytes: self.max_bytes.min(hard.max_bytes).max(1),
            max_linger: self.max_linger.min(hard.max_linger),
        }
    }
}

/// A group of events sent together, with when it was opened (for `queue_duration_ms`).
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    pub bytes: usize,
    pub opened_at: Instant,
    pub opened_wall_ms: u64,
}

/// What the batcher did with an event.
#[derive(Debug)]
pub enum Push {
    /// Added; the batch has room for more.
    Added,
    /// Added, and the batch is full: take it.
    Full(Batch),
    /// The open batch could not take this event, so it was closed and the event starts the
    /// next one.
    Rolled(Batch),
    /// The event alone is larger than `max_bytes`: it can never be sent.
    TooLarge(Event),
}

/// Accumulates events into batches bounded by count, bytes and linger time.
pub struct Batcher {
    limits: BatchLimits,
    open: Option<Batch>,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher { limits, open: None }
    }

    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Adds `event`, whose encoded size is `size`.
    pub fn push(&mut self, event: Event, size: usize) -> Push {
        if size > self.limits.max_bytes {
            return Push::TooLarge(event);
        }
        let rolled = match &self.open {
            Some(b) if b.bytes + size > self.limits.max_bytes => self.open.take(),
            _ => None,
        };
        let batch = self.open.get_or_insert_with(|| Batch {
            events: Vec::with_capacity(self.limits.max_events.min(1024)),
            bytes: 0,
            opened_at: Instant::now(),
            opened_wall_ms: crate::timings::now_ms(),
        });
        batch.events.push(event);
        batch.bytes += size;
        let full =
            batch.events.len() >= self.limits.max_events || batch.bytes >= self.limits.max_bytes;
        match (rolled, full) {
            (Some(r), _) => Push::Rolled(r),
            (None, true) => self.take().map_or(Push::Added, Push::Full),
            (None, false) => Push::Added,
        }
    }

    /// When the open batch must be sent even if not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.open
            .as_ref()
            .map(|b| b.opened_at + self.limits.max_linger)
    }

    pub fn take(&mut self) -> Option<Batch> {
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;

    fn limits(events: usize, bytes: usize) -> BatchLimits {
        BatchLimits {
            max_events: events,
            max_bytes: bytes,
            max_linger: Duration::from_millis(50),
        }
    }

    fn e() -> Event {
        event(r#"{"event":{"timestamp":1}}"#)
    }

    #[tokio::test]
    async fn closes_on_event_count() {
        let mut b = Batcher::new(limits(3, 1000));
        assert!(matches!(b.push(e(), 10), Push::Added));
        assert!(matches!(b.push(e(), 10), Push::Added));
        let Push::Full(batch) = b.push(e(), 10) else {
            panic!("third event should fill the batch")
        };
        assert_eq!(batch.events.len(), 3);
        assert!(b.deadline().is_none());
    }

    #[tokio::test]
    async fn rolls_over_before_exceeding_bytes() {
        let mut b = Batcher::new(limits(100, 100));
        b.push(e(), 60);
        let Push::Rolled(batch) = b.push(e(), 60) else {
            panic!("second event does not fit")
        };
        assert_eq!((batch.events.len(), batch.bytes), (1, 60));
        let rest = b.take().unwrap();
        assert_eq!((rest.events.len(), rest.bytes), (1, 60));
    }

    #[tokio::test]
    async fn exact_fit_is_full() {
        let mut b = Batcher::new(limits(100, 100));
        b.push(e(), 40);
        assert!(matches!(b.push(e(), 60), Push::Full(_)));
    }

    #[tokio::test]
    async fn oversize_event_is_refused_and_open_batch_kept() {
        let mut b = Batcher::new(limits(100, 100));
        b.push(e(), 10);
        assert!(matches!(b.push(e(), 101), Push::TooLarge(_)));
        assert_eq!(b.take().unwrap().events.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_linger_after_open() {
        let mut b = Batcher::new(limits(10, 1000));
        assert!(b.deadline().is_none());
        let t0 = Instant::now();
        b.push(e(), 1);
        tokio::time::advance(Duration::from_millis(20)).await;
        b.push(e(), 1);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn clamp_applies_api_limits() {
        let c = limits(5000, 10_000_000).clamp_to(limits(1000, 5_000_000));
        assert_eq!((c.max_events, c.max_bytes), (1000, 5_000_000));
    }
}
